//! The one render path. Every backend draws an output the same way:
//!
//! 1. [`Comp::begin_frame`]: the output's redraw state goes `Drawing` ([`super::redraw`]), the
//!    guests' flushed pixels are uploaded into their textures, the statistics overlay text is
//!    refreshed, and the output's elements are assembled from the space (topmost first,
//!    output-local physical pixels: guest scanouts with their title bars and cursors, Wayland
//!    windows, layout views);
//! 2. the backend draws those elements into its target with damage tracking: headless and winit
//!    through an [`OutputDamageTracker`] ([`render_elements`]), tty through its CRTC's
//!    `DrmCompositor`, which may also put an element on a plane by itself;
//! 3. [`Comp::end_frame`]: the redraw state learns whether a frame was submitted, Wayland clients
//!    on that output get their frame callbacks;
//! 4. [`Comp::frame_presented`] when the output shows it (page flip, refresh timer, swap): the
//!    guest flushes the frame carried end their flush-to-present latency, and a change queued
//!    meanwhile may draw.
//!
//! Screenshots of the output draw the same elements ([`Comp::output_elements`]).

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use smithay::{
    backend::renderer::{damage::OutputDamageTracker, element::RenderElement, gles::GlesRenderer},
    desktop::space::{SpaceRenderElements, space_render_elements},
    output::Output,
    utils::{Logical, Rectangle},
};

use super::{CLEAR_COLOR, Comp, Redraw, element::WindowElement, element::WindowRenderElement, guests::lock};

/// One element of an output's frame: what every backend draws.
pub type OutputElement = SpaceRenderElements<GlesRenderer, WindowRenderElement>;

/// Draw `elements` (topmost first) into `framebuffer` with `damage_tracker`; `age` is the
/// framebuffer's buffer age (0: unknown contents, everything is repainted). Returns whether
/// anything was damaged. Errors: the GL renderer's (`rendering the output`).
pub fn render_elements<E: RenderElement<GlesRenderer>>(
    renderer: &mut GlesRenderer,
    framebuffer: &mut <GlesRenderer as smithay::backend::renderer::RendererSuper>::Framebuffer<'_>,
    damage_tracker: &mut OutputDamageTracker,
    age: usize,
    elements: &[E],
) -> anyhow::Result<bool> {
    let result = damage_tracker
        .render_output(renderer, framebuffer, age, elements, CLEAR_COLOR)
        .context("rendering the output")?;
    Ok(result.damage.is_some())
}

impl Comp {
    /// The redraw state of `output` (an output the compositor does not know is idle).
    pub fn redraw_of(&mut self, output: &Output) -> &mut Redraw {
        self.redraw.entry(output.clone()).or_default()
    }

    /// The outputs whose redraw state says draw now.
    pub fn queued_outputs(&self) -> Vec<Output> {
        self.redraw.iter().filter(|(_, r)| r.is_queued()).map(|(o, _)| o.clone()).collect()
    }

    /// Start a frame of `output` and return its elements (see the module documentation).
    /// Errors: the output has no mode; the frame is then finished as not submitted.
    pub fn begin_frame(&mut self, renderer: &mut GlesRenderer, output: &Output) -> anyhow::Result<Vec<OutputElement>> {
        self.redraw_of(output).begin();
        self.upload_scanouts(renderer);
        let area = self.space.output_geometry(output);
        for guest in &self.guests {
            for window in guest.scanouts.windows() {
                if self.shows(area, &WindowElement::Scanout(window.clone())) {
                    window.frame_started();
                }
            }
        }
        self.update_overlays();
        let elements = self.output_elements(renderer, output);
        if elements.is_err() {
            self.end_frame(output, false);
        }
        elements
    }

    /// The elements of `output` as they are now, topmost first (frames and screenshots).
    /// Errors: the output has no mode.
    pub fn output_elements(&self, renderer: &mut GlesRenderer, output: &Output) -> anyhow::Result<Vec<OutputElement>> {
        space_render_elements(renderer, [&self.space], output, 1.0)
            .map_err(|_| anyhow!("output {} has no mode", output.name()))
    }

    /// The backend finished the frame of `output` started by [`Comp::begin_frame`]: `submitted`
    /// when it will be presented (the backend then calls [`Comp::frame_presented`]), false when
    /// nothing was drawn (no damage) or drawing failed. Wayland windows on the output get their
    /// frame callbacks either way, so clients keep drawing.
    pub fn end_frame(&mut self, output: &Output, submitted: bool) {
        self.redraw_of(output).finish(submitted);
        self.frames += 1;
        self.send_frame_callbacks(output);
    }

    /// `output` showed its submitted frame (page flip completed, refresh timer, buffer swap):
    /// the guest flushes it carried are presented.
    pub fn frame_presented(&mut self, output: &Output) {
        self.redraw_of(output).presented();
        let now = Instant::now();
        let area = self.space.output_geometry(output);
        for guest in &self.guests {
            for window in guest.scanouts.windows() {
                if self.shows(area, &WindowElement::Scanout(window.clone())) {
                    window.presented(now);
                }
            }
        }
    }

    /// Whether `element` is on the output covering `area`; an element on no output at all counts
    /// as on the primary output (so its client still gets frame callbacks).
    fn shows(&self, area: Option<Rectangle<i32, Logical>>, element: &WindowElement) -> bool {
        let Some(bbox) = self.space.element_bbox(element) else { return false };
        match area {
            Some(area) if area.overlaps(bbox) => true,
            _ => {
                let primary = self.space.output_geometry(&self.output);
                area == primary
                    && !self.space.outputs().any(|o| self.space.output_geometry(o).is_some_and(|g| g.overlaps(bbox)))
            }
        }
    }

    /// Upload every guest's pending flushed regions into their textures.
    pub(super) fn upload_scanouts(&mut self, renderer: &mut GlesRenderer) {
        for guest in &mut self.guests {
            let mut device = lock(&guest.device);
            guest.scanouts.upload(renderer, device.gpu_mut());
        }
    }

    /// Refresh the statistics overlay text of every guest window (or hide it).
    fn update_overlays(&mut self) {
        let now = Instant::now();
        for guest in &self.guests {
            let device = lock(&guest.device);
            let gpu = device.gpu();
            for window in guest.scanouts.windows() {
                let text = self.overlay.then(|| {
                    let (_, scanout) = window.ids();
                    let format = gpu.resource(window.resource_id()).map_or("-", |r| r.format.name());
                    let size = window.scanout_size();
                    let stats = window.stats(now);
                    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
                    format!(
                        "scanout {scanout} resource {} {format} {}x{}\n{} flush/s, {} copies/frame ({})\nflush-to-present p50 {} ms p99 {} ms",
                        window.resource_id(),
                        size.w,
                        size.h,
                        stats.flush_rate,
                        if window.zero_copy() { 0 } else { 1 },
                        window.path(),
                        ms(stats.latency_p50_ms),
                        ms(stats.latency_p99_ms),
                    )
                });
                window.with_decoration(|d| d.overlay = text);
            }
        }
        if self.overlay {
            // rates and latencies change while nothing else does: the next frame is wanted
            self.queue_redraw();
        }
    }

    /// Tell the Wayland clients on `output` a frame was shown.
    fn send_frame_callbacks(&mut self, output: &Output) {
        let now = self.start.elapsed();
        let area = self.space.output_geometry(output);
        for e in self.space.elements() {
            if let WindowElement::Wayland(w) = e
                && self.shows(area, e)
            {
                w.send_frame(output, now, Some(Duration::ZERO), |_, _| Some(output.clone()));
            }
        }
    }
}
