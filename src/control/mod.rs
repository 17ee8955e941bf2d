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
    /// Count what the process holds: the share group's GL objects ([`crate::renderer::GlObjects`]:
    /// `textures`, `buffers`, `renderbuffers`, `probed`), virglrenderer's live GL contexts
    /// (`virgl_contexts`), open file descriptors (`fds`) and resident memory (`rss_bytes`).
    /// Reply: `{"gl": {...}, "virgl_contexts": N, "fds": N, "rss_bytes": N}`. For leak checks
    /// (scripts/soak.sh); it probes every GL name, so it takes milliseconds.
    Objects,
    /// Open or close the layout view of `guest` (its scanouts arranged as the guest sees them).
    LayoutView {
        /// Name of the guest.
        guest: String,
        /// `true`: open it (nothing when open already); `false`: close it.
        on: bool,
    },
}

pub use crate::scanout::ScaleMode;

mod input;
pub mod keys;
mod listing;

pub use input::*;
pub use listing::{format_layout, format_list, layout_json, layout_svg};

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

/// A reply as its bytes on the wire: `Ok(fields)` becomes `{"ok": true, ...fields}` and a line
/// end, an error `{"ok": false, "error": "..."}`.
pub fn reply_bytes(reply: anyhow::Result<Value>) -> Vec<u8> {
    let value = match reply {
        Ok(Value::Object(mut map)) => {
            map.insert("ok".into(), Value::Bool(true));
            Value::Object(map)
        }
        Ok(other) => json!({ "ok": true, "value": other }),
        Err(e) => json!({ "ok": false, "error": format!("{e:#}") }),
    };
    let mut bytes = serde_json::to_vec(&value).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    bytes.push(b'\n');
    bytes
}
