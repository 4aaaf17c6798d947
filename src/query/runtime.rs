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
use crate::sys::ArrivalProbe;
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

    /// Before the thread sleeps: returns as soon as something arrives, or when the window is
    /// spent (at once when it is closed).
    pub fn spin(&self) {
        if self.probe.arrived() {
            return;
        }
        let max = self.budget.as_nanos() as u64;
        let window = self.window_ns.load(Relaxed);
        if window > 0 {
            self.spins.fetch_add(1, Relaxed);
            let start = Instant::now();
            while (start.elapsed().as_nanos() as u64) < window {
                if self.probe.arrived() {
                    self.window_ns.store((window * 2).min(max), Relaxed);
                    return;
                }
                std::hint::spin_loop();
            }
            // Below a sixteenth of the widest window a spin catches too little to pay for.
            let half = window / 2;
            self.window_ns
                .store(if half < max / 16 { 0 } else { half }, Relaxed);
        }
        self.slept_at_ns.store(self.now_ns(), Relaxed);
    }

    /// After the thread woke: a request that came within the widest window of the sleep would
    /// have been caught by spinning, so the window opens again.
    pub fn woke(&self) {
        let slept_at = self.slept_at_ns.swap(0, Relaxed);
        if slept_at == 0 || !self.probe.arrived() {
            return;
        }
        let max = self.budget.as_nanos() as u64;
        if self.now_ns().saturating_sub(slept_at) < max {
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
        let (rt, poll) = build(settings.busy_poll.0).map_err(QueryError::Runtime)?;
        let (tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("mispd-query".into())
            .spawn(move || {
                let r = rt.block_on(super::serve_polled(
                    listener, shared, settings, shutdown, poll,
                ));
                let _ = tx.send(r);
            })
            .map_err(QueryError::Runtime)?;
        Ok(Service { done })
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
        // Wide enough that the catch below (a write 1 ms into a 40 ms window) cannot be missed
        // on a loaded machine.
        let max = Duration::from_millis(320);
        let poll = BusyPoll::new(max).unwrap();
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        poll.watch(b.as_fd());
        a.write_all(b"x").unwrap();
        let t = Instant::now();
        poll.spin();
        assert!(t.elapsed() < max, "{:?}", t.elapsed());
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
        let t = Instant::now();
        poll.spin();
        assert!(t.elapsed() < max / 16);
        assert_eq!(poll.spins(), spins);

        // Woken by a request soon after going to sleep: spinning would have caught it, so the
        // window opens again. A wake-up with nothing arrived (a timer) changes nothing.
        poll.woke();
        assert_eq!(poll.window(), Duration::ZERO);
        poll.spin();
        a.write_all(b"y").unwrap();
        poll.woke();
        assert_eq!(poll.window(), max / 8);

        // A catch during a spin widens the window, up to the maximum.
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1));
            a.write_all(b"z").unwrap();
            a
        });
        poll.spin();
        assert_eq!(poll.window(), max / 4);
        let a = writer.join().unwrap();

        // A hang-up is an arrival too.
        let long = BusyPoll::new(Duration::from_secs(5)).unwrap();
        long.watch(b.as_fd());
        long.spin(); // the unread bytes, reported once at registration
        drop(a);
        let t = Instant::now();
        long.spin();
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
