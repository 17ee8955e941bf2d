//! Guest errors, their `VIRTIO_GPU_RESP_ERR_*` codes (5.7.6.7), and response bytes.

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::virtio::backing::BackingError;

/// Guest errors, each mapped to a response code; used for rate-limited logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[repr(u8)]
pub(super) enum GuestError {
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

impl From<&Error3d> for GuestError {
    fn from(e: &Error3d) -> Self {
        match e {
            Error3d::Resource(_) => GuestError::UnknownResource,
            Error3d::Context(_) => GuestError::InvalidContext,
            Error3d::Capset(_) | Error3d::NoBacking | Error3d::Stream(_) | Error3d::Refused(_) => GuestError::Invalid3d,
            Error3d::Renderer(_) | Error3d::WorkerGone => GuestError::Renderer3d,
            Error3d::Worker { fault, .. } => match *fault {
                "VirglFailed" | "MapFailed" | "NoReadBack" | "WorkerError" => GuestError::Renderer3d,
                "UnknownResource3d" => GuestError::UnknownResource,
                "InvalidContext" => GuestError::InvalidContext,
                _ => GuestError::Invalid3d,
            },
        }
    }
}

/// Why a command failed: its kind (which gives the response code and is the key of the
/// once-per-kind log) and, for a 3D command, the error of the 3D layer it came from, with its
/// own cause (virglrenderer's call and code, or the stream parser's offset).
#[derive(Debug)]
pub(super) struct CommandError {
    pub(super) kind: GuestError,
    pub(super) cause: Option<Error3d>,
}

impl From<GuestError> for CommandError {
    fn from(kind: GuestError) -> Self {
        CommandError { kind, cause: None }
    }
}

impl From<Error3d> for CommandError {
    fn from(e: Error3d) -> Self {
        CommandError { kind: GuestError::from(&e), cause: Some(e) }
    }
}

impl From<BackingError> for CommandError {
    fn from(e: BackingError) -> Self {
        GuestError::from(e).into()
    }
}

impl std::fmt::Display for CommandError {
    /// "kind", or "kind: cause: its source: ...".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.kind)?;
        let mut source: Option<&dyn std::error::Error> = self.cause.as_ref().map(|c| c as _);
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

impl std::error::Error for CommandError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.as_ref().map(|c| c as _)
    }
}

impl From<BackingError> for GuestError {
    fn from(e: BackingError) -> Self {
        match e {
            BackingError::TooSmall => GuestError::BackingTooSmall,
            BackingError::GuestMemory => GuestError::GuestMemoryRead,
        }
    }
}

impl GuestError {
    /// The variant's name, as [`Gpu::faults`] counts it.
    pub(super) fn name(self) -> &'static str {
        use GuestError::*;
        match self {
            ShortHeader => "ShortHeader",
            ShortRequest => "ShortRequest",
            UnsupportedCommand => "UnsupportedCommand",
            WrongQueue => "WrongQueue",
            ZeroResourceId => "ZeroResourceId",
            DuplicateResourceId => "DuplicateResourceId",
            UnknownResource => "UnknownResource",
            UnknownFormat => "UnknownFormat",
            InvalidSize => "InvalidSize",
            HostMemoryLimit => "HostMemoryLimit",
            AllocationFailed => "AllocationFailed",
            BadEntryCount => "BadEntryCount",
            BackingOutsideMemory => "BackingOutsideMemory",
            BackingAlreadyAttached => "BackingAlreadyAttached",
            NoBacking => "NoBacking",
            RectOutOfBounds => "RectOutOfBounds",
            EmptyRect => "EmptyRect",
            BackingTooSmall => "BackingTooSmall",
            GuestMemoryRead => "GuestMemoryRead",
            InvalidScanoutId => "InvalidScanoutId",
            CursorTooLarge => "CursorTooLarge",
            MalformedChain => "MalformedChain",
            ResponseTooSmall => "ResponseTooSmall",
            ResponseWrite => "ResponseWrite",
            UsedRing => "UsedRing",
            InvalidContext => "InvalidContext",
            Invalid3d => "Invalid3d",
            Renderer3d => "Renderer3d",
        }
    }

    /// The `VIRTIO_GPU_RESP_ERR_*` answered for this error.
    pub(super) fn response(self) -> u32 {
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
pub(super) enum Reply {
    NoData,
    DisplayInfo(Box<RespDisplayInfo>),
    Edid(Box<RespEdid>),
    CapsetInfo(RespCapsetInfo),
    /// RESP_OK_CAPSET header followed by these capset bytes.
    Capset(Vec<u8>),
}

/// What a held response waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Wait {
    /// The host fence created after its command; `ctx` is the command's guest context (a ring
    /// fence dies with it).
    Fence { fence: HostFence, ctx: u32 },
    /// Every response held before it (no fence could be created for it).
    Earlier,
    /// Its fence has retired; it waits only for the responses held before it on its timeline.
    Retired,
}

/// The timeline of a fenced response: the global one (`None`) or (guest context, ring). A
/// guest takes a fence id to mean that every earlier fence of its timeline is done (Linux's
/// `virtio_gpu_fence_event_process`), so responses are answered in order per timeline.
pub(super) type Timeline = Option<(u32, u32)>;

/// A fenced command's response, held until what it waits for is done.
#[derive(Debug)]
pub(super) struct PendingReply {
    pub(super) head: u16,
    pub(super) writable: Vec<(GuestAddress, u32)>,
    pub(super) response: Vec<u8>,
    pub(super) wait: Wait,
    pub(super) timeline: Timeline,
}

/// Builds the response bytes: `body` with its header's type set to `ty` and
/// the fence fields of `req` echoed (5.7.6.7).
pub(super) fn response_bytes<T: ByteValued>(
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
