//! The callbacks virglrenderer calls: `create_gl_context`, `destroy_gl_context`,
//! `make_current` and `get_egl_display` on the compositor's EGL display, the two fence
//! callbacks, and the logger that routes virglrenderer's log lines to `tracing`. [`Shared`] is
//! the state they reach through virglrenderer's cookie.

use std::{
    cell::Cell,
    ffi::{c_int, c_void},
    panic::AssertUnwindSafe,
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

use smithay::backend::egl::ffi::egl;
use tracing::debug;

use super::{ClientApi, Fence, RawEglContext, RawEglDisplay, ffi, types::client_api};

thread_local! {
    /// The GL context virglrenderer last made current on this thread (NULL: none / unknown).
    pub(super) static VIRGL_CURRENT: Cell<RawEglContext> = const { Cell::new(std::ptr::null()) };
}

/// State the callbacks see through the cookie. Boxed: virglrenderer keeps pointers to it (the
/// cookie) and to `cbs` until `virgl_renderer_cleanup`.
pub(super) struct Shared {
    pub(super) cbs: ffi::virgl_renderer_callbacks,
    pub(super) display: RawEglDisplay,
    pub(super) share_context: RawEglContext,
    pub(super) config: egl::types::EGLConfig,
    /// `EGL_OPENGL_ES_API` or `EGL_OPENGL_API`.
    pub(super) api: egl::types::EGLenum,
    pub(super) fences: Mutex<Vec<Fence>>,
    /// major * 100 + minor of the first context created; 0 until then.
    pub(super) first_version: AtomicU32,
    pub(super) created: AtomicU32,
    pub(super) refused: AtomicU32,
    pub(super) destroyed: AtomicU32,
    pub(super) make_current_calls: AtomicU32,
    pub(super) make_current_failures: AtomicU32,
}

// SAFETY: the raw EGL handles are plain identifiers that EGL allows to be used from any thread
// (a context is current on one thread at a time, which EGL itself enforces); the rest is atomics
// and a mutex. virglrenderer calls the callbacks from the "vrend-sync" thread with THREAD_SYNC.
unsafe impl Sync for Shared {}
// SAFETY: as above.
unsafe impl Send for Shared {}

impl Shared {
    pub(super) fn client_api(&self) -> ClientApi {
        client_api(self.api)
    }

    /// `eglCreateContext` of `self.api` `major.minor` sharing with the compositor's context.
    /// Restores the thread's bound API (smithay binds `EGL_OPENGL_ES_API` once per thread and
    /// relies on it). Returns NULL on failure.
    pub(super) fn create_context(&self, major: i32, minor: i32) -> RawEglContext {
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

pub(super) unsafe extern "C" fn cb_write_fence(cookie: *mut c_void, fence: u32) {
    no_unwind((), || {
        // SAFETY: virglrenderer passes back our cookie.
        let shared = unsafe { shared(cookie) };
        if let Ok(mut queue) = shared.fences.lock() {
            queue.push(Fence { ctx_id: 0, ring_idx: 0, fence_id: u64::from(fence), global: true });
        }
    })
}

pub(super) unsafe extern "C" fn cb_write_context_fence(cookie: *mut c_void, ctx_id: u32, ring_idx: u32, fence_id: u64) {
    no_unwind((), || {
        // SAFETY: virglrenderer passes back our cookie.
        let shared = unsafe { shared(cookie) };
        if let Ok(mut queue) = shared.fences.lock() {
            queue.push(Fence { ctx_id, ring_idx, fence_id, global: false });
        }
    })
}

pub(super) unsafe extern "C" fn cb_create_gl_context(
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

pub(super) unsafe extern "C" fn cb_destroy_gl_context(cookie: *mut c_void, ctx: ffi::virgl_renderer_gl_context) {
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

pub(super) unsafe extern "C" fn cb_make_current(
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

pub(super) unsafe extern "C" fn cb_get_egl_display(cookie: *mut c_void) -> *mut c_void {
    no_unwind(std::ptr::null_mut(), || {
        // SAFETY: virglrenderer passes back our cookie.
        unsafe { shared(cookie) }.display as *mut c_void
    })
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(super) mod log {
    use std::{
        ffi::{c_char, c_int, c_void},
        sync::Mutex,
        time::Instant,
    };

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
            let bad = lower.contains("error") || lower.contains("fail") || lower.contains("illegal");
            // A guest decides how often virglrenderer complains (one line per bad command):
            // warn once per kind of message a minute, the rest at debug level.
            let first = bad && LIMIT.lock().is_ok_and(|mut l| l.first(&super::log_kind(text), Instant::now()));
            if first {
                tracing::warn!(
                    target: "scanway::renderer::virgl",
                    "virgl: {text} (more of this kind within {}s at debug level)",
                    super::LOG_WINDOW.as_secs()
                );
            } else {
                tracing::debug!(target: "scanway::renderer::virgl", "virgl: {text}");
            }
        })
    }

    static LIMIT: Mutex<super::LogLimit> = Mutex::new(super::LogLimit::new());

    pub(in crate::renderer::virgl) const LOGGER: super::ffi::virgl_debug_callback_type = Some(virgl_log);
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(super) mod log {
    /// No portable `va_list` on this architecture: keep virglrenderer's stderr logger.
    pub(in crate::renderer::virgl) const LOGGER: super::ffi::virgl_debug_callback_type = None;
}

/// How long a kind of virglrenderer message stays quiet (debug level) after it was warned.
pub(super) const LOG_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
/// Kinds of message remembered at once; the oldest are forgotten past this.
const LOG_KINDS: usize = 256;

/// The kind of a virglrenderer message: its text up to the first colon (virglrenderer starts
/// most messages with the function name, `vrend_renderer_transfer_internal: context error ...`),
/// at most 64 bytes, with every run of digits as `#` (`context 38 failed to dispatch
/// CREATE_OBJECT` and `context 40 ...` are one kind, so new contexts make no new kinds).
pub(super) fn log_kind(text: &str) -> String {
    let head = text.split(':').next().unwrap_or(text);
    let mut kind = String::with_capacity(64);
    for c in head.chars() {
        if kind.len() >= 64 {
            break;
        }
        if !c.is_ascii_digit() {
            kind.push(c);
        } else if !kind.ends_with('#') {
            kind.push('#');
        }
    }
    kind
}

/// Which virglrenderer messages are warned: the first of each kind per [`LOG_WINDOW`].
pub(super) struct LogLimit {
    /// (kind, when it was last warned), at most [`LOG_KINDS`].
    warned: Vec<(String, std::time::Instant)>,
}

impl LogLimit {
    pub(super) const fn new() -> Self {
        LogLimit { warned: Vec::new() }
    }

    /// Whether a message of `kind` at `now` is warned (and the window starts again).
    pub(super) fn first(&mut self, kind: &str, now: std::time::Instant) -> bool {
        match self.warned.iter_mut().find(|(k, _)| k == kind) {
            Some((_, at)) if now.duration_since(*at) < LOG_WINDOW => false,
            Some((_, at)) => {
                *at = now;
                true
            }
            None => {
                if self.warned.len() >= LOG_KINDS {
                    self.warned.remove(0);
                }
                self.warned.push((kind.to_owned(), now));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{LOG_KINDS, LOG_WINDOW, LogLimit, log_kind};

    #[test]
    fn one_warning_per_kind_and_window() {
        let mut l = LogLimit::new();
        let t = Instant::now();
        let kind = log_kind("vrend_renderer_transfer_internal: context error reported 12 \"x\" IOV data size");
        assert_eq!(kind, "vrend_renderer_transfer_internal");
        assert!(l.first(&kind, t));
        for i in 0..1000 {
            assert!(!l.first(&kind, t + Duration::from_millis(i)));
        }
        assert!(l.first("vrend_set_framebuffer_state", t), "another kind is warned");
        assert!(l.first(&kind, t + LOG_WINDOW), "and the same kind again after the window");
        // numbers (context ids, handles) do not make kinds
        let dispatch = log_kind("context 38 failed to dispatch CREATE_OBJECT: 22");
        assert_eq!(dispatch, log_kind("context 40 failed to dispatch CREATE_OBJECT: 22"));
        assert_eq!(dispatch, "context # failed to dispatch CREATE_OBJECT");
        assert!(l.first(&dispatch, t) && !l.first(&log_kind("context 9 failed to dispatch CREATE_OBJECT"), t));
        // a guest making up kinds cannot grow the table
        for i in 0..10 * LOG_KINDS {
            l.first(&format!("kind{i}"), t);
        }
        assert_eq!(l.warned.len(), LOG_KINDS);
    }
}
