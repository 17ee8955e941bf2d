//! Input and window management: the seat's pointer and keyboard (from the backend's devices
//! or `scanway input`), focus, shortcuts, moving, resizing and fullscreen.
//!
//! Routing: a pointer button press focuses and raises the window under the pointer (a press
//! on a guest window's title bar, or anywhere with Super held, starts moving it; the right
//! button with Super held, or the left one on the window's bottom-right corner, resizes it: the
//! window follows the pointer and a guest is asked for the new size once, on release). Keys go to
//! the focused window: a Wayland client through `wl_keyboard`, a guest through QEMU's D-Bus
//! display ([`super::qemu_ui`]), except the shortcuts of [`super::config`]. While a guest
//! holds the keyboard grab (the `release-grab` shortcut, Ctrl+Alt+G by default, toggles it)
//! every key but that one goes to the guest. Pointer motion over a guest window moves the
//! guest's absolute pointer to the guest pixel under it; the guest's cursor image is drawn by
//! the host, at the host pointer while that is over the window (no guest round trip), else
//! where the guest put it (no read-back either way).

use smithay::{
    backend::input::{
        AbsolutePositionEvent, Axis, ButtonState, Event, InputBackend, InputEvent, KeyState, KeyboardKeyEvent,
        PointerAxisEvent, PointerButtonEvent, PointerMotionEvent,
    },
    desktop::WindowSurfaceType,
    input::{
        keyboard::{FilterResult, Keycode},
        pointer::{ButtonEvent, MotionEvent},
    },
    utils::{Logical, Point, SERIAL_COUNTER, Size},
    wayland::shell::xdg::ToplevelSurface,
};
use tracing::{info, warn};

use super::{
    Comp, State,
    config::Action,
    element::WindowElement,
    guests::lock,
    qemu_ui::{UiRequest, dbus_button_from_evdev, qnum_from_evdev},
};
use crate::control::{InputAction, ScaleMode};
use crate::scanout::ScanoutWindow;

/// Keysym of Ctrl+Alt+F1 (`XF86Switch_VT_1`); F2..F12 follow.
const XF86_SWITCH_VT_1: u32 = 0x1008_fe01;
/// How far the move shortcuts move a window, pixels.
const MOVE_STEP: i32 = 64;
/// evdev code of the left button.
const BTN_LEFT: u32 = 0x110;
/// evdev code of the right button.
const BTN_RIGHT: u32 = 0x111;
/// How close to a guest window's bottom-right corner a left press resizes it, pixels.
const CORNER: f64 = 16.0;
/// Pseudo button code for a wheel notch up, away from the user (evdev has none; this is
/// `BTN_GEAR_UP`, which no pointer sends), mapped to QEMU's wheel-up button 3 for guests.
pub const BTN_WHEEL_UP: u32 = 0x151;
/// Pseudo button code for a wheel notch down (`BTN_GEAR_DOWN`), QEMU's wheel-down button 4.
pub const BTN_WHEEL_DOWN: u32 = 0x150;
/// The largest evdev key code (`KEY_MAX`, `linux/input-event-codes.h`).
const KEY_MAX: u32 = 0x2ff;
/// Most wheel notches one `scanway input scroll:N` action turns.
const MAX_SCROLL_NOTCHES: u32 = 100;

/// A window following the pointer.
pub enum PointerGrab {
    /// Being moved: the pointer's offset from the window's location.
    Move {
        /// The window being moved.
        element: WindowElement,
        /// Pointer position minus the window's location in the space, pixels: the window is
        /// mapped at the pointer minus this.
        offset: Point<f64, Logical>,
    },
    /// Being resized: where the pointer was and the window's content size then.
    Resize {
        /// The window being resized.
        element: WindowElement,
        /// Pointer position when the resize began, output pixels.
        start: Point<f64, Logical>,
        /// The window's content size then, pixels: the new size is this plus the pointer's
        /// travel since `start` (at least 64x48).
        size: Size<i32, Logical>,
    },
}

