//! The compositor in the test process: headless output (EGL on Mesa), no sockets, driven one
//! event-loop iteration at a time ([`Fixture::dispatch`]), with real Wayland clients
//! ([`client::TestClient`], the `wayland-client` crate over a socket pair) and synthetic guests
//! (the vhost-user frontend of `virtio::synthetic`, served by the compositor's own guest
//! code). Window management, focus, input routing, overlay and screenshots are checked in
//! milliseconds, without QEMU.
//!
//! Every wait is bounded ([`Fixture::until`]): a test fails with what it waited for instead of
//! hanging. Tests hold [`EGL_LOCK`] while they run: EGL displays of one device are one display
//! per process, and one test terminating it would pull it from under another.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod client;
mod guests;
mod local_sockets;
mod shortcuts;
mod windows;

use std::{
    os::unix::net::UnixStream,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use smithay::reexports::calloop::EventLoop;

use super::{Backend, State, handlers::ClientState, headless::Headless};
use crate::{
    control::{InputAction, Request},
    run_config::{RunConfig, Size},
    virtio::synthetic::SyntheticGuest,
};

/// Serialises the tests that create an EGL display (see the module documentation).
static EGL_LOCK: Mutex<()> = Mutex::new(());

/// Output size of the fixture's headless backend, pixels.
pub(crate) const OUTPUT: (i32, i32) = (1280, 800);
/// Longest any wait of a test may take.
const DEADLINE: Duration = Duration::from_secs(10);
/// Guest memory of a synthetic guest, bytes.
const GUEST_MEM: usize = 16 << 20;

/// A compositor on a headless output, its event loop, and a scratch directory.
pub(crate) struct Fixture {
    event_loop: EventLoop<'static, State>,
    pub(crate) state: State,
    pub(crate) dir: PathBuf,
    _egl: MutexGuard<'static, ()>,
}

impl Fixture {
    /// A compositor with a [`OUTPUT`]-sized headless output, no 3D, no sockets.
    pub(crate) fn new() -> Fixture {
        let egl = EGL_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        let dir =
            std::env::temp_dir().join(format!("scanway-test-{}-{:?}", std::process::id(), std::thread::current().id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("scanway.toml"), "").unwrap();
        let args = RunConfig {
            backend: None,
            drm_device: None,
            size: Size { width: OUTPUT.0 as u32, height: OUTPUT.1 as u32 },
            guest_size: Size { width: 640, height: 480 },
            guests: Vec::new(),
            no_3d: true,
            max_resource_memory: 256 << 20,
            // an empty configuration file: the defaults, whatever the user running the tests has
            config: Some(dir.join("scanway.toml")),
            attach_socket: None,
            record_commands: None,
            control: dir.join("ctl.sock"),
        };
        let mut event_loop = EventLoop::try_new().unwrap();
        let backend = Backend::Headless(Box::new(Headless::new(OUTPUT).unwrap()));
        let state = State::new(&mut event_loop, backend, &args).unwrap();
        let mut fixture = Fixture { event_loop, state, dir, _egl: egl };
        fixture.dispatch();
        fixture
    }

    /// One event-loop iteration (waiting at most 1 ms for an event), then what every iteration
    /// ends with (refresh, flush to clients, draw).
    pub(crate) fn dispatch(&mut self) {
        self.event_loop.dispatch(Some(Duration::from_millis(1)), &mut self.state).unwrap();
        self.state.after_dispatch();
    }

    /// Dispatch until `done` holds; panics naming `what` after [`DEADLINE`].
    pub(crate) fn until(&mut self, what: &str, mut done: impl FnMut(&mut Fixture) -> bool) {
        let start = Instant::now();
        while !done(self) {
            assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
            self.dispatch();
        }
    }

    /// A Wayland client connected over a socket pair, its globals bound.
    pub(crate) fn client(&mut self) -> client::TestClient {
        let (server, client) = UnixStream::pair().unwrap();
        self.state.comp.display_handle.insert_client(server, Arc::new(ClientState::default())).unwrap();
        let mut client = client::TestClient::connect(client);
        self.roundtrip(&mut client);
        client
    }

    /// Exchange messages with `client` until the compositor has answered everything it sent.
    pub(crate) fn roundtrip(&mut self, client: &mut client::TestClient) {
        let done = client.sync();
        let start = Instant::now();
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            assert!(start.elapsed() < DEADLINE, "timed out in a Wayland roundtrip");
            client.pump();
            self.dispatch();
            client.pump();
        }
    }

    /// Feed `actions` to the seat, as `scanway input` does.
    pub(crate) fn input(&mut self, actions: Vec<InputAction>) {
        self.state.control(Request::Input { actions }).unwrap();
    }

    /// A guest slot named `name` with `scanouts` scanouts and a synthetic VMM connected to it
    /// through the compositor's own connection code.
    pub(crate) fn guest(&mut self, name: &str, scanouts: u32) -> SyntheticGuest {
        let config = crate::virtio::device::GpuConfig {
            num_scanouts: scanouts,
            name: name.into(),
            ..self.state.comp.guest_template.clone()
        };
        let index = super::guests::push_guest(&mut self.state, name, None, None, config);
        let (vmm, backend) = UnixStream::pair().unwrap();
        backend.set_nonblocking(true).unwrap();
        super::guests::accept(&mut self.state, index, backend);
        SyntheticGuest::connect(vmm, GUEST_MEM, || self.dispatch()).unwrap()
    }

    /// The output as a screenshot would show it now (`scanway screenshot --output`): RGBA bytes,
    /// [`OUTPUT`] pixels.
    pub(crate) fn screenshot(&mut self) -> Vec<u8> {
        let path = self.dir.join("output.png");
        self.state.control(Request::ScreenshotOutput { path: path.clone() }).unwrap();
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut rgba = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut rgba).unwrap();
        assert_eq!((info.width, info.height), (OUTPUT.0 as u32, OUTPUT.1 as u32));
        match info.color_type {
            png::ColorType::Rgba => rgba,
            // opaque output: RGB, widened to RGBA
            png::ColorType::Rgb => rgba.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect(),
            other => panic!("screenshot colour type {other:?}"),
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The RGBA pixel at (x, y) of an [`OUTPUT`]-sized screenshot.
pub(crate) fn pixel(rgba: &[u8], x: i32, y: i32) -> [u8; 4] {
    let i = ((y * OUTPUT.0 + x) * 4) as usize;
    [rgba[i], rgba[i + 1], rgba[i + 2], rgba[i + 3]]
}
