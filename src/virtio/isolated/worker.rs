//! The 3D worker process (`scanway 3d-worker`): one guest's virglrenderer, on an EGL display
//! of its own, serving [`Call`]s from scanway on the socket it inherited as fd 3.
//!
//! It is scanway's [`Virgl3d`] behind a socket: the same id translation and stream checks,
//! but virglrenderer's state, GL contexts and crashes are this process's alone. Guest memory
//! comes as the VMM's memory region descriptors, mapped here a second time; pixels go back
//! through a buffer scanway shares ([`Call::SetReadBack`]). Retired fences are sent as they
//! retire (virglrenderer's fence eventfd, polled with the socket).

use std::{
    collections::HashMap,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    os::unix::net::UnixStream,
    rc::Rc,
};

use anyhow::{Context, anyhow};
use tracing::{debug, info};

use super::wire::{Call, Channel, Frame, Message, RemoteError, Reply, WireError};
use crate::renderer::{
    self,
    virgl::{GlApi, Virgl, VirglOptions},
};
use crate::virtio::{
    renderer3d::{Error3d, Renderer3d},
    virgl3d::{Virgl3d, VirglShared},
};
use smithay::backend::renderer::gles::GlesRenderer;

/// The descriptor a worker finds its socket on.
pub const WORKER_FD: RawFd = 3;

