//! Wire format of the virtio-gpu device (virtio spec 1.2, section 5.7).
//!
//! Every struct here is `#[repr(C)]`, has no implicit padding, stores its
//! multi-byte fields as explicit little-endian [`Le32`]/[`Le64`] values, and
//! implements [`ByteValued`] so it can be copied to and from guest memory as
//! raw bytes. A `const` assertion pins the size of every struct to the size
//! given by the specification (and by Linux's `include/uapi/linux/virtio_gpu.h`).
//!
//! Requests are decoded with [`read_struct`], which copies a prefix of an
//! arbitrary byte slice into a zero-initialised struct, so neither the
//! alignment nor the length of guest-provided bytes can cause undefined
//! behaviour or a panic.

use std::mem::size_of;

use vm_memory::{ByteValued, Le32, Le64};

// --- Feature bits (5.7.3) -------------------------------------------------

/// 3D mode via virgl is supported (feature bit number, not mask).
pub const VIRTIO_GPU_F_VIRGL: u32 = 0;
/// `VIRTIO_GPU_CMD_GET_EDID` is supported (feature bit number).
pub const VIRTIO_GPU_F_EDID: u32 = 1;
/// Assigning resources UUIDs for export is supported (feature bit number).
pub const VIRTIO_GPU_F_RESOURCE_UUID: u32 = 2;
/// Blob resources are supported (feature bit number).
pub const VIRTIO_GPU_F_RESOURCE_BLOB: u32 = 3;
/// Multiple context types and synchronization timelines (feature bit number).
pub const VIRTIO_GPU_F_CONTEXT_INIT: u32 = 4;

// --- Device configuration (5.7.4) -------------------------------------------

/// `virtio_gpu_config.events_read` bit: the display configuration changed.
pub const VIRTIO_GPU_EVENT_DISPLAY: u32 = 1;
/// Maximum number of scanouts a device can expose (5.7.6.8, `pmodes[16]`).
pub const VIRTIO_GPU_MAX_SCANOUTS: u32 = 16;

// --- Control header flags (5.7.6.7) -----------------------------------------

/// The request carries a fence; the response must echo `fence_id` and `ctx_id`
/// and only be written once the command has completed.
pub const VIRTIO_GPU_FLAG_FENCE: u32 = 1;
/// `ring_idx` of the header is valid (only with `VIRTIO_GPU_F_CONTEXT_INIT`).
pub const VIRTIO_GPU_FLAG_INFO_RING_IDX: u32 = 2;

// --- Command types (5.7.6.7, `enum virtio_gpu_ctrl_type`) -------------------

/// 2D: query the scanouts' preferred modes.
pub const VIRTIO_GPU_CMD_GET_DISPLAY_INFO: u32 = 0x0100;
/// 2D: create a host resource.
pub const VIRTIO_GPU_CMD_RESOURCE_CREATE_2D: u32 = 0x0101;
/// 2D: destroy a resource.
pub const VIRTIO_GPU_CMD_RESOURCE_UNREF: u32 = 0x0102;
/// 2D: set (or disable) the resource shown by a scanout.
pub const VIRTIO_GPU_CMD_SET_SCANOUT: u32 = 0x0103;
/// 2D: show updated contents of a resource.
pub const VIRTIO_GPU_CMD_RESOURCE_FLUSH: u32 = 0x0104;
/// 2D: copy guest backing into the host copy of a resource.
pub const VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D: u32 = 0x0105;
/// 2D: assign guest pages as backing of a resource.
pub const VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING: u32 = 0x0106;
/// 2D: remove the guest backing of a resource.
pub const VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING: u32 = 0x0107;
/// Query a capability set's info.
pub const VIRTIO_GPU_CMD_GET_CAPSET_INFO: u32 = 0x0108;
/// Fetch a capability set.
pub const VIRTIO_GPU_CMD_GET_CAPSET: u32 = 0x0109;
/// Fetch a scanout's EDID (needs `VIRTIO_GPU_F_EDID`).
pub const VIRTIO_GPU_CMD_GET_EDID: u32 = 0x010a;
/// Assign a UUID to a resource (needs `VIRTIO_GPU_F_RESOURCE_UUID`).
pub const VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID: u32 = 0x010b;
/// Create a blob resource (needs `VIRTIO_GPU_F_RESOURCE_BLOB`).
pub const VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB: u32 = 0x010c;
/// Scan out a blob resource.
pub const VIRTIO_GPU_CMD_SET_SCANOUT_BLOB: u32 = 0x010d;
/// 3D: create a rendering context.
pub const VIRTIO_GPU_CMD_CTX_CREATE: u32 = 0x0200;
/// 3D: destroy a rendering context.
pub const VIRTIO_GPU_CMD_CTX_DESTROY: u32 = 0x0201;
/// 3D: attach a resource to a context.
pub const VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE: u32 = 0x0202;
/// 3D: detach a resource from a context.
pub const VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE: u32 = 0x0203;
/// 3D: create a 3D resource.
pub const VIRTIO_GPU_CMD_RESOURCE_CREATE_3D: u32 = 0x0204;
/// 3D: transfer guest backing to a host 3D resource.
pub const VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D: u32 = 0x0205;
/// 3D: transfer a host 3D resource to guest backing.
pub const VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D: u32 = 0x0206;
/// 3D: submit a command buffer.
pub const VIRTIO_GPU_CMD_SUBMIT_3D: u32 = 0x0207;
/// Map a host-visible blob into the shared memory region.
pub const VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB: u32 = 0x0208;
/// Unmap a blob.
pub const VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB: u32 = 0x0209;
/// Cursor queue: set the cursor image, hot spot and position.
pub const VIRTIO_GPU_CMD_UPDATE_CURSOR: u32 = 0x0300;
/// Cursor queue: move the cursor.
pub const VIRTIO_GPU_CMD_MOVE_CURSOR: u32 = 0x0301;

