#!/usr/bin/env python3
"""scanway end-to-end suite: real guests (QEMU, TCG) drawing through virtio-gpu
into scanway, checked pixel-exactly.  Python 3 standard library only.

  tests/e2e/run.py [--only CASE,...] [--backend-bin PATH] [--c-backend [--c-backend-bin PATH]]
                   [--timeout-scale F] [--frames N] [--list] [--no-build-guest]

Each case starts `scanway run --backend headless --control <tmp>/ctl.sock
--guest g0=<tmp>/g0.sock[,outputs=N]` (waits for its "listening" line), boots
the test guest (tests/guest/run-guest.sh --hold 0) against that socket, waits
for the guest's READY/DONE line, takes `scanway screenshot --guest g0 --scanout
N` (checked exactly: the shot is the scanout) and `scanway screenshot --output`
(checked with --locate), quits QEMU over QMP and stops scanway with SIGTERM:
scanway must exit 0 without a panic.

--c-backend: QEMU's C backend (/usr/lib/qemu/vhost-user-gpu) serves the sockets
instead and screenshots come from QMP screendump; validates the guest kit and
this driver.  scanway-only checks (list, connection lines, nested) are skipped.

Logs of case C: target/e2e/C/ (driver steps in case.log, scanway's stdout and
stderr, run-guest logs, serial logs, screenshots, list JSON).  One line per
case, then "N passed, N failed"; exit status 1 on any failure.
"""
import argparse
import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as H  # noqa: E402
import desktop  # noqa: E402  (the desktop-* cases)
from harness import CaseFailure, Skip  # noqa: E402
from libvirt_case import case_libvirt  # noqa: E402  (the libvirt case)

BOOT = 120  # seconds to the READY line (boot is ~5-10 s under TCG here)


def size_of(line):
    m = re.search(r"\b(\d+)x(\d+)\b", line)
    return f"{m.group(1)}x{m.group(2)}"


scanout_info = H.scanout
guest_info = H.guest_entry


def assert_scanout(listing, name, sid, size):
    """The listing agrees with what the guest set: enabled, size, a known resource."""
    s = scanout_info(listing, name, sid)
    w, h = (int(v) for v in size.split("x"))
    if not s.get("enabled") or (s.get("width"), s.get("height")) != (w, h):
        raise CaseFailure(f"scanway list: {name} scanout {sid} is {s}, expected enabled {size}")
    res = {r.get("id"): r for r in guest_info(listing, name).get("resources", [])}
    rid = s.get("resource_id")
    r = res.get(rid)
    if not rid or r is None:
        raise CaseFailure(f"scanway list: {name} scanout {sid} shows resource {rid}, not in resources {sorted(res)}")
    if (r.get("width"), r.get("height")) != (w, h) or s.get("format") != "B8G8R8X8_UNORM":
        raise CaseFailure(f"scanway list: {name} scanout {sid} resource {r} / format {s.get('format')}"
                          f" do not match the guest's {size} XRGB8888 buffer")
    return s


SCANOUT_STATE = H.SCANOUT_STATE


def scanout_state(listing, name, sid, size):
    s = assert_scanout(listing, name, sid, size)
    return {k: s.get(k) for k in SCANOUT_STATE}


def output_check(ctx, b, guest, heads=(0,), frame=0):
    """`scanway screenshot --output`, the picture found with --locate, once: call it after the
    scanout's own check passed (the output shows the same flushed picture, in its window as
    placed when the scanout was set).  With several heads, the first picture found may be any
    of them."""
    path = ctx.dir / "output.png"
    last = None
    b.shot_output(path, guest)
    for head in heads:
        try:
            out = H.check_pattern(ctx, path, head=head, frame=frame, locate=True)
            box = H.located(out)
            return f"output: head {head} at {box[0]},{box[1]}" if box else "output ok"
        except CaseFailure as e:
            last = e
    raise CaseFailure(f"output screenshot: {last}")


# ------------------------------------------------------------------------ cases
def one_picture(ctx, test, mode=None, size=None, expect=None, frames=None, late_flush=False):
    """Boot TEST on g0, check scanout 0 exactly and the output with --locate.  The READY line
    comes after the guest's fenced sync: scanway has taken its flush by then.  late_flush: the
    picture comes with a flush the line is not ordered after (fbdev's damage worker)."""
    b = ctx.backend({"g0": 1}, size=size)
    g = ctx.guest("g0", "g0", test, mode=mode, frames=frames)
    b.connected("g0")
    line = g.wait_ready(ctx.deadline.left(BOOT))
    wh = size_of(line)
    if expect and wh != expect:
        raise CaseFailure(f"guest chose {wh}, expected {expect}: {line}")
    m = re.search(r"picture=(\d+)", line)
    frame = int(m.group(1)) if m else 0
    details = [line.split()[0][6:].lower(), wh]
    listing = b.list("ready")
    if listing is not None:
        s = assert_scanout(listing, "g0", 0, wh)
        if frames and s.get("flush_count", 0) < frames - 1:
            raise CaseFailure(f"scanway list: flush_count {s.get('flush_count')} < {frames - 1} page flips")
        details.append(f"flushes={s.get('flush_count')}")
    shot = lambda: H.shoot_and_check(ctx, lambda p: b.shot_scanout("g0", 0, p, g),  # noqa: E731
                                     ctx.dir / "scanout0.png", frame=frame, size=wh)
    if late_flush:
        H.check_at_flushes(ctx, b, "g0", 0, shot, "scanout 0")
    else:
        H.wait_flushed(ctx, b, "g0", 0, size=wh)
        shot()
    details.append("scanout exact")
    if m:
        details.append(f"frame {frame}")
    details.append(output_check(ctx, b, g, frame=frame))
    fps = H.figures(line).get("fps")
    if fps:
        details.append(f"{fps} fps")
    ctx.finish(b, g)
    return ", ".join(details)


