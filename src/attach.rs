//! scanway as a VMM's vhost-user GPU backend program: the process libvirt (or any VMM manager
//! following QEMU's "vhost-user backend program conventions", `docs/interop/vhost-user.rst`)
//! starts per VM, which hands the VM's connection to the one running compositor.
//!
//! - `scanway --print-capabilities` prints `{"type": "gpu", "features": ["virgl"]}`: libvirt
//!   runs it at every domain start and picks the first descriptor whose backend offers what
//!   the domain asks for (`virgl` for `<acceleration accel3d='yes'/>`). scanway does not
//!   offer `render-node`: libvirt would then pick a DRM render node itself and refuse to start
//!   on a host without one, and scanway's GL is the compositor's own anyway.
//! - `scanway --fd=N [--virgl]`: fd N is one end of the VMM's vhost-user connection (a
//!   connected stream socket). The process sends it with SCM_RIGHTS to the running scanway's
//!   attach socket ([`DEFAULT_ATTACH_SOCKET`]) with an [`AttachRequest`], then lives as long as
//!   the VM: it exits when scanway closes the attach connection (the VMM went away, or scanway
//!   ended) and on SIGTERM (libvirt's stop). It keeps every inherited descriptor open: libvirt
//!   finds the process through the lock on its pidfile, which the process inherits.
//!
//! The VM's name comes from that pidfile: libvirt names it
//! `<state dir>/<domain id>-<short name>-<device alias>-vhost-user-gpu.pid`
//! (`/run/libvirt/qemu/...` for `qemu:///system`); the guest is named by that short name, and
//! scanway looks the domain up by its id to open its D-Bus display (`virDomainOpenGraphicsFD`).
//!
//! When no scanway is running, the process says so on stderr and in the system log and exits
//! with status 1 before the VM starts; QEMU then fails its vhost-user handshake and libvirt the
//! start (`vhost_backend_init failed`): a VM whose display nobody shows is not started silently.

use std::{
    io::{BufRead, BufReader, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::net::UnixStream,
    },
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

/// Where a running scanway accepts VM connections from backend processes
/// (`scanway run --attach-socket`), and where those look for it.
pub const DEFAULT_ATTACH_SOCKET: &str = "/run/scanway/attach.sock";
/// Environment variable overriding [`DEFAULT_ATTACH_SOCKET`] for the backend process.
pub const ATTACH_SOCKET_ENV: &str = "SCANWAY_ATTACH_SOCKET";
/// Longest attach request line, bytes.
pub const MAX_ATTACH_REQUEST: u64 = 4096;
/// How long the backend process waits for scanway's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What `--print-capabilities` prints (libvirt's `qemuVhostUserGPUFillCapabilities` reads
/// `type` and the `features` array; `virgl` and `render-node` are the features it knows).
pub fn capabilities_json() -> String {
    serde_json::json!({"type": "gpu", "features": ["virgl"]}).to_string()
}

/// The libvirt domain a backend process serves.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LibvirtDomain {
    /// Connection URI: `qemu:///system` or `qemu:///session`.
    pub uri: String,
    /// The running domain's id (`virsh domid`).
    pub id: u32,
    /// The name as the pidfile has it (libvirt shortens names to 20 characters there).
    pub short_name: String,
}

/// One line of JSON on the attach socket, sent with the VMM connection's descriptor as
/// SCM_RIGHTS ancillary data. scanway answers one line, `{"ok": true, "guest": NAME}` or
/// `{"ok": false, "error": ...}`, and closes the connection when that guest's VMM goes away.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AttachRequest {
    /// The guest's name in scanway (windows, `scanway list`); made unique by scanway.
    pub name: String,
    /// Offer virgl (libvirt passes `--virgl` for `accel3d='yes'`).
    pub virgl: bool,
    /// The libvirt domain, when libvirt started this process: its D-Bus display gives input and
    /// resize (`<graphics type='dbus'/>`).
    pub libvirt: Option<LibvirtDomain>,
}

/// Parse a libvirt vhost-user-gpu pidfile path (see the module documentation).
pub fn domain_from_pidfile(path: &Path) -> Option<LibvirtDomain> {
    let file = path.file_name()?.to_str()?;
    let stem = file.strip_suffix("-vhost-user-gpu.pid")?;
    // "<id>-<short name>-<alias>": the alias (video0) has no '-', the name may
    let (id_and_name, _alias) = stem.rsplit_once('-')?;
    let (id, short_name) = id_and_name.split_once('-')?;
    let id = id.parse().ok()?;
    if short_name.is_empty() {
        return None;
    }
    let dir = path.parent()?;
    let uri = if dir.starts_with("/run/libvirt") || dir.starts_with("/var/run/libvirt") {
        "qemu:///system"
    } else {
        "qemu:///session"
    };
    Some(LibvirtDomain { uri: uri.to_owned(), id, short_name: short_name.to_owned() })
}

/// The libvirt domain whose pidfile this process inherited (a descriptor open on it).
fn inherited_domain() -> Option<LibvirtDomain> {
    std::fs::read_dir("/proc/self/fd")
        .ok()?
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .find_map(|target| domain_from_pidfile(&target))
}

/// Options of the backend program (`scanway --fd=N ...`), parsed by the command line.
#[derive(Debug, Clone, Default)]
pub struct BackendArgs {
    /// The VMM connection's descriptor.
    pub fd: RawFd,
    /// `--virgl`: the VM asked for 3D.
    pub virgl: bool,
    /// The guest's name, when not a libvirt domain's.
    pub name: Option<String>,
    /// The running scanway's attach socket.
    pub attach_socket: Option<PathBuf>,
}