impl PointerGrab {
    /// Whether `element` is the window being moved or resized.
    pub fn element_is(&self, element: &WindowElement) -> bool {
        match self {
            PointerGrab::Move { element: e, .. } | PointerGrab::Resize { element: e, .. } => e == element,
        }
    }

    /// The content size a resize grab gives its window with the pointer at `pos`.
    fn resized(start: Point<f64, Logical>, size: Size<i32, Logical>, pos: Point<f64, Logical>) -> Size<i32, Logical> {
        let d = pos - start;
        ((f64::from(size.w) + d.x).round().max(64.0) as i32, (f64::from(size.h) + d.y).round().max(48.0) as i32).into()
    }
}

/// A window's place before it went fullscreen.
pub struct Restore {
    element: WindowElement,
    location: Point<i32, Logical>,
    /// A guest window's own content size then (`None`: it followed the guest's mode)...
    frame: Option<Size<i32, Logical>>,
    /// ...and the size it showed (the mode a resize-guest window's guest goes back to).
    size: Size<i32, Logical>,
}

impl Restore {
    /// Whether `element` is the fullscreen window.
    pub fn element_is(&self, element: &WindowElement) -> bool {
        &self.element == element
    }
}

enum KeyRoute {
    Shortcut(Action),
    Guest,
    Swallow,
    /// Ctrl+Alt+F<n>: switch VTs (tty backend).
    Vt(i32),
}

/// Feed one event of a backend's input devices (winit's window, libinput) to the seat.
pub fn process_input<B: InputBackend>(state: &mut State, event: InputEvent<B>) {
    match event {
        InputEvent::Keyboard { event } => {
            state.keyboard_key(event.key_code(), event.state() == KeyState::Pressed, event.time_msec());
        }
        InputEvent::PointerMotion { event } => {
            let pos = state.comp.pointer_location + event.delta();
            state.pointer_motion(pos, event.time_msec());
        }
        InputEvent::PointerMotionAbsolute { event } => {
            // over the whole space of outputs
            let size = state.comp.space_size();
            let pos = event.position_transformed((size.w, size.h).into());
            state.pointer_motion(pos, event.time_msec());
        }
        InputEvent::PointerButton { event } => {
            state.pointer_button(event.button_code(), event.state() == ButtonState::Pressed, event.time_msec());
        }
        InputEvent::PointerAxis { event } => {
            // a wheel notch is a press and release of button 4 (up) or 5 (down) for guests
            let v = event.amount_v120(Axis::Vertical).or_else(|| event.amount(Axis::Vertical)).unwrap_or(0.0);
            if v != 0.0 {
                let code = if v < 0.0 { BTN_WHEEL_UP } else { BTN_WHEEL_DOWN };
                state.pointer_button(code, true, event.time_msec());
                state.pointer_button(code, false, event.time_msec());
            }
        }
        _ => {}
    }
}

impl State {
    /// Feed one input action (from `scanway input`) as if it came from a device. Key actions
    /// are evdev codes already: the client resolved key names and `type:` text through the
    /// default keymap (`crate::control::keys`), so that a name or character no key types is
    /// refused before anything is sent; here a key goes through the seat like a device's.
    pub fn input_action(&mut self, action: InputAction) {
        let time = self.comp.start.elapsed().as_millis() as u32;
        match action {
            InputAction::Motion { x, y } => self.pointer_motion((f64::from(x), f64::from(y)).into(), time),
            InputAction::Button { code, pressed } => self.pointer_button(code, pressed, time),
            // evdev codes end at KEY_MAX (0x2ff); a larger one from the control socket is no key
            InputAction::Key { code, pressed } if code <= KEY_MAX => {
                self.keyboard_key(Keycode::new(code + 8), pressed, time);
            }
            InputAction::Key { .. } => {}
            InputAction::Scroll { notches } => {
                let code = if notches < 0 { BTN_WHEEL_UP } else { BTN_WHEEL_DOWN };
                for _ in 0..notches.unsigned_abs().min(MAX_SCROLL_NOTCHES) {
                    self.pointer_button(code, true, time);
                    self.pointer_button(code, false, time);
                }
            }
        }
    }

