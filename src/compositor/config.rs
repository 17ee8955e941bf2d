//! The configuration file: `$XDG_CONFIG_HOME/scanway/config.toml` (or `~/.config/...`, or
//! `scanway run --config FILE`). Every key is optional; see `resources/config.toml` for the
//! defaults with comments.
//!
//! ```toml
//! [shortcuts]
//! fullscreen = "Super+F"
//! release-grab = "Ctrl+Alt+G"
//!
//! [guests.vm1]
//! color = "#e0a030"
//! scale = "fit"
//! ```

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{Context, anyhow, bail};
use serde::Deserialize;
use smithay::input::keyboard::{Keysym, ModifiersState, xkb};

use crate::control::ScaleMode;

/// What a shortcut does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Focus and raise the next window.
    FocusNext,
    /// Move the focused window 64 pixels left.
    MoveLeft,
    /// Move the focused window 64 pixels right.
    MoveRight,
    /// Move the focused window 64 pixels up.
    MoveUp,
    /// Move the focused window 64 pixels down.
    MoveDown,
    /// Grow the focused window's content by a tenth, width and height (a guest window in
    /// resize-guest mode asks its guest for the new size).
    Grow,
    /// Shrink the focused window's content to 1/1.1 of its width and height (undoing
    /// [`Action::Grow`]; resize-guest asks the guest as for `Grow`).
    Shrink,
    /// Toggle fullscreen on the output.
    Fullscreen,
    /// Cycle the focused guest window's scaling: resize-guest, fit, 1:1.
    CycleScale,
    /// Toggle the statistics overlay.
    Overlay,
    /// Toggle the keyboard grab of the focused guest window (while grabbed, every other
    /// shortcut goes to the guest too).
    ReleaseGrab,
    /// Send Ctrl+Alt+Delete to the focused guest.
    CtrlAltDel,
    /// Open or close the layout view of the focused guest.
    LayoutView,
    /// Quit scanway.
    Quit,
}

/// The default shortcuts (documented in README.md and resources/config.toml).
pub const DEFAULT_SHORTCUTS: &[(Action, &str)] = &[
    (Action::FocusNext, "Super+Tab"),
    (Action::MoveLeft, "Super+Left"),
    (Action::MoveRight, "Super+Right"),
    (Action::MoveUp, "Super+Up"),
    (Action::MoveDown, "Super+Down"),
    (Action::Grow, "Super+Equal"),
    (Action::Shrink, "Super+Minus"),
    (Action::Fullscreen, "Super+F"),
    (Action::CycleScale, "Super+S"),
    (Action::Overlay, "Super+O"),
    (Action::ReleaseGrab, "Ctrl+Alt+G"),
    (Action::CtrlAltDel, "Super+Delete"),
    (Action::LayoutView, "Super+L"),
    (Action::Quit, "Super+Shift+Q"),
];

/// A key with modifiers. The modifiers must be exactly those held: `Super+F` does not fire
/// with Super+Shift+F.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortcut {
    /// Ctrl held (`Ctrl`, `Control`).
    pub ctrl: bool,
    /// Alt held (`Alt`, `Mod1`).
    pub alt: bool,
    /// Shift held.
    pub shift: bool,
    /// Super held (`Super`, `Logo`, `Mod4`, `Win`).
    pub logo: bool,
    /// Lower-case keysym; a pressed key's keysym is folded the same way (Latin-1 letters)
    /// before comparing, so `F` matches `f` and `F`.
    pub key: Keysym,
}

