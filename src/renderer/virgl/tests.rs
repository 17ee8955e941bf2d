//! One test (virglrenderer is process-global): a smithay GLES compositor on the EGL device
//! platform (surfaceless as fallback), virglrenderer in its share group, a guest-style clear,
//! and the result read both through virglrenderer and straight from the compositor's context.
//! It is the only unit test of the crate that opens an EGL display: Mesa hands out the same
//! `EGLDisplay` for the same platform and device, and smithay terminates it on drop, so a second
//! concurrent test doing so would pull the display from under this one.

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
    let texture = unsafe { GlesTexture::from_raw(renderer, Some(gl::RGBA8), false, tex, (W as i32, H as i32).into()) };
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
        let mapping = renderer.copy_framebuffer(&fb, Rectangle::from_size((64, 64).into()), Fourcc::Abgr8888).unwrap();
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
    println!("[{label}] after transfer_write of backing pixel (0,0): GL (0,0) = {px:?}, GL (0,255) = {untouched:?}");
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
