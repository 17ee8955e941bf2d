//! Input actions for the seat (`scanway input`, [`Request::Input`]): parsing the command line's
//! `move:`, `click:`, `key:`, `type:` ... and cutting them into requests paced for slow guests.

use std::time::Duration;

use anyhow::{anyhow, bail};
use serde::{Deserialize, Serialize};

use super::{Request, keys};

/// One input event for [`Request::Input`].
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InputAction {
    /// Move the pointer to output position (x, y), pixels.
    /// Clamped to the bounding box of the outputs (laid out left to right from 0, 0).
    Motion {
        /// Horizontal position, pixels from the left edge of the first output.
        x: i32,
        /// Vertical position, pixels from the top edge of the outputs.
        y: i32,
    },
    /// Press or release a button (evdev code: `BTN_LEFT` 0x110, `BTN_RIGHT` 0x111, `BTN_MIDDLE` 0x112).
    Button {
        /// evdev button code.
        code: u32,
        /// `true`: press; `false`: release.
        pressed: bool,
    },
    /// Press or release a key (evdev code, `linux/input-event-codes.h`).
    Key {
        /// evdev key code (`KEY_A` is 30), not an xkb keycode.
        code: u32,
        /// `true`: press; `false`: release.
        pressed: bool,
    },
    /// Turn the vertical wheel by `notches` (negative: up, away from the user).
    Scroll {
        /// Wheel notches: negative up, positive down (at most 100 either way are turned).
        notches: i32,
    },
}

impl InputAction {
    /// Parse one command-line action: `move:X,Y`, `click:BUTTON`, `press:BUTTON`,
    /// `release:BUTTON` (left, right, middle), `scroll:up|down|N` (wheel notches, negative up),
    /// `key:COMBO` (a tap of e.g. `a`, `slash`, `>` or `ctrl+alt+delete`: pressed in order,
    /// released in reverse), `keydown:KEY`, `keyup:KEY`, `type:TEXT` (each character pressed and
    /// released). Key names and text are resolved through the default keymap, see [`keys`].
    pub fn parse_cli(s: &str) -> anyhow::Result<Vec<InputAction>> {
        Self::parse_cli_with(s, keys::KeyTable::default_keymap)
    }

    /// [`InputAction::parse_cli`] with the key table `table` returns (asked for only by the
    /// key actions).
    pub fn parse_cli_with<'a>(
        s: &str,
        table: impl FnOnce() -> anyhow::Result<&'a keys::KeyTable>,
    ) -> anyhow::Result<Vec<InputAction>> {
        let (verb, arg) = s.split_once(':').ok_or_else(|| anyhow!("`{s}`: expected VERB:ARG"))?;
        let button = |name: &str| match name {
            "left" => Ok(0x110),
            "right" => Ok(0x111),
            "middle" => Ok(0x112),
            _ => Err(anyhow!("`{name}`: a button is left, right or middle")),
        };
        let key = |code, pressed| InputAction::Key { code, pressed };
        Ok(match verb {
            "move" => {
                let (x, y) = arg.split_once(',').ok_or_else(|| anyhow!("`{s}`: expected move:X,Y"))?;
                vec![InputAction::Motion { x: x.trim().parse()?, y: y.trim().parse()? }]
            }
            "click" => {
                let code = button(arg)?;
                vec![InputAction::Button { code, pressed: true }, InputAction::Button { code, pressed: false }]
            }
            "press" => vec![InputAction::Button { code: button(arg)?, pressed: true }],
            "scroll" => vec![InputAction::Scroll {
                notches: match arg {
                    "up" => -1,
                    "down" => 1,
                    n => n.parse().map_err(|_| anyhow!("`{s}`: expected scroll:up, scroll:down or scroll:N"))?,
                },
            }],
            "release" => vec![InputAction::Button { code: button(arg)?, pressed: false }],
            "key" => {
                let codes = table()?.combo(arg)?;
                let down = codes.iter().map(|&code| key(code, true));
                let up = codes.iter().rev().map(|&code| key(code, false));
                down.chain(up).collect()
            }
            // a key whose symbol needs Shift: Shift goes down before it and up after it
            "keydown" => match table()?.key(arg)? {
                keys::Stroke { code, shift: true } => vec![key(keys::KEY_LEFTSHIFT, true), key(code, true)],
                keys::Stroke { code, shift: false } => vec![key(code, true)],
            },
            "keyup" => match table()?.key(arg)? {
                keys::Stroke { code, shift: true } => vec![key(code, false), key(keys::KEY_LEFTSHIFT, false)],
                keys::Stroke { code, shift: false } => vec![key(code, false)],
            },
            "type" => table()?
                .text(arg)?
                .into_iter()
                .flat_map(|stroke| {
                    stroke.codes().map(|code| key(code, true)).chain(stroke.codes().rev().map(|code| key(code, false)))
                })
                .collect(),
            _ => {
                bail!("`{verb}`: unknown input action (move, click, press, release, scroll, key, keydown, keyup, type)")
            }
        })
    }
}

