//! `CacheControl::parse` on arbitrary text: never panics, and parsing is
//! total (every input yields a directive set).

#![no_main]

use libfuzzer_sys::fuzz_target;
use shellac::cache::policy::CacheControl;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = CacheControl::parse(&text);
});
