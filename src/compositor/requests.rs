//! The control socket's server side: every [`Request`] answered on the event loop, the state
//! `scanway list` shows ([`Comp::describe`]), and screenshots rendered offscreen.

#[allow(clippy::wildcard_imports)]
use super::*;
use smithay::backend::renderer::element::RenderElement;

impl Comp {
    /// The state `scanway list` shows (see `control::format_list`).
    pub fn describe(&self) -> Value {
        let now = Instant::now();
        let guests: Vec<Value> = self
            .guests
            .iter()
            .map(|guest| {
                let device = lock(&guest.device);
                let gpu = device.gpu();
                let layout = crate::scanout::guest_layout(guest.scanouts.windows());
                let scanouts: Vec<Value> = (0..gpu.num_scanouts())
                    .map(|id| {
                        let window = guest.scanouts.window(id);
                        let shown = guest.scanouts.is_mapped(id);
                        let scanout = gpu.scanout(id).filter(|s| s.resource_id != 0 && shown);
                        let Some(scanout) = scanout else {
                            return json!({ "id": id, "enabled": false });
                        };
                        let format = gpu.resource(scanout.resource_id).map_or("?", |r| r.format.name());
                        let geometry = window.and_then(|w| {
                            self.space.element_geometry(&WindowElement::Scanout(w.clone()))
                        });
                        let at = layout.iter().find(|(i, _)| *i == id).map_or((0, 0), |(_, r)| (r.loc.x, r.loc.y));
                        json!({
                            "id": id, "enabled": true,
                            "x": at.0, "y": at.1,
                            "width": scanout.rect.width, "height": scanout.rect.height,
                            "src_x": scanout.rect.x, "src_y": scanout.rect.y,
                            "resource_id": scanout.resource_id, "format": format,
                            "flush_count": scanout.flush_count,
                            "uploads": window.map_or(0, ScanoutWindow::uploads),
                            "path": window.map_or("copied", ScanoutWindow::path),
                            "copies_per_frame": if window.is_some_and(ScanoutWindow::zero_copy) { 0 } else { 1 },
                            "title": window.map(ScanoutWindow::title),
                            "cursor": scanout.cursor.as_ref().map(|c| json!({
                                "x": scanout.cursor_pos.0, "y": scanout.cursor_pos.1,
                                "hot_x": c.hot_x, "hot_y": c.hot_y, "width": c.width, "height": c.height,
                            })),
                            "window": geometry.map(|g| json!({"x": g.loc.x, "y": g.loc.y, "width": g.size.w, "height": g.size.h})),
                            "scale": window.map(|w| w.scale_mode()),
                            "fullscreen": window.is_some_and(|w| self.is_fullscreen(&WindowElement::Scanout(w.clone()))),
                            "focused": window.is_some_and(|w| self.focused == Some(WindowElement::Scanout(w.clone()))),
                            "stats": window.map(|w| {
                                let s = w.stats(now);
                                json!({"flush_rate": s.flush_rate, "latency_p50_ms": s.latency_p50_ms, "latency_p99_ms": s.latency_p99_ms})
                            }),
                        })
                    })
                    .collect();
                let resources: Vec<Value> = gpu
                    .resources()
                    .map(|(id, r)| json!({"id": id, "width": r.width, "height": r.height, "format": r.format.name()}))
                    .collect();
                let ui = match guest.ui.as_ref().map(qemu_ui::QemuUi::status) {
                    None if guest.link.is_none() => json!("none"),
                    None => json!("waiting for the VMM"),
                    Some(qemu_ui::UiStatus::Connecting) => json!("connecting"),
                    Some(qemu_ui::UiStatus::Linked { heads }) => json!({"linked": heads}),
                    Some(qemu_ui::UiStatus::Failed(e)) => json!({"failed": e}),
                };
                json!({
                    "name": guest.name, "socket": guest.socket, "connected": guest.connected(),
                    "attached_by": match (&guest.socket, &guest.link) {
                        (Some(_), _) => Value::Null,
                        (None, Some(qemu_ui::UiLink::Libvirt(d))) => json!(format!("libvirt domain {} ({})", d.short_name, d.uri)),
                        (None, _) => json!("a backend process"),
                    },
                    "ui": ui,
                    "host_memory": gpu.host_memory_used(),
                    "faults": gpu.faults(),
                    "3d": three_d_json(gpu),
                    "scanouts": scanouts, "resources": resources,
                })
            })
            .collect();
        let clients: Vec<Value> = self
            .space
            .elements()
            .filter(|e| matches!(e, WindowElement::Wayland(_)))
            .map(|e| {
                let loc = self.space.element_location(e).unwrap_or_default();
                let size = smithay::desktop::space::SpaceElement::geometry(e).size;
                json!({
                    "title": e.title(), "x": loc.x, "y": loc.y, "width": size.w, "height": size.h,
                    "focused": self.focused.as_ref() == Some(e),
                })
            })
            .collect();
        let layout_views: Vec<Value> = self
            .space
            .elements()
            .filter_map(|e| match e {
                WindowElement::Layout(l) => {
                    let g = self.space.element_geometry(e)?;
                    Some(json!({"guest": l.guest(), "x": g.loc.x, "y": g.loc.y, "width": g.size.w, "height": g.size.h}))
                }
                _ => None,
            })
            .collect();
        let size = self.output_size();
        json!({
            "output": {"width": size.w, "height": size.h},
            "frames": self.frames,
            "overlay": self.overlay,
            "guests": guests,
            "clients": clients,
            "layout_views": layout_views,
        })
    }
}

