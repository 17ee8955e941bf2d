//! The VMM side of a guest's display: QEMU's D-Bus display (`-display dbus,p2p=yes`).
//!
//! Through `vhost-user-gpu-pci` QEMU, not the vhost-user device, owns the display-change event
//! (`VIRTIO_GPU_EVENT_DISPLAY`) and the guest's input devices. scanway reaches both through the
//! D-Bus display interface `org.qemu.Display1` (QEMU's `ui/dbus-display1.xml`):
//!
//! - `Console.SetUIInfo` on the console of a scanout raises the display-change event; the guest
//!   then asks the device (scanway) for display info and EDID, which scanway answers with the
//!   size it asked for (see `Comp::resize_window`).
//! - `Keyboard.Press/Release` (QEMU key numbers, see [`qnum_from_evdev`]) and
//!   `Mouse.SetAbsPosition/Press/Release` (console pixels) reach the guest's input devices.
//!
//! The link is made one of two ways ([`UiLink`]):
//! - over QMP: scanway connects to the VM's QMP socket, passes one end of a socket pair with
//!   `getfd`, asks QEMU to serve D-Bus on it with `add_client` (`protocol=@dbus-display`), and
//!   closes QMP again (so other QMP clients, like a test harness, can use it);
//! - through libvirt, which owns the QMP socket of the VMs it runs: `virDomainOpenGraphicsFD`
//!   on the domain's `<graphics type='dbus'/>` does the same `getfd` + `add_client` and hands
//!   over the descriptor.
//!
//! D-Bus and libvirt calls are blocking, so one worker thread per guest makes them; the event
//! loop only queues [`UiRequest`]s and never waits (libvirt holds a starting domain locked
//! while its vhost-user backend, scanway, must answer QEMU: a libvirt call on the event loop
//! could deadlock both).

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    os::{fd::AsRawFd, unix::net::UnixStream},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        mpsc::{self, Receiver, Sender},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use tracing::{debug, info, warn};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;
use zbus::zvariant::OwnedValue;

use super::libvirt;
use crate::attach::LibvirtDomain;

/// How long the worker keeps trying to reach QMP after the VMM connected.
const QMP_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Destination of method calls (a peer-to-peer connection routes by object path only).
const DEST: &str = "org.qemu";

/// A request for the VMM's UI, by scanout ("head") index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UiRequest {
    /// Ask the guest to switch scanout `head` to `width` x `height` pixels
    /// (`Console.SetUIInfo`; `VIRTIO_GPU_EVENT_DISPLAY`).
    SetSize {
        /// Scanout index, the D-Bus console's `Head`.
        head: u32,
        /// Requested width, pixels (the physical size sent along is for 96 dpi).
        width: u32,
        /// Requested height, pixels.
        height: u32,
    },
    /// Press or release a key: QEMU key number (see [`qnum_from_evdev`]). It goes through
    /// the first console: QEMU routes keys to its active keyboard, whichever console gets them.
    Key {
        /// QEMU key number (PC XT scan code set 1, an 0xE0-prefixed code as 0x80 | code:
        /// Delete, E0 53, is 0xd3).
        qnum: u32,
        /// `true`: `Keyboard.Press`; `false`: `Keyboard.Release`.
        down: bool,
    },
    /// Absolute pointer position on scanout `head`, in scanout pixels (`Mouse.SetAbsPosition`).
    /// Consecutive motions on one head collapse into the last.
    Motion {
        /// Scanout index whose console's absolute pointer moves.
        head: u32,
        /// Pixels from the scanout's left edge.
        x: u32,
        /// Pixels from the scanout's top edge.
        y: u32,
    },
    /// Press or release a button (`Mouse` button values: 0 left, 1 middle, 2 right, 3/4 wheel
    /// up/down, 5 side, 6 extra; see [`dbus_button_from_evdev`]).
    Button {
        /// Scanout index whose console gets the button.
        head: u32,
        /// QEMU `Mouse` button value.
        button: u32,
        /// `true`: `Mouse.Press`; `false`: `Mouse.Release`.
        down: bool,
    },
}