def case_pattern(ctx):
    return one_picture(ctx, "pattern", expect="1280x800")


def case_pattern_1024(ctx):
    return one_picture(ctx, "pattern", mode="1024x768", expect="1024x768")


def case_pattern_1920(ctx):
    # a 1920x1080 scanout is as big as the default output: give the output room
    return one_picture(ctx, "pattern", mode="1920x1080", expect="1920x1080", size="2560x1600")


def case_fbpattern(ctx):
    # the fbdev emulation flushes from a kernel worker, on its own schedule: the guest's READY
    # line is not ordered after that flush, and the console's own flushes before it count the
    # same in scanway's listing, so the picture is checked at each new flush until it is right
    return one_picture(ctx, "fbpattern", expect="1280x800", late_flush=True)


def case_animate(ctx):
    return one_picture(ctx, "animate", frames=ctx.opts.frames)


def case_multihead(ctx):
    # two scanouts side by side need more than the default 1920x1080 output
    b = ctx.backend({"g0": 2}, size="3840x2160")
    g = ctx.guest("g0", "g0", "multihead", outputs=2, force_heads=b.force_heads)
    b.connected("g0")
    line = g.wait_ready(ctx.deadline.left(BOOT))
    heads = dict(re.findall(r"\b(\d+):(\d+x\d+)\b", line))
    if not line.startswith("GUEST-MULTIHEAD-READY heads=2") or set(heads) != {"0", "1"}:
        raise CaseFailure(f"guest did not light both heads: {line}")
    details = [f"heads 0:{heads['0']} 1:{heads['1']}"]
    listing = b.list("ready")
    if listing is not None:
        enabled = [s for s in guest_info(listing, "g0").get("scanouts", []) if s.get("enabled")]
        if len(enabled) != 2:
            raise CaseFailure(f"scanway list shows {len(enabled)} enabled scanouts, expected 2")
        for h in (0, 1):
            assert_scanout(listing, "g0", h, heads[str(h)])
        details.append("list: 2 enabled")
    for h in (0, 1):
        H.shoot_and_check(ctx, lambda p, h=h: b.shot_scanout("g0", h, p, g), ctx.dir / f"scanout{h}.png",
                          head=h, size=heads[str(h)])
    details.append("both scanouts exact")
    details.append(output_check(ctx, b, g, heads=(0, 1)))
    if not ctx.c_mode:
        details.append(check_layout(ctx, b, heads))
    ctx.finish(b, g)
    return ", ".join(details)


def check_layout(ctx, b, heads):
    """scanway layout --json (and --svg) of the 2-output guest: both scanouts in guest
    coordinates, side by side as the device reported them, with format and resource."""
    svg = ctx.dir / "layout.svg"
    layout = json.loads(b.ctl("layout", "--json", "--svg", str(svg)))
    (ctx.dir / "layout.json").write_text(json.dumps(layout, indent=1))
    g = next((g for g in layout.get("guests", []) if g.get("name") == "g0"), None)
    if not g or len(g.get("scanouts", [])) != 2:
        raise CaseFailure(f"layout: {layout}")
    s0, s1 = g["scanouts"]
    w0 = int(heads["0"].split("x")[0])
    for s, h, x in ((s0, "0", 0), (s1, "1", w0)):
        if not s.get("enabled") or f"{s['width']}x{s['height']}" != heads[h] or (s["x"], s["y"]) != (x, 0):
            raise CaseFailure(f"layout scanout {h}: {s}, expected {heads[h]} at {x},0")
        if not s.get("resource_id") or not s.get("format") or not s.get("window"):
            raise CaseFailure(f"layout scanout {h} lacks resource, format or window: {s}")
    if s0["resource_id"] == s1["resource_id"]:
        raise CaseFailure("layout: both scanouts show one resource")
    text = svg.read_text()
    if text.count("<rect") < 3 or "scanout 1:" not in text:
        raise CaseFailure("layout --svg lacks the scanouts")
    details = [f"layout: {heads['0']}+0+0 and {heads['1']}+{w0}+0, svg drawn"]

    # The layout view: both pictures, scaled, side by side in one window.
    b.ctl("layout", "--show", "g0")
    views = b.list("layout-view").get("layout_views", [])
    if len(views) != 1 or views[0].get("guest") != "g0":
        raise CaseFailure(f"layout view not open: {views}")
    v = views[0]
    path = ctx.dir / "layout-view.png"
    b.shot_output(path)
    w, h, px = H.read_png_rgb(path)
    total_w = sum(int(heads[k].split("x")[0]) for k in ("0", "1"))
    k = min(1.0, 960 / total_w)
    bars = [(255, 255, 255), (255, 255, 0), (0, 255, 255), (0, 255, 0),
            (255, 0, 255), (255, 0, 0), (0, 0, 255), (0, 0, 0)]
    bad = []
    x0 = 0
    for head in (0, 1):
        hw, hh = (int(v_) for v_ in heads[str(head)].split("x"))
        for bar in range(8):
            gx, gy = x0 + (bar + 0.5) * hw / 8, 0.7 * hh
            sx, sy = v["x"] + round(gx * k), v["y"] + round(gy * k)
            got = H.rgb_at(px, w, sx, sy)
            want = bars[7 - bar if head % 2 else bar]
            if max(abs(a - b_) for a, b_ in zip(got, want)) > 8:
                bad.append((head, bar, sx, sy, got, want))
        x0 += hw
    if bad:
        raise CaseFailure(f"layout view at {v}: {len(bad)} bars wrong, e.g. {bad[:3]}")
    b.ctl("layout", "--hide", "g0")
    details.append(f"layout view {v['width']}x{v['height']} shows both heads' bars in place")

    # The statistics overlay: flush rate and flush-to-present latency measured, text drawn.
    # The guest is idle: frames go on only because the overlay refreshes its statistics
    # (it once froze after its first frame, its redraw lost in the frame being drawn).
    f0 = b.list().get("frames", 0)
    b.ctl("overlay", "on")
    end = time.monotonic() + ctx.deadline.left(10)
    while b.list().get("frames", 0) < f0 + 10:
        if time.monotonic() > end:
            raise CaseFailure(f"the overlay froze: frames {f0} -> {b.list().get('frames')} in 10 s")
        time.sleep(0.1)
    s0 = scanout_info(b.list("overlay"), "g0", 0)
    stats = s0.get("stats") or {}
    if stats.get("latency_p50_ms") is None or stats.get("latency_p99_ms") is None:
        raise CaseFailure(f"no flush-to-present latency measured: {stats}")
    path = ctx.dir / "overlay.png"
    b.shot_output(path)
    w, h, px = H.read_png_rgb(path)
    win = s0["window"]
    sx, sy = win["x"] + 10, win["y"] + 10  # in the overlay's padding, over the white bar
    got = H.rgb_at(px, w, sx, sy)
    if max(abs(c - 65) for c in got) > 4:
        raise CaseFailure(f"overlay background at {sx},{sy} is {got}, expected ~(65,65,65) (white under 75% black)")
    b.ctl("overlay", "off")
    details.append(f"overlay: refreshing, latency p50 {stats['latency_p50_ms']:.1f} ms p99 {stats['latency_p99_ms']:.1f} ms")
    return ", ".join(details)


