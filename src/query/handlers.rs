//! One connection and its requests: routing, the JSON endpoints, errors as JSON.

use super::batch::BatchValues;
use super::{encode, export, metrics, Settings};
use crate::state::{AdminCommand, Changes, Shared};
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::unix::UCred;
use tokio::sync::{watch, OwnedSemaphorePermit};

pub(crate) type Body = BoxBody<Bytes, Infallible>;
pub(crate) type Resp = Response<Body>;

/// Longest `wait` a `/v1/changes` long poll may ask for.
const MAX_WAIT: Duration = Duration::from_secs(300);
/// Longest value accepted in one lookup.
const MAX_VALUE_LEN: usize = 8192;

pub(crate) struct Ctx {
    pub shared: Arc<Shared>,
    /// Lets long polls end early when the daemon stops.
    pub shutdown: watch::Receiver<bool>,
    pub own_uid: Option<u32>,
    pub settings: Settings,
}

/// Serves one accepted connection until the client leaves or shutdown asks it to finish.
pub(crate) async fn connection(
    stream: tokio::net::UnixStream,
    peer: UCred,
    ctx: Arc<Ctx>,
    mut shutdown: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let svc_ctx = ctx.clone();
    let service = service_fn(move |req| {
        let ctx = svc_ctx.clone();
        async move { Ok::<_, Infallible>(handle(req, &ctx, peer).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.settings.header_timeout.0)
        // Bounds the per-connection read buffer (request heads); bodies are limited separately.
        .max_buf_size(64 * 1024)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "query connection ended with an error");
                }
                break;
            }
            changed = shutdown.changed(), if !stopping => {
                if changed.is_err() || *shutdown.borrow() {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

async fn handle(req: Request<Incoming>, ctx: &Ctx, peer: UCred) -> Resp {
    let start = Instant::now();
    let m = ctx.shared.metrics();
    m.requests.fetch_add(1, Relaxed);
    let mut budget = ctx.settings.request_timeout.0;
    if req.uri().path() == "/v1/changes" {
        budget += MAX_WAIT;
    }
    let resp = match tokio::time::timeout(budget, route(req, ctx, peer)).await {
        Ok(r) => r,
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took longer than query.request-timeout",
        ),
    };
    if resp.status().is_client_error() || resp.status().is_server_error() {
        m.request_errors.fetch_add(1, Relaxed);
    }
    m.observe_latency(start.elapsed().as_micros() as u64);
    resp
}

async fn route(req: Request<Incoming>, ctx: &Ctx, peer: UCred) -> Resp {
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    // The hot path first, without copying the path: one lookup is a few microseconds in all.
    if get && req.uri().path() == "/v1/lookup" {
        return lookup_get(&req, ctx);
    }
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match path.as_str() {
        // GET and HEAD of /v1/lookup were answered above.
        "/v1/lookup" if method == Method::POST => lookup_post(req, ctx).await,
        "/v1/lookup" => not_allowed("GET, POST"),
        "/v1/status" if get => status(ctx),
        "/v1/health" if get => health(ctx),
        "/v1/quarantine" if get => quarantine(&req, ctx),
        "/v1/indicators" if get => export::respond(&ctx.shared.load(), &params(&req)),
        "/v1/changes" if get => changes(&req, ctx).await,
        "/metrics" if get => metrics::respond(ctx),
        "/v1/status" | "/v1/health" | "/v1/quarantine" | "/v1/indicators" | "/v1/changes"
        | "/metrics" => not_allowed("GET"),
        p => match p.strip_prefix("/v1/release/") {
            Some(source) if method == Method::POST => release(source, ctx, peer).await,
            Some(_) => not_allowed("POST"),
            None => error(
                StatusCode::NOT_FOUND,
                "not-found",
                "no such endpoint; see docs/query-api.md",
            ),
        },
    }
}

pub(crate) fn params(req: &Request<Incoming>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub(crate) fn param<'p>(params: &'p [(String, String)], key: &str) -> Option<&'p str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

pub(crate) fn json_response(status: StatusCode, body: Vec<u8>) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Resp {
    match serde_json::to_vec(value) {
        Ok(b) => json_response(status, b),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("cannot encode the response: {e}"),
        ),
    }
}

pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Resp {
    let body = serde_json::json!({ "error": message, "code": code });
    json_response(status, body.to_string().into_bytes())
}

fn not_allowed(allow: &'static str) -> Resp {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        &format!("use {allow}"),
    );
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

fn count(ctx: &Ctx, lookups: usize, hits: usize) {
    let m = ctx.shared.metrics();
    m.lookups.fetch_add(lookups as u64, Relaxed);
    m.lookup_hits.fetch_add(hits as u64, Relaxed);
}

/// Why a lookup request was refused: the HTTP status, a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl BadRequest {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> BadRequest {
        BadRequest {
            status: status.as_u16(),
            code,
            message: message.into(),
        }
    }

    fn into_resp(self) -> Resp {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        error(status, self.code, &self.message)
    }
}

