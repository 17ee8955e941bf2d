//! Command line: `scanway run` starts the compositor; the other subcommands talk to a running
//! instance over its control socket.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::{
    attach,
    control::{self, Request},
    run_config::{BackendKind, GuestSpec, RunConfig, Size},
};

/// The whole command line: with no subcommand scanway is a VMM's backend program
/// ([`BackendProgramArgs`]), else it runs or talks to a compositor ([`Command`]).
#[derive(Parser, Debug)]
#[command(name = "scanway", version, about = "Virtual machine screens as Wayland compositor windows")]
#[command(subcommand_required = false, arg_required_else_help = true)]
pub struct Cli {
    /// Control socket of the running instance (default: $XDG_RUNTIME_DIR/scanway.sock).
    #[arg(long, global = true)]
    pub control: Option<PathBuf>,
    /// The options of the no-subcommand form (`--print-capabilities`, `--fd=N`).
    #[command(flatten)]
    pub backend: BackendProgramArgs,
    /// What to do; `None`: act as the backend program.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// scanway as a VMM's vhost-user GPU backend program (QEMU's `docs/interop/vhost-user.rst`,
/// "Backend program conventions"; how libvirt starts one per VM): see [`crate::attach`].
#[derive(clap::Args, Debug, Default)]
pub struct BackendProgramArgs {
    /// Print the backend's capabilities as JSON (`{"type":"gpu","features":[...]}`) and exit.
    #[arg(long)]
    pub print_capabilities: bool,
    /// Hand the VMM's vhost-user connection, descriptor N, to the running scanway, and live
    /// as long as that VM.
    #[arg(long, value_name = "N")]
    pub fd: Option<i32>,
    /// The VM asked for 3D (virgl).
    #[arg(long, requires = "fd")]
    pub virgl: bool,
    /// Accepted for libvirt; scanway renders with the compositor's own GPU.
    #[arg(long, value_name = "PATH", requires = "fd")]
    pub render_node: Option<PathBuf>,
    /// The guest's name (default: the libvirt domain's, from its pidfile).
    #[arg(long, requires = "fd")]
    pub name: Option<String>,
    /// The running scanway's attach socket (default: $SCANWAY_ATTACH_SOCKET, else
    /// /run/scanway/attach.sock).
    #[arg(long, value_name = "PATH", requires = "fd")]
    pub attach_socket: Option<PathBuf>,
}

/// The subcommands: `run` starts the compositor, the others send it control requests
/// ([`crate::control::Request`]).
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
        /// Also draw the layout as an SVG file.
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Open the layout view of this guest: one window with its scanouts arranged as the
        /// guest sees them.
        #[arg(long, value_name = "GUEST")]
        show: Option<String>,
        /// Close the layout view of this guest.
        #[arg(long, value_name = "GUEST")]
        hide: Option<String>,
    },
    /// Write a PNG of one guest scanout or of the whole output.
    Screenshot(ScreenshotArgs),
    /// Resize, move, focus, make fullscreen or change the scaling of a guest scanout's window.
    Window(WindowArgs),
    /// Feed input to scanway's seat, in order, as if from the backend's devices: `move:X,Y`
    /// (output pixels), `click:left|right|middle`, `press:B`, `release:B`, `scroll:up|down|N`,
    /// `key:COMBO` (keys joined by '+', pressed in order and released in reverse: `key:a`,
    /// `key:ctrl+alt+f2`, `key:slash`, `key:>`), `keydown:K`, `keyup:K`, `type:TEXT` (each
    /// character typed, with Shift where the keymap needs it; a newline is Return, at most 4096
    /// characters). A key is an xkb keysym name (`slash`, `period`, `greater`, `F12`, `Return`,
    /// `KP_Enter`, `XF86AudioMute`; case-insensitive), one character, or ctrl, alt, shift,
    /// super, rightctrl, altgr, esc, enter, del, pageup, pagedown. Names and text are resolved
    /// here, through the default xkb keymap (`XKB_DEFAULT_*`, else evdev/pc105/us): nothing is
    /// sent if any of it fails.
    Input {
        /// Actions, each VERB:ARG as listed above, done in order (key events at most 4 per 20 ms,
        /// a rate slow guests keep up with).
        #[arg(required = true)]
        actions: Vec<String>,
    },
    /// Press and release a key combination, or type a text, on a guest's keyboard directly,
    /// whatever has focus.
    SendKeys {
        /// The guest whose keyboard gets the keys.
        #[arg(long)]
        guest: String,
        /// Keys joined by '+', pressed in order and released in reverse: the key names of
        /// `scanway input` (default: ctrl+alt+delete).
        #[arg(default_value = "ctrl+alt+delete")]
        keys: String,
        /// Type this text instead, one key press per character (as `scanway input type:TEXT`).
        #[arg(long = "type", value_name = "TEXT", conflicts_with = "keys")]
        text: Option<String>,
    },
    /// Print, as JSON, what the running instance holds: the share group's GL objects,
    /// virglrenderer's contexts, open file descriptors and resident memory (leak checks).
    Objects,
    /// The 3D worker of a guest with `3d=isolated` (started by scanway itself, its socket on
    /// fd 3; not for use by hand).
    #[command(name = "3d-worker", hide = true)]
    Worker3d {
        /// The guest it works for (for its log lines).
        #[arg(long)]
        guest: String,
    },
    /// Show or hide the statistics overlay on every scanout window.
    Overlay {
        /// `on` shows the overlay (resource, format, flush rate, flush-to-present latency), `off` hides it.
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
}

