//! The daemon's life from start to exit: load the snapshot, publish the first view, bind the
//! socket, `READY=1`, supervise until SIGTERM, drain, final snapshot, exit 0.

use crate::config::Config;
use crate::model::now_epoch;
use crate::state::{Shared, View};
use crate::supervisor::{build_validator, Signals, Supervisor};
use crate::{notify, query, snapshot};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Brings MISP threat intelligence onto this host: syncs MISP servers and feeds over pinned TLS,
/// validates every indicator, and serves the validated set on a local Unix socket. Runs in the
/// foreground; under systemd it is `Type=notify` (READY, STATUS, WATCHDOG, RELOADING, STOPPING).
/// SIGHUP reloads the configuration and credentials; SIGTERM drains and exits 0.
#[derive(clap::Parser, Debug)]
#[command(name = "mispd", version, about, long_about = None)]
pub struct Args {
    /// The configuration file.
    #[arg(short, long, default_value = "/etc/mispd/mispd.toml")]
    pub config: PathBuf,
}

/// How long in-flight queries may take to finish after SIGTERM.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("query socket: {0}")]
    Socket(String),
    #[error("{0}")]
    Start(String),
    #[error("signals: {0}")]
    Signals(std::io::Error),
}

/// Load the last known-good state. A damaged snapshot is moved aside and the daemon starts empty.
pub fn restore(config: &Config) -> Option<snapshot::Restored> {
    let dir = &config.daemon.state_dir;
    match snapshot::load(dir) {
        Ok(r) => r,
        Err(snapshot::SnapshotError::Io { path, source }) => {
            tracing::error!(path = %path.display(), error = %source, "cannot read the snapshot; starting empty");
            None
        }
        Err(e) => {
            match snapshot::quarantine_file(dir, now_epoch()) {
                Ok(to) => {
                    tracing::error!(error = %e, moved_to = %to.display(), "damaged snapshot moved aside; starting empty and syncing")
                }
                Err(m) => {
                    tracing::error!(error = %e, move_error = %m, "damaged snapshot could not be moved aside; starting empty")
                }
            }
            None
        }
    }
}

/// `activated` is the socket systemd passed, taken by the caller before any thread started
/// (claiming it edits the environment).
pub async fn run(
    config_path: PathBuf,
    config: Config,
    activated: Option<std::os::unix::net::UnixListener>,
) -> Result<(), DaemonError> {
    let signals = Signals::install().map_err(DaemonError::Signals)?;
    // The two slow parts of a start, the warninglists and the snapshot, load side by side.
    let for_validator = config.clone();
    let validator = tokio::task::spawn_blocking(move || build_validator(&for_validator));
    let restored = restore(&config);
    let validator = validator
        .await
        .map_err(|e| DaemonError::Start(format!("loading the warninglists failed: {e}")))?;
    if let Some(r) = &restored {
        let n = r.total();
        tracing::info!(
            indicators = n,
            "snapshot loaded: serving the last known-good set before any sync"
        );
    }
    let (admin_tx, admin_rx) = mpsc::channel(8);
    let shared = Shared::new(View::default(), admin_tx);
    let query_settings = config.query.clone();
    let mut supervisor = Supervisor::new(
        config_path,
        config,
        shared.clone(),
        admin_rx,
        restored,
        validator,
    );
    supervisor.publish_initial().await;

    let bound_here = activated.is_none();
    let listener = match activated {
        Some(l) => {
            tracing::info!("using the query socket passed by systemd");
            l
        }
        None => query::bind(&query_settings).map_err(|e| DaemonError::Socket(e.to_string()))?,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = query::Service::start(listener, shared.clone(), query_settings.clone(), stop_rx)
        .map_err(|e| DaemonError::Socket(e.to_string()))?;
    tracing::info!(socket = %query_settings.socket.display(), "query service listening");
    notify::ready(&supervisor.status_line());

    supervisor
        .run(signals)
        .await
        .map_err(DaemonError::Signals)?;
    let _ = stop_tx.send(true);
    match tokio::time::timeout(DRAIN_TIMEOUT, server.stopped()).await {
        Err(_) => tracing::warn!("in-flight queries did not finish in time"),
        Ok(Err(e)) => tracing::warn!("the query service ended with an error: {e}"),
        Ok(Ok(())) => {}
    }
    // A socket systemd owns stays; one we bound is ours to remove.
    if bound_here {
        let _ = std::fs::remove_file(&query_settings.socket);
    }
    tracing::info!("stopped");
    Ok(())
}
