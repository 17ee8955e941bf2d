#!/usr/bin/env python3
"""scanway's fault campaign: VMMs killed at random points while another guest keeps animating,
then a stopped guest, a flooding guest, hostile Wayland clients and garbage on the control
socket; figures printed.  Not a timed test: it fails only on a broken invariant (a crash, a
wrong picture, a leak, the steady guest stopped).  Python 3 standard library only.

  tests/e2e/soak.py [--kills N] [--seed S] [--quick] [--backend-bin PATH]

One scanway (headless, 60 Hz) serves three guest slots:
  steady  a 2D guest page-flipping its exact picture at 60 fps (gpu-test animate --still
          --interval 16) for the whole run; its flush count is sampled every 0.25 s;
  victim  a new QEMU each round, killed with SIGKILL at a random moment (0.1-2 s) of:
            transfer  2D page flips, each a full-frame TRANSFER_TO_HOST_2D + SET_SCANOUT +
                      RESOURCE_FLUSH (gpu-test animate --still --redraw);
            submit3d  GLES frames through virgl without end: SUBMIT_3D with fences pending
                      (gles-pattern --spin, 3D root filesystem);
            resize    right after the window is resized (gpu-test follow, D-Bus display):
                      the guest is mid mode change;
          every round first checks the victim's scanout pixel-exactly (its reconnect shows
          the right picture), and after the kill that scanway dropped its resources and that
          the steady guest still runs;
  flood   a 2D guest that floods the control queue with TRANSFER_TO_HOST (gpu-test flood).

After the kills: the victim stopped (SIGSTOP) for 3 s, resumed, stopped again and killed while
stopped; the flood guest for 8 s; Wayland clients that flood commits (killed at random
moments), that never read their events, that die in the middle of a request; and garbage,
idle and over-long requests on the control socket.

Leaks: `scanway objects` (GL textures, buffers and renderbuffers of the share group by name,
virglrenderer's contexts, open fds, RSS) after a warm-up (one kill of each kind and every other
fault once, so that caches exist: shaders, each slot's window and title) and at the end, with
every victim gone: objects and fds must be equal and RSS within 5%.
The steady guest's frame rate: median over 1 s windows, the lowest window, and the longest
stretch below half the median; and per kill, the second after it against the second before.

--kills N: kills after the warm-up's three (default 100).  --quick: three (CI, from
scripts/test.sh).  Logs in target/soak/; results
also in target/soak/results.json.
"""
import argparse
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as H  # noqa: E402
from harness import BOOT, CaseFailure  # noqa: E402

KINDS = ("transfer", "submit3d", "resize")
SIZES = ("1024x768", "800x600", "1600x900", "1280x720")
SAMPLE_S = 0.25
WLCLIENT = Path(__file__).resolve().parent / "wlclient.py"
# every victim QEMU: the D-Bus display with GL (resize; a 3D guest needs GL on its display), and
# its QMP where scanway's --guest victim=...,qmp= looks for it, whatever the round
VICTIM = {"dbus": "gl", "qmp_tag": "victim"}


class Sampler(threading.Thread):
    """The steady guest's flush count, every SAMPLE_S seconds, from `scanway list --json`."""

    def __init__(self, b):
        super().__init__(daemon=True)
        self.argv = [b.bin, "list", "--json", "--control", str(b.control)]
        self.env = b.env
        self.samples = []  # (monotonic s, flush count)
        self.list_ms = []  # how long each list took: the event loop's responsiveness
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                out = subprocess.run(self.argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=20,
                                     env=self.env).stdout
                count = H.scanout(json.loads(out), "steady", 0).get("flush_count", 0)
                self.samples.append((t, count))
                self.list_ms.append((time.monotonic() - t) * 1000)
            except (subprocess.TimeoutExpired, ValueError, CaseFailure):
                pass
            self.stop.wait(SAMPLE_S)

    def rate(self, t0, t1):
        """Flushes per second between t0 and t1 (the samples nearest inside)."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2 or inside[-1][0] - inside[0][0] < 0.5:
            return None
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    def windows(self, t0, t1):
        """1 s windows' rates from t0 to t1, every SAMPLE_S."""
        out, t = [], t0
        while t + 1 <= t1:
            r = self.rate(t, t + 1)
            if r is not None:
                out.append((t, r))
            t += SAMPLE_S
        return out


