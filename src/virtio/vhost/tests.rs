//! [`VhostUserGpu`] driven through a real vhost-user socket by the synthetic guest
//! (`crate::virtio::synthetic`): the backend side runs on the test's thread, as on scanway's
//! event loop.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
// The vhost crate's request handler takes an `Arc`; each device stays on the thread that made it.
#![allow(clippy::arc_with_non_send_sync)]

use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::virtio::device::{GpuEvent, Rect};
use crate::virtio::protocol::*;
use crate::virtio::synthetic::{
    GuestOptions, HostLoop, SyntheticGuest, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, cmd, expect_type,
};

/// Longest wait of one backend pump, and so the granularity of the guest's waits.
const PUMP: Duration = Duration::from_millis(5);
const MEM: usize = 16 << 20;

fn device(config: GpuConfig) -> Arc<Mutex<VhostUserGpu>> {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    Arc::new(Mutex::new(VhostUserGpu::new(config)))
}

/// A guest connected to `device` through a fresh socket pair, and the backend loop serving it.
fn connect(device: &Arc<Mutex<VhostUserGpu>>, options: GuestOptions) -> (SyntheticGuest, HostLoop) {
    let (vmm, backend) = UnixStream::pair().unwrap();
    let mut host = HostLoop::new(device.clone(), backend);
    let guest = SyntheticGuest::connect_with(vmm, options, || {
        host.pump(PUMP);
    })
    .unwrap();
    (guest, host)
}

fn pattern(x: u32, y: u32) -> [u8; 4] {
    [(x * 3) as u8, (y * 5) as u8, (x ^ y) as u8, 0xff]
}