// --- Response types ---------------------------------------------------------

/// Success, header-only response.
pub const VIRTIO_GPU_RESP_OK_NODATA: u32 = 0x1100;
/// Success, [`RespDisplayInfo`] follows.
pub const VIRTIO_GPU_RESP_OK_DISPLAY_INFO: u32 = 0x1101;
/// Success, [`RespCapsetInfo`] follows.
pub const VIRTIO_GPU_RESP_OK_CAPSET_INFO: u32 = 0x1102;
/// Success, capability set data follows.
pub const VIRTIO_GPU_RESP_OK_CAPSET: u32 = 0x1103;
/// Success, [`RespEdid`] follows.
pub const VIRTIO_GPU_RESP_OK_EDID: u32 = 0x1104;
/// Success, resource UUID follows.
pub const VIRTIO_GPU_RESP_OK_RESOURCE_UUID: u32 = 0x1105;
/// Success, map info follows.
pub const VIRTIO_GPU_RESP_OK_MAP_INFO: u32 = 0x1106;
/// Unspecified error (also: unsupported command, malformed request header).
pub const VIRTIO_GPU_RESP_ERR_UNSPEC: u32 = 0x1200;
/// The device ran out of (host) memory for the request.
pub const VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY: u32 = 0x1201;
/// The scanout id is out of range.
pub const VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID: u32 = 0x1202;
/// The resource id is unknown, zero, or already in use.
pub const VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID: u32 = 0x1203;
/// The context id is unknown.
pub const VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID: u32 = 0x1204;
/// A request parameter is invalid (also: request shorter than its struct).
pub const VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER: u32 = 0x1205;

// --- 2D formats (5.7.6.8, `enum virtio_gpu_formats`); see `super::format` ---

/// Bytes in memory: B, G, R, A.
pub const VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM: u32 = 1;
/// Bytes in memory: B, G, R, X.
pub const VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM: u32 = 2;
/// Bytes in memory: A, R, G, B.
pub const VIRTIO_GPU_FORMAT_A8R8G8B8_UNORM: u32 = 3;
/// Bytes in memory: X, R, G, B.
pub const VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM: u32 = 4;
/// Bytes in memory: R, G, B, A.
pub const VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM: u32 = 67;
/// Bytes in memory: X, B, G, R.
pub const VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM: u32 = 68;
/// Bytes in memory: A, B, G, R.
pub const VIRTIO_GPU_FORMAT_A8B8G8R8_UNORM: u32 = 121;
/// Bytes in memory: R, G, B, X.
pub const VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM: u32 = 134;

/// Capset ids (5.7.6.7, `VIRTIO_GPU_CAPSET_*`), for later 3D work.
pub const VIRTIO_GPU_CAPSET_VIRGL: u32 = 1;
/// Capset id of virgl2.
pub const VIRTIO_GPU_CAPSET_VIRGL2: u32 = 2;

