//! Shared by the end-to-end MISP tests (e2e_misp, e2e_faults, e2e_secrets): a MISP test double
//! on its own tokio runtime (so the test thread can block on the real daemon), a credentials
//! directory made the way an operator would make it, a config template for a MISP source, and
//! a scanner that proves a secret never shows up in some text.
#![allow(dead_code)]

use crate::common::certs::{self, TestCert};
use crate::common::server::MispServer;
use crate::harness::{self, source, Daemon};
use base64::Engine as _;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A MISP double running on a runtime of its own. Dropping it (or [`Double::shut_down`]) stops
/// the listener and every connection: "the server is gone".
pub struct Double {
    pub srv: Option<MispServer>,
    rt: Option<tokio::runtime::Runtime>,
    pub cert: TestCert,
    pub port: u16,
}

impl Double {
    /// A double with a fresh self-signed certificate for `localhost` and `127.0.0.1`, loaded
    /// with the real fixture attributes.
    pub fn start() -> Double {
        let cert = certs::self_signed(&["localhost", "127.0.0.1"]);
        let d = Double::start_with(cert, 0);
        d.srv().load_fixture_attributes();
        d
    }

    /// Starts the double on `port` (0: any free port) with this certificate.
    pub fn start_with(cert: TestCert, port: u16) -> Double {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let srv = rt.block_on(MispServer::start_at(&cert, port));
        let port = srv.addr.port();
        Double {
            srv: Some(srv),
            rt: Some(rt),
            cert,
            port,
        }
    }

    /// Runs a future on the double's runtime (e.g. to start a `RecordingServer` there).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.as_ref().expect("the double is running").block_on(f)
    }

    pub fn srv(&self) -> &MispServer {
        self.srv.as_ref().expect("the double is running")
    }

    /// Stops the listener and drops every open connection (no graceful close).
    pub fn shut_down(&mut self) {
        self.srv.take();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }

    /// Starts again on the same port with the same certificate (same pin), keeping nothing.
    pub fn restart_same_port(&mut self) {
        self.shut_down();
        let mut d = Double::start_with(cert_copy(&self.cert), self.port);
        self.srv = d.srv.take();
        self.rt = d.rt.take();
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    pub fn pin(&self) -> String {
        self.cert.pin().to_string()
    }
}

