"""The 3D cases: kmscube and our GLES program through virgl, zero-copy, and two 3D guests beside
a 2D one."""

import harness as H
import os
import signal

from harness import BOOT, CaseFailure, Skip
from cases_display import assert_scanout, output_check, scanout_info, size_of  # noqa: F401

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


def worker_of(listing, name):
    """The isolated 3D worker entry of guest `name` in a listing."""
    three_d = H.guest_entry(listing, name).get("3d")
    if not isinstance(three_d, dict) or three_d.get("mode") != "isolated":
        raise CaseFailure(f"{name}: 3D is not isolated: {three_d}")
    return three_d["worker"]


def gles_pattern_read_back(ctx, b, g, name, tag):
    """gles-pattern (or gles-spin) of guest `name` rendered by its worker, read back: path
    read-back, exact."""
    line = g.wait(r"^GUEST-GLES-READY .*$", ctx.deadline.left(BOOT + 60), "GUEST-GLES-READY").group(0)
    if "virgl" not in line:
        raise CaseFailure(f"{name}: not rendered through virgl: {line}")
    wh = size_of(line)
    H.wait_flushed(ctx, b, name, 0, size=wh, ok=lambda s: s.get("path") == "read-back",
                   what=f"{name}: the render target (read back) on scanout 0")
    H.shoot_and_check(ctx, lambda p: b.shot_scanout(name, 0, p, g), ctx.dir / f"{name}-{tag}.png", size=wh)
    return wh


def case_isolated_3d(ctx):
    """A guest with 3d=isolated: its virglrenderer runs in a worker process; its gles-pattern
    picture comes back read back, pixel-exact. SIGKILL of that worker loses only that guest's
    3D (its window says so; a kmscube guest on the shared renderer keeps drawing, scanway keeps
    running); a new VM on the same socket gets a new worker, and its endless GLES frames
    (gles-spin: a SUBMIT_3D, a fence and a flip each) keep coming back exact."""
    if ctx.c_mode:
        raise Skip("needs scanway (virgl)")
    rootfs = H.build_rootfs_3d()
    b = ctx.backend({"iso": 1, "cube": 1}, isolated=("iso",), size="2560x1080")
    cube = start_kmscube(ctx, "cube", rootfs)
    g = ctx.guest("iso", "iso", "gles-pattern", rootfs=rootfs, mem="1G")
    b.connected("iso")
    wh = gles_pattern_read_back(ctx, b, g, "iso", "first")
    details = [f"{wh} read back exact"]
    check_cube(ctx, b, cube, "cube")
    w = worker_of(b.list("running"), "iso")
    if not w.get("running") or not w.get("pid") or not w.get("read_backs"):
        raise CaseFailure(f"iso: worker not running or nothing read back: {w}")
    details.append(f"worker pid {w['pid']}, {w['read_backs']} read-backs")

    os.kill(w["pid"], signal.SIGKILL)
    gone = H.wait_until(ctx, "iso's worker seen gone", lambda: (
        lambda w: (not w.get("running"), w))(worker_of(b.list(quiet=True), "iso")), timeout=20)
    if gone.get("lost") != 1 or "SIGKILL" not in (gone.get("reason") or "") and "9" not in (gone.get("reason") or ""):
        raise CaseFailure(f"iso: worker loss not reported as a SIGKILL: {gone}")
    details.append(f"worker killed: {gone.get('reason')}")
    # the shared guest keeps drawing
    mark = H.mark_of(b, "cube", 0)
    H.wait_flushed(ctx, b, "cube", 0, since=mark, what="cube flushing after iso's worker died")
    details.append("shared kmscube guest kept drawing")

    g.kill_qemu()
    b.disconnected("iso")
    b.rearm("iso")
    g2 = ctx.guest("iso-2", "iso", "gles-spin", rootfs=rootfs, mem="1G")
    b.connected("iso", nth=2)
    wh = gles_pattern_read_back(ctx, b, g2, "iso", "again")
    w2 = worker_of(b.list("again"), "iso")
    if not w2.get("running") or w2.get("restarts") != 1 or w2.get("pid") == w["pid"]:
        raise CaseFailure(f"iso: no new worker after the VM restarted: {w2}")
    # frames keep coming: every flip waits for its fence, which the worker retires
    for n in range(3):
        mark = H.mark_of(b, "iso", 0)
        H.wait_flushed(ctx, b, "iso", 0, since=mark, size=wh, what=f"iso: GLES frame {n + 1} after the restart")
    H.shoot_and_check(ctx, lambda p: b.shot_scanout("iso", 0, p, g2), ctx.dir / "iso-spinning.png", size=wh)
    details.append(f"VM restarted: new worker pid {w2['pid']}, endless frames exact")
    ctx.finish(b, g2, cube)
    return "; ".join(details)
