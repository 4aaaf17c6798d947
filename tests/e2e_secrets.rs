//! The API key (issue 4), end to end with the real binary: a 403 is `auth-failed` with an
//! actionable message, a new key is picked up on SIGHUP, a redirect to another host is not
//! followed with the key, a key in the configuration stops the start, and the key appears in
//! none of the daemon's outputs (log, socket answers, mispctl, snapshot, store files, /proc
//! environ).

mod common;
mod e2e_support;
mod harness;

use common::server::{Fault, RecordingServer, TEST_KEY};
use e2e_support::*;
use harness::{source, start};
use std::time::{Duration, Instant};

const NEW_KEY: &str = "RotatedKey9876543210zyxwvutsrqponmlkjihg";
const DOMAIN: &str = "ticketsparis24.com";

/// The number of requests the double has seen.
fn requests(double: &Double) -> usize {
    double.srv().requests().len()
}

/// Waits until the double has seen `n` more requests than `from` (so a poll has happened).
fn wait_requests(double: &Double, from: usize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while requests(double) < from + n {
        assert!(Instant::now() < deadline, "the daemon stopped polling");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn auth_failure_key_rotation_and_redirects_never_expose_the_key() {
    assert_eq!(NEW_KEY.len(), 40);
    let tmp = tempfile::tempdir().unwrap();
    let double = Double::start();
    write_credential(tmp.path(), "misp-prod", TEST_KEY);
    let cfg = prod_config(&double, tmp.path(), &double.url(), "");
    // The most verbose logging there is (every crate at trace): still no key.
    let mut d = start(tmp.path(), &cfg, &[("MISPD_LOG", "trace")]);
    wait_ready(&mut d);
    wait_ok(&d, "prod");
    assert!(listed(&d, DOMAIN));

    // MISP's X-Auth-Key-Expiration is surfaced in the status.
    let expires = "2027-01-15T00:00:00+00:00";
    double.srv().state.lock().unwrap().key_expiration = Some(expires.to_string());
    d.wait_status(Duration::from_secs(15), |s| {
        source(s, "prod")["key-expires"] == expires
    });

    // 403 from a hostile server that echoes the Authorization header it got.
    double.srv().set_fault(Fault::Forbidden);
    let st = wait_state(&d, "prod", "auth-failed", Duration::from_secs(15));
    let err = source(&st, "prod")["last-error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(err.contains("MISP refused the API key (403"), "{err}");
    assert!(err.contains("check the key"), "actionable: {err}");
    assert!(err.contains("***"), "the echoed key is redacted: {err}");
    assert_no_secret("status during a 403", st.to_string().as_bytes(), TEST_KEY);
    assert!(listed(&d, DOMAIN), "a 403 changes nothing served");
    double.srv().set_fault(Fault::Ok);
    wait_ok(&d, "prod");

    // Rotation: MISP now accepts only the new key; the old one fails until SIGHUP.
    write_credential(tmp.path(), "misp-prod", NEW_KEY);
    double.srv().set_key(NEW_KEY);
    wait_state(&d, "prod", "auth-failed", Duration::from_secs(15));
    let before_hup = d.notifications.len();
    d.signal("HUP");
    let st = wait_ok(&d, "prod");
    assert_eq!(source(&st, "prod")["state"], "ok");
    let reqs = double.srv().requests();
    let last = reqs.last().unwrap();
    assert_eq!(
        last.header("authorization").as_deref(),
        Some(NEW_KEY),
        "requests after the reload carry the new key"
    );
    assert!(listed(&d, DOMAIN));
    d.wait_notify(Duration::from_secs(5), |n| n.contains("READY=1"))
        .unwrap();
    let after: Vec<String> = d.notifications[before_hup..].to_vec();
    let reloading = after.iter().position(|n| n.contains("RELOADING=1"));
    let ready = after.iter().rposition(|n| n.contains("READY=1"));
    assert!(
        matches!((reloading, ready), (Some(a), Some(b)) if a < b),
        "RELOADING=1 then READY=1: {after:?}"
    );

    // A redirect to another host (https, then plain http) is not followed with the key.
    let rec = double.block_on(RecordingServer::start());
    for to in [
        format!(
            "https://127.0.0.1:{}/attributes/restSearch",
            rec.addr.port()
        ),
        format!("http://127.0.0.1:{}/attributes/restSearch", rec.addr.port()),
    ] {
        double.srv().set_fault(Fault::RedirectTo(to.clone()));
        let from = requests(&double);
        let st = d.wait_status(Duration::from_secs(15), |s| {
            source(s, "prod")["last-error"]
                .as_str()
                .is_some_and(|e| e.contains(&to))
        });
        // Two more polls, so a follow-up request would have had time to happen.
        wait_requests(&double, from, 2);
        let err = source(&st, "prod")["last-error"].as_str().unwrap();
        assert!(err.contains("does not follow redirects"), "{err}");
        assert_eq!(source(&st, "prod")["state"], "degraded", "{st}");
        assert_eq!(rec.connections(), 0, "the daemon connected to {to}");
        assert!(listed(&d, DOMAIN));
    }
    double.srv().set_fault(Fault::Ok);
    wait_ok(&d, "prod");

    assert!(d.log_text().contains("TRACE"), "trace logging was on");
    for key in [TEST_KEY, NEW_KEY] {
        assert_daemon_keeps_secret(&d, key);
    }
    let (status, log, _) = d.stop();
    assert!(status.success(), "{log}");
    for key in [TEST_KEY, NEW_KEY] {
        assert_no_secret("log after stop", log.as_bytes(), key);
        assert_no_secret(
            "final snapshot",
            &std::fs::read(tmp.path().join("state/snapshot")).unwrap(),
            key,
        );
    }
    // The sources' store files hold MISP data only.
    let stores: Vec<_> = std::fs::read_dir(tmp.path().join("state/stores"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        stores.iter().any(|p| p.ends_with("prod.store")),
        "{stores:?}"
    );
    for path in &stores {
        for key in [TEST_KEY, NEW_KEY] {
            assert_no_secret(
                &path.display().to_string(),
                &std::fs::read(path).unwrap(),
                key,
            );
        }
    }
}

#[test]
fn a_key_in_the_configuration_stops_the_start_without_echoing_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config_head("")
        + &misp_source(
            "prod",
            "https://misp.example.org",
            "sha256//r8udi/Mxd6pLO7y7hZyUMWq8YnFnIWXCqeHsTDRqy8c=",
            None,
            TEST_KEY,
            "",
        );
    let mut d = start(tmp.path(), &cfg, &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = d.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "mispd did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = d.log_text();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("source[0].api-key"), "names the key: {log}");
    assert!(
        log.contains("LoadCredential"),
        "says where keys belong: {log}"
    );
    assert_no_secret("start-up error", log.as_bytes(), TEST_KEY);
    assert!(!d.socket.exists(), "nothing was served");
    assert!(d
        .wait_notify(Duration::from_millis(100), |n| n.contains("READY=1"))
        .is_none());

    let (code, out, err) = harness::ctl(&["check-config", d.config.to_str().unwrap()], None);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        (out.clone() + &err).contains("source[0].api-key"),
        "{out}{err}"
    );
    assert_no_secret("mispctl check-config", (out + &err).as_bytes(), TEST_KEY);
}