fn cert_copy(c: &TestCert) -> TestCert {
    TestCert {
        chain: c.chain.clone(),
        key_der: c.key_der.clone(),
        cert_pem: c.cert_pem.clone(),
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// A credentials directory `dir/credentials` (0700) holding `name` (0600) with `key`.
pub fn write_credential(dir: &Path, name: &str, key: &str) -> PathBuf {
    write_credential_mode(dir, name, key, 0o600)
}

pub fn write_credential_mode(dir: &Path, name: &str, key: &str, mode: u32) -> PathBuf {
    let creds = dir.join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = creds.join(name);
    std::fs::write(&path, format!("{key}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// The common part of a test configuration: state, credentials, socket, the shipped
/// warninglists, no allowlist. `validation_extra` goes into `[validation]`.
pub fn config_head(validation_extra: &str) -> String {
    format!(
        r#"
[daemon]
state-dir = "{{dir}}/state"
credentials-dir = "{{dir}}/credentials"

[query]
socket = "{{dir}}/query.sock"
socket-mode = "0600"

[validation]
warninglists = ["{wl}"]
allowlist = ""
{validation_extra}
"#,
        wl = harness::repo("packaging/warninglists").display(),
    )
}

/// A `[[source]]` for the double: pinned, interval 1s, timeout 2s (unless `extra` sets one),
/// optionally with a `ca-file`. `extra` adds keys (e.g. `full-resync = "3s"`).
pub fn misp_source(
    name: &str,
    url: &str,
    pin: &str,
    ca_file: Option<&Path>,
    key_name: &str,
    extra: &str,
) -> String {
    let ca = ca_file
        .map(|p| format!("ca-file = \"{}\"\n", p.display()))
        .unwrap_or_default();
    let timeout = if extra.contains("timeout") {
        ""
    } else {
        "timeout = \"2s\"\n"
    };
    format!(
        r#"
[[source]]
name = "{name}"
kind = "misp"
url = "{url}"
api-key = "{key_name}"
pins = ["{pin}"]
{ca}interval = "1s"
{timeout}{extra}
"#
    )
}

/// The usual test config: the shared head and one source `prod` on the double at `url`, trusting
/// its CA (written to `dir`), its key under the name `misp-prod`, plus `extra` keys.
pub fn prod_config(double: &Double, dir: &Path, url: &str, extra: &str) -> String {
    let ca = ca_file(dir, double);
    config_head("") + &misp_source("prod", url, &double.pin(), Some(&ca), "misp-prod", extra)
}

/// Writes the double's certificate as `dir/misp.pem`.
pub fn ca_file(dir: &Path, double: &Double) -> PathBuf {
    double.cert.write_pem(dir, "misp.pem")
}

/// Waits for READY=1 and checks the socket existed when it came.
pub fn wait_ready(d: &mut Daemon) {
    let ready = d.wait_notify(Duration::from_secs(30), |n| n.contains("READY=1"));
    assert!(ready.is_some(), "no READY=1\n{}", d.log_text());
    assert!(d.socket.exists(), "READY=1 before the socket was bound");
}

/// Waits until `name`'s state is `state`.
pub fn wait_state(d: &Daemon, name: &str, state: &str, timeout: Duration) -> Value {
    d.wait_status(timeout, |s| source(s, name)["state"] == state)
}

/// Waits until `name` is `ok` with no last error.
pub fn wait_ok(d: &Daemon, name: &str) -> Value {
    d.wait_status(Duration::from_secs(20), |s| {
        let src = source(s, name);
        src["state"] == "ok" && src["last-error"].is_null()
    })
}

/// `listed` for one value.
pub fn listed(d: &Daemon, value: &str) -> bool {
    let (code, v) = d.get(&format!("/v1/lookup?value={}", url_escape(value)));
    assert_eq!(code, 200, "{value}: {v}");
    v["listed"]
        .as_bool()
        .unwrap_or_else(|| panic!("{value}: {v}"))
}

pub fn url_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Every form of `key` that must never appear: the key, its base64 (standard and URL-safe,
/// with and without padding), and its hex.
pub fn secret_forms(key: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let b = key.as_bytes();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    vec![
        key.to_string(),
        STANDARD.encode(b),
        STANDARD_NO_PAD.encode(b),
        URL_SAFE.encode(b),
        URL_SAFE_NO_PAD.encode(b),
        hex,
    ]
}

/// Panics if any form of `key` (or a 20-character piece of it) occurs in `bytes`.
pub fn assert_no_secret(what: &str, bytes: &[u8], key: &str) {
    let text = String::from_utf8_lossy(bytes);
    for form in secret_forms(key) {
        assert!(
            !text.contains(&form),
            "{what} contains the API key (as {form:?})"
        );
    }
    // A partial echo (half the key) is a leak too.
    for half in [&key[..20], &key[20..]] {
        assert!(!text.contains(half), "{what} contains half of the API key");
    }
}

/// Scans everything the daemon exposes: its log, `/v1/status`, `/v1/quarantine`, an error
/// answer, `mispctl status/quarantine/lookup` output, the snapshot and `/proc/<pid>/environ`.
pub fn assert_daemon_keeps_secret(d: &Daemon, key: &str) {
    assert_no_secret("daemon log (stdout/stderr)", d.log_text().as_bytes(), key);
    for path in [
        "/v1/status",
        "/v1/health",
        "/v1/quarantine?limit=100000",
        "/v1/lookup?value=ticketsparis24.com",
        "/v1/lookup",
        "/v1/nope",
        "/v1/lookup?value=",
    ] {
        let (_, body) = harness::raw_http(&d.socket, "GET", path, None).unwrap();
        assert_no_secret(&format!("GET {path}"), &body, key);
    }
    let (_, body) =
        harness::raw_http(&d.socket, "POST", "/v1/lookup", Some(b"{not json".to_vec())).unwrap();
    assert_no_secret("POST /v1/lookup error", &body, key);
    let (_, body) = harness::raw_http(&d.socket, "POST", "/v1/release/nosuchsource", None).unwrap();
    assert_no_secret("POST /v1/release error", &body, key);
    let sock = d.socket.to_str().unwrap();
    for args in [
        vec!["--socket", sock, "status"],
        vec!["--socket", sock, "--json", "status"],
        vec!["--socket", sock, "quarantine", "--limit", "100000"],
        vec!["--socket", sock, "lookup", "ticketsparis24.com", "8.8.8.8"],
        vec!["--socket", sock, "release", "nosuchsource"],
        vec!["check-config", d.config.to_str().unwrap()],
    ] {
        let (_, out, err) = harness::ctl(&args, None);
        assert_no_secret(&format!("mispctl {args:?}"), (out + &err).as_bytes(), key);
    }
    let snap = d.dir.join("state/snapshot");
    if snap.exists() {
        assert_no_secret("snapshot", &std::fs::read(&snap).unwrap(), key);
    }
    let pid = d.child.id();
    let environ = std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/environ: {e}"));
    assert!(!environ.is_empty(), "environ read as empty");
    assert_no_secret("/proc/<pid>/environ", &environ, key);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert_no_secret("/proc/<pid>/cmdline", &cmdline, key);
}

/// Lookups whose answers must not change through a fault: (value, listed).
pub fn answers(d: &Daemon, values: &[&str]) -> Vec<(String, bool)> {
    values
        .iter()
        .map(|v| (v.to_string(), listed(d, v)))
        .collect()
}
