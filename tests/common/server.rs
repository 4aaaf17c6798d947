//! A MISP test double: a real TLS (rustls) HTTP/1.1 server that answers like MISP does
//! (see /work/shared/docs/MISP-API-NOTES.md), with state and fault modes the test controls.

use super::certs::TestCert;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mispd::credentials::ApiKey;
use mispd::misp::{shared_key, MispClient};
use mispd::tls::{Pin, TlsSettings};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The default key the double accepts.
pub const TEST_KEY: &str = "TestKey0123456789abcdefghijklmnopqrstuvw";

/// How the double misbehaves.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    Ok,
    /// 500 with MISP's JSON error body.
    Status500Json,
    /// 200 with an HTML login page.
    Html200,
    /// 302 to /users/login on this server.
    Redirect302Login,
    /// 302 to this URL (another host).
    RedirectTo(String),
    /// Valid HTTP, but the JSON stops halfway.
    TruncatedBody,
    /// Complete body that is not valid JSON.
    InvalidJson,
    /// Headers at once, then the body one byte per interval.
    Slow(Duration),
    /// Content-Length for the whole body, half of it, then the connection is dropped.
    ResetMidBody,
    /// 429 with X-Rate-Limit-Reset.
    RateLimited {
        reset_secs: u64,
    },
    /// 403 whatever the key; the message echoes the key received (a hostile server).
    Forbidden,
    /// Every restSearch page is empty.
    Empty,
}

/// Which requests a fault applies to.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultScope {
    /// Every request until changed.
    Always,
    /// The next `n` requests, then back to [`Fault::Ok`].
    Times(usize),
    /// Only restSearch requests for this page (other requests are served normally).
    Page(u64),
}

/// A request as the double saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// The double's state; tests change it through [`MispServer::state`] or the helpers.
pub struct State {
    pub key: String,
    pub key_expired: bool,
    /// Attributes in restSearch shape. `_event_tags` (names) is a hidden field used for
    /// `includeEventTags`.
    pub attributes: Vec<Value>,
    pub fault: Fault,
    pub fault_scope: FaultScope,
    /// Without `order` MISP has no ORDER BY: when set, the double then returns rows in reverse
    /// id order, so a client that forgets `order` sees pages shift.
    pub reverse_without_order: bool,
    pub requests: Vec<Recorded>,
    /// Files served under /feed/ (name -> bytes), no key needed.
    pub feed: BTreeMap<String, Bytes>,
    pub version: String,
    pub key_expiration: Option<String>,
    pub skipped_count: Option<usize>,
    next_id: u64,
}

pub struct MispServer {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    /// Pin of the server's certificate.
    pub pin: Pin,
    /// The server's leaf certificate as PEM (usable as a ca-file when self-signed).
    pub cert_pem: String,
    task: JoinHandle<()>,
}

impl Drop for MispServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        Value::Bool(b) => Some(*b as i64),
        _ => None,
    }
}

fn truthy(v: Option<&Value>) -> bool {
    v.and_then(as_i64).is_some_and(|n| n != 0)
}

impl MispServer {
    /// Starts on 127.0.0.1:0 with TLS 1.2 and 1.3.
    pub async fn start(cert: &TestCert) -> MispServer {
        Self::start_with(cert, &[&rustls::version::TLS13, &rustls::version::TLS12]).await
    }

