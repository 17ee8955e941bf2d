//! Command line: `scanway run` starts the compositor; the other subcommands talk to a running
//! instance over its control socket.

use std::{path::PathBuf, process::ExitCode, str::FromStr};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::control::{self, Request};

/// Largest number of scanouts a virtio-gpu device may have (virtio 1.2, 5.7.4).
pub const MAX_OUTPUTS: u32 = 16;

#[derive(Parser, Debug)]
#[command(name = "scanway", version, about = "Virtual machine screens as Wayland compositor windows")]
pub struct Cli {
    /// Control socket of the running instance (default: $XDG_RUNTIME_DIR/scanway.sock).
    #[arg(long, global = true)]
    pub control: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the compositor and serve the guests' vhost-user-gpu sockets.
    Run(RunArgs),
    /// List guests, scanouts (size, format, resource, flush count) and resources.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print every guest's scanouts in guest coordinates and where their windows are.
    Layout {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write a PNG of one guest scanout or of the whole output.
    Screenshot(ScreenshotArgs),
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Where the compositor shows its output.
    #[arg(long, value_enum, default_value_t = BackendKind::Headless)]
    pub backend: BackendKind,
    /// Output size in pixels, WxH (headless: the offscreen output; winit: the window).
    #[arg(long, default_value = "1920x1080")]
    pub size: Size,
    /// Size (WxH pixels) every scanout reports to the guest as its preferred mode.
    #[arg(long, default_value = "1280x800")]
    pub guest_size: Size,
    /// A guest: NAME=SOCKET[,outputs=N]; scanway listens on SOCKET for the VMM's vhost-user
    /// connection. N scanouts (1 to 16, default 1) are reported enabled. Repeatable.
    #[arg(long = "guest", required = true)]
    pub guests: Vec<GuestSpec>,
    /// Offer guests no 3D (virgl), even where virglrenderer works.
    #[arg(long)]
    pub no_3d: bool,
    /// Cap on each guest's host memory for resources, in MiB.
    #[arg(long, default_value_t = 512)]
    pub max_resource_memory: u64,
}

#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["guest", "output"]))]
pub struct ScreenshotArgs {
    /// Guest whose scanout to capture (with --scanout).
    #[arg(long, requires = "scanout")]
    pub guest: Option<String>,
    /// Scanout index of --guest.
    #[arg(long)]
    pub scanout: Option<u32>,
    /// Capture the whole compositor output instead.
    #[arg(long)]
    pub output: bool,
    /// PNG file to write.
    #[arg(short = 'o', long = "out")]
    pub out: PathBuf,
}

/// Which compositor backend shows the output.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// Offscreen output, rendered with EGL (device platform, else surfaceless).
    Headless,
    /// A window in the user's X11 or Wayland desktop.
    Winit,
}

/// A size in pixels, written `WxH`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    pub width: u32,
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

/// `NAME=SOCKET[,outputs=N]` from `--guest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestSpec {
    pub name: String,
    pub socket: PathBuf,
    pub outputs: u32,
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
        for opt in parts {
            match opt.split_once('=') {
                Some(("outputs", n)) => {
                    outputs = n
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_OUTPUTS).contains(n))
                        .ok_or_else(|| format!("`{opt}`: outputs is 1 to {MAX_OUTPUTS}"))?;
                }
                _ => return Err(format!("`{opt}`: unknown guest option (known: outputs=N)")),
            }
        }
        Ok(GuestSpec { name: name.to_string(), socket: PathBuf::from(socket), outputs })
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "scanway=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scanway: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => {
            let mut names: Vec<&str> = args.guests.iter().map(|g| g.name.as_str()).collect();
            names.sort_unstable();
            if names.windows(2).any(|w| w[0] == w[1]) {
                bail!("two --guest options share a name");
            }
            // Makes (and exports) a runtime directory when there is none: the Wayland socket
            // needs one even when --control names the control socket.
            let default_control = control::default_path(true)?;
            let control = cli.control.unwrap_or(default_control);
            crate::compositor::run(args, control)
        }
        Command::List { json } => {
            let reply = control::request(&control_path(cli.control)?, &Request::List)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&reply)?);
            } else {
                print!("{}", control::format_list(&reply));
            }
            Ok(())
        }
        Command::Layout { json } => {
            let reply = control::request(&control_path(cli.control)?, &Request::List)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&control::layout_json(&reply))?);
            } else {
                print!("{}", control::format_layout(&reply));
            }
            Ok(())
        }
        Command::Screenshot(args) => {
            let out = std::path::absolute(&args.out).context("output path")?;
            let req = match (args.guest, args.scanout, args.output) {
                (Some(guest), Some(scanout), false) => Request::ScreenshotScanout { guest, scanout, path: out.clone() },
                (None, None, true) => Request::ScreenshotOutput { path: out.clone() },
                _ => bail!("give either --guest NAME --scanout N, or --output"),
            };
            let reply = control::request(&control_path(cli.control)?, &req)?;
            let size = reply.get("size").and_then(|s| s.as_str()).unwrap_or("?");
            println!("scanway: screenshot ({size}) written to {}", out.display());
            Ok(())
        }
    }
}

fn control_path(arg: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match arg {
        Some(p) => Ok(p),
        None => control::default_path(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_spec_parses() {
        let g: GuestSpec = "vm1=/tmp/a.sock,outputs=2".parse().unwrap();
        assert_eq!(g, GuestSpec { name: "vm1".into(), socket: "/tmp/a.sock".into(), outputs: 2 });
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
