//! The local query service: HTTP/1.1 + JSON on a Unix socket, for firewall updaters, mail
//! filters, DNS policy and SIEM enrichment. It reads the published [`View`](crate::state::View)
//! and sends admin commands to the supervisor; it never touches credentials or the network.
//!
//! Everything on the socket is bounded: connections, header read time, body size, batch size,
//! request time. Callers can be restricted by peer credentials (`SO_PEERCRED`).
//! See docs/query-api.md for the endpoints.

mod batch;
pub mod client;
mod encode;
pub use encode::{write_lookup, write_lookups};
mod export;
mod handlers;
pub use handlers::{parse_lookup_body, parse_lookup_query, BadRequest};
mod metrics;
pub mod runtime;
pub use runtime::Service;

use crate::state::Shared;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{watch, Semaphore};

/// A duration written the humantime way in TOML (`"5s"`, `"1m 30s"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "{s:?} is not a duration ({e}); write e.g. \"5s\""
                ))
            })
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

/// The `[query]` section of the configuration.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Settings {
    /// Path of the Unix socket (ignored when systemd passes a socket).
    pub socket: PathBuf,
    /// Permission bits of the socket file, octal (`"0660"`: owner and group may connect).
    pub socket_mode: String,
    /// Group (name or number) that owns the socket file, so its members may connect.
    pub socket_group: Option<String>,
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// Most values in one batch lookup (413 above).
    pub max_batch: usize,
    /// Time a client has to send a request's headers; slower connections are closed.
    pub header_timeout: HumanDuration,
    /// Time one request may take (long polls add their `wait`); 503 when exceeded.
    pub request_timeout: HumanDuration,
    /// When non-empty (or allowed-groups is), only these peer uids may connect. Root is not implied.
    pub allowed_uids: Vec<u32>,
    /// Groups (names or numbers) whose members may connect (primary or supplementary group).
    pub allowed_groups: Vec<String>,
    /// The widest window the query thread polls for the next request before it sleeps
    /// (`"0s"`: never). The window adapts to the traffic; see docs/performance.md.
    pub busy_poll: HumanDuration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            socket: PathBuf::from("/run/mispd/query.sock"),
            socket_mode: "0660".into(),
            socket_group: None,
            max_connections: 512,
            max_body_bytes: 1 << 20,
            max_batch: 10_000,
            header_timeout: HumanDuration(Duration::from_secs(5)),
            request_timeout: HumanDuration(Duration::from_secs(10)),
            allowed_uids: Vec::new(),
            allowed_groups: Vec::new(),
            busy_poll: HumanDuration(Duration::from_micros(50)),
        }
    }
}

impl Settings {
    /// Checks meaning beyond syntax; the error names the key.
    pub fn check(&self) -> Result<(), String> {
        if !self.socket.is_absolute() {
            return Err(format!(
                "query.socket: {:?} must be an absolute path",
                self.socket
            ));
        }
        self.mode()?;
        if self.max_connections == 0 {
            return Err("query.max-connections must be at least 1".into());
        }
        if self.max_body_bytes < 64 {
            return Err("query.max-body-bytes must be at least 64".into());
        }
        if self.max_batch == 0 {
            return Err("query.max-batch must be at least 1".into());
        }
        for (key, d) in [
            ("header-timeout", self.header_timeout),
            ("request-timeout", self.request_timeout),
        ] {
            if d.0.is_zero() {
                return Err(format!("query.{key} must be longer than zero"));
            }
        }
        if self.busy_poll.0 > MAX_BUSY_POLL {
            return Err(format!(
                "query.busy-poll: {} is too long; at most {} (or \"0s\" to turn it off)",
                humantime::format_duration(self.busy_poll.0),
                humantime::format_duration(MAX_BUSY_POLL)
            ));
        }
        if let Some(g) = &self.socket_group {
            resolve_group(g).map_err(|e| format!("query.socket-group: {e}"))?;
        }
        for g in &self.allowed_groups {
            resolve_group(g).map_err(|e| format!("query.allowed-groups: {e}"))?;
        }
        Ok(())
    }

