//! The control socket: `scanway list`, `layout` and `screenshot` talk to the running instance.
//!
//! Protocol: the client connects to the Unix stream socket, writes one JSON [`Request`] and a
//! newline, and reads one JSON object back: `{"ok": true, ...}` or `{"ok": false, "error": ".."}`.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::DirBuilderExt, net::UnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Longest request line the server reads (bytes).
pub const MAX_REQUEST: u64 = 64 * 1024;
/// How long either side waits for the other.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A control request.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Guests, scanouts, resources: see [`format_list`] for the fields.
    List,
    /// PNG of one scanout's picture (the scanout's size, cursor excluded) written to `path`.
    /// Reply: `{"size": "WxH", "path": ...}`; an error when the guest or scanout does not exist
    /// or the scanout shows nothing.
    ScreenshotScanout {
        /// Name of the guest (`--guest NAME=...`, or the attached VM's name).
        guest: String,
        /// Scanout index, 0 to the guest's scanout count - 1.
        scanout: u32,
        /// PNG file to write, opened by the compositor process (so absolute, as `scanway
        /// screenshot` sends it).
        path: PathBuf,
    },
    /// PNG of the whole output (everything the user sees) written to `path`.
    /// Reply: `{"size": "WxH", "path": ...}` (the output's size in pixels).
    ScreenshotOutput {
        /// PNG file to write, opened by the compositor process (so absolute).
        path: PathBuf,
    },
    /// Change the window of `guest`'s scanout `scanout`: every field given is applied (scale,
    /// fullscreen, size, position, then focus). An error when the scanout's window is not shown.
    Window {
        /// Name of the guest whose scanout window changes.
        guest: String,
        /// Scanout index of that guest.
        scanout: u32,
        /// New content size, pixels (resize-guest mode: the guest is asked to switch to it).
        size: Option<(u32, u32)>,
        /// New position of the window's content on the output, pixels.
        position: Option<(i32, i32)>,
        /// `true`: cover the output (no title bar); `false`: back to where it was.
        fullscreen: Option<bool>,
        /// New way the scanout fills its window.
        scale: Option<ScaleMode>,
        /// Raise and focus it (keyboard input goes to it).
        focus: bool,
    },
    /// Feed input to the compositor's seat, as if from the backend's devices, in order.
    Input {
        /// The events, applied in order; at most [`MAX_INPUT_ACTIONS`] fit one request.
        actions: Vec<InputAction>,
    },
    /// Press then release `keys` (evdev codes, in order; released in reverse) on `guest`'s
    /// keyboard directly, whatever has focus (e.g. Ctrl+Alt+Delete).
    /// An error when the guest has no link to its VMM's UI ([`crate::compositor::qemu_ui`]).
    SendKeys {
        /// Name of the guest whose keyboard gets the keys.
        guest: String,
        /// evdev codes, pressed in this order.
        keys: Vec<u32>,
    },
    /// Show or hide the per-scanout statistics overlay.
    Overlay {
        /// `true`: show it on every scanout window; `false`: hide it.
        on: bool,
    },
    /// Open or close the layout view of `guest` (its scanouts arranged as the guest sees them).
    LayoutView {
        /// Name of the guest.
        guest: String,
        /// `true`: open it (nothing when open already); `false`: close it.
        on: bool,
    },
}

/// How a guest scanout fills its window.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ScaleMode {
    /// The guest is asked to switch to the window's size (the picture is scaled to fit meanwhile).
    #[default]
    ResizeGuest,
    /// The picture is scaled to fit the window, keeping its aspect ratio.
    Fit,
    /// One guest pixel per output pixel, from the window's top-left corner (clipped).
    #[value(name = "1:1")]
    #[serde(rename = "1:1")]
    OneToOne,
}

/// One input event for [`Request::Input`].
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InputAction {
    /// Move the pointer to output position (x, y), pixels.
    /// Clamped to the bounding box of the outputs (laid out left to right from 0, 0).
    Motion {
        /// Horizontal position, pixels from the left edge of the first output.
        x: i32,
        /// Vertical position, pixels from the top edge of the outputs.
        y: i32,
    },
    /// Press or release a button (evdev code: `BTN_LEFT` 0x110, `BTN_RIGHT` 0x111, `BTN_MIDDLE` 0x112).
    Button {
        /// evdev button code.
        code: u32,
        /// `true`: press; `false`: release.
        pressed: bool,
    },
    /// Press or release a key (evdev code, `linux/input-event-codes.h`).
    Key {
        /// evdev key code (`KEY_A` is 30), not an xkb keycode.
        code: u32,
        /// `true`: press; `false`: release.
        pressed: bool,
    },
    /// Turn the vertical wheel by `notches` (negative: up, away from the user).
    Scroll {
        /// Wheel notches: negative up, positive down (at most 100 either way are turned).
        notches: i32,
    },
}

impl InputAction {
    /// Parse one command-line action: `move:X,Y`, `click:BUTTON`, `press:BUTTON`,
    /// `release:BUTTON` (left, right, middle), `scroll:up|down|N` (wheel notches, negative up),
    /// `key:COMBO` (a tap of e.g. `a`, `slash`, `>` or `ctrl+alt+delete`: pressed in order,
    /// released in reverse), `keydown:KEY`, `keyup:KEY`, `type:TEXT` (each character pressed and
    /// released). Key names and text are resolved through the default keymap, see [`keys`].
    pub fn parse_cli(s: &str) -> anyhow::Result<Vec<InputAction>> {
        Self::parse_cli_with(s, keys::KeyTable::default_keymap)
    }

