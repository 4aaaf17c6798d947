//! Helpers shared by the validation integration tests: the real shipped warninglists and a
//! feed-event reader (through the real wire decoder).
#![allow(dead_code)]

use mispd::model::Attribute;
use std::path::{Path, PathBuf};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn warninglists_dir() -> PathBuf {
    root().join("packaging/warninglists")
}

pub fn attr(misp_type: &str, value: &str) -> Attribute {
    Attribute {
        uuid: "5c5b2f3e-0000-4000-8000-000000000001".into(),
        event_uuid: Some("5c5b2f3e-0000-4000-8000-0000000000ee".into()),
        misp_type: misp_type.into(),
        category: "Network activity".into(),
        value: value.into(),
        to_ids: true,
        deleted: false,
        timestamp: 1_700_000_000,
        tags: vec!["tlp:white".into()].into(),
        last_seen: None,
        event_published: Some(true),
    }
}

/// Every attribute (event and object attributes) of a `{"Event": {...}}` file, read by the real
/// feed decoder.
pub fn event_attributes(path: &Path) -> Vec<Attribute> {
    let body = std::fs::read(path).unwrap();
    let (_, decoded) = mispd::misp::wire::decode_feed_event(&body).unwrap();
    decoded.attributes
}