#[test]
fn handshake_display_info_and_edid() {
    let config =
        GpuConfig { num_scanouts: 2, preferred_size: (1024, 768), name: "synth".into(), ..GpuConfig::default() };
    let device = device(config);
    let (mut guest, mut host) = connect(&device, GuestOptions::default());
    let mut pump = || {
        host.pump(PUMP);
    };

    // What QEMU would have negotiated with this backend.
    let features = guest.features();
    assert_ne!(features & VIRTIO_F_VERSION_1, 0);
    assert_ne!(features & VIRTIO_RING_F_EVENT_IDX, 0);
    assert_ne!(features & (1 << VIRTIO_GPU_F_EDID), 0);
    assert_ne!(features & VHOST_USER_F_PROTOCOL_FEATURES, 0);
    let protocol = VhostUserProtocolFeatures::from_bits_truncate(guest.protocol_features());
    assert!(protocol.contains(VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::REPLY_ACK));
    assert_eq!(guest.config().num_scanouts.to_native(), 2);

    let info = guest.display_info(&mut pump).unwrap();
    // Scanouts side by side, each of the preferred size.
    for scanout in 0..2 {
        let mode = info.pmodes[scanout];
        assert_eq!(Rect::from(mode.r), Rect::new(1024 * scanout as u32, 0, 1024, 768), "scanout {scanout}");
        assert_eq!(mode.enabled.to_native(), 1, "scanout {scanout}");
    }
    assert_eq!(info.pmodes[2], DisplayOne::default());
    assert!(guest.interrupts(CTRL_QUEUE).unwrap() > 0, "the device signalled the used buffer");

    let edid = guest.edid(1, &mut pump).unwrap();
    assert_eq!(edid, crate::virtio::edid::generate(1024, 768, "synth").to_vec());
    assert_eq!(edid[..8], [0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);
    let resp = guest.call(CTRL_QUEUE, &cmd::edid(2), 1056, &mut pump).unwrap();
    expect_type("GET_EDID of a missing scanout", &resp, VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID).unwrap();
}

#[test]
fn frame_2d_reaches_the_device_model() {
    frame_2d(GuestOptions::default());
}

/// As Linux without `VIRTIO_RING_F_EVENT_IDX`: suppression by the rings' flags, and smaller
/// queues.
#[test]
fn frame_2d_without_event_idx() {
    frame_2d(GuestOptions { event_idx: false, queue_sizes: [64, 4], ..GuestOptions::default() });
}

fn frame_2d(options: GuestOptions) {
    let device = device(GpuConfig::default());
    let (mut guest, mut host) = connect(&device, options.clone());
    assert_eq!(guest.features() & VIRTIO_RING_F_EVENT_IDX != 0, options.event_idx);
    let (w, h) = (64, 48);
    let fb = guest
        .framebuffer(0, 7, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, (w, h), || {
            host.pump(PUMP);
        })
        .unwrap();
    guest
        .draw(&fb, fb.rect(), pattern, || {
            host.pump(PUMP);
        })
        .unwrap();

    let backing = guest.read(fb.backing, usize::try_from(fb.len()).unwrap()).unwrap();
    {
        let mut vhost = host.device();
        let gpu = vhost.gpu();
        let res = gpu.resource(7).expect("resource 7 exists");
        assert_eq!((res.width, res.height), (w, h));
        assert!(res.data == backing, "host pixels differ from the guest's backing");
        let scanout = gpu.scanout(0).unwrap();
        assert_eq!(scanout.resource_id, 7);
        assert_eq!(scanout.rect, Rect::new(0, 0, w, h));
        assert_eq!(scanout.flush_count, 1);
        let events: Vec<_> = vhost.gpu_mut().drain_events().collect();
        assert_eq!(
            events,
            vec![
                GpuEvent::ScanoutSet { scanout_id: 0, resource_id: 7, rect: Rect::new(0, 0, w, h) },
                GpuEvent::ResourceFlush { resource_id: 7, rect: Rect::new(0, 0, w, h) },
            ]
        );
    }

    // A partial update: only its rectangle changes on the host.
    let damage = Rect::new(10, 5, 7, 3);
    guest
        .draw(
            &fb,
            damage,
            |_, _| [1, 2, 3, 4],
            || {
                host.pump(PUMP);
            },
        )
        .unwrap();
    let vhost = host.device();
    let res = vhost.gpu().resource(7).unwrap();
    for y in 0..h {
        for x in 0..w {
            let at = usize::try_from((y * w + x) * 4).unwrap();
            let inside = (10..17).contains(&x) && (5..8).contains(&y);
            let want = if inside { [1, 2, 3, 4] } else { pattern(x, y) };
            assert_eq!(res.data[at..at + 4], want, "pixel ({x}, {y})");
        }
    }
    assert_eq!(vhost.gpu().scanout(0).unwrap().flush_count, 2);
}

#[test]
fn cursor_queue() {
    let device = device(GpuConfig::default());
    let (mut guest, mut host) = connect(&device, GuestOptions::default());
    let mut pump = || {
        host.pump(PUMP);
    };
    // A cursor image: a 64x64 resource with backing, transferred (no scanout, no flush).
    let backing = guest.alloc(64 * 64 * 4).unwrap();
    guest.write(backing, &[0x80; 64 * 64 * 4]).unwrap();
    guest.ctrl_ok("create", &cmd::create_2d(3, VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM, 64, 64), &mut pump).unwrap();
    guest.ctrl_ok("attach", &cmd::attach_backing(3, &[(backing, 64 * 64 * 4)]), &mut pump).unwrap();
    let full = Rect::new(0, 0, 64, 64);
    guest.ctrl_ok("transfer", &cmd::transfer_to_host_2d(3, full, 0), &mut pump).unwrap();

    // With a response buffer, the device answers; without one (as Linux sends them), it still
    // uses the chain.
    let resp = guest.call(CURSOR_QUEUE, &cmd::update_cursor(0, 3, 100, 200, (5, 6)), 24, &mut pump).unwrap();
    expect_type("UPDATE_CURSOR", &resp, VIRTIO_GPU_RESP_OK_NODATA).unwrap();
    {
        let vhost = host_device(&device);
        let scanout = vhost.gpu().scanout(0).unwrap();
        let image = scanout.cursor.as_ref().expect("cursor image set");
        assert_eq!((image.width, image.height, image.hot_x, image.hot_y), (64, 64, 5, 6));
        assert_eq!(scanout.cursor_pos, (100, 200));
    }
    guest.cursor(&cmd::move_cursor(0, -3, 40), &mut pump).unwrap();
    assert_eq!(host_device(&device).gpu().scanout(0).unwrap().cursor_pos, (-3, 40));
    let resp = guest.call(CURSOR_QUEUE, &cmd::move_cursor(5, 1, 1), 24, &mut pump).unwrap();
    expect_type("MOVE_CURSOR to a missing scanout", &resp, VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID).unwrap();
    // Control commands are refused on the cursor queue.
    let resp = guest.call(CURSOR_QUEUE, &cmd::display_info(), 24, &mut pump).unwrap();
    expect_type("GET_DISPLAY_INFO on the cursor queue", &resp, VIRTIO_GPU_RESP_ERR_UNSPEC).unwrap();

    // Undrained, the move is folded into the update (Gpu::drain_events).
    let events: Vec<_> = host_device(&device).gpu_mut().drain_events().collect();
    assert!(
        matches!(events[..], [GpuEvent::CursorUpdate { scanout_id: 0, image: Some(_), x: -3, y: 40 }]),
        "{events:?}"
    );
}

fn host_device(device: &Arc<Mutex<VhostUserGpu>>) -> std::sync::MutexGuard<'_, VhostUserGpu> {
    device.lock().unwrap()
}