/// What the link reached, for `scanway list`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum UiStatus {
    /// Connecting to QMP or D-Bus.
    #[default]
    Connecting,
    /// Linked: consoles found by head index.
    Linked {
        /// Head (scanout) indices of the graphic consoles QEMU exports, ascending.
        heads: Vec<u32>,
    },
    /// The link failed (the reason); input and resize requests are dropped.
    Failed(String),
}

/// Where a guest's D-Bus display is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UiLink {
    /// The VM's QMP socket (QEMU `-qmp unix:PATH,server=on,wait=off`).
    Qmp(PathBuf),
    /// A libvirt domain with `<graphics type='dbus'/>`.
    Libvirt(LibvirtDomain),
}

impl std::fmt::Display for UiLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UiLink::Qmp(path) => write!(f, "QMP {}", path.display()),
            UiLink::Libvirt(d) => write!(f, "libvirt {} domain {} ({})", d.uri, d.id, d.short_name),
        }
    }
}

/// One guest's link to its VMM's UI. Dropping it ends the worker (after its current call).
pub struct QemuUi {
    tx: Sender<UiRequest>,
    status: Arc<Mutex<UiStatus>>,
}

impl QemuUi {
    /// Start linking to the VM's display through `link` (for guest `guest`, in logs).
    pub fn spawn(guest: &str, link: &UiLink) -> QemuUi {
        let (tx, rx) = mpsc::channel();
        let status = Arc::new(Mutex::new(UiStatus::Connecting));
        let worker_status = status.clone();
        let guest = guest.to_string();
        let link = link.clone();
        let spawned = thread::Builder::new().name(format!("qemu-ui-{guest}")).spawn(move || {
            let set = |s: UiStatus| *worker_status.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = s;
            match Link::connect(&link) {
                Ok(link) => {
                    let mut heads: Vec<u32> = link.consoles.keys().copied().collect();
                    heads.sort_unstable();
                    info!(guest, ?heads, "linked to QEMU's D-Bus display");
                    set(UiStatus::Linked { heads });
                    link.serve(&guest, &rx);
                }
                Err(e) => {
                    warn!(guest, "no link to QEMU's D-Bus display through {link}: {e:#}");
                    set(UiStatus::Failed(format!("{e:#}")));
                }
            }
        });
        if let Err(e) = spawned {
            *status.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                UiStatus::Failed(format!("thread: {e}"));
        }
        QemuUi { tx, status }
    }

    /// Queue `req` (dropped once the link failed or ended).
    pub fn send(&self, req: UiRequest) {
        let _ = self.tx.send(req);
    }

