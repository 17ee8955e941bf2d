//! The protocol between scanway and an isolated 3D worker: [`Call`]s one way, [`Message`]s the
//! other, as frames on a `SOCK_STREAM` Unix socket pair.
//!
//! A frame is a 16-byte header (`json_len`, `payload_len`, `fds`, `seq`: little-endian u32;
//! `seq` numbers calls, a reply carries its call's, other messages 0), then
//! `json_len` bytes of JSON (the call or message), then `payload_len` raw bytes (a `SUBMIT_3D`
//! stream, a capset), sent with one `sendmsg` that carries the frame's `fds` file descriptors
//! (`SCM_RIGHTS`: guest memory regions, the read-back buffer). The kernel delivers a
//! descriptor set with the first byte of its `sendmsg`, so a reader that keeps received
//! descriptors in order and gives each frame the next `fds` of them pairs them right.
//!
//! Neither side trusts the other's frames: a header over [`MAX_JSON`] / [`MAX_PAYLOAD`] or
//! [`MAX_FDS`], or JSON that does not parse, is a [`WireError::Protocol`] and ends the channel.

use std::{
    collections::VecDeque,
    io::{self, Read, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::net::UnixStream,
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::renderer::virgl::{Fence, ResourceCreate3d};
use crate::virtio::renderer3d::{CapsetInfo, HostFence, Transfer3d};

/// Largest JSON part of a frame, bytes (an `AttachBacking` of 16384 entries fits).
pub const MAX_JSON: usize = 1 << 20;
/// Largest payload of a frame, bytes: a `SUBMIT_3D` stream (the device caps it at 1 MiB).
pub const MAX_PAYLOAD: usize = 2 << 20;
/// Most file descriptors one frame carries.
pub const MAX_FDS: usize = 4;
const HEADER: usize = 16;

/// What scanway asks of its worker; each call gets one [`Reply`] (as [`Message::Reply`]), in
/// order. Ids are the guest's, as [`crate::virtio::renderer3d::Renderer3d`] has them; the
/// fields are that trait's arguments of the same names.
#[allow(missing_docs)]
#[derive(Debug, Serialize, Deserialize)]
pub enum Call {
    /// First call: answered with [`Reply::Hello`].
    Hello,
    /// `GET_CAPSET`: [`Reply::Bytes`] (payload) or [`Reply::None`].
    Capset { id: u32, version: u32 },
    /// `CTX_CREATE`.
    ContextCreate { ctx: u32, capset: u32, name: String },
    /// `CTX_DESTROY`.
    ContextDestroy { ctx: u32 },
    /// `CTX_ATTACH_RESOURCE` / `CTX_DETACH_RESOURCE`.
    ContextAttach { ctx: u32, res: u32, attach: bool },
    /// `RESOURCE_CREATE_3D`.
    ResourceCreate { res: u32, args: ResourceCreate3d },
    /// `RESOURCE_UNREF`.
    ResourceUnref { res: u32 },
    /// Map guest memory region `id` (`len` bytes at `offset` of the frame's one descriptor);
    /// [`Reply::Ok`] once mapped. Regions stay mapped until [`Call::Reset`].
    MapRegion { id: u32, len: u64, offset: u64 },
    /// `RESOURCE_ATTACH_BACKING`: `(region id, byte offset in the region, length)` per entry.
    AttachBacking { res: u32, iov: Vec<(u32, u64, u64)> },
    /// `RESOURCE_DETACH_BACKING`.
    DetachBacking { res: u32 },
    /// `TRANSFER_*`.
    Transfer(Transfer3d),
    /// `SUBMIT_3D` in `ctx`; the stream is the payload.
    Submit { ctx: u32 },
    /// A fence: [`Reply::Fence`].
    CreateFence { ctx: u32, ring: Option<u32> },
    /// Use the frame's one descriptor, `len` bytes, as the read-back buffer from now on.
    SetReadBack { len: u64 },
    /// Copy the box `x, y, width, height` (pixels) of level 0 of 3D resource `res` into the
    /// read-back buffer at `offset`, rows `stride` bytes apart.
    ReadBack { res: u32, x: u32, y: u32, width: u32, height: u32, stride: u32, offset: u64 },
    /// Export level 0 of 3D resource `res` as a dmabuf: [`Reply::Dmabuf`] with its planes'
    /// descriptors, or an error where the worker's EGL cannot export.
    Export { res: u32 },
    /// Device reset: destroy every context and resource, unmap the guest memory regions.
    Reset,
}

/// The answer to one [`Call`].
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// Done.
    Ok,
    /// Nothing (`GET_CAPSET` of an unknown capset).
    None,
    /// The bytes are the frame's payload.
    Bytes,
    /// A fence was created.
    Fence(HostFence),
    /// To [`Call::Hello`]: the worker's process id, its capsets and GL.
    Hello {
        /// The worker's process id.
        pid: u32,
        /// Its capsets, by index.
        capsets: Vec<CapsetInfo>,
        /// Its GL API and version.
        gl: String,
    },
    /// To [`Call::Export`]: the dmabuf, its planes' descriptors carried by the frame in
    /// plane order.
    Dmabuf {
        /// Width, pixels.
        width: u32,
        /// Height, pixels.
        height: u32,
        /// DRM fourcc.
        fourcc: u32,
        /// DRM format modifier.
        modifier: u64,
        /// (offset, stride) per plane, bytes.
        planes: Vec<(u32, u32)>,
        /// Row 0 is the top row (`VIRGL_RESOURCE_Y_0_TOP`).
        y_0_top: bool,
    },
    /// The call failed.
    Err(RemoteError),
}

/// What the worker sends: replies, in call order, and retired fences whenever virglrenderer
/// retires some.
#[derive(Debug, Serialize, Deserialize)]
pub enum Message {
    /// The reply to the oldest unanswered call.
    Reply(Reply),
    /// Fences virglrenderer retired, in order.
    Fences(Vec<Fence>),
}

/// A [`crate::virtio::renderer3d::Error3d`] as it crosses the channel.
#[derive(Debug, Serialize, Deserialize)]
pub struct RemoteError {
    /// [`crate::virtio::renderer3d::Error3d::fault_name`] of the worker's error.
    pub fault: String,
    /// Its id, for the errors that carry one (resource, context, capset).
    pub id: u32,
    /// Its text with its causes.
    pub message: String,
}

/// Why a channel operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed, or the peer closed it.
    #[error("3D worker channel: {0}")]
    Io(#[from] io::Error),
    /// No frame came before the deadline.
    #[error("3D worker did not answer within {0:?}")]
    Timeout(Duration),
    /// The peer sent something outside the protocol.
    #[error("3D worker protocol: {0}")]
    Protocol(String),
}

/// One end of the channel: frames out, buffered frames in.
#[derive(Debug)]
pub struct Channel {
    sock: UnixStream,
    /// Bytes received and not yet taken as frames.
    buf: Vec<u8>,
    /// Descriptors received and not yet given to a frame, in arrival order.
    fds: VecDeque<OwnedFd>,
}

/// One received frame.
#[derive(Debug)]
pub struct Frame<T> {
    /// The call's sequence number (a reply's: its call's; 0 for other messages).
    pub seq: u32,
    /// The call or message.
    pub body: T,
    /// The raw payload.
    pub payload: Vec<u8>,
    /// The descriptors it carried.
    pub fds: Vec<OwnedFd>,
}

impl Channel {
    /// A channel over `sock` (blocking; [`Channel::recv`] polls with its own deadline).
    pub fn new(sock: UnixStream) -> Self {
        Channel { sock, buf: Vec::new(), fds: VecDeque::new() }
    }

    /// The socket, for polling.
    pub fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Send one frame: number `seq`, `body` as JSON, `payload`, and `fds` (at most
    /// [`MAX_FDS`]).
    pub fn send<T: Serialize>(&mut self, seq: u32, body: &T, payload: &[u8], fds: &[RawFd]) -> Result<(), WireError> {
        let json = serde_json::to_vec(body).map_err(|e| WireError::Protocol(format!("encoding: {e}")))?;
        if json.len() > MAX_JSON || payload.len() > MAX_PAYLOAD || fds.len() > MAX_FDS {
            return Err(WireError::Protocol("frame too large to send".into()));
        }
        let mut header = [0u8; HEADER];
        header[..4].copy_from_slice(&(json.len() as u32).to_le_bytes());
        header[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        header[8..12].copy_from_slice(&(fds.len() as u32).to_le_bytes());
        header[12..].copy_from_slice(&seq.to_le_bytes());
        let total = HEADER + json.len() + payload.len();
        let parts: [&[u8]; 3] = [&header, &json, payload];
        let sent = self.sock.send_with_fds(&parts, fds).map_err(|e| WireError::Io(io::Error::from(e)))?;
        // A blocking stream socket takes the whole frame unless a signal interrupted it: send
        // the rest without descriptors (they went with the first byte).
        let mut skip = sent;
        for part in parts {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            self.sock.write_all(&part[skip..])?;
            skip = 0;
        }
        debug_assert!(sent <= total);
        Ok(())
    }

    /// The next frame, waiting at most `timeout` for it (`None`: forever; zero: only what is
    /// already received or readable now). `Ok(None)`: none before the deadline.
    pub fn recv<T: DeserializeOwned>(&mut self, timeout: Option<Duration>) -> Result<Option<Frame<T>>, WireError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(frame) = self.take_frame()? {
                return Ok(Some(frame));
            }
            let wait = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
                }
            };
            let mut pfd = libc::pollfd { fd: self.sock.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, wait) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            if n == 0 {
                return Ok(None);
            }
            self.fill()?;
        }
    }

    /// Read what the socket has (it is readable): bytes into the buffer, descriptors queued.
    fn fill(&mut self) -> Result<(), WireError> {
        let mut chunk = vec![0u8; 256 * 1024];
        let mut fds = [-1 as RawFd; MAX_FDS];
        let mut iov = [libc::iovec { iov_base: chunk.as_mut_ptr().cast(), iov_len: chunk.len() }];
        // SAFETY: the iovec describes `chunk`, which outlives the call.
        let (n, nfds) =
            unsafe { self.sock.recv_with_fds(&mut iov, &mut fds) }.map_err(|e| WireError::Io(io::Error::from(e)))?;
        for &fd in fds.iter().take(nfds) {
            // SAFETY: recvmsg gave us these descriptors; nothing else owns them.
            self.fds.push_back(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        if n == 0 {
            return Err(WireError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        if self.fds.len() > 4 * MAX_FDS {
            return Err(WireError::Protocol("descriptors without frames".into()));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// A whole frame from the buffer, if one is there.
    fn take_frame<T: DeserializeOwned>(&mut self) -> Result<Option<Frame<T>>, WireError> {
        let Some(header) = self.buf.first_chunk::<HEADER>() else { return Ok(None) };
        let word = |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]) as usize;
        let (json_len, payload_len, nfds, seq) = (word(0), word(4), word(8), word(12) as u32);
        if json_len > MAX_JSON || payload_len > MAX_PAYLOAD || nfds > MAX_FDS {
            return Err(WireError::Protocol(format!("frame header {json_len}/{payload_len}/{nfds} out of bounds")));
        }
        let total = HEADER + json_len + payload_len;
        if self.buf.len() < total {
            // The rest of this frame is on its way: read it now rather than poll per piece.
            let mut rest = vec![0u8; total - self.buf.len()];
            self.sock.read_exact(&mut rest)?;
            self.buf.extend_from_slice(&rest);
        }
        if self.fds.len() < nfds {
            return Err(WireError::Protocol("frame without its descriptors".into()));
        }
        let body = serde_json::from_slice(&self.buf[HEADER..HEADER + json_len])
            .map_err(|e| WireError::Protocol(format!("decoding: {e}")))?;
        let payload = self.buf[HEADER + json_len..total].to_vec();
        self.buf.drain(..total);
        let fds = self.fds.drain(..nfds).collect();
        Ok(Some(Frame { seq, body, payload, fds }))
    }
}
