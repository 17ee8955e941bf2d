//! EGL and GL: the compositor's display and context, offscreen targets and read-back.
//!
//! The headless backend renders through the EGL device platform (a GPU's render node when
//! there is one, else Mesa's software device) and falls back to the surfaceless platform. The
//! same GLES renderer later hosts virglrenderer's contexts in its share group.

pub mod virgl;

use std::path::Path;

use anyhow::{Context, anyhow};
use smithay::{
    backend::{
        allocator::Fourcc,
        egl::{EGLContext, EGLDevice, EGLDisplay, native::EGLSurfacelessDisplay},
        renderer::{
            Bind, ExportMem, Offscreen,
            gles::{GlesRenderbuffer, GlesRenderer, ffi},
        },
    },
    utils::{Physical, Rectangle, Size},
};
use tracing::info;

/// Create the headless GLES renderer: EGL device platform first, surfaceless as fallback.
pub fn headless_renderer() -> anyhow::Result<GlesRenderer> {
    let display = device_display().or_else(|e| {
        info!("EGL device platform unavailable ({e:#}); using the surfaceless platform");
        // SAFETY: the display is created once and lives as long as the renderer.
        unsafe { EGLDisplay::new(EGLSurfacelessDisplay) }.context("EGL surfaceless display")
    })?;
    let context = EGLContext::new(&display).context("EGL context")?;
    // SAFETY: the context is fresh and only used through this renderer, on this thread.
    let mut renderer = unsafe { GlesRenderer::new(context) }.context("GLES renderer")?;
    info!("GL renderer: {}", gl_description(&mut renderer));
    Ok(renderer)
}

fn device_display() -> anyhow::Result<EGLDisplay> {
    let devices: Vec<EGLDevice> = EGLDevice::enumerate().context("enumerating EGL devices")?.collect();
    let device = devices
        .iter()
        .find(|d| !d.is_software() && d.render_device_path().is_ok())
        .or_else(|| devices.iter().find(|d| !d.is_software()))
        .or_else(|| devices.first())
        .cloned()
        .ok_or_else(|| anyhow!("no EGL device"))?;
    // SAFETY: as above, one display for the life of the renderer.
    unsafe { EGLDisplay::new(device) }.context("EGL device display")
}

/// "GL_RENDERER (GL_VERSION)" of the renderer's context.
pub fn gl_description(renderer: &mut GlesRenderer) -> String {
    renderer
        .with_context(|gl| {
            let get = |name| {
                // SAFETY: glGetString returns a static NUL-terminated string or NULL.
                let p = unsafe { gl.GetString(name) };
                if p.is_null() {
                    "?".to_string()
                } else {
                    // SAFETY: non-null, NUL-terminated, owned by the GL implementation.
                    unsafe { std::ffi::CStr::from_ptr(p.cast()) }.to_string_lossy().into_owned()
                }
            };
            format!("{} ({})", get(ffi::RENDERER), get(ffi::VERSION))
        })
        .unwrap_or_else(|e| format!("unknown ({e:?})"))
}

/// An offscreen RGBA8 render target of `size` pixels.
pub fn offscreen_target(renderer: &mut GlesRenderer, size: Size<i32, Physical>) -> anyhow::Result<GlesRenderbuffer> {
    Offscreen::<GlesRenderbuffer>::create_buffer(renderer, Fourcc::Abgr8888, (size.w, size.h).into())
        .map_err(|e| anyhow!("offscreen buffer {}x{}: {e:?}", size.w, size.h))
}

/// Read back `target` (rendered with `Transform::Normal`, so rows come top row first) as RGBA8.
pub fn read_rgba(
    renderer: &mut GlesRenderer,
    target: &mut GlesRenderbuffer,
    size: Size<i32, Physical>,
) -> anyhow::Result<Vec<u8>> {
    let fb = renderer.bind(target).context("bind")?;
    let region = Rectangle::from_size((size.w, size.h).into());
    let mapping = renderer.copy_framebuffer(&fb, region, Fourcc::Abgr8888).context("copy_framebuffer")?;
    drop(fb);
    let bytes = renderer.map_texture(&mapping).context("map_texture")?;
    Ok(bytes.to_vec())
}

/// Write RGBA8 rows (`width` x `height` pixels, stride `width * 4` bytes) as an RGB PNG.
pub fn write_png(path: &Path, width: u32, height: u32, rgba: &[u8]) -> anyhow::Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header()?;
    let rgb: Vec<u8> = rgba.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    writer.write_image_data(&rgb)?;
    writer.finish()?;
    Ok(())
}
