"""Plumbing shared by the end-to-end suite (run.py) and the benchmark (bench.py).

Python 3 standard library only.  Everything started here is registered in a
`Procs` and ended by PID (SIGTERM, then SIGKILL) when the case ends, also on
failure or Ctrl-C.

Backends (what serves the vhost-user-gpu sockets):
  Scanway   `scanway run ...`; screenshots with `scanway screenshot`, state with
            `scanway list --json`, connection events from its stdout lines.
  CBackend  QEMU's C backend, one `/usr/lib/qemu/vhost-user-gpu --socket-path=...`
            per guest socket (it serves one connection, then exits); screenshots
            come from QMP `screendump` of the guest's QEMU (the C backend forwards
            scanouts to QEMU); it has no listing and no output of its own.
Guests are booted with tests/guest/run-guest.sh.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KIT = REPO / "tests" / "guest"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target").resolve()
GUEST_OUT = TARGET / "guest"
RUN_GUEST = KIT / "run-guest.sh"
CHECK_PATTERN = KIT / "check-pattern.py"
C_BACKEND_BIN = "/usr/lib/qemu/vhost-user-gpu"
DEFAULT_SCANWAY = TARGET / "release" / "scanway"

sys.dont_write_bytecode = True
sys.path.insert(0, str(KIT))
from qmp import QMP  # noqa: E402  (tests/guest/qmp.py)

# Lines a test guest prints when its picture is up (or its test is done).
READY_RE = r"^GUEST-(PATTERN-READY|MULTIHEAD-READY|ANIMATE-DONE|FBPATTERN-READY|EDID-DONE|CURSOR-READY|GLES-READY)\b.*$"
BOOT = 120  # seconds to the READY line (boot is ~5-10 s under TCG here)
PANIC_RE = re.compile(r"panicked at|RUST_BACKTRACE|stack backtrace:")


class CaseFailure(Exception):
    """A check failed; the message is the one-line reason."""


class Skip(Exception):
    """The case does not apply to this backend."""


def _run_kit(script):
    """Run a kit build script with target/guest as its output; returns its stdout, or raises
    with its stderr."""
    r = subprocess.run([str(KIT / script), str(GUEST_OUT)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stderr)
        raise CaseFailure(f"tests/guest/{script} failed (rc {r.returncode})")
    return r.stdout


def build_rootfs_3d():
    """Build (or reuse) the 3D guests' root filesystem (Mesa, kmscube) in target/guest."""
    return Path(_run_kit("build-rootfs-3d.sh").strip().splitlines()[-1])


def build_rootfs_desktop():
    """Build (or reuse) the desktop guests' root filesystem (weston, Xorg) in target/guest."""
    return Path(_run_kit("build-rootfs-desktop.sh").strip().splitlines()[-1])


def build_guest():
    """Build (or reuse) the guest kernel + initramfs in target/guest."""
    try:
        _run_kit("build-guest.sh")
    except CaseFailure as e:
        raise SystemExit(str(e))
    return GUEST_OUT


# --------------------------------------------------------------------- logging
class CaseLog:
    """Per-case directory target/e2e/<case>/ with the driver's own step log."""

    def __init__(self, root, name):
        self.dir = Path(root) / name
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.t0 = time.monotonic()
        self._f = open(self.dir / "case.log", "w", buffering=1)

    def __call__(self, msg):
        self._f.write(f"[{time.monotonic() - self.t0:7.2f}s] {msg}\n")

    def close(self):
        self._f.close()


class Deadline:
    def __init__(self, seconds):
        self.end = time.monotonic() + seconds
        self.seconds = seconds

    def left(self, cap=None):
        left = self.end - time.monotonic()
        if left <= 0:
            raise CaseFailure(f"case timeout ({self.seconds:.0f}s) reached")
        return left if cap is None else min(left, cap)