impl Shortcut {
    /// Parse `Mod+Mod+Key` (modifiers `Super`/`Logo`/`Mod4`, `Ctrl`/`Control`, `Alt`/`Mod1`,
    /// `Shift`; the key an xkb keysym name, case-insensitive, e.g. `F`, `Tab`, `Delete`, `F11`).
    pub fn parse(s: &str) -> anyhow::Result<Shortcut> {
        let mut sc = Shortcut { ctrl: false, alt: false, shift: false, logo: false, key: Keysym::NoSymbol };
        let parts: Vec<&str> = s.split('+').map(str::trim).collect();
        let (key, mods) = parts.split_last().ok_or_else(|| anyhow!("empty shortcut"))?;
        for m in mods {
            match m.to_ascii_lowercase().as_str() {
                "super" | "logo" | "mod4" | "win" => sc.logo = true,
                "ctrl" | "control" => sc.ctrl = true,
                "alt" | "mod1" => sc.alt = true,
                "shift" => sc.shift = true,
                other => bail!("`{other}`: unknown modifier in `{s}`"),
            }
        }
        let sym = xkb::keysym_from_name(key, xkb::KEYSYM_CASE_INSENSITIVE);
        if sym == Keysym::NoSymbol {
            bail!("`{key}`: unknown key name in `{s}`");
        }
        sc.key = lower(sym);
        Ok(sc)
    }

    /// Whether `sym` pressed with `mods` is this shortcut.
    pub fn matches(&self, mods: &ModifiersState, sym: Keysym) -> bool {
        self.ctrl == mods.ctrl
            && self.alt == mods.alt
            && self.shift == mods.shift
            && self.logo == mods.logo
            && self.key == lower(sym)
    }
}

fn lower(sym: Keysym) -> Keysym {
    let raw = sym.raw();
    // Latin-1 upper-case letters map to lower case by +0x20.
    if (0x41..=0x5a).contains(&raw) || (0xc0..=0xde).contains(&raw) && raw != 0xd7 {
        Keysym::from(raw + 0x20)
    } else {
        sym
    }
}

/// Per-guest settings.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GuestSettings {
    /// Colour of the guest's title bars, `#rrggbb` (default: derived from the name).
    pub color: Option<String>,
    /// How the guest's scanouts fill their windows (default resize-guest).
    pub scale: Option<ScaleMode>,
    /// Scanouts of a VM attached by libvirt (its `<model heads='N'/>`, 1 to 16; default 1):
    /// scanway cannot ask libvirt for it while the VM starts. `--guest` takes `outputs=N`.
    pub outputs: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    shortcuts: BTreeMap<Action, String>,
    #[serde(default)]
    guests: BTreeMap<String, GuestSettings>,
}

/// The configuration in effect.
#[derive(Debug, Clone)]
pub struct Config {
    /// Each enabled shortcut and its action, in [`DEFAULT_SHORTCUTS`] order (one set to `""`
    /// or `"none"` is left out); the first that matches a key wins.
    pub shortcuts: Vec<(Shortcut, Action)>,
    /// The `[guests.NAME]` tables by guest name (colours and `outputs` already checked).
    pub guests: BTreeMap<String, GuestSettings>,
}

impl Default for Config {
    fn default() -> Self {
        Config::from_toml("").expect("the default shortcuts parse")
    }
}

impl Config {
    /// Parse a configuration file's text (defaults for what it leaves out).
    pub fn from_toml(text: &str) -> anyhow::Result<Config> {
        let file: File = toml::from_str(text)?;
        let mut shortcuts = Vec::new();
        for (action, default) in DEFAULT_SHORTCUTS {
            let text = file.shortcuts.get(action).map_or(*default, String::as_str);
            if text.is_empty() || text.eq_ignore_ascii_case("none") {
                continue;
            }
            shortcuts.push((Shortcut::parse(text).with_context(|| format!("shortcut for {action:?}"))?, *action));
        }
        for (name, g) in &file.guests {
            if let Some(c) = &g.color {
                parse_color(c)?;
            }
            if let Some(n) = g.outputs
                && !(1..=16).contains(&n)
            {
                anyhow::bail!("guests.{name}.outputs: {n} is not 1 to 16");
            }
        }
        Ok(Config { shortcuts, guests: file.guests })
    }

    /// Load `path`, else the default location when it exists, else the defaults.
    pub fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
        let path = match path {
            Some(p) => p.clone(),
            None => match default_path() {
                Some(p) if p.exists() => p,
                _ => return Ok(Config::default()),
            },
        };
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Config::from_toml(&text).with_context(|| format!("in {}", path.display()))
    }

    /// The action of `sym` pressed with `mods`, if it is a shortcut.
    pub fn action(&self, mods: &ModifiersState, sym: Keysym) -> Option<Action> {
        self.shortcuts.iter().find(|(s, _)| s.matches(mods, sym)).map(|(_, a)| *a)
    }

    /// The title-bar colour of guest `name` (RGBA, 0..1).
    pub fn guest_color(&self, name: &str) -> [f32; 4] {
        self.guests
            .get(name)
            .and_then(|g| g.color.as_deref())
            .and_then(|c| parse_color(c).ok())
            .unwrap_or_else(|| color_for(name))
    }
}

