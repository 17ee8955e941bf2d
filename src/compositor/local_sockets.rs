//! Connections of scanway's local sockets (control, attach), served on the event loop without
//! ever blocking it.
//!
//! Each accepted connection is non-blocking and registered with the loop; it has
//! [`Connections::timeout`] ([`CONNECTION_TIMEOUT`]) to send its request and take the reply,
//! after which it is closed, and at most [`MAX_OPEN`] of a socket's connections are open at
//! once (more are closed at accept).
//! So a client that connects and sends nothing, sends garbage, sends a line without end, or
//! never reads its reply costs one descriptor for a few seconds and never stalls the guests,
//! whose queues the same loop serves.
//!
//! The control protocol is one JSON request line and one JSON reply ([`crate::control`]); the
//! request is read as it arrives, up to [`control::MAX_REQUEST`] bytes.

use std::{
    collections::HashMap,
    io::{ErrorKind, Read, Write},
    os::unix::net::{UnixListener, UnixStream},
    time::Duration,
};

use smithay::reexports::calloop::{
    Interest, Mode, PostAction, RegistrationToken,
    generic::Generic,
    timer::{TimeoutAction, Timer},
};
use tracing::{debug, warn};

use super::{State, guests};
use crate::control;

/// How long a connection may take from accept to its reply written (the default of
/// [`Connections::timeout`]).
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections of one socket open at once.
pub const MAX_OPEN: usize = 16;

/// Which socket a connection came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Socket {
    /// The control socket (`scanway list`, `screenshot`, ...).
    Control,
    /// The attach socket (`scanway --fd=N`, libvirt's backend processes).
    Attach,
}

/// The open connections, each with its loop sources (the connection, its deadline timer).
pub struct Connections {
    open: HashMap<u64, Open>,
    next: u64,
    /// Connections refused because [`MAX_OPEN`] were open, per socket (warned once each).
    refused: HashMap<Socket, u64>,
    /// How long a connection may stay open: [`CONNECTION_TIMEOUT`] (tests shorten it).
    pub timeout: Duration,
}

impl Default for Connections {
    fn default() -> Self {
        Connections { open: HashMap::new(), next: 0, refused: HashMap::new(), timeout: CONNECTION_TIMEOUT }
    }
}

struct Open {
    socket: Socket,
    source: RegistrationToken,
    deadline: RegistrationToken,
}

impl Connections {
    /// Open connections of `socket`.
    pub fn count(&self, socket: Socket) -> usize {
        self.open.values().filter(|o| o.socket == socket).count()
    }
}

/// What a connection's handler asks for after a readiness event.
pub enum Progress {
    /// Waiting for more of the request: keep the connection.
    More,
    /// Finished (answered, or refused): close it.
    Done,
    /// Write these bytes to the client as it takes them, then close.
    Reply(Vec<u8>),
}

/// Take `stream`, accepted on `socket`, onto the loop: `on_ready` runs whenever it is readable
/// (never blocking: the stream is non-blocking) until it returns [`Progress::Done`] or the
/// deadline passes. Closed at once when [`MAX_OPEN`] connections of `socket` are open.
pub fn admit(
    state: &mut State,
    socket: Socket,
    stream: UnixStream,
    mut on_ready: impl FnMut(&mut State, &UnixStream) -> Progress + 'static,
) {
    let conns = &mut state.comp.connections;
    if conns.count(socket) >= MAX_OPEN {
        let refused = conns.refused.entry(socket).or_default();
        *refused += 1;
        if *refused == 1 {
            warn!("{socket:?} socket: {MAX_OPEN} connections open; closing new ones until one ends");
        } else {
            debug!("{socket:?} socket: connection {refused} refused ({MAX_OPEN} open)");
        }
        return;
    }
    if let Err(e) = stream.set_nonblocking(true) {
        debug!("{socket:?} connection: {e}");
        return;
    }
    let id = conns.next;
    conns.next += 1;
    let handle = state.comp.loop_handle.clone();
    let source = handle.insert_source(Generic::new(stream, Interest::READ, Mode::Level), move |_, stream, state| {
        Ok(match on_ready(state, stream) {
            Progress::More => PostAction::Continue,
            Progress::Done => {
                close(state, id, false);
                PostAction::Remove
            }
            Progress::Reply(bytes) => {
                let mut reply = Reply { bytes, sent: 0 };
                match reply.write(stream) {
                    Progress::More => write_later(state, id, stream, reply),
                    _ => close(state, id, false),
                }
                PostAction::Remove
            }
        })
    });
    let Ok(source) = source else {
        warn!("{socket:?} connection: the event loop refused its source");
        return;
    };
    let timeout = state.comp.connections.timeout;
    let deadline = handle.insert_source(Timer::from_duration(timeout), move |_, _, state| {
        debug!("{socket:?} connection: not done within {timeout:?}; closed");
        close(state, id, true);
        TimeoutAction::Drop
    });
    match deadline {
        Ok(deadline) => {
            state.comp.connections.open.insert(id, Open { socket, source, deadline });
        }
        Err(_) => state.comp.loop_handle.remove(source),
    }
}

