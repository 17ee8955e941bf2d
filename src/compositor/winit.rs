//! The winit backend: scanway's output is a window in the user's X11 or Wayland desktop.

use anyhow::{Context, anyhow};
use smithay::{
    backend::{
        renderer::{damage::OutputDamageTracker, gles::GlesRenderer},
        winit::{self, WinitEvent, WinitGraphicsBackend},
    },
    output::Mode as OutputMode,
    reexports::{
        calloop::EventLoop,
        winit::{dpi::LogicalSize, window::Window},
    },
    utils::Transform,
};
use tracing::warn;

use super::{Backend, State, render};

/// Backend state of the nested window.
pub struct Winit {
    pub backend: WinitGraphicsBackend<GlesRenderer>,
    damage_tracker: Option<OutputDamageTracker>,
}

impl Winit {
    /// Open a window of `size` (width, height) pixels and poll its events on `event_loop`.
    pub fn new(event_loop: &mut EventLoop<'static, State>, size: (i32, i32)) -> anyhow::Result<Self> {
        // A transparent (32-bit) window keeps the X11 visual and smithay's EGL config (8 alpha
        // bits) the same depth; otherwise the first swap fails on Xvfb with EGL_BAD_SURFACE.
        let attributes = Window::default_attributes()
            .with_inner_size(LogicalSize::new(f64::from(size.0), f64::from(size.1)))
            .with_title("scanway")
            .with_transparent(true);
        let (backend, winit_loop) =
            winit::init_from_attributes::<GlesRenderer>(attributes).map_err(|e| anyhow!("opening the window: {e}"))?; // winit's error is not Sync
        event_loop
            .handle()
            .insert_source(winit_loop, |event, _, state| match event {
                WinitEvent::Resized { size, .. } => {
                    let mode = OutputMode { size, refresh: 60_000 };
                    state.comp.output.change_current_state(Some(mode), None, None, None);
                    state.comp.output.set_preferred(mode);
                    if let Backend::Winit(w) = &mut state.backend {
                        w.damage_tracker = None;
                    }
                    state.comp.queue_redraw();
                }
                WinitEvent::Redraw => draw_queued(state),
                WinitEvent::CloseRequested => state.comp.loop_signal.stop(),
                WinitEvent::Input(event) => super::input::process_input(state, event),
                _ => {}
            })
            .map_err(|e| anyhow!("winit event source: {e}"))?;
        Ok(Winit { backend, damage_tracker: None })
    }
}

/// Draw the window's output if its redraw is queued. The buffer swap is the present: the
/// frame is presented when `submit` returns (the host compositor paces the swaps).
fn draw_queued(state: &mut State) {
    let output = state.comp.output.clone();
    if !state.comp.redraw_of(&output).is_queued() {
        return;
    }
    let submitted = match draw(state) {
        Ok(submitted) => submitted,
        Err(e) => {
            warn!("winit frame: {e:#}");
            false
        }
    };
    state.comp.end_frame(&output, submitted);
    if submitted {
        state.comp.frame_presented(&output);
    }
}

/// Draw one frame; returns whether a buffer was swapped.
fn draw(state: &mut State) -> anyhow::Result<bool> {
    let Backend::Winit(w) = &mut state.backend else { return Ok(false) };
    let output = state.comp.output.clone();
    let size = w.backend.window_size();
    // The EGL window's back buffer is bottom-up: render flipped.
    let tracker = w.damage_tracker.get_or_insert_with(|| OutputDamageTracker::new(size, 1.0, Transform::Flipped180));
    let age = w.backend.buffer_age().unwrap_or(0);
    let damaged = {
        let (renderer, mut fb) = w.backend.bind().context("bind")?;
        let elements = state.comp.begin_frame(renderer, &output)?;
        render::render_elements(renderer, &mut fb, tracker, age, &elements)?
    };
    if damaged {
        w.backend.submit(None).context("submit")?;
    }
    Ok(damaged)
}