    /// [`InputAction::parse_cli`] with the key table `table` returns (asked for only by the
    /// key actions).
    pub fn parse_cli_with<'a>(
        s: &str,
        table: impl FnOnce() -> anyhow::Result<&'a keys::KeyTable>,
    ) -> anyhow::Result<Vec<InputAction>> {
        let (verb, arg) = s.split_once(':').ok_or_else(|| anyhow!("`{s}`: expected VERB:ARG"))?;
        let button = |name: &str| match name {
            "left" => Ok(0x110),
            "right" => Ok(0x111),
            "middle" => Ok(0x112),
            _ => Err(anyhow!("`{name}`: a button is left, right or middle")),
        };
        let key = |code, pressed| InputAction::Key { code, pressed };
        Ok(match verb {
            "move" => {
                let (x, y) = arg.split_once(',').ok_or_else(|| anyhow!("`{s}`: expected move:X,Y"))?;
                vec![InputAction::Motion { x: x.trim().parse()?, y: y.trim().parse()? }]
            }
            "click" => {
                let code = button(arg)?;
                vec![InputAction::Button { code, pressed: true }, InputAction::Button { code, pressed: false }]
            }
            "press" => vec![InputAction::Button { code: button(arg)?, pressed: true }],
            "scroll" => vec![InputAction::Scroll {
                notches: match arg {
                    "up" => -1,
                    "down" => 1,
                    n => n.parse().map_err(|_| anyhow!("`{s}`: expected scroll:up, scroll:down or scroll:N"))?,
                },
            }],
            "release" => vec![InputAction::Button { code: button(arg)?, pressed: false }],
            "key" => {
                let codes = table()?.combo(arg)?;
                let down = codes.iter().map(|&code| key(code, true));
                let up = codes.iter().rev().map(|&code| key(code, false));
                down.chain(up).collect()
            }
            // a key whose symbol needs Shift: Shift goes down before it and up after it
            "keydown" => match table()?.key(arg)? {
                keys::Stroke { code, shift: true } => vec![key(keys::KEY_LEFTSHIFT, true), key(code, true)],
                keys::Stroke { code, shift: false } => vec![key(code, true)],
            },
            "keyup" => match table()?.key(arg)? {
                keys::Stroke { code, shift: true } => vec![key(code, false), key(keys::KEY_LEFTSHIFT, false)],
                keys::Stroke { code, shift: false } => vec![key(code, false)],
            },
            "type" => table()?
                .text(arg)?
                .into_iter()
                .flat_map(|stroke| {
                    stroke.codes().map(|code| key(code, true)).chain(stroke.codes().rev().map(|code| key(code, false)))
                })
                .collect(),
            _ => {
                bail!("`{verb}`: unknown input action (move, click, press, release, scroll, key, keydown, keyup, type)")
            }
        })
    }
}

/// Most actions one [`Request::Input`] carries: the longest (a motion to `i32::MIN`) is 46
/// bytes of JSON, so a request of this many stays under [`MAX_REQUEST`].
pub const MAX_INPUT_ACTIONS: usize = 1024;
/// Most key events one [`Request::Input`] of a command carries (one shifted character's
/// presses and releases); see [`KEY_BURST_GAP`].
pub const MAX_KEY_BURST: usize = 4;
/// How long a client waits between two requests of one command (`type:`, `send-keys --type`):
/// at most 200 key events a second, a fast typist's rate. QEMU's virtio keyboard drops the
/// events its guest has no buffer for, and a slow guest (TCG) reads late: at 800 events a
/// second a weston or Xorg session in a TCG guest lost keys of a 16-character burst (its
/// kernel's evdev buffer, 64 events, overflowed: `SYN_DROPPED`).
pub const KEY_BURST_GAP: Duration = Duration::from_millis(20);

/// `actions` as [`Request::Input`]s to send in order, [`KEY_BURST_GAP`] apart: at most
/// [`MAX_INPUT_ACTIONS`] actions and [`MAX_KEY_BURST`] key events each (one, empty, for no
/// actions).
pub fn input_requests(actions: Vec<InputAction>) -> Vec<Request> {
    let mut requests = Vec::new();
    let mut current = Vec::new();
    let mut keys = 0;
    for action in actions {
        let key = matches!(action, InputAction::Key { .. });
        if current.len() == MAX_INPUT_ACTIONS || (key && keys == MAX_KEY_BURST) {
            requests.push(Request::Input { actions: std::mem::take(&mut current) });
            keys = 0;
        }
        keys += usize::from(key);
        current.push(action);
    }
    if !current.is_empty() || requests.is_empty() {
        requests.push(Request::Input { actions: current });
    }
    requests
}

