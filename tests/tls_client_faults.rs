//! The MISP client against a misbehaving MISP: every failure is typed, bounded in time and
//! size, and never carries the API key.
mod common;

use common::certs;
use common::server::{Fault, MispServer, RecordingServer, TEST_KEY};
use mispd::credentials::ApiKey;
use mispd::misp::{shared_key, ClientError, FeedClient, FeedError, MispClient};
use mispd::tls::TlsSettings;
use serde_json::json;
use std::time::{Duration, Instant};

async fn setup() -> (MispServer, MispClient) {
    let cert = certs::self_signed(&["localhost"]);
    let server = MispServer::start(&cert).await;
    let tls = TlsSettings {
        pins: vec![cert.pin()],
        ca_file: None,
    };
    let key = shared_key(ApiKey::from_secret(TEST_KEY.to_string().into()));
    let client =
        MispClient::new(&server.url(), &tls, Duration::from_secs(2), key, 4 << 20).unwrap();
    (server, client)
}

fn query(page: usize, limit: usize) -> serde_json::Value {
    json!({"returnFormat": "json", "attribute_timestamp": 0, "deleted": [0, 1], "limit": limit, "page": page,
           "order": "Attribute.id asc", "includeEventUuid": 1, "includeEventTags": 1})
}

fn assert_no_key(err: &ClientError) {
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(TEST_KEY), "key leaked: {text}");
        assert!(!text.contains(&TEST_KEY[..12]), "key prefix leaked: {text}");
    }
}

