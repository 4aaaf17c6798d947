//! A warninglist `list.json` from outside (MISP's warninglists repository, an operator's own
//! list): loading must never panic, and a loaded list must answer lookups without panicking.
//! Input: the list's bytes; the probes are fixed values of each kind plus the list's own first
//! entries (so regex, substring and hostname matching run on what the list contains).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mispd::validate::Validator;

const PROBES: &[&str] = &[
    "10.1.2.3",
    "192.168.0.0/16",
    "2001:db8::1",
    "fe80::1",
    "example.com",
    "www.example.com.",
    "https://user@example.com:8443/a?b#c",
    "d41d8cd98f00b204e9800998ecf8427e",
    "info@example.org",
    "",
    ".",
    "[::1]:80",
];

fuzz_target!(|data: &[u8]| {
    let (v, _warnings) = Validator::with_warninglist_bytes("fuzz", data);
    for p in PROBES {
        let _ = v.warninglist_hits(p);
    }
    // Probing with the list's own entries reaches the matching paths for what it holds.
    if let Ok(serde_json::Value::Object(o)) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Some(serde_json::Value::Array(entries)) = o.get("list") {
            for e in entries.iter().take(8).filter_map(|e| e.as_str()) {
                let _ = v.warninglist_hits(e);
            }
        }
    }
});
