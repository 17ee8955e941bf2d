//! A synthetic guest for in-process tests: what QEMU's vhost-user-gpu (the vhost-user
//! frontend) and the guest's virtio-gpu driver do, talking to a real [`VhostUserGpu`] over a
//! Unix socket.
//!
//! [`SyntheticGuest`] owns memfd-backed guest memory, the split virtqueues laid out in it
//! (virtio 1.2, 2.7), their kick and call eventfds, and the vhost crate's [`Frontend`];
//! dropping it closes the socket, which the backend sees as the VMM disconnecting. Commands are
//! bytes built from the wire structs of [`crate::virtio::protocol`] (see [`cmd`]), and
//! [`SyntheticGuest::framebuffer`] / [`SyntheticGuest::draw`] drive a 2D scanout the way a
//! guest's framebuffer console does.
//!
//! vhost-user requests that need a reply block, and the backend side ([`VhostUserGpu`] is not
//! `Send`) runs on the caller's thread, so every request that waits for the backend runs on a
//! helper thread while the caller's `pump` closure runs one iteration of the backend's event
//! loop, e.g. [`HostLoop::pump`] or a compositor dispatch. Every wait is bounded by
//! [`GuestOptions::timeout`] and a pump count, and fails with an error saying what was awaited.
//!
//! Guest memory is one memfd region at guest physical address 0 (QEMU's
//! `memory-backend-memfd`, shared with the backend by `SET_MEM_TABLE`): page 0 unused, the
//! ctrl and cursor rings from 0x1000, a scratch area per queue for the buffers of the chains in
//! flight, then whole pages handed out by [`SyntheticGuest::alloc`] (resource backing).
//!
//! ```ignore
//! let (vmm, backend) = UnixStream::pair()?;
//! let device = Arc::new(Mutex::new(VhostUserGpu::new(GpuConfig::default())));
//! let mut host = HostLoop::new(device.clone(), backend);
//! let mut guest = SyntheticGuest::connect(vmm, 16 << 20, || { host.pump(PUMP); })?;
//! let info = guest.display_info(|| { host.pump(PUMP); })?;
//! ```
//!
//! [`VhostUserGpu`]: crate::virtio::vhost::VhostUserGpu

// A test kit: not every helper has a user in every test build.
#![allow(dead_code)]

mod driver;
mod frontend;
mod host;
mod ring;

use std::fs::File;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use vhost::VhostBackend;
use vhost::VhostUserMemoryRegionInfo;
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::virtio::protocol::VirtioGpuConfig;
use crate::virtio::vhost::NUM_QUEUES;
#[allow(unused_imports)] // the API, whether or not today's tests name every item
pub(crate) use driver::{Framebuffer, cmd, expect_type, resp_type};
pub(crate) use frontend::{VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};
#[allow(unused_imports)]
pub(crate) use host::{HostLoop, Pumped};
pub(crate) use ring::RingLayout;
use ring::{Ring, align_up};

/// Guest page size, bytes: [`SyntheticGuest::alloc`] hands out whole pages.
pub(crate) const PAGE_BYTES: u64 = 4096;
/// Scratch area for the request and response buffers of the ctrl queue's chains in flight,
/// bytes: fits an ATTACH_BACKING with `MAX_BACKING_ENTRIES` entries.
const CTRL_SCRATCH_BYTES: u64 = 512 << 10;
/// Scratch area of the cursor queue, bytes.
const CURSOR_SCRATCH_BYTES: u64 = 16 << 10;
/// Guest physical address of the first ring: page 0 stays unused (virtio-queue takes a ring
/// at address 0 for "not configured").
const RINGS_START: u64 = PAGE_BYTES;

/// How a [`SyntheticGuest`] is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GuestOptions {
    /// Guest memory, bytes: one memfd region at guest physical address 0.
    pub mem_bytes: usize,
    /// Sizes of the ctrl and cursor queues, descriptors (QEMU: 256 and 16).
    pub queue_sizes: [u16; NUM_QUEUES],
    /// Negotiate `VIRTIO_RING_F_EVENT_IDX` when offered, as Linux does.
    pub event_idx: bool,
    /// Longest wait for the backend, per request or per [`SyntheticGuest::call`].
    pub timeout: Duration,
}

impl Default for GuestOptions {
    fn default() -> Self {
        GuestOptions { mem_bytes: 16 << 20, queue_sizes: [256, 16], event_idx: true, timeout: Duration::from_secs(10) }
    }
}