/// Returns a short, static, human-readable name for a control type (command or
/// response) for logs, or `"UNKNOWN"`.
pub fn ctrl_type_name(ty: u32) -> &'static str {
    match ty {
        VIRTIO_GPU_CMD_GET_DISPLAY_INFO => "GET_DISPLAY_INFO",
        VIRTIO_GPU_CMD_RESOURCE_CREATE_2D => "RESOURCE_CREATE_2D",
        VIRTIO_GPU_CMD_RESOURCE_UNREF => "RESOURCE_UNREF",
        VIRTIO_GPU_CMD_SET_SCANOUT => "SET_SCANOUT",
        VIRTIO_GPU_CMD_RESOURCE_FLUSH => "RESOURCE_FLUSH",
        VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D => "TRANSFER_TO_HOST_2D",
        VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING => "RESOURCE_ATTACH_BACKING",
        VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING => "RESOURCE_DETACH_BACKING",
        VIRTIO_GPU_CMD_GET_CAPSET_INFO => "GET_CAPSET_INFO",
        VIRTIO_GPU_CMD_GET_CAPSET => "GET_CAPSET",
        VIRTIO_GPU_CMD_GET_EDID => "GET_EDID",
        VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID => "RESOURCE_ASSIGN_UUID",
        VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB => "RESOURCE_CREATE_BLOB",
        VIRTIO_GPU_CMD_SET_SCANOUT_BLOB => "SET_SCANOUT_BLOB",
        VIRTIO_GPU_CMD_CTX_CREATE => "CTX_CREATE",
        VIRTIO_GPU_CMD_CTX_DESTROY => "CTX_DESTROY",
        VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE => "CTX_ATTACH_RESOURCE",
        VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE => "CTX_DETACH_RESOURCE",
        VIRTIO_GPU_CMD_RESOURCE_CREATE_3D => "RESOURCE_CREATE_3D",
        VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D => "TRANSFER_TO_HOST_3D",
        VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D => "TRANSFER_FROM_HOST_3D",
        VIRTIO_GPU_CMD_SUBMIT_3D => "SUBMIT_3D",
        VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB => "RESOURCE_MAP_BLOB",
        VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB => "RESOURCE_UNMAP_BLOB",
        VIRTIO_GPU_CMD_UPDATE_CURSOR => "UPDATE_CURSOR",
        VIRTIO_GPU_CMD_MOVE_CURSOR => "MOVE_CURSOR",
        VIRTIO_GPU_RESP_OK_NODATA => "OK_NODATA",
        VIRTIO_GPU_RESP_OK_DISPLAY_INFO => "OK_DISPLAY_INFO",
        VIRTIO_GPU_RESP_OK_CAPSET_INFO => "OK_CAPSET_INFO",
        VIRTIO_GPU_RESP_OK_CAPSET => "OK_CAPSET",
        VIRTIO_GPU_RESP_OK_EDID => "OK_EDID",
        VIRTIO_GPU_RESP_OK_RESOURCE_UUID => "OK_RESOURCE_UUID",
        VIRTIO_GPU_RESP_OK_MAP_INFO => "OK_MAP_INFO",
        VIRTIO_GPU_RESP_ERR_UNSPEC => "ERR_UNSPEC",
        VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY => "ERR_OUT_OF_MEMORY",
        VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID => "ERR_INVALID_SCANOUT_ID",
        VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID => "ERR_INVALID_RESOURCE_ID",
        VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID => "ERR_INVALID_CONTEXT_ID",
        VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER => "ERR_INVALID_PARAMETER",
        _ => "UNKNOWN",
    }
}

/// Copies the first `size_of::<T>()` bytes of `bytes` into a new `T`.
///
/// Returns `None` if `bytes` is shorter than `T`; extra bytes are ignored.
/// Works for any alignment of `bytes`.
pub fn read_struct<T: ByteValued + Default>(bytes: &[u8]) -> Option<T> {
    let src = bytes.get(..size_of::<T>())?;
    let mut value = T::default();
    value.as_mut_slice().copy_from_slice(src);
    Some(value)
}

macro_rules! byte_valued {
    ($($ty:ty = $size:expr),* $(,)?) => {
        $(
            // SAFETY: the type is `#[repr(C)]`, made only of integer fields,
            // `Le32`/`Le64` and byte arrays, and the size assertion below proves
            // it has no padding, so every bit pattern is a valid value.
            unsafe impl ByteValued for $ty {}
            const _: () = assert!(size_of::<$ty>() == $size);
        )*
    };
}

