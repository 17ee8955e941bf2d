//! The TTY backend: scanway as the only compositor of a machine, on DRM/KMS.
//!
//! - Session: libseat (as root its built-in seatd, unless `LIBSEAT_BACKEND` says otherwise;
//!   else seatd or logind), which opens the DRM and input devices and switches VTs
//!   (Ctrl+Alt+F1..F12).
//! - GPU: `--drm-device`, else udev's primary GPU of the seat, else its first card. One output
//!   per connected connector with its preferred mode, side by side; the first is the primary.
//! - Rendering: GBM buffers with EGL (the same GLES renderer and share group as the other
//!   backends), one smithay `DrmCompositor` per CRTC. Each output draws on its own vblank: a
//!   frame is queued only when something changed and that output's previous frame was flipped
//!   (its redraw state, `compositor::redraw`).
//!   The compositor puts an element on a plane by itself (direct scanout) when its buffer can be
//!   scanned out; scanway's guest scanouts are GL textures, so they are composited (logged per
//!   output when that changes).
//! - Input: libinput on the seat; udev reports connector changes (hotplug), which rescan.

use std::{collections::HashMap, os::fd::OwnedFd, path::PathBuf};

use anyhow::{Context, anyhow};
use smithay::{
    backend::{
        allocator::{
            Fourcc,
            gbm::{GbmAllocator, GbmBufferFlags, GbmDevice},
        },
        drm::{
            DrmDevice, DrmDeviceFd, DrmEvent, DrmNode,
            compositor::{DrmCompositor, FrameFlags, PrimaryPlaneElement},
            exporter::gbm::GbmFramebufferExporter,
        },
        egl::{EGLContext, EGLDisplay},
        libinput::{LibinputInputBackend, LibinputSessionInterface},
        renderer::{ImportDma, gles::GlesRenderer},
        session::{Event as SessionEvent, Session, libseat::LibSeatSession},
        udev::{UdevBackend, UdevEvent, all_gpus, primary_gpu},
    },
    output::{Mode as OutputMode, Output, PhysicalProperties, Subpixel},
    reexports::{
        calloop::EventLoop,
        drm::control::{Device as ControlDevice, ModeTypeFlags, connector, crtc},
        input::Libinput,
        rustix::fs::OFlags,
    },
    utils::{DeviceFd, Transform},
};
use tracing::{info, warn};

use super::{Backend, CLEAR_COLOR, State};

type GbmDrmCompositor = DrmCompositor<GbmAllocator<DrmDeviceFd>, GbmFramebufferExporter<DrmDeviceFd>, (), DrmDeviceFd>;

/// One connector's output on its CRTC.
struct OutputSurface {
    output: Output,
    connector: connector::Handle,
    compositor: GbmDrmCompositor,
    /// Whether the last frame's primary plane showed an element directly (no composition).
    direct: Option<bool>,
}

/// Backend state of the TTY.
pub struct Tty {
    /// The libseat session: it opened the DRM device and opens libinput's devices, and
    /// switches VTs; while it is paused (VT switched away) no frame is drawn.
    pub session: LibSeatSession,
    /// GLES renderer on the EGL display of the DRM device's GBM device: draws every frame and
    /// screenshot, and virglrenderer shares its EGL display.
    pub renderer: GlesRenderer,
    drm: DrmDevice,
    gbm: GbmDevice<DrmDeviceFd>,
    libinput: Libinput,
    surfaces: HashMap<crtc::Handle, OutputSurface>,
    node: DrmNode,
}

