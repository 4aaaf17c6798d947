//! Protection through outages, crashes and bad responses (issue 5), end to end: the real
//! `mispd` against the MISP double over pinned TLS. After a first sync, each fault is switched
//! on at runtime; the same lookups must answer the same, `/v1/status` must show the right state
//! and last error, and the source must recover when the fault ends.

mod common;
mod e2e_support;
mod harness;

use common::server::{Fault, FaultScope, TEST_KEY};
use e2e_support::*;
use harness::{source, start, start_with, Daemon};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const DOMAIN: &str = "ticketsparis24.com";
const MD5: &str = "71a868cdcc6b79b7d274e3b558cd4596";
/// What must answer the same through every fault: listed values and benign ones.
const PROBES: [&str; 7] = [
    DOMAIN,
    "cdn.ticketsparis24.com",
    MD5,
    "olympics2024.cc",
    "google.com",
    "8.8.8.8",
    "example.net",
];

fn baseline(d: &Daemon) -> Vec<(String, bool)> {
    let a = answers(d, &PROBES);
    assert_eq!(
        a.iter().filter(|(_, l)| *l).count(),
        4,
        "the first four probes are listed, the rest not: {a:?}"
    );
    a
}

/// Waits until the source's state is `state` and its last error contains `needle`.
fn wait_fault(d: &Daemon, state: &str, needle: &str) -> Value {
    let st = d.wait_status(Duration::from_secs(15), |s| {
        let src = source(s, "prod");
        src["state"] == state
            && src["last-error"]
                .as_str()
                .is_some_and(|e| e.to_lowercase().contains(&needle.to_lowercase()))
    });
    source(&st, "prod").clone()
}

