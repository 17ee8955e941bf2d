//! The compositor: smithay state, backends and windows.
//!
//! [`State`] is the event loop's data, split as niri does into the backend-specific part
//! ([`Backend`]: headless, winit or tty) and the backend-agnostic part ([`Comp`]: Wayland globals,
//! the space of windows, guests, output).
//!
//! Redraw state machine: [`redraw`] (a table of its transitions), one per output: anything
//! visible that changes calls [`Comp::queue_redraw`]. Drawing: [`render`], the one render path
//! every backend (headless, winit, tty) and the screenshots use.

pub mod attach;
pub mod config;
pub mod element;
pub mod guests;
pub mod handlers;
mod headless;
pub mod input;
pub mod layout_view;
pub mod libvirt;
pub mod local_sockets;
pub mod qemu_ui;
pub mod redraw;
pub mod render;
mod requests;
mod startup;
pub mod tty;
mod winit;

#[cfg(test)]
mod tests;

pub use startup::run;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow};
use serde_json::{Value, json};
use smithay::{
    backend::renderer::{
        Bind,
        damage::OutputDamageTracker,
        gles::{GlesRenderbuffer, GlesRenderer},
    },
    desktop::{PopupManager, Space, Window},
    input::{Seat, SeatState},
    output::Output,
    reexports::{
        calloop::{LoopHandle, LoopSignal},
        wayland_server::{DisplayHandle, protocol::wl_surface::WlSurface},
    },
    utils::{Logical, Physical, Point, Scale, Size, Transform},
    wayland::{
        compositor::CompositorState, output::OutputManagerState, selection::data_device::DataDeviceState,
        shell::xdg::XdgShellState, shm::ShmState,
    },
};
use tracing::info;

use self::{
    element::{WindowElement, WindowRenderElement},
    guests::{Guest, lock},
};
use std::rc::Rc;

use crate::virtio::virgl3d::VirglShared;
use crate::{control::Request, renderer, scanout::ScanoutWindow, virtio::device::GpuConfig};

/// Background colour of the output (RGBA, 0..1).
pub const CLEAR_COLOR: [f32; 4] = [0.10, 0.12, 0.16, 1.0];
/// Gap between windows placed side by side (pixels).
const GAP: i32 = 16;
/// Refresh interval of the headless output.
pub const FRAME_INTERVAL: Duration = Duration::from_micros(16_667);

/// The event loop's data.
pub struct State {
    /// The backend showing the output, and its renderer.
    pub backend: Backend,
    /// Everything else: globals, windows, guests.
    pub comp: Comp,
}

/// Where the output is shown.
pub enum Backend {
    /// An offscreen output rendered with EGL (`--backend headless`), one frame at most every
    /// [`FRAME_INTERVAL`].
    Headless(Box<headless::Headless>),
    /// A window in the user's X11 or Wayland desktop (`--backend winit`).
    Winit(Box<winit::Winit>),
    /// The machine's own display through DRM/KMS (`--backend tty`).
    Tty(Box<tty::Tty>),
}

impl Backend {
    fn renderer(&mut self) -> &mut GlesRenderer {
        match self {
            Backend::Headless(h) => &mut h.renderer,
            Backend::Winit(w) => w.backend.renderer(),
            Backend::Tty(t) => &mut t.renderer,
        }
    }
}

pub use redraw::Redraw;

