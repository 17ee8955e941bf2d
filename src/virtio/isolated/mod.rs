//! A guest's 3D in a process of its own (`3d=isolated`): [`Isolated3d`] is a [`Renderer3d`]
//! that forwards every call to a `scanway 3d-worker` child ([`worker`]) over a socket pair
//! ([`wire`]), the model of virglrenderer's own `render_server`: one worker per guest, the
//! parent passing the work and taking back results.
//!
//! What it buys: a stream that crashes or wedges virglrenderer (a C library, fed by the guest)
//! takes only this guest's worker. The parent sees the channel break (or a call not answered
//! within [`CALL_TIMEOUT`]), kills the worker, answers the guest's held fences so its queue
//! keeps moving, and fails this guest's 3D commands with `ERR_UNSPEC` ([`Error3d::WorkerGone`])
//! until the VMM reconnects (a device reset), which starts a new worker.
//!
//! What it costs: the worker's GL contexts are not in the compositor's share group, so a 3D
//! scanout is read back ([`Isolated3d::read_back`]: `TRANSFER_FROM_HOST` of the flushed
//! rectangle into a `memfd` both processes map) and uploaded like a 2D guest's: one copy per
//! flush instead of zero, and a round trip per command. Guest memory is mapped a second time in
//! the worker from the VMM's region descriptors ([`HostRegion`]).
//!
//! The worker is as hostile as the guest that drives it: its frames are bounded and parsed
//! ([`wire`]), its ids are only ever looked up, and nothing it says can make the parent block
//! past the deadline.

#[cfg(test)]
mod tests;
pub mod wire;
pub mod worker;

