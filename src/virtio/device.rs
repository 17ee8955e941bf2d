//! The virtio-gpu 2D device model (virtio spec 1.2, section 5.7.6).
//!
//! [`Gpu`] owns the host side state of one guest's GPU: the host copies of 2D
//! resources, their guest backing (as guest-physical ranges, never mapped),
//! the scanouts and the cursors. It executes control queue and cursor queue
//! requests and records what the compositor must do as [`GpuEvent`]s.
//!
//! Every byte coming from the guest is treated as hostile: requests are parsed
//! with length checks, every size and offset computation is checked, host
//! allocations are bounded by [`GpuConfig::max_host_memory`] and use
//! `try_reserve`, and errors are answered with the `VIRTIO_GPU_RESP_ERR_*`
//! codes of the spec rather than panics. Each distinct kind of guest error is
//! logged with `tracing::warn!` once per [`Gpu`] (later occurrences at debug
//! level); every command is logged at debug level.
//!
//! # Notification contract
//!
//! [`Gpu::process_ctrl_queue`] and [`Gpu::process_cursor_queue`] only pop
//! chains and add them to the used ring. They never signal the guest and never
//! touch notification suppression: **the caller** (the vhost-user backend)
//! decides whether to signal, e.g. with
//! `if added && queue.needs_notification(mem)? { vring.signal_used_queue() }`,
//! and, with `VIRTIO_RING_F_EVENT_IDX`, drives the usual
//! `loop { disable_notification; process; if !enable_notification { break } }`
//! loop. Each call handles at most `queue.size()` chains so that a guest that
//! keeps refilling the ring cannot starve the caller; the enable/disable loop
//! (or the guest's next kick) picks up the rest.

use std::collections::{BTreeMap, VecDeque};
use std::mem::size_of;

use tracing::{debug, warn};
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Address, ByteValued, Bytes, GuestAddress, GuestMemory, Le32, Permissions};

use super::edid;
use super::format::Format;
use super::protocol::*;
use super::virgl3d::{Error3d, HostFence, Virgl3d};
use crate::renderer::virgl::{Box3d, Fence, ResourceCreate3d as VirglCreate3d, ResourceInfo};

/// Largest width or height of a 2D resource, pixels (an arbitrary but
/// generous bound; QEMU and Linux limit framebuffers to 16384 too).
pub const MAX_RESOURCE_DIMENSION: u32 = 16384;
/// Largest `nr_entries` accepted by RESOURCE_ATTACH_BACKING (as QEMU).
pub const MAX_BACKING_ENTRIES: u32 = 16384;
/// Largest cursor image, pixels per side (the spec's cursor size is 64x64).
pub const MAX_CURSOR_DIMENSION: u32 = 64;
/// Bookkeeping cost charged per resource against `max_host_memory`, bytes.
pub const RESOURCE_OVERHEAD_BYTES: u64 = 256;
/// Bookkeeping cost charged per stored backing entry against `max_host_memory`, bytes.
pub const BACKING_ENTRY_BYTES: u64 = size_of::<BackingEntry>() as u64;
/// Largest number of readable request bytes copied out of a chain: a
/// SUBMIT_3D header plus [`MAX_SUBMIT_BYTES`] of commands (more than an
/// ATTACH_BACKING with [`MAX_BACKING_ENTRIES`] entries). Anything beyond is
/// ignored.
pub const MAX_REQUEST_BYTES: usize = size_of::<CmdSubmit>() + MAX_SUBMIT_BYTES;
/// Largest SUBMIT_3D command buffer accepted, bytes (Mesa's virgl driver
/// sends at most 64 Ki dwords).
pub const MAX_SUBMIT_BYTES: usize = 1 << 20;
const _: () = assert!(
    MAX_REQUEST_BYTES >= size_of::<ResourceAttachBacking>() + MAX_BACKING_ENTRIES as usize * size_of::<MemEntry>()
);
/// Gallium's `PIPE_BUFFER` resource target: `width` is a length in bytes.
const PIPE_BUFFER: u32 = 0;
/// Longest 3D buffer resource accepted, bytes (also bounded by the host memory cap).
pub const MAX_BUFFER_BYTES: u32 = 256 << 20;
/// Default [`GpuConfig::max_host_memory`]: 512 MiB.
pub const DEFAULT_MAX_HOST_MEMORY: u64 = 512 << 20;
/// Default [`GpuConfig::preferred_size`]: 1280x800.
pub const DEFAULT_PREFERRED_SIZE: (u32, u32) = (1280, 800);

/// Bytes per pixel of every 2D format.
const BPP: u64 = 4;

/// Per-guest configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuConfig {
    /// Number of scanouts, 1..=16 (clamped by [`Gpu::new`]); all are reported
    /// enabled (connected) by GET_DISPLAY_INFO.
    pub num_scanouts: u32,
    /// Preferred mode of every scanout, pixels (width, height), reported by
    /// GET_DISPLAY_INFO and GET_EDID; each side clamped to 1..=16384.
    pub preferred_size: (u32, u32),
    /// Cap on [`Gpu::host_memory_used`], bytes: pixel data of every resource
    /// plus bookkeeping (see [`Resource::host_memory`]).
    pub max_host_memory: u64,
    /// Guest name, used as the EDID display name and in logs.
    pub name: String,
}

impl Default for GpuConfig {
    fn default() -> Self {
        GpuConfig {
            num_scanouts: 1,
            preferred_size: DEFAULT_PREFERRED_SIZE,
            max_host_memory: DEFAULT_MAX_HOST_MEMORY,
            name: "guest".to_owned(),
        }
    }
}

/// Which virtqueue a request came from. Control commands are only accepted on
/// the control queue and cursor commands only on the cursor queue; anything
/// else is answered with `VIRTIO_GPU_RESP_ERR_UNSPEC`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueKind {
    /// Queue 0, `controlq`.
    Control,
    /// Queue 1, `cursorq`.
    Cursor,
}

/// A rectangle in pixels. Arithmetic on it is checked: edges are computed in
/// `u64`, so `x + width` never overflows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Rect {
    /// Left edge, pixels.
    pub x: u32,
    /// Top edge, pixels.
    pub y: u32,
    /// Width, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
}

impl Rect {
    /// A rectangle from its left/top edge and size.
    pub const fn new(x: u32, y: u32, width: u32, height: u32) -> Rect {
        Rect { x, y, width, height }
    }

    /// Whether the rectangle covers no pixel (zero width or height).
    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }

    /// `x + width` (exclusive right edge), `None` if it overflows `u32`.
    pub fn checked_right(&self) -> Option<u32> {
        self.x.checked_add(self.width)
    }

    /// `y + height` (exclusive bottom edge), `None` if it overflows `u32`.
    pub fn checked_bottom(&self) -> Option<u32> {
        self.y.checked_add(self.height)
    }

    fn right64(&self) -> u64 {
        u64::from(self.x) + u64::from(self.width)
    }

    fn bottom64(&self) -> u64 {
        u64::from(self.y) + u64::from(self.height)
    }

    /// Whether `other` lies entirely inside `self` (an empty `other` is
    /// contained when its origin is inside or on the edge of `self`).
    pub fn contains(&self, other: &Rect) -> bool {
        other.x >= self.x
            && other.y >= self.y
            && other.right64() <= self.right64()
            && other.bottom64() <= self.bottom64()
    }

    /// Whether the rectangle lies inside a `width x height` surface at the origin.
    pub fn fits_in(&self, width: u32, height: u32) -> bool {
        Rect::new(0, 0, width, height).contains(self)
    }

    /// The overlap of both rectangles, `None` if it is empty.
    pub fn intersect(&self, other: &Rect) -> Option<Rect> {
        let x = self.x.max(other.x);
        let y = self.y.max(other.y);
        let right = self.right64().min(other.right64());
        let bottom = self.bottom64().min(other.bottom64());
        let width = u32::try_from(right.checked_sub(u64::from(x))?).ok()?;
        let height = u32::try_from(bottom.checked_sub(u64::from(y))?).ok()?;
        let r = Rect::new(x, y, width, height);
        (!r.is_empty()).then_some(r)
    }

    /// The rectangle clipped to a `width x height` surface, `None` if nothing is left.
    pub fn clip(&self, width: u32, height: u32) -> Option<Rect> {
        self.intersect(&Rect::new(0, 0, width, height))
    }

    /// The bounding box of both rectangles; an empty rectangle contributes
    /// nothing. `None` if the box is not representable (width or height
    /// above `u32::MAX`).
    pub fn union(&self, other: &Rect) -> Option<Rect> {
        if other.is_empty() {
            return Some(*self);
        }
        if self.is_empty() {
            return Some(*other);
        }
        let x = self.x.min(other.x);
        let y = self.y.min(other.y);
        let right = self.right64().max(other.right64());
        let bottom = self.bottom64().max(other.bottom64());
        Some(Rect::new(x, y, u32::try_from(right - u64::from(x)).ok()?, u32::try_from(bottom - u64::from(y)).ok()?))
    }
}

impl From<GpuRect> for Rect {
    fn from(r: GpuRect) -> Rect {
        Rect::new(r.x.to_native(), r.y.to_native(), r.width.to_native(), r.height.to_native())
    }
}

impl From<Rect> for GpuRect {
    fn from(r: Rect) -> GpuRect {
        GpuRect { x: r.x.into(), y: r.y.into(), width: r.width.into(), height: r.height.into() }
    }
}

/// One contiguous guest-physical range of a resource's backing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackingEntry {
    /// Guest physical address.
    pub addr: u64,
    /// Length, bytes (non-zero; adjacent guest entries are merged).
    pub len: u64,
    /// Byte offset of this range within the backing (sum of earlier lengths).
    pub offset: u64,
}

/// The guest memory attached to a resource by RESOURCE_ATTACH_BACKING: the
/// validated list of guest-physical ranges, in order. It is not mapped; each
/// TRANSFER_TO_HOST_2D reads it through the guest memory passed to the
/// `process_*` call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Backing {
    entries: Vec<BackingEntry>,
    len: u64,
}

impl Backing {
    /// The ranges, in backing order; zero-length guest entries are dropped and
    /// physically contiguous neighbours merged.
    pub fn entries(&self) -> &[BackingEntry] {
        &self.entries
    }

    /// Total length, bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the backing has no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `dst.len()` bytes starting at backing offset `offset` out of
    /// guest memory, gathering across entries.
    fn read<M: GuestMemory>(&self, mem: &M, offset: u64, dst: &mut [u8]) -> Result<(), GuestError> {
        let end = offset.checked_add(dst.len() as u64).ok_or(GuestError::BackingTooSmall)?;
        if end > self.len {
            return Err(GuestError::BackingTooSmall);
        }
        let mut idx =
            self.entries.partition_point(|e| e.offset <= offset).checked_sub(1).ok_or(GuestError::BackingTooSmall)?;
        let mut pos = offset;
        let mut rest = dst;
        while !rest.is_empty() {
            let entry = self.entries.get(idx).ok_or(GuestError::BackingTooSmall)?;
            idx = idx.saturating_add(1);
            let within = pos.checked_sub(entry.offset).ok_or(GuestError::BackingTooSmall)?;
            let avail = entry.len.saturating_sub(within);
            let n = usize::try_from(avail.min(rest.len() as u64)).map_err(|_| GuestError::BackingTooSmall)?;
            if n == 0 {
                continue;
            }
            let (head, tail) = rest.split_at_mut(n);
            let addr = GuestAddress(entry.addr).checked_add(within).ok_or(GuestError::GuestMemoryRead)?;
            mem.read_slice(head, addr).map_err(|_| GuestError::GuestMemoryRead)?;
            rest = tail;
            pos += n as u64;
        }
        Ok(())
    }
}

/// The host copy of a 2D resource (RESOURCE_CREATE_2D).
///
/// `data` is `height` rows of `stride()` = `width * 4` bytes, tightly packed,
/// in the resource's `format` (bytes exactly as the guest wrote them).
#[derive(Clone, PartialEq, Eq)]
pub struct Resource {
    /// Width, pixels (1..=16384).
    pub width: u32,
    /// Height, pixels (1..=16384).
    pub height: u32,
    /// Pixel format.
    pub format: Format,
    /// Pixels: `height * stride()` bytes, zero-initialised at creation.
    pub data: Vec<u8>,
    /// Guest backing, if attached.
    pub backing: Option<Backing>,
    /// A virgl (3D) resource: its pixels live in a GL texture of virglrenderer,
    /// `data` is empty and [`Gpu::virgl_texture`] gives the texture.
    pub is_3d: bool,
    /// Bytes charged for a 3D resource's GL storage (0 for 2D resources).
    pub charge_3d: u64,
}

impl Resource {
    /// Bytes per row of `data`: `width * 4`.
    pub fn stride(&self) -> u32 {
        self.width.saturating_mul(self.format.bytes_per_pixel())
    }

    /// Bytes charged against [`GpuConfig::max_host_memory`] for this
    /// resource: `data.len()` + [`RESOURCE_OVERHEAD_BYTES`] +
    /// [`BACKING_ENTRY_BYTES`] per stored backing entry.
    pub fn host_memory(&self) -> u64 {
        let entries = self.backing.as_ref().map_or(0, |b| b.entries.len() as u64);
        let storage =
            if self.is_3d { self.charge_3d } else { (self.data.len() as u64).saturating_add(RESOURCE_OVERHEAD_BYTES) };
        storage.saturating_add(entries.saturating_mul(BACKING_ENTRY_BYTES))
    }

    /// Row `y` of `data` (`stride()` bytes), `None` if out of range.
    pub fn row(&self, y: u32) -> Option<&[u8]> {
        let stride = self.stride() as usize;
        let start = (y as usize).checked_mul(stride)?;
        self.data.get(start..start.checked_add(stride)?)
    }

    /// Copies `rect` (which must be non-empty and inside the resource) out as
    /// RGBA8 (bytes R, G, B, A; `rect.width * 4` bytes per row, rows top to
    /// bottom). `None` if the rect is invalid or memory cannot be allocated.
    pub fn read_rgba8(&self, rect: Rect) -> Option<Vec<u8>> {
        self.read_rgba8_as(rect, self.format)
    }

    /// [`Resource::read_rgba8`], reading the bytes as `format` instead of the resource's own
    /// (same size per pixel): e.g. a cursor's B8G8R8X8 bytes as B8G8R8A8.
    pub fn read_rgba8_as(&self, rect: Rect, format: Format) -> Option<Vec<u8>> {
        if rect.is_empty() || !rect.fits_in(self.width, self.height) {
            return None;
        }
        let row_bytes = (rect.width as usize).checked_mul(BPP as usize)?;
        let total = row_bytes.checked_mul(rect.height as usize)?;
        let mut out = Vec::new();
        out.try_reserve_exact(total).ok()?;
        out.resize(total, 0);
        let x0 = (rect.x as usize).checked_mul(BPP as usize)?;
        for (i, dst) in out.chunks_exact_mut(row_bytes).enumerate() {
            let row = self.row(rect.y.checked_add(u32::try_from(i).ok()?)?)?;
            let src = row.get(x0..x0.checked_add(row_bytes)?)?;
            format.to_rgba8(src, dst);
        }
        Some(out)
    }
}

/// Debug output elides the pixels (`data` shows its length only).
impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resource")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("format", &self.format)
            .field("data_len", &self.data.len())
            .field("backing", &self.backing)
            .finish()
    }
}

/// A cursor image, converted to RGBA8 when UPDATE_CURSOR was executed.
#[derive(Clone, PartialEq, Eq)]
pub struct CursorImage {
    /// Width, pixels (1..=64).
    pub width: u32,
    /// Height, pixels (1..=64).
    pub height: u32,
    /// Hot spot, pixels from the left edge (clamped to `width - 1`).
    pub hot_x: u32,
    /// Hot spot, pixels from the top edge (clamped to `height - 1`).
    pub hot_y: u32,
    /// `width * height * 4` bytes, rows top to bottom, bytes R, G, B, A.
    pub rgba: Vec<u8>,
}

/// Debug output elides the pixels (`rgba` shows its length only).
impl std::fmt::Debug for CursorImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CursorImage")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("hot_x", &self.hot_x)
            .field("hot_y", &self.hot_y)
            .field("rgba_len", &self.rgba.len())
            .finish()
    }
}

