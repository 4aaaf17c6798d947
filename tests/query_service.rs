//! The query service on a real Unix socket in a temporary directory: endpoints, limits, peer
//! credentials, exports (checked with `nft` and `named-checkzone`: see `consumers`), changes.

mod consumers;

use mispd::index::{Index, WarninglistHit};
use mispd::model::{
    Indicator, Kind, Provenance, RejectReason, Rejection, SourceState, SourceStatus,
};
use mispd::query::{self, client, HumanDuration, Settings};
use mispd::state::{AdminCommand, Shared, View, WarninglistOracle};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};

fn ind(value: &str, kind: Kind, misp_type: &str, source: &str, attr: &str) -> Indicator {
    Indicator {
        value: value.into(),
        kind,
        provenance: Provenance {
            source: source.into(),
            event_uuid: Some("5f1a0c3e-1111-4000-8000-000000000001".into()),
            attribute_uuid: attr.into(),
            misp_type: misp_type.into(),
            category: "Network activity".into(),
            tags: Arc::from(vec![Arc::<str>::from("tlp:green")]),
            timestamp: 1_700_000_000,
            to_ids: true,
        },
        notes: Vec::new(),
    }
}

fn sample() -> Vec<Indicator> {
    let a = "5f1a0c3e-0000-4000-8000-0000000000a";
    vec![
        ind(
            "evil.example",
            Kind::Domain,
            "domain",
            "circl",
            &format!("{a}1"),
        ),
        ind(
            "evil.example",
            Kind::Domain,
            "domain",
            "botvrij",
            &format!("{a}2"),
        ),
        ind(
            "host.bad.example",
            Kind::Hostname,
            "hostname",
            "circl",
            &format!("{a}3"),
        ),
        ind("192.0.2.7", Kind::Ip, "ip-dst", "circl", &format!("{a}4")),
        ind(
            "10.0.0.0/8",
            Kind::Cidr,
            "ip-dst",
            "circl",
            &format!("{a}5"),
        ),
        ind("10.1.2.3", Kind::Ip, "ip-dst", "botvrij", &format!("{a}6")),
        ind(
            "2001:db8::/32",
            Kind::Cidr,
            "ip-dst",
            "circl",
            &format!("{a}7"),
        ),
        ind("2001:db8::5", Kind::Ip, "ip-dst", "circl", &format!("{a}8")),
        ind(
            "2a00:1450::1",
            Kind::Ip,
            "ip-src",
            "circl",
            &format!("{a}9"),
        ),
        ind(
            "https://phish.example/login",
            Kind::Url,
            "url",
            "circl",
            &format!("{a}a"),
        ),
        ind(
            "d41d8cd98f00b204e9800998ecf8427e",
            Kind::Hash,
            "md5",
            "circl",
            &format!("{a}b"),
        ),
        ind(
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            Kind::Hash,
            "sha256",
            "botvrij",
            &format!("{a}c"),
        ),
    ]
}

fn view(generation: u64, indicators: Vec<Indicator>) -> View {
    let mut ok = SourceStatus::new("circl", "misp-feed");
    ok.state = SourceState::Ok;
    let mut stale = SourceStatus::new("botvrij", "misp-feed");
    stale.state = SourceState::Degraded;
    let rej = |value: &str, source: &str, at: i64| Rejection {
        source: source.into(),
        value: value.into(),
        misp_type: "ip-dst".into(),
        event_uuid: None,
        attribute_uuid: "u".into(),
        reason: RejectReason {
            code: "bogon".into(),
            detail: "private address".into(),
        },
        at,
    };
    View {
        generation,
        index: Arc::new(Index::build(indicators)),
        sources: vec![ok, stale],
        quarantine: Arc::new(vec![
            rej("127.0.0.1", "circl", 1),
            rej("192.168.0.1", "botvrij", 2),
            rej("10.255.0.1", "circl", 3),
        ]),
        warninglists: None,
    }
}