#[tokio::test]
async fn sends_key_and_json_headers_and_decodes_real_rows() {
    let (server, client) = setup().await;
    let n = server.load_fixture_attributes();
    let page = client.search_page(&query(1, 1000)).await.unwrap();
    assert_eq!(page.returned, n);
    assert_eq!(page.bad_rows, 0);
    assert_eq!(page.attributes.len(), n);
    let req = &server.requests()[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/attributes/restSearch");
    assert_eq!(req.header("authorization").as_deref(), Some(TEST_KEY));
    assert_eq!(req.header("accept").as_deref(), Some("application/json"));
    assert_eq!(
        req.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        req.header("host").as_deref(),
        Some(format!("localhost:{}", server.port()).as_str())
    );
    assert_eq!(req.json()["order"], "Attribute.id asc");
    // Infoblox rows: event uuid and inherited event tags came through.
    let infoblox = page
        .attributes
        .iter()
        .find(|a| a.event_uuid.as_deref() == Some(common::INFOBLOX_EVENTS[0]))
        .unwrap();
    assert!(
        infoblox.tags.iter().any(|t| &**t == "infoblox"),
        "{:?}",
        infoblox.tags
    );
    assert!(infoblox.to_ids);
    // Nothing that formats the client or the key shows it.
    let shown = format!(
        "{client:?} {:?} {}",
        client.key().load(),
        client.key().load()
    );
    assert!(!shown.contains(TEST_KEY), "{shown}");
}

#[tokio::test]
async fn pages_and_result_count() {
    let (server, client) = setup().await;
    let n = server.load_fixture_attributes();
    assert!(n > 10);
    let p1 = client.search_page(&query(1, 10)).await.unwrap();
    assert_eq!(p1.returned, 10);
    assert_eq!(p1.result_count, Some(11), "full page: row count + 1");
    let last = client
        .search_page(&query(n.div_ceil(10), 10))
        .await
        .unwrap();
    assert_eq!(last.returned, n - 10 * (n.div_ceil(10) - 1));
    let past = client
        .search_page(&query(n.div_ceil(10) + 1, 10))
        .await
        .unwrap();
    assert_eq!(past.returned, 0);
}

#[tokio::test]
async fn soft_delete_and_malformed_rows() {
    let (server, client) = setup().await;
    server.load_fixture_attributes();
    let uuid = client.search_page(&query(1, 1)).await.unwrap().attributes[0]
        .uuid
        .clone();
    assert!(server.soft_delete(&uuid));
    let all = client.search_page(&query(1, 1000)).await.unwrap();
    assert!(all.attributes.iter().any(|a| a.uuid == uuid && a.deleted));
    let bad = server.inject_malformed();
    let page = client.search_page(&query(1, 1000)).await.unwrap();
    assert_eq!(page.bad_rows, bad);
    assert_eq!(page.returned, page.attributes.len() + bad);
}

#[tokio::test]
async fn poisoned_values_arrive_untouched_for_validation() {
    // The client is transport only: it must hand the poison to validation, not drop it.
    let (server, client) = setup().await;
    let uuids = server.poison();
    let page = client.search_page(&query(1, 100)).await.unwrap();
    assert_eq!(page.attributes.len(), uuids.len());
    assert!(page.attributes.iter().any(|a| &*a.value == "0.0.0.0/0"));
}

#[tokio::test]
async fn wrong_key_is_auth_failed_and_rotation_works() {
    let (server, client) = setup().await;
    server.set_key("SomeOtherKey0123456789abcdefghijklmnopqr");
    let err = client.version().await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::AuthFailed {
                key_expired: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("Authentication failed"));
    assert_no_key(&err);
    // SIGHUP-style rotation: swap the key, no new client.
    client.key().store(std::sync::Arc::new(ApiKey::from_secret(
        "SomeOtherKey0123456789abcdefghijklmnopqr"
            .to_string()
            .into(),
    )));
    client.version().await.unwrap();
    server.state.lock().unwrap().key_expired = true;
    let err = client.version().await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::AuthFailed {
                key_expired: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("expired"));
}

#[tokio::test]
async fn hostile_403_echoing_the_key_is_redacted() {
    let (server, client) = setup().await;
    server.set_fault(Fault::Forbidden);
    let err = client.search_page(&query(1, 10)).await.unwrap_err();
    assert!(matches!(err, ClientError::AuthFailed { .. }), "{err:?}");
    assert!(err.to_string().contains("***"), "{err}");
    assert_no_key(&err);
}

#[tokio::test]
async fn redirect_to_another_host_is_not_followed() {
    let (server, client) = setup().await;
    let other = RecordingServer::start().await;
    let target = format!(
        "http://127.0.0.1:{}/steal?key={TEST_KEY}",
        other.addr.port()
    );
    server.set_fault(Fault::RedirectTo(target));
    let err = client.search_page(&query(1, 10)).await.unwrap_err();
    let ClientError::Redirect {
        status: 302,
        location,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert!(location.contains("127.0.0.1"));
    assert_no_key(&err);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(other.connections(), 0, "the redirect target was contacted");
    server.set_fault(Fault::Redirect302Login);
    let err = client.version().await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Redirect { location, .. } if location.ends_with("/users/login")),
        "{err:?}"
    );
    assert!(err.to_string().contains("/users/login"));
}

#[tokio::test]
async fn each_fault_is_a_typed_error_without_the_key() {
    let (server, client) = setup().await;
    server.load_fixture_attributes();
    type Check = fn(&ClientError) -> bool;
    let cases: Vec<(Fault, Check)> = vec![
        (Fault::Status500Json, |e| {
            matches!(e, ClientError::Server { status: 500, .. })
        }),
        (Fault::Html200, |e| {
            matches!(e, ClientError::NotJson { status: 200, .. })
        }),
        (Fault::TruncatedBody, |e| {
            matches!(e, ClientError::InvalidJson { .. })
        }),
        (Fault::InvalidJson, |e| {
            matches!(e, ClientError::InvalidJson { .. })
        }),
        (Fault::ResetMidBody, |e| {
            matches!(e, ClientError::Transport { .. })
        }),
        (
            Fault::RateLimited { reset_secs: 42 },
            |e| matches!(e, ClientError::RateLimited { retry_after } if *retry_after == Duration::from_secs(42)),
        ),
    ];
    for (fault, check) in cases {
        server.set_fault(fault.clone());
        let err = client.search_page(&query(1, 100)).await.unwrap_err();
        assert!(check(&err), "{fault:?}: {err:?}");
        assert_no_key(&err);
    }
    server.set_fault(Fault::Empty);
    assert_eq!(
        client.search_page(&query(1, 100)).await.unwrap().returned,
        0
    );
}