/// State of one scanout (display output).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scanout {
    /// Resource shown, 0 = disabled.
    pub resource_id: u32,
    /// Source rectangle within the resource, pixels (`Rect::default()` when disabled).
    pub rect: Rect,
    /// Width of the display mode offered to the guest, pixels.
    pub width: u32,
    /// Height of the display mode offered to the guest, pixels.
    pub height: u32,
    /// Number of RESOURCE_FLUSHes of the shown resource (those whose rect,
    /// clipped to the resource, is non-empty, i.e. that emitted
    /// [`GpuEvent::ResourceFlush`]) since SET_SCANOUT (wrapping; reset by
    /// SET_SCANOUT, by destroying the resource and by [`Gpu::reset`]).
    pub flush_count: u64,
    /// Current cursor image, `None` when hidden.
    pub cursor: Option<CursorImage>,
    /// Cursor position in scanout coordinates, pixels (the hot spot's position).
    pub cursor_pos: (i32, i32),
}

impl Scanout {
    fn new(width: u32, height: u32) -> Scanout {
        Scanout {
            resource_id: 0,
            rect: Rect::default(),
            width,
            height,
            flush_count: 0,
            cursor: None,
            cursor_pos: (0, 0),
        }
    }
}

/// What the compositor has to do, in command order. See [`Gpu::drain_events`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GpuEvent {
    /// SET_SCANOUT: `scanout_id` now shows `rect` of `resource_id` (0 = scanout
    /// disabled, then `rect` is `Rect::default()`). Also emitted with 0 when
    /// the shown resource is destroyed or on reset.
    ScanoutSet {
        /// Scanout index.
        scanout_id: u32,
        /// Resource shown, 0 = disabled.
        resource_id: u32,
        /// Source rectangle in the resource, pixels.
        rect: Rect,
    },
    /// RESOURCE_FLUSH: `rect` (resource coordinates, already clipped to the
    /// resource, non-empty) of `resource_id` is to be shown; emitted once per
    /// flush (the consumer finds the scanouts showing it).
    ResourceFlush {
        /// Flushed resource.
        resource_id: u32,
        /// Damaged area, pixels.
        rect: Rect,
    },
    /// A resource was destroyed (RESOURCE_UNREF or reset).
    ResourceDestroyed {
        /// Destroyed resource.
        resource_id: u32,
    },
    /// UPDATE_CURSOR: new image (None = hide), copied out of the cursor
    /// resource at update time, with hot spot and position.
    CursorUpdate {
        /// Scanout index.
        scanout_id: u32,
        /// New image, `None` hides the cursor.
        image: Option<CursorImage>,
        /// Position, pixels.
        x: i32,
        /// Position, pixels.
        y: i32,
    },
    /// MOVE_CURSOR.
    CursorMove {
        /// Scanout index.
        scanout_id: u32,
        /// Position, pixels.
        x: i32,
        /// Position, pixels.
        y: i32,
    },
}

/// Guest errors, each mapped to a response code; used for rate-limited logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[repr(u8)]
enum GuestError {
    #[error("request shorter than the control header")]
    ShortHeader,
    #[error("request shorter than its command struct")]
    ShortRequest,
    #[error("unsupported command")]
    UnsupportedCommand,
    #[error("command sent on the wrong queue")]
    WrongQueue,
    #[error("resource id 0")]
    ZeroResourceId,
    #[error("resource id already in use")]
    DuplicateResourceId,
    #[error("unknown resource id")]
    UnknownResource,
    #[error("unknown pixel format")]
    UnknownFormat,
    #[error("resource width/height zero or too large")]
    InvalidSize,
    #[error("host memory limit exceeded")]
    HostMemoryLimit,
    #[error("host allocation failed")]
    AllocationFailed,
    #[error("nr_entries out of range")]
    BadEntryCount,
    #[error("backing entry outside guest memory")]
    BackingOutsideMemory,
    #[error("resource already has backing")]
    BackingAlreadyAttached,
    #[error("resource has no backing")]
    NoBacking,
    #[error("rectangle outside the resource")]
    RectOutOfBounds,
    #[error("empty rectangle")]
    EmptyRect,
    #[error("transfer reads past the end of the backing")]
    BackingTooSmall,
    #[error("reading guest memory failed")]
    GuestMemoryRead,
    #[error("invalid scanout id")]
    InvalidScanoutId,
    #[error("cursor image larger than 64x64")]
    CursorTooLarge,
    #[error("unreadable descriptor chain")]
    MalformedChain,
    #[error("writable part of the chain too small for the response")]
    ResponseTooSmall,
    #[error("writing the response to guest memory failed")]
    ResponseWrite,
    #[error("adding the chain to the used ring failed")]
    UsedRing,
    #[error("unknown or duplicate 3D context id")]
    InvalidContext,
    #[error("invalid 3D command arguments or command stream")]
    Invalid3d,
    #[error("virglrenderer refused the command")]
    Renderer3d,
}

impl From<Error3d> for GuestError {
    fn from(e: Error3d) -> Self {
        match e {
            Error3d::Resource => GuestError::UnknownResource,
            Error3d::Context => GuestError::InvalidContext,
            Error3d::Parameter => GuestError::Invalid3d,
            Error3d::Renderer => GuestError::Renderer3d,
        }
    }
}

impl GuestError {
    /// The `VIRTIO_GPU_RESP_ERR_*` answered for this error.
    fn response(self) -> u32 {
        use GuestError::*;
        match self {
            ShortHeader
            | UnsupportedCommand
            | WrongQueue
            | MalformedChain
            | ResponseTooSmall
            | ResponseWrite
            | UsedRing
            | BackingAlreadyAttached
            | NoBacking
            | GuestMemoryRead
            | Renderer3d => VIRTIO_GPU_RESP_ERR_UNSPEC,
            InvalidContext => VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID,
            ZeroResourceId | DuplicateResourceId | UnknownResource => VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID,
            HostMemoryLimit | AllocationFailed => VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY,
            InvalidScanoutId => VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID,
            ShortRequest | UnknownFormat | InvalidSize | BadEntryCount | BackingOutsideMemory | RectOutOfBounds
            | EmptyRect | BackingTooSmall | CursorTooLarge | Invalid3d => VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER,
        }
    }
}

/// A successful command's response payload.
enum Reply {
    NoData,
    DisplayInfo(Box<RespDisplayInfo>),
    Edid(Box<RespEdid>),
    CapsetInfo(RespCapsetInfo),
    /// RESP_OK_CAPSET header followed by these capset bytes.
    Capset(Vec<u8>),
}

/// A fenced command's response, held until virglrenderer retires its fence.
#[derive(Debug)]
struct PendingReply {
    head: u16,
    writable: Vec<(GuestAddress, u32)>,
    response: Vec<u8>,
    fence: HostFence,
}

/// Builds the response bytes: `body` with its header's type set to `ty` and
/// the fence fields of `req` echoed (5.7.6.7).
fn response_bytes<T: ByteValued>(
    mut body: T,
    hdr_of: impl FnOnce(&mut T) -> &mut CtrlHdr,
    ty: u32,
    req: Option<&CtrlHdr>,
) -> Vec<u8> {
    let hdr = hdr_of(&mut body);
    *hdr = CtrlHdr { type_: ty.into(), ..CtrlHdr::default() };
    if let Some(req) = req {
        let flags = req.flags.to_native();
        if flags & VIRTIO_GPU_FLAG_FENCE != 0 {
            let mut out_flags = VIRTIO_GPU_FLAG_FENCE;
            hdr.fence_id = req.fence_id;
            hdr.ctx_id = req.ctx_id;
            if flags & VIRTIO_GPU_FLAG_INFO_RING_IDX != 0 {
                out_flags |= VIRTIO_GPU_FLAG_INFO_RING_IDX;
                hdr.ring_idx = req.ring_idx;
            }
            hdr.flags = out_flags.into();
        }
    }
    body.as_slice().to_vec()
}

/// The virtio-gpu device model of one guest. See the module docs.
#[derive(Debug)]
pub struct Gpu {
    config: GpuConfig,
    resources: BTreeMap<u32, Resource>,
    scanouts: Vec<Scanout>,
    events: Vec<GpuEvent>,
    host_memory_used: u64,
    /// Bit `GuestError as u8` set once that error kind was warned about.
    warned: u64,
    /// 3D (virgl) state; `None` for a 2D-only device.
    virgl: Option<Virgl3d>,
    /// Fence created by the command being handled: its response is deferred.
    deferred: Option<HostFence>,
    /// Deferred responses, in submission order.
    pending: VecDeque<PendingReply>,
}

impl Gpu {
    /// Creates the device. `num_scanouts` is clamped to 1..=16 and each side
    /// of `preferred_size` to 1..=[`MAX_RESOURCE_DIMENSION`] (with a warning).
    pub fn new(mut config: GpuConfig) -> Self {
        let n = config.num_scanouts.clamp(1, VIRTIO_GPU_MAX_SCANOUTS);
        let (w, h) = config.preferred_size;
        let size = (w.clamp(1, MAX_RESOURCE_DIMENSION), h.clamp(1, MAX_RESOURCE_DIMENSION));
        if n != config.num_scanouts || size != config.preferred_size {
            warn!(
                guest = %config.name,
                "virtio-gpu config clamped: {} scanouts -> {n}, {w}x{h} -> {}x{}",
                config.num_scanouts, size.0, size.1
            );
        }
        config.num_scanouts = n;
        config.preferred_size = size;
        let scanouts = (0..n).map(|_| Scanout::new(size.0, size.1)).collect();
        Gpu {
            config,
            resources: BTreeMap::new(),
            scanouts,
            events: Vec::new(),
            host_memory_used: 0,
            warned: 0,
            virgl: None,
            deferred: None,
            pending: VecDeque::new(),
        }
    }

    /// The configuration in effect (after clamping).
    pub fn config(&self) -> &GpuConfig {
        &self.config
    }

    /// Virtio feature bits (a mask over the device-specific bits 0..24) this
    /// model implements: `1 << VIRTIO_GPU_F_EDID` only. Transport bits
    /// (`VIRTIO_F_VERSION_1`, ring features, ...) are the caller's business.
    pub fn device_features(&self) -> u64 {
        let mut features = 1 << VIRTIO_GPU_F_EDID;
        if self.virgl.is_some() {
            features |= (1 << VIRTIO_GPU_F_VIRGL) | (1 << VIRTIO_GPU_F_CONTEXT_INIT);
        }
        features
    }

    /// Turn on 3D: offer `VIRTIO_GPU_F_VIRGL` and `VIRTIO_GPU_F_CONTEXT_INIT`
    /// and execute the 3D commands through `virgl`. Call before a driver
    /// negotiates features.
    pub fn enable_3d(&mut self, virgl: Virgl3d) {
        self.virgl = Some(virgl);
    }

    /// Offer no 3D from now on (for a device with no VMM attached: its 3D resources and
    /// contexts, if any, go with the virgl state).
    pub fn disable_3d(&mut self) {
        self.virgl = None;
    }

    /// Whether 3D is on.
    pub fn has_3d(&self) -> bool {
        self.virgl.is_some()
    }

    /// The GL texture of 3D resource `resource_id` (zero-copy scanout).
    pub fn virgl_texture(&self, resource_id: u32) -> Option<ResourceInfo> {
        self.virgl.as_ref()?.resource_info(resource_id)
    }

    /// Number of fenced responses waiting for virglrenderer.
    pub fn pending_fences(&self) -> usize {
        self.pending.len()
    }

    /// Answer every deferred response whose fence is among `retired` (in
    /// submission order, which is fence order per ring) and add it to the
    /// used ring of the control queue. Returns whether anything was added.
    pub fn retire_fences<M: GuestMemory>(&mut self, retired: &[Fence], queue: &mut Queue, mem: &M) -> bool {
        let mut added = false;
        let mut still = VecDeque::with_capacity(self.pending.len());
        while let Some(p) = self.pending.pop_front() {
            if retired.iter().any(|f| p.fence.retired_by(f)) {
                let len = self.write_response(QueueKind::Control, mem, &p.writable, &p.response);
                match queue.add_used(mem, p.head, len) {
                    Ok(()) => added = true,
                    Err(_) => self.guest_error(0, GuestError::UsedRing),
                }
            } else {
                still.push_back(p);
            }
        }
        self.pending = still;
        added
    }

    /// The device configuration space (5.7.4) with `num_scanouts` filled in
    /// and `events_read`, `events_clear`, `num_capsets` zero; the caller owns
    /// `events_read`/`events_clear` (set `VIRTIO_GPU_EVENT_DISPLAY` after
    /// [`Gpu::set_display_size`]).
    pub fn config_space(&self) -> VirtioGpuConfig {
        VirtioGpuConfig {
            num_scanouts: self.num_scanouts().into(),
            num_capsets: self.virgl.as_ref().map_or(0, Virgl3d::num_capsets).into(),
            ..VirtioGpuConfig::default()
        }
    }

    /// Number of scanouts, 1..=16.
    pub fn num_scanouts(&self) -> u32 {
        self.scanouts.len() as u32
    }

    /// Scanout `scanout_id`, `None` if out of range.
    pub fn scanout(&self, scanout_id: u32) -> Option<&Scanout> {
        self.scanouts.get(scanout_id as usize)
    }

    /// The host copy of resource `resource_id`, if it exists.
    pub fn resource(&self, resource_id: u32) -> Option<&Resource> {
        self.resources.get(&resource_id)
    }

