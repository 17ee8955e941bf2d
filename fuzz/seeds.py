#!/usr/bin/env python3
"""seeds.py RECORDINGS_DIR: turn guests' recorded requests (scanway run --record-commands, see
src/virtio/device/record.rs) into seed corpora under fuzz/corpus/:

  ctrl_commands/  each recording as it is (its format is that target's input), at most 64 KiB
                  of records from its start, and one more from its last 64 KiB (steady state)
  virgl_stream/   every distinct SUBMIT_3D command stream (the dwords after CMD_SUBMIT_3D's
                  32-byte header)
  queue_rings/    guest memory with a split ring of the first commands of each recording, as
                  the Linux driver lays it out: a readable descriptor per request and a writable
                  one for its response, the available ring naming them (queue_rings' layout)

Seed files are named by the SHA-1 of their content, so running this again adds only new ones;
scripts/record-seeds.sh then minimises each corpus (libFuzzer -merge=1) to the inputs that add
coverage.
Python 3 standard library only."""
import hashlib
import struct
import sys
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"
SUBMIT_3D = 0x0207
MAX_SEED = 64 << 10


def records(data):
    """(flags, request bytes) of a recording, after its 8-byte header."""
    i = 8
    while i + 3 <= len(data):
        flags, n = data[i], struct.unpack_from("<H", data, i + 1)[0]
        yield flags, data[i + 3:i + 3 + n]
        i += 3 + n


def encode(header, recs):
    return header + b"".join(bytes([f]) + struct.pack("<H", len(r)) + r for f, r in recs)


def keep(target, blob):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    p = d / hashlib.sha1(blob).hexdigest()
    if not p.exists():
        p.write_bytes(blob)
        return 1
    return 0


def ring_image(requests, size=16):
    """queue_rings input: shape byte (queue size 16, no EVENT_IDX), then 64 KiB of memory."""
    mem = bytearray(64 << 10)
    data_at, n = 0x3000, 0
    for i, req in enumerate(requests[:size // 2]):
        if data_at + len(req) + 1024 > len(mem):
            break
        resp_at = data_at + len(req)
        d0, d1 = 2 * i, 2 * i + 1
        # struct virtq_desc { le64 addr; le32 len; le16 flags; le16 next; }: NEXT = 1, WRITE = 2
        struct.pack_into("<QIHH", mem, 16 * d0, data_at, len(req), 1, d1)
        struct.pack_into("<QIHH", mem, 16 * d1, resp_at, 1024, 2, 0)
        mem[data_at:data_at + len(req)] = req
        struct.pack_into("<H", mem, 0x1004 + 2 * i, d0)  # avail ring[i]
        data_at = resp_at + 1024
        n += 1
    struct.pack_into("<HH", mem, 0x1000, 0, n)  # avail flags, idx
    # the target zero-fills memory past its input: trailing zeros need not be stored
    return (bytes([4]) + bytes(mem)).rstrip(b"\0")  # 1 << 4 = 16 entries


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__)
    added = {"ctrl_commands": 0, "virgl_stream": 0, "queue_rings": 0}
    for rec in sorted(Path(argv[1]).rglob("*.bin")):
        data = rec.read_bytes()
        if len(data) <= 8:
            continue
        header, recs = data[:8], list(records(data))
        head, size = [], 8
        for r in recs:
            if size + 3 + len(r[1]) > MAX_SEED:
                break
            head.append(r)
            size += 3 + len(r[1])
        added["ctrl_commands"] += keep("ctrl_commands", encode(header, head))
        tail, size = [], 8
        for r in reversed(recs):
            if size + 3 + len(r[1]) > MAX_SEED:
                break
            tail.insert(0, r)
            size += 3 + len(r[1])
        added["ctrl_commands"] += keep("ctrl_commands", encode(header, tail))
        for flags, req in recs:
            if len(req) >= 32 and struct.unpack_from("<I", req)[0] == SUBMIT_3D:
                added["virgl_stream"] += keep("virgl_stream", req[32:])
        ctrl = [req for flags, req in recs if not flags & 1]
        for start in range(0, min(len(ctrl), 64), 8):
            added["queue_rings"] += keep("queue_rings", ring_image(ctrl[start:]))
    for t, n in added.items():
        print(f"{t}: {n} new seeds ({len(list((CORPUS / t).iterdir())) if (CORPUS / t).exists() else 0} in all)")


if __name__ == "__main__":
    main(sys.argv)
