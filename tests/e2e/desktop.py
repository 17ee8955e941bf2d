"""Desktop guests: a weston session and an Xorg session on the guest's Mesa virgl driver,
driven through scanway's seat (cases `desktop-weston` and `desktop-xorg` of run.py).

The guest boots the desktop root filesystem (tests/guest/build-rootfs-desktop.sh) and runs
tests/guest/src/guest-desktop in it: weston (DRM backend, GL renderer) with two
weston-terminals, or Xorg (modesetting, glamor) with twm and an xterm.  QEMU's D-Bus display
has GL (harness.DBUS_GL) and scanway is linked to it (input, resize).  Every wait is for a
serial line or a condition, within the case's deadline.
"""
import re
import time

import harness as H
from harness import CaseFailure, Skip

DESKTOP_BOOT = 300  # seconds to the session's ready line (TCG, llvmpipe behind virgl)
# typed into a terminal: '/', '>', '"', '$', '(', '*', ')', ':' and '_' (shifted) included;
# the shell prints TYPED_OK:42 and the terminal's WHO only if every character arrived
COMMAND = 'echo "TYPED_OK:$((6*7)) $WHO" > /dev/ttyS0\n'
TYPED_RE = r"^TYPED_OK:42 (\w+)\s*$"
TERM_LOG = "term.log"  # in the guest's workdir: its second serial port (ttyS1)
XROOT = (0x2E, 0x8B, 0x57)  # the X root window's colour (guest-desktop: xsetroot -solid)


def _scanout(listing, name, sid=0):
    return H.scanout(listing, name, sid)


def _wait_scanout(ctx, b, what, ok, timeout=30, tag=None):
    """Poll `scanway list` until ok(scanout 0 of g0) holds; returns that scanout (the listing
    that showed it is list-TAG.json)."""
    def probe():
        s = _scanout(b.list(tag, quiet=True), "g0")
        return ok(s), s
    return H.wait_until(ctx, what, probe, timeout)


def _start(ctx, test):
    if ctx.c_mode:
        raise Skip("needs scanway (virgl, D-Bus display link)")
    rootfs = H.build_rootfs_desktop()
    b = ctx.backend({"g0": 1}, ui_3d=("g0",))
    # a second serial port (the guest's ttyS1) gets the terminals' output: term-shell
    g = ctx.guest("g0", "g0", test, rootfs=rootfs, mem="1G", dbus="gl",
                  qemu_args=["-chardev", f"file,id=term0,path={ctx.dir / 'g0' / TERM_LOG}",
                             "-device", "isa-serial,chardev=term0"],
                  ready=r"^GUEST-DESKTOP (weston|xorg)-ready")
    b.connected("g0")
    return b, g


def _check_virgl_scanout(ctx, b, g, size="1280x800"):
    m = re.search(r"^GUEST-DRM features: (\S+)", g.serial_text(), re.M)
    if not m or m.group(1) != "+virgl":
        raise CaseFailure(f"the guest's device did not offer virgl: {m.group(0) if m else 'no GUEST-DRM line'}")
    b.wait_ui_linked("g0")
    w, h = (int(v) for v in size.split("x"))
    return _wait_scanout(ctx, b, f"a zero-copy {size} scanout",
                         lambda s: s.get("path") == "zero-copy" and s.get("copies_per_frame") == 0
                         and (s.get("width"), s.get("height")) == (w, h), tag="ready")


def _term_text(g):
    """What the terminals' shells wrote (their echo of typed keys too), escape sequences out."""
    try:
        raw = (g.workdir / TERM_LOG).read_bytes().decode(errors="replace")
    except OSError:
        return ""
    return re.sub(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]|[\r\x07]", "", raw)


# Characters typed before waiting for the terminal's echo: with shifts, at most ~24 key events,
# well inside the guest kernel's evdev buffer (64 events) even if the guest's compositor reads
# nothing until the echo of the previous chunk.
TYPE_CHUNK = 8