    /// The socket mode as bits.
    pub fn mode(&self) -> Result<u32, String> {
        u32::from_str_radix(self.socket_mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                format!(
                    "query.socket-mode: {:?} is not an octal permission like \"0660\"",
                    self.socket_mode
                )
            })
    }
}

/// The longest `query.busy-poll` accepted: beyond a millisecond the CPU spent buys nothing a
/// wake-up would not give.
const MAX_BUSY_POLL: Duration = Duration::from_millis(1);

/// Why the query service could not start.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("query settings: {0}")]
    Settings(String),
    #[error("cannot remove the stale socket {path}: {source}; remove it by hand or fix the directory permissions")]
    RemoveStale {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another process is serving on {path} (a second mispd?); stop it first or set another query.socket")]
    InUse { path: PathBuf },
    #[error("{path} exists and is not a socket; refusing to replace it (check query.socket)")]
    NotASocket { path: PathBuf },
    #[error("cannot create the socket directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot bind the query socket {path}: {source}; is another mispd running?")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot set mode/group of {path}: {source}")]
    Permissions {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot use the listening socket: {0}")]
    Listener(std::io::Error),
    #[error("cannot start the query thread: {0}")]
    Runtime(std::io::Error),
    #[error("the query thread ended without a result (it panicked)")]
    Panicked,
}

/// Binds the socket: a stale socket file is removed (anything else at the path is an error),
/// then the mode and group are set. The listener is non-blocking, ready for [`serve`].
pub fn bind(settings: &Settings) -> Result<UnixListener, QueryError> {
    let path = &settings.socket;
    let mode = settings.mode().map_err(QueryError::Settings)?;
    let gid = match &settings.socket_group {
        Some(g) => Some(resolve_group(g).map_err(QueryError::Settings)?),
        None => None,
    };
    match std::fs::symlink_metadata(path) {
        // A socket something still answers on is not stale: replacing it would cut that
        // daemon's clients off while it keeps running.
        Ok(m)
            if m.file_type().is_socket()
                && std::os::unix::net::UnixStream::connect(path).is_ok() =>
        {
            return Err(QueryError::InUse { path: path.clone() })
        }
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|source| QueryError::RemoveStale {
                path: path.clone(),
                source,
            })?
        }
        Ok(_) => return Err(QueryError::NotASocket { path: path.clone() }),
        Err(_) => {}
    }
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|source| QueryError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
    }
    let listener = UnixListener::bind(path).map_err(|source| QueryError::Bind {
        path: path.clone(),
        source,
    })?;
    let perm = |source| QueryError::Permissions {
        path: path.clone(),
        source,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(perm)?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(perm)?;
    }
    listener
        .set_nonblocking(true)
        .map_err(QueryError::Listener)?;
    Ok(listener)
}

/// The listening socket systemd passed (socket activation, `LISTEN_FDS`), if any.
pub fn from_systemd() -> Option<UnixListener> {
    crate::sys::systemd_listener()
}

/// A group name or number to a gid, reading /etc/group (no NSS: name services are not needed
/// for the local groups a socket is shared with).
pub fn resolve_group(name: &str) -> Result<u32, String> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let text = std::fs::read_to_string("/etc/group")
        .map_err(|e| format!("cannot read /etc/group to resolve {name:?}: {e}"))?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.nth(1)?))
        })
        .find(|(n, _)| *n == name)
        .and_then(|(_, gid)| gid.parse().ok())
        .ok_or_else(|| format!("no group named {name:?} in /etc/group"))
}

/// Serves until `shutdown` turns true (or its sender is dropped), then stops accepting, lets
/// requests in flight finish for up to five seconds, and returns. Runs on the caller's runtime
/// without busy-polling; the daemon uses [`Service`].
pub async fn serve(
    listener: UnixListener,
    shared: Arc<Shared>,
    settings: Settings,
    shutdown: watch::Receiver<bool>,
) -> Result<(), QueryError> {
    serve_polled(listener, shared, settings, shutdown, None).await
}