impl Tty {
    /// Open the session, the GPU (`drm_device`, else the seat's primary) and its connected
    /// connectors, and poll DRM, libinput, udev and the session on `event_loop`.
    pub fn new(event_loop: &mut EventLoop<'static, State>, drm_device: Option<PathBuf>) -> anyhow::Result<Tty> {
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } == 0 && std::env::var_os("LIBSEAT_BACKEND").is_none() {
            // As root, libseat's built-in seatd needs no seatd or logind running.
            // SAFETY: called while starting up, before scanway starts any other thread.
            unsafe { std::env::set_var("LIBSEAT_BACKEND", "builtin") };
        }
        let (mut session, notifier) = LibSeatSession::new().map_err(|e| anyhow!("libseat session: {e}"))?;
        let seat = session.seat();
        let path = match drm_device {
            Some(p) => p,
            None => primary_gpu(&seat)
                .ok()
                .flatten()
                .or_else(|| all_gpus(&seat).ok().and_then(|g| g.into_iter().next()))
                .ok_or_else(|| anyhow!("no DRM device on seat {seat}"))?,
        };
        let fd: OwnedFd = session
            .open(&path, OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK)
            .map_err(|e| anyhow!("opening {}: {e}", path.display()))?;
        let fd = DrmDeviceFd::new(DeviceFd::from(fd));
        let node = DrmNode::from_file(fd.clone()).context("DRM node")?;
        let (drm, drm_notifier) = DrmDevice::new(fd.clone(), true).context("DRM device")?;
        let gbm = GbmDevice::new(fd).context("GBM device")?;
        // SAFETY: the GBM device outlives the display (both live in `Tty`).
        let display = unsafe { EGLDisplay::new(gbm.clone()) }.context("EGL display on GBM")?;
        let context = EGLContext::new(&display).context("EGL context")?;
        // SAFETY: the context is fresh and only used through this renderer, on this thread.
        let renderer = unsafe { GlesRenderer::new(context) }.context("GLES renderer")?;
        info!("TTY: {} ({:?}) on seat {seat}", path.display(), node.ty());

        let mut libinput = Libinput::new_with_udev(LibinputSessionInterface::from(session.clone()));
        libinput.udev_assign_seat(&seat).map_err(|()| anyhow!("libinput: assigning seat {seat}"))?;
        let handle = event_loop.handle();
        handle
            .insert_source(LibinputInputBackend::new(libinput.clone()), |event, _, state| {
                super::input::process_input(state, event);
            })
            .map_err(|e| anyhow!("libinput source: {e}"))?;
        handle
            .insert_source(notifier, |event, _, state| session_event(state, event))
            .map_err(|e| anyhow!("session source: {e}"))?;
        handle
            .insert_source(drm_notifier, |event, _, state| match event {
                DrmEvent::VBlank(crtc) => vblank(state, crtc),
                DrmEvent::Error(e) => warn!("DRM: {e}"),
            })
            .map_err(|e| anyhow!("DRM source: {e}"))?;
        let udev = UdevBackend::new(&seat).context("udev")?;
        handle
            .insert_source(udev, |event, _, state| {
                if let UdevEvent::Changed { device_id } = event {
                    info!("udev: DRM device {device_id} changed: rescanning connectors");
                    rescan(state);
                }
            })
            .map_err(|e| anyhow!("udev source: {e}"))?;

