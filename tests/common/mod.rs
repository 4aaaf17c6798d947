//! Helpers shared by the validation integration tests: the real shipped warninglists and a
//! small feed-event to `Attribute` conversion (the real wire parser lives elsewhere).
#![allow(dead_code)]

use mispd::model::Attribute;
use serde_json::Value;
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
        tags: vec!["tlp:white".into()],
        last_seen: None,
        event_published: Some(true),
    }
}

fn flag(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_i64() == Some(1),
        Value::String(s) => s == "1" || s == "true",
        _ => false,
    }
}

/// Every attribute (event and object attributes) of a `{"Event": {...}}` file.
pub fn event_attributes(path: &Path) -> Vec<Attribute> {
    let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let ev = &v["Event"];
    let event_uuid = ev["uuid"].as_str().map(String::from);
    let mut list: Vec<&Value> = ev["Attribute"].as_array().into_iter().flatten().collect();
    for o in ev["Object"].as_array().into_iter().flatten() {
        list.extend(o["Attribute"].as_array().into_iter().flatten());
    }
    list.into_iter()
        .map(|a| Attribute {
            uuid: a["uuid"].as_str().unwrap_or("").into(),
            event_uuid: event_uuid.clone(),
            misp_type: a["type"].as_str().unwrap_or("").into(),
            category: a["category"].as_str().unwrap_or("").into(),
            value: a["value"].as_str().unwrap_or("").into(),
            to_ids: flag(&a["to_ids"]),
            deleted: flag(&a["deleted"]),
            timestamp: 0,
            tags: vec![],
            last_seen: None,
            event_published: None,
        })
        .collect()
}
