//! Wayland clients' windows: placement, focus, input routing, frame callbacks, closing.

use super::*;
use crate::compositor::element::WindowElement;

const RED: u32 = 0xffff_0000;
const BLUE: u32 = 0xff00_00ff;
const BTN_LEFT: u32 = 0x110;
const KEY_A: u32 = 30;

/// A client with one `w` x `h` toplevel of colour `argb`, mapped and drawn.
fn painted_client(fx: &mut Fixture, title: &str, (w, h): (i32, i32), argb: u32) -> client::TestClient {
    let mut client = fx.client();
    client.map(title);
    fx.roundtrip(&mut client);
    assert!(!client.seen().configures.is_empty(), "{title}: the compositor configured the toplevel");
    client.paint(w, h, argb);
    fx.roundtrip(&mut client);
    client
}

/// Geometry of the Wayland window titled `title` in the space: (x, y, width, height).
fn window_geometry(fx: &Fixture, title: &str) -> (i32, i32, i32, i32) {
    let space = &fx.state.comp.space;
    let element = space.elements().find(|e| e.title() == title).unwrap_or_else(|| panic!("no window {title}"));
    let g = space.element_geometry(element).unwrap();
    (g.loc.x, g.loc.y, g.size.w, g.size.h)
}

#[test]
fn a_client_window_is_placed_focused_drawn_and_gets_frames() {
    let mut fx = Fixture::new();
    let mut client = painted_client(&mut fx, "one", (200, 150), RED);
    assert_eq!(window_geometry(&fx, "one"), (0, 0, 200, 150), "the first window goes to the top-left corner");
    assert!(client.seen().keyboard_focus, "a new window gets the keyboard");
    let shot = fx.screenshot();
    assert_eq!(pixel(&shot, 100, 75), [255, 0, 0, 255], "the client's pixels are on the output");
    assert_ne!(pixel(&shot, 300, 75), [255, 0, 0, 255], "and nothing beside it");
    fx.until("a frame callback", |fx| {
        client.pump();
        fx.dispatch();
        client.pump();
        client.seen().frames > 0
    });
}

#[test]
fn windows_go_side_by_side_and_a_click_moves_focus_and_keys() {
    let mut fx = Fixture::new();
    let mut one = painted_client(&mut fx, "one", (200, 150), RED);
    let mut two = painted_client(&mut fx, "two", (300, 100), BLUE);
    let (x1, _, w1, _) = window_geometry(&fx, "one");
    let (x2, y2, ..) = window_geometry(&fx, "two");
    assert_eq!((x2, y2), (x1 + w1 + 16, 0), "the second window goes right of the first, a gap between");
    fx.roundtrip(&mut one);
    assert!(two.seen().keyboard_focus && !one.seen().keyboard_focus, "the newest window has the keyboard");

    // the pointer over `one`, 10 px in: its client sees it there; a click focuses it
    fx.input(vec![InputAction::Motion { x: x1 + 10, y: 20 }]);
    fx.roundtrip(&mut one);
    assert_eq!(one.seen().pointer, Some((10.0, 20.0)));
    fx.input(vec![
        InputAction::Button { code: BTN_LEFT, pressed: true },
        InputAction::Button { code: BTN_LEFT, pressed: false },
    ]);
    fx.roundtrip(&mut one);
    fx.roundtrip(&mut two);
    assert_eq!(one.seen().buttons, [(BTN_LEFT, true), (BTN_LEFT, false)]);
    assert!(one.seen().keyboard_focus && !two.seen().keyboard_focus, "the click moved the keyboard");
    assert_eq!(
        fx.state.comp.space.elements().last().map(WindowElement::title).as_deref(),
        Some("one"),
        "and raised it"
    );

    // keys go to the focused window only
    fx.input(vec![InputAction::Key { code: KEY_A, pressed: true }, InputAction::Key { code: KEY_A, pressed: false }]);
    fx.roundtrip(&mut one);
    fx.roundtrip(&mut two);
    assert_eq!(one.seen().keys, [(KEY_A, true), (KEY_A, false)]);
    assert!(two.seen().keys.is_empty());
}

#[test]
fn a_closed_window_leaves_the_space_and_the_focus() {
    let mut fx = Fixture::new();
    let mut one = painted_client(&mut fx, "one", (200, 150), RED);
    one.unmap();
    fx.roundtrip(&mut one);
    fx.until("the window to leave the space", |fx| fx.state.comp.space.elements().next().is_none());
    assert!(fx.state.comp.focused.is_none(), "no focus on a window that is gone");
    let shot = fx.screenshot();
    assert_ne!(pixel(&shot, 100, 75), [255, 0, 0, 255], "its pixels are gone from the output");
}
