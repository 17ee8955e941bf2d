//! virglrenderer 0.10.4 inside the compositor's EGL share group.
//!
//! A hand-written FFI binding of the part of `virglrenderer.h` (0.10.4, built with
//! `VIRGL_RENDERER_UNSTABLE_APIS`) that scanway needs, and [`Virgl`], a safe wrapper around it.
//!
//! # Callback mode
//! [`Virgl::init`] calls `virgl_renderer_init(cookie, flags, &cbs)` with `flags` 0 (or
//! `VIRGL_RENDERER_THREAD_SYNC`, see [`VirglOptions::thread_sync`]) and callbacks version 4. It
//! never passes `VIRGL_RENDERER_USE_EGL`: with that flag virglrenderer builds its own EGL display
//! and ignores the callbacks. The callbacks are:
//! - `get_egl_display`: the compositor's `EGLDisplay` (virglrenderer's "external winsys").
//! - `create_gl_context`: `eglCreateContext(dpy, config, compositor_ctx, {major, minor[, core]})`,
//!   where `config` is the compositor context's own `EGLConfig`, or `EGL_NO_CONFIG_KHR` when it
//!   has none (smithay's `EGLContext::new` makes config-less contexts). Every context shares with
//!   the compositor's context, whatever virglrenderer's `shared` flag says, so every guest texture
//!   is a GL texture name of the compositor's share group. A version the driver refuses gives
//!   NULL, and virglrenderer tries the next lower one (4.6 down to 3.0).
//! - `make_current`: `eglMakeCurrent(dpy, EGL_NO_SURFACE, EGL_NO_SURFACE, ctx)` (surfaceless).
//! - `destroy_gl_context`: `eglDestroyContext`.
//! - `write_fence` (v1, fences of the global timeline) and `write_context_fence` (v3, per context
//!   and ring): both push a [`Fence`] into a queue that [`Virgl::drain_fences`] empties.
//!
//! # Which client API virglrenderer's contexts use
//! By default ([`GlApi::SameAsShareContext`]) virglrenderer's contexts use the client API of the
//! compositor's context: OpenGL ES (3.2 at most) under smithay's `GlesRenderer`. That is what
//! the EGL specification allows for sharing, and what works on every driver. virglrenderer then
//! runs its GLES path (its capsets report GLSL 430 instead of 450 on llvmpipe; Mesa's virgl guest
//! driver shows GL 4.3 either way). [`GlApi::DesktopGlCore`] makes desktop GL core contexts that
//! share with a GLES compositor context: Mesa accepts it (measured, see the glprobe notes) and it
//! gives the guest GLSL 450, but EGL does not promise it, so it is opt-in. Either way
//! [`Virgl::init`] first creates (and destroys) one 3.0 context of the chosen API sharing with the
//! compositor's context and fails cleanly if the driver refuses: virglrenderer 0.10.4 itself
//! would carry on with a NULL context and crash.
//!
//! # GL context contract
//! virglrenderer caches which of its GL contexts is current and skips `make_current` when it
//! thinks it has the right one. If the compositor made its own context current in between,
//! virglrenderer's GL calls land in the compositor's context: measured here, a guest CLEAR then
//! silently went into the compositor's bound framebuffer (submit returned 0, the guest texture
//! kept its old contents); the glprobe notes saw the guest context die with "Illegal command
//! buffer" and a libepoxy abort. The wrapper prevents this: before every call that may touch GL
//! it compares `eglGetCurrentContext()` with the context virglrenderer last made current on this
//! thread and calls `virgl_renderer_force_ctx_0()` when they differ (QEMU calls it before every
//! command; this costs one `eglGetCurrentContext` when nothing changed). [`Virgl::force_ctx_0`]
//! stays available for code that calls virglrenderer behind the wrapper's back.
//!
//! The other direction is the compositor's job: after any [`Virgl`] call one of virglrenderer's
//! contexts is current, so the compositor must make its own context current before it issues GL
//! calls. smithay's `GlesRenderer` does that at the start of every operation (`render`,
//! `with_context`, imports...); raw GL code must call `EGLContext::make_current` itself.
//!
//! # Resources as compositor textures
//! [`Virgl::resource_info`] gives the GL texture name of a resource, valid in the compositor's
//! context. virglrenderer owns that texture: it is deleted by [`Virgl::resource_unref`] (or when
//! the last guest object referencing it goes). smithay's `GlesTexture::from_raw` takes ownership
//! and deletes the texture when its last clone drops, so never let such a wrapper outlive the
//! resource or drop while the resource lives. Rows: unless [`ResourceInfo::y_0_top`] is set,
//! row `y` of the guest backing is GL row `y` (measured with `transfer_write`), and smithay's
//! `Transform::Normal` shows texture row 0 at the top. Wait for a fence before sampling what a
//! guest rendered.
//!
//! `virgl_renderer_get_cursor_data` is deliberately not wrapped: it returns the texture's GL
//! storage order (R, G, B, A for a B8G8R8A8 resource, measured on GL and GLES), not the
//! resource's format. Sample the cursor's `tex_id`, or read the guest backing, instead.
//!
//! # One per process
//! virglrenderer keeps process-global state (one resource table, one context table), so at most
//! one [`Virgl`] exists at a time (a static flag enforces it). It is `!Send`: create, use and drop
//! it on the thread that owns the compositor's GL context. Guest ids must be translated to
//! process-wide host ids by the caller when several guests share it (design notes, section 3).
//!
//! Dropping a [`Virgl`] and initialising again works, but only with the same client API:
//! virglrenderer 0.10.4 keeps `vrend_state.use_gles` (and other state) across
//! `virgl_renderer_cleanup`, so a GL re-initialisation after a GLES one would run the GLES code
//! paths on GL contexts. [`Virgl::init_with`] refuses that with [`VirglError::ClientApiChange`].

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    ffi::{c_int, c_uint, c_void},
    marker::PhantomData,
    os::fd::RawFd,
    panic::AssertUnwindSafe,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
};

use smithay::backend::egl::ffi::{egl, make_sure_egl_is_loaded};
use tracing::{debug, warn};

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

/// Raw declarations, each checked against `/usr/include/virgl/virglrenderer.h` of 0.10.4 (and
/// `virgl_hw.h` for `struct virgl_box`, which the public header only forward-declares).
#[allow(non_camel_case_types)]
mod ffi {
    use std::ffi::{c_char, c_int, c_uint, c_void};

    /// `typedef void *virgl_renderer_gl_context;`
    pub type virgl_renderer_gl_context = *mut c_void;

    /// `struct virgl_renderer_gl_ctx_param { int version; bool shared; int major_ver; int minor_ver; }`
    /// (0.10.4 has no `compat_ctx` field: that came with 1.0).
    #[repr(C)]
    pub struct virgl_renderer_gl_ctx_param {
        pub version: c_int,
        pub shared: bool,
        pub major_ver: c_int,
        pub minor_ver: c_int,
    }

    /// `void (*)(const char *fmt, va_list ap)`. `va_list` reaches the callee as a pointer on
    /// x86_64 (an array type) and on aarch64 (a 32-byte struct, passed by reference), which is
    /// the only reason this may be declared at all in stable Rust.
    pub type virgl_debug_callback_type = Option<unsafe extern "C" fn(fmt: *const c_char, ap: *mut c_void)>;

    /// `struct virgl_renderer_callbacks` with `VIRGL_RENDERER_UNSTABLE_APIS` (version 4).
    #[repr(C)]
    pub struct virgl_renderer_callbacks {
        pub version: c_int,
        pub write_fence: Option<unsafe extern "C" fn(cookie: *mut c_void, fence: u32)>,
        pub create_gl_context: Option<
            unsafe extern "C" fn(
                cookie: *mut c_void,
                scanout_idx: c_int,
                param: *mut virgl_renderer_gl_ctx_param,
            ) -> virgl_renderer_gl_context,
        >,
        pub destroy_gl_context: Option<unsafe extern "C" fn(cookie: *mut c_void, ctx: virgl_renderer_gl_context)>,
        pub make_current: Option<
            unsafe extern "C" fn(cookie: *mut c_void, scanout_idx: c_int, ctx: virgl_renderer_gl_context) -> c_int,
        >,
        pub get_drm_fd: Option<unsafe extern "C" fn(cookie: *mut c_void) -> c_int>,
        pub write_context_fence:
            Option<unsafe extern "C" fn(cookie: *mut c_void, ctx_id: u32, ring_idx: u32, fence_id: u64)>,
        pub get_server_fd: Option<unsafe extern "C" fn(cookie: *mut c_void, version: u32) -> c_int>,
        pub get_egl_display: Option<unsafe extern "C" fn(cookie: *mut c_void) -> *mut c_void>,
    }

