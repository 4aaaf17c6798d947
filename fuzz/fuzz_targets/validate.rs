//! Values and types as MISP sends them, through the normalisers and the whole validator (syntax,
//! refanging, sanity, warninglists). Input: first byte picks the MISP type (or, when 0xff, the
//! type is the text up to the first newline), second byte the flags, the rest is the value.
//! Property: every indicator the validator accepts is found again by a lookup of its own value
//! (validation and lookups agree on the canonical form).
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use mispd::index::Index;
use mispd::model::Attribute;
use mispd::normalize;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let [sel, flags, rest @ ..] = data else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    for f in [
        normalize::domain,
        normalize::url,
        normalize::hex,
        normalize::email,
    ] {
        let _ = f(text);
    }
    let _ = normalize::ip(text);
    let (misp_type, value) = match sel {
        0xff => text.split_once('\n').unwrap_or(("", text)),
        _ => (common::TYPES[*sel as usize % common::TYPES.len()], text),
    };
    let attr = Attribute {
        uuid: "5f0c8d46-3b5c-4f2e-9a4e-2d4c3b2a1f00".into(),
        event_uuid: Some("57c4445b-c548-4654-af0b-4be3950d210f".into()),
        misp_type: misp_type.into(),
        category: "Network activity".into(),
        value: value.into(),
        to_ids: flags & 1 != 0,
        deleted: flags & 2 != 0,
        timestamp: 1_700_000_000,
        tags: if flags & 4 != 0 {
            vec!["tlp:white".into()].into()
        } else {
            Vec::new().into()
        },
        last_seen: None,
        event_published: Some(flags & 8 != 0),
    };
    let v = common::validator();
    let source: Arc<str> = Arc::from("fuzz");
    let judged = v.judge(&source, &attr, 1_700_000_100);
    let _ = v.warninglist_hits(value);
    if judged.accepted.is_empty() {
        return;
    }
    let index = Index::build(judged.accepted.clone());
    for ind in &judged.accepted {
        let l = index.lookup(&ind.value);
        assert!(
            l.listed,
            "accepted {:?} ({misp_type}: {value:?}) is not found by its own value",
            ind.value
        );
    }
});
