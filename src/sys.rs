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

/// Keeps the daemon's heap from fragmenting across many arenas (glibc only): at most two.
/// Each thread that allocates may otherwise get an arena of its own (up to 8 per core), and
/// what a sync's judging threads and the blocking pool free stays spread over all of them.
/// Call it before any thread starts. An operator's own `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES`
/// wins: then nothing is changed. Returns whether the setting was applied.
///
/// Measured with 1 M attributes in docs/performance.md (resident memory after the daemon's own
/// full sync, and its peak).
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_some()
            || std::env::var_os("GLIBC_TUNABLES").is_some()
        {
            return false;
        }
        // SAFETY: mallopt takes two integers and only changes glibc's own tunables.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
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

/// Asks the CPU to start loading the cache line holding `r` (a hint: it never faults and
/// changes nothing). Batched lookups request the next values' table slots while the current
/// value is resolved, so the misses overlap instead of coming one after another.
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 only hints the cache; `r` is a live reference, and a prefetch of any
    // address neither faults nor reads into a register.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (r as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// The allocator's own view of the heap: bytes handed out and still in use, and bytes freed
/// but kept mapped (fragmentation the next `release_free_memory` may or may not return).
#[derive(Clone, Copy, Debug)]
pub struct HeapUsage {
    pub in_use: u64,
    pub free: u64,
}

/// Heap figures from glibc's `mallinfo2` (all arenas); `None` on other C libraries.
pub fn heap_usage() -> Option<HeapUsage> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 takes no arguments and returns a plain struct by value; it only
        // takes glibc's arena locks while it sums them.
        let m = unsafe { libc::mallinfo2() };
        Some(HeapUsage {
            in_use: (m.uordblks + m.hblkhd) as u64,
            free: m.fordblks as u64,
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// An epoll set of our own that only answers "has anything arrived?" without blocking. The
/// query thread polls it while it busy-waits before sleeping (see `query::runtime`); tokio's
/// own epoll set still does the real I/O. Registrations are edge-triggered, so a probe reports
/// each arrival once and never keeps reporting data tokio has not read yet.
pub struct ArrivalProbe {
    ep: std::os::fd::OwnedFd,
}

impl ArrivalProbe {
    pub fn new() -> io::Result<ArrivalProbe> {
        use std::os::fd::FromRawFd;
        // SAFETY: epoll_create1 takes no pointers.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a non-negative result is a new descriptor that nothing else owns.
        let ep = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        Ok(ArrivalProbe { ep })
    }

    /// Watches `fd` for input and hang-ups. The kernel drops the registration by itself when
    /// the socket is closed.
    pub fn watch(&self, fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: 0,
        };
        // SAFETY: both descriptors are open for the duration of the call and `ev` is a valid
        // epoll_event the kernel only reads.
        let rc = unsafe {
            libc::epoll_ctl(
                self.ep.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut ev,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// What arrived on the watched descriptors since the last call that said so.
    pub fn arrived(&self) -> Arrival {
        use std::os::fd::AsRawFd;
        let mut ev = [libc::epoll_event { events: 0, u64: 0 }; 8];
        // SAFETY: `ev` has room for the 8 events we allow the kernel to write; timeout 0 never
        // blocks.
        let n = unsafe { libc::epoll_wait(self.ep.as_raw_fd(), ev.as_mut_ptr(), 8, 0) };
        let hang_up = (libc::EPOLLRDHUP | libc::EPOLLHUP) as u32;
        let ev = &ev[..n.max(0) as usize];
        if ev.iter().any(|e| e.events & hang_up == 0) {
            Arrival::Input
        } else if !ev.is_empty() {
            Arrival::HangUp
        } else {
            Arrival::Nothing
        }
    }
}

/// What an [`ArrivalProbe`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    Nothing,
    /// Only peers closing (a client that connects once per request leaves like this).
    HangUp,
    /// New input: a request, or a new connection on a listener.
    Input,
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

/// Supplementary groups of the process at the other end of a connected Unix socket, as the
/// kernel recorded them when it connected (`SO_PEERGROUPS`, Linux 4.13 and later). Unlike
/// `/proc/PID/status` this needs no access to the peer's process, so it works under the unit's
/// `ProtectProc=invisible`.
pub fn peer_groups(fd: std::os::fd::BorrowedFd<'_>) -> Result<Vec<u32>, io::Error> {
    use std::os::fd::AsRawFd;
    const GID: usize = std::mem::size_of::<libc::gid_t>();
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    // Twice at most: when the buffer is too small the kernel says how many bytes it needs.
    for _ in 0..2 {
        let mut len = (groups.len() * GID) as libc::socklen_t;
        // SAFETY: `groups` is valid for writes of `len` bytes; the kernel writes at most `len`
        // bytes into it and stores the byte count (or, with ERANGE, the size needed) in `len`.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc == 0 {
            groups.truncate(len as usize / GID);
            return Ok(groups);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) || len as usize <= groups.len() * GID {
            return Err(e);
        }
        groups.resize((len as usize).div_ceil(GID), 0);
    }
    Err(io::Error::from_raw_os_error(libc::ERANGE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn peer_groups_of_a_socketpair_are_our_own() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut got = peer_groups(a.as_fd()).unwrap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let mut want: Vec<u32> = status
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .unwrap()
            .split_whitespace()
            .map(|g| g.parse().unwrap())
            .collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_allocator_settings() {
        let operator_set = std::env::var_os("MALLOC_ARENA_MAX").is_some()
            || std::env::var_os("GLIBC_TUNABLES").is_some();
        assert_eq!(tune_allocator(), !operator_set);
        assert!(heap_usage().is_some_and(|h| h.in_use > 0));
    }

    #[test]
    fn peer_groups_of_something_else_is_an_error() {
        let f = std::fs::File::open("/proc/self/status").unwrap();
        assert!(peer_groups(f.as_fd()).is_err());
    }
}