/// A reply being written.
struct Reply {
    bytes: Vec<u8>,
    sent: usize,
}

impl Reply {
    /// Write as much as the socket takes now: [`Progress::More`] when some is left.
    fn write(&mut self, mut stream: &UnixStream) -> Progress {
        while self.sent < self.bytes.len() {
            match stream.write(&self.bytes[self.sent..]) {
                Ok(0) => return Progress::Done,
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Progress::More,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("local socket reply: {e}");
                    return Progress::Done;
                }
            }
        }
        Progress::Done
    }
}

/// The rest of `reply` when the socket can take it: connection `id`'s source becomes one that
/// polls `stream` (a duplicate of its descriptor) for writability; its deadline still holds.
fn write_later(state: &mut State, id: u64, stream: &UnixStream, mut reply: Reply) {
    let Ok(dup) = stream.try_clone() else {
        close(state, id, false);
        return;
    };
    let source = state.comp.loop_handle.insert_source(
        Generic::new(dup, Interest::WRITE, Mode::Level),
        move |_, stream, state| {
            Ok(match reply.write(stream) {
                Progress::More => PostAction::Continue,
                _ => {
                    close(state, id, false);
                    PostAction::Remove
                }
            })
        },
    );
    match (source, state.comp.connections.open.get_mut(&id)) {
        (Ok(token), Some(open)) => open.source = token,
        (Ok(token), None) => state.comp.loop_handle.remove(token),
        (Err(_), _) => close(state, id, false),
    }
}

/// Forget connection `id`: remove its connection source too when its deadline fired, its timer
/// when it finished (`expired` false: the caller is the connection source's callback, which
/// removes itself).
fn close(state: &mut State, id: u64, expired: bool) {
    if let Some(open) = state.comp.connections.open.remove(&id) {
        if expired {
            state.comp.loop_handle.remove(open.source);
        } else {
            state.comp.loop_handle.remove(open.deadline);
        }
    }
}

/// Serve the control socket: every connection through [`admit`], its request answered by
/// [`State::control`].
pub fn serve_control(state: &mut State, listener: UnixListener) -> anyhow::Result<()> {
    guests::serve_listener(state, listener, "control socket", |state, stream| {
        let mut request = ControlRequest::default();
        admit(state, Socket::Control, stream, move |state, stream| request.on_ready(state, stream));
    })
}

/// One control connection's request line, as it arrives.
#[derive(Default)]
struct ControlRequest {
    line: Vec<u8>,
}

impl ControlRequest {
    fn on_ready(&mut self, state: &mut State, stream: &UnixStream) -> Progress {
        let reply = match read_line(stream, &mut self.line) {
            Ok(false) => return Progress::More,
            Ok(true) => serde_json::from_slice(trim_line(&self.line))
                .map_err(|e| anyhow::anyhow!("malformed request: {e}"))
                .and_then(|req| state.control(req)),
            Err(e) if e.kind() == ErrorKind::InvalidData => Err(anyhow::anyhow!("{e}")),
            Err(e) => {
                debug!("control connection: {e}");
                return Progress::Done;
            }
        };
        Progress::Reply(control::reply_bytes(reply))
    }
}

/// Read what `stream` has into `line`: `Ok(true)` once it holds a newline or the client has
/// shut its writing side (a request without newline), `Ok(false)` when more must come.
/// Errors: the request grew past [`control::MAX_REQUEST`] bytes, or the read failed.
fn read_line(mut stream: &UnixStream, line: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                line.extend_from_slice(&buf[..n]);
                if line.len() as u64 > control::MAX_REQUEST {
                    let msg = format!("request longer than {} bytes", control::MAX_REQUEST);
                    return Err(std::io::Error::new(ErrorKind::InvalidData, msg));
                }
                if buf[..n].contains(&b'\n') {
                    return Ok(true);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The request line without its newline and anything after it.
fn trim_line(line: &[u8]) -> &[u8] {
    line.iter().position(|&b| b == b'\n').map_or(line, |end| &line[..end])
}