/// Key names and text to evdev codes (`linux/input-event-codes.h`), through an xkb keymap.
///
/// A key name is, in this order:
/// - a physical key by its evdev name (case-insensitive): `ctrl` (`control`, `leftctrl`),
///   `rightctrl`, `shift` (`leftshift`), `rightshift`, `alt` (`leftalt`), `rightalt`
///   (`altgr`), `super` (`meta`, `logo`, `leftmeta`), `rightsuper` (`rightmeta`), `enter`,
///   `esc`, `del`, `pageup`, `pagedown`, `capslock`, `numlock`, `scrolllock`;
/// - one character: `a`, `A`, `/`, `>`, `+` (its keysym, `xkb_utf32_to_keysym`);
/// - an xkb keysym name (`xkbcommon-keysyms.h` without `XKB_KEY_`): `slash`, `period`,
///   `greater`, `F12`, `Return`, `BackSpace`, `KP_Enter`, `XF86AudioMute`, `0x1008ff12`;
///   exact first, then case-insensitive (`f12`, `return`) as `xkb_keysym_from_name` does.
///
/// A keysym becomes the key of the keymap that types it with no modifier or with Shift alone
/// (the lowest keycode; on one key unshifted before shifted: `less` is Shift+comma, not the
/// 102nd key), and evdev code = xkb keycode - 8. The keymap is compiled the way the
/// compositor's seat compiles its own: RMLVO from `XKB_DEFAULT_RULES`, `_MODEL`, `_LAYOUT`,
/// `_VARIANT`, `_OPTIONS`, else xkbcommon's defaults (evdev, pc105, us).
///
/// This runs in the client (`scanway input`, `send-keys`), not in the compositor: every error
/// is reported before anything is sent, and the requests stay evdev codes. Guests read those
/// codes with their own keymap (a guest with a US keymap types what a US keymap says), and
/// Wayland clients with the seat's keymap, which is this one as long as the compositor runs
/// with the same `XKB_DEFAULT_*` as the client.
pub mod keys {
    use std::{collections::HashMap, sync::OnceLock};

    use anyhow::{anyhow, bail};
    use smithay::input::keyboard::{XkbConfig, xkb};

    /// evdev code of the left Shift key (what a symbol that needs Shift is typed with).
    pub const KEY_LEFTSHIFT: u32 = 42;
    /// evdev code of the right Shift key.
    pub const KEY_RIGHTSHIFT: u32 = 54;
    /// Most characters one `type:TEXT` (or `send-keys --type`) types.
    pub const MAX_TEXT: usize = 4096;

    /// Key names that are no keysym names, as evdev codes (`KEY_` names, lowercase).
    const ALIASES: &[(&str, u32)] = &[
        ("esc", 1),
        ("enter", 28),
        ("ctrl", 29),
        ("control", 29),
        ("leftctrl", 29),
        ("shift", KEY_LEFTSHIFT),
        ("leftshift", KEY_LEFTSHIFT),
        ("rightshift", KEY_RIGHTSHIFT),
        ("alt", 56),
        ("leftalt", 56),
        ("capslock", 58),
        ("numlock", 69),
        ("scrolllock", 70),
        ("rightctrl", 97),
        ("rightalt", 100),
        ("altgr", 100),
        ("pageup", 104),
        ("pagedown", 109),
        ("del", 111),
        ("super", 125),
        ("meta", 125),
        ("logo", 125),
        ("leftmeta", 125),
        ("rightsuper", 126),
        ("rightmeta", 126),
    ];