# ------------------------------------------------------------------- processes
class Procs:
    """Processes started by a case, ended by PID in reverse start order."""

    def __init__(self, log):
        self.log = log
        self.items = []   # (name, Popen)
        self.extra = []   # (name, pid, cmdline substring): not our children (QEMU)

    def spawn(self, name, argv, *, stdout=None, stderr=None, env=None, pipe_stdout=False):
        self.log(f"start {name}: {' '.join(str(a) for a in argv)}")
        out = subprocess.PIPE if pipe_stdout else (open(stdout, "wb") if stdout else subprocess.DEVNULL)
        err = open(stderr, "wb") if stderr else subprocess.STDOUT if stdout else subprocess.DEVNULL
        p = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                             env=env, start_new_session=True)
        for f in (out, err):
            if hasattr(f, "close") and f not in (subprocess.PIPE, subprocess.STDOUT):
                f.close()
        self.items.append((name, p))
        self.log(f"{name}: pid {p.pid}")
        return p

    def adopt(self, name, pid, marker):
        """Also end pid at cleanup if it is still there and its command line
        holds marker (a path unique to this case, so a reused pid is spared)."""
        self.extra.append((name, pid, marker))

    def stop(self, p, name="?", sig=signal.SIGTERM, grace=10.0):
        """Signal p (by PID), wait up to grace seconds, then SIGKILL.  Returns rc."""
        if p.poll() is None:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                self.log(f"{name} (pid {p.pid}) still running {grace:.0f}s after signal {sig}: SIGKILL")
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
        return p.returncode

    def cleanup(self):
        for name, p in reversed(self.items):
            if p.poll() is None:
                self.stop(p, name, grace=5.0)
        for name, pid, marker in self.extra:
            if pid_is(pid, marker):
                self.log(f"kill leftover {name} pid {pid}")
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def pid_is(pid, marker):
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


# --------------------------------------------------------------------- figures
# The figures the suite and the benchmarks read (fps, CPU time), in one place: run.py,
# bench.py, and scripts/bench-3d.sh and scripts/device-bench-3d.sh through this file's
# command line (see main below).
CLK_TCK = os.sysconf("SC_CLK_TCK")
KMSCUBE_RE = r"Rendered (\d+) frames in ([\d.]+) sec \(([\d.]+) fps\)"


def cpu_ticks(pid):
    """utime + stime of a process (all its threads), in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def tree(pid):
    """`pid` and its child processes (one level: scanway and its 3D workers)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2:].split()[1]) == pid:
            kids.append(int(stat.parent.name))
    return [pid] + kids


def tree_cpu_ticks(pid):
    """cpu_ticks of `pid` and its children (tree), summed."""
    return sum(cpu_ticks(p) for p in tree(pid))


def tree_rss_kib(pid):
    """Resident memory of `pid` and its children (tree), KiB."""
    total = 0
    for p in tree(pid):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def cpu_ms_per_frame(ticks, frames):
    """CPU time of `ticks` clock ticks (cpu_ticks differences) per frame, in milliseconds."""
    return ticks * 1000 / CLK_TCK / frames


def cpu_seconds(ticks):
    return ticks / CLK_TCK


def figures(line):
    """{name: text} of the NAME=VALUE figures of a guest's result line: GUEST-ANIMATE-DONE,
    GUEST-TTY-FRAMES (frames=, seconds=, fps=, ...)."""
    return dict(re.findall(r"\b(\w+)=([\w.]+)", line))


def kmscube_fps(text):
    """kmscube's last "Rendered N frames in S sec (F fps)" report in `text` (frames since it
    began rendering): F as text, or None."""
    reports = re.findall(KMSCUBE_RE, text)
    return reports[-1][2] if reports else None


def glmark2_results(text):
    """glmark2's results in a serial log, as lines: "SCENE FPS" (SCENE like "[build]
    duration=5:use-vbo=true"), then "score N", "size WxH", "renderer R" where present."""
    out = []
    for line in text.replace("\r", "").splitlines():
        m = re.match(r"^glmark2: (\[[a-z-]*\] \S*): FPS: (\d+) ", line)
        if m:
            out.append(f"{m.group(1)} {m.group(2)}")
            continue
        for key, regex in (("score", r"^glmark2: *glmark2 Score: *(\d+)"),
                           ("size", r"^glmark2: *Surface Size: *([0-9x]*)"),
                           ("renderer", r"^glmark2: *GL_RENDERER: *(.*)")):
            m = re.match(regex, line)
            if m:
                out.append(f"{key} {m.group(1)}")
    return out