/// One submitted request; redeem it with [`SyntheticGuest::response`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Ticket {
    /// Queue index (`vhost::CTRL_QUEUE` or `vhost::CURSOR_QUEUE`).
    pub queue: usize,
    serial: u64,
}

/// A guest as QEMU's vhost-user-gpu plus the guest's virtio-gpu driver would be. See the module
/// docs.
pub(crate) struct SyntheticGuest {
    /// The VMM's connection; dropping it disconnects.
    frontend: Frontend,
    /// A second handle on the socket, shut down to unblock a request that timed out.
    abort: UnixStream,
    mem: GuestMemoryMmap,
    rings: [Ring; NUM_QUEUES],
    kicks: [EventFd; NUM_QUEUES],
    calls: [EventFd; NUM_QUEUES],
    /// Next free byte of the allocation area, and its end: guest physical addresses.
    heap: (u64, u64),
    features: u64,
    protocol_features: u64,
    config: VirtioGpuConfig,
    next_serial: u64,
    timeout: Duration,
}

impl SyntheticGuest {
    /// Connect over `stream` (the frontend end of a `UnixStream::pair`) with `mem_bytes` of
    /// guest memory and otherwise [`GuestOptions::default`]. The handshake (see
    /// `frontend::handshake`) blocks on replies, so it runs on a spawned thread while `pump`
    /// is called repeatedly to serve the backend side.
    pub fn connect(stream: UnixStream, mem_bytes: usize, pump: impl FnMut()) -> anyhow::Result<SyntheticGuest> {
        Self::connect_with(stream, GuestOptions { mem_bytes, ..GuestOptions::default() }, pump)
    }

    /// [`SyntheticGuest::connect`] with every option.
    pub fn connect_with(
        stream: UnixStream,
        options: GuestOptions,
        pump: impl FnMut(),
    ) -> anyhow::Result<SyntheticGuest> {
        let mem_len = options.mem_bytes as u64;
        // Guest memory layout: rings, then scratch areas, then pages for `alloc`.
        let [ctrl_size, cursor_size] = options.queue_sizes;
        ensure!(ctrl_size > 0 && cursor_size > 0, "queue sizes must be non-zero");
        let (ctrl, end) = RingLayout::at(RINGS_START, ctrl_size);
        let (cursor, end) = RingLayout::at(end, cursor_size);
        let ctrl_scratch = align_up(end, PAGE_BYTES);
        let cursor_scratch = ctrl_scratch + CTRL_SCRATCH_BYTES;
        let heap_start = align_up(cursor_scratch + CURSOR_SCRATCH_BYTES, PAGE_BYTES);
        ensure!(
            heap_start < mem_len,
            "{} bytes of guest memory do not hold the rings and scratch areas ({heap_start} bytes)",
            options.mem_bytes
        );

        let mem = GuestMemoryMmap::from_ranges_with_files([(
            GuestAddress(0),
            options.mem_bytes,
            Some(FileOffset::new(memfd(mem_len)?, 0)),
        )])
        .context("mapping guest memory")?;
        let region = mem.find_region(GuestAddress(0)).context("guest memory has no region at 0")?;
        let region = VhostUserMemoryRegionInfo::from_guest_region(region).context("memory region info")?;
        let event_fd = || EventFd::new(EFD_NONBLOCK).context("eventfd");
        let kicks = [event_fd()?, event_fd()?];
        let calls = [event_fd()?, event_fd()?];

        stream.set_read_timeout(Some(options.timeout))?;
        stream.set_write_timeout(Some(options.timeout))?;
        let abort = stream.try_clone()?;
        let plan = frontend::Plan {
            region,
            rings: [ctrl, cursor],
            kicks: [kicks[0].try_clone()?, kicks[1].try_clone()?],
            calls: [calls[0].try_clone()?, calls[1].try_clone()?],
            event_idx: options.event_idx,
        };
        let done =
            frontend::pumped("handshake", &abort, options.timeout, move || frontend::handshake(stream, plan), pump)?;
        let event_idx = done.features & VIRTIO_RING_F_EVENT_IDX != 0;
        Ok(SyntheticGuest {
            frontend: done.frontend,
            abort,
            mem,
            rings: [
                Ring::new(ctrl, (ctrl_scratch, ctrl_scratch + CTRL_SCRATCH_BYTES), event_idx),
                Ring::new(cursor, (cursor_scratch, cursor_scratch + CURSOR_SCRATCH_BYTES), event_idx),
            ],
            kicks,
            calls,
            heap: (heap_start, mem_len),
            features: done.features,
            protocol_features: done.protocol_features,
            config: done.config,
            next_serial: 0,
            timeout: options.timeout,
        })
    }

