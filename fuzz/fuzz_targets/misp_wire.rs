//! Every body a MISP server or feed sends goes through one of these decoders: restSearch pages,
//! feed events and feed manifests. None may panic, whatever the bytes; what they accept must
//! have as many rows as they counted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mispd::misp::wire::{decode_feed_event, decode_manifest, decode_rest_search};

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = decode_rest_search(data) {
        assert!(d.attributes.len() + d.bad_rows <= d.rows, "{d:?}");
    }
    if let Ok((_, d)) = decode_feed_event(data) {
        assert!(d.attributes.len() + d.bad_rows <= d.rows, "{d:?}");
    }
    if let Ok((events, _bad)) = decode_manifest(data) {
        assert!(events.keys().all(|k| mispd::misp::wire::is_uuid(k)));
    }
});
