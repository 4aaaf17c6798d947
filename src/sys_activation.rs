//! systemd socket activation: take over the listening socket systemd passed as fd 3. This is the
//! crate's only `unsafe` outside `sys.rs` (the lead folds it into `sys.rs`).
#![allow(unsafe_code)]

use std::os::fd::FromRawFd;
use std::os::unix::net::UnixListener;

/// The first passed socket when `LISTEN_PID` names this process and `LISTEN_FDS` >= 1.
/// The variables are removed so that the descriptor is claimed once and children do not see them.
pub fn listen_fd() -> Option<UnixListener> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if pid != std::process::id() || fds < 1 {
        return None;
    }
    for v in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(v);
    }
    let target = std::fs::read_link("/proc/self/fd/3").ok()?;
    if !target.to_string_lossy().starts_with("socket:") {
        tracing::warn!(
            "LISTEN_FDS is set but fd 3 is not a socket; binding the configured path instead"
        );
        return None;
    }
    // SAFETY: systemd passed fd 3 to this very process (LISTEN_PID matched our pid), /proc shows it
    // is an open socket, and nothing else claims it: the variables were removed above, so this
    // runs at most once and the listener becomes the descriptor's only owner.
    let listener = unsafe { UnixListener::from_raw_fd(3) };
    // Rejects sockets of another family (e.g. a TCP socket unit by mistake).
    if let Err(e) = listener.local_addr() {
        tracing::warn!(error = %e, "fd 3 from systemd is not a Unix socket");
        return None;
    }
    listener.set_nonblocking(true).ok()?;
    Some(listener)
}
