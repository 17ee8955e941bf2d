"""Picture checks and event waits: check a screenshot against the kit's pattern, wait for a
condition, for a scanout's next flush, for frames.  Part of harness (re-exported there as
H.check_pattern, H.wait_flushed, ...)."""
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import *  # noqa: F401,F403  (the plumbing: CaseFailure, Ctx, paths, ...)
from backends import scanout  # noqa: F401


def check_pattern(ctx, path, *, head=0, frame=0, size=None, locate=False):
    """Run check-pattern.py; returns its OK line or raises CaseFailure."""
    argv = [sys.executable, CHECK_PATTERN, str(path), "--head", str(head), "--frame", str(frame)]
    if size:
        argv += ["--size", size]
    if locate:
        argv.append("--locate")
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = r.stdout.strip()
    ctx.log(f"check-pattern {Path(path).name} head={head} frame={frame}{' --locate' if locate else ''}: {out}")
    if r.returncode != 0:
        subprocess.run(argv + ["--diff", str(path) + ".diff.ppm", "-q"], stdout=subprocess.DEVNULL)
        raise CaseFailure(out.splitlines()[-1][:400] if out else f"check-pattern rc {r.returncode}")
    return out


def shoot_and_check(ctx, take, path, **check):
    """take(path) then check_pattern(path, **check), once: call it when the picture is there
    (the guest's READY line, or wait_flushed), never to poll."""
    take(path)
    if not Path(path).is_file() or Path(path).stat().st_size == 0:
        raise CaseFailure(f"no screenshot written to {path}")
    return check_pattern(ctx, path, **check)


# ------------------------------------------------------------ waiting for events
# A scanway screenshot renders the state at the time of the request (the guest's flushed
# pixels, windows, cursors), whether or not a frame showed it yet: a picture is stale only
# while the guest has not flushed it.  So a case waits for that flush in scanway's listing
# (a scanout's flush_count and resource), or for the guest's serial line, then takes one
# screenshot and checks it once.
POLL_S = 0.05  # between two looks at a condition


def wait_until(ctx, what, probe, timeout=30, interval=POLL_S):
    """Look at probe() -> (done, state) every `interval` s until done, within `timeout` s and
    the case's deadline; returns the state (else CaseFailure with the last state)."""
    t0 = time.monotonic()
    end = t0 + ctx.deadline.left(timeout)
    looks = 0
    while True:
        done, state = probe()
        looks += 1
        if done:
            ctx.log(f"waited for {what}: {time.monotonic() - t0:.2f}s, {looks} look(s)")
            return state
        if time.monotonic() > end:
            raise CaseFailure(f"{what}: not within {timeout:.0f}s (last: {state})")
        time.sleep(interval)


def flush_mark(s):
    """What a new picture of the guest changes on scanout `s` of a listing: (resource, flushes)."""
    return (s.get("resource_id"), s.get("flush_count", 0)) if s.get("enabled") else (None, 0)


def flushed_since(s, mark):
    """Whether scanout `s` of a listing shows a picture the guest gave after `mark` (flush_mark
    of a listing before; None: any flush): the same resource flushed again, or another
    resource set on the scanout (scanway then shows that resource whole, as last
    transferred; its flush count may have started again)."""
    if not s.get("enabled"):
        return False
    if mark is None:
        return s.get("flush_count", 0) > 0
    return s.get("flush_count", 0) > mark[1] or s.get("resource_id") != mark[0]


def mark_of(b, name, sid=0):
    """flush_mark of scanout `sid` of guest `name` now; None without a listing (C backend)."""
    listing = b.list(quiet=True)
    return None if listing is None else flush_mark(scanout(listing, name, sid))


def wait_flushed(ctx, b, name, sid=0, since=None, size=None, ok=None, timeout=30, what=None):
    """Wait until scanway's listing shows scanout `sid` of guest `name` enabled, `size` (WxH)
    if given, with a picture flushed after `since` (mark_of before the action; None: any
    flush), and ok(scanout) if given; returns that scanout.  From then on one screenshot
    shows that picture.  Returns None at once for the C backend (no listing: its screenshot
    is QEMU's screendump, taken as it is)."""
    if b.list(quiet=True) is None:
        return None
    wh = tuple(int(v) for v in size.split("x")) if size else None

    def probe():
        s = scanout(b.list(quiet=True), name, sid)
        done = (flushed_since(s, since) and (wh is None or (s.get("width"), s.get("height")) == wh)
                and (ok is None or ok(s)))
        return done, s
    s = wait_until(ctx, what or f"{name} scanout {sid}: a picture flushed"
                   + (f" at {size}" if size else "") + (f" after {since}" if since else ""), probe, timeout)
    ctx.log(f"{name} scanout {sid}: {s.get('width')}x{s.get('height')} resource {s.get('resource_id')}"
            f" flushes {s.get('flush_count')} (before: {since})")
    return s


