//! Shared by the integration tests: the MISP test double ([`server`]), test certificates
//! ([`certs`]) and fixture loaders. Not every test binary uses every helper.
#![allow(dead_code)]

pub mod certs;
pub mod server;

use serde_json::{json, Value};
use std::path::PathBuf;

pub fn fixture_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

pub fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(fixture_path(rel)).unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
}

pub fn fixture_json(rel: &str) -> Value {
    serde_json::from_slice(&fixture(rel)).unwrap()
}

pub const INFOBLOX_EVENTS: [&str; 3] = [
    "24e799ca-aad8-4244-8005-90b3ceb44540",
    "dad88707-beb8-4a14-94e2-5ffecf5a5f85",
    "f02183b6-33a0-4a69-bc22-7a0d5b034ab6",
];

/// The feed files (name, bytes) of the trimmed Infoblox feed.
pub fn fixture_feed_files() -> Vec<(String, Vec<u8>)> {
    let mut files = vec![(
        "manifest.json".to_string(),
        fixture("feed-infoblox/manifest.json"),
    )];
    for uuid in INFOBLOX_EVENTS {
        files.push((
            format!("{uuid}.json"),
            fixture(&format!("feed-infoblox/{uuid}.json")),
        ));
    }
    files
}

/// Real attributes in restSearch shape: the misp-stix and demisto restSearch bodies, plus the
/// Infoblox feed events' attributes (each given its event uuid and, hidden, its event tags).
pub fn fixture_attributes() -> Vec<Value> {
    let mut out = Vec::new();
    for rel in [
        "restsearch/misp-stix_test_attributes_collection_1.json",
        "restsearch/misp-stix_test_attributes_collection_2.json",
        "restsearch/demisto_search_attribute_by_type.json",
    ] {
        let v = fixture_json(rel);
        let list = v.get("response").unwrap_or(&v)["Attribute"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for mut a in list {
            if a.get("event_uuid").is_none() {
                if let Some(u) = a.get("Event").and_then(|e| e.get("uuid")).cloned() {
                    a["event_uuid"] = u;
                }
            }
            out.push(a);
        }
    }
    for uuid in INFOBLOX_EVENTS {
        let ev = fixture_json(&format!("feed-infoblox/{uuid}.json"))["Event"].clone();
        let tags: Vec<Value> = ev["Tag"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|t| t["name"].clone())
            .collect();
        for mut a in ev["Attribute"].as_array().cloned().unwrap_or_default() {
            a["event_uuid"] = json!(uuid);
            a["_event_tags"] = json!(tags);
            out.push(a);
        }
    }
    out
}
