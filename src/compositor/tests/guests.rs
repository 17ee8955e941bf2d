//! Guest scanouts as windows: a synthetic guest's frame on the output, beside a client,
//! the statistics overlay, disconnect and reconnect, the layout view.

use super::*;
use crate::{
    compositor::element::WindowElement, virtio::device::Rect, virtio::protocol::VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM,
};

/// Geometry of guest `name`'s scanout 0 window in the space: (x, y, width, height), the
/// picture without its title bar.
fn scanout_geometry(fx: &Fixture, name: &str) -> Option<(i32, i32, i32, i32)> {
    let guest = fx.state.comp.guests.iter().find(|g| g.name == name)?;
    let window = guest.scanouts.window(0)?.clone();
    let g = fx.state.comp.space.element_geometry(&WindowElement::Scanout(window))?;
    Some((g.loc.x, g.loc.y, g.size.w, g.size.h))
}

/// A guest `name` showing a `w` x `h` frame: left half green, right half magenta.
fn showing_guest(fx: &mut Fixture, name: &str, (w, h): (u32, u32)) -> SyntheticGuest {
    let mut guest = fx.guest(name, 1);
    let fb = guest.framebuffer(0, 1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, (w, h), || fx.dispatch()).unwrap();
    // B, G, R, X bytes
    let pixel = |x: u32, _y: u32| if x < w / 2 { [0, 255, 0, 255] } else { [255, 0, 255, 255] };
    guest.draw(&fb, Rect::new(0, 0, w, h), pixel, || fx.dispatch()).unwrap();
    fx.until("the scanout's window", |fx| scanout_geometry(fx, name).is_some());
    guest
}

#[test]
fn a_guest_frame_is_a_window_with_its_pixels() {
    let mut fx = Fixture::new();
    let _guest = showing_guest(&mut fx, "g0", (320, 200));
    let (x, y, w, h) = scanout_geometry(&fx, "g0").unwrap();
    assert_eq!((w, h), (320, 200), "the window shows the scanout at its size");
    assert!(y > 0, "below its title bar");
    let shot = fx.screenshot();
    assert_eq!(pixel(&shot, x + 10, y + 10), [0, 255, 0, 255], "left half");
    assert_eq!(pixel(&shot, x + 310, y + 190), [255, 0, 255, 255], "right half");
    let list = fx.state.comp.describe();
    let scanout = &list["guests"][0]["scanouts"][0];
    assert_eq!(scanout["flush_count"], 1, "{scanout}");
    assert_eq!(scanout["width"], 320);
}

#[test]
fn a_guest_and_a_client_share_the_output_without_overlap() {
    let mut fx = Fixture::new();
    let _guest = showing_guest(&mut fx, "g0", (320, 200));
    let mut client = fx.client();
    client.map("client");
    fx.roundtrip(&mut client);
    client.paint(200, 100, 0xffff_0000);
    fx.roundtrip(&mut client);
    let (gx, _, gw, _) = scanout_geometry(&fx, "g0").unwrap();
    let space = &fx.state.comp.space;
    let c = space.elements().find(|e| e.title() == "client").unwrap();
    let bbox = space.element_bbox(c).unwrap();
    assert!(bbox.loc.x >= gx + gw, "the client's window is right of the guest's: {bbox:?}");
    let shot = fx.screenshot();
    assert_eq!(pixel(&shot, bbox.loc.x + 100, bbox.loc.y + 50), [255, 0, 0, 255]);
}

#[test]
fn the_overlay_keeps_refreshing_while_the_guest_is_idle() {
    let mut fx = Fixture::new();
    let _guest = showing_guest(&mut fx, "g0", (320, 200));
    fx.state.control(Request::Overlay { on: true }).unwrap();
    // the guest sends nothing more; the overlay's rates still change, so frames keep coming
    let start = fx.state.comp.frames;
    fx.until("ten more frames with the overlay on", |fx| fx.state.comp.frames >= start + 10);
    fx.state.control(Request::Overlay { on: false }).unwrap();
    // and stop once it is off: at most the frames already queued
    fx.until("the output to go idle", |fx| {
        fx.state.comp.redraw.values().all(|r| *r == crate::compositor::Redraw::Idle)
    });
}

#[test]
fn a_guest_that_goes_away_closes_its_window_and_comes_back_in_place() {
    let mut fx = Fixture::new();
    let guest = showing_guest(&mut fx, "g0", (320, 200));
    fx.state
        .control(Request::Window {
            guest: "g0".into(),
            scanout: 0,
            size: None,
            position: Some((400, 300)),
            fullscreen: None,
            scale: None,
            focus: true,
        })
        .unwrap();
    let before = scanout_geometry(&fx, "g0").unwrap();
    assert_eq!((before.0, before.1), (400, 300));
    drop(guest);
    fx.until("the VMM's disconnect", |fx| !fx.state.comp.guests[0].connected());
    assert!(scanout_geometry(&fx, "g0").is_none(), "the window closed");
    assert!(fx.state.comp.focused.is_none());

    // the next VMM connection of that guest: same slot, same place
    let (vmm, backend) = UnixStream::pair().unwrap();
    backend.set_nonblocking(true).unwrap();
    crate::compositor::guests::accept(&mut fx.state, 0, backend);
    let mut guest = SyntheticGuest::connect(vmm, GUEST_MEM, || fx.dispatch()).unwrap();
    let fb = guest.framebuffer(0, 7, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, (320, 200), || fx.dispatch()).unwrap();
    guest.draw(&fb, Rect::new(0, 0, 320, 200), |_, _| [0, 0, 255, 255], || fx.dispatch()).unwrap();
    fx.until("the window back", |fx| scanout_geometry(fx, "g0").is_some());
    assert_eq!(scanout_geometry(&fx, "g0"), Some(before), "where it was");
    let shot = fx.screenshot();
    assert_eq!(pixel(&shot, 410, 310), [255, 0, 0, 255], "showing the new connection's frame");
}

#[test]
fn the_layout_view_opens_beside_and_closes() {
    let mut fx = Fixture::new();
    let _guest = showing_guest(&mut fx, "g0", (320, 200));
    fx.state.control(Request::LayoutView { guest: "g0".into(), on: true }).unwrap();
    fx.dispatch();
    let view = fx.state.comp.layout_view_of("g0").expect("a layout view");
    let vb = fx.state.comp.space.element_bbox(&view).unwrap();
    let (gx, _, gw, _) = scanout_geometry(&fx, "g0").unwrap();
    assert!(vb.loc.x >= gx + gw || vb.loc.y > 0, "placed beside or below the guest: {vb:?}");
    fx.state.control(Request::LayoutView { guest: "g0".into(), on: false }).unwrap();
    assert!(fx.state.comp.layout_view_of("g0").is_none());
}
