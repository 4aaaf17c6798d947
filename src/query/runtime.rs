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
//! within that time is answered without a wake-up. The cost is CPU: at most `busy-poll` per
//! idle period, which is per request when requests are sparse. `busy-poll = "0s"` turns it off.

use super::{QueryError, Settings};
use crate::state::Shared;
use crate::sys::ArrivalProbe;
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// Polls for new input for a bounded time before the query thread sleeps.
pub struct BusyPoll {
    probe: ArrivalProbe,
    budget: Duration,
}

impl BusyPoll {
    pub fn new(budget: Duration) -> std::io::Result<BusyPoll> {
        Ok(BusyPoll {
            probe: ArrivalProbe::new()?,
            budget,
        })
    }

    /// Adds a listening or connected socket to the set polled. A failure only costs latency.
    pub fn watch(&self, fd: BorrowedFd<'_>) {
        if let Err(e) = self.probe.watch(fd) {
            tracing::debug!(error = %e, "busy-poll cannot watch a query socket");
        }
    }

    /// Returns as soon as something arrives, or when the budget is spent.
    pub fn spin(&self) {
        let start = Instant::now();
        while !self.probe.arrived() && start.elapsed() < self.budget {
            std::hint::spin_loop();
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
        let hook = poll.clone();
        builder.on_thread_park(move || hook.spin());
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
    fn spin_returns_early_when_input_arrives_and_waits_the_budget_otherwise() {
        let poll = BusyPoll::new(Duration::from_secs(5)).unwrap();
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        poll.watch(b.as_fd());
        a.write_all(b"x").unwrap();
        let t = Instant::now();
        poll.spin();
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());

        // Edge-triggered: the byte still unread is not reported again.
        let short = BusyPoll {
            budget: Duration::from_millis(20),
            ..poll
        };
        let t = Instant::now();
        short.spin();
        assert!(t.elapsed() >= Duration::from_millis(20));

        // A hang-up ends the spin too.
        drop(a);
        let long = BusyPoll {
            budget: Duration::from_secs(5),
            ..short
        };
        let t = Instant::now();
        long.spin();
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
