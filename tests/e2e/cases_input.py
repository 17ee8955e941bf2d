"""The input cases: scanway's seat reaching a guest's evdev devices through QEMU's D-Bus
display, for a 2D guest and for one with virgl on, and resize for the 3D guest."""
import re
import time

import harness as H
from harness import BOOT, CaseFailure, Skip
from cases_display import assert_scanout, scanout_info, size_of  # noqa: F401


def input_events(g, device):
    """[(type, code, value)] the guest printed for its input device named `device`."""
    text = g.serial_text()
    m = re.search(rf'^GUEST-INPUT-DEV (event\d+) name="{re.escape(device)}"', text, re.M)
    if not m:
        return []
    return [tuple(int(v) for v in e) for e in
            re.findall(rf"^GUEST-INPUT {m.group(1)} type=(\d+) code=(\d+) value=(-?\d+)", text, re.M)]


def wait_events(ctx, g, device, want, what):
    """Wait until the events `want` appear in order (others may come between)."""
    end = time.monotonic() + ctx.deadline.left(20)
    while True:
        got = input_events(g, device)
        it = iter(got)
        if all(any(e == w for e in it) for w in want):
            return got
        if time.monotonic() > end:
            raise CaseFailure(f"{what}: the guest's {device} saw {got[-12:]}, expected {want} in order")
        time.sleep(0.1)


