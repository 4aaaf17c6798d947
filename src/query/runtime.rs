//! The query service's own thread and runtime.
//!
//! Lookups are answered on a dedicated single-thread tokio runtime, apart from the
//! supervisor's: a sync's decoding and bookkeeping never delay a lookup, and a flood of queries
//! never delays a sync. CPU-heavy work (batches, exports) still goes to that runtime's blocking
//! pool, which spreads it over the cores.
//!
//! **Busy-polling.** On a virtual machine, waking an idle vCPU costs tens of microseconds
//! (measured here: a blocking ping-pong between two threads over a Unix socket takes about
//! 70 us per round trip across CPUs, 19 us when the answering side polls instead of sleeping,
//! 6 us when both sides do; docs/performance.md). So before the
//! query thread sleeps it polls for up to `query.busy-poll` for the next request, asking an
//! epoll set of its own ([`ArrivalProbe`]) whether anything arrived. A request that comes
//! within that time is answered without a wake-up. The window adapts (see [`BusyPoll`]): it
//! stays open while spins catch requests, and closes when they keep running out, so a daemon
//! queried now and then does not spin at all. `busy-poll = "0s"` turns it off.

use super::{QueryError, Settings};
use crate::state::Shared;
use crate::sys::{Arrival, ArrivalProbe};
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixListener;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// Polls for new input for a bounded time before the query thread sleeps, adapting how long
/// to what it catches (as Linux's `haltpoll` does): a spin that catches a request keeps the
/// window wide; one that runs out halves it, down to no spinning at all when requests are
/// sparse; a request that comes soon after the thread went to sleep widens it again.
pub struct BusyPoll {
    probe: ArrivalProbe,
    /// The widest window (`query.busy-poll`).
    budget: Duration,
    /// The current window, nanoseconds.
    window_ns: AtomicU64,
    /// When the thread last went to sleep without a catch (nanoseconds since `epoch`), or 0.
    slept_at_ns: AtomicU64,
    epoch: Instant,
    /// Spins started, for benchmarks and tests.
    spins: AtomicU64,
}

impl BusyPoll {
    pub fn new(budget: Duration) -> std::io::Result<BusyPoll> {
        Ok(BusyPoll {
            probe: ArrivalProbe::new()?,
            budget,
            window_ns: AtomicU64::new(budget.as_nanos() as u64),
            slept_at_ns: AtomicU64::new(0),
            epoch: Instant::now(),
            spins: AtomicU64::new(0),
        })
    }

    /// How many times the poller has spun so far.
    pub fn spins(&self) -> u64 {
        self.spins.load(Relaxed)
    }

    /// The current window.
    pub fn window(&self) -> Duration {
        Duration::from_nanos(self.window_ns.load(Relaxed))
    }

    /// Adds a listening or connected socket to the set polled. A failure only costs latency.
    pub fn watch(&self, fd: BorrowedFd<'_>) {
        if let Err(e) = self.probe.watch(fd) {
            tracing::debug!(error = %e, "busy-poll cannot watch a query socket");
        }
    }

    fn now_ns(&self) -> u64 {
        (self.epoch.elapsed().as_nanos() as u64).max(1)
    }

    /// Before the thread sleeps: returns as soon as something arrives on a socket or the
    /// runtime is handed work from another thread (a batch part or an export chunk from the
    /// blocking pool), or when the window is spent (at once when it is closed). Input widens
    /// the window, a run-out narrows it; a hang-up or handed-over work ends the spin and
    /// leaves the window as it is (they say nothing about when the next request comes).
    pub fn spin(&self) {
        if self.probe.arrived() != Arrival::Nothing {
            return;
        }
        let max = self.budget.as_nanos() as u64;
        let window = self.window_ns.load(Relaxed);
        if window > 0 {
            self.spins.fetch_add(1, Relaxed);
            let runtime = tokio::runtime::Handle::try_current().ok();
            let handed_work = || {
                runtime
                    .as_ref()
                    .is_some_and(|h| h.metrics().global_queue_depth() > 0)
            };
            let start = Instant::now();
            while (start.elapsed().as_nanos() as u64) < window {
                match self.probe.arrived() {
                    Arrival::Input => {
                        self.window_ns.store((window * 2).min(max), Relaxed);
                        return;
                    }
                    Arrival::HangUp => return,
                    Arrival::Nothing if handed_work() => return,
                    Arrival::Nothing => std::hint::spin_loop(),
                }
            }
            // Below a sixteenth of the widest window a spin catches too little to pay for.
            let half = window / 2;
            self.window_ns
                .store(if half < max / 16 { 0 } else { half }, Relaxed);
        }
        self.slept_at_ns.store(self.now_ns(), Relaxed);
    }

