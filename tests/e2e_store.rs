//! The source's store on disk (`<state-dir>/stores/<source>.store`), end to end with the real
//! binary and the MISP test double: written after a sync, continued incrementally by the next
//! sync and after a restart, refused when damaged or missing (a full sync, nothing
//! mass-deleted), and re-validated from disk on reload.

mod common;
mod e2e_support;
mod harness;

use e2e_support::*;
use harness::{source, start, start_with, Daemon};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const DOMAIN: &str = "ticketsparis24.com";
const MD5: &str = "71a868cdcc6b79b7d274e3b558cd4596";

fn config(double: &Double, dir: &Path, extra: &str) -> String {
    let extra = format!("full-resync = \"1h\"\n{extra}");
    prod_config(double, dir, &double.url(), &extra)
}

/// The restSearch bodies the double has seen since it last forgot its requests.
fn searches(double: &Double) -> Vec<Value> {
    double
        .srv()
        .requests()
        .iter()
        .filter(|r| r.path == "/attributes/restSearch")
        .map(|r| r.json())
        .collect()
}

/// Waits until a sync has asked for page 1 and the source is ok again; returns that first body.
fn first_sync(d: &Daemon, double: &Double) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(first) = searches(double).into_iter().find(|b| b["page"] == 1) {
            wait_ok(d, "prod");
            return first;
        }
        assert!(Instant::now() < deadline, "no sync\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A temporary directory and a MISP double serving the fixture attributes, its key installed.
fn setup() -> (tempfile::TempDir, Double) {
    let tmp = tempfile::tempdir().unwrap();
    let double = Double::start();
    double.srv().load_fixture_attributes();
    write_credential(tmp.path(), "misp-prod", common::server::TEST_KEY);
    (tmp, double)
}

/// Polls `done` until it holds, failing with `what` and the daemon's log at `deadline`.
fn wait_for(d: &Daemon, deadline: Instant, what: &str, mut done: impl FnMut() -> bool) {
    while !done() {
        assert!(Instant::now() < deadline, "{what}\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `n` seconds from now.
fn secs(n: u64) -> Instant {
    Instant::now() + Duration::from_secs(n)
}

fn indicators(d: &Daemon) -> u64 {
    source(&d.status(), "prod")["indicators"].as_u64().unwrap()
}

#[test]
fn store_on_disk_gives_incremental_syncs_across_restarts_and_damage_gives_a_full_one() {
    let (tmp, double) = setup();
    let cfg = config(&double, tmp.path(), "");
    let store = tmp.path().join("state/stores/prod.store");

    let mut d = start(tmp.path(), &cfg, &[]);
    wait_ready(&mut d);
    let first = first_sync(&d, &double);
    assert!(first.get("attribute_timestamp").is_none(), "{first}");
    let served = indicators(&d);
    assert!(served >= 20 && listed(&d, DOMAIN) && listed(&d, MD5));
    wait_for(&d, secs(10), "no store file", || store.exists());
    // The next sync (interval 1 s) continues from the stored cursor.
    double.srv().clear_requests();
    let next = first_sync(&d, &double);
    assert!(next["attribute_timestamp"].is_i64(), "{next}");
    // Syncs that bring nothing new leave the file alone; one that does rewrites it.
    let modified = || std::fs::metadata(&store).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let before = modified();
    double.srv().clear_requests();
    wait_for(&d, secs(20), "no further sync", || {
        searches(&double).len() >= 2
    });
    wait_ok(&d, "prod");
    assert_eq!(
        modified(),
        before,
        "a sync that changed nothing rewrote the file\n{}",
        d.log_text()
    );
    double.srv().add_attribute(serde_json::json!({
        "uuid": "5a1e0000-0000-4000-8000-0000000057a0", "type": "domain",
        "category": "Network activity", "value": "added-while-up-c2.net", "to_ids": true
    }));
    let deadline = secs(10);
    wait_for(&d, deadline, "the change was not written", || {
        modified() != before
    });
    // The file is written before the new set is published: wait for that too.
    wait_for(&d, deadline, "not published", || {
        listed(&d, "added-while-up-c2.net")
    });

    // A restart goes on incrementally too, and what changed meanwhile arrives.
    let config_path = d.config.clone();
    let (status, log, _) = d.stop();
    assert!(status.success(), "{log}");
    double.srv().clear_requests();
    double.srv().add_attribute(serde_json::json!({
        "uuid": "5a1e0000-0000-4000-8000-0000000057a1", "type": "domain",
        "category": "Network activity", "value": "added-while-down-c2.net", "to_ids": true
    }));
    let mut d = start_with(tmp.path(), &config_path, &[]);
    wait_ready(&mut d);
    let first = first_sync(&d, &double);
    assert!(
        first["attribute_timestamp"].is_i64(),
        "the first sync after a restart is incremental: {first}"
    );
    wait_ok(&d, "prod");
    assert!(listed(&d, "added-while-down-c2.net"));
    assert!(listed(&d, DOMAIN) && listed(&d, MD5));
    let served = indicators(&d);

    // A damaged store file is moved aside and the first sync is a full one: nothing is lost.
    let (status, log, _) = d.stop();
    assert!(status.success(), "{log}");
    let mut bytes = std::fs::read(&store).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&store, bytes).unwrap();
    double.srv().clear_requests();
    let mut d = start_with(tmp.path(), &config_path, &[]);
    wait_ready(&mut d);
    let first = first_sync(&d, &double);
    assert!(first.get("attribute_timestamp").is_none(), "{first}");
    let st = wait_ok(&d, "prod");
    assert!(source(&st, "prod")["held"].is_null(), "{st}");
    assert_eq!(indicators(&d), served, "{st}");
    assert!(listed(&d, DOMAIN) && listed(&d, "added-while-down-c2.net"));
    assert!(
        d.log_text().contains("store file refused"),
        "{}",
        d.log_text()
    );
    let aside = std::fs::read_dir(tmp.path().join("state/stores"))
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("prod.store.corrupt-")
        });
    assert!(aside, "the damaged file was moved aside");

    // A deleted one: the same.
    let (status, log, _) = d.stop();
    assert!(status.success(), "{log}");
    std::fs::remove_file(&store).unwrap();
    double.srv().clear_requests();
    let mut d = start_with(tmp.path(), &config_path, &[]);
    wait_ready(&mut d);
    let first = first_sync(&d, &double);
    assert!(first.get("attribute_timestamp").is_none(), "{first}");
    let st = wait_ok(&d, "prod");
    assert!(source(&st, "prod")["held"].is_null(), "{st}");
    assert_eq!(indicators(&d), served, "{st}");
    let (status, log, _) = d.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn a_reload_revalidates_the_store_from_disk() {
    let (tmp, double) = setup();
    // One sync an hour: what changes after the reload is the re-validation's doing.
    let cfg = config(&double, tmp.path(), "").replace("interval = \"1s\"", "interval = \"1h\"");
    let mut d = start(tmp.path(), &cfg, &[]);
    wait_ready(&mut d);
    wait_ok(&d, "prod");
    assert!(listed(&d, DOMAIN) && listed(&d, MD5));
    let store = tmp.path().join("state/stores/prod.store");
    wait_for(&d, secs(10), "no store file", || store.exists());
    double.srv().clear_requests();
    let allow = tmp.path().join("allow.txt");
    std::fs::write(&allow, format!("{DOMAIN}\n")).unwrap();
    std::fs::write(
        &d.config,
        cfg.replace("allowlist = \"\"", &format!("allowlist = {allow:?}"))
            .replace("{dir}", tmp.path().to_str().unwrap()),
    )
    .unwrap();
    d.signal("HUP");
    wait_for(&d, secs(15), "not re-validated", || !listed(&d, DOMAIN));
    assert!(listed(&d, MD5), "the rest of the store stays served");
    assert!(
        searches(&double).is_empty(),
        "no sync ran: the store came from disk"
    );
    assert!(d
        .log_text()
        .contains("re-validated with the reloaded rules"));

    // A source removed (here: renamed) on reload takes its store file with it.
    std::fs::write(
        &d.config,
        cfg.replace("name = \"prod\"", "name = \"prod2\"")
            .replace("{dir}", tmp.path().to_str().unwrap()),
    )
    .unwrap();
    d.signal("HUP");
    let renamed = tmp.path().join("state/stores/prod2.store");
    wait_for(&d, secs(15), "the renamed source's file", || {
        !store.exists() && renamed.exists()
    });
    let (status, log, _) = d.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn an_unwritable_store_directory_keeps_the_store_in_memory() {
    let (tmp, double) = setup();
    // A file where the directory should be: no store file can be written (even by root).
    std::fs::create_dir_all(tmp.path().join("state")).unwrap();
    std::fs::write(tmp.path().join("state/stores"), b"not a directory").unwrap();
    let mut d = start(tmp.path(), &config(&double, tmp.path(), ""), &[]);
    wait_ready(&mut d);
    wait_ok(&d, "prod");
    assert!(listed(&d, DOMAIN) && listed(&d, MD5));
    double.srv().clear_requests();
    let next = first_sync(&d, &double);
    assert!(
        next["attribute_timestamp"].is_i64(),
        "the store stayed in memory for the next sync: {next}"
    );
    assert!(listed(&d, DOMAIN) && listed(&d, MD5));
    assert!(d
        .log_text()
        .contains("cannot write the store file; keeping the store in memory"));
    let (status, log, _) = d.stop();
    assert!(status.success(), "{log}");
    assert!(
        tmp.path().join("state/snapshot").exists(),
        "the snapshot is unaffected"
    );
}
