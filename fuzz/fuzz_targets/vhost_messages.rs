//! The vhost-user messages a VMM sends, as scanway serves them: any bytes on the socket, read
//! by rust-vmm's `BackendReqHandler` into scanway's `VhostUserGpu` (features, memory table,
//! vrings, config space, GPU socket; no file descriptors arrive, so those requests must fail
//! cleanly).
//!
//! Checked: every request returns (an error ends the connection, as in the compositor), then
//! the device resets and serves queues again (none is left half set up to crash on).
#![no_main]

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use scanway::virtio::{device::GpuConfig, vhost::VhostUserGpu};
use vhost::vhost_user::BackendReqHandler;

fuzz_target!(|data: &[u8]| {
    let (mut vmm, backend) = UnixStream::pair().unwrap();
    // at most one socket buffer of messages; the reader never blocks on a short one
    let data = &data[..data.len().min(64 << 10)];
    vmm.write_all(data).unwrap();
    drop(vmm);
    let device = Arc::new(Mutex::new(VhostUserGpu::new(GpuConfig::default())));
    let mut handler = BackendReqHandler::from_stream(backend, device.clone());
    for _ in 0..1024 {
        if handler.handle_request().is_err() {
            break;
        }
        let mut d = device.lock().unwrap();
        let _ = d.take_new_kicks();
        d.process_queue(0);
        d.process_queue(1);
    }
    let mut d = device.lock().unwrap();
    d.reset();
    d.process_queue(0);
});