def case_reconnect(ctx):
    """g0's QEMU is killed (SIGKILL) and a new QEMU boots on the same socket;
    g1, attached to the same scanway, must not notice.  (A new QEMU, not
    `reconnect-ms`: QEMU 10's vhost-user-gpu-pci cannot use a reconnecting
    chardev, see tests/guest/README.md.)"""
    b = ctx.backend({"g0": 1, "g1": 1})
    g1 = ctx.guest("g1", "g1", "pattern", mode="1024x768")
    g0 = ctx.guest("g0", "g0", "pattern")
    for name in ("g0", "g1"):
        b.connected(name)
    g0.wait_ready(ctx.deadline.left(BOOT))
    g1.wait_ready(ctx.deadline.left(BOOT))
    shot = lambda name, guest, tag, size: H.shoot_and_check(  # noqa: E731
        ctx, lambda p: b.shot_scanout(name, 0, p, guest), ctx.dir / f"{name}-{tag}.png", size=size)
    shot("g0", g0, "first", "1280x800")
    shot("g1", g1, "before", "1024x768")
    before = b.list("before")
    g1_before = scanout_state(before, "g1", 0, "1024x768") if before is not None else None

    g0.kill_qemu()
    b.disconnected("g0")
    details = ["g0 killed"]
    gone = b.list("disconnected")
    if gone is not None:
        g = guest_info(gone, "g0")
        lit = [s for s in g.get("scanouts", []) if s.get("enabled")]
        if g.get("connected") or g.get("resources") or lit:
            raise CaseFailure(f"after SIGKILL scanway still shows g0 connected={g.get('connected')} "
                              f"resources={len(g.get('resources', []))} enabled scanouts={len(lit)}")
        s = scanout_state(gone, "g1", 0, "1024x768")
        if not guest_info(gone, "g1").get("connected") or s != g1_before:
            raise CaseFailure(f"g1 changed while g0 went away: {g1_before} -> {s}")
        details.append("list: g0 disconnected, no scanouts/resources")
    shot("g1", g1, "during", "1024x768")

    b.rearm("g0")  # scanway keeps listening; the C backend exits with its connection
    g0b = ctx.guest("g0-2", "g0", "pattern")
    b.connected("g0", nth=2)
    g0b.wait_ready(ctx.deadline.left(BOOT))
    shot("g0", g0b, "again", "1280x800")
    details.append("g0 back, exact")
    shot("g1", g1, "after", "1024x768")
    after = b.list("after")
    if after is not None:
        assert_scanout(after, "g0", 0, "1280x800")
        s = scanout_state(after, "g1", 0, "1024x768")
        if s != g1_before:
            raise CaseFailure(f"g1's scanout changed across g0's reconnect: {g1_before} -> {s}")
        if b.events("g1", "disconnected") or b.events("g1", "connected") != 1:
            raise CaseFailure("scanway reported g1 reconnecting")
        details.append(f"g1 untouched (flush_count {s.get('flush_count')})")
    else:
        details.append("g1 exact throughout")
    ctx.finish(b, g0b, g1)
    return ", ".join(details)