struct Server {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), query::QueryError>>,
}

impl Server {
    async fn start(edit: impl FnOnce(&mut Settings), initial: View) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings {
            socket: dir.path().join("run/query.sock"),
            ..Settings::default()
        };
        edit(&mut settings);
        settings.check().unwrap();
        let (tx, mut rx) = mpsc::channel::<AdminCommand>(4);
        tokio::spawn(async move {
            let mut parked = Vec::new();
            while let Some(AdminCommand::Release { source, reply }) = rx.recv().await {
                if source == "stuck" {
                    // A supervisor that never answers: the request must time out.
                    parked.push(reply);
                    continue;
                }
                let answer = if source == "circl" {
                    Ok(format!("released the held change of {source}"))
                } else {
                    Err(format!("{source} has no held change"))
                };
                let _ = reply.send(answer);
            }
        });
        let shared = Shared::new(initial, tx);
        let listener = query::bind(&settings).unwrap();
        let (stop, stop_rx) = watch::channel(false);
        let socket = settings.socket.clone();
        let task = tokio::spawn(query::serve(listener, shared.clone(), settings, stop_rx));
        Server {
            _dir: dir,
            socket,
            shared,
            stop,
            task,
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let (status, body) = client::get(&self.socket, path).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    async fn text(&self, path: &str) -> (u16, String) {
        let (status, body) = client::get(&self.socket, path).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, body) = client::post(&self.socket, path, body).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

async fn lookup(s: &Server, value: &str) -> Value {
    let (status, body) = s
        .get(&format!("/v1/lookup?value={}", client::encode(value)))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn matched(body: &Value) -> Vec<(String, String)> {
    body["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["indicator"].as_str().unwrap().to_string(),
                m["match"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

#[tokio::test]
async fn lookups_follow_the_matching_rules() {
    let s = Server::start(|_| {}, view(1, sample())).await;

    let body = lookup(&s, "www.Evil.Example.").await;
    assert_eq!(body["value"], "www.Evil.Example.");
    assert_eq!(body["listed"], true);
    assert_eq!(matched(&body), vec![pair("evil.example", "subdomain")]);
    let m = &body["matches"][0];
    assert_eq!(m["type"], "domain");
    let sources: Vec<&str> = m["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, vec!["circl", "botvrij"]);
    let src = &m["sources"][0];
    assert_eq!(src["event_uuid"], "5f1a0c3e-1111-4000-8000-000000000001");
    assert_eq!(
        src["attribute_uuid"],
        "5f1a0c3e-0000-4000-8000-0000000000a1"
    );
    assert_eq!(src["category"], "Network activity");
    assert_eq!(src["tags"], json!(["tlp:green"]));
    assert_eq!(src["timestamp"], 1_700_000_000);
    assert_eq!(src["to_ids"], true);
    assert!(m.get("notes").is_none());

    assert_eq!(
        matched(&lookup(&s, "evil.example").await),
        vec![pair("evil.example", "exact")]
    );
    assert_eq!(
        matched(&lookup(&s, "10.1.2.3").await),
        vec![pair("10.1.2.3", "exact"), pair("10.0.0.0/8", "cidr")]
    );
    assert_eq!(
        matched(&lookup(&s, "2001:0DB8::1").await),
        vec![pair("2001:db8::/32", "cidr")]
    );
    assert_eq!(
        matched(&lookup(&s, "HTTPS://phish.example:443/login").await),
        vec![pair("https://phish.example/login", "exact")]
    );
    assert_eq!(
        matched(&lookup(&s, "http://cdn.evil.example/payload.exe").await),
        vec![pair("evil.example", "url")]
    );
    assert_eq!(
        matched(&lookup(&s, "D41D8CD98F00B204E9800998ECF8427E").await),
        vec![pair("d41d8cd98f00b204e9800998ecf8427e", "exact")]
    );
    assert!(matched(&lookup(&s, "sub.host.bad.example").await).is_empty());
    let body = lookup(&s, "good.example").await;
    assert_eq!(body["listed"], false);
    assert_eq!(body["matches"], json!([]));
    s.stop().await;
}

struct Resolvers;
impl WarninglistOracle for Resolvers {
    fn hits(&self, value: &str, out: &mut Vec<WarninglistHit>) {
        if value == "192.0.2.7" {
            out.push(WarninglistHit {
                name: "List of known public DNS resolvers".into(),
                category: "false-positive",
            });
        }
    }
}

#[tokio::test]
async fn warninglist_hits_are_reported_when_an_oracle_is_wired() {
    let mut v = view(1, sample());
    v.warninglists = Some(Arc::new(Resolvers));
    let s = Server::start(|_| {}, v).await;
    let body = lookup(&s, "192.0.2.7").await;
    assert_eq!(
        body["warninglists"],
        json!([{ "name": "List of known public DNS resolvers", "category": "false-positive" }])
    );
    assert!(lookup(&s, "evil.example")
        .await
        .get("warninglists")
        .is_none());
    s.stop().await;
}

#[tokio::test]
async fn batches_and_their_limits() {
    let s = Server::start(
        |c| {
            c.max_batch = 3;
            c.max_body_bytes = 200;
        },
        view(1, sample()),
    )
    .await;
    let (status, body) = s
        .post(
            "/v1/lookup",
            &json!({ "values": ["evil.example", "good.example", "10.9.9.9"] }),
        )
        .await;
    assert_eq!(status, 200);
    let listed: Vec<bool> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["listed"].as_bool().unwrap())
        .collect();
    assert_eq!(listed, vec![true, false, true]);

    let (status, body) = s
        .post("/v1/lookup", &json!({ "values": ["a", "b", "c", "d"] }))
        .await;
    assert_eq!(status, 413);
    assert_eq!(body["code"], "too-many-values");

    let big: Vec<String> = (0..3).map(|_| "x".repeat(100)).collect();
    let (status, body) = s.post("/v1/lookup", &json!({ "values": big })).await;
    assert_eq!(status, 413);
    assert_eq!(body["code"], "body-too-large");

    // Chunked bodies have no declared length: the limit still holds while reading.
    let mut raw = UnixStream::connect(&s.socket).await.unwrap();
    let chunk = "a".repeat(150);
    let req = format!(
        "POST /v1/lookup HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len(),
        chunk.len()
    );
    raw.write_all(req.as_bytes()).await.unwrap();
    let reply = read_reply(&mut raw).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");

    let (status, body) = s.post("/v1/lookup", &json!({ "value": "x" })).await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "bad-json");
    s.stop().await;

    // Defaults: a large batch within the limits goes through.
    let s = Server::start(|_| {}, view(1, sample())).await;
    // Large batches are split across the cores: the answers still come whole and in order.
    let values: Vec<String> = (0..10_000)
        .map(|i| match i % 4 {
            0 => "evil.example".to_string(),
            1 => format!("host-{i}.evil.example"),
            2 => "10.9.9.9".to_string(),
            _ => format!("host-{i}.unlisted.example"),
        })
        .collect();
    let (status, body) = s.post("/v1/lookup", &json!({ "values": values })).await;
    assert_eq!(status, 200);
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 10_000);
    for (i, (r, v)) in results.iter().zip(&values).enumerate() {
        assert_eq!(r["value"], v.as_str(), "answer {i} out of order");
        assert_eq!(r["listed"], i % 4 != 3, "answer {i}: {r}");
    }
    let (_, one) = s.get("/v1/lookup?value=host-1.evil.example").await;
    assert_eq!(
        results[1], one,
        "a batch answer is the single lookup's answer"
    );
    let (status, body) = s
        .get(&format!("/v1/lookup?value={}", "a".repeat(9000)))
        .await;
    assert_eq!(
        (status, body["code"].as_str().unwrap()),
        (400, "value-too-long")
    );
    let (status, body) = s
        .post(
            "/v1/lookup",
            &json!({ "values": ["ok.example", "a.".repeat(5000)] }),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str().unwrap()),
        (400, "value-too-long")
    );
    s.stop().await;
}

async fn read_reply(stream: &mut UnixStream) -> String {
    let mut buf = vec![0u8; 65536];
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head.lines().find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    });
                    if len.is_some_and(|n| body.len() >= n) {
                        break;
                    }
                }
            }
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn status_health_quarantine_and_errors() {
    let s = Server::start(|_| {}, View::default()).await;
    let (status, body) = s.get("/v1/health").await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "starting");

    s.shared.publish(view(1, sample()));
    let (status, body) = s.get("/v1/health").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "degraded");
    assert_eq!(
        body["degraded"],
        json!([{ "name": "botvrij", "state": "degraded" }])
    );

    s.shared.set_serving(false);
    let (status, body) = s.get("/v1/health").await;
    assert_eq!(
        (status, body["code"].as_str().unwrap()),
        (503, "not-serving")
    );
    s.shared.set_serving(true);

    let (status, body) = s.get("/v1/status").await;
    assert_eq!(status, 200);
    assert_eq!(body["generation"], 1);
    assert_eq!(body["indicators"], 12);
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["sources"][0]["name"], "circl");
    assert_eq!(body["sources"][1]["state"], "degraded");
    assert!(body["sources"][0].get("last-success").is_some());

    let (_, body) = s.get("/v1/quarantine").await;
    assert_eq!(body["total"], 3);
    let values: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_str().unwrap())
        .collect();
    assert_eq!(values, vec!["10.255.0.1", "192.168.0.1", "127.0.0.1"]);
    let (_, body) = s.get("/v1/quarantine?source=circl&limit=1").await;
    assert_eq!(body["total"], 2);
    assert_eq!(body["items"][0]["value"], "10.255.0.1");
    assert_eq!(body["items"][0]["reason"]["code"], "bogon");
    assert_eq!(body["items"].as_array().unwrap().len(), 1);

    for (path, code, status) in [
        ("/v1/lookup", "missing-value", 400),
        ("/v1/nothing", "not-found", 404),
        ("/v1/quarantine?limit=many", "bad-limit", 400),
        ("/v1/indicators?format=csv", "bad-format", 400),
        ("/v1/changes?wait=soon", "bad-wait", 400),
    ] {
        let (st, body) = s.get(path).await;
        assert_eq!(
            (st, body["code"].as_str().unwrap()),
            (status, code),
            "{path}"
        );
        assert!(body["error"].is_string());
    }
    let (st, body) = s.post("/v1/status", &json!({})).await;
    assert_eq!(
        (st, body["code"].as_str().unwrap()),
        (405, "method-not-allowed")
    );

    // A malformed request line gets an HTTP error, not a hang.
    let mut raw = UnixStream::connect(&s.socket).await.unwrap();
    raw.write_all(b"NOT HTTP AT ALL\r\n\r\n").await.unwrap();
    let reply = read_reply(&mut raw).await;
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 400"),
        "{reply}"
    );
    s.stop().await;
}