def check_input(ctx, b, g, details):
    """Pointer motion, a click, the wheel and keys fed to scanway's seat reach guest g0 (booted
    with the `input` test): its evdev devices report them, the absolute position scaled to the
    guest pixel under the pointer.  Keys by xkb keysym name (slash, period, greater) and text
    (type:) arrive as the keymap's keys, Shift around those that need it; text with a character
    no key types is refused whole.  A key held when focus leaves goes up in the guest, and no
    key reaches it after; send-keys reaches it still, with text too (--type)."""
    g.wait(r"^GUEST-INPUT-READY\b", ctx.deadline.left(BOOT), "GUEST-INPUT-READY")
    b.wait_ui_linked("g0")
    s = scanout_info(b.list("ready"), "g0", 0)
    win = s.get("window") or {}
    W, H_ = s["width"], s["height"]
    gx, gy = 300, 200  # guest pixel to point at
    x, y = win["x"] + gx, win["y"] + gy
    b.ctl("input", f"move:{x},{y}", "click:left", "scroll:down", "scroll:up", "key:a", "key:shift+b")
    tablet = wait_events(ctx, g, "QEMU Virtio Tablet",
                         [(3, 0, gx * 32767 // W), (3, 1, gy * 32767 // H_), (1, 272, 1), (1, 272, 0),
                          (2, 8, -1), (2, 8, 1)],
                         "pointer")
    keys = wait_events(ctx, g, "QEMU Virtio Keyboard",
                       [(1, 30, 1), (1, 30, 0), (1, 42, 1), (1, 48, 1), (1, 48, 0), (1, 42, 0)], "keys")
    details += [f"pointer at guest {gx},{gy}, left click, wheel down and up", "keys a, shift+b"]
    if not scanout_info(b.list(), "g0", 0).get("focused"):
        raise CaseFailure("the click did not focus g0's window")
    # keys by keysym name, and text typed through the keymap: '.' is KEY_DOT (52), '>' Shift
    # (42) around it, 'O' Shift around KEY_O, a newline Return (28).  A character no key of
    # the keymap types fails the whole action: nothing of it is typed.
    try:
        b.ctl("input", "type:ls\u00e9")
    except CaseFailure as e:
        if "no key of the keymap" not in str(e):
            raise
    else:
        raise CaseFailure("scanway input type: with an untypable character succeeded")
    text = "ls /dev > O.log\n"
    b.ctl("input", "key:slash", "key:period", "key:greater", f"type:{text}")
    evdev = {"l": 38, "s": 31, " ": 57, "/": 53, "d": 32, "e": 18, "v": 47, ".": 52, "o": 24, "g": 34, "\n": 28}
    shifted = {">": ".", "O": "o"}
    taps = []
    for c in "/.>" + text:
        code = evdev[shifted.get(c, c)]
        taps += [(1, 42, 1), (1, code, 1), (1, code, 0), (1, 42, 0)] if c in shifted else [(1, code, 1), (1, code, 0)]
    wait_events(ctx, g, "QEMU Virtio Keyboard", taps, "keysym names and typed text")
    pressed = [e for e in input_events(g, "QEMU Virtio Keyboard") if e[0] == 1 and e[2] in (0, 1)]
    start = pressed.index((1, 53, 1))  # the first slash: key:slash
    if pressed[start:start + len(taps)] != taps:
        raise CaseFailure(f"key:slash key:period key:greater type:{text!r}: the guest saw "
                          f"{pressed[start:start + len(taps)]}, expected exactly {taps}")
    if any(e[1] in (evdev["l"], evdev["s"]) for e in pressed[:start]):
        raise CaseFailure(f"the failed type: action typed some of its text: {pressed[:start]}")
    details.append(f"keys slash, period, greater and type:{text!r} (Shift only for '>' and 'O')")
    # a click outside every window unfocuses: a key still held goes up in the guest, and keys
    # then reach no guest.  The marker key goes to the guest through send-keys (whatever has
    # focus) after z: once the marker is seen, z would have been seen too.
    b.ctl("input", "keydown:c")
    b.ctl("input", f"move:{win['x'] + W + 50},{win['y'] + H_ + 50}", "click:left", "key:z")
    wait_events(ctx, g, "QEMU Virtio Keyboard", [(1, 46, 1), (1, 46, 0)], "a held key released on focus loss")
    b.ctl("send-keys", "--guest", "g0", "x")
    wait_events(ctx, g, "QEMU Virtio Keyboard", [(1, 45, 1), (1, 45, 0)], "the send-keys marker")
    if any(e[1] == 44 for e in input_events(g, "QEMU Virtio Keyboard")):
        raise CaseFailure("a key reached g0 after focus left its window")
    details.append("a held key released and no keys after focus left")
    # send-keys types text too, straight to the guest: Shift around 'W', none for '/'
    b.ctl("send-keys", "--guest", "g0", "--type", "W/")
    taps = [(1, 42, 1), (1, 17, 1), (1, 17, 0), (1, 42, 0), (1, 53, 1), (1, 53, 0)]
    wait_events(ctx, g, "QEMU Virtio Keyboard", [(1, 45, 0)] + taps, "send-keys --type W/")
    pressed = [e for e in input_events(g, "QEMU Virtio Keyboard") if e[0] == 1 and e[2] in (0, 1)]
    start = len(pressed) - pressed[::-1].index((1, 45, 0))  # after the marker's release
    if pressed[start:start + len(taps)] != taps:
        raise CaseFailure(f"send-keys --type W/: the guest saw {pressed[start:]}, expected exactly {taps}")
    details.append("send-keys --type W/")
    ctx.log(f"tablet events {tablet[:10]}, keyboard events {keys[:12]}")


def case_input(ctx):
    """Pointer moves and clicks and keys fed to scanway's seat (scanway input, the path the
    winit backend's events take) reach the focused guest through QEMU's D-Bus display (see
    check_input). scanway send-keys delivers Ctrl+Alt+Delete."""
    if ctx.c_mode:
        raise Skip("needs scanway")
    b = ctx.backend({"g0": 1}, ui=("g0",))
    g = ctx.guest("g0", "g0", "input", dbus=True)
    b.connected("g0")
    details = []
    check_input(ctx, b, g, details)
    # Ctrl+Alt+Delete: Linux's keyboard handler reboots at once (the default "Boot" binding),
    # often before the test program prints the keys: the kernel's reboot line is the proof
    b.ctl("send-keys", "--guest", "g0", "ctrl+alt+delete")
    g.wait(r"reboot: Restarting system", ctx.deadline.left(20), "the guest's Ctrl+Alt+Delete reboot")
    details.append("send-keys Ctrl+Alt+Delete rebooted the guest")
    # the reboot ends QEMU (-no-reboot)
    g.quit()
    b.disconnected("g0")
    b.stop()
    return ", ".join(details)


def assert_virgl(g):
    """The guest's virtio-gpu driver saw VIRTIO_GPU_F_VIRGL."""
    m = re.search(r"^GUEST-DRM features: (\S+)", g.serial_text(), re.M)
    if not m or m.group(1) != "+virgl":
        raise CaseFailure(f"the guest's device did not offer virgl: {m.group(0) if m else 'no GUEST-DRM line'}")


def case_input_3d(ctx):
    """The input case for a guest with virgl on: QEMU's D-Bus display with GL (harness.DBUS_GL:
    no render node on this host) takes the virgl console, and scanway's seat reaches the guest
    through it exactly as for a 2D guest."""
    if ctx.c_mode:
        raise Skip("needs scanway")
    b = ctx.backend({"g0": 1}, ui_3d=("g0",))
    g = ctx.guest("g0", "g0", "input", dbus="gl")
    b.connected("g0")
    details = []
    check_input(ctx, b, g, details)
    assert_virgl(g)
    details.insert(0, "virgl guest")
    ctx.finish(b, g)
    return ", ".join(details)


def case_resize_3d(ctx):
    """Resize-to-window for a guest with virgl on, through QEMU's D-Bus display with GL: the
    guest (gpu-test follow) switches to the window's size, exact in scanway's screenshot."""
    if ctx.c_mode:
        raise Skip("needs scanway")
    b = ctx.backend({"g0": 1}, ui_3d=("g0",), size="2560x1440")
    g = ctx.guest("g0", "g0", "follow", dbus="gl")
    b.connected("g0")
    line = g.wait_ready(ctx.deadline.left(BOOT))
    b.wait_ui_linked("g0")
    assert_virgl(g)
    details = [f"virgl guest started {size_of(line)}"]
    size = "1024x768"
    before = H.mark_of(b, "g0")
    b.ctl("window", "--guest", "g0", "--size", size)
    g.wait(rf"^GUEST-MODE {size}\b", ctx.deadline.left(30), f"GUEST-MODE {size}")
    H.check_flushed(ctx, b, "g0", 0, ctx.dir / f"scanout-{size}.png", g, since=before, size=size)
    assert_scanout(b.list("resized"), "g0", 0, size)
    details.append(f"{size}: guest switched, scanout exact")
    ctx.finish(b, g)
    return ", ".join(details)


