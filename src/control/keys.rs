//! Key names and text to evdev codes (`linux/input-event-codes.h`), through an xkb keymap.
//!
//! A key name is, in this order:
//! - a physical key by its evdev name (case-insensitive): `ctrl` (`control`, `leftctrl`),
//!   `rightctrl`, `shift` (`leftshift`), `rightshift`, `alt` (`leftalt`), `rightalt`
//!   (`altgr`), `super` (`meta`, `logo`, `leftmeta`), `rightsuper` (`rightmeta`), `enter`,
//!   `esc`, `del`, `pageup`, `pagedown`, `capslock`, `numlock`, `scrolllock`;
//! - one character: `a`, `A`, `/`, `>`, `+` (its keysym, `xkb_utf32_to_keysym`);
//! - an xkb keysym name (`xkbcommon-keysyms.h` without `XKB_KEY_`): `slash`, `period`,
//!   `greater`, `F12`, `Return`, `BackSpace`, `KP_Enter`, `XF86AudioMute`, `0x1008ff12`;
//!   exact first, then case-insensitive (`f12`, `return`) as `xkb_keysym_from_name` does.
//!
//! A keysym becomes the key of the keymap that types it with no modifier or with Shift alone
//! (the lowest keycode; on one key unshifted before shifted: `less` is Shift+comma, not the
//! 102nd key), and evdev code = xkb keycode - 8. The keymap is compiled the way the
//! compositor's seat compiles its own: RMLVO from `XKB_DEFAULT_RULES`, `_MODEL`, `_LAYOUT`,
//! `_VARIANT`, `_OPTIONS`, else xkbcommon's defaults (evdev, pc105, us).
//!
//! This runs in the client (`scanway input`, `send-keys`), not in the compositor: every error
//! is reported before anything is sent, and the requests stay evdev codes. Guests read those
//! codes with their own keymap (a guest with a US keymap types what a US keymap says), and
//! Wayland clients with the seat's keymap, which is this one as long as the compositor runs
//! with the same `XKB_DEFAULT_*` as the client.

use std::{collections::HashMap, sync::OnceLock};

use anyhow::{anyhow, bail};
use smithay::input::keyboard::{XkbConfig, xkb};

/// evdev code of the left Shift key (what a symbol that needs Shift is typed with).
pub const KEY_LEFTSHIFT: u32 = 42;
/// evdev code of the right Shift key.
pub const KEY_RIGHTSHIFT: u32 = 54;
/// Most characters one `type:TEXT` (or `send-keys --type`) types.
pub const MAX_TEXT: usize = 4096;

/// Key names that are no keysym names, as evdev codes (`KEY_` names, lowercase).
const ALIASES: &[(&str, u32)] = &[
    ("esc", 1),
    ("enter", 28),
    ("ctrl", 29),
    ("control", 29),
    ("leftctrl", 29),
    ("shift", KEY_LEFTSHIFT),
    ("leftshift", KEY_LEFTSHIFT),
    ("rightshift", KEY_RIGHTSHIFT),
    ("alt", 56),
    ("leftalt", 56),
    ("capslock", 58),
    ("numlock", 69),
    ("scrolllock", 70),
    ("rightctrl", 97),
    ("rightalt", 100),
    ("altgr", 100),
    ("pageup", 104),
    ("pagedown", 109),
    ("del", 111),
    ("super", 125),
    ("meta", 125),
    ("logo", 125),
    ("leftmeta", 125),
    ("rightsuper", 126),
    ("rightmeta", 126),
];

/// One key press: the key's evdev code, and whether Shift is held around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stroke {
    /// evdev code of the key (xkb keycode - 8).
    pub code: u32,
    /// The keysym is on the key's Shift level: [`KEY_LEFTSHIFT`] is held around it.
    pub shift: bool,
}

impl Stroke {
    /// The codes to press in order (and release in reverse): Shift first when needed.
    pub fn codes(self) -> impl DoubleEndedIterator<Item = u32> {
        self.shift.then_some(KEY_LEFTSHIFT).into_iter().chain([self.code])
    }
}

/// Which key types each keysym of one keymap.
pub struct KeyTable {
    /// keysym -> the first key (by keycode) typing it unshifted, else shifted
    strokes: HashMap<u32, Stroke>,
    /// The keymap's RMLVO names, for error messages.
    names: String,
}

impl KeyTable {
    /// The table of the default keymap (see the module's documentation), compiled once.
    pub fn default_keymap() -> anyhow::Result<&'static KeyTable> {
        static TABLE: OnceLock<Result<KeyTable, String>> = OnceLock::new();
        TABLE
            .get_or_init(|| {
                let c = XkbConfig::default();
                KeyTable::from_names(c.rules, c.model, c.layout, c.variant, c.options).map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(|e| anyhow!("{e}"))
    }

    /// The table of the keymap compiled from these RMLVO names (an empty one, or `None`
    /// options: `XKB_DEFAULT_*`, else xkbcommon's default).
    pub fn from_names(
        rules: &str,
        model: &str,
        layout: &str,
        variant: &str,
        options: Option<String>,
    ) -> anyhow::Result<KeyTable> {
        let env = |given: &str, var: &str, default: &str| match given {
            "" => std::env::var(var).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.into()),
            given => given.into(),
        };
        let names = format!(
            "{}/{}/{}{}",
            env(rules, "XKB_DEFAULT_RULES", "evdev"),
            env(model, "XKB_DEFAULT_MODEL", "pc105"),
            env(layout, "XKB_DEFAULT_LAYOUT", "us"),
            match env(variant, "XKB_DEFAULT_VARIANT", "").as_str() {
                "" => String::new(),
                v => format!("({v})"),
            }
        );
        let context = xkb::Context::new(xkb::CONTEXT_NO_FLAGS);
        let keymap =
            xkb::Keymap::new_from_names(&context, rules, model, layout, variant, options, xkb::KEYMAP_COMPILE_NO_FLAGS)
                .ok_or_else(|| anyhow!("the xkb keymap {names} does not compile (is xkeyboard-config installed?)"))?;
        Ok(KeyTable { strokes: strokes_of(&keymap), names })
    }