    /// One key press: the key's evdev code, and whether Shift is held around it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Stroke {
        /// evdev code of the key (xkb keycode - 8).
        pub code: u32,
        /// The keysym is on the key's Shift level: [`KEY_LEFTSHIFT`] is held around it.
        pub shift: bool,
    }

    impl Stroke {
        /// The codes to press in order (and release in reverse): Shift first when needed.
        pub fn codes(self) -> impl DoubleEndedIterator<Item = u32> {
            self.shift.then_some(KEY_LEFTSHIFT).into_iter().chain([self.code])
        }
    }

    /// Which key types each keysym of one keymap.
    pub struct KeyTable {
        /// keysym -> the first key (by keycode) typing it unshifted, else shifted
        strokes: HashMap<u32, Stroke>,
        /// The keymap's RMLVO names, for error messages.
        names: String,
    }

    impl KeyTable {
        /// The table of the default keymap (see the module's documentation), compiled once.
        pub fn default_keymap() -> anyhow::Result<&'static KeyTable> {
            static TABLE: OnceLock<Result<KeyTable, String>> = OnceLock::new();
            TABLE
                .get_or_init(|| {
                    let c = XkbConfig::default();
                    KeyTable::from_names(c.rules, c.model, c.layout, c.variant, c.options).map_err(|e| format!("{e:#}"))
                })
                .as_ref()
                .map_err(|e| anyhow!("{e}"))
        }

        /// The table of the keymap compiled from these RMLVO names (an empty one, or `None`
        /// options: `XKB_DEFAULT_*`, else xkbcommon's default).
        pub fn from_names(
            rules: &str,
            model: &str,
            layout: &str,
            variant: &str,
            options: Option<String>,
        ) -> anyhow::Result<KeyTable> {
            let env = |given: &str, var: &str, default: &str| match given {
                "" => std::env::var(var).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.into()),
                given => given.into(),
            };
            let names = format!(
                "{}/{}/{}{}",
                env(rules, "XKB_DEFAULT_RULES", "evdev"),
                env(model, "XKB_DEFAULT_MODEL", "pc105"),
                env(layout, "XKB_DEFAULT_LAYOUT", "us"),
                match env(variant, "XKB_DEFAULT_VARIANT", "").as_str() {
                    "" => String::new(),
                    v => format!("({v})"),
                }
            );
            let context = xkb::Context::new(xkb::CONTEXT_NO_FLAGS);
            let keymap = xkb::Keymap::new_from_names(
                &context,
                rules,
                model,
                layout,
                variant,
                options,
                xkb::KEYMAP_COMPILE_NO_FLAGS,
            )
            .ok_or_else(|| anyhow!("the xkb keymap {names} does not compile (is xkeyboard-config installed?)"))?;
            Ok(KeyTable { strokes: strokes_of(&keymap), names })
        }

        /// The key that types `sym`.
        pub fn stroke(&self, sym: xkb::Keysym) -> Option<Stroke> {
            self.strokes.get(&sym.raw()).copied()
        }

        /// Resolve one key name (see the module's documentation).
        pub fn key(&self, name: &str) -> anyhow::Result<Stroke> {
            let lower = name.to_ascii_lowercase();
            if let Some(&(_, code)) = ALIASES.iter().find(|(alias, _)| *alias == lower) {
                return Ok(Stroke { code, shift: false });
            }
            let sym = keysym_of(name).ok_or_else(|| {
                anyhow!("`{name}`: unknown key name (an xkb keysym name such as `slash` or `F12`, one character, or ctrl, alt, shift, super, esc, enter ...)")
            })?;
            self.stroke(sym).ok_or_else(|| {
                anyhow!(
                    "`{name}` (keysym {}): no key of the keymap {} types it without or with Shift",
                    xkb::keysym_get_name(sym),
                    self.names
                )
            })
        }

        /// `ctrl+alt+delete` -> evdev codes to press in order (and release in reverse), Shift
        /// put before a key whose symbol needs it (`ctrl+greater` is ctrl, shift, period)
        /// unless a Shift is in the combination already. The `+` key is `plus`, or `+` last
        /// (`ctrl++`).
        pub fn combo(&self, s: &str) -> anyhow::Result<Vec<u32>> {
            let names: Vec<&str> = match s.strip_suffix('+') {
                Some("") => vec!["+"],
                Some(head) if head.ends_with('+') => head[..head.len() - 1].split('+').chain(["+"]).collect(),
                _ => s.split('+').collect(),
            };
            let mut codes = Vec::with_capacity(names.len() + 1);
            for name in names {
                let stroke = self.key(name)?;
                if stroke.shift && !codes.iter().any(|c| [KEY_LEFTSHIFT, KEY_RIGHTSHIFT].contains(c)) {
                    codes.push(KEY_LEFTSHIFT);
                }
                codes.push(stroke.code);
            }
            Ok(codes)
        }

        /// The keys that type `text`, one per character (a newline is Return, a tab Tab); at
        /// most [`MAX_TEXT`] characters, and an error (for the whole text) naming the first
        /// character no key types.
        pub fn text(&self, text: &str) -> anyhow::Result<Vec<Stroke>> {
            let n = text.chars().count();
            if n > MAX_TEXT {
                bail!("the text is {n} characters long, the most one action types is {MAX_TEXT}");
            }
            text.chars()
                .enumerate()
                .map(|(i, c)| {
                    let sym = match c {
                        '\n' => xkb::Keysym::Return,
                        c => xkb::utf32_to_keysym(u32::from(c)),
                    };
                    self.stroke(sym).ok_or_else(|| {
                        anyhow!(
                            "character {} of the text, {c:?} (U+{:04X}): no key of the keymap {} types it without or with Shift; nothing typed",
                            i + 1,
                            u32::from(c),
                            self.names
                        )
                    })
                })
                .collect()
        }
    }

    /// The keysym a key name (not an alias) names: one character's, else the keysym name's.
    fn keysym_of(name: &str) -> Option<xkb::Keysym> {
        let mut chars = name.chars();
        if let (Some(c), None) = (chars.next(), chars.next()) {
            let sym = xkb::utf32_to_keysym(u32::from(c));
            if sym != xkb::Keysym::NoSymbol {
                return Some(sym);
            }
        }
        if name.is_empty() || name.contains('\0') {
            return None;
        }
        [xkb::KEYSYM_NO_FLAGS, xkb::KEYSYM_CASE_INSENSITIVE]
            .into_iter()
            .map(|flags| xkb::keysym_from_name(name, flags))
            .find(|&sym| sym != xkb::Keysym::NoSymbol)
    }

    /// Every keysym `keymap` types with no modifier or with Shift alone, and its key: the
    /// lowest keycode, a key's unshifted symbol before its shifted one.
    fn strokes_of(keymap: &xkb::Keymap) -> HashMap<u32, Stroke> {
        let plain = xkb::State::new(keymap);
        let mut shifted = xkb::State::new(keymap);
        let shift = keymap.mod_get_index(xkb::MOD_NAME_SHIFT);
        let states: Vec<(&xkb::State, bool)> = if shift < 32 {
            shifted.update_mask(1 << shift, 0, 0, 0, 0, 0);
            vec![(&plain, false), (&shifted, true)]
        } else {
            vec![(&plain, false)]
        };
        let mut strokes = HashMap::new();
        for raw in keymap.min_keycode().raw().max(8)..=keymap.max_keycode().raw() {
            let keycode = xkb::Keycode::new(raw);
            for &(state, shift) in &states {
                for sym in state.key_get_syms(keycode) {
                    strokes.entry(sym.raw()).or_insert(Stroke { code: raw - 8, shift });
                }
            }
        }
        strokes
    }
}

