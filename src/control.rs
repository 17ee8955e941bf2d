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
        for s in array(g, "scanouts") {
            if s.get("enabled") == Some(&Value::Bool(true)) {
                out += &format!(
                    "  scanout {}: {}x{} {} resource {} flushes {} uploads {} ({})\n",
                    u64_of(s, "id"),
                    u64_of(s, "width"),
                    u64_of(s, "height"),
                    str_of(s, "format"),
                    u64_of(s, "resource_id"),
                    u64_of(s, "flush_count"),
                    u64_of(s, "uploads"),
                    str_of(s, "path"),
                );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for req in [
            Request::List,
            Request::ScreenshotScanout { guest: "a".into(), scanout: 1, path: "/x.png".into() },
            Request::ScreenshotOutput { path: "/y.png".into() },
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
        assert!(list.contains("scanout 1: disabled"));
        let layout = format_layout(&reply);
        assert!(layout.contains("scanout 0: 1280x800+0+0 B8G8R8X8_UNORM resource 3, window at 10,20"), "{layout}");
    }
}
