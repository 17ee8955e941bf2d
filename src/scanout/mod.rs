//! Guest scanouts as compositor surfaces.
//!
//! [`GuestScanouts`] follows one guest's device-model events ([`GpuEvent`]) and keeps, per
//! scanout, a [`ScanoutWindow`]: the element of the compositor's space that shows the scanout.
//! Every resource that is scanned out gets a GL texture ([`ResourceTexture`]) with the
//! resource's size and format; `RESOURCE_FLUSH` rectangles accumulate as pending uploads and
//! as damage, and [`GuestScanouts::upload`] copies only those rectangles from the resource's
//! host copy into the texture before a frame is drawn. Several flushes between two frames cost
//! one upload of their bounding box.

use std::{cell::RefCell, collections::HashMap, rc::Rc, time::Instant};

use smithay::{
    backend::{
        allocator::Fourcc,
        renderer::{
            ImportMem, Renderer, Texture,
            element::{Id, Kind, texture::TextureRenderElement},
            gles::{GlesRenderer, GlesTexture},
            utils::CommitCounter,
        },
    },
    utils::{Buffer, Logical, Physical, Point, Rectangle, Scale, Size, Transform},
};
use tracing::warn;

pub mod decoration;
mod scale;
mod stats;
mod texture;

pub use scale::ScaleMode;

use stats::FlushStats;
pub use stats::ScanoutStats;
pub use texture::ResourceTexture;
use texture::clamp_i32;

use crate::virtio::device::{CursorImage, Gpu, GpuEvent, Rect};
use decoration::DecorationState;

/// The cursor a guest set on a scanout through the cursor queue, drawn by the host.
struct Cursor {
    image: CursorImage,
    texture: Option<GlesTexture>,
    id: Id,
    /// Position of the image's top-left corner in scanout coordinates (pixels): the cursor
    /// plane's position as Linux's virtio-gpu driver sends it; the hot spot is inside the image.
    x: i32,
    y: i32,
}

impl ScanoutView {
    /// The picture: `shown` (width, height) pixels of the resource from the scanout rectangle's
    /// top-left corner, drawn `k` times that size with its top-left corner at `location`, as
    /// element `id` (default: the texture's own).
    fn picture(
        &self,
        renderer: &GlesRenderer,
        location: Point<f64, Physical>,
        shown: (i32, i32),
        k: f64,
        id: Option<&Id>,
        alpha: f32,
    ) -> Option<TextureRenderElement<GlesTexture>> {
        let tex = self.texture.as_ref()?.borrow();
        let texture = tex.texture.clone()?;
        let r = self.rect;
        let (w, h) = shown;
        let src = Rectangle::<f64, Logical>::new(
            (f64::from(r.x), f64::from(r.y)).into(),
            (f64::from(w), f64::from(h)).into(),
        );
        let dst: Size<i32, Logical> = ((f64::from(w) * k).round() as i32, (f64::from(h) * k).round() as i32).into();
        let opaque = (!tex.fourcc_has_alpha()).then(|| vec![Rectangle::from_size(texture.size())]);
        // A guest's window-system buffer (GBM, rendered by Mesa's virgl driver) holds its
        // picture top row first in texture row 0, which smithay shows at the top: shown as is.
        // virglrenderer marks the other orientation with Y_0_TOP (it counts rows from GL's
        // bottom-left origin), which is then flipped. Verified pixel-exactly by the
        // gles-pattern end-to-end test.
        let transform = if tex.y_0_top() { Transform::Flipped180 } else { Transform::Normal };
        Some(TextureRenderElement::from_texture_with_damage(
            id.unwrap_or(&tex.id).clone(),
            renderer.context_id(),
            location,
            texture,
            1,
            transform,
            Some(alpha),
            Some(src),
            Some(dst),
            opaque,
            tex.damage.snapshot(),
            Kind::Unspecified,
        ))
    }