        let mut tty = Tty { session, renderer, drm, gbm, libinput, surfaces: HashMap::new(), node };
        tty.scan_connectors();
        if tty.surfaces.is_empty() {
            anyhow::bail!("no connected connector on {}", path.display());
        }
        Ok(tty)
    }

    /// The outputs, primary (leftmost) first.
    pub fn outputs(&self) -> Vec<Output> {
        let mut outputs: Vec<&OutputSurface> = self.surfaces.values().collect();
        outputs.sort_by_key(|s| u32::from(s.connector));
        outputs.into_iter().map(|s| s.output.clone()).collect()
    }

    /// Switch to VT `vt` (`Ctrl+Alt+F<vt>`).
    pub fn change_vt(&mut self, vt: i32) {
        if let Err(e) = self.session.change_vt(vt) {
            warn!("switching to VT {vt}: {e}");
        }
    }

    /// Create an output for every connected connector that has none; drop those gone.
    fn scan_connectors(&mut self) {
        let Ok(resources) = self.drm.resource_handles() else { return };
        let connected: Vec<connector::Info> = resources
            .connectors()
            .iter()
            .filter_map(|c| self.drm.get_connector(*c, true).ok())
            .filter(|c| c.state() == connector::State::Connected && !c.modes().is_empty())
            .collect();
        self.surfaces.retain(|_, s| connected.iter().any(|c| c.handle() == s.connector));
        for info in connected {
            if self.surfaces.values().any(|s| s.connector == info.handle()) {
                continue;
            }
            match self.add_output(&resources, &info) {
                Ok(()) => {}
                Err(e) => warn!("connector {:?}: {e:#}", info.handle()),
            }
        }
    }

    fn add_output(
        &mut self,
        resources: &smithay::reexports::drm::control::ResourceHandles,
        info: &connector::Info,
    ) -> anyhow::Result<()> {
        let mode = info
            .modes()
            .iter()
            .find(|m| m.mode_type().contains(ModeTypeFlags::PREFERRED))
            .or_else(|| info.modes().first())
            .copied()
            .ok_or_else(|| anyhow!("no mode"))?;
        let used: Vec<crtc::Handle> = self.surfaces.keys().copied().collect();
        let crtc = info
            .encoders()
            .iter()
            .filter_map(|e| self.drm.get_encoder(*e).ok())
            .flat_map(|e| resources.filter_crtcs(e.possible_crtcs()))
            .find(|c| !used.contains(c))
            .ok_or_else(|| anyhow!("no free CRTC"))?;
        let surface = self.drm.create_surface(crtc, mode, &[info.handle()]).context("DRM surface")?;
        let name = format!("{}-{}", connector_type_name(info.interface()), info.interface_id());
        let (w, h) = mode.size();
        let output = Output::new(
            name.clone(),
            PhysicalProperties {
                size: info.size().map_or((0, 0), |(w, h)| (w as i32, h as i32)).into(),
                subpixel: Subpixel::Unknown,
                make: "scanway".into(),
                model: name.clone(),
            },
        );
        let output_mode =
            OutputMode { size: (i32::from(w), i32::from(h)).into(), refresh: mode.vrefresh() as i32 * 1000 };
        output.change_current_state(Some(output_mode), Some(Transform::Normal), None, None);
        output.set_preferred(output_mode);
        let allocator = GbmAllocator::new(self.gbm.clone(), GbmBufferFlags::RENDERING | GbmBufferFlags::SCANOUT);
        let exporter = GbmFramebufferExporter::new(self.gbm.clone(), Some(self.node));
        let renderer_formats = self.renderer.dmabuf_formats();
        let planes = surface.planes();
        info!(
            "output {name}: {w}x{h}@{} on CRTC {crtc:?}; planes: primary + {} overlay{}",
            mode.vrefresh(),
            planes.overlay.len(),
            if planes.cursor.is_empty() { "" } else { " + cursor" }
        );
        let compositor = DrmCompositor::new(
            &output,
            surface,
            None,
            allocator,
            exporter,
            [Fourcc::Xrgb8888, Fourcc::Argb8888],
            renderer_formats,
            self.drm.cursor_size(),
            Some(self.gbm.clone()),
        )
        .context("DRM compositor")?;
        self.surfaces.insert(crtc, OutputSurface { output, connector: info.handle(), compositor, direct: None });
        Ok(())
    }
}

fn connector_type_name(kind: connector::Interface) -> &'static str {
    match kind {
        connector::Interface::Virtual => "Virtual",
        connector::Interface::HDMIA | connector::Interface::HDMIB => "HDMI-A",
        connector::Interface::DisplayPort => "DP",
        connector::Interface::EmbeddedDisplayPort => "eDP",
        connector::Interface::VGA => "VGA",
        connector::Interface::DVII | connector::Interface::DVID | connector::Interface::DVIA => "DVI",
        connector::Interface::LVDS => "LVDS",
        _ => "Unknown",
    }
}