#[tokio::test]
async fn release_goes_to_the_supervisor() {
    // The test runs as root or as the daemon's own user, so release is allowed.
    let s = Server::start(|_| {}, view(1, sample())).await;
    let (status, body) = s.post("/v1/release/circl", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "released the held change of circl");
    let (status, body) = s.post("/v1/release/other", &json!({})).await;
    assert_eq!(status, 409);
    assert_eq!(body["error"], "other has no held change");
    let (status, body) = s.post("/v1/release/bad%20name", &json!({})).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = s.get("/v1/release/circl").await;
    assert_eq!(status, 405);
    s.stop().await;

    let s = Server::start(
        |c| c.request_timeout = HumanDuration(Duration::from_millis(300)),
        view(1, sample()),
    )
    .await;
    let (status, body) = s.post("/v1/release/stuck", &json!({})).await;
    assert_eq!((status, body["code"].as_str().unwrap()), (503, "timeout"));
    s.stop().await;
}

#[tokio::test]
async fn shutdown_ends_long_polls_and_returns() {
    let s = Server::start(|_| {}, view(1, sample())).await;
    let (_, first) = s.get("/v1/changes").await;
    let cursor = first["cursor"].as_str().unwrap().to_string();
    let socket = s.socket.clone();
    let poll = tokio::spawn(async move {
        client::get(&socket, &format!("/v1/changes?since={cursor}&wait=120")).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    s.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "long polls end at shutdown"
    );
    let (status, _) = poll.await.unwrap().unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn peers_not_allowed_are_refused_with_json() {
    let me = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    let s = Server::start(|c| c.allowed_uids = vec![me + 4242], view(1, sample())).await;
    let (status, body) = s.get("/v1/health").await;
    assert_eq!(status, 403);
    assert_eq!(body["code"], "forbidden");
    s.stop().await;

    let s = Server::start(|c| c.allowed_uids = vec![me], view(1, sample())).await;
    assert_eq!(s.get("/v1/health").await.0, 200);
    s.stop().await;

    // Group membership admits too (our primary group, given by number).
    let gid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::gid(&m))
        .unwrap();
    let s = Server::start(
        |c| {
            c.allowed_uids = vec![me + 4242];
            c.allowed_groups = vec![gid.to_string()];
        },
        view(1, sample()),
    )
    .await;
    assert_eq!(s.get("/v1/health").await.0, 200);
    s.stop().await;

    let s = Server::start(
        |c| c.allowed_groups = vec![(gid + 4242).to_string()],
        view(1, sample()),
    )
    .await;
    assert_eq!(s.get("/v1/health").await.0, 403);
    let (_, metrics) = s.text("/metrics").await;
    assert!(
        metrics.is_empty() || metrics.contains("forbidden"),
        "denied peers get no metrics"
    );
    s.stop().await;
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let s = Server::start(
        |c| c.header_timeout = HumanDuration(Duration::from_millis(300)),
        view(1, sample()),
    )
    .await;
    let mut raw = UnixStream::connect(&s.socket).await.unwrap();
    raw.write_all(b"GET /v1/health HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf))
        .await
        .expect("the server closes a slow connection")
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(started.elapsed() >= Duration::from_millis(250));

    // A connection that sends nothing at all is closed too (it would hold a slot forever).
    let mut idle = UnixStream::connect(&s.socket).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("the server closes a silent connection")
        .unwrap_or(0);
    assert!(n == 0 || buf.starts_with(b"HTTP/1.1 408"));

    // And so is a keep-alive connection left idle after a request.
    let mut kept = UnixStream::connect(&s.socket).await.unwrap();
    kept.write_all(b"GET /v1/health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_reply(&mut kept).await.starts_with("HTTP/1.1 200"));
    let n = tokio::time::timeout(Duration::from_secs(5), kept.read(&mut buf))
        .await
        .expect("the server closes an idle keep-alive connection")
        .unwrap_or(0);
    assert_eq!(n, 0);
    s.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_get_503() {
    let s = Server::start(|c| c.max_connections = 2, view(1, sample())).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = UnixStream::connect(&s.socket).await.unwrap();
        // A finished keep-alive request proves the connection holds a slot.
        c.write_all(b"GET /v1/health HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_reply(&mut c).await.starts_with("HTTP/1.1 200"));
        held.push(c);
    }
    let mut third = UnixStream::connect(&s.socket).await.unwrap();
    third
        .write_all(b"GET /v1/health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let reply = read_reply(&mut third).await;
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("\"code\":\"busy\""), "{reply}");
    drop(held);
    // Slots come back when clients leave.
    let mut ok = false;
    for _ in 0..50 {
        if client::get(&s.socket, "/v1/health").await.unwrap().0 == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok);
    s.stop().await;
}

#[tokio::test]
async fn exports_in_every_format() {
    let s = Server::start(|_| {}, view(7, sample())).await;
    let (status, plain) = s.text("/v1/indicators").await;
    assert_eq!(status, 200);
    assert_eq!(plain.lines().count(), 11);
    assert!(plain.lines().any(|l| l == "evil.example"));

    let (_, only) = s.text("/v1/indicators?format=plain&type=md5").await;
    assert_eq!(only, "d41d8cd98f00b204e9800998ecf8427e\n");
    let (_, only) = s
        .text("/v1/indicators?format=plain&type=hash&source=botvrij")
        .await;
    assert_eq!(
        only,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
    );

    let (_, lines) = s.text("/v1/indicators?format=json&type=domain").await;
    let line: Value = serde_json::from_str(lines.trim()).unwrap();
    assert_eq!(
        line,
        json!({ "value": "evil.example", "kind": "domain", "type": "domain", "sources": ["circl", "botvrij"] })
    );

    let (_, nft) = s.text("/v1/indicators?format=nft&table=mispd_test").await;
    assert!(
        nft.contains("add element inet mispd_test mispd_test_v4 { 192.0.2.7, 10.0.0.0/8 }"),
        "{nft}"
    );
    assert!(
        !nft.contains("10.1.2.3"),
        "addresses inside a listed network are left out: {nft}"
    );
    assert!(
        nft.contains("add element inet mispd_test mispd_test_v6 { 2a00:1450::1, 2001:db8::/32 }"),
        "{nft}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("set.nft");
    std::fs::write(&path, &nft).unwrap();
    consumers::nft_accepts(&path);

    let (_, domains) = s.text("/v1/indicators?format=suricata").await;
    assert_eq!(domains, "ZXZpbC5leGFtcGxl\naG9zdC5iYWQuZXhhbXBsZQ==\n");
    let (_, sha) = s
        .text("/v1/indicators?format=suricata&dataset=sha256")
        .await;
    assert_eq!(sha.lines().count(), 1);
    let (_, v4) = s.text("/v1/indicators?format=suricata&dataset=ipv4").await;
    assert_eq!(v4, "10.1.2.3\n192.0.2.7\n");

    let (_, zeek) = s.text("/v1/indicators?format=zeek").await;
    let mut lines = zeek.lines();
    assert_eq!(
        lines.next().unwrap(),
        "#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\tmeta.url"
    );
    assert!(
        zeek.contains("\n10.0.0.0/8\tIntel::SUBNET\tcircl\t"),
        "{zeek}"
    );
    assert!(zeek.contains("\nevil.example\tIntel::DOMAIN\tbotvrij,circl\tMISP domain event 5f1a0c3e-1111-4000-8000-000000000001\t-\n"), "{zeek}");
    assert!(
        zeek.contains("\nphish.example/login\tIntel::URL\t"),
        "{zeek}"
    );
    assert!(lines.all(|l| l.split('\t').count() == 5));

    let (_, zone) = s.text("/v1/indicators?format=rpz").await;
    assert!(
        zone.contains("\nevil.example CNAME .\n*.evil.example CNAME .\n"),
        "{zone}"
    );
    assert!(zone.contains("\nhost.bad.example CNAME .\n"));
    assert!(!zone.contains("*.host.bad.example"));
    assert!(zone.contains(" 7 3600 600 86400 300"));
    let path = dir.path().join("rpz.zone");
    std::fs::write(&path, &zone).unwrap();
    consumers::named_accepts("rpz.mispd", &path);
    s.stop().await;
}

#[tokio::test]
async fn large_exports_stream_completely() {
    let many: Vec<Indicator> = (0..50_000u32)
        .map(|i| {
            ind(
                &format!("h{i}.bad.example"),
                Kind::Hostname,
                "hostname",
                "circl",
                "5f1a0c3e-0000-4000-8000-0000000000aa",
            )
        })
        .collect();
    let s = Server::start(|_| {}, view(1, many)).await;
    let (status, plain) = s.text("/v1/indicators?format=plain").await;
    assert_eq!(status, 200);
    assert_eq!(plain.lines().count(), 50_000);
    // The streaming client writes the same bytes as they arrive.
    let mut out = Vec::new();
    let status = client::get_to(&s.socket, "/v1/indicators?format=plain", &mut out)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8(out).unwrap(), plain);
    // An error answer is never written where the export goes (a firewall file, say).
    let mut out = Vec::new();
    match client::get_to(&s.socket, "/v1/indicators?format=csv", &mut out).await {
        Err(client::ClientError::Refused { status, message }) => {
            assert_eq!(status, 400);
            assert!(message.contains("format"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(out.is_empty());
    // A reset of /v1/changes streams the whole set as one JSON document.
    let (status, reset) = s.get("/v1/changes").await;
    assert_eq!(status, 200);
    assert_eq!(reset["reset"], true);
    assert_eq!(reset["added"].as_array().unwrap().len(), 50_000);
    assert_eq!(
        reset["added"][0],
        json!({ "value": "h0.bad.example", "kind": "hostname" })
    );
    s.stop().await;
}

#[tokio::test]
async fn changes_report_deltas_resets_and_wake_long_polls() {
    let s = Server::start(|_| {}, view(1, sample())).await;
    let (_, first) = s.get("/v1/changes").await;
    assert_eq!(first["reset"], true);
    assert_eq!(first["added"].as_array().unwrap().len(), 11);
    assert_eq!(first["removed"], json!([]));
    let cursor = first["cursor"].as_str().unwrap().to_string();

    let (_, same) = s.get(&format!("/v1/changes?since={cursor}")).await;
    assert_eq!(same["reset"], false);
    assert_eq!(same["added"], json!([]));
    assert_eq!(same["cursor"], cursor.as_str());

    // A long poll wakes when the next generation is published.
    let socket = s.socket.clone();
    let c = cursor.clone();
    let poll = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let (status, body) = client::get(&socket, &format!("/v1/changes?since={c}&wait=30"))
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice::<Value>(&body).unwrap(),
            started.elapsed(),
        )
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A publication that changes no indicator (a status update, same generation) does not
    // end the poll.
    let mut status_only = view(1, sample());
    status_only.index = s.shared.load().index.clone();
    s.shared.publish(status_only);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !poll.is_finished(),
        "a status-only publication ended the long poll"
    );
    let mut next = sample();
    next.retain(|i| &*i.value != "192.0.2.7");
    next.push(ind(
        "new.example",
        Kind::Domain,
        "domain",
        "circl",
        "5f1a0c3e-0000-4000-8000-0000000000ff",
    ));
    s.shared.publish(view(2, next));
    let (status, body, took) = poll.await.unwrap();
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(10));
    assert_eq!(body["reset"], false);
    assert_eq!(
        body["added"],
        json!([{ "value": "new.example", "kind": "domain" }])
    );
    assert_eq!(
        body["removed"],
        json!([{ "value": "192.0.2.7", "kind": "ip" }])
    );
    assert_ne!(body["cursor"], cursor.as_str());

    let (_, unknown) = s.get("/v1/changes?since=abc-1").await;
    assert_eq!(unknown["reset"], true);
    assert_eq!(unknown["added"].as_array().unwrap().len(), 11);

    // An unchanged long poll returns when its wait is over.
    let now = body["cursor"].as_str().unwrap();
    let started = std::time::Instant::now();
    let (_, idle) = s.get(&format!("/v1/changes?since={now}&wait=1")).await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(idle["added"], json!([]));
    s.stop().await;
}

#[tokio::test]
async fn metrics_count_lookups() {
    let mut v = view(3, sample());
    let circl = &mut v.sources[0];
    (circl.syncs_ok, circl.syncs_failed) = (4, 1);
    circl.last_sync_seconds = Some(2.5);
    circl.last_success_epoch = Some(mispd::model::now_epoch() - 60);
    v.sources[1].held = Some(mispd::model::HeldChange {
        added: 0,
        removed: 900,
        current: 1000,
        reason: "removes 90 %".into(),
        since: 1,
    });
    let s = Server::start(|_| {}, v).await;
    lookup(&s, "evil.example").await;
    lookup(&s, "good.example").await;
    let (status, text) = s.text("/metrics").await;
    assert_eq!(status, 200);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, &text).unwrap();
    consumers::promtool_accepts(&file);
    for line in [
        "mispd_syncs_total{source=\"circl\",outcome=\"ok\"} 4",
        "mispd_syncs_total{source=\"circl\",outcome=\"failed\"} 1",
        "mispd_syncs_total{source=\"botvrij\",outcome=\"ok\"} 0",
        "mispd_sync_duration_seconds{source=\"circl\"} 2.5",
        "mispd_quarantined{source=\"circl\",reason=\"bogon\"} 2",
        "mispd_quarantined{source=\"botvrij\",reason=\"bogon\"} 1",
        "mispd_held_change_values{source=\"botvrij\",change=\"removed\"} 900",
        "mispd_held_change_values{source=\"circl\",change=\"removed\"} 0",
        "mispd_snapshot_write_failures_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line} in {text}");
    }
    let age: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix("mispd_data_age_seconds{source=\"circl\"} "))
        .unwrap_or_else(|| panic!("no data age in {text}"))
        .parse()
        .unwrap();
    assert!((60..120).contains(&age), "{age}");
    assert!(
        !text.contains("mispd_data_age_seconds{source=\"botvrij\"}"),
        "never synced: no age"
    );
    assert!(
        !text.contains("mispd_snapshot_age_seconds"),
        "no snapshot was written: {text}"
    );
    assert!(text.contains("\nmispd_generation 3\n"), "{text}");
    assert!(text.contains("\nmispd_lookups_total 2\n"), "{text}");
    assert!(text.contains("\nmispd_lookup_hits_total 1\n"), "{text}");
    assert!(
        text.contains("mispd_indicators{source=\"circl\",type=\"domain\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("mispd_source_state{source=\"botvrij\",state=\"degraded\"} 1"));
    assert!(
        text.contains("mispd_request_duration_seconds_bucket{le=\"+Inf\"} 2\n"),
        "{text}"
    );
    // glibc's own heap figures: this test process has a heap in use.
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        let heap = |state: &str| -> u64 {
            let key = format!("mispd_heap_bytes{{state=\"{state}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&key))
                .unwrap_or_else(|| panic!("no {key} in {text}"))
                .parse()
                .unwrap()
        };
        assert!(heap("in_use") > 100_000, "{text}");
        let _ = heap("free");
    }
    s.stop().await;
}

#[test]
fn bind_replaces_stale_sockets_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.sock");
    let settings = Settings {
        socket: path.clone(),
        socket_mode: "0600".into(),
        ..Settings::default()
    };
    let first = query::bind(&settings).unwrap();
    drop(first); // leaves the socket file behind, as a crash would
    let second = query::bind(&settings).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A socket that still answers (a second mispd started by hand) is left alone.
    let err = query::bind(&settings).unwrap_err();
    assert!(
        err.to_string().contains("another process is serving"),
        "{err}"
    );
    assert!(
        std::os::unix::net::UnixStream::connect(&path).is_ok(),
        "still served"
    );
    drop(second);
    let _third = query::bind(&settings).unwrap();

    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "keep me").unwrap();
    let err = query::bind(&Settings {
        socket: file.clone(),
        ..Settings::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(
        std::fs::read_to_string(Path::new(&file)).unwrap(),
        "keep me"
    );
    assert!(query::from_systemd().is_none());
}