/// Run the backend program: hand the connection to scanway, then wait for the VM's end.
/// Errors: no scanway listening on the attach socket, `--fd` not a stream socket, scanway's
/// refusal (its reason).
pub fn run_backend(args: BackendArgs) -> anyhow::Result<()> {
    let socket = args
        .attach_socket
        .clone()
        .or_else(|| std::env::var_os(ATTACH_SOCKET_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ATTACH_SOCKET));
    // SAFETY: the descriptor was handed to this process to own (`--fd`); it is checked below.
    let vmm = unsafe { OwnedFd::from_raw_fd(args.fd) };
    check_stream_socket(&vmm).with_context(|| format!("--fd={}", args.fd))?;
    let libvirt = inherited_domain();
    let name = args
        .name
        .clone()
        .or_else(|| libvirt.as_ref().map(|d| d.short_name.clone()))
        .unwrap_or_else(|| format!("vm-{}", std::process::id()));
    let request = AttachRequest { name, virgl: args.virgl, libvirt };
    let stream = UnixStream::connect(&socket).map_err(|e| {
        anyhow!(
            "no scanway is running to show this VM: cannot connect to {} ({e}); start `scanway run` \
             (it listens there) before the VM",
            socket.display()
        )
    })?;
    let mut line = serde_json::to_vec(&request)?;
    line.push(b'\n');
    let sent = stream.send_with_fd(&line[..], vmm.as_raw_fd()).context("sending the VMM connection")?;
    if sent != line.len() {
        bail!("attach socket: short write");
    }
    drop(vmm); // scanway holds it now
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    let mut reader = BufReader::new(std::io::Read::take(&stream, MAX_ATTACH_REQUEST));
    let mut answer = String::new();
    reader.read_line(&mut answer).context("scanway's answer")?;
    let answer: serde_json::Value =
        serde_json::from_str(&answer).with_context(|| format!("scanway's answer `{}`", answer.trim()))?;
    if answer["ok"] != true {
        bail!("scanway refused the VM: {}", answer["error"].as_str().unwrap_or("no reason given"));
    }
    let guest = answer["guest"].as_str().unwrap_or("?");
    eprintln!("scanway: VM attached as guest {guest} through {}", socket.display());
    // Live as long as the VM: scanway closes the connection when the VMM goes away.
    stream.set_read_timeout(None)?;
    let mut stream = &stream;
    let _ = std::io::copy(&mut stream, &mut std::io::sink());
    Ok(())
}

fn check_stream_socket(fd: &OwnedFd) -> anyhow::Result<()> {
    let mut kind: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `kind`.
    let rc =
        unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TYPE, (&raw mut kind).cast(), &mut len) };
    if rc != 0 {
        bail!("not a socket: {}", std::io::Error::last_os_error());
    }
    if kind != libc::SOCK_STREAM {
        bail!("not a stream socket");
    }
    Ok(())
}

/// Report a failure of the backend program where libvirt's user can find it: stderr (libvirt
/// points it at /dev/null) and the system log.
pub fn report_failure(err: &anyhow::Error) {
    let msg = format!("scanway vhost-user-gpu backend: {err:#}");
    eprintln!("{msg}");
    if let Ok(c) = std::ffi::CString::new(msg.replace('%', "%%")) {
        // SAFETY: both strings are NUL-terminated and the format has no conversions but %s.
        unsafe {
            libc::openlog(c"scanway".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON);
            libc::syslog(libc::LOG_ERR, c"%s".as_ptr(), c.as_ptr());
        }
    }
}

/// Write the answer line to a backend process.
pub fn write_answer(mut stream: &UnixStream, answer: Result<&str, String>) -> std::io::Result<()> {
    let value = match answer {
        Ok(guest) => serde_json::json!({"ok": true, "guest": guest}),
        Err(e) => serde_json::json!({"ok": false, "error": e}),
    };
    let mut line = value.to_string().into_bytes();
    line.push(b'\n');
    stream.write_all(&line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libvirt_pidfile_names() {
        let d = domain_from_pidfile(Path::new("/run/libvirt/qemu/12-my-vm-video0-vhost-user-gpu.pid")).unwrap();
        assert_eq!(d, LibvirtDomain { uri: "qemu:///system".into(), id: 12, short_name: "my-vm".into() });
        let d = domain_from_pidfile(Path::new("/home/u/.cache/libvirt/qemu/run/3-vm1-video1-vhost-user-gpu.pid"));
        assert_eq!(d.unwrap().uri, "qemu:///session");
        for bad in [
            "/run/libvirt/qemu/lvprobe.pid",
            "/run/libvirt/qemu/x-vm-video0-vhost-user-gpu.pid",
            "/run/libvirt/qemu/1--video0-vhost-user-gpu.pid",
            "/run/libvirt/qemu/video0-vhost-user-gpu.pid",
        ] {
            assert_eq!(domain_from_pidfile(Path::new(bad)), None, "{bad}");
        }
    }

    #[test]
    fn capabilities_are_what_libvirt_parses() {
        let v: serde_json::Value = serde_json::from_str(&capabilities_json()).unwrap();
        assert_eq!(v["type"], "gpu");
        assert_eq!(v["features"], serde_json::json!(["virgl"]));
    }

    #[test]
    fn request_round_trip() {
        let r = AttachRequest {
            name: "vm".into(),
            virgl: true,
            libvirt: Some(LibvirtDomain { uri: "qemu:///system".into(), id: 1, short_name: "vm".into() }),
        };
        let back: AttachRequest = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