/// The control socket's default path: `$XDG_RUNTIME_DIR/scanway.sock`. With `create`, a missing
/// runtime directory is made (`/run/user/<uid>`, or `/tmp/scanway-<uid>` when that can't be
/// made) and `XDG_RUNTIME_DIR` is set for the Wayland socket too.
pub fn default_path(create: bool) -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        return Ok(PathBuf::from(dir).join("scanway.sock"));
    }
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let candidates = [PathBuf::from(format!("/run/user/{uid}")), PathBuf::from(format!("/tmp/scanway-{uid}"))];
    if !create {
        return candidates
            .iter()
            .map(|d| d.join("scanway.sock"))
            .find(|p| p.exists())
            .ok_or_else(|| anyhow!("XDG_RUNTIME_DIR is not set and no scanway socket found; pass --control"));
    }
    for dir in &candidates {
        if dir.is_dir() || std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).is_ok() {
            // SAFETY: called at start-up, before any other thread exists.
            unsafe { std::env::set_var("XDG_RUNTIME_DIR", dir) };
            return Ok(dir.join("scanway.sock"));
        }
    }
    bail!("XDG_RUNTIME_DIR is not set and no runtime directory could be created")
}

/// Send `req` to the instance listening on `path` and return its reply (errors become `Err`).
pub fn request(path: &Path, req: &Request) -> anyhow::Result<Value> {
    let mut stream = UnixStream::connect(path)
        .with_context(|| format!("connecting to scanway's control socket {}", path.display()))?;
    stream.set_read_timeout(Some(TIMEOUT * 6))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).context("reading the reply")?;
    let reply: Value = serde_json::from_str(&reply).context("parsing the reply")?;
    if reply.get("ok") == Some(&Value::Bool(true)) {
        Ok(reply)
    } else {
        bail!("{}", reply.get("error").and_then(Value::as_str).unwrap_or("malformed reply"))
    }
}

/// Read one request from a connected client (bounded by [`MAX_REQUEST`] and [`TIMEOUT`]).
pub fn read_request(stream: &UnixStream) -> anyhow::Result<Request> {
    stream.set_read_timeout(Some(TIMEOUT))?;
    let mut line = String::new();
    BufReader::new(std::io::Read::take(stream, MAX_REQUEST)).read_line(&mut line)?;
    serde_json::from_str(&line).context("malformed request")
}