def objects(b, tag):
    out = json.loads(b.ctl("objects"))
    (b.ctx.dir / f"objects-{tag}.json").write_text(json.dumps(out, indent=1))
    return out


def victim_idle(b, n):
    """The victim's n-th VMM gone: scanway has dropped its resources and scanouts."""
    b.disconnected("victim", nth=n)
    g = H.guest_entry(b.list(), "victim")
    lit = [s for s in g.get("scanouts", []) if s.get("enabled")]
    if g.get("connected") or g.get("resources") or lit:
        raise CaseFailure(f"after the kill scanway still holds the victim: connected={g.get('connected')} "
                          f"resources={len(g.get('resources', []))} enabled scanouts={len(lit)}")


def exact(ctx, b, guest, name, size, tag, zero_copy=False):
    """The scanout of `name` shows the exact picture at `size`, flushed (zero-copy for 3D)."""
    ok = (lambda s: s.get("path") == "zero-copy") if zero_copy else None
    H.wait_flushed(ctx, b, name, 0, size=size, ok=ok, what=f"{name}'s picture at {size}")
    H.shoot_and_check(ctx, lambda p: b.shot_scanout(name, 0, p, guest), ctx.dir / f"{tag}.png", size=size)


def round_of(ctx, b, n, kind, rng, rootfs):
    """Boot the victim for `kind`, check its picture, kill it at a random moment; returns the
    kill's time and what it interrupted."""
    tag = f"v{n}"
    if kind == "transfer":
        g = ctx.guest(tag, "victim", "animate", frames=100000000, args="--still --redraw", **VICTIM)
        line = g.wait(r"^GUEST-ANIMATE-START (\d+x\d+).*$", ctx.deadline.left(BOOT), "GUEST-ANIMATE-START")
        exact(ctx, b, g, "victim", line.group(1), tag)
        what = "page flips with full-frame transfers"
    elif kind == "submit3d":
        g = ctx.guest(tag, "victim", "gles-spin", rootfs=rootfs, mem="1G", **VICTIM)
        line = g.wait(r"^GUEST-GLES-READY (\d+x\d+).*$", ctx.deadline.left(BOOT + 60), "GUEST-GLES-READY")
        if "virgl" not in line.group(0):
            raise CaseFailure(f"{tag}: not rendered through virgl: {line.group(0)}")
        exact(ctx, b, g, "victim", line.group(1), tag, zero_copy=True)
        what = "GLES frames (SUBMIT_3D, fences pending)"
    else:
        g = ctx.guest(tag, "victim", "follow", **VICTIM)
        line = g.wait(r"^GUEST-PATTERN-READY (\d+x\d+).*$", ctx.deadline.left(BOOT), "GUEST-PATTERN-READY")
        b.wait_ui_linked("victim")
        exact(ctx, b, g, "victim", line.group(1), tag)
        size = rng.choice([s for s in SIZES if s != line.group(1)])
        b.ctl("window", "--guest", "victim", "--size", size)
        what = f"a resize to {size}"
    time.sleep(rng.uniform(0.0, 1.0) if kind == "resize" else rng.uniform(0.1, 2.0))
    t = time.monotonic()
    g.kill_qemu()
    ctx.guests.remove(g)
    victim_idle(b, n + 1)
    return t, what


