"""The tty case: scanway as a machine's only compositor, on a VM's real KMS device."""
import re
import shutil
import subprocess

import harness as H
from harness import BOOT, CaseFailure, Skip
from cases_windows import BACKGROUND, SIMPLE_SHM


def case_tty(ctx):
    """scanway on a real KMS device: a VM with QEMU's built-in virtio-gpu-pci (the guest's DRM
    device) boots the 3D root filesystem and runs `scanway run --backend tty` on its console
    (libseat's built-in seatd, udev, libinput, GBM/EGL with Mesa's kms_swrast), then
    weston-simple-shm and wev as Wayland clients. QMP screendump of the VM's display must show
    scanway's output with the client's window; a key sent to the VM (QMP send-key) must reach
    the focused client (wev) through libinput."""
    if ctx.c_mode:
        raise Skip("needs scanway")
    rootfs = H.build_rootfs_3d()
    # scanway's binary on a second disk (label "scanway"), mounted by the guest
    bindir = ctx.tmp / "scanway-disk"
    bindir.mkdir()
    shutil.copy2(ctx.opts.backend_bin, bindir / "scanway")
    disk = ctx.tmp / "scanway.ext4"
    r = subprocess.run(["mke2fs", "-q", "-t", "ext4", "-L", "scanway", "-d", str(bindir), str(disk), "64M"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise CaseFailure(f"mke2fs: {r.stdout.strip()[-200:]}")
    g = ctx.guest("vm", None, "tty", rootfs=rootfs, mem="1G", builtin="virtio-gpu-pci", outputs=2, force_heads=False,
                  qemu_args=["-drive", f"file={disk},if=none,id=swdisk,format=raw,readonly=on",
                             "-device", "virtio-blk-pci,drive=swdisk,addr=0x1e"])
    line = g.wait(r"^GUEST-TTY-READY.*$", ctx.deadline.left(BOOT + 150), "GUEST-TTY-READY").group(0).strip()
    ctx.log(f"vm: {line}")
    windows = re.search(r"^GUEST-TTY-WINDOWS (.*)$", g.serial_text(), re.M)
    if not windows or not re.search(r'wayland window "wev" [^;]*, focused;', windows.group(1)):
        raise CaseFailure(f"wev's window is not focused before the key: {windows.group(0) if windows else 'no line'}")
    def send_keys(*keys):
        q = H.QMP(str(g.qmp))
        try:
            q.cmd("send-key", keys=[{"type": "qcode", "data": k} for k in keys])
        finally:
            q.sock.close()

    def shows_scanway(name):
        """Whether the VM's display (QMP screendump of head 0) shows scanway's output with the
        client: (w, h, why), why None when it does."""
        path = ctx.dir / f"{name}.png"
        g.screendump(0, path)
        w, h, px = H.read_png_rgb(path)

        def at(x, y):
            return H.rgb_at(px, w, x, y)
        inside = [(x, y) for y in range(0, SIMPLE_SHM, 5) for x in range(0, SIMPLE_SHM, 5)]
        painted = sum(1 for x, y in inside if at(x, y) != BACKGROUND)
        corner = at(w - 5, h - 5)
        shown = painted >= 0.99 * len(inside) and corner == BACKGROUND
        return w, h, None if shown else (f"{painted}/{len(inside)} client pixels painted, corner {corner} "
                                         f"(background {BACKGROUND}) (see {path.name})")

    def wait_shows_scanway(name, want, what):
        """Poll shows_scanway until it is `want`; returns its last (w, h, why).  The serial
        lines mark the VT switch (scanway's session pausing, resuming), not the repaint after
        it (the kernel console's, scanway's first frame back), and QEMU's built-in
        virtio-gpu tells nothing of when its display changed (no flush counter, no QMP
        event): a deadline-bounded poll of the picture is all there is."""
        def probe():
            w, h, why = shows_scanway(name)
            return (why is None) == want, (w, h, why)
        return H.wait_until(ctx, what, probe, timeout=15)

    # GUEST-TTY-READY comes after GUEST-TTY-FRAMES: 5 s of scanway's page flips (counted from
    # its listing inside the guest) with both clients mapped, so the display shows them now
    fl = re.search(r"^GUEST-TTY-FRAMES .*$", g.serial_text(), re.M)
    if not fl or int(H.figures(fl.group(0)).get("frames", 0)) == 0:
        raise CaseFailure(f"scanway drew no frames with the clients mapped: {fl.group(0) if fl else 'no line'}")
    w, h, why = shows_scanway("screendump")
    if why:
        raise CaseFailure(f"the VM's display does not show scanway with the client: {why}")
    details = [f"{w}x{h} KMS output shows weston-simple-shm at 0,0 over scanway's background"]
    # the second head, forced on inside the guest after scanway started: udev reports the
    # change, scanway adds an output there (to the right of the first; no window: background)
    m = re.search(r"^GUEST-TTY-HOTPLUG (.*)$", g.serial_text(), re.M)
    if not m or "output Virtual-2" not in m.group(1):
        raise CaseFailure(f"no second output after the connector hotplug: {m.group(0) if m else 'no line'}")
    path = ctx.dir / "screendump-head1.png"
    g.screendump(1, path)
    w1, h1, px = H.read_png_rgb(path)
    samples = [H.rgb_at(px, w1, x, y) for y in range(10, h1, h1 // 7) for x in range(10, w1, w1 // 7)]
    # the clear colour 0.10, 0.12, 0.16 rounds either way
    if any(max(abs(a - b_) for a, b_ in zip(c, BACKGROUND)) > 1 for c in samples):
        raise CaseFailure(f"head 1 ({w1}x{h1}) does not show scanway's background: {set(samples)}")
    details.append(f"hotplugged head 1 driven as a second output ({m.group(1).split(': ')[1].strip()})")
    fps = H.figures(fl.group(0)).get("fps")
    if fps:
        details.append(f"{fps} page flips/s with the client animating")
    send_keys("a")
    g.wait(r"^GUEST-WEV .*sym: a\b", ctx.deadline.left(30), "wev reporting the key")
    details.append("QMP send-key a reached wev through libinput")

    # VT switching: Ctrl+Alt+F2 through libinput makes scanway switch VTs (its session pauses,
    # the text console shows); Ctrl+Alt+F1, handled by the kernel's console there, switches
    # back, the session resumes and scanway's output is back.
    send_keys("ctrl", "alt", "f2")
    g.wait(r"^GUEST-SCANWAY .*session paused", ctx.deadline.left(30), "scanway's session pausing on Ctrl+Alt+F2")
    wait_shows_scanway("vt2", False, "the VM's display leaving scanway's output after Ctrl+Alt+F2")
    send_keys("ctrl", "alt", "f1")
    g.wait(r"^GUEST-SCANWAY .*session active again", ctx.deadline.left(30), "scanway's session resuming")
    wait_shows_scanway("vt1", True, "scanway's output coming back on VT 1")
    details.append("Ctrl+Alt+F2 left scanway's VT, Ctrl+Alt+F1 brought its output back")
    ctx.log(g.serial_text()[-3000:])
    g.quit()
    return ", ".join(details)
