//! The attach socket: VMM connections handed over by backend processes (`scanway --fd=N`,
//! one per VM, started by libvirt; see [`crate::attach`]).
//!
//! A backend process connects, sends one [`AttachRequest`] line with the VMM's vhost-user
//! connection as SCM_RIGHTS ancillary data, and gets one answer line. scanway then serves that
//! connection as a guest exactly like one accepted on a `--guest` socket, and keeps the attach
//! connection open until the VMM goes away; closing it ends the backend process. A guest
//! attached under a name seen before takes that guest's slot again (its windows come back
//! where they were).
//!
//! Access: the socket is made `0660`, in the group `libvirt-qemu` (the group libvirt runs QEMU
//! and its backends as on Debian) where scanway may give it that group; else the directory's
//! group applies (README, "Your VM in scanway").
//!
//! Every connection is non-blocking and read once: a peer that sends nothing, garbage or no
//! descriptor is answered with an error and dropped; the event loop never waits on it.

use std::{
    os::{
        fd::OwnedFd,
        unix::{fs::PermissionsExt, net::UnixStream},
    },
    path::{Path, PathBuf},
};

use anyhow::Context;
use tracing::{debug, info, warn};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use super::{
    State, guests,
    guests::lock,
    local_sockets::{self, Progress, Socket},
    qemu_ui::UiLink,
};
use crate::{
    attach::{AttachRequest, MAX_ATTACH_REQUEST, write_answer},
    virtio::virgl3d::Virgl3d,
};

/// Group given to the attach socket when it exists (Debian's libvirt runs QEMU as it).
const ATTACH_GROUP: &str = "libvirt-qemu";
/// Most guests one scanway takes through the attach socket (slots are kept for re-attach).
const MAX_ATTACHED: usize = 64;

/// Listen on `path` for backend processes. Errors: the socket cannot be made (a missing
/// directory is created, mode 0755).
pub fn listen(state: &mut State, path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let listener = guests::bind_listener(path)?;
    restrict(path);
    guests::serve_listener(state, listener, "attach socket", pending)?;
    state.comp.attach_socket = Some(path.to_path_buf());
    println!("scanway: attach socket {}", path.display());
    Ok(())
}

/// Mode 0660 and, where allowed, group `libvirt-qemu`.
fn restrict(path: &Path) {
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)) {
        warn!("attach socket {}: chmod: {e}", path.display());
    }
    let Ok(group) = std::ffi::CString::new(ATTACH_GROUP) else { return };
    // SAFETY: getgrnam returns NULL or a pointer to a static record, read at once.
    let gid = unsafe {
        let g = libc::getgrnam(group.as_ptr());
        if g.is_null() {
            return;
        }
        (*g).gr_gid
    };
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else { return };
    // SAFETY: a NUL-terminated path; -1 keeps the owner.
    if unsafe { libc::chown(c_path.as_ptr(), u32::MAX, gid) } != 0 {
        debug!(
            "attach socket {}: group {ATTACH_GROUP}: {} (the directory's group applies)",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
}

/// A new backend connection: read its request when it arrives (within the local sockets'
/// deadline, [`local_sockets::admit`]).
fn pending(state: &mut State, stream: UnixStream) {
    local_sockets::admit(state, Socket::Attach, stream, |state, stream| {
        let answer = receive(stream).and_then(|(request, vmm)| attach(state, request, vmm, stream));
        if let Err(e) = &answer {
            warn!("refused a VM on the attach socket: {e}");
        }
        let _ = write_answer(stream, answer.as_deref().map_err(Clone::clone));
        // the guest keeps its own clone of an accepted connection
        Progress::Done
    });
}

/// Read one request line and the VMM connection sent with it.
fn receive(stream: &UnixStream) -> Result<(AttachRequest, UnixStream), String> {
    let mut buf = vec![0u8; MAX_ATTACH_REQUEST as usize];
    let (n, fd) = match stream.recv_with_fd(&mut buf[..]) {
        Ok(r) => r,
        Err(e) => return Err(format!("reading the request: {e}")),
    };
    // a received descriptor is new and ours (closed on every error path)
    let vmm = fd.map(|f| UnixStream::from(OwnedFd::from(f)));
    let line = buf.get(..n).unwrap_or_default();
    let line = line.strip_suffix(b"\n").ok_or("the request is not one line sent at once")?;
    let request: AttachRequest = serde_json::from_slice(line).map_err(|e| format!("bad request: {e}"))?;
    let vmm = vmm.ok_or("no VMM connection came with the request")?;
    Ok((request, vmm))
}

/// A valid guest name from a request's (letters, digits, `-_.`, at most 64).
fn sanitize(name: &str) -> String {
    let clean: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).take(64).collect();
    if clean.is_empty() { "vm".to_owned() } else { clean }
}