    /// Virtio feature bits acked with `SET_FEATURES`.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// vhost-user protocol feature bits acked with `SET_PROTOCOL_FEATURES`.
    pub fn protocol_features(&self) -> u64 {
        self.protocol_features
    }

    /// The device configuration space as `GET_CONFIG` returned it (virtio 1.2, 5.7.4).
    pub fn config(&self) -> VirtioGpuConfig {
        self.config
    }

    /// Guest memory, as the driver sees it.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Where queue `queue` lives in guest memory.
    pub fn ring_layout(&self, queue: usize) -> anyhow::Result<RingLayout> {
        Ok(self.ring(queue)?.layout())
    }

    fn ring(&self, queue: usize) -> anyhow::Result<&Ring> {
        self.rings.get(queue).with_context(|| format!("no queue {queue}"))
    }

    /// Allocates `len` bytes of guest memory (whole pages, never freed) and returns its guest
    /// physical address; e.g. for resource backing.
    pub fn alloc(&mut self, len: u64) -> anyhow::Result<u64> {
        let addr = self.heap.0;
        let end = addr.checked_add(align_up(len.max(1), PAGE_BYTES)).context("allocation size overflow")?;
        ensure!(end <= self.heap.1, "guest memory exhausted: {len} bytes wanted, {} left", self.heap.1 - addr);
        self.heap.0 = end;
        Ok(addr)
    }

    /// Writes `bytes` at guest physical address `addr`.
    pub fn write(&self, addr: u64, bytes: &[u8]) -> anyhow::Result<()> {
        self.mem.write_slice(bytes, GuestAddress(addr)).with_context(|| format!("writing guest memory at {addr:#x}"))
    }

    /// Reads `len` bytes at guest physical address `addr`.
    pub fn read(&self, addr: u64, len: usize) -> anyhow::Result<Vec<u8>> {
        let mut bytes = vec![0; len];
        self.mem
            .read_slice(&mut bytes, GuestAddress(addr))
            .with_context(|| format!("reading guest memory at {addr:#x}"))?;
        Ok(bytes)
    }

    /// Queues one request on `queue`: `cmd` in one device-readable buffer and, unless
    /// `resp_len` is 0, a device-writable response buffer of `resp_len` bytes; kicks unless the
    /// device suppressed notifications (virtio 1.2, 2.7.13).
    pub fn submit(&mut self, queue: usize, cmd: &[u8], resp_len: u32) -> anyhow::Result<Ticket> {
        self.submit_parts(queue, &[cmd], resp_len)
    }

    /// [`SyntheticGuest::submit`] with the request split over several readable buffers (Linux
    /// puts ATTACH_BACKING's entries in a descriptor of their own).
    pub fn submit_parts(&mut self, queue: usize, parts: &[&[u8]], resp_len: u32) -> anyhow::Result<Ticket> {
        let serial = self.next_serial;
        self.next_serial += 1;
        let ring = self.rings.get_mut(queue).with_context(|| format!("no queue {queue}"))?;
        if ring.add(&self.mem, serial, parts, resp_len)? {
            self.kick(queue)?;
        }
        Ok(Ticket { queue, serial })
    }

    /// Non-blocking: the response bytes of `ticket` (as many as the device wrote; empty without
    /// a response buffer) once the device put it on the used ring, each response once. Errors
    /// when the device broke the used ring protocol.
    pub fn response(&mut self, ticket: Ticket) -> anyhow::Result<Option<Vec<u8>>> {
        let ring = self.rings.get_mut(ticket.queue).with_context(|| format!("no queue {}", ticket.queue))?;
        if let Some(bytes) = ring.take(ticket.serial) {
            return Ok(Some(bytes));
        }
        ring.collect(&self.mem).with_context(|| format!("queue {}", ticket.queue))?;
        Ok(ring.take(ticket.serial))
    }