    /// `struct virgl_renderer_resource_info`.
    #[repr(C)]
    #[derive(Default)]
    pub struct virgl_renderer_resource_info {
        pub handle: u32,
        pub virgl_format: u32,
        pub width: u32,
        pub height: u32,
        pub depth: u32,
        pub flags: u32,
        pub tex_id: u32,
        pub stride: u32,
        pub drm_fourcc: c_int,
    }

    pub const VIRGL_RENDERER_THREAD_SYNC: c_int = 2;

    // `struct virgl_renderer_resource_create_args` and `struct virgl_box` are the public
    // `ResourceCreate3d` and `Box3d` of the parent module (same layout, asserted below).
    use super::{Box3d as virgl_box, ResourceCreate3d as virgl_renderer_resource_create_args};

    #[link(name = "virglrenderer")]
    unsafe extern "C" {
        pub fn virgl_renderer_init(cookie: *mut c_void, flags: c_int, cb: *mut virgl_renderer_callbacks) -> c_int;
        pub fn virgl_renderer_poll();
        pub fn virgl_renderer_resource_create(
            args: *mut virgl_renderer_resource_create_args,
            iov: *mut libc::iovec,
            num_iovs: u32,
        ) -> c_int;
        pub fn virgl_renderer_resource_unref(res_handle: u32);
        pub fn virgl_renderer_context_destroy(handle: u32);
        pub fn virgl_renderer_submit_cmd(buffer: *mut c_void, ctx_id: c_int, ndw: c_int) -> c_int;
        pub fn virgl_renderer_transfer_read_iov(
            handle: u32,
            ctx_id: u32,
            level: u32,
            stride: u32,
            layer_stride: u32,
            box_: *mut virgl_box,
            offset: u64,
            iov: *mut libc::iovec,
            iovec_cnt: c_int,
        ) -> c_int;
        pub fn virgl_renderer_transfer_write_iov(
            handle: u32,
            ctx_id: u32,
            level: c_int,
            stride: u32,
            layer_stride: u32,
            box_: *mut virgl_box,
            offset: u64,
            iovec: *mut libc::iovec,
            iovec_cnt: c_uint,
        ) -> c_int;
        pub fn virgl_renderer_get_cap_set(set: u32, max_ver: *mut u32, max_size: *mut u32);
        pub fn virgl_renderer_fill_caps(set: u32, version: u32, caps: *mut c_void);
        pub fn virgl_renderer_resource_attach_iov(res_handle: c_int, iov: *mut libc::iovec, num_iovs: c_int) -> c_int;
        pub fn virgl_renderer_resource_detach_iov(res_handle: c_int, iov: *mut *mut libc::iovec, num_iovs: *mut c_int);
        pub fn virgl_renderer_create_fence(client_fence_id: c_int, ctx_id: u32) -> c_int;
        pub fn virgl_renderer_force_ctx_0();
        pub fn virgl_renderer_ctx_attach_resource(ctx_id: c_int, res_handle: c_int);
        pub fn virgl_renderer_ctx_detach_resource(ctx_id: c_int, res_handle: c_int);
        pub fn virgl_set_debug_callback(cb: virgl_debug_callback_type) -> virgl_debug_callback_type;
        pub fn virgl_renderer_resource_get_info(res_handle: c_int, info: *mut virgl_renderer_resource_info) -> c_int;
        pub fn virgl_renderer_cleanup(cookie: *mut c_void);
        pub fn virgl_renderer_get_poll_fd() -> c_int;
        pub fn virgl_renderer_context_create_with_flags(
            ctx_id: u32,
            ctx_flags: u32,
            nlen: u32,
            name: *const c_char,
        ) -> c_int;
        pub fn virgl_renderer_context_create_fence(ctx_id: u32, flags: u32, ring_idx: u32, fence_id: u64) -> c_int;
    }

    #[cfg(target_pointer_width = "64")]
    const _: () = {
        assert!(size_of::<virgl_renderer_gl_ctx_param>() == 16);
        assert!(size_of::<virgl_renderer_callbacks>() == 72);
        assert!(std::mem::offset_of!(virgl_renderer_callbacks, write_context_fence) == 48);
        assert!(std::mem::offset_of!(virgl_renderer_callbacks, get_egl_display) == 64);
        assert!(size_of::<virgl_renderer_resource_info>() == 36);
        assert!(size_of::<virgl_renderer_resource_create_args>() == 44);
        assert!(size_of::<virgl_box>() == 24);
        assert!(size_of::<libc::iovec>() == 16);
    };
}

/// Arguments of `virgl_renderer_resource_create` (`struct virgl_renderer_resource_create_args`);
/// the fields are those of virtio-gpu's `RESOURCE_CREATE_3D`, in the same order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

fn check(call: &'static str, code: c_int) -> Result<(), VirglError> {
    if code == 0 { Ok(()) } else { Err(VirglError::Call { call, code }) }
}

/// Set while a [`Virgl`] exists.
static INSTANCE: AtomicBool = AtomicBool::new(false);
/// The EGL client API of the first successful initialisation (0: none yet).
static FIRST_API: AtomicU32 = AtomicU32::new(0);

fn client_api(api: egl::types::EGLenum) -> ClientApi {
    if api == egl::OPENGL_ES_API { ClientApi::Gles } else { ClientApi::DesktopGl }
}

thread_local! {
    /// The GL context virglrenderer last made current on this thread (NULL: none / unknown).
    static VIRGL_CURRENT: Cell<RawEglContext> = const { Cell::new(std::ptr::null()) };
}

/// State the callbacks see through the cookie. Boxed: virglrenderer keeps pointers to it (the
/// cookie) and to `cbs` until `virgl_renderer_cleanup`.
struct Shared {
    cbs: ffi::virgl_renderer_callbacks,
    display: RawEglDisplay,
    share_context: RawEglContext,
    config: egl::types::EGLConfig,
    /// `EGL_OPENGL_ES_API` or `EGL_OPENGL_API`.
    api: egl::types::EGLenum,
    fences: Mutex<Vec<Fence>>,
    /// major * 100 + minor of the first context created; 0 until then.
    first_version: AtomicU32,
    created: AtomicU32,
    refused: AtomicU32,
    destroyed: AtomicU32,
    make_current_calls: AtomicU32,
    make_current_failures: AtomicU32,
}

// SAFETY: the raw EGL handles are plain identifiers that EGL allows to be used from any thread
// (a context is current on one thread at a time, which EGL itself enforces); the rest is atomics
// and a mutex. virglrenderer calls the callbacks from the "vrend-sync" thread with THREAD_SYNC.
unsafe impl Sync for Shared {}
// SAFETY: as above.
unsafe impl Send for Shared {}

impl Shared {
    fn client_api(&self) -> ClientApi {
        client_api(self.api)
    }

    /// `eglCreateContext` of `self.api` `major.minor` sharing with the compositor's context.
    /// Restores the thread's bound API (smithay binds `EGL_OPENGL_ES_API` once per thread and
    /// relies on it). Returns NULL on failure.
    fn create_context(&self, major: i32, minor: i32) -> RawEglContext {
        let desktop = self.api == egl::OPENGL_API;
        let mut attribs = vec![egl::CONTEXT_MAJOR_VERSION as i32, major, egl::CONTEXT_MINOR_VERSION as i32, minor];
        if desktop {
            attribs.extend([egl::CONTEXT_OPENGL_PROFILE_MASK as i32, egl::CONTEXT_OPENGL_CORE_PROFILE_BIT as i32]);
        }
        attribs.push(egl::NONE as i32);
        // SAFETY: plain EGL calls on the display/context given to `Virgl::init`, which the caller
        // keeps alive; `attribs` is NONE-terminated and outlives the call.
        unsafe {
            let previous = egl::QueryAPI();
            if previous != self.api {
                egl::BindAPI(self.api);
            }
            let context = egl::CreateContext(self.display, self.config, self.share_context, attribs.as_ptr());
            if previous != self.api && previous != egl::NONE {
                egl::BindAPI(previous);
            }
            context
        }
    }
}

/// Runs `f`, turning a panic into `default`: callbacks must not unwind into C.
fn no_unwind<R>(default: R, f: impl FnOnce() -> R) -> R {
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or(default)
}

/// # Safety
/// `cookie` is the `Shared` given to `virgl_renderer_init`, alive until cleanup.
unsafe fn shared<'a>(cookie: *mut c_void) -> &'a Shared {
    // SAFETY: see above.
    unsafe { &*(cookie as *const Shared) }
}

unsafe extern "C" fn cb_write_fence(cookie: *mut c_void, fence: u32) {
    no_unwind((), || {
        // SAFETY: virglrenderer passes back our cookie.
        let shared = unsafe { shared(cookie) };
        if let Ok(mut queue) = shared.fences.lock() {
            queue.push(Fence { ctx_id: 0, ring_idx: 0, fence_id: u64::from(fence), global: true });
        }
    })
}