/// Backend-agnostic compositor state.
pub struct Comp {
    /// The Wayland display, for creating globals and inserting clients.
    pub display_handle: DisplayHandle,
    /// The calloop loop every source (sockets, kick eventfds, timers) is inserted into.
    pub loop_handle: LoopHandle<'static, State>,
    /// Stops the event loop (SIGTERM, SIGINT, the quit shortcut, the winit window closing).
    pub loop_signal: LoopSignal,
    /// Every window (Wayland toplevels, guest scanouts, layout views) and every output, in
    /// output pixels; the first output's top-left corner is (0, 0).
    pub space: Space<WindowElement>,
    /// The xdg popups of Wayland clients.
    pub popups: PopupManager,
    /// The primary output: what the headless and winit backends draw, the first connector's
    /// on tty; its mode's size is [`Comp::output_size`].
    pub output: Output,
    /// `wl_compositor` and `wl_subcompositor` globals.
    pub compositor_state: CompositorState,
    /// `xdg_wm_base` global and its toplevels and popups.
    pub xdg_shell_state: XdgShellState,
    /// `wl_shm` global (ARGB8888 and XRGB8888 only).
    pub shm_state: ShmState,
    /// The seat globals (`wl_seat` and its devices).
    pub seat_state: SeatState<State>,
    /// `wl_data_device_manager` global (clipboard and drag and drop between clients).
    pub data_device_state: DataDeviceState,
    /// `seat0`: one keyboard (repeat 200 ms delay, 25 per second) and one pointer.
    pub seat: Seat<State>,
    /// The guests, by index: those of `--guest` first, in order, then those attached later. A
    /// guest is never removed (one whose VMM left waits for a VMM again: on its socket, or the
    /// next attach of that name), so an index stays valid.
    pub guests: Vec<Guest>,
    /// Redraw state machine of each output ([`redraw`]).
    pub redraw: HashMap<Output, Redraw>,
    /// Frames drawn since start (`scanway list` shows it).
    pub frames: u64,
    /// When the compositor started: the clock of input event times and frame callbacks (ms).
    pub start: Instant,
    /// virglrenderer in the compositor's share group, when it initialised (3D for guests).
    pub virgl: Option<Rc<VirglShared>>,
    /// Open connections of the control and attach sockets ([`local_sockets`]).
    pub connections: local_sockets::Connections,
    /// Shortcuts and per-guest settings.
    pub config: config::Config,
    /// The window keyboard input goes to.
    pub focused: Option<WindowElement>,
    /// The focused guest holds the keyboard grab: every key but `release-grab` goes to it.
    pub grabbed: bool,
    /// Keys whose press was a shortcut: their release is swallowed too (evdev codes).
    pub swallowed: Vec<u32>,
    /// Keys pressed in a guest and not yet released there (QEMU key numbers): released when
    /// focus moves away.
    pub guest_keys_down: Vec<(ScanoutWindow, u32)>,
    /// Pointer position on the output, pixels.
    pub pointer_location: Point<f64, Logical>,
    /// A window following the pointer (moved or resized).
    pub grab: Option<input::PointerGrab>,
    /// The fullscreen window and where it was before.
    pub fullscreen: Option<input::Restore>,
    /// The statistics overlay is shown on guest windows.
    pub overlay: bool,
    /// Device settings for guests attached through the attach socket (name set per guest).
    pub guest_template: GpuConfig,
    /// The attach socket, when listening (removed at exit).
    pub attach_socket: Option<PathBuf>,
    /// Where every VMM connection's requests are recorded as fuzz seeds (`--record-commands`).
    pub record_commands: Option<PathBuf>,
    _output_manager_state: OutputManagerState,
}

impl Comp {
    /// Ask for a frame of every output (see [`redraw`]).
    pub fn queue_redraw(&mut self) {
        for redraw in self.redraw.values_mut() {
            redraw.queue();
        }
    }

    /// The Wayland window whose toplevel surface is `surface`.
    pub fn find_wayland_window(&self, surface: &WlSurface) -> Option<Window> {
        self.space.elements().find_map(|e| match e {
            WindowElement::Wayland(w) if w.toplevel().is_some_and(|t| t.wl_surface() == surface) => Some(w.clone()),
            _ => None,
        })
    }

    /// Map a new window: to the right of the rightmost window when it fits in the output,
    /// else below the lowest one (title bars included).
    pub fn place_window(&mut self, window: WindowElement) {
        let output = self.output_size();
        let bbox = smithay::desktop::space::SpaceElement::bbox(&window);
        let mut right = 0;
        let mut bottom = 0;
        for e in self.space.elements() {
            if let Some(loc) = self.space.element_location(e) {
                let b = smithay::desktop::space::SpaceElement::bbox(e);
                right = right.max(loc.x + b.loc.x + b.size.w + GAP);
                bottom = bottom.max(loc.y + b.loc.y + b.size.h + GAP);
            }
        }
        let corner = if right + bbox.size.w <= output.w || right == 0 { (right, 0) } else { (0, bottom) };
        self.space.map_element(window, (corner.0 - bbox.loc.x, corner.1 - bbox.loc.y), true);
        self.queue_redraw();
    }

    /// Remove a scanout's window from the space.
    ///
    /// A scanout goes dark for a moment whenever its guest changes mode, so the window keeps
    /// its focus and fullscreen state and comes back where it was (only a pointer grab ends).
    pub fn unmap_scanout(&mut self, window: &ScanoutWindow) {
        let element = WindowElement::Scanout(window.clone());
        if let Some(location) = self.space.element_location(&element) {
            window.set_last_location(Some(location));
        }
        self.space.unmap_elem(&element);
        if self.grab.as_ref().is_some_and(|g| g.element_is(&element)) {
            self.grab = None;
        }
        self.queue_redraw();
    }

    /// Remove `element` from the space, focus, fullscreen and pointer grab state.
    pub fn forget_window(&mut self, element: &WindowElement) {
        self.space.unmap_elem(element);
        if self.focused.as_ref() == Some(element) {
            self.focused = None;
            self.grabbed = false;
        }
        if self.fullscreen.as_ref().is_some_and(|r| r.element_is(element)) {
            self.fullscreen = None;
        }
        if self.grab.as_ref().is_some_and(|g| g.element_is(element)) {
            self.grab = None;
        }
        self.queue_redraw();
    }

    /// The bounding box of every output in the space, pixels (where the pointer may go).
    pub fn space_size(&self) -> Size<i32, Logical> {
        let (mut w, mut h) = (0, 0);
        for o in self.space.outputs() {
            if let Some(g) = self.space.output_geometry(o) {
                w = w.max(g.loc.x + g.size.w);
                h = h.max(g.loc.y + g.size.h);
            }
        }
        (w.max(1), h.max(1)).into()
    }

