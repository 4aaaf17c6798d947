//! A small HTTP/1.1 client for the query socket, used by `mispctl`. One request per connection.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};

/// Why a request to the daemon failed (the daemon's own errors come back as a status and body).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot connect to {path}: {source}; is mispd running, and may this user use its socket?"
    )]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to mispd on {path}: {source}")]
    Http { path: PathBuf, source: hyper::Error },
    #[error("bad request: {0}")]
    Request(String),
}

/// Sends one request and returns the status code and the whole body.
pub async fn request(
    socket: &Path,
    method: Method,
    path_and_query: &str,
    body: Option<Vec<u8>>,
) -> Result<(u16, Bytes), ClientError> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect {
            path: socket.to_path_buf(),
            source,
        })?;
    let http = |source| ClientError::Http {
        path: socket.to_path_buf(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let driver = tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(HOST, "localhost");
    if body.is_some() {
        req = req.header(CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| ClientError::Request(e.to_string()))?;
    let resp = sender.send_request(req).await.map_err(http)?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.map_err(http)?.to_bytes();
    driver.abort();
    Ok((status, bytes))
}

/// `GET path` (with its query string, already URL-encoded).
pub async fn get(socket: &Path, path_and_query: &str) -> Result<(u16, Bytes), ClientError> {
    request(socket, Method::GET, path_and_query, None).await
}

/// `POST path` with a JSON body.
pub async fn post(
    socket: &Path,
    path: &str,
    json: &serde_json::Value,
) -> Result<(u16, Bytes), ClientError> {
    request(
        socket,
        Method::POST,
        path,
        Some(json.to_string().into_bytes()),
    )
    .await
}

/// Encodes a value for a query string (`?value=` + this).
pub fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
