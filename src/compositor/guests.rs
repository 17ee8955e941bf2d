//! Guests on the event loop: one listening vhost-user socket per `--guest`, or a VMM
//! connection handed over by a backend process (`scanway --fd=N`, see [`crate::attach`] and
//! [`super::attach`]); at most one VMM connection per guest at a time, and the queue kick
//! eventfds, all calloop sources of the compositor's loop. A guest that disconnects loses its
//! windows and resources and its socket listens again (an attached guest keeps its slot, so
//! that its windows come back where they were when the VM is attached again); other guests
//! never notice.

use std::{
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd},
        unix::net::{UnixListener, UnixStream},
    },
    path::PathBuf,
    sync::{Arc, Mutex},
};

use anyhow::Context;
use smithay::reexports::calloop::{Interest, Mode, PostAction, RegistrationToken, generic::Generic};
use tracing::{info, warn};
use vhost::vhost_user::{BackendReqHandler, Error as VhostError};
use vmm_sys_util::eventfd::EventFd;

use crate::virtio::renderer3d::Renderer3dStatus;

use super::State;
use crate::{
    compositor::qemu_ui::{QemuUi, UiLink},
    run_config::{Guest3d, GuestSpec},
    scanout::GuestScanouts,
    virtio::{
        device::{GpuConfig, record::Recorder},
        isolated::Isolated3d,
        vhost::{NUM_QUEUES, VhostUserGpu},
        virgl3d::Virgl3d,
    },
};

/// The vhost crate's request handler over our device, as a pollable calloop source.
struct Connection(BackendReqHandler<Mutex<VhostUserGpu>>);

impl AsFd for Connection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the handler owns the socket for as long as `self` lives.
        unsafe { BorrowedFd::borrow_raw(self.0.as_raw_fd()) }
    }
}

/// One guest: its socket, device and windows.
pub struct Guest {
    /// Name from `--guest NAME=...`.
    pub name: String,
    /// The vhost-user socket scanway listens on; `None` for a guest attached by a backend
    /// process.
    pub socket: Option<PathBuf>,
    /// The device (shared with the vhost request handler while a VMM is connected).
    pub device: Arc<Mutex<VhostUserGpu>>,
    /// The guest's scanouts as windows.
    pub scanouts: GuestScanouts,
    /// How to reach the VM's D-Bus display (`--guest ...,qmp=PATH`, or the libvirt domain of
    /// an attached VM).
    pub link: Option<UiLink>,
    /// The backend process's attach connection (attached guests): closed when the VMM goes
    /// away, which ends that process.
    pub attach: Option<UnixStream>,
    /// The link to the VMM's UI (display changes, input) while a VMM is connected.
    pub ui: Option<QemuUi>,
    connection: Option<RegistrationToken>,
    kicks: [Option<RegistrationToken>; NUM_QUEUES],
}

impl Guest {
    /// Whether a VMM is connected.
    pub fn connected(&self) -> bool {
        self.connection.is_some()
    }
}

/// Lock a guest's device. The lock is only ever taken on the event loop's thread, so it is
/// never contended; a poisoned lock (a panic elsewhere) still holds a consistent device model.
pub fn lock(device: &Mutex<VhostUserGpu>) -> std::sync::MutexGuard<'_, VhostUserGpu> {
    device.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Create guest `spec`'s socket and listen on it. Returns the guest's index in `state.comp.guests`.
pub fn add_guest(state: &mut State, spec: &GuestSpec, config: GpuConfig) -> anyhow::Result<usize> {
    let listener = bind_listener(&spec.socket)?;
    let index = push_guest(state, &spec.name, Some(spec.socket.clone()), spec.qmp.clone().map(UiLink::Qmp), config);
    serve_listener(state, listener, "guest socket", move |state, stream| accept(state, index, stream))?;
    println!("scanway: guest {} listening on {}", spec.name, spec.socket.display());
    Ok(index)
}

/// Listen on the Unix socket `path`, non-blocking: a stale socket of an earlier run is replaced,
/// a live one (something accepts on it) is an error.
pub fn bind_listener(path: &std::path::Path) -> anyhow::Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            anyhow::bail!("{} is in use by another process", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener = UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Accept every connection on `listener` (non-blocking) as it comes, on the event loop, and
/// hand it to `on_accept`; `what` names the socket in logs. Errors: the loop refused the source.
pub fn serve_listener(
    state: &mut State,
    listener: UnixListener,
    what: &'static str,
    mut on_accept: impl FnMut(&mut State, UnixStream) + 'static,
) -> anyhow::Result<()> {
    state
        .comp
        .loop_handle
        .insert_source(Generic::new(listener, Interest::READ, Mode::Level), move |_, listener, state| {
            loop {
                match listener.accept() {
                    Ok((stream, _)) => on_accept(state, stream),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        warn!("accepting on the {what}: {e}");
                        break;
                    }
                }
            }
            Ok(PostAction::Continue)
        })
        .map_err(|e| anyhow::anyhow!("registering the {what}: {e}"))?;
    Ok(())
}

