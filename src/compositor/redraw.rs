//! The redraw state machine of one output.
//!
//! Every output has its own [`Redraw`] (`Comp::redraw`). Anything visible that changes calls
//! [`Redraw::queue`] (through `Comp::queue_redraw`); the backend draws an output while its state
//! is `Queued` ([`Redraw::is_queued`]), calling [`Redraw::begin`] before it assembles the frame,
//! [`Redraw::finish`] once it is submitted (or found empty), and [`Redraw::presented`] when the
//! output shows it: tty at that CRTC's page flip (vblank), headless when its refresh timer fires
//! one interval after the frame, winit right after the buffer swap. So each output draws at most
//! one frame per refresh on its own clock, a frame is never drawn over one not yet shown, and a
//! change made while a frame is assembled or in flight (the overlay's statistics, refreshed while
//! the frame is prepared; a client commit; a guest flush) is not lost: it asks for the next frame.
//!
//! | state            | `queue`          | `begin`          | `finish(true)`  | `finish(false)` | `presented` |
//! |------------------|------------------|------------------|-----------------|-----------------|-------------|
//! | `Idle`           | `Queued`         | `Drawing`        | `Idle`          | `Idle`          | `Idle`      |
//! | `Queued`         | `Queued`         | `Drawing`        | `Queued`        | `Queued`        | `Queued`    |
//! | `Drawing`        | `DrawingQueued`  | `Drawing`        | `Pending`       | `Idle`          | `Drawing`   |
//! | `DrawingQueued`  | `DrawingQueued`  | `DrawingQueued`  | `PendingQueued` | `Queued`        | `DrawingQueued` |
//! | `Pending`        | `PendingQueued`  | `Pending`        | `Pending`       | `Pending`       | `Idle`      |
//! | `PendingQueued`  | `PendingQueued`  | `PendingQueued`  | `PendingQueued` | `PendingQueued` | `Queued`    |
//!
//! `finish(true)`: a frame was submitted and will be presented; `finish(false)`: nothing was
//! submitted (no damage, or drawing failed), so nothing will be presented. Transitions not listed
//! as a change (`begin` while a frame is pending, `presented` while nothing is pending) are
//! misuse by a backend and leave the state alone. Guest flushes never wait for a frame: the ctrl
//! queue is answered first, the pixels follow on the next frame.

/// Redraw state of one output (see the module documentation for the transitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Redraw {
    /// Nothing to draw, nothing in flight: a change is drawn at once.
    #[default]
    Idle,
    /// A frame is wanted and the output may draw it now.
    Queued,
    /// A frame is being assembled.
    Drawing,
    /// A frame is being assembled and another is wanted after it.
    DrawingQueued,
    /// A frame was submitted; waiting for the output to show it (vblank, refresh timer).
    Pending,
    /// A frame was submitted and another is wanted once it is shown.
    PendingQueued,
}

impl Redraw {
    /// Something visible changed.
    pub fn queue(&mut self) {
        *self = match *self {
            Redraw::Idle | Redraw::Queued => Redraw::Queued,
            Redraw::Drawing | Redraw::DrawingQueued => Redraw::DrawingQueued,
            Redraw::Pending | Redraw::PendingQueued => Redraw::PendingQueued,
        };
    }

    /// The backend starts assembling a frame.
    pub fn begin(&mut self) {
        *self = match *self {
            Redraw::Idle | Redraw::Queued | Redraw::Drawing => Redraw::Drawing,
            other => other,
        };
    }

    /// The frame was submitted (`submitted`: it will be presented) or dropped.
    pub fn finish(&mut self, submitted: bool) {
        *self = match (*self, submitted) {
            (Redraw::Drawing, true) => Redraw::Pending,
            (Redraw::Drawing, false) => Redraw::Idle,
            (Redraw::DrawingQueued, true) => Redraw::PendingQueued,
            (Redraw::DrawingQueued, false) => Redraw::Queued,
            (other, _) => other,
        };
    }

    /// The output showed the submitted frame.
    pub fn presented(&mut self) {
        *self = match *self {
            Redraw::Pending => Redraw::Idle,
            Redraw::PendingQueued => Redraw::Queued,
            other => other,
        };
    }

    /// Whether the backend should draw this output now.
    pub fn is_queued(self) -> bool {
        self == Redraw::Queued
    }

    /// Whether a submitted frame waits to be shown.
    pub fn is_pending(self) -> bool {
        matches!(self, Redraw::Pending | Redraw::PendingQueued)
    }
}

#[cfg(test)]
mod tests {
    use super::Redraw::{self, *};

    fn after(mut s: Redraw, steps: &str) -> Redraw {
        for step in steps.chars() {
            match step {
                'q' => s.queue(),
                'b' => s.begin(),
                's' => s.finish(true),
                'e' => s.finish(false),
                'p' => s.presented(),
                _ => unreachable!(),
            }
        }
        s
    }

    #[test]
    fn the_table() {
        // (from, [queue, begin, finish(true), finish(false), presented]), as in the module docs
        let table = [
            (Idle, [Queued, Drawing, Idle, Idle, Idle]),
            (Queued, [Queued, Drawing, Queued, Queued, Queued]),
            (Drawing, [DrawingQueued, Drawing, Pending, Idle, Drawing]),
            (DrawingQueued, [DrawingQueued, DrawingQueued, PendingQueued, Queued, DrawingQueued]),
            (Pending, [PendingQueued, Pending, Pending, Pending, Idle]),
            (PendingQueued, [PendingQueued, PendingQueued, PendingQueued, PendingQueued, Queued]),
        ];
        for (from, [q, b, s, e, p]) in table {
            assert_eq!(after(from, "q"), q, "{from:?} queue");
            assert_eq!(after(from, "b"), b, "{from:?} begin");
            assert_eq!(after(from, "s"), s, "{from:?} finish(true)");
            assert_eq!(after(from, "e"), e, "{from:?} finish(false)");
            assert_eq!(after(from, "p"), p, "{from:?} presented");
        }
    }

    #[test]
    fn a_change_while_drawing_asks_for_the_next_frame() {
        // the overlay refreshes its text while the frame is prepared: the next frame is wanted,
        // after this one is shown
        assert_eq!(after(Idle, "qbqs"), PendingQueued);
        assert!(after(Idle, "qbqsp").is_queued());
        // nothing new while drawing: idle once shown
        assert_eq!(after(Idle, "qbsp"), Idle);
        // changes while queued fold into one frame
        assert_eq!(after(Idle, "qqqbsp"), Idle);
        // an empty frame (no damage) is not waited for
        assert_eq!(after(Idle, "qbe"), Idle);
    }

    #[test]
    fn no_frame_is_drawn_over_one_in_flight() {
        // a flush while the frame is in flight waits for the vblank, then draws
        let s = after(Idle, "qbsq");
        assert!(s.is_pending() && !s.is_queued());
        assert!(after(s, "p").is_queued());
    }
}