/// The value of `GET /v1/lookup?value=...` from the raw query string (without `?`).
/// The first `value` counts; it is borrowed from the query unless it had escapes to decode.
pub fn parse_lookup_query(query: &str) -> Result<Cow<'_, str>, BadRequest> {
    let value = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "value")
        .map(|(_, v)| v);
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return Err(BadRequest::new(
            StatusCode::BAD_REQUEST,
            "missing-value",
            "give the value to look up as ?value=...",
        ));
    };
    if value.len() > MAX_VALUE_LEN {
        return Err(BadRequest::new(
            StatusCode::BAD_REQUEST,
            "value-too-long",
            format!("the value is longer than {MAX_VALUE_LEN} bytes"),
        ));
    }
    Ok(value)
}

/// The values of a `POST /v1/lookup` body `{"values": [...]}`, at most `max_batch` of them.
pub fn parse_lookup_body(body: &[u8], max_batch: usize) -> Result<Vec<Cow<'_, str>>, BadRequest> {
    let batch: Batch<'_> = serde_json::from_slice(body).map_err(|e| {
        BadRequest::new(
            StatusCode::BAD_REQUEST,
            "bad-json",
            format!("expected {{\"values\": [\"...\"]}}: {e}"),
        )
    })?;
    if batch.values.len() > max_batch {
        return Err(BadRequest::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-many-values",
            format!(
                "{} values in one request; query.max-batch is {max_batch}",
                batch.values.len(),
            ),
        ));
    }
    if let Some(i) = batch.values.iter().position(|v| v.0.len() > MAX_VALUE_LEN) {
        return Err(BadRequest::new(
            StatusCode::BAD_REQUEST,
            "value-too-long",
            format!("value {i} is longer than {MAX_VALUE_LEN} bytes"),
        ));
    }
    Ok(batch.values.into_iter().map(|v| v.0).collect())
}

fn lookup_get(req: &Request<Incoming>, ctx: &Ctx) -> Resp {
    let value = match parse_lookup_query(req.uri().query().unwrap_or("")) {
        Ok(v) => v,
        Err(e) => return e.into_resp(),
    };
    let view = ctx.shared.load();
    let mut out = Vec::with_capacity(512);
    let listed = encode::write_lookup(&mut out, &view, &value);
    count(ctx, 1, usize::from(listed));
    json_response(StatusCode::OK, out)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch<'a> {
    #[serde(borrow)]
    values: Vec<BatchValue<'a>>,
}

/// serde borrows a `Cow<str>` only when it is a field of its own, never inside a `Vec`: without
/// this wrapper every value was copied into a `String`.
#[derive(serde::Deserialize)]
struct BatchValue<'a>(#[serde(borrow)] Cow<'a, str>);

