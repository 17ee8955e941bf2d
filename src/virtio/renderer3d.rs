//! The boundary between the device model and a 3D renderer: what [`super::device::Gpu`] asks of
//! one guest's 3D state ([`Renderer3d`]), in the guest's own resource and context ids, and the
//! errors and fences that come back ([`Error3d`], [`HostFence`]).
//!
//! The device model validates what it can see (command sizes, resource ids and kinds, host
//! memory) and hands the rest to a [`Renderer3d`]: `super::virgl3d::Virgl3d` over virglrenderer
//! in scanway, a fake without GL in the device tests. Ids are the guest's throughout; translating
//! them to a renderer's own id space is the renderer's business. Guest memory never crosses the
//! boundary as a `GuestMemory`: a backing goes as host iovecs computed by the device
//! ([`super::backing::Backing::host_iovecs`]), which keeps the trait object-safe.

use super::virgl_stream::StreamError;
use crate::renderer::virgl::{Box3d, Fence, ResourceCreate3d, ResourceInfo, VirglError};

/// Why a 3D command failed, with the renderer's or the stream parser's error it came from; the
/// device model turns it into a `VIRTIO_GPU_RESP_ERR_*` (`GuestError`) and logs it with its
/// cause.
#[derive(Debug, thiserror::Error)]
pub enum Error3d {
    /// Unknown or duplicate guest resource id (`ERR_INVALID_RESOURCE_ID`).
    #[error("unknown or duplicate 3D resource id {0}")]
    Resource(u32),
    /// Unknown or duplicate guest context id, or context 0 (`ERR_INVALID_CONTEXT_ID`).
    #[error("unknown or duplicate context id {0}")]
    Context(u32),
    /// `CTX_CREATE` with a capset the renderer does not offer (`ERR_INVALID_PARAMETER`).
    #[error("capset {0} is not VIRGL or VIRGL2")]
    Capset(u32),
    /// A transfer to or from a resource without backing (`ERR_INVALID_PARAMETER`).
    #[error("transfer with a resource that has no backing")]
    NoBacking,
    /// The `SUBMIT_3D` stream did not parse (`ERR_INVALID_PARAMETER`).
    #[error("SUBMIT_3D stream refused")]
    Stream(#[source] StreamError),
    /// The renderer refused the guest's arguments (`ERR_INVALID_PARAMETER`).
    #[error("virglrenderer refused the arguments")]
    Refused(#[source] VirglError),
    /// The renderer failed (`ERR_UNSPEC`).
    #[error("virglrenderer failed")]
    Renderer(#[source] VirglError),
    /// An isolated 3D worker refused or failed the command (its error, as it reported it):
    /// `ERR_INVALID_PARAMETER` for a refusal, else `ERR_UNSPEC`.
    #[error("3D worker: {message}")]
    Worker {
        /// The worker's [`Error3d::fault_name`].
        fault: &'static str,
        /// The resource, context or capset id of the error (0: none).
        id: u32,
        /// Its text.
        message: String,
    },
    /// The guest's isolated 3D worker is gone (crashed, killed, wedged or broke the protocol)
    /// until the VMM reconnects (`ERR_UNSPEC`).
    #[error("the 3D worker is gone")]
    WorkerGone,
}

impl Error3d {
    /// The name [`crate::virtio::device::Gpu::faults`] counts this error under: who refused
    /// (`StreamRefused` is scanway's stream parser; `VirglRefused` and `VirglFailed` are
    /// virglrenderer) and why.
    pub fn fault_name(&self) -> &'static str {
        match self {
            Error3d::Resource(_) => "UnknownResource3d",
            Error3d::Context(_) => "InvalidContext",
            Error3d::Capset(_) => "UnknownCapset",
            Error3d::NoBacking => "NoBacking3d",
            Error3d::Stream(_) => "StreamRefused",
            Error3d::Refused(_) => "VirglRefused",
            Error3d::Renderer(_) => "VirglFailed",
            Error3d::Worker { fault, .. } => fault,
            Error3d::WorkerGone => "WorkerGone",
        }
    }
}

/// A fence created on the host for a guest's fenced command; the device holds the command's
/// response until a retired [`Fence`] the renderer reports [retires](HostFence::retired_by) it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HostFence {
    /// A global fence (`virgl_renderer_create_fence`): retires in creation order.
    Global(u32),
    /// A context fence on (host context, ring): retires in order on that ring.
    Context {
        /// Host context id (the renderer's, not the guest's).
        ctx: u32,
        /// The context's fence ring (`VIRTIO_GPU_FLAG_INFO_RING_IDX`).
        ring: u32,
        /// The host fence id on that ring.
        id: u64,
    },
}

impl HostFence {
    /// Whether `retired` (a fence the renderer reported done) retires this one: a report means
    /// every earlier fence of its timeline is done too (fences are merged).
    pub fn retired_by(&self, retired: &Fence) -> bool {
        match *self {
            HostFence::Global(id) => {
                // Global fences retire in order: everything up to the reported id is done.
                retired.global && (retired.fence_id as u32).wrapping_sub(id) as i32 >= 0
            }
            HostFence::Context { ctx, ring, id } => {
                !retired.global && retired.ctx_id == ctx && retired.ring_idx == ring && retired.fence_id >= id
            }
        }
    }
}

/// What `GET_CAPSET_INFO` (5.7.6.9) answers for one capset index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CapsetInfo {
    /// Capset id (`VIRTIO_GPU_CAPSET_VIRGL` 1, `VIRTIO_GPU_CAPSET_VIRGL2` 2, ...).
    pub id: u32,
    /// Highest capset version offered.
    pub max_version: u32,
    /// Size of the capset at that version, bytes.
    pub max_size: u32,
}

