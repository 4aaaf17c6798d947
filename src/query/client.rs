//! A small HTTP/1.1 client for the query socket, used by `mispctl`. One request per connection;
//! no timeout of its own (wrap calls in `tokio::time::timeout`; long polls need `wait` + margin).

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
    #[error("cannot write the answer out: {0}")]
    Output(std::io::Error),
    #[error("mispd refused the request (HTTP {status}): {message}")]
    Refused { status: u16, message: String },
}

/// Opens a connection and sends one request; the response body is left to the caller.
async fn send(
    socket: &Path,
    method: Method,
    path_and_query: &str,
    body: Option<Vec<u8>>,
) -> Result<
    (
        hyper::Response<hyper::body::Incoming>,
        tokio::task::JoinHandle<()>,
    ),
    ClientError,
> {
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
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
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
    Ok((resp, driver))
}

/// `GET path`, copying a 200 body to `out` as it arrives (for large exports); returns the
/// status. Any other answer (a JSON error) is returned as `Err(Refused)`, never written to
/// `out`: an export redirected into a firewall file must not receive an error body.
pub async fn get_to<W: tokio::io::AsyncWrite + Unpin>(
    socket: &Path,
    path_and_query: &str,
    out: &mut W,
) -> Result<u16, ClientError> {
    use tokio::io::AsyncWriteExt;
    let (resp, driver) = send(socket, Method::GET, path_and_query, None).await?;
    let status = resp.status().as_u16();
    if status != 200 {
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        driver.abort();
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
        return Err(ClientError::Refused { status, message });
    }
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|source| ClientError::Http {
            path: socket.to_path_buf(),
            source,
        })?;
        if let Some(data) = frame.data_ref() {
            out.write_all(data).await.map_err(ClientError::Output)?;
        }
    }
    out.flush().await.map_err(ClientError::Output)?;
    driver.abort();
    Ok(status)
}

/// Sends one request and returns the status code and the whole body.
pub async fn request(
    socket: &Path,
    method: Method,
    path_and_query: &str,
    body: Option<Vec<u8>>,
) -> Result<(u16, Bytes), ClientError> {
    let (resp, driver) = send(socket, method, path_and_query, body).await?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|source| ClientError::Http {
            path: socket.to_path_buf(),
            source,
        })?
        .to_bytes();
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
