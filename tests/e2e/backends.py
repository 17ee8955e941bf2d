"""The backends the suite drives: `Scanway` (scanway run, its control socket, its stdout
lines) and `CBackend` (QEMU's C vhost-user-gpu backend), and the listing helpers.  Part of
harness (re-exported there as H.Scanway, ...)."""
import json
import os
import re
import subprocess
import time
from pathlib import Path

from harness import *  # noqa: F401,F403  (the plumbing: Procs, LineLog, CaseFailure, ...)


SCANOUT_STATE = ("enabled", "width", "height", "resource_id", "format", "flush_count")


def guest_entry(listing, name):
    """Guest `name` of a `scanway list --json` listing."""
    for g in listing.get("guests", []):
        if g.get("name") == name:
            return g
    raise CaseFailure(f"scanway list: no guest {name}")


def scanout(listing, name, sid):
    """Scanout `sid` of guest `name` of a `scanway list --json` listing."""
    for s in guest_entry(listing, name).get("scanouts", []):
        if s.get("id") == sid:
            return s
    raise CaseFailure(f"scanway list: guest {name} has no scanout {sid}")


# --------------------------------------------------------------------- backends
class Scanway:
    kind = "scanway"
    force_heads = False  # scanway answers GET_DISPLAY_INFO itself: every output enabled

    def __init__(self, ctx, binary, *, backend="headless", size=None, env=None, stop_grace=15.0, extra=None,
                 run_args=()):
        self.ctx, self.bin, self.backend, self.size = ctx, str(binary), backend, size
        self.extra = extra or {}
        self.run_args = [str(a) for a in run_args]  # more `scanway run` options
        if "--attach-socket" not in self.run_args:
            # not the system-wide default: a case's scanway must not take VMs meant for another
            self.run_args += ["--attach-socket", str(ctx.tmp / "attach.sock")]
        self.control = ctx.tmp / "ctl.sock"
        self.env = dict(os.environ if env is None else env)
        xdg = ctx.tmp / "xdg"
        xdg.mkdir(mode=0o700, exist_ok=True)
        self.env["XDG_RUNTIME_DIR"] = str(xdg)
        self.env.setdefault("RUST_BACKTRACE", "1")
        self.stop_grace = stop_grace
        self.proc = self.out = None

    def start(self, guests):
        """guests: {name: (socket, outputs)}; returns once every guest listens."""
        argv = [self.bin, "run", "--backend", self.backend, "--control", self.control, *self.run_args]
        if os.environ.get("SCANWAY_E2E_RECORD"):
            # fuzz seeds: every guest's requests (scripts/record-seeds.sh)
            record = Path(os.environ["SCANWAY_E2E_RECORD"]) / self.ctx.name
            record.mkdir(parents=True, exist_ok=True)
            argv += ["--record-commands", str(record)]
        if self.size:
            argv += ["--size", self.size]
        for name, (sock, outputs) in guests.items():
            argv += ["--guest", f"{name}={sock}" + (f",outputs={outputs}" if outputs > 1 else "")
                     + self.extra.get(name, "")]
        self.proc = self.ctx.procs.spawn("scanway", argv, pipe_stdout=True,
                                         stderr=self.ctx.dir / "scanway.stderr.log", env=self.env)
        self.out = LineLog(self.proc.stdout, self.ctx.dir / "scanway.stdout.log")
        for name, (sock, _) in guests.items():
            try:
                m = self.out.wait(rf"^scanway: guest {re.escape(name)} listening on (.*)$",
                                  self.ctx.deadline.left(30), what=f"'guest {name} listening' line")
            except CaseFailure as e:
                if self.proc.poll() is None:
                    raise
                raise CaseFailure(f"scanway exited rc={self.proc.returncode} before listening for {name}"
                                  f"{self._stderr_tail()}") from e
            if m.group(1) != str(sock):
                raise CaseFailure(f"scanway listens for {name} on {m.group(1)}, asked for {sock}")
        return self

    def _events(self, name, event, nth, timeout):
        self.out.wait(rf"^scanway: guest {re.escape(name)} {event}$", self.ctx.deadline.left(timeout),
                      nth=nth, what=f"'guest {name} {event}' line #{nth}")

    def connected(self, name, nth=1, timeout=30):
        self._events(name, "connected", nth, timeout)

    def disconnected(self, name, nth=None, timeout=15):
        """Wait for the nth "disconnected" line (default: as many as "connected" lines)."""
        self._events(name, "disconnected", nth or self.events(name, "connected"), timeout)

    def wayland_display(self):
        """The name of scanway's Wayland socket (in its XDG_RUNTIME_DIR), from its stdout."""
        return self.out.wait(r"^scanway: wayland socket (\S+)$", self.ctx.deadline.left(10),
                             what="'wayland socket' line").group(1)

    def events(self, name, event):
        return self.out.count(rf"^scanway: guest {re.escape(name)} {event}$")

    def ctl(self, *args, timeout=60, quiet=False):
        """Run `scanway ARGS...` against this instance's control socket; returns its stdout.
        quiet: not logged when it succeeds (for polls: wait_until logs the outcome)."""
        argv = [self.bin, *args[:1], "--control", str(self.control), *args[1:]]
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=self.ctx.deadline.left(timeout), env=self.env)
        if not quiet or r.returncode != 0:
            self.ctx.log(f"$ {' '.join(argv)} -> rc {r.returncode}" + (f": {r.stderr.strip()}" if r.stderr.strip() else ""))
        if r.returncode != 0:
            raise CaseFailure(f"scanway {args[0]} failed (rc {r.returncode}): {r.stderr.strip()[-300:]}")
        return r.stdout

    def list(self, tag=None, quiet=False):
        out = self.ctl("list", "--json", quiet=quiet)
        if tag:
            (self.ctx.dir / f"list-{tag}.json").write_text(out)
        try:
            return json.loads(out)
        except ValueError as e:
            raise CaseFailure(f"scanway list --json is not JSON: {e}")

    def wait_ui_linked(self, name, timeout=30):
        """scanway's link to guest `name`'s QEMU D-Bus display is up; returns its state."""
        end = time.monotonic() + self.ctx.deadline.left(timeout)
        while True:
            ui = guest_entry(self.list(quiet=True), name).get("ui")
            if isinstance(ui, dict) and "linked" in ui:
                return ui
            if isinstance(ui, dict) and "failed" in ui:
                raise CaseFailure(f"scanway could not link to {name}'s QEMU D-Bus display: {ui['failed']}")
            if time.monotonic() > end:
                raise CaseFailure(f"scanway's link to {name}'s QEMU D-Bus display: {ui}")
            time.sleep(0.2)

    def shot_scanout(self, name, scanout, path, guest=None):
        self.ctl("screenshot", "--guest", name, "--scanout", str(scanout), "-o", str(path))

    def shot_output(self, path, guest=None):
        self.ctl("screenshot", "--output", "-o", str(path))

    def rearm(self, name):
        pass  # scanway keeps listening on its sockets

    def stop(self):
        """SIGTERM; scanway must exit 0 without a panic."""
        if self.proc is None:
            return
        if self.proc.poll() is not None:
            raise CaseFailure(f"scanway exited early (rc {self.proc.returncode})" + self._panic_note())
        rc = self.ctx.procs.stop(self.proc, "scanway", grace=self.stop_grace)
        self.ctx.log(f"scanway exited rc={rc}")
        if rc != 0:
            raise CaseFailure(f"scanway exited {rc} after SIGTERM" + self._panic_note())
        note = self._panic_note()
        if note:
            raise CaseFailure("scanway printed a panic" + note)

    def _stderr_tail(self):
        try:
            lines = (self.ctx.dir / "scanway.stderr.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return f": {' | '.join(lines[-2:])[:300]}" if lines else ""

    def _panic_note(self):
        # scanway has exited: its stdout ends once the reader has every line (a panic's too)
        if not self.out.wait_closed(5):
            self.ctx.log("scanway's stdout still open 5 s after it exited (a child holds it?)")
        text = self.out.text() + "\n" + (self.ctx.dir / "scanway.stderr.log").read_text(errors="replace")
        for ln in text.splitlines():
            if PANIC_RE.search(ln):
                return f": {ln.strip()[:200]}"
        return ""


class CBackend:
    """QEMU's C vhost-user-gpu backend, one process per guest socket."""
    kind = "c"
    force_heads = True  # it asks QEMU's UI, which (-display none) enables only output 0

    def __init__(self, ctx, binary=C_BACKEND_BIN):
        self.ctx, self.bin = ctx, binary
        self.procs, self.socks = {}, {}
        self.generation = {}

    def _spawn(self, name):
        sock = self.socks[name]
        try:
            os.unlink(sock)
        except FileNotFoundError:
            pass
        gen = self.generation.get(name, 0) + 1
        self.generation[name] = gen
        self.procs[name] = self.ctx.procs.spawn(f"vhost-user-gpu {name}", [self.bin, f"--socket-path={sock}"],
                                                stdout=self.ctx.dir / f"c-backend-{name}-{gen}.log")
        end = time.monotonic() + self.ctx.deadline.left(10)
        while not Path(sock).is_socket():
            if self.procs[name].poll() is not None or time.monotonic() > end:
                raise CaseFailure(f"C backend for {name} did not listen on {sock}")
            time.sleep(0.05)

    def start(self, guests):
        for name, (sock, _outputs) in guests.items():
            self.socks[name] = str(sock)
            self._spawn(name)
        return self

    def connected(self, name, nth=1, timeout=30):
        pass

    def disconnected(self, name, nth=None, timeout=15):
        pass

    def list(self, tag=None, quiet=False):
        return None  # no listing: see wait_flushed

    def shot_scanout(self, name, scanout, path, guest):
        guest.screendump(scanout, path)

    def shot_output(self, path, guest):
        guest.screendump(0, path)

    def rearm(self, name):
        """The C backend exits when its one connection ends: start a new one."""
        p = self.procs[name]
        try:
            p.wait(self.ctx.deadline.left(10))
        except subprocess.TimeoutExpired:
            self.ctx.log(f"C backend {name} still running after its QEMU died: stopping it")
            self.ctx.procs.stop(p, f"vhost-user-gpu {name}")
        self._spawn(name)

    def stop(self):
        for name, p in self.procs.items():
            self.ctx.procs.stop(p, f"vhost-user-gpu {name}", grace=5.0)


# ---------------------------------------------------------------------- checks
