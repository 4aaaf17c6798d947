//! What a local client sends to the query socket: the `GET /v1/lookup?value=` query string and
//! the `POST /v1/lookup` JSON body, then the lookups themselves against an index built from a
//! real restSearch fixture, and the JSON answer. Input: first byte 0 = query string, else body.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use mispd::index::Index;
use mispd::misp::wire::{decode_feed_event, decode_rest_search};
use mispd::query::{parse_lookup_body, parse_lookup_query};
use std::sync::{Arc, OnceLock};

fn index() -> &'static Index {
    static I: OnceLock<Index> = OnceLock::new();
    I.get_or_init(|| {
        let source: Arc<str> = Arc::from("fixture");
        let v = common::validator();
        let mut attributes = Vec::new();
        for body in [
            &include_bytes!(
                "../../tests/fixtures/restsearch/demisto_search_attribute_by_type.json"
            )[..],
            include_bytes!(
                "../../tests/fixtures/restsearch/misp-stix_test_attributes_collection_1.json"
            ),
            include_bytes!(
                "../../tests/fixtures/restsearch/misp-stix_test_attributes_collection_2.json"
            ),
        ] {
            attributes.extend(
                decode_rest_search(body)
                    .expect("fixture decodes")
                    .attributes,
            );
        }
        for body in [
            &include_bytes!(
                "../../tests/fixtures/events/PyMISP_57c4445b-c548-4654-af0b-4be3950d210f.json"
            )[..],
            include_bytes!(
                "../../tests/fixtures/feed-infoblox/dad88707-beb8-4a14-94e2-5ffecf5a5f85.json"
            ),
        ] {
            attributes.extend(
                decode_feed_event(body)
                    .expect("fixture decodes")
                    .1
                    .attributes,
            );
        }
        let indicators: Vec<_> = attributes
            .iter()
            .flat_map(|a| v.judge(&source, a, 1_700_000_000).accepted)
            .collect();
        assert!(indicators.len() > 5, "fixtures give indicators");
        Index::build(indicators)
    })
}

fn answer(value: &str) {
    let l = index().lookup(value);
    let json = serde_json::to_vec(&l).expect("a lookup serialises");
    assert!(!json.is_empty());
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else { return };
    if *mode == 0 {
        let Ok(q) = std::str::from_utf8(rest) else {
            return;
        };
        if let Ok(value) = parse_lookup_query(q) {
            answer(&value);
        }
    } else if let Ok(values) = parse_lookup_body(rest, 64) {
        assert!(values.len() <= 64);
        for v in &values {
            answer(v);
        }
    }
});