def stopped_guest(ctx, b, n, sampler):
    """The victim's QEMU stopped (SIGSTOP: it answers nothing, its rings stand still) for 3 s,
    resumed, then stopped again and killed while stopped."""
    g = ctx.guest(f"v{n}-stopped", "victim", "animate", frames=100000000, args="--still --redraw", **VICTIM)
    line = g.wait(r"^GUEST-ANIMATE-START (\d+x\d+).*$", ctx.deadline.left(BOOT), "GUEST-ANIMATE-START")
    exact(ctx, b, g, "victim", line.group(1), f"v{n}-stopped")
    pid = g.qemu_pid()
    os.kill(pid, signal.SIGSTOP)
    t0 = time.monotonic()
    time.sleep(3)
    during = sampler.rate(t0, time.monotonic())
    os.kill(pid, signal.SIGCONT)
    before = H.mark_of(b, "victim")
    H.wait_flushed(ctx, b, "victim", 0, since=before, what="the victim's flips after SIGCONT")
    exact(ctx, b, g, "victim", line.group(1), f"v{n}-resumed")
    os.kill(pid, signal.SIGSTOP)
    time.sleep(0.5)
    g.kill_qemu()  # SIGKILL ends a stopped process too
    ctx.guests.remove(g)
    victim_idle(b, n + 1)
    return during


def flood_guest(ctx, b, sampler, tag, seconds):
    """The flood guest for `seconds`: its ioctl rate, the steady guest's rate before and during."""
    g = ctx.guest(tag, "flood", "flood")
    line = g.wait(r"^GUEST-FLOOD-READY (\d+x\d+).*$", ctx.deadline.left(BOOT), "GUEST-FLOOD-READY")
    t0 = time.monotonic()
    before = sampler.rate(t0 - 4, t0)
    g.wait(r"^GUEST-FLOOD n=\d+", ctx.deadline.left(10), "the flood's first count")
    first = int(re.findall(r"^GUEST-FLOOD n=(\d+)", g.serial_text(), re.M)[0])
    time.sleep(seconds)  # the flood's length (what is measured), not a wait for an event
    counts = [int(c) for c in re.findall(r"^GUEST-FLOOD n=(\d+)", g.serial_text(), re.M)]
    during = sampler.rate(t0 + 1, time.monotonic())
    # the data transferred is the picture: it must still be exact
    exact(ctx, b, g, "flood", line.group(1), tag)
    g.kill_qemu()
    ctx.guests.remove(g)
    b.disconnected("flood")
    rate = (counts[-1] - first) / (2 * (len(counts) - 1)) if len(counts) > 1 else 0
    return before, during, rate