    /// The link's state.
    pub fn status(&self) -> UiStatus {
        self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// A D-Bus connection to QEMU's display and its graphic consoles by head index.
struct Link {
    conn: zbus::blocking::Connection,
    /// head index -> console object path
    consoles: HashMap<u32, String>,
}

impl Link {
    fn connect(link: &UiLink) -> anyhow::Result<Link> {
        let stream = match link {
            UiLink::Qmp(qmp) => dbus_stream_over_qmp(qmp)?,
            UiLink::Libvirt(domain) => dbus_stream_from_libvirt(domain)?,
        };
        let conn = zbus::blocking::connection::Builder::async_io_unix_stream(stream)
            .p2p()
            .build()
            .context("D-Bus handshake with QEMU")?;
        let mut link = Link { conn, consoles: HashMap::new() };
        let ids: Vec<u32> = link.property("/org/qemu/Display1/VM", "org.qemu.Display1.VM", "ConsoleIDs")?;
        for id in ids {
            let path = format!("/org/qemu/Display1/Console_{id}");
            let kind: String = link.property(&path, "org.qemu.Display1.Console", "Type")?;
            if kind != "Graphic" {
                continue;
            }
            let head: u32 = link.property(&path, "org.qemu.Display1.Console", "Head")?;
            link.consoles.entry(head).or_insert(path);
        }
        if link.consoles.is_empty() {
            bail!("QEMU's D-Bus display has no graphic console");
        }
        Ok(link)
    }

    fn property<T>(&self, path: &str, iface: &str, name: &str) -> anyhow::Result<T>
    where
        T: TryFrom<OwnedValue>,
        T::Error: std::fmt::Display,
    {
        let reply = self
            .conn
            .call_method(Some(DEST), path, Some("org.freedesktop.DBus.Properties"), "Get", &(iface, name))
            .with_context(|| format!("{path} {iface}.{name}"))?;
        let value: OwnedValue = reply.body().deserialize().with_context(|| format!("{iface}.{name}"))?;
        T::try_from(value).map_err(|e| anyhow!("{iface}.{name}: {e}"))
    }

    fn call<B>(&self, head: u32, iface: &str, method: &str, body: &B) -> anyhow::Result<()>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        let path = self.consoles.get(&head).ok_or_else(|| anyhow!("no console for head {head}"))?;
        self.conn.call_method(Some(DEST), path.as_str(), Some(iface), method, body)?;
        Ok(())
    }

    /// The first graphic console (keyboard input goes to QEMU's active keyboard whichever
    /// console receives it).
    fn any_head(&self) -> u32 {
        self.consoles.keys().copied().min().unwrap_or(0)
    }

    /// Serve requests until the sender is dropped. Consecutive motions of one head collapse
    /// into the last, so a slow VMM never makes the pointer lag behind.
    fn serve(&self, guest: &str, rx: &Receiver<UiRequest>) {
        let mut failures = 0u32;
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            for (i, req) in batch.iter().enumerate() {
                if let (UiRequest::Motion { head, .. }, Some(UiRequest::Motion { head: next, .. })) =
                    (req, batch.get(i + 1))
                    && head == next
                {
                    continue;
                }
                if let Err(e) = self.execute(*req) {
                    failures += 1;
                    if failures == 1 {
                        warn!(guest, "QEMU's D-Bus display refused {req:?}: {e:#} (further failures at debug level)");
                    } else {
                        debug!(guest, "QEMU's D-Bus display refused {req:?}: {e:#}");
                    }
                }
            }
        }
    }

    fn execute(&self, req: UiRequest) -> anyhow::Result<()> {
        const CONSOLE: &str = "org.qemu.Display1.Console";
        const KEYBOARD: &str = "org.qemu.Display1.Keyboard";
        const MOUSE: &str = "org.qemu.Display1.Mouse";
        match req {
            UiRequest::SetSize { head, width, height } => {
                // Physical size for 96 dpi (the EDID scanway answers with uses the same).
                let mm = |px: u32| u16::try_from(u64::from(px) * 254 / 960).unwrap_or(u16::MAX);
                self.call(head, CONSOLE, "SetUIInfo", &(mm(width), mm(height), 0i32, 0i32, width, height))
            }
            UiRequest::Key { qnum, down } => {
                self.call(self.any_head(), KEYBOARD, if down { "Press" } else { "Release" }, &(qnum,))
            }
            UiRequest::Motion { head, x, y } => self.call(head, MOUSE, "SetAbsPosition", &(x, y)),
            UiRequest::Button { head, button, down } => {
                self.call(head, MOUSE, if down { "Press" } else { "Release" }, &(button,))
            }
        }
    }
}