/// Write a reply: `Ok(fields)` becomes `{"ok": true, ...fields}`.
pub fn write_reply(mut stream: &UnixStream, reply: anyhow::Result<Value>) -> std::io::Result<()> {
    stream.set_write_timeout(Some(TIMEOUT))?;
    let mut value = match reply {
        Ok(Value::Object(mut map)) => {
            map.insert("ok".into(), Value::Bool(true));
            Value::Object(map)
        }
        Ok(other) => json!({ "ok": true, "value": other }),
        Err(e) => json!({ "ok": false, "error": format!("{e:#}") }),
    };
    let mut bytes = serde_json::to_vec(&value.take())?;
    bytes.push(b'\n');
    stream.write_all(&bytes)
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("?")
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn i64_of(v: &Value, key: &str) -> i64 {
    v.get(key).and_then(Value::as_i64).unwrap_or(0)
}

fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// Human-readable `scanway list`.
pub fn format_list(reply: &Value) -> String {
    let mut out = String::new();
    for g in array(reply, "guests") {
        let state = if g.get("connected") == Some(&Value::Bool(true)) { "connected" } else { "waiting" };
        let source = match g.get("socket").and_then(Value::as_str) {
            Some(socket) => format!("on {socket}"),
            None => {
                format!("attached by {}", g.get("attached_by").and_then(Value::as_str).unwrap_or("a backend process"))
            }
        };
        out += &format!("guest {} ({state}) {source}\n", str_of(g, "name"));
        match g.get("ui") {
            Some(Value::Object(ui)) if ui.contains_key("linked") => out += "  VMM UI: linked (resize, input)\n",
            Some(Value::Object(ui)) => {
                out += &format!("  VMM UI: failed: {}\n", ui.get("failed").and_then(Value::as_str).unwrap_or("?"))
            }
            Some(Value::String(s)) if s != "none" => out += &format!("  VMM UI: {s}\n"),
            _ => {}
        }
        for s in array(g, "scanouts") {
            if s.get("enabled") == Some(&Value::Bool(true)) {
                out += &format!(
                    "  scanout {}: {}x{} {} resource {} flushes {} uploads {} ({})",
                    u64_of(s, "id"),
                    u64_of(s, "width"),
                    u64_of(s, "height"),
                    str_of(s, "format"),
                    u64_of(s, "resource_id"),
                    u64_of(s, "flush_count"),
                    u64_of(s, "uploads"),
                    str_of(s, "path"),
                );
                if let Some(w) = s.get("window").filter(|w| w.is_object()) {
                    out += &format!(
                        ", window {}x{} at {},{} ({}{})",
                        u64_of(w, "width"),
                        u64_of(w, "height"),
                        i64_of(w, "x"),
                        i64_of(w, "y"),
                        s.get("scale").and_then(Value::as_str).unwrap_or("resize-guest"),
                        if s.get("fullscreen") == Some(&Value::Bool(true)) { ", fullscreen" } else { "" },
                    );
                }
                out.push('\n');
            } else {
                out += &format!("  scanout {}: disabled\n", u64_of(s, "id"));
            }
        }
        let resources = array(g, "resources");
        out += &format!("  resources: {} ({} bytes of host memory)\n", resources.len(), u64_of(g, "host_memory"));
        for r in resources {
            out += &format!(
                "    resource {}: {}x{} {}\n",
                u64_of(r, "id"),
                u64_of(r, "width"),
                u64_of(r, "height"),
                str_of(r, "format")
            );
        }
    }
    for c in array(reply, "clients") {
        let focused = if c.get("focused") == Some(&Value::Bool(true)) { ", focused" } else { "" };
        out += &format!(
            "wayland window \"{}\" {}x{} at {},{}{focused}\n",
            str_of(c, "title"),
            i64_of(c, "width"),
            i64_of(c, "height"),
            i64_of(c, "x"),
            i64_of(c, "y")
        );
    }
    out
}

/// `scanway layout --json`: per guest, its scanouts in guest coordinates and their windows.
pub fn layout_json(reply: &Value) -> Value {
    let guests: Vec<Value> = array(reply, "guests")
        .iter()
        .map(|g| {
            let scanouts: Vec<Value> = array(g, "scanouts")
                .iter()
                .map(|s| {
                    json!({
                        "id": s.get("id"), "enabled": s.get("enabled"),
                        "x": s.get("x"), "y": s.get("y"), "width": s.get("width"), "height": s.get("height"),
                        "format": s.get("format"), "resource_id": s.get("resource_id"), "window": s.get("window"),
                    })
                })
                .collect();
            json!({ "name": g.get("name"), "connected": g.get("connected"), "scanouts": scanouts })
        })
        .collect();
    json!({ "output": reply.get("output"), "guests": guests })
}

/// Human-readable `scanway layout`.
pub fn format_layout(reply: &Value) -> String {
    let layout = layout_json(reply);
    let mut out = String::new();
    if let Some(o) = layout.get("output") {
        out += &format!("output {}x{}\n", u64_of(o, "width"), u64_of(o, "height"));
    }
    for g in array(&layout, "guests") {
        out += &format!("guest {}\n", str_of(g, "name"));
        for s in array(g, "scanouts") {
            if s.get("enabled") != Some(&Value::Bool(true)) {
                out += &format!("  scanout {}: disabled\n", u64_of(s, "id"));
                continue;
            }
            let window = s
                .get("window")
                .map_or(String::from("not shown"), |w| format!("window at {},{}", i64_of(w, "x"), i64_of(w, "y")));
            out += &format!(
                "  scanout {}: {}x{}+{}+{} {} resource {}, {window}\n",
                u64_of(s, "id"),
                u64_of(s, "width"),
                u64_of(s, "height"),
                u64_of(s, "x"),
                u64_of(s, "y"),
                str_of(s, "format"),
                u64_of(s, "resource_id"),
            );
        }
    }
    out
}

/// `scanway layout --svg`: one guest per row of the drawing, each scanout a rectangle at its
/// guest position (scaled 1:8), labelled with its id, size, format and resource.
pub fn layout_svg(reply: &Value) -> String {
    const SCALE: f64 = 8.0;
    const MARGIN: f64 = 20.0;
    const HEADER: f64 = 24.0;
    let layout = layout_json(reply);
    let mut body = String::new();
    let mut y0 = MARGIN;
    let mut width: f64 = 320.0;
    for g in array(&layout, "guests") {
        body += &format!(
            "<text x=\"{MARGIN}\" y=\"{:.0}\" font-size=\"14\" font-weight=\"bold\">guest {}</text>\n",
            y0 + 14.0,
            xml_escape(str_of(g, "name"))
        );
        let mut row_h: f64 = 0.0;
        for s in array(g, "scanouts").iter().filter(|s| s.get("enabled") == Some(&Value::Bool(true))) {
            let (x, y) = (u64_of(s, "x") as f64 / SCALE + MARGIN, u64_of(s, "y") as f64 / SCALE + y0 + HEADER);
            let (w, h) = (u64_of(s, "width") as f64 / SCALE, u64_of(s, "height") as f64 / SCALE);
            body += &format!(
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"#dde6f3\" stroke=\"#345\"/>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">scanout {}: {}x{}+{}+{}</text>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{} resource {}</text>\n",
                x + 4.0,
                y + 14.0,
                u64_of(s, "id"),
                u64_of(s, "width"),
                u64_of(s, "height"),
                u64_of(s, "x"),
                u64_of(s, "y"),
                x + 4.0,
                y + 28.0,
                xml_escape(str_of(s, "format")),
                u64_of(s, "resource_id"),
            );
            width = width.max(x + w + MARGIN);
            row_h = row_h.max(y - y0 - HEADER + h);
        }
        y0 += HEADER + row_h.max(20.0) + MARGIN;
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{y0:.0}\" \
         font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n"
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for req in [
            Request::List,
            Request::ScreenshotScanout { guest: "a".into(), scanout: 1, path: "/x.png".into() },
            Request::ScreenshotOutput { path: "/y.png".into() },
            Request::Window {
                guest: "a".into(),
                scanout: 0,
                size: Some((800, 600)),
                position: None,
                fullscreen: Some(false),
                scale: Some(ScaleMode::OneToOne),
                focus: true,
            },
            Request::Input { actions: vec![InputAction::Motion { x: 1, y: 2 }] },
            Request::SendKeys { guest: "a".into(), keys: vec![29, 56, 111] },
            Request::Overlay { on: true },
            Request::LayoutView { guest: "a".into(), on: false },
        ] {
            let s = serde_json::to_string(&req).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), req);
        }
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"nope"}"#).is_err());
    }

    #[test]
    fn list_and_layout_format() {
        let reply = json!({
            "output": {"width": 1920, "height": 1080},
            "guests": [{"name": "vm", "socket": "/s", "connected": true, "host_memory": 4096,
                "scanouts": [{"id": 0, "enabled": true, "width": 1280, "height": 800, "x": 0, "y": 0,
                    "format": "B8G8R8X8_UNORM", "resource_id": 3, "flush_count": 7, "uploads": 2, "path": "copied",
                    "window": {"x": 10, "y": 20, "width": 1280, "height": 800}},
                    {"id": 1, "enabled": false}],
                "resources": [{"id": 3, "width": 1280, "height": 800, "format": "B8G8R8X8_UNORM"}]}]
        });
        let list = format_list(&reply);
        assert!(list.contains("scanout 0: 1280x800 B8G8R8X8_UNORM resource 3 flushes 7"), "{list}");
        assert!(list.contains("window 1280x800 at 10,20 (resize-guest)"), "{list}");
        assert!(list.contains("scanout 1: disabled"));
        let svg = layout_svg(&reply);
        assert!(svg.starts_with("<svg") && svg.contains("scanout 0: 1280x800+0+0"), "{svg}");
        let layout = format_layout(&reply);
        assert!(layout.contains("scanout 0: 1280x800+0+0 B8G8R8X8_UNORM resource 3, window at 10,20"), "{layout}");
    }
}