/// Take the VM as a guest; returns the guest's name.
fn attach(state: &mut State, request: AttachRequest, vmm: UnixStream, conn: &UnixStream) -> Result<String, String> {
    let base = sanitize(&request.name);
    let comp = &state.comp;
    // the slot of an attached guest of this name that is not connected, else a new name
    let reuse = comp.guests.iter().position(|g| g.name == base && g.socket.is_none() && !g.connected());
    let link = request.libvirt.clone().map(UiLink::Libvirt);
    let index = match reuse {
        Some(i) => {
            state.comp.guests[i].link = link;
            i
        }
        None => {
            if comp.guests.iter().filter(|g| g.socket.is_none()).count() >= MAX_ATTACHED {
                return Err(format!("{MAX_ATTACHED} VMs attached already"));
            }
            let mut name = base.clone();
            let mut n = 2;
            while comp.guests.iter().any(|g| g.name == name) {
                name = format!("{base}-{n}");
                n += 1;
            }
            let mut config = comp.guest_template.clone();
            config.name = name.clone();
            config.num_scanouts = comp.config.guests.get(&name).and_then(|g| g.outputs).unwrap_or(1);
            guests::push_guest(state, &name, None, link, config)
        }
    };
    let guest = &mut state.comp.guests[index];
    let name = guest.name.clone();
    // 3D as the VM asked for it (libvirt's --virgl), where virglrenderer runs
    {
        let mut device = lock(&guest.device);
        let gpu = device.gpu_mut();
        match (&state.comp.virgl, request.virgl) {
            (Some(shared), true) => {
                if !gpu.has_3d() {
                    gpu.enable_3d(Box::new(Virgl3d::new(shared.clone())));
                }
            }
            _ => gpu.disable_3d(),
        }
    }
    let attach = conn.try_clone().map_err(|e| format!("attach connection: {e}"))?;
    guests::accept(state, index, vmm);
    let guest = &mut state.comp.guests[index];
    if !guest.connected() {
        return Err(format!("guest {name} could not take the connection"));
    }
    guest.attach = Some(attach);
    let how = match &request.libvirt {
        Some(d) => format!("libvirt domain {} (id {}, {})", d.short_name, d.id, d.uri),
        None => "a backend process".to_owned(),
    };
    info!(guest = %name, virgl = request.virgl, "VM attached by {how}");
    Ok(name)
}

/// The default attach socket path for `scanway run`.
pub fn default_path() -> PathBuf {
    PathBuf::from(crate::attach::DEFAULT_ATTACH_SOCKET)
}

#[cfg(test)]
mod tests {
    use std::{io::Write, os::fd::AsRawFd};

    use super::*;

    fn request_line() -> Vec<u8> {
        let r = AttachRequest { name: "vm".into(), virgl: true, libvirt: None };
        let mut line = serde_json::to_vec(&r).unwrap();
        line.push(b'\n');
        line
    }

    #[test]
    fn a_request_with_its_connection() {
        let (client, server) = UnixStream::pair().unwrap();
        let (vmm, _peer) = UnixStream::pair().unwrap();
        client.send_with_fd(&request_line()[..], vmm.as_raw_fd()).unwrap();
        let (request, _vmm) = receive(&server).unwrap();
        assert_eq!(request.name, "vm");
        assert!(request.virgl);
    }

    #[test]
    fn refusals() {
        // no descriptor
        let (mut client, server) = UnixStream::pair().unwrap();
        client.write_all(&request_line()).unwrap();
        assert!(receive(&server).unwrap_err().contains("no VMM connection"));
        // not JSON, not one line, nothing at all
        for bytes in [&b"{nope\n"[..], &b"{\"name\":"[..]] {
            let (mut client, server) = UnixStream::pair().unwrap();
            client.write_all(bytes).unwrap();
            assert!(receive(&server).is_err());
        }
        let (client, server) = UnixStream::pair().unwrap();
        drop(client);
        assert!(receive(&server).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(sanitize("my vm/../x"), "myvm..x");
        assert_eq!(sanitize("//"), "vm");
        assert_eq!(sanitize(&"a".repeat(300)).len(), 64);
    }
}