impl State {
    /// Answer a control request.
    pub(super) fn control(&mut self, req: Request) -> anyhow::Result<Value> {
        match req {
            Request::List => Ok(self.comp.describe()),
            Request::ScreenshotScanout { guest, scanout, path } => {
                let scanouts = &self
                    .comp
                    .guests
                    .iter()
                    .find(|g| g.name == guest)
                    .ok_or_else(|| anyhow!("no guest named {guest}"))?
                    .scanouts;
                let window = scanouts
                    .window(scanout)
                    .cloned()
                    .ok_or_else(|| anyhow!("guest {guest} has no scanout {scanout}"))?;
                if !scanouts.is_mapped(scanout) {
                    anyhow::bail!("scanout {scanout} of {guest} shows nothing");
                }
                let renderer = self.backend.renderer();
                self.comp.upload_scanouts(renderer);
                // the guest's picture at its own size, however its window is scaled
                let size = window.scanout_size();
                let size: Size<i32, Physical> = (size.w, size.h).into();
                let elements: Vec<WindowRenderElement> = window
                    .unscaled(|w| w.render_elements(renderer, (0, 0).into(), Scale::from(1.0), 1.0))
                    .into_iter()
                    .filter(|e| {
                        !matches!(
                            smithay::backend::renderer::element::Element::kind(e),
                            smithay::backend::renderer::element::Kind::Cursor
                        )
                    })
                    .map(WindowRenderElement::Texture)
                    .collect();
                screenshot(renderer, size, &elements, &path)?;
                Ok(json!({"size": format!("{}x{}", size.w, size.h), "path": path}))
            }
            Request::ScreenshotOutput { path } => {
                let renderer = self.backend.renderer();
                self.comp.upload_scanouts(renderer);
                let size = self.comp.output_size();
                // what the primary output's next frame shows (the one render path)
                let elements = self.comp.output_elements(renderer, &self.comp.output)?;
                screenshot(renderer, size, &elements, &path)?;
                Ok(json!({"size": format!("{}x{}", size.w, size.h), "path": path}))
            }
            Request::Window { guest, scanout, size, position, fullscreen, scale, focus } => {
                let window = self.scanout_window(&guest, scanout)?;
                let element = WindowElement::Scanout(window.clone());
                if !self.comp.space.elements().any(|e| *e == element) {
                    anyhow::bail!("scanout {scanout} of {guest} is not shown");
                }
                if let Some(mode) = scale {
                    self.comp.set_scale_mode(&window, mode);
                }
                if let Some(on) = fullscreen {
                    self.comp.set_fullscreen(&element, on);
                }
                if let Some((w, h)) = size {
                    self.comp.resize_window(&element, (w as i32, h as i32).into());
                }
                if let Some((x, y)) = position {
                    self.comp.space.map_element(element.clone(), (x, y), false);
                    self.comp.queue_redraw();
                }
                if focus {
                    self.focus(Some(element));
                }
                Ok(json!({}))
            }
            Request::Input { actions } => {
                for action in actions {
                    self.input_action(action);
                }
                Ok(json!({}))
            }
            Request::SendKeys { guest, keys } => {
                let index = self.guest_index(&guest)?;
                if self.comp.guests[index].ui.is_none() {
                    anyhow::bail!("guest {guest} has no VMM UI link (give --guest {guest}=...,qmp=PATH)");
                }
                self.comp.send_keys(index, &keys);
                Ok(json!({}))
            }
            Request::LayoutView { guest, on } => {
                let index = self.guest_index(&guest)?;
                self.comp.set_layout_view(index, on);
                Ok(json!({}))
            }
            Request::Objects => {
                let gl = renderer::gl_objects(self.backend.renderer())?;
                let virgl_contexts = self.comp.virgl.as_ref().map_or(0, |v| {
                    let stats = v.virgl.callback_stats();
                    stats.contexts_created.saturating_sub(stats.contexts_destroyed)
                });
                let (fds, rss_bytes) = process_counts();
                Ok(json!({"gl": gl, "virgl_contexts": virgl_contexts, "fds": fds, "rss_bytes": rss_bytes}))
            }
            Request::Overlay { on } => {
                self.comp.overlay = on;
                self.comp.queue_redraw();
                Ok(json!({}))
            }
        }
    }

