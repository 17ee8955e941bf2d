#!/usr/bin/env python3
"""Pixel-exact check of a screenshot of the gpu-test picture (stdlib only).

  check-pattern.py IMAGE [--head N] [--frame K] [--size WxH] [--diff OUT.ppm] [-q]
                         [--crop X,Y,WxH | --locate]

IMAGE: PNG (8-bit RGB/RGBA, as written by QEMU's QMP screendump format=png)
or binary PPM (P6, QEMU's default screendump format).
--head N   which output's picture to expect (odd heads have reversed bars and the
           marker 80*N px further right); default 0
--frame K  animation frame shown (bars scrolled left by 16*K px); default 0
--size WxH also require this image size (else the image's own size is used)
--diff F   write a PPM where matching pixels are dimmed and wrong ones are magenta
--crop X,Y,WxH  check only this rectangle of IMAGE (e.g. a window in a compositor
           screenshot)
--locate   find the picture inside a larger screenshot by its orange 1-px border
           (top-left-most orange run of >= 16 px) and check that rectangle
Exit 0 when every pixel matches, 1 otherwise, 2 on unreadable input.

The picture (must stay identical to draw() in src/gpu-test.c):
  bars: index b = ((x + shift) mod W) * 8 // W, shift = (16*frame) mod W,
        colours white yellow cyan green magenta red blue black, reversed (7-b) on odd heads
  marker: 64x64 checkerboard of 8x8 cells at (16 + 80*head, 16), white where
        ((dx//8) ^ (dy//8)) & 1 else black
  border: 1-px #FF8000 frame on the outermost rows/columns (wins over the marker)
"""
import argparse
import struct
import sys
import zlib

BARS = [0xFFFFFF, 0xFFFF00, 0x00FFFF, 0x00FF00, 0xFF00FF, 0xFF0000, 0x0000FF, 0x000000]
BORDER = 0xFF8000
MARK, CELL = 64, 8
NAMES = {0xFFFFFF: "white", 0xFFFF00: "yellow", 0x00FFFF: "cyan", 0x00FF00: "green",
         0xFF00FF: "magenta", 0xFF0000: "red", 0x0000FF: "blue", 0x000000: "black",
         BORDER: "orange"}


def rgb(c):
    return bytes(((c >> 16) & 255, (c >> 8) & 255, c & 255))


