"""Hostile guests through the real kernel driver: malformed virgl streams and 3D commands
(tests/guest/src/bad-streams.c) beside a guest whose picture must stay exact."""
import json
import re
import time

import harness as H
from harness import BOOT, CaseFailure, Skip


def faults_of(b, name):
    return dict(H.guest_entry(b.list(quiet=True), name).get("faults") or {})


def case_bad_streams(ctx):
    """Every bad-streams case (virglrenderer's CVE classes) is refused or survived: after each,
    a fresh context still renders exact red, scanway runs on, and the 2D guest beside it keeps
    flipping its exact picture.  The table of cases (what the kernel refused, the fence, what
    scanway counted as refused by itself or by virglrenderer) is in bad-streams.json."""
    if ctx.c_mode:
        raise Skip("needs scanway (virgl)")
    rootfs = H.build_rootfs_3d()
    b = ctx.backend({"g0": 1, "g1": 1})
    steady = ctx.steady_guest("g1", "g1")
    # held until quit, so that the last case's faults are counted while it is still connected
    g = ctx.guest("g0", "g0", "bad-streams", rootfs=rootfs, mem="1G", ready=r"^GUEST-BAD-DONE", hold=3600)
    b.connected("g1")
    b.connected("g0")
    size = ctx.steady_size(steady)
    H.shoot_and_check(ctx, lambda p: b.shot_scanout("g1", 0, p, steady), ctx.dir / "g1-before.png", size=size)
    rows, seen, before = [], set(), {}
    end = time.monotonic() + ctx.deadline.left(BOOT + 240)
    while True:
        text = g.serial_text()
        for m in re.finditer(r"^GUEST-BAD-HEALTH name=(\S+) (.*)$", text, re.M):
            name = m.group(1)
            if name in seen:
                continue
            seen.add(name)
            after = faults_of(b, "g0")
            delta = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
            before = after
            e = re.search(rf"^GUEST-BAD-END name={re.escape(name)} errors=(\S+) fence=(\S+) rc=(\S+)", text, re.M)
            rows.append({"case": name, "kernel_refused_ioctls": e.group(1) if e else "?",
                         "fence": e.group(2) if e else "?", "rc": e.group(3) if e else "?",
                         "health": m.group(2).strip(), "scanway_faults": delta})
        if re.search(r"^GUEST-BAD-DONE", text, re.M) and len(seen) >= int(
                re.search(r"^GUEST-BAD-DONE cases=(\d+)", text, re.M).group(1)):
            break
        if b.proc.poll() is not None:
            last = re.findall(r"^GUEST-BAD-START name=(\S+)", text, re.M)
            raise CaseFailure(f"scanway exited (rc {b.proc.returncode}) during bad-streams case "
                              f"{last[-1] if last else '?'}{b._panic_note()}")
        g.wait(r"^GUEST-BAD-(HEALTH|DONE)", ctx.deadline.left(60), "the next bad-streams result")
        if time.monotonic() > end:
            raise CaseFailure(f"bad-streams did not finish: {len(seen)} cases done")
        time.sleep(0.05)
    (ctx.dir / "bad-streams.json").write_text(json.dumps(rows, indent=1))
    for r in rows:
        ctx.log(f"{r['case']:<28} kernel refused {r['kernel_refused_ioctls']:>3}  fence {r['fence']:<7} "
                f"health {r['health']:<4} scanway {r['scanway_faults']}")
    sick = [r["case"] for r in rows if r["health"] != "ok"]
    if sick:
        raise CaseFailure(f"the renderer was not healthy after: {', '.join(sick)} (see bad-streams.json)")
    mark = H.mark_of(b, "g1")
    H.check_flushed(ctx, b, "g1", 0, ctx.dir / "g1-after.png", steady, since=mark, size=size)
    if b.events("g1", "disconnected"):
        raise CaseFailure("g1 was disconnected")
    ctx.finish(b, g, steady)
    refused = sum(1 for r in rows if r["scanway_faults"])
    return f"{len(rows)} cases, all healthy after; {refused} with faults counted by scanway; g1 exact throughout"
