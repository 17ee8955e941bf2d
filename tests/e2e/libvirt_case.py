"""The `libvirt` e2e case: a real libvirtd (started here when none runs) picks scanway as a
domain's vhost-user GPU backend from a JSON descriptor and starts `scanway --fd=N --virgl`,
which hands the VM to the running scanway through its attach socket.  Checked: the guest's
picture is exact in scanway's screenshot, input and resize go through libvirt's D-Bus display
route (`virDomainOpenGraphicsFD`), `virsh destroy` closes the guest's window and ends the
backend process while a second guest is untouched, and `virsh start` shows it again.

Needs root (libvirt's system instance), libvirtd, virtlogd and virsh (Debian packages
libvirt-daemon, libvirt-daemon-driver-qemu, libvirt-clients; scripts/install-deps.sh --test).
"""
import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import harness as H
from harness import CaseFailure, Skip

URI = "qemu:///system"
DOMAIN = "scanway-e2e"
# libvirt reads descriptors from /usr/share/qemu/vhost-user and /etc/qemu/vhost-user, sorted
# by file name: this one comes before QEMU's own 50-qemu-gpu.json
DESCRIPTOR = Path("/etc/qemu/vhost-user/10-scanway-e2e.json")
ATTACH = Path("/run/scanway/attach.sock")
BOOT = 120


def virsh(ctx, *args, check=True, timeout=60):
    argv = ["virsh", "-q", "-c", URI, *args]
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=ctx.deadline.left(timeout))
    ctx.log(f"$ {' '.join(argv)} -> rc {r.returncode} {r.stdout.strip()[:200]} {r.stderr.strip()[:300]}")
    if check and r.returncode != 0:
        raise CaseFailure(f"virsh {args[0]} failed: {r.stderr.strip()[-300:]}")
    return r


