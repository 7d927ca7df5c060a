//! Graceful shutdown as an explicit object handed to whoever must react.
//!
//! Three moments, each a cancellation token:
//! 1. `requested`: someone (SIGTERM, Ctrl-C, a test) asked the server to stop;
//! 2. `draining`: health reports NOT_SERVING and no new call is accepted,
//!    while in-flight streams run on for the grace period;
//! 3. `aborted`: the grace period is over; in-flight streams end with
//!    UNAVAILABLE and their work is dropped.
//!
//! A second request during the drain (a second SIGTERM or Ctrl-C) is
//! `forced`: the server skips what remains of the grace period and stops.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The server's shutdown signal, cheap to clone: one reference count, so
/// that the calls and connections that each keep one take no lock for it
/// (cloning a `CancellationToken` locks its node).
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<Signals>);

#[derive(Debug, Default)]
struct Signals {
    requested: CancellationToken,
    forced: CancellationToken,
    draining: CancellationToken,
    aborted: CancellationToken,
    /// Mirror `draining` and `aborted` for the checks made per call and per
    /// chunk: a `CancellationToken` answers `is_cancelled` under a mutex
    /// shared by every stream.
    draining_flag: AtomicBool,
    aborted_flag: AtomicBool,
}

impl Shutdown {
    /// A shutdown signal that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the server to shut down gracefully. Idempotent.
    pub fn request(&self) {
        self.0.requested.cancel();
    }

    /// Resolves once shutdown has been requested.
    pub async fn requested(&self) {
        self.0.requested.cancelled().await;
    }

    /// Asks the server to stop at once, without waiting for in-flight
    /// calls (a second signal).
    pub fn force(&self) {
        self.0.requested.cancel();
        self.0.forced.cancel();
    }

    /// Resolves once an immediate stop has been asked for.
    pub async fn forced(&self) {
        self.0.forced.cancelled().await;
    }

    /// Enters the drain period: no new calls from now on.
    pub(crate) fn start_draining(&self) {
        // Set before waking anyone, so a woken task sees it.
        self.0.draining_flag.store(true, Ordering::Release);
        self.0.draining.cancel();
    }

    /// Whether the server has stopped taking new calls.
    pub fn is_draining(&self) -> bool {
        self.0.draining_flag.load(Ordering::Acquire)
    }

    /// Resolves once the drain period starts.
    pub(crate) fn draining(&self) -> WaitForCancellationFutureOwned {
        self.0.draining.clone().cancelled_owned()
    }

    /// Ends every in-flight stream.
    pub(crate) fn abort_streams(&self) {
        // Set before waking anyone, so a woken stream sees it.
        self.0.aborted_flag.store(true, Ordering::Release);
        self.0.aborted.cancel();
    }

    /// Whether in-flight streams must end; one atomic load.
    pub fn are_streams_aborted(&self) -> bool {
        self.0.aborted_flag.load(Ordering::Acquire)
    }

    /// Resolves once in-flight streams must end.
    pub fn streams_aborted(&self) -> WaitForCancellationFutureOwned {
        self.0.aborted.clone().cancelled_owned()
    }
}