    /// After the thread woke: a request that came soon after it went to sleep (within four
    /// widest windows: the wake-up itself takes tens of microseconds here) means requests are
    /// coming close together again, so the window opens.
    pub fn woke(&self) {
        let slept_at = self.slept_at_ns.swap(0, Relaxed);
        if slept_at == 0 || self.probe.arrived() != Arrival::Input {
            return;
        }
        let max = self.budget.as_nanos() as u64;
        if self.now_ns().saturating_sub(slept_at) < 4 * max {
            let window = self.window_ns.load(Relaxed);
            self.window_ns
                .store((window * 2).clamp(max / 8, max), Relaxed);
        }
    }
}

/// A single-thread runtime for the query service, busy-polling for `busy` before each sleep
/// (none when zero). The returned poller must be given the sockets to watch.
pub fn build(busy: Duration) -> std::io::Result<(tokio::runtime::Runtime, Option<Arc<BusyPoll>>)> {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all().thread_name("mispd-query");
    let poll = if busy.is_zero() {
        None
    } else {
        let poll = Arc::new(BusyPoll::new(busy)?);
        let (park, unpark) = (poll.clone(), poll.clone());
        builder
            .on_thread_park(move || park.spin())
            .on_thread_unpark(move || unpark.woke());
        Some(poll)
    };
    Ok((builder.build()?, poll))
}

/// The query service running on its own thread.
pub struct Service {
    done: oneshot::Receiver<Result<(), QueryError>>,
}