/// Most actions one [`Request::Input`] carries: the longest (a motion to `i32::MIN`) is 46
/// bytes of JSON, so a request of this many stays under [`super::MAX_REQUEST`].
pub const MAX_INPUT_ACTIONS: usize = 1024;
/// Most key events one [`Request::Input`] of a command carries (one shifted character's
/// presses and releases); see [`KEY_BURST_GAP`].
pub const MAX_KEY_BURST: usize = 4;
/// How long a client waits between two requests of one command (`type:`, `send-keys --type`):
/// at most 200 key events a second, a fast typist's rate. QEMU's virtio keyboard drops the
/// events its guest has no buffer for, and a slow guest (TCG) reads late: at 800 events a
/// second a weston or Xorg session in a TCG guest lost keys of a 16-character burst (its
/// kernel's evdev buffer, 64 events, overflowed: `SYN_DROPPED`).
pub const KEY_BURST_GAP: Duration = Duration::from_millis(20);

/// `actions` as [`Request::Input`]s to send in order, [`KEY_BURST_GAP`] apart: at most
/// [`MAX_INPUT_ACTIONS`] actions and [`MAX_KEY_BURST`] key events each (one, empty, for no
/// actions).
pub fn input_requests(actions: Vec<InputAction>) -> Vec<Request> {
    let mut requests = Vec::new();
    let mut current = Vec::new();
    let mut keys = 0;
    for action in actions {
        let key = matches!(action, InputAction::Key { .. });
        if current.len() == MAX_INPUT_ACTIONS || (key && keys == MAX_KEY_BURST) {
            requests.push(Request::Input { actions: std::mem::take(&mut current) });
            keys = 0;
        }
        keys += usize::from(key);
        current.push(action);
    }
    if !current.is_empty() || requests.is_empty() {
        requests.push(Request::Input { actions: current });
    }
    requests
}

#[cfg(test)]
mod input_tests {
    use super::super::{
        MAX_REQUEST,
        keys::{KeyTable, Stroke},
    };
    use super::*;