async fn lookup_post(req: Request<Incoming>, ctx: &Ctx) -> Resp {
    let max = ctx.settings.max_body_bytes;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            &format!("the request body is larger than query.max-body-bytes ({max})"),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return too_large();
    }
    let body = match Limited::new(req.into_body(), max).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return too_large()
        }
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad-body",
                &format!("cannot read the request body: {e}"),
            )
        }
    };
    let values = match parse_lookup_body(&body, ctx.settings.max_batch) {
        Ok(v) => v,
        Err(e) => return e.into_resp(),
    };
    let view = ctx.shared.load();
    let n = values.len();
    let mut out = Vec::with_capacity(64 + n * ANSWER_BYTES);
    out.extend_from_slice(b"{\"results\":[");
    let hits = if n < PARALLEL_BATCH {
        encode::write_lookups(&mut out, &view, &values)
    } else {
        // Milliseconds of work: on the blocking pool, split across the cores, so this
        // connection's batch neither holds an async worker (other clients' requests would wait
        // behind it) nor waits for one core.
        let shared = Arc::new(BatchValues::new(&body, values));
        let parts = cores().clamp(1, 8).min(n / (PARALLEL_BATCH / 2));
        let per = n.div_ceil(parts);
        let tasks: Vec<_> = (0..parts)
            .map(|p| {
                let (shared, view) = (shared.clone(), view.clone());
                tokio::task::spawn_blocking(move || {
                    let part = shared.part(p * per, (p + 1) * per);
                    let mut out = Vec::with_capacity(part.len() * ANSWER_BYTES);
                    let hits = encode::write_lookups(&mut out, &view, &part);
                    (out, hits)
                })
            })
            .collect();
        let mut hits = 0;
        let mut written = false;
        for task in tasks {
            match task.await {
                Ok((part, h)) => {
                    if part.is_empty() {
                        continue;
                    }
                    if written {
                        out.push(b',');
                    }
                    out.extend_from_slice(&part);
                    written = true;
                    hits += h;
                }
                Err(e) => {
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        &format!("a lookup task failed: {e}"),
                    )
                }
            }
        }
        hits
    };
    out.extend_from_slice(b"]}");
    count(ctx, n, hits);
    json_response(StatusCode::OK, out)
}

/// The CPUs this process may use, asked once: `available_parallelism` reads the cgroup's CPU
/// quota from /proc and /sys on every call (3 files opened, 24 us a call on this machine). A
/// quota or affinity changed while the daemon runs is not seen; it only sets how many parts a
/// batch is split into.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |c| c.get()))
}

/// Batches of at least this many values are answered on the blocking pool, across the cores.
const PARALLEL_BATCH: usize = 256;

/// Room reserved per answer: a typical mix (misses ~50 bytes, hits ~300), so a large buffer is
/// seldom regrown.
const ANSWER_BYTES: usize = 160;

fn status(ctx: &Ctx) -> Resp {
    let view = ctx.shared.load();
    let now = crate::model::now_epoch();
    // Each source with how old its served data is, so monitoring can alert on staleness.
    let sources: Vec<serde_json::Value> = view
        .sources
        .iter()
        .map(|s| {
            let mut v = serde_json::to_value(s).unwrap_or_default();
            v["data-age-seconds"] = s
                .last_success_epoch
                .map_or(serde_json::Value::Null, |t| (now - t).max(0).into());
            v
        })
        .collect();
    json(
        StatusCode::OK,
        &serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "generation": view.generation,
            "indicators": view.index.len(),
            "values": view.index.values(),
            "quarantined": view.quarantine.len(),
            "sources": sources,
        }),
    )
}

