//! The configuration file parser (`compositor::config::Config::from_toml`): any text.
//!
//! Checked: it returns; a file that parses gives a colour for every guest it names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scanway::compositor::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = Config::from_toml(text) {
        for name in config.guests.keys() {
            let color = config.guest_color(name);
            assert!(color.iter().all(|c| c.is_finite()), "{name}: {color:?}");
        }
    }
});
