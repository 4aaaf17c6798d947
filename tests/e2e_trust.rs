//! Corroboration (`trust = "low"`) end to end with the real binary and two local feeds, and the
//! snapshot's index across restarts: served as written when the sources are unchanged, rebuilt
//! from the sets it holds when a source is removed or its trust changes.

mod common;
mod e2e_support;
mod harness;

use harness::{source, start, start_with};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const BOTH: &str = "both-listed-c2.net";
const ONLY_A: &str = "only-a-listed-c2.net";
const ONLY_B: &str = "only-b-listed-c2.net";

/// A static MISP feed in `dir`: a manifest and one event with these domains.
fn write_feed(dir: &Path, event: &str, domains: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    let attrs: Vec<Value> = domains
        .iter()
        .enumerate()
        .map(|(i, d)| {
            json!({"uuid": format!("{}{i:04}", &event[..32]), "type": "domain",
                   "category": "Network activity", "value": d, "to_ids": true,
                   "timestamp": "1715767131"})
        })
        .collect();
    let ev = json!({"Event": {"uuid": event, "info": "trust test", "date": "2024-05-15",
        "timestamp": "1715767131", "published": true, "analysis": "2", "threat_level_id": "1",
        "Orgc": {"name": "test", "uuid": "d1c6a726-f132-4ddc-8180-ce3a5b778e65"},
        "Attribute": attrs}});
    std::fs::write(
        dir.join(format!("{event}.json")),
        serde_json::to_vec(&ev).unwrap(),
    )
    .unwrap();
    let manifest = json!({ event: {"info": "trust test", "date": "2024-05-15",
        "timestamp": 1715767131, "analysis": 2, "threat_level_id": 1,
        "Orgc": {"name": "test", "uuid": "d1c6a726-f132-4ddc-8180-ce3a5b778e65"}}});
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
}

fn feed_source(name: &str, dir: &Path, trust: &str) -> String {
    format!(
        "\n[[source]]\nname = \"{name}\"\nkind = \"feed\"\nurl = \"{}\"\ninterval = \"1h\"\nfull-resync = \"2h\"\ntrust = \"{trust}\"\n",
        dir.display()
    )
}

/// The sources a lookup names, sorted; empty when not listed.
fn sources_of(d: &harness::Daemon, value: &str) -> Vec<String> {
    let (code, v) = d.get(&format!("/v1/lookup?value={value}"));
    assert_eq!(code, 200, "{v}");
    let mut out: Vec<String> = v["matches"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["sources"].as_array().unwrap().clone())
        .map(|s| s["source"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

fn ready(d: &mut harness::Daemon) {
    assert!(
        d.wait_notify(Duration::from_secs(30), |n| n.contains("READY=1"))
            .is_some(),
        "no READY=1\n{}",
        d.log_text()
    );
}

#[test]
fn low_trust_needs_corroboration_and_the_snapshot_index_follows_config_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let (feed_a, feed_b) = (tmp.path().join("feed-a"), tmp.path().join("feed-b"));
    write_feed(
        &feed_a,
        "0b1d2c3e-0000-4000-8000-00000000000a",
        &[BOTH, ONLY_A],
    );
    write_feed(
        &feed_b,
        "0b1d2c3e-0000-4000-8000-00000000000b",
        &[BOTH, ONLY_B],
    );
    let head = e2e_support::config_head("");
    let config =
        head.clone() + &feed_source("a", &feed_a, "normal") + &feed_source("b", &feed_b, "low");

    let mut d = start(tmp.path(), &config, &[]);
    ready(&mut d);
    let st = d.wait_status(Duration::from_secs(60), |s| {
        source(s, "a")["state"] == "ok" && source(s, "b")["state"] == "ok"
    });
    assert_eq!(source(&st, "b")["indicators"], 2, "{st}");
    assert_eq!(sources_of(&d, BOTH), ["a", "b"], "corroborated: both named");
    assert_eq!(sources_of(&d, ONLY_A), ["a"]);
    assert!(
        sources_of(&d, ONLY_B).is_empty(),
        "a low-trust value alone is not served"
    );
    let (status, log, _) = d.stop();
    assert!(status.success(), "{log}");

    // Restart with both feeds gone and the same configuration: the snapshot's index is served
    // as written (no rebuild), and the low-trust source's whole set came back with it.
    std::fs::remove_dir_all(&feed_a).unwrap();
    std::fs::remove_dir_all(&feed_b).unwrap();
    let config_path = tmp.path().join("mispd.toml");
    let mut d = start_with(tmp.path(), &config_path, &[]);
    ready(&mut d);
    assert_eq!(sources_of(&d, BOTH), ["a", "b"]);
    assert_eq!(sources_of(&d, ONLY_A), ["a"]);
    assert!(sources_of(&d, ONLY_B).is_empty());
    let st = d.status();
    assert_eq!(source(&st, "b")["indicators"], 2, "{st}");
    assert_eq!(source(&st, "a")["indicators"], 2, "{st}");
    let (status, log, _) = d.stop();
    assert!(status.success(), "{log}");
    assert!(!log.contains("rebuilding the index"), "{log}");

    // Source `a` removed and `b` trusted now: the index is rebuilt from the snapshot's sets,
    // so b's uncorroborated value is served and a's values are gone, with no feed reachable.
    // `start` writes the configuration to the same mispd.toml (config_path).
    let mut d = start(
        tmp.path(),
        &(head + &feed_source("b", &feed_b, "normal")),
        &[],
    );
    ready(&mut d);
    assert_eq!(sources_of(&d, ONLY_B), ["b"], "{}", d.log_text());
    assert_eq!(sources_of(&d, BOTH), ["b"]);
    assert!(
        sources_of(&d, ONLY_A).is_empty(),
        "a removed source is not served"
    );
    assert_eq!(source(&d.status(), "b")["indicators"], 2);
    let (status, log, _) = d.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("rebuilding the index"), "{log}");

    // And back to low trust: only the corroborated part could be served, and no normal source
    // is left to corroborate anything.
    // `start` writes the configuration to the same mispd.toml (config_path).
    let mut d = start(
        tmp.path(),
        &(e2e_support::config_head("") + &feed_source("b", &feed_b, "low")),
        &[],
    );
    ready(&mut d);
    assert!(sources_of(&d, ONLY_B).is_empty());
    assert!(sources_of(&d, BOTH).is_empty());
    assert_eq!(
        source(&d.status(), "b")["indicators"],
        2,
        "kept, not served"
    );
    let (status, log, _) = d.stop();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("every source is trust = \"low\" (b)"),
        "the operator is told why nothing is served: {log}"
    );
    let (code, _, err) = harness::ctl(&["check-config", config_path.to_str().unwrap()], None);
    assert_eq!(code, 0, "a warning, not an error: {err}");
    assert!(err.contains("nothing will be served"), "{err}");
}
