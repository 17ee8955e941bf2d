//! Server-side decorations of guest windows (a title bar in the guest's colour with its name)
//! and the statistics overlay, drawn with an 8x8 bitmap font (`font8x8`) doubled to 16 pixels.

use smithay::{
    backend::{
        allocator::Fourcc,
        renderer::{
            ImportMem, Renderer,
            element::{Id, Kind, solid::SolidColorRenderElement, texture::TextureRenderElement},
            gles::{GlesRenderer, GlesTexture},
            utils::CommitCounter,
        },
    },
    utils::{Buffer, Physical, Point, Rectangle, Size, Transform},
};
use tracing::warn;

/// Height of a guest window's title bar above its content, pixels.
pub const TITLE_HEIGHT: i32 = 24;
/// Glyph scale: 8x8 font cells drawn as 16x16 pixels.
const GLYPH_SCALE: usize = 2;
const GLYPH: usize = 8 * GLYPH_SCALE;
/// Padding around text in a text image, pixels.
const PAD: usize = 4;

/// Rasterize `text` (lines split at '\n'; characters outside Basic Latin drawn as '?') as
/// RGBA8 pixels: `fg` on `bg`. Returns (pixels, width, height), width and height in pixels.
pub fn rasterize(text: &str, fg: [u8; 4], bg: [u8; 4]) -> (Vec<u8>, usize, usize) {
    use font8x8::UnicodeFonts;
    let lines: Vec<&str> = text.lines().collect();
    let cols = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0).min(256);
    let (w, h) = (cols * GLYPH + 2 * PAD, lines.len().min(64) * GLYPH + 2 * PAD);
    let mut px = Vec::with_capacity(w * h * 4);
    for _ in 0..w * h {
        px.extend_from_slice(&bg);
    }
    for (row, line) in lines.iter().take(64).enumerate() {
        for (col, ch) in line.chars().take(256).enumerate() {
            let glyph = font8x8::BASIC_FONTS.get(ch).or_else(|| font8x8::BASIC_FONTS.get('?')).unwrap_or([0; 8]);
            for (gy, bits) in glyph.iter().enumerate() {
                for gx in 0..8 {
                    if bits & (1 << gx) == 0 {
                        continue;
                    }
                    for sy in 0..GLYPH_SCALE {
                        for sx in 0..GLYPH_SCALE {
                            let x = PAD + col * GLYPH + gx * GLYPH_SCALE + sx;
                            let y = PAD + row * GLYPH + gy * GLYPH_SCALE + sy;
                            let i = (y * w + x) * 4;
                            px[i..i + 4].copy_from_slice(&fg);
                        }
                    }
                }
            }
        }
    }
    (px, w, h)
}

/// A text image uploaded as a texture, redone only when its text changes.
#[derive(Default)]
pub struct TextTexture {
    text: String,
    texture: Option<GlesTexture>,
    id: Option<Id>,
}

impl TextTexture {
    /// A render element of `text` (`fg` on `bg`, RGBA8) with its top-left corner at `location`.
    pub fn element(
        &mut self,
        renderer: &mut GlesRenderer,
        text: &str,
        fg: [u8; 4],
        bg: [u8; 4],
        location: Point<i32, Physical>,
    ) -> Option<TextureRenderElement<GlesTexture>> {
        if self.texture.is_none() || self.text != text {
            let (px, w, h) = rasterize(text, fg, bg);
            let size: Size<i32, Buffer> = (w as i32, h as i32).into();
            self.texture = renderer
                .import_memory(&px, Fourcc::Abgr8888, size, false)
                .map_err(|e| warn!("text texture: {e:?}"))
                .ok();
            self.text = text.to_string();
            self.id = Some(Id::new());
        }
        let texture = self.texture.clone()?;
        Some(TextureRenderElement::from_static_texture(
            self.id.clone()?,
            renderer.context_id(),
            location.to_f64(),
            texture,
            1,
            Transform::Normal,
            None,
            None,
            None,
            None,
            Kind::Unspecified,
        ))
    }
}

/// A guest window's decoration state, kept with its scanout window.
pub struct DecorationState {
    /// Title bar shown (not in fullscreen).
    pub decorated: bool,
    /// The window has keyboard focus.
    pub focused: bool,
    /// The guest's colour (RGBA, 0..1).
    pub color: [f32; 4],
    /// Statistics overlay text, when the overlay is on.
    pub overlay: Option<String>,
    /// A notice shown over the content whatever the overlay says (a lost 3D worker).
    pub notice: Option<String>,
    bar_id: Id,
    title: TextTexture,
    stats: TextTexture,
    notice_text: TextTexture,
}