def case_edid(ctx):
    b = ctx.backend({"g0": 1})
    g = ctx.guest("g0", "g0", "edid")
    b.connected("g0")
    g.wait(r"^GUEST-TEST-EXIT .*$", ctx.deadline.left(BOOT), "GUEST-TEST-EXIT")
    serial = g.serial_text()
    if not re.search(r"^GUEST-TEST-EXIT test=edid rc=0", serial, re.M):
        raise CaseFailure("guest edid test failed: " + re.search(r"^GUEST-TEST-EXIT.*$", serial, re.M).group(0))
    conn = re.search(r"^GUEST-CONNECTOR 0 (\S+) id=\d+ (\S+) modes=(\d+) .*mode=(\d+x\d+)", serial, re.M)
    if not conn or conn.group(2) != "connected" or conn.group(4) != "1280x800":
        raise CaseFailure(f"connector 0 not connected with a 1280x800 preferred mode: {conn and conn.group(0)}")
    m = re.search(r"^GUEST-EDID (\S+) bytes=(\d+) ([0-9a-f]+)\s*$", serial, re.M)
    if not m:
        raise CaseFailure("no EDID on serial")
    edid = bytes.fromhex(m.group(3))
    if len(edid) != int(m.group(2)) or len(edid) % 128:
        raise CaseFailure(f"EDID of {len(edid)} bytes (announced {m.group(2)})")
    path = ctx.dir / "edid.bin"
    path.write_bytes(edid)
    parse = subprocess.run(["edid-decode", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    (ctx.dir / "edid-decode.txt").write_text(parse.stdout)
    if parse.returncode != 0:
        raise CaseFailure(f"edid-decode cannot parse the EDID (rc {parse.returncode})")
    chk = subprocess.run(["edid-decode", "--check", str(path)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    (ctx.dir / "edid-decode-check.txt").write_text(chk.stdout)
    verdict = re.search(r"EDID conformity: (\w+)", chk.stdout)
    details = [f"{m.group(1)} {len(edid)} bytes", f"preferred {conn.group(4)}",
               f"edid-decode --check: {verdict.group(1) if verdict else 'rc %d' % chk.returncode}"]
    if chk.returncode != 0:
        failures = chk.stdout.partition("\nFailures:\n")[2].partition("\nEDID conformity")[0]
        reason = " ".join(ln.strip() for ln in failures.splitlines() if ln.strip())[:300]
        if not ctx.c_mode:
            raise CaseFailure(f"edid-decode --check rejects scanway's EDID: {reason}")
        # QEMU's own EDID (what the C backend serves) is known to fail --check
        details.append(f"(QEMU's EDID; known: {reason})")
    ctx.finish(b, g)
    return ", ".join(details)


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


def input_events(g, device):
    """[(type, code, value)] the guest printed for its input device named `device`."""
    text = g.serial_text()
    m = re.search(rf'^GUEST-INPUT-DEV (event\d+) name="{re.escape(device)}"', text, re.M)
    if not m:
        return []
    return [tuple(int(v) for v in e) for e in
            re.findall(rf"^GUEST-INPUT {m.group(1)} type=(\d+) code=(\d+) value=(-?\d+)", text, re.M)]


def wait_events(ctx, g, device, want, what):
    """Wait until the events `want` appear in order (others may come between)."""
    end = time.monotonic() + ctx.deadline.left(20)
    while True:
        got = input_events(g, device)
        it = iter(got)
        if all(any(e == w for e in it) for w in want):
            return got
        if time.monotonic() > end:
            raise CaseFailure(f"{what}: the guest's {device} saw {got[-12:]}, expected {want} in order")
        time.sleep(0.1)


def check_input(ctx, b, g, details):
    """Pointer motion, a click, the wheel and keys fed to scanway's seat reach guest g0 (booted
    with the `input` test): its evdev devices report them, the absolute position scaled to the
    guest pixel under the pointer.  Keys by xkb keysym name (slash, period, greater) and text
    (type:) arrive as the keymap's keys, Shift around those that need it; text with a character
    no key types is refused whole.  A key held when focus leaves goes up in the guest, and no
    key reaches it after; send-keys reaches it still, with text too (--type)."""
    g.wait(r"^GUEST-INPUT-READY\b", ctx.deadline.left(BOOT), "GUEST-INPUT-READY")
    b.wait_ui_linked("g0")
    s = scanout_info(b.list("ready"), "g0", 0)
    win = s.get("window") or {}
    W, H_ = s["width"], s["height"]
    gx, gy = 300, 200  # guest pixel to point at
    x, y = win["x"] + gx, win["y"] + gy
    b.ctl("input", f"move:{x},{y}", "click:left", "scroll:down", "scroll:up", "key:a", "key:shift+b")
    tablet = wait_events(ctx, g, "QEMU Virtio Tablet",
                         [(3, 0, gx * 32767 // W), (3, 1, gy * 32767 // H_), (1, 272, 1), (1, 272, 0),
                          (2, 8, -1), (2, 8, 1)],
                         "pointer")
    keys = wait_events(ctx, g, "QEMU Virtio Keyboard",
                       [(1, 30, 1), (1, 30, 0), (1, 42, 1), (1, 48, 1), (1, 48, 0), (1, 42, 0)], "keys")
    details += [f"pointer at guest {gx},{gy}, left click, wheel down and up", "keys a, shift+b"]
    if not scanout_info(b.list(), "g0", 0).get("focused"):
        raise CaseFailure("the click did not focus g0's window")
    # keys by keysym name, and text typed through the keymap: '.' is KEY_DOT (52), '>' Shift
    # (42) around it, 'O' Shift around KEY_O, a newline Return (28).  A character no key of
    # the keymap types fails the whole action: nothing of it is typed.
    try:
        b.ctl("input", "type:ls\u00e9")
    except CaseFailure as e:
        if "no key of the keymap" not in str(e):
            raise
    else:
        raise CaseFailure("scanway input type: with an untypable character succeeded")
    text = "ls /dev > O.log\n"
    b.ctl("input", "key:slash", "key:period", "key:greater", f"type:{text}")
    evdev = {"l": 38, "s": 31, " ": 57, "/": 53, "d": 32, "e": 18, "v": 47, ".": 52, "o": 24, "g": 34, "\n": 28}
    shifted = {">": ".", "O": "o"}
    taps = []
    for c in "/.>" + text:
        code = evdev[shifted.get(c, c)]
        taps += [(1, 42, 1), (1, code, 1), (1, code, 0), (1, 42, 0)] if c in shifted else [(1, code, 1), (1, code, 0)]
    wait_events(ctx, g, "QEMU Virtio Keyboard", taps, "keysym names and typed text")
    pressed = [e for e in input_events(g, "QEMU Virtio Keyboard") if e[0] == 1 and e[2] in (0, 1)]
    start = pressed.index((1, 53, 1))  # the first slash: key:slash
    if pressed[start:start + len(taps)] != taps:
        raise CaseFailure(f"key:slash key:period key:greater type:{text!r}: the guest saw "
                          f"{pressed[start:start + len(taps)]}, expected exactly {taps}")
    if any(e[1] in (evdev["l"], evdev["s"]) for e in pressed[:start]):
        raise CaseFailure(f"the failed type: action typed some of its text: {pressed[:start]}")
    details.append(f"keys slash, period, greater and type:{text!r} (Shift only for '>' and 'O')")
    # a click outside every window unfocuses: a key still held goes up in the guest, and keys
    # then reach no guest.  The marker key goes to the guest through send-keys (whatever has
    # focus) after z: once the marker is seen, z would have been seen too.
    b.ctl("input", "keydown:c")
    b.ctl("input", f"move:{win['x'] + W + 50},{win['y'] + H_ + 50}", "click:left", "key:z")
    wait_events(ctx, g, "QEMU Virtio Keyboard", [(1, 46, 1), (1, 46, 0)], "a held key released on focus loss")
    b.ctl("send-keys", "--guest", "g0", "x")
    wait_events(ctx, g, "QEMU Virtio Keyboard", [(1, 45, 1), (1, 45, 0)], "the send-keys marker")
    if any(e[1] == 44 for e in input_events(g, "QEMU Virtio Keyboard")):
        raise CaseFailure("a key reached g0 after focus left its window")
    details.append("a held key released and no keys after focus left")
    # send-keys types text too, straight to the guest: Shift around 'W', none for '/'
    b.ctl("send-keys", "--guest", "g0", "--type", "W/")
    taps = [(1, 42, 1), (1, 17, 1), (1, 17, 0), (1, 42, 0), (1, 53, 1), (1, 53, 0)]
    wait_events(ctx, g, "QEMU Virtio Keyboard", [(1, 45, 0)] + taps, "send-keys --type W/")
    pressed = [e for e in input_events(g, "QEMU Virtio Keyboard") if e[0] == 1 and e[2] in (0, 1)]
    start = len(pressed) - pressed[::-1].index((1, 45, 0))  # after the marker's release
    if pressed[start:start + len(taps)] != taps:
        raise CaseFailure(f"send-keys --type W/: the guest saw {pressed[start:]}, expected exactly {taps}")
    details.append("send-keys --type W/")
    ctx.log(f"tablet events {tablet[:10]}, keyboard events {keys[:12]}")


def case_input(ctx):
    """Pointer moves and clicks and keys fed to scanway's seat (scanway input, the path the
    winit backend's events take) reach the focused guest through QEMU's D-Bus display (see
    check_input). scanway send-keys delivers Ctrl+Alt+Delete."""
    if ctx.c_mode:
        raise Skip("needs scanway")
    b = ctx.backend({"g0": 1}, ui=("g0",))
    g = ctx.guest("g0", "g0", "input", dbus=True)
    b.connected("g0")
    details = []
    check_input(ctx, b, g, details)
    # Ctrl+Alt+Delete: Linux's keyboard handler reboots at once (the default "Boot" binding),
    # often before the test program prints the keys: the kernel's reboot line is the proof
    b.ctl("send-keys", "--guest", "g0", "ctrl+alt+delete")
    g.wait(r"reboot: Restarting system", ctx.deadline.left(20), "the guest's Ctrl+Alt+Delete reboot")
    details.append("send-keys Ctrl+Alt+Delete rebooted the guest")
    # the reboot ends QEMU (-no-reboot)
    g.quit()
    b.disconnected("g0")
    b.stop()
    return ", ".join(details)


def assert_virgl(g):
    """The guest's virtio-gpu driver saw VIRTIO_GPU_F_VIRGL."""
    m = re.search(r"^GUEST-DRM features: (\S+)", g.serial_text(), re.M)
    if not m or m.group(1) != "+virgl":
        raise CaseFailure(f"the guest's device did not offer virgl: {m.group(0) if m else 'no GUEST-DRM line'}")


def case_input_3d(ctx):
    """The input case for a guest with virgl on: QEMU's D-Bus display with GL (harness.DBUS_GL:
    no render node on this host) takes the virgl console, and scanway's seat reaches the guest
    through it exactly as for a 2D guest."""
    if ctx.c_mode:
        raise Skip("needs scanway")
    b = ctx.backend({"g0": 1}, ui_3d=("g0",))
    g = ctx.guest("g0", "g0", "input", dbus="gl")
    b.connected("g0")
    details = []
    check_input(ctx, b, g, details)
    assert_virgl(g)
    details.insert(0, "virgl guest")
    ctx.finish(b, g)
    return ", ".join(details)


def case_resize_3d(ctx):
    """Resize-to-window for a guest with virgl on, through QEMU's D-Bus display with GL: the
    guest (gpu-test follow) switches to the window's size, exact in scanway's screenshot."""
    if ctx.c_mode:
        raise Skip("needs scanway")
    b = ctx.backend({"g0": 1}, ui_3d=("g0",), size="2560x1440")
    g = ctx.guest("g0", "g0", "follow", dbus="gl")
    b.connected("g0")
    line = g.wait_ready(ctx.deadline.left(BOOT))
    b.wait_ui_linked("g0")
    assert_virgl(g)
    details = [f"virgl guest started {size_of(line)}"]
    size = "1024x768"
    before = H.mark_of(b, "g0")
    b.ctl("window", "--guest", "g0", "--size", size)
    g.wait(rf"^GUEST-MODE {size}\b", ctx.deadline.left(30), f"GUEST-MODE {size}")
    H.check_flushed(ctx, b, "g0", 0, ctx.dir / f"scanout-{size}.png", g, since=before, size=size)
    assert_scanout(b.list("resized"), "g0", 0, size)
    details.append(f"{size}: guest switched, scanout exact")
    ctx.finish(b, g)
    return ", ".join(details)


BACKGROUND = (26, 31, 41)  # scanway's clear colour where no window is
SIMPLE_SHM = 250  # weston-simple-shm's window: 250x250


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


GREY = (127, 127, 127, 128)  # kmscube's clear colour, 0.5 grey, rounds either way


def cube_pixels(path):
    """Fraction of the picture that is not kmscube's grey background (the cube)."""
    w, h, px = H.read_png_rgb(path)
    step = 8
    total = cube = 0
    for y in range(0, h, step):
        for x in range(0, w, step):
            r, g, b = H.rgb_at(px, w, x, y)
            total += 1
            if not (r in GREY and g in GREY and b in GREY):
                cube += 1
    return cube / max(total, 1)


def start_kmscube(ctx, name, rootfs):
    return ctx.guest(name, name, "kmscube", frames=1000000, rootfs=rootfs, mem="1G")


def check_cube(ctx, b, g, name):
    """Wait until kmscube renders through virgl; the scanout must be zero-copy and show a cube."""
    line = g.wait(r"^kmscube:\s+renderer: .*$", ctx.deadline.left(BOOT + 60), "kmscube's renderer line").group(0)
    if "virgl" not in line:
        raise CaseFailure(f"{name}: kmscube does not render through virgl: {line.strip()}")
    # kmscube reports its frame count every 2 s: once it has, frames were shown (a fixed
    # pause after the renderer line was too short for a second 3D guest on a loaded machine)
    g.wait(r"^kmscube: Rendered [1-9]", ctx.deadline.left(60), "kmscube's first frame report")
    listing = b.list(f"{name}-cube")
    s = scanout_info(listing, name, 0)
    if s.get("path") != "zero-copy" or s.get("copies_per_frame") != 0:
        raise CaseFailure(f"{name}: scanout 0 is not zero-copy: {s}")
    shot = ctx.dir / f"{name}-scanout0.png"
    b.shot_scanout(name, 0, shot, g)
    frac = cube_pixels(shot)
    if not 0.03 < frac < 0.6:
        raise CaseFailure(f"{name}: {frac:.1%} of the scanout differs from kmscube's grey; no cube in {shot}")
    return f"{name}: virgl, zero-copy, cube covers {frac:.0%}"


def case_kmscube(ctx):
    """kmscube in a guest renders through virgl (Mesa virgl -> SUBMIT_3D -> virglrenderer in
    scanway's share group) and scanway's screenshot shows the cube."""
    if ctx.c_mode:
        raise Skip("needs scanway (virgl)")
    rootfs = H.build_rootfs_3d()
    b = ctx.backend({"g0": 1})
    g = start_kmscube(ctx, "g0", rootfs)
    b.connected("g0")
    detail = check_cube(ctx, b, g, "g0")
    ctx.finish(b, g)
    return detail


def case_kmscube_two(ctx):
    """Two 3D guests at once, both numbering resources from 1, each showing its own cube; and a
    2D guest beside them with its picture exact."""
    if ctx.c_mode:
        raise Skip("needs scanway (virgl)")
    rootfs = H.build_rootfs_3d()
    b = ctx.backend({"g0": 1, "g1": 1, "g2": 1}, size="3840x1080")
    g0 = start_kmscube(ctx, "g0", rootfs)
    g1 = start_kmscube(ctx, "g1", rootfs)
    g2 = ctx.guest("g2", "g2", "pattern")
    details = [check_cube(ctx, b, g0, "g0"), check_cube(ctx, b, g1, "g1")]
    line = g2.wait_ready(ctx.deadline.left(BOOT))
    H.shoot_and_check(ctx, lambda p: b.shot_scanout("g2", 0, p, g2), ctx.dir / "g2-scanout0.png", size=size_of(line))
    listing = b.list("all")
    ids = {n: scanout_info(listing, n, 0).get("resource_id") for n in ("g0", "g1")}
    details.append(f"2D g2 exact beside them; scanout resources (guest ids) {ids}")
    ctx.finish(b, g0, g1, g2)
    return "; ".join(details)


def case_gles_pattern(ctx):
    """Our GLES2 program draws the kit's picture through virgl (GBM/KMS in the guest); the
    zero-copy scanout of the virgl render target must match pixel-exactly (and upright)."""
    if ctx.c_mode:
        raise Skip("needs scanway (virgl)")
    rootfs = H.build_rootfs_3d()
    b = ctx.backend({"g0": 1})
    g = ctx.guest("g0", "g0", "gles-pattern", rootfs=rootfs, mem="1G")
    b.connected("g0")
    line = g.wait_ready(ctx.deadline.left(BOOT + 60))
    if "virgl" not in line:
        raise CaseFailure(f"not rendered through virgl: {line}")
    wh = size_of(line)
    # drmModeSetCrtc returns once the kernel queued SET_SCANOUT (after the render's fence),
    # not once scanway took it: wait for the render target on the scanout (zero-copy; the
    # console's 2D buffer before it has the same size)
    H.wait_flushed(ctx, b, "g0", 0, size=wh, ok=lambda s: s.get("path") == "zero-copy",
                   what="the render target (zero-copy) on scanout 0")
    listing = b.list("ready")
    s = assert_scanout(listing, "g0", 0, wh)
    if s.get("path") != "zero-copy":
        raise CaseFailure(f"scanout 0 is not zero-copy: {s}")
    H.shoot_and_check(ctx, lambda p: b.shot_scanout("g0", 0, p, g), ctx.dir / "scanout0.png", size=wh)
    detail = output_check(ctx, b, g)
    ctx.finish(b, g)
    return f"{wh} through virgl, zero-copy, scanout exact, {detail}"


def case_tty(ctx):
    """scanway on a real KMS device: a VM with QEMU's built-in virtio-gpu-pci (the guest's DRM
    device) boots the 3D root filesystem and runs `scanway run --backend tty` on its console
    (libseat's built-in seatd, udev, libinput, GBM/EGL with Mesa's kms_swrast), then
    weston-simple-shm and wev as Wayland clients. QMP screendump of the VM's display must show
    scanway's output with the client's window; a key sent to the VM (QMP send-key) must reach
    the focused client (wev) through libinput."""
    if ctx.c_mode:
        raise Skip("needs scanway")
    rootfs = H.build_rootfs_3d()
    # scanway's binary on a second disk (label "scanway"), mounted by the guest
    bindir = ctx.tmp / "scanway-disk"
    bindir.mkdir()
    shutil.copy2(ctx.opts.backend_bin, bindir / "scanway")
    disk = ctx.tmp / "scanway.ext4"
    r = subprocess.run(["mke2fs", "-q", "-t", "ext4", "-L", "scanway", "-d", str(bindir), str(disk), "64M"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise CaseFailure(f"mke2fs: {r.stdout.strip()[-200:]}")
    g = ctx.guest("vm", None, "tty", rootfs=rootfs, mem="1G", builtin="virtio-gpu-pci", outputs=2, force_heads=False,
                  qemu_args=["-drive", f"file={disk},if=none,id=swdisk,format=raw,readonly=on",
                             "-device", "virtio-blk-pci,drive=swdisk,addr=0x1e"])
    line = g.wait(r"^GUEST-TTY-READY.*$", ctx.deadline.left(BOOT + 150), "GUEST-TTY-READY").group(0).strip()
    ctx.log(f"vm: {line}")
    windows = re.search(r"^GUEST-TTY-WINDOWS (.*)$", g.serial_text(), re.M)
    if not windows or not re.search(r'wayland window "wev" [^;]*, focused;', windows.group(1)):
        raise CaseFailure(f"wev's window is not focused before the key: {windows.group(0) if windows else 'no line'}")
    def send_keys(*keys):
        q = H.QMP(str(g.qmp))
        try:
            q.cmd("send-key", keys=[{"type": "qcode", "data": k} for k in keys])
        finally:
            q.sock.close()

    def shows_scanway(name):
        """Whether the VM's display (QMP screendump of head 0) shows scanway's output with the
        client: (w, h, why), why None when it does."""
        path = ctx.dir / f"{name}.png"
        g.screendump(0, path)
        w, h, px = H.read_png_rgb(path)

        def at(x, y):
            return H.rgb_at(px, w, x, y)
        inside = [(x, y) for y in range(0, SIMPLE_SHM, 5) for x in range(0, SIMPLE_SHM, 5)]
        painted = sum(1 for x, y in inside if at(x, y) != BACKGROUND)
        corner = at(w - 5, h - 5)
        shown = painted >= 0.99 * len(inside) and corner == BACKGROUND
        return w, h, None if shown else (f"{painted}/{len(inside)} client pixels painted, corner {corner} "
                                         f"(background {BACKGROUND}) (see {path.name})")

    def wait_shows_scanway(name, want, what):
        """Poll shows_scanway until it is `want`; returns its last (w, h, why).  The serial
        lines mark the VT switch (scanway's session pausing, resuming), not the repaint after
        it (the kernel console's, scanway's first frame back), and QEMU's built-in
        virtio-gpu tells nothing of when its display changed (no flush counter, no QMP
        event): a deadline-bounded poll of the picture is all there is."""
        def probe():
            w, h, why = shows_scanway(name)
            return (why is None) == want, (w, h, why)
        return H.wait_until(ctx, what, probe, timeout=15)

    # GUEST-TTY-READY comes after GUEST-TTY-FRAMES: 5 s of scanway's page flips (counted from
    # its listing inside the guest) with both clients mapped, so the display shows them now
    fl = re.search(r"^GUEST-TTY-FRAMES .*$", g.serial_text(), re.M)
    if not fl or int(H.figures(fl.group(0)).get("frames", 0)) == 0:
        raise CaseFailure(f"scanway drew no frames with the clients mapped: {fl.group(0) if fl else 'no line'}")
    w, h, why = shows_scanway("screendump")
    if why:
        raise CaseFailure(f"the VM's display does not show scanway with the client: {why}")
    details = [f"{w}x{h} KMS output shows weston-simple-shm at 0,0 over scanway's background"]
    # the second head, forced on inside the guest after scanway started: udev reports the
    # change, scanway adds an output there (to the right of the first; no window: background)
    m = re.search(r"^GUEST-TTY-HOTPLUG (.*)$", g.serial_text(), re.M)
    if not m or "output Virtual-2" not in m.group(1):
        raise CaseFailure(f"no second output after the connector hotplug: {m.group(0) if m else 'no line'}")
    path = ctx.dir / "screendump-head1.png"
    g.screendump(1, path)
    w1, h1, px = H.read_png_rgb(path)
    samples = [H.rgb_at(px, w1, x, y) for y in range(10, h1, h1 // 7) for x in range(10, w1, w1 // 7)]
    # the clear colour 0.10, 0.12, 0.16 rounds either way
    if any(max(abs(a - b_) for a, b_ in zip(c, BACKGROUND)) > 1 for c in samples):
        raise CaseFailure(f"head 1 ({w1}x{h1}) does not show scanway's background: {set(samples)}")
    details.append(f"hotplugged head 1 driven as a second output ({m.group(1).split(': ')[1].strip()})")
    fps = H.figures(fl.group(0)).get("fps")
    if fps:
        details.append(f"{fps} page flips/s with the client animating")
    send_keys("a")
    g.wait(r"^GUEST-WEV .*sym: a\b", ctx.deadline.left(30), "wev reporting the key")
    details.append("QMP send-key a reached wev through libinput")

    # VT switching: Ctrl+Alt+F2 through libinput makes scanway switch VTs (its session pauses,
    # the text console shows); Ctrl+Alt+F1, handled by the kernel's console there, switches
    # back, the session resumes and scanway's output is back.
    send_keys("ctrl", "alt", "f2")
    g.wait(r"^GUEST-SCANWAY .*session paused", ctx.deadline.left(30), "scanway's session pausing on Ctrl+Alt+F2")
    wait_shows_scanway("vt2", False, "the VM's display leaving scanway's output after Ctrl+Alt+F2")
    send_keys("ctrl", "alt", "f1")
    g.wait(r"^GUEST-SCANWAY .*session active again", ctx.deadline.left(30), "scanway's session resuming")
    wait_shows_scanway("vt1", True, "scanway's output coming back on VT 1")
    details.append("Ctrl+Alt+F2 left scanway's VT, Ctrl+Alt+F1 brought its output back")
    ctx.log(g.serial_text()[-3000:])
    g.quit()
    return ", ".join(details)


CASES = [
    ("pattern", case_pattern, 150),
    ("pattern-1024x768", case_pattern_1024, 150),
    ("pattern-1920x1080", case_pattern_1920, 150),
    ("fbpattern", case_fbpattern, 150),
    ("multihead", case_multihead, 150),
    ("animate", case_animate, 200),
    ("reconnect", case_reconnect, 300),
    ("edid", case_edid, 150),
    ("nested", case_nested, 150),
    ("wayland-client", case_wayland_client, 150),
    ("cursor", case_cursor, 150),
    ("resize", case_resize, 200),
    ("input", case_input, 200),
    ("input-3d", case_input_3d, 200),
    ("resize-3d", case_resize_3d, 200),
    ("kmscube", case_kmscube, 300),
    ("gles-pattern", case_gles_pattern, 300),
    ("kmscube-two-guests", case_kmscube_two, 400),
    ("tty", case_tty, 400),
    ("libvirt", case_libvirt, 480),
    ("desktop-weston", desktop.case_desktop_weston, 300),
    ("desktop-xorg", desktop.case_desktop_xorg, 300),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated case names (shell patterns allowed)")
    ap.add_argument("--backend-bin", default=str(H.DEFAULT_SCANWAY), help="scanway binary (default %(default)s)")
    ap.add_argument("--c-backend", action="store_true", help="use QEMU's C backend instead of scanway")
    ap.add_argument("--c-backend-bin", default=H.C_BACKEND_BIN)
    ap.add_argument("--frames", type=int, default=60, help="animate case frames (default %(default)s)")
    ap.add_argument("--timeout-scale", type=float, default=float(os.environ.get("E2E_TIMEOUT_SCALE", "1")))
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--no-build-guest", action="store_true", help="do not run tests/guest/build-guest.sh")
    opts = ap.parse_args()

    if opts.list:
        print("\n".join(name for name, _, _ in CASES))
        return 0
    selected = CASES
    if opts.only:
        pats = [p.strip() for p in opts.only.split(",") if p.strip()]
        unknown = [p for p in pats if not any(fnmatch.fnmatchcase(n, p) for n, _, _ in CASES)]
        if unknown:
            ap.error(f"no case matches {', '.join(unknown)} (cases: {', '.join(n for n, _, _ in CASES)})")
        selected = [c for c in CASES if any(fnmatch.fnmatchcase(c[0], p) for p in pats)]
    if opts.c_backend:
        if not os.access(opts.c_backend_bin, os.X_OK):
            ap.error(f"{opts.c_backend_bin} missing (Debian package qemu-system-gui)")
    else:
        opts.backend_bin = str(Path(opts.backend_bin).resolve())
        if not os.access(opts.backend_bin, os.X_OK):
            ap.error(f"{opts.backend_bin} missing: run `cargo build --release` (or pass --backend-bin, or --c-backend)")
    if not opts.no_build_guest:
        H.build_guest()

    # SIGTERM (e.g. from CI's timeout) unwinds like Ctrl-C, so every case cleans up
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    backend = f"QEMU C backend {opts.c_backend_bin}" if opts.c_backend else f"scanway {opts.backend_bin}"
    print(f"e2e: {len(selected)} cases against {backend}; logs in {H.TARGET / 'e2e'}", flush=True)
    passed = failed = 0
    skipped = []
    for name, fn, timeout in selected:
        t0 = time.monotonic()
        ctx = H.Ctx(name, opts, timeout, H.TARGET / "e2e", c_mode=opts.c_backend)
        status, detail, interrupted = "FAIL", "", False
        try:
            detail = fn(ctx)
            status = "PASS"
        except Skip as e:
            status, detail = "SKIP", str(e)
        except CaseFailure as e:
            detail = str(e)
        except KeyboardInterrupt:
            detail, interrupted = "interrupted", True
        except Exception as e:  # a driver bug: report it as this case's failure
            detail = f"{type(e).__name__}: {e}"
            import traceback
            ctx.log(traceback.format_exc())
        finally:
            ctx.log(f"{status}: {detail}")
            ctx.close()
        secs = time.monotonic() - t0
        print(f"{status} {name:<18} {secs:6.1f}s  {detail}", flush=True)
        if interrupted:
            return 130
        if status == "PASS":
            passed += 1
        elif status == "SKIP":
            skipped.append(name)
        else:
            failed += 1
            print(f"     logs: {ctx.dir}", flush=True)
    if skipped:
        print(f"skipped: {', '.join(skipped)}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