    /// Output size in pixels.
    pub fn output_size(&self) -> Size<i32, Physical> {
        self.output.current_mode().map_or((0, 0).into(), |m| m.size)
    }

    /// Hand the fences virglrenderer retired to every guest: their deferred responses go out.
    /// Guests with an isolated 3D worker take their own fences (some may have arrived with
    /// the replies of the commands just run).
    pub fn dispatch_fences(&mut self) {
        let fences = self.virgl.as_ref().map(|shared| shared.virgl.drain_fences()).unwrap_or_default();
        for guest in &self.guests {
            lock(&guest.device).retire_fences(&fences);
        }
    }

    /// Guest `index`'s 3D worker sent something (fences) or went away: answer the fenced
    /// commands, and show a lost worker on the guest's windows.
    pub fn worker_event(&mut self, index: usize) {
        let Some(guest) = self.guests.get(index) else { return };
        let notice = {
            let mut device = lock(&guest.device);
            device.retire_fences(&[]);
            guests::three_d_notice(device.gpu())
        };
        let mut changed = false;
        for window in guest.scanouts.windows() {
            window.with_decoration(|d| {
                changed |= d.notice != notice;
                d.notice = notice.clone();
            });
        }
        if changed {
            self.queue_redraw();
        }
    }

    /// Run guest `index`'s queue after its kick, and show what it changed.
    pub fn process_queue(&mut self, index: usize, queue: usize) {
        self.process_queue_inner(index, queue);
        self.dispatch_fences();
    }

    fn process_queue_inner(&mut self, index: usize, queue: usize) {
        let Some(guest) = self.guests.get_mut(index) else { return };
        let changes = {
            let mut device = lock(&guest.device);
            device.process_queue(queue);
            let events: Vec<_> = device.gpu_mut().drain_events().collect();
            if events.is_empty() {
                return;
            }
            for event in &events {
                if let crate::virtio::device::GpuEvent::ScanoutSet { scanout_id, resource_id, rect } = event {
                    let (w, h) = if *resource_id == 0 { (0, 0) } else { (rect.width, rect.height) };
                    device.announce_scanout(*scanout_id, w, h);
                }
            }
            guest.scanouts.apply(device.gpu_mut(), events)
        };
        for window in changes.unmapped {
            self.unmap_scanout(&window);
        }
        for window in changes.mapped {
            let element = WindowElement::Scanout(window);
            if self.space.elements().any(|e| *e == element) {
                // Resized: stays where it is; the space re-reads its geometry.
                let loc = self.space.element_location(&element).unwrap_or_default();
                self.space.map_element(element, loc, false);
            } else if let WindowElement::Scanout(w) = &element
                && let Some(location) = w.last_location()
            {
                // a scanout that went dark (mode change, reconnect) comes back where it was
                self.space.map_element(element, location, true);
            } else {
                self.place_window(element);
            }
        }
        if changes.redraw {
            self.queue_redraw();
        }
    }

    /// The backend's outputs changed from `before` to `after` (at start, or a connector
    /// hotplug): lay them out side by side, left to right, with a `wl_output` global for each new
    /// one, and unmap those gone. The first is the primary output.
    pub fn set_outputs(&mut self, before: &[Output], after: &[Output]) {
        for o in before.iter().filter(|o| !after.contains(o)) {
            self.space.unmap_output(o);
            self.redraw.remove(o);
        }
        let mut x = 0;
        for o in after {
            if !before.contains(o) {
                let _global = o.create_global::<State>(&self.display_handle);
                self.redraw.insert(o.clone(), Redraw::Queued);
            }
            self.space.map_output(o, (x, 0));
            o.change_current_state(None, None, None, Some((x, 0).into()));
            x += o.current_mode().map_or(0, |m| m.size.w);
        }
        if let Some(first) = after.first() {
            self.output = first.clone();
        }
    }

    /// The index of the guest named `name`.
    pub fn guest_index(&self, name: &str) -> Option<usize> {
        self.guests.iter().position(|g| g.name == name)
    }

    /// The open layout view of guest `name`, if any.
    pub fn layout_view_of(&self, name: &str) -> Option<WindowElement> {
        self.space.elements().find(|e| matches!(e, WindowElement::Layout(l) if l.guest() == name)).cloned()
    }

    /// Open or close the layout view of guest `index`.
    pub fn set_layout_view(&mut self, index: usize, on: bool) {
        let Some(guest) = self.guests.get(index) else { return };
        let name = guest.name.clone();
        match (self.layout_view_of(&name), on) {
            (Some(view), false) => self.forget_window(&view),
            (None, true) => {
                let color = self.config.guest_color(&name);
                let view = layout_view::LayoutView::new(&name, guest.scanouts.windows(), color);
                self.place_window(WindowElement::Layout(view));
            }
            _ => {}
        }
    }
}
