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
//! command; this costs one `eglGetCurrentContext` when nothing changed). One call changes the
//! current GL context without telling virglrenderer's cache: creating a context makes its new GL
//! context current, so [`Virgl::context_create`] forces context 0 after it. [`Virgl::force_ctx_0`]
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

mod callbacks;
mod ffi;
#[cfg(test)]
mod tests;
mod types;

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    ffi::{c_int, c_uint, c_void},
    marker::PhantomData,
    os::fd::RawFd,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
};

use smithay::backend::egl::ffi::{egl, make_sure_egl_is_loaded};
use tracing::{debug, warn};

use callbacks::{
    Shared, VIRGL_CURRENT, cb_create_gl_context, cb_destroy_gl_context, cb_get_egl_display, cb_make_current,
    cb_write_context_fence, cb_write_fence, log,
};
use types::client_api;
pub use types::{
    Box3d, CAPSET_VIRGL, CAPSET_VIRGL2, CallbackStats, ClientApi, FENCE_FLAG_MERGEABLE, Fence, GlApi, GlVersion,
    RESOURCE_Y_0_TOP, RawEglContext, RawEglDisplay, ResourceCreate3d, ResourceInfo, Transfer, VirglError, VirglOptions,
};

fn check(call: &'static str, code: c_int) -> Result<(), VirglError> {
    if code == 0 { Ok(()) } else { Err(VirglError::Call { call, code }) }
}

/// Set while a [`Virgl`] exists.
static INSTANCE: AtomicBool = AtomicBool::new(false);
/// The EGL client API of the first successful initialisation (0: none yet).
static FIRST_API: AtomicU32 = AtomicU32::new(0);

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
        // vrend_renderer_create_sub_ctx made the new context's GL context current through
        // `make_current` without recording it as virglrenderer's current context: its cache
        // still names the context current before, and the EGL check of `ensure_virgl_current`
        // (which compares with what `make_current` was last given) cannot see that. Forget the
        // cache now, or the next call for that earlier context issues its GL calls (a vertex
        // array object created, say) into the new one; measured: two guests' kmscube, one
        // context dying with "glBindVertexArray(non-gen name)" (MESA_DEBUG) at DRAW_VBO, in
        // about 1 run in 15.
        self.force_ctx_0();
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
        // SAFETY: iov NULL/0: virglrenderer uses the backing attached through `attach_iov`.
        unsafe { self.read_iov(t, std::ptr::null_mut(), 0) }
    }

    /// Copies a region of the resource into `iov` instead of its backing.
    ///
    /// # Safety
    /// Every iovec must describe writable memory not aliased by Rust references.
    pub unsafe fn transfer_read_into(&self, t: &Transfer, iov: &mut [libc::iovec]) -> Result<(), VirglError> {
        let count = c_int::try_from(iov.len()).map_err(|_| VirglError::InvalidArgument("iovec count"))?;
        // SAFETY: forwarded contract; virglrenderer checks the box against the resource and
        // the iovecs' total length.
        unsafe { self.read_iov(t, iov.as_mut_ptr(), count) }
    }

    /// `virgl_renderer_transfer_read_iov` of `t` into `iov` (`count` entries; NULL/0: the
    /// attached backing).
    ///
    /// # Safety
    /// As [`Virgl::transfer_read_into`] for a non-null `iov`.
    unsafe fn read_iov(&self, t: &Transfer, iov: *mut libc::iovec, count: c_int) -> Result<(), VirglError> {
        let mut bbox = t.bbox;
        self.ensure_virgl_current();
        // SAFETY: the caller's promise for `iov`; the box is a local copy.
        let code = unsafe {
            ffi::virgl_renderer_transfer_read_iov(
                t.resource_id,
                t.ctx_id,
                t.level,
                t.stride,
                t.layer_stride,
                &mut bbox,
                t.offset,
                iov,
                count,
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
