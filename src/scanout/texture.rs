//! The GL texture of a scanned-out resource and how pixels reach it: uploaded from scanway's
//! host copy of a 2D resource (converted where GLES cannot take the format), sampled in place
//! for a virgl render target of the shared renderer, or read back from an isolated 3D worker
//! and uploaded.

use smithay::{
    backend::{
        allocator::Fourcc,
        renderer::{
            ImportMem,
            element::Id,
            gles::{GlesRenderer, GlesTexture},
            utils::DamageBag,
        },
    },
    utils::{Buffer, Rectangle, Size},
};
use tracing::warn;

use crate::renderer::{self, virgl::ResourceInfo};
use crate::virtio::{
    device::{Gpu, Rect, Resource},
    format::Format,
    renderer3d::ExportedScanout,
};

/// How many damage rectangles a texture remembers for the damage tracker.
const DAMAGE_HISTORY: usize = 16;

/// The GL texture of one scanned-out resource (shape: the resource's width x height pixels).
pub struct ResourceTexture {
    pub(super) texture: Option<GlesTexture>,
    /// Format of the texture's pixels in memory as uploaded.
    pub(super) fourcc: Fourcc,
    /// For formats GLES cannot take directly: the resource converted to RGBA8, same size.
    pub(super) shadow: Option<Vec<u8>>,
    pub(super) width: u32,
    pub(super) height: u32,
    /// Region flushed but not yet uploaded (resource coordinates, pixels).
    pub(super) pending: Option<Rect>,
    pub(super) damage: DamageBag<i32, Buffer>,
    /// Element id: a new texture is a new element, so switching resources damages the window.
    pub(super) id: Id,
    /// Number of uploads (whole or partial), for `scanway list`.
    pub(super) uploads: u64,
    /// For a virgl resource: virglrenderer's texture, sampled directly (zero copies).
    pub(super) virgl: Option<ResourceInfo>,
    /// For a virgl resource of an isolated 3D worker: flushed rectangles are read back
    /// ([`Gpu::read_back`]) and uploaded.
    pub(super) read_back: bool,
    /// For a virgl resource of an isolated 3D worker whose EGL exports: its texture as a
    /// dmabuf, imported on first use (zero copies).
    dmabuf: Option<ExportedScanout>,
}

impl ResourceTexture {
    pub(super) fn new(resource: &Resource) -> Self {
        let (fourcc, converted) = upload_format(resource.format);
        ResourceTexture {
            texture: None,
            fourcc,
            shadow: converted.then(Vec::new),
            width: resource.width,
            height: resource.height,
            pending: Some(Rect { x: 0, y: 0, width: resource.width, height: resource.height }),
            damage: DamageBag::new(DAMAGE_HISTORY),
            id: Id::new(),
            uploads: 0,
            virgl: None,
            read_back: false,
            dmabuf: None,
        }
    }

    /// A virgl resource of an isolated worker, exported as a dmabuf.
    pub(super) fn new_dmabuf(resource: &Resource, exported: ExportedScanout) -> Self {
        ResourceTexture { dmabuf: Some(exported), shadow: None, ..ResourceTexture::new(resource) }
    }

    /// Whether virglrenderer marked the resource `VIRGL_RESOURCE_Y_0_TOP` (its texture is then
    /// shown flipped: see `ScanoutView::picture`).
    pub(super) fn y_0_top(&self) -> bool {
        self.virgl.is_some_and(|i| i.y_0_top) || self.dmabuf.as_ref().is_some_and(|d| d.y_0_top)
    }

    /// A virgl resource whose texture is in another process: read back, then uploaded as is
    /// (its bytes are the resource format's, which is one GLES takes for every format guests
    /// scan out).
    pub(super) fn new_read_back(resource: &Resource) -> Self {
        ResourceTexture { read_back: true, shadow: None, ..ResourceTexture::new(resource) }
    }