/// One `TRANSFER_TO_HOST_3D` / `TRANSFER_FROM_HOST_3D` (5.7.6.9), or a `TRANSFER_TO_HOST_2D`
/// into a 3D resource, between a resource and its attached backing, in guest ids.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Transfer3d {
    /// Guest resource id (a live 3D resource of the device).
    pub resource: u32,
    /// Guest context of the command header; 0: none (the renderer's own context).
    pub ctx: u32,
    /// Mipmap level.
    pub level: u32,
    /// Bytes per row in the backing; 0: tightly packed.
    pub stride: u32,
    /// Bytes per layer / slice in the backing; 0: tightly packed.
    pub layer_stride: u32,
    /// Region of the resource, pixels (bytes along `x` for a buffer).
    pub bbox: Box3d,
    /// Byte offset in the backing where the region starts.
    pub offset: u64,
    /// `true`: backing to resource (`TO_HOST`); `false`: resource to backing (`FROM_HOST`).
    pub to_host: bool,
}

/// One guest's 3D renderer, as the device model drives it. Ids are the guest's; every method
/// answers for this guest only. The device has checked, before each call, what its own tables
/// can tell (a resource id names a live 3D resource of the guest, except for
/// [`Renderer3d::resource_create`] where it names none); context ids come from the guest
/// unchecked, and an unknown one is [`Error3d::Context`].
pub trait Renderer3d: std::fmt::Debug {
    /// Number of capsets offered: `num_capsets` of the configuration space (5.7.4).
    fn num_capsets(&self) -> u32;

    /// `GET_CAPSET_INFO`: the capset at `index` (0..[`Renderer3d::num_capsets`]); `None` for an
    /// index out of range.
    fn capset_info(&self, index: u32) -> Option<CapsetInfo>;

    /// `GET_CAPSET`: the bytes of capset `id` at `version` (as many as its `max_size`); `None`
    /// for an unknown id, a version above the highest, or a capset too large to answer.
    fn capset(&mut self, id: u32, version: u32) -> Option<Vec<u8>>;

    /// `CTX_CREATE`: guest context `ctx` on capset `capset` (the low 8 bits of `context_init`;
    /// 0: the renderer's default), `name` the guest's debug name. Errors: context 0 or one that
    /// exists ([`Error3d::Context`]), a capset not offered ([`Error3d::Capset`]), the renderer
    /// failing ([`Error3d::Renderer`]).
    fn context_create(&mut self, ctx: u32, capset: u32, name: &str) -> Result<(), Error3d>;

    /// `CTX_DESTROY`: destroy context `ctx`, which lets go of every resource attached to it.
    /// Error: an unknown context ([`Error3d::Context`]).
    fn context_destroy(&mut self, ctx: u32) -> Result<(), Error3d>;

