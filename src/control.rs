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
    ScreenshotScanout { guest: String, scanout: u32, path: PathBuf },
    /// PNG of the whole output (everything the user sees) written to `path`.
    ScreenshotOutput { path: PathBuf },
    /// Change the window of `guest`'s scanout `scanout`: every field given is applied.
    Window {
        guest: String,
        scanout: u32,
        /// New content size, pixels (resize-guest mode: the guest is asked to switch to it).
        size: Option<(u32, u32)>,
        /// New position of the window's content on the output, pixels.
        position: Option<(i32, i32)>,
        fullscreen: Option<bool>,
        scale: Option<ScaleMode>,
        /// Raise and focus it (keyboard input goes to it).
        focus: bool,
    },
    /// Feed input to the compositor's seat, as if from the backend's devices, in order.
    Input { actions: Vec<InputAction> },
    /// Press then release `keys` (evdev codes, in order; released in reverse) on `guest`'s
    /// keyboard directly, whatever has focus (e.g. Ctrl+Alt+Delete).
    SendKeys { guest: String, keys: Vec<u32> },
    /// Show or hide the per-scanout statistics overlay.
    Overlay { on: bool },
    /// Open or close the layout view of `guest` (its scanouts arranged as the guest sees them).
    LayoutView { guest: String, on: bool },
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
    Motion { x: i32, y: i32 },
    /// Press or release a button (evdev code: `BTN_LEFT` 0x110, `BTN_RIGHT` 0x111, `BTN_MIDDLE` 0x112).
    Button { code: u32, pressed: bool },
    /// Press or release a key (evdev code, `linux/input-event-codes.h`).
    Key { code: u32, pressed: bool },
    /// Turn the vertical wheel by `notches` (negative: up, away from the user).
    Scroll { notches: i32 },
}

impl InputAction {
    /// Parse one command-line action: `move:X,Y`, `click:BUTTON`, `press:BUTTON`,
    /// `release:BUTTON` (left, right, middle), `scroll:up|down|N` (wheel notches, negative up), `key:COMBO` (a tap of e.g. `a` or
    /// `ctrl+alt+delete`: pressed in order, released in reverse), `keydown:KEY`, `keyup:KEY`.
    pub fn parse_cli(s: &str) -> anyhow::Result<Vec<InputAction>> {
        let (verb, arg) = s.split_once(':').ok_or_else(|| anyhow!("`{s}`: expected VERB:ARG"))?;
        let button = |name: &str| match name {
            "left" => Ok(0x110),
            "right" => Ok(0x111),
            "middle" => Ok(0x112),
            _ => Err(anyhow!("`{name}`: a button is left, right or middle")),
        };
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
                let codes = parse_key_combo(arg)?;
                let down = codes.iter().map(|&code| InputAction::Key { code, pressed: true });
                let up = codes.iter().rev().map(|&code| InputAction::Key { code, pressed: false });
                down.chain(up).collect()
            }
            "keydown" => vec![InputAction::Key { code: evdev_key(arg)?, pressed: true }],
            "keyup" => vec![InputAction::Key { code: evdev_key(arg)?, pressed: false }],
            _ => bail!("`{verb}`: unknown input action (move, click, press, release, scroll, key, keydown, keyup)"),
        })
    }
}

/// `ctrl+alt+delete` -> evdev codes, in order.
pub fn parse_key_combo(s: &str) -> anyhow::Result<Vec<u32>> {
    s.split('+').map(evdev_key).collect()
}

/// The evdev code (`linux/input-event-codes.h`) of a key name: letters, digits, `f1`..`f12`,
/// and `enter esc backspace tab space minus equal ctrl alt shift super rightctrl rightalt
/// rightshift delete insert home end pageup pagedown up down left right`.
pub fn evdev_key(name: &str) -> anyhow::Result<u32> {
    const LETTERS: &[u8; 26] = b"qwertyuiopasdfghjklzxcvbnm";
    const LETTER_CODES: [u32; 26] =
        [16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 30, 31, 32, 33, 34, 35, 36, 37, 38, 44, 45, 46, 47, 48, 49, 50];
    let lower = name.to_ascii_lowercase();
    if let [c] = lower.as_bytes() {
        if let Some(i) = LETTERS.iter().position(|l| l == c) {
            return Ok(LETTER_CODES[i]);
        }
        if c.is_ascii_digit() {
            // KEY_1 = 2 ... KEY_9 = 10, KEY_0 = 11
            return Ok(if *c == b'0' { 11 } else { u32::from(c - b'1') + 2 });
        }
    }
    if let Some(n) = lower.strip_prefix('f').and_then(|n| n.parse::<u32>().ok()) {
        match n {
            1..=10 => return Ok(58 + n),
            11 => return Ok(87),
            12 => return Ok(88),
            _ => {}
        }
    }
    Ok(match lower.as_str() {
        "esc" | "escape" => 1,
        "minus" => 12,
        "equal" => 13,
        "backspace" => 14,
        "tab" => 15,
        "enter" | "return" => 28,
        "ctrl" | "leftctrl" | "control" => 29,
        "shift" | "leftshift" => 42,
        "rightshift" => 54,
        "alt" | "leftalt" => 56,
        "space" => 57,
        "rightctrl" => 97,
        "rightalt" | "altgr" => 100,
        "home" => 102,
        "up" => 103,
        "pageup" => 104,
        "left" => 105,
        "right" => 106,
        "end" => 107,
        "down" => 108,
        "pagedown" => 109,
        "insert" => 110,
        "delete" | "del" => 111,
        "super" | "meta" | "logo" | "leftmeta" => 125,
        _ => bail!("`{name}`: unknown key name"),
    })
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
        out += &format!("guest {} ({state}) on {}\n", str_of(g, "name"), str_of(g, "socket"));
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
        out += &format!("wayland window \"{}\" at {},{}\n", str_of(c, "title"), i64_of(c, "x"), i64_of(c, "y"));
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
    use super::*;

    #[test]
    fn key_names() {
        assert_eq!(evdev_key("a").unwrap(), 30);
        assert_eq!(evdev_key("Q").unwrap(), 16);
        assert_eq!(evdev_key("1").unwrap(), 2);
        assert_eq!(evdev_key("0").unwrap(), 11);
        assert_eq!(evdev_key("f1").unwrap(), 59);
        assert_eq!(evdev_key("f12").unwrap(), 88);
        assert_eq!(parse_key_combo("ctrl+alt+delete").unwrap(), vec![29, 56, 111]);
        assert!(evdev_key("nope").is_err());
    }

    #[test]
    fn cli_actions() {
        assert_eq!(InputAction::parse_cli("move:10,20").unwrap(), vec![InputAction::Motion { x: 10, y: 20 }]);
        let click = InputAction::parse_cli("click:left").unwrap();
        assert_eq!(click.len(), 2);
        let tap = InputAction::parse_cli("key:ctrl+c").unwrap();
        assert_eq!(
            tap,
            vec![
                InputAction::Key { code: 29, pressed: true },
                InputAction::Key { code: 46, pressed: true },
                InputAction::Key { code: 46, pressed: false },
                InputAction::Key { code: 29, pressed: false },
            ]
        );
        assert!(InputAction::parse_cli("wiggle:1").is_err());
    }
}