    /// How the pixels reach the texture: `zero-copy` (sampled in place), `read-back` (from an
    /// isolated 3D worker, then uploaded) or `copied` (uploaded from scanway's copy).
    pub fn path(&self) -> &'static str {
        match (self.virgl.is_some(), self.dmabuf.is_some(), self.read_back) {
            (true, _, _) => "zero-copy",
            (false, true, _) => "dmabuf",
            (false, false, true) => "read-back",
            (false, false, false) => "copied",
        }
    }

    /// A virgl resource's texture (`info.tex_id`, owned by virglrenderer).
    pub(super) fn new_virgl(resource: &Resource, info: ResourceInfo) -> Self {
        ResourceTexture { virgl: Some(info), shadow: None, ..ResourceTexture::new(resource) }
    }

    /// Whether the texture is sampled in place (a virgl render target) rather than uploaded.
    pub fn zero_copy(&self) -> bool {
        self.virgl.is_some()
    }

    /// Give smithay virglrenderer's texture to sample: a texture of the compositor's own on
    /// the same storage ([`renderer::alias_texture`]), so smithay may delete its texture while
    /// virglrenderer deletes its own when the resource is unreferenced.
    fn wrap_virgl(&mut self, renderer: &mut GlesRenderer, info: ResourceInfo) {
        if self.texture.is_some() {
            return;
        }
        let size: Size<i32, Buffer> = (clamp_i32(info.width), clamp_i32(info.height)).into();
        // SAFETY: tex_id names a live GL_TEXTURE_2D of the compositor's share group (virgl's
        // contexts share with it) for as long as the resource exists, and it exists now.
        match unsafe { renderer::alias_texture(renderer, info.tex_id, size) } {
            Ok(texture) => self.texture = Some(texture),
            Err(e) => {
                // the same cause for every resource: said once
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| warn!("3D scanouts cannot be shown: {e:#}"));
            }
        }
    }

    pub(super) fn flushed(&mut self, rect: Rect) {
        self.pending = Some(match self.pending {
            Some(p) => p.union(&rect).unwrap_or(rect),
            None => rect,
        });
    }

    /// Copy the pending region of `resource` into the texture.
    pub(super) fn upload(&mut self, renderer: &mut GlesRenderer, resource: &Resource) {
        let Some(rect) = self.pending.take() else { return };
        if resource.width != self.width || resource.height != self.height {
            return;
        }
        // The device model checked the flush rectangle; clipping again keeps every index below
        // in the resource whatever a guest sent (and the sizes within i32: resources are at most
        // 16384 pixels a side).
        let Some(rect) = rect.intersect(&Rect::new(0, 0, self.width, self.height)) else { return };
        if let Some(info) = self.virgl {
            // Zero copies: the guest rendered into the texture; only damage is reported.
            self.wrap_virgl(renderer, info);
            self.damage.add([buffer_rect(rect)]);
            return;
        }
        if let Some(exported) = &self.dmabuf {
            // Zero copies across processes: the worker rendered into the dmabuf's storage.
            if self.texture.is_none() {
                use smithay::backend::renderer::ImportDma;
                match renderer.import_dmabuf(&exported.dmabuf, None) {
                    Ok(texture) => self.texture = Some(texture),
                    Err(e) => {
                        // Exported but not importable here: read this resource back instead.
                        static WARNED: std::sync::Once = std::sync::Once::new();
                        WARNED.call_once(|| warn!("a 3D worker's dmabuf cannot be imported, reading back: {e:?}"));
                        self.dmabuf = None;
                        self.read_back = true;
                        self.pending = Some(Rect::new(0, 0, self.width, self.height));
                        return;
                    }
                }
            }
            self.damage.add([buffer_rect(rect)]);
            return;
        }
        // (taken out while its bytes are uploaded, so that `self` can be borrowed)
        let mut shadow = self.shadow.take();
        let data: &[u8] = match shadow.as_mut() {
            None => &resource.data,
            Some(shadow) => {
                convert_rect(resource, rect, shadow);
                shadow
            }
        };
        self.upload_bytes(renderer, rect, data);
        self.shadow = shadow;
    }

    /// Read the pending region back from the worker of 3D resource `id` and upload it. A
    /// worker that is gone reads nothing: the last picture stays.
    pub(super) fn upload_read_back(&mut self, renderer: &mut GlesRenderer, gpu: &mut Gpu, id: u32) {
        let Some(rect) = self.pending.take() else { return };
        let Some(rect) = rect.intersect(&Rect::new(0, 0, self.width, self.height)) else { return };
        let Some(data) = gpu.read_back(id, rect) else { return };
        self.upload_bytes(renderer, rect, data);
    }

    /// Upload `rect` of `data` (laid out as the whole texture, width * 4 bytes a row), creating
    /// the texture on first use.
    fn upload_bytes(&mut self, renderer: &mut GlesRenderer, rect: Rect, data: &[u8]) {
        let size: Size<i32, Buffer> = (clamp_i32(self.width), clamp_i32(self.height)).into();
        let region = buffer_rect(rect);
        let result = match &self.texture {
            Some(tex) => renderer.update_memory(tex, data, region),
            None => renderer.import_memory(data, self.fourcc, size, false).map(|tex| {
                self.texture = Some(tex);
            }),
        };
        match result {
            Ok(()) => {
                self.uploads += 1;
                self.damage.add([region]);
            }
            Err(e) => warn!("uploading {}x{} of a resource: {e:?}", rect.width, rect.height),
        }
    }
}