/// `struct virtio_gpu_ctrl_hdr` (5.7.6.7): header of every request and response.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtrlHdr {
    /// Command or response type (`VIRTIO_GPU_CMD_*` / `VIRTIO_GPU_RESP_*`).
    pub type_: Le32,
    /// `VIRTIO_GPU_FLAG_*` bits.
    pub flags: Le32,
    /// Fence id, valid with `VIRTIO_GPU_FLAG_FENCE`.
    pub fence_id: Le64,
    /// 3D rendering context id (0 for 2D commands).
    pub ctx_id: Le32,
    /// Fence timeline index, valid with `VIRTIO_GPU_FLAG_INFO_RING_IDX`.
    pub ring_idx: u8,
    /// Must be zero.
    pub padding: [u8; 3],
}

/// `struct virtio_gpu_rect`: rectangle in pixels.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuRect {
    /// Left edge, pixels.
    pub x: Le32,
    /// Top edge, pixels.
    pub y: Le32,
    /// Width, pixels.
    pub width: Le32,
    /// Height, pixels.
    pub height: Le32,
}

/// One entry of `virtio_gpu_resp_display_info.pmodes` (5.7.6.8).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DisplayOne {
    /// Preferred position and size of the scanout, pixels.
    pub r: GpuRect,
    /// Non-zero when the scanout is enabled (connected).
    pub enabled: Le32,
    /// Reserved, zero.
    pub flags: Le32,
}

/// `struct virtio_gpu_resp_display_info`: response to GET_DISPLAY_INFO.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RespDisplayInfo {
    /// `type_ = VIRTIO_GPU_RESP_OK_DISPLAY_INFO`.
    pub hdr: CtrlHdr,
    /// One entry per possible scanout; unused ones are all-zero.
    pub pmodes: [DisplayOne; VIRTIO_GPU_MAX_SCANOUTS as usize],
}

/// `struct virtio_gpu_get_edid`: request of GET_EDID.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GetEdid {
    /// `type_ = VIRTIO_GPU_CMD_GET_EDID`.
    pub hdr: CtrlHdr,
    /// Scanout whose EDID is requested.
    pub scanout: Le32,
    /// Reserved.
    pub padding: Le32,
}

/// Size in bytes of the `edid` array of [`RespEdid`].
pub const RESP_EDID_MAX: usize = 1024;

/// `struct virtio_gpu_resp_edid`: response to GET_EDID.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RespEdid {
    /// `type_ = VIRTIO_GPU_RESP_OK_EDID`.
    pub hdr: CtrlHdr,
    /// Number of valid bytes in `edid`.
    pub size: Le32,
    /// Reserved.
    pub padding: Le32,
    /// The EDID blob, zero-padded.
    pub edid: [u8; RESP_EDID_MAX],
}

impl Default for RespEdid {
    fn default() -> Self {
        RespEdid { hdr: CtrlHdr::default(), size: Le32::default(), padding: Le32::default(), edid: [0; RESP_EDID_MAX] }
    }
}

/// `struct virtio_gpu_resource_create_2d`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceCreate2d {
    /// `type_ = VIRTIO_GPU_CMD_RESOURCE_CREATE_2D`.
    pub hdr: CtrlHdr,
    /// Guest-chosen id, non-zero and unused.
    pub resource_id: Le32,
    /// `VIRTIO_GPU_FORMAT_*`.
    pub format: Le32,
    /// Width, pixels.
    pub width: Le32,
    /// Height, pixels.
    pub height: Le32,
}

/// `struct virtio_gpu_resource_unref`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceUnref {
    /// `type_ = VIRTIO_GPU_CMD_RESOURCE_UNREF`.
    pub hdr: CtrlHdr,
    /// Resource to destroy.
    pub resource_id: Le32,
    /// Reserved.
    pub padding: Le32,
}

/// `struct virtio_gpu_set_scanout`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetScanout {
    /// `type_ = VIRTIO_GPU_CMD_SET_SCANOUT`.
    pub hdr: CtrlHdr,
    /// Source rectangle within the resource, pixels.
    pub r: GpuRect,
    /// Scanout to configure.
    pub scanout_id: Le32,
    /// Resource to show, 0 disables the scanout.
    pub resource_id: Le32,
}