    /// All resources, by increasing id.
    pub fn resources(&self) -> impl Iterator<Item = (u32, &Resource)> + '_ {
        self.resources.iter().map(|(id, r)| (*id, r))
    }

    /// Sum of [`Resource::host_memory`] over all resources, bytes; never above
    /// [`GpuConfig::max_host_memory`].
    pub fn host_memory_used(&self) -> u64 {
        self.host_memory_used
    }

    /// Changes the display mode offered for `scanout_id` by later
    /// GET_DISPLAY_INFO / GET_EDID (e.g. after a window resize); sides are
    /// clamped to 1..=16384. Returns false if the scanout does not exist. The
    /// caller should then raise `VIRTIO_GPU_EVENT_DISPLAY` in the config space
    /// and send a configuration change notification.
    pub fn set_display_size(&mut self, scanout_id: u32, width: u32, height: u32) -> bool {
        match self.scanouts.get_mut(scanout_id as usize) {
            Some(s) => {
                s.width = width.clamp(1, MAX_RESOURCE_DIMENSION);
                s.height = height.clamp(1, MAX_RESOURCE_DIMENSION);
                true
            }
            None => false,
        }
    }

    /// Events since the last drain, in command order.
    ///
    /// Cursor events are coalesced: while undrained, a new cursor event for a
    /// scanout replaces (or, for a move after an update, updates the position
    /// of) the pending cursor event of that scanout in the trailing run of
    /// cursor events, so a cursor-queue flood cannot grow this list. Drain
    /// after every `process_*` call.
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, GpuEvent> {
        self.events.drain(..)
    }

    /// Device reset / guest disconnect: disables every scanout (emitting
    /// `ScanoutSet` with 0), hides every visible cursor (`CursorUpdate` with
    /// `None`), and destroys every resource (`ResourceDestroyed`, by
    /// increasing id). Display modes are kept.
    pub fn reset(&mut self) {
        if let Some(v) = self.virgl.as_mut() {
            v.reset();
        }
        self.pending.clear();
        self.deferred = None;
        for (i, s) in self.scanouts.iter_mut().enumerate() {
            let scanout_id = i as u32;
            if s.resource_id != 0 {
                s.resource_id = 0;
                s.rect = Rect::default();
                self.events.push(GpuEvent::ScanoutSet { scanout_id, resource_id: 0, rect: Rect::default() });
            }
            s.flush_count = 0;
            if s.cursor.take().is_some() {
                self.events.push(GpuEvent::CursorUpdate {
                    scanout_id,
                    image: None,
                    x: s.cursor_pos.0,
                    y: s.cursor_pos.1,
                });
            }
            s.cursor_pos = (0, 0);
        }
        let resources = std::mem::take(&mut self.resources);
        for resource_id in resources.into_keys() {
            self.events.push(GpuEvent::ResourceDestroyed { resource_id });
        }
        self.host_memory_used = 0;
    }

    /// Pops every available chain of the control queue (at most
    /// `queue.size()` per call), executes it, writes the response and adds the
    /// chain to the used ring with the number of bytes written. Returns
    /// whether anything was added to the used ring. Does not notify the
    /// guest: see the module docs for the caller's part.
    pub fn process_ctrl_queue<M: GuestMemory>(&mut self, queue: &mut Queue, mem: &M) -> bool {
        self.process_queue(QueueKind::Control, queue, mem)
    }

    /// Same as [`Gpu::process_ctrl_queue`] for the cursor queue (UPDATE_CURSOR,
    /// MOVE_CURSOR). The driver normally supplies no writable buffer there; a
    /// response header is written only if it does.
    pub fn process_cursor_queue<M: GuestMemory>(&mut self, queue: &mut Queue, mem: &M) -> bool {
        self.process_queue(QueueKind::Cursor, queue, mem)
    }

    fn process_queue<M: GuestMemory>(&mut self, kind: QueueKind, queue: &mut Queue, mem: &M) -> bool {
        let mut added = false;
        for _ in 0..queue.size() {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            let Some(used_len) = self.process_chain(kind, head, chain, mem) else {
                continue;
            };
            match queue.add_used(mem, head, used_len) {
                Ok(()) => added = true,
                Err(_) => self.guest_error(0, GuestError::UsedRing),
            }
        }
        added
    }

    /// Executes one chain; returns the number of bytes written to its
    /// writable part, or `None` when the response waits for a fence.
    fn process_chain<M: GuestMemory>(
        &mut self,
        kind: QueueKind,
        head: u16,
        chain: DescriptorChain<&M>,
        mem: &M,
    ) -> Option<u32> {
        let mut readable: Vec<(GuestAddress, u32)> = Vec::new();
        let mut writable: Vec<(GuestAddress, u32)> = Vec::new();
        // The iterator is bounded by the queue size / indirect table length.
        for desc in chain {
            if desc.is_write_only() {
                writable.push((desc.addr(), desc.len()));
            } else {
                readable.push((desc.addr(), desc.len()));
            }
        }

        let response = match gather(mem, &readable) {
            Some(request) => self.handle_request(kind, &request, mem),
            None => {
                self.guest_error(0, GuestError::MalformedChain);
                response_bytes(CtrlHdr::default(), |h| h, VIRTIO_GPU_RESP_ERR_UNSPEC, None)
            }
        };

        if let Some(fence) = self.deferred.take() {
            self.pending.push_back(PendingReply { head, writable, response, fence });
            return None;
        }
        Some(self.write_response(kind, mem, &writable, &response))
    }

    /// Writes `response` over the `writable` descriptors, whole or not at all;
    /// returns the number of bytes written.
    fn write_response<M: GuestMemory>(
        &mut self,
        kind: QueueKind,
        mem: &M,
        writable: &[(GuestAddress, u32)],
        response: &[u8],
    ) -> u32 {
        let capacity: u64 = writable.iter().map(|(_, len)| u64::from(*len)).sum();
        if capacity < response.len() as u64 {
            // The driver gives the cursor queue no response buffer: not an error.
            if kind == QueueKind::Control {
                self.guest_error(0, GuestError::ResponseTooSmall);
            }
            return 0;
        }
        // Split the response over the writable descriptors and check every
        // piece first, so a response is either written whole or not at all.
        let mut pieces: Vec<(GuestAddress, &[u8])> = Vec::new();
        let mut rest: &[u8] = response;
        for &(addr, len) in writable {
            if rest.is_empty() {
                break;
            }
            let (head, tail) = rest.split_at(rest.len().min(len as usize));
            pieces.push((addr, head));
            rest = tail;
        }
        if !pieces.iter().all(|(addr, piece)| mem.check_range(*addr, piece.len(), Permissions::Write)) {
            self.guest_error(0, GuestError::ResponseWrite);
            return 0;
        }
        let mut written = 0u32;
        for (addr, piece) in pieces {
            if mem.write_slice(piece, addr).is_err() {
                self.guest_error(0, GuestError::ResponseWrite);
                break;
            }
            written = written.saturating_add(piece.len() as u32);
        }
        written
    }

    /// Executes ONE request given its bytes (the readable part of a chain:
    /// control header followed by the command struct and, for
    /// ATTACH_BACKING, the memory entries) and returns the response bytes
    /// (control header, or a larger struct such as [`RespDisplayInfo`]; never
    /// empty). `mem` is the guest memory that backing addresses refer to.
    /// This is what `process_*` call per chain; exposed for tests and fuzzing.
    pub fn handle_request<M: GuestMemory>(&mut self, kind: QueueKind, request: &[u8], mem: &M) -> Vec<u8> {
        let Some(hdr) = read_struct::<CtrlHdr>(request) else {
            self.guest_error(0, GuestError::ShortHeader);
            return response_bytes(CtrlHdr::default(), |h| h, VIRTIO_GPU_RESP_ERR_UNSPEC, None);
        };
        let ty = hdr.type_.to_native();
        debug!(
            guest = %self.config.name,
            queue = ?kind,
            cmd = ctrl_type_name(ty),
            flags = hdr.flags.to_native(),
            fence_id = hdr.fence_id.to_native(),
            len = request.len(),
            "virtio-gpu command"
        );
        let result = match (kind, ty) {
            (QueueKind::Control, VIRTIO_GPU_CMD_GET_DISPLAY_INFO) => self.get_display_info(),
            (QueueKind::Control, VIRTIO_GPU_CMD_GET_EDID) => self.get_edid(request),
            (QueueKind::Control, VIRTIO_GPU_CMD_RESOURCE_CREATE_2D) => self.resource_create_2d(request),
            (QueueKind::Control, VIRTIO_GPU_CMD_RESOURCE_UNREF) => self.resource_unref(request),
            (QueueKind::Control, VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING) => self.resource_attach_backing(request, mem),
            (QueueKind::Control, VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING) => self.resource_detach_backing(request),
            (QueueKind::Control, VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D) => self.transfer_to_host_2d(request, mem),
            (QueueKind::Control, VIRTIO_GPU_CMD_SET_SCANOUT) => self.set_scanout(request),
            (QueueKind::Control, VIRTIO_GPU_CMD_RESOURCE_FLUSH) => self.resource_flush(request),
            (QueueKind::Control, VIRTIO_GPU_CMD_GET_CAPSET_INFO) => self.get_capset_info(request),
            (QueueKind::Control, VIRTIO_GPU_CMD_GET_CAPSET) => self.get_capset(request),
            (QueueKind::Control, VIRTIO_GPU_CMD_CTX_CREATE) => self.ctx_create(request),
            (QueueKind::Control, VIRTIO_GPU_CMD_CTX_DESTROY) => self
                .virgl_mut()
                .and_then(|v| v.context_destroy(hdr.ctx_id.to_native()).map_err(Into::into))
                .map(|()| Reply::NoData),
            (QueueKind::Control, VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE | VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE) => {
                self.ctx_attach_resource(request, ty == VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE)
            }
            (QueueKind::Control, VIRTIO_GPU_CMD_RESOURCE_CREATE_3D) => self.resource_create_3d(request),
            (QueueKind::Control, VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D | VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D) => {
                self.transfer_3d(request, ty == VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D)
            }
            (QueueKind::Control, VIRTIO_GPU_CMD_SUBMIT_3D) => self.submit_3d(request),
            (QueueKind::Cursor, VIRTIO_GPU_CMD_UPDATE_CURSOR | VIRTIO_GPU_CMD_MOVE_CURSOR) => {
                self.update_cursor(request, ty == VIRTIO_GPU_CMD_MOVE_CURSOR)
            }
            (QueueKind::Control, VIRTIO_GPU_CMD_UPDATE_CURSOR | VIRTIO_GPU_CMD_MOVE_CURSOR)
            | (
                QueueKind::Cursor,
                VIRTIO_GPU_CMD_GET_DISPLAY_INFO..=VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING | VIRTIO_GPU_CMD_GET_EDID,
            ) => Err(GuestError::WrongQueue),
            _ => Err(GuestError::UnsupportedCommand),
        };
        let req = Some(&hdr);
        if result.is_ok() {
            self.fence_3d(&hdr);
        }
        match result {
            Ok(Reply::NoData) => response_bytes(CtrlHdr::default(), |h| h, VIRTIO_GPU_RESP_OK_NODATA, req),
            Ok(Reply::DisplayInfo(info)) => response_bytes(*info, |b| &mut b.hdr, VIRTIO_GPU_RESP_OK_DISPLAY_INFO, req),
            Ok(Reply::Edid(e)) => response_bytes(*e, |b| &mut b.hdr, VIRTIO_GPU_RESP_OK_EDID, req),
            Ok(Reply::CapsetInfo(info)) => response_bytes(info, |b| &mut b.hdr, VIRTIO_GPU_RESP_OK_CAPSET_INFO, req),
            Ok(Reply::Capset(caps)) => {
                let mut bytes = response_bytes(RespCapset::default(), |b| &mut b.hdr, VIRTIO_GPU_RESP_OK_CAPSET, req);
                bytes.extend_from_slice(&caps);
                bytes
            }
            Err(err) => {
                self.guest_error(ty, err);
                response_bytes(CtrlHdr::default(), |h| h, err.response(), req)
            }
        }
    }

    fn virgl_mut(&mut self) -> Result<&mut Virgl3d, GuestError> {
        self.virgl.as_mut().ok_or(GuestError::UnsupportedCommand)
    }

    /// With 3D on, a fenced command's response waits for a virglrenderer
    /// fence created now, after the command (5.7.6.7: the fence completes when
    /// the command and everything before it on its ring is done). 2D-only
    /// devices answer fenced commands at once: their work is already done.
    fn fence_3d(&mut self, hdr: &CtrlHdr) {
        let flags = hdr.flags.to_native();
        if flags & VIRTIO_GPU_FLAG_FENCE == 0 {
            return;
        }
        let Some(virgl) = self.virgl.as_ref() else { return };
        let ring = (flags & VIRTIO_GPU_FLAG_INFO_RING_IDX != 0).then(|| u32::from(hdr.ring_idx));
        match virgl.create_fence(hdr.ctx_id.to_native(), ring) {
            Ok(fence) => self.deferred = Some(fence),
            Err(e) => self.guest_error(hdr.type_.to_native(), e.into()),
        }
    }

    fn get_capset_info(&mut self, request: &[u8]) -> Result<Reply, GuestError> {
        let cmd: GetCapsetInfo = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let virgl = self.virgl.as_ref().ok_or(GuestError::UnsupportedCommand)?;
        let (id, version, size) = virgl.capset_info(cmd.capset_index.to_native()).ok_or(GuestError::Invalid3d)?;
        Ok(Reply::CapsetInfo(RespCapsetInfo {
            capset_id: id.into(),
            capset_max_version: version.into(),
            capset_max_size: size.into(),
            ..RespCapsetInfo::default()
        }))
    }

    fn get_capset(&mut self, request: &[u8]) -> Result<Reply, GuestError> {
        let cmd: GetCapset = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let virgl = self.virgl.as_ref().ok_or(GuestError::UnsupportedCommand)?;
        let caps =
            virgl.capset(cmd.capset_id.to_native(), cmd.capset_version.to_native()).ok_or(GuestError::Invalid3d)?;
        Ok(Reply::Capset(caps))
    }

    fn ctx_create(&mut self, request: &[u8]) -> Result<Reply, GuestError> {
        let cmd: CtxCreate = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let nlen = (cmd.nlen.to_native() as usize).min(cmd.debug_name.len());
        let name = String::from_utf8_lossy(cmd.debug_name.get(..nlen).unwrap_or_default()).into_owned();
        // context_init: the capset id in the low 8 bits (VIRTIO_GPU_CONTEXT_INIT_CAPSET_ID_MASK).
        let capset = cmd.context_init.to_native() & 0xff;
        debug!(ctx = cmd.hdr.ctx_id.to_native(), capset, name, "CTX_CREATE");
        self.virgl_mut()?.context_create(cmd.hdr.ctx_id.to_native(), capset, &name)?;
        Ok(Reply::NoData)
    }

    fn ctx_attach_resource(&mut self, request: &[u8], attach: bool) -> Result<Reply, GuestError> {
        let cmd: CtxResource = read_struct(request).ok_or(GuestError::ShortRequest)?;
        if self.virgl.is_none() {
            return Err(GuestError::UnsupportedCommand);
        }
        let id = cmd.resource_id.to_native();
        let res = self.resources.get(&id).ok_or(GuestError::UnknownResource)?;
        if !res.is_3d {
            // A 2D resource lives in scanway's memory, not virglrenderer's: nothing to attach.
            return Ok(Reply::NoData);
        }
        self.virgl_mut()?.context_attach(cmd.hdr.ctx_id.to_native(), id, attach)?;
        Ok(Reply::NoData)
    }

    fn resource_create_3d(&mut self, request: &[u8]) -> Result<Reply, GuestError> {
        let cmd: ResourceCreate3d = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let id = cmd.resource_id.to_native();
        let (width, height) = (cmd.width.to_native(), cmd.height.to_native());
        let (depth, array_size) = (cmd.depth.to_native(), cmd.array_size.to_native());
        debug!(id, width, height, depth, format = cmd.format.to_native(), "RESOURCE_CREATE_3D");
        if self.virgl.is_none() {
            return Err(GuestError::UnsupportedCommand);
        }
        if id == 0 {
            return Err(GuestError::ZeroResourceId);
        }
        if self.resources.contains_key(&id) {
            return Err(GuestError::DuplicateResourceId);
        }
        // A buffer (PIPE_BUFFER) is `width` bytes long; textures are at most 16384 texels a side.
        let is_buffer = cmd.target.to_native() == PIPE_BUFFER;
        let max_width = if is_buffer { MAX_BUFFER_BYTES } else { MAX_RESOURCE_DIMENSION };
        if width > max_width || height > MAX_RESOURCE_DIMENSION || depth > MAX_RESOURCE_DIMENSION {
            return Err(GuestError::InvalidSize);
        }
        // GL memory is charged as its bytes (buffers) or 4 bytes per texel of the base level
        // (textures; an estimate: mipmaps and multisampling vary), so a guest cannot allocate
        // without bound.
        let texel_bytes = if is_buffer { 1 } else { BPP };
        let charge = u64::from(width.max(1))
            .saturating_mul(u64::from(height.max(1)))
            .saturating_mul(u64::from(depth.max(1)))
            .saturating_mul(u64::from(array_size.max(1)))
            .saturating_mul(texel_bytes)
            .saturating_add(RESOURCE_OVERHEAD_BYTES);
        self.charge(charge)?;
        let args = VirglCreate3d {
            handle: 0,
            target: cmd.target.to_native(),
            format: cmd.format.to_native(),
            bind: cmd.bind.to_native(),
            width,
            height,
            depth,
            array_size,
            last_level: cmd.last_level.to_native(),
            nr_samples: cmd.nr_samples.to_native(),
            flags: cmd.flags.to_native(),
        };
        if let Err(e) = self.virgl_mut().and_then(|v| v.resource_create(id, args).map_err(Into::into)) {
            self.uncharge(charge);
            return Err(e);
        }
        let format = Format::from_virtio(args.format).unwrap_or(Format::B8G8R8A8);
        self.resources.insert(
            id,
            Resource { width, height, format, data: Vec::new(), backing: None, is_3d: true, charge_3d: charge },
        );
        Ok(Reply::NoData)
    }

    fn transfer_3d(&mut self, request: &[u8], to_host: bool) -> Result<Reply, GuestError> {
        let cmd: TransferHost3d = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let id = cmd.resource_id.to_native();
        let b = cmd.box_;
        let bbox = Box3d {
            x: b.x.to_native(),
            y: b.y.to_native(),
            z: b.z.to_native(),
            w: b.w.to_native(),
            h: b.h.to_native(),
            d: b.d.to_native(),
        };
        let virgl = self.virgl.as_ref().ok_or(GuestError::UnsupportedCommand)?;
        let res = self.resources.get(&id).ok_or(GuestError::UnknownResource)?;
        if !res.is_3d {
            return Err(GuestError::Invalid3d);
        }
        virgl.transfer(
            id,
            cmd.hdr.ctx_id.to_native(),
            cmd.level.to_native(),
            cmd.stride.to_native(),
            cmd.layer_stride.to_native(),
            bbox,
            cmd.offset.to_native(),
            to_host,
        )?;
        Ok(Reply::NoData)
    }

    fn submit_3d(&mut self, request: &[u8]) -> Result<Reply, GuestError> {
        let cmd: CmdSubmit = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let size = cmd.size.to_native() as usize;
        let start = size_of::<CmdSubmit>();
        if !size.is_multiple_of(4) || size > MAX_SUBMIT_BYTES {
            return Err(GuestError::Invalid3d);
        }
        let bytes = request.get(start..start.saturating_add(size)).ok_or(GuestError::ShortRequest)?;
        let mut dwords: Vec<u32> = Vec::new();
        dwords.try_reserve_exact(size / 4).map_err(|_| GuestError::AllocationFailed)?;
        dwords.extend(bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])));
        let virgl = self.virgl.as_ref().ok_or(GuestError::UnsupportedCommand)?;
        virgl.submit(cmd.hdr.ctx_id.to_native(), &mut dwords)?;
        Ok(Reply::NoData)
    }

    /// Logs a guest error: `warn!` the first time this kind is seen, `debug!` after.
    fn guest_error(&mut self, ty: u32, err: GuestError) {
        let bit = 1u64 << (err as u8);
        let cmd = ctrl_type_name(ty);
        if self.warned & bit == 0 {
            self.warned |= bit;
            warn!(
                guest = %self.config.name,
                cmd,
                "virtio-gpu guest error: {err} (further ones of this kind logged at debug level)"
            );
        } else {
            debug!(guest = %self.config.name, cmd, "virtio-gpu guest error: {err}");
        }
    }

    fn get_display_info(&mut self) -> Result<Reply, GuestError> {
        let mut info = Box::new(RespDisplayInfo::default());
        let mut x: u32 = 0;
        for (mode, s) in info.pmodes.iter_mut().zip(&self.scanouts) {
            mode.r = Rect::new(x, 0, s.width, s.height).into();
            mode.enabled = 1.into();
            x = x.saturating_add(s.width);
        }
        Ok(Reply::DisplayInfo(info))
    }

    fn get_edid(&mut self, request: &[u8]) -> Result<Reply, GuestError> {
        let cmd: GetEdid = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let s = self.scanouts.get(cmd.scanout.to_native() as usize).ok_or(GuestError::InvalidScanoutId)?;
        let blob = edid::generate(s.width, s.height, &self.config.name);
        let mut resp = Box::new(RespEdid::default());
        resp.edid.get_mut(..blob.len()).ok_or(GuestError::UnsupportedCommand)?.copy_from_slice(&blob);
        resp.size = Le32::from(blob.len() as u32);
        Ok(Reply::Edid(resp))
    }

    fn resource_create_2d(&mut self, request: &[u8]) -> Result<Reply, GuestError> {
        let cmd: ResourceCreate2d = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let id = cmd.resource_id.to_native();
        let (width, height) = (cmd.width.to_native(), cmd.height.to_native());
        debug!(id, width, height, format = cmd.format.to_native(), "RESOURCE_CREATE_2D");
        if id == 0 {
            return Err(GuestError::ZeroResourceId);
        }
        if self.resources.contains_key(&id) {
            return Err(GuestError::DuplicateResourceId);
        }
        let format = Format::from_virtio(cmd.format.to_native()).ok_or(GuestError::UnknownFormat)?;
        if !(1..=MAX_RESOURCE_DIMENSION).contains(&width) || !(1..=MAX_RESOURCE_DIMENSION).contains(&height) {
            return Err(GuestError::InvalidSize);
        }
        let size = u64::from(width)
            .checked_mul(u64::from(height))
            .and_then(|p| p.checked_mul(BPP))
            .ok_or(GuestError::InvalidSize)?;
        self.charge(size.saturating_add(RESOURCE_OVERHEAD_BYTES))?;
        let data = usize::try_from(size).ok().and_then(zeroed).ok_or(GuestError::AllocationFailed);
        let data = match data {
            Ok(d) => d,
            Err(e) => {
                self.uncharge(size.saturating_add(RESOURCE_OVERHEAD_BYTES));
                return Err(e);
            }
        };
        self.resources.insert(id, Resource { width, height, format, data, backing: None, is_3d: false, charge_3d: 0 });
        Ok(Reply::NoData)
    }

    /// Reserves `bytes` of the host memory budget.
    fn charge(&mut self, bytes: u64) -> Result<(), GuestError> {
        let total = self.host_memory_used.checked_add(bytes).ok_or(GuestError::HostMemoryLimit)?;
        if total > self.config.max_host_memory {
            return Err(GuestError::HostMemoryLimit);
        }
        self.host_memory_used = total;
        Ok(())
    }

    fn uncharge(&mut self, bytes: u64) {
        self.host_memory_used = self.host_memory_used.saturating_sub(bytes);
    }

    fn resource_unref(&mut self, request: &[u8]) -> Result<Reply, GuestError> {
        let cmd: ResourceUnref = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let id = cmd.resource_id.to_native();
        let resource = self.resources.remove(&id).ok_or(GuestError::UnknownResource)?;
        self.uncharge(resource.host_memory());
        if resource.is_3d
            && let Some(v) = self.virgl.as_mut()
            && let Err(e) = v.resource_unref(id)
        {
            warn!("virgl unref of resource {id}: {e:?}");
        }
        for (i, s) in self.scanouts.iter_mut().enumerate() {
            if s.resource_id == id {
                s.resource_id = 0;
                s.rect = Rect::default();
                s.flush_count = 0;
                self.events.push(GpuEvent::ScanoutSet { scanout_id: i as u32, resource_id: 0, rect: Rect::default() });
            }
        }
        self.events.push(GpuEvent::ResourceDestroyed { resource_id: id });
        Ok(Reply::NoData)
    }

    fn resource_attach_backing<M: GuestMemory>(&mut self, request: &[u8], mem: &M) -> Result<Reply, GuestError> {
        let cmd: ResourceAttachBacking = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let id = cmd.resource_id.to_native();
        let nr = cmd.nr_entries.to_native();
        debug!(id, nr_entries = nr, "RESOURCE_ATTACH_BACKING");
        let resource = self.resources.get(&id).ok_or(GuestError::UnknownResource)?;
        if resource.backing.is_some() {
            return Err(GuestError::BackingAlreadyAttached);
        }
        let is_3d = resource.is_3d;
        if !(1..=MAX_BACKING_ENTRIES).contains(&nr) {
            return Err(GuestError::BadEntryCount);
        }
        let start = size_of::<ResourceAttachBacking>();
        let end = (nr as usize)
            .checked_mul(size_of::<MemEntry>())
            .and_then(|n| n.checked_add(start))
            .ok_or(GuestError::ShortRequest)?;
        let raw = request.get(start..end).ok_or(GuestError::ShortRequest)?;

        let mut entries: Vec<BackingEntry> = Vec::new();
        entries.try_reserve_exact(nr as usize).map_err(|_| GuestError::AllocationFailed)?;
        let mut total: u64 = 0;
        for chunk in raw.chunks_exact(size_of::<MemEntry>()) {
            let e: MemEntry = read_struct(chunk).ok_or(GuestError::ShortRequest)?;
            let addr = e.addr.to_native();
            let len = e.length.to_native();
            if len == 0 {
                continue;
            }
            if addr.checked_add(u64::from(len)).is_none()
                || !mem.check_range(GuestAddress(addr), len as usize, Permissions::Read)
            {
                return Err(GuestError::BackingOutsideMemory);
            }
            match entries.last_mut() {
                Some(prev) if prev.addr.checked_add(prev.len) == Some(addr) => {
                    prev.len += u64::from(len);
                }
                _ => entries.push(BackingEntry { addr, len: u64::from(len), offset: total }),
            }
            total += u64::from(len);
        }
        entries.shrink_to_fit();
        self.charge((entries.len() as u64).saturating_mul(BACKING_ENTRY_BYTES))?;
        if is_3d
            && let Some(v) = self.virgl.as_mut()
            && let Err(e) = v.attach_backing(id, &entries, mem)
        {
            self.uncharge((entries.len() as u64).saturating_mul(BACKING_ENTRY_BYTES));
            return Err(e.into());
        }
        if let Some(resource) = self.resources.get_mut(&id) {
            resource.backing = Some(Backing { entries, len: total });
        }
        Ok(Reply::NoData)
    }

    fn resource_detach_backing(&mut self, request: &[u8]) -> Result<Reply, GuestError> {
        let cmd: ResourceDetachBacking = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let id = cmd.resource_id.to_native();
        let resource = self.resources.get_mut(&id).ok_or(GuestError::UnknownResource)?;
        let backing = resource.backing.take().ok_or(GuestError::NoBacking)?;
        if resource.is_3d
            && let Some(v) = self.virgl.as_mut()
        {
            v.detach_backing(id)?;
        }
        self.uncharge((backing.entries.len() as u64).saturating_mul(BACKING_ENTRY_BYTES));
        Ok(Reply::NoData)
    }

    /// TRANSFER_TO_HOST_2D, with QEMU's offset semantics
    /// (`hw/display/virtio-gpu.c`): row `h` of the rectangle (0-based) is read
    /// from backing offset `offset + stride * h` (the guest's `offset` already
    /// includes `r.y * stride + r.x * 4`) and written at
    /// `(r.y + h) * stride + r.x * 4` of the host copy; `stride = width * 4`.
    fn transfer_to_host_2d<M: GuestMemory>(&mut self, request: &[u8], mem: &M) -> Result<Reply, GuestError> {
        let cmd: TransferToHost2d = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let id = cmd.resource_id.to_native();
        let r = Rect::from(cmd.r);
        let offset = cmd.offset.to_native();
        debug!(id, ?r, offset, "TRANSFER_TO_HOST_2D");
        let resource = self.resources.get_mut(&id).ok_or(GuestError::UnknownResource)?;
        let backing = resource.backing.as_ref().ok_or(GuestError::NoBacking)?;
        if !r.fits_in(resource.width, resource.height) {
            return Err(GuestError::RectOutOfBounds);
        }
        if resource.is_3d {
            // A 2D transfer into a virgl resource: virglrenderer copies from the backing.
            let bbox = Box3d { x: r.x, y: r.y, z: 0, w: r.width, h: r.height, d: 1 };
            let virgl = self.virgl.as_ref().ok_or(GuestError::UnsupportedCommand)?;
            virgl.transfer(id, 0, 0, 0, 0, bbox, offset, true)?;
            return Ok(Reply::NoData);
        }
        if r.is_empty() {
            return Ok(Reply::NoData);
        }
        let stride = u64::from(resource.width) * BPP;
        let row_bytes = u64::from(r.width) * BPP;
        // Last byte read + 1; must lie inside the backing.
        let needed = stride
            .checked_mul(u64::from(r.height - 1))
            .and_then(|v| v.checked_add(row_bytes))
            .and_then(|v| v.checked_add(offset))
            .ok_or(GuestError::BackingTooSmall)?;
        if needed > backing.len() {
            return Err(GuestError::BackingTooSmall);
        }
        let to_usize = |v: u64| usize::try_from(v).map_err(|_| GuestError::RectOutOfBounds);
        let dst_start = to_usize(u64::from(r.y) * stride + u64::from(r.x) * BPP)?;
        if r.x == 0 && r.width == resource.width {
            // Whole rows: source and destination are both contiguous.
            let len = to_usize(stride * u64::from(r.height))?;
            let dst =
                resource.data.get_mut(dst_start..dst_start.saturating_add(len)).ok_or(GuestError::RectOutOfBounds)?;
            backing.read(mem, offset, dst)?;
        } else {
            let row_len = to_usize(row_bytes)?;
            let stride_usize = to_usize(stride)?;
            for h in 0..r.height {
                let src = offset + stride * u64::from(h);
                let dst_off = dst_start.saturating_add(stride_usize.saturating_mul(h as usize));
                let dst = resource
                    .data
                    .get_mut(dst_off..dst_off.saturating_add(row_len))
                    .ok_or(GuestError::RectOutOfBounds)?;
                backing.read(mem, src, dst)?;
            }
        }
        Ok(Reply::NoData)
    }

    fn set_scanout(&mut self, request: &[u8]) -> Result<Reply, GuestError> {
        let cmd: SetScanout = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let scanout_id = cmd.scanout_id.to_native();
        let resource_id = cmd.resource_id.to_native();
        let r = Rect::from(cmd.r);
        debug!(scanout_id, resource_id, ?r, "SET_SCANOUT");
        if scanout_id >= self.num_scanouts() {
            return Err(GuestError::InvalidScanoutId);
        }
        let rect = if resource_id == 0 {
            Rect::default()
        } else {
            let res = self.resources.get(&resource_id).ok_or(GuestError::UnknownResource)?;
            if r.is_empty() {
                return Err(GuestError::EmptyRect);
            }
            if !r.fits_in(res.width, res.height) {
                return Err(GuestError::RectOutOfBounds);
            }
            r
        };
        let s = self.scanouts.get_mut(scanout_id as usize).ok_or(GuestError::InvalidScanoutId)?;
        s.resource_id = resource_id;
        s.rect = rect;
        self.events.push(GpuEvent::ScanoutSet { scanout_id, resource_id, rect });
        Ok(Reply::NoData)
    }

    fn resource_flush(&mut self, request: &[u8]) -> Result<Reply, GuestError> {
        let cmd: ResourceFlush = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let resource_id = cmd.resource_id.to_native();
        let r = Rect::from(cmd.r);
        debug!(resource_id, ?r, "RESOURCE_FLUSH");
        let res = self.resources.get(&resource_id).ok_or(GuestError::UnknownResource)?;
        let Some(rect) = r.clip(res.width, res.height) else {
            return Ok(Reply::NoData);
        };
        for s in self.scanouts.iter_mut().filter(|s| s.resource_id == resource_id) {
            s.flush_count = s.flush_count.wrapping_add(1);
        }
        self.events.push(GpuEvent::ResourceFlush { resource_id, rect });
        Ok(Reply::NoData)
    }

    /// UPDATE_CURSOR / MOVE_CURSOR (5.7.6.10). The image is copied out of the
    /// resource's host copy now (the driver transfers it first); resource 0
    /// hides the cursor. Unlike QEMU, which silently keeps the old image, an
    /// unknown or larger-than-64x64 resource is rejected and changes nothing.
    fn update_cursor(&mut self, request: &[u8], is_move: bool) -> Result<Reply, GuestError> {
        let cmd: UpdateCursor = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let scanout_id = cmd.pos.scanout_id.to_native();
        let x = cmd.pos.x.to_native().cast_signed();
        let y = cmd.pos.y.to_native().cast_signed();
        let resource_id = cmd.resource_id.to_native();
        debug!(scanout_id, x, y, resource_id, is_move, "cursor");
        if scanout_id >= self.num_scanouts() {
            return Err(GuestError::InvalidScanoutId);
        }
        if is_move {
            if let Some(s) = self.scanouts.get_mut(scanout_id as usize) {
                s.cursor_pos = (x, y);
            }
            self.push_cursor_event(GpuEvent::CursorMove { scanout_id, x, y });
            return Ok(Reply::NoData);
        }
        let image = if resource_id == 0 {
            None
        } else {
            let res = self.resources.get(&resource_id).ok_or(GuestError::UnknownResource)?;
            if res.is_3d {
                // Cursors come from dumb (2D) buffers; a virgl cursor is not read back.
                return Err(GuestError::Invalid3d);
            }
            if res.width > MAX_CURSOR_DIMENSION || res.height > MAX_CURSOR_DIMENSION {
                return Err(GuestError::CursorTooLarge);
            }
            // The cursor plane reads its buffer as ARGB (premultiplied), whatever format the
            // resource was created with (Linux: B8G8R8X8 for every dumb buffer).
            let rgba = res
                .read_rgba8_as(Rect::new(0, 0, res.width, res.height), res.format.with_alpha())
                .ok_or(GuestError::AllocationFailed)?;
            Some(CursorImage {
                width: res.width,
                height: res.height,
                hot_x: cmd.hot_x.to_native().min(res.width - 1),
                hot_y: cmd.hot_y.to_native().min(res.height - 1),
                rgba,
            })
        };
        if let Some(s) = self.scanouts.get_mut(scanout_id as usize) {
            s.cursor = image.clone();
            s.cursor_pos = (x, y);
        }
        self.push_cursor_event(GpuEvent::CursorUpdate { scanout_id, image, x, y });
        Ok(Reply::NoData)
    }

    /// Pushes a cursor event, coalescing with a pending one of the same
    /// scanout in the trailing run of cursor events (see `drain_events`).
    fn push_cursor_event(&mut self, event: GpuEvent) {
        let (GpuEvent::CursorUpdate { scanout_id: sid, .. } | GpuEvent::CursorMove { scanout_id: sid, .. }) = event
        else {
            self.events.push(event);
            return;
        };
        for pending in self.events.iter_mut().rev() {
            match pending {
                GpuEvent::CursorUpdate { scanout_id, x, y, .. } if *scanout_id == sid => {
                    if let GpuEvent::CursorMove { x: nx, y: ny, .. } = event {
                        *x = nx;
                        *y = ny;
                    } else {
                        *pending = event;
                    }
                    return;
                }
                GpuEvent::CursorMove { scanout_id, .. } if *scanout_id == sid => {
                    *pending = event;
                    return;
                }
                GpuEvent::CursorUpdate { .. } | GpuEvent::CursorMove { .. } => {}
                _ => break,
            }
        }
        self.events.push(event);
    }
}