use std::{
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
    os::unix::{net::UnixStream, process::CommandExt},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use tracing::{debug, info, warn};
use vmm_sys_util::eventfd::EventFd;

use crate::renderer::virgl::{Fence, ResourceCreate3d, ResourceInfo};
use crate::virtio::renderer3d::{
    CapsetInfo, Error3d, ExportedScanout, HostFence, HostRegion, ReadBack, Renderer3d, Renderer3dStatus, Transfer3d,
    WorkerStatus,
};
use wire::{Call, Channel, Frame, Message, Reply, WireError};

/// How long a call may take before the worker counts as wedged and is killed. virglrenderer
/// executes a stream synchronously; no sane one takes this long on llvmpipe.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A reply, its payload and the descriptors that came with it.
type Answer = (Reply, Vec<u8>, Vec<OwnedFd>);

/// A running worker.
#[derive(Debug)]
struct Worker {
    child: Child,
    channel: Channel,
    pid: u32,
}

/// One guest mapping of guest memory, as the worker knows it.
#[derive(Debug, Clone, Copy)]
struct Region {
    id: u32,
    host: usize,
    len: u64,
}

/// The read-back buffer: a `memfd` mapped here and in the worker.
#[derive(Debug)]
struct Shm {
    fd: OwnedFd,
    ptr: *mut u8,
    len: usize,
}

impl Shm {
    fn new(len: usize) -> std::io::Result<Shm> {
        // SAFETY: plain syscalls; results checked.
        unsafe {
            let fd = libc::memfd_create(c"scanway-read-back".as_ptr(), libc::MFD_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let fd = OwnedFd::from_raw_fd(fd);
            if libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let ptr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            );
            if ptr == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            Ok(Shm { fd, ptr: ptr.cast(), len })
        }
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        // SAFETY: our mapping, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// One guest's 3D, run by a worker process. See the module documentation.
#[derive(Debug)]
pub struct Isolated3d {
    guest: String,
    exe: PathBuf,
    worker: Option<Worker>,
    /// An epoll instance over the current worker's socket and `retired_event`: readable when
    /// the worker sent something or fences wait to be taken; the compositor polls it, and it
    /// outlives restarts.
    wake: OwnedFd,
    /// Signalled while `retired` holds fences: they may have come in with the reply to a call
    /// made outside the device's queue processing (a read-back while drawing), after which
    /// the socket has nothing to read and would wake nobody.
    retired_event: EventFd,
    /// The capsets of the first worker (the guest read them at negotiation; they stay).
    capsets: Vec<CapsetInfo>,
    regions: Vec<Region>,
    next_region: u32,
    /// Fences created and not yet retired.
    outstanding: Vec<HostFence>,
    /// Fences retired and not yet taken by the device.
    retired: Vec<Fence>,
    shm: Option<Shm>,
    status: WorkerStatus,
    /// Sequence number of the last call.
    seq: u32,
    /// Why the worker's EGL cannot export dmabufs, once it said so (scanouts are read back).
    no_export: Option<String>,
}

impl Isolated3d {
    /// Start guest `guest`'s worker: `exe 3d-worker --guest GUEST` with the socket as fd 3,
    /// killed when scanway dies. Waits for its [`Call::Hello`] (virglrenderer initialised).
    /// Errors: the process cannot start, or its virglrenderer did not come up.
    pub fn spawn(guest: &str, exe: PathBuf) -> anyhow::Result<Isolated3d> {
        // SAFETY: plain syscall.
        let wake = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if wake < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: a fresh descriptor we own.
        let wake = unsafe { OwnedFd::from_raw_fd(wake) };
        let retired_event = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?;
        epoll_add(&wake, retired_event.as_raw_fd())?;
        let mut this = Isolated3d {
            guest: guest.to_string(),
            exe,
            worker: None,
            wake,
            retired_event,
            capsets: Vec::new(),
            regions: Vec::new(),
            next_region: 1,
            outstanding: Vec::new(),
            retired: Vec::new(),
            shm: None,
            status: WorkerStatus::default(),
            seq: 0,
            no_export: None,
        };
        this.start()?;
        Ok(this)
    }

    /// The descriptor that becomes readable when the worker sent fences or went away: poll it
    /// and call [`Renderer3d::own_fences`].
    pub fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    fn start(&mut self) -> anyhow::Result<()> {
        let (ours, theirs) = UnixStream::pair()?;
        ours.set_read_timeout(Some(CALL_TIMEOUT))?;
        ours.set_write_timeout(Some(CALL_TIMEOUT))?;
        let child_fd = theirs.as_raw_fd();
        let mut command = Command::new(&self.exe);
        command.args(["3d-worker", "--guest", &self.guest]).stdin(Stdio::null());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(child_fd, worker::WORKER_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The worker dies with scanway, whatever kills scanway.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn()?;
        drop(theirs);
        let pid = child.id();
        epoll_add(&self.wake, ours.as_raw_fd())?;
        self.worker = Some(Worker { child, channel: Channel::new(ours), pid });
        self.shm = None;
        let reply = self.call(&Call::Hello, &[], &[]);
        let reason = || self.status.reason.clone().unwrap_or_default();
        let (reply, _, _) = reply.map_err(|e| anyhow::anyhow!("3D worker start: {e} ({})", reason()))?;
        if self.worker.is_none() {
            anyhow::bail!("3D worker start: {}", reason());
        }
        let Reply::Hello { pid: said, capsets, gl } = reply else {
            self.lost("answered Hello with something else".into());
            anyhow::bail!("3D worker protocol");
        };
        if self.capsets.is_empty() {
            self.capsets = capsets.into_iter().take(8).collect();
        }
        self.status.pid = Some(pid);
        self.status.reason = None;
        info!(guest = %self.guest, pid, said, "3D worker started ({gl})");
        Ok(())
    }

    /// The worker is gone (or is made so): kill and reap it, answer every held fence, and say
    /// why once.
    fn lost(&mut self, reason: String) {
        let Some(mut w) = self.worker.take() else { return };
        let _ = w.child.kill();
        let status = w.child.wait().map_or_else(|e| format!("wait: {e}"), |s| s.to_string());
        warn!(guest = %self.guest, pid = w.pid, "3D worker gone ({reason}; {status}): this guest's 3D is off until its VMM reconnects");
        self.status.lost += 1;
        self.status.reason = Some(format!("{reason}; {status}"));
        // Nothing will retire them now: release the responses held for them.
        for fence in self.outstanding.drain(..) {
            self.retired.push(match fence {
                HostFence::Global(id) => Fence { ctx_id: 0, ring_idx: 0, fence_id: u64::from(id), global: true },
                HostFence::Context { ctx, ring, id } => {
                    Fence { ctx_id: ctx, ring_idx: ring, fence_id: id, global: false }
                }
            });
        }
        self.regions.clear();
        self.shm = None;
        self.signal_retired();
    }

    fn fences_retired(&mut self, fences: Vec<Fence>) {
        self.outstanding.retain(|h| !fences.iter().any(|f| h.retired_by(f)));
        self.retired.extend(fences);
        self.signal_retired();
    }

    /// Wake the compositor if fences wait to be taken.
    fn signal_retired(&self) {
        if !self.retired.is_empty() {
            // A full counter (it cannot be) would only mean it is signalled already.
            let _ = self.retired_event.write(1);
        }
    }

    /// One call and its reply; fences that arrive meanwhile are kept. Any channel failure,
    /// late answer or stray frame ends the worker: [`Error3d::WorkerGone`].
    fn call(&mut self, call: &Call, payload: &[u8], fds: &[RawFd]) -> Result<Answer, Error3d> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let seq = self.seq;
        let Some(w) = self.worker.as_mut() else { return Err(Error3d::WorkerGone) };
        let mut arrived = Vec::new();
        let result = (|| -> Result<Answer, WireError> {
            w.channel.send(seq, call, payload, fds)?;
            loop {
                let frame: Frame<Message> =
                    w.channel.recv(Some(CALL_TIMEOUT))?.ok_or(WireError::Timeout(CALL_TIMEOUT))?;
                match frame.body {
                    Message::Reply(reply) if frame.seq == seq => return Ok((reply, frame.payload, frame.fds)),
                    Message::Reply(_) => {
                        return Err(WireError::Protocol(format!("reply {} to call {seq}", frame.seq)));
                    }
                    Message::Fences(f) => arrived.extend(f),
                }
            }
        })();
        // Whatever the reply, fences that came before it are kept and the compositor woken.
        self.fences_retired(arrived);
        match result {
            Ok((Reply::Err(e), _, _)) => {
                Err(Error3d::Worker { fault: fault_name(&e.fault), id: e.id, message: e.message })
            }
            Ok(ok) => {
                self.pump();
                Ok(ok)
            }
            Err(e) => {
                self.lost(e.to_string());
                Err(Error3d::WorkerGone)
            }
        }
    }

    /// Take every frame already received or readable: fences; a reply nobody asked for, or a
    /// broken channel, ends the worker.
    fn pump(&mut self) {
        loop {
            let Some(w) = self.worker.as_mut() else { return };
            match w.channel.recv::<Message>(Some(Duration::ZERO)) {
                Ok(None) => return,
                Ok(Some(Frame { body: Message::Fences(f), .. })) => self.fences_retired(f),
                Ok(Some(Frame { body: Message::Reply(_), .. })) => return self.lost("a reply to no call".into()),
                Err(e) => return self.lost(e.to_string()),
            }
        }
    }

    fn done(&mut self, call: &Call) -> Result<(), Error3d> {
        self.call(call, &[], &[]).map(|_| ())
    }

    /// The host iovecs of a backing as (region, offset, length) of the worker's mappings.
    fn translate(&self, iov: &[libc::iovec]) -> Option<Vec<(u32, u64, u64)>> {
        iov.iter()
            .map(|v| {
                let base = v.iov_base as usize;
                let len = v.iov_len as u64;
                let r = self.regions.iter().rev().find(|r| base >= r.host && (base - r.host) as u64 + len <= r.len)?;
                Some((r.id, (base - r.host) as u64, len))
            })
            .collect()
    }
}

/// Add `fd` to epoll instance `epoll`, readable.
fn epoll_add(epoll: &OwnedFd, fd: RawFd) -> std::io::Result<()> {
    let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: 0 };
    // SAFETY: valid descriptors and event.
    if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A worker's fault name as one of ours (the set [`Error3d::fault_name`] has), so the device's
/// fault counters stay a fixed set whatever the worker says.
fn fault_name(name: &str) -> &'static str {
    const KNOWN: [&str; 11] = [
        "UnknownResource3d",
        "InvalidContext",
        "UnknownCapset",
        "NoBacking3d",
        "StreamRefused",
        "VirglRefused",
        "VirglFailed",
        "MapFailed",
        "BackingOutsideMemory",
        "NoReadBack",
        "NoExport",
    ];
    KNOWN.into_iter().find(|k| *k == name).unwrap_or("WorkerError")
}

impl Renderer3d for Isolated3d {
    fn num_capsets(&self) -> u32 {
        self.capsets.len() as u32
    }

    fn capset_info(&self, index: u32) -> Option<CapsetInfo> {
        self.capsets.get(index as usize).copied()
    }

    /// Asked of the worker; at most 64 KiB, `None` while it is gone.
    fn capset(&mut self, id: u32, version: u32) -> Option<Vec<u8>> {
        self.capsets.iter().find(|c| c.id == id && version <= c.max_version)?;
        match self.call(&Call::Capset { id, version }, &[], &[]) {
            Ok((Reply::Bytes, bytes, _)) if bytes.len() <= 64 * 1024 => Some(bytes),
            _ => None,
        }
    }

    fn context_create(&mut self, ctx: u32, capset: u32, name: &str) -> Result<(), Error3d> {
        self.done(&Call::ContextCreate { ctx, capset, name: name.to_string() })
    }

    fn context_destroy(&mut self, ctx: u32) -> Result<(), Error3d> {
        self.done(&Call::ContextDestroy { ctx })
    }

    fn context_attach(&mut self, ctx: u32, res: u32, attach: bool) -> Result<(), Error3d> {
        self.done(&Call::ContextAttach { ctx, res, attach })
    }

    fn resource_create(&mut self, res: u32, args: ResourceCreate3d) -> Result<(), Error3d> {
        self.done(&Call::ResourceCreate { res, args })
    }

    fn resource_unref(&mut self, res: u32) -> Result<(), Error3d> {
        self.done(&Call::ResourceUnref { res })
    }

    /// The iovecs are translated to the worker's mappings of the same guest memory: they never
    /// cross as pointers.
    unsafe fn attach_backing(&mut self, res: u32, iov: &[libc::iovec]) -> Result<(), Error3d> {
        let Some(iov) = self.translate(iov) else {
            return Err(Error3d::Worker {
                fault: "BackingOutsideMemory",
                id: res,
                message: "backing outside the guest memory regions".into(),
            });
        };
        self.done(&Call::AttachBacking { res, iov })
    }

    fn detach_backing(&mut self, res: u32) -> Result<(), Error3d> {
        self.done(&Call::DetachBacking { res })
    }

    fn transfer(&mut self, t: &Transfer3d) -> Result<(), Error3d> {
        self.done(&Call::Transfer(*t))
    }

    fn submit(&mut self, ctx: u32, stream: &mut [u32]) -> Result<(), Error3d> {
        let bytes: Vec<u8> = stream.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.call(&Call::Submit { ctx }, &bytes, &[]).map(|_| ())
    }

    fn create_fence(&mut self, ctx: u32, ring: Option<u32>) -> Result<HostFence, Error3d> {
        match self.call(&Call::CreateFence { ctx, ring }, &[], &[])? {
            (Reply::Fence(fence), _, _) => {
                self.outstanding.push(fence);
                Ok(fence)
            }
            _ => {
                self.lost("answered CreateFence with something else".into());
                Err(Error3d::WorkerGone)
            }
        }
    }

    /// Never a texture: the worker's textures are in another process (see [`Self::read_back`]).
    fn resource_info(&self, _res: u32) -> Option<ResourceInfo> {
        None
    }

    fn reset(&mut self) {
        self.outstanding.clear();
        self.retired.clear();
        if self.worker.is_some() {
            let _ = self.done(&Call::Reset);
        }
        self.regions.clear();
        if self.worker.is_none() {
            // A new connection gets a new worker.
            match self.start() {
                Ok(()) => self.status.restarts += 1,
                Err(e) => warn!(guest = %self.guest, "3D worker restart: {e:#}"),
            }
        }
    }

    /// New regions (by host address) are sent to the worker; old ones stay mapped there, as
    /// they do here, until the device resets.
    fn set_guest_memory(&mut self, regions: &[HostRegion<'_>]) {
        for r in regions {
            let known = self.regions.iter().any(|k| k.host == r.host && k.len == r.len);
            if known || self.worker.is_none() {
                continue;
            }
            let id = self.next_region;
            self.next_region = self.next_region.wrapping_add(1).max(1);
            let call = Call::MapRegion { id, len: r.len, offset: r.fd_offset };
            match self.call(&call, &[], &[r.fd.as_raw_fd()]) {
                Ok(_) => self.regions.push(Region { id, host: r.host, len: r.len }),
                Err(e) => debug!(guest = %self.guest, "guest memory region for the 3D worker: {e}"),
            }
        }
    }

    fn own_fences(&mut self) -> Option<Vec<Fence>> {
        self.pump();
        // Cleared before taking: a fence added after this is signalled again.
        let _ = self.retired_event.read();
        Some(std::mem::take(&mut self.retired))
    }

    fn wake_fd(&self) -> Option<RawFd> {
        Some(self.wake.as_raw_fd())
    }

    /// `TRANSFER_FROM_HOST` of `rect` into the shared buffer, laid out as the whole resource
    /// (`stride` bytes a row, `rows` rows) so that only `rect` is written and uploaded.
    fn read_back(&mut self, res: u32, rect: ReadBack) -> Option<&[u8]> {
        let len = usize::try_from(rect.stride).ok()?.checked_mul(usize::try_from(rect.rows).ok()?)?;
        if len == 0 || len > 256 << 20 {
            return None;
        }
        if self.shm.as_ref().is_none_or(|s| s.len < len) {
            let shm = Shm::new(len).map_err(|e| debug!(guest = %self.guest, "read-back buffer: {e}")).ok()?;
            let fd = shm.fd.as_fd().as_raw_fd();
            self.call(&Call::SetReadBack { len: len as u64 }, &[], &[fd]).ok()?;
            self.shm = Some(shm);
        }
        let offset = u64::from(rect.y) * u64::from(rect.stride) + u64::from(rect.x) * 4;
        let call = Call::ReadBack {
            res,
            x: rect.x,
            y: rect.y,
            width: rect.width,
            height: rect.height,
            stride: rect.stride,
            offset,
        };
        self.done(&call).ok()?;
        self.status.read_backs += 1;
        self.status.read_back_bytes += u64::from(rect.width) * u64::from(rect.height) * 4;
        let shm = self.shm.as_ref()?;
        // SAFETY: the mapping is `shm.len` bytes and lives as long as `self.shm` (borrowed with
        // `self`); the worker wrote into it before answering and writes nothing unasked.
        Some(unsafe { std::slice::from_raw_parts(shm.ptr, len) })
    }

    fn status(&self) -> Renderer3dStatus {
        Renderer3dStatus::Isolated(WorkerStatus { running: self.worker.is_some(), ..self.status.clone() })
    }

    /// Asked once per scanned-out resource; a worker whose EGL cannot export says so once and
    /// is not asked again (its scanouts are read back).
    fn export_scanout(&mut self, res: u32) -> Option<ExportedScanout> {
        use smithay::backend::allocator::{
            Fourcc, Modifier,
            dmabuf::{Dmabuf, DmabufFlags},
        };
        if self.no_export.is_some() {
            return None;
        }
        match self.call(&Call::Export { res }, &[], &[]) {
            Ok((Reply::Dmabuf { width, height, fourcc, modifier, planes, y_0_top }, _, fds)) => {
                let size = (i32::try_from(width).ok()?, i32::try_from(height).ok()?);
                if planes.is_empty() || planes.len() != fds.len() || size.0 > 16384 || size.1 > 16384 {
                    debug!(guest = %self.guest, "3D worker's dmabuf: {} planes, {} descriptors", planes.len(), fds.len());
                    return None;
                }
                let fourcc = Fourcc::try_from(fourcc).ok()?;
                let mut builder = Dmabuf::builder(size, fourcc, Modifier::from(modifier), DmabufFlags::empty());
                for (i, (fd, (offset, stride))) in fds.into_iter().zip(planes).enumerate() {
                    builder.add_plane(fd, i as u32, offset, stride);
                }
                let dmabuf = builder.build()?;
                self.status.exports += 1;
                Some(ExportedScanout { dmabuf, y_0_top })
            }
            Err(Error3d::Worker { fault: "NoExport", message, .. }) => {
                info!(guest = %self.guest, "3D worker scanouts are read back: {message}");
                self.no_export = Some(message);
                None
            }
            _ => None,
        }
    }
}

impl Drop for Isolated3d {
    fn drop(&mut self) {
        if let Some(mut w) = self.worker.take() {
            // Its state dies with the guest's device: no clean-up to wait for.
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
    }
}
