//! The parent against workers that misbehave: fakes in Python that speak the frame protocol
//! (or not) on fd 3, so no GL is involved. The real worker is tested in
//! `tests/isolated_worker.rs`.

use std::{path::PathBuf, time::Instant};

use super::*;

/// A fake worker whose main loop is `body` (Python, with `recv()` / `send(obj)` defined).
fn fake(name: &str, body: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("scanway-fake-worker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let script = format!(
        r#"#!/usr/bin/env python3
import json, os, socket, struct, sys
s = socket.socket(fileno=3)
def exact(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            sys.exit(0)
        b += c
    return b
seq = 0
def recv():
    global seq
    jl, pl, nf, seq = struct.unpack("<IIII", exact(16))
    call = json.loads(exact(jl))
    exact(pl)
    return call
def send(obj, payload=b""):
    j = json.dumps(obj).encode()
    s.sendall(struct.pack("<IIII", len(j), len(payload), 0, seq) + j + payload)
HELLO = {{"Reply": {{"Hello": {{"pid": os.getpid(), "capsets": [{{"id": 1, "max_version": 1, "max_size": 308}}], "gl": "fake"}}}}}}
{body}
"#
    );
    std::fs::write(&path, script).unwrap();
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&path, perms).unwrap();
    path
}

#[test]
fn a_worker_that_sends_garbage_is_refused_at_once() {
    let exe = fake("garbage", "s.sendall(b'\\xff' * 64)\nimport time\ntime.sleep(30)");
    let t0 = Instant::now();
    let e = Isolated3d::spawn("g", exe).unwrap_err();
    assert!(t0.elapsed() < CALL_TIMEOUT / 2, "waited {:?}", t0.elapsed());
    assert!(format!("{e:#}").contains("start"), "{e:#}");
}

#[test]
fn a_worker_that_exits_at_once_is_refused() {
    let exe = fake("exits", "sys.exit(3)");
    assert!(Isolated3d::spawn("g", exe).is_err());
}

#[test]
fn a_worker_that_answers_out_of_turn_is_dropped() {
    // Hello, then the next call answered with an earlier call's number: a stray reply, which
    // must never pass for the answer to the call in flight.
    let exe =
        fake("chatty", "recv()\nsend(HELLO)\nrecv()\nseq -= 1\nsend({'Reply': 'Ok'})\nimport time\ntime.sleep(30)");
    let mut r = Isolated3d::spawn("g", exe).unwrap();
    assert!(matches!(r.context_create(1, 0, "x"), Err(Error3d::WorkerGone)));
    let Renderer3dStatus::Isolated(w) = r.status() else { panic!("not isolated") };
    assert!(!w.running && w.lost == 1, "{w:?}");
}

#[test]
fn a_lost_worker_answers_its_fences_and_a_reset_starts_another() {
    // Hello, three fences, then death on the next call.
    let exe = fake(
        "dies",
        "recv()\nsend(HELLO)\nn = 0\nwhile True:\n    c = recv()\n    if isinstance(c, dict) and 'CreateFence' in c:\n        n += 1\n        send({'Reply': {'Fence': {'Global': n}}})\n    else:\n        os._exit(1)",
    );
    let mut r = Isolated3d::spawn("g", exe).unwrap();
    let fences: Vec<HostFence> = (0..3).map(|_| r.create_fence(0, None).unwrap()).collect();
    assert_eq!(fences, [HostFence::Global(1), HostFence::Global(2), HostFence::Global(3)]);
    assert_eq!(r.own_fences(), Some(Vec::new()), "nothing retired yet");
    assert!(matches!(r.submit(1, &mut [0]), Err(Error3d::WorkerGone)));
    let retired = r.own_fences().unwrap();
    assert!(fences.iter().all(|f| retired.iter().any(|x| f.retired_by(x))), "{retired:?}");
    assert!(matches!(r.transfer(&Transfer3d::default()), Err(Error3d::WorkerGone)));
    assert_eq!(r.num_capsets(), 1, "capsets stay as the guest read them");
    r.reset();
    let Renderer3dStatus::Isolated(w) = r.status() else { panic!("not isolated") };
    assert!(w.running && w.restarts == 1 && w.lost == 1, "{w:?}");
    assert_eq!(r.create_fence(0, None).unwrap(), HostFence::Global(1));
}

#[test]
fn a_worker_frame_over_the_bounds_ends_it() {
    // A header announcing a 4 GiB frame must not make the parent allocate or wait for it.
    let exe = fake(
        "huge",
        "recv()\nsend(HELLO)\nrecv()\ns.sendall(struct.pack('<IIII', 0xffffffff, 0, 0, seq))\nimport time\ntime.sleep(30)",
    );
    let mut r = Isolated3d::spawn("g", exe).unwrap();
    let t0 = Instant::now();
    assert!(matches!(r.context_destroy(1), Err(Error3d::WorkerGone)));
    assert!(t0.elapsed() < CALL_TIMEOUT / 2);
}

/// Whether `fd` is readable now.
fn readable(fd: RawFd) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, 0) == 1 }
}

#[test]
fn fences_that_come_with_a_reply_wake_the_compositor() {
    // The fence's retirement arrives just before the reply to a later call (a read-back while
    // drawing, say): the socket is then drained, so the wake descriptor must say so itself.
    let exe = fake(
        "fence-then-reply",
        "recv()\nsend(HELLO)\nrecv()\nsend({'Reply': {'Fence': {'Global': 1}}})\nrecv()\n\
         seq_of_call = seq\nseq = 0\nsend({'Fences': [{'ctx_id': 0, 'ring_idx': 0, 'fence_id': 1, 'global': True}]})\n\
         seq = seq_of_call\nsend({'Reply': 'Ok'})\nimport time\ntime.sleep(30)",
    );
    let mut r = Isolated3d::spawn("g", exe).unwrap();
    let fence = r.create_fence(0, None).unwrap();
    assert!(!readable(r.wake_fd()));
    r.context_destroy(1).unwrap();
    assert!(readable(r.wake_fd()), "fences wait: the compositor must be woken");
    let retired = r.own_fences().unwrap();
    assert!(retired.iter().any(|f| fence.retired_by(f)), "{retired:?}");
    assert!(!readable(r.wake_fd()), "taken: nothing to wake for");
}