/// [`serve`], with every socket watched by `poll` when given.
async fn serve_polled(
    listener: UnixListener,
    shared: Arc<Shared>,
    settings: Settings,
    mut shutdown: watch::Receiver<bool>,
    poll: Option<Arc<runtime::BusyPoll>>,
) -> Result<(), QueryError> {
    use std::os::fd::AsFd;
    let listener = tokio::net::UnixListener::from_std(listener).map_err(QueryError::Listener)?;
    if let Some(p) = &poll {
        p.watch(listener.as_fd());
    }
    let allowed_gids: Vec<u32> = settings
        .allowed_groups
        .iter()
        .map(|g| resolve_group(g))
        .collect::<Result<_, _>>()
        .map_err(QueryError::Settings)?;
    let ctx = Arc::new(handlers::Ctx {
        shared,
        shutdown: shutdown.clone(),
        own_uid: own_uid(),
        settings,
    });
    let permits = Arc::new(Semaphore::new(ctx.settings.max_connections));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => {
                        if let Some(p) = &poll {
                            p.watch(s.as_fd());
                        }
                        s
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "query socket accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let peer = match stream.peer_cred() {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read peer credentials; closing");
                        continue;
                    }
                };
                let groups = || peer_groups(&stream, &peer);
                if !peer_allowed(&ctx.settings, &allowed_gids, &peer, groups) {
                    ctx.shared.metrics().denied_connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(uid = peer.uid(), gid = peer.gid(), pid = ?peer.pid(), "query connection denied by allowed-uids/allowed-groups");
                    conns.spawn(reject(stream, 403, "forbidden", "this user may not use the mispd query socket"));
                    continue;
                }
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    ctx.shared.metrics().rejected_connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!("query connection limit reached");
                    conns.spawn(reject(stream, 503, "busy", "too many connections; retry later"));
                    continue;
                };
                conns.spawn(handlers::connection(stream, peer, ctx.clone(), shutdown.clone(), permit));
            }
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        tracing::warn!("query connections still open after 5s; closing them");
        conns.abort_all();
    }
    Ok(())
}

/// Answers a connection we will not serve with one JSON error, then closes it.
async fn reject(mut stream: tokio::net::UnixStream, status: u16, code: &str, msg: &str) {
    let body = serde_json::json!({ "error": msg, "code": code }).to_string();
    let reason = if status == 403 {
        "Forbidden"
    } else {
        "Service Unavailable"
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

fn peer_allowed(
    settings: &Settings,
    allowed_gids: &[u32],
    peer: &tokio::net::unix::UCred,
    supplementary: impl FnOnce() -> Option<Vec<u32>>,
) -> bool {
    if settings.allowed_uids.is_empty() && allowed_gids.is_empty() {
        return true;
    }
    if settings.allowed_uids.contains(&peer.uid()) || allowed_gids.contains(&peer.gid()) {
        return true;
    }
    // SO_PEERCRED carries only the primary group.
    !allowed_gids.is_empty()
        && supplementary().is_some_and(|gs| gs.iter().any(|g| allowed_gids.contains(g)))
}

/// The peer's supplementary groups: from the socket (SO_PEERGROUPS), which works under
/// mispd.service's ProtectProc=invisible, else from /proc/PID/status (kernels before 4.13).
fn peer_groups(
    stream: &tokio::net::UnixStream,
    peer: &tokio::net::unix::UCred,
) -> Option<Vec<u32>> {
    use std::os::fd::AsFd;
    crate::sys::peer_groups(stream.as_fd())
        .ok()
        .or_else(|| peer.pid().and_then(|pid| supplementary_groups(pid).ok()))
}

fn supplementary_groups(pid: i32) -> std::io::Result<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default())
}