impl Default for DecorationState {
    fn default() -> Self {
        DecorationState {
            decorated: true,
            focused: false,
            color: [0.5, 0.5, 0.5, 1.0],
            overlay: None,
            notice: None,
            bar_id: Id::new(),
            title: TextTexture::default(),
            stats: TextTexture::default(),
            notice_text: TextTexture::default(),
        }
    }
}

/// What [`DecorationState::elements`] draws.
pub enum DecorationElement {
    /// A solid rectangle: the title bar's background (also the layout view's background and
    /// scanout outlines).
    Bar(SolidColorRenderElement),
    /// A text image ([`TextTexture`]): the title, or the statistics overlay.
    Text(TextureRenderElement<GlesTexture>),
}

impl DecorationState {
    /// The overlay (drawn over the content) and the title bar with `title` (above it), for a
    /// window whose content's top-left corner is at `content` and is `width` pixels wide.
    /// Returns (over the content, under it), each topmost first.
    pub fn elements(
        &mut self,
        renderer: &mut GlesRenderer,
        title: &str,
        content: Point<i32, Physical>,
        width: i32,
    ) -> (Vec<DecorationElement>, Vec<DecorationElement>) {
        let mut over = Vec::new();
        let mut under = Vec::new();
        if let Some(text) = self.notice.clone() {
            // below the overlay's lines: both stay readable
            let at = Point::from((content.x + 8, content.y + 8 + 16 * 4));
            if let Some(e) = self.notice_text.element(renderer, &text, [255, 255, 255, 255], [160, 0, 0, 230], at) {
                over.push(DecorationElement::Text(e));
            }
        }
        if let Some(text) = self.overlay.clone() {
            let at = Point::from((content.x + 8, content.y + 8));
            if let Some(e) = self.stats.element(renderer, &text, [255, 255, 255, 255], [0, 0, 0, 190], at) {
                over.push(DecorationElement::Text(e));
            }
        }
        if self.decorated {
            let color = bar_color(self.color, self.focused);
            let at = Point::from((content.x + 4, content.y - TITLE_HEIGHT));
            if let Some(e) = self.title.element(renderer, title, text_color_on(color), rgba8(color), at) {
                under.push(DecorationElement::Text(e));
            }
            under.push(DecorationElement::Bar(title_bar(&self.bar_id, content, width, color)));
        }
        (over, under)
    }
}

/// A title bar's colour: the guest's `color`, dimmed unless the window is `focused`.
pub fn bar_color(color: [f32; 4], focused: bool) -> [f32; 4] {
    let k = if focused { 1.0 } else { 0.55 };
    [color[0] * k, color[1] * k, color[2] * k, 1.0]
}

/// The title bar's background in `color`, `width` pixels wide above the content whose top-left
/// corner is `content`.
pub fn title_bar(id: &Id, content: Point<i32, Physical>, width: i32, color: [f32; 4]) -> SolidColorRenderElement {
    let geometry = Rectangle::new((content.x, content.y - TITLE_HEIGHT).into(), (width, TITLE_HEIGHT).into());
    SolidColorRenderElement::new(id.clone(), geometry, CommitCounter::default(), color, Kind::Unspecified)
}

/// Text colour readable on `color` (black on light, white on dark), RGBA8.
pub fn text_color_on(color: [f32; 4]) -> [u8; 4] {
    let luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2];
    if luma > 0.5 { [0, 0, 0, 255] } else { [255, 255, 255, 255] }
}

/// `color` as RGBA8.
pub fn rgba8(color: [f32; 4]) -> [u8; 4] {
    color.map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rasterizes_text() {
        let (px, w, h) = rasterize("Hi\nA", [255, 255, 255, 255], [0, 0, 0, 0]);
        assert_eq!((w, h), (2 * GLYPH + 2 * PAD, 2 * GLYPH + 2 * PAD));
        assert_eq!(px.len(), w * h * 4);
        let lit = px.chunks(4).filter(|p| p[3] == 255).count();
        assert!(lit > 50, "{lit} pixels lit");
        // padding stays background
        assert!(px[..w * PAD * 4].chunks(4).all(|p| p == [0, 0, 0, 0]));
        let (_, w, h) = rasterize("", [0; 4], [0; 4]);
        assert_eq!((w, h), (2 * PAD, 2 * PAD));
    }
}
