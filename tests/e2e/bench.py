#!/usr/bin/env python3
"""scanway vs QEMU's C vhost-user-gpu backend: guest frame rate and host CPU
per frame, in one run on one machine.  Python 3 standard library only.

  tests/e2e/bench.py [--frames 300] [--modes 1024x768,1920x1080] [--runs N]
                     [--backend-bin PATH] [--c-backend-bin PATH] [--c-only]

For each mode and backend, a guest runs gpu-test `animate`: FRAMES page flips
between two pre-rendered XRGB8888 buffers (each flip is SET_SCANOUT + a
full-frame TRANSFER_TO_HOST_2D + RESOURCE_FLUSH), timed in the guest up to a
fenced sync point, so every frame has been consumed by the backend when the
guest prints GUEST-ANIMATE-DONE ... fps=.

Host CPU: utime+stime of the backend process (all threads, /proc/PID/stat) and
of QEMU, sampled twice:
  before: once the set-up frame is handled, after the guest's GUEST-ANIMATE-START
          line.  The guest prints it once its buffers are drawn and the first
          frame is synced, then idles 1 s (gpu-test --start-pause 1000) before the
          first flip, so the sample falls in that quiet window; boot and set-up
          cost is excluded.  scanway: its listing counts the set-up frame's upload
          (drawn in the same turn of its event loop).  C backend: it sent the frame
          to QEMU before completing the guest's fence, and QEMU says nothing when
          its display surface has it: the sample is taken once the backend's and
          QEMU's CPU time stood still between two looks (every 30 ms).
  after:  when GUEST-ANIMATE-DONE is seen: the backend has consumed every frame
          (fenced sync) and the guest idles from then on.
ms/frame = (after - before) CPU time / frames.  The C backend's cost is split
between its own process and QEMU (which receives every frame over the display
socket and updates its surface); QEMU's figure also holds the TCG guest itself.

Repeated runs (--runs) alternate the backends; the table shows medians.
Logs: target/bench/<mode>-<backend>-<run>/; results also in target/bench/results.{txt,json}.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as H  # noqa: E402
from harness import CaseFailure  # noqa: E402

PAUSE_MS = 1000


def setup_handled(ctx, b, kind, bpid, qpid):
    """The (backend, QEMU) CPU ticks once the set-up frame is handled (see the module's
    documentation), within the guest's pause."""
    if kind == "scanway":
        # scanway uploads a flushed picture when it draws the next frame, in one turn of its
        # event loop, and answers control requests between turns
        def uploaded():
            s = H.scanout(b.list(quiet=True), "g0", 0)
            return s.get("uploads", 0) >= 1, s
        H.wait_until(ctx, "scanway's upload of the set-up frame", uploaded, PAUSE_MS / 1000, interval=0.01)
        return H.cpu_ticks(bpid), H.cpu_ticks(qpid)
    last = None

    def still():
        nonlocal last
        now = H.cpu_ticks(bpid), H.cpu_ticks(qpid)
        done, last = now == last, now
        return done, now
    return H.wait_until(ctx, "the C backend's and QEMU's CPU time standing still", still, PAUSE_MS / 1000,
                        interval=0.03)


