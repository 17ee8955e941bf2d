//! Starting and stopping the compositor: [`run`] (what `scanway run` does), and the pieces it is
//! made of, which the in-process tests use too: [`State::new`] (globals, outputs, virglrenderer),
//! [`State::after_dispatch`] (what every event-loop iteration ends with) and
//! [`State::shutdown`] (teardown in dependency order).

use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Instant};

use anyhow::{Context, anyhow};
use smithay::{
    desktop::{PopupManager, Space},
    input::SeatState,
    output::{Mode as OutputMode, Output, PhysicalProperties, Subpixel},
    reexports::{
        calloop::{EventLoop, Interest, LoopHandle, Mode, PostAction, generic::Generic},
        wayland_server::Display,
    },
    utils::{Physical, Size, Transform},
    wayland::{
        compositor::CompositorState, output::OutputManagerState, selection::data_device::DataDeviceState,
        shell::xdg::XdgShellState, shm::ShmState, socket::ListeningSocketSource,
    },
};
use tracing::{info, warn};

use super::{
    Backend, Comp, State, attach, config,
    guests::{self, lock},
    handlers::ClientState,
    headless, local_sockets, tty, winit,
};
use crate::{
    run_config::{BackendKind, RunConfig},
    virtio::{device::GpuConfig, virgl3d::VirglShared},
};

/// `scanway run`: start the compositor and serve the guests until SIGTERM/SIGINT or the window
/// closes.
pub fn run(args: RunConfig) -> anyhow::Result<()> {
    let mut event_loop: EventLoop<'static, State> = EventLoop::try_new().context("event loop")?;
    let size = (args.size.width as i32, args.size.height as i32);
    let kind = args.backend.unwrap_or_else(BackendKind::auto);
    info!("backend: {kind:?}");
    let backend = match kind {
        BackendKind::Headless => Backend::Headless(Box::new(headless::Headless::new(size)?)),
        BackendKind::Winit => Backend::Winit(Box::new(winit::Winit::new(&mut event_loop, size)?)),
        BackendKind::Tty => Backend::Tty(Box::new(tty::Tty::new(&mut event_loop, args.drm_device.clone())?)),
    };
    let mut state = State::new(&mut event_loop, backend, &args)?;

    // Wayland clients.
    let listener = ListeningSocketSource::new_auto().context("Wayland socket")?;
    let socket_name = listener.socket_name().to_string_lossy().into_owned();
    let handle = event_loop.handle();
    handle
        .insert_source(listener, |stream, _, state| {
            if let Err(e) = state.comp.display_handle.insert_client(stream, Arc::new(ClientState::default())) {
                warn!("Wayland client: {e}");
            }
        })
        .map_err(|e| anyhow!("Wayland socket source: {e}"))?;
    println!("scanway: wayland socket {socket_name}");

    // Control socket.
    let control_listener = guests::bind_listener(&args.control)?;
    local_sockets::serve_control(&mut state, control_listener)?;
    println!("scanway: control socket {}", args.control.display());

    // Guests.
    for spec in &args.guests {
        let config =
            GpuConfig { num_scanouts: spec.outputs, name: spec.name.clone(), ..state.comp.guest_template.clone() };
        let index = guests::add_guest(&mut state, spec, config)?;
        if !args.no_3d {
            guests::enable_3d(&mut state, index, spec.three_d);
        }
    }

    // VMs handed over by backend processes (libvirt).
    match &args.attach_socket {
        Some(path) => attach::listen(&mut state, path)?,
        None => {
            let path = attach::default_path();
            if let Err(e) = attach::listen(&mut state, &path) {
                info!("no attach socket, so VMs started by libvirt cannot attach: {e:#}");
            }
        }
    }

    // SIGTERM / SIGINT end the loop cleanly.
    let signals =
        calloop::signals::Signals::new(&[calloop::signals::Signal::SIGTERM, calloop::signals::Signal::SIGINT])
            .context("signal source")?;
    handle
        .insert_source(signals, |_, _, state| state.comp.loop_signal.stop())
        .map_err(|e| anyhow!("signal source: {e}"))?;

    event_loop.run(None, &mut state, State::after_dispatch).context("event loop")?;
    state.shutdown(event_loop);
    let _ = std::fs::remove_file(&args.control);
    Ok(())
}