/// Draw every output whose redraw is queued (each on its own vblank: an output whose page flip
/// is pending is `Pending`, not `Queued`, and draws after its own flip).
pub fn draw_queued(state: &mut State) {
    let Backend::Tty(tty) = &mut state.backend else { return };
    if !tty.session.is_active() {
        return;
    }
    let queued = state.comp.queued_outputs();
    let crtcs: Vec<crtc::Handle> =
        tty.surfaces.iter().filter(|(_, s)| queued.contains(&s.output)).map(|(crtc, _)| *crtc).collect();
    for crtc in crtcs {
        draw(state, crtc);
    }
}

/// Draw one frame on `crtc`'s output and queue its page flip.
fn draw(state: &mut State, crtc: crtc::Handle) {
    let Backend::Tty(tty) = &mut state.backend else { return };
    let Some(surface) = tty.surfaces.get_mut(&crtc) else { return };
    let output = surface.output.clone();
    let elements = match state.comp.begin_frame(&mut tty.renderer, &output) {
        Ok(e) => e,
        Err(e) => {
            warn!("render elements: {e:#}");
            return;
        }
    };
    let mut submitted = false;
    match surface.compositor.render_frame(&mut tty.renderer, &elements, CLEAR_COLOR, FrameFlags::DEFAULT) {
        Ok(frame) => {
            let direct = matches!(frame.primary_element, PrimaryPlaneElement::Element(_));
            if surface.direct != Some(direct) {
                info!(
                    "output {}: {}",
                    output.name(),
                    if direct { "direct scanout (an element on the primary plane)" } else { "composited" }
                );
                surface.direct = Some(direct);
            }
            if !frame.is_empty {
                match surface.compositor.queue_frame(()) {
                    Ok(()) => submitted = true,
                    Err(e) => warn!("queueing a frame on {crtc:?}: {e:?}"),
                }
            }
        }
        Err(e) => warn!("rendering {}: {e:?}", output.name()),
    }
    state.comp.end_frame(&output, submitted);
}

/// `crtc`'s page flip completed: its frame is presented, and it draws again if queued.
fn vblank(state: &mut State, crtc: crtc::Handle) {
    let Backend::Tty(tty) = &mut state.backend else { return };
    let Some(surface) = tty.surfaces.get_mut(&crtc) else { return };
    if let Err(e) = surface.compositor.frame_submitted() {
        warn!("page flip on {crtc:?}: {e:?}");
    }
    let output = surface.output.clone();
    state.comp.frame_presented(&output);
    if state.comp.redraw_of(&output).is_queued() {
        draw(state, crtc);
    }
}

fn session_event(state: &mut State, event: SessionEvent) {
    let Backend::Tty(tty) = &mut state.backend else { return };
    match event {
        SessionEvent::PauseSession => {
            info!("session paused (VT switched away)");
            tty.libinput.suspend();
            tty.drm.pause();
        }
        SessionEvent::ActivateSession => {
            info!("session active again");
            if tty.libinput.resume().is_err() {
                warn!("libinput: resume failed");
            }
            if let Err(e) = tty.drm.activate(false) {
                warn!("DRM: activate: {e}");
            }
            let mut outputs = Vec::new();
            for surface in tty.surfaces.values_mut() {
                if let Err(e) = surface.compositor.reset_state() {
                    warn!("DRM: reset: {e}");
                }
                outputs.push(surface.output.clone());
            }
            // flips pending when the session paused never complete
            for output in &outputs {
                state.comp.frame_presented(output);
            }
            state.comp.queue_redraw();
            draw_queued(state);
        }
    }
}

fn rescan(state: &mut State) {
    let Backend::Tty(tty) = &mut state.backend else { return };
    let before: Vec<Output> = tty.outputs();
    tty.scan_connectors();
    let after = tty.outputs();
    state.comp.set_outputs(&before, &after);
    state.comp.queue_redraw();
    draw_queued(state);
}
