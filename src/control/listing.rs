//! What the CLI prints of the control socket's answers: `scanway list` as text, `scanway
//! layout` as text, JSON and SVG.

use serde_json::{Value, json};

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
    use crate::control::{InputAction, Request, ScaleMode};

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