    pub async fn start_with(
        cert: &TestCert,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> MispServer {
        Self::start_full(cert, versions, 0).await
    }

    /// Starts on 127.0.0.1:`port` (0: any free port), e.g. to come back on the port a daemon
    /// is configured with after "the server is gone". Retries the bind for up to 5 s.
    pub async fn start_at(cert: &TestCert, port: u16) -> MispServer {
        Self::start_full(
            cert,
            &[&rustls::version::TLS13, &rustls::version::TLS12],
            port,
        )
        .await
    }

    async fn start_full(
        cert: &TestCert,
        versions: &[&'static rustls::SupportedProtocolVersion],
        port: u16,
    ) -> MispServer {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(cert.chain.clone(), cert.key())
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("bind 127.0.0.1:{port}: {e}"),
            }
        };
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            key: TEST_KEY.to_string(),
            key_expired: false,
            attributes: Vec::new(),
            fault: Fault::Ok,
            fault_scope: FaultScope::Always,
            reverse_without_order: false,
            requests: Vec::new(),
            feed: BTreeMap::new(),
            version: "2.5.1".into(),
            key_expiration: None,
            skipped_count: None,
            next_id: 1,
        }));
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let st = st.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service =
                        hyper::service::service_fn(move |req| handle(st.clone(), addr, req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        MispServer {
            addr,
            state,
            pin: cert.pin(),
            cert_pem: cert.cert_pem.clone(),
            task,
        }
    }

    /// A server with a fresh self-signed certificate for `localhost` and `127.0.0.1`.
    pub async fn start_self_signed() -> MispServer {
        Self::start(&super::certs::self_signed(&["localhost", "127.0.0.1"])).await
    }

    /// TLS settings that pin this server (no ca-file).
    pub fn pinned_tls(&self) -> TlsSettings {
        TlsSettings {
            pins: vec![self.pin],
            ca_file: None,
        }
    }

    /// Writes the server certificate to `dir/name` (PEM), e.g. for a config's `ca-file`.
    pub fn write_cert_pem(&self, dir: &std::path::Path, name: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.cert_pem).unwrap();
        path
    }

    /// A client for this server: pinned, [`TEST_KEY`], 5 s deadline, 16 MiB cap.
    pub fn client(&self) -> MispClient {
        let key = shared_key(ApiKey::from_secret(TEST_KEY.to_string().into()));
        MispClient::new(
            &self.url(),
            &self.pinned_tls(),
            Duration::from_secs(5),
            key,
            16 << 20,
        )
        .unwrap()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `https://localhost:PORT/` (certificates are made for `localhost`).
    pub fn url(&self) -> String {
        format!("https://localhost:{}/", self.port())
    }

    /// The static feed root on this server.
    pub fn feed_url(&self) -> String {
        format!("https://localhost:{}/feed/", self.port())
    }

    pub fn set_fault(&self, fault: Fault) {
        let mut s = self.state.lock().unwrap();
        s.fault = fault;
        s.fault_scope = FaultScope::Always;
    }

    /// A fault limited to some requests (e.g. only page 3 is truncated).
    pub fn set_fault_scoped(&self, fault: Fault, scope: FaultScope) {
        let mut s = self.state.lock().unwrap();
        s.fault = fault;
        s.fault_scope = scope;
    }

    /// Hard delete: the attribute vanishes without a trace (no deleted flag, no timestamp).
    pub fn hard_delete(&self, uuid: &str) -> bool {
        let mut s = self.state.lock().unwrap();
        let before = s.attributes.len();
        s.attributes.retain(|a| a["uuid"] != uuid);
        s.attributes.len() != before
    }

    pub fn set_key(&self, key: &str) {
        self.state.lock().unwrap().key = key.to_string();
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.state.lock().unwrap().requests.clear();
    }

    /// Replaces all attributes (ids, timestamps and flags filled in when missing).
    pub fn set_attributes(&self, attrs: Vec<Value>) {
        let mut s = self.state.lock().unwrap();
        s.attributes.clear();
        for a in attrs {
            push_attr(&mut s, a);
        }
    }

    pub fn add_attribute(&self, attr: Value) {
        push_attr(&mut self.state.lock().unwrap(), attr);
    }

    /// Adds several attributes at once (one lock: no sync sees half of them).
    pub fn add_attributes(&self, attrs: Vec<Value>) {
        let mut s = self.state.lock().unwrap();
        for a in attrs {
            push_attr(&mut s, a);
        }
    }

    /// Soft-deletes several attributes at once (one lock: a mass delete no sync sees half of).
    /// Returns how many were found.
    pub fn soft_delete_many(&self, uuids: &[String]) -> usize {
        let mut s = self.state.lock().unwrap();
        let mut n = 0;
        for a in s.attributes.iter_mut() {
            if a["uuid"]
                .as_str()
                .is_some_and(|u| uuids.iter().any(|x| x == u))
            {
                let ts = as_i64(&a["timestamp"]).unwrap_or(0).max(now() - 1) + 1;
                a["deleted"] = json!(true);
                a["timestamp"] = json!(ts.to_string());
                n += 1;
            }
        }
        n
    }

    pub fn attribute_count(&self) -> usize {
        self.state.lock().unwrap().attributes.len()
    }

    /// Soft delete like MISP: `deleted` set and the timestamp bumped.
    pub fn soft_delete(&self, uuid: &str) -> bool {
        let mut s = self.state.lock().unwrap();
        let Some(a) = s.attributes.iter_mut().find(|a| a["uuid"] == uuid) else {
            return false;
        };
        let ts = as_i64(&a["timestamp"]).unwrap_or(0).max(now() - 1) + 1;
        a["deleted"] = json!(true);
        a["timestamp"] = json!(ts.to_string());
        true
    }

    /// Changes a value and bumps the timestamp (an edit).
    pub fn edit_value(&self, uuid: &str, value: &str) -> bool {
        let mut s = self.state.lock().unwrap();
        let Some(a) = s.attributes.iter_mut().find(|a| a["uuid"] == uuid) else {
            return false;
        };
        let ts = as_i64(&a["timestamp"]).unwrap_or(0).max(now() - 1) + 1;
        a["value"] = json!(value);
        a["timestamp"] = json!(ts.to_string());
        true
    }

    /// Adds the attributes of the fixtures: misp-stix collections, the demisto restSearch
    /// body and the Infoblox feed events (as restSearch rows). Returns how many.
    pub fn load_fixture_attributes(&self) -> usize {
        let attrs = super::fixture_attributes();
        let n = attrs.len();
        let mut s = self.state.lock().unwrap();
        for a in attrs {
            push_attr(&mut s, a);
        }
        n
    }

    /// Serves the Infoblox fixture feed (manifest + 3 events) under /feed/.
    pub fn load_fixture_feed(&self) {
        let mut s = self.state.lock().unwrap();
        for (name, data) in super::fixture_feed_files() {
            s.feed.insert(name, Bytes::from(data));
        }
    }

    /// Injects poisoned attributes a compromised MISP could send: networks that block
    /// everything, private and loopback ranges, this server's own address, `localhost`.
    /// Returns their uuids.
    pub fn poison(&self) -> Vec<String> {
        let own = self.addr.ip().to_string();
        let values = [
            ("ip-dst", "0.0.0.0/0".to_string()),
            ("ip-dst", "::/0".to_string()),
            ("ip-src", "10.0.0.0/8".to_string()),
            ("ip-dst", "127.0.0.1".to_string()),
            ("ip-dst", own.clone()),
            ("ip-dst|port", format!("{own}|{}", self.port())),
            ("domain", "localhost".to_string()),
            ("hostname", "localhost".to_string()),
            ("domain", "com".to_string()),
            ("url", format!("https://localhost:{}/", self.port())),
            ("ip-dst", "192.168.0.0/16".to_string()),
            ("ip-dst", "0.0.0.0".to_string()),
        ];
        let mut uuids = Vec::new();
        let mut s = self.state.lock().unwrap();
        for (i, (t, v)) in values.iter().enumerate() {
            let uuid = format!("00000000-0000-4000-8000-{:012x}", 0xbad0 + i);
            push_attr(
                &mut s,
                json!({"uuid": uuid, "type": t, "category": "Network activity", "value": v, "to_ids": true,
                       "event_uuid": "00000000-0000-4000-8000-00000000bad0"}),
            );
            uuids.push(uuid);
        }
        uuids
    }

    /// Injects malformed rows (wrong field types, missing uuid) next to good ones. Returns how
    /// many bad rows were added.
    pub fn inject_malformed(&self) -> usize {
        let mut s = self.state.lock().unwrap();
        let bad = [
            json!({"type": "domain", "value": "no-uuid.example", "to_ids": true}),
            json!({"uuid": "00000000-0000-4000-8000-0000000bad01", "type": "domain", "value": ["array"], "to_ids": true}),
            json!({"uuid": "00000000-0000-4000-8000-0000000bad02", "type": "domain", "value": "x.example", "to_ids": "perhaps"}),
            json!({"uuid": "00000000-0000-4000-8000-0000000bad03", "type": "domain", "value": "y.example", "timestamp": {"a": 1}}),
        ];
        let n = bad.len();
        for b in bad {
            let id = s.next_id;
            s.next_id += 1;
            let mut b = b;
            b["id"] = json!(id.to_string());
            if b.get("timestamp").is_none() {
                b["timestamp"] = json!(now().to_string());
            }
            s.attributes.push(b);
        }
        n
    }
}