#[test]
fn reconnect_after_disconnect() {
    let device = device(GpuConfig::default());
    let (mut guest, mut host) = connect(&device, GuestOptions::default());
    let fb = guest
        .framebuffer(0, 1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, (32, 32), || {
            host.pump(PUMP);
        })
        .unwrap();
    guest
        .draw(&fb, fb.rect(), pattern, || {
            host.pump(PUMP);
        })
        .unwrap();
    // QEMU stops the rings before it goes: the bases are the next available indices.
    let bases = guest
        .stop(|| {
            host.pump(PUMP);
        })
        .unwrap();
    assert_eq!(bases, [5, 0]);
    drop(guest);
    pump_until(&mut host, "the backend to see the disconnect", |h| !h.connected());
    {
        let mut vhost = host.device();
        assert_eq!(vhost.gpu().resources().count(), 0, "reset freed every resource");
        assert_eq!(vhost.gpu().scanout(0).unwrap().resource_id, 0);
        let events: Vec<_> = vhost.gpu_mut().drain_events().collect();
        assert!(events.contains(&GpuEvent::ResourceDestroyed { resource_id: 1 }), "{events:?}");
    }
    drop(host);

    // The VM's next VMM connection, with more memory: the backing lies where the first guest had
    // none, so only the new memory table can serve it.
    let options = GuestOptions { mem_bytes: 2 * MEM, ..GuestOptions::default() };
    let (mut guest, mut host) = connect(&device, options);
    let _ = guest.alloc(MEM as u64).unwrap();
    let fb = guest
        .framebuffer(0, 1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, (40, 30), || {
            host.pump(PUMP);
        })
        .unwrap();
    assert!(fb.backing >= MEM as u64);
    guest
        .draw(
            &fb,
            fb.rect(),
            |x, y| pattern(y, x),
            || {
                host.pump(PUMP);
            },
        )
        .unwrap();
    let backing = guest.read(fb.backing, usize::try_from(fb.len()).unwrap()).unwrap();
    let vhost = host.device();
    assert!(vhost.gpu().resource(1).unwrap().data == backing);
    assert_eq!(vhost.gpu().scanout(0).unwrap().flush_count, 1);
}

/// Pumps `host` until `done` holds; fails after 2 s.
fn pump_until(host: &mut HostLoop, what: &str, mut done: impl FnMut(&HostLoop) -> bool) {
    let start = Instant::now();
    while !done(host) {
        assert!(start.elapsed() < Duration::from_secs(2), "timed out waiting for {what}");
        host.pump(PUMP);
    }
}

/// What the backend thread of [`hostile_avail_index`] reports.
#[derive(Debug)]
enum Report {
    /// A pump ran `process_queue` on these queues and returned.
    Processed([bool; NUM_QUEUES]),
    /// The VMM disconnected.
    Disconnected,
}