impl Service {
    /// Starts [`serve`](super::serve) on a thread and runtime of its own, busy-polling as
    /// `settings.busy_poll` says.
    pub fn start(
        listener: UnixListener,
        shared: Arc<Shared>,
        settings: Settings,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Service, QueryError> {
        // The runtime is built on its own thread: dropping one (when it cannot start) is not
        // allowed inside the daemon's async code.
        let (started_tx, started) = std::sync::mpsc::sync_channel(1);
        let (tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("mispd-query".into())
            .spawn(move || {
                let (rt, poll) = match build(settings.busy_poll.0) {
                    Ok(built) => built,
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                let _ = started_tx.send(Ok(()));
                // The service runs as a task, not as the `block_on` future: wake-ups of a task
                // from other threads are visible to the poller (the runtime's global queue),
                // those of the `block_on` future are not.
                let r = rt.block_on(async move {
                    tokio::spawn(super::serve_polled(
                        listener, shared, settings, shutdown, poll,
                    ))
                    .await
                    .unwrap_or(Err(QueryError::Panicked))
                });
                let _ = tx.send(r);
            })
            .map_err(QueryError::Runtime)?;
        // Building a runtime takes microseconds; this wait happens once, at start.
        match started.recv() {
            Ok(Ok(())) => Ok(Service { done }),
            Ok(Err(e)) => Err(QueryError::Runtime(e)),
            Err(_) => Err(QueryError::Panicked),
        }
    }

    /// Waits until the service has stopped (after its shutdown signal).
    pub async fn stopped(self) -> Result<(), QueryError> {
        self.done.await.unwrap_or(Err(QueryError::Panicked))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::View;
    use std::io::Write;
    use std::os::fd::AsFd;

    /// The daemon's path: a service on its own thread answers on a real socket, with and
    /// without busy-polling, and stops when told.
    #[tokio::test]
    async fn the_service_answers_on_its_own_thread_and_stops() {
        for busy in [Duration::ZERO, Duration::from_micros(50)] {
            let dir = tempfile::tempdir().unwrap();
            let settings = Settings {
                socket: dir.path().join("q.sock"),
                busy_poll: super::super::HumanDuration(busy),
                ..Settings::default()
            };
            let (admin, _rx) = tokio::sync::mpsc::channel(1);
            let shared = Shared::new(View::default(), admin);
            let (stop, stop_rx) = watch::channel(false);
            let listener = super::super::bind(&settings).unwrap();
            let service = Service::start(listener, shared, settings.clone(), stop_rx).unwrap();
            for _ in 0..3 {
                let (status, body) =
                    crate::query::client::get(&settings.socket, "/v1/lookup?value=192.0.2.1")
                        .await
                        .unwrap();
                assert_eq!(status, 200, "{body:?}");
                assert!(body.starts_with(b"{\"value\":\"192.0.2.1\",\"listed\":false"));
            }
            stop.send(true).unwrap();
            tokio::time::timeout(Duration::from_secs(10), service.stopped())
                .await
                .expect("the service stops")
                .unwrap();
        }
    }

    #[test]
    fn spin_catches_arrivals_and_adapts_its_window() {
        let max = Duration::from_millis(64);
        let poll = BusyPoll::new(max).unwrap();
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        poll.watch(b.as_fd());
        a.write_all(b"x").unwrap();
        poll.spin();
        assert_eq!(poll.spins(), 0, "the arrival was seen before any spinning");

        // Edge-triggered: the byte still unread is not reported again, so this one runs out
        // and halves the window; nothing arriving, it halves down to closed.
        let t = Instant::now();
        poll.spin();
        assert!(t.elapsed() >= max);
        assert_eq!(poll.window(), max / 2);
        poll.spin();
        poll.spin();
        poll.spin();
        assert_eq!(poll.window(), max / 16);
        poll.spin();
        assert_eq!(poll.window(), Duration::ZERO, "sparse: no more spinning");
        let spins = poll.spins();
        poll.spin();
        assert_eq!(poll.spins(), spins, "a closed window does not spin");

        // Woken by a request soon after going to sleep: the window opens again. A wake-up
        // with nothing arrived (a timer) changes nothing.
        poll.woke();
        assert_eq!(poll.window(), Duration::ZERO);
        poll.spin();
        a.write_all(b"y").unwrap();
        poll.woke();
        assert_eq!(poll.window(), max / 8);

        // Input during a spin widens the window, up to the maximum.
        let wide = BusyPoll::new(Duration::from_secs(60)).unwrap();
        wide.watch(b.as_fd());
        wide.spin(); // the unread bytes, reported once at registration
        wide.window_ns.store(10_000_000_000, Relaxed);
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1));
            a.write_all(b"z").unwrap();
            a
        });
        wide.spin();
        assert_eq!(wide.window(), Duration::from_secs(20));
        let a = writer.join().unwrap();

        // A hang-up ends a spin but says nothing about the next request: window unchanged.
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1));
            drop(a);
        });
        let t = Instant::now();
        wide.spin();
        assert!(t.elapsed() < Duration::from_secs(10));
        assert_eq!(wide.window(), Duration::from_secs(20));
        closer.join().unwrap();
    }

    /// Work handed over from the blocking pool (a batch part) to a task ends a spin at once,
    /// though no socket saw anything: a 2 s window must not delay it.
    #[test]
    fn handed_over_work_ends_the_spin() {
        let (rt, poll) = build(Duration::from_secs(2)).unwrap();
        let poll = poll.unwrap();
        let inner = poll.clone();
        let (waited, window) = rt.block_on(async move {
            tokio::spawn(async move {
                let asked = Instant::now();
                let got = tokio::task::spawn_blocking(|| {
                    std::thread::sleep(Duration::from_millis(5));
                    42
                })
                .await
                .unwrap();
                assert_eq!(got, 42);
                (asked.elapsed(), inner.window())
            })
            .await
            .unwrap()
        });
        assert!(
            poll.spins() >= 1,
            "the runtime parked and spun while it waited"
        );
        assert!(waited < Duration::from_secs(1), "{waited:?}");
        assert_eq!(window, Duration::from_secs(2), "not counted as a run-out");
    }
}
