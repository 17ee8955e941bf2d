//! The plain data of the safe API: raw EGL handle types, capset and flag constants, the
//! `#[repr(C)]` argument structs shared with the FFI, fences, options, statistics and errors.
//! Everything public here is re-exported by the parent module.

use smithay::backend::egl::ffi::egl;

#[cfg(doc)]
use super::Virgl;

/// A raw `EGLDisplay` handle (smithay: `**display.get_display_handle()`).
pub type RawEglDisplay = egl::types::EGLDisplay;
/// A raw `EGLContext` handle (smithay: `EGLContext::get_context_handle()`).
pub type RawEglContext = egl::types::EGLContext;

/// Capset id of virgl's first capability set (`VIRGL_RENDERER_CAPSET_VIRGL`, `struct virgl_caps_v1`).
pub const CAPSET_VIRGL: u32 = 1;
/// Capset id of virgl's second capability set (`VIRGL_RENDERER_CAPSET_VIRGL2`, `struct virgl_caps_v2`).
pub const CAPSET_VIRGL2: u32 = 2;
/// [`ResourceInfo::flags`] bit: row 0 of the texture is the top row (`VIRGL_RESOURCE_Y_0_TOP`).
pub const RESOURCE_Y_0_TOP: u32 = 1 << 0;
/// `virgl_renderer_context_create_fence` flag: the fence may be merged with later fences of the
/// same context, so only the last of a run is reported (`VIRGL_RENDERER_FENCE_FLAG_MERGEABLE`).
pub const FENCE_FLAG_MERGEABLE: u32 = 1 << 0;

/// Arguments of `virgl_renderer_resource_create` (`struct virgl_renderer_resource_create_args`);
/// the fields are those of virtio-gpu's `RESOURCE_CREATE_3D`, in the same order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResourceCreate3d {
    /// Resource id (host id space: process-wide, not 0).
    pub handle: u32,
    /// Gallium `pipe_texture_target` (`PIPE_BUFFER` 0, `PIPE_TEXTURE_2D` 2, ...).
    pub target: u32,
    /// `enum virgl_formats` (`VIRGL_FORMAT_B8G8R8A8_UNORM` is 1).
    pub format: u32,
    /// `VIRGL_BIND_*` bits (render target `1 << 1`, sampler view `1 << 3`, ...).
    pub bind: u32,
    /// Width in pixels (bytes for buffers).
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Depth in pixels (1 for 2D).
    pub depth: u32,
    /// Array layers (1 when not an array).
    pub array_size: u32,
    /// Index of the last mipmap level (0: one level).
    pub last_level: u32,
    /// MSAA samples (0 or 1: none).
    pub nr_samples: u32,
    /// `VIRTIO_GPU_RESOURCE_FLAG_Y_0_TOP` and friends.
    pub flags: u32,
}

/// A 3D box in pixels (`struct virgl_box` of `virgl_hw.h`): origin `x, y, z`, size `w, h, d`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Box3d {
    /// Left edge, pixels.
    pub x: u32,
    /// First row, pixels. Without [`RESOURCE_Y_0_TOP`] row `y` of the backing is GL row `y`
    /// (GL numbers rows bottom-up); virglrenderer flips rows only for Y_0_TOP resources.
    pub y: u32,
    /// First slice / layer.
    pub z: u32,
    /// Width, pixels.
    pub w: u32,
    /// Height, pixels.
    pub h: u32,
    /// Depth / layer count (1 for 2D).
    pub d: u32,
}

/// One transfer between a resource and its attached guest backing (virtio-gpu's
/// `TRANSFER_TO_HOST_3D` / `TRANSFER_FROM_HOST_3D`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfer {
    /// Resource id.
    pub resource_id: u32,
    /// Context whose view of the resource is used; 0 transfers through virglrenderer's ctx 0.
    pub ctx_id: u32,
    /// Mipmap level.
    pub level: u32,
    /// Bytes per row in the backing; 0 lets virglrenderer use the tightly packed stride.
    pub stride: u32,
    /// Bytes per layer / slice in the backing; 0: tightly packed.
    pub layer_stride: u32,
    /// Region of the resource, pixels.
    pub bbox: Box3d,
    /// Byte offset into the backing where the region starts.
    pub offset: u64,
}