def check_flushed(ctx, b, name, sid, path, guest=None, since=None, size=None, **check):
    """Scanout `sid` of `name` exact (check_pattern): wait_flushed, then one screenshot
    checked once."""
    wait_flushed(ctx, b, name, sid, since=since, size=size)
    return shoot_and_check(ctx, lambda p: b.shot_scanout(name, sid, p, guest), path, size=size, **check)


def check_at_flushes(ctx, b, name, sid, attempt, what, timeout=30):
    """For pictures that come with a flush no line of the guest marks (fbdev's damage worker,
    X's and weston's repaints after a mode change): attempt() takes its screenshots and
    checks them (CaseFailure when wrong).  Tried at once; after a wrong picture, again once
    the guest flushed the scanout again (a flush during the try counts), until `timeout`:
    only a flush changes a guest's picture.  Returns attempt()'s result.
    The C backend has no listing and no flush counter: there the attempts are polled (every
    0.2 s until `timeout`) - QEMU's screendump is the only thing to look at."""
    end = time.monotonic() + ctx.deadline.left(timeout)
    tries = 0
    while True:
        before = mark_of(b, name, sid)
        tries += 1
        try:
            result = attempt()
            if tries > 1:
                ctx.log(f"{what}: right at try {tries}")
            return result
        except CaseFailure as e:
            failure = e
        left = end - time.monotonic()
        if left <= 0:
            raise failure
        ctx.log(f"{what}: try {tries}: {failure}; waiting for {name}'s next flush")
        if before is None:
            time.sleep(min(0.2, left))  # C backend: nothing to wait on (see above)
            continue
        def flushed():
            now = mark_of(b, name, sid)
            return now != before, now
        try:
            wait_until(ctx, f"{name}'s next flush", flushed, timeout=left)
        except CaseFailure:
            raise CaseFailure(f"{failure} (and no further flush of {name} scanout {sid} within {timeout:.0f}s)")


def wait_frames(ctx, b, after, timeout=15, what="a frame"):
    """Wait until scanway has finished a frame after the one numbered `after` (the listing's
    `frames` then): no frame is being drawn while a control request is answered, so frame
    after+1 began after the listing that read `after`."""
    def probe():
        frames = b.list(quiet=True).get("frames", 0)
        return frames > after, frames
    return wait_until(ctx, f"{what} (frames > {after})", probe, timeout)


def located(out):
    m = re.search(r"located picture at (\d+),(\d+),(\d+)x(\d+)", out)
    return tuple(int(v) for v in m.groups()) if m else None


def tmpdir():
    # sockets need short paths (sun_path is 108 bytes): keep them in /tmp
    return Path(tempfile.mkdtemp(prefix="scanway-e2e."))


def free_x_display(start=90):
    n = start
    while Path(f"/tmp/.X11-unix/X{n}").exists() or Path(f"/tmp/.X{n}-lock").exists():
        n += 1
    return n


_CHECK_PATTERN_MOD = None


def check_pattern_module():
    """tests/guest/check-pattern.py as a module (its PNG decoder, the expected picture)."""
    global _CHECK_PATTERN_MOD
    if _CHECK_PATTERN_MOD is None:
        import importlib.util
        spec = importlib.util.spec_from_file_location("check_pattern", CHECK_PATTERN)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _CHECK_PATTERN_MOD = mod
    return _CHECK_PATTERN_MOD


def read_png_rgb(path):
    """(width, height, RGB bytes row after row) of a PNG, with the kit's decoder."""
    w, h, rows = check_pattern_module().load(path)
    return w, h, b"".join(rows)


def rgb_at(px, w, x, y):
    """The (R, G, B) pixel at x, y of RGB bytes `px` (read_png_rgb) of width `w`."""
    i = (y * w + x) * 3
    return tuple(px[i:i + 3])


def write_ppm(path, w, h, rgb):
    """A binary PPM (P6) of RGB bytes, row after row."""
    Path(path).write_bytes(b"P6\n%d %d\n255\n" % (w, h) + bytes(rgb))
