#!/usr/bin/env python3
"""scanway end-to-end suite: real guests (QEMU, TCG) drawing through virtio-gpu
into scanway, checked pixel-exactly.  Python 3 standard library only.

  tests/e2e/run.py [--only CASE,...] [--backend-bin PATH] [--c-backend [--c-backend-bin PATH]]
                   [--timeout-scale F] [--frames N] [--list] [--no-build-guest]

Each case starts `scanway run --backend headless --control <tmp>/ctl.sock
--guest g0=<tmp>/g0.sock[,outputs=N]` (waits for its "listening" line), boots
the test guest (tests/guest/run-guest.sh --hold 0) against that socket, waits
for the guest's READY/DONE line, takes `scanway screenshot --guest g0 --scanout
N` (checked exactly: the shot is the scanout) and `scanway screenshot --output`
(checked with --locate), quits QEMU over QMP and stops scanway with SIGTERM:
scanway must exit 0 without a panic.

--c-backend: QEMU's C backend (/usr/lib/qemu/vhost-user-gpu) serves the sockets
instead and screenshots come from QMP screendump; validates the guest kit and
this driver.  scanway-only checks (list, connection lines, nested) are skipped.

Logs of case C: target/e2e/C/ (driver steps in case.log, scanway's stdout and
stderr, run-guest logs, serial logs, screenshots, list JSON).  One line per
case, then "N passed, N failed"; exit status 1 on any failure.
"""
import argparse
import fnmatch
import os
import signal
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as H  # noqa: E402
import desktop  # noqa: E402  (the desktop-* cases)
from harness import CaseFailure, Skip  # noqa: E402
from libvirt_case import case_libvirt  # noqa: E402  (the libvirt case)
from cases_3d import case_gles_pattern, case_isolated_3d, case_kmscube, case_kmscube_two  # noqa: E402
from cases_hostile import case_bad_streams  # noqa: E402
from cases_display import (  # noqa: E402
    case_animate, case_edid, case_fbpattern, case_multihead, case_pattern, case_pattern_1024, case_pattern_1920,
    case_reconnect,
)
from cases_input import case_input, case_input_3d, case_resize_3d  # noqa: E402
from cases_tty import case_tty  # noqa: E402
from cases_windows import case_cursor, case_nested, case_resize, case_wayland_client  # noqa: E402


CASES = [
    ("pattern", case_pattern, 150),
    ("pattern-1024x768", case_pattern_1024, 150),
    ("pattern-1920x1080", case_pattern_1920, 150),
    ("fbpattern", case_fbpattern, 150),
    ("multihead", case_multihead, 150),
    ("animate", case_animate, 200),
    ("reconnect", case_reconnect, 300),
    ("edid", case_edid, 150),
    ("nested", case_nested, 150),
    ("wayland-client", case_wayland_client, 150),
    ("cursor", case_cursor, 150),
    ("resize", case_resize, 200),
    ("input", case_input, 200),
    ("input-3d", case_input_3d, 200),
    ("resize-3d", case_resize_3d, 200),
    ("kmscube", case_kmscube, 300),
    ("gles-pattern", case_gles_pattern, 300),
    ("kmscube-two-guests", case_kmscube_two, 400),
    ("isolated-3d", case_isolated_3d, 400),
    ("bad-streams", case_bad_streams, 400),
    ("tty", case_tty, 400),
    ("libvirt", case_libvirt, 480),
    ("desktop-weston", desktop.case_desktop_weston, 300),
    ("desktop-xorg", desktop.case_desktop_xorg, 300),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated case names (shell patterns allowed)")
    ap.add_argument("--backend-bin", default=str(H.DEFAULT_SCANWAY), help="scanway binary (default %(default)s)")
    ap.add_argument("--c-backend", action="store_true", help="use QEMU's C backend instead of scanway")
    ap.add_argument("--c-backend-bin", default=H.C_BACKEND_BIN)
    ap.add_argument("--frames", type=int, default=60, help="animate case frames (default %(default)s)")
    ap.add_argument("--timeout-scale", type=float, default=float(os.environ.get("E2E_TIMEOUT_SCALE", "1")))
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--no-build-guest", action="store_true", help="do not run tests/guest/build-guest.sh")
    opts = ap.parse_args()

    if opts.list:
        print("\n".join(name for name, _, _ in CASES))
        return 0
    selected = CASES
    if opts.only:
        pats = [p.strip() for p in opts.only.split(",") if p.strip()]
        unknown = [p for p in pats if not any(fnmatch.fnmatchcase(n, p) for n, _, _ in CASES)]
        if unknown:
            ap.error(f"no case matches {', '.join(unknown)} (cases: {', '.join(n for n, _, _ in CASES)})")
        selected = [c for c in CASES if any(fnmatch.fnmatchcase(c[0], p) for p in pats)]
    if opts.c_backend:
        if not os.access(opts.c_backend_bin, os.X_OK):
            ap.error(f"{opts.c_backend_bin} missing (Debian package qemu-system-gui)")
    else:
        opts.backend_bin = str(Path(opts.backend_bin).resolve())
        if not os.access(opts.backend_bin, os.X_OK):
            ap.error(f"{opts.backend_bin} missing: run `cargo build --release` (or pass --backend-bin, or --c-backend)")
    if not opts.no_build_guest:
        H.build_guest()

    # SIGTERM (e.g. from CI's timeout) unwinds like Ctrl-C, so every case cleans up
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    backend = f"QEMU C backend {opts.c_backend_bin}" if opts.c_backend else f"scanway {opts.backend_bin}"
    print(f"e2e: {len(selected)} cases against {backend}; logs in {H.TARGET / 'e2e'}", flush=True)
    passed = failed = 0
    skipped = []
    for name, fn, timeout in selected:
        t0 = time.monotonic()
        ctx = H.Ctx(name, opts, timeout, H.TARGET / "e2e", c_mode=opts.c_backend)
        status, detail, interrupted = "FAIL", "", False
        try:
            detail = fn(ctx)
            status = "PASS"
        except Skip as e:
            status, detail = "SKIP", str(e)
        except CaseFailure as e:
            detail = str(e)
        except KeyboardInterrupt:
            detail, interrupted = "interrupted", True
        except Exception as e:  # a driver bug: report it as this case's failure
            detail = f"{type(e).__name__}: {e}"
            import traceback
            ctx.log(traceback.format_exc())
        finally:
            ctx.log(f"{status}: {detail}")
            ctx.close()
        secs = time.monotonic() - t0
        print(f"{status} {name:<18} {secs:6.1f}s  {detail}", flush=True)
        if interrupted:
            return 130
        if status == "PASS":
            passed += 1
        elif status == "SKIP":
            skipped.append(name)
        else:
            failed += 1
            print(f"     logs: {ctx.dir}", flush=True)
    if skipped:
        print(f"skipped: {', '.join(skipped)}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