    fn scanout_size(&self) -> Size<i32, Logical> {
        (clamp_i32(self.rect.width), clamp_i32(self.rect.height)).into()
    }

    fn placement(&self) -> (Point<f64, Logical>, f64) {
        let content = self.scanout_size();
        let Some(frame) = self.frame else { return ((0.0, 0.0).into(), 1.0) };
        if self.scale == ScaleMode::OneToOne || content.w <= 0 || content.h <= 0 {
            return ((0.0, 0.0).into(), 1.0);
        }
        let (fw, fh) = (f64::from(frame.w), f64::from(frame.h));
        let (cw, ch) = (f64::from(content.w), f64::from(content.h));
        let scale = (fw / cw).min(fh / ch);
        (((fw - cw * scale) / 2.0, (fh - ch * scale) / 2.0).into(), scale)
    }
}

/// What a scanout window shows; shared between [`GuestScanouts`] and the space element.
struct ScanoutView {
    guest: String,
    scanout_id: u32,
    resource_id: u32,
    /// Source rectangle in the resource (pixels); its size is the window's size.
    rect: Rect,
    texture: Option<Rc<RefCell<ResourceTexture>>>,
    cursor: Option<Cursor>,
    /// Content size the user gave the window (pixels); `None`: the scanout's size.
    frame: Option<Size<i32, Logical>>,
    scale: ScaleMode,
    stats: FlushStats,
    decoration: DecorationState,
    /// The host pointer's position over the picture (guest pixels), while it is over the
    /// window: the guest's cursor image is drawn there at once, not where the guest last
    /// reported it, so it never lags behind the pointer.
    host_pointer: Option<(f64, f64)>,
    /// Where the window was when it was last unmapped: it comes back there.
    last_location: Option<Point<i32, Logical>>,
}

/// The space element of one guest scanout. Clones share state; equality is identity.
#[derive(Clone)]
pub struct ScanoutWindow(Rc<RefCell<ScanoutView>>);

impl PartialEq for ScanoutWindow {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for ScanoutWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.title())
    }
}

impl ScanoutWindow {
    /// "NAME: scanout N (WxH)".
    pub fn title(&self) -> String {
        let v = self.0.borrow();
        format!("{}: scanout {} ({}x{})", v.guest, v.scanout_id, v.rect.width, v.rect.height)
    }

    /// Guest name and scanout index.
    pub fn ids(&self) -> (String, u32) {
        let v = self.0.borrow();
        (v.guest.clone(), v.scanout_id)
    }

    /// Window content size in pixels: what the user gave it, else the scanout rectangle's size.
    pub fn size(&self) -> Size<i32, Logical> {
        let v = self.0.borrow();
        v.frame.unwrap_or_else(|| v.scanout_size())
    }

    /// The scanout rectangle's size (what the guest shows), pixels.
    pub fn scanout_size(&self) -> Size<i32, Logical> {
        self.0.borrow().scanout_size()
    }

    /// Give the window a content size (`None`: follow the scanout's size).
    pub fn set_frame(&self, frame: Option<Size<i32, Logical>>) {
        self.0.borrow_mut().frame = frame.map(|f| (f.w.max(1), f.h.max(1)).into());
    }

    /// Run `f` with the window at the scanout's own size and scale 1 (for scanout screenshots).
    pub fn unscaled<R>(&self, f: impl FnOnce(&Self) -> R) -> R {
        let frame = self.0.borrow_mut().frame.take();
        let result = f(self);
        self.0.borrow_mut().frame = frame;
        result
    }

    /// The content size the user gave the window, if any.
    pub fn frame(&self) -> Option<Size<i32, Logical>> {
        self.0.borrow().frame
    }

    /// How the scanout fills its window.
    pub fn scale_mode(&self) -> ScaleMode {
        self.0.borrow().scale
    }

    /// Change how the scanout fills its window.
    pub fn set_scale_mode(&self, mode: ScaleMode) {
        self.0.borrow_mut().scale = mode;
    }