/// Ask QEMU (QMP at `qmp`) to serve its D-Bus display on a new socket; returns our end.
fn dbus_stream_over_qmp(qmp: &Path) -> anyhow::Result<UnixStream> {
    let stream = retry(&format!("QMP {}", qmp.display()), || UnixStream::connect(qmp))
        .with_context(|| format!("connecting to QMP at {}", qmp.display()))?;
    stream.set_read_timeout(Some(QMP_CONNECT_TIMEOUT))?;
    let mut qmp = Qmp { reader: BufReader::new(stream.try_clone()?), stream };
    qmp.read_message().context("QMP greeting")?;
    qmp.execute(&json!({"execute": "qmp_capabilities"}), None)?;
    let (ours, theirs) = UnixStream::pair().context("socket pair")?;
    let fdname = "scanway-dbus-display";
    qmp.execute(&json!({"execute": "getfd", "arguments": {"fdname": fdname}}), Some(&theirs))?;
    qmp.execute(&json!({"execute": "add_client", "arguments": {"protocol": "@dbus-display", "fdname": fdname}}), None)
        .context("add_client @dbus-display (is QEMU started with -display dbus,p2p=yes?)")?;
    Ok(ours)
}

/// Ask libvirt for a connection to `domain`'s D-Bus display (`virDomainOpenGraphicsFD` on its
/// first `<graphics type='dbus'/>`); retried while the domain is still starting.
fn dbus_stream_from_libvirt(domain: &LibvirtDomain) -> anyhow::Result<UnixStream> {
    let fd = retry(&format!("libvirt graphics of {}", domain.short_name), || open_libvirt_graphics(domain))
        .context("virDomainOpenGraphicsFD")?;
    Ok(UnixStream::from(fd))
}

/// `attempt` until it succeeds or [`QMP_CONNECT_TIMEOUT`] has passed (every 200 ms: the VM may
/// still be starting); the last error otherwise.
fn retry<T, E: std::fmt::Display>(what: &str, mut attempt: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    let deadline = Instant::now() + QMP_CONNECT_TIMEOUT;
    loop {
        match attempt() {
            Err(e) if Instant::now() < deadline => {
                debug!("{what}: {e:#}; retrying");
                thread::sleep(Duration::from_millis(200));
            }
            result => return result,
        }
    }
}

fn open_libvirt_graphics(domain: &LibvirtDomain) -> anyhow::Result<std::os::fd::OwnedFd> {
    let conn = libvirt::Connection::open(&domain.uri).with_context(|| format!("connecting to {}", domain.uri))?;
    let dom = conn.domain_by_id(domain.id).context("looking the domain up")?;
    if !dom.is_active()? {
        bail!("domain not running yet");
    }
    let xml = dom.xml().context("domain XML")?;
    let index = graphics_index(&xml, "dbus")
        .ok_or_else(|| anyhow!("the domain has no <graphics type='dbus'/> (input and resize need it)"))?;
    dom.open_graphics_fd(index).context("opening the D-Bus display")
}

/// Index, among a domain XML's `<graphics>` elements, of the first of type `kind`.
fn graphics_index(xml: &str, kind: &str) -> Option<u32> {
    let single = format!("type='{kind}'");
    let double = format!("type=\"{kind}\"");
    let index = xml.split("<graphics").skip(1).position(|element| {
        let head = element.split('>').next().unwrap_or("");
        head.contains(&single) || head.contains(&double)
    })?;
    u32::try_from(index).ok()
}

/// A minimal QMP client: one command at a time, events skipped.
struct Qmp {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Qmp {
    fn read_message(&mut self) -> anyhow::Result<Value> {
        let mut line = String::new();
        // A QMP message is one JSON object per line; 1 MiB bounds a hostile or broken peer.
        let n = Read::take(&mut self.reader, 1 << 20).read_line(&mut line)?;
        if n == 0 {
            bail!("QMP closed");
        }
        Ok(serde_json::from_str(&line)?)
    }

