"""The window cases: scanway nested in an X desktop, a guest resized through its window, a
Wayland client beside a guest, and the guest's hardware cursor."""
import os
import re
import subprocess
import time
from pathlib import Path

import harness as H
from harness import BOOT, CaseFailure, Skip
from cases_display import assert_scanout, scanout_info, size_of  # noqa: F401
from cases_input import wait_events

BACKGROUND = (26, 31, 41)  # scanway's clear colour where no window is
SIMPLE_SHM = 250  # weston-simple-shm's window: 250x250


def wait_client_window(ctx, b, client, title, size=None, timeout=20):
    """The Wayland client `client` (a process) has mapped its window titled `title`, with a
    buffer of `size` (w, h) committed if given (a toplevel is listed, 0x0, before its first
    buffer)."""
    def probe():
        if client.poll() is not None:
            raise CaseFailure(f"the client exited rc={client.returncode} before mapping its window")
        wins = [c for c in b.list(quiet=True).get("clients", []) if c.get("title") == title]
        return any(size is None or (c.get("width"), c.get("height")) == size for c in wins), wins
    wins = H.wait_until(ctx, f"a window titled {title!r}" + (f" of {size[0]}x{size[1]}" if size else "")
                        + " in scanway's list", probe, timeout)
    ctx.log(f"client window {wins}")