/// A zero-filled buffer of `len` bytes, `None` if it cannot be allocated.
fn zeroed(len: usize) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).ok()?;
    v.resize(len, 0);
    Some(v)
}

/// Copies the readable descriptors, in order, up to [`MAX_REQUEST_BYTES`].
/// `None` if a descriptor within that prefix is not in guest memory.
fn gather<M: GuestMemory>(mem: &M, readable: &[(GuestAddress, u32)]) -> Option<Vec<u8>> {
    let total: u64 = readable.iter().map(|(_, len)| u64::from(*len)).sum();
    let mut request = zeroed(usize::try_from(total.min(MAX_REQUEST_BYTES as u64)).ok()?)?;
    let mut rest: &mut [u8] = &mut request;
    for (addr, len) in readable {
        if rest.is_empty() {
            break;
        }
        let n = rest.len().min(*len as usize);
        let (head, tail) = rest.split_at_mut(n);
        mem.read_slice(head, *addr).ok()?;
        rest = tail;
    }
    Some(request)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{RawDescriptor, split::Descriptor as SplitDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestMemoryMmap;

    type Mem = GuestMemoryMmap<()>;
    const MEM_SIZE: u64 = 32 << 20;
    const DATA_START: u64 = 0x10_0000;
    const QUEUE_SIZE: u16 = 256;

    fn new_mem() -> Mem {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
    }

    fn gpu() -> Gpu {
        Gpu::new(GpuConfig::default())
    }

    fn bytes<T: ByteValued>(v: &T) -> Vec<u8> {
        v.as_slice().to_vec()
    }

    fn hdr(ty: u32) -> CtrlHdr {
        CtrlHdr { type_: ty.into(), ..CtrlHdr::default() }
    }

    fn rect(x: u32, y: u32, w: u32, h: u32) -> GpuRect {
        Rect::new(x, y, w, h).into()
    }

    fn cmd_display_info() -> Vec<u8> {
        bytes(&hdr(VIRTIO_GPU_CMD_GET_DISPLAY_INFO))
    }

    fn cmd_edid(scanout: u32) -> Vec<u8> {
        bytes(&GetEdid { hdr: hdr(VIRTIO_GPU_CMD_GET_EDID), scanout: scanout.into(), padding: 0.into() })
    }

    fn cmd_create(id: u32, format: u32, w: u32, h: u32) -> Vec<u8> {
        bytes(&ResourceCreate2d {
            hdr: hdr(VIRTIO_GPU_CMD_RESOURCE_CREATE_2D),
            resource_id: id.into(),
            format: format.into(),
            width: w.into(),
            height: h.into(),
        })
    }

    fn cmd_unref(id: u32) -> Vec<u8> {
        bytes(&ResourceUnref { hdr: hdr(VIRTIO_GPU_CMD_RESOURCE_UNREF), resource_id: id.into(), padding: 0.into() })
    }

    fn attach_header(id: u32, nr: u32) -> Vec<u8> {
        bytes(&ResourceAttachBacking {
            hdr: hdr(VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING),
            resource_id: id.into(),
            nr_entries: nr.into(),
        })
    }

    fn mem_entries(entries: &[(u64, u32)]) -> Vec<u8> {
        entries
            .iter()
            .flat_map(|&(addr, len)| bytes(&MemEntry { addr: addr.into(), length: len.into(), padding: 0.into() }))
            .collect()
    }

    fn cmd_attach(id: u32, entries: &[(u64, u32)]) -> Vec<u8> {
        let mut v = attach_header(id, entries.len() as u32);
        v.extend(mem_entries(entries));
        v
    }

    fn cmd_detach(id: u32) -> Vec<u8> {
        bytes(&ResourceDetachBacking {
            hdr: hdr(VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING),
            resource_id: id.into(),
            padding: 0.into(),
        })
    }

    fn cmd_transfer(id: u32, r: GpuRect, offset: u64) -> Vec<u8> {
        bytes(&TransferToHost2d {
            hdr: hdr(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D),
            r,
            offset: offset.into(),
            resource_id: id.into(),
            padding: 0.into(),
        })
    }

    fn cmd_set_scanout(scanout: u32, id: u32, r: GpuRect) -> Vec<u8> {
        bytes(&SetScanout {
            hdr: hdr(VIRTIO_GPU_CMD_SET_SCANOUT),
            r,
            scanout_id: scanout.into(),
            resource_id: id.into(),
        })
    }

    fn cmd_flush(id: u32, r: GpuRect) -> Vec<u8> {
        bytes(&ResourceFlush { hdr: hdr(VIRTIO_GPU_CMD_RESOURCE_FLUSH), r, resource_id: id.into(), padding: 0.into() })
    }

    fn cmd_cursor(ty: u32, scanout: u32, id: u32, x: i32, y: i32, hot: (u32, u32)) -> Vec<u8> {
        bytes(&UpdateCursor {
            hdr: hdr(ty),
            pos: CursorPos {
                scanout_id: scanout.into(),
                x: x.cast_unsigned().into(),
                y: y.cast_unsigned().into(),
                padding: 0.into(),
            },
            resource_id: id.into(),
            hot_x: hot.0.into(),
            hot_y: hot.1.into(),
            padding: 0.into(),
        })
    }

    fn resp_hdr(resp: &[u8]) -> CtrlHdr {
        read_struct(resp).expect("response has a header")
    }

    fn resp_type(resp: &[u8]) -> u32 {
        resp_hdr(resp).type_.to_native()
    }

    fn exec(gpu: &mut Gpu, mem: &Mem, req: &[u8]) -> u32 {
        let resp = gpu.handle_request(QueueKind::Control, req, mem);
        assert!(resp.len() >= size_of::<CtrlHdr>());
        resp_type(&resp)
    }

    fn exec_cursor(gpu: &mut Gpu, mem: &Mem, req: &[u8]) -> u32 {
        resp_type(&gpu.handle_request(QueueKind::Cursor, req, mem))
    }

    fn ok(gpu: &mut Gpu, mem: &Mem, req: &[u8]) {
        let t = exec(gpu, mem, req);
        assert_eq!(t, VIRTIO_GPU_RESP_OK_NODATA, "{}", ctrl_type_name(t));
    }

    /// Simple driver side of a split queue on top of `MockSplitQueue`.
    struct Driver<'a> {
        mem: &'a Mem,
        vq: MockSplitQueue<'a, Mem>,
        queue: Queue,
        next_desc: u16,
        next_addr: u64,
        chains: u16,
    }

    /// One descriptor of a chain built by a test.
    #[derive(Clone, Debug)]
    enum Desc {
        /// Readable, holding these bytes (placed in fresh guest memory).
        Read(Vec<u8>),
        /// Writable, of this many bytes (fresh guest memory, filled with 0xEE).
        Write(u32),
        /// Raw descriptor at an arbitrary address.
        Raw { addr: u64, len: u32, write: bool },
    }

    impl<'a> Driver<'a> {
        fn new(mem: &'a Mem) -> Self {
            let vq = MockSplitQueue::new(mem, QUEUE_SIZE);
            let queue: Queue = vq.create_queue().unwrap();
            Driver { mem, vq, queue, next_desc: 0, next_addr: DATA_START, chains: 0 }
        }

        fn alloc(&mut self, len: u64) -> u64 {
            let addr = self.next_addr;
            self.next_addr = (addr + len + 15) & !15;
            assert!(self.next_addr <= MEM_SIZE, "test guest memory exhausted");
            addr
        }

        /// Adds one chain; returns (address, length) of each `Desc::Write`.
        fn add(&mut self, descs: &[Desc]) -> Vec<(u64, u32)> {
            assert!(!descs.is_empty());
            let mut raw = Vec::new();
            let mut writes = Vec::new();
            let first = self.next_desc;
            for (i, d) in descs.iter().enumerate() {
                let (addr, len, write) = match d {
                    Desc::Read(data) => {
                        let addr = self.alloc(data.len() as u64);
                        self.mem.write_slice(data, GuestAddress(addr)).unwrap();
                        (addr, data.len() as u32, false)
                    }
                    Desc::Write(len) => {
                        let addr = self.alloc(u64::from(*len));
                        self.mem.write_slice(&vec![0xee; *len as usize], GuestAddress(addr)).unwrap();
                        writes.push((addr, *len));
                        (addr, *len, true)
                    }
                    Desc::Raw { addr, len, write } => (*addr, *len, *write),
                };
                let last = i + 1 == descs.len();
                let mut flags = if write { VRING_DESC_F_WRITE as u16 } else { 0 };
                if !last {
                    flags |= VRING_DESC_F_NEXT as u16;
                }
                let next = if last { 0 } else { first + i as u16 + 1 };
                raw.push(RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next)));
            }
            self.vq.add_desc_chains(&raw, first).unwrap();
            self.next_desc += descs.len() as u16;
            self.chains += 1;
            assert!(self.next_desc <= QUEUE_SIZE && self.chains <= QUEUE_SIZE);
            writes
        }

        /// Adds a request with one readable and one writable descriptor.
        fn request(&mut self, req: &[u8], resp_len: u32) -> (u64, u32) {
            self.add(&[Desc::Read(req.to_vec()), Desc::Write(resp_len)])[0]
        }

        fn used(&self) -> Vec<(u32, u32)> {
            let n = self.vq.used().idx().load();
            (0..n)
                .map(|i| {
                    let e = self.vq.used().ring().ref_at(i as usize).unwrap().load();
                    (e.id(), e.len())
                })
                .collect()
        }

        fn read(&self, addr: u64, len: usize) -> Vec<u8> {
            let mut v = vec![0; len];
            self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
            v
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8).collect()
    }

    /// QEMU's TRANSFER_TO_HOST_2D on a flat backing; `None` if it reads past it.
    fn reference_transfer(data: &mut [u8], width: u32, backing: &[u8], r: Rect, offset: u64) -> Option<()> {
        let stride = u64::from(width) * 4;
        if r.is_empty() {
            return Some(());
        }
        for h in 0..u64::from(r.height) {
            let src = offset.checked_add(stride * h)?;
            let len = u64::from(r.width) * 4;
            let end = src.checked_add(len)?;
            if end > backing.len() as u64 {
                return None;
            }
            let dst = ((u64::from(r.y) + h) * stride + u64::from(r.x) * 4) as usize;
            data[dst..dst + len as usize].copy_from_slice(&backing[src as usize..end as usize]);
        }
        Some(())
    }

    // ---------------------------------------------------------------- Rect

    #[test]
    fn rect_helpers() {
        let a = Rect::new(0, 0, 10, 10);
        let b = Rect::new(5, 5, 10, 10);
        assert_eq!(a.intersect(&b), Some(Rect::new(5, 5, 5, 5)));
        assert_eq!(a.union(&b), Some(Rect::new(0, 0, 15, 15)));
        assert_eq!(a.intersect(&Rect::new(10, 0, 5, 5)), None);
        assert!(a.contains(&Rect::new(2, 2, 8, 8)));
        assert!(!a.contains(&b));
        assert!(Rect::new(3, 3, 0, 5).is_empty());
        assert_eq!(a.union(&Rect::default()), Some(a));
        assert_eq!(Rect::default().union(&b), Some(b));
        let huge = Rect::new(u32::MAX, u32::MAX, u32::MAX, u32::MAX);
        assert_eq!(huge.checked_right(), None);
        assert_eq!(huge.checked_bottom(), None);
        assert!(!huge.fits_in(u32::MAX, u32::MAX));
        assert_eq!(huge.clip(100, 100), None);
        assert_eq!(Rect::new(0, 0, 1, 1).union(&huge), None);
        assert_eq!(Rect::new(90, 90, u32::MAX, 20).clip(100, 100), Some(Rect::new(90, 90, 10, 10)));
        assert!(Rect::new(0, 0, 100, 100).fits_in(100, 100));
        assert!(!Rect::new(1, 0, 100, 100).fits_in(100, 100));
        let g: GpuRect = b.into();
        assert_eq!(Rect::from(g), b);
    }

    // ------------------------------------------------------ simple commands

    #[test]
    fn config_is_clamped_and_features() {
        let g = Gpu::new(GpuConfig { num_scanouts: 99, preferred_size: (0, 100_000), ..GpuConfig::default() });
        assert_eq!(g.num_scanouts(), 16);
        assert_eq!(g.config().preferred_size, (1, MAX_RESOURCE_DIMENSION));
        assert_eq!(g.device_features(), 1 << VIRTIO_GPU_F_EDID);
        assert_eq!(g.config_space().num_scanouts.to_native(), 16);
        let g = Gpu::new(GpuConfig { num_scanouts: 0, ..GpuConfig::default() });
        assert_eq!(g.num_scanouts(), 1);
        assert!(g.scanout(1).is_none());
        assert_eq!(g.scanout(0).unwrap().width, 1280);
    }

    #[test]
    fn display_info_side_by_side() {
        let mem = new_mem();
        let mut g = Gpu::new(GpuConfig { num_scanouts: 3, preferred_size: (1024, 768), ..GpuConfig::default() });
        assert!(g.set_display_size(1, 800, 600));
        assert!(!g.set_display_size(3, 800, 600));
        let resp = g.handle_request(QueueKind::Control, &cmd_display_info(), &mem);
        assert_eq!(resp.len(), size_of::<RespDisplayInfo>());
        let info: RespDisplayInfo = read_struct(&resp).unwrap();
        assert_eq!(info.hdr.type_.to_native(), VIRTIO_GPU_RESP_OK_DISPLAY_INFO);
        let modes: Vec<_> = info.pmodes.iter().map(|m| (Rect::from(m.r), m.enabled.to_native())).collect();
        assert_eq!(modes[0], (Rect::new(0, 0, 1024, 768), 1));
        assert_eq!(modes[1], (Rect::new(1024, 0, 800, 600), 1));
        assert_eq!(modes[2], (Rect::new(1824, 0, 1024, 768), 1));
        for m in &info.pmodes[3..] {
            assert_eq!(*m, DisplayOne::default());
        }
        // Everything after the pmodes we filled is zero: no stale bytes.
        assert!(resp[24 + 3 * 24..].iter().all(|b| *b == 0));
    }

    #[test]
    fn get_edid() {
        let mem = new_mem();
        let mut g = Gpu::new(GpuConfig {
            num_scanouts: 2,
            preferred_size: (1920, 1080),
            name: "testvm".into(),
            ..GpuConfig::default()
        });
        let resp = g.handle_request(QueueKind::Control, &cmd_edid(1), &mem);
        assert_eq!(resp.len(), size_of::<RespEdid>());
        let e: RespEdid = read_struct(&resp).unwrap();
        assert_eq!(e.hdr.type_.to_native(), VIRTIO_GPU_RESP_OK_EDID);
        assert_eq!(e.size.to_native(), 128);
        assert_eq!(e.edid[..128], edid::generate(1920, 1080, "testvm"));
        assert!(e.edid[128..].iter().all(|b| *b == 0));
        assert_eq!(exec(&mut g, &mem, &cmd_edid(2)), VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID);
        assert_eq!(exec(&mut g, &mem, &cmd_edid(u32::MAX)), VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID);
        assert_eq!(exec(&mut g, &mem, &cmd_edid(0)[..30]), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    }

    #[test]
    fn create_2d_all_formats_and_errors() {
        let mem = new_mem();
        let mut g = gpu();
        for (i, f) in Format::ALL.iter().enumerate() {
            ok(&mut g, &mem, &cmd_create(i as u32 + 1, f.to_virtio(), 3, 2));
            let r = g.resource(i as u32 + 1).unwrap();
            assert_eq!((r.width, r.height, r.format, r.stride()), (3, 2, *f, 12));
            assert_eq!(r.data, vec![0; 24]);
            assert!(r.backing.is_none());
        }
        assert_eq!(g.host_memory_used(), 8 * (24 + RESOURCE_OVERHEAD_BYTES));
        let e = |g: &mut Gpu, req: Vec<u8>| exec(g, &mem, &req);
        assert_eq!(e(&mut g, cmd_create(0, 1, 4, 4)), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
        assert_eq!(e(&mut g, cmd_create(1, 1, 4, 4)), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
        assert_eq!(e(&mut g, cmd_create(20, 5, 4, 4)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        assert_eq!(e(&mut g, cmd_create(20, 0, 4, 4)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        assert_eq!(e(&mut g, cmd_create(20, 1, 0, 4)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        assert_eq!(e(&mut g, cmd_create(20, 1, 4, 0)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        assert_eq!(e(&mut g, cmd_create(20, 1, 16385, 1)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        assert_eq!(e(&mut g, cmd_create(20, 1, u32::MAX, u32::MAX)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        // 16384x16384x4 = 1 GiB > 512 MiB default.
        assert_eq!(e(&mut g, cmd_create(20, 1, 16384, 16384)), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
        assert_eq!(e(&mut g, cmd_create(20, 1, 4, 4)[..39].to_vec()), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        assert!(g.resource(20).is_none());
        assert_eq!(g.resources().count(), 8);
        assert_eq!(g.host_memory_used(), 8 * (24 + RESOURCE_OVERHEAD_BYTES));
    }

    #[test]
    fn host_memory_limit() {
        let mem = new_mem();
        let mut g = Gpu::new(GpuConfig {
            max_host_memory: 2 * (64 * 64 * 4 + RESOURCE_OVERHEAD_BYTES),
            ..GpuConfig::default()
        });
        ok(&mut g, &mem, &cmd_create(1, 1, 64, 64));
        ok(&mut g, &mem, &cmd_create(2, 1, 64, 64));
        assert_eq!(exec(&mut g, &mem, &cmd_create(3, 1, 1, 1)), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
        // Backing bookkeeping is charged too.
        assert_eq!(exec(&mut g, &mem, &cmd_attach(1, &[(DATA_START, 4096)])), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
        assert!(g.resource(1).unwrap().backing.is_none());
        ok(&mut g, &mem, &cmd_unref(2));
        ok(&mut g, &mem, &cmd_attach(1, &[(DATA_START, 4096)]));
        assert_eq!(g.host_memory_used(), 64 * 64 * 4 + RESOURCE_OVERHEAD_BYTES + BACKING_ENTRY_BYTES);
        ok(&mut g, &mem, &cmd_detach(1));
        ok(&mut g, &mem, &cmd_unref(1));
        assert_eq!(g.host_memory_used(), 0);
    }

    #[test]
    fn attach_backing_validation() {
        let mem = new_mem();
        let mut g = gpu();
        ok(&mut g, &mem, &cmd_create(1, 2, 8, 8));
        let e = |g: &mut Gpu, req: Vec<u8>| exec(g, &mem, &req);
        assert_eq!(e(&mut g, cmd_attach(2, &[(DATA_START, 256)])), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
        assert_eq!(e(&mut g, cmd_attach(1, &[])), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        assert_eq!(e(&mut g, attach_header(1, 16385)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        assert_eq!(e(&mut g, attach_header(1, u32::MAX)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        // nr_entries larger than the entries present.
        let mut short = attach_header(1, 3);
        short.extend(mem_entries(&[(DATA_START, 16), (DATA_START + 64, 16)]));
        assert_eq!(e(&mut g, short), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        assert_eq!(e(&mut g, attach_header(1, 16384)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        // Outside guest memory, straddling its end, overflowing.
        assert_eq!(e(&mut g, cmd_attach(1, &[(MEM_SIZE, 16)])), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        assert_eq!(e(&mut g, cmd_attach(1, &[(MEM_SIZE - 8, 16)])), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        assert_eq!(
            e(&mut g, cmd_attach(1, &[(DATA_START, 16), (u64::MAX - 4, 16)])),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        assert!(g.resource(1).unwrap().backing.is_none());
        assert_eq!(g.host_memory_used(), 256 + RESOURCE_OVERHEAD_BYTES);
        // Valid: zero-length entries are dropped, contiguous ones merged.
        ok(
            &mut g,
            &mem,
            &cmd_attach(1, &[(DATA_START, 100), (DATA_START + 100, 28), (0, 0), (DATA_START + 4096, 128)]),
        );
        let b = g.resource(1).unwrap().backing.clone().unwrap();
        assert_eq!(b.len(), 256);
        assert_eq!(
            b.entries(),
            &[
                BackingEntry { addr: DATA_START, len: 128, offset: 0 },
                BackingEntry { addr: DATA_START + 4096, len: 128, offset: 128 },
            ]
        );
        assert_eq!(e(&mut g, cmd_attach(1, &[(DATA_START, 256)])), VIRTIO_GPU_RESP_ERR_UNSPEC);
        ok(&mut g, &mem, &cmd_detach(1));
        assert_eq!(e(&mut g, cmd_detach(1)), VIRTIO_GPU_RESP_ERR_UNSPEC);
        assert_eq!(e(&mut g, cmd_detach(9)), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
        ok(&mut g, &mem, &cmd_attach(1, &[(DATA_START, 256)]));
        // The maximum entry count is accepted.
        ok(&mut g, &mem, &cmd_create(2, 2, 8, 8));
        let many: Vec<(u64, u32)> = (0..16384u64).map(|i| (DATA_START + i * 8, 4)).collect();
        ok(&mut g, &mem, &cmd_attach(2, &many));
        assert_eq!(g.resource(2).unwrap().backing.as_ref().unwrap().entries().len(), 16384);
        assert_eq!(g.resource(2).unwrap().backing.as_ref().unwrap().len(), 65536);
    }

    #[test]
    fn transfer_full_and_partial() {
        let mem = new_mem();
        let mut g = gpu();
        let (w, h) = (16u32, 8u32);
        let stride = w * 4;
        ok(&mut g, &mem, &cmd_create(1, 1, w, h));
        let backing = pattern((stride * h) as usize, 7);
        // Scatter the backing over 3 non-contiguous entries; the splits fall mid-row.
        let parts = [(0usize, 100usize), (100, 37), (137, backing.len() - 137)];
        let mut entries = Vec::new();
        for (i, (off, len)) in parts.iter().enumerate() {
            let addr = DATA_START + 0x1000 * i as u64 + 3;
            mem.write_slice(&backing[*off..off + len], GuestAddress(addr)).unwrap();
            entries.push((addr, *len as u32));
        }
        ok(&mut g, &mem, &cmd_attach(1, &entries));
        // Partial transfer with the Linux-style offset.
        let r = Rect::new(3, 2, 5, 4);
        let offset = u64::from(r.y * stride + r.x * 4);
        ok(&mut g, &mem, &cmd_transfer(1, r.into(), offset));
        let mut expect = vec![0u8; backing.len()];
        reference_transfer(&mut expect, w, &backing, r, offset).unwrap();
        assert_eq!(g.resource(1).unwrap().data, expect);
        // Non-standard offset: rows still come from offset + stride * row.
        let r2 = Rect::new(10, 1, 6, 3);
        ok(&mut g, &mem, &cmd_transfer(1, r2.into(), 5));
        reference_transfer(&mut expect, w, &backing, r2, 5).unwrap();
        assert_eq!(g.resource(1).unwrap().data, expect);
        // Full rows at an offset (contiguous fast path).
        let r3 = Rect::new(0, 5, w, 3);
        ok(&mut g, &mem, &cmd_transfer(1, r3.into(), 9));
        reference_transfer(&mut expect, w, &backing, r3, 9).unwrap();
        assert_eq!(g.resource(1).unwrap().data, expect);
        // Whole resource.
        ok(&mut g, &mem, &cmd_transfer(1, rect(0, 0, w, h), 0));
        assert_eq!(g.resource(1).unwrap().data, backing);
        // Empty rect is a no-op.
        ok(&mut g, &mem, &cmd_transfer(1, rect(4, 4, 0, 3), 0));
        ok(&mut g, &mem, &cmd_transfer(1, rect(w, h, 0, 0), u64::MAX));
    }

    #[test]
    fn transfer_errors() {
        let mem = new_mem();
        let mut g = gpu();
        let e = |g: &mut Gpu, req: Vec<u8>| exec(g, &mem, &req);
        ok(&mut g, &mem, &cmd_create(1, 1, 16, 8));
        assert_eq!(e(&mut g, cmd_transfer(1, rect(0, 0, 16, 8), 0)), VIRTIO_GPU_RESP_ERR_UNSPEC);
        assert_eq!(e(&mut g, cmd_transfer(2, rect(0, 0, 1, 1), 0)), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
        mem.write_slice(&[0xab; 512], GuestAddress(DATA_START)).unwrap();
        // 511 bytes: one short of the full resource.
        ok(&mut g, &mem, &cmd_attach(1, &[(DATA_START, 511)]));
        let bad_rects = [
            rect(u32::MAX, 0, 2, 1),
            rect(0, u32::MAX, 1, 2),
            rect(0, 0, u32::MAX, 1),
            rect(0, 0, 1, u32::MAX),
            rect(15, 0, 2, 1),
            rect(0, 7, 1, 2),
            rect(17, 0, 0, 0),
            rect(u32::MAX, u32::MAX, u32::MAX, u32::MAX),
        ];
        for r in bad_rects {
            assert_eq!(e(&mut g, cmd_transfer(1, r, 0)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER, "{r:?}");
        }
        assert_eq!(e(&mut g, cmd_transfer(1, rect(0, 0, 16, 8), 0)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        assert_eq!(e(&mut g, cmd_transfer(1, rect(0, 0, 1, 1), u64::MAX)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        assert_eq!(e(&mut g, cmd_transfer(1, rect(0, 0, 1, 1), 508)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        assert_eq!(
            e(&mut g, cmd_transfer(1, rect(0, 0, 1, 1), 0)[..55].to_vec()),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        // Nothing was copied by the failed transfers.
        assert!(g.resource(1).unwrap().data.iter().all(|b| *b == 0));
        // The last 3 bytes fit though.
        ok(&mut g, &mem, &cmd_transfer(1, rect(0, 0, 1, 1), 507));
        assert_eq!(g.resource(1).unwrap().data[..4], [0xab; 4]);
    }

    #[test]
    fn set_scanout_and_flush() {
        let mem = new_mem();
        let mut g = Gpu::new(GpuConfig { num_scanouts: 2, ..GpuConfig::default() });
        let e = |g: &mut Gpu, req: Vec<u8>| exec(g, &mem, &req);
        ok(&mut g, &mem, &cmd_create(1, 2, 100, 50));
        assert_eq!(e(&mut g, cmd_set_scanout(2, 1, rect(0, 0, 100, 50))), VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID);
        assert_eq!(e(&mut g, cmd_set_scanout(u32::MAX, 0, rect(0, 0, 0, 0))), VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID);
        assert_eq!(e(&mut g, cmd_set_scanout(0, 2, rect(0, 0, 10, 10))), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
        assert_eq!(e(&mut g, cmd_set_scanout(0, 1, rect(0, 0, 0, 10))), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        assert_eq!(e(&mut g, cmd_set_scanout(0, 1, rect(1, 0, 100, 50))), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        assert_eq!(e(&mut g, cmd_set_scanout(0, 1, rect(u32::MAX, 0, 2, 10))), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        assert_eq!(g.drain_events().count(), 0);
        ok(&mut g, &mem, &cmd_set_scanout(0, 1, rect(0, 0, 100, 50)));
        ok(&mut g, &mem, &cmd_set_scanout(1, 1, rect(50, 10, 50, 40)));
        let ev: Vec<_> = g.drain_events().collect();
        assert_eq!(
            ev,
            vec![
                GpuEvent::ScanoutSet { scanout_id: 0, resource_id: 1, rect: Rect::new(0, 0, 100, 50) },
                GpuEvent::ScanoutSet { scanout_id: 1, resource_id: 1, rect: Rect::new(50, 10, 50, 40) },
            ]
        );
        // Flush: clipped to the resource, counted on both scanouts.
        ok(&mut g, &mem, &cmd_flush(1, rect(90, 40, 1000, u32::MAX)));
        ok(&mut g, &mem, &cmd_flush(1, rect(0, 0, 100, 50)));
        // Entirely outside: nothing to show.
        ok(&mut g, &mem, &cmd_flush(1, rect(100, 0, 5, 5)));
        ok(&mut g, &mem, &cmd_flush(1, rect(u32::MAX, u32::MAX, u32::MAX, u32::MAX)));
        assert_eq!(e(&mut g, cmd_flush(7, rect(0, 0, 1, 1))), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
        let ev: Vec<_> = g.drain_events().collect();
        assert_eq!(
            ev,
            vec![
                GpuEvent::ResourceFlush { resource_id: 1, rect: Rect::new(90, 40, 10, 10) },
                GpuEvent::ResourceFlush { resource_id: 1, rect: Rect::new(0, 0, 100, 50) },
            ]
        );
        assert_eq!(g.scanout(0).unwrap().flush_count, 2);
        assert_eq!(g.scanout(1).unwrap().flush_count, 2);
        // Disable scanout 1.
        ok(&mut g, &mem, &cmd_set_scanout(1, 0, rect(5, 5, 5, 5)));
        assert_eq!(g.scanout(1).unwrap().resource_id, 0);
        assert_eq!(g.scanout(1).unwrap().rect, Rect::default());
        // Unref while scanned out disables the remaining scanout.
        g.drain_events().for_each(drop);
        ok(&mut g, &mem, &cmd_unref(1));
        let ev: Vec<_> = g.drain_events().collect();
        assert_eq!(
            ev,
            vec![
                GpuEvent::ScanoutSet { scanout_id: 0, resource_id: 0, rect: Rect::default() },
                GpuEvent::ResourceDestroyed { resource_id: 1 },
            ]
        );
        assert_eq!(g.scanout(0).unwrap().resource_id, 0);
        assert_eq!(e(&mut g, cmd_unref(1)), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
        assert_eq!(g.host_memory_used(), 0);
    }

    #[test]
    fn cursor_update_move_hide() {
        let mem = new_mem();
        let mut g = Gpu::new(GpuConfig { num_scanouts: 2, ..GpuConfig::default() });
        // A 2x2 B8G8R8A8 cursor: bytes B, G, R, A.
        ok(&mut g, &mem, &cmd_create(5, VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM, 2, 2));
        let px: Vec<u8> = vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
        mem.write_slice(&px, GuestAddress(DATA_START)).unwrap();
        ok(&mut g, &mem, &cmd_attach(5, &[(DATA_START, 16)]));
        ok(&mut g, &mem, &cmd_transfer(5, rect(0, 0, 2, 2), 0));
        let t = exec_cursor(&mut g, &mem, &cmd_cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, 1, 5, -3, 40, (1, 9)));
        assert_eq!(t, VIRTIO_GPU_RESP_OK_NODATA);
        let image = CursorImage {
            width: 2,
            height: 2,
            hot_x: 1,
            hot_y: 1,
            rgba: vec![3, 2, 1, 4, 7, 6, 5, 8, 11, 10, 9, 12, 15, 14, 13, 16],
        };
        let ev: Vec<_> = g.drain_events().collect();
        assert_eq!(ev, vec![GpuEvent::CursorUpdate { scanout_id: 1, image: Some(image.clone()), x: -3, y: 40 }]);
        assert_eq!(g.scanout(1).unwrap().cursor, Some(image.clone()));
        exec_cursor(&mut g, &mem, &cmd_cursor(VIRTIO_GPU_CMD_MOVE_CURSOR, 1, 0, 10, 11, (0, 0)));
        assert_eq!(g.drain_events().collect::<Vec<_>>(), vec![GpuEvent::CursorMove { scanout_id: 1, x: 10, y: 11 }]);
        assert_eq!(g.scanout(1).unwrap().cursor_pos, (10, 11));
        // Hide.
        exec_cursor(&mut g, &mem, &cmd_cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, 1, 0, 1, 2, (0, 0)));
        assert_eq!(
            g.drain_events().collect::<Vec<_>>(),
            vec![GpuEvent::CursorUpdate { scanout_id: 1, image: None, x: 1, y: 2 }]
        );
        assert_eq!(g.scanout(1).unwrap().cursor, None);
        // Errors change nothing and emit nothing.
        ok(&mut g, &mem, &cmd_create(6, 1, 65, 64));
        let errs = [
            (cmd_cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, 0, 6, 0, 0, (0, 0)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER),
            (cmd_cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, 0, 7, 0, 0, (0, 0)), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID),
            (cmd_cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, 2, 5, 0, 0, (0, 0)), VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID),
            (cmd_cursor(VIRTIO_GPU_CMD_MOVE_CURSOR, u32::MAX, 0, 0, 0, (0, 0)), VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID),
            (
                cmd_cursor(VIRTIO_GPU_CMD_MOVE_CURSOR, 0, 0, 0, 0, (0, 0))[..50].to_vec(),
                VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER,
            ),
            (cmd_display_info(), VIRTIO_GPU_RESP_ERR_UNSPEC),
            (cmd_create(9, 1, 1, 1), VIRTIO_GPU_RESP_ERR_UNSPEC),
        ];
        for (req, want) in errs {
            assert_eq!(exec_cursor(&mut g, &mem, &req), want);
        }
        assert!(g.resource(9).is_none());
        // Cursor commands on the control queue are rejected.
        assert_eq!(
            exec(&mut g, &mem, &cmd_cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, 0, 5, 0, 0, (0, 0))),
            VIRTIO_GPU_RESP_ERR_UNSPEC
        );
        assert_eq!(g.drain_events().count(), 0);
        // A 64x64 cursor is fine.
        ok(&mut g, &mem, &cmd_create(8, 1, 64, 64));
        exec_cursor(&mut g, &mem, &cmd_cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, 0, 8, 0, 0, (63, 63)));
        let ev: Vec<_> = g.drain_events().collect();
        let GpuEvent::CursorUpdate { image: Some(img), .. } = &ev[0] else { panic!("{ev:?}") };
        assert_eq!((img.width, img.height, img.hot_x, img.hot_y, img.rgba.len()), (64, 64, 63, 63, 64 * 64 * 4));
        // The cursor image is a copy: unref of the resource does not touch it.
        ok(&mut g, &mem, &cmd_unref(8));
        assert!(g.scanout(0).unwrap().cursor.is_some());
    }

    #[test]
    fn cursor_events_coalesce() {
        let mem = new_mem();
        let mut g = Gpu::new(GpuConfig { num_scanouts: 2, ..GpuConfig::default() });
        ok(&mut g, &mem, &cmd_create(1, 1, 4, 4));
        g.drain_events().for_each(drop);
        for i in 0..1000 {
            exec_cursor(&mut g, &mem, &cmd_cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, i % 2, 1, 0, 0, (0, 0)));
            exec_cursor(&mut g, &mem, &cmd_cursor(VIRTIO_GPU_CMD_MOVE_CURSOR, i % 2, 0, i as i32, 1, (0, 0)));
        }
        let ev: Vec<_> = g.drain_events().collect();
        assert_eq!(ev.len(), 2, "{ev:?}");
        for e in &ev {
            match e {
                GpuEvent::CursorUpdate { scanout_id, image: Some(_), x, y: 1 } => {
                    assert_eq!(*x, 998 + *scanout_id as i32)
                }
                other => panic!("{other:?}"),
            }
        }
        // A non-cursor event ends coalescing.
        exec_cursor(&mut g, &mem, &cmd_cursor(VIRTIO_GPU_CMD_MOVE_CURSOR, 0, 0, 1, 1, (0, 0)));
        ok(&mut g, &mem, &cmd_set_scanout(0, 1, rect(0, 0, 4, 4)));
        exec_cursor(&mut g, &mem, &cmd_cursor(VIRTIO_GPU_CMD_MOVE_CURSOR, 0, 0, 2, 2, (0, 0)));
        assert_eq!(g.drain_events().count(), 3);
    }

    #[test]
    fn unsupported_and_short_requests() {
        let mem = new_mem();
        let mut g = gpu();
        for ty in [
            0,
            VIRTIO_GPU_CMD_GET_CAPSET_INFO,
            VIRTIO_GPU_CMD_GET_CAPSET,
            VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID,
            VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB,
            VIRTIO_GPU_CMD_SET_SCANOUT_BLOB,
            VIRTIO_GPU_CMD_CTX_CREATE,
            VIRTIO_GPU_CMD_CTX_DESTROY,
            VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE,
            VIRTIO_GPU_CMD_RESOURCE_CREATE_3D,
            VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D,
            VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D,
            VIRTIO_GPU_CMD_SUBMIT_3D,
            VIRTIO_GPU_RESP_OK_NODATA,
            u32::MAX,
        ] {
            let mut req = bytes(&hdr(ty));
            req.extend([0u8; 128]);
            assert_eq!(exec(&mut g, &mem, &req), VIRTIO_GPU_RESP_ERR_UNSPEC, "{ty:#x}");
        }
        for len in [0, 1, 23] {
            let resp = g.handle_request(QueueKind::Control, &cmd_display_info()[..len], &mem);
            assert_eq!(resp.len(), 24);
            assert_eq!(resp_type(&resp), VIRTIO_GPU_RESP_ERR_UNSPEC);
        }
        // A header alone is a valid GET_DISPLAY_INFO but a short CREATE_2D.
        assert_eq!(exec(&mut g, &mem, &cmd_display_info()), VIRTIO_GPU_RESP_OK_DISPLAY_INFO);
        for ty in [
            VIRTIO_GPU_CMD_GET_EDID,
            VIRTIO_GPU_CMD_RESOURCE_CREATE_2D,
            VIRTIO_GPU_CMD_RESOURCE_UNREF,
            VIRTIO_GPU_CMD_SET_SCANOUT,
            VIRTIO_GPU_CMD_RESOURCE_FLUSH,
            VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D,
            VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING,
            VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING,
        ] {
            assert_eq!(exec(&mut g, &mem, &bytes(&hdr(ty))), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER, "{ty:#x}");
        }
    }

    #[test]
    fn fences_are_echoed() {
        let mem = new_mem();
        let mut g = gpu();
        let mut req = cmd_create(1, 1, 4, 4);
        let fenced = CtrlHdr {
            type_: VIRTIO_GPU_CMD_RESOURCE_CREATE_2D.into(),
            flags: VIRTIO_GPU_FLAG_FENCE.into(),
            fence_id: 0x1122_3344_5566_7788u64.into(),
            ctx_id: 9.into(),
            ring_idx: 3,
            padding: [0; 3],
        };
        req[..24].copy_from_slice(fenced.as_slice());
        let h = resp_hdr(&g.handle_request(QueueKind::Control, &req, &mem));
        assert_eq!(h.type_.to_native(), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.flags.to_native(), VIRTIO_GPU_FLAG_FENCE);
        assert_eq!(h.fence_id.to_native(), 0x1122_3344_5566_7788);
        assert_eq!(h.ctx_id.to_native(), 9);
        assert_eq!(h.ring_idx, 0, "ring_idx only with INFO_RING_IDX");
        // Errors are fenced too; INFO_RING_IDX copies ring_idx.
        let mut with_ring = fenced;
        with_ring.flags = (VIRTIO_GPU_FLAG_FENCE | VIRTIO_GPU_FLAG_INFO_RING_IDX).into();
        req[..24].copy_from_slice(with_ring.as_slice());
        let h = resp_hdr(&g.handle_request(QueueKind::Control, &req, &mem));
        assert_eq!(h.type_.to_native(), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
        assert_eq!(h.flags.to_native(), VIRTIO_GPU_FLAG_FENCE | VIRTIO_GPU_FLAG_INFO_RING_IDX);
        assert_eq!((h.fence_id.to_native(), h.ctx_id.to_native(), h.ring_idx), (0x1122_3344_5566_7788, 9, 3));
        // Short body: still fenced. Display info: fenced in its header.
        let h = resp_hdr(&g.handle_request(QueueKind::Control, &req[..30], &mem));
        assert_eq!(h.type_.to_native(), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        assert_eq!(h.fence_id.to_native(), 0x1122_3344_5566_7788);
        let mut di = with_ring;
        di.type_ = VIRTIO_GPU_CMD_GET_DISPLAY_INFO.into();
        let h = resp_hdr(&g.handle_request(QueueKind::Control, di.as_slice(), &mem));
        assert_eq!(h.type_.to_native(), VIRTIO_GPU_RESP_OK_DISPLAY_INFO);
        assert_eq!((h.fence_id.to_native(), h.ctx_id.to_native(), h.ring_idx), (0x1122_3344_5566_7788, 9, 3));
        // Without FENCE nothing is echoed (INFO_RING_IDX alone is meaningless).
        let mut unfenced = fenced;
        unfenced.flags = VIRTIO_GPU_FLAG_INFO_RING_IDX.into();
        unfenced.type_ = VIRTIO_GPU_CMD_GET_DISPLAY_INFO.into();
        let h = resp_hdr(&g.handle_request(QueueKind::Control, unfenced.as_slice(), &mem));
        assert_eq!((h.flags.to_native(), h.fence_id.to_native(), h.ctx_id.to_native(), h.ring_idx), (0, 0, 0, 0));
    }

    #[test]
    fn reset_frees_everything() {
        let mem = new_mem();
        let mut g = Gpu::new(GpuConfig { num_scanouts: 2, ..GpuConfig::default() });
        ok(&mut g, &mem, &cmd_create(3, 1, 8, 8));
        ok(&mut g, &mem, &cmd_create(1, 1, 8, 8));
        ok(&mut g, &mem, &cmd_attach(1, &[(DATA_START, 256)]));
        ok(&mut g, &mem, &cmd_set_scanout(1, 1, rect(0, 0, 8, 8)));
        ok(&mut g, &mem, &cmd_flush(1, rect(0, 0, 8, 8)));
        exec_cursor(&mut g, &mem, &cmd_cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, 0, 3, 4, 5, (0, 0)));
        g.drain_events().for_each(drop);
        g.reset();
        assert_eq!(
            g.drain_events().collect::<Vec<_>>(),
            vec![
                GpuEvent::CursorUpdate { scanout_id: 0, image: None, x: 4, y: 5 },
                GpuEvent::ScanoutSet { scanout_id: 1, resource_id: 0, rect: Rect::default() },
                GpuEvent::ResourceDestroyed { resource_id: 1 },
                GpuEvent::ResourceDestroyed { resource_id: 3 },
            ]
        );
        assert_eq!(g.host_memory_used(), 0);
        assert_eq!(g.resources().count(), 0);
        for i in 0..2 {
            let s = g.scanout(i).unwrap();
            assert_eq!((s.resource_id, s.flush_count, s.cursor.is_none()), (0, 0, true));
        }
        // Ids can be reused after reset.
        ok(&mut g, &mem, &cmd_create(1, 1, 8, 8));
        g.reset();
        g.reset();
        assert_eq!(g.drain_events().count(), 1);
    }

    #[test]
    fn guest_errors_warn_once_per_kind() {
        let mem = new_mem();
        let mut g = gpu();
        for _ in 0..10 {
            exec(&mut g, &mem, &cmd_unref(42));
        }
        assert_eq!(g.warned.count_ones(), 1);
        exec(&mut g, &mem, &cmd_create(0, 1, 1, 1));
        assert_eq!(g.warned.count_ones(), 2);
    }

    // ------------------------------------------------------------ via queue

    #[test]
    fn queue_pipeline() {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let mem = new_mem();
        let mut d = Driver::new(&mem);
        let mut g = gpu();
        let (w, h) = (64u32, 48u32);
        let frame = pattern((w * h * 4) as usize, 1);
        let fb = d.alloc(frame.len() as u64 + 8192);
        // Two entries, discontiguous, the second not page aligned.
        let split = 5000usize;
        mem.write_slice(&frame[..split], GuestAddress(fb)).unwrap();
        mem.write_slice(&frame[split..], GuestAddress(fb + split as u64 + 4096 + 12)).unwrap();
        let entries = [(fb, split as u32), (fb + split as u64 + 4096 + 12, (frame.len() - split) as u32)];

        let r0 = d.request(&cmd_create(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, w, h), 24);
        // Entries in a separate readable descriptor, as Linux does.
        let r1 = d.add(&[Desc::Read(attach_header(1, 2)), Desc::Read(mem_entries(&entries)), Desc::Write(24)])[0];
        let r2 = d.request(&cmd_transfer(1, rect(0, 0, w, h), 0), 24);
        let r3 = d.request(&cmd_set_scanout(0, 1, rect(0, 0, w, h)), 24);
        let r4 = d.request(&cmd_flush(1, rect(1, 2, 3, 4)), 24);
        // Response split across two writable descriptors.
        let r5 = d.add(&[Desc::Read(cmd_display_info()), Desc::Write(100), Desc::Write(400)]);

        assert!(g.process_ctrl_queue(&mut d.queue, &mem));
        assert!(!g.process_ctrl_queue(&mut d.queue, &mem), "nothing left");
        let used = d.used();
        assert_eq!(used.len(), 6);
        assert_eq!(used.iter().map(|u| u.1).collect::<Vec<_>>(), vec![24, 24, 24, 24, 24, 408]);
        for (addr, _) in [r0, r1, r2, r3, r4] {
            assert_eq!(resp_type(&d.read(addr, 24)), VIRTIO_GPU_RESP_OK_NODATA);
        }
        let mut info = d.read(r5[0].0, 100);
        info.extend(d.read(r5[1].0, 308));
        let info: RespDisplayInfo = read_struct(&info).unwrap();
        assert_eq!(info.hdr.type_.to_native(), VIRTIO_GPU_RESP_OK_DISPLAY_INFO);
        assert_eq!(Rect::from(info.pmodes[0].r), Rect::new(0, 0, 1280, 800));
        // Bytes past the response are untouched.
        assert_eq!(d.read(r5[1].0 + 308, 92), vec![0xee; 92]);

        let res = g.resource(1).unwrap();
        assert!(res.data == frame, "resource content differs from the guest frame");
        assert_eq!(res.format.drm_fourcc(), super::super::format::DRM_FORMAT_XRGB8888);
        let rgba = res.read_rgba8(Rect::new(0, 0, 1, 1)).unwrap();
        assert_eq!(rgba, vec![frame[2], frame[1], frame[0], 255]);
        assert_eq!(
            g.drain_events().collect::<Vec<_>>(),
            vec![
                GpuEvent::ScanoutSet { scanout_id: 0, resource_id: 1, rect: Rect::new(0, 0, w, h) },
                GpuEvent::ResourceFlush { resource_id: 1, rect: Rect::new(1, 2, 3, 4) },
            ]
        );
        assert_eq!(g.scanout(0).unwrap().flush_count, 1);
    }

    #[test]
    fn queue_malformed_chains() {
        let mem = new_mem();
        let mut d = Driver::new(&mem);
        let mut g = gpu();
        // 0: no writable descriptor.
        d.add(&[Desc::Read(cmd_create(1, 1, 4, 4))]);
        // 1: writable part too small for DISPLAY_INFO.
        let small = d.add(&[Desc::Read(cmd_display_info()), Desc::Write(24)]);
        // 2: write-only chain (no request at all).
        let wo = d.add(&[Desc::Write(24)]);
        // 3: readable descriptor outside guest memory.
        let oob = d.add(&[Desc::Raw { addr: MEM_SIZE + 4096, len: 64, write: false }, Desc::Write(24)]);
        // 4: readable descriptor with an overflowing range.
        let ovf = d.add(&[Desc::Raw { addr: u64::MAX - 8, len: 64, write: false }, Desc::Write(24)]);
        // 5: writable descriptor outside memory.
        d.add(&[Desc::Read(cmd_create(2, 1, 4, 4)), Desc::Raw { addr: MEM_SIZE, len: 24, write: true }]);
        // 6: request split over many tiny descriptors.
        let req = cmd_create(3, 1, 4, 4);
        let mut descs: Vec<Desc> = req.chunks(3).map(|c| Desc::Read(c.to_vec())).collect();
        descs.push(Desc::Write(24));
        let split = d.add(&descs);
        // 7: huge nr_entries in a chain that carries few entries.
        let mut huge = attach_header(3, 0x7fff_ffff);
        huge.extend(mem_entries(&[(DATA_START, 64)]));
        let huge_resp = d.request(&huge, 24);
        // 8: zero-length descriptors.
        let zero = d.add(&[Desc::Read(Vec::new()), Desc::Write(0), Desc::Write(24)]);
        // 9: writable descriptor before the readable one (tolerated).
        let rev = d.add(&[Desc::Write(24), Desc::Read(cmd_unref(3))]);

        assert!(g.process_ctrl_queue(&mut d.queue, &mem));
        let used = d.used();
        let lens: Vec<u32> = used.iter().map(|u| u.1).collect();
        assert_eq!(lens, vec![0, 0, 24, 24, 24, 0, 24, 24, 24, 24]);
        // The chain without a response buffer was still executed.
        assert!(g.resource(1).is_some());
        assert_eq!(d.read(small[0].0, 24), vec![0xee; 24]);
        assert_eq!(resp_type(&d.read(wo[0].0, 24)), VIRTIO_GPU_RESP_ERR_UNSPEC);
        assert_eq!(resp_type(&d.read(oob[0].0, 24)), VIRTIO_GPU_RESP_ERR_UNSPEC);
        assert_eq!(resp_type(&d.read(ovf[0].0, 24)), VIRTIO_GPU_RESP_ERR_UNSPEC);
        assert!(g.resource(2).is_some(), "executed even though the response could not be written");
        assert_eq!(resp_type(&d.read(split[0].0, 24)), VIRTIO_GPU_RESP_OK_NODATA);
        assert!(g.resource(3).is_none(), "unref'd by chain 9");
        assert_eq!(resp_type(&d.read(huge_resp.0, 24)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        assert_eq!(resp_type(&d.read(zero[1].0, 24)), VIRTIO_GPU_RESP_ERR_UNSPEC);
        assert_eq!(resp_type(&d.read(rev[0].0, 24)), VIRTIO_GPU_RESP_OK_NODATA);
    }

    #[test]
    fn queue_bad_head_index_and_cursor_queue() {
        let mem = new_mem();
        let mut d = Driver::new(&mem);
        let mut g = gpu();
        ok(&mut g, &mem, &cmd_create(1, 1, 4, 4));
        // Cursor queue: no response buffer, as the Linux driver does.
        d.add(&[Desc::Read(cmd_cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, 0, 1, 1, 1, (0, 0)))]);
        let resp = d.add(&[Desc::Read(cmd_cursor(VIRTIO_GPU_CMD_MOVE_CURSOR, 0, 0, 2, 3, (0, 0))), Desc::Write(24)]);
        assert!(g.process_cursor_queue(&mut d.queue, &mem));
        assert_eq!(d.used().iter().map(|u| u.1).collect::<Vec<_>>(), vec![0, 24]);
        assert_eq!(resp_type(&d.read(resp[0].0, 24)), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(g.drain_events().count(), 1, "update + move coalesced");
        // An avail ring entry pointing past the descriptor table.
        let avail = d.vq.avail_addr();
        let idx: u16 = mem.read_obj(avail.unchecked_add(2)).unwrap();
        mem.write_obj(QUEUE_SIZE + 7, avail.unchecked_add(4 + 2 * u64::from(idx))).unwrap();
        mem.write_obj(idx + 1, avail.unchecked_add(2)).unwrap();
        assert!(!g.process_ctrl_queue(&mut d.queue, &mem));
        assert_eq!(d.used().len(), 2);
    }

    // ------------------------------------------------------------ proptest

    const PROP_MAX_MEM: u64 = 64 << 10;

    #[derive(Clone, Debug)]
    enum Op {
        DisplayInfo,
        Edid(u32),
        Create { id: u32, format: u32, w: u32, h: u32 },
        Unref(u32),
        Attach { id: u32, entries: Vec<(u64, u32)>, nr: Option<u32> },
        Detach(u32),
        Transfer { id: u32, r: Rect, offset: u64 },
        SetScanout { sid: u32, id: u32, r: Rect },
        Flush { id: u32, r: Rect },
        Cursor { sid: u32, id: u32, x: i32, y: i32, hot: (u32, u32), is_move: bool },
        Raw { ty: u32, body: Vec<u8> },
        Truncated(Box<Op>, usize),
        Reset,
    }

    impl Op {
        fn queue(&self) -> QueueKind {
            match self {
                Op::Cursor { .. } => QueueKind::Cursor,
                Op::Truncated(op, _) => op.queue(),
                _ => QueueKind::Control,
            }
        }

        fn request(&self) -> Vec<u8> {
            match self {
                Op::DisplayInfo | Op::Reset => cmd_display_info(),
                Op::Edid(s) => cmd_edid(*s),
                Op::Create { id, format, w, h } => cmd_create(*id, *format, *w, *h),
                Op::Unref(id) => cmd_unref(*id),
                Op::Attach { id, entries, nr } => {
                    let mut v = attach_header(*id, nr.unwrap_or(entries.len() as u32));
                    v.extend(mem_entries(entries));
                    v
                }
                Op::Detach(id) => cmd_detach(*id),
                Op::Transfer { id, r, offset } => cmd_transfer(*id, (*r).into(), *offset),
                Op::SetScanout { sid, id, r } => cmd_set_scanout(*sid, *id, (*r).into()),
                Op::Flush { id, r } => cmd_flush(*id, (*r).into()),
                Op::Cursor { sid, id, x, y, hot, is_move } => {
                    let ty = if *is_move { VIRTIO_GPU_CMD_MOVE_CURSOR } else { VIRTIO_GPU_CMD_UPDATE_CURSOR };
                    cmd_cursor(ty, *sid, *id, *x, *y, *hot)
                }
                Op::Raw { ty, body } => {
                    let mut v = bytes(&hdr(*ty));
                    v.extend(body);
                    v
                }
                Op::Truncated(op, cut) => {
                    let mut v = op.request();
                    v.truncate(*cut);
                    v
                }
            }
        }
    }

    fn id() -> impl Strategy<Value = u32> {
        prop_oneof![8 => 0..5u32, 1 => Just(u32::MAX)]
    }

    fn dim() -> impl Strategy<Value = u32> {
        prop_oneof![8 => 0..40u32, 1 => Just(64u32), 1 => Just(16385u32), 1 => Just(u32::MAX)]
    }

    fn coord() -> impl Strategy<Value = u32> {
        prop_oneof![8 => 0..48u32, 1 => Just(u32::MAX), 1 => Just(u32::MAX - 1), 1 => Just(1u32 << 31)]
    }

    fn any_rect() -> impl Strategy<Value = Rect> {
        (coord(), coord(), coord(), coord()).prop_map(|(x, y, w, h)| Rect::new(x, y, w, h))
    }

    fn entry() -> impl Strategy<Value = (u64, u32)> {
        let addr = prop_oneof![
            8 => DATA_START..DATA_START + 0x4000,
            1 => Just(MEM_SIZE - 8),
            1 => Just(MEM_SIZE),
            1 => Just(u64::MAX - 4),
        ];
        let len = prop_oneof![8 => 0..8192u32, 1 => Just(u32::MAX)];
        (addr, len)
    }

    fn leaf_op() -> impl Strategy<Value = Op> {
        let format = prop_oneof![
            8 => proptest::sample::select(vec![1u32, 2, 3, 4, 67, 68, 121, 134]),
            1 => any::<u32>(),
        ];
        prop_oneof![
            1 => Just(Op::DisplayInfo),
            1 => (0..4u32).prop_map(Op::Edid),
            6 => (id(), format, dim(), dim()).prop_map(|(id, format, w, h)| Op::Create { id, format, w, h }),
            2 => id().prop_map(Op::Unref),
            4 => (id(), proptest::collection::vec(entry(), 0..4), proptest::option::weighted(0.2, prop_oneof![Just(0u32), Just(16385), Just(u32::MAX), 0..6u32]))
                .prop_map(|(id, entries, nr)| Op::Attach { id, entries, nr }),
            2 => id().prop_map(Op::Detach),
            6 => (id(), any_rect(), prop_oneof![8 => 0..8192u64, 1 => Just(u64::MAX)])
                .prop_map(|(id, r, offset)| Op::Transfer { id, r, offset }),
            4 => (0..4u32, id(), any_rect()).prop_map(|(sid, id, r)| Op::SetScanout { sid, id, r }),
            3 => (id(), any_rect()).prop_map(|(id, r)| Op::Flush { id, r }),
            3 => (0..4u32, id(), any::<i32>(), any::<i32>(), (0..80u32, 0..80u32), any::<bool>())
                .prop_map(|(sid, id, x, y, hot, is_move)| Op::Cursor { sid, id, x, y, hot, is_move }),
            1 => (prop_oneof![0x100..0x10eu32, 0x200..0x20au32, 0x300..0x302u32, any::<u32>()], proptest::collection::vec(any::<u8>(), 0..64))
                .prop_map(|(ty, body)| Op::Raw { ty, body }),
            1 => Just(Op::Reset),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            10 => leaf_op(),
            1 => (leaf_op(), 0..64usize).prop_map(|(op, cut)| Op::Truncated(Box::new(op), cut)),
        ]
    }

    fn prop_gpu() -> Gpu {
        Gpu::new(GpuConfig {
            num_scanouts: 3,
            preferred_size: (640, 480),
            max_host_memory: PROP_MAX_MEM,
            name: "prop".into(),
        })
    }

    fn fill_guest_memory(mem: &Mem) {
        mem.write_slice(&pattern(0x6000, 3), GuestAddress(DATA_START)).unwrap();
    }

    const RESPONSE_TYPES: [u32; 8] = [
        VIRTIO_GPU_RESP_OK_NODATA,
        VIRTIO_GPU_RESP_OK_DISPLAY_INFO,
        VIRTIO_GPU_RESP_OK_EDID,
        VIRTIO_GPU_RESP_ERR_UNSPEC,
        VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY,
        VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID,
        VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID,
        VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER,
    ];

    fn check_invariants(g: &mut Gpu, check_events: bool) -> Result<(), TestCaseError> {
        let sum: u64 = g.resources().map(|(_, r)| r.host_memory()).sum();
        prop_assert_eq!(g.host_memory_used(), sum);
        prop_assert!(g.host_memory_used() <= PROP_MAX_MEM);
        for (id, r) in g.resources() {
            prop_assert!(id != 0);
            prop_assert_eq!(r.data.len() as u64, u64::from(r.width) * u64::from(r.height) * 4);
            if let Some(b) = &r.backing {
                let mut off = 0;
                for e in b.entries() {
                    prop_assert_eq!(e.offset, off);
                    prop_assert!(e.len > 0);
                    off += e.len;
                }
                prop_assert_eq!(off, b.len());
            }
        }
        for i in 0..g.num_scanouts() {
            let s = g.scanout(i).unwrap();
            if s.resource_id == 0 {
                prop_assert_eq!(s.rect, Rect::default());
            } else {
                let r = g.resource(s.resource_id);
                prop_assert!(r.is_some(), "scanout {} shows missing resource {}", i, s.resource_id);
                let r = r.unwrap();
                prop_assert!(!s.rect.is_empty() && s.rect.fits_in(r.width, r.height));
            }
            if let Some(c) = &s.cursor {
                prop_assert!(c.hot_x < c.width && c.hot_y < c.height && c.width <= 64 && c.height <= 64);
                prop_assert_eq!(c.rgba.len() as u64, u64::from(c.width) * u64::from(c.height) * 4);
            }
        }
        let events: Vec<GpuEvent> = g.drain_events().collect();
        if !check_events {
            return Ok(());
        }
        for e in events {
            match e {
                GpuEvent::ResourceFlush { resource_id, rect } => {
                    let r = g.resource(resource_id);
                    prop_assert!(r.is_some());
                    let r = r.unwrap();
                    prop_assert!(!rect.is_empty() && rect.fits_in(r.width, r.height));
                }
                GpuEvent::ScanoutSet { scanout_id, resource_id, rect } => {
                    prop_assert!(scanout_id < g.num_scanouts());
                    prop_assert_eq!(resource_id == 0, rect.is_empty());
                }
                GpuEvent::CursorUpdate { scanout_id, image, .. } => {
                    prop_assert!(scanout_id < g.num_scanouts());
                    if let Some(c) = image {
                        prop_assert_eq!(c.rgba.len() as u64, u64::from(c.width) * u64::from(c.height) * 4);
                    }
                }
                GpuEvent::CursorMove { scanout_id, .. } => {
                    prop_assert!(scanout_id < g.num_scanouts())
                }
                GpuEvent::ResourceDestroyed { resource_id } => {
                    prop_assert!(g.resource(resource_id).is_none())
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn prop_random_commands(ops in proptest::collection::vec(op(), 1..60)) {
            let mem = new_mem();
            fill_guest_memory(&mem);
            let mut g = prop_gpu();
            for op in &ops {
                if let Op::Reset = op {
                    g.reset();
                    prop_assert_eq!(g.host_memory_used(), 0);
                    check_invariants(&mut g, true)?;
                    continue;
                }
                let req = op.request();
                let resp = g.handle_request(op.queue(), &req, &mem);
                prop_assert!(resp.len() >= 24);
                let ty = resp_type(&resp);
                prop_assert!(RESPONSE_TYPES.contains(&ty), "bad response {:#x}", ty);
                let want_len = match ty {
                    VIRTIO_GPU_RESP_OK_DISPLAY_INFO => size_of::<RespDisplayInfo>(),
                    VIRTIO_GPU_RESP_OK_EDID => size_of::<RespEdid>(),
                    _ => 24,
                };
                prop_assert_eq!(resp.len(), want_len);
                check_invariants(&mut g, true)?;
            }
        }

        /// TRANSFER_TO_HOST_2D matches QEMU's formula on a scattered backing.
        #[test]
        fn prop_transfer_matches_reference(
            w in 1..24u32, h in 1..12u32,
            x in 0..26u32, y in 0..14u32, rw in 0..26u32, rh in 0..14u32,
            offset in 0..3000u64,
            cuts in proptest::collection::vec(1..200usize, 0..6),
            extra in 0..64usize,
        ) {
            let mem = new_mem();
            let mut g = gpu();
            ok(&mut g, &mem, &cmd_create(1, 67, w, h));
            let backing = pattern((w * h * 4) as usize + extra, 5);
            // Cut the backing into pieces placed at scattered addresses.
            let mut entries = Vec::new();
            let mut pos = 0usize;
            let mut addr = DATA_START;
            for c in cuts.iter().chain(std::iter::once(&usize::MAX)) {
                let end = pos.saturating_add(*c).min(backing.len());
                if end > pos {
                    mem.write_slice(&backing[pos..end], GuestAddress(addr)).unwrap();
                    entries.push((addr, (end - pos) as u32));
                    addr += (end - pos) as u64 + 13;
                }
                pos = end;
            }
            ok(&mut g, &mem, &cmd_attach(1, &entries));
            let r = Rect::new(x, y, rw, rh);
            let t = exec(&mut g, &mem, &cmd_transfer(1, r.into(), offset));
            let mut expect = vec![0u8; (w * h * 4) as usize];
            if !r.fits_in(w, h) {
                prop_assert_eq!(t, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
            } else if reference_transfer(&mut expect, w, &backing, r, offset).is_some() {
                prop_assert_eq!(t, VIRTIO_GPU_RESP_OK_NODATA);
            } else {
                prop_assert_eq!(t, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
                expect = vec![0u8; (w * h * 4) as usize];
            }
            prop_assert_eq!(&g.resource(1).unwrap().data, &expect);
        }

        /// Random chains through a real queue: every chain is used exactly once.
        #[test]
        fn prop_queue_chains(chains in proptest::collection::vec(
            (op(), 0..4usize, proptest::collection::vec(
                prop_oneof![
                    4 => proptest::sample::select(vec![0u32, 8, 24, 408, 1056, 2000]).prop_map(Desc::Write),
                    1 => Just(Desc::Raw { addr: MEM_SIZE - 4, len: 24, write: true }),
                ], 0..3),
             any::<u8>()),
            1..40)) {
            let mem = new_mem();
            fill_guest_memory(&mem);
            let mut d = Driver::new(&mem);
            d.next_addr = DATA_START + 0x10000;
            let mut g = prop_gpu();
            let mut cursor_chains = 0u16;
            let mut ctrl: Vec<Vec<Desc>> = Vec::new();
            let mut writable_sizes = Vec::new();
            for (op, split, writes, garbage) in &chains {
                let req = op.request();
                let mut descs = Vec::new();
                match garbage % 8 {
                    0 => descs.push(Desc::Raw { addr: MEM_SIZE + u64::from(*garbage), len: 64, write: false }),
                    1 => {}
                    _ => {
                        let at = (*split * 13).min(req.len());
                        if at > 0 { descs.push(Desc::Read(req[..at].to_vec())); }
                        descs.push(Desc::Read(req[at..].to_vec()));
                    }
                }
                descs.extend(writes.iter().cloned());
                if descs.is_empty() {
                    descs.push(Desc::Write(24));
                }
                if op.queue() == QueueKind::Cursor {
                    cursor_chains += 1;
                }
                writable_sizes.push(descs.iter().map(|d| match d {
                    Desc::Write(n) => u64::from(*n),
                    Desc::Raw { len, write: true, .. } => u64::from(*len),
                    _ => 0,
                }).sum::<u64>());
                ctrl.push(descs);
            }
            for descs in &ctrl {
                d.add(descs);
            }
            // Everything goes through the control queue (cursor commands get ERR_UNSPEC there).
            let added = g.process_ctrl_queue(&mut d.queue, &mem);
            prop_assert!(added);
            let used = d.used();
            prop_assert_eq!(used.len(), chains.len());
            prop_assert_eq!(used.len() as u16, d.chains);
            let _ = cursor_chains;
            for (i, (_, len)) in used.iter().enumerate() {
                prop_assert!(u64::from(*len) <= writable_sizes[i]);
                prop_assert!([0u32, 24, 408, 1056].contains(len), "used len {}", len);
            }
            prop_assert!(!g.process_ctrl_queue(&mut d.queue, &mem));
            // Events of many chains at once may refer to ids reused later.
            check_invariants(&mut g, false)?;
        }
    }
}