    /// `CTX_ATTACH_RESOURCE` (`attach`) / `CTX_DETACH_RESOURCE`: let context `ctx` use 3D
    /// resource `res`, or stop. Attaching twice, or detaching what is not attached, does
    /// nothing. Errors: an unknown context or resource.
    fn context_attach(&mut self, ctx: u32, res: u32, attach: bool) -> Result<(), Error3d>;

    /// `RESOURCE_CREATE_3D`: create 3D resource `res` (not 0, unused; `args.handle` is ignored:
    /// the renderer picks its own). Errors: a used or zero id ([`Error3d::Resource`]), arguments
    /// the renderer refuses ([`Error3d::Refused`]).
    fn resource_create(&mut self, res: u32, args: ResourceCreate3d) -> Result<(), Error3d>;

    /// `RESOURCE_UNREF` of a 3D resource: detach it from every context and its backing, and
    /// free it. The resource is gone afterwards whatever the result (the device forgets it
    /// either way); an error only reports an unknown id.
    fn resource_unref(&mut self, res: u32) -> Result<(), Error3d>;

    /// `RESOURCE_ATTACH_BACKING` of 3D resource `res`: its guest backing as host iovecs (in
    /// backing order; lengths in bytes, summing to the backing's length). The renderer copies
    /// the array and reads and writes through the pointers until the backing is detached.
    /// Errors: an unknown resource, the renderer refusing (one already attached, ...).
    ///
    /// # Safety
    /// Every iovec must describe memory that stays mapped, readable and writable, and is not
    /// aliased by Rust references while the renderer may use it, until the backing goes:
    /// [`Renderer3d::detach_backing`], [`Renderer3d::resource_unref`], [`Renderer3d::reset`] or
    /// dropping the renderer.
    unsafe fn attach_backing(&mut self, res: u32, iov: &[libc::iovec]) -> Result<(), Error3d>;

    /// `RESOURCE_DETACH_BACKING` of 3D resource `res`: the renderer stops using the iovecs of
    /// [`Renderer3d::attach_backing`] (no-op without a backing). Error: an unknown resource.
    fn detach_backing(&mut self, res: u32) -> Result<(), Error3d>;

    /// `TRANSFER_TO_HOST_3D` / `TRANSFER_FROM_HOST_3D` (and `TRANSFER_TO_HOST_2D` of a 3D
    /// resource): copy `t.bbox` between the resource and its backing. Errors: an unknown
    /// resource, no backing attached ([`Error3d::NoBacking`]), a box or offset the renderer
    /// refuses ([`Error3d::Refused`]).
    fn transfer(&mut self, t: &Transfer3d) -> Result<(), Error3d>;

    /// `SUBMIT_3D`: execute the command stream `stream` (little-endian dwords as the guest
    /// wrote them; the renderer may rewrite them in place) in context `ctx`. Errors: an unknown
    /// context, a stream refused before execution ([`Error3d::Stream`]), the renderer failing.
    fn submit(&mut self, ctx: u32, stream: &mut [u32]) -> Result<(), Error3d>;

    /// Fence a command (`VIRTIO_GPU_FLAG_FENCE`, 5.7.6.7): a fence that retires once
    /// everything submitted so far on its timeline is done, on ring `ring` of context `ctx`
    /// when the guest gave one (`VIRTIO_GPU_FLAG_INFO_RING_IDX`), else on the global timeline.
    /// Retired fences come back through the renderer's own channel (virglrenderer's fence
    /// callbacks) to [`super::device::Gpu::retire_fences`]. Errors: an unknown context (ring
    /// fences), the renderer failing.
    fn create_fence(&mut self, ctx: u32, ring: Option<u32>) -> Result<HostFence, Error3d>;

    /// The GL texture behind 3D resource `res`, for zero-copy scanout; `None` for an unknown
    /// resource or one without a texture.
    fn resource_info(&self, res: u32) -> Option<ResourceInfo>;

    /// Device reset or guest disconnect: destroy every context and resource of this guest
    /// (their backings are detached).
    fn reset(&mut self);

