//! The elements of the compositor's space: Wayland client windows and guest scanouts.

use smithay::{
    backend::renderer::{
        element::{
            AsRenderElements, render_elements, solid::SolidColorRenderElement, surface::WaylandSurfaceRenderElement,
            texture::TextureRenderElement,
        },
        gles::{GlesRenderer, GlesTexture},
    },
    desktop::{Window, space::SpaceElement},
    output::Output,
    utils::{IsAlive, Logical, Physical, Point, Rectangle, Scale},
};

use super::layout_view::{DecorationOrPicture, LayoutView};
use crate::scanout::ScanoutWindow;
use crate::scanout::decoration::{DecorationElement, TITLE_HEIGHT};

render_elements! {
    /// What a window draws: a Wayland surface tree, or a guest scanout's texture (and cursor).
    pub WindowRenderElement<=GlesRenderer>;
    /// A surface of a Wayland client's window (toplevel, subsurface or popup).
    Surface=WaylandSurfaceRenderElement<GlesRenderer>,
    /// A texture: a scanout's picture or its cursor, or a text image (title, overlay, label).
    Texture=TextureRenderElement<GlesTexture>,
    /// A solid rectangle: a title bar, or the layout view's background and outlines.
    Solid=SolidColorRenderElement,
}

impl From<DecorationElement> for WindowRenderElement {
    fn from(e: DecorationElement) -> Self {
        match e {
            DecorationElement::Bar(b) => WindowRenderElement::Solid(b),
            DecorationElement::Text(t) => WindowRenderElement::Texture(t),
        }
    }
}

/// Height of a scanout window's title bar (0 when undecorated, e.g. fullscreen).
fn title_height(s: &ScanoutWindow) -> i32 {
    if s.with_decoration(|d| d.decorated) { TITLE_HEIGHT } else { 0 }
}

/// A window in the space.
#[derive(Debug, Clone, PartialEq)]
pub enum WindowElement {
    /// An xdg-shell toplevel of a Wayland client.
    Wayland(Window),
    /// A guest scanout.
    Scanout(ScanoutWindow),
    /// The layout view of one guest's scanouts.
    Layout(LayoutView),
}

impl WindowElement {
    /// The window's title: the client's xdg title, or "NAME: scanout N (WxH)".
    pub fn title(&self) -> String {
        match self {
            WindowElement::Wayland(w) => w
                .toplevel()
                .and_then(|t| {
                    smithay::wayland::compositor::with_states(t.wl_surface(), |states| {
                        states
                            .data_map
                            .get::<smithay::wayland::shell::xdg::XdgToplevelSurfaceData>()
                            .and_then(|d| d.lock().ok().and_then(|d| d.title.clone()))
                    })
                })
                .unwrap_or_default(),
            WindowElement::Scanout(s) => s.title(),
            WindowElement::Layout(l) => l.title(),
        }
    }
}

impl IsAlive for WindowElement {
    fn alive(&self) -> bool {
        match self {
            WindowElement::Wayland(w) => w.alive(),
            WindowElement::Scanout(_) | WindowElement::Layout(_) => true,
        }
    }
}

impl SpaceElement for WindowElement {
    fn geometry(&self) -> Rectangle<i32, Logical> {
        match self {
            WindowElement::Wayland(w) => SpaceElement::geometry(w),
            WindowElement::Scanout(s) => Rectangle::from_size(s.size()),
            WindowElement::Layout(l) => Rectangle::from_size(l.size()),
        }
    }

    fn bbox(&self) -> Rectangle<i32, Logical> {
        match self {
            WindowElement::Wayland(w) => SpaceElement::bbox(w),
            WindowElement::Scanout(s) => scanout_bbox(s),
            WindowElement::Layout(l) => layout_bbox(l),
        }
    }

    fn is_in_input_region(&self, point: &Point<f64, Logical>) -> bool {
        match self {
            WindowElement::Wayland(w) => SpaceElement::is_in_input_region(w, point),
            WindowElement::Scanout(s) => scanout_bbox(s).to_f64().contains(*point),
            WindowElement::Layout(l) => layout_bbox(l).to_f64().contains(*point),
        }
    }

    fn set_activate(&self, activated: bool) {
        if let WindowElement::Wayland(w) = self {
            SpaceElement::set_activate(w, activated);
        }
    }

    fn output_enter(&self, output: &Output, overlap: Rectangle<i32, Logical>) {
        if let WindowElement::Wayland(w) = self {
            SpaceElement::output_enter(w, output, overlap);
        }
    }

    fn output_leave(&self, output: &Output) {
        if let WindowElement::Wayland(w) = self {
            SpaceElement::output_leave(w, output);
        }
    }

    fn refresh(&self) {
        if let WindowElement::Wayland(w) = self {
            SpaceElement::refresh(w);
        }
    }
}

impl AsRenderElements<GlesRenderer> for WindowElement {
    type RenderElement = WindowRenderElement;

    fn render_elements<C: From<WindowRenderElement>>(
        &self,
        renderer: &mut GlesRenderer,
        location: Point<i32, Physical>,
        scale: Scale<f64>,
        alpha: f32,
    ) -> Vec<C> {
        match self {
            WindowElement::Wayland(w) => AsRenderElements::<GlesRenderer>::render_elements::<WindowRenderElement>(
                w, renderer, location, scale, alpha,
            )
            .into_iter()
            .map(C::from)
            .collect(),
            WindowElement::Scanout(s) => {
                let title = s.title();
                let width = (f64::from(s.size().w) * scale.x).round() as i32;
                let (over, under) = s.with_decoration(|d| d.elements(renderer, &title, location, width));
                let content = s.render_elements(renderer, location, scale, alpha);
                over.into_iter()
                    .map(WindowRenderElement::from)
                    .chain(content.into_iter().map(WindowRenderElement::Texture))
                    .chain(under.into_iter().map(WindowRenderElement::from))
                    .map(C::from)
                    .collect()
            }
            WindowElement::Layout(l) => l
                .elements(renderer, location)
                .into_iter()
                .map(|e| match e {
                    DecorationOrPicture::Decoration(d) => WindowRenderElement::from(d),
                    DecorationOrPicture::Picture(p) => WindowRenderElement::Texture(p),
                })
                .map(C::from)
                .collect(),
        }
    }
}

/// The layout view with its title bar above (y < 0).
fn layout_bbox(l: &LayoutView) -> Rectangle<i32, Logical> {
    let size = l.size();
    Rectangle::new((0, -TITLE_HEIGHT).into(), (size.w, size.h + TITLE_HEIGHT).into())
}

/// A scanout window's content with its title bar above (y < 0).
fn scanout_bbox(s: &ScanoutWindow) -> Rectangle<i32, Logical> {
    let size = s.size();
    let bar = title_height(s);
    Rectangle::new((0, -bar).into(), (size.w, size.h + bar).into())
}
