//! The layout view: one window showing all of one guest's scanouts arranged as the guest sees
//! them (at their guest-coordinate positions, the ones `scanway layout` prints), scaled to fit
//! [`MAX_WIDTH`] pixels, each labelled with its index, size and resource.
//!
//! The pictures are the scanout windows' own textures sampled again (no copies), under element
//! ids of the view's own so that damage tracking keeps the two apart.

use std::{cell::RefCell, rc::Rc};

use smithay::{
    backend::renderer::{
        element::{Id, Kind, solid::SolidColorRenderElement},
        gles::GlesRenderer,
        utils::CommitCounter,
    },
    utils::{Logical, Physical, Point, Rectangle, Size},
};

use crate::scanout::decoration::{DecorationElement, DecorationState, TextTexture};
use crate::scanout::{ScanoutWindow, guest_layout};

/// Widest the view gets, pixels (the layout is scaled down to fit, never up).
pub const MAX_WIDTH: i32 = 960;
/// Border drawn around each scanout, pixels.
const OUTLINE: i32 = 2;

struct View {
    guest: String,
    /// The guest's scanout windows, by scanout index.
    scanouts: Vec<ScanoutWindow>,
    ids: Vec<Id>,
    outline_ids: Vec<Id>,
    labels: Vec<TextTexture>,
    background: Id,
    decoration: DecorationState,
}

/// Where the view draws: the enabled scanouts' rectangles in guest coordinates (see
/// [`guest_layout`]), the scale from guest pixels to view pixels (fitting [`MAX_WIDTH`], never
/// above 1), and the content size in pixels (at least 320x180 while no scanout is enabled).
struct Geometry {
    rects: Vec<(u32, Rectangle<i32, Logical>)>,
    k: f64,
    size: Size<i32, Logical>,
}

/// The layout view of one guest: a space element. Clones share state; equality is identity.
#[derive(Clone)]
pub struct LayoutView(Rc<RefCell<View>>);

impl PartialEq for LayoutView {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for LayoutView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.title())
    }
}

impl LayoutView {
    /// The view of guest `guest` whose scanout windows are `scanouts`, in its colour.
    pub fn new(guest: &str, scanouts: &[ScanoutWindow], color: [f32; 4]) -> LayoutView {
        let mut decoration = DecorationState::default();
        decoration.color = color;
        LayoutView(Rc::new(RefCell::new(View {
            guest: guest.to_string(),
            scanouts: scanouts.to_vec(),
            ids: scanouts.iter().map(|_| Id::new()).collect(),
            outline_ids: scanouts.iter().map(|_| Id::new()).collect(),
            labels: scanouts.iter().map(|_| TextTexture::default()).collect(),
            background: Id::new(),
            decoration,
        })))
    }

    /// The guest's name.
    pub fn guest(&self) -> String {
        self.0.borrow().guest.clone()
    }

    /// "NAME: layout".
    pub fn title(&self) -> String {
        format!("{}: layout", self.0.borrow().guest)
    }

    /// Use the view's decoration state (title bar, focus).
    pub fn with_decoration<R>(&self, f: impl FnOnce(&mut DecorationState) -> R) -> R {
        f(&mut self.0.borrow_mut().decoration)
    }

    fn geometry(&self) -> Geometry {
        let rects = guest_layout(&self.0.borrow().scanouts);
        let w: i32 = rects.iter().map(|(_, r)| r.size.w).sum();
        let h = rects.iter().map(|(_, r)| r.size.h).max().unwrap_or(0);
        let k = if w <= MAX_WIDTH { 1.0 } else { f64::from(MAX_WIDTH) / f64::from(w) };
        let scaled = ((f64::from(w) * k).round() as i32, (f64::from(h) * k).round() as i32);
        Geometry { rects, k, size: (scaled.0.max(320), scaled.1.max(180)).into() }
    }

    /// Content size, pixels.
    pub fn size(&self) -> Size<i32, Logical> {
        self.geometry().size
    }

    /// Render elements, topmost first, for content at `location`.
    pub fn elements(&self, renderer: &mut GlesRenderer, location: Point<i32, Physical>) -> Vec<DecorationOrPicture> {
        let Geometry { rects, k, size } = self.geometry();
        let title = self.title();
        let mut v = self.0.borrow_mut();
        let mut labels = Vec::new();
        let mut pictures = Vec::new();
        let mut outlines = Vec::new();
        for (i, r) in rects {
            let i = i as usize;
            let at = Point::<i32, Physical>::from((
                location.x + (f64::from(r.loc.x) * k).round() as i32,
                location.y + (f64::from(r.loc.y) * k).round() as i32,
            ));
            let window = v.scanouts[i].clone();
            let text = format!("#{i} {}x{}+{}+{} res {}", r.size.w, r.size.h, r.loc.x, r.loc.y, window.resource_id());
            if let Some(e) =
                v.labels[i].element(renderer, &text, [255, 255, 255, 255], [0, 0, 0, 170], (at.x + 6, at.y + 6).into())
            {
                labels.push(DecorationOrPicture::Decoration(DecorationElement::Text(e)));
            }
            if let Some(e) = window.picture_element(renderer, at, k, &v.ids[i]) {
                pictures.push(DecorationOrPicture::Picture(e));
            }
            let outline = Rectangle::new(
                (at.x - OUTLINE, at.y - OUTLINE).into(),
                (
                    (f64::from(r.size.w) * k).round() as i32 + 2 * OUTLINE,
                    (f64::from(r.size.h) * k).round() as i32 + 2 * OUTLINE,
                )
                    .into(),
            );
            outlines.push(DecorationOrPicture::Decoration(DecorationElement::Bar(SolidColorRenderElement::new(
                v.outline_ids[i].clone(),
                outline,
                CommitCounter::default(),
                [0.9, 0.9, 0.9, 1.0],
                Kind::Unspecified,
            ))));
        }
        let background = SolidColorRenderElement::new(
            v.background.clone(),
            Rectangle::new(location, (size.w, size.h).into()),
            CommitCounter::default(),
            [0.05, 0.06, 0.08, 1.0],
            Kind::Unspecified,
        );
        let (_, under) = v.decoration.elements(renderer, &title, location, size.w);
        let mut out = labels;
        out.extend(pictures);
        out.extend(outlines);
        out.push(DecorationOrPicture::Decoration(DecorationElement::Bar(background)));
        out.extend(under.into_iter().map(DecorationOrPicture::Decoration));
        out
    }
}

/// What the layout view draws.
pub enum DecorationOrPicture {
    /// The background, a scanout's outline or label, or the view's title bar.
    Decoration(DecorationElement),
    /// A scanout's picture: its window's texture, scaled to the view.
    Picture(
        smithay::backend::renderer::element::texture::TextureRenderElement<
            smithay::backend::renderer::gles::GlesTexture,
        >,
    ),
}
