#!/usr/bin/env python3
"""A hostile Wayland client, written against the wire protocol (no libwayland), for the fault
campaign (soak.py).  Python 3 standard library only.

  wlclient.py flood SECONDS   a toplevel (64x64 XRGB8888 shm buffer) committed again and again
                              without waiting for frame callbacks or buffer releases; answers
                              pings; prints "WLCLIENT-MAPPED" once configured, then
                              "WLCLIENT-FLOOD commits=N" when SECONDS are up
  wlclient.py deaf COUNT      COUNT wl_display.sync requests, never reading an event back
                              (the compositor's replies pile up), then "WLCLIENT-DEAF sent
                              COUNT requests" and holds the connection until killed, or
                              "WLCLIENT-DEAF disconnected after N requests" when the
                              compositor drops it first
  wlclient.py half            the toplevel, then the first half of a wl_surface.commit, and exit

The socket is $XDG_RUNTIME_DIR/$WAYLAND_DISPLAY.  Wire format: each message is the object id
(u32), then (size << 16 | opcode) (u32), then its arguments (u32/i32; strings as length with
NUL, padded to 4 bytes; file descriptors in SCM_RIGHTS).
"""
import mmap
import os
import socket
import struct
import sys
import time

DISPLAY, REGISTRY = 1, 2


def string(s):
    b = s.encode() + b"\0"
    return struct.pack("<I", len(b)) + b + b"\0" * (-len(b) % 4)


class Conn:
    def __init__(self):
        path = os.path.join(os.environ["XDG_RUNTIME_DIR"], os.environ.get("WAYLAND_DISPLAY", "wayland-0"))
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.next_id = 3
        self.inbuf = b""
        self.globals = {}

    def new_id(self):
        self.next_id += 1
        return self.next_id - 1

    def msg(self, obj, opcode, payload=b"", fds=()):
        data = struct.pack("<II", obj, (8 + len(payload)) << 16 | opcode) + payload
        if fds:
            socket.send_fds(self.sock, [data], list(fds))
        else:
            self.sock.sendall(data)
        return data

    def events(self, block=True):
        """Yield (object, opcode, payload) of every whole event read now."""
        self.sock.setblocking(block)
        try:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the compositor closed the connection")
            self.inbuf += chunk
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)
        while len(self.inbuf) >= 8:
            obj, word = struct.unpack_from("<II", self.inbuf)
            size = word >> 16
            if size < 8 or len(self.inbuf) < size:
                break
            yield obj, word & 0xFFFF, self.inbuf[8:size]
            self.inbuf = self.inbuf[size:]

    def roundtrip(self, on_event):
        cb = self.new_id()
        self.msg(DISPLAY, 0, struct.pack("<I", cb))  # wl_display.sync
        while True:
            for obj, op, payload in self.events():
                if obj == cb:
                    return
                if obj == DISPLAY and op == 0:  # wl_display.error
                    raise RuntimeError(f"protocol error: {payload!r}")
                on_event(obj, op, payload)

    def bind(self, interface, version):
        name = self.globals[interface]
        nid = self.new_id()
        self.msg(REGISTRY, 0, struct.pack("<I", name) + string(interface) + struct.pack("<II", version, nid))
        return nid


def toplevel(c):
    """Map a 64x64 toplevel; returns (surface, buffer, xdg_wm_base, xdg_surface)."""
    c.msg(DISPLAY, 1, struct.pack("<I", REGISTRY))  # get_registry

    def on_global(obj, op, payload):
        if obj == REGISTRY and op == 0:
            name, length = struct.unpack_from("<II", payload)
            c.globals[payload[8:8 + length - 1].decode()] = name
    c.roundtrip(on_global)
    compositor, shm, wm = c.bind("wl_compositor", 4), c.bind("wl_shm", 1), c.bind("xdg_wm_base", 1)
    w = h = 64
    fd = os.memfd_create("wlclient")
    os.ftruncate(fd, w * h * 4)
    with mmap.mmap(fd, w * h * 4) as m:
        m.write(b"\x40\x80\xc0\xff" * (w * h))
    pool = c.new_id()
    c.msg(shm, 0, struct.pack("<Ii", pool, w * h * 4), fds=[fd])  # create_pool
    os.close(fd)
    buffer = c.new_id()
    c.msg(pool, 0, struct.pack("<Iiiiii", buffer, 0, w, h, w * 4, 1))  # create_buffer, XRGB8888
    surface = c.new_id()
    c.msg(compositor, 0, struct.pack("<I", surface))  # create_surface
    xdg_surface = c.new_id()
    c.msg(wm, 2, struct.pack("<II", xdg_surface, surface))  # get_xdg_surface
    top = c.new_id()
    c.msg(xdg_surface, 1, struct.pack("<I", top))  # get_toplevel
    c.msg(top, 2, string("wlclient"))  # set_title
    c.msg(surface, 6)  # commit (no buffer: asks for the first configure)
    configured = []

    def on_event(obj, op, payload):
        handle(c, wm, xdg_surface, obj, op, payload)
        if obj == xdg_surface and op == 0:
            configured.append(True)
    while not configured:
        c.roundtrip(on_event)
    attach_commit(c, surface, buffer)
    c.roundtrip(lambda *e: handle(c, wm, xdg_surface, *e))
    print("WLCLIENT-MAPPED", flush=True)
    return surface, buffer, wm, xdg_surface


def handle(c, wm, xdg_surface, obj, op, payload):
    if obj == wm and op == 0:  # ping -> pong
        c.msg(wm, 3, payload[:4])
    elif obj == xdg_surface and op == 0:  # configure -> ack_configure
        c.msg(xdg_surface, 4, payload[:4])


def attach_commit(c, surface, buffer):
    c.msg(surface, 1, struct.pack("<Iii", buffer, 0, 0))  # attach
    c.msg(surface, 2, struct.pack("<iiii", 0, 0, 64, 64))  # damage
    c.msg(surface, 6)  # commit


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("flood", "deaf", "half"):
        sys.stderr.write(__doc__)
        return 2
    c = Conn()
    mode = sys.argv[1]
    if mode == "deaf":
        count = int(sys.argv[2])
        c.next_id = 2  # new ids must follow one another: no registry here
        for n in range(count):
            try:
                c.msg(DISPLAY, 0, struct.pack("<I", c.new_id()))  # sync: a done event comes back
            except (BrokenPipeError, ConnectionResetError):
                print(f"WLCLIENT-DEAF disconnected after {n} requests", flush=True)
                return 0
        print(f"WLCLIENT-DEAF sent {count} requests", flush=True)
        while True:
            time.sleep(60)
    surface, buffer, wm, xdg_surface = toplevel(c)
    if mode == "half":
        whole = struct.pack("<II", surface, 8 << 16 | 6)
        c.sock.sendall(whole[:5])
        return 0
    end = time.monotonic() + float(sys.argv[2])
    commits = 0
    while time.monotonic() < end:
        for _ in range(50):
            attach_commit(c, surface, buffer)
            commits += 1
        for e in c.events(block=False):
            handle(c, wm, xdg_surface, *e)
    print(f"WLCLIENT-FLOOD commits={commits}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