/// `$XDG_CONFIG_HOME/scanway/config.toml`, else `$HOME/.config/scanway/config.toml`.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("scanway").join("config.toml"))
}

/// `#rrggbb` -> RGBA.
pub fn parse_color(s: &str) -> anyhow::Result<[f32; 4]> {
    let hex = s.strip_prefix('#').filter(|h| h.len() == 6).ok_or_else(|| anyhow!("`{s}`: expected #rrggbb"))?;
    let v = u32::from_str_radix(hex, 16).map_err(|_| anyhow!("`{s}`: expected #rrggbb"))?;
    let c = |shift: u32| ((v >> shift) & 0xff) as f32 / 255.0;
    Ok([c(16), c(8), c(0), 1.0])
}

/// A stable colour for a guest name: the hue from a hash of the name.
pub fn color_for(name: &str) -> [f32; 4] {
    // FNV-1a
    let hash = name.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    let hue = (hash % 360) as f32 / 60.0;
    let (s, v) = (0.6f32, 0.85f32);
    let c = v * s;
    let x = c * (1.0 - (hue % 2.0 - 1.0).abs());
    let (r, g, b) = match hue as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [r + m, g + m, b + m, 1.0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_match() {
        let config = Config::default();
        let mods = ModifiersState { logo: true, ..Default::default() };
        assert_eq!(config.action(&mods, Keysym::f), Some(Action::Fullscreen));
        assert_eq!(config.action(&mods, Keysym::F), Some(Action::Fullscreen));
        assert_eq!(config.action(&ModifiersState::default(), Keysym::f), None);
        let grab = ModifiersState { ctrl: true, alt: true, ..Default::default() };
        assert_eq!(config.action(&grab, Keysym::g), Some(Action::ReleaseGrab));
    }

    #[test]
    fn file_overrides() {
        let config = Config::from_toml(
            "[shortcuts]\nfullscreen = \"Ctrl+Alt+F\"\noverlay = \"none\"\n[guests.vm]\ncolor = \"#ff0000\"\nscale = \"1:1\"\n",
        )
        .unwrap();
        let mods = ModifiersState { ctrl: true, alt: true, ..Default::default() };
        assert_eq!(config.action(&mods, Keysym::f), Some(Action::Fullscreen));
        assert!(!config.shortcuts.iter().any(|(_, a)| *a == Action::Overlay));
        assert_eq!(config.guest_color("vm"), [1.0, 0.0, 0.0, 1.0]);
        assert_eq!(config.guests["vm"].scale, Some(ScaleMode::OneToOne));
        assert!(Config::from_toml("[shortcuts]\nfullscreen = \"Hyper+F\"\n").is_err());
        assert!(Config::from_toml("[shortcuts]\nnope = \"Super+F\"\n").is_err());
        assert!(Config::from_toml("[guests.vm]\ncolor = \"red\"\n").is_err());
        assert_eq!(Config::from_toml("[guests.vm]\noutputs = 2\n").unwrap().guests["vm"].outputs, Some(2));
        assert!(Config::from_toml("[guests.vm]\noutputs = 17\n").is_err());
    }

    #[test]
    fn shipped_config_is_the_defaults() {
        let shipped = Config::from_toml(include_str!("../../resources/config.toml")).unwrap();
        assert_eq!(shipped.shortcuts, Config::default().shortcuts);
        assert_eq!(shipped.shortcuts.len(), DEFAULT_SHORTCUTS.len());
    }

    #[test]
    fn colors_are_stable_and_valid() {
        assert_eq!(color_for("vm1"), color_for("vm1"));
        assert_ne!(color_for("vm1"), color_for("vm2"));
        for c in color_for("x") {
            assert!((0.0..=1.0).contains(&c));
        }
    }
}