class LineLog:
    """Reads a child's stdout line by line into memory and a log file."""

    def __init__(self, stream, path):
        self.lines = []
        self.closed = False
        self.cv = threading.Condition()
        self._f = open(path, "w", buffering=1)
        self._stream = stream
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        for raw in iter(self._stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\r\n")
            with self.cv:
                self.lines.append(line)
                self._f.write(line + "\n")
                self.cv.notify_all()
        with self.cv:
            self.closed = True
            self.cv.notify_all()

    def text(self):
        with self.cv:
            return "\n".join(self.lines)

    def wait_closed(self, timeout):
        """Wait until the stream ended (every line read); returns whether it did."""
        end = time.monotonic() + timeout
        with self.cv:
            while not self.closed:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.cv.wait(left)
            return True

    def count(self, regex):
        with self.cv:
            return sum(1 for ln in self.lines if re.search(regex, ln))

    def wait(self, regex, timeout, nth=1, what="line"):
        """Wait until the nth line matching regex; returns its match."""
        end = time.monotonic() + timeout
        with self.cv:
            while True:
                seen = 0
                for ln in self.lines:
                    m = re.search(regex, ln)
                    if m:
                        seen += 1
                        if seen == nth:
                            return m
                if self.closed:
                    raise CaseFailure(f"output ended (process exited) before {what}")
                left = end - time.monotonic()
                if left <= 0:
                    raise CaseFailure(f"no {what} within {timeout:.0f}s")
                self.cv.wait(left)


# ------------------------------------------------------------------------ guest
# QEMU's D-Bus display for a guest with virgl: QEMU refuses a GL console on a display without
# GL, and `gl=on` opens a render node for GBM/EGL.  A character device that is not a DRM node
# makes Mesa's GBM fall back to its software screen (this host has no /dev/dri); QEMU never
# draws with it, since scanway shows the scanouts itself.  README "3D guests: input and resize".
DBUS_GL = "dbus,p2p=yes,gl=on,rendernode=/dev/null"


class Guest:
    """One QEMU, booted by run-guest.sh against a vhost-user-gpu socket."""

    def __init__(self, ctx, tag, socket, test, *, mode=None, frames=None, hold=0, outputs=1,
                 force_heads=True, reconnect_ms=None, args=None, timeout=300, rootfs=None, mem=None,
                 dbus=False, builtin=None, qemu_args=(), ready=None, qmp_tag=None):
        """dbus: QEMU's D-Bus display (scanway links to it: resize, input) and the virtio
        keyboard and tablet; dbus="gl" gives that display GL (`gl=on`), which QEMU needs for
        a guest with virgl: see DBUS_GL.  ready: run-guest.sh's --ready (the line that makes
        its exit status 0 when QEMU is quit), for tests whose line its default does not know.
        qmp_tag: the QMP socket of that tag instead of this guest's own (a new QEMU where
        scanway's `qmp=` of an earlier one points)."""
        self.ctx, self.tag, self.socket, self.test = ctx, tag, socket, test
        self.name = Path(socket).stem if socket else tag  # the backend's name for this guest
        self.workdir = ctx.dir / tag
        self.qmp = ctx.qmp(qmp_tag or tag)
        self.serial = self.workdir / "serial.log"
        argv = [RUN_GUEST, "--test", test, "--out", GUEST_OUT,
                "--workdir", self.workdir, "--qmp", self.qmp, "--timeout", str(int(timeout)), "--quiet"]
        # no socket: QEMU's own device `builtin` (virtio-gpu-pci: a KMS device in the guest)
        argv += ["--builtin", builtin] if builtin else ["--socket", socket]
        for a in qemu_args:
            argv += ["--qemu-arg", a]
        if hold is not None:
            argv += ["--hold", str(hold)]
        if mode:
            argv += ["--mode", mode]
        if frames:
            argv += ["--frames", str(frames)]
        if outputs > 1:
            argv += ["--outputs", str(outputs)]
            if not force_heads:
                argv.append("--no-force-heads")
        if reconnect_ms is not None:
            argv += ["--reconnect-ms", str(reconnect_ms)]
        if args:
            argv += ["--args", args]
        if ready:
            argv += ["--ready", ready]
        if rootfs:
            argv += ["--rootfs", rootfs]
        if mem:
            argv += ["--mem", mem]
        if dbus:
            # QEMU's D-Bus display (scanway links to it over QMP: resize, input) and the guest's
            # input devices (virtio keyboard and tablet)
            argv += ["--display", DBUS_GL if dbus == "gl" else "dbus,p2p=yes"]
            for dev in ("virtio-keyboard-pci", "virtio-tablet-pci"):
                argv += ["--qemu-arg", "-device", "--qemu-arg", dev]
        self.argv = argv
        self.proc = None
        self._qemu_pid = None

    def start(self):
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = self.ctx.procs.spawn(f"run-guest {self.tag}", self.argv,
                                         stdout=self.ctx.dir / f"run-guest-{self.tag}.log")
        return self

    def serial_text(self):
        try:
            return self.serial.read_text(errors="replace")
        except OSError:
            return ""

    def qemu_pid(self, timeout=10):
        if self._qemu_pid:
            return self._qemu_pid
        end = time.monotonic() + timeout
        pidfile = self.workdir / "qemu.pid"
        while True:
            try:
                self._qemu_pid = int(pidfile.read_text().strip())
                self.ctx.procs.adopt(f"qemu {self.tag}", self._qemu_pid, str(self.serial))
                return self._qemu_pid
            except (OSError, ValueError):
                if self.proc.poll() is not None or time.monotonic() > end:
                    break
                time.sleep(0.05)
        raise CaseFailure(f"{self.tag}: no QEMU pid ({self._why_dead()})")

    def _why_dead(self):
        log = self.ctx.dir / f"run-guest-{self.tag}.log"
        try:
            tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-3:]
        except OSError:
            tail = []
        return f"run-guest exited rc={self.proc.returncode}: " + " | ".join(tail)

    def wait(self, regex, timeout, what=None):
        """Wait for a serial line matching regex (multiline); fail early on
        GUEST-ERROR, a kernel panic, or QEMU exiting."""
        what = what or regex
        end = time.monotonic() + timeout
        while True:
            text = self.serial_text()
            m = re.search(regex, text, re.M)
            if m:
                return m
            bad = re.search(r"^GUEST-ERROR.*$|Kernel panic.*$", text, re.M)
            if bad:
                raise CaseFailure(f"{self.tag}: {bad.group(0).strip()}")
            if self.proc.poll() is not None:
                m = re.search(regex, self.serial_text(), re.M)
                if m:
                    return m
                raise CaseFailure(f"{self.tag}: guest ended before {what} ({self._why_dead()})")
            if time.monotonic() > end:
                last = " | ".join(text.strip().splitlines()[-3:])
                raise CaseFailure(f"{self.tag}: no {what} within {timeout:.0f}s (serial: {last})")
            time.sleep(0.05)

    def wait_ready(self, timeout):
        line = self.wait(READY_RE, timeout, "READY/DONE line").group(0).strip()
        self.ctx.log(f"{self.tag}: {line}")
        return line

    def screendump(self, head, path):
        q = QMP(str(self.qmp))
        try:
            q.cmd("screendump", filename=str(path), format="png", device="gpu0", head=int(head))
        finally:
            q.sock.close()

    def quit(self, grace=20.0):
        """QMP quit, then wait for run-guest.sh; returns its rc."""
        if self.proc.poll() is None:
            try:
                QMP(str(self.qmp), timeout=5, connect_timeout=2).cmd("quit")
            except (OSError, EOFError, RuntimeError) as e:
                self.ctx.log(f"{self.tag}: QMP quit failed: {e}")
        try:
            return self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            return self.ctx.procs.stop(self.proc, f"run-guest {self.tag}")

    def kill_qemu(self, grace=20.0):
        """SIGKILL QEMU (the VM dies without any goodbye on the socket)."""
        pid = self.qemu_pid()
        self.ctx.log(f"{self.tag}: SIGKILL QEMU pid {pid}")
        os.kill(pid, signal.SIGKILL)
        try:
            return self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            return self.ctx.procs.stop(self.proc, f"run-guest {self.tag}")