    /// Where the scanout's picture lies in the window: offset of its top-left corner from the
    /// window's (pixels) and the scale factor (window pixels per guest pixel).
    pub fn placement(&self) -> (Point<f64, Logical>, f64) {
        self.0.borrow().placement()
    }

    /// The guest position (scanout pixels, clamped into the scanout) under `point`, a position
    /// relative to the window's content top-left corner. `None` while the scanout is disabled.
    pub fn to_guest(&self, point: Point<f64, Logical>) -> Option<(u32, u32)> {
        let v = self.0.borrow();
        let content = v.scanout_size();
        if v.resource_id == 0 || content.w <= 0 || content.h <= 0 {
            return None;
        }
        let (offset, scale) = v.placement();
        let gx = ((point.x - offset.x) / scale).floor().clamp(0.0, f64::from(content.w - 1));
        let gy = ((point.y - offset.y) / scale).floor().clamp(0.0, f64::from(content.h - 1));
        Some((gx as u32, gy as u32))
    }

    /// The host pointer is at `point` (relative to the window content's top-left corner), or
    /// left the window (`None`). Returns whether a cursor must be redrawn.
    pub fn set_host_pointer(&self, point: Option<Point<f64, Logical>>) -> bool {
        let mut v = self.0.borrow_mut();
        let (offset, scale) = v.placement();
        let guest = point.map(|p| ((p.x - offset.x) / scale, (p.y - offset.y) / scale));
        let changed = v.host_pointer != guest;
        v.host_pointer = guest;
        changed && v.cursor.is_some()
    }

    /// Statistics of this scanout at `now`.
    pub fn stats(&self, now: Instant) -> ScanoutStats {
        self.0.borrow().stats.summary(now)
    }

    /// A frame showing this window is being assembled: the flushes received so far are in it.
    pub fn frame_started(&self) {
        self.0.borrow_mut().stats.frame_started();
    }

    /// The frame showing this window (see [`ScanoutWindow::frame_started`]) was presented at
    /// `now`: its flushes' latency ends.
    pub fn presented(&self, now: Instant) {
        self.0.borrow_mut().stats.presented(now);
    }

    /// Remember where the window was (it is being unmapped), or take that place back.
    pub fn set_last_location(&self, location: Option<Point<i32, Logical>>) {
        self.0.borrow_mut().last_location = location;
    }

    /// Where the window was when it was last unmapped.
    pub fn last_location(&self) -> Option<Point<i32, Logical>> {
        self.0.borrow().last_location
    }

    /// Use the window's decoration state.
    pub fn with_decoration<R>(&self, f: impl FnOnce(&mut DecorationState) -> R) -> R {
        f(&mut self.0.borrow_mut().decoration)
    }

    /// The resource shown (0 = none).
    pub fn resource_id(&self) -> u32 {
        self.0.borrow().resource_id
    }

    /// Texture uploads of the resource shown, and whether one is shown.
    pub fn uploads(&self) -> u64 {
        self.0.borrow().texture.as_ref().map_or(0, |t| t.borrow().uploads)
    }

    /// Whether the scanout is shown with zero copies (a virgl texture sampled in place).
    pub fn zero_copy(&self) -> bool {
        self.0.borrow().texture.as_ref().is_some_and(|t| t.borrow().zero_copy())
    }