def _type(ctx, b, g, text):
    """Type `text` (one line) through scanway's seat with `type:` actions, TYPE_CHUNK characters
    at a time, each after the terminal echoed the previous ones: flow control by what the guest
    consumed.  A burst overflowed the guest kernel's evdev buffer (64 events) before weston or X
    read it; scanway's own pacing (control::KEY_BURST_GAP) is a rate, and a guest starved of CPU
    (TCG beside a build) can fall behind any rate, losing keys (SYN_DROPPED)."""
    if "\n" in text.rstrip("\n"):
        raise CaseFailure("_type: one line at a time")
    base = len(_term_text(g))
    end = time.monotonic() + ctx.deadline.left(30)
    for i in range(0, len(text), TYPE_CHUNK):
        b.ctl("input", f"type:{text[i:i + TYPE_CHUNK]}")
        want = text[:i + TYPE_CHUNK].rstrip("\n")
        while want not in _term_text(g)[base:]:
            if time.monotonic() > end:
                raise CaseFailure(f"the terminal echoed {_term_text(g)[base:][-80:]!r} of {want!r} within 30s")
            time.sleep(0.05)


def _point_only_in(r, other, scanout):
    """A guest pixel of rectangle r (x0, y0, x1, y1: a terminal's surface) that `other` does
    not cover, away from r's title bar and edges, on the scanout."""
    pts = [(x, y) for y in range(r[1] + 90, r[3] - 40, 20) for x in range(r[0] + 60, r[2] - 60, 20)
           if not (other[0] - 10 <= x <= other[2] + 10 and other[1] - 10 <= y <= other[3] + 10)
           and 0 <= x < scanout["width"] and 0 <= y < scanout["height"]]
    if not pts:
        raise CaseFailure(f"terminal {other} covers terminal {r}")
    return pts[len(pts) // 2]


def _type_into(ctx, b, g, win, gx, gy, who, nth):
    """Click guest pixel gx,gy of window `win` (its place in scanway's output), type COMMAND
    and wait for the terminal's shell to print it on the serial console: the nth TYPED_OK line
    must come from terminal `who`."""
    b.ctl("input", f"move:{win['x'] + gx},{win['y'] + gy}", "click:left")
    _type(ctx, b, g, COMMAND)
    # the nth TYPED_OK line (the (nth-1) before it skipped)
    m = g.wait(rf"(?:{TYPED_RE}[\s\S]*?){{{nth - 1}}}{TYPED_RE}", ctx.deadline.left(60),
               f"TYPED_OK line #{nth} (typed into terminal {who})")
    got = m.group(m.lastindex)
    if got != who:
        raise CaseFailure(f"the text typed after clicking terminal {who} ran in terminal {got}")


# ------------------------------------------------------------------ picture checks
def _uniform(px, w, h, u, v, r):
    c = H.rgb_at(px, w, u, v)
    for y in range(max(v - r, 0), min(v + r + 1, h)):
        for x in range(max(u - r, 0), min(u + r + 1, w)):
            if H.rgb_at(px, w, x, y) != c:
                return None
    return c


def _close(a, b, tol=12):
    return max(abs(x - y) for x, y in zip(a, b)) <= tol


def check_fitted(ctx, scanout_png, output_png, win, tag):
    """The output shows the scanout picture scaled into the window with its aspect kept and
    centred (bars where it does not reach), not cropped, not stretched.  Compares scanway's
    exact scanout screenshot with the output screenshot at every sample point whose
    neighbourhood is one colour (so that filtering does not matter); the bars must be one
    colour that the picture's edge rows do not have.  Returns a description."""
    sw, sh, spx = H.read_png_rgb(scanout_png)
    ow, oh, opx = H.read_png_rgb(output_png)
    fw, fh = win["width"], win["height"]
    k = min(fw / sw, fh / sh)
    pw, ph = round(sw * k), round(sh * k)
    ox, oy = win["x"] + (fw - pw) // 2, win["y"] + (fh - ph) // 2

    def check(kx, ky, x0, y0):
        good = total = 0
        bad = []
        for v in range(4, sh - 4, 12):
            for u in range(4, sw - 4, 12):
                c = _uniform(spx, sw, sh, u, v, 3)
                if c is None:
                    continue
                x, y = int(x0 + (u + 0.5) * kx), int(y0 + (v + 0.5) * ky)
                if not (0 <= x < ow and 0 <= y < oh):
                    continue
                total += 1
                if _close(H.rgb_at(opx, ow, x, y), c):
                    good += 1
                elif len(bad) < 5:
                    bad.append(f"guest {u},{v} {c} -> output {x},{y} {H.rgb_at(opx, ow, x, y)}")
        return good / max(total, 1), total, bad

    fit, total, bad = check(k, k, ox, oy)
    if total < 200 or fit < 0.97:
        raise CaseFailure(f"{tag}: the output does not show the scanout scaled by {k:.3f} at {ox},{oy}:"
                          f" {fit:.1%} of {total} samples match ({'; '.join(bad)}); see {output_png}")
    alt = {"stretched": check(fw / sw, fh / sh, win["x"], win["y"])[0], "1:1": check(1, 1, win["x"], win["y"])[0]}
    detail = f"scaled {k:.2f} with aspect kept ({fit:.0%} of {total} samples match)"
    if ph < fh or pw < fw:
        # the bars: one colour, not the picture's (its first and last rows / columns)
        if ph < fh:
            bars = [(x, y) for y in list(range(win["y"], oy - 1, 3)) + list(range(oy + ph + 1, win["y"] + fh, 3))
                    for x in range(win["x"], win["x"] + fw, 7)]
            edge = [H.rgb_at(spx, sw, u, v) for v in (0, sh - 1) for u in range(0, sw, 7)]
        else:
            bars = [(x, y) for x in list(range(win["x"], ox - 1, 3)) + list(range(ox + pw + 1, win["x"] + fw, 3))
                    for y in range(win["y"], win["y"] + fh, 7)]
            edge = [H.rgb_at(spx, sw, u, v) for u in (0, sw - 1) for v in range(0, sh, 7)]
        colours = {H.rgb_at(opx, ow, x, y) for x, y in bars}
        if len(colours) != 1:
            raise CaseFailure(f"{tag}: the bars beside the scaled picture are not one colour: {sorted(colours)[:6]}")
        bar = colours.pop()
        hits = sum(1 for c in edge if _close(c, bar, 4))
        if hits > len(edge) // 2:
            raise CaseFailure(f"{tag}: the bars have the picture's edge colour {bar}: cropped or stretched?")
        detail += f", bars {bar} {(fh - ph) // 2 if ph < fh else (fw - pw) // 2} px"
    if max(alt.values()) >= fit:
        raise CaseFailure(f"{tag}: the output matches other placements as well as the fitted one: {alt}")
    ctx.log(f"{tag}: fit {fit:.3f} over {total} samples, alternatives {alt}")
    return detail


def _corners(ctx, path, rect, want, what):
    """Pixels just inside the corners and edge middles of rect (x, y, w, h) in PNG `path`,
    except its top-left corner, must be `want`."""
    w, h, px = H.read_png_rgb(path)
    x, y, rw, rh = rect
    pts = [(x + rw - 3, y + 2), (x + 2, y + rh - 3), (x + rw - 3, y + rh - 3), (x + rw - 3, y + rh // 2),
           (x + rw // 2, y + rh - 3)]
    bad = [(p, H.rgb_at(px, w, *p)) for p in pts if H.rgb_at(px, w, *p) != want]
    if bad:
        raise CaseFailure(f"{what}: {bad} are not {want} (see {path})")


# ------------------------------------------------------------------------ cases
def _session_up(ctx, session, renderer_line, what):
    """Boot the desktop-`session` guest and wait for its ready line; its GL renderer (the
    GUEST-`renderer_line` line) must be virgl and scanway's scanout zero-copy. Returns (backend,
    guest, renderer, scanout listing, seconds to ready)."""
    b, g = _start(ctx, f"desktop-{session}")
    line = g.wait(rf"^GUEST-DESKTOP {session}-ready.*$", ctx.deadline.left(DESKTOP_BOOT),
                  f"the {session} session's ready line").group(0)
    t_ready = time.monotonic() - ctx.log.t0
    renderer = g.wait(rf"^GUEST-{renderer_line} (.*)$", 5, f"the {what} line").group(1).strip()
    if not renderer.startswith("virgl"):
        raise CaseFailure(f"{what} does not run on virgl: {renderer!r} ({line})")
    return b, g, renderer, _check_virgl_scanout(ctx, b, g), t_ready


def case_desktop_weston(ctx):
    """weston's DRM backend with its GL renderer on virgl, zero-copy through scanway: text typed
    through scanway's seat into a weston-terminal runs a command; a click on the other terminal
    moves the keyboard focus there (the click lands where the pointer is); after a window
    resize, which weston does not follow, scanway shows the guest's picture scaled with its
    aspect kept."""
    b, g, renderer, s, t_ready = _session_up(ctx, "weston", "WESTON-RENDERER", "weston's GL renderer")
    win = s["window"]
    details = [f"weston GL renderer {renderer!r}", f"zero-copy 1280x800 after {t_ready:.0f}s"]
    views = {m.group(1): tuple(int(v) for v in m.group(2, 3, 4, 5)) for m in
             re.finditer(r"^GUEST-WESTON-VIEW (\w) (-?\d+) (-?\d+) (-?\d+) (-?\d+)", g.serial_text(), re.M)}
    if set(views) != {"A", "B"}:
        raise CaseFailure(f"weston's scene graph: terminal views {views}")
    a, bv = views["A"], views["B"]
    # terminal B opened last, on top: click its middle, type
    _type_into(ctx, b, g, win, (bv[0] + bv[2]) // 2, (bv[1] + bv[3]) // 2, "B", 1)
    details.append("typed command ran in terminal B")
    gx, gy = _point_only_in(a, bv, s)
    _type_into(ctx, b, g, win, gx, gy, "A", 2)
    details.append(f"a click at guest {gx},{gy} (A only) moved the focus to terminal A")

    # resize to another aspect ratio: the guest gets the hotplug and weston logs that it
    # ignores it; scanway keeps showing the 1280x800 scanout, fitted into 1024x768
    b.ctl("window", "--guest", "g0", "--size", "1024x768")
    g.wait(r"^GUEST-DESKTOP drm-hotplug", ctx.deadline.left(30), "the guest's drm hotplug uevent")
    m = g.wait(r"^GUEST-WESTON .*(Detected a monitor change on head[^,]*).*$", ctx.deadline.left(30),
               "weston's monitor-change log line")
    s = _wait_scanout(ctx, b, "window 1024x768",
                      lambda s: (s.get("window") or {}).get("width") == 1024
                      and (s.get("window") or {}).get("height") == 768, tag="resized")
    if (s.get("width"), s.get("height")) != (1280, 800):
        raise CaseFailure(f"weston switched modes after all: scanout {s}")
    details.append(f"resize to 1024x768: weston stays 1280x800 ({m.group(1).strip()})")
    # the pointer off the window, so that no cursor is drawn over the picture
    b.ctl("input", "move:1900,1070")
    shot_s, shot_o = ctx.dir / "resized-scanout.png", ctx.dir / "resized-output.png"

    def fitted():
        # the window is fitted at once (the listing above); weston may repaint after the
        # hotplug, and a repaint between the two screenshots makes them disagree
        b.shot_scanout("g0", 0, shot_s, g)
        b.shot_output(shot_o, g)
        return check_fitted(ctx, shot_s, shot_o, s["window"], "resized")
    details.append("scanway shows it " + H.check_at_flushes(ctx, b, "g0", 0, fitted, "the fitted picture"))
    # input keeps working on the fitted picture: a click where scanway shows a part of
    # terminal B that A (on top now) does not cover gives B the focus back
    fw, fh = s["window"]["width"], s["window"]["height"]
    k = min(fw / 1280, fh / 800)
    fitted = {"x": s["window"]["x"] + (fw - round(1280 * k)) // 2, "y": s["window"]["y"] + (fh - round(800 * k)) // 2}
    bx, by = _point_only_in(bv, a, s)  # A is on top now
    _type_into(ctx, b, g, fitted, round(bx * k), round(by * k), "B", 3)
    details.append(f"a click in the scaled picture at guest {bx},{by} (B only) focused terminal B")
    ctx.finish(b, g)
    return ", ".join(details)


def case_desktop_xorg(ctx):
    """Xorg (modesetting, glamor on virgl) with twm and an xterm, zero-copy through scanway:
    text typed into the xterm runs a command; a window resize changes the X screen's size
    (the image's udev rule runs `xrandr --output Virtual-1 --auto` on the hotplug) and the picture fills the window."""
    b, g, glamor, s, t_ready = _session_up(ctx, "xorg", "XORG-GLAMOR", "glamor")
    win = s["window"]
    details = [f"glamor on {glamor!r}", f"zero-copy 1280x800 after {t_ready:.0f}s"]
    m = re.search(r"^GUEST-X-WINDOW xterm x=(\d+) y=(\d+) w=(\d+) h=(\d+)", g.serial_text(), re.M)
    if not m:
        raise CaseFailure("no GUEST-X-WINDOW line for the xterm")
    x, y, w, h = (int(v) for v in m.groups())
    _type_into(ctx, b, g, win, x + w // 2, y + h // 2, "X", 1)
    details.append("typed command ran in the xterm")

    b.ctl("window", "--guest", "g0", "--size", "1024x640")
    xr = g.wait(r"^GUEST-XRANDR Screen 0: .*current 1024 x 640.*$", ctx.deadline.left(60),
                "xrandr reporting the 1024x640 screen").group(0)
    ctx.log(f"g0: {xr}")
    if not re.search(r"^GUEST-X-HOTPLUG display=:0 xrandr --output Virtual-1 --auto$", g.serial_text(), re.M):
        raise CaseFailure("the screen changed without the udev rule's xrandr --output Virtual-1 --auto")
    s = _wait_scanout(ctx, b, "the 1024x640 screen, zero-copy, in a 1024x640 window",
                      lambda s: (s.get("width"), s.get("height")) == (1024, 640) and s.get("path") == "zero-copy"
                      and ((s.get("window") or {}).get("width"), (s.get("window") or {}).get("height")) == (1024, 640),
                      tag="resized")
    details.append("resize: the udev rule's xrandr --auto gave X a 1024x640 screen (zero-copy)")
    # the picture fills the window: the root window's colour at its far corners and edges, in
    # the scanout and where the window is in the output
    b.ctl("input", "move:1900,1070")
    win = s["window"]
    shot_s, shot_o = ctx.dir / "resized-scanout.png", ctx.dir / "resized-output.png"

    def filled():
        # the new screen's buffer may be on the scanout before X painted the root window into
        # it: that paint comes with flushes of its own (DIRTYFB), which no serial line marks
        b.shot_scanout("g0", 0, shot_s, g)
        _corners(ctx, shot_s, (0, 0, 1024, 640), XROOT, "the resized scanout")
        b.shot_output(shot_o, g)
        _corners(ctx, shot_o, (win["x"], win["y"], 1024, 640), XROOT, "the resized window in the output")
    H.check_at_flushes(ctx, b, "g0", 0, filled, "the X screen filling the window")
    details.append("the X screen fills the window")
    # input follows the new size: the xterm takes text again
    _type_into(ctx, b, g, win, x + w // 2, y + h // 2, "X", 2)
    details.append("typed again after the resize")
    ctx.finish(b, g)
    return ", ".join(details)
