#!/usr/bin/env python3
"""Input routes into a guest, measured in one run: key press to the guest's evdev event.

  tests/e2e/bench_input.py [--samples 200] [--backend-bin PATH] [--3d]

One guest runs gpu-test `input` (it prints every evdev event on the serial console) with
QEMU's D-Bus display, linked to scanway.  Key presses alternate between two routes:
  seat:  scanway's seat (a control-socket `input` request, the path winit/libinput events
         take) -> focus -> the UI worker -> QEMU's D-Bus `Keyboard.Press` -> virtio keyboard;
  qmp:   QMP `input-send-event` straight to QEMU (the baseline: no compositor; what a
         vhost-user-input device or a QMP route would add to at best).
The time is from the request leaving this process to the event's line appearing in the
serial log (polled every 0.5 ms); the serial path costs both routes the same, so the ratio
(seat / qmp) is what scanway's route adds.  With --3d the guest has virgl and QEMU's display
has gl=on (harness.DBUS_GL).  Prints p50/p99/max per route and their ratio.
"""
import argparse
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as H  # noqa: E402
from harness import CaseFailure  # noqa: E402

KEY_A = 30


def control(path, request):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        s.sendall(json.dumps(request).encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    r = json.loads(reply)
    if not r.get("ok"):
        raise CaseFailure(f"control {request['cmd']}: {r}")


class Qmp:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        end = time.monotonic() + 20
        while True:
            try:
                self.s.connect(str(path))
                break
            except OSError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)
        self.f = self.s.makefile("rwb")
        self.read()
        self.cmd({"execute": "qmp_capabilities"})

    def read(self):
        return json.loads(self.f.readline())

    def send(self, cmd):
        self.f.write(json.dumps(cmd).encode() + b"\n")
        self.f.flush()

    def cmd(self, cmd):
        self.send(cmd)
        while True:
            m = self.read()
            if "return" in m or "error" in m:
                return m


def key_event(down):
    return {"execute": "input-send-event", "arguments": {"events": [
        {"type": "key", "data": {"down": down, "key": {"type": "qcode", "data": "a"}}}]}}


def wait_count(serial, needle, n, timeout=10.0):
    """Monotonic time when `needle` occurs n times in the serial log."""
    end = time.monotonic() + timeout
    while True:
        if serial.read_bytes().count(needle) >= n:
            return time.monotonic()
        if time.monotonic() > end:
            raise CaseFailure(f"event {n} never reached the serial log")
        time.sleep(0.0005)


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=200, help="key presses per route (default %(default)s)")
    ap.add_argument("--backend-bin", default=str(H.DEFAULT_SCANWAY))
    ap.add_argument("--3d", dest="three_d", action="store_true", help="a guest with virgl (gl=on display)")
    a = ap.parse_args()
    opts = SimpleNamespace(timeout_scale=1.0, backend_bin=str(Path(a.backend_bin).resolve()), c_backend_bin=None)
    H.build_guest()
    ctx = H.Ctx("input-routes", opts, 120 + a.samples, H.TARGET / "bench")
    try:
        if a.three_d:
            b = ctx.backend({"g0": 1}, ui_3d=("g0",))
        else:
            b = ctx.backend({"g0": 1}, ui=("g0",))
        g = ctx.guest("g0", "g0", "input", dbus="gl" if a.three_d else True)
        b.connected("g0")
        g.wait(r"^GUEST-INPUT-READY\b", ctx.deadline.left(120), "GUEST-INPUT-READY")
        b.wait_ui_linked("g0")
        win = H.scanout(b.list(), "g0", 0)["window"]
        b.ctl("input", f"move:{win['x'] + 10},{win['y'] + 10}", "click:left")  # focus g0
        text = g.serial_text()
        dev = next(ln.split()[1] for ln in text.splitlines()
                   if ln.startswith("GUEST-INPUT-DEV") and "Virtio Keyboard" in ln)
        needle = f"GUEST-INPUT {dev} type=1 code={KEY_A} value=1".encode()
        needle_up = f"GUEST-INPUT {dev} type=1 code={KEY_A} value=0".encode()
        qmp = Qmp(ctx.qmp("g0"))
        seen = g.serial.read_bytes().count(needle)
        seen_up = g.serial.read_bytes().count(needle_up)
        times = {"seat": [], "qmp": []}
        for i in range(a.samples * 2):
            route = "seat" if i % 2 == 0 else "qmp"
            t0 = time.monotonic()
            if route == "seat":
                control(b.control, {"cmd": "input", "actions": [{"key": {"code": KEY_A, "pressed": True}}]})
            else:
                qmp.send(key_event(True))
            t1 = wait_count(g.serial, needle, seen + 1)
            seen += 1
            times[route].append((t1 - t0) * 1000)
            if route == "seat":
                control(b.control, {"cmd": "input", "actions": [{"key": {"code": KEY_A, "pressed": False}}]})
            else:
                qmp.send(key_event(False))
            wait_count(g.serial, needle_up, seen_up + 1)  # the next press once the guest saw this release
            seen_up += 1
        qmp.s.close()
        kind = "3D (virgl, gl=on)" if a.three_d else "2D"
        print(f"bench input: key press -> guest evdev event, {a.samples} samples per route, {kind} guest, "
              f"TCG, {os.cpu_count()} cores")
        for route, v in times.items():
            print(f"  {route:5} p50 {statistics.median(v):6.2f} ms  p99 {pct(v, 99):6.2f} ms  max {max(v):6.2f} ms")
        p50 = statistics.median(times["seat"]) / statistics.median(times["qmp"])
        print(f"  ratio seat/qmp p50 {p50:.2f}x, p99 {pct(times['seat'], 99) / pct(times['qmp'], 99):.2f}x")
        g.quit()
        b.disconnected("g0")
        b.stop()
        return 0
    except CaseFailure as e:
        print(f"bench input failed: {e} (logs: {ctx.dir})")
        return 1
    finally:
        ctx.close()


if __name__ == "__main__":
    sys.exit(main())