def expected_rows(W, H, head=0, frame=0):
    """Return a function y -> expected row (RGB bytes)."""
    shift = (16 * frame) % W
    row = bytearray()
    for x in range(W):
        b = ((x + shift) % W) * 8 // W
        if head & 1:
            b = 7 - b
        row += rgb(BARS[b])
    mx, my = 16 + 80 * head, 16
    marked = []
    for parity in (0, 1):
        r = bytearray(row)
        for x in range(mx, min(mx + MARK, W)):
            white = (((x - mx) // CELL) ^ parity) & 1
            r[3 * x:3 * x + 3] = rgb(0xFFFFFF if white else 0x000000)
        marked.append(r)
    o = rgb(BORDER)
    full = o * W
    for r in [row] + marked:
        r[0:3] = o
        r[3 * (W - 1):3 * W] = o
    row, marked = bytes(row), [bytes(m) for m in marked]

    def at(y):
        if y == 0 or y == H - 1:
            return full
        if my <= y < my + MARK:
            return marked[((y - my) // CELL) & 1]
        return row
    return at


# ----------------------------------------------------------------- readers
def read_ppm(data):
    # P6 <ws> W <ws> H <ws> MAX <single ws> raster
    fields, pos = [], 2
    while len(fields) < 3:
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            while data[pos:pos + 1] not in (b"\n", b""):
                pos += 1
            continue
        start = pos
        while not data[pos:pos + 1].isspace():
            pos += 1
        fields.append(int(data[start:pos]))
    pos += 1
    W, H, mx = fields
    if mx == 65535:  # 16-bit (e.g. ImageMagick Q16): keep the high bytes
        raster = data[pos:pos + W * H * 6][0::2]
    elif mx == 255:
        raster = data[pos:pos + W * H * 3]
    else:
        raise ValueError(f"PPM maxval {mx} unsupported")
    if len(raster) != W * H * 3:
        raise ValueError("truncated PPM")
    return W, H, [raster[y * W * 3:(y + 1) * W * 3] for y in range(H)]


def read_png(data):
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, ihdr = 8, [], None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        typ = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if typ == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif typ == b"IDAT":
            idat.append(body)
        elif typ == b"IEND":
            break
    W, H, depth, ctype, _comp, _filt, interlace = ihdr
    if depth != 8 or ctype not in (2, 6) or interlace:
        raise ValueError(f"unsupported PNG depth={depth} colour={ctype} interlace={interlace}")
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = W * bpp
    # Sub and Up rows are undone on whole rows at once: bytes as lanes of one
    # big integer, added lane-wise without carries (SWAR); Sub is a prefix sum
    # done in log2(W) shifted adds.  Average and Paeth need a per-byte loop.
    full = (1 << (8 * stride)) - 1
    hi = int.from_bytes(b"\x80" * stride, "little")
    lo = int.from_bytes(b"\x7f" * stride, "little")

    def add(x, y):
        return ((x & lo) + (y & lo)) ^ ((x ^ y) & hi)

    def to_bytes(v):
        return bytearray(v.to_bytes(stride, "little"))

    prev = bytes(stride)
    rows = []
    p = 0
    for _ in range(H):
        f = raw[p]
        line = bytearray(raw[p + 1:p + 1 + stride])
        p += 1 + stride
        if f == 1:
            v, step = int.from_bytes(line, "little"), bpp
            while step < stride:
                v = add(v, (v << (8 * step)) & full)
                step *= 2
            line = to_bytes(v)
        elif f == 2:
            line = to_bytes(add(int.from_bytes(line, "little"), int.from_bytes(prev, "little")))
        elif f == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif f == 4:
            for ch in range(bpp):
                a = c = 0  # left and upper-left of this channel
                for i in range(ch, stride, bpp):
                    b = prev[i]
                    if b == c:  # pa == 0: the predictor is the left byte
                        a = (line[i] + a) & 255
                    else:
                        pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                        a = (line[i] + (a if pa <= pb and pa <= pc else (b if pb <= pc else c))) & 255
                    line[i] = a
                    c = b
        elif f != 0:
            raise ValueError(f"bad PNG filter {f}")
        prev = bytes(line)
        if bpp == 4:
            del line[3::4]
        rows.append(bytes(line))
    return W, H, rows


def load(path):
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:2] == b"P6":
        return read_ppm(data)
    return read_png(data)


def crop(rows, x, y, w, h):
    return [r[3 * x:3 * (x + w)] for r in rows[y:y + h]]


def locate(W, H, rows):
    """Bounding box of the orange border: first row holding a run of >= 16
    orange pixels; width = that run, height = the orange column below it."""
    o = rgb(BORDER)
    needle = o * 16
    for y in range(H):
        i = rows[y].find(needle)
        while i >= 0 and i % 3:
            i = rows[y].find(needle, i + 1)
        if i < 0:
            continue
        x = i // 3
        w = 0
        while x + w < W and rows[y][3 * (x + w):3 * (x + w) + 3] == o:
            w += 1
        h = 0
        while y + h < H and rows[y + h][3 * x:3 * x + 3] == o:
            h += 1
        return x, y, w, h
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image")
    ap.add_argument("--head", type=int, default=0)
    ap.add_argument("--frame", type=int, default=0)
    ap.add_argument("--size")
    ap.add_argument("--diff")
    ap.add_argument("-q", "--quiet", action="store_true")
    ap.add_argument("--crop")
    ap.add_argument("--locate", action="store_true")
    a = ap.parse_args()
    try:
        W, H, rows = load(a.image)
    except (OSError, ValueError, zlib.error, struct.error, TypeError) as e:
        print(f"check-pattern: cannot read {a.image}: {e}")
        return 2
    if a.crop:
        try:
            xy, wh = a.crop.rsplit(",", 1)
            cx, cy = (int(v) for v in xy.split(","))
            cw, ch = (int(v) for v in wh.lower().split("x"))
        except ValueError:
            print(f"check-pattern: bad --crop {a.crop!r} (want X,Y,WxH)")
            return 2
        if cx < 0 or cy < 0 or cx + cw > W or cy + ch > H:
            print(f"FAIL {a.image}: crop {a.crop} outside the {W}x{H} image")
            return 1
        rows, W, H = crop(rows, cx, cy, cw, ch), cw, ch
    elif a.locate:
        box = locate(W, H, rows)
        if not box:
            print(f"FAIL {a.image}: no orange-bordered picture found")
            return 1
        cx, cy, cw, ch = box
        if not a.quiet:
            print(f"located picture at {cx},{cy},{cw}x{ch}")
        rows, W, H = crop(rows, cx, cy, cw, ch), cw, ch
    if a.size:
        ew, eh = (int(v) for v in a.size.lower().split("x"))
        if (ew, eh) != (W, H):
            print(f"FAIL {a.image}: size {W}x{H}, expected {ew}x{eh}")
            return 1
    exp = expected_rows(W, H, a.head, a.frame)
    bad, samples, bad_rows = 0, [], 0
    diff = bytearray() if a.diff else None
    for y in range(H):
        got, want = rows[y], exp(y)
        if got == want:
            if diff is not None:
                diff += bytes(v >> 2 for v in got)
            continue
        bad_rows += 1
        for x in range(W):
            g, w = got[3 * x:3 * x + 3], want[3 * x:3 * x + 3]
            if g != w:
                bad += 1
                if len(samples) < 8:
                    gc, wc = int.from_bytes(g, "big"), int.from_bytes(w, "big")
                    samples.append(f"({x},{y}) got #{gc:06X} want #{wc:06X} ({NAMES.get(wc, '?')})")
            if diff is not None:
                diff += b"\xff\x00\xff" if g != w else bytes(v >> 2 for v in g)
    if diff is not None:
        with open(a.diff, "wb") as fh:
            fh.write(b"P6\n%d %d\n255\n" % (W, H) + bytes(diff))
    if bad:
        print(f"FAIL {a.image}: {W}x{H} head={a.head} frame={a.frame}: {bad} of {W * H} pixels differ "
              f"in {bad_rows} rows; first: " + "; ".join(samples))
        return 1
    if not a.quiet:
        print(f"OK {a.image}: {W}x{H} head={a.head} frame={a.frame}: all {W * H} pixels match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