/// `struct virtio_gpu_resource_flush`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceFlush {
    /// `type_ = VIRTIO_GPU_CMD_RESOURCE_FLUSH`.
    pub hdr: CtrlHdr,
    /// Damaged rectangle in resource coordinates, pixels.
    pub r: GpuRect,
    /// Resource to flush.
    pub resource_id: Le32,
    /// Reserved.
    pub padding: Le32,
}

/// `struct virtio_gpu_transfer_to_host_2d`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferToHost2d {
    /// `type_ = VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D`.
    pub hdr: CtrlHdr,
    /// Destination rectangle in the resource, pixels.
    pub r: GpuRect,
    /// Byte offset into the backing of the first pixel of the rectangle.
    pub offset: Le64,
    /// Destination resource.
    pub resource_id: Le32,
    /// Reserved.
    pub padding: Le32,
}

/// `struct virtio_gpu_resource_attach_backing`; followed by `nr_entries`
/// [`MemEntry`] in the readable part of the chain.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceAttachBacking {
    /// `type_ = VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING`.
    pub hdr: CtrlHdr,
    /// Resource to attach to.
    pub resource_id: Le32,
    /// Number of [`MemEntry`] following.
    pub nr_entries: Le32,
}

/// `struct virtio_gpu_mem_entry`: one guest-physical range of backing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemEntry {
    /// Guest physical address.
    pub addr: Le64,
    /// Length, bytes.
    pub length: Le32,
    /// Reserved.
    pub padding: Le32,
}

/// `struct virtio_gpu_resource_detach_backing`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceDetachBacking {
    /// `type_ = VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING`.
    pub hdr: CtrlHdr,
    /// Resource to detach from.
    pub resource_id: Le32,
    /// Reserved.
    pub padding: Le32,
}

/// `struct virtio_gpu_cursor_pos` (5.7.6.10).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CursorPos {
    /// Scanout the cursor is on.
    pub scanout_id: Le32,
    /// Position in scanout coordinates, pixels (reinterpreted as `i32`).
    pub x: Le32,
    /// Position in scanout coordinates, pixels (reinterpreted as `i32`).
    pub y: Le32,
    /// Reserved.
    pub padding: Le32,
}

/// `struct virtio_gpu_update_cursor`: request of UPDATE_CURSOR and MOVE_CURSOR.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpdateCursor {
    /// `type_ = VIRTIO_GPU_CMD_UPDATE_CURSOR` or `..._MOVE_CURSOR`.
    pub hdr: CtrlHdr,
    /// Position.
    pub pos: CursorPos,
    /// Cursor image resource, 0 hides (UPDATE_CURSOR only).
    pub resource_id: Le32,
    /// Hot spot, pixels from the image's left edge (UPDATE_CURSOR only).
    pub hot_x: Le32,
    /// Hot spot, pixels from the image's top edge (UPDATE_CURSOR only).
    pub hot_y: Le32,
    /// Reserved.
    pub padding: Le32,
}

/// `struct virtio_gpu_ctx_create` (3D, not implemented yet).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtxCreate {
    /// `type_ = VIRTIO_GPU_CMD_CTX_CREATE`.
    pub hdr: CtrlHdr,
    /// Length of `debug_name`.
    pub nlen: Le32,
    /// Capset id (with `VIRTIO_GPU_F_CONTEXT_INIT`).
    pub context_init: Le32,
    /// Debug name, not NUL-terminated.
    pub debug_name: [u8; 64],
}

impl Default for CtxCreate {
    fn default() -> Self {
        CtxCreate { hdr: CtrlHdr::default(), nlen: Le32::default(), context_init: Le32::default(), debug_name: [0; 64] }
    }
}

/// `struct virtio_gpu_ctx_destroy` (3D).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtxDestroy {
    /// `type_ = VIRTIO_GPU_CMD_CTX_DESTROY`.
    pub hdr: CtrlHdr,
}

/// `struct virtio_gpu_ctx_resource` (3D): CTX_ATTACH/DETACH_RESOURCE.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtxResource {
    /// Command header.
    pub hdr: CtrlHdr,
    /// Resource.
    pub resource_id: Le32,
    /// Reserved.
    pub padding: Le32,
}