    fn guest_index(&self, name: &str) -> anyhow::Result<usize> {
        self.comp.guest_index(name).ok_or_else(|| anyhow!("no guest named {name}"))
    }

    fn scanout_window(&self, guest: &str, scanout: u32) -> anyhow::Result<ScanoutWindow> {
        let index = self.guest_index(guest)?;
        self.comp.guests[index]
            .scanouts
            .window(scanout)
            .cloned()
            .ok_or_else(|| anyhow!("guest {guest} has no scanout {scanout}"))
    }
}

/// This process's open file descriptors (entries of `/proc/self/fd`, the listing's own
/// included) and resident memory in bytes (`VmRSS` of `/proc/self/status`); 0 where unreadable.
fn process_counts() -> (usize, u64) {
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count);
    let rss_kib = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    });
    (fds, rss_kib.unwrap_or(0u64) * 1024)
}

/// Render `elements` (topmost first) into a fresh offscreen buffer of `size` pixels and write it
/// as a PNG to `path`.
fn screenshot<E: RenderElement<GlesRenderer>>(
    renderer: &mut GlesRenderer,
    size: Size<i32, Physical>,
    elements: &[E],
    path: &Path,
) -> anyhow::Result<()> {
    if size.w <= 0 || size.h <= 0 {
        anyhow::bail!("nothing to capture ({}x{})", size.w, size.h);
    }
    let mut target: GlesRenderbuffer = renderer::offscreen_target(renderer, size)?;
    let mut tracker = OutputDamageTracker::new(size, 1.0, Transform::Normal);
    {
        let mut fb = renderer.bind(&mut target).context("bind")?;
        render::render_elements(renderer, &mut fb, &mut tracker, 0, elements).context("rendering the screenshot")?;
    }
    let rgba = renderer::read_rgba(renderer, &mut target, size)?;
    renderer::write_png(path, size.w as u32, size.h as u32, &rgba)?;
    info!("screenshot {}x{} -> {}", size.w, size.h, path.display());
    Ok(())
}

/// A guest's 3D for `scanway list`: `"off"`, `{"mode": "shared"}` (sampled in place, zero
/// copies) or `{"mode": "isolated", "worker": {...}}` with the worker's pid, state, restarts,
/// losses, dmabuf exports and read-back copies (count and bytes).
fn three_d_json(gpu: &crate::virtio::device::Gpu) -> Value {
    use crate::virtio::renderer3d::Renderer3dStatus;
    match gpu.renderer_status() {
        None => json!("off"),
        Some(Renderer3dStatus::Shared) => json!({"mode": "shared", "scanout_path": "zero-copy"}),
        Some(Renderer3dStatus::Isolated(w)) => json!({
            "mode": "isolated",
            "scanout_path": if w.exports > 0 { "dmabuf" } else { "read-back" },
            "worker": {
                "pid": w.pid, "running": w.running, "restarts": w.restarts, "lost": w.lost,
                "reason": w.reason, "exports": w.exports,
                "read_backs": w.read_backs, "read_back_bytes": w.read_back_bytes,
            },
        }),
    }
}
