//! What `scanway run` is asked to do, as plain data: the command line ([`crate::cli`]) parses
//! into a [`RunConfig`], the compositor reads it and never the command line.

use std::{path::PathBuf, str::FromStr};

use clap::ValueEnum;

/// Largest number of scanouts a virtio-gpu device may have (virtio 1.2, 5.7.4).
pub const MAX_OUTPUTS: u32 = 16;

/// Which compositor backend shows the output.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// Offscreen output, rendered with EGL (device platform, else surfaceless).
    Headless,
    /// A window in the user's X11 or Wayland desktop.
    Winit,
    /// The machine's own display: DRM/KMS, GBM, libseat, libinput (run from a VT).
    Tty,
}

impl BackendKind {
    /// The default: winit inside a desktop, tty on a machine with a DRM device, else headless.
    pub fn auto() -> BackendKind {
        let desktop = ["DISPLAY", "WAYLAND_DISPLAY"].iter().any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
        let drm = std::fs::read_dir("/dev/dri")
            .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("card")))
            .unwrap_or(false);
        if desktop {
            BackendKind::Winit
        } else if drm {
            BackendKind::Tty
        } else {
            BackendKind::Headless
        }
    }
}

/// A size in pixels, written `WxH` (parsing takes sides of 1 to 16384).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    /// Width, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
}

impl FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (w, h) = s.split_once('x').ok_or_else(|| format!("`{s}`: expected WxH"))?;
        let parse = |v: &str| {
            v.parse::<u32>()
                .ok()
                .filter(|n| (1..=16384).contains(n))
                .ok_or_else(|| format!("`{s}`: sizes are 1 to 16384 pixels"))
        };
        Ok(Size { width: parse(w)?, height: parse(h)? })
    }
}

/// What 3D a guest gets (`3d=` of `--guest`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Guest3d {
    /// `3d=on` (default): virglrenderer in scanway's process, in the compositor's share group;
    /// scanouts are sampled with zero copies.
    #[default]
    Shared,
    /// `3d=isolated`: virglrenderer in a worker process of this guest's own
    /// ([`crate::virtio::isolated`]); a crash there loses only this guest's 3D, and each
    /// scanout flush costs one read-back copy.
    Isolated,
    /// `3d=off`: no virgl (QEMU's D-Bus display without gl=on needs that).
    Off,
}

/// `NAME=SOCKET[,outputs=N][,qmp=PATH][,3d=on|off|isolated]` from `--guest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestSpec {
    /// The guest's name (letters, digits, `-`, `_`, `.`): how `scanway list`, `window`,
    /// `screenshot` and the configuration's `[guests.NAME]` name it.
    pub name: String,
    /// The Unix socket scanway listens on for the VMM's vhost-user connection (a stale one
    /// is replaced).
    pub socket: PathBuf,
    /// Number of scanouts the device reports, 1 to [`MAX_OUTPUTS`] (default 1).
    pub outputs: u32,
    /// The VM's QMP socket: scanway links to QEMU's D-Bus display through it.
    pub qmp: Option<PathBuf>,
    /// `3d=`: shared (default), isolated or off.
    pub three_d: Guest3d,
}

impl FromStr for GuestSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, rest) = s.split_once('=').ok_or_else(|| format!("`{s}`: expected NAME=SOCKET[,outputs=N]"))?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(format!("`{name}`: a guest name is letters, digits, '-', '_' or '.'"));
        }
        let mut parts = rest.split(',');
        let socket = parts.next().filter(|p| !p.is_empty()).ok_or_else(|| format!("`{s}`: no socket path"))?;
        let mut outputs = 1;
        let mut qmp = None;
        let mut three_d = Guest3d::Shared;
        for opt in parts {
            match opt.split_once('=') {
                Some(("outputs", n)) => {
                    outputs = n
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_OUTPUTS).contains(n))
                        .ok_or_else(|| format!("`{opt}`: outputs is 1 to {MAX_OUTPUTS}"))?;
                }
                Some(("qmp", path)) if !path.is_empty() => qmp = Some(PathBuf::from(path)),
                Some(("3d", "on")) => three_d = Guest3d::Shared,
                Some(("3d", "isolated")) => three_d = Guest3d::Isolated,
                Some(("3d", "off")) => three_d = Guest3d::Off,
                _ => {
                    return Err(format!(
                        "`{opt}`: unknown guest option (known: outputs=N, qmp=PATH, 3d=on|off|isolated)"
                    ));
                }
            }
        }
        Ok(GuestSpec { name: name.to_string(), socket: PathBuf::from(socket), outputs, qmp, three_d })
    }
}

/// Everything `scanway run` starts with.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Where the output is shown; `None`: [`BackendKind::auto`].
    pub backend: Option<BackendKind>,
    /// The GPU the tty backend drives (default: the seat's primary GPU).
    pub drm_device: Option<PathBuf>,
    /// Output size (headless) or window size (winit), pixels.
    pub size: Size,
    /// Preferred mode every scanout reports to its guest at start, pixels.
    pub guest_size: Size,
    /// Guests listening on their own sockets (`--guest`).
    pub guests: Vec<GuestSpec>,
    /// Offer no guest 3D.
    pub no_3d: bool,
    /// Cap on each guest's host memory for resources, bytes.
    pub max_resource_memory: u64,
    /// The TOML configuration file (`None`: the default location when it exists).
    pub config: Option<PathBuf>,
    /// The attach socket (`None`: [`crate::attach::DEFAULT_ATTACH_SOCKET`], skipped when it
    /// cannot be made).
    pub attach_socket: Option<PathBuf>,
    /// Record every guest request as a fuzz seed into this directory (`--record-commands`).
    pub record_commands: Option<PathBuf>,
    /// The control socket.
    pub control: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_spec_parses() {
        let g: GuestSpec = "vm1=/tmp/a.sock,outputs=2".parse().unwrap();
        assert_eq!(
            g,
            GuestSpec {
                name: "vm1".into(),
                socket: "/tmp/a.sock".into(),
                outputs: 2,
                qmp: None,
                three_d: Guest3d::Shared
            }
        );
        let g: GuestSpec = "vm1=/s,qmp=/q.sock".parse().unwrap();
        assert_eq!(g.qmp, Some("/q.sock".into()));
        assert_eq!("a=/s,3d=off".parse::<GuestSpec>().unwrap().three_d, Guest3d::Off);
        assert_eq!("a=/s,3d=isolated".parse::<GuestSpec>().unwrap().three_d, Guest3d::Isolated);
        assert!("a=/s,3d=maybe".parse::<GuestSpec>().is_err());
        let g: GuestSpec = "a=/s".parse().unwrap();
        assert_eq!(g.outputs, 1);
        for bad in ["a", "=/s", "a=", "a=/s,outputs=0", "a=/s,outputs=17", "a=/s,foo=1", "a b=/s"] {
            assert!(bad.parse::<GuestSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn size_parses() {
        assert_eq!("1280x800".parse::<Size>().unwrap(), Size { width: 1280, height: 800 });
        for bad in ["1280", "0x5", "x", "99999x1", "-1x2"] {
            assert!(bad.parse::<Size>().is_err(), "{bad}");
        }
    }
}
