//! The one module allowed `unsafe`: thin wrappers over the few libc calls mispd needs.
#![allow(unsafe_code)]

use std::io;

/// Makes the process non-dumpable (no core dumps, no ptrace attach by same-uid processes, no
/// /proc/PID/mem reads) and sets the core size limit to 0, so the API key in memory does not
/// end up in a core file.
pub fn harden_process() -> Result<(), io::Error> {
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) takes integer arguments only and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong, 0, 0, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `zero` is a valid, initialised rlimit that outlives the call; setrlimit only reads it.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the process is currently dumpable (PR_GET_DUMPABLE).
pub fn is_dumpable() -> bool {
    // SAFETY: PR_GET_DUMPABLE takes no pointer arguments and only returns a value.
    let rc = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
    rc == 1
}

/// The effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The soft RLIMIT_CORE value, for tests and status output.
pub fn core_limit() -> Result<u64, io::Error> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit that lives for the duration of the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut lim) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim.rlim_cur)
}

/// Hand freed heap memory back to the kernel. glibc keeps what a large generation build freed
/// (the previous index, validation's inputs) resident otherwise: ~227 MiB instead of ~121 MiB
/// with 1M indicators.
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks glibc's own arenas and returns unused pages; it takes no
    // pointers from us and is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// systemd socket activation: take over the listening socket systemd passed as fd 3.
/// The first passed socket when `LISTEN_PID` names this process and `LISTEN_FDS` >= 1.
/// The variables are removed so that the descriptor is claimed once and children do not see them.
pub fn systemd_listener() -> Option<std::os::unix::net::UnixListener> {
    use std::os::fd::FromRawFd;
    use std::os::unix::net::UnixListener;
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
