//! Pinned TLS against the MISP test double: what is accepted, what is refused, and that the
//! refusal says why.
mod common;

use common::certs::{self, TestCa};
use common::server::{MispServer, TEST_KEY};
use mispd::credentials::ApiKey;
use mispd::misp::{shared_key, ClientError, MispClient};
use mispd::tls::{Pin, TlsFailure, TlsSettings};
use serde_json::json;
use std::time::Duration;

fn client(server: &MispServer, tls: TlsSettings) -> MispClient {
    let key = shared_key(ApiKey::from_secret(TEST_KEY.to_string().into()));
    MispClient::new(&server.url(), &tls, Duration::from_secs(5), key, 8 << 20).unwrap()
}

fn pins(p: &[Pin]) -> TlsSettings {
    TlsSettings {
        pins: p.to_vec(),
        ca_file: None,
    }
}

fn query() -> serde_json::Value {
    json!({"returnFormat": "json", "deleted": [0, 1], "limit": 100, "page": 1,
           "order": "Attribute.id asc", "includeEventUuid": 1, "includeEventTags": 1})
}

async fn tls_failure(c: &MispClient) -> TlsFailure {
    match c.search_page(&query()).await {
        Err(ClientError::Tls { failure, .. }) => failure,
        other => panic!("expected a TLS refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn pinned_self_signed_syncs_without_ca_file() {
    let cert = certs::self_signed(&["localhost"]);
    let server = MispServer::start(&cert).await;
    let n = server.load_fixture_attributes();
    let c = client(&server, pins(&[cert.pin()]));
    let page = c.search_page(&query()).await.unwrap();
    assert_eq!(page.returned, n.min(100));
    assert_eq!(c.version().await.unwrap().version, "2.5.1");
}

#[tokio::test]
async fn openssl_style_self_signed_ca_flag_works_when_pinned() {
    // `openssl req -x509` certificates say CA:TRUE; webpki refuses them as server certs
    // (CaUsedAsEndEntity) even as ca-file, so the pin is what makes them usable.
    let cert = certs::self_signed_ca_flag(&["localhost"]);
    let server = MispServer::start(&cert).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = cert.write_pem(dir.path(), "self.pem");
    client(&server, pins(&[cert.pin()]))
        .version()
        .await
        .unwrap();
    let with_ca = TlsSettings {
        pins: vec![cert.pin()],
        ca_file: Some(ca.clone()),
    };
    client(&server, with_ca).version().await.unwrap();
    // Without the pin it is refused, with a hint to pin it.
    let f = tls_failure(&client(
        &server,
        TlsSettings {
            pins: vec![],
            ca_file: Some(ca),
        },
    ))
    .await;
    assert!(f.to_string().contains("pin its key"), "{f}");
}

#[tokio::test]
async fn self_signed_as_ca_file_without_pin_syncs() {
    let cert = certs::self_signed(&["localhost"]);
    let server = MispServer::start(&cert).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = cert.write_pem(dir.path(), "misp.pem");
    client(
        &server,
        TlsSettings {
            pins: vec![],
            ca_file: Some(ca),
        },
    )
    .version()
    .await
    .unwrap();
}

#[tokio::test]
async fn different_certificate_same_name_is_refused_by_pin() {
    let good = certs::self_signed(&["localhost"]);
    let evil = certs::self_signed(&["localhost"]);
    let server = MispServer::start(&evil).await;
    let c = client(&server, pins(&[good.pin()]));
    let err = c.search_page(&query()).await.unwrap_err();
    let ClientError::Tls {
        failure: TlsFailure::PinMismatch {
            presented,
            expected,
        },
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*presented, evil.pin());
    assert_eq!(expected, &vec![good.pin()]);
    let msg = err.to_string();
    assert!(
        msg.contains(&evil.pin().to_string()) && msg.contains(&good.pin().to_string()),
        "{msg}"
    );
    // Nothing reached the HTTP layer: the key was never sent.
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn even_a_ca_file_does_not_override_a_wrong_pin() {
    let evil = certs::self_signed(&["localhost"]);
    let server = MispServer::start(&evil).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = evil.write_pem(dir.path(), "evil.pem");
    let other = certs::self_signed(&["localhost"]).pin();
    let f = tls_failure(&client(
        &server,
        TlsSettings {
            pins: vec![other],
            ca_file: Some(ca),
        },
    ))
    .await;
    assert!(matches!(f, TlsFailure::PinMismatch { .. }), "{f:?}");
}

#[tokio::test]
async fn one_of_several_pins_is_enough() {
    let cert = certs::self_signed(&["localhost"]);
    let server = MispServer::start(&cert).await;
    let old = certs::self_signed(&["localhost"]).pin();
    client(&server, pins(&[old, cert.pin()]))
        .version()
        .await
        .unwrap();
}

#[tokio::test]
async fn expired_certificate_is_refused_even_when_pinned() {
    let cert = certs::expired(&["localhost"]);
    let server = MispServer::start(&cert).await;
    assert_eq!(
        tls_failure(&client(&server, pins(&[cert.pin()]))).await,
        TlsFailure::Expired
    );
    let dir = tempfile::tempdir().unwrap();
    let ca = cert.write_pem(dir.path(), "expired.pem");
    let f = tls_failure(&client(
        &server,
        TlsSettings {
            pins: vec![],
            ca_file: Some(ca),
        },
    ))
    .await;
    assert_eq!(f, TlsFailure::Expired);
    assert!(f.to_string().contains("expired"));
}

#[tokio::test]
async fn not_yet_valid_certificate_is_refused_even_when_pinned() {
    let cert = certs::not_yet_valid(&["localhost"]);
    let server = MispServer::start(&cert).await;
    assert_eq!(
        tls_failure(&client(&server, pins(&[cert.pin()]))).await,
        TlsFailure::NotYetValid
    );
}

#[tokio::test]
async fn certificate_for_another_name_is_refused_even_when_pinned() {
    let cert = certs::self_signed(&["misp.example.org"]);
    let server = MispServer::start(&cert).await;
    let f = tls_failure(&client(&server, pins(&[cert.pin()]))).await;
    assert!(matches!(f, TlsFailure::HostnameMismatch { .. }), "{f:?}");
    assert!(f.to_string().contains("not valid for the host name"), "{f}");
    let dir = tempfile::tempdir().unwrap();
    let ca = cert.write_pem(dir.path(), "other.pem");
    let f = tls_failure(&client(
        &server,
        TlsSettings {
            pins: vec![],
            ca_file: Some(ca),
        },
    ))
    .await;
    assert!(matches!(f, TlsFailure::HostnameMismatch { .. }), "{f:?}");
}

#[tokio::test]
async fn ca_signed_with_ca_file_and_no_pin_syncs() {
    let ca = TestCa::new("mispd test CA");
    let leaf = ca.leaf(&["localhost"]);
    let server = MispServer::start(&leaf).await;
    server.load_fixture_attributes();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_pem(dir.path(), "ca.pem");
    let c = client(
        &server,
        TlsSettings {
            pins: vec![],
            ca_file: Some(ca_file.clone()),
        },
    );
    assert!(c.search_page(&query()).await.unwrap().returned > 0);
    // With the leaf's pin as well it still works.
    client(
        &server,
        TlsSettings {
            pins: vec![leaf.pin()],
            ca_file: Some(ca_file),
        },
    )
    .version()
    .await
    .unwrap();
}

#[tokio::test]
async fn ca_signed_with_ca_file_and_wrong_pin_is_refused() {
    let ca = TestCa::new("mispd test CA");
    let leaf = ca.leaf(&["localhost"]);
    let server = MispServer::start(&leaf).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_pem(dir.path(), "ca.pem");
    let wrong = ca.leaf(&["localhost"]).pin();
    let f = tls_failure(&client(
        &server,
        TlsSettings {
            pins: vec![wrong],
            ca_file: Some(ca_file),
        },
    ))
    .await;
    assert!(matches!(f, TlsFailure::PinMismatch { .. }), "{f:?}");
}

#[tokio::test]
async fn unknown_issuer_without_pin_or_ca_file_is_refused() {
    let ca = TestCa::new("private CA");
    let server = MispServer::start(&ca.leaf(&["localhost"])).await;
    let f = tls_failure(&client(&server, TlsSettings::default())).await;
    assert_eq!(f, TlsFailure::UnknownIssuer);
    assert!(f.to_string().contains("ca-file"), "{f}");
    let self_signed = certs::self_signed(&["localhost"]);
    let server = MispServer::start(&self_signed).await;
    assert_eq!(
        tls_failure(&client(&server, TlsSettings::default())).await,
        TlsFailure::UnknownIssuer
    );
}

#[tokio::test]
async fn tls12_only_server_is_accepted() {
    let cert = certs::self_signed(&["localhost"]);
    let server = MispServer::start_with(&cert, &[&rustls::version::TLS12]).await;
    client(&server, pins(&[cert.pin()]))
        .version()
        .await
        .unwrap();
}

#[tokio::test]
async fn fetch_pin_reports_the_servers_pin_and_chain_status() {
    let cert = certs::self_signed(&["localhost"]);
    let server = MispServer::start(&cert).await;
    let report = mispd::tls::fetch_pin(&server.url(), None, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(report.pin, cert.pin());
    assert_eq!(report.verification_error, Some(TlsFailure::UnknownIssuer));
    let info = report.info.as_ref().unwrap();
    assert!(info.subject.contains("CN=localhost"), "{}", info.subject);
    assert!(info.not_after > info.not_before);
    let text = report.to_string();
    assert!(
        text.contains(&cert.pin().to_string()) && text.contains("NOT valid"),
        "{text}"
    );

    let ca = TestCa::new("mispd test CA");
    let server = MispServer::start(&ca.leaf(&["localhost"])).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_pem(dir.path(), "ca.pem");
    let report = mispd::tls::fetch_pin(&server.url(), Some(&ca_file), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(report.verification_error, None);
    assert!(report.info.unwrap().issuer.contains("mispd test CA"));
}

#[test]
fn pin_matches_openssl() {
    // The pin must equal what the openssl pipeline in docs/security.md prints.
    let cert = certs::self_signed(&["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let pem = cert.write_pem(dir.path(), "c.pem");
    let script = format!(
        "openssl x509 -in {} -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
        pem.display()
    );
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let b64 = String::from_utf8(o.stdout).unwrap();
            assert_eq!(format!("sha256//{}", b64.trim()), cert.pin().to_string());
        }
        _ => eprintln!("openssl not available: pin cross-check skipped"),
    }
}

/// Kills the child process when the test ends, even on panic.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A server that only speaks an old TLS version: rustls cannot, so `openssl s_server`.
/// Returns `None` (and says so) if openssl is not installed.
async fn old_tls_server_error(flag: &str) -> Option<ClientError> {
    let cert = certs::self_signed(&["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = cert.write_pem_and_key(dir.path());
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = std::process::Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-www",
            flag,
            "-cipher",
            "DEFAULT@SECLEVEL=0",
            "-accept",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&crt)
        .arg("-key")
        .arg(&key)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let Ok(child) = child else {
        eprintln!("openssl not available: {flag} test skipped");
        return None;
    };
    let _guard = KillOnDrop(child);
    let mut up = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "openssl s_server {flag} did not start");
    let key = shared_key(ApiKey::from_secret(TEST_KEY.to_string().into()));
    let c = MispClient::new(
        &format!("https://localhost:{port}/"),
        &pins(&[cert.pin()]),
        Duration::from_secs(5),
        key,
        1 << 20,
    )
    .unwrap();
    Some(c.version().await.unwrap_err())
}

fn assert_old_tls_refused(err: Option<ClientError>) {
    let Some(err) = err else { return };
    match &err {
        ClientError::Tls {
            failure: TlsFailure::Handshake { .. },
            ..
        } => {}
        other => panic!("expected a handshake refusal, got {other:?}"),
    }
    assert!(err.to_string().contains("TLS 1.2 and 1.3 only"), "{err}");
}

#[tokio::test]
async fn tls10_only_server_is_refused() {
    assert_old_tls_refused(old_tls_server_error("-tls1").await);
}

#[tokio::test]
async fn tls11_only_server_is_refused() {
    assert_old_tls_refused(old_tls_server_error("-tls1_1").await);
}

#[tokio::test]
async fn pin_alone_trusts_a_ca_signed_leaf_but_pins_are_leaf_keys() {
    // Pin-only also covers a leaf from a private CA we were not given: the pin is the trust.
    let ca = TestCa::new("private CA");
    let leaf = ca.leaf(&["localhost"]);
    let server = MispServer::start(&leaf).await;
    client(&server, pins(&[leaf.pin()]))
        .version()
        .await
        .unwrap();
    // A CA's pin is not a leaf pin: mispd compares the server's own key only, like curl.
    let f = tls_failure(&client(&server, pins(&[ca.pin()]))).await;
    assert!(matches!(f, TlsFailure::PinMismatch { .. }), "{f:?}");
}

#[tokio::test]
async fn plain_http_server_is_a_handshake_failure() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    let cert = certs::self_signed(&["localhost"]);
    let key = shared_key(ApiKey::from_secret(TEST_KEY.to_string().into()));
    let c = MispClient::new(
        &format!("https://localhost:{port}/"),
        &pins(&[cert.pin()]),
        Duration::from_secs(3),
        key,
        1 << 20,
    )
    .unwrap();
    match c.version().await {
        Err(ClientError::Tls {
            failure: TlsFailure::Handshake { detail },
            ..
        }) => {
            assert!(!detail.is_empty());
        }
        other => panic!("expected a handshake failure, got {other:?}"),
    }
}

#[tokio::test]
async fn test_double_helpers_give_a_working_pinned_client() {
    let server = MispServer::start_self_signed().await;
    let v = server.client().version().await.unwrap();
    assert_eq!(v.version, "2.5.1");
    let dir = tempfile::tempdir().unwrap();
    let ca = server.write_cert_pem(dir.path(), "misp.pem");
    let key = shared_key(ApiKey::from_secret(TEST_KEY.to_string().into()));
    let c = MispClient::new(
        &server.url(),
        &TlsSettings {
            pins: vec![],
            ca_file: Some(ca),
        },
        Duration::from_secs(5),
        key,
        1 << 20,
    )
    .unwrap();
    c.version().await.unwrap();
}
