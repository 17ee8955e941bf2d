#!/usr/bin/env python3
"""The bad-stream report: every case of tests/guest/src/bad-streams.c (malformed virgl streams
and 3D commands, in the classes of virglrenderer's CVEs) in a VM of its own against one
scanway, so each VMM connection's fault counts (`scanway list --json`: faults) are that case's
alone; a 2D guest animates beside it the whole time.  Prints a markdown table: who refused
what (the guest kernel, scanway before virglrenderer, virglrenderer), whether the case's fence
signalled, and whether a fresh context still rendered exact red after it (the guest's health
check) with scanway still running.  With --isolated the guest's 3D runs in a worker process
(3d=isolated) and the table says, per case, whether that worker survived or was lost (a lost
worker is the isolation working: the next VM gets a new one).  Python 3 standard library only.

  tests/e2e/bad_streams.py [--only NAME,...] [--isolated] [--backend-bin PATH]

Logs in target/bad-streams[-isolated]/; the table also in results.md and .json there.
"""
import argparse
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as H  # noqa: E402
from harness import BOOT, CaseFailure  # noqa: E402

SOURCE = H.KIT / "src" / "bad-streams.c"
# the faults virglrenderer returned (Error3d::fault_name); every other kind scanway refused itself
VIRGL = ("VirglRefused", "VirglFailed")


def cases():
    """The case names, in order, from the CASES table of bad-streams.c."""
    table = SOURCE.read_text().split("CASES[] = {", 1)[1].split("};", 1)[0]
    return re.findall(r'\{ "([a-z0-9-]+)",', table)


def one(ctx, b, name, n, rootfs):
    # held after its last line until quit: the fault counts are read while it is connected (a
    # VM that powered off at once had its device reset, counts and all, before the listing)
    g = ctx.guest(f"g0-{name}", "g0", "bad-streams", rootfs=rootfs, mem="1G", args=f"--only {name}",
                  ready=r"^GUEST-BAD-DONE", hold=3600)
    b.connected("g0", nth=n)
    done = g.wait(r"^GUEST-BAD-DONE cases=(\d+) healthy=(\d+)", ctx.deadline.left(BOOT + 120), "GUEST-BAD-DONE")
    text = g.serial_text()
    end = re.search(rf"^GUEST-BAD-END name={re.escape(name)} errors=(\S+) fence=(\S+) rc=(\S+)", text, re.M)
    health = re.search(rf"^GUEST-BAD-HEALTH name={re.escape(name)} (.*)$", text, re.M)
    entry = H.guest_entry(b.list(), "g0")
    faults = dict(entry.get("faults") or {})
    three_d = entry.get("3d")
    worker = three_d.get("worker") if isinstance(three_d, dict) else None
    rc = g.quit()
    b.disconnected("g0", nth=n)
    if done.group(1) != "1":
        raise CaseFailure(f"{name}: the guest ran {done.group(1)} cases")
    return {"case": name, "kernel": end.group(1) if end else "?", "fence": end.group(2) if end else "?",
            "health": health.group(1).strip() if health else "?", "faults": faults, "run_guest_rc": rc,
            "scanway_alive": b.proc.poll() is None, "worker": worker}


def verdict(r):
    own = {k: v for k, v in r["faults"].items() if k not in VIRGL}
    virgl = sum(r["faults"].get(k, 0) for k in VIRGL)
    parts = []
    if r["kernel"] not in ("0", "?"):
        parts.append(f"guest kernel refused {r['kernel']} ioctls")
    if own:
        parts.append("scanway refused " + ", ".join(f"{v} {k}" for k, v in sorted(own.items())))
    if virgl:
        parts.append(f"virglrenderer refused {virgl}")
    return "; ".join(parts) or "no error returned: survived"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated case names")
    ap.add_argument("--backend-bin", default=str(H.DEFAULT_SCANWAY))
    ap.add_argument("--isolated", action="store_true", help="the guest's 3D in a worker process (3d=isolated)")
    a = ap.parse_args()
    names = cases()
    if a.only:
        names = [n for n in names if n in a.only.split(",")]
    H.build_guest()
    rootfs = H.build_rootfs_3d()
    opts = SimpleNamespace(timeout_scale=1.0, backend_bin=str(Path(a.backend_bin).resolve()))
    tag = "bad-streams-isolated" if a.isolated else "bad-streams"
    ctx = H.Ctx(tag, opts, 120 + 90 * len(names), H.TARGET)
    rows, failure = [], None
    lost_before = 0
    try:
        b = ctx.backend({"g0": 1, "g1": 1}, isolated=("g0",) if a.isolated else ())
        steady = ctx.steady_guest("g1", "g1")
        b.connected("g1")
        size = ctx.steady_size(steady)
        for n, name in enumerate(names, start=1):
            r = one(ctx, b, name, n, rootfs)
            if a.isolated:
                w = r["worker"] or {}
                lost = w.get("lost", 0)
                r["worker_lost"] = lost > lost_before
                lost_before = lost
                if not r["worker_lost"] and not w.get("running"):
                    raise CaseFailure(f"{name}: no worker running and none lost: {w}")
            rows.append(r)
            print(f"  {name:<28} {verdict(r)}; fence {r['fence']}; health {r['health']}"
                  + (f"; worker {'LOST' if r['worker_lost'] else 'survived'}" if a.isolated else ""), flush=True)
            if not r["scanway_alive"]:
                raise CaseFailure(f"scanway died in {name}")
        mark = H.mark_of(b, "g1")
        H.check_flushed(ctx, b, "g1", 0, ctx.dir / "g1-after.png", steady, since=mark, size=size)
        ctx.finish(b, steady)
    except CaseFailure as e:
        failure = str(e)
    finally:
        ctx.close()
    if a.isolated:
        lines = ["| case | who refused what | fence | renderer healthy after | worker |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['case']} | {verdict(r)} | {r['fence']} | {r['health']} | "
                  f"{'lost: ' + str((r['worker'] or {}).get('reason')) if r['worker_lost'] else 'survived'} |"
                  for r in rows]
    else:
        lines = ["| case | who refused what | fence | renderer healthy after |", "| --- | --- | --- | --- |"]
        lines += [f"| {r['case']} | {verdict(r)} | {r['fence']} | {r['health']} |" for r in rows]
    out = H.TARGET / tag
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))
    # in isolated mode a case may take its worker (and so its guest's 3D) down: that is the
    # isolation doing its job, as long as scanway and the other guest carry on
    sick = [r["case"] for r in rows if r["health"] != "ok" and not r.get("worker_lost")]
    if failure or sick:
        print(f"FAIL: {failure or 'unhealthy after ' + ', '.join(sick)} (logs: {ctx.dir})")
        return 1
    lost = [r["case"] for r in rows if r.get("worker_lost")]
    print(f"{tag}: {len(rows)} cases, scanway survived each, the 2D guest exact throughout"
          + (f"; workers lost in {len(lost)}: {', '.join(lost) or 'none'}" if a.isolated else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