#[tokio::test]
async fn a_server_that_dribbles_is_cut_off_by_the_deadline() {
    let (server, client) = setup().await;
    server.load_fixture_attributes();
    server.set_fault(Fault::Slow(Duration::from_millis(50)));
    let start = Instant::now();
    let err = client.search_page(&query(1, 100)).await.unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(
        err.to_string().contains("did not answer within 2s"),
        "{err}"
    );
}

#[tokio::test]
async fn oversized_response_is_refused() {
    let cert = certs::self_signed(&["localhost"]);
    let server = MispServer::start(&cert).await;
    server.load_fixture_attributes();
    let tls = TlsSettings {
        pins: vec![cert.pin()],
        ca_file: None,
    };
    let key = shared_key(ApiKey::from_secret(TEST_KEY.to_string().into()));
    let client = MispClient::new(&server.url(), &tls, Duration::from_secs(2), key, 2000).unwrap();
    let err = client.search_page(&query(1, 1000)).await.unwrap_err();
    assert!(
        matches!(err, ClientError::TooLarge { limit: 2000, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn connection_refused_is_a_connect_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cert = certs::self_signed(&["localhost"]);
    let tls = TlsSettings {
        pins: vec![cert.pin()],
        ca_file: None,
    };
    let key = shared_key(ApiKey::from_secret(TEST_KEY.to_string().into()));
    let client = MispClient::new(
        &format!("https://127.0.0.1:{port}/"),
        &tls,
        Duration::from_secs(2),
        key,
        1 << 20,
    )
    .unwrap();
    let err = client.version().await.unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
}

#[tokio::test]
async fn https_feed_and_directory_feed_agree() {
    let cert = certs::self_signed(&["localhost"]);
    let server = MispServer::start(&cert).await;
    server.load_fixture_feed();
    let tls = TlsSettings {
        pins: vec![cert.pin()],
        ca_file: None,
    };
    let https = FeedClient::new(&server.feed_url(), &tls, Duration::from_secs(5), 8 << 20).unwrap();
    let dir = FeedClient::new(
        common::fixture_path("feed-infoblox").to_str().unwrap(),
        &TlsSettings::default(),
        Duration::from_secs(5),
        8 << 20,
    )
    .unwrap();
    let m1 = https.manifest().await.unwrap();
    let m2 = dir.manifest().await.unwrap();
    assert_eq!(m1, m2);
    assert_eq!(m1.len(), 3);
    assert_eq!(m1[common::INFOBLOX_EVENTS[0]], 1_722_272_240);
    for uuid in common::INFOBLOX_EVENTS {
        let a = https.event(uuid).await.unwrap();
        let b = dir.event(uuid).await.unwrap();
        assert_eq!(a, b);
        assert!(!a.attributes.is_empty());
        assert!(a
            .attributes
            .iter()
            .all(|x| x.event_uuid.as_deref() == Some(uuid)));
        assert!(a.attributes.iter().all(|x| x.event_published == Some(true)));
        assert!(a
            .attributes
            .iter()
            .all(|x| x.tags.iter().any(|t| &**t == "infoblox")));
    }
    // No API key goes to a feed.
    assert!(server
        .requests()
        .iter()
        .all(|r| r.header("authorization").is_none()));
    assert!(matches!(
        https.event("../manifest").await,
        Err(FeedError::BadUuid { .. })
    ));
    assert!(matches!(
        https.event("00000000-0000-4000-8000-000000000000").await,
        Err(FeedError::EventMissing { .. })
    ));
    assert!(matches!(
        FeedClient::new("http://example.org/feed/", &tls, Duration::from_secs(1), 1),
        Err(FeedError::BadLocation { .. })
    ));
}

#[tokio::test]
async fn feed_file_holding_another_event_is_refused() {
    let server = MispServer::start_self_signed().await;
    server.load_fixture_feed();
    let [a, b, _] = common::INFOBLOX_EVENTS;
    {
        let mut s = server.state.lock().unwrap();
        let other = s.feed[&format!("{b}.json")].clone();
        s.feed.insert(format!("{a}.json"), other);
        s.feed.insert(
            "manifest.json".into(),
            bytes::Bytes::from_static(b"<html>oops</html>"),
        );
    }
    let feed = FeedClient::new(
        &server.feed_url(),
        &server.pinned_tls(),
        Duration::from_secs(5),
        8 << 20,
    )
    .unwrap();
    let err = feed.event(a).await.unwrap_err();
    assert!(
        matches!(&err, FeedError::Invalid { detail, .. } if detail.contains(b)),
        "{err:?}"
    );
    let err = feed.manifest().await.unwrap_err();
    assert!(
        matches!(
            err,
            FeedError::Invalid { .. } | FeedError::Client(ClientError::NotJson { .. })
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn key_expiration_and_skipped_count_headers_are_reported() {
    let server = MispServer::start_self_signed().await;
    server.load_fixture_attributes();
    {
        let mut s = server.state.lock().unwrap();
        s.key_expiration = Some("2027-01-31T00:00:00+00:00".into());
        s.skipped_count = Some(3);
    }
    let page = server.client().search_page(&query(1, 5)).await.unwrap();
    assert_eq!(
        page.key_expires.as_deref(),
        Some("2027-01-31T00:00:00+00:00")
    );
    assert_eq!(page.skipped_by_server, 3);
    assert_eq!(
        server
            .client()
            .version()
            .await
            .unwrap()
            .key_expires
            .as_deref(),
        Some("2027-01-31T00:00:00+00:00")
    );
}

#[tokio::test]
async fn scoped_faults_hit_only_the_chosen_page_or_requests() {
    let server = MispServer::start_self_signed().await;
    server.load_fixture_attributes();
    let client = server.client();
    server.set_fault_scoped(Fault::TruncatedBody, common::server::FaultScope::Page(2));
    client.search_page(&query(1, 5)).await.unwrap();
    let err = client.search_page(&query(2, 5)).await.unwrap_err();
    assert!(matches!(err, ClientError::InvalidJson { .. }), "{err:?}");
    client.search_page(&query(3, 5)).await.unwrap();
    server.set_fault_scoped(Fault::Status500Json, common::server::FaultScope::Times(1));
    assert!(matches!(
        client.version().await,
        Err(ClientError::Server { status: 500, .. })
    ));
    client.version().await.unwrap();
    // Hard delete: gone without a trace.
    let first = client.search_page(&query(1, 1)).await.unwrap().attributes[0]
        .uuid
        .clone();
    assert!(server.hard_delete(&first));
    let all = client.search_page(&query(1, 1000)).await.unwrap();
    assert!(all.attributes.iter().all(|a| a.uuid != first));
}

#[tokio::test]
async fn a_server_that_never_finishes_the_handshake_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            conns.push(tcp); // accept, then say nothing
        }
    });
    let cert = certs::self_signed(&["localhost"]);
    let tls = TlsSettings {
        pins: vec![cert.pin()],
        ca_file: None,
    };
    let key = shared_key(ApiKey::from_secret(TEST_KEY.to_string().into()));
    let client = MispClient::new(
        &format!("https://localhost:{port}/"),
        &tls,
        Duration::from_secs(1),
        key,
        1 << 20,
    )
    .unwrap();
    let start = Instant::now();
    let err = client.version().await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(3));
    held.abort();
}

#[tokio::test]
async fn https_feed_is_pinned_too() {
    let server = MispServer::start_self_signed().await;
    server.load_fixture_feed();
    let wrong = TlsSettings {
        pins: vec![certs::self_signed(&["localhost"]).pin()],
        ca_file: None,
    };
    let feed =
        FeedClient::new(&server.feed_url(), &wrong, Duration::from_secs(5), 8 << 20).unwrap();
    let err = feed.manifest().await.unwrap_err();
    assert!(
        matches!(
            err,
            FeedError::Client(ClientError::Tls {
                failure: mispd::tls::TlsFailure::PinMismatch { .. },
                ..
            })
        ),
        "{err:?}"
    );
    assert!(server.requests().is_empty());
}