    /// The pointer moved to `pos` (output coordinates, pixels); `time` in milliseconds.
    pub fn pointer_motion(&mut self, pos: Point<f64, Logical>, time: u32) {
        let output = self.comp.space_size();
        let pos: Point<f64, Logical> =
            (pos.x.clamp(0.0, f64::from(output.w - 1)), pos.y.clamp(0.0, f64::from(output.h - 1))).into();
        self.comp.pointer_location = pos;
        match &self.comp.grab {
            Some(PointerGrab::Move { element, offset }) => {
                let location = (pos - *offset).to_i32_round();
                self.comp.space.map_element(element.clone(), location, false);
                self.comp.queue_redraw();
                return;
            }
            Some(PointerGrab::Resize { element, start, size }) => {
                // the window follows at once (scaled to fit); the guest is asked on release
                if let WindowElement::Scanout(window) = element {
                    window.set_frame(Some(PointerGrab::resized(*start, *size, pos)));
                    let element = element.clone();
                    self.comp.remap(&element);
                }
                return;
            }
            None => {}
        }
        let under = self.comp.space.element_under(pos).map(|(e, loc)| (e.clone(), loc));
        let focus = match &under {
            Some((WindowElement::Wayland(w), loc)) => {
                w.surface_under(pos - loc.to_f64(), WindowSurfaceType::ALL).map(|(s, p)| (s, (p + *loc).to_f64()))
            }
            _ => None,
        };
        if let Some(pointer) = self.comp.seat.get_pointer() {
            pointer.motion(self, focus, &MotionEvent { location: pos, serial: SERIAL_COUNTER.next_serial(), time });
            pointer.frame(self);
        }
        let mut over = None;
        if let Some((WindowElement::Scanout(window), loc)) = &under {
            let local = pos - loc.to_f64();
            if local.y >= 0.0 {
                self.comp.send_to_guest_of(window, |head| {
                    window.to_guest(local).map(|(x, y)| UiRequest::Motion { head, x, y })
                });
                over = Some((window.clone(), local));
            }
        }
        // the guest's cursor image follows the host pointer at once (no guest round trip)
        let mut redraw = false;
        for guest in &self.comp.guests {
            for window in guest.scanouts.windows() {
                let point = over.as_ref().filter(|(w, _)| w == window).map(|(_, p)| *p);
                redraw |= window.set_host_pointer(point);
            }
        }
        if redraw {
            self.comp.queue_redraw();
        }
    }

