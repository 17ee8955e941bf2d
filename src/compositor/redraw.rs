//! The output's redraw state machine.
//!
//! Anything visible that changes calls [`Redraw::queue`]; the backend draws when it may
//! (headless: at most one frame per refresh interval; winit: on the window's redraw event; tty:
//! after the last page flip completed), calling [`Redraw::begin`] before it assembles the frame
//! and [`Redraw::finish`] once it is submitted. A change made while a frame is being drawn
//! (the overlay's statistics, refreshed while the frame is prepared; a client commit handled in
//! between) is not lost: it asks for the next frame.
//!
//! | state           | `queue`          | `begin`          | `finish`  |
//! |-----------------|------------------|------------------|-----------|
//! | `Idle`          | `Queued`         | `Drawing`        | `Idle`    |
//! | `Queued`        | `Queued`         | `Drawing`        | `Queued`  |
//! | `Drawing`       | `DrawingQueued`  | `Drawing`        | `Idle`    |
//! | `DrawingQueued` | `DrawingQueued`  | `DrawingQueued`  | `Queued`  |
//!
//! Backends schedule a frame while the state is `Queued` ([`Redraw::is_queued`]); changes while
//! one is queued fold into it. Guest flushes never wait for a frame: the ctrl queue is answered
//! first, the pixels follow on the next frame.

/// Redraw state of the output (see the module documentation for the transitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Redraw {
    /// Nothing to draw.
    #[default]
    Idle,
    /// A frame is wanted.
    Queued,
    /// A frame is being drawn.
    Drawing,
    /// A frame is being drawn and another is wanted after it.
    DrawingQueued,
}

impl Redraw {
    /// Something visible changed.
    pub fn queue(&mut self) {
        *self = match *self {
            Redraw::Idle | Redraw::Queued => Redraw::Queued,
            Redraw::Drawing | Redraw::DrawingQueued => Redraw::DrawingQueued,
        };
    }

    /// The backend starts assembling a frame.
    pub fn begin(&mut self) {
        *self = match *self {
            Redraw::Idle | Redraw::Queued | Redraw::Drawing => Redraw::Drawing,
            Redraw::DrawingQueued => Redraw::DrawingQueued,
        };
    }

    /// The frame was submitted.
    pub fn finish(&mut self) {
        *self = match *self {
            Redraw::Idle | Redraw::Drawing => Redraw::Idle,
            Redraw::Queued | Redraw::DrawingQueued => Redraw::Queued,
        };
    }

    /// Whether the backend should schedule a frame.
    pub fn is_queued(self) -> bool {
        self == Redraw::Queued
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
                'f' => s.finish(),
                _ => unreachable!(),
            }
        }
        s
    }

    #[test]
    fn the_table() {
        let table = [
            (Idle, [Queued, Drawing, Idle]),
            (Queued, [Queued, Drawing, Queued]),
            (Drawing, [DrawingQueued, Drawing, Idle]),
            (DrawingQueued, [DrawingQueued, DrawingQueued, Queued]),
        ];
        for (from, [q, b, f]) in table {
            assert_eq!(after(from, "q"), q, "{from:?} queue");
            assert_eq!(after(from, "b"), b, "{from:?} begin");
            assert_eq!(after(from, "f"), f, "{from:?} finish");
        }
    }

    #[test]
    fn a_change_while_drawing_asks_for_the_next_frame() {
        // the overlay refreshes its text while the frame is prepared: the next frame is wanted
        assert!(after(Idle, "qbqf").is_queued());
        // nothing new while drawing: idle after the frame
        assert_eq!(after(Idle, "qbf"), Idle);
        // changes while queued fold into one frame
        assert_eq!(after(Idle, "qqqbf"), Idle);
    }
}