    /// The us keymap, whatever XKB_DEFAULT_* says.
    fn us() -> &'static KeyTable {
        static TABLE: std::sync::OnceLock<KeyTable> = std::sync::OnceLock::new();
        TABLE.get_or_init(|| KeyTable::from_names("evdev", "pc105", "us", "", None).unwrap())
    }

    fn plain(code: u32) -> Stroke {
        Stroke { code, shift: false }
    }

    fn shifted(code: u32) -> Stroke {
        Stroke { code, shift: true }
    }

    #[test]
    fn key_names() {
        let t = us();
        for (name, stroke) in [
            ("slash", plain(53)),
            ("/", plain(53)),
            ("period", plain(52)),
            (".", plain(52)),
            ("greater", shifted(52)),
            (">", shifted(52)),
            ("less", shifted(51)),
            ("F12", plain(88)),
            ("Return", plain(28)),
            ("return", plain(28)),
            ("BackSpace", plain(14)),
            ("KP_Enter", plain(96)),
            ("XF86AudioMute", plain(113)),
            ("A", shifted(30)),
            ("plus", shifted(13)),
            ("+", shifted(13)),
            ("space", plain(57)),
            (" ", plain(57)),
            ("0x2f", plain(53)),
        ] {
            assert_eq!(t.key(name).unwrap(), stroke, "{name}");
        }
        let err = format!("{:#}", t.key("nope").unwrap_err());
        assert!(err.contains("`nope`: unknown key name"), "{err}");
        let err = format!("{:#}", t.key("eacute").unwrap_err());
        assert!(err.contains("no key of the keymap evdev/pc105/us"), "{err}");
        assert!(t.key("").is_err() && t.key("a\0b").is_err());
    }

    /// Every name of the hand-written table this replaced gives the code it gave.
    #[test]
    fn old_key_names_unchanged() {
        let t = us();
        let letters = "qwertyuiopasdfghjklzxcvbnm";
        let letter_codes =
            [16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 30, 31, 32, 33, 34, 35, 36, 37, 38, 44, 45, 46, 47, 48, 49, 50];
        let mut old: Vec<(String, u32)> = letters.chars().map(String::from).zip(letter_codes).collect();
        old.extend((1..=9).map(|d| (d.to_string(), d + 1)));
        old.push(("0".into(), 11));
        old.extend((1..=10).map(|n| (format!("f{n}"), 58 + n)));
        old.extend([("f11".into(), 87), ("f12".into(), 88)]);
        for (name, code) in [
            ("esc", 1),
            ("escape", 1),
            ("minus", 12),
            ("equal", 13),
            ("backspace", 14),
            ("tab", 15),
            ("enter", 28),
            ("return", 28),
            ("ctrl", 29),
            ("leftctrl", 29),
            ("control", 29),
            ("shift", 42),
            ("leftshift", 42),
            ("rightshift", 54),
            ("alt", 56),
            ("leftalt", 56),
            ("space", 57),
            ("rightctrl", 97),
            ("rightalt", 100),
            ("altgr", 100),
            ("home", 102),
            ("up", 103),
            ("pageup", 104),
            ("left", 105),
            ("right", 106),
            ("end", 107),
            ("down", 108),
            ("pagedown", 109),
            ("insert", 110),
            ("delete", 111),
            ("del", 111),
            ("super", 125),
            ("meta", 125),
            ("logo", 125),
            ("leftmeta", 125),
        ] {
            old.push((name.into(), code));
        }
        for (name, code) in old {
            assert_eq!(t.key(&name).unwrap(), plain(code), "{name}");
            assert_eq!(t.key(&name.to_uppercase()).unwrap().code, code, "{name}");
        }
        assert_eq!(t.combo("ctrl+alt+delete").unwrap(), vec![29, 56, 111]);
        assert_eq!(t.combo("Ctrl+Alt+Delete").unwrap(), vec![29, 56, 111]);
    }

    #[test]
    fn combos_and_text() {
        let t = us();
        assert_eq!(t.combo("greater").unwrap(), vec![42, 52]);
        assert_eq!(t.combo("ctrl+greater").unwrap(), vec![29, 42, 52]);
        assert_eq!(t.combo("shift+greater").unwrap(), vec![42, 52]);
        assert_eq!(t.combo("rightshift+A").unwrap(), vec![54, 30]);
        assert_eq!(t.combo("ctrl++").unwrap(), vec![29, 42, 13]);
        assert_eq!(t.combo("+").unwrap(), vec![42, 13]);
        for bad in ["ctrl+", "++", "ctrl+nope", ""] {
            assert!(t.combo(bad).is_err(), "{bad}");
        }
        assert_eq!(
            t.text("a/.>B\n\t").unwrap(),
            vec![plain(30), plain(53), plain(52), shifted(52), shifted(48), plain(28), plain(15)]
        );
        let err = format!("{:#}", t.text("ab\u{e9}c").unwrap_err());
        assert!(err.contains("character 3 of the text, '\u{e9}' (U+00E9)") && err.contains("nothing typed"), "{err}");
        assert_eq!(t.text(&"x".repeat(keys::MAX_TEXT)).unwrap().len(), keys::MAX_TEXT);
        assert!(t.text(&"x".repeat(keys::MAX_TEXT + 1)).is_err());
    }

    #[test]
    fn cli_actions() {
        let parse = |s| InputAction::parse_cli_with(s, || Ok(us()));
        assert_eq!(parse("move:10,20").unwrap(), vec![InputAction::Motion { x: 10, y: 20 }]);
        let click = parse("click:left").unwrap();
        assert_eq!(click.len(), 2);
        let k = |code, pressed| InputAction::Key { code, pressed };
        assert_eq!(parse("key:ctrl+c").unwrap(), vec![k(29, true), k(46, true), k(46, false), k(29, false)]);
        assert_eq!(parse("key:greater").unwrap(), vec![k(42, true), k(52, true), k(52, false), k(42, false)]);
        assert_eq!(parse("keydown:>").unwrap(), vec![k(42, true), k(52, true)]);
        assert_eq!(parse("keyup:>").unwrap(), vec![k(52, false), k(42, false)]);
        assert_eq!(parse("keydown:a").unwrap(), vec![k(30, true)]);
        assert_eq!(
            parse("type:a>").unwrap(),
            vec![k(30, true), k(30, false), k(42, true), k(52, true), k(52, false), k(42, false)]
        );
        assert_eq!(parse("type:").unwrap(), vec![]);
        assert!(parse("type:a\u{e9}").is_err());
        assert!(parse("wiggle:1").is_err());
        // pointer actions need no keymap
        let no_keymap = || Err(anyhow!("no keymap"));
        assert!(InputAction::parse_cli_with("move:1,2", no_keymap).is_ok());
        assert!(InputAction::parse_cli_with("key:a", no_keymap).is_err());
    }

    #[test]
    fn input_requests_fit() {
        let worst = vec![InputAction::Motion { x: i32::MIN, y: i32::MIN }; 2 * MAX_INPUT_ACTIONS + 1];
        let requests = input_requests(worst);
        assert_eq!(requests.len(), 3);
        for req in &requests {
            assert!(serde_json::to_vec(req).unwrap().len() < MAX_REQUEST as usize);
        }
        assert_eq!(input_requests(vec![]), vec![Request::Input { actions: vec![] }]);
        // key events go at most MAX_KEY_BURST a request, other actions ride along
        let typed = InputAction::parse_cli_with("type:abcde", || Ok(us())).unwrap();
        let mut actions = vec![InputAction::Motion { x: 1, y: 2 }];
        actions.extend(typed.iter().copied());
        actions.push(InputAction::Scroll { notches: 1 });
        let requests = input_requests(actions.clone());
        let keys_per_request: Vec<usize> = requests
            .iter()
            .map(|r| match r {
                Request::Input { actions } => actions.iter().filter(|a| matches!(a, InputAction::Key { .. })).count(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(keys_per_request.iter().sum::<usize>(), 10);
        assert!(keys_per_request.iter().all(|&n| n <= MAX_KEY_BURST), "{keys_per_request:?}");
        assert_eq!(keys_per_request.len(), 10usize.div_ceil(MAX_KEY_BURST));
        let rejoined: Vec<InputAction> = requests
            .into_iter()
            .flat_map(|r| match r {
                Request::Input { actions } => actions,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(rejoined, actions);
    }
}