    /// A pointer button (evdev code, `BTN_LEFT` ...) was pressed or released.
    pub fn pointer_button(&mut self, code: u32, pressed: bool, time: u32) {
        let pos = self.comp.pointer_location;
        if !pressed && let Some(grab) = self.comp.grab.take() {
            if let PointerGrab::Resize { element, start, size } = grab {
                self.comp.resize_window(&element, PointerGrab::resized(start, size, pos));
            }
            return;
        }
        let under = self.comp.space.element_under(pos).map(|(e, loc)| (e.clone(), loc));
        if pressed {
            self.focus(under.as_ref().map(|(e, _)| e.clone()));
            if let Some((element, loc)) = &under {
                let decorated = matches!(element, WindowElement::Scanout(_) | WindowElement::Layout(_));
                let on_title_bar = decorated && pos.y < f64::from(loc.y);
                let super_held = self.comp.seat.get_keyboard().is_some_and(|k| k.modifier_state().logo);
                let geometry = smithay::desktop::space::SpaceElement::geometry(element);
                let corner = loc.to_f64() + geometry.size.to_f64().to_point();
                let on_corner = matches!(element, WindowElement::Scanout(_))
                    && (corner.x - pos.x) < CORNER
                    && (corner.y - pos.y) < CORNER;
                if (code == BTN_RIGHT && super_held) || (code == BTN_LEFT && on_corner && !on_title_bar) {
                    let size = geometry.size;
                    self.comp.grab = Some(PointerGrab::Resize { element: element.clone(), start: pos, size });
                    return;
                }
                if code == BTN_LEFT && (on_title_bar || super_held) {
                    let location = self.comp.space.element_location(element).unwrap_or_default();
                    let offset = pos - location.to_f64();
                    self.comp.grab = Some(PointerGrab::Move { element: element.clone(), offset });
                    return;
                }
            }
        }
        match under {
            Some((WindowElement::Scanout(window), _)) => {
                if let Some(button) = dbus_button_from_evdev(code) {
                    self.comp.send_to_guest_of(&window, |head| Some(UiRequest::Button { head, button, down: pressed }));
                }
            }
            _ if code == BTN_WHEEL_UP || code == BTN_WHEEL_DOWN => {}
            _ => {
                if let Some(pointer) = self.comp.seat.get_pointer() {
                    let state = if pressed { ButtonState::Pressed } else { ButtonState::Released };
                    pointer
                        .button(self, &ButtonEvent { button: code, state, serial: SERIAL_COUNTER.next_serial(), time });
                    pointer.frame(self);
                }
            }
        }
    }

    /// Focus and raise `element` (or nothing): keyboard input goes to it from now on.
    pub fn focus(&mut self, element: Option<WindowElement>) {
        let comp = &mut self.comp;
        if comp.focused != element {
            comp.grabbed = false;
            // keys still held go up in the guest that had them, or they would repeat there
            for (window, qnum) in std::mem::take(&mut comp.guest_keys_down) {
                comp.send_to_guest_of(&window, |_| Some(UiRequest::Key { qnum, down: false }));
            }
        }
        for e in comp.space.elements() {
            let focused = Some(e) == element.as_ref();
            match e {
                WindowElement::Scanout(s) => s.with_decoration(|d| d.focused = focused),
                WindowElement::Layout(l) => l.with_decoration(|d| d.focused = focused),
                WindowElement::Wayland(_) => {}
            }
        }
        if let Some(e) = &element {
            comp.space.raise_element(e, true);
        }
        comp.focused = element.clone();
        comp.queue_redraw();
        let surface = match element {
            Some(WindowElement::Wayland(w)) => w.toplevel().map(|t| t.wl_surface().clone()),
            _ => None,
        };
        if let Some(keyboard) = self.comp.seat.get_keyboard() {
            keyboard.set_focus(self, surface, SERIAL_COUNTER.next_serial());
        }
    }