/// The effective uid of this process, read without libc (/proc/self belongs to it).
fn own_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Where a path-based client should connect by default.
pub fn default_socket() -> &'static Path {
    Path::new("/run/mispd/query.sock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_with_defaults_and_reject_typos() {
        let s: Settings =
            toml::from_str("socket = \"/tmp/x.sock\"\nheader-timeout = \"2s\"").unwrap();
        assert_eq!(s.header_timeout.0, Duration::from_secs(2));
        assert_eq!(s.max_batch, Settings::default().max_batch);
        s.check().unwrap();
        let e = toml::from_str::<Settings>("max-conections = 3").unwrap_err();
        assert!(e.to_string().contains("max-conections"), "{e}");
        let bad = Settings {
            socket_mode: "0999".into(),
            ..Settings::default()
        };
        assert!(bad.check().unwrap_err().contains("socket-mode"));
        let bad = Settings {
            max_batch: 0,
            ..Settings::default()
        };
        assert!(bad.check().unwrap_err().contains("max-batch"));
        assert!(toml::from_str::<Settings>("request-timeout = \"5\"").is_err());
        let long: Settings = toml::from_str("busy-poll = \"2ms\"").unwrap();
        assert!(long.check().unwrap_err().contains("query.busy-poll"));
        let off: Settings = toml::from_str("busy-poll = \"0s\"").unwrap();
        assert!(off.check().is_ok());
    }

    #[test]
    fn the_documented_example_parses() {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            query: Settings,
        }
        let doc = include_str!("../../docs/query-api.md");
        let block = doc
            .split("```toml\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("docs/query-api.md has a toml example");
        let f: File = toml::from_str(block).unwrap();
        assert_eq!(f.query.allowed_uids, vec![0]);
        assert_eq!(f.query.request_timeout.0, Duration::from_secs(10));
    }

    #[test]
    fn groups_resolve_by_number_and_name() {
        assert_eq!(resolve_group("123").unwrap(), 123);
        assert_eq!(resolve_group("root").unwrap(), 0);
        assert!(resolve_group("no-such-group-mispd").is_err());
    }

    #[tokio::test]
    async fn supplementary_groups_come_from_the_socket() {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let peer = a.peer_cred().unwrap();
        let groups = peer_groups(&a, &peer).unwrap();
        let settings = Settings {
            allowed_uids: vec![u32::MAX - 1],
            ..Settings::default()
        };
        // Not our uid, not our primary group: allowed only through a supplementary group.
        let supplementary: Vec<u32> = groups
            .iter()
            .copied()
            .filter(|g| *g != peer.gid())
            .collect();
        for g in &supplementary {
            assert!(peer_allowed(&settings, &[*g], &peer, || Some(
                groups.clone()
            )));
        }
        assert!(!peer_allowed(&settings, &[u32::MAX - 2], &peer, || Some(
            groups.clone()
        )));
        assert!(!peer_allowed(&settings, &[u32::MAX - 2], &peer, || None));
        assert!(peer_allowed(&settings, &[peer.gid()], &peer, || None));
    }

    /// A caller with supplementary groups 4242 and 4243 (set with setpriv, so this needs root
    /// and util-linux + curl, as on the CI machine): the daemon sees them on the socket.
    #[tokio::test]
    async fn supplementary_groups_of_another_process() {
        if crate::sys::euid() != 0 {
            eprintln!(
                "SKIP supplementary_groups_of_another_process: needs root for setpriv --groups"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let mut child = std::process::Command::new("setpriv")
            .args([
                "--groups",
                "4242,4243",
                "curl",
                "-s",
                "-m",
                "5",
                "--unix-socket",
            ])
            .arg(&path)
            .arg("http://mispd/v1/health")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("setpriv and curl are installed");
        let (stream, _) = listener.accept().await.unwrap();
        let peer = stream.peer_cred().unwrap();
        let groups = peer_groups(&stream, &peer).unwrap();
        assert!(
            groups.contains(&4242) && groups.contains(&4243),
            "{groups:?}"
        );
        let settings = Settings {
            allowed_uids: vec![u32::MAX - 1],
            ..Settings::default()
        };
        assert!(peer_allowed(&settings, &[4243], &peer, || peer_groups(
            &stream, &peer
        )));
        drop(stream);
        let _ = child.kill();
        let _ = child.wait();
    }
}