/// The fourcc a resource of `format` is uploaded as, and whether its pixels must be converted
/// to RGBA8 first (GLES takes BGRA/RGBA byte orders only).
fn upload_format(format: Format) -> (Fourcc, bool) {
    match Fourcc::try_from(format.drm_fourcc()) {
        Ok(f @ (Fourcc::Argb8888 | Fourcc::Xrgb8888 | Fourcc::Abgr8888 | Fourcc::Xbgr8888)) => (f, false),
        _ if format.has_alpha() => (Fourcc::Abgr8888, true),
        _ => (Fourcc::Xbgr8888, true),
    }
}

/// Convert `rect` (within the resource) of `resource` into `shadow` (RGBA8, the resource's
/// size, allocated on first use). Sizes are computed checked: a resource whose bytes do not fit
/// `usize` (it could not have been allocated) converts nothing.
fn convert_rect(resource: &Resource, rect: Rect, shadow: &mut Vec<u8>) {
    let width = usize::try_from(resource.width).ok();
    let height = usize::try_from(resource.height).ok();
    let Some((stride, len)) =
        width.and_then(|w| w.checked_mul(4)).and_then(|stride| Some((stride, stride.checked_mul(height?)?)))
    else {
        return;
    };
    if shadow.len() != len {
        shadow.clear();
        shadow.resize(len, 0);
    }
    let (Some(x0), Some(x1), Some(right), Some(bottom)) = (
        usize::try_from(rect.x).ok().and_then(|x| x.checked_mul(4)),
        rect.checked_right().and_then(|r| usize::try_from(r).ok()).and_then(|r| r.checked_mul(4)),
        rect.checked_right(),
        rect.checked_bottom(),
    ) else {
        return;
    };
    if right > resource.width || bottom > resource.height {
        return;
    }
    for y in rect.y..bottom {
        let Some(row) = usize::try_from(y).ok().and_then(|y| y.checked_mul(stride)) else { return };
        if let (Some(src), Some(dst)) = (resource.data.get(row + x0..row + x1), shadow.get_mut(row + x0..row + x1)) {
            resource.format.to_rgba8(src, dst);
        }
    }
}

/// `v` as an i32, saturated (guest sizes are at most 16384 pixels, so nothing saturates).
pub(super) fn clamp_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// A device rectangle as smithay's buffer rectangle (pixels).
pub(super) fn buffer_rect(r: Rect) -> Rectangle<i32, Buffer> {
    Rectangle::new((clamp_i32(r.x), clamp_i32(r.y)).into(), (clamp_i32(r.width), clamp_i32(r.height)).into())
}

impl ResourceTexture {
    pub(super) fn fourcc_has_alpha(&self) -> bool {
        matches!(self.fourcc, Fourcc::Argb8888 | Fourcc::Abgr8888)
    }
}
