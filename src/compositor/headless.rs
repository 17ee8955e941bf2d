//! The headless backend: an offscreen output rendered with EGL (device platform, else
//! surfaceless). Its refresh clock is a timer: a frame counts as presented one refresh interval
//! ([`FRAME_INTERVAL`]) after it was drawn, so the output draws at most one frame per interval,
//! only when something changed, and at once when a change finds it idle.

use std::time::Instant;

use anyhow::Context;
use smithay::{
    backend::renderer::{
        Bind,
        damage::OutputDamageTracker,
        gles::{GlesRenderbuffer, GlesRenderer},
    },
    reexports::calloop::timer::{TimeoutAction, Timer},
    utils::Transform,
};
use tracing::warn;

use super::{Backend, FRAME_INTERVAL, State, render};
use crate::renderer;

/// Backend state of the headless output.
pub struct Headless {
    /// The GLES renderer on the EGL device (or surfaceless) platform; virglrenderer shares its
    /// EGL display.
    pub renderer: GlesRenderer,
    target: GlesRenderbuffer,
    damage_tracker: OutputDamageTracker,
    /// Whether the target holds the previous frame (then only damage is repainted).
    drawn: bool,
}

impl Headless {
    /// An offscreen output of `size` (width, height) pixels.
    pub fn new(size: (i32, i32)) -> anyhow::Result<Self> {
        let mut renderer = renderer::headless_renderer()?;
        let target = renderer::offscreen_target(&mut renderer, size.into())?;
        Ok(Headless {
            renderer,
            target,
            damage_tracker: OutputDamageTracker::new(size, 1.0, Transform::Normal),
            drawn: false,
        })
    }
}

/// Draw the output if its redraw is queued, and arm its refresh timer: the frame is presented
/// one refresh interval later, when a change queued meanwhile is drawn.
pub fn draw_queued(state: &mut State) {
    let output = state.comp.output.clone();
    if !state.comp.redraw_of(&output).is_queued() {
        return;
    }
    let drawn_at = Instant::now();
    let submitted = match draw(state) {
        Ok(()) => true,
        Err(e) => {
            warn!("headless frame: {e:#}");
            false
        }
    };
    state.comp.end_frame(&output, submitted);
    if !submitted {
        return;
    }
    let vblank = Timer::from_deadline(drawn_at + FRAME_INTERVAL);
    let armed = state.comp.loop_handle.insert_source(vblank, move |_, _, state| {
        state.comp.frame_presented(&output);
        draw_queued(state);
        TimeoutAction::Drop
    });
    if let Err(e) = armed {
        // no clock: present now rather than never draw again
        warn!("headless refresh timer: {e}");
        let output = state.comp.output.clone();
        state.comp.frame_presented(&output);
    }
}

fn draw(state: &mut State) -> anyhow::Result<()> {
    let Backend::Headless(h) = &mut state.backend else { return Ok(()) };
    let output = state.comp.output.clone();
    let elements = state.comp.begin_frame(&mut h.renderer, &output)?;
    let age = usize::from(h.drawn);
    let mut fb = h.renderer.bind(&mut h.target).context("bind")?;
    render::render_elements(&mut h.renderer, &mut fb, &mut h.damage_tracker, age, &elements)?;
    h.drawn = true;
    Ok(())
}