def wayland_clients(ctx, b, rng, rounds):
    """Flooding clients killed at random moments, clients that never read, clients that die
    mid-request: scanway keeps running and lists none of them afterwards."""
    env = dict(b.env, WAYLAND_DISPLAY=b.wayland_display())
    killed = commits = 0
    for i in range(rounds):
        p = subprocess.Popen([sys.executable, str(WLCLIENT), "flood", "30"], env=env, stdout=subprocess.PIPE,
                             stderr=open(ctx.dir / f"wlclient-flood-{i}.log", "w"), text=True)
        if p.stdout.readline().strip() != "WLCLIENT-MAPPED":
            raise CaseFailure(f"flooding Wayland client {i} was not mapped (rc {p.wait()})")
        time.sleep(rng.uniform(0.1, 1.5))
        p.kill()
        p.wait()
        killed += 1
    for i in range(rounds):
        r = subprocess.run([sys.executable, str(WLCLIENT), "half"], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=30)
        if "WLCLIENT-MAPPED" not in r.stdout:
            raise CaseFailure(f"Wayland client dying mid-request {i}: {r.stdout.strip()[-200:]}")
    # finite: a client that floods for 2 s and exits, its commit count the figure
    r = subprocess.run([sys.executable, str(WLCLIENT), "flood", "2"], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=60)
    m = re.search(r"WLCLIENT-FLOOD commits=(\d+)", r.stdout)
    if not m:
        raise CaseFailure(f"flooding Wayland client: {r.stdout.strip()[-200:]}")
    commits = int(m.group(1))
    deaf = subprocess.Popen([sys.executable, str(WLCLIENT), "deaf", "200000"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    deaf_line = deaf.stdout.readline().strip()
    rss_deaf = objects(b, "deaf")["rss_bytes"]
    deaf.kill()
    deaf.wait()
    def gone():
        clients = b.list(quiet=True).get("clients")
        return not clients, clients
    H.wait_until(ctx, "no Wayland client listed", gone, timeout=20)
    return {"killed_mid_flood": killed, "died_mid_request": rounds, "commits_in_2s": commits,
            "deaf_client": deaf_line, "rss_with_deaf_client_mb": round(rss_deaf / 2**20, 1)}


def control_garbage(ctx, b, rng):
    """Garbage, idle and over-long requests on the control socket: `scanway list` still answers
    at once while 16 idle clients are connected, and every connection is closed in time."""
    path = str(b.control)
    replies = 0
    for i in range(50):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(path)
            s.sendall(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4096))) + b"\n")
            s.settimeout(10)
            try:
                if json.loads(s.recv(65536)).get("ok") is False:
                    replies += 1
            except ValueError:
                pass
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.settimeout(10)
        try:
            s.sendall(b"x" * (128 * 1024))
        except OSError:
            pass  # refused once it passed the limit
    idle = []
    for _ in range(24):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        idle.append(s)
    t = time.monotonic()
    try:
        b.list(quiet=True)
        capped = "answered"
    except CaseFailure:
        capped = "closed at once (16 open)"  # the cap: a 17th connection is closed at accept
    list_ms = (time.monotonic() - t) * 1000
    for s in idle:
        s.close()

    def served():
        try:
            return b.list(quiet=True) is not None, "served"
        except CaseFailure as e:
            return False, str(e)  # scanway has not yet seen every idle connection close
    H.wait_until(ctx, "the control socket serving again", served, timeout=15)
    return {"garbage_requests": 50, "error_replies": replies, "request_beside_24_idle": capped,
            "its_answer_ms": round(list_ms, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="one round of each kind, fewer clients (CI)")
    ap.add_argument("--backend-bin", default=str(H.DEFAULT_SCANWAY))
    a = ap.parse_args()
    kills = len(KINDS) if a.quick else max(a.kills, 1)
    rng = random.Random(a.seed)
    H.build_guest()
    rootfs = H.build_rootfs_3d()
    opts = SimpleNamespace(timeout_scale=1.0, backend_bin=str(Path(a.backend_bin).resolve()))
    ctx = H.Ctx("soak", opts, 900 + 90 * (kills + len(KINDS)), H.TARGET)
    results = {"kills_after_baseline": kills, "warm_up_kills": len(KINDS), "seed": a.seed}
    failure = None
    try:
        b = ctx.backend({"steady": 1, "victim": 1, "flood": 1}, ui_3d=("victim",), no_3d=("flood",))
        steady = ctx.steady_guest("steady", "steady")
        b.connected("steady")
        exact(ctx, b, steady, "steady", ctx.steady_size(steady), "steady")
        sampler = Sampler(b)
        sampler.start()
        kill_log = []
        t_start = time.monotonic()

        def kill_rounds(first, count):
            for n in range(first, first + count):
                kind = KINDS[n % len(KINDS)]
                t, what = round_of(ctx, b, n, kind, rng, rootfs)
                rss = objects(b, f"round-{n}")["rss_bytes"]
                kill_log.append({"n": n, "kind": kind, "t": t, "what": what, "rss_mb": round(rss / 2**20, 1)})
                print(f"  kill {len(kill_log)}/{warm + kills}: {kind:<8} during {what}; RSS {rss >> 20} MiB",
                      flush=True)
            return first + count

        def other_faults(n, short):
            """The stopped victim, the flood, Wayland clients, the control socket; returns the
            victim connections used."""
            results["steady_fps_while_victim_stopped"] = stopped_guest(ctx, b, n, sampler)
            before, during, rate = flood_guest(ctx, b, sampler, f"flood-{n}", 3 if short else 8)
            results["flood"] = {"steady_fps_before": before, "steady_fps_during": during, "ioctls_per_s": round(rate)}
            results["wayland"] = wayland_clients(ctx, b, rng, 1 if short else (3 if a.quick else 20))
            results["control"] = control_garbage(ctx, b, rng)
            return n + 1

        # warm-up: one round of each kind and every other fault once, so every cache (shaders,
        # the slots' windows and titles, the first Wayland client's) exists before the baseline
        warm = len(KINDS)
        n = kill_rounds(0, warm)
        n = other_faults(n, short=True)
        baseline = objects(b, "baseline")
        n = kill_rounds(n, kills)
        t_kills_end = time.monotonic()
        other_faults(n, short=False)
        # every connection of the campaign closed (the control socket's deadline is 5 s)
        def fds_back():
            fds = objects(b, "end")["fds"]
            return fds <= baseline["fds"], fds
        try:
            H.wait_until(ctx, "scanway's descriptors back to the baseline", fds_back, timeout=20)
        except CaseFailure:
            pass  # a leak: compared and reported below
        end = objects(b, "end")
        sampler.stop.set()
        sampler.join()
        rates = [r for _, r in sampler.windows(t_start, t_kills_end)]
        med = statistics.median(rates) if rates else 0
        dips, longest, run = 0, 0.0, 0.0
        for r in rates:
            if r < med / 2:
                run += SAMPLE_S
                longest = max(longest, run)
            else:
                dips += 1 if run else 0
                run = 0.0
        after_before = []
        for k in kill_log:
            before, after = sampler.rate(k["t"] - 1.5, k["t"]), sampler.rate(k["t"], k["t"] + 1.5)
            if before and after:
                after_before.append(after / before)
        results["steady"] = {
            "median_fps": round(med, 1), "lowest_1s_fps": round(min(rates), 1) if rates else None,
            "longest_below_half_s": longest, "after_over_before_kill_median": round(statistics.median(after_before), 3)
            if after_before else None, "after_over_before_kill_min": round(min(after_before), 3) if after_before else None,
            "list_ms_p50": round(statistics.median(sampler.list_ms), 1),
            "list_ms_max": round(max(sampler.list_ms), 1)}
        results["rss_mb_after_each_kill"] = [k["rss_mb"] for k in kill_log]
        results["objects"] = {"baseline": baseline, "end": end,
                              "rss_ratio": round(end["rss_bytes"] / baseline["rss_bytes"], 4)}
        problems = []
        if end["gl"]["textures"] != baseline["gl"]["textures"] or end["gl"]["buffers"] != baseline["gl"]["buffers"] \
                or end["gl"]["renderbuffers"] != baseline["gl"]["renderbuffers"]:
            problems.append(f"GL objects {baseline['gl']} -> {end['gl']}")
        if end["virgl_contexts"] != baseline["virgl_contexts"]:
            problems.append(f"virgl contexts {baseline['virgl_contexts']} -> {end['virgl_contexts']}")
        if end["fds"] != baseline["fds"]:
            problems.append(f"fds {baseline['fds']} -> {end['fds']}")
        if results["objects"]["rss_ratio"] > 1.05:
            problems.append(f"RSS {baseline['rss_bytes'] >> 20} -> {end['rss_bytes'] >> 20} MiB")
        if longest > 2.0:
            problems.append(f"the steady guest ran below half its median rate for {longest:.2f} s")
        if b.events("steady", "disconnected"):
            problems.append("the steady guest was disconnected")
        if problems:
            raise CaseFailure("; ".join(problems))
        ctx.finish(b, steady)
    except CaseFailure as e:
        failure = str(e)
    finally:
        ctx.close()
    results["failure"] = failure
    out = H.TARGET / "soak" / "results.json"
    out.write_text(json.dumps(results, indent=1, default=str))
    print(json.dumps(results, indent=1, default=str))
    if failure:
        print(f"FAIL: {failure} (logs: {ctx.dir})")
        return 1
    print(f"soak: {kills} kills survived; logs in {ctx.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
