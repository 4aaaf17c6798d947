//! The whole path with a static feed (the demo's data): real binary, real NOTIFY_SOCKET, real
//! query socket, real warninglists; then restart from the snapshot with the feed gone.

mod common;
mod consumers;
mod e2e_support;
mod harness;

use harness::{ctl, repo, source, start};
use std::time::Duration;

fn config(feed: &str) -> String {
    e2e_support::config_head("")
        + &format!(
            r#"
[[source]]
name = "infoblox"
kind = "feed"
url = "{feed}"
interval = "1h"
full-resync = "2h"
"#
        )
}

#[test]
fn feed_is_synced_validated_served_and_survives_restart_without_the_feed() {
    let tmp = tempfile::tempdir().unwrap();
    let feed = tmp.path().join("feed");
    std::fs::create_dir(&feed).unwrap();
    for e in std::fs::read_dir(repo("examples/feed")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), feed.join(e.file_name())).unwrap();
    }
    // Like the real Infoblox feed: the manifest lists an event whose file is missing.
    let mpath = feed.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    let listed = manifest
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    manifest["454d994e-c027-4fb1-9be0-b58d815bdf3a"] = listed;
    std::fs::write(&mpath, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let mut d = start(tmp.path(), &config(feed.to_str().unwrap()), &[]);

    // READY=1 only once the socket exists.
    let ready = d.wait_notify(Duration::from_secs(30), |n| n.contains("READY=1"));
    assert!(ready.is_some(), "no READY=1\n{}", d.log_text());
    assert!(d.socket.exists(), "READY=1 before the socket was bound");

    let st = d.wait_status(Duration::from_secs(60), |s| {
        source(s, "infoblox")["state"] == "ok"
    });
    let n = source(&st, "infoblox")["indicators"].as_u64().unwrap();
    assert!(n > 1000, "expected the feed's indicators, got {n}: {st}");
    assert!(st["generation"].as_u64().unwrap() >= 1);
    assert!(
        d.log_text().contains("event whose file is missing"),
        "{}",
        d.log_text()
    );

    // Known indicators listed with provenance.
    let (code, v) = d.get("/v1/lookup?value=wordpress.agrupem.com");
    assert_eq!(code, 200);
    assert_eq!(v["listed"], true, "{v}");
    let m = &v["matches"][0];
    assert_eq!(m["type"], "domain");
    let src = &m["sources"][0];
    assert_eq!(src["source"], "infoblox");
    assert_eq!(src["event_uuid"], "27dceb7d-92bd-4848-bfbd-8570e86de7de");
    assert!(src["attribute_uuid"].as_str().unwrap().len() == 36);

    // A subdomain of a listed domain, an IP, a hash.
    let (_, v) = d.get("/v1/lookup?value=cdn.wordpress.agrupem.com");
    assert_eq!(v["listed"], true, "{v}");
    assert_eq!(v["matches"][0]["match"], "subdomain");
    let (_, v) = d.get("/v1/lookup?value=62.171.178.147");
    assert_eq!(v["listed"], true, "{v}");
    let (_, v) =
        d.get("/v1/lookup?value=4996180B2FA1045AAB5D36F46983E91DADEEBFD4F765D69FA50EBA4EDF310ACF");
    assert_eq!(v["listed"], true, "hash lookups are case-insensitive: {v}");
    assert!(
        v["matches"][0]["sources"].as_array().unwrap().len() >= 2,
        "one hash, two events: {v}"
    );

    // Benign values are not listed.
    for benign in ["google.com", "8.8.8.8", "example.net"] {
        let (_, v) = d.get(&format!("/v1/lookup?value={benign}"));
        assert_eq!(v["listed"], false, "{benign}: {v}");
    }

    // Batch lookups through mispctl, human and JSON.
    let sock = d.socket.to_str().unwrap().to_string();
    let (code, out, err) = ctl(
        &[
            "--socket",
            &sock,
            "lookup",
            "wordpress.agrupem.com",
            "google.com",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("wordpress.agrupem.com\tLISTED"), "{out}");
    assert!(out.contains("google.com\tnot listed"), "{out}");
    let (code, out, _) = ctl(&["--socket", &sock, "lookup"], Some("example.net\n"));
    assert_eq!(code, 1, "nothing listed exits 1: {out}");

    // Exports and the change feed through mispctl.
    let (code, out, err) = ctl(
        &[
            "--socket", &sock, "export", "--format", "plain", "--type", "domain",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines().any(|l| l == "wordpress.agrupem.com"),
        "export lacks a listed domain"
    );
    assert!(
        !out.lines().any(|l| l == "62.171.178.147"),
        "--type domain must leave IPs out"
    );
    let (code, out, err) = ctl(
        &[
            "--socket", &sock, "export", "--format", "nft", "--table", "fw",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("table inet fw"), "{out:.300}");
    // The real feed's set, as a firewall updater and a resolver would load it.
    let nft_file = tmp.path().join("fw.nft");
    std::fs::write(&nft_file, &out).unwrap();
    consumers::nft_accepts(&nft_file);
    let (code, zone, err) = ctl(&["--socket", &sock, "export", "--format", "rpz"], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        zone.contains("\nwordpress.agrupem.com CNAME .\n"),
        "{zone:.300}"
    );
    let zone_file = tmp.path().join("rpz.zone");
    std::fs::write(&zone_file, &zone).unwrap();
    consumers::named_accepts("rpz.mispd", &zone_file);
    let (code, out, err) = ctl(
        &[
            "--socket",
            &sock,
            "export",
            "--format",
            "suricata",
            "--dataset",
            "ipv4",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l == "62.171.178.147"), "{out:.300}");
    // A reader that stops early (`mispctl export | head`) is not an error: quiet, exit 0.
    let mut child = std::process::Command::new(harness::CTL)
        .args(["--socket", &sock, "export", "--format", "plain"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the pipe's only reader is gone before anything is written
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
    // An error answer goes to stderr, never into the file the export is redirected to.
    let (code, out, err) = ctl(&["--socket", &sock, "export", "--format", "csv"], None);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty(), "stdout must stay empty: {out}");
    assert!(
        err.contains("HTTP 400") && err.contains("format is one of"),
        "{err}"
    );
    let (code, out, err) = ctl(&["--socket", &sock, "changes"], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("# reset"),
        "no cursor: a reset with the whole set: {out:.200}"
    );
    assert!(
        out.contains("+ wordpress.agrupem.com\tdomain"),
        "{out:.300}"
    );
    let cursor = err
        .trim()
        .strip_prefix("cursor: ")
        .expect("cursor on stderr")
        .to_string();
    let (code, out, _) = ctl(&["--socket", &sock, "changes", "--since", &cursor], None);
    assert_eq!(code, 0);
    assert!(
        out.trim().is_empty(),
        "nothing changed since that cursor: {out}"
    );
    assert!(
        source(&d.status(), "infoblox")["data-age-seconds"]
            .as_i64()
            .unwrap()
            >= 0
    );

    // A typo in an export filter is an error, not an empty set that would clear a firewall.
    let (code, raw) = harness::raw_http(
        &d.socket,
        "GET",
        "/v1/indicators?format=nft&source=infobox",
        None,
    )
    .unwrap();
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&raw));
    assert!(String::from_utf8_lossy(&raw).contains("bad-source"));
    let (code, raw) = harness::raw_http(
        &d.socket,
        "GET",
        "/v1/indicators?format=plain&type=ip_dst",
        None,
    )
    .unwrap();
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&raw));
    assert!(String::from_utf8_lossy(&raw).contains("bad-type"));
    let (code, v) = d.get("/v1/lookup?value=");
    assert_eq!(
        (code, v["code"].as_str()),
        (400, Some("missing-value")),
        "{v}"
    );

    // Monitoring: per-source sync figures, the quarantine by reason and the snapshot's age, in
    // a form Prometheus's own parser accepts.
    let metrics = metrics_text(&d.socket);
    for want in [
        "mispd_syncs_total{source=\"infoblox\",outcome=\"ok\"} ",
        "mispd_sync_duration_seconds{source=\"infoblox\"} ",
        "mispd_data_age_seconds{source=\"infoblox\"} ",
        "mispd_snapshot_age_seconds ",
        "mispd_quarantined{source=\"infoblox\",reason=",
    ] {
        assert!(metrics.contains(want), "no {want} in {metrics}");
    }
    let file = tmp.path().join("metrics.txt");
    std::fs::write(&file, &metrics).unwrap();
    consumers::promtool_accepts(&file);

    // The quarantine says what was held back and why.
    let (code, q) = d.get("/v1/quarantine?limit=1000");
    assert_eq!(code, 200);
    let items = q["items"].as_array().unwrap();
    assert!(
        !items.is_empty(),
        "the real feed has values validation must refuse: {q}"
    );
    assert!(items
        .iter()
        .all(|i| i["reason"]["code"].is_string() && i["source"] == "infoblox"));

    let (status, log, notes) = d.stop();
    assert!(status.success(), "exit status {status:?}\n{log}");
    assert!(notes.iter().any(|n| n.contains("STOPPING=1")), "{notes:?}");
    assert!(tmp.path().join("state/snapshot").exists());

    // Restart with the feed gone: the last good set is served at once, from the snapshot.
    std::fs::remove_dir_all(&feed).unwrap();
    let mut d = harness::start_with(tmp.path(), &tmp.path().join("mispd.toml"), &[]);
    assert!(
        d.wait_notify(Duration::from_secs(30), |n| n.contains("READY=1"))
            .is_some(),
        "{}",
        d.log_text()
    );
    let (_, v) = d.get("/v1/lookup?value=wordpress.agrupem.com");
    assert_eq!(
        v["listed"], true,
        "served from the snapshot before any sync: {v}"
    );
    // The sync fails (feed missing) and nothing served changes.
    let st = d.wait_status(Duration::from_secs(30), |s| {
        let st = &source(s, "infoblox")["state"];
        st == "degraded" || st == "failing"
    });
    assert!(source(&st, "infoblox")["last-error"].is_string(), "{st}");
    let (_, v) = d.get("/v1/lookup?value=62.171.178.147");
    assert_eq!(v["listed"], true, "{v}");
    // A consumer's cursor from before the restart names a generation of another process: it
    // gets a reset with the whole set, never a delta computed against the wrong base.
    let sock = d.socket.to_str().unwrap().to_string();
    let (code, out, err) = ctl(&["--socket", &sock, "changes", "--since", &cursor], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("# reset"), "{out:.200}");
    assert!(
        out.contains("+ wordpress.agrupem.com\tdomain"),
        "{out:.300}"
    );
    let metrics = metrics_text(&d.socket);
    let failed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mispd_syncs_total{source=\"infoblox\",outcome=\"failed\"} "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no failed-sync count in {metrics}"));
    assert!(
        failed >= 1,
        "the sync without its feed counts as failed: {metrics}"
    );
    assert!(
        metrics.contains("mispd_snapshot_age_seconds "),
        "the restored snapshot has an age: {metrics}"
    );
    let (status, log, _) = d.stop();
    assert!(status.success(), "{log}");
}

fn metrics_text(socket: &std::path::Path) -> String {
    let (code, raw) = harness::raw_http(socket, "GET", "/metrics", None).unwrap();
    assert_eq!(code, 200);
    String::from_utf8(raw).unwrap()
}