#[test]
fn hostile_avail_index() {
    // The device is built and served on a thread of its own, so that a `process_queue` that does
    // not return fails this test instead of hanging it.
    let (streams, incoming) = mpsc::channel::<UnixStream>();
    let (report, reports) = mpsc::channel::<Report>();
    let backend = std::thread::spawn(move || {
        // virtio-queue logs an error on every failed pop: keep a spinning loop's flood out of the
        // captured test output.
        let _quiet = tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
        let device = Arc::new(Mutex::new(VhostUserGpu::new(GpuConfig::default())));
        for stream in incoming {
            let mut host = HostLoop::new(device.clone(), stream);
            while host.connected() {
                let pumped = host.pump(PUMP);
                if pumped.processed.contains(&true) {
                    let _ = report.send(Report::Processed(pumped.processed));
                }
            }
            let _ = report.send(Report::Disconnected);
        }
    });
    let connect = || {
        let (vmm, backend) = UnixStream::pair().unwrap();
        streams.send(backend).unwrap();
        SyntheticGuest::connect(vmm, MEM, || std::thread::sleep(Duration::from_millis(1))).unwrap()
    };
    let idle = || std::thread::sleep(Duration::from_millis(1));
    let wait = |want: fn(&Report) -> bool| {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            if reports.recv_timeout(Duration::from_millis(100)).is_ok_and(|r| want(&r)) {
                return true;
            }
        }
        false
    };
    let ctrl_processed = |r: &Report| matches!(r, Report::Processed(q) if q[CTRL_QUEUE]);

    let mut guest = connect();
    guest.display_info(idle).unwrap();
    assert!(wait(ctrl_processed), "a normal request was processed");
    let used = guest.used_idx(CTRL_QUEUE).unwrap();
    assert_eq!(used, 1);
    let size = guest.ring_layout(CTRL_QUEUE).unwrap().size;
    let hostile = used.wrapping_add(size).wrapping_add(1);
    guest.set_avail_idx(CTRL_QUEUE, hostile).unwrap();
    guest.kick(CTRL_QUEUE).unwrap();
    if !wait(ctrl_processed) {
        // Let the loop end (the avail index no longer differs from the device's), then fail.
        guest.set_avail_idx(CTRL_QUEUE, used).unwrap();
        let returned = wait(ctrl_processed);
        panic!(
            "process_queue(0) did not return within 2 s of a kick with avail idx {hostile}, used idx {used}, \
             queue size {size}: a busy loop (it returned once the guest restored the index: {returned})"
        );
    }
    // The queue is not served any more, whatever the guest does next.
    guest.kick(CTRL_QUEUE).unwrap();
    assert!(wait(ctrl_processed), "a second kick was processed");
    assert_eq!(guest.used_idx(CTRL_QUEUE).unwrap(), used, "nothing was used from the hostile ring");
    drop(guest);
    assert!(wait(|r| matches!(r, Report::Disconnected)), "the backend saw the disconnect");

    // The VM's next connection works.
    let mut guest = connect();
    let info = guest.display_info(idle).unwrap();
    assert_eq!(Rect::from(info.pmodes[0].r), Rect::new(0, 0, 1280, 800));
    drop(guest);
    drop(streams);
    backend.join().unwrap();
}

/// The synthetic guest's waits end: a backend that is not served fails the handshake, a queue
/// that is not processed fails the call, each with an error saying what was awaited.
#[test]
fn unserved_waits_fail_instead_of_hanging() {
    let timeout = Duration::from_millis(200);
    let options = GuestOptions { timeout, ..GuestOptions::default() };
    let (vmm, _backend) = UnixStream::pair().unwrap();
    let start = Instant::now();
    let err = SyntheticGuest::connect_with(vmm, options.clone(), || std::thread::sleep(Duration::from_millis(1)))
        .err()
        .expect("nobody answers the handshake");
    assert!(format!("{err:#}").contains("handshake"), "{err:#}");
    assert!(start.elapsed() < 10 * timeout);

    let device = device(GpuConfig::default());
    let (mut guest, _host) = connect(&device, options);
    let err = guest.call(CTRL_QUEUE, &cmd::display_info(), 408, || {}).unwrap_err();
    assert!(format!("{err:#}").contains("no response"), "{err:#}");
}