/// 503 until the first view is published or when the supervisor says it is not serving;
/// then 200, `degraded` naming the sources not `ok`.
fn health(ctx: &Ctx) -> Resp {
    let view = ctx.shared.load();
    if !ctx.shared.is_serving() {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "status": "not-serving", "error": "mispd is not serving (stopping?)", "code": "not-serving" }),
        );
    }
    if view.generation == 0 {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "status": "starting", "error": "no data published yet", "code": "not-ready" }),
        );
    }
    // `syncing` right after a success (no last error) is the normal life of a healthy source
    // (with a short interval it is syncing much of the time); a retry after a failure keeps its
    // last error, and a source that never synced has no success: both stay reported.
    let healthy = |s: &crate::model::SourceStatus| match s.state {
        crate::model::SourceState::Ok => true,
        crate::model::SourceState::Syncing => s.last_error.is_none() && s.last_success.is_some(),
        _ => false,
    };
    let degraded: Vec<_> = view
        .sources
        .iter()
        .filter(|s| !healthy(s))
        .map(|s| serde_json::json!({ "name": s.name, "state": s.state }))
        .collect();
    let status = if degraded.is_empty() {
        "ok"
    } else {
        "degraded"
    };
    let mut body = serde_json::json!({ "status": status, "generation": view.generation });
    if !degraded.is_empty() {
        body["degraded"] = serde_json::Value::Array(degraded);
    }
    json(StatusCode::OK, &body)
}

fn quarantine(req: &Request<Incoming>, ctx: &Ctx) -> Resp {
    let p = params(req);
    let limit = match param(&p, "limit").map(str::parse::<usize>) {
        None => 100,
        Some(Ok(n)) => n.min(10_000),
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad-limit",
                "limit must be a number",
            )
        }
    };
    let source = param(&p, "source");
    let view = ctx.shared.load();
    let matching = view
        .quarantine
        .iter()
        .rev()
        .filter(|r| source.is_none_or(|s| &*r.source == s));
    let total = matching.clone().count();
    let items: Vec<_> = matching.take(limit).collect();
    json(
        StatusCode::OK,
        &serde_json::json!({ "total": total, "items": items }),
    )
}

async fn release(source: &str, ctx: &Ctx, peer: UCred) -> Resp {
    if peer.uid() != 0 && Some(peer.uid()) != ctx.own_uid {
        tracing::warn!(uid = peer.uid(), gid = peer.gid(), pid = ?peer.pid(), source, "release refused: caller is neither root nor the daemon's user");
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "release needs root or the daemon's own user",
        );
    }
    if source.is_empty()
        || !source
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return error(StatusCode::BAD_REQUEST, "bad-source", "not a source name");
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let cmd = AdminCommand::Release {
        source: source.to_string(),
        reply: tx,
    };
    let unavailable = || {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "supervisor-unavailable",
            "the supervisor did not take the command; is mispd shutting down?",
        )
    };
    let sent = tokio::time::timeout(Duration::from_secs(5), ctx.shared.admin().send(cmd)).await;
    if !matches!(sent, Ok(Ok(()))) {
        return unavailable();
    }
    tracing::info!(uid = peer.uid(), pid = ?peer.pid(), source, "release requested");
    match rx.await {
        Ok(Ok(message)) => json(
            StatusCode::OK,
            &serde_json::json!({ "status": "released", "source": source, "message": message }),
        ),
        Ok(Err(message)) => error(StatusCode::CONFLICT, "release-failed", &message),
        Err(_) => unavailable(),
    }
}

#[derive(Serialize)]
struct ChangeItem<'a> {
    value: &'a str,
    kind: crate::model::Kind,
}

/// A list of changes serialised straight from the journal or the index, without copying.
struct Items<I>(std::cell::Cell<Option<I>>);

impl<'a, I: Iterator<Item = ChangeItem<'a>>> Serialize for Items<I> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.take() {
            Some(it) => s.collect_seq(it),
            None => s.collect_seq(std::iter::empty::<ChangeItem<'a>>()),
        }
    }
}

fn items<'a, I: Iterator<Item = ChangeItem<'a>>>(it: I) -> Items<I> {
    Items(std::cell::Cell::new(Some(it)))
}

#[derive(Serialize)]
struct ChangesBody<'a, A, R> {
    cursor: &'a str,
    reset: bool,
    added: A,
    removed: R,
}

fn changes_body<'a>(
    cursor: &'a str,
    reset: bool,
    added: impl Iterator<Item = ChangeItem<'a>>,
    removed: impl Iterator<Item = ChangeItem<'a>>,
) -> Resp {
    json(
        StatusCode::OK,
        &ChangesBody {
            cursor,
            reset,
            added: items(added),
            removed: items(removed),
        },
    )
}