#[test]
fn every_remote_fault_keeps_the_served_set_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut double = Double::start();
    write_credential(tmp.path(), "misp-prod", TEST_KEY);
    let good = prod_config(&double, tmp.path(), &double.url(), "timeout = \"1s\"");
    let mut d = start(tmp.path(), &good, &[]);
    wait_ready(&mut d);
    let st = wait_ok(&d, "prod");
    let mut generation = st["generation"].clone();
    let count = source(&st, "prod")["indicators"].clone();
    let expected = baseline(&d);

    // A healthy source syncing every second stays healthy the whole time (sampled across
    // several syncs, so some samples fall inside a sync).
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        let (code, h) = d.get("/v1/health");
        assert_eq!((code, &h["status"]), (200, &json!("ok")), "{h}");
        std::thread::sleep(Duration::from_millis(25));
    }

    // The same answers, the same indicator count, and (unless a reload rebuilt the index on
    // purpose) no new generation: a failed sync publishes nothing.
    let same_answers = |d: &Daemon, what: &str| -> Value {
        assert_eq!(
            answers(d, &PROBES),
            expected,
            "lookups changed during {what}"
        );
        let st = d.status();
        assert_eq!(source(&st, "prod")["indicators"], count, "{what}: {st}");
        st
    };
    let same = |d: &Daemon, what: &str, generation: &Value| {
        let st = same_answers(d, what);
        assert_eq!(
            &st["generation"], generation,
            "{what}: a new generation was published"
        );
    };

    let faults: Vec<(Fault, &str, &str)> = vec![
        (Fault::Status500Json, "degraded", "MISP server error 500"),
        (Fault::Html200, "degraded", "instead of JSON"),
        (Fault::Redirect302Login, "degraded", "/users/login"),
        (Fault::TruncatedBody, "degraded", "invalid JSON"),
        (Fault::InvalidJson, "degraded", "invalid JSON"),
        (
            Fault::Slow(Duration::from_millis(300)),
            "degraded",
            "did not answer within",
        ),
        (Fault::ResetMidBody, "degraded", "broke during the response"),
        (Fault::Forbidden, "auth-failed", "MISP refused the API key"),
    ];
    for (fault, state, needle) in faults {
        let what = format!("{fault:?}");
        double.srv().set_fault(fault);
        let src = wait_fault(&d, state, needle);
        assert!(src["last-success"].is_string(), "{what}: {src}");
        let line = format!("prod {state}");
        assert!(
            d.wait_notify(Duration::from_secs(5), |n| n.contains("STATUS=")
                && n.contains(&line))
                .is_some(),
            "{what}: STATUS= says `{line}`"
        );
        // Still serving (200), but monitoring sees which source is not well.
        let (code, h) = d.get("/v1/health");
        assert_eq!(code, 200, "{what}: {h}");
        assert_eq!(h["status"], "degraded", "{what}: {h}");
        assert_eq!(h["degraded"][0]["name"], "prod", "{what}: {h}");
        same(&d, &what, &generation);
        double.srv().set_fault(Fault::Ok);
        wait_ok(&d, "prod");
        same(&d, &format!("recovery from {what}"), &generation);
    }

    // 429: the retry waits for X-Rate-Limit-Reset (3 s), not the 1 s interval.
    double
        .srv()
        .set_fault_scoped(Fault::RateLimited { reset_secs: 3 }, FaultScope::Times(1));
    let src = wait_fault(&d, "degraded", "rate limit");
    assert!(
        src["last-error"]
            .as_str()
            .unwrap()
            .contains("retrying in 3s"),
        "{src}"
    );
    let limited_at = Instant::now();
    same(&d, "429", &generation);
    wait_ok(&d, "prod");
    assert!(
        limited_at.elapsed() >= Duration::from_millis(2500),
        "retried {:?} after a 429 with a 3 s reset",
        limited_at.elapsed()
    );

    // A host name that does not resolve (reload to it, then back).
    let port = double.port;
    let nodns = format!("https://does-not-exist.invalid:{port}");
    std::fs::write(
        &d.config,
        prod_config(&double, tmp.path(), &nodns, "timeout = \"1s\"")
            .replace("{dir}", tmp.path().to_str().unwrap()),
    )
    .unwrap();
    d.signal("HUP");
    let src = wait_fault(&d, "degraded", "does-not-exist.invalid");
    assert!(
        src["last-error"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{src}"
    );
    // The reload itself rebuilds the index (new rules may apply): a new generation is expected.
    same_answers(&d, "DNS failure");
    std::fs::write(
        &d.config,
        good.replace("{dir}", tmp.path().to_str().unwrap()),
    )
    .unwrap();
    d.signal("HUP");
    let st = wait_ok(&d, "prod");
    generation = st["generation"].clone();
    same(&d, "recovery from the DNS failure", &generation);

    // An invalid configuration on SIGHUP is rejected; the running one keeps serving.
    let seen = d.notifications.len();
    std::fs::write(
        &d.config,
        good.replace("{dir}", tmp.path().to_str().unwrap())
            .replace("interval = \"1s\"", "intervall = \"1s\""),
    )
    .unwrap();
    d.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    let notes = loop {
        d.wait_notify(Duration::from_millis(100), |_| false);
        let after = d.notifications[seen..].to_vec();
        let r = after.iter().position(|n| n.contains("RELOADING=1"));
        if r.is_some_and(|r| after[r..].iter().any(|n| n.contains("READY=1"))) {
            break after;
        }
        assert!(
            Instant::now() < deadline,
            "no RELOADING=1 then READY=1: {after:?}"
        );
    };
    assert!(!notes.is_empty());
    let log = d.log_text();
    assert!(log.contains("new configuration rejected"), "{log}");
    assert!(log.contains("intervall"), "the reason names the key: {log}");
    wait_ok(&d, "prod");
    same(&d, "a rejected reload", &generation);
    std::fs::write(
        &d.config,
        good.replace("{dir}", tmp.path().to_str().unwrap()),
    )
    .unwrap();

    // A response larger than max-response-bytes is cut off (reload to a 1 KiB cap and back).
    let dir = tmp.path().to_str().unwrap();
    let reload = |d: &mut Daemon, extra: &str| {
        std::fs::write(
            &d.config,
            prod_config(&double, tmp.path(), &double.url(), extra).replace("{dir}", dir),
        )
        .unwrap();
        d.signal("HUP");
    };
    reload(&mut d, "timeout = \"1s\"\nmax-response-bytes = 1024");
    wait_fault(&d, "degraded", "exceeds 1024 bytes");
    same_answers(&d, "a response over the cap");
    // With max-stale 2s: a source failing longer than that is reported `failing`.
    reload(&mut d, "timeout = \"1s\"\nmax-stale = \"2s\"");
    let st = wait_ok(&d, "prod");
    generation = st["generation"].clone();

    // The server gone (listener and connections), then back on the same port.
    double.shut_down();
    let src = wait_fault(&d, "degraded", "cannot connect");
    assert!(
        src["last-error"].as_str().unwrap().contains("localhost"),
        "{src}"
    );
    same(&d, "server gone", &generation);
    wait_fault(&d, "failing", "cannot connect");
    let (code, h) = d.get("/v1/health");
    assert_eq!(code, 200, "stale data is still served: {h}");
    assert_eq!(h["degraded"][0]["state"], "failing", "{h}");
    same(&d, "server gone past max-stale", &generation);
    double.restart_same_port();
    double.srv().load_fixture_attributes();
    wait_ok(&d, "prod");
    same(&d, "recovery from the server being gone", &generation);

    assert_daemon_keeps_secret(&d, TEST_KEY);
    let (status, log, _) = d.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn sigkill_mid_sync_then_misp_down_serves_the_snapshot_and_a_corrupt_one_is_moved_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let mut double = Double::start();
    write_credential(tmp.path(), "misp-prod", TEST_KEY);
    let cfg = prod_config(&double, tmp.path(), &double.url(), "");
    let mut d = start(tmp.path(), &cfg, &[]);
    wait_ready(&mut d);
    wait_ok(&d, "prod");
    let expected = baseline(&d);
    // The snapshot is written right after the publication: wait for it.
    snapshot_settled(&d, &state);

    // SIGKILL while a sync is reading a slow answer.
    // Fault first, then clear: every request recorded from now on is a slow one.
    double
        .srv()
        .set_fault(Fault::Slow(Duration::from_millis(100)));
    double.srv().clear_requests();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !double
        .srv()
        .requests()
        .iter()
        .any(|r| r.path == "/attributes/restSearch")
    {
        assert!(Instant::now() < deadline, "no sync started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(d.source_state("prod"), "syncing");
    // A long sync after a good one is not a health problem.
    let (code, h) = d.get("/v1/health");
    assert_eq!((code, &h["status"]), (200, &json!("ok")), "{h}");
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    drop(d);

    // Restart with MISP down: the last good set is served at once.
    double.shut_down();
    let config_path = tmp.path().join("mispd.toml");
    let mut d = start_with(tmp.path(), &config_path, &[]);
    wait_ready(&mut d);
    assert_eq!(answers(&d, &PROBES), expected, "served from the snapshot");
    let st = d.wait_status(Duration::from_secs(15), |s| {
        source(s, "prod")["last-error"].is_string()
    });
    let src = source(&st, "prod");
    assert!(
        src["state"] == "degraded" || src["state"] == "failing",
        "{st}"
    );
    assert!(
        src["last-success"].is_string(),
        "restored from the snapshot: {st}"
    );
    assert_eq!(answers(&d, &PROBES), expected);

    // A reload now (MISP down, nothing synced since the restart) re-validates with the new
    // rules but must not treat the worker's empty store as the source's data.
    let seen = d.notifications.len();
    d.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        d.wait_notify(Duration::from_millis(50), |_| false);
        if d.notifications[seen..]
            .iter()
            .any(|n| n.contains("READY=1"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no READY=1 after the reload");
    }
    // The re-validation runs right after the reload; watch the answers for a second.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        assert_eq!(
            answers(&d, &PROBES),
            expected,
            "a reload unlisted the snapshot's set"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        mispd::snapshot::load(&state).unwrap().is_some(),
        "the snapshot on disk loads"
    );
    let (status, log, _) = d.stop();
    assert!(status.success(), "{log}");
    assert!(!has_corrupt(&state), "nothing was corrupt");

    // Damage the snapshot: it is moved aside, the daemon starts empty and syncs.
    let snap = state.join("snapshot");
    let mut bytes = std::fs::read(&snap).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0x5a;
    }
    std::fs::write(&snap, &bytes).unwrap();
    double.restart_same_port();
    double.srv().load_fixture_attributes();
    let mut d = start_with(tmp.path(), &config_path, &[]);
    wait_ready(&mut d);
    wait_ok(&d, "prod");
    assert_eq!(answers(&d, &PROBES), expected, "synced again from MISP");
    assert!(has_corrupt(&state), "the damaged snapshot was moved aside");
    assert!(
        d.log_text().contains("damaged snapshot moved aside"),
        "{}",
        d.log_text()
    );
    let (status, log, _) = d.stop();
    assert!(status.success(), "{log}");
    assert!(mispd::snapshot::load(&state).unwrap().is_some());
}

fn has_corrupt(state: &std::path::Path) -> bool {
    std::fs::read_dir(state).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("snapshot.corrupt-")
    })
}