    /// A key (xkb keycode = evdev code + 8) was pressed or released.
    pub fn keyboard_key(&mut self, keycode: Keycode, pressed: bool, time: u32) {
        let Some(keyboard) = self.comp.seat.get_keyboard() else { return };
        let evdev = keycode.raw().saturating_sub(8);
        tracing::debug!(evdev, pressed, focused = ?self.comp.focused, "key");
        let state = if pressed { KeyState::Pressed } else { KeyState::Released };
        let serial = SERIAL_COUNTER.next_serial();
        let route = keyboard.input::<KeyRoute, _>(self, keycode, state, serial, time, |state, mods, handle| {
            let comp = &mut state.comp;
            if !pressed && let Some(i) = comp.swallowed.iter().position(|&k| k == evdev) {
                comp.swallowed.swap_remove(i);
                return FilterResult::Intercept(KeyRoute::Swallow);
            }
            let sym = handle.modified_sym().raw();
            if pressed && (XF86_SWITCH_VT_1..=XF86_SWITCH_VT_1 + 11).contains(&sym) {
                comp.swallowed.push(evdev);
                return FilterResult::Intercept(KeyRoute::Vt((sym - XF86_SWITCH_VT_1 + 1) as i32));
            }
            if pressed
                && let Some(action) = comp.config.action(mods, handle.modified_sym())
                && (!comp.grabbed || action == Action::ReleaseGrab)
            {
                comp.swallowed.push(evdev);
                return FilterResult::Intercept(KeyRoute::Shortcut(action));
            }
            if matches!(comp.focused, Some(WindowElement::Scanout(_))) {
                return FilterResult::Intercept(KeyRoute::Guest);
            }
            FilterResult::Forward
        });
        match route {
            Some(KeyRoute::Shortcut(action)) => self.run_action(action),
            Some(KeyRoute::Guest) => {
                if let (Some(WindowElement::Scanout(window)), Some(qnum)) =
                    (self.comp.focused.clone(), qnum_from_evdev(evdev))
                {
                    self.comp.send_to_guest_of(&window, |_| Some(UiRequest::Key { qnum, down: pressed }));
                    let down = &mut self.comp.guest_keys_down;
                    down.retain(|(w, q)| !(w == &window && *q == qnum));
                    if pressed {
                        down.push((window, qnum));
                    }
                }
            }
            Some(KeyRoute::Vt(vt)) => {
                if let super::Backend::Tty(tty) = &mut self.backend {
                    tty.change_vt(vt);
                }
            }
            Some(KeyRoute::Swallow) | None => {}
        }
    }

    /// Do what a shortcut says.
    pub fn run_action(&mut self, action: Action) {
        let focused = self.comp.focused.clone();
        match action {
            Action::FocusNext => {
                let elements: Vec<WindowElement> = self.comp.space.elements().cloned().collect();
                let next = match focused.as_ref().and_then(|f| elements.iter().position(|e| e == f)) {
                    Some(i) => elements.get((i + 1) % elements.len()).cloned(),
                    None => elements.first().cloned(),
                };
                self.focus(next);
            }
            Action::MoveLeft | Action::MoveRight | Action::MoveUp | Action::MoveDown => {
                let Some(element) = focused else { return };
                let (dx, dy) = match action {
                    Action::MoveLeft => (-MOVE_STEP, 0),
                    Action::MoveRight => (MOVE_STEP, 0),
                    Action::MoveUp => (0, -MOVE_STEP),
                    _ => (0, MOVE_STEP),
                };
                let loc = self.comp.space.element_location(&element).unwrap_or_default();
                self.comp.space.map_element(element, (loc.x + dx, loc.y + dy), true);
                self.comp.queue_redraw();
            }
            Action::Grow | Action::Shrink => {
                let Some(element) = focused else { return };
                let size = smithay::desktop::space::SpaceElement::geometry(&element).size;
                let k = if action == Action::Grow { 1.1 } else { 1.0 / 1.1 };
                let new = ((f64::from(size.w) * k).round() as i32, (f64::from(size.h) * k).round() as i32);
                self.comp.resize_window(&element, new.into());
            }
            Action::Fullscreen => {
                if let Some(element) = focused {
                    let on = self.comp.fullscreen.as_ref().is_none_or(|r| r.element != element);
                    self.comp.set_fullscreen(&element, on);
                }
            }
            Action::CycleScale => {
                if let Some(WindowElement::Scanout(window)) = focused {
                    let next = match window.scale_mode() {
                        ScaleMode::ResizeGuest => ScaleMode::Fit,
                        ScaleMode::Fit => ScaleMode::OneToOne,
                        ScaleMode::OneToOne => ScaleMode::ResizeGuest,
                    };
                    self.comp.set_scale_mode(&window, next);
                }
            }
            Action::Overlay => {
                self.comp.overlay = !self.comp.overlay;
                self.comp.queue_redraw();
            }
            Action::ReleaseGrab => {
                self.comp.grabbed = !self.comp.grabbed && matches!(focused, Some(WindowElement::Scanout(_)));
                info!("keyboard grab {}", if self.comp.grabbed { "taken by the focused guest" } else { "released" });
            }
            Action::CtrlAltDel => {
                if let Some(WindowElement::Scanout(window)) = focused {
                    self.comp.send_keys_to_guest_of(&window, &[29, 56, 111]);
                }
            }
            Action::LayoutView => {
                let name = match &focused {
                    Some(WindowElement::Scanout(w)) => Some(w.ids().0),
                    Some(WindowElement::Layout(l)) => Some(l.guest()),
                    _ => None,
                };
                if let Some((name, index)) = name.and_then(|n| self.comp.guest_index(&n).map(|i| (n, i))) {
                    let open = self.comp.layout_view_of(&name).is_some();
                    self.comp.set_layout_view(index, !open);
                }
            }
            Action::Quit => self.comp.loop_signal.stop(),
        }
    }
}