/// `struct virtio_gpu_resource_create_3d` (3D).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceCreate3d {
    /// `type_ = VIRTIO_GPU_CMD_RESOURCE_CREATE_3D`.
    pub hdr: CtrlHdr,
    /// Resource id.
    pub resource_id: Le32,
    /// Gallium texture target.
    pub target: Le32,
    /// Gallium format.
    pub format: Le32,
    /// Gallium bind flags.
    pub bind: Le32,
    /// Width, pixels.
    pub width: Le32,
    /// Height, pixels.
    pub height: Le32,
    /// Depth, pixels.
    pub depth: Le32,
    /// Array size.
    pub array_size: Le32,
    /// Last mip level.
    pub last_level: Le32,
    /// Sample count.
    pub nr_samples: Le32,
    /// Flags.
    pub flags: Le32,
    /// Reserved.
    pub padding: Le32,
}

/// `struct virtio_gpu_box` (3D).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuBox {
    /// X, pixels.
    pub x: Le32,
    /// Y, pixels.
    pub y: Le32,
    /// Z, pixels.
    pub z: Le32,
    /// Width, pixels.
    pub w: Le32,
    /// Height, pixels.
    pub h: Le32,
    /// Depth, pixels.
    pub d: Le32,
}

/// `struct virtio_gpu_transfer_host_3d` (3D): TRANSFER_TO/FROM_HOST_3D.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferHost3d {
    /// Command header.
    pub hdr: CtrlHdr,
    /// Box to transfer.
    pub box_: GpuBox,
    /// Byte offset into the backing.
    pub offset: Le64,
    /// Resource.
    pub resource_id: Le32,
    /// Mip level.
    pub level: Le32,
    /// Row stride, bytes.
    pub stride: Le32,
    /// Layer stride, bytes.
    pub layer_stride: Le32,
}

/// `struct virtio_gpu_cmd_submit` (3D); followed by `size` bytes of commands.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CmdSubmit {
    /// `type_ = VIRTIO_GPU_CMD_SUBMIT_3D`.
    pub hdr: CtrlHdr,
    /// Command buffer size, bytes.
    pub size: Le32,
    /// Reserved.
    pub padding: Le32,
}

/// `struct virtio_gpu_get_capset_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GetCapsetInfo {
    /// `type_ = VIRTIO_GPU_CMD_GET_CAPSET_INFO`.
    pub hdr: CtrlHdr,
    /// Index, below `virtio_gpu_config.num_capsets`.
    pub capset_index: Le32,
    /// Reserved.
    pub padding: Le32,
}

/// `struct virtio_gpu_resp_capset_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RespCapsetInfo {
    /// `type_ = VIRTIO_GPU_RESP_OK_CAPSET_INFO`.
    pub hdr: CtrlHdr,
    /// Capset id (`VIRTIO_GPU_CAPSET_*`).
    pub capset_id: Le32,
    /// Highest version.
    pub capset_max_version: Le32,
    /// Largest size, bytes.
    pub capset_max_size: Le32,
    /// Reserved.
    pub padding: Le32,
}

/// `struct virtio_gpu_get_capset`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GetCapset {
    /// `type_ = VIRTIO_GPU_CMD_GET_CAPSET`.
    pub hdr: CtrlHdr,
    /// Capset id.
    pub capset_id: Le32,
    /// Version.
    pub capset_version: Le32,
}

/// Header of `struct virtio_gpu_resp_capset`; the capset data follows.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RespCapset {
    /// `type_ = VIRTIO_GPU_RESP_OK_CAPSET`.
    pub hdr: CtrlHdr,
}

/// `struct virtio_gpu_config` (5.7.4): device configuration space.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtioGpuConfig {
    /// Pending events (`VIRTIO_GPU_EVENT_*`), read-only for the driver.
    pub events_read: Le32,
    /// Written by the driver to clear bits of `events_read`.
    pub events_clear: Le32,
    /// Number of scanouts, 1..=16.
    pub num_scanouts: Le32,
    /// Number of capability sets.
    pub num_capsets: Le32,
}

