//! The control socket under hostile clients: idle, garbage, endless lines, too many at once.
//! None of them may stall the event loop (which also serves the guests) or keep a descriptor
//! past the connection deadline.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    thread,
    time::Duration,
};

use super::Fixture;
use crate::{
    compositor::guests,
    compositor::local_sockets::{self, MAX_OPEN, Socket},
    control::{self, Request},
};

/// The fixture serving a control socket in its directory; returns the socket's path.
fn serve(fx: &mut Fixture) -> std::path::PathBuf {
    let path = fx.dir.join("ctl.sock");
    let listener = guests::bind_listener(&path).unwrap();
    local_sockets::serve_control(&mut fx.state, listener).unwrap();
    path
}

/// `scanway list` from another thread, answered while the fixture dispatches.
fn list_while_dispatching(fx: &mut Fixture, path: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let path = path.to_owned();
    let client = thread::spawn(move || control::request(&path, &Request::List));
    fx.until("the list request's answer", |_| client.is_finished());
    client.join().unwrap()
}

/// One reply line of a raw connection (after the client shut its writing side or sent a line).
fn reply_of(mut stream: UnixStream, fx: &mut Fixture) -> serde_json::Value {
    stream.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    fx.until("a reply line", |_| {
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
        }
        got.ends_with(b"\n")
    });
    serde_json::from_slice(&got).unwrap()
}

#[test]
fn a_silent_client_does_not_stall_others() {
    let mut fx = Fixture::new();
    let path = serve(&mut fx);
    // connected, sends nothing (the old server blocked the loop reading it for 10 s), and one
    // that sent half a request
    let _silent = UnixStream::connect(&path).unwrap();
    let mut half = UnixStream::connect(&path).unwrap();
    half.write_all(br#"{"cmd":"li"#).unwrap();
    let reply = list_while_dispatching(&mut fx, &path).unwrap();
    assert!(reply.get("guests").is_some(), "{reply}");
    // answered while both others are still open: nothing waited for them
    assert_eq!(fx.state.comp.connections.count(Socket::Control), 2);
}

#[test]
fn garbage_gets_an_error_and_the_socket_keeps_serving() {
    let mut fx = Fixture::new();
    let path = serve(&mut fx);
    for garbage in [&b"\x00\xff\xfe not json\n"[..], b"{\"cmd\":\"no_such\"}\n", b"[1,2,3]\n", b"\n"] {
        let mut c = UnixStream::connect(&path).unwrap();
        c.write_all(garbage).unwrap();
        let reply = reply_of(c, &mut fx);
        assert_eq!(reply["ok"], false, "{garbage:?} -> {reply}");
    }
    // a line longer than MAX_REQUEST: refused once that much has come, not buffered on
    let mut long = UnixStream::connect(&path).unwrap();
    long.set_nonblocking(true).unwrap();
    let chunk = vec![b'x'; 16 * 1024];
    let mut sent = 0u64;
    fx.until("the long line refused", |fx| {
        match long.write(&chunk) {
            Ok(n) => sent += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            // the server answered and closed: the rest of the line is refused
            Err(_) => return true,
        }
        fx.state.comp.connections.count(Socket::Control) == 0 && sent > control::MAX_REQUEST
    });
    // a request without newline, ended by shutting the writing side, is still one request
    let mut c = UnixStream::connect(&path).unwrap();
    c.write_all(br#"{"cmd":"list"}"#).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(reply_of(c, &mut fx)["ok"], true);
    assert!(list_while_dispatching(&mut fx, &path).is_ok());
}

#[test]
fn idle_clients_are_closed_at_the_deadline_and_at_most_max_open_are_kept() {
    let mut fx = Fixture::new();
    fx.state.comp.connections.timeout = Duration::from_millis(200);
    let path = serve(&mut fx);
    let idle: Vec<UnixStream> = (0..MAX_OPEN + 4).map(|_| UnixStream::connect(&path).unwrap()).collect();
    fx.until("the connections accepted", |fx| fx.state.comp.connections.count(Socket::Control) == MAX_OPEN);
    // the ones past MAX_OPEN were closed at accept: end of file for them
    for _ in 0..3 {
        fx.dispatch();
    }
    let closed = idle
        .iter()
        .filter(|s| {
            s.set_nonblocking(true).unwrap();
            matches!((&**s).read(&mut [0u8; 1]), Ok(0))
        })
        .count();
    assert_eq!(closed, 4, "connections past MAX_OPEN closed at once");
    // the deadline closes the others: every descriptor handed back
    fx.until("the idle connections timed out", |fx| fx.state.comp.connections.count(Socket::Control) == 0);
    for s in &idle {
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!((&*s).read(&mut [0u8; 1]).unwrap(), 0);
    }
    assert!(list_while_dispatching(&mut fx, &path).is_ok());
}

#[test]
fn a_reply_larger_than_the_socket_buffer_is_written_as_the_client_reads() {
    let mut fx = Fixture::new();
    let path = serve(&mut fx);
    for n in 0..2000 {
        let config =
            crate::virtio::device::GpuConfig { name: format!("guest-{n}"), ..fx.state.comp.guest_template.clone() };
        guests::push_guest(&mut fx.state, &format!("guest-{n}"), None, None, config);
    }
    let mut c = UnixStream::connect(&path).unwrap();
    c.write_all(b"{\"cmd\":\"list\"}\n").unwrap();
    // the client reads nothing while the server writes what the socket takes
    for _ in 0..20 {
        fx.dispatch();
    }
    assert_eq!(fx.state.comp.connections.count(Socket::Control), 1, "the reply is still being written");
    fx.dispatch();
    let reply = reply_of(c, &mut fx);
    assert_eq!(reply["guests"].as_array().unwrap().len(), 2000);
    let len = serde_json::to_vec(&reply).unwrap().len();
    assert!(len > 256 * 1024, "the reply ({len} bytes) outgrew a socket buffer");
}