unsafe extern "C" fn cb_write_context_fence(cookie: *mut c_void, ctx_id: u32, ring_idx: u32, fence_id: u64) {
    no_unwind((), || {
        // SAFETY: virglrenderer passes back our cookie.
        let shared = unsafe { shared(cookie) };
        if let Ok(mut queue) = shared.fences.lock() {
            queue.push(Fence { ctx_id, ring_idx, fence_id, global: false });
        }
    })
}

unsafe extern "C" fn cb_create_gl_context(
    cookie: *mut c_void,
    _scanout_idx: c_int,
    param: *mut ffi::virgl_renderer_gl_ctx_param,
) -> ffi::virgl_renderer_gl_context {
    no_unwind(std::ptr::null_mut(), || {
        // SAFETY: virglrenderer passes back our cookie.
        let shared = unsafe { shared(cookie) };
        if param.is_null() {
            return std::ptr::null_mut();
        }
        // SAFETY: non-null, points to virglrenderer's parameter block for this call.
        let (major, minor) = unsafe { ((*param).major_ver, (*param).minor_ver) };
        // OpenGL ES stops at 3.2: do not ask EGL for 4.x or 3.3 (each refusal is logged as an
        // EGL error by smithay's debug callback).
        if shared.api == egl::OPENGL_ES_API && (major, minor) > (3, 2) {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            return std::ptr::null_mut();
        }
        let context = shared.create_context(major, minor);
        if context.is_null() {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            debug!(major, minor, "virgl: eglCreateContext refused");
            return std::ptr::null_mut();
        }
        shared.created.fetch_add(1, Ordering::Relaxed);
        let version = (major.max(0) as u32) * 100 + minor.max(0) as u32;
        let _ = shared.first_version.compare_exchange(0, version, Ordering::Relaxed, Ordering::Relaxed);
        context as ffi::virgl_renderer_gl_context
    })
}