fn push_attr(s: &mut State, mut a: Value) {
    let id = s.next_id;
    s.next_id += 1;
    let obj = a.as_object_mut().expect("attribute is a JSON object");
    obj.entry("id").or_insert_with(|| json!(id.to_string()));
    obj.entry("event_id").or_insert_with(|| json!("1"));
    obj.entry("object_id").or_insert_with(|| json!("0"));
    obj.entry("category")
        .or_insert_with(|| json!("Network activity"));
    obj.entry("to_ids").or_insert(json!(false));
    obj.entry("deleted").or_insert(json!(false));
    obj.entry("distribution").or_insert(json!("5"));
    obj.entry("timestamp")
        .or_insert_with(|| json!(now().to_string()));
    obj.entry("event_uuid")
        .or_insert(json!("5f0c8f1e-0000-4000-8000-000000000001"));
    s.attributes.push(a);
}

/// A body that yields frames sent by a task (for slow and broken responses).
struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.get_mut()
            .rx
            .poll_recv(cx)
            .map(|o| o.map(|r| r.map(Frame::data)))
    }
}

type Out = Response<BoxBody<Bytes, std::io::Error>>;

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Out {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(
            Full::new(body.into())
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap()
}

fn misp_error(status: StatusCode, msg: &str, url: &str) -> Out {
    let body = json!({"name": msg, "message": msg, "url": url});
    full(status, "application/json", body.to_string())
}

fn redirect(location: &str) -> Out {
    Response::builder()
        .status(StatusCode::FOUND)
        .header("location", location)
        .header("content-type", "text/html; charset=UTF-8")
        .body(
            Full::new(Bytes::new())
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap()
}

async fn handle(
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    req: Request<Incoming>,
) -> Result<Out, std::io::Error> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let (fault, key, key_expired) = {
        let mut s = state.lock().unwrap();
        s.requests.push(Recorded {
            method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            headers: parts.headers.clone(),
            body: body.clone(),
        });
        let applies = match s.fault_scope {
            FaultScope::Always => true,
            FaultScope::Times(0) => false,
            FaultScope::Times(n) => {
                s.fault_scope = FaultScope::Times(n - 1);
                true
            }
            FaultScope::Page(p) => {
                let page = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v.get("page").and_then(as_i64))
                    .unwrap_or(1)
                    .max(1) as u64;
                path == "/attributes/restSearch" && page == p
            }
        };
        let fault = if applies { s.fault.clone() } else { Fault::Ok };
        (fault, s.key.clone(), s.key_expired)
    };
    let header = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let login = format!("https://localhost:{}/users/login", addr.port());

    match &fault {
        Fault::Status500Json => {
            return Ok(misp_error(StatusCode::INTERNAL_SERVER_ERROR, "An Internal Error Has Occurred.", &path))
        }
        Fault::Html200 => {
            return Ok(full(
                StatusCode::OK,
                "text/html; charset=UTF-8",
                "<!DOCTYPE html><html><head><title>Users - MISP</title></head><body><form>Login</form></body></html>",
            ))
        }
        Fault::Redirect302Login => return Ok(redirect(&login)),
        Fault::RedirectTo(to) => return Ok(redirect(to)),
        Fault::RateLimited { reset_secs } => {
            let mut r = misp_error(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded.", &path);
            let h = r.headers_mut();
            h.insert("x-rate-limit-limit", HeaderValue::from_static("10"));
            h.insert("x-rate-limit-remaining", HeaderValue::from_static("0"));
            h.insert("x-rate-limit-reset", HeaderValue::from_str(&reset_secs.to_string()).unwrap());
            return Ok(r);
        }
        Fault::Forbidden => {
            let got = header("authorization").unwrap_or_default();
            return Ok(misp_error(
                StatusCode::FORBIDDEN,
                &format!("Authentication failed. Please make sure you pass the API key of an API enabled user along in the Authorization header. (got {got})"),
                &path,
            ));
        }
        _ => {}
    }

    let (status, mut headers, data) = if let Some(name) = path.strip_prefix("/feed/") {
        let file = state.lock().unwrap().feed.get(name).cloned();
        match file {
            Some(d) => (
                StatusCode::OK,
                vec![("content-type", "application/json".to_string())],
                d,
            ),
            None => (
                StatusCode::NOT_FOUND,
                vec![("content-type", "text/plain".into())],
                Bytes::from("404: Not Found"),
            ),
        }
    } else {
        let accept_json = header("accept").is_some_and(|a| a.contains("application/json"));
        if !accept_json {
            return Ok(redirect(&login));
        }
        // X-MISP-AUTH wins over Authorization; a Basic value is skipped (MISP's AppController).
        let presented = header("x-misp-auth")
            .or_else(|| header("authorization").filter(|a| !a.starts_with("Basic")))
            .unwrap_or_default();
        if presented != key {
            return Ok(misp_error(
                StatusCode::FORBIDDEN,
                "Authentication failed. Please make sure you pass the API key of an API enabled user along in the Authorization header.",
                &path,
            ));
        }
        if key_expired {
            return Ok(misp_error(
                StatusCode::FORBIDDEN,
                "Auth key is expired",
                &path,
            ));
        }
        match (parts.method.as_str(), path.as_str()) {
            ("GET", "/servers/getVersion") => {
                let v = state.lock().unwrap().version.clone();
                let body = json!({"version": v, "pymisp_recommended_version": v, "perm_sync": true,
                    "perm_sighting": true, "perm_galaxy_editor": false, "request_encoding": ["gzip", "br"],
                    "filter_sightings": true, "uuid": "b9c8d7e6-0000-4000-8000-00000000abcd"});
                (
                    StatusCode::OK,
                    vec![("content-type", "application/json".into())],
                    Bytes::from(body.to_string()),
                )
            }
            ("POST", "/attributes/restSearch") => {
                let json_ct =
                    header("content-type").is_some_and(|c| c.contains("application/json"));
                // Without Content-Type MISP ignores the body and runs an unfiltered search.
                let filters: Value = if json_ct {
                    serde_json::from_slice(&body).unwrap_or(json!({}))
                } else {
                    json!({})
                };
                if json_ct && body.is_empty() {
                    return Ok(misp_error(StatusCode::BAD_REQUEST, "Either specify the search terms in the url, or POST a json with the filter parameters.", &path));
                }
                rest_search(&state, &filters, fault == Fault::Empty)
            }
            _ => (
                StatusCode::NOT_FOUND,
                vec![("content-type", "application/json".into())],
                Bytes::from(
                    json!({"name": "Not Found", "message": "Not Found", "url": path}).to_string(),
                ),
            ),
        }
    };
    {
        let s = state.lock().unwrap();
        if let Some(exp) = &s.key_expiration {
            headers.push(("x-auth-key-expiration", exp.clone()));
        }
    }

    let mut builder = Response::builder().status(status);
    for (k, v) in &headers {
        builder = builder.header(*k, v.as_str());
    }
    let resp = match fault {
        Fault::TruncatedBody => {
            let half = data.slice(..data.len() / 2);
            builder
                .body(Full::new(half).map_err(|never| match never {}).boxed())
                .unwrap()
        }
        Fault::InvalidJson => {
            let mut broken = data.to_vec();
            if let Some(p) = broken.iter().position(|b| *b == b':') {
                broken[p] = b';';
            }
            builder
                .body(
                    Full::new(Bytes::from(broken))
                        .map_err(|never| match never {})
                        .boxed(),
                )
                .unwrap()
        }
        Fault::Slow(interval) => {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tokio::spawn(async move {
                for i in 0..data.len() {
                    if tx.send(Ok(data.slice(i..i + 1))).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(interval).await;
                }
            });
            builder.body(ChannelBody { rx }.boxed()).unwrap()
        }
        Fault::ResetMidBody => {
            let (tx, rx) = tokio::sync::mpsc::channel(2);
            let len = data.len();
            tokio::spawn(async move {
                let _ = tx.send(Ok(data.slice(..len / 2))).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = tx.send(Err(std::io::Error::other("reset"))).await;
            });
            builder = builder.header("content-length", len.to_string());
            builder.body(ChannelBody { rx }.boxed()).unwrap()
        }
        _ => builder
            .body(Full::new(data).map_err(|never| match never {}).boxed())
            .unwrap(),
    };
    Ok(resp)
}

fn rest_search(
    state: &Arc<Mutex<State>>,
    f: &Value,
    empty: bool,
) -> (StatusCode, Vec<(&'static str, String)>, Bytes) {
    let s = state.lock().unwrap();
    let since = f.get("attribute_timestamp").and_then(as_i64);
    // deleted: absent or 0 = live only; 1 = deleted only; [0,1] = both (MISP/MISP#9437).
    let (live, dead) = match f.get("deleted") {
        None | Some(Value::Null) => (true, false),
        Some(Value::Array(a)) => {
            let has = |n: i64| a.iter().any(|v| as_i64(v) == Some(n));
            (has(0), has(1))
        }
        Some(v) if truthy(Some(v)) => (false, true),
        Some(_) => (true, false),
    };
    let mut rows: Vec<&Value> = s
        .attributes
        .iter()
        .filter(|a| {
            let deleted = a.get("deleted").and_then(|d| d.as_bool()).unwrap_or(false);
            (deleted && dead) || (!deleted && live)
        })
        .filter(|a| since.is_none_or(|t| a.get("timestamp").and_then(as_i64).unwrap_or(0) >= t))
        .collect();
    if f.get("order")
        .and_then(|o| o.as_str())
        .is_some_and(|o| o.starts_with("Attribute.id"))
    {
        rows.sort_by_key(|a| a.get("id").and_then(as_i64).unwrap_or(0));
        if f["order"].as_str().is_some_and(|o| o.ends_with("desc")) {
            rows.reverse();
        }
    } else if s.reverse_without_order {
        rows.sort_by_key(|a| std::cmp::Reverse(a.get("id").and_then(as_i64).unwrap_or(0)));
    }
    let limit = f.get("limit").and_then(as_i64).unwrap_or(0).max(0) as usize;
    let page = f.get("page").and_then(as_i64).unwrap_or(1).max(1) as usize;
    let rows: Vec<&Value> = if empty {
        Vec::new()
    } else if limit > 0 {
        rows.into_iter()
            .skip(limit * (page - 1))
            .take(limit)
            .collect()
    } else {
        rows
    };
    let include_uuid = truthy(f.get("includeEventUuid"));
    let include_tags = truthy(f.get("includeEventTags"));
    let out: Vec<Value> = rows
        .iter()
        .map(|a| {
            let mut a = (*a).clone();
            let obj = a.as_object_mut().unwrap();
            let event_tags = obj.remove("_event_tags");
            if !include_uuid {
                obj.remove("event_uuid");
            }
            if include_tags {
                if let Some(Value::Array(names)) = event_tags {
                    let tags = obj.entry("Tag").or_insert(json!([]));
                    if let Value::Array(t) = tags {
                        for n in names {
                            t.push(json!({"id": "1", "name": n, "colour": "#ffffff", "exportable": true, "inherited": 1}));
                        }
                    }
                }
            }
            a
        })
        .collect();
    // X-Result-Count is the page's row count, +1 when the page is full (MISP >= 2.4.166).
    let count = out.len() + usize::from(limit > 0 && out.len() == limit);
    let mut headers = vec![
        ("content-type", "application/json".to_string()),
        ("x-result-count", count.to_string()),
    ];
    if let Some(skipped) = s.skipped_count {
        headers.push(("x-skipped-elements-count", skipped.to_string()));
    }
    let body = json!({"response": {"Attribute": out}});
    (StatusCode::OK, headers, Bytes::from(body.to_string()))
}

/// A plain TCP listener that only records whether anything connected to it: the target of
/// the "redirect to another host" test.
pub struct RecordingServer {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Vec<u8>>>>,
    task: JoinHandle<()>,
}

impl Drop for RecordingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RecordingServer {
    pub async fn start() -> RecordingServer {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let rec = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf))
                    .await
                    .ok()
                    .and_then(|r| r.ok())
                    .unwrap_or(0);
                buf.truncate(n);
                rec.lock().unwrap().push(buf);
            }
        });
        RecordingServer {
            addr,
            received,
            task,
        }
    }

    pub fn connections(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}