    /// How its pixels reach the screen ([`ResourceTexture::path`]; `copied` with no resource).
    pub fn path(&self) -> &'static str {
        self.0.borrow().texture.as_ref().map_or("copied", |t| t.borrow().path())
    }

    /// Render elements, topmost first: the cursor, then the scanout picture, placed and scaled
    /// as [`ScanoutWindow::placement`] says. `location` is the window content's top-left corner
    /// on the output (physical pixels).
    pub fn render_elements(
        &self,
        renderer: &mut GlesRenderer,
        location: Point<i32, Physical>,
        scale: Scale<f64>,
        alpha: f32,
    ) -> Vec<TextureRenderElement<GlesTexture>> {
        let mut view = self.0.borrow_mut();
        let (offset, fit) = view.placement();
        let frame = view.frame.unwrap_or_else(|| view.scanout_size());
        let mut out = Vec::with_capacity(2);
        let origin = location.to_f64() + offset.to_physical(scale);
        let host_pointer = view.host_pointer;
        if let Some(cursor) = view.cursor.as_mut() {
            if cursor.texture.is_none() {
                let size: Size<i32, Buffer> = (cursor.image.width as i32, cursor.image.height as i32).into();
                cursor.texture = renderer
                    .import_memory(&cursor.image.rgba, Fourcc::Abgr8888, size, false)
                    .map_err(|e| warn!("cursor texture: {e:?}"))
                    .ok();
            }
            if let Some(tex) = &cursor.texture {
                // Linux's virtio-gpu driver sends the cursor plane's position (the image's
                // top-left corner) in MOVE_CURSOR/UPDATE_CURSOR, and the hot spot separately
                // (where the pointer is inside the image); shown as the guest composed it.
                let (x, y) = match host_pointer {
                    Some((px, py)) => (px - f64::from(cursor.image.hot_x), py - f64::from(cursor.image.hot_y)),
                    None => (f64::from(cursor.x), f64::from(cursor.y)),
                };
                let at = Point::<f64, Logical>::from((x * fit, y * fit));
                let size = (
                    (f64::from(cursor.image.width) * fit).round() as i32,
                    (f64::from(cursor.image.height) * fit).round() as i32,
                );
                out.push(TextureRenderElement::from_static_texture(
                    cursor.id.clone(),
                    renderer.context_id(),
                    origin + at.to_physical(scale),
                    tex.clone(),
                    1,
                    Transform::Normal,
                    Some(alpha),
                    None,
                    Some(size.into()),
                    None,
                    Kind::Cursor,
                ));
            }
        }
        // 1:1 in a smaller window shows the top-left part that fits.
        let r = view.rect;
        let shown = if view.scale == ScaleMode::OneToOne {
            (clamp_i32(r.width).min(frame.w), clamp_i32(r.height).min(frame.h))
        } else {
            (clamp_i32(r.width), clamp_i32(r.height))
        };
        out.extend(view.picture(renderer, origin, shown, fit, None, alpha));
        out
    }

    /// The scanout's picture alone, `k` times its size, its top-left corner at `location`, as
    /// element `id` (the layout view shows the same texture as the window, under its own id).
    pub fn picture_element(
        &self,
        renderer: &GlesRenderer,
        location: Point<i32, Physical>,
        k: f64,
        id: &Id,
    ) -> Option<TextureRenderElement<GlesTexture>> {
        let view = self.0.borrow();
        let r = view.rect;
        view.picture(renderer, location.to_f64(), (clamp_i32(r.width), clamp_i32(r.height)), k, Some(id), 1.0)
    }

    /// The commit counter of the shown texture (changes whenever new pixels were uploaded).
    pub fn current_commit(&self) -> Option<CommitCounter> {
        let v = self.0.borrow();
        v.texture.as_ref().map(|t| t.borrow().damage.current_commit())
    }
}

/// Where a guest's enabled scanouts lie in guest coordinates (pixels), by scanout index: side
/// by side in index order, as the device reports them in `GET_DISPLAY_INFO`. Used by
/// `scanway layout` and the layout view.
pub fn guest_layout(windows: &[ScanoutWindow]) -> Vec<(u32, Rectangle<i32, Logical>)> {
    let mut x = 0;
    let mut out = Vec::new();
    for (i, w) in windows.iter().enumerate() {
        if w.resource_id() == 0 {
            continue;
        }
        let size = w.scanout_size();
        out.push((i as u32, Rectangle::new((x, 0).into(), size)));
        x += size.w;
    }
    out
}