    /// Calls `pump` until `ticket` is answered; fails after [`GuestOptions::timeout`] or a
    /// million pumps, saying where the ring stands.
    pub fn wait(&mut self, ticket: Ticket, mut pump: impl FnMut()) -> anyhow::Result<Vec<u8>> {
        let start = Instant::now();
        for pumps in 0u64.. {
            if let Some(bytes) = self.response(ticket)? {
                return Ok(bytes);
            }
            if start.elapsed() > self.timeout || pumps >= frontend::MAX_PUMPS {
                let ring = self.ring(ticket.queue)?;
                bail!(
                    "queue {}: no response after {pumps} pumps in {:?} (avail idx {}, used idx {}, {} in flight)",
                    ticket.queue,
                    start.elapsed(),
                    ring.avail_idx(&self.mem)?,
                    ring.used_idx(&self.mem)?,
                    ring.in_flight()
                );
            }
            pump();
        }
        unreachable!("the loop returns or fails")
    }

    /// [`SyntheticGuest::submit`] and [`SyntheticGuest::wait`]: the response bytes.
    pub fn call(&mut self, queue: usize, cmd: &[u8], resp_len: u32, pump: impl FnMut()) -> anyhow::Result<Vec<u8>> {
        let ticket = self.submit(queue, cmd, resp_len)?;
        self.wait(ticket, pump)
    }

    /// Notifies the device that queue `queue` has new buffers (writes its kick eventfd).
    pub fn kick(&mut self, queue: usize) -> anyhow::Result<()> {
        self.ring(queue)?;
        self.kicks[queue].write(1).with_context(|| format!("kicking queue {queue}"))
    }

    /// How often the device signalled queue `queue`'s call eventfd since the last look.
    pub fn interrupts(&mut self, queue: usize) -> anyhow::Result<u64> {
        self.ring(queue)?;
        match self.calls[queue].read() {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e).context("reading the call eventfd"),
        }
    }

    /// The available index of queue `queue` as it is in guest memory.
    pub fn avail_idx(&self, queue: usize) -> anyhow::Result<u16> {
        self.ring(queue)?.avail_idx(&self.mem)
    }

    /// The used index of queue `queue` as the device left it.
    pub fn used_idx(&self, queue: usize) -> anyhow::Result<u16> {
        self.ring(queue)?.used_idx(&self.mem)
    }

    /// For hostile-guest tests: overwrite queue `queue`'s available index (no kick). The
    /// queue's own bookkeeping is not changed, so later submissions on it are garbage too.
    pub fn set_avail_idx(&mut self, queue: usize, idx: u16) -> anyhow::Result<()> {
        let ring = self.rings.get_mut(queue).with_context(|| format!("no queue {queue}"))?;
        ring.set_avail_idx(&self.mem, idx)
    }

    /// Runs `request` on the VMM's connection (a clone of the frontend, on a helper thread)
    /// while calling `pump`, bounded like [`SyntheticGuest::wait`].
    pub fn vmm_request<T: Send + 'static>(
        &mut self,
        what: &str,
        request: impl FnOnce(&mut Frontend) -> anyhow::Result<T> + Send + 'static,
        pump: impl FnMut(),
    ) -> anyhow::Result<T> {
        let mut frontend = self.frontend.clone();
        frontend::pumped(what, &self.abort, self.timeout, move || request(&mut frontend), pump)
    }

    /// Stops both rings as QEMU's `vhost_dev_stop` does (`SET_VRING_ENABLE` 0 when protocol
    /// features were negotiated, then `GET_VRING_BASE`) and returns each ring's base, the
    /// backend's next available index. The guest cannot use the queues afterwards; drop it.
    pub fn stop(&mut self, pump: impl FnMut()) -> anyhow::Result<[u32; NUM_QUEUES]> {
        let enable = self.features & vhost::vhost_user::VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0;
        self.vmm_request(
            "stop",
            move |frontend| {
                let mut bases = [0; NUM_QUEUES];
                for (index, base) in bases.iter_mut().enumerate() {
                    if enable {
                        frontend
                            .set_vring_enable(index, false)
                            .with_context(|| format!("SET_VRING_ENABLE {index} 0"))?;
                    }
                    *base = frontend.get_vring_base(index).with_context(|| format!("GET_VRING_BASE {index}"))?;
                }
                Ok(bases)
            },
            pump,
        )
    }
}

/// An anonymous shared memory file of `len` bytes, the guest RAM QEMU shares with a vhost-user
/// backend (`memory-backend-memfd`).
fn memfd(len: u64) -> anyhow::Result<File> {
    // SAFETY: the name is a NUL-terminated string literal; the call touches no other memory.
    let fd = unsafe { libc::memfd_create(c"scanway-synthetic-guest".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("memfd_create");
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(len).context("sizing the guest memory memfd")?;
    Ok(file)
}