/// Add a guest slot (no VMM connected yet). Returns its index in `state.comp.guests`.
pub fn push_guest(
    state: &mut State,
    name: &str,
    socket: Option<PathBuf>,
    link: Option<UiLink>,
    config: GpuConfig,
) -> usize {
    let num_scanouts = config.num_scanouts;
    let index = state.comp.guests.len();
    // The vhost crate's request handler takes an `Arc`; the device (with its Rc-shared virgl
    // state) never leaves the event loop's thread, so neither Send nor Sync is needed.
    #[allow(clippy::arc_with_non_send_sync)]
    let device = Arc::new(Mutex::new(VhostUserGpu::new(config)));
    let scanouts = GuestScanouts::new(name, num_scanouts);
    let color = state.comp.config.guest_color(name);
    let scale = state.comp.config.guests.get(name).and_then(|g| g.scale).unwrap_or_default();
    for window in scanouts.windows() {
        window.with_decoration(|d| d.color = color);
        window.set_scale_mode(scale);
    }
    state.comp.guests.push(Guest {
        name: name.to_owned(),
        socket,
        device,
        scanouts,
        link,
        attach: None,
        ui: None,
        connection: None,
        kicks: [None, None],
    });
    index
}

/// Give guest `index` its 3D: `mode` ([`Guest3d`]) as far as this instance has it (no shared
/// 3D without virglrenderer in the compositor; a worker that cannot start leaves the guest
/// 2D-only, said once).
pub fn enable_3d(state: &mut State, index: usize, mode: Guest3d) {
    let Some(guest) = state.comp.guests.get(index) else { return };
    match mode {
        Guest3d::Off => {}
        Guest3d::Shared => {
            if let Some(shared) = state.comp.virgl.clone() {
                lock(&guest.device).gpu_mut().enable_3d(Box::new(Virgl3d::new(shared)));
            }
        }
        Guest3d::Isolated => {
            let exe = match std::env::current_exe() {
                Ok(exe) => exe,
                Err(e) => return warn!(guest = %guest.name, "no 3D: scanway's own executable: {e}"),
            };
            let renderer = match Isolated3d::spawn(&guest.name, exe) {
                Ok(r) => r,
                Err(e) => return warn!(guest = %guest.name, "no 3D: {e:#}"),
            };
            // The source polls a descriptor of its own on the same epoll instance, which lives
            // as long as either.
            // SAFETY: the renderer owns the descriptor, alive during this call.
            let wake = unsafe { BorrowedFd::borrow_raw(renderer.wake_fd()) }.try_clone_to_owned();
            lock(&guest.device).gpu_mut().enable_3d(Box::new(renderer));
            let inserted = wake.map_err(anyhow::Error::from).and_then(|fd| {
                state
                    .comp
                    .loop_handle
                    .insert_source(Generic::new(fd, Interest::READ, Mode::Level), move |_, _, state| {
                        state.comp.worker_event(index);
                        Ok(PostAction::Continue)
                    })
                    .map_err(|e| anyhow::anyhow!("{e}"))
            });
            if let Err(e) = inserted {
                warn!(guest = %guest.name, "3D worker source: {e:#}");
            }
        }
    }
}

/// Serve the VMM connection `stream` as guest `index` (refused when one is attached already).
pub fn accept(state: &mut State, index: usize, stream: UnixStream) {
    let Some(guest) = state.comp.guests.get_mut(index) else { return };
    if guest.connected() {
        warn!(guest = %guest.name, "refusing a second VMM connection while one is attached");
        return;
    }
    if let Err(e) = stream.set_nonblocking(false) {
        warn!(guest = %guest.name, "socket: {e}");
        return;
    }
    if let Some(dir) = &state.comp.record_commands {
        start_recording(dir, guest);
    }
    let handler = BackendReqHandler::from_stream(stream, guest.device.clone());
    let token = state.comp.loop_handle.insert_source(
        Generic::new(Connection(handler), Interest::READ, Mode::Level),
        move |_, conn, state| {
            // SAFETY: the connection is never dropped or moved out while the source lives.
            let conn = unsafe { conn.get_mut() };
            match conn.0.handle_request() {
                Ok(()) => {
                    register_kicks(state, index);
                    Ok(PostAction::Continue)
                }
                Err(e) => {
                    match e {
                        VhostError::Disconnected | VhostError::PartialMessage => {}
                        other => warn!("guest {index}: vhost-user request failed, disconnecting: {other}"),
                    }
                    disconnect(state, index);
                    Ok(PostAction::Remove)
                }
            }
        },
    );
    match token {
        Ok(token) => {
            guest.connection = Some(token);
            guest.ui = guest.link.as_ref().map(|link| QemuUi::spawn(&guest.name, link));
            info!(guest = %guest.name, "VMM connected");
            println!("scanway: guest {} connected", guest.name);
        }
        Err(e) => warn!(guest = %guest.name, "registering connection: {e}"),
    }
}