class Libvirt:
    """libvirtd and virtlogd for the case: the running ones, else started here (foreground,
    clean environment: libvirtd passes its environment on to the processes it starts) and
    stopped afterwards."""

    def __init__(self, ctx):
        self.ctx, self.started = ctx, []

    def up(self):
        for tool in ("libvirtd", "virtlogd", "virsh"):
            if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
                raise Skip(f"{tool} missing (scripts/install-deps.sh --test installs libvirt)")
        if os.geteuid() != 0:
            raise Skip("needs root (libvirt's system instance)")
        self._kvm_as_udev_leaves_it()
        if self._answers():
            self.ctx.log("libvirtd already running")
            return self
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
        for daemon in ("virtlogd", "libvirtd"):
            path = shutil.which(daemon) or f"/usr/sbin/{daemon}"
            self.started.append((daemon, self.ctx.procs.spawn(daemon, [path], env=env,
                                                              stdout=self.ctx.dir / f"{daemon}.log")))
        end = time.monotonic() + self.ctx.deadline.left(30)
        while not self._answers():
            if time.monotonic() > end:
                raise CaseFailure("libvirtd did not answer within 30 s (see libvirtd.log)")
            time.sleep(0.2)
        return self

    def _kvm_as_udev_leaves_it(self):
        """/dev/kvm as Debian's udev rules leave it (0660, group kvm).  On a machine without
        udev it is root-only: libvirt's QEMU probe (as root) then finds KVM and its later check
        (as the qemu user) does not, so it calls its capabilities cache outdated and probes
        QEMU again at every define and start (80 s each on this 2-core machine)."""
        kvm = Path("/dev/kvm")
        try:
            st = kvm.stat()
        except OSError:
            return
        if st.st_mode & 0o060 != 0o060:
            shutil.chown(kvm, group="kvm")
            os.chmod(kvm, 0o660)
            self.ctx.log("/dev/kvm: group kvm, mode 0660 (as udev would)")

    def _answers(self):
        r = subprocess.run(["virsh", "-c", URI, "version"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=30)
        return r.returncode == 0

    def down(self):
        # libvirtd can take 30 s to end on SIGTERM here: give it 5, then SIGKILL
        for name, p in reversed(self.started):
            self.ctx.procs.stop(p, name, grace=5.0)


def domain_xml(serial, boot):
    """The test domain: the kit's guest kernel and initramfs (in `boot`) running gpu-test follow."""
    out = boot
    return f"""<domain type='qemu'>
  <name>{DOMAIN}</name>
  <memory unit='MiB'>512</memory>
  <vcpu>1</vcpu>
  <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{out}/vmlinuz</kernel>
    <initrd>{out}/initramfs.cpio.gz</initrd>
    <cmdline>console=ttyS0 panic=-1 loglevel=4 vt.global_cursor_default=0 guest.test=follow guest.hold=0</cmdline>
  </os>
  <cpu mode='custom'><model>qemu64</model></cpu>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <devices>
    <serial type='file'><source path='{serial}'/><target port='0'/></serial>
    <graphics type='dbus' p2p='yes'><gl enable='yes' rendernode='/dev/null'/></graphics>
    <video>
      <model type='virtio' heads='1'><acceleration accel3d='yes'/></model>
      <driver name='vhostuser'/>
    </video>
    <input type='keyboard' bus='virtio'/>
    <input type='tablet' bus='virtio'/>
  </devices>
</domain>
"""


def backend_processes():
    """(pid, user) of every `scanway --fd=...` process."""
    r = subprocess.run(["ps", "-eo", "pid=,user:32=,args="], stdout=subprocess.PIPE, text=True)
    found = []
    for line in r.stdout.splitlines():
        pid, user, args = line.split(None, 2)
        if re.search(r"\bscanway --fd=\d+", args):
            found.append((int(pid), user))
    return found


def answers(path):
    """Whether something accepts connections on the Unix socket `path`."""
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


def wait_serial(ctx, path, regex, what, timeout=BOOT):
    end = time.monotonic() + ctx.deadline.left(timeout)
    while True:
        try:
            m = re.search(regex, path.read_text(errors="replace"), re.M)
        except OSError:
            m = None
        if m:
            return m
        if time.monotonic() > end:
            raise CaseFailure(f"no {what} on the libvirt guest's serial console ({path})")
        time.sleep(0.2)


def case_libvirt(ctx):
    if ctx.c_mode:
        raise Skip("needs scanway")
    lv = Libvirt(ctx).up()
    if answers(ATTACH):
        raise CaseFailure(f"another scanway listens on {ATTACH}: stop it for this case")
    details = []
    shared = ctx.tmp / "libvirt"  # QEMU runs as libvirt-qemu: it must reach the serial log
    shared.mkdir(mode=0o777)
    os.chmod(ctx.tmp, 0o711)
    os.chmod(shared, 0o777)
    serial = shared / "serial.log"
    # what libvirt-qemu runs and reads must be reachable by it: the clone may sit where it is not
    for f in ("vmlinuz", "initramfs.cpio.gz"):
        shutil.copy(H.GUEST_OUT / f, shared / f)
    binary = Path(ctx.opts.backend_bin)
    if subprocess.run(["runuser", "-u", "libvirt-qemu", "--", "test", "-x", str(binary)]).returncode != 0:
        shutil.copy(binary, shared / "scanway")
        binary = shared / "scanway"
    try:
        b = ctx.backend({"g1": 1}, run_args=["--attach-socket", ATTACH])
        b.out.wait(rf"^scanway: attach socket {re.escape(str(ATTACH))}$", ctx.deadline.left(10),
                   what="the attach socket line")
        caps = json.loads(subprocess.run([b.bin, "--print-capabilities"], stdout=subprocess.PIPE,
                                         text=True, check=True).stdout)
        if caps != {"type": "gpu", "features": ["virgl"]}:
            raise CaseFailure(f"--print-capabilities: {caps}")
        DESCRIPTOR.parent.mkdir(parents=True, exist_ok=True)
        DESCRIPTOR.write_text(json.dumps({"description": "scanway (e2e)", "type": "gpu", "binary": str(binary)}) + "\n")

        g1 = ctx.guest("g1", "g1", "pattern", mode="1024x768")
        b.connected("g1")
        g1.wait_ready(ctx.deadline.left(BOOT))
        H.check_flushed(ctx, b, "g1", 0, ctx.dir / "g1-before.png", g1, size="1024x768")
        g1_before = {k: v for k, v in H.scanout(b.list("before"), "g1", 0).items() if k in H.SCANOUT_STATE}

        virsh(ctx, "destroy", DOMAIN, check=False)
        virsh(ctx, "undefine", DOMAIN, check=False)
        xml = shared / "domain.xml"
        xml.write_text(domain_xml(serial, shared))
        # the first define after libvirtd starts probes QEMU's capabilities (tens of seconds here)
        virsh(ctx, "define", str(xml), timeout=240)
        virsh(ctx, "start", DOMAIN, timeout=120)
        b.connected(DOMAIN)
        line = wait_serial(ctx, serial, r"^GUEST-PATTERN-READY (\d+x\d+)", "GUEST-PATTERN-READY")
        size = line.group(1)
        H.check_flushed(ctx, b, DOMAIN, 0, ctx.dir / "domain-first.png", size=size)
        procs = backend_processes()
        if len(procs) != 1 or procs[0][1] != "libvirt-qemu":
            raise CaseFailure(f"scanway backend processes (pid, user): {procs}, expected one as libvirt-qemu")
        g = H.guest_entry(b.list("started"), DOMAIN)
        if g.get("socket") is not None or not g.get("connected"):
            raise CaseFailure(f"scanway list: {DOMAIN} is {g}")
        if not re.search(r"^GUEST-DRM features: \+virgl", serial.read_text(errors="replace"), re.M):
            raise CaseFailure("libvirt's guest was not offered virgl (accel3d='yes', --virgl)")
        details.append(f"virsh start: attached as {DOMAIN} (virgl, backend as libvirt-qemu), {size} exact")

        # resize through libvirt's route to the D-Bus display
        b.wait_ui_linked(DOMAIN)
        before = H.mark_of(b, DOMAIN)
        b.ctl("window", "--guest", DOMAIN, "--size", "1024x768")
        wait_serial(ctx, serial, r"^GUEST-MODE 1024x768\b", "GUEST-MODE 1024x768", timeout=30)
        H.check_flushed(ctx, b, DOMAIN, 0, ctx.dir / "domain-resized.png", since=before, size="1024x768")
        details.append("resized to 1024x768 through virDomainOpenGraphicsFD")

        virsh(ctx, "destroy", DOMAIN)
        b.disconnected(DOMAIN)
        gone = b.list("destroyed")
        g = H.guest_entry(gone, DOMAIN)
        if g.get("connected") or any(s.get("enabled") for s in g.get("scanouts", [])) or g.get("resources"):
            raise CaseFailure(f"after virsh destroy scanway still shows {g}")
        if any(s.get("window") for s in g.get("scanouts", [])):
            raise CaseFailure(f"after virsh destroy {DOMAIN} still has a window: {g}")
        end = time.monotonic() + ctx.deadline.left(15)
        while backend_processes():
            if time.monotonic() > end:
                raise CaseFailure(f"the backend process outlived the VM: {backend_processes()}")
            time.sleep(0.1)
        g1_now = {k: v for k, v in H.scanout(gone, "g1", 0).items() if k in H.SCANOUT_STATE}
        if g1_now != g1_before:
            raise CaseFailure(f"g1 changed while {DOMAIN} went away: {g1_before} -> {g1_now}")
        details.append("virsh destroy: window closed, backend process gone, g1 untouched")

        serial.unlink()
        virsh(ctx, "start", DOMAIN, timeout=120)
        b.connected(DOMAIN, nth=2)
        line = wait_serial(ctx, serial, r"^GUEST-PATTERN-READY (\d+x\d+)", "GUEST-PATTERN-READY again")
        H.check_flushed(ctx, b, DOMAIN, 0, ctx.dir / "domain-again.png", size=line.group(1))
        H.check_flushed(ctx, b, "g1", 0, ctx.dir / "g1-after.png", g1, size="1024x768")
        details.append(f"virsh start again: {line.group(1)} exact, g1 exact")
        virsh(ctx, "destroy", DOMAIN)
        b.disconnected(DOMAIN, nth=2)
        ctx.finish(b, g1)
    finally:
        virsh(ctx, "destroy", DOMAIN, check=False)
        virsh(ctx, "undefine", DOMAIN, check=False)
        DESCRIPTOR.unlink(missing_ok=True)
        lv.down()
    return ", ".join(details)
