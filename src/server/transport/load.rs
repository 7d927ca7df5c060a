//! Requests in flight, per connection (for the idle timeout) and per server
//! (for the end of the drain).
//!
//! A request counts from the moment the service is called until its
//! response body is dropped (sent to the end, reset, or cancelled), so a
//! long stream keeps its connection busy and the drain waiting.
//!
//! The count is an atomic, and waiters hear only of its falls to zero:
//! every request starts and ends here, and the server's count is shared by
//! every connection. (A `watch` channel, as before, took a lock and woke
//! every waiter on each change, so a connection's idle timer, and with it
//! the connection's whole task, was polled twice a request: about 5,000
//! instructions of a one-token call.) The idle timer reads when the count
//! last fell to zero instead of hearing of every request.

use std::{
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

use super::coalesce::Round;

/// A count of requests in flight that can be waited on.
#[derive(Debug, Clone, Default)]
pub(crate) struct Load(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    in_flight: AtomicUsize,
    /// Woken when `in_flight` falls to zero.
    idle: Notify,
    /// When it last did, in nanoseconds since `origin`.
    idle_since: AtomicU64,
    origin: Instant,
    /// A connection's gathering of frames for its writes (unused in the
    /// server's count).
    round: Round,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            idle_since: AtomicU64::new(0),
            origin: Instant::now(),
            round: Round::default(),
        }
    }
}

impl Shared {
    fn enter(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    fn exit(&self) {
        // Each exit follows its own enter: the count cannot go below zero.
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            let since = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.idle_since.store(since, Ordering::Release);
            self.idle.notify_waiters();
        }
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// When the count last fell to zero (or the load was made).
    fn idle_since(&self) -> Instant {
        self.origin + Duration::from_nanos(self.idle_since.load(Ordering::Acquire))
    }
}

impl Load {
    /// Counts one more request here and in `server` until the guard drops.
    pub(crate) fn enter(&self, server: &Load) -> InFlight {
        self.0.enter();
        server.0.enter();
        InFlight {
            connection: self.clone(),
            server: server.clone(),
        }
    }

    /// The connection's gathering of frames (see [`super::coalesce`]).
    pub(crate) fn round(&self) -> &Round {
        &self.0.round
    }

    /// Requests in flight now.
    pub(crate) fn in_flight(&self) -> usize {
        self.0.in_flight.load(Ordering::Relaxed)
    }

    /// Resolves when no request is in flight.
    pub(crate) async fn idle(&self) {
        loop {
            let mut fell = pin!(self.0.idle.notified());
            // Registered before the count is read, so a fall to zero in
            // between is not missed.
            fell.as_mut().enable();
            if self.0.is_idle() {
                return;
            }
            fell.await;
        }
    }

    /// Resolves once no request has been in flight for `period`.
    pub(crate) async fn idle_for(&self, period: Duration) {
        loop {
            self.idle().await;
            // A period too long to represent never ends.
            let Some(due) = self.0.idle_since().checked_add(period) else {
                return std::future::pending().await;
            };
            if Instant::now() >= due && self.0.is_idle() {
                return;
            }
            // Requests that come and go meanwhile move `idle_since` (the
            // next turn sleeps again), and one still in flight at `due`
            // makes the next turn wait for it.
            tokio::time::sleep_until(due).await;
        }
    }
}

/// One request in flight; dropping it ends the request.
#[derive(Debug)]
pub(crate) struct InFlight {
    connection: Load,
    server: Load,
}

impl InFlight {
    /// The gathering of frames of the request's connection.
    pub(crate) fn round(&self) -> &Round {
        self.connection.round()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.connection.0.exit();
        self.server.0.exit();
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_waits_for_the_last_request_of_both_counts() {
        let (connection, server) = (Load::default(), Load::default());
        let first = connection.enter(&server);
        let second = Load::default().enter(&server);
        let mut idle = pin!(server.idle());
        assert!(idle.as_mut().now_or_never().is_none());
        drop(first);
        assert!(
            idle.as_mut().now_or_never().is_none(),
            "one request is still in flight"
        );
        assert!(pin!(connection.idle()).now_or_never().is_some());
        drop(second);
        assert!(idle.as_mut().now_or_never().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_for_counts_from_the_last_request() {
        let (connection, server) = (Load::default(), Load::default());
        let period = Duration::from_secs(10);
        let started = Instant::now();
        let mut idle_for = pin!(connection.idle_for(period));
        assert!(idle_for.as_mut().now_or_never().is_none());
        // A request from 4 s to 6 s: the period starts again at its end.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let request = connection.enter(&server);
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(request);
        idle_for.await;
        assert_eq!(started.elapsed(), Duration::from_secs(16));
    }

    #[tokio::test(start_paused = true)]
    async fn a_period_too_long_to_represent_never_ends() {
        let load = Load::default();
        let mut idle_for = pin!(load.idle_for(Duration::MAX));
        assert!(idle_for.as_mut().now_or_never().is_none());
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(idle_for.as_mut().now_or_never().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_at_the_end_of_the_period_holds_it() {
        let (connection, server) = (Load::default(), Load::default());
        let period = Duration::from_secs(10);
        let started = Instant::now();
        let request = connection.enter(&server);
        let ends = async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(request);
        };
        tokio::join!(connection.idle_for(period), ends);
        assert_eq!(started.elapsed(), Duration::from_secs(40));
    }
}