/// What changed in a guest's windows after [`GuestScanouts::apply`].
#[derive(Default, Debug)]
pub struct Changes {
    /// Scanouts that got a picture (map their windows).
    pub mapped: Vec<ScanoutWindow>,
    /// Scanouts that were disabled (unmap their windows).
    pub unmapped: Vec<ScanoutWindow>,
    /// Something visible changed: redraw.
    pub redraw: bool,
}

/// One guest's scanouts as the compositor shows them.
pub struct GuestScanouts {
    guest: String,
    windows: Vec<ScanoutWindow>,
    textures: HashMap<u32, Rc<RefCell<ResourceTexture>>>,
}

impl GuestScanouts {
    /// `num_scanouts` windows for guest `guest`, none showing anything yet.
    pub fn new(guest: &str, num_scanouts: u32) -> Self {
        let windows = (0..num_scanouts)
            .map(|scanout_id| {
                ScanoutWindow(Rc::new(RefCell::new(ScanoutView {
                    guest: guest.to_string(),
                    scanout_id,
                    resource_id: 0,
                    rect: Rect { x: 0, y: 0, width: 0, height: 0 },
                    texture: None,
                    cursor: None,
                    frame: None,
                    scale: ScaleMode::default(),
                    stats: FlushStats::default(),
                    decoration: DecorationState::default(),
                    host_pointer: None,
                    last_location: None,
                })))
            })
            .collect();
        GuestScanouts { guest: guest.to_string(), windows, textures: HashMap::new() }
    }

    /// The window of scanout `id`.
    pub fn window(&self, id: u32) -> Option<&ScanoutWindow> {
        self.windows.get(id as usize)
    }

    /// Every scanout window, by scanout index.
    pub fn windows(&self) -> &[ScanoutWindow] {
        &self.windows
    }

    /// Whether scanout `id` shows a resource.
    pub fn is_mapped(&self, id: u32) -> bool {
        self.window(id).is_some_and(|w| w.0.borrow().resource_id != 0)
    }

    /// Follow the device model's events (in order).
    /// (Mutable: a scanned-out 3D resource of an isolated worker is exported from it.)
    pub fn apply(&mut self, gpu: &mut Gpu, events: impl IntoIterator<Item = GpuEvent>) -> Changes {
        let mut changes = Changes::default();
        for event in events {
            match event {
                GpuEvent::ScanoutSet { scanout_id, resource_id, rect } => {
                    self.set_scanout(gpu, scanout_id, resource_id, rect, &mut changes);
                }
                GpuEvent::ResourceFlush { resource_id, rect } => {
                    if let Some(tex) = self.textures.get(&resource_id) {
                        tex.borrow_mut().flushed(rect);
                        changes.redraw = true;
                        let now = Instant::now();
                        for w in self.windows.iter().filter(|w| w.0.borrow().resource_id == resource_id) {
                            w.0.borrow_mut().stats.flushed(now);
                        }
                    }
                }
                GpuEvent::ResourceDestroyed { resource_id } => {
                    // Windows showing a 2D resource keep their last picture until the guest sets
                    // another; a virgl texture dies with its resource, so its windows let go.
                    if let Some(tex) = self.textures.remove(&resource_id)
                        && tex.borrow().zero_copy()
                    {
                        for w in &self.windows {
                            let mut v = w.0.borrow_mut();
                            if v.texture.as_ref().is_some_and(|t| Rc::ptr_eq(t, &tex)) {
                                v.texture = None;
                            }
                        }
                        changes.redraw = true;
                    }
                }
                GpuEvent::CursorUpdate { scanout_id, image, x, y } => {
                    let _ = self.take_cursor();
                    if let Some(w) = self.windows.get(scanout_id as usize) {
                        w.0.borrow_mut().cursor =
                            image.map(|image| Cursor { image, texture: None, id: Id::new(), x, y });
                    }
                    changes.redraw = true;
                }
                GpuEvent::CursorMove { scanout_id, x, y } => {
                    // The guest's one cursor may move from one scanout to another.
                    if let Some(mut cursor) = self.take_cursor()
                        && let Some(w) = self.windows.get(scanout_id as usize)
                    {
                        (cursor.x, cursor.y) = (x, y);
                        w.0.borrow_mut().cursor = Some(cursor);
                        changes.redraw = true;
                    }
                }
            }
        }
        changes
    }