impl State {
    /// The compositor on `backend`: Wayland globals (compositor, xdg-shell, shm, output,
    /// data device, `seat0`), the backend's outputs side by side, virglrenderer in the renderer's
    /// share group unless `args.no_3d`, and the Wayland display polled on `event_loop`. No socket
    /// is opened: [`run`] adds the Wayland, control, guest and attach sockets; tests insert
    /// clients and guests directly. Errors: a global or the config file (`args.config`) failed.
    pub fn new(
        event_loop: &mut EventLoop<'static, State>,
        backend: Backend,
        args: &RunConfig,
    ) -> anyhow::Result<State> {
        let display: Display<State> = Display::new().context("Wayland display")?;
        let display_handle = display.handle();
        let outputs = match &backend {
            Backend::Tty(t) => t.outputs(),
            Backend::Headless(_) => {
                vec![virtual_output((args.size.width as i32, args.size.height as i32).into())]
            }
            Backend::Winit(w) => vec![virtual_output(w.backend.window_size())],
        };
        let output = outputs.first().cloned().ok_or_else(|| anyhow!("the backend has no output"))?;

        let mut seat_state = SeatState::new();
        let mut seat = seat_state.new_wl_seat(&display_handle, "seat0");
        seat.add_keyboard(Default::default(), 200, 25).context("keyboard")?;
        seat.add_pointer();

        let mut comp = Comp {
            compositor_state: CompositorState::new::<State>(&display_handle),
            xdg_shell_state: XdgShellState::new::<State>(&display_handle),
            shm_state: ShmState::new::<State>(&display_handle, vec![]),
            _output_manager_state: OutputManagerState::new_with_xdg_output::<State>(&display_handle),
            data_device_state: DataDeviceState::new::<State>(&display_handle),
            seat_state,
            seat,
            display_handle,
            loop_handle: event_loop.handle(),
            loop_signal: event_loop.get_signal(),
            space: Space::default(),
            popups: PopupManager::default(),
            output,
            guests: Vec::new(),
            redraw: HashMap::new(),
            frames: 0,
            start: Instant::now(),
            virgl: None,
            connections: Default::default(),
            config: config::Config::load(args.config.as_ref())?,
            focused: None,
            grabbed: false,
            swallowed: Vec::new(),
            guest_keys_down: Vec::new(),
            pointer_location: (0.0, 0.0).into(),
            grab: None,
            fullscreen: None,
            overlay: false,
            guest_template: GpuConfig {
                num_scanouts: 1,
                preferred_size: (args.guest_size.width, args.guest_size.height),
                max_host_memory: args.max_resource_memory,
                name: String::new(),
            },
            attach_socket: None,
            record_commands: args.record_commands.clone(),
        };
        comp.set_outputs(&[], &outputs);
        let mut state = State { backend, comp };
        if args.no_3d {
            info!("3D disabled (--no-3d)");
        } else {
            init_virgl(&mut state, &event_loop.handle());
        }
        event_loop
            .handle()
            .insert_source(Generic::new(display, Interest::READ, Mode::Level), |_, display, state| {
                // SAFETY: the display is never dropped while its source lives.
                if let Err(e) = unsafe { display.get_mut().dispatch_clients(state) } {
                    warn!("dispatching Wayland clients: {e}");
                }
                Ok(PostAction::Continue)
            })
            .map_err(|e| anyhow!("Wayland display source: {e}"))?;
        state.comp.queue_redraw();
        Ok(state)
    }

