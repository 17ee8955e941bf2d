//! The control socket's request parser (JSON, `control::Request`) and the input actions of
//! `scanway input` (`InputAction::parse_cli_with`, with the US keymap), on any bytes.
//!
//! Checked: parsing returns; a request that parses serialises and parses back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scanway::control::{InputAction, Request, keys::KeyTable};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<Request>(data) {
        let text = serde_json::to_string(&request).unwrap();
        let again: Request = serde_json::from_str(&text).unwrap();
        assert_eq!(again, request, "{text}");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = InputAction::parse_cli_with(text, KeyTable::default_keymap);
    }
});
