//! The backend side for tests: a [`VhostUserGpu`] served the way `compositor::guests` serves
//! it (one request per socket readiness, kicks polled and cleared, `process_queue` on each),
//! with `poll(2)` instead of calloop.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use vhost::vhost_user::BackendReqHandler;
use vmm_sys_util::eventfd::EventFd;

use crate::virtio::vhost::{NUM_QUEUES, VhostUserGpu};

/// What one [`HostLoop::pump`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pumped {
    /// A vhost-user request was handled.
    pub request: bool,
    /// `process_queue(i)` ran after queue `i`'s kick fired.
    pub processed: [bool; NUM_QUEUES],
    /// The VMM went away during this pump (or a request failed): the device was reset.
    pub disconnected: bool,
}

/// One VMM connection of a [`VhostUserGpu`], served on the caller's thread.
pub(crate) struct HostLoop {
    device: Arc<Mutex<VhostUserGpu>>,
    /// `None` once disconnected.
    connection: Option<BackendReqHandler<Mutex<VhostUserGpu>>>,
    kicks: [Option<EventFd>; NUM_QUEUES],
    /// Why the connection ended: the request error.
    ended: Option<String>,
}

impl HostLoop {
    /// Serve the VMM at the other end of `stream` (the backend end of a `UnixStream::pair`)
    /// with `device`, as `compositor::guests::accept` does.
    pub fn new(device: Arc<Mutex<VhostUserGpu>>, stream: UnixStream) -> Self {
        let connection = Some(BackendReqHandler::from_stream(stream, device.clone()));
        HostLoop { device, connection, kicks: [None, None], ended: None }
    }

    /// The device, locked (do not hold the guard across a pump).
    pub fn device(&self) -> MutexGuard<'_, VhostUserGpu> {
        self.device.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the VMM is still connected.
    pub fn connected(&self) -> bool {
        self.connection.is_some()
    }

    /// Why the connection ended (the `handle_request` error), once it did.
    pub fn ended(&self) -> Option<&str> {
        self.ended.as_deref()
    }

    /// One event loop iteration: wait up to `timeout` for the socket or a kick eventfd, then
    /// handle one vhost-user request if the socket is readable, and run `process_queue` for
    /// every kick that fired. On a failed request (the VMM disconnected) the connection is
    /// dropped and the device reset with its warnings re-armed, as scanway does; the events of
    /// that reset stay in the device for the caller to drain.
    pub fn pump(&mut self, timeout: Duration) -> Pumped {
        let mut pumped = Pumped::default();
        let Some(connection) = self.connection.as_mut() else {
            std::thread::sleep(timeout);
            return pumped;
        };
        let mut fds = vec![poll_fd(connection.as_raw_fd())];
        fds.extend(self.kicks.iter().map(|k| poll_fd(k.as_ref().map_or(-1, AsRawFd::as_raw_fd))));
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        let nfds = libc::nfds_t::try_from(fds.len()).unwrap_or(0);
        // SAFETY: `fds` is a valid array of `nfds` pollfd structs that lives across the call;
        // negative descriptors are ignored by poll(2).
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), nfds, ms) };
        if ready <= 0 {
            return pumped;
        }
        if fds[0].revents != 0 {
            pumped.request = true;
            if let Err(e) = connection.handle_request() {
                self.ended = Some(e.to_string());
                self.disconnect();
                pumped.disconnected = true;
                return pumped;
            }
            let new = self.device().take_new_kicks();
            for (queue, kick) in new {
                if let Some(slot) = self.kicks.get_mut(queue) {
                    *slot = Some(kick);
                }
            }
        }
        for (queue, fd) in fds.iter().skip(1).enumerate() {
            if fd.revents == 0 {
                continue;
            }
            if let Some(kick) = self.kicks.get(queue).and_then(Option::as_ref) {
                // Clears the counter; an error means it was read already.
                let _ = kick.read();
            }
            self.device().process_queue(queue);
            pumped.processed[queue] = true;
        }
        pumped
    }

    /// What `compositor::guests::disconnect` does to the device.
    fn disconnect(&mut self) {
        self.connection = None;
        self.kicks = [None, None];
        let mut device = self.device();
        device.reset();
        device.gpu_mut().rearm_warnings();
    }
}

fn poll_fd(fd: RawFd) -> libc::pollfd {
    libc::pollfd { fd, events: libc::POLLIN, revents: 0 }
}