#[cfg(test)]
mod input_tests {
    use super::keys::{KeyTable, Stroke};
    use super::*;

    /// The us keymap, whatever XKB_DEFAULT_* says.
    fn us() -> &'static KeyTable {
        static TABLE: std::sync::OnceLock<KeyTable> = std::sync::OnceLock::new();
        TABLE.get_or_init(|| KeyTable::from_names("evdev", "pc105", "us", "", None).unwrap())
    }

    fn plain(code: u32) -> Stroke {
        Stroke { code, shift: false }
    }

    fn shifted(code: u32) -> Stroke {
        Stroke { code, shift: true }
    }

    #[test]
    fn key_names() {
        let t = us();
        for (name, stroke) in [
            ("slash", plain(53)),
            ("/", plain(53)),
            ("period", plain(52)),
            (".", plain(52)),
            ("greater", shifted(52)),
            (">", shifted(52)),
            ("less", shifted(51)),
            ("F12", plain(88)),
            ("Return", plain(28)),
            ("return", plain(28)),
            ("BackSpace", plain(14)),
            ("KP_Enter", plain(96)),
            ("XF86AudioMute", plain(113)),
            ("A", shifted(30)),
            ("plus", shifted(13)),
            ("+", shifted(13)),
            ("space", plain(57)),
            (" ", plain(57)),
            ("0x2f", plain(53)),
        ] {
            assert_eq!(t.key(name).unwrap(), stroke, "{name}");
        }
        let err = format!("{:#}", t.key("nope").unwrap_err());
        assert!(err.contains("`nope`: unknown key name"), "{err}");
        let err = format!("{:#}", t.key("eacute").unwrap_err());
        assert!(err.contains("no key of the keymap evdev/pc105/us"), "{err}");
        assert!(t.key("").is_err() && t.key("a\0b").is_err());
    }

    /// Every name of the hand-written table this replaced gives the code it gave.
    #[test]
    fn old_key_names_unchanged() {
        let t = us();
        let letters = "qwertyuiopasdfghjklzxcvbnm";
        let letter_codes =
            [16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 30, 31, 32, 33, 34, 35, 36, 37, 38, 44, 45, 46, 47, 48, 49, 50];
        let mut old: Vec<(String, u32)> = letters.chars().map(String::from).zip(letter_codes).collect();
        old.extend((1..=9).map(|d| (d.to_string(), d + 1)));
        old.push(("0".into(), 11));
        old.extend((1..=10).map(|n| (format!("f{n}"), 58 + n)));
        old.extend([("f11".into(), 87), ("f12".into(), 88)]);
        for (name, code) in [
            ("esc", 1),
            ("escape", 1),
            ("minus", 12),
            ("equal", 13),
            ("backspace", 14),
            ("tab", 15),
            ("enter", 28),
            ("return", 28),
            ("ctrl", 29),
            ("leftctrl", 29),
            ("control", 29),
            ("shift", 42),
            ("leftshift", 42),
            ("rightshift", 54),
            ("alt", 56),
            ("leftalt", 56),
            ("space", 57),
            ("rightctrl", 97),
            ("rightalt", 100),
            ("altgr", 100),
            ("home", 102),
            ("up", 103),
            ("pageup", 104),
            ("left", 105),
            ("right", 106),
            ("end", 107),
            ("down", 108),
            ("pagedown", 109),
            ("insert", 110),
            ("delete", 111),
            ("del", 111),
            ("super", 125),
            ("meta", 125),
            ("logo", 125),
            ("leftmeta", 125),
        ] {
            old.push((name.into(), code));
        }
        for (name, code) in old {
            assert_eq!(t.key(&name).unwrap(), plain(code), "{name}");
            assert_eq!(t.key(&name.to_uppercase()).unwrap().code, code, "{name}");
        }
        assert_eq!(t.combo("ctrl+alt+delete").unwrap(), vec![29, 56, 111]);
        assert_eq!(t.combo("Ctrl+Alt+Delete").unwrap(), vec![29, 56, 111]);
    }

    #[test]
    fn combos_and_text() {
        let t = us();
        assert_eq!(t.combo("greater").unwrap(), vec![42, 52]);
        assert_eq!(t.combo("ctrl+greater").unwrap(), vec![29, 42, 52]);
        assert_eq!(t.combo("shift+greater").unwrap(), vec![42, 52]);
        assert_eq!(t.combo("rightshift+A").unwrap(), vec![54, 30]);
        assert_eq!(t.combo("ctrl++").unwrap(), vec![29, 42, 13]);
        assert_eq!(t.combo("+").unwrap(), vec![42, 13]);
        for bad in ["ctrl+", "++", "ctrl+nope", ""] {
            assert!(t.combo(bad).is_err(), "{bad}");
        }
        assert_eq!(
            t.text("a/.>B\n\t").unwrap(),
            vec![plain(30), plain(53), plain(52), shifted(52), shifted(48), plain(28), plain(15)]
        );
        let err = format!("{:#}", t.text("ab\u{e9}c").unwrap_err());
        assert!(err.contains("character 3 of the text, '\u{e9}' (U+00E9)") && err.contains("nothing typed"), "{err}");
        assert_eq!(t.text(&"x".repeat(keys::MAX_TEXT)).unwrap().len(), keys::MAX_TEXT);
        assert!(t.text(&"x".repeat(keys::MAX_TEXT + 1)).is_err());
    }

    #[test]
    fn cli_actions() {
        let parse = |s| InputAction::parse_cli_with(s, || Ok(us()));
        assert_eq!(parse("move:10,20").unwrap(), vec![InputAction::Motion { x: 10, y: 20 }]);
        let click = parse("click:left").unwrap();
        assert_eq!(click.len(), 2);
        let k = |code, pressed| InputAction::Key { code, pressed };
        assert_eq!(parse("key:ctrl+c").unwrap(), vec![k(29, true), k(46, true), k(46, false), k(29, false)]);
        assert_eq!(parse("key:greater").unwrap(), vec![k(42, true), k(52, true), k(52, false), k(42, false)]);
        assert_eq!(parse("keydown:>").unwrap(), vec![k(42, true), k(52, true)]);
        assert_eq!(parse("keyup:>").unwrap(), vec![k(52, false), k(42, false)]);
        assert_eq!(parse("keydown:a").unwrap(), vec![k(30, true)]);
        assert_eq!(
            parse("type:a>").unwrap(),
            vec![k(30, true), k(30, false), k(42, true), k(52, true), k(52, false), k(42, false)]
        );
        assert_eq!(parse("type:").unwrap(), vec![]);
        assert!(parse("type:a\u{e9}").is_err());
        assert!(parse("wiggle:1").is_err());
        // pointer actions need no keymap
        let no_keymap = || Err(anyhow!("no keymap"));
        assert!(InputAction::parse_cli_with("move:1,2", no_keymap).is_ok());
        assert!(InputAction::parse_cli_with("key:a", no_keymap).is_err());
    }

    #[test]
    fn input_requests_fit() {
        let worst = vec![InputAction::Motion { x: i32::MIN, y: i32::MIN }; 2 * MAX_INPUT_ACTIONS + 1];
        let requests = input_requests(worst);
        assert_eq!(requests.len(), 3);
        for req in &requests {
            assert!(serde_json::to_vec(req).unwrap().len() < MAX_REQUEST as usize);
        }
        assert_eq!(input_requests(vec![]), vec![Request::Input { actions: vec![] }]);
        // key events go at most MAX_KEY_BURST a request, other actions ride along
        let typed = InputAction::parse_cli_with("type:abcde", || Ok(us())).unwrap();
        let mut actions = vec![InputAction::Motion { x: 1, y: 2 }];
        actions.extend(typed.iter().copied());
        actions.push(InputAction::Scroll { notches: 1 });
        let requests = input_requests(actions.clone());
        let keys_per_request: Vec<usize> = requests
            .iter()
            .map(|r| match r {
                Request::Input { actions } => actions.iter().filter(|a| matches!(a, InputAction::Key { .. })).count(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(keys_per_request.iter().sum::<usize>(), 10);
        assert!(keys_per_request.iter().all(|&n| n <= MAX_KEY_BURST), "{keys_per_request:?}");
        assert_eq!(keys_per_request.len(), 10usize.div_ceil(MAX_KEY_BURST));
        let rejoined: Vec<InputAction> = requests
            .into_iter()
            .flat_map(|r| match r {
                Request::Input { actions } => actions,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(rejoined, actions);
    }
}