def case_nested(ctx):
    """scanway nested in an X desktop (winit under Xvfb) with two guests and one Wayland client
    (weston-simple-shm): all three are windows in the X screen; both guests' pictures are exact
    there, where scanway's listing puts them, and the client's window is painted."""
    if ctx.c_mode:
        raise Skip("needs scanway (QEMU's C backend has no window of its own)")
    n = H.free_x_display()
    xvfb = ctx.procs.spawn("Xvfb", ["Xvfb", f":{n}", "-screen", "0", "3000x1000x24", "-nolisten", "tcp"],
                           stdout=ctx.dir / "xvfb.log")
    end = time.monotonic() + ctx.deadline.left(15)
    while not Path(f"/tmp/.X11-unix/X{n}").exists():
        if xvfb.poll() is not None or time.monotonic() > end:
            raise CaseFailure(f"Xvfb :{n} did not start")
        time.sleep(0.1)
    env = {k: v for k, v in os.environ.items() if k not in ("WAYLAND_DISPLAY", "WAYLAND_SOCKET")}
    env["DISPLAY"] = f":{n}"
    b = ctx.backend({"g0": 1, "g1": 1}, backend="winit", env=env, size="3000x1000", ui=("g0",))
    m = b.out.wait(r"^scanway: wayland socket (\S+)$", ctx.deadline.left(10), what="'wayland socket' line")
    cenv = dict(b.env, WAYLAND_DISPLAY=m.group(1))
    cenv.pop("DISPLAY", None)
    # g0 shows the pattern and prints the input it gets (X input through winit, below)
    g0 = ctx.guest("g0", "g0", "input", dbus=True)
    g1 = ctx.guest("g1", "g1", "pattern", mode="1024x768")
    b.connected("g0")
    b.connected("g1")
    sizes = {"g0": size_of(g0.wait_ready(ctx.deadline.left(BOOT))), "g1": size_of(g1.wait_ready(ctx.deadline.left(BOOT)))}
    client = ctx.procs.spawn("weston-simple-shm", ["weston-simple-shm"], stdout=ctx.dir / "client.log", env=cenv)
    wait_client_window(ctx, b, client, "simple-shm", size=(SIMPLE_SHM, SIMPLE_SHM))
    listing = b.list("ready")
    windows = {name: (assert_scanout(listing, name, 0, sizes[name]).get("window") or {}) for name in sizes}
    clients = listing.get("clients", [])
    if len(clients) != 1:
        raise CaseFailure(f"scanway list: client windows {clients}, expected weston-simple-shm's")
    path = ctx.dir / "x-root.png"
    # The X screen shows what scanway last swapped into its X window: wait for a frame begun
    # after this listing (the guests' READY lines and the client's buffer are in it). `overlay
    # off` (it is off) changes nothing but asks for one; a frame with nothing new to draw
    # swaps nothing, the window already showing it all.
    f0 = listing.get("frames", 0)
    b.ctl("overlay", "off")
    H.wait_frames(ctx, b, f0, what="a frame of scanway's X window after the listing")
    r = subprocess.run(["import", "-display", f":{n}", "-window", "root", "-depth", "8", f"png24:{path}"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                       timeout=ctx.deadline.left(60))
    if r.returncode != 0:
        raise CaseFailure(f"import (X screenshot) failed: {r.stdout.strip()[-200:]}")
    details = []
    for name, win in windows.items():
        # each guest's picture, cut out of the X screen where scanway's listing puts its window
        crop = ctx.dir / f"x-{name}.png"
        geometry = f"{win['width']}x{win['height']}+{win['x']}+{win['y']}"
        r = subprocess.run(["convert", str(path), "-crop", geometry, "+repage", f"png24:{crop}"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise CaseFailure(f"convert -crop failed: {r.stdout.strip()[-200:]}")
        H.check_pattern(ctx, crop, size=sizes[name])
        details.append(f"{name} {sizes[name]} exact at {win['x']},{win['y']}")
    w, h, px = H.read_png_rgb(path)
    cx, cy = clients[0]["x"], clients[0]["y"]
    inside = [(x, y) for y in range(cy, min(cy + SIMPLE_SHM, h)) for x in range(cx, min(cx + SIMPLE_SHM, w))]
    painted = sum(1 for x, y in inside if H.rgb_at(px, w, x, y) != BACKGROUND)
    if not inside or painted < 0.99 * len(inside):
        raise CaseFailure(f"weston-simple-shm's window at {cx},{cy}: {painted}/{len(inside)} pixels painted")
    details.append(f"client painted at {cx},{cy}")

    # X input (xdotool: pointer, click, key) reaches g0 through the winit backend's seat
    g0.wait(r"^GUEST-INPUT-READY\b", ctx.deadline.left(30), "GUEST-INPUT-READY")
    b.wait_ui_linked("g0")
    win, (W, H_) = windows["g0"], (int(v) for v in sizes["g0"].split("x"))
    gx, gy = 640, 400
    # no window manager: give scanway's window the X keyboard focus first
    r = subprocess.run(["xdotool", "search", "--name", "^scanway$", "windowfocus", "mousemove",
                        str(win["x"] + gx), str(win["y"] + gy), "click", "1", "key", "a"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                       timeout=ctx.deadline.left(30))
    if r.returncode != 0:
        raise CaseFailure(f"xdotool failed: {r.stdout.strip()[-200:]}")
    wait_events(ctx, g0, "QEMU Virtio Tablet",
                [(3, 0, gx * 32767 // W), (3, 1, gy * 32767 // H_), (1, 272, 1), (1, 272, 0)], "X pointer")
    wait_events(ctx, g0, "QEMU Virtio Keyboard", [(1, 30, 1), (1, 30, 0)], "X key")
    details.append(f"X pointer, click and key reached g0 (guest pixel {gx},{gy})")
    ctx.procs.stop(client, "weston-simple-shm")
    ctx.finish(b, g0, g1)
    ctx.procs.stop(xvfb, "Xvfb")
    return f"Xvfb :{n}: " + ", ".join(details)


def case_resize(ctx):
    """Resizing a guest window through the control socket resizes the guest: scanway answers
    the guest's display info with the window's size and raises the display-change event
    through QEMU's D-Bus display; the guest (gpu-test follow) switches mode, reports it, and
    scanway's screenshot of the scanout has the new size with the picture exact."""
    if ctx.c_mode:
        raise Skip("needs scanway")
    b = ctx.backend({"g0": 1}, ui=("g0",), size="2560x1440")
    g = ctx.guest("g0", "g0", "follow", dbus=True)
    b.connected("g0")
    line = g.wait_ready(ctx.deadline.left(BOOT))
    b.wait_ui_linked("g0")
    details = [f"started {size_of(line)}"]
    for n, size in enumerate(("1024x768", "1600x900"), start=2):
        before = H.mark_of(b, "g0")
        b.ctl("window", "--guest", "g0", "--size", size)
        g.wait(rf"^GUEST-MODE {size}\b", ctx.deadline.left(30), f"GUEST-MODE {size}")
        # the guest's new picture: the scanout at the new size, flushed since the request
        H.check_flushed(ctx, b, "g0", 0, ctx.dir / f"scanout-{size}.png", g, since=before, size=size)
        s = assert_scanout(b.list(f"mode{n}"), "g0", 0, size)
        window = s.get("window") or {}
        if f"{window.get('width')}x{window.get('height')}" != size:
            raise CaseFailure(f"g0's window is {window}, asked for {size}")
        details.append(f"{size}: guest switched, window and scanout exact")
    # the pointer: a left drag from the window's bottom-right corner resizes it; the guest is
    # asked once, on release
    win = scanout_info(b.list(), "g0", 0)["window"]
    cx, cy = win["x"] + win["width"] - 4, win["y"] + win["height"] - 4
    before = H.mark_of(b, "g0")
    b.ctl("input", f"move:{cx},{cy}", "press:left", f"move:{cx - 160},{cy - 90}", f"move:{cx - 320},{cy - 180}",
          "release:left")
    g.wait(r"^GUEST-MODE 1280x720\b", ctx.deadline.left(30), "GUEST-MODE 1280x720 after the corner drag")
    H.check_flushed(ctx, b, "g0", 0, ctx.dir / "scanout-drag.png", g, since=before, size="1280x720")
    modes = re.findall(r"^GUEST-MODE (\d+x\d+)", g.serial_text(), re.M)
    if modes.count("1280x720") != 1 or modes[-1] != "1280x720":
        raise CaseFailure(f"the drag asked the guest more than once or not last: {modes}")
    details.append("corner drag to 1280x720: one guest mode change, exact")
    # fullscreen: the guest takes the output's size, and goes back to 1280x720 after
    b.ctl("window", "--guest", "g0", "--fullscreen", "on")
    g.wait(r"^GUEST-MODE 2560x1440\b", ctx.deadline.left(30), "GUEST-MODE 2560x1440 in fullscreen")
    b.ctl("window", "--guest", "g0", "--fullscreen", "on")  # already: nothing happens
    b.ctl("window", "--guest", "g0", "--fullscreen", "off")
    g.wait(r"^GUEST-MODE 1280x720\b(?![\s\S]*GUEST-MODE 2560)", ctx.deadline.left(30),
           "GUEST-MODE 1280x720 after fullscreen")
    modes = re.findall(r"^GUEST-MODE (\d+x\d+)", g.serial_text(), re.M)
    if modes[-3:] != ["1280x720", "2560x1440", "1280x720"]:
        raise CaseFailure(f"fullscreen on, on again, off: guest modes {modes}")
    details.append("fullscreen 2560x1440 and back to 1280x720")
    # fit: the window changes, the guest does not
    b.ctl("window", "--guest", "g0", "--scale", "fit", "--size", "800x450")
    modes = re.findall(r"^GUEST-MODE (\d+x\d+)", g.serial_text(), re.M)
    if modes[-1] != "1280x720":
        raise CaseFailure(f"fit mode resized the guest: {modes}")
    s = scanout_info(b.list("fit"), "g0", 0)
    if (s.get("window") or {}).get("width") != 800 or s.get("scale") != "fit" or s.get("width") != 1280:
        raise CaseFailure(f"fit mode: scanout {s}")
    details.append("fit: window 800x450, guest stays 1280x720")
    ctx.finish(b, g)
    return ", ".join(details)




def case_wayland_client(ctx):
    """An ordinary Wayland client (weston-simple-shm: xdg-shell + wl_shm) beside a guest: both
    are windows of scanway's space and show in the output, side by side, not overlapping."""
    if ctx.c_mode:
        raise Skip("needs scanway (a Wayland compositor)")
    b = ctx.backend({"g0": 1}, size="2560x1080")
    m = b.out.wait(r"^scanway: wayland socket (\S+)$", ctx.deadline.left(10), what="'wayland socket' line")
    env = dict(b.env, WAYLAND_DISPLAY=m.group(1))  # and scanway's XDG_RUNTIME_DIR
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_SOCKET", None)
    client = ctx.procs.spawn("weston-simple-shm", ["weston-simple-shm"], stdout=ctx.dir / "client.log", env=env)
    g = ctx.guest("g0", "g0", "pattern")
    b.connected("g0")
    line = g.wait_ready(ctx.deadline.left(BOOT))
    wh = size_of(line)
    wait_client_window(ctx, b, client, "simple-shm", size=(SIMPLE_SHM, SIMPLE_SHM))
    listing = b.list("ready")
    clients = listing.get("clients", [])
    if len(clients) != 1 or clients[0].get("title") != "simple-shm":
        raise CaseFailure(f"scanway list: client windows {clients}, expected one titled 'simple-shm'")
    cx, cy = clients[0]["x"], clients[0]["y"]
    s = assert_scanout(listing, "g0", 0, wh)
    window = s.get("window") or {}
    gx, gy, gw, gh = (window.get(k, 0) for k in ("x", "y", "width", "height"))
    if (gw, gh) != tuple(int(v) for v in wh.split("x")):
        raise CaseFailure(f"scanway list: g0's window {window} is not the guest's {wh}")
    details = [wh, f"client window at {cx},{cy}"]

    # The guest's picture, exact, found in the output where the listing puts its window: it is
    # flushed (READY), the client's buffer committed (its size listed), both windows placed.
    out = ctx.dir / "output.png"
    got = H.shoot_and_check(ctx, lambda p: b.shot_output(p, g), out, locate=True)
    box = H.located(got)
    if box != (gx, gy, gw, gh):
        raise CaseFailure(f"guest picture found at {box} in the output, scanway list says {window}")
    if cx < gx + gw and gx < cx + SIMPLE_SHM and cy < gy + gh and gy < cy + SIMPLE_SHM:
        raise CaseFailure(f"client window {cx},{cy} {SIMPLE_SHM}x{SIMPLE_SHM} overlaps the guest picture "
                          f"{gx},{gy} {gw}x{gh}")
    details.append(f"guest picture exact at {gx},{gy}, no overlap")

    # The client's pixels: weston-simple-shm paints its whole buffer (its unpainted margin is
    # black), never the background colour; just outside it, where no other window is, the
    # background shows.
    w, h, px = H.read_png_rgb(out)

    def at(x, y):
        return H.rgb_at(px, w, x, y)

    def in_guest(x, y):
        return gx <= x < gx + gw and gy <= y < gy + gh
    inside = [(x, y) for y in range(max(cy, 0), min(cy + SIMPLE_SHM, h))
              for x in range(max(cx, 0), min(cx + SIMPLE_SHM, w))]
    painted = sum(1 for x, y in inside if at(x, y) != BACKGROUND)
    if not inside or painted < 0.99 * len(inside):
        raise CaseFailure(f"only {painted} of the client window's {len(inside)} pixels differ from the "
                          f"background {BACKGROUND} (client at {cx},{cy}; see output.png)")
    span = range(SIMPLE_SHM)
    ring = ([(cx - 1, cy + i) for i in span] + [(cx + SIMPLE_SHM, cy + i) for i in span]
            + [(cx + i, cy - 1) for i in span] + [(cx + i, cy + SIMPLE_SHM) for i in span])
    ring = [(x, y) for x, y in ring if 0 <= x < w and 0 <= y < h and not in_guest(x, y)]
    wrong = [(x, y, at(x, y)) for x, y in ring if at(x, y) != BACKGROUND]
    if wrong:
        raise CaseFailure(f"{len(wrong)} of {len(ring)} pixels just outside the client window are not the "
                          f"background, e.g. {wrong[:3]}: the window is not {SIMPLE_SHM}x{SIMPLE_SHM} at {cx},{cy}")
    details.append(f"client painted ({painted}/{len(inside)} px), background around it ({len(ring)} px)")
    rc = ctx.procs.stop(client, "weston-simple-shm")
    ctx.log(f"weston-simple-shm rc={rc}")
    ctx.finish(b, g)
    return ", ".join(details)


CURSOR_RE = (r"^GUEST-CURSOR-READY (\d+)x(\d+) head=(\d+) x=(-?\d+) y=(-?\d+) hot=(\d+),(\d+) "
             r"size=(\d+)x(\d+) plane=(-?\d+),(-?\d+) from=(-?\d+),(-?\d+)")


def cursor_argb(x, y, hot):
    """The guest's cursor picture, (A, R, G, B) premultiplied; keep in sync with
    cursor_argb() in tests/guest/src/gpu-test.c."""
    if x < 48 and y < 48:
        if x in (0, 47) or y in (0, 47):
            return (255, 0xFF, 0xFF, 0xFF)
        if (x, y) == hot:
            return (255, 0xAB, 0xCD, 0xEF)
        return (255, 0x12, 0x34, 0x56)
    if 52 <= x < 60 and 52 <= y < 60:
        return (0x80, 0x80, 0x00, 0x00)
    return (0, 0, 0, 0)


def cursor_expected(pattern_row, y, W, plane, size, hot):
    """Row y of the scanout as shown with the cursor over it (premultiplied "over"), and the
    kind of each cursor pixel on it: {x: "opaque"|"transparent"|"translucent"}."""
    row = bytearray(pattern_row(y))
    kinds = {}
    px, py = plane
    cw, ch = size
    if not py <= y < py + ch:
        return row, kinds
    for cx in range(cw):
        x = px + cx
        if not 0 <= x < W:
            continue
        a, r, g, b = cursor_argb(cx, y - py, hot)
        if a == 255:
            row[3 * x:3 * x + 3] = bytes((r, g, b))
            kinds[x] = "opaque"
        elif a == 0:
            kinds[x] = "transparent"
        else:
            dst = row[3 * x:3 * x + 3]
            row[3 * x:3 * x + 3] = bytes(min(255, round(c + d * (255 - a) / 255)) for c, d in zip((r, g, b), dst))
            kinds[x] = "translucent"
    return row, kinds


def check_cursor_output(ctx, path, win, W, H_, head, plane, size, hot):
    """Compare the scanout's window in an output screenshot with the pattern plus the cursor.
    Opaque, transparent and uncovered pixels must match exactly, translucent ones within 1.
    Returns None when all match, else a one-line reason (and writes crops for a look)."""
    cp = H.check_pattern_module()
    pattern_row = cp.expected_rows(W, H_, head, 0)
    w, h, rows = cp.load(path)
    wx, wy = win["x"], win["y"]
    if wx < 0 or wy < 0 or wx + W > w or wy + H_ > h:
        return f"window {win} is not inside the {w}x{h} output"
    bad = {}
    for y in range(H_):
        want, kinds = cursor_expected(pattern_row, y, W, plane, size, hot)
        got = rows[wy + y][3 * wx:3 * (wx + W)]
        if got == want:
            continue
        for x in range(W):
            g_, w_ = got[3 * x:3 * x + 3], want[3 * x:3 * x + 3]
            if g_ == w_:
                continue
            kind = kinds.get(x, "picture")
            if kind == "translucent" and all(abs(a - b) <= 1 for a, b in zip(g_, w_)):
                continue
            bad.setdefault(kind, []).append((x, y, "#%02X%02X%02X" % tuple(g_), "#%02X%02X%02X" % tuple(w_)))
    if not bad:
        return None
    # where the hot spot's colour (unique in the picture) actually is
    hot_rgb = bytes(cursor_argb(*hot, hot)[1:])
    seen = []
    for y in range(h):
        i = rows[y].find(hot_rgb)
        while i >= 0 and len(seen) < 3:
            if i % 3 == 0:
                seen.append((i // 3 - wx, y - wy))
            i = rows[y].find(hot_rgb, i + 1)
    # crops (actual, expected) around the cursor, 32 px margin, for a look
    px, py = plane
    x0, y0 = max(0, px - 32), max(0, py - 32)
    x1, y1 = min(W, px + size[0] + 32), min(H_, py + size[1] + 32)
    act, exp = bytearray(), bytearray()
    for y in range(y0, y1):
        act += rows[wy + y][3 * (wx + x0):3 * (wx + x1)]
        exp += cursor_expected(pattern_row, y, W, plane, size, hot)[0][3 * x0:3 * x1]
    H.write_ppm(ctx.dir / "cursor-area-actual.ppm", x1 - x0, y1 - y0, act)
    H.write_ppm(ctx.dir / "cursor-area-expected.ppm", x1 - x0, y1 - y0, exp)
    parts = [f"{kind} {len(v)} px wrong (e.g. {', '.join(f'{x},{y} got {g} want {w}' for x, y, g, w in v[:2])})"
             for kind, v in sorted(bad.items())]
    where = ", ".join(f"{x},{y}" for x, y in seen) or "nowhere"
    return (f"{'; '.join(parts)}; the hot spot colour #{hot_rgb.hex().upper()} is at {where} of the window, "
            f"expected {px + hot[0]},{py + hot[1]} (crops: cursor-area-*.ppm)")


def cursor_wire(ctx):
    """The cursor commands scanway received (its debug log): [(is_move, x, y, resource_id)]."""
    try:
        text = (ctx.dir / "scanway.stderr.log").read_text(errors="replace")
    except OSError:
        return []
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    out = []
    for m in re.finditer(r"\bcursor\b.*?\bx=(-?\d+) y=(-?\d+) resource_id=(\d+) is_move=(true|false)", text):
        out.append((m.group(4) == "true", int(m.group(1)), int(m.group(2)), int(m.group(3))))
    return out


def case_cursor(ctx):
    """The guest sets a hardware cursor with the legacy DRM_IOCTL_MODE_CURSOR2 (the kernel makes
    it a cursor-plane update: UPDATE_CURSOR, then MOVE_CURSOR on the cursor queue, positions being
    the image's top-left corner, the hot spot separate).  scanway must draw it over the scanout
    as the guest composed it: hot spot pixel at the guest's pointer position, opaque pixels exact,
    transparent ones showing the picture (the dumb buffer is a B8G8R8X8 resource, its fourth byte
    still the cursor's alpha), translucent ones blended premultiplied; nothing left where it was
    first put; and keep it out of the scanout's own screenshot."""
    if ctx.c_mode:
        raise Skip("needs scanway (QEMU's screendump has no cursor)")
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "scanway=info,scanway::virtio::device=debug,warn")  # the cursor commands
    b = ctx.backend({"g0": 1}, env=env)
    g = ctx.guest("g0", "g0", "cursor")
    b.connected("g0")
    line = g.wait_ready(ctx.deadline.left(BOOT))
    m = re.search(CURSOR_RE, line)
    if not m:
        raise CaseFailure(f"unexpected READY line: {line}")
    W, H_, head, x, y, hx, hy, cw, ch, plx, ply, fx, fy = (int(v) for v in m.groups())
    wh, hot, size, plane = f"{W}x{H_}", (hx, hy), (cw, ch), (plx, ply)
    if (plx + hx, ply + hy) != (x, y):
        raise CaseFailure(f"guest line inconsistent: plane {plane} + hot spot {hot} != {x},{y}")
    H.shoot_and_check(ctx, lambda p: b.shot_scanout("g0", 0, p, g), ctx.dir / "scanout0.png", size=wh)
    details = [wh, "scanout exact without the cursor"]

    out = ctx.dir / "output.png"
    # The cursor queue has no fence: the READY line may come before scanway took the guest's
    # UPDATE_CURSOR and MOVE_CURSOR.  scanway applies a cursor command to its listing and to
    # the window it draws in one step: once the listing shows the cursor where the guest put
    # it, one output screenshot shows it there.
    want = {"x": plx, "y": ply, "hot_x": hx, "hot_y": hy, "width": cw, "height": ch}

    def cursor_set():
        cur = scanout_info(b.list(quiet=True), "g0", 0).get("cursor")
        return bool(cur) and all(cur.get(k) == v for k, v in want.items()), cur
    try:
        H.wait_until(ctx, "scanway list: the guest's cursor", cursor_set, timeout=10)
    except CaseFailure as e:
        wire = cursor_wire(ctx)
        raise CaseFailure(f"{e}, expected {want}" + (f" [wire: {wire[-4:]}]" if wire else ""))
    listing = b.list("ready")
    s = assert_scanout(listing, "g0", 0, wh)
    win = s.get("window")
    if not win:
        raise CaseFailure(f"scanway list shows no window for g0's scanout 0: {s}")
    b.shot_output(out, g)
    why = check_cursor_output(ctx, out, win, W, H_, head, plane, size, hot)
    wire = cursor_wire(ctx)
    ctx.log(f"cursor commands received (is_move, x, y, resource): {wire}")
    if why:
        raise CaseFailure(f"output: {why}" + (f" [wire: {wire[-4:]}]" if wire else ""))
    details.append(f"cursor {cw}x{ch} hot spot {hx},{hy} at {x},{y} (image at {plx},{ply}; first at {fx},{fy}): "
                   f"opaque/transparent pixels and the picture around exact, translucent within 1")
    if wire:
        kinds = ["MOVE" if mv else "UPDATE" for mv, *_ in wire]
        details.append(f"wire: {'+'.join(kinds)}")

    # The host pointer over the window: the guest's cursor image is drawn at once where the
    # pointer is (its hot spot there), with no guest round trip (this guest gets no input).
    # scanway applies an input action before it answers the request, and the moved pointer
    # asks for a redraw of the cursor: once that frame is drawn, the screenshot (the state
    # now) is what the output shows.
    px_, py_ = 200, 150
    f0 = b.list(quiet=True).get("frames", 0)
    b.ctl("input", f"move:{win['x'] + px_},{win['y'] + py_}")
    H.wait_frames(ctx, b, f0, what="the frame the pointer move asked for")
    host_plane = (px_ - hx, py_ - hy)
    b.shot_output(out, g)
    why = check_cursor_output(ctx, out, win, W, H_, head, host_plane, size, hot)
    if why:
        raise CaseFailure(f"cursor at the host pointer {px_},{py_}: {why}")
    details.append(f"drawn at the host pointer {px_},{py_} at once")
    ctx.finish(b, g)
    return ", ".join(details)


