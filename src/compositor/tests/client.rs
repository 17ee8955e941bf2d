//! A real Wayland client for the in-process tests: `wayland-client` over a socket pair, one
//! xdg toplevel painted a single colour through `wl_shm`, and everything the compositor tells
//! it recorded (configure sizes, keyboard and pointer events, frame callbacks).

use std::{
    io::Write,
    os::{
        fd::{AsFd, FromRawFd, OwnedFd},
        unix::net::UnixStream,
    },
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use wayland_client::{
    Connection, Dispatch, EventQueue, QueueHandle, WEnum, delegate_noop,
    protocol::{
        wl_buffer::WlBuffer,
        wl_callback::{self, WlCallback},
        wl_compositor::WlCompositor,
        wl_keyboard::{self, WlKeyboard},
        wl_pointer::{self, WlPointer},
        wl_registry::{self, WlRegistry},
        wl_seat::{self, WlSeat},
        wl_shm::{self, WlShm},
        wl_shm_pool::WlShmPool,
        wl_surface::WlSurface,
    },
};
use wayland_protocols::xdg::shell::client::{
    xdg_surface::{self, XdgSurface},
    xdg_toplevel::{self, XdgToplevel},
    xdg_wm_base::{self, XdgWmBase},
};

/// What the client saw, in order where order matters.
#[derive(Default, Debug)]
pub(crate) struct Seen {
    /// Sizes of the toplevel's configure events (0x0: the client chooses).
    pub configures: Vec<(i32, i32)>,
    /// Whether the surface has keyboard focus (`wl_keyboard.enter` without a later `leave`).
    pub keyboard_focus: bool,
    /// Key events: (evdev code, pressed).
    pub keys: Vec<(u32, bool)>,
    /// Pointer position over the surface (surface-local pixels) while the pointer is on it.
    pub pointer: Option<(f64, f64)>,
    /// Button events: (evdev code, pressed).
    pub buttons: Vec<(u32, bool)>,
    /// Frame callbacks done.
    pub frames: u32,
    /// The toplevel was asked to close.
    pub close_requested: bool,
}

/// The client's objects and what it saw.
#[derive(Default)]
struct Data {
    compositor: Option<WlCompositor>,
    shm: Option<WlShm>,
    wm_base: Option<XdgWmBase>,
    seat: Option<WlSeat>,
    seen: Seen,
    /// The xdg_surface's configure that has not been acked yet.
    pending_configure: Option<u32>,
}

/// One Wayland client with (after [`TestClient::map`]) one toplevel.
pub(crate) struct TestClient {
    conn: Connection,
    queue: EventQueue<Data>,
    qh: QueueHandle<Data>,
    data: Data,
    surface: Option<(WlSurface, XdgSurface, XdgToplevel)>,
}

impl TestClient {
    /// Connect over `stream` and ask for the globals (bound when the registry answers).
    pub(crate) fn connect(stream: UnixStream) -> TestClient {
        let conn = Connection::from_socket(stream).unwrap();
        let queue = conn.new_event_queue();
        let qh = queue.handle();
        conn.display().get_registry(&qh, ());
        TestClient { conn, queue, qh, data: Data::default(), surface: None }
    }

    /// Send what is queued, read what arrived (never blocking), handle it.
    pub(crate) fn pump(&mut self) {
        let _ = self.conn.flush();
        if let Some(guard) = self.conn.prepare_read() {
            // WouldBlock: nothing to read yet
            let _ = guard.read();
        }
        self.queue.dispatch_pending(&mut self.data).unwrap();
        if let (Some(serial), Some((surface, xdg, _))) = (self.data.pending_configure.take(), &self.surface) {
            xdg.ack_configure(serial);
            surface.commit();
        }
    }

    /// A `wl_display.sync`: the flag is set once the compositor answered it.
    pub(crate) fn sync(&mut self) -> Arc<AtomicBool> {
        let done = Arc::new(AtomicBool::new(false));
        self.conn.display().sync(&self.qh, done.clone());
        done
    }

    /// What the client saw so far.
    pub(crate) fn seen(&self) -> &Seen {
        &self.data.seen
    }

    /// Create a toplevel titled `title` and commit it without a buffer (the compositor then
    /// sends its first configure).
    pub(crate) fn map(&mut self, title: &str) {
        let compositor = self.data.compositor.as_ref().expect("wl_compositor bound");
        let wm_base = self.data.wm_base.as_ref().expect("xdg_wm_base bound");
        let surface = compositor.create_surface(&self.qh, ());
        let xdg = wm_base.get_xdg_surface(&surface, &self.qh, ());
        let toplevel = xdg.get_toplevel(&self.qh, ());
        toplevel.set_title(title.into());
        surface.commit();
        self.surface = Some((surface, xdg, toplevel));
    }

    /// Attach a `width` x `height` buffer of one colour (`argb`, as `wl_shm` ARGB8888 stores it
    /// little-endian: B, G, R, A bytes), damage it all, ask for a frame callback, commit.
    pub(crate) fn paint(&mut self, width: i32, height: i32, argb: u32) {
        let (surface, _, _) = self.surface.as_ref().expect("mapped");
        let stride = width * 4;
        let len = (stride * height) as usize;
        let fd = memfd(len);
        let mut file = std::fs::File::from(fd.try_clone().unwrap());
        let row: Vec<u8> = std::iter::repeat_n(argb.to_le_bytes(), width as usize).flatten().collect();
        for _ in 0..height {
            file.write_all(&row).unwrap();
        }
        let shm = self.data.shm.as_ref().expect("wl_shm bound");
        let pool = shm.create_pool(fd.as_fd(), len as i32, &self.qh, ());
        let buffer = pool.create_buffer(0, width, height, stride, wl_shm::Format::Argb8888, &self.qh, ());
        pool.destroy();
        surface.attach(Some(&buffer), 0, 0);
        surface.damage_buffer(0, 0, width, height);
        surface.frame(&self.qh, ());
        surface.commit();
    }

    /// Destroy the toplevel and its surface (the window closes).
    pub(crate) fn unmap(&mut self) {
        if let Some((surface, xdg, toplevel)) = self.surface.take() {
            toplevel.destroy();
            xdg.destroy();
            surface.destroy();
        }
    }
}

/// A sealed-size anonymous file of `len` bytes for a `wl_shm` pool.
fn memfd(len: usize) -> OwnedFd {
    // SAFETY: the name is a NUL-terminated C string; the result is checked.
    let fd = unsafe { libc::memfd_create(c"scanway-test-shm".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    std::fs::File::from(fd.try_clone().unwrap()).set_len(len as u64).unwrap();
    fd
}

impl Dispatch<WlRegistry, ()> for Data {
    fn event(
        data: &mut Self,
        registry: &WlRegistry,
        event: wl_registry::Event,
        (): &(),
        _: &Connection,
        qh: &QueueHandle<Self>,
    ) {
        if let wl_registry::Event::Global { name, interface, version } = event {
            match interface.as_str() {
                "wl_compositor" => data.compositor = Some(registry.bind(name, version.min(5), qh, ())),
                "wl_shm" => data.shm = Some(registry.bind(name, 1, qh, ())),
                "xdg_wm_base" => data.wm_base = Some(registry.bind(name, 1, qh, ())),
                "wl_seat" => data.seat = Some(registry.bind(name, version.min(7), qh, ())),
                _ => {}
            }
        }
    }
}

impl Dispatch<XdgWmBase, ()> for Data {
    fn event(
        _: &mut Self,
        wm_base: &XdgWmBase,
        event: xdg_wm_base::Event,
        (): &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let xdg_wm_base::Event::Ping { serial } = event {
            wm_base.pong(serial);
        }
    }
}

impl Dispatch<XdgSurface, ()> for Data {
    fn event(
        data: &mut Self,
        _: &XdgSurface,
        event: xdg_surface::Event,
        (): &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let xdg_surface::Event::Configure { serial } = event {
            data.pending_configure = Some(serial);
        }
    }
}

impl Dispatch<XdgToplevel, ()> for Data {
    fn event(
        data: &mut Self,
        _: &XdgToplevel,
        event: xdg_toplevel::Event,
        (): &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        match event {
            xdg_toplevel::Event::Configure { width, height, .. } => data.seen.configures.push((width, height)),
            xdg_toplevel::Event::Close => data.seen.close_requested = true,
            _ => {}
        }
    }
}

impl Dispatch<WlSeat, ()> for Data {
    fn event(data: &mut Self, seat: &WlSeat, event: wl_seat::Event, (): &(), _: &Connection, qh: &QueueHandle<Self>) {
        if let wl_seat::Event::Capabilities { capabilities: WEnum::Value(caps) } = event {
            if caps.contains(wl_seat::Capability::Keyboard) {
                seat.get_keyboard(qh, ());
            }
            if caps.contains(wl_seat::Capability::Pointer) {
                seat.get_pointer(qh, ());
            }
        }
        let _ = data;
    }
}

impl Dispatch<WlKeyboard, ()> for Data {
    fn event(
        data: &mut Self,
        _: &WlKeyboard,
        event: wl_keyboard::Event,
        (): &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        match event {
            wl_keyboard::Event::Enter { .. } => data.seen.keyboard_focus = true,
            wl_keyboard::Event::Leave { .. } => data.seen.keyboard_focus = false,
            wl_keyboard::Event::Key { key, state: WEnum::Value(state), .. } => {
                data.seen.keys.push((key, state == wl_keyboard::KeyState::Pressed));
            }
            _ => {}
        }
    }
}

impl Dispatch<WlPointer, ()> for Data {
    fn event(data: &mut Self, _: &WlPointer, event: wl_pointer::Event, (): &(), _: &Connection, _: &QueueHandle<Self>) {
        match event {
            wl_pointer::Event::Enter { surface_x, surface_y, .. }
            | wl_pointer::Event::Motion { surface_x, surface_y, .. } => {
                data.seen.pointer = Some((surface_x, surface_y));
            }
            wl_pointer::Event::Leave { .. } => data.seen.pointer = None,
            wl_pointer::Event::Button { button, state: WEnum::Value(state), .. } => {
                data.seen.buttons.push((button, state == wl_pointer::ButtonState::Pressed));
            }
            _ => {}
        }
    }
}

impl Dispatch<WlCallback, ()> for Data {
    fn event(
        data: &mut Self,
        _: &WlCallback,
        event: wl_callback::Event,
        (): &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_callback::Event::Done { .. } = event {
            data.seen.frames += 1;
        }
    }
}

impl Dispatch<WlCallback, Arc<AtomicBool>> for Data {
    fn event(
        _: &mut Self,
        _: &WlCallback,
        event: wl_callback::Event,
        done: &Arc<AtomicBool>,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_callback::Event::Done { .. } = event {
            done.store(true, Ordering::Relaxed);
        }
    }
}

delegate_noop!(Data: ignore WlCompositor);
delegate_noop!(Data: ignore WlSurface);
delegate_noop!(Data: ignore WlShm);
delegate_noop!(Data: ignore WlShmPool);
delegate_noop!(Data: ignore WlBuffer);
