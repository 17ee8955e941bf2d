//! Shortcuts at the seat, fullscreen and scaling of guest windows: what the keyboard does to
//! the windows before any key reaches a client.

use super::*;
use crate::{
    compositor::element::WindowElement,
    virtio::{device::Rect, protocol::VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM},
};

const KEY_LEFTMETA: u32 = 125;
const KEY_F: u32 = 33;
const KEY_O: u32 = 24;
const KEY_TAB: u32 = 15;
const KEY_RIGHT: u32 = 106;

/// Press and release `key` with Super held.
fn super_key(fx: &mut Fixture, key: u32) {
    fx.input(vec![
        InputAction::Key { code: KEY_LEFTMETA, pressed: true },
        InputAction::Key { code: key, pressed: true },
        InputAction::Key { code: key, pressed: false },
        InputAction::Key { code: KEY_LEFTMETA, pressed: false },
    ]);
}

fn guest_window(fx: &Fixture, name: &str) -> WindowElement {
    let guest = fx.state.comp.guests.iter().find(|g| g.name == name).unwrap();
    WindowElement::Scanout(guest.scanouts.window(0).unwrap().clone())
}

/// A guest `name` showing a `w` x `h` frame of one colour.
fn guest_showing(fx: &mut Fixture, name: &str, (w, h): (u32, u32)) -> SyntheticGuest {
    let mut guest = fx.guest(name, 1);
    let fb = guest.framebuffer(0, 1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, (w, h), || fx.dispatch()).unwrap();
    guest.draw(&fb, Rect::new(0, 0, w, h), |_, _| [0, 255, 0, 255], || fx.dispatch()).unwrap();
    fx.until("the scanout's window", |fx| {
        let e = guest_window(fx, name);
        fx.state.comp.space.element_geometry(&e).is_some()
    });
    guest
}

#[test]
fn super_f_makes_the_focused_guest_fullscreen_and_back() {
    let mut fx = Fixture::new();
    let _g = guest_showing(&mut fx, "g0", (320, 200));
    let window = guest_window(&fx, "g0");
    fx.state.focus(Some(window.clone()));
    let before = fx.state.comp.space.element_geometry(&window).unwrap();

    super_key(&mut fx, KEY_F);
    let full = fx.state.comp.space.element_bbox(&window).unwrap();
    assert_eq!((full.loc.x, full.loc.y, full.size.w, full.size.h), (0, 0, OUTPUT.0, OUTPUT.1), "covers the output");
    let shot = fx.screenshot();
    assert_eq!(pixel(&shot, 5, 5), [0, 255, 0, 255], "no title bar over the picture");

    super_key(&mut fx, KEY_F);
    assert_eq!(fx.state.comp.space.element_geometry(&window), Some(before), "back where it was");
}

#[test]
fn super_tab_cycles_focus_and_super_arrows_move_the_window() {
    let mut fx = Fixture::new();
    let _a = guest_showing(&mut fx, "a", (200, 100));
    let _b = guest_showing(&mut fx, "b", (200, 100));
    let (a, b) = (guest_window(&fx, "a"), guest_window(&fx, "b"));
    fx.state.focus(Some(a.clone()));
    super_key(&mut fx, KEY_TAB);
    assert_eq!(fx.state.comp.focused.as_ref(), Some(&b));
    super_key(&mut fx, KEY_TAB);
    assert_eq!(fx.state.comp.focused.as_ref(), Some(&a));

    let x = fx.state.comp.space.element_location(&a).unwrap().x;
    super_key(&mut fx, KEY_RIGHT);
    assert_eq!(fx.state.comp.space.element_location(&a).unwrap().x, x + 64);
}

#[test]
fn super_o_toggles_the_overlay_and_its_text() {
    let mut fx = Fixture::new();
    let _g = guest_showing(&mut fx, "g0", (320, 200));
    super_key(&mut fx, KEY_O);
    assert!(fx.state.comp.overlay);
    // the text is written when a frame is prepared
    let start = fx.state.comp.frames;
    fx.until("a frame with the overlay", |fx| fx.state.comp.frames > start);
    let text = fx.state.comp.guests[0].scanouts.window(0).unwrap().with_decoration(|d| d.overlay.clone());
    let text = text.expect("overlay text");
    assert!(text.starts_with("scanout 0 resource 1 B8G8R8X8_UNORM 320x200\n"), "{text}");
    super_key(&mut fx, KEY_O);
    assert!(!fx.state.comp.overlay);
}