/// Record this VMM connection's requests into `dir/NAME-N.bin` (N: the first free number).
fn start_recording(dir: &std::path::Path, guest: &Guest) {
    let file = (0..10_000).find_map(|n| {
        let path = dir.join(format!("{}-{n}.bin", guest.name));
        std::fs::OpenOptions::new().write(true).create_new(true).open(&path).ok().map(|f| (f, path))
    });
    let Some((file, path)) = file else {
        warn!(guest = %guest.name, "cannot create a recording in {}", dir.display());
        return;
    };
    let mut device = lock(&guest.device);
    let config = device.gpu().config().clone();
    match Recorder::new(Box::new(std::io::BufWriter::new(file)), &config) {
        Ok(recorder) => {
            device.gpu_mut().record_to(Some(recorder));
            info!(guest = %guest.name, "recording requests into {}", path.display());
        }
        Err(e) => warn!(guest = %guest.name, "recording into {}: {e}", path.display()),
    }
}

/// Poll the kick eventfds the VMM sent in its last request.
fn register_kicks(state: &mut State, index: usize) {
    let Some(guest) = state.comp.guests.get_mut(index) else { return };
    let kicks = lock(&guest.device).take_new_kicks();
    for (queue, kick) in kicks {
        let Some(slot) = guest.kicks.get_mut(queue) else { continue };
        if let Some(old) = slot.take() {
            state.comp.loop_handle.remove(old);
        }
        let token = state.comp.loop_handle.insert_source(
            Generic::new(KickFd(kick), Interest::READ, Mode::Level),
            move |_, kick, state| {
                // Clear the eventfd's counter; an error means it was already read.
                let _ = kick.0.read();
                state.comp.process_queue(index, queue);
                Ok(PostAction::Continue)
            },
        );
        match token {
            Ok(token) => *slot = Some(token),
            Err(e) => warn!(guest = %guest.name, "registering queue {queue} kick: {e}"),
        }
    }
}

struct KickFd(EventFd);

impl AsFd for KickFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the EventFd owns the descriptor for as long as `self` lives.
        unsafe { BorrowedFd::borrow_raw(self.0.as_raw_fd()) }
    }
}

/// The VMM went away: free everything of this guest, close its windows, listen again.
fn disconnect(state: &mut State, index: usize) {
    let comp = &mut state.comp;
    let Some(guest) = comp.guests.get_mut(index) else { return };
    for token in guest.kicks.iter_mut().filter_map(Option::take) {
        comp.loop_handle.remove(token);
    }
    // The connection's own source is removed by returning PostAction::Remove.
    guest.connection = None;
    guest.ui = None;
    // ends the backend process of an attached guest (libvirt's per-VM process)
    guest.attach = None;
    lock(&guest.device).reset();
    lock(&guest.device).gpu_mut().rearm_warnings();
    // ends (and flushes) this connection's recording, if any
    lock(&guest.device).gpu_mut().record_to(None);
    // Reset emitted ResourceDestroyed/ScanoutSet events; drop them with the textures.
    let _ = lock(&guest.device).gpu_mut().drain_events().count();
    let unmapped = guest.scanouts.clear();
    // A guest's resources can be hundreds of MiB of heap: hand what was freed back to the
    // system now, not whenever malloc next trims (scanway runs for as long as its VMs do).
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
    info!(guest = %guest.name, "VMM disconnected; resources freed");
    let notice = three_d_notice(lock(&guest.device).gpu());
    for window in guest.scanouts.windows() {
        window.with_decoration(|d| d.notice = notice.clone());
    }
    println!("scanway: guest {} disconnected", guest.name);
    for window in unmapped {
        // it comes back where it was when a VMM connects again, but loses focus and fullscreen
        comp.unmap_scanout(&window);
        comp.forget_window(&crate::compositor::element::WindowElement::Scanout(window));
    }
    comp.queue_redraw();
}

/// The notice a guest's windows show about its 3D: a lost isolated worker, until the VMM
/// reconnects and a new one runs.
pub fn three_d_notice(gpu: &crate::virtio::device::Gpu) -> Option<String> {
    match gpu.renderer_status()? {
        Renderer3dStatus::Isolated(w) if !w.running => Some(format!(
            "3D worker gone ({}): 3D is off until the VM restarts",
            w.reason.as_deref().unwrap_or("unknown")
        )),
        _ => None,
    }
}