/// A mapping of shared memory (a guest memory region or the read-back buffer).
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    /// Map `len` bytes at `offset` of `fd`, shared, readable and writable.
    fn new(fd: &OwnedFd, len: u64, offset: u64) -> anyhow::Result<Mapping> {
        let len = usize::try_from(len).ok().filter(|&l| l > 0).ok_or_else(|| anyhow!("mapping length {len}"))?;
        let offset = libc::off_t::try_from(offset).map_err(|_| anyhow!("mapping offset {offset}"))?;
        // SAFETY: a fresh shared mapping of a descriptor we were given; checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_NORESERVE,
                fd.as_raw_fd(),
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mmap");
        }
        Ok(Mapping { ptr: ptr.cast(), len })
    }

    /// The iovec of `len` bytes at `offset` of this mapping, if it lies inside.
    fn iovec(&self, offset: u64, len: u64) -> Option<libc::iovec> {
        let offset = usize::try_from(offset).ok()?;
        let len = usize::try_from(len).ok()?;
        (offset.checked_add(len)? <= self.len)
            // SAFETY: in bounds of the mapping, checked just above.
            .then(|| libc::iovec { iov_base: unsafe { self.ptr.add(offset) }.cast(), iov_len: len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The worker's state: the guest's 3D renderer and what it maps.
struct Worker {
    /// Dropped before `regions`: virglrenderer holds pointers into them.
    renderer: Virgl3d,
    shared: Rc<VirglShared>,
    regions: HashMap<u32, Mapping>,
    read_back: Option<Mapping>,
    /// Descriptors to send with the next reply (an exported dmabuf's planes).
    outgoing: Vec<OwnedFd>,
    /// The EGL display and context virglrenderer's contexts share with; dropped last.
    gles: GlesRenderer,
}

/// `scanway 3d-worker --guest NAME`: serve the socket on [`WORKER_FD`] until scanway closes
/// it. Errors: no EGL or virglrenderer here, or the channel broke.
pub fn main(guest: &str) -> anyhow::Result<()> {
    // SAFETY: fd 3 is the socket scanway's spawn put there; we take it over.
    let sock = unsafe { UnixStream::from_raw_fd(WORKER_FD) };
    let mut channel = Channel::new(sock);
    let _span = tracing::info_span!("3d-worker", guest).entered();

    let gles = renderer::headless_renderer().context("EGL for the 3D worker")?;
    let display = gles.egl_context().display().get_display_handle().handle;
    let context = gles.egl_context().get_context_handle();
    // SAFETY: the display and context belong to `gles`, which outlives virglrenderer: the
    // worker's state is dropped before it at the end of this function.
    let virgl = unsafe {
        Virgl::init_with(display, context, VirglOptions { api: GlApi::SameAsShareContext, thread_sync: true })
    }
    .map_err(|e| anyhow!("virglrenderer: {e}"))?;
    let gl = format!("{:?}", virgl.gl_version());
    let poll_fd = virgl.poll_fd();
    let shared = VirglShared::new(virgl, Some(gles.egl_context().display().clone()));
    let exports = gles.egl_context().display().extensions().iter().any(|e| e == "EGL_MESA_image_dma_buf_export");
    let mut worker = Worker {
        renderer: Virgl3d::new(shared.clone()),
        shared,
        regions: HashMap::new(),
        read_back: None,
        outgoing: Vec::new(),
        gles,
    };
    info!(dmabuf_export = exports, "scanouts go back as {}", if exports { "dmabufs" } else { "read-back copies" });
    info!("virglrenderer ready ({gl})");

    loop {
        let mut fds = vec![libc::pollfd { fd: channel.raw_fd(), events: libc::POLLIN, revents: 0 }];
        if let Some(fd) = poll_fd {
            fds.push(libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
        }
        // SAFETY: valid pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("poll");
        }
        if fds.get(1).is_some_and(|p| p.revents != 0) {
            worker.shared.virgl.poll();
        }
        if fds[0].revents != 0 {
            // Every frame already received is served before polling again.
            let mut timeout = None;
            loop {
                let frame: Frame<Call> = match channel.recv(timeout) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(WireError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        info!("scanway closed the channel");
                        return Ok(());
                    }
                    Err(e) => return Err(e.into()),
                };
                timeout = Some(std::time::Duration::ZERO);
                let seq = frame.seq;
                let (reply, payload) = worker.serve(frame);
                let fds: Vec<RawFd> = worker.outgoing.iter().map(AsRawFd::as_raw_fd).collect();
                channel.send(seq, &Message::Reply(reply), &payload, &fds)?;
                worker.outgoing.clear();
            }
        }
        let fences = worker.shared.virgl.drain_fences();
        if !fences.is_empty() {
            channel.send(0, &Message::Fences(fences), &[], &[])?;
        }
    }
}

impl Worker {
    /// Execute one call: its reply and payload.
    fn serve(&mut self, frame: Frame<Call>) -> (Reply, Vec<u8>) {
        let Frame { body, payload, mut fds, .. } = frame;
        let done = |r: Result<(), Error3d>| (r.map_or_else(|e| Reply::Err(remote(&e)), |()| Reply::Ok), Vec::new());
        let r = &mut self.renderer;
        match body {
            Call::Hello => {
                let capsets = (0..r.num_capsets()).filter_map(|i| r.capset_info(i)).collect();
                let gl = format!("{:?}", self.shared.virgl.gl_version());
                (Reply::Hello { pid: std::process::id(), capsets, gl }, Vec::new())
            }
            Call::Capset { id, version } => match r.capset(id, version) {
                Some(bytes) => (Reply::Bytes, bytes),
                None => (Reply::None, Vec::new()),
            },
            Call::ContextCreate { ctx, capset, name } => done(r.context_create(ctx, capset, &name)),
            Call::ContextDestroy { ctx } => done(r.context_destroy(ctx)),
            Call::ContextAttach { ctx, res, attach } => done(r.context_attach(ctx, res, attach)),
            Call::ResourceCreate { res, args } => done(r.resource_create(res, args)),
            Call::ResourceUnref { res } => done(r.resource_unref(res)),
            Call::MapRegion { id, len, offset } => {
                let mapped =
                    fds.pop().ok_or_else(|| anyhow!("no descriptor")).and_then(|fd| Mapping::new(&fd, len, offset));
                match mapped {
                    Ok(m) => {
                        debug!(id, len, "guest memory region mapped");
                        self.regions.insert(id, m);
                        (Reply::Ok, Vec::new())
                    }
                    Err(e) => (
                        Reply::Err(RemoteError { fault: "MapFailed".into(), id, message: format!("{e:#}") }),
                        Vec::new(),
                    ),
                }
            }
            Call::AttachBacking { res, iov } => {
                let iovecs: Option<Vec<libc::iovec>> =
                    iov.iter().map(|&(region, offset, len)| self.regions.get(&region)?.iovec(offset, len)).collect();
                let Some(iovecs) = iovecs else {
                    let message = "backing outside the mapped guest memory".to_string();
                    return (
                        Reply::Err(RemoteError { fault: "BackingOutsideMemory".into(), id: res, message }),
                        Vec::new(),
                    );
                };
                // SAFETY: every iovec lies in a region mapping, which stays mapped until
                // `Call::Reset`, and that resets the renderer (detaching every backing) first.
                done(unsafe { r.attach_backing(res, &iovecs) })
            }
            Call::DetachBacking { res } => done(r.detach_backing(res)),
            Call::Transfer(t) => done(r.transfer(&t)),
            Call::Submit { ctx } => {
                let mut words: Vec<u32> =
                    payload.chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect();
                done(r.submit(ctx, &mut words))
            }
            Call::CreateFence { ctx, ring } => match r.create_fence(ctx, ring) {
                Ok(fence) => (Reply::Fence(fence), Vec::new()),
                Err(e) => (Reply::Err(remote(&e)), Vec::new()),
            },
            Call::SetReadBack { len } => {
                let mapped = fds.pop().ok_or_else(|| anyhow!("no descriptor")).and_then(|fd| Mapping::new(&fd, len, 0));
                match mapped {
                    Ok(m) => {
                        self.read_back = Some(m);
                        (Reply::Ok, Vec::new())
                    }
                    Err(e) => (
                        Reply::Err(RemoteError { fault: "MapFailed".into(), id: 0, message: format!("{e:#}") }),
                        Vec::new(),
                    ),
                }
            }
            Call::ReadBack { res, x, y, width, height, stride, offset } => {
                let Some(buffer) = &self.read_back else {
                    return (
                        Reply::Err(RemoteError {
                            fault: "NoReadBack".into(),
                            id: res,
                            message: "no read-back buffer".into(),
                        }),
                        Vec::new(),
                    );
                };
                let Some(mut iov) = buffer.iovec(0, buffer.len as u64) else { unreachable!("the whole mapping") };
                // SAFETY: the iovec is the read-back mapping, which no Rust reference aliases.
                done(unsafe { r.read_into(res, (x, y, width, height), stride, offset, std::slice::from_mut(&mut iov)) })
            }
            Call::Export { res } => self.export(res),
            Call::Reset => {
                r.reset();
                self.regions.clear();
                (Reply::Ok, Vec::new())
            }
        }
    }
}

impl Worker {
    /// [`Call::Export`]: the resource's texture as a dmabuf; its descriptors go in `outgoing`.
    fn export(&mut self, res: u32) -> (Reply, Vec<u8>) {
        let fail =
            |message: String| (Reply::Err(RemoteError { fault: "NoExport".into(), id: res, message }), Vec::new());
        let Some(info) = self.renderer.resource_info(res).filter(|i| i.tex_id != 0) else {
            return fail("no such 3D resource with a texture".into());
        };
        let (Ok(w), Ok(h)) = (i32::try_from(info.width), i32::try_from(info.height)) else {
            return fail("size".into());
        };
        // SAFETY: tex_id is the live texture of a resource of this guest, in the share group
        // of `gles` (virglrenderer's contexts share with it).
        match unsafe { renderer::export_texture(&mut self.gles, info.tex_id, (w, h).into()) } {
            Ok(dmabuf) => {
                use smithay::backend::allocator::Buffer;
                let planes = dmabuf.offsets().zip(dmabuf.strides()).collect();
                let format = dmabuf.format();
                for fd in dmabuf.handles() {
                    match fd.try_clone_to_owned() {
                        Ok(fd) => self.outgoing.push(fd),
                        Err(e) => {
                            self.outgoing.clear();
                            return fail(format!("dup: {e}"));
                        }
                    }
                }
                let reply = Reply::Dmabuf {
                    width: info.width,
                    height: info.height,
                    fourcc: format.code as u32,
                    modifier: format.modifier.into(),
                    planes,
                    y_0_top: info.y_0_top,
                };
                (reply, Vec::new())
            }
            Err(e) => fail(format!("{e:#}")),
        }
    }
}

/// `e` for the wire.
fn remote(e: &Error3d) -> RemoteError {
    let id = match e {
        Error3d::Resource(id) | Error3d::Context(id) | Error3d::Capset(id) => *id,
        _ => 0,
    };
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    RemoteError { fault: e.fault_name().into(), id, message }
}