    /// Send `cmd` (with `fd` as SCM_RIGHTS ancillary data) and wait for its answer.
    fn execute(&mut self, cmd: &Value, fd: Option<&UnixStream>) -> anyhow::Result<Value> {
        let mut bytes = serde_json::to_vec(cmd)?;
        bytes.push(b'\n');
        match fd {
            Some(fd) => {
                let sent = self.stream.send_with_fd(&bytes[..], fd.as_raw_fd())?;
                if sent != bytes.len() {
                    bail!("QMP: short write");
                }
            }
            None => self.stream.write_all(&bytes)?,
        }
        loop {
            let msg = self.read_message()?;
            if let Some(ret) = msg.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = msg.get("error") {
                bail!("QMP {}: {}", cmd["execute"], err["desc"].as_str().unwrap_or("error"));
            }
            // an event: skip
        }
    }
}

/// QEMU's key number ("qnum": the PC XT scan code set 1, with 0xE0-prefixed codes as
/// 0x80 | code) for Linux evdev key code `code` (`linux/input-event-codes.h`). `None` for keys
/// without one. The evdev codes 1..=88 are set-1 scan codes already.
pub fn qnum_from_evdev(code: u32) -> Option<u32> {
    Some(match code {
        1..=88 => code,
        96 => 0x9c,  // KP_ENTER
        97 => 0x9d,  // RIGHTCTRL
        98 => 0xb5,  // KPSLASH
        99 => 0xb7,  // SYSRQ
        100 => 0xb8, // RIGHTALT
        102 => 0xc7, // HOME
        103 => 0xc8, // UP
        104 => 0xc9, // PAGEUP
        105 => 0xcb, // LEFT
        106 => 0xcd, // RIGHT
        107 => 0xcf, // END
        108 => 0xd0, // DOWN
        109 => 0xd1, // PAGEDOWN
        110 => 0xd2, // INSERT
        111 => 0xd3, // DELETE
        113 => 0xa0, // MUTE
        114 => 0xae, // VOLUMEDOWN
        115 => 0xb0, // VOLUMEUP
        119 => 0xc6, // PAUSE
        125 => 0xdb, // LEFTMETA
        126 => 0xdc, // RIGHTMETA
        127 => 0xdd, // COMPOSE (menu)
        _ => return None,
    })
}

/// QEMU's D-Bus `Mouse` button value for evdev button `code` (`BTN_LEFT` 0x110 ...).
pub fn dbus_button_from_evdev(code: u32) -> Option<u32> {
    Some(match code {
        0x110 => 0, // BTN_LEFT
        0x112 => 1, // BTN_MIDDLE
        0x111 => 2, // BTN_RIGHT
        0x113 => 5, // BTN_SIDE
        0x114 => 6, // BTN_EXTRA
        0x151 => 3, // wheel up (super::input::BTN_WHEEL_UP)
        0x150 => 4, // wheel down
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qnum_of_common_keys() {
        assert_eq!(qnum_from_evdev(30), Some(0x1e)); // a
        assert_eq!(qnum_from_evdev(29), Some(0x1d)); // left ctrl
        assert_eq!(qnum_from_evdev(56), Some(0x38)); // left alt
        assert_eq!(qnum_from_evdev(111), Some(0xd3)); // delete: E0 53
        assert_eq!(qnum_from_evdev(103), Some(0xc8)); // up: E0 48
        assert_eq!(qnum_from_evdev(0), None);
        assert_eq!(qnum_from_evdev(0x110), None);
    }

    #[test]
    fn graphics_index_of_dbus() {
        let xml = "<domain><devices><graphics type='vnc' port='-1'/><graphics type='dbus' p2p='yes'>\
                   <gl enable='yes'/></graphics></devices></domain>";
        assert_eq!(graphics_index(xml, "dbus"), Some(1));
        assert_eq!(graphics_index(xml, "vnc"), Some(0));
        assert_eq!(graphics_index("<domain/>", "dbus"), None);
    }

    #[test]
    fn buttons() {
        assert_eq!(dbus_button_from_evdev(0x110), Some(0));
        assert_eq!(dbus_button_from_evdev(0x111), Some(2));
        assert_eq!(dbus_button_from_evdev(0x112), Some(1));
        assert_eq!(dbus_button_from_evdev(1), None);
    }
}
