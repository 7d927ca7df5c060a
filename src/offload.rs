//! CPU-heavy request work, off the async workers.
//!
//! Counting the tokens of a large prompt (cl100k BPE) costs tenths of a
//! second of CPU for a 1 MiB request. Done on a runtime worker, it stalls
//! every other call that worker serves: eight such requests at once took a
//! small call's time to first chunk from half a millisecond to 400 ms. So
//! request work whose input is large runs on tokio's blocking threads,
//! under two bounds:
//! - at most [`OffloadLimits::max_running`] jobs run at once (a semaphore),
//!   so heavy requests cannot take every core from the workers either;
//! - at most [`OffloadLimits::max_queued`] more wait for their turn. A
//!   request beyond that is refused at once with RESOURCE_EXHAUSTED, before
//!   any response starts (gRPC status, HTTP 429); a request that waits does
//!   so inside its response stream, so its deadline (DEADLINE_EXCEEDED) and
//!   its client's cancel end the wait like any other work.
//!
//! Small inputs (below [`OffloadLimits::threshold_bytes`]) never take the
//! hop: the chat hot path does exactly what it did before. A job that has
//! started runs to its end even when its call is gone (a blocking thread
//! cannot be interrupted; its input is bounded by the request limits), and
//! keeps its place under `max_running` until then, so the bound holds.

use std::sync::Arc;

use tokio::sync::{OwnedRwLockWriteGuard, OwnedSemaphorePermit, RwLock, Semaphore};

use crate::error::{Error, Result};

/// Bounds of the offloaded work (from the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffloadLimits {
    /// Inputs of at least this many bytes are offloaded; smaller ones run
    /// in place.
    pub threshold_bytes: usize,
    /// Jobs running at once on blocking threads.
    pub max_running: usize,
    /// Jobs waiting for a turn; beyond it requests are refused.
    pub max_queued: usize,
}

impl Default for OffloadLimits {
    fn default() -> Self {
        Self {
            threshold_bytes: DEFAULT_THRESHOLD_BYTES,
            max_running: default_max_running(),
            max_queued: 64,
        }
    }
}

/// Input size from which request work is offloaded. Counting English text
/// runs at a few MB/s (about 0.5 ms a KiB on a busy 2-core machine; a run
/// of one repeated letter is far slower), so below 8 KiB a prompt costs a
/// worker about a millisecond at most, and a small call the hop to a
/// blocking thread would cost more than it saves.
pub const DEFAULT_THRESHOLD_BYTES: usize = 8 * 1024;

/// Half the machine's cores (at least one): heavy requests get the other
/// half's share of CPU only through the async workers' small calls.
pub fn default_max_running() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get() / 2)
        .max(1)
}

/// The server's pool of offloaded work; cheap to clone.
#[derive(Debug, Clone)]
pub struct Offload {
    limits: OffloadLimits,
    /// A place per job admitted (running or waiting).
    admitted: Arc<Semaphore>,
    /// A place per job running.
    running: Arc<Semaphore>,
    /// Jobs read-lock it before they run; [`Offload::pause`] write-locks it
    /// (for tests that need the pool busy for as long as they say).
    gate: Arc<RwLock<()>>,
}

impl Default for Offload {
    fn default() -> Self {
        Self::new(OffloadLimits::default())
    }
}

impl Offload {
    /// A pool within `limits`.
    pub fn new(limits: OffloadLimits) -> Self {
        let limits = OffloadLimits {
            max_running: limits.max_running.clamp(1, Semaphore::MAX_PERMITS / 2),
            max_queued: limits.max_queued.min(Semaphore::MAX_PERMITS / 2),
            ..limits
        };
        Self {
            admitted: Arc::new(Semaphore::new(limits.max_running + limits.max_queued)),
            running: Arc::new(Semaphore::new(limits.max_running)),
            gate: Arc::new(RwLock::new(())),
            limits,
        }
    }

    /// The pool's limits.
    pub fn limits(&self) -> OffloadLimits {
        self.limits
    }