impl Comp {
    /// The guest index and scanout of a scanout window.
    pub fn guest_of(&self, window: &ScanoutWindow) -> Option<(usize, u32)> {
        let (name, scanout) = window.ids();
        self.guest_index(&name).map(|i| (i, scanout))
    }

    /// Send what `make(head)` returns to the VMM UI of `window`'s guest, if linked.
    pub fn send_to_guest_of(&self, window: &ScanoutWindow, make: impl FnOnce(u32) -> Option<UiRequest>) {
        let Some((index, head)) = self.guest_of(window) else { return };
        if let (Some(ui), Some(req)) = (self.guests[index].ui.as_ref(), make(head)) {
            ui.send(req);
        }
    }

    /// Press `keys` (evdev codes) in order and release them in reverse on `window`'s guest.
    pub fn send_keys_to_guest_of(&self, window: &ScanoutWindow, keys: &[u32]) {
        let Some((index, _)) = self.guest_of(window) else { return };
        self.send_keys(index, keys);
    }

    /// Press `keys` (evdev codes) in order and release them in reverse on guest `index`.
    pub fn send_keys(&self, index: usize, keys: &[u32]) {
        let Some(ui) = self.guests.get(index).and_then(|g| g.ui.as_ref()) else { return };
        let qnums: Vec<u32> = keys.iter().filter_map(|&k| qnum_from_evdev(k)).collect();
        for &qnum in &qnums {
            ui.send(UiRequest::Key { qnum, down: true });
        }
        for &qnum in qnums.iter().rev() {
            ui.send(UiRequest::Key { qnum, down: false });
        }
    }

    /// Give `element` the content size `size` (pixels). A guest window in resize-guest mode
    /// asks its guest to switch to that size: the device model answers the guest's next
    /// `GET_DISPLAY_INFO`/`GET_EDID` with it, and QEMU raises the display-change event.
    pub fn resize_window(&mut self, element: &WindowElement, size: Size<i32, Logical>) {
        let size: Size<i32, Logical> = (size.w.clamp(16, 16384), size.h.clamp(16, 16384)).into();
        match element {
            WindowElement::Scanout(window) => {
                window.set_frame(Some(size));
                if window.scale_mode() == ScaleMode::ResizeGuest {
                    self.request_guest_size(window, size);
                }
            }
            WindowElement::Wayland(w) => {
                if let Some(toplevel) = w.toplevel() {
                    toplevel.with_pending_state(|s| s.size = Some(size));
                    toplevel.send_configure();
                }
            }
            WindowElement::Layout(_) => {}
        }
        self.remap(element);
    }