/// `scanway window`: sent as one [`Request::Window`].
#[derive(clap::Args, Debug)]
pub struct WindowArgs {
    /// Guest whose scanout window to change.
    #[arg(long)]
    pub guest: String,
    /// Scanout index.
    #[arg(long, default_value_t = 0)]
    pub scanout: u32,
    /// New content size, WxH pixels (in resize-guest mode the guest switches to it).
    #[arg(long)]
    pub size: Option<Size>,
    /// New position of the content's top-left corner on the output, X,Y pixels.
    #[arg(long, value_parser = parse_point)]
    pub position: Option<(i32, i32)>,
    /// Fullscreen on the output, or back.
    #[arg(long, value_parser = ["on", "off"])]
    pub fullscreen: Option<String>,
    /// How the scanout fills the window: resize-guest, fit or 1:1.
    #[arg(long)]
    pub scale: Option<control::ScaleMode>,
    /// Raise and focus the window.
    #[arg(long)]
    pub focus: bool,
}

fn parse_point(s: &str) -> Result<(i32, i32), String> {
    let (x, y) = s.split_once(',').ok_or_else(|| format!("`{s}`: expected X,Y"))?;
    Ok((x.trim().parse().map_err(|e| format!("{e}"))?, y.trim().parse().map_err(|e| format!("{e}"))?))
}

/// `scanway run`: turned into the compositor's [`RunConfig`].
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Where the compositor shows its output (default: winit when DISPLAY or WAYLAND_DISPLAY
    /// is set, else tty when a DRM device exists, else headless).
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
    /// The GPU the tty backend drives (default: the seat's primary GPU).
    #[arg(long, value_name = "PATH")]
    pub drm_device: Option<PathBuf>,
    /// Output size in pixels, WxH (headless: the offscreen output; winit: the window).
    #[arg(long, default_value = "1920x1080")]
    pub size: Size,
    /// Size (WxH pixels) every scanout reports to the guest as its preferred mode.
    #[arg(long, default_value = "1280x800")]
    pub guest_size: Size,
    /// A guest: `NAME=SOCKET[,outputs=N][,qmp=PATH][,3d=on|off|isolated]`; scanway listens on
    /// SOCKET for the VMM's vhost-user connection. N scanouts (1 to 16, default 1) are reported
    /// enabled. `3d=isolated` runs the guest's virglrenderer in a worker process of its own
    /// (a crash there loses only its 3D; one read-back copy per flush). With
    /// the VM's QMP socket (QEMU `-display dbus,p2p=yes -qmp unix:PATH,server=on,wait=off`),
    /// windows resize the guest and input reaches it; for a guest with virgl QEMU's D-Bus
    /// display needs `gl=on`: `-display dbus,p2p=yes,gl=on,rendernode=/dev/null` works with no
    /// render node (README, "3D guests"). Repeatable.
    #[arg(long = "guest")]
    pub guests: Vec<GuestSpec>,
    /// Offer guests no 3D (virgl), even where virglrenderer works.
    #[arg(long)]
    pub no_3d: bool,
    /// Cap on each guest's host memory for resources, in MiB.
    #[arg(long, default_value_t = 512)]
    pub max_resource_memory: u64,
    /// Configuration file (TOML; default $XDG_CONFIG_HOME/scanway/config.toml if it exists).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where VMs started by libvirt attach (`scanway --fd=N`, one process per VM): default
    /// /run/scanway/attach.sock, skipped with a log line when it cannot be made.
    #[arg(long, value_name = "PATH")]
    pub attach_socket: Option<PathBuf>,
    /// Record every guest request into DIR, one file per VMM connection
    /// (`GUEST-N.bin`, the seed format of the `ctrl_commands` fuzz target).
    #[arg(long, value_name = "DIR")]
    pub record_commands: Option<PathBuf>,
}