    /// The key that types `sym`.
    pub fn stroke(&self, sym: xkb::Keysym) -> Option<Stroke> {
        self.strokes.get(&sym.raw()).copied()
    }

    /// Resolve one key name (see the module's documentation).
    pub fn key(&self, name: &str) -> anyhow::Result<Stroke> {
        let lower = name.to_ascii_lowercase();
        if let Some(&(_, code)) = ALIASES.iter().find(|(alias, _)| *alias == lower) {
            return Ok(Stroke { code, shift: false });
        }
        let sym = keysym_of(name).ok_or_else(|| {
            anyhow!("`{name}`: unknown key name (an xkb keysym name such as `slash` or `F12`, one character, or ctrl, alt, shift, super, esc, enter ...)")
        })?;
        self.stroke(sym).ok_or_else(|| {
            anyhow!(
                "`{name}` (keysym {}): no key of the keymap {} types it without or with Shift",
                xkb::keysym_get_name(sym),
                self.names
            )
        })
    }

    /// `ctrl+alt+delete` -> evdev codes to press in order (and release in reverse), Shift
    /// put before a key whose symbol needs it (`ctrl+greater` is ctrl, shift, period)
    /// unless a Shift is in the combination already. The `+` key is `plus`, or `+` last
    /// (`ctrl++`).
    pub fn combo(&self, s: &str) -> anyhow::Result<Vec<u32>> {
        let names: Vec<&str> = match s.strip_suffix('+') {
            Some("") => vec!["+"],
            Some(head) if head.ends_with('+') => head[..head.len() - 1].split('+').chain(["+"]).collect(),
            _ => s.split('+').collect(),
        };
        let mut codes = Vec::with_capacity(names.len() + 1);
        for name in names {
            let stroke = self.key(name)?;
            if stroke.shift && !codes.iter().any(|c| [KEY_LEFTSHIFT, KEY_RIGHTSHIFT].contains(c)) {
                codes.push(KEY_LEFTSHIFT);
            }
            codes.push(stroke.code);
        }
        Ok(codes)
    }

    /// The keys that type `text`, one per character (a newline is Return, a tab Tab); at
    /// most [`MAX_TEXT`] characters, and an error (for the whole text) naming the first
    /// character no key types.
    pub fn text(&self, text: &str) -> anyhow::Result<Vec<Stroke>> {
        let n = text.chars().count();
        if n > MAX_TEXT {
            bail!("the text is {n} characters long, the most one action types is {MAX_TEXT}");
        }
        text.chars()
            .enumerate()
            .map(|(i, c)| {
                let sym = match c {
                    '\n' => xkb::Keysym::Return,
                    c => xkb::utf32_to_keysym(u32::from(c)),
                };
                self.stroke(sym).ok_or_else(|| {
                    anyhow!(
                        "character {} of the text, {c:?} (U+{:04X}): no key of the keymap {} types it without or with Shift; nothing typed",
                        i + 1,
                        u32::from(c),
                        self.names
                    )
                })
            })
            .collect()
    }
}

/// The keysym a key name (not an alias) names: one character's, else the keysym name's.
fn keysym_of(name: &str) -> Option<xkb::Keysym> {
    let mut chars = name.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        let sym = xkb::utf32_to_keysym(u32::from(c));
        if sym != xkb::Keysym::NoSymbol {
            return Some(sym);
        }
    }
    if name.is_empty() || name.contains('\0') {
        return None;
    }
    [xkb::KEYSYM_NO_FLAGS, xkb::KEYSYM_CASE_INSENSITIVE]
        .into_iter()
        .map(|flags| xkb::keysym_from_name(name, flags))
        .find(|&sym| sym != xkb::Keysym::NoSymbol)
}

/// Every keysym `keymap` types with no modifier or with Shift alone, and its key: the
/// lowest keycode, a key's unshifted symbol before its shifted one.
fn strokes_of(keymap: &xkb::Keymap) -> HashMap<u32, Stroke> {
    let plain = xkb::State::new(keymap);
    let mut shifted = xkb::State::new(keymap);
    let shift = keymap.mod_get_index(xkb::MOD_NAME_SHIFT);
    let states: Vec<(&xkb::State, bool)> = if shift < 32 {
        shifted.update_mask(1 << shift, 0, 0, 0, 0, 0);
        vec![(&plain, false), (&shifted, true)]
    } else {
        vec![(&plain, false)]
    };
    let mut strokes = HashMap::new();
    for raw in keymap.min_keycode().raw().max(8)..=keymap.max_keycode().raw() {
        let keycode = xkb::Keycode::new(raw);
        for &(state, shift) in &states {
            for sym in state.key_get_syms(keycode) {
                strokes.entry(sym.raw()).or_insert(Stroke { code: raw - 8, shift });
            }
        }
    }
    strokes
}
