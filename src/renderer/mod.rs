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
            Bind, ExportMem, Offscreen, Renderer,
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

/// The GL objects alive in the compositor's share group (which virglrenderer's contexts share),
/// counted by name: the fault campaign compares them before and after guests come and go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct GlObjects {
    /// Texture names for which `glIsTexture` is true.
    pub textures: u32,
    /// Buffer object names for which `glIsBuffer` is true.
    pub buffers: u32,
    /// Renderbuffer names for which `glIsRenderbuffer` is true.
    pub renderbuffers: u32,
    /// Names probed for each kind, 1 to this.
    pub probed: u32,
}

/// Lowest and highest count of names [`gl_objects`] probes per kind.
const PROBE_NAMES: (u32, u32) = (1 << 16, 1 << 20);

/// Count the shared GL objects (textures, buffers, renderbuffers) by probing every name from 1
/// to at least 65,536 and past the highest name `glGen*` hands out next (at most 2^20): GL has
/// no query for "all objects", and Mesa hands out names above the highest one in use. Costs
/// about 3 x 65,536 `glIs*` calls: for diagnostics (`scanway objects`), not per frame.
///
/// smithay deletes the textures of dropped buffers lazily, at its next frame: they are deleted
/// first (`cleanup_texture_cache`), so a count is not one frame late.
///
/// Errors: the renderer's context could not be made current.
pub fn gl_objects(renderer: &mut GlesRenderer) -> anyhow::Result<GlObjects> {
    renderer.cleanup_texture_cache().context("deleting the textures of dropped buffers")?;
    renderer
        .with_context(|gl| {
            // The next names glGen* hands out (given back at once): Mesa's are above the highest
            // in use.
            let mut next = [0u32; 3];
            // SAFETY: the renderer's context is current inside with_context; the pointers are
            // to live locals.
            unsafe {
                gl.GenTextures(1, &mut next[0]);
                gl.DeleteTextures(1, &next[0]);
                gl.GenBuffers(1, &mut next[1]);
                gl.DeleteBuffers(1, &next[1]);
                gl.GenRenderbuffers(1, &mut next[2]);
                gl.DeleteRenderbuffers(1, &next[2]);
            }
            let probed =
                next.iter().map(|t| t.saturating_mul(2)).max().unwrap_or(0).clamp(PROBE_NAMES.0, PROBE_NAMES.1);
            let count = |is: &dyn Fn(u32) -> bool| (1..=probed).filter(|&n| is(n)).count() as u32;
            // SAFETY (the glIs* calls): context current, plain queries of a name.
            GlObjects {
                textures: count(&|n| unsafe { gl.IsTexture(n) } == ffi::TRUE),
                buffers: count(&|n| unsafe { gl.IsBuffer(n) } == ffi::TRUE),
                renderbuffers: count(&|n| unsafe { gl.IsRenderbuffer(n) } == ffi::TRUE),
                probed,
            }
        })
        .context("making the renderer's context current")
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

/// `EGL_GL_TEXTURE_2D_KHR` (EGL_KHR_gl_texture_2D_image).
const EGL_GL_TEXTURE_2D_KHR: u32 = 0x30B1;
/// `EGL_GL_TEXTURE_LEVEL_KHR` (EGL_KHR_gl_texture_2D_image).
const EGL_GL_TEXTURE_LEVEL_KHR: i32 = 0x30BC;

/// An EGLImage of level 0 of `tex_id` (EGL_KHR_gl_texture_2D_image) on `renderer`'s display and
/// context; the caller destroys it (`eglDestroyImageKHR`). Errors: no EGL_KHR_image_base, or
/// `eglCreateImageKHR` refused (its EGL error).
///
/// # Safety
/// `tex_id` names a live, complete `GL_TEXTURE_2D` of `renderer`'s share group.
unsafe fn texture_image(
    renderer: &GlesRenderer,
    tex_id: u32,
) -> anyhow::Result<smithay::backend::egl::ffi::egl::types::EGLImage> {
    use smithay::backend::egl::ffi::egl;
    if !egl::CreateImageKHR::is_loaded() || !egl::DestroyImageKHR::is_loaded() {
        anyhow::bail!("EGL_KHR_image_base is not available");
    }
    let display = renderer.egl_context().display().get_display_handle().handle;
    let context = renderer.egl_context().get_context_handle();
    let attribs = [EGL_GL_TEXTURE_LEVEL_KHR, 0, egl::NONE as i32];
    // SAFETY: display and context are the renderer's, live; the client buffer of a
    // GL_TEXTURE_2D image is the texture name (EGL_KHR_gl_texture_2D_image); attribs ends with
    // EGL_NONE.
    let image = unsafe {
        egl::CreateImageKHR(
            display,
            context,
            EGL_GL_TEXTURE_2D_KHR,
            tex_id as usize as egl::types::EGLClientBuffer,
            attribs.as_ptr(),
        )
    };
    if image.is_null() {
        // SAFETY: no preconditions.
        let error = unsafe { egl::GetError() };
        anyhow::bail!("eglCreateImageKHR(GL_TEXTURE_2D {tex_id}): EGL error {error:#x}");
    }
    Ok(image)
}

/// A texture of the compositor's own on the storage of `tex_id`, a `GL_TEXTURE_2D` of
/// `size` pixels (RGBA8) that another context of the share group owns (virglrenderer's): an
/// EGLImage of level 0 of `tex_id` (EGL_KHR_gl_texture_2D_image) bound to a fresh texture
/// (GL_OES_EGL_image), then released. Sampling it reads the same memory (zero copies); smithay
/// deletes it like any texture when the last clone drops, which leaves `tex_id` alone, and the
/// storage lives until both are gone.
///
/// Errors: the EGL display lacks the extensions, or `eglCreateImageKHR` refused (its EGL
/// error), or the GL context could not be made current.
///
/// # Safety
/// `tex_id` names a live, complete `GL_TEXTURE_2D` of `renderer`'s share group.
pub unsafe fn alias_texture(
    renderer: &mut GlesRenderer,
    tex_id: u32,
    size: Size<i32, smithay::utils::Buffer>,
) -> anyhow::Result<smithay::backend::renderer::gles::GlesTexture> {
    use smithay::backend::egl::ffi::egl;
    let display = renderer.egl_context().display().get_display_handle().handle;
    // SAFETY: forwarded contract.
    let image = unsafe { texture_image(renderer, tex_id) }?;
    let texture = renderer.with_context(|gl| {
        let mut texture = 0;
        // SAFETY: the renderer's context is current inside with_context; image is a live
        // EGLImage of this display.
        unsafe {
            gl.GenTextures(1, &mut texture);
            gl.BindTexture(ffi::TEXTURE_2D, texture);
            gl.EGLImageTargetTexture2DOES(ffi::TEXTURE_2D, image);
            gl.BindTexture(ffi::TEXTURE_2D, 0);
        }
        texture
    });
    // The texture keeps the storage: the image itself is no longer needed.
    // SAFETY: image was created on display above and is destroyed once.
    unsafe { egl::DestroyImageKHR(display, image) };
    let texture = texture.context("making the renderer's context current")?;
    // SAFETY: texture is a texture name of the renderer's context, given to smithay to own.
    Ok(unsafe {
        smithay::backend::renderer::gles::GlesTexture::from_raw(renderer, Some(ffi::RGBA8), false, texture, size)
    })
}

/// Export level 0 of `tex_id`, a `GL_TEXTURE_2D` of `size` pixels of `renderer`'s share group
/// (an isolated worker's virglrenderer texture), as a dmabuf another process can import: an
/// EGLImage of it (EGL_KHR_gl_texture_2D_image) exported with EGL_MESA_image_dma_buf_export.
/// The GL work that drew it must be finished (the guest waited for its fence) before the
/// importer samples it: the dmabuf carries no fence.
///
/// Errors: the display lacks EGL_MESA_image_dma_buf_export (Mesa's device and surfaceless
/// platforms without a render node: then nothing leaves the process but copies), the image or
/// the export failed, or it gave an invalid descriptor (Mesa's GBM on /dev/null does).
///
/// # Safety
/// `tex_id` names a live, complete `GL_TEXTURE_2D` of `renderer`'s share group.
pub unsafe fn export_texture(
    renderer: &mut GlesRenderer,
    tex_id: u32,
    size: Size<i32, smithay::utils::Buffer>,
) -> anyhow::Result<smithay::backend::allocator::dmabuf::Dmabuf> {
    use smithay::backend::egl::ffi::egl;
    let display = renderer.egl_context().display().clone();
    if !display.extensions().iter().any(|e| e == "EGL_MESA_image_dma_buf_export") {
        anyhow::bail!("the EGL display cannot export dmabufs (no EGL_MESA_image_dma_buf_export)");
    }
    // The image is made on the renderer's context, whose share group holds the texture; GL
    // work queued on other contexts of the group is flushed by their own fences.
    renderer.with_context(|gl| {
        // SAFETY: the renderer's context is current inside with_context.
        unsafe { gl.Flush() }
    })?;
    let raw = display.get_display_handle().handle;
    // SAFETY: forwarded contract.
    let image = unsafe { texture_image(renderer, tex_id) }?;
    let dmabuf = display.create_dmabuf_from_image(image, size, false);
    // SAFETY: image was created on this display above and is destroyed once; the dmabuf keeps
    // the storage.
    unsafe { egl::DestroyImageKHR(raw, image) };
    let dmabuf = dmabuf.context("eglExportDMABUFImageMESA")?;
    if dmabuf.num_planes() == 0 || dmabuf.handles().any(|fd| std::os::fd::AsRawFd::as_raw_fd(&fd) < 0) {
        anyhow::bail!("the dmabuf export gave no valid descriptor");
    }
    Ok(dmabuf)
}