    /// The guest's memory after a `SET_MEM_TABLE`: every region mapped now (earlier ones stay
    /// mapped until [`Renderer3d::reset`]). In-process renderers use the host iovecs directly
    /// and ignore it; an isolated worker maps the regions itself.
    fn set_guest_memory(&mut self, _regions: &[HostRegion<'_>]) {}

    /// The fences this renderer retired through a channel of its own (an isolated worker),
    /// taken; `None` for a renderer whose fences come through the process-wide virglrenderer
    /// (handed to every guest by the compositor).
    fn own_fences(&mut self) -> Option<Vec<Fence>> {
        None
    }

    /// A descriptor that becomes readable when [`Renderer3d::own_fences`] may have something
    /// (or the renderer's state changed); `None`: nothing to poll.
    fn wake_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    /// Copy `rect` of 3D resource `res` (level 0) into a buffer laid out as the whole resource
    /// and return that buffer (`rect.stride * rect.rows` bytes; only `rect` is current), for
    /// renderers whose textures the compositor cannot sample ([`Renderer3d::resource_info`]
    /// is `None`). `None`: not available (in-process renderers, an unknown resource, a worker
    /// that is gone).
    fn read_back(&mut self, _res: u32, _rect: ReadBack) -> Option<&[u8]> {
        None
    }

    /// What runs this guest's 3D, for `scanway list` and the overlay.
    fn status(&self) -> Renderer3dStatus {
        Renderer3dStatus::Shared
    }

    /// 3D resource `res`'s texture (level 0) as a dmabuf from another process, for renderers
    /// whose textures the compositor cannot sample directly but can import (an isolated worker
    /// whose EGL exports dmabufs): zero copies across the process boundary. `None`: not
    /// available (then [`Renderer3d::read_back`]).
    fn export_scanout(&mut self, _res: u32) -> Option<ExportedScanout> {
        None
    }
}

/// A 3D resource's texture exported by another process ([`Renderer3d::export_scanout`]).
#[derive(Debug)]
pub struct ExportedScanout {
    /// The texture's storage, the resource's size.
    pub dmabuf: smithay::backend::allocator::dmabuf::Dmabuf,
    /// Row 0 is the top row (`VIRGL_RESOURCE_Y_0_TOP`): shown flipped, as in the shared mode.
    pub y_0_top: bool,
}

/// One region of guest memory as this process maps it (from `SET_MEM_TABLE`).
#[derive(Debug, Clone, Copy)]
pub struct HostRegion<'a> {
    /// Host address of the region's first byte here.
    pub host: usize,
    /// Length, bytes.
    pub len: u64,
    /// The VMM's descriptor of the memory.
    pub fd: std::os::fd::BorrowedFd<'a>,
    /// Where the region starts in `fd`, bytes.
    pub fd_offset: u64,
}

/// A box to read back and the buffer it goes into ([`Renderer3d::read_back`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadBack {
    /// Left column of the box, pixels.
    pub x: u32,
    /// Top row of the box, pixels.
    pub y: u32,
    /// Width of the box, pixels.
    pub width: u32,
    /// Height of the box, pixels.
    pub height: u32,
    /// Bytes per row of the buffer (the resource's width times 4).
    pub stride: u32,
    /// Rows of the buffer (the resource's height).
    pub rows: u32,
}

/// Where a guest's 3D runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renderer3dStatus {
    /// In scanway's process, in the compositor's share group: scanouts sampled in place.
    Shared,
    /// In a worker process of its own; scanouts read back and uploaded.
    Isolated(WorkerStatus),
}

/// An isolated 3D worker's state and counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerStatus {
    /// Process id of the current (or last) worker.
    pub pid: Option<u32>,
    /// Whether it is running.
    pub running: bool,
    /// Workers started after the first (on reconnects after one was lost).
    pub restarts: u32,
    /// Workers lost (crashed, killed, wedged, broke the protocol).
    pub lost: u32,
    /// Why the last one was lost, with its exit status.
    pub reason: Option<String>,
    /// Scanout resources exported as dmabufs (no copies).
    pub exports: u64,
    /// Read-backs of scanout rectangles (copies).
    pub read_backs: u64,
    /// Bytes read back.
    pub read_back_bytes: u64,
}