fn journal_items(v: &[crate::state::Change]) -> impl Iterator<Item = ChangeItem<'_>> {
    v.iter()
        .map(|(kind, value)| ChangeItem { value, kind: *kind })
}

async fn changes(req: &Request<Incoming>, ctx: &Ctx) -> Resp {
    let p = params(req);
    let since = param(&p, "since").filter(|s| !s.is_empty());
    let wait = match param(&p, "wait").map(str::parse::<u64>) {
        None => Duration::ZERO,
        Some(Ok(s)) => Duration::from_secs(s).min(MAX_WAIT),
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad-wait",
                "wait must be whole seconds",
            )
        }
    };
    let mut rx = ctx.shared.subscribe();
    let mut answer = ctx.shared.changes_since(since);
    if matches!(answer, Changes::Unchanged { .. }) && !wait.is_zero() {
        let mut stop = ctx.shutdown.clone();
        let stopping = async {
            while !*stop.borrow_and_update() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
        };
        // Until the served set changes (a publication that only updates status is not a
        // change), the wait runs out, or the daemon stops.
        let deadline = tokio::time::Instant::now() + wait;
        let changed = async {
            loop {
                match tokio::time::timeout_at(deadline, rx.changed()).await {
                    Ok(Ok(())) => {
                        let now = ctx.shared.changes_since(since);
                        if !matches!(now, Changes::Unchanged { .. }) {
                            return Some(now);
                        }
                    }
                    Ok(Err(_)) | Err(_) => return None,
                }
            }
        };
        tokio::select! {
            now = changed => {
                if let Some(now) = now {
                    answer = now;
                }
            }
            _ = stopping => {}
        }
    }
    match &answer {
        Changes::Unchanged { cursor } => {
            changes_body(cursor, false, journal_items(&[]), journal_items(&[]))
        }
        Changes::Delta {
            cursor,
            added,
            removed,
        } => changes_body(cursor, false, journal_items(added), journal_items(removed)),
        Changes::Reset { cursor, index } => export::reset_changes(index.clone(), cursor.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_query_string() {
        assert_eq!(
            parse_lookup_query("value=198.51.100.7").unwrap(),
            "198.51.100.7"
        );
        assert_eq!(
            parse_lookup_query("x=1&value=https%3A%2F%2Fa.example%2F%3Fq%3D1+2").unwrap(),
            "https://a.example/?q=1 2"
        );
        assert_eq!(parse_lookup_query("").unwrap_err().code, "missing-value");
        let long = format!("value={}", "a".repeat(MAX_VALUE_LEN + 1));
        let e = parse_lookup_query(&long).unwrap_err();
        assert_eq!((e.status, e.code), (400, "value-too-long"));
    }

    #[test]
    fn lookup_body() {
        let v = parse_lookup_body(br#"{"values":["a.example","10.0.0.1"]}"#, 2).unwrap();
        assert_eq!(v, ["a.example", "10.0.0.1"]);
        // borrowed from the body unless there is an escape to decode
        let v = parse_lookup_body(br#"{"values":["a.example","b\u00e9.example"]}"#, 2).unwrap();
        assert!(matches!(v[0], Cow::Borrowed("a.example")));
        assert!(matches!(&v[1], Cow::Owned(s) if s == "b\u{e9}.example"));
        let e = parse_lookup_body(br#"{"values":["a","b","c"]}"#, 2).unwrap_err();
        assert_eq!((e.status, e.code), (413, "too-many-values"));
        for bad in [
            &b"{"[..],
            br#"{"values":"a"}"#,
            br#"{"values":[],"x":1}"#,
            b"\xff",
        ] {
            assert_eq!(parse_lookup_body(bad, 2).unwrap_err().code, "bad-json");
        }
        // the reason serde gives for a value that is not a string is kept
        let e = parse_lookup_body(br#"{"values":["a",1]}"#, 2).unwrap_err();
        assert!(
            e.message
                .contains("invalid type: integer `1`, expected a string"),
            "{}",
            e.message
        );
    }
}