    /// Ask `window`'s guest to show `size` on its scanout.
    fn request_guest_size(&mut self, window: &ScanoutWindow, size: Size<i32, Logical>) {
        let Some((index, head)) = self.guest_of(window) else { return };
        let (w, h) = (size.w as u32, size.h as u32);
        let guest = &self.guests[index];
        lock(&guest.device).gpu_mut().set_display_size(head, w, h);
        match &guest.ui {
            Some(ui) => ui.send(UiRequest::SetSize { head, width: w, height: h }),
            None => warn!(guest = %guest.name, "no VMM UI link (qmp=): the guest sees {w}x{h} at its next mode probe"),
        }
    }

    /// Change how `window` fills its window; resize-guest asks the guest for the window's size.
    pub fn set_scale_mode(&mut self, window: &ScanoutWindow, mode: ScaleMode) {
        window.set_scale_mode(mode);
        if mode == ScaleMode::ResizeGuest
            && let Some(frame) = window.frame()
        {
            self.request_guest_size(window, frame);
        }
        self.remap(&WindowElement::Scanout(window.clone()));
    }

    /// Make `element` cover the output (or put it back where it was).
    pub fn set_fullscreen(&mut self, element: &WindowElement, on: bool) {
        if let Some(restore) = self.fullscreen.take() {
            if on && restore.element_is(element) {
                // already fullscreen
                self.fullscreen = Some(restore);
                return;
            }
            self.leave_fullscreen(restore);
        }
        if !on {
            return;
        }
        let location = self.space.element_location(element).unwrap_or_default();
        let output = self.output_size();
        let fullscreen: Size<i32, Logical> = (output.w, output.h).into();
        let size = smithay::desktop::space::SpaceElement::geometry(element).size;
        match element {
            WindowElement::Scanout(window) => {
                self.fullscreen = Some(Restore { element: element.clone(), location, frame: window.frame(), size });
                window.with_decoration(|d| d.decorated = false);
                self.resize_window(element, fullscreen);
            }
            WindowElement::Wayland(w) => {
                self.fullscreen = Some(Restore { element: element.clone(), location, frame: None, size });
                if let Some(t) = w.toplevel() {
                    set_toplevel_fullscreen(t, Some(fullscreen));
                }
            }
            WindowElement::Layout(_) => return,
        }
        self.space.map_element(element.clone(), (0, 0), true);
        self.queue_redraw();
    }

    fn leave_fullscreen(&mut self, restore: Restore) {
        match &restore.element {
            WindowElement::Scanout(window) => {
                window.with_decoration(|d| d.decorated = true);
                // the guest goes back to the size it showed; the window to following it, or to
                // the size the user gave it
                self.resize_window(&restore.element, restore.size);
                window.set_frame(restore.frame);
            }
            WindowElement::Wayland(w) => {
                if let Some(t) = w.toplevel() {
                    set_toplevel_fullscreen(t, None);
                }
            }
            WindowElement::Layout(_) => {}
        }
        self.space.map_element(restore.element, restore.location, true);
        self.queue_redraw();
    }

    /// Whether `element` is the fullscreen window.
    pub fn is_fullscreen(&self, element: &WindowElement) -> bool {
        restore_is(&self.fullscreen, element)
    }

    /// Re-read `element`'s geometry where it is.
    pub fn remap(&mut self, element: &WindowElement) {
        if let Some(loc) = self.space.element_location(element) {
            self.space.map_element(element.clone(), loc, false);
        }
        self.queue_redraw();
    }
}

fn restore_is(restore: &Option<Restore>, element: &WindowElement) -> bool {
    restore.as_ref().is_some_and(|r| &r.element == element)
}

fn set_toplevel_fullscreen(toplevel: &ToplevelSurface, size: Option<Size<i32, Logical>>) {
    use smithay::reexports::wayland_protocols::xdg::shell::server::xdg_toplevel;
    toplevel.with_pending_state(|s| {
        if size.is_some() {
            s.states.set(xdg_toplevel::State::Fullscreen);
        } else {
            s.states.unset(xdg_toplevel::State::Fullscreen);
        }
        s.size = size;
    });
    toplevel.send_configure();
}
