//! Admission of ingestions: how much the ingestions waiting for the index
//! writer may hold, and which document ids they will write.
//!
//! The index has one writer, so ingestions run one at a time and the others
//! wait as tasks, each holding its whole request (up to
//! [`MAX_INGEST_BYTES`](super::request::MAX_INGEST_BYTES) of documents).
//! Without a bound, a client could queue a thousand of them and the server
//! would hold tens of gigabytes. [`IngestQueue`] admits an ingestion only
//! while the documents of the admitted, unfinished ones (the running one
//! included) stay within the limit (`--max-queued-ingest-bytes`); beyond it
//! IngestDocuments is refused with RESOURCE_EXHAUSTED and a retry hint
//! before a task exists. An ingestion is always admitted when no other is
//! held, so a limit below one request's size never makes a request
//! impossible.
//!
//! The queue also knows the ids those ingestions will write. DeleteDocument
//! must wait for the writer when its id is on its way (the delete must come
//! after the ingestion the client started first), but an id that is neither
//! indexed nor on its way is answered NOT_FOUND at once, without queueing
//! behind a running ingestion.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use super::document::NewDocument;
use crate::error::{Error, Result};

/// Default of `--max-queued-ingest-bytes`: four requests of the largest
/// size.
pub const DEFAULT_MAX_QUEUED_INGEST_BYTES: usize = 128 << 20;

/// Documents indexed per second, about, on one core (the built-in analyzer
/// on mixed English and Chinese prose); used to tell a refused client how
/// long the queue needs to drain.
const INDEXED_BYTES_PER_SECOND: u64 = 4 << 20;
/// Shortest and longest retry hint.
const RETRY_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

/// The ingestions admitted and not finished; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct IngestQueue {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    limit: usize,
    held: Mutex<Held>,
}

/// What the admitted ingestions hold.
#[derive(Debug, Default)]
struct Held {
    /// Bytes of their documents.
    bytes: usize,
    /// How many there are.
    ingestions: usize,
    /// The ids they will write (given by the client; assigned ids are
    /// unknown to clients until the ingestion ends), each with how many
    /// ingestions name it.
    ids: HashMap<String, usize>,
}

/// One admitted ingestion's share of the queue, given back when dropped
/// (when the ingestion's task ends, whatever its outcome).
#[derive(Debug)]
pub(crate) struct Admitted {
    shared: Arc<Shared>,
    bytes: usize,
    ids: Vec<String>,
}

impl IngestQueue {
    /// A queue admitting ingestions while they hold at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                limit,
                held: Mutex::default(),
            }),
        }
    }

    /// Admits an ingestion of `documents`, or refuses it with
    /// RESOURCE_EXHAUSTED and a retry hint when it would take the queue over
    /// its limit.
    pub(crate) fn admit(&self, documents: &[NewDocument]) -> Result<Admitted> {
        let bytes = documents
            .iter()
            .map(NewDocument::size_bytes)
            .fold(0usize, usize::saturating_add);
        let mut held = self.shared.held();
        let total = held.bytes.saturating_add(bytes);
        if held.ingestions > 0 && total > self.shared.limit {
            let retry_after = drain_time(held.bytes);
            return Err(Error::RateLimited {
                message: format!(
                    "ingestion queue full: {} ingestions hold {} bytes of documents, this one \
                     has {bytes} and the server's limit is {} (--max-queued-ingest-bytes); \
                     retry in {} s",
                    held.ingestions,
                    held.bytes,
                    self.shared.limit,
                    retry_after.as_secs()
                ),
                retry_after: Some(retry_after),
            });
        }
        held.bytes = total;
        held.ingestions += 1;
        let ids: Vec<String> = documents
            .iter()
            .filter(|d| !d.id.is_empty())
            .map(|d| d.id.clone())
            .collect();
        for id in &ids {
            *held.ids.entry(id.clone()).or_insert(0) += 1;
        }
        Ok(Admitted {
            shared: self.shared.clone(),
            bytes,
            ids,
        })
    }

    /// Whether an admitted, unfinished ingestion will write document `id`.
    pub(crate) fn holds(&self, id: &str) -> bool {
        self.shared.held().ids.contains_key(id)
    }

    /// Bytes of documents the admitted ingestions hold now.
    #[cfg(test)]
    pub(crate) fn held_bytes(&self) -> usize {
        self.shared.held().bytes
    }
}

impl Shared {
    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut held = self.shared.held();
        held.bytes = held.bytes.saturating_sub(self.bytes);
        held.ingestions = held.ingestions.saturating_sub(1);
        for id in self.ids.drain(..) {
            if let Some(count) = held.ids.get_mut(&id) {
                *count -= 1;
                if *count == 0 {
                    held.ids.remove(&id);
                }
            }
        }
    }
}

/// About how long indexing `bytes` takes, within [`RETRY_RANGE`].
fn drain_time(bytes: usize) -> Duration {
    let seconds = (bytes as u64).div_ceil(INDEXED_BYTES_PER_SECOND);
    Duration::from_secs(seconds).clamp(RETRY_RANGE.0, RETRY_RANGE.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn documents(ids: &[&str], bytes_each: usize) -> Vec<NewDocument> {
        ids.iter()
            .map(|id| NewDocument {
                id: (*id).into(),
                text: "x".repeat(bytes_each - id.len()),
                ..NewDocument::default()
            })
            .collect()
    }

    #[test]
    fn admits_within_the_limit_and_releases_on_drop() {
        let queue = IngestQueue::new(1000);
        let first = queue.admit(&documents(&["a"], 600)).expect("first");
        let refused = queue.admit(&documents(&["b"], 500)).expect_err("over");
        let Error::RateLimited {
            retry_after: Some(delay),
            message,
        } = refused
        else {
            panic!("not a retryable refusal: {refused:?}");
        };
        assert_eq!(delay, RETRY_RANGE.0);
        assert!(message.contains("--max-queued-ingest-bytes"), "{message}");
        let second = queue.admit(&documents(&["c"], 400)).expect("fits");
        assert_eq!(queue.held_bytes(), 1000);
        drop(first);
        drop(second);
        assert_eq!(queue.held_bytes(), 0);
        queue.admit(&documents(&["b"], 500)).expect("room again");
    }

    #[test]
    fn one_ingestion_is_admitted_whatever_its_size() {
        let queue = IngestQueue::new(10);
        let big = queue.admit(&documents(&["a"], 100)).expect("alone");
        assert!(queue.admit(&documents(&["b"], 1)).is_err());
        drop(big);
        assert!(queue.admit(&documents(&["b"], 100)).is_ok());
    }

    #[test]
    fn ids_are_held_until_every_ingestion_naming_them_ends() {
        let queue = IngestQueue::new(usize::MAX);
        let one = queue.admit(&documents(&["a", "b"], 10)).expect("one");
        let two = queue.admit(&documents(&["a"], 10)).expect("two");
        assert!(queue.holds("a") && queue.holds("b") && !queue.holds("c"));
        drop(one);
        assert!(queue.holds("a") && !queue.holds("b"));
        drop(two);
        assert!(!queue.holds("a"));
    }

    #[test]
    fn the_retry_hint_grows_with_the_queue_and_stays_bounded() {
        assert_eq!(drain_time(0), RETRY_RANGE.0);
        assert_eq!(drain_time(12 << 20), Duration::from_secs(3));
        assert_eq!(drain_time(usize::MAX), RETRY_RANGE.1);
    }
}
