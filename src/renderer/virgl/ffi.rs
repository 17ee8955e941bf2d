//! Raw declarations, each checked against `/usr/include/virgl/virglrenderer.h` of 0.10.4 (and
//! `virgl_hw.h` for `struct virgl_box`, which the public header only forward-declares).

#![allow(non_camel_case_types)]

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
    pub make_current:
        Option<unsafe extern "C" fn(cookie: *mut c_void, scanout_idx: c_int, ctx: virgl_renderer_gl_context) -> c_int>,
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