    fn take_cursor(&mut self) -> Option<Cursor> {
        self.windows.iter().find_map(|w| w.0.borrow_mut().cursor.take())
    }

    fn set_scanout(&mut self, gpu: &mut Gpu, scanout_id: u32, resource_id: u32, rect: Rect, changes: &mut Changes) {
        let Some(window) = self.windows.get(scanout_id as usize) else { return };
        let was_mapped = window.0.borrow().resource_id != 0;
        if resource_id == 0 {
            let mut v = window.0.borrow_mut();
            v.resource_id = 0;
            v.texture = None;
            v.cursor = None;
            drop(v);
            if was_mapped {
                changes.unmapped.push(window.clone());
            }
            return;
        }
        let Some(is_3d) = gpu.resource(resource_id).map(|r| r.is_3d()) else { return };
        if let std::collections::hash_map::Entry::Vacant(slot) = self.textures.entry(resource_id) {
            // A 3D resource: sampled in place (shared renderer), else imported from the
            // worker's dmabuf, else read back.
            let info = if is_3d { gpu.virgl_texture(resource_id) } else { None };
            let exported = if is_3d && info.is_none() { gpu.export_scanout(resource_id) } else { None };
            let Some(resource) = gpu.resource(resource_id) else { return };
            let tex = match (is_3d, info, exported) {
                (false, _, _) => ResourceTexture::new(resource),
                (true, Some(info), _) => ResourceTexture::new_virgl(resource, info),
                (true, None, Some(exported)) => ResourceTexture::new_dmabuf(resource, exported),
                (true, None, None) => ResourceTexture::new_read_back(resource),
            };
            slot.insert(Rc::new(RefCell::new(tex)));
        }
        let Some(texture) = self.textures.get(&resource_id).cloned() else { return };
        let mut v = window.0.borrow_mut();
        let resized = v.rect.width != rect.width || v.rect.height != rect.height;
        v.resource_id = resource_id;
        v.rect = rect;
        v.texture = Some(texture);
        drop(v);
        if !was_mapped || resized {
            changes.mapped.push(window.clone());
        }
        changes.redraw = true;
    }

    /// Upload every pending flushed region of the scanned-out resources from `gpu`'s host copies.
    /// 3D resources of an isolated worker are read back from it first.
    pub fn upload(&mut self, renderer: &mut GlesRenderer, gpu: &mut Gpu) {
        for (&resource_id, tex) in &self.textures {
            let mut tex = tex.borrow_mut();
            if tex.pending.is_none() {
                continue;
            }
            if tex.read_back {
                tex.upload_read_back(renderer, gpu, resource_id);
            } else if let Some(resource) = gpu.resource(resource_id) {
                tex.upload(renderer, resource);
            }
        }
    }

    /// Drop every texture and unmap every window (the guest disconnected).
    pub fn clear(&mut self) -> Vec<ScanoutWindow> {
        self.textures.clear();
        let mut unmapped = Vec::new();
        for w in &self.windows {
            let mut v = w.0.borrow_mut();
            if v.resource_id != 0 {
                unmapped.push(w.clone());
            }
            v.resource_id = 0;
            v.texture = None;
            v.cursor = None;
        }
        unmapped
    }

    /// The guest's name.
    pub fn guest(&self) -> &str {
        &self.guest
    }
}
