//! Validation throughput with every shipped warninglist loaded, over the real Infoblox feed.
//! Run: `cargo bench --bench validate`. Prints lists loaded, entries, load time, judgements per
//! second on one core, and the accepted/rejected counts by reason.

use mispd::model::Attribute;
use mispd::validate::{Protected, Settings, Validator};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

const FEED: &str = "/work/shared/data/misp-feed/infoblox-feed";
const FALLBACK: &str = "tests/fixtures";

fn str_or_num(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
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

/// A tiny stand-in for the real wire parser: feed event files to attributes.
fn load_feed(dir: &Path) -> Vec<Attribute> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("feed directory")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let v: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        let Some(ev) = v.get("Event") else { continue };
        let event_uuid: Option<std::sync::Arc<str>> = ev["uuid"].as_str().map(Into::into);
        let tags: std::sync::Arc<[std::sync::Arc<str>]> = ev["Tag"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|t| t["name"].as_str().map(Into::into))
                    .collect()
            })
            .unwrap_or_default();
        let mut attrs: Vec<&Value> = ev["Attribute"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        for o in ev["Object"].as_array().into_iter().flatten() {
            attrs.extend(o["Attribute"].as_array().into_iter().flatten());
        }
        for a in attrs {
            out.push(Attribute {
                uuid: a["uuid"].as_str().unwrap_or("").into(),
                event_uuid: event_uuid.clone(),
                misp_type: a["type"].as_str().unwrap_or("").into(),
                category: a["category"].as_str().unwrap_or("").into(),
                value: a["value"].as_str().unwrap_or("").into(),
                to_ids: flag(&a["to_ids"]),
                deleted: flag(&a["deleted"]),
                timestamp: str_or_num(&a["timestamp"]),
                tags: tags.clone(),
                last_seen: None,
                event_published: None,
            });
        }
    }
    out
}

/// Nanoseconds this thread has been on a CPU (the machine may be shared: wall time lies).
fn cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn main() {
    let settings = Settings {
        warninglists: vec![PathBuf::from("packaging/warninglists")],
        allowlist: None,
        ..Settings::default()
    };
    let protected = Protected::from_parts(vec![], vec![]);
    let t = Instant::now();
    let c = cpu_ns();
    let (v, warnings) = Validator::load(&settings, protected);
    let load = t.elapsed().as_secs_f64();
    if let Some(cpu) = cpu_ns().zip(c).map(|(b, a)| (b - a) as f64 / 1e9) {
        println!("load on-CPU {cpu:.3} s");
    }
    let stats = v.stats();
    println!(
        "warninglists loaded: {} ({} entries: {:?}); load {:.3} s; {} load warnings",
        stats.warninglists,
        stats.warninglist_entries,
        stats.entries_by_type,
        load,
        warnings.len()
    );
    for w in &warnings {
        println!("  warning: {w}");
    }
    let dir = if Path::new(FEED).is_dir() {
        FEED
    } else {
        FALLBACK
    };
    let attrs = load_feed(Path::new(dir));
    println!("attributes from {dir}: {}", attrs.len());
    let source: Arc<str> = Arc::from("infoblox");
    let rounds = (1_000_000 / attrs.len().max(1)) + 1;
    let mut accepted = 0usize;
    let mut skipped = 0usize;
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut notes: BTreeMap<String, usize> = BTreeMap::new();
    let t = Instant::now();
    let cpu0 = cpu_ns();
    let mut n = 0usize;
    for round in 0..rounds {
        for a in &attrs {
            let j = v.judge(&source, a, 1_700_000_000);
            n += 1;
            if round == 0 {
                accepted += j.accepted.len();
                skipped += j.skipped as usize;
                for r in &j.rejected {
                    *reasons.entry(r.reason.code.to_string()).or_default() += 1;
                }
                for i in &j.accepted {
                    for note in &i.notes {
                        *notes.entry(note.to_string()).or_default() += 1;
                    }
                }
            }
            std::hint::black_box(j);
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_ns().zip(cpu0).map(|(b, a)| (b - a) as f64 / 1e9);
    println!(
        "{n} judgements in {secs:.3} s wall: {:.0} attributes/s",
        n as f64 / secs
    );
    if let Some(cpu) = cpu {
        println!(
            "  on-CPU {cpu:.3} s: {:.0} attributes/s per core",
            n as f64 / cpu
        );
    }
    println!("one pass: accepted {accepted}, skipped {skipped}, rejected by reason {reasons:?}");
    println!("notes on accepted: {notes:?}");
    let mut per_list: BTreeMap<String, usize> = BTreeMap::new();
    let mut shown = 0;
    for a in &attrs {
        for r in v.judge(&source, a, 0).rejected {
            if &*r.reason.code != "warninglist" && shown < 25 {
                shown += 1;
                println!(
                    "  rejected {} {:?}: {} ({})",
                    r.misp_type, r.value, r.reason.code, r.reason.detail
                );
            }
            if &*r.reason.code == "warninglist" {
                let list = r
                    .reason
                    .detail
                    .split(" is on warninglist ")
                    .nth(1)
                    .or_else(|| r.reason.detail.split("known-services warninglist ").nth(1))
                    .unwrap_or("?");
                *per_list
                    .entry(list.split(' ').next().unwrap_or("?").to_string())
                    .or_default() += 1;
            }
        }
    }
    println!("warninglist rejections per list: {per_list:?}");
}