def one_run(opts, mode, kind, run):
    name = f"{mode}-{kind}-{run}"
    ctx = H.Ctx(name, opts, 120 + opts.frames / 5, H.TARGET / "bench", c_mode=(kind == "c"))
    try:
        b = ctx.backend({"g0": 1})
        bpid = (b.procs["g0"] if kind == "c" else b.proc).pid
        g = ctx.guest("g0", "g0", "animate", mode=mode, frames=opts.frames, args=f"--start-pause {PAUSE_MS}")
        qpid = g.qemu_pid()
        start = g.wait(r"^GUEST-ANIMATE-START (\d+x\d+) .*$", ctx.deadline.left(120), "GUEST-ANIMATE-START")
        seen = time.monotonic()
        if start.group(1) != mode:
            raise CaseFailure(f"guest runs {start.group(1)}, not {mode}: no such mode offered?")
        b0, q0 = setup_handled(ctx, b, kind, bpid, qpid)
        late = time.monotonic() - seen
        done = g.wait(r"^GUEST-ANIMATE-DONE .*$", ctx.deadline.left(), "GUEST-ANIMATE-DONE").group(0)
        b1, q1 = H.cpu_ticks(bpid), H.cpu_ticks(qpid)
        ctx.log(done)
        f = H.figures(done)
        if f.get("synced") != "1":
            raise CaseFailure(f"guest could not sync (fps would exclude the backend's queue): {done}")
        frames = int(f["frames"])
        r = {
            "mode": mode, "backend": kind, "run": run, "frames": frames,
            "fps": float(f["fps"]), "seconds": float(f["seconds"]),
            "backend_ms_per_frame": H.cpu_ms_per_frame(b1 - b0, frames),
            "qemu_ms_per_frame": H.cpu_ms_per_frame(q1 - q0, frames),
            "sample_s_after_start": round(late, 3),
        }
        if late >= PAUSE_MS / 1000:
            raise CaseFailure(f"CPU sampled {late:.2f}s after GUEST-ANIMATE-START: frames already running")
        g.quit()
        b.disconnected("g0")
        b.stop()
        ctx.log(json.dumps(r))
        return r
    finally:
        ctx.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--modes", default="1024x768,1920x1080")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--backend-bin", default=str(H.DEFAULT_SCANWAY))
    ap.add_argument("--c-backend-bin", default=H.C_BACKEND_BIN)
    ap.add_argument("--c-only", action="store_true", help="only QEMU's C backend (no scanway binary needed)")
    a = ap.parse_args()
    kinds = ["c"] if a.c_only else ["scanway", "c"]
    if "scanway" in kinds:
        a.backend_bin = str(Path(a.backend_bin).resolve())
        if not os.access(a.backend_bin, os.X_OK):
            ap.error(f"{a.backend_bin} missing: run `cargo build --release` (or --c-only)")
    H.build_guest()
    opts = SimpleNamespace(timeout_scale=1.0, backend_bin=a.backend_bin, c_backend_bin=a.c_backend_bin,
                           frames=a.frames)
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], stdout=subprocess.PIPE, text=True).stdout.split("\n")[0]
    head = (f"bench: animate, {a.frames} frames (page flips between 2 buffers), TCG guest (1 vCPU); "
            f"{cpu} x{os.cpu_count()}; {platform.release()}; {qemu}")
    print(head, flush=True)
    results, failures = [], []
    for mode in modes:
        for run in range(1, a.runs + 1):
            for kind in kinds:
                try:
                    r = one_run(opts, mode, kind, run)
                    results.append(r)
                    print(f"  {mode:<10} {kind:<8} run {run}: {r['fps']:.1f} fps, backend "
                          f"{r['backend_ms_per_frame']:.2f} ms/frame, qemu {r['qemu_ms_per_frame']:.2f} ms/frame",
                          flush=True)
                except CaseFailure as e:
                    failures.append(f"{mode} {kind} run {run}: {e}")
                    print(f"  {mode:<10} {kind:<8} run {run}: FAIL {e}", flush=True)

    def med(mode, kind, key):
        v = [r[key] for r in results if r["mode"] == mode and r["backend"] == kind]
        return statistics.median(v) if v else None

    fmt = lambda v, p=1: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
    lines = [head, "",
             f"{'mode':<10} {'backend':<8} {'runs':>4} {'fps':>7} {'backend ms/frame':>17} {'qemu ms/frame':>14}"]
    for mode in modes:
        for kind in kinds:
            n = sum(1 for r in results if r["mode"] == mode and r["backend"] == kind)
            lines.append(f"{mode:<10} {kind:<8} {n:>4} {fmt(med(mode, kind, 'fps')):>7} "
                         f"{fmt(med(mode, kind, 'backend_ms_per_frame'), 2):>17} "
                         f"{fmt(med(mode, kind, 'qemu_ms_per_frame'), 2):>14}")
    if "scanway" in kinds:
        ratios = []
        for mode in modes:
            s, c = med(mode, "scanway", "fps"), med(mode, "c", "fps")
            ratios.append(f"{mode} {s / c:.2f}x" if s and c else f"{mode} -")
        lines += ["", "fps ratio scanway/C: " + ", ".join(ratios)]
    lines += ["", "backend = the vhost-user-gpu process (scanway, or /usr/lib/qemu/vhost-user-gpu); "
              "qemu = QEMU incl. the TCG guest"]
    if failures:
        lines += ["", "failed runs:"] + [f"  {f}" for f in failures]
    text = "\n".join(lines)
    print("\n" + "\n".join(lines[2:]))
    out = H.TARGET / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.txt").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps({"header": head, "runs": results, "failures": failures}, indent=1))
    print(f"\nresults: {out / 'results.txt'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