# ------------------------------------------------------------------------ case
class Ctx:
    """What a case gets: its log dir, a temp dir for sockets, its processes."""

    def __init__(self, name, opts, timeout, root, c_mode=False):
        self.name, self.opts = name, opts
        self.log = CaseLog(root, name)
        self.dir = self.log.dir
        self.tmp = tmpdir()
        self.procs = Procs(self.log)
        self.deadline = Deadline(timeout * opts.timeout_scale)
        self.c_mode = c_mode
        self.guests = []

    def sock(self, name):
        return self.tmp / f"{name}.sock"

    def qmp(self, tag):
        """The QMP socket of guest `tag` (see Guest)."""
        return self.tmp / f"qmp-{tag}.sock"

    def backend(self, guests, ui=(), ui_3d=(), no_3d=(), isolated=(), **kw):
        """Start the backend for {name: outputs}; returns it once it listens.  Guests named in
        `ui` are linked to their QEMU's D-Bus display (QMP of the guest tagged like the name;
        start those guests with dbus=True) and get no 3D; guests in `ui_3d` are linked the
        same way and keep 3D (start them with dbus="gl"); guests in `no_3d` get no 3D and no link;
        guests in `isolated` get their 3D in a worker process (3d=isolated)."""
        spec = {n: (self.sock(n), outputs) for n, outputs in guests.items()}
        extra = {n: f",qmp={self.qmp(n)},3d=off" for n in ui}
        extra.update({n: f",qmp={self.qmp(n)}" for n in ui_3d})
        extra.update({n: ",3d=off" for n in no_3d})
        extra.update({n: ",3d=isolated" for n in isolated})
        if extra:
            kw["extra"] = extra
        if self.c_mode:  # kw (output size, winit) only concerns scanway
            b = CBackend(self, self.opts.c_backend_bin)
        else:
            b = Scanway(self, self.opts.backend_bin, **kw)
        return b.start(spec)

    def finish(self, backend, *guests):
        """Quit the guests over QMP (run-guest.sh must then exit 0), wait for the
        backend to see them go, and stop it (scanway must exit 0, no panic)."""
        for g in guests:
            rc = g.quit()
            self.log(f"{g.tag}: run-guest rc={rc}")
            if rc != 0:
                raise CaseFailure(f"{g.tag}: run-guest.sh exited {rc} (see {g.serial})")
        for name in sorted({g.name for g in guests}):
            backend.disconnected(name)
        backend.stop()

    def guest(self, tag, sock_name, test, **kw):
        # run-guest.sh's own timeout is only a backstop behind the case's
        kw.setdefault("timeout", self.deadline.left() + 30)
        g = Guest(self, tag, self.sock(sock_name) if sock_name else None, test, **kw).start()
        self.guests.append(g)
        return g

    def steady_guest(self, tag, sock_name):
        """The neighbour of the hostile-guest runs: a 2D guest flipping its exact picture at
        60 fps (1024x768) for as long as the case lasts, whose frame rate and picture faults
        elsewhere must not disturb.  Its size comes with steady_size()."""
        return self.guest(tag, sock_name, "animate", mode="1024x768", frames=100000000,
                          args="--still --interval 16", ready=r"^GUEST-ANIMATE-START")

    def steady_size(self, g):
        """Wait for steady_guest `g`'s first frame; returns its size (WxH)."""
        return g.wait(r"^GUEST-ANIMATE-START (\d+x\d+)", self.deadline.left(BOOT), f"{g.tag}'s start").group(1)

    def close(self):
        for g in self.guests:  # so that a QEMU outliving its run-guest.sh is ended too
            try:
                g.qemu_pid(timeout=0)
            except CaseFailure:
                pass
        self.procs.cleanup()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.log.close()


