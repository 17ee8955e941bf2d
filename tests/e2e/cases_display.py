"""The display cases: a guest's picture, pixel-exact, in its scanout and in the output (pattern
at three modes, fbdev, multihead with the layout view, animate), a VMM killed and reconnected,
and the EDID."""
import json
import re
import subprocess
import time

import harness as H
from harness import BOOT, CaseFailure


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
