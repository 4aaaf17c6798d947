//! The whole path against a MISP (issue 2): the real `mispd` binary syncs the MISP test double
//! over real pinned TLS (rcgen certificates) with a real credential, and answers on its real
//! Unix socket. Fixture data is real MISP data (tests/fixtures/SOURCE.md).

mod common;
mod e2e_support;
mod harness;

use common::server::TEST_KEY;
use e2e_support::*;
use harness::{source, start};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

/// ticketsparis24.com in the Infoblox event 24e799ca-... (tests/fixtures/feed-infoblox).
const DOMAIN: &str = "ticketsparis24.com";
const DOMAIN_EVENT: &str = "24e799ca-aad8-4244-8005-90b3ceb44540";
/// An md5 of the demisto restSearch body, in event 56d76936-...
const MD5: &str = "71a868cdcc6b79b7d274e3b558cd4596";
const MD5_EVENT: &str = "56d76936-0d34-44ff-a8c5-5280c0a8ab16";
const MD5_ATTR: &str = "56d769fd-c228-4b8a-b1c7-5126c0a8ab16";
/// A public /24 injected as ip-dst.
const CIDR: &str = "45.147.230.0/24";

fn fixture_uuid(value: &str) -> String {
    common::fixture_attributes()
        .into_iter()
        .find(|a| a["value"] == value)
        .and_then(|a| a["uuid"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("{value} is not in the fixtures"))
}

/// Waits (bounded) until `value`'s listed state is `want`.
fn wait_listed(d: &harness::Daemon, value: &str, want: bool, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while listed(d, value) != want {
        assert!(
            Instant::now() < deadline,
            "{value} still listed={} after {timeout:?}: {}\n{}",
            !want,
            d.status(),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn misp_synced_over_pinned_tls_with_a_systemd_credential_and_served_with_provenance() {
    let tmp = tempfile::tempdir().unwrap();
    let double = Double::start();
    double.srv().add_attribute(json!({
        "uuid": "5a1e0000-0000-4000-8000-00000000c1d4", "type": "ip-dst", "category": "Network activity",
        "value": CIDR, "to_ids": true, "event_uuid": "5a1e0000-0000-4000-8000-0000000e0e01"
    }));
    // systemd's $CREDENTIALS_DIRECTORY; the configured credentials-dir does not even exist.
    let sysd = tmp.path().join("run-credentials");
    std::fs::create_dir(&sysd).unwrap();
    std::fs::set_permissions(&sysd, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(sysd.join("misp-prod"), TEST_KEY).unwrap();
    std::fs::set_permissions(
        sysd.join("misp-prod"),
        std::fs::Permissions::from_mode(0o400),
    )
    .unwrap();
    let cfg = prod_config(&double, tmp.path(), &double.url(), "full-resync = \"4s\"");
    let mut d = start(
        tmp.path(),
        &cfg,
        &[("CREDENTIALS_DIRECTORY", sysd.to_str().unwrap())],
    );
    wait_ready(&mut d);
    let st = wait_ok(&d, "prod");
    assert!(
        source(&st, "prod")["indicators"].as_u64().unwrap() >= 20,
        "{st}"
    );
    assert!(source(&st, "prod")["last-success"].is_string(), "{st}");

    // The requests were what MISP needs: JSON headers, the key in Authorization, a fixed order,
    // deleted [0,1] and event uuids.
    let reqs = double.srv().requests();
    let search = reqs
        .iter()
        .find(|r| r.path == "/attributes/restSearch")
        .expect("a restSearch request");
    assert_eq!(search.header("authorization").as_deref(), Some(TEST_KEY));
    assert!(search
        .header("accept")
        .unwrap()
        .contains("application/json"));
    let body = search.json();
    assert_eq!(body["order"], "Attribute.id asc", "{body}");
    assert_eq!(body["deleted"], json!([0, 1]), "{body}");

    // Known indicators, with provenance from the fixture.
    let (_, v) = d.get(&format!("/v1/lookup?value={DOMAIN}"));
    assert_eq!(v["listed"], true, "{v}");
    assert_eq!(v["matches"][0]["match"], "exact", "{v}");
    let src = &v["matches"][0]["sources"][0];
    assert_eq!(src["source"], "prod", "{v}");
    assert_eq!(src["event_uuid"], DOMAIN_EVENT, "{v}");
    assert_eq!(src["attribute_uuid"], fixture_uuid(DOMAIN), "{v}");
    assert_eq!(src["to_ids"], true, "{v}");
    assert!(
        src["tags"].as_array().is_some_and(|t| !t.is_empty()),
        "the event's tags travel with the match: {v}"
    );
    let (_, v) = d.get(&format!("/v1/lookup?value={}", MD5.to_uppercase()));
    assert_eq!(v["listed"], true, "{v}");
    assert_eq!(v["matches"][0]["type"], "md5", "{v}");
    let src = &v["matches"][0]["sources"][0];
    assert_eq!(src["event_uuid"], MD5_EVENT, "{v}");
    assert_eq!(src["attribute_uuid"], MD5_ATTR, "{v}");

    // A subdomain of a listed domain; an IP inside a listed CIDR.
    let (_, v) = d.get(&format!("/v1/lookup?value=cdn.{DOMAIN}"));
    assert_eq!(v["listed"], true, "{v}");
    assert_eq!(v["matches"][0]["match"], "subdomain", "{v}");
    let (_, v) = d.get("/v1/lookup?value=45.147.230.17");
    assert_eq!(v["listed"], true, "{v}");
    assert_eq!(v["matches"][0]["match"], "cidr", "{v}");
    assert_eq!(v["matches"][0]["indicator"], CIDR, "{v}");
    // Benign values are not listed, nor the neighbour of the CIDR.
    for benign in [
        "google.com",
        "8.8.8.8",
        "example.net",
        "45.147.231.1",
        "notticketsparis24.com",
    ] {
        assert!(!listed(&d, benign), "{benign} must not be listed");
    }
    // Batch lookups answer the same.
    let (code, v) = d.post(
        "/v1/lookup",
        &json!({"values": [DOMAIN, "google.com", "45.147.230.200"]}),
    );
    assert_eq!(code, 200, "{v}");
    let listed_flags: Vec<_> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["listed"].as_bool().unwrap())
        .collect();
    assert_eq!(listed_flags, [true, false, true], "{v}");

    // Incremental sync picks up an added attribute...
    let added = "5a1e0000-0000-4000-8000-0000000add01";
    double.srv().add_attribute(json!({
        "uuid": added, "type": "domain", "category": "Network activity",
        "value": "freshly-added-c2.net", "to_ids": true
    }));
    wait_listed(&d, "freshly-added-c2.net", true, Duration::from_secs(10));
    assert!(
        double
            .srv()
            .requests()
            .iter()
            .any(|r| r.json().get("attribute_timestamp").is_some()),
        "incremental syncs ask with attribute_timestamp"
    );
    // ...and a soft delete removes it.
    assert!(double.srv().soft_delete(added));
    wait_listed(&d, "freshly-added-c2.net", false, Duration::from_secs(10));

    // A hard delete is invisible to incremental syncs; the next full resync drops it.
    double.srv().clear_requests();
    assert!(double.srv().hard_delete(&fixture_uuid(DOMAIN)));
    let t0 = Instant::now();
    wait_listed(&d, DOMAIN, false, Duration::from_secs(15));
    let full_after_delete = double.srv().requests().iter().any(|r| {
        r.path == "/attributes/restSearch" && r.json().get("attribute_timestamp").is_none()
    });
    assert!(
        full_after_delete,
        "the drop came from a full resync (no attribute_timestamp)"
    );
    assert!(t0.elapsed() < Duration::from_secs(15));
    assert!(listed(&d, MD5), "the rest stays listed");
    assert!(!listed(&d, &format!("cdn.{DOMAIN}")));

    assert_daemon_keeps_secret(&d, TEST_KEY);
    let environ = std::fs::read(format!("/proc/{}/environ", d.child.id())).unwrap();
    assert!(
        String::from_utf8_lossy(&environ).contains("CREDENTIALS_DIRECTORY="),
        "the test really ran with CREDENTIALS_DIRECTORY"
    );

    let (status, log, notes) = d.stop();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(notes.iter().any(|n| n.contains("STOPPING=1")), "{notes:?}");
    assert!(
        notes
            .iter()
            .any(|n| n.contains("STATUS=") && n.contains("prod ok")),
        "STATUS= names the source state: {notes:?}"
    );
    assert_no_secret("final log", log.as_bytes(), TEST_KEY);
}

#[test]
fn loose_credential_and_wrong_pin_are_refused_while_another_source_keeps_running() {
    let tmp = tempfile::tempdir().unwrap();
    let double = Double::start();
    write_credential(tmp.path(), "good", TEST_KEY);
    let loose = write_credential_mode(tmp.path(), "loose", TEST_KEY, 0o644);
    let other_pin = common::certs::self_signed(&["localhost"]).pin().to_string();
    let ca = ca_file(tmp.path(), &double);
    let cfg = config_head("")
        + &misp_source("good", &double.url(), &double.pin(), Some(&ca), "good", "")
        + &misp_source(
            "loose",
            &double.url(),
            &double.pin(),
            Some(&ca),
            "loose",
            "",
        )
        + &misp_source("wrongpin", &double.url(), &other_pin, None, "good", "");
    // With a watchdog: a disabled source (no worker) must not stop it being fed.
    let mut d = start(tmp.path(), &cfg, &[("WATCHDOG_USEC", "1000000")]);
    wait_ready(&mut d);
    wait_ok(&d, "good");

    let st = d.wait_status(Duration::from_secs(20), |s| {
        source(s, "loose")["state"] == "disabled" && source(s, "wrongpin")["last-error"].is_string()
    });
    let err = source(&st, "loose")["last-error"].as_str().unwrap();
    assert!(
        err.contains(loose.to_str().unwrap()) && err.contains("chmod 600"),
        "the message names the path and the fix: {err}"
    );
    assert_eq!(source(&st, "loose")["indicators"], 0, "{st}");

    let wp = source(&st, "wrongpin");
    let err = wp["last-error"].as_str().unwrap();
    assert!(err.contains("pin mismatch"), "{err}");
    assert!(
        err.contains(&double.pin()) && err.contains(&other_pin),
        "the presented and the expected pins are shown: {err}"
    );
    assert_eq!(wp["state"], "failing", "{st}");
    assert_eq!(wp["indicators"], 0, "a wrong pin syncs nothing: {st}");
    assert!(wp["last-success"].is_null(), "{st}");

    // The good source serves; every lookup's provenance names only it.
    let (_, v) = d.get(&format!("/v1/lookup?value={DOMAIN}"));
    assert_eq!(v["listed"], true, "{v}");
    let sources: Vec<_> = v["matches"][0]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["source"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sources, ["good"], "{v}");
    assert_eq!(source(&d.status(), "good")["state"], "ok");

    assert!(
        d.wait_notify(Duration::from_secs(5), |n| n.contains("WATCHDOG=1"))
            .is_some(),
        "the watchdog is fed"
    );

    assert_daemon_keeps_secret(&d, TEST_KEY);
    let (status, log, _) = d.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("chmod 600"), "the refusal is logged: {log}");
}