unsafe extern "C" fn cb_destroy_gl_context(cookie: *mut c_void, ctx: ffi::virgl_renderer_gl_context) {
    no_unwind((), || {
        // SAFETY: virglrenderer passes back our cookie.
        let shared = unsafe { shared(cookie) };
        if ctx.is_null() {
            return;
        }
        let _ = VIRGL_CURRENT.try_with(|current| {
            if std::ptr::eq(current.get(), ctx) {
                current.set(std::ptr::null());
            }
        });
        shared.destroyed.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ctx` was created by `cb_create_gl_context` on this display. EGL defers the
        // destruction of a context that is still current until it is released.
        unsafe { egl::DestroyContext(shared.display, ctx as RawEglContext) };
    })
}

unsafe extern "C" fn cb_make_current(
    cookie: *mut c_void,
    _scanout_idx: c_int,
    ctx: ffi::virgl_renderer_gl_context,
) -> c_int {
    no_unwind(-1, || {
        // SAFETY: virglrenderer passes back our cookie.
        let shared = unsafe { shared(cookie) };
        shared.make_current_calls.fetch_add(1, Ordering::Relaxed);
        let context = if ctx.is_null() { egl::NO_CONTEXT } else { ctx as RawEglContext };
        // SAFETY: surfaceless make-current of one of our contexts (or none) on our display.
        let ok = unsafe { egl::MakeCurrent(shared.display, egl::NO_SURFACE, egl::NO_SURFACE, context) } == egl::TRUE;
        if ok {
            let _ = VIRGL_CURRENT.try_with(|current| current.set(context));
            0
        } else {
            shared.make_current_failures.fetch_add(1, Ordering::Relaxed);
            -1
        }
    })
}

unsafe extern "C" fn cb_get_egl_display(cookie: *mut c_void) -> *mut c_void {
    no_unwind(std::ptr::null_mut(), || {
        // SAFETY: virglrenderer passes back our cookie.
        unsafe { shared(cookie) }.display as *mut c_void
    })
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod log {
    use std::ffi::{c_char, c_int, c_void};

    unsafe extern "C" {
        /// libc's `vsnprintf`; `ap` is the `va_list` exactly as our callback received it.
        fn vsnprintf(buf: *mut c_char, n: usize, fmt: *const c_char, ap: *mut c_void) -> c_int;
    }

    /// virglrenderer's log lines, routed to `tracing` (target `scanway::renderer::virgl`).
    pub(super) unsafe extern "C" fn virgl_log(fmt: *const c_char, ap: *mut c_void) {
        super::no_unwind((), || {
            if fmt.is_null() {
                return;
            }
            let mut buf = [0u8; 1024];
            // SAFETY: `fmt`/`ap` come straight from virglrenderer's logger; vsnprintf writes at
            // most `buf.len()` bytes including the NUL.
            let n = unsafe { vsnprintf(buf.as_mut_ptr().cast(), buf.len(), fmt, ap) };
            if n < 0 {
                return;
            }
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            let text = String::from_utf8_lossy(&buf[..end]);
            let text = text.trim_end();
            if text.is_empty() {
                return;
            }
            let lower = text.to_ascii_lowercase();
            if lower.contains("error") || lower.contains("fail") || lower.contains("illegal") {
                tracing::warn!(target: "scanway::renderer::virgl", "virgl: {text}");
            } else {
                tracing::debug!(target: "scanway::renderer::virgl", "virgl: {text}");
            }
        })
    }

    pub(super) const LOGGER: super::ffi::virgl_debug_callback_type = Some(virgl_log);
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod log {
    /// No portable `va_list` on this architecture: keep virglrenderer's stderr logger.
    pub(super) const LOGGER: super::ffi::virgl_debug_callback_type = None;
}

/// virglrenderer, initialised in callback mode inside the compositor's EGL share group.
///
/// See the module documentation for the GL context contract. Dropping it calls
/// `virgl_renderer_cleanup` (which destroys every context and resource) and releases the
/// virglrenderer context left current; it never terminates the compositor's display.
pub struct Virgl {
    shared: Box<Shared>,
    /// iovec arrays handed to `virgl_renderer_resource_attach_iov`: virglrenderer keeps the
    /// pointer (it does not copy the array), so they live here until detach / unref.
    backings: RefCell<HashMap<u32, Box<[libc::iovec]>>>,
    previous_logger: ffi::virgl_debug_callback_type,
    /// `!Send` and `!Sync`: virglrenderer is bound to the thread of the compositor's GL context.
    _not_send: PhantomData<*const ()>,
}

impl std::fmt::Debug for Virgl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Virgl")
            .field("display", &self.shared.display)
            .field("share_context", &self.shared.share_context)
            .field("gl", &self.gl_version())
            .finish_non_exhaustive()
    }
}

impl Virgl {
    /// Initialises virglrenderer with [`VirglOptions::default`]: flags 0, contexts of the
    /// compositor context's client API. See [`Virgl::init_with`].
    ///
    /// # Safety
    /// As [`Virgl::init_with`].
    pub unsafe fn init(display: RawEglDisplay, share_context: RawEglContext) -> Result<Virgl, VirglError> {
        // SAFETY: forwarded contract.
        unsafe { Self::init_with(display, share_context, VirglOptions::default()) }
    }

    /// Initialises virglrenderer in callback mode on `display`, every GL context it creates
    /// sharing with `share_context` (the compositor's context). Takes 50–250 ms on llvmpipe.
    /// Leaves one of virglrenderer's contexts current on this thread.
    ///
    /// Fails with [`VirglError::AlreadyInitialized`] while another [`Virgl`] exists.
    ///
    /// # Safety
    /// `display` must be an initialised `EGLDisplay` and `share_context` a context of it (smithay:
    /// `**renderer.egl_context().display().get_display_handle()` and
    /// `renderer.egl_context().get_context_handle()`). Both must stay alive (not terminated, not
    /// destroyed) until this [`Virgl`] is dropped, and this thread must be the one that uses the
    /// compositor's context.
    pub unsafe fn init_with(
        display: RawEglDisplay,
        share_context: RawEglContext,
        options: VirglOptions,
    ) -> Result<Virgl, VirglError> {
        if INSTANCE.swap(true, Ordering::AcqRel) {
            return Err(VirglError::AlreadyInitialized);
        }
        // SAFETY: forwarded contract; on error the flag is released again.
        let result = unsafe { Self::init_inner(display, share_context, options) };
        if result.is_err() {
            INSTANCE.store(false, Ordering::Release);
        }
        result
    }

    /// # Safety
    /// As [`Virgl::init_with`], with `INSTANCE` held.
    unsafe fn init_inner(
        display: RawEglDisplay,
        share_context: RawEglContext,
        options: VirglOptions,
    ) -> Result<Virgl, VirglError> {
        if display.is_null() || share_context.is_null() {
            return Err(VirglError::InvalidArgument("null EGLDisplay or EGLContext"));
        }
        make_sure_egl_is_loaded().map_err(|e| VirglError::Egl(format!("loading libEGL: {e}")))?;
        // smithay's generated bindings panic when an unloaded function is called: check first,
        // so that the callbacks can never hit that.
        let loaded = [
            ("eglCreateContext", egl::CreateContext::is_loaded()),
            ("eglDestroyContext", egl::DestroyContext::is_loaded()),
            ("eglMakeCurrent", egl::MakeCurrent::is_loaded()),
            ("eglGetCurrentContext", egl::GetCurrentContext::is_loaded()),
            ("eglQueryContext", egl::QueryContext::is_loaded()),
            ("eglQueryAPI", egl::QueryAPI::is_loaded()),
            ("eglBindAPI", egl::BindAPI::is_loaded()),
            ("eglChooseConfig", egl::ChooseConfig::is_loaded()),
            ("eglGetError", egl::GetError::is_loaded()),
        ];
        if let Some((name, _)) = loaded.iter().find(|(_, ok)| !ok) {
            return Err(VirglError::Egl(format!("{name} is not available")));
        }

        // The compositor context's client API and config.
        let mut client_type = 0;
        let mut config_id = 0;
        // SAFETY: queries on the caller's display and context (see the safety contract).
        let (ok_type, ok_config) = unsafe {
            (
                egl::QueryContext(display, share_context, egl::CONTEXT_CLIENT_TYPE as i32, &mut client_type),
                egl::QueryContext(display, share_context, egl::CONFIG_ID as i32, &mut config_id),
            )
        };
        if ok_type != egl::TRUE || ok_config != egl::TRUE {
            // SAFETY: plain EGL call.
            let error = unsafe { egl::GetError() };
            return Err(VirglError::Egl(format!("eglQueryContext on the share context failed (0x{error:x})")));
        }
        let share_api = client_type as egl::types::EGLenum;
        let api = match options.api {
            GlApi::SameAsShareContext => share_api,
            GlApi::DesktopGlCore => egl::OPENGL_API,
        };
        if api != egl::OPENGL_ES_API && api != egl::OPENGL_API {
            return Err(VirglError::Egl(format!("share context has client API 0x{api:x}, not GL or GLES")));
        }
        let first = FIRST_API.load(Ordering::Acquire);
        if first != 0 && first != api {
            return Err(VirglError::ClientApiChange { first: client_api(first), requested: client_api(api) });
        }
        let mut config = egl::NO_CONFIG_KHR;
        if config_id != 0 {
            let attribs = [egl::CONFIG_ID as i32, config_id, egl::NONE as i32];
            let mut found = 0;
            // SAFETY: attribs is NONE-terminated; room for one config.
            let ok = unsafe { egl::ChooseConfig(display, attribs.as_ptr(), &mut config, 1, &mut found) };
            if ok != egl::TRUE || found != 1 {
                return Err(VirglError::Egl(format!("no EGLConfig with the share context's id {config_id}")));
            }
        }

        let mut shared = Box::new(Shared {
            cbs: ffi::virgl_renderer_callbacks {
                version: 4,
                write_fence: Some(cb_write_fence),
                create_gl_context: Some(cb_create_gl_context),
                destroy_gl_context: Some(cb_destroy_gl_context),
                make_current: Some(cb_make_current),
                get_drm_fd: None,
                write_context_fence: Some(cb_write_context_fence),
                get_server_fd: None,
                get_egl_display: Some(cb_get_egl_display),
            },
            display,
            share_context,
            config,
            api,
            fences: Mutex::new(Vec::new()),
            first_version: AtomicU32::new(0),
            created: AtomicU32::new(0),
            refused: AtomicU32::new(0),
            destroyed: AtomicU32::new(0),
            make_current_calls: AtomicU32::new(0),
            make_current_failures: AtomicU32::new(0),
        });

        // virglrenderer 0.10.4 does not check that any context could be created: it would make
        // NULL current and crash in libepoxy. Try the lowest version it asks for first.
        let probe = shared.create_context(3, 0);
        if probe.is_null() {
            // SAFETY: plain EGL call.
            let error = unsafe { egl::GetError() };
            return Err(VirglError::Egl(format!(
                "cannot create a {:?} 3.0 context sharing with the compositor's context (0x{error:x})",
                shared.client_api()
            )));
        }
        // SAFETY: the probe context was never made current.
        unsafe { egl::DestroyContext(display, probe) };

        // SAFETY: LOGGER is a valid callback for the lifetime of the process (or None).
        let previous_logger = unsafe { ffi::virgl_set_debug_callback(log::LOGGER) };
        let flags = if options.thread_sync { ffi::VIRGL_RENDERER_THREAD_SYNC } else { 0 };
        let cookie = &*shared as *const Shared as *mut c_void;
        let cbs = &mut shared.cbs as *mut ffi::virgl_renderer_callbacks;
        // SAFETY: cookie and cbs point into the box, which lives until `Drop` has called
        // `virgl_renderer_cleanup`. On failure virglrenderer cleans up itself.
        let code = unsafe { ffi::virgl_renderer_init(cookie, flags, cbs) };
        if code != 0 {
            // SAFETY: restores the logger we replaced.
            unsafe { ffi::virgl_set_debug_callback(previous_logger) };
            return Err(VirglError::Call { call: "init", code });
        }
        FIRST_API.store(api, Ordering::Release);
        let virgl = Virgl { shared, backings: RefCell::new(HashMap::new()), previous_logger, _not_send: PhantomData };
        debug!(gl = ?virgl.gl_version(), thread_sync = options.thread_sync, "virglrenderer initialised");
        Ok(virgl)
    }

    /// The client API and version virglrenderer's contexts got.
    pub fn gl_version(&self) -> GlVersion {
        let v = self.shared.first_version.load(Ordering::Relaxed);
        GlVersion { api: self.shared.client_api(), major: v / 100, minor: v % 100 }
    }

    /// Counters of the GL callbacks so far.
    pub fn callback_stats(&self) -> CallbackStats {
        let s = &self.shared;
        CallbackStats {
            contexts_created: s.created.load(Ordering::Relaxed),
            contexts_refused: s.refused.load(Ordering::Relaxed),
            contexts_destroyed: s.destroyed.load(Ordering::Relaxed),
            make_current_calls: s.make_current_calls.load(Ordering::Relaxed),
            make_current_failures: s.make_current_failures.load(Ordering::Relaxed),
        }
    }

    /// Before a call that may touch GL: if the current EGL context is not the one virglrenderer
    /// last made current on this thread (the compositor drew in between), make virglrenderer
    /// forget its cached current context (`virgl_renderer_force_ctx_0`).
    fn ensure_virgl_current(&self) {
        // SAFETY: plain EGL query of this thread's state.
        let current = unsafe { egl::GetCurrentContext() };
        let ours = VIRGL_CURRENT.try_with(Cell::get).unwrap_or(std::ptr::null());
        if current.is_null() || current != ours {
            self.force_ctx_0();
        }
    }

    /// `virgl_renderer_force_ctx_0`: makes virglrenderer's own context 0 current and forgets
    /// which guest context was current, so that its next GL call re-binds its context. The
    /// wrapper does this itself when needed; call it only after using virglrenderer directly.
    pub fn force_ctx_0(&self) {
        // SAFETY: virglrenderer is initialised.
        unsafe { ffi::virgl_renderer_force_ctx_0() }
    }

    /// `(max_version, max_size in bytes)` of capset `capset_id`; `(0, 0)` when unknown.
    pub fn capset_info(&self, capset_id: u32) -> (u32, u32) {
        let (mut version, mut size) = (0, 0);
        // SAFETY: two valid out-pointers.
        unsafe { ffi::virgl_renderer_get_cap_set(capset_id, &mut version, &mut size) };
        (version, size)
    }

    /// Fills `out` with capset `capset_id` at `version` (virtio-gpu `GET_CAPSET`). Copies at most
    /// `out.len()` bytes of the capset and zeroes the rest of `out`; returns the number of capset
    /// bytes copied (0 for an unknown capset).
    pub fn fill_capset(&self, capset_id: u32, version: u32, out: &mut [u8]) -> usize {
        let (_, size) = self.capset_info(capset_id);
        let size = size as usize;
        // virglrenderer writes `size` bytes as u32 fields: give it an aligned buffer of its own.
        let mut words = vec![0u32; size.div_ceil(4)];
        if size != 0 {
            self.ensure_virgl_current();
            // SAFETY: `words` holds at least `size` bytes, the capset's size.
            unsafe { ffi::virgl_renderer_fill_caps(capset_id, version, words.as_mut_ptr().cast()) };
        }
        let n = size.min(out.len());
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = if i < n { words[i / 4].to_ne_bytes()[i % 4] } else { 0 };
        }
        n
    }

    /// Creates virgl context `ctx_id` (not 0) for capset `capset_id` (`CAPSET_VIRGL`,
    /// `CAPSET_VIRGL2`; 0 means `CAPSET_VIRGL2`, as `virgl_renderer_context_create`). `name` is a
    /// debug name (virglrenderer keeps 63 bytes of it). Creating an existing id with the same
    /// capset succeeds.
    pub fn context_create(&self, ctx_id: u32, capset_id: u32, name: &str) -> Result<(), VirglError> {
        if ctx_id == 0 {
            return Err(VirglError::InvalidArgument("context id 0 is virglrenderer's own"));
        }
        let capset = if capset_id == 0 { CAPSET_VIRGL2 } else { capset_id };
        if capset > 0xff {
            return Err(VirglError::InvalidArgument("capset id above 255"));
        }
        let mut bytes: Vec<u8> = name.bytes().filter(|&b| b != 0).take(63).collect();
        let len = bytes.len() as u32;
        bytes.push(0);
        self.ensure_virgl_current();
        // SAFETY: `bytes` is NUL-terminated and `len` bytes long before the NUL.
        let code = unsafe { ffi::virgl_renderer_context_create_with_flags(ctx_id, capset, len, bytes.as_ptr().cast()) };
        check("context_create_with_flags", code)
    }

    /// Destroys virgl context `ctx_id` (unknown ids are ignored).
    pub fn context_destroy(&self, ctx_id: u32) {
        if ctx_id == 0 {
            return;
        }
        self.ensure_virgl_current();
        // SAFETY: virglrenderer looks the id up.
        unsafe { ffi::virgl_renderer_context_destroy(ctx_id) }
    }

    /// Creates a resource (virtio-gpu `RESOURCE_CREATE_3D`) without backing; attach it with
    /// [`Virgl::attach_iov`].
    pub fn resource_create(&self, args: &ResourceCreate3d) -> Result<(), VirglError> {
        if args.handle == 0 {
            return Err(VirglError::InvalidArgument("resource id 0"));
        }
        let mut args = *args;
        self.ensure_virgl_current();
        // SAFETY: `args` is a valid struct; no iovecs.
        let code = unsafe { ffi::virgl_renderer_resource_create(&mut args, std::ptr::null_mut(), 0) };
        check("resource_create", code)
    }

    /// Drops the resource: detaches its backing (as QEMU does), detaches it from every context
    /// and removes it. Its GL texture goes when the last guest object referencing it goes.
    pub fn resource_unref(&self, res: u32) {
        self.detach_iov(res);
        self.ensure_virgl_current();
        // SAFETY: virglrenderer looks the id up.
        unsafe { ffi::virgl_renderer_resource_unref(res) }
    }

    /// Attaches guest backing pages to resource `res` (virtio-gpu `RESOURCE_ATTACH_BACKING`).
    /// The iovec array is copied and kept by the wrapper until [`Virgl::detach_iov`] /
    /// [`Virgl::resource_unref`]. Fails if the resource already has backing.
    ///
    /// # Safety
    /// Every iovec must describe memory that stays mapped, readable and writable, and not aliased
    /// by Rust references while virglrenderer may use it, until the backing is detached
    /// ([`Virgl::detach_iov`], [`Virgl::resource_unref`] or dropping the [`Virgl`]).
    pub unsafe fn attach_iov(&self, res: u32, iov: &[libc::iovec]) -> Result<(), VirglError> {
        if iov.is_empty() || iov.len() > i32::MAX as usize {
            return Err(VirglError::InvalidArgument("iovec count"));
        }
        if self.backings.borrow().contains_key(&res) {
            return Err(VirglError::InvalidArgument("resource already has backing"));
        }
        let mut owned: Box<[libc::iovec]> = iov.into();
        self.ensure_virgl_current();
        // SAFETY: `owned` lives in `self.backings` until virglrenderer lets go of it; the memory
        // it describes is the caller's promise. Ids are passed through as int (virglrenderer
        // converts back to uint32_t, so the bit pattern is kept).
        let code =
            unsafe { ffi::virgl_renderer_resource_attach_iov(res as c_int, owned.as_mut_ptr(), owned.len() as c_int) };
        check("resource_attach_iov", code)?;
        self.backings.borrow_mut().insert(res, owned);
        Ok(())
    }

    /// Detaches the backing of `res` (virtio-gpu `RESOURCE_DETACH_BACKING`); no-op without one.
    pub fn detach_iov(&self, res: u32) {
        let Some(owned) = self.backings.borrow_mut().remove(&res) else {
            return;
        };
        self.ensure_virgl_current();
        let mut iov: *mut libc::iovec = std::ptr::null_mut();
        let mut count: c_int = 0;
        // SAFETY: out-pointers are valid; virglrenderer hands back the array we gave it.
        unsafe { ffi::virgl_renderer_resource_detach_iov(res as c_int, &mut iov, &mut count) };
        debug_assert!(iov.is_null() || std::ptr::eq(iov, owned.as_ptr()));
        drop(owned);
    }

    /// Lets context `ctx_id` use resource `res` (virtio-gpu `CTX_ATTACH_RESOURCE`); unknown ids
    /// are ignored by virglrenderer.
    pub fn ctx_attach_resource(&self, ctx_id: u32, res: u32) {
        self.ensure_virgl_current();
        // SAFETY: virglrenderer looks both ids up.
        unsafe { ffi::virgl_renderer_ctx_attach_resource(ctx_id as c_int, res as c_int) }
    }

    /// Revokes context `ctx_id`'s use of resource `res` (virtio-gpu `CTX_DETACH_RESOURCE`).
    pub fn ctx_detach_resource(&self, ctx_id: u32, res: u32) {
        self.ensure_virgl_current();
        // SAFETY: virglrenderer looks both ids up.
        unsafe { ffi::virgl_renderer_ctx_detach_resource(ctx_id as c_int, res as c_int) }
    }

    /// Decodes and executes a virgl command stream (`SUBMIT_3D`) of `dwords.len()` 32-bit words
    /// in context `ctx_id`. Resource handles inside must already be host ids. An error leaves the
    /// guest context in an error state (later submits fail too).
    pub fn submit_cmd(&self, ctx_id: u32, dwords: &mut [u32]) -> Result<(), VirglError> {
        if dwords.is_empty() {
            return Ok(());
        }
        if dwords.len() > (i32::MAX / 4) as usize {
            return Err(VirglError::InvalidArgument("command stream too long"));
        }
        self.ensure_virgl_current();
        // SAFETY: the buffer is valid for `dwords.len()` words for the duration of the call.
        let code = unsafe {
            ffi::virgl_renderer_submit_cmd(dwords.as_mut_ptr().cast(), ctx_id as c_int, dwords.len() as c_int)
        };
        check("submit_cmd", code)
    }

    /// Copies a region from the resource's attached backing into the resource
    /// (`TRANSFER_TO_HOST_3D`). virglrenderer checks the region against the resource and the
    /// backing's size.
    pub fn transfer_write(&self, t: &Transfer) -> Result<(), VirglError> {
        let level = c_int::try_from(t.level).map_err(|_| VirglError::InvalidArgument("mip level"))?;
        let mut bbox = t.bbox;
        self.ensure_virgl_current();
        // SAFETY: iov NULL/0: virglrenderer uses the backing attached through `attach_iov`.
        let code = unsafe {
            ffi::virgl_renderer_transfer_write_iov(
                t.resource_id,
                t.ctx_id,
                level,
                t.stride,
                t.layer_stride,
                &mut bbox,
                t.offset,
                std::ptr::null_mut(),
                0 as c_uint,
            )
        };
        check("transfer_write_iov", code)
    }

    /// Copies a region of the resource into its attached backing (`TRANSFER_FROM_HOST_3D`).
    pub fn transfer_read(&self, t: &Transfer) -> Result<(), VirglError> {
        let mut bbox = t.bbox;
        self.ensure_virgl_current();
        // SAFETY: iov NULL/0: virglrenderer uses the backing attached through `attach_iov`.
        let code = unsafe {
            ffi::virgl_renderer_transfer_read_iov(
                t.resource_id,
                t.ctx_id,
                t.level,
                t.stride,
                t.layer_stride,
                &mut bbox,
                t.offset,
                std::ptr::null_mut(),
                0,
            )
        };
        check("transfer_read_iov", code)
    }

    /// Queues a fence on virglrenderer's global timeline (context 0). virglrenderer 0.10.4 takes
    /// a 32-bit id here (`int client_fence_id`; QEMU truncates the 64-bit virtio fence id). All
    /// guests share this one timeline and its fences are merged, so give it a host-side
    /// increasing sequence and map back. It retires through [`Virgl::poll`] /
    /// [`Virgl::drain_fences`] as `Fence { global: true, .. }`.
    pub fn create_fence(&self, fence_id: u32) -> Result<(), VirglError> {
        self.ensure_virgl_current();
        // SAFETY: plain call; the id is passed as its bit pattern (virglrenderer casts back).
        let code = unsafe { ffi::virgl_renderer_create_fence(fence_id as c_int, 0) };
        check("create_fence", code)
    }

    /// Queues a fence on context `ctx_id`'s ring `ring_idx` (virtio-gpu `VIRTIO_GPU_FLAG_INFO_RING_IDX`).
    /// virgl (vrend) contexts have only ring 0 (others give `-EINVAL`); `flags` may hold
    /// [`FENCE_FLAG_MERGEABLE`]. Retires as `Fence { global: false, ctx_id, ring_idx, fence_id }`.
    pub fn context_create_fence(
        &self,
        ctx_id: u32,
        flags: u32,
        ring_idx: u32,
        fence_id: u64,
    ) -> Result<(), VirglError> {
        self.ensure_virgl_current();
        // SAFETY: plain call; the callbacks struct has version 4 and write_context_fence set,
        // which virglrenderer asserts.
        let code = unsafe { ffi::virgl_renderer_context_create_fence(ctx_id, flags, ring_idx, fence_id) };
        check("context_create_fence", code)
    }

    /// Checks for retired fences (`virgl_renderer_poll`); their callbacks run in this call and
    /// queue them for [`Virgl::drain_fences`].
    pub fn poll(&self) {
        self.ensure_virgl_current();
        // SAFETY: plain call.
        unsafe { ffi::virgl_renderer_poll() }
    }

    /// The eventfd that becomes readable when fences retire (only with
    /// [`VirglOptions::thread_sync`]); `None` means: poll on a timer.
    pub fn poll_fd(&self) -> Option<RawFd> {
        // SAFETY: plain call.
        let fd = unsafe { ffi::virgl_renderer_get_poll_fd() };
        (fd >= 0).then_some(fd)
    }

    /// Takes the fences retired since the last call, in retirement order.
    pub fn drain_fences(&self) -> Vec<Fence> {
        match self.shared.fences.lock() {
            Ok(mut queue) => std::mem::take(&mut *queue),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    /// The GL texture and layout of resource `res`; `None` for an unknown resource or one
    /// without a GL object (blob resources).
    pub fn resource_info(&self, res: u32) -> Option<ResourceInfo> {
        let mut info = ffi::virgl_renderer_resource_info::default();
        // SAFETY: valid out-pointer; no GL involved (virglrenderer reads its own bookkeeping).
        let code = unsafe { ffi::virgl_renderer_resource_get_info(res as c_int, &mut info) };
        (code == 0).then_some(ResourceInfo {
            tex_id: info.tex_id,
            width: info.width,
            height: info.height,
            depth: info.depth,
            virgl_format: info.virgl_format,
            stride: info.stride,
            flags: info.flags,
            y_0_top: info.flags & RESOURCE_Y_0_TOP != 0,
        })
    }
}

impl Drop for Virgl {
    fn drop(&mut self) {
        self.ensure_virgl_current();
        let cookie = &*self.shared as *const Shared as *mut c_void;
        // SAFETY: destroys every virgl context and resource; the callbacks (destroy_gl_context,
        // make_current) still find `self.shared`, which is dropped only after this.
        unsafe { ffi::virgl_renderer_cleanup(cookie) };
        // SAFETY: plain EGL calls. virglrenderer's (now destroyed) context is still current:
        // release it so EGL really frees it, unless the compositor's context is current.
        unsafe {
            let current = egl::GetCurrentContext();
            if !current.is_null() && current != self.shared.share_context {
                egl::MakeCurrent(self.shared.display, egl::NO_SURFACE, egl::NO_SURFACE, egl::NO_CONTEXT);
            }
            ffi::virgl_set_debug_callback(self.previous_logger);
        }
        let _ = VIRGL_CURRENT.try_with(|current| current.set(std::ptr::null()));
        // virglrenderer no longer points into these.
        self.backings.borrow_mut().clear();
        let stats = self.callback_stats();
        if stats.make_current_failures != 0 {
            warn!(?stats, "virglrenderer: some make_current calls failed");
        }
        INSTANCE.store(false, Ordering::Release);
    }
}

/// One test (virglrenderer is process-global): a smithay GLES compositor on the EGL device
/// platform (surfaceless as fallback), virglrenderer in its share group, a guest-style clear,
/// and the result read both through virglrenderer and straight from the compositor's context.
/// It is the only unit test of the crate that opens an EGL display: Mesa hands out the same
/// `EGLDisplay` for the same platform and device, and smithay terminates it on drop, so a second
/// concurrent test doing so would pull the display from under this one.
#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use smithay::{
        backend::{
            allocator::Fourcc,
            egl::{EGLContext, EGLDevice, EGLDisplay, native::EGLSurfacelessDisplay},
            renderer::{
                Bind, ExportMem, Frame, Offscreen, Renderer,
                gles::{GlesRenderbuffer, GlesRenderer, GlesTexture, ffi as gl},
            },
        },
        utils::{Rectangle, Transform},
    };

    use super::*;

    // virgl protocol numbers (virglrenderer src/virgl_protocol.h, virgl_hw.h; gallium p_defines.h).
    const CCMD_CREATE_OBJECT: u32 = 1;
    const CCMD_SET_FRAMEBUFFER_STATE: u32 = 5;
    const CCMD_CLEAR: u32 = 7;
    const OBJECT_SURFACE: u32 = 8;
    const PIPE_CLEAR_COLOR0: u32 = 1 << 2;
    const PIPE_TEXTURE_2D: u32 = 2;
    const FORMAT_B8G8R8A8_UNORM: u32 = 1;
    const BIND_RENDER_TARGET: u32 = 1 << 1;
    const BIND_SAMPLER_VIEW: u32 = 1 << 3;
    /// dword offsets in `union virgl_caps` (virgl_hw.h, 0.10.4).
    const CAPS_GLSL_LEVEL: usize = 66;
    const CAPS_RENDERER: usize = 174;

    const W: u32 = 256;
    const H: u32 = 256;

    fn cmd0(cmd: u32, obj: u32, len: u32) -> u32 {
        cmd | (obj << 8) | (len << 16)
    }

    /// CREATE_OBJECT(surface `surface` on `res`) + SET_FRAMEBUFFER_STATE(1 cbuf) when `create`,
    /// then CLEAR(color0 = rgba).
    fn clear_stream(res: u32, surface: u32, create: bool, rgba: [f32; 4]) -> Vec<u32> {
        let mut s = Vec::new();
        if create {
            s.extend([cmd0(CCMD_CREATE_OBJECT, OBJECT_SURFACE, 5), surface, res, FORMAT_B8G8R8A8_UNORM, 0, 0]);
            s.extend([cmd0(CCMD_SET_FRAMEBUFFER_STATE, 0, 3), 1, 0, surface]);
        }
        s.extend([cmd0(CCMD_CLEAR, 0, 8), PIPE_CLEAR_COLOR0]);
        s.extend(rgba.map(f32::to_bits));
        s.extend([0, 0, 0]); // depth (f64), stencil
        s
    }

    /// The compositor as scanway builds it (renderer::headless_renderer): EGL device platform,
    /// else surfaceless; a config-less GLES context; smithay's GlesRenderer.
    fn compositor() -> GlesRenderer {
        let display = EGLDevice::enumerate()
            .ok()
            .and_then(|mut devices| devices.next())
            // SAFETY: one display for the life of the renderer.
            .and_then(|device| unsafe { EGLDisplay::new(device) }.ok())
            // SAFETY: as above.
            .unwrap_or_else(|| unsafe { EGLDisplay::new(EGLSurfacelessDisplay) }.expect("no EGL display at all"));
        let context = EGLContext::new(&display).expect("EGL context");
        // SAFETY: fresh context, used only through this renderer on this thread.
        unsafe { GlesRenderer::new(context) }.expect("GLES renderer")
    }

    /// Polls until a fence matching `want` retires (5 s at most); returns all fences seen and
    /// the time it took.
    fn wait_fence(virgl: &Virgl, want: impl Fn(&Fence) -> bool) -> (Vec<Fence>, Duration) {
        let start = Instant::now();
        let mut seen = Vec::new();
        while start.elapsed() < Duration::from_secs(5) {
            if let Some(fd) = virgl.poll_fd() {
                let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, 10) };
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
            virgl.poll();
            seen.extend(virgl.drain_fences());
            if seen.iter().any(&want) {
                return (seen, start.elapsed());
            }
        }
        panic!("fence not retired after 5 s; seen {seen:?}");
    }

    /// Reads pixel (x, y) (GL coordinates) of texture `tex` in the compositor's context through
    /// an FBO: RGBA bytes, plus glIsTexture.
    fn read_in_compositor(renderer: &mut GlesRenderer, tex: u32, x: i32, y: i32) -> (bool, [u8; 4]) {
        renderer
            .with_context(|gl| {
                let mut px = [0u8; 4];
                // SAFETY: plain GL calls in the compositor's (current) context.
                unsafe {
                    let is_texture = gl.IsTexture(tex) == gl::TRUE;
                    let mut fbo = 0;
                    gl.GenFramebuffers(1, &mut fbo);
                    gl.BindFramebuffer(gl::FRAMEBUFFER, fbo);
                    gl.FramebufferTexture2D(gl::FRAMEBUFFER, gl::COLOR_ATTACHMENT0, gl::TEXTURE_2D, tex, 0);
                    let status = gl.CheckFramebufferStatus(gl::FRAMEBUFFER);
                    assert_eq!(status, gl::FRAMEBUFFER_COMPLETE, "FBO on virgl texture");
                    gl.ReadPixels(x, y, 1, 1, gl::RGBA, gl::UNSIGNED_BYTE, px.as_mut_ptr().cast());
                    assert_eq!(gl.GetError(), gl::NO_ERROR);
                    gl.BindFramebuffer(gl::FRAMEBUFFER, 0);
                    gl.DeleteFramebuffers(1, &fbo);
                    (is_texture, px)
                }
            })
            .expect("with_context")
    }

    /// Composites texture `tex` (W x H) with smithay into a 64x64 offscreen target and returns
    /// the centre pixel (RGBA).
    fn composite_in_compositor(renderer: &mut GlesRenderer, tex: u32) -> [u8; 4] {
        // SAFETY: `from_raw` takes ownership and would delete virgl's texture on drop: the
        // wrapper is forgotten below, never dropped (it leaks one small Arc in this test).
        let texture =
            unsafe { GlesTexture::from_raw(renderer, Some(gl::RGBA8), false, tex, (W as i32, H as i32).into()) };
        let mut target: GlesRenderbuffer =
            Offscreen::<GlesRenderbuffer>::create_buffer(renderer, Fourcc::Abgr8888, (64, 64).into()).unwrap();
        let pixel = {
            let mut fb = renderer.bind(&mut target).unwrap();
            {
                let mut frame = renderer.render(&mut fb, (64, 64).into(), Transform::Normal).unwrap();
                let full = Rectangle::from_size((64, 64).into());
                frame.clear([0.0, 0.0, 0.0, 1.0].into(), &[full]).unwrap();
                let src = Rectangle::from_size((f64::from(W), f64::from(H)).into());
                Frame::render_texture_from_to(&mut frame, &texture, src, full, &[full], &[], Transform::Normal, 1.0)
                    .unwrap();
                let sync = frame.finish().unwrap();
                renderer.wait(&sync).unwrap();
            }
            let mapping =
                renderer.copy_framebuffer(&fb, Rectangle::from_size((64, 64).into()), Fourcc::Abgr8888).unwrap();
            let bytes = renderer.map_texture(&mapping).unwrap();
            let i = (32 * 64 + 32) * 4;
            [bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]
        };
        std::mem::forget(texture);
        pixel
    }

    fn bgra_at(backing: &[u8], x: u32, y: u32) -> [u8; 4] {
        let i = ((y * W + x) * 4) as usize;
        [backing[i], backing[i + 1], backing[i + 2], backing[i + 3]]
    }

    /// Runs one full guest-style round on `virgl`: context, RT resource, clear, fence, both
    /// read-backs; then the green clear after the compositor drew, without a manual force_ctx_0.
    /// Returns the GLSL level of capset 2.
    fn round(virgl: &Virgl, renderer: &mut GlesRenderer, label: &str) -> u32 {
        let mut glsl_level = 0;
        let ctx = 1;
        let res = 1;
        virgl.context_create(ctx, CAPSET_VIRGL2, "scanway-test").unwrap();
        virgl.context_create(ctx, CAPSET_VIRGL2, "scanway-test").expect("same id, same capset is ok");
        assert!(matches!(virgl.context_create(0, 2, "x"), Err(VirglError::InvalidArgument(_))));
        let args = ResourceCreate3d {
            handle: res,
            target: PIPE_TEXTURE_2D,
            format: FORMAT_B8G8R8A8_UNORM,
            bind: BIND_RENDER_TARGET | BIND_SAMPLER_VIEW,
            width: W,
            height: H,
            depth: 1,
            array_size: 1,
            last_level: 0,
            nr_samples: 0,
            flags: 0,
        };
        virgl.resource_create(&args).unwrap();
        let mut backing = vec![0xaau8; (W * H * 4) as usize];
        let iov = [libc::iovec { iov_base: backing.as_mut_ptr().cast(), iov_len: backing.len() }];
        // SAFETY: `backing` outlives the attachment (detached below) and is only read after
        // virgl calls return.
        unsafe { virgl.attach_iov(res, &iov) }.unwrap();
        // SAFETY: as above.
        assert!(unsafe { virgl.attach_iov(res, &iov) }.is_err(), "second attach must fail");
        virgl.ctx_attach_resource(ctx, res);

        // Clear to (0.8, 0.4, 0.2, 1): B8G8R8A8 bytes 51,102,204,255; GL RGBA 204,102,51,255.
        let mut stream = clear_stream(res, 10, true, [0.8, 0.4, 0.2, 1.0]);
        virgl.submit_cmd(ctx, &mut stream).unwrap();
        virgl.create_fence(1).unwrap();
        let (fences, took) = wait_fence(virgl, |f| f.global && f.fence_id == 1);
        println!("[{label}] global fence 1 retired after {took:?}: {fences:?}");
        virgl.context_create_fence(ctx, 0, 0, 77).unwrap();
        assert!(virgl.context_create_fence(ctx, 0, 1, 78).is_err(), "vrend contexts only have ring 0");
        let (fences, took) = wait_fence(virgl, |f| !f.global && f.ctx_id == ctx && f.fence_id == 77);
        println!("[{label}] context fence 77 retired after {took:?}: {fences:?}");

        let full = Transfer {
            resource_id: res,
            ctx_id: ctx,
            bbox: Box3d { x: 0, y: 0, z: 0, w: W, h: H, d: 1 },
            ..Transfer::default()
        };
        virgl.transfer_read(&full).unwrap();
        for (x, y) in [(0, 0), (128, 128), (255, 255), (17, 230)] {
            assert_eq!(bgra_at(&backing, x, y), [51, 102, 204, 255], "[{label}] virgl read-back at ({x},{y})");
        }
        let info = virgl.resource_info(res).expect("resource info");
        println!("[{label}] resource_info: {info:?}");
        assert!(info.tex_id != 0);
        assert_eq!((info.width, info.height, info.virgl_format, info.stride), (W, H, FORMAT_B8G8R8A8_UNORM, W * 4));
        assert_eq!(virgl.resource_info(999), None);

        // The same texture, read in the compositor's context: zero copies.
        let (is_texture, rgba) = read_in_compositor(renderer, info.tex_id, 128, 128);
        println!("[{label}] compositor reads tex {}: glIsTexture={is_texture} RGBA={rgba:?}", info.tex_id);
        assert!(is_texture);
        assert_eq!(rgba, [204, 102, 51, 255]);
        let rgba = composite_in_compositor(renderer, info.tex_id);
        println!("[{label}] smithay composites tex {}: RGBA={rgba:?}", info.tex_id);
        assert_eq!(rgba, [204, 102, 51, 255]);

        // The compositor's context is current now. Submit again WITHOUT calling force_ctx_0:
        // the wrapper must notice and re-bind virglrenderer's context.
        let before = virgl.callback_stats().make_current_calls;
        let mut stream = clear_stream(res, 10, false, [0.0, 1.0, 0.0, 1.0]);
        virgl.submit_cmd(ctx, &mut stream).expect("submit after the compositor drew");
        assert!(virgl.callback_stats().make_current_calls > before, "virgl context re-bound");
        virgl.create_fence(2).unwrap();
        wait_fence(virgl, |f| f.global && f.fence_id == 2);
        virgl.transfer_read(&full).unwrap();
        assert_eq!(bgra_at(&backing, 128, 128), [0, 255, 0, 255], "[{label}] green after compositor drew");
        assert_eq!(read_in_compositor(renderer, info.tex_id, 5, 250).1, [0, 255, 0, 255]);
        // And once more, to be sure the guest context is still alive.
        let mut stream = clear_stream(res, 10, false, [0.0, 0.0, 1.0, 1.0]);
        virgl.submit_cmd(ctx, &mut stream).expect("guest context still alive");

        // A partial transfer_write into the texture, read back by the compositor.
        backing[..4].copy_from_slice(&[0x10, 0x20, 0x30, 0xff]); // pixel (0, 0): B, G, R, A
        let one = Transfer { bbox: Box3d { x: 0, y: 0, z: 0, w: 1, h: 1, d: 1 }, stride: W * 4, ..full };
        virgl.transfer_write(&one).unwrap();
        virgl.create_fence(3).unwrap();
        wait_fence(virgl, |f| f.global && f.fence_id == 3);
        // Without Y_0_TOP, row 0 of the backing is GL row 0 (the bottom in GL terms, the top
        // for smithay's Transform::Normal, which shows texture row 0 at the top).
        assert!(!info.y_0_top);
        let (_, px) = read_in_compositor(renderer, info.tex_id, 0, 0);
        let (_, untouched) = read_in_compositor(renderer, info.tex_id, 0, H as i32 - 1);
        println!(
            "[{label}] after transfer_write of backing pixel (0,0): GL (0,0) = {px:?}, GL (0,255) = {untouched:?}"
        );
        assert_eq!(px, [0x30, 0x20, 0x10, 0xff]);
        assert_eq!(untouched, [0, 0, 255, 255]);

        // Capsets.
        for capset in [CAPSET_VIRGL, CAPSET_VIRGL2] {
            let (version, size) = virgl.capset_info(capset);
            let mut caps = vec![0xffu8; size as usize + 8];
            let n = virgl.fill_capset(capset, version, &mut caps);
            let word = |i: usize| u32::from_ne_bytes(caps[i * 4..i * 4 + 4].try_into().unwrap());
            println!(
                "[{label}] capset {capset}: max_version {version}, {size} bytes, glsl_level {}",
                word(CAPS_GLSL_LEVEL)
            );
            assert!(version >= 1 && n == size as usize && caps[n..].iter().all(|&b| b == 0));
            assert!(word(CAPS_GLSL_LEVEL) >= 300);
            if capset == CAPSET_VIRGL2 {
                glsl_level = word(CAPS_GLSL_LEVEL);
                let renderer_name = String::from_utf8_lossy(&caps[CAPS_RENDERER * 4..CAPS_RENDERER * 4 + 64]);
                println!("[{label}] renderer {}", renderer_name.trim_end_matches('\0'));
            }
        }
        assert_eq!(virgl.capset_info(77), (0, 0));
        let mut small = [0xffu8; 16];
        assert_eq!(virgl.fill_capset(CAPSET_VIRGL2, 2, &mut small), 16);

        // Tear down in virtio order.
        virgl.ctx_detach_resource(ctx, res);
        virgl.detach_iov(res);
        virgl.resource_unref(res);
        assert_eq!(virgl.resource_info(res), None);
        virgl.context_destroy(ctx);
        let mut stream = clear_stream(res, 10, false, [0.0, 0.0, 0.0, 1.0]);
        assert!(virgl.submit_cmd(ctx, &mut stream).is_err(), "destroyed context");
        drop(backing);
        glsl_level
    }

    /// Clears a 16x16 offscreen target with smithay and reads it back: the compositor works.
    fn compositor_still_renders(renderer: &mut GlesRenderer) -> [u8; 4] {
        let mut target: GlesRenderbuffer =
            Offscreen::<GlesRenderbuffer>::create_buffer(renderer, Fourcc::Abgr8888, (16, 16).into()).unwrap();
        let mut fb = renderer.bind(&mut target).unwrap();
        let full = Rectangle::from_size((16, 16).into());
        {
            let mut frame = renderer.render(&mut fb, (16, 16).into(), Transform::Normal).unwrap();
            frame.clear([0.0, 1.0, 1.0, 1.0].into(), &[full]).unwrap();
            let sync = frame.finish().unwrap();
            renderer.wait(&sync).unwrap();
        }
        let mapping = renderer.copy_framebuffer(&fb, Rectangle::from_size((16, 16).into()), Fourcc::Abgr8888).unwrap();
        let bytes = renderer.map_texture(&mapping).unwrap();
        [bytes[0], bytes[1], bytes[2], bytes[3]]
    }

    /// Environment variable that makes the test run only its desktop-GL variant (in a child
    /// process: virglrenderer 0.10.4 cannot switch between GLES and GL within one process).
    const CHILD_ENV: &str = "SCANWAY_VIRGL_TEST_DESKTOP_GL";

    #[test]
    fn virgl_in_the_compositor_share_group() {
        let _ = tracing_subscriber::fmt().with_env_filter("debug").with_test_writer().try_init();
        let mut renderer = compositor();
        let display = **renderer.egl_context().display().get_display_handle();
        let context = renderer.egl_context().get_context_handle();

        if std::env::var_os(CHILD_ENV).is_some() {
            // Desktop GL core contexts sharing with the GLES compositor context (Mesa only).
            let options = VirglOptions { api: GlApi::DesktopGlCore, thread_sync: false };
            // SAFETY: display and context outlive `virgl` (dropped before the renderer).
            let virgl = match unsafe { Virgl::init_with(display, context, options) } {
                Ok(virgl) => virgl,
                // EGL does not promise GL-with-GLES sharing; Mesa allows it. Elsewhere a clean
                // refusal is the right outcome.
                Err(VirglError::Egl(e)) => {
                    println!("[gl] skipped: the driver refuses desktop GL sharing with GLES: {e}");
                    return;
                }
                Err(e) => panic!("virgl init (desktop GL): {e}"),
            };
            println!("[gl] {:?}", virgl.gl_version());
            assert_eq!(virgl.gl_version().api, ClientApi::DesktopGl);
            let glsl = round(&virgl, &mut renderer, "gl");
            assert!(glsl >= 450, "desktop GL 4.5+ gives GLSL 450+, got {glsl}");
            drop(virgl);
            assert_eq!(compositor_still_renders(&mut renderer), [0, 255, 255, 255]);
            return;
        }

        // Phase 1: the default (flags 0, contexts of the compositor's API: GLES).
        let start = Instant::now();
        // SAFETY: display and context outlive `virgl` (dropped before the renderer).
        let virgl = unsafe { Virgl::init(display, context) }.expect("virgl init");
        println!("[gles] init took {:?}; {:?}; {:?}", start.elapsed(), virgl.gl_version(), virgl.callback_stats());
        assert_eq!(virgl.gl_version().api, ClientApi::Gles);
        assert_eq!(virgl.poll_fd(), None);
        // SAFETY: as above.
        assert!(matches!(unsafe { Virgl::init(display, context) }, Err(VirglError::AlreadyInitialized)));
        round(&virgl, &mut renderer, "gles");
        let stats = virgl.callback_stats();
        drop(virgl);
        println!("[gles] callbacks: {stats:?}");
        assert!(stats.contexts_created >= 2 && stats.make_current_failures == 0);
        // virgl_renderer_cleanup left the compositor's display and context alone.
        assert_eq!(compositor_still_renders(&mut renderer), [0, 255, 255, 255]);

        // Phase 2: re-initialise (same API) with THREAD_SYNC: a poll fd, fences via the sync thread.
        let options = VirglOptions { api: GlApi::SameAsShareContext, thread_sync: true };
        let desktop = VirglOptions { api: GlApi::DesktopGlCore, ..options };
        // SAFETY: as above.
        let switched = unsafe { Virgl::init_with(display, context, desktop) };
        assert!(matches!(switched, Err(VirglError::ClientApiChange { .. })), "API switch refused");
        // SAFETY: as above.
        let virgl = unsafe { Virgl::init_with(display, context, options) }.expect("virgl re-init (thread sync)");
        println!("[gles+thread-sync] {:?}; poll fd {:?}", virgl.gl_version(), virgl.poll_fd());
        assert!(virgl.poll_fd().is_some());
        round(&virgl, &mut renderer, "gles+thread-sync");
        drop(virgl);
        assert_eq!(compositor_still_renders(&mut renderer), [0, 255, 255, 255]);
        drop(renderer);

        // Phase 3, in a child process: desktop GL core virgl contexts.
        let exe = std::env::current_exe().unwrap();
        let name = module_path!().split_once("::").map_or(module_path!(), |(_, rest)| rest).to_owned()
            + "::virgl_in_the_compositor_share_group";
        let out = std::process::Command::new(exe)
            .args(["--exact", &name, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        for line in stdout.lines().filter(|l| l.starts_with('[')) {
            println!("child: {line}");
        }
        assert!(out.status.success(), "desktop GL child failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("1 passed"), "child ran no test:\n{stdout}");
    }
}