    /// A place in the pool for work on `bytes` of input: `None` when the
    /// input is small enough to work on in place, RESOURCE_EXHAUSTED when
    /// every place is taken.
    pub(crate) fn admit(&self, bytes: usize) -> Result<Option<Ticket>> {
        if bytes < self.limits.threshold_bytes {
            return Ok(None);
        }
        match self.admitted.clone().try_acquire_owned() {
            Ok(place) => Ok(Some(Ticket {
                _place: place,
                running: self.running.clone(),
                gate: self.gate.clone(),
            })),
            Err(_) => Err(Error::ResourceExhausted(format!(
                "the server is busy with {} large requests; retry later",
                self.limits.max_running + self.limits.max_queued
            ))),
        }
    }

    /// Jobs admitted and not finished (running or waiting).
    pub fn in_flight(&self) -> usize {
        (self.limits.max_running + self.limits.max_queued)
            .saturating_sub(self.admitted.available_permits())
    }

    /// Holds every job back until the guard drops: admitted jobs wait on
    /// their blocking thread, as if the work took that long. `None` when the
    /// pool is paused already or a job holds the gate. For tests.
    #[doc(hidden)]
    pub fn pause(&self) -> Option<Paused> {
        let guard = self.gate.clone().try_write_owned().ok()?;
        Some(Paused { _guard: guard })
    }
}

/// Holds the pool's jobs back until dropped (see [`Offload::pause`]).
#[doc(hidden)]
#[derive(Debug)]
pub struct Paused {
    _guard: OwnedRwLockWriteGuard<()>,
}

/// A job's place in the pool, from admission until its work has ended.
#[derive(Debug)]
pub struct Ticket {
    _place: OwnedSemaphorePermit,
    running: Arc<Semaphore>,
    gate: Arc<RwLock<()>>,
}

impl Ticket {
    /// Waits for a turn, then runs `work` on a blocking thread and returns
    /// its result. Dropping the future while it waits gives the place back;
    /// once the work runs, it finishes on its thread and its places are
    /// released then.
    pub async fn run<T, F>(self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let turn = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("the offload pool is closed".into()))?;
        let gate = self.gate.clone();
        tokio::task::spawn_blocking(move || {
            let _places = (self, turn);
            let _open = gate.blocking_read();
            work()
        })
        .await
        .map_err(|e| Error::Internal(format!("offloaded work did not complete: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(max_running: usize, max_queued: usize) -> Offload {
        Offload::new(OffloadLimits {
            threshold_bytes: 100,
            max_running,
            max_queued,
        })
    }

    #[test]
    fn small_inputs_stay_in_place() {
        assert!(matches!(pool(1, 0).admit(99), Ok(None)));
        assert!(matches!(pool(1, 0).admit(100), Ok(Some(_))));
    }

    #[tokio::test]
    async fn admission_is_bounded_and_places_come_back() {
        let pool = pool(1, 1);
        let first = pool.admit(1_000).expect("room").expect("offloaded");
        let second = pool.admit(1_000).expect("queued").expect("offloaded");
        assert_eq!(pool.in_flight(), 2);
        let refused = pool.admit(1_000);
        assert!(matches!(refused, Err(Error::ResourceExhausted(_))));
        assert_eq!(first.run(|| 6 * 7).await.expect("runs"), 42);
        drop(second);
        assert_eq!(pool.in_flight(), 0);
        assert!(pool.admit(1_000).expect("room again").is_some());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn work_runs_off_the_async_thread() {
        let caller = std::thread::current().id();
        let ticket = pool(1, 0).admit(1_000).expect("room").expect("offloaded");
        let worker = ticket
            .run(|| std::thread::current().id())
            .await
            .expect("runs");
        assert_ne!(worker, caller);
    }

    #[tokio::test]
    async fn a_paused_pool_holds_its_jobs_until_released() {
        let pool = pool(2, 0);
        let paused = pool.pause().expect("not paused yet");
        let ticket = pool.admit(1_000).expect("room").expect("offloaded");
        let job = tokio::spawn(ticket.run(|| 42));
        // The job holds its place while paused, and runs once released.
        assert_eq!(pool.in_flight(), 1);
        drop(paused);
        assert_eq!(job.await.expect("joined").expect("ran"), 42);
        assert_eq!(pool.in_flight(), 0);
    }
}
