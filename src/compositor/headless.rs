//! The headless backend: an offscreen output rendered with EGL (device platform, else
//! surfaceless), at most one frame per refresh interval, only when something changed.

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

use super::{Backend, FRAME_INTERVAL, State};
use crate::renderer;

/// Backend state of the headless output.
pub struct Headless {
    pub renderer: GlesRenderer,
    target: GlesRenderbuffer,
    damage_tracker: OutputDamageTracker,
    /// Whether the target holds the previous frame (then only damage is repainted).
    drawn: bool,
    last_frame: Instant,
    timer_armed: bool,
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
            last_frame: Instant::now() - FRAME_INTERVAL,
            timer_armed: false,
        })
    }
}

/// Arm the frame timer if a redraw is queued and none is armed: the frame is drawn one refresh
/// interval after the previous one (or now, if that is past).
pub fn schedule(state: &mut State) {
    let Backend::Headless(headless) = &mut state.backend else { return };
    if headless.timer_armed || !state.comp.redraw.is_queued() {
        return;
    }
    let due = headless.last_frame + FRAME_INTERVAL;
    let timer = Timer::from_deadline(due.max(Instant::now()));
    let armed = state.comp.loop_handle.insert_source(timer, |_, _, state| {
        if let Backend::Headless(h) = &mut state.backend {
            h.timer_armed = false;
        }
        if let Err(e) = draw(state) {
            warn!("headless frame: {e:#}");
        }
        TimeoutAction::Drop
    });
    match armed {
        Ok(_) => headless.timer_armed = true,
        Err(e) => warn!("frame timer: {e}"),
    }
}

fn draw(state: &mut State) -> anyhow::Result<()> {
    let Backend::Headless(h) = &mut state.backend else { return Ok(()) };
    h.last_frame = Instant::now();
    let age = usize::from(h.drawn);
    {
        let mut fb = h.renderer.bind(&mut h.target).context("bind")?;
        state.comp.render(&mut h.renderer, &mut fb, &mut h.damage_tracker, age)?;
    }
    h.drawn = true;
    state.comp.send_frame_callbacks();
    Ok(())
}