/// What [`Virgl::resource_info`] reports about a resource.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceInfo {
    /// GL texture (or buffer) name in the compositor's share group; owned by virglrenderer.
    pub tex_id: u32,
    /// Width, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
    /// Depth, pixels.
    pub depth: u32,
    /// `enum virgl_formats` value.
    pub virgl_format: u32,
    /// Bytes per row of level 0, tightly packed.
    pub stride: u32,
    /// Raw `VIRGL_RESOURCE_*` flags.
    pub flags: u32,
    /// Row 0 is the top row ([`RESOURCE_Y_0_TOP`]); otherwise the texture is bottom-up (GL).
    pub y_0_top: bool,
}

/// A retired fence, as reported by virglrenderer's fence callbacks.
///
/// Fences of one timeline retire in order; with mergeable fences (all global fences are) only
/// the last of a run is reported, so a reported id means every earlier fence of the same
/// timeline is done too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Fence {
    /// Context of a per-context fence; 0 for a global fence.
    pub ctx_id: u32,
    /// Ring of a per-context fence (always 0 for virgl contexts); 0 for a global fence.
    pub ring_idx: u32,
    /// The id given to [`Virgl::create_fence`] (fits in 32 bits) or [`Virgl::context_create_fence`].
    pub fence_id: u64,
    /// Created by [`Virgl::create_fence`] (`write_fence` callback) rather than per context.
    pub global: bool,
}

/// Which OpenGL client API virglrenderer's contexts use. See the module documentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GlApi {
    /// The compositor context's API (OpenGL ES under smithay's `GlesRenderer`): always valid.
    #[default]
    SameAsShareContext,
    /// Desktop OpenGL, core profile, whatever the compositor uses. Works on Mesa with a GLES
    /// compositor context; EGL does not guarantee cross-API sharing.
    DesktopGlCore,
}

/// A client API, as resolved by [`Virgl::init_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientApi {
    /// OpenGL ES.
    Gles,
    /// Desktop OpenGL (core profile).
    DesktopGl,
}

/// Options of [`Virgl::init_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirglOptions {
    /// Client API of virglrenderer's contexts.
    pub api: GlApi,
    /// Pass `VIRGL_RENDERER_THREAD_SYNC`: a "vrend-sync" thread waits for fences and wakes
    /// [`Virgl::poll_fd`] (an eventfd); [`Virgl::poll`] then delivers them. virglrenderer then
    /// also creates one context and calls `make_current` on that thread (the callbacks are
    /// thread-safe). Without it there is no poll fd: call [`Virgl::poll`] on a timer (QEMU: 10 ms).
    pub thread_sync: bool,
}

/// The client API and version of virglrenderer's GL contexts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlVersion {
    /// Client API.
    pub api: ClientApi,
    /// Major version of the first context virglrenderer created.
    pub major: u32,
    /// Minor version of the first context virglrenderer created.
    pub minor: u32,
}

/// Counters of the GL callbacks, for tests and diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallbackStats {
    /// Successful `create_gl_context` calls.
    pub contexts_created: u32,
    /// `create_gl_context` calls answered with NULL (version refused or EGL error).
    pub contexts_refused: u32,
    /// `destroy_gl_context` calls.
    pub contexts_destroyed: u32,
    /// `make_current` calls.
    pub make_current_calls: u32,
    /// `make_current` calls that failed.
    pub make_current_failures: u32,
}

/// Errors of [`Virgl`].
#[derive(Debug, thiserror::Error)]
pub enum VirglError {
    /// A [`Virgl`] already exists in this process.
    #[error("virglrenderer is already initialised in this process")]
    AlreadyInitialized,
    /// An EGL precondition failed.
    #[error("EGL: {0}")]
    Egl(String),
    /// A virglrenderer call returned an error code (mostly errno values such as 22 = EINVAL;
    /// some calls return negative values).
    #[error("virgl_renderer_{call} failed: {code}")]
    Call {
        /// The call, without its `virgl_renderer_` prefix.
        call: &'static str,
        /// The code it returned.
        code: i32,
    },
    /// virglrenderer 0.10.4 keeps its GL-or-GLES mode (`vrend_state.use_gles`) across
    /// `virgl_renderer_cleanup`, so a process cannot switch client API by re-initialising.
    #[error("this process already ran virglrenderer on {first:?}; it cannot switch to {requested:?}")]
    ClientApiChange {
        /// The API of the first initialisation.
        first: ClientApi,
        /// The API asked for now.
        requested: ClientApi,
    },
    /// An argument was rejected before reaching virglrenderer.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
}

pub(super) fn client_api(api: egl::types::EGLenum) -> ClientApi {
    if api == egl::OPENGL_ES_API { ClientApi::Gles } else { ClientApi::DesktopGl }
}