    /// The end of every event-loop iteration: the space and popups forget dead windows, Wayland
    /// clients get what was queued for them, and the outputs whose redraw is queued draw.
    pub fn after_dispatch(&mut self) {
        self.comp.space.refresh();
        self.comp.popups.cleanup();
        if let Err(e) = self.comp.display_handle.flush_clients() {
            warn!("flushing Wayland clients: {e}");
        }
        if !self.comp.queued_outputs().is_empty() {
            match &mut self.backend {
                Backend::Headless(_) => headless::draw_queued(self),
                Backend::Winit(w) => w.backend.window().request_redraw(),
                Backend::Tty(_) => tty::draw_queued(self),
            }
        }
    }

    /// Tear down after the loop ended, in dependency order: the loop's sources (guest
    /// connections) and the guests' 3D state go before virglrenderer, and virglrenderer before
    /// the renderer whose EGL display it uses (dropped with `self`); guest and attach sockets are
    /// removed.
    pub fn shutdown(mut self, event_loop: EventLoop<'static, State>) {
        info!("shutting down after {} frames", self.comp.frames);
        drop(event_loop);
        for guest in &self.comp.guests {
            lock(&guest.device).reset();
        }
        let mut sockets: Vec<PathBuf> = self.comp.guests.drain(..).filter_map(|g| g.socket).collect();
        sockets.extend(self.comp.attach_socket.take());
        self.comp.virgl = None;
        for socket in sockets {
            let _ = std::fs::remove_file(socket);
        }
    }
}

/// The output of the headless and winit backends: one virtual monitor of `size` pixels at
/// 60 Hz.
fn virtual_output(size: Size<i32, Physical>) -> Output {
    let output = Output::new(
        "scanway-1".into(),
        PhysicalProperties {
            size: (0, 0).into(),
            subpixel: Subpixel::Unknown,
            make: "scanway".into(),
            model: "virtual".into(),
        },
    );
    let mode = OutputMode { size, refresh: 60_000 };
    output.change_current_state(Some(mode), Some(Transform::Normal), None, Some((0, 0).into()));
    output.set_preferred(mode);
    output
}

/// Start virglrenderer in the compositor's EGL share group and poll its fence eventfd on the
/// loop. On failure guests get a 2D-only device (no `VIRTIO_GPU_F_VIRGL`).
fn init_virgl(state: &mut State, handle: &LoopHandle<'static, State>) {
    use crate::renderer::virgl::{GlApi, Virgl, VirglOptions};
    let renderer = state.backend.renderer();
    let display = renderer.egl_context().display().get_display_handle().handle;
    let context = renderer.egl_context().get_context_handle();
    // SAFETY: the display and context are the renderer's and outlive virglrenderer (see the
    // teardown order at the end of `run`).
    let virgl = unsafe {
        Virgl::init_with(display, context, VirglOptions { api: GlApi::SameAsShareContext, thread_sync: true })
    };
    let virgl = match virgl {
        Ok(v) => v,
        Err(e) => {
            warn!("virglrenderer unavailable, guests get 2D only: {e}");
            return;
        }
    };
    let version = virgl.gl_version();
    if let Some(fd) = virgl.poll_fd() {
        let source = Generic::new(PollFd(fd), Interest::READ, Mode::Level);
        let inserted = handle.insert_source(source, |_, _, state| {
            if let Some(shared) = state.comp.virgl.as_ref() {
                shared.virgl.poll();
            }
            state.comp.dispatch_fences();
            Ok(PostAction::Continue)
        });
        if let Err(e) = inserted {
            warn!("virglrenderer fence source: {e}");
        }
    }
    info!("virglrenderer initialised in the compositor's share group ({version:?})");
    let display = state.backend.renderer().egl_context().display().clone();
    state.comp.virgl = Some(VirglShared::new(virgl, Some(display)));
}

/// virglrenderer's fence eventfd (owned by virglrenderer, valid while it is initialised).
struct PollFd(std::os::fd::RawFd);

impl std::os::fd::AsFd for PollFd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: virglrenderer keeps the eventfd open until virgl_renderer_cleanup, which runs
        // after the event loop (and this source) is dropped.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.0) }
    }
}