# what must not change on a guest's scanout while another guest comes and goes
# (its window's position may: a compositor may re-arrange its windows)
# The backends (Scanway, CBackend) and the picture checks and waits live in backends.py and
# checks.py; they are re-exported here so that cases and benchmarks use one namespace, H.
# (Not when this file runs as the figures command: those need neither.)
if __name__ != "__main__":
    from backends import *  # noqa: E402,F401,F403
    from checks import *  # noqa: E402,F401,F403


def main(argv):
    """The figures for shell scripts: `harness.py FIGURE ARGS...`, one value (or line) printed.
      cpu-ticks PID                utime + stime of PID, clock ticks
      tree-cpu-ticks PID           the same of PID and its children (scanway and its 3D workers)
      tree-rss-kib PID             resident memory of PID and its children, KiB
      cpu-ms-per-frame TICKS N     TICKS of CPU time per frame, ms (2 decimals)
      cpu-seconds TICKS            TICKS of CPU time, s (1 decimal)
      kmscube-fps FILE             kmscube's last fps report in FILE (nothing if none)
      glmark2 FILE                 glmark2's results in FILE (glmark2_results)"""
    cmds = {
        "cpu-ticks": lambda pid: cpu_ticks(int(pid)),
        "tree-cpu-ticks": lambda pid: tree_cpu_ticks(int(pid)),
        "tree-rss-kib": lambda pid: tree_rss_kib(int(pid)),
        "cpu-ms-per-frame": lambda ticks, n: f"{cpu_ms_per_frame(int(ticks), int(n)):.2f}",
        "cpu-seconds": lambda ticks: f"{cpu_seconds(int(ticks)):.1f}",
        "kmscube-fps": lambda path: kmscube_fps(Path(path).read_bytes().decode(errors="replace")) or "",
        "glmark2": lambda path: "\n".join(glmark2_results(Path(path).read_bytes().decode(errors="replace"))),
    }
    if len(argv) < 2 or argv[1] not in cmds:
        sys.stderr.write(main.__doc__.split("\n", 1)[1] + "\n")
        return 2
    try:
        value = str(cmds[argv[1]](*argv[2:]))
    except (TypeError, ValueError, OSError) as e:
        sys.stderr.write(f"harness.py {argv[1]}: {e}\n")
        return 2
    if value:
        print(value)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
