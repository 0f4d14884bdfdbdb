//! `shellac::Config::parse` on arbitrary text: it must return a config or a
//! `ConfigError`, never panic. (Addresses are resolved as the real loader
//! does, so inputs naming hosts cause resolver look-ups; run it offline.)

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(error) = shellac::Config::parse(std::path::Path::new("fuzz.toml"), text) {
            // Rendering the error walks its line/key lookup too.
            let _ = error.to_string();
        }
    }
});