/// `scanway screenshot`: a [`Request::ScreenshotScanout`] or [`Request::ScreenshotOutput`].
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

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command.is_none() {
        return backend_program(cli.backend);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "scanway=info,warn".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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

/// `scanway --print-capabilities` / `scanway --fd=N ...` (no subcommand).
fn backend_program(args: BackendProgramArgs) -> ExitCode {
    if args.print_capabilities {
        println!("{}", attach::capabilities_json());
        return ExitCode::SUCCESS;
    }
    let Some(fd) = args.fd else {
        eprintln!("scanway: a subcommand, --print-capabilities or --fd=N is needed (see --help)");
        return ExitCode::from(2);
    };
    let backend = attach::BackendArgs { fd, virgl: args.virgl, name: args.name, attach_socket: args.attach_socket };
    match attach::run_backend(backend) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            attach::report_failure(&e);
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let Some(command) = cli.command else { bail!("no subcommand") };
    match command {
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
            crate::compositor::run(args.into_config(control))
        }
        Command::Worker3d { guest } => crate::virtio::isolated::worker::main(&guest),
        Command::List { json } => {
            let reply = control::request(&control_path(cli.control)?, &Request::List)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&reply)?);
            } else {
                print!("{}", control::format_list(&reply));
            }
            Ok(())
        }
        Command::Layout { json, svg, show, hide } => {
            let path = control_path(cli.control)?;
            for (guest, on) in [(show, true), (hide, false)] {
                if let Some(guest) = guest {
                    control::request(&path, &Request::LayoutView { guest, on })?;
                }
            }
            let reply = control::request(&path, &Request::List)?;
            if let Some(svg) = svg {
                std::fs::write(&svg, control::layout_svg(&reply)).with_context(|| format!("{}", svg.display()))?;
            }
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
        Command::Window(args) => {
            let req = Request::Window {
                guest: args.guest,
                scanout: args.scanout,
                size: args.size.map(|s| (s.width, s.height)),
                position: args.position,
                fullscreen: args.fullscreen.map(|f| f == "on"),
                scale: args.scale,
                focus: args.focus,
            };
            simple_request(cli.control, &req)
        }
        Command::Input { actions } => {
            let mut parsed = Vec::new();
            for a in &actions {
                let shown: String = a.chars().take(40).collect();
                let more = if shown.len() < a.len() { "..." } else { "" };
                parsed.extend(control::InputAction::parse_cli(a).with_context(|| format!("`{shown}{more}`"))?);
            }
            let path = control_path(cli.control)?;
            for (i, req) in control::input_requests(parsed).into_iter().enumerate() {
                if i > 0 {
                    std::thread::sleep(control::KEY_BURST_GAP);
                }
                control::request(&path, &req)?;
            }
            Ok(())
        }
        Command::SendKeys { guest, keys, text } => {
            let table = control::keys::KeyTable::default_keymap()?;
            let combos: Vec<Vec<u32>> = match text {
                Some(text) => table.text(&text)?.into_iter().map(|stroke| stroke.codes().collect()).collect(),
                None => vec![table.combo(&keys)?],
            };
            let path = control_path(cli.control)?;
            for (i, keys) in combos.into_iter().enumerate() {
                if i > 0 {
                    std::thread::sleep(control::KEY_BURST_GAP);
                }
                control::request(&path, &Request::SendKeys { guest: guest.clone(), keys })?;
            }
            Ok(())
        }
        Command::Objects => {
            let reply = control::request(&control_path(cli.control)?, &Request::Objects)?;
            println!("{}", serde_json::to_string_pretty(&reply)?);
            Ok(())
        }
        Command::Overlay { state } => simple_request(cli.control, &Request::Overlay { on: state == "on" }),
    }
}

impl RunArgs {
    /// The plain configuration the compositor runs with (sizes in bytes where the command line
    /// has MiB).
    fn into_config(self, control: PathBuf) -> RunConfig {
        RunConfig {
            backend: self.backend,
            drm_device: self.drm_device,
            size: self.size,
            guest_size: self.guest_size,
            guests: self.guests,
            no_3d: self.no_3d,
            max_resource_memory: self.max_resource_memory.saturating_mul(1024 * 1024),
            config: self.config,
            attach_socket: self.attach_socket,
            record_commands: self.record_commands,
            control,
        }
    }
}

fn simple_request(control: Option<PathBuf>, req: &Request) -> anyhow::Result<()> {
    control::request(&control_path(control)?, req)?;
    Ok(())
}

fn control_path(arg: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match arg {
        Some(p) => Ok(p),
        None => control::default_path(false),
    }
}