/// 150 extra domains, so that deleting them is a mass change (above the breaker floor of 100).
fn mass_uuid(i: usize) -> String {
    format!("7a550000-0000-4000-8000-{i:012x}")
}

#[test]
fn poison_is_quarantined_and_mass_changes_are_held_until_released() {
    let tmp = tempfile::tempdir().unwrap();
    let double = Double::start();
    let own = double.srv().addr.ip().to_string();
    double.srv().poison();
    let extra_poison = [
        ("ip-dst", "not an ip"),
        ("md5", "71a868cdcc6b79b7d274e3b558cd459"),
        ("domain", "bad domain.com"),
        ("domain", "co.uk"),
    ];
    for (i, (t, v)) in extra_poison.iter().enumerate() {
        double.srv().add_attribute(json!({
            "uuid": format!("00000000-0000-4000-8000-{:012x}", 0xbee0 + i),
            "type": t, "category": "Network activity", "value": v, "to_ids": true
        }));
    }
    for i in 0..150 {
        double.srv().add_attribute(json!({
            "uuid": mass_uuid(i), "type": "domain", "category": "Network activity",
            "value": format!("m{i}.mass-test-c2.net"), "to_ids": true
        }));
    }
    write_credential(tmp.path(), "misp-prod", TEST_KEY);
    let cfg = prod_config(&double, tmp.path(), &double.url(), "full-resync = \"2s\"");
    let mut d = start(tmp.path(), &cfg, &[]);
    wait_ready(&mut d);
    wait_ok(&d, "prod");
    let expected = baseline(&d);
    assert!(listed(&d, "m7.mass-test-c2.net"));

    // Nothing poisoned is served...
    for v in [
        "1.2.3.4",
        "2a00:1450:4001::1",
        "10.1.2.3",
        "127.0.0.1",
        &own,
        "localhost",
        "192.168.1.1",
        "0.0.0.0",
        "bbc.co.uk",
        "google.com",
        "not an ip",
        "71a868cdcc6b79b7d274e3b558cd459",
    ] {
        assert!(!listed(&d, v), "poison listed: {v}");
    }
    // ...and every poisoned value is in the quarantine with its reason.
    let (code, q) = d.get("/v1/quarantine?limit=10000");
    assert_eq!(code, 200);
    let items = q["items"].as_array().unwrap();
    let reason = |value: &str| -> String {
        items
            .iter()
            .find(|i| i["value"] == value)
            .map(|i| i["reason"]["code"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{value} not quarantined: {q}"))
    };
    let port = double.port;
    let expectations: Vec<(String, &[&str])> = vec![
        ("0.0.0.0/0".into(), &["too-broad"]),
        ("::/0".into(), &["too-broad"]),
        ("10.0.0.0/8".into(), &["bogon", "too-broad"]),
        // The double's own address and name are loopback / single-label: refused as bogon or
        // syntax before the protected-infrastructure check would see them.
        ("127.0.0.1".into(), &["bogon", "protected"]),
        (format!("{own}|{port}"), &["bogon", "protected"]),
        (
            format!("https://localhost:{port}/"),
            &["syntax", "protected"],
        ),
        ("localhost".into(), &["protected", "bogon", "syntax"]),
        // A single label is refused before the public-suffix check; co.uk covers that one.
        ("com".into(), &["syntax", "public-suffix"]),
        ("co.uk".into(), &["public-suffix"]),
        ("192.168.0.0/16".into(), &["bogon"]),
        ("not an ip".into(), &["syntax"]),
        ("71a868cdcc6b79b7d274e3b558cd459".into(), &["syntax"]),
        ("bad domain.com".into(), &["syntax"]),
    ];
    let wrong: Vec<String> = expectations
        .iter()
        .map(|(value, codes)| (value, codes, reason(value)))
        .filter(|(_, codes, got)| !codes.contains(&got.as_str()))
        .map(|(value, codes, got)| format!("{value}: {got} (expected one of {codes:?})"))
        .collect();
    assert!(wrong.is_empty(), "wrong reasons: {wrong:#?}\n{q}");
    let st = d.status();
    assert!(source(&st, "prod")["quarantined"].as_u64().unwrap() >= expectations.len() as u64);

    // Mass delete: 150 of ~180 soft-deleted at once is held; everything stays listed.
    let mass: Vec<String> = (0..150).map(mass_uuid).collect();
    assert_eq!(double.srv().soft_delete_many(&mass), 150);
    let st = wait_state(&d, "prod", "held", Duration::from_secs(15));
    let held = &source(&st, "prod")["held"];
    assert_eq!(held["removed"], 150, "{st}");
    assert_eq!(held["added"], 0, "{st}");
    assert!(held["reason"].as_str().unwrap().contains("removed"), "{st}");
    assert!(listed(&d, "m7.mass-test-c2.net"), "held: still served");
    assert_eq!(answers(&d, &PROBES), expected);
    let sock = d.socket.to_str().unwrap().to_string();
    let (code, out, err) = harness::ctl(&["--socket", &sock, "status"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("HELD: +0 -150"), "{out}");
    let (code, out, err) = harness::ctl(&["--socket", &sock, "release", "prod"], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("released"), "{out}");
    assert!(
        !listed(&d, "m7.mass-test-c2.net"),
        "the release applied the deletes"
    );
    assert_eq!(answers(&d, &PROBES), expected);
    wait_ok(&d, "prod");

    // An empty answer (at the next full resync) is held too.
    double.srv().set_fault(Fault::Empty);
    let st = wait_state(&d, "prod", "held", Duration::from_secs(15));
    let held = &source(&st, "prod")["held"];
    assert!(held["reason"].as_str().unwrap().contains("empty"), "{st}");
    assert!(held["removed"].as_u64().unwrap() >= 4, "{st}");
    assert_eq!(
        answers(&d, &PROBES),
        expected,
        "an empty answer unlists nothing"
    );
    let (code, out, err) = harness::ctl(&["--socket", &sock, "release", "prod"], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !listed(&d, DOMAIN),
        "released: the source now serves nothing"
    );
    double.srv().set_fault(Fault::Ok);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !listed(&d, DOMAIN) {
        assert!(Instant::now() < deadline, "{}", d.status());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(answers(&d, &PROBES), expected);

    assert_daemon_keeps_secret(&d, TEST_KEY);
    let (status, log, _) = d.stop();
    assert!(status.success(), "{log}");
}

/// Waits until the snapshot on disk holds what the daemon serves (the write after a sync
/// follows the publication); returns that count.
fn snapshot_settled(d: &Daemon, state: &std::path::Path) -> usize {
    let served = source(&wait_ok(d, "prod"), "prod")["indicators"]
        .as_u64()
        .unwrap() as usize;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if !state.join("snapshot.tmp").exists() {
            if let Ok(Some(r)) = mispd::snapshot::load(state) {
                if r.served("prod") == served {
                    return served;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the snapshot never caught up with {served}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A large set, so that a snapshot write takes long enough to be hit by a SIGKILL.
fn kill_test_attr(i: usize) -> Value {
    json!({
        "uuid": format!("c0ffee00-0000-4000-8000-{i:012x}"), "type": "domain",
        "category": "Network activity", "value": format!("k{i}.kill-test-c2.net"), "to_ids": true
    })
}

#[test]
fn sigkill_during_snapshot_writes_leaves_the_old_or_the_new_snapshot() {
    const BASE: usize = 6_000;
    const BATCH: usize = 500;
    const ROUNDS: usize = 3;
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let double = Double::start();
    double
        .srv()
        .add_attributes((0..BASE).map(kill_test_attr).collect());
    write_credential(tmp.path(), "misp-prod", TEST_KEY);
    let cfg = prod_config(&double, tmp.path(), &double.url(), "page-size = 50000");
    let mut d = start(tmp.path(), &cfg, &[]);
    wait_ready(&mut d);
    wait_ok(&d, "prod");
    let config_path = tmp.path().join("mispd.toml");
    let mut next = BASE;
    let mut mid_write = 0;
    for round in 0..ROUNDS {
        let before_n = snapshot_settled(&d, &state);
        // New attributes: the next sync applies them and writes a bigger snapshot.
        double
            .srv()
            .add_attributes((next..next + BATCH).map(kill_test_attr).collect());
        next += BATCH;
        let tmp_file = state.join("snapshot.tmp");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !tmp_file.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        d.child.kill().unwrap();
        d.child.wait().unwrap();
        // A leftover temp file means the kill landed before the rename: the old one must load.
        let killed_mid_write = tmp_file.exists();
        mid_write += usize::from(killed_mid_write);
        drop(d);
        // Either the old or the new snapshot, whole.
        let after = mispd::snapshot::load(&state)
            .unwrap_or_else(|e| panic!("round {round}: snapshot damaged by SIGKILL: {e}"))
            .expect("a snapshot");
        let n = after.served("prod");
        assert!(
            n == before_n || (n == before_n + BATCH && !killed_mid_write),
            "round {round}: {n} indicators, expected {before_n} or {}",
            before_n + BATCH
        );
        assert!(!has_corrupt(&state));
        d = start_with(tmp.path(), &config_path, &[]);
        wait_ready(&mut d);
        assert!(
            listed(&d, DOMAIN),
            "round {round}: served after the restart"
        );
        assert!(listed(&d, "k17.kill-test-c2.net"));
        wait_ok(&d, "prod");
    }
    assert!(listed(&d, &format!("k{}.kill-test-c2.net", next - 1)));
    let (status, log, _) = d.stop();
    assert!(status.success(), "{log}");
    eprintln!("{mid_write} of {ROUNDS} kills landed while snapshot.tmp was being written");
}