byte_valued! {
    CtrlHdr = 24,
    GpuRect = 16,
    DisplayOne = 24,
    RespDisplayInfo = 408,
    GetEdid = 32,
    RespEdid = 1056,
    ResourceCreate2d = 40,
    ResourceUnref = 32,
    SetScanout = 48,
    ResourceFlush = 48,
    TransferToHost2d = 56,
    ResourceAttachBacking = 32,
    MemEntry = 16,
    ResourceDetachBacking = 32,
    CursorPos = 16,
    UpdateCursor = 56,
    CtxCreate = 96,
    CtxDestroy = 24,
    CtxResource = 32,
    ResourceCreate3d = 72,
    GpuBox = 24,
    TransferHost3d = 72,
    CmdSubmit = 32,
    GetCapsetInfo = 32,
    RespCapsetInfo = 40,
    GetCapset = 32,
    RespCapset = 24,
    VirtioGpuConfig = 16,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;
    use virtio_bindings::virtio_gpu as b;

    #[test]
    fn constants_match_virtio_bindings() {
        assert_eq!(VIRTIO_GPU_F_VIRGL, b::VIRTIO_GPU_F_VIRGL);
        assert_eq!(VIRTIO_GPU_F_EDID, b::VIRTIO_GPU_F_EDID);
        assert_eq!(VIRTIO_GPU_F_RESOURCE_UUID, b::VIRTIO_GPU_F_RESOURCE_UUID);
        assert_eq!(VIRTIO_GPU_F_RESOURCE_BLOB, b::VIRTIO_GPU_F_RESOURCE_BLOB);
        assert_eq!(VIRTIO_GPU_F_CONTEXT_INIT, b::VIRTIO_GPU_F_CONTEXT_INIT);
        assert_eq!(VIRTIO_GPU_FLAG_FENCE, b::VIRTIO_GPU_FLAG_FENCE);
        assert_eq!(VIRTIO_GPU_FLAG_INFO_RING_IDX, b::VIRTIO_GPU_FLAG_INFO_RING_IDX);
        assert_eq!(VIRTIO_GPU_MAX_SCANOUTS, b::VIRTIO_GPU_MAX_SCANOUTS);
        assert_eq!(VIRTIO_GPU_EVENT_DISPLAY, b::VIRTIO_GPU_EVENT_DISPLAY);
        let pairs = [
            (VIRTIO_GPU_CMD_GET_DISPLAY_INFO, b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_DISPLAY_INFO),
            (VIRTIO_GPU_CMD_RESOURCE_CREATE_2D, b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_CREATE_2D),
            (VIRTIO_GPU_CMD_RESOURCE_UNREF, b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_UNREF),
            (VIRTIO_GPU_CMD_SET_SCANOUT, b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_SET_SCANOUT),
            (VIRTIO_GPU_CMD_RESOURCE_FLUSH, b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_FLUSH),
            (VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D, b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D),
            (VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING, b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING),
            (VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING, b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING),
            (VIRTIO_GPU_CMD_GET_CAPSET_INFO, b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_CAPSET_INFO),
            (VIRTIO_GPU_CMD_GET_CAPSET, b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_CAPSET),
            (VIRTIO_GPU_CMD_GET_EDID, b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_EDID),
            (VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID, b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID),
            (VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB, b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB),
            (VIRTIO_GPU_CMD_SET_SCANOUT_BLOB, b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_SET_SCANOUT_BLOB),
            (VIRTIO_GPU_CMD_CTX_CREATE, b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_CTX_CREATE),
            (VIRTIO_GPU_CMD_CTX_DESTROY, b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_CTX_DESTROY),
            (VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE, b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE),
            (VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE, b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE),
            (VIRTIO_GPU_CMD_RESOURCE_CREATE_3D, b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_CREATE_3D),
            (VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D, b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D),
            (VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D, b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D),
            (VIRTIO_GPU_CMD_SUBMIT_3D, b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_SUBMIT_3D),
            (VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB, b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB),
            (VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB, b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB),
            (VIRTIO_GPU_CMD_UPDATE_CURSOR, b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_UPDATE_CURSOR),
            (VIRTIO_GPU_CMD_MOVE_CURSOR, b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_MOVE_CURSOR),
            (VIRTIO_GPU_RESP_OK_NODATA, b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_NODATA),
            (VIRTIO_GPU_RESP_OK_DISPLAY_INFO, b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_DISPLAY_INFO),
            (VIRTIO_GPU_RESP_OK_CAPSET_INFO, b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_CAPSET_INFO),
            (VIRTIO_GPU_RESP_OK_CAPSET, b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_CAPSET),
            (VIRTIO_GPU_RESP_OK_EDID, b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_EDID),
            (VIRTIO_GPU_RESP_OK_RESOURCE_UUID, b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_RESOURCE_UUID),
            (VIRTIO_GPU_RESP_OK_MAP_INFO, b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_MAP_INFO),
            (VIRTIO_GPU_RESP_ERR_UNSPEC, b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_UNSPEC),
            (VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY, b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY),
            (VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID, b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID),
            (VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID, b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID),
            (VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID, b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID),
            (VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER, b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER),
            (VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM, b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM),
            (VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM),
            (VIRTIO_GPU_FORMAT_A8R8G8B8_UNORM, b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_A8R8G8B8_UNORM),
            (VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM, b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM),
            (VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM, b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM),
            (VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM, b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM),
            (VIRTIO_GPU_FORMAT_A8B8G8R8_UNORM, b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_A8B8G8R8_UNORM),
            (VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM, b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM),
        ];
        for (ours, theirs) in pairs {
            assert_eq!(ours, theirs, "{}", ctrl_type_name(ours));
        }
    }

    #[test]
    fn sizes_match_virtio_bindings() {
        use std::mem::size_of as s;
        assert_eq!(s::<CtrlHdr>(), s::<b::virtio_gpu_ctrl_hdr>());
        assert_eq!(s::<RespDisplayInfo>(), s::<b::virtio_gpu_resp_display_info>());
        assert_eq!(s::<RespEdid>(), s::<b::virtio_gpu_resp_edid>());
        assert_eq!(s::<GetEdid>(), s::<b::virtio_gpu_cmd_get_edid>());
        assert_eq!(s::<ResourceCreate2d>(), s::<b::virtio_gpu_resource_create_2d>());
        assert_eq!(s::<SetScanout>(), s::<b::virtio_gpu_set_scanout>());
        assert_eq!(s::<ResourceFlush>(), s::<b::virtio_gpu_resource_flush>());
        assert_eq!(s::<TransferToHost2d>(), s::<b::virtio_gpu_transfer_to_host_2d>());
        assert_eq!(s::<ResourceAttachBacking>(), s::<b::virtio_gpu_resource_attach_backing>());
        assert_eq!(s::<UpdateCursor>(), s::<b::virtio_gpu_update_cursor>());
        assert_eq!(s::<ResourceCreate3d>(), s::<b::virtio_gpu_resource_create_3d>());
        assert_eq!(s::<TransferHost3d>(), s::<b::virtio_gpu_transfer_host_3d>());
        assert_eq!(s::<CtxCreate>(), s::<b::virtio_gpu_ctx_create>());
        assert_eq!(s::<RespCapsetInfo>(), s::<b::virtio_gpu_resp_capset_info>());
        assert_eq!(s::<VirtioGpuConfig>(), s::<b::virtio_gpu_config>());
    }

    #[test]
    fn field_offsets() {
        assert_eq!(offset_of!(CtrlHdr, fence_id), 8);
        assert_eq!(offset_of!(CtrlHdr, ctx_id), 16);
        assert_eq!(offset_of!(CtrlHdr, ring_idx), 20);
        assert_eq!(offset_of!(TransferToHost2d, offset), 40);
        assert_eq!(offset_of!(TransferToHost2d, resource_id), 48);
        assert_eq!(offset_of!(SetScanout, scanout_id), 40);
        assert_eq!(offset_of!(UpdateCursor, resource_id), 40);
        assert_eq!(offset_of!(RespEdid, edid), 32);
    }

    #[test]
    fn read_struct_is_little_endian_and_length_checked() {
        let mut bytes = [0u8; 41];
        bytes[0..4].copy_from_slice(&VIRTIO_GPU_CMD_RESOURCE_CREATE_2D.to_le_bytes());
        bytes[24..28].copy_from_slice(&7u32.to_le_bytes());
        bytes[32..36].copy_from_slice(&0x0102_0304u32.to_le_bytes());
        // Deliberately unaligned source.
        let c: ResourceCreate2d = read_struct(&bytes[..40]).expect("long enough");
        assert_eq!(c.hdr.type_.to_native(), VIRTIO_GPU_CMD_RESOURCE_CREATE_2D);
        assert_eq!(c.resource_id.to_native(), 7);
        assert_eq!(c.width.to_native(), 0x0102_0304);
        let shifted: Option<ResourceCreate2d> = read_struct(&bytes[1..]);
        assert!(shifted.is_some());
        assert!(read_struct::<ResourceCreate2d>(&bytes[..39]).is_none());
        assert!(read_struct::<CtrlHdr>(&[]).is_none());
    }

    #[test]
    fn names() {
        assert_eq!(ctrl_type_name(VIRTIO_GPU_CMD_SET_SCANOUT), "SET_SCANOUT");
        assert_eq!(ctrl_type_name(0xdead), "UNKNOWN");
    }
}
