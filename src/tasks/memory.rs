//! The in-memory task store, the default: every task of this process, its
//! journal, and how long it is remembered.
//!
//! A task's journal is shared with the work that writes it, so recording an
//! event costs a short lock and watchers read it in place. Finished tasks
//! are forgotten lazily, on the next access, once they are older than the
//! retention time or outnumber the retention count; a watcher that is still
//! following a forgotten task keeps its copy of the journal until it ends.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use futures::{
    FutureExt, StreamExt,
    future::{self, BoxFuture},
    stream::BoxStream,
};
use tokio::time::Instant;

use super::{
    page_token,
    store::{CancelRequest, TaskCounts, TaskLimits, TaskPage, TaskSnapshot, TaskStore, TaskWatch},
    watch::Journal,
};
use crate::error::{Error, Result};

/// The tasks of this process.
#[derive(Debug)]
pub(crate) struct MemoryStore {
    limits: TaskLimits,
    tasks: Mutex<Index>,
    /// Signs page tokens: random per process, like the tasks themselves.
    page_token_key: page_token::SigningKey,
}

/// The index of tasks, behind the store's lock.
#[derive(Debug, Default)]
struct Index {
    next_order: u64,
    /// Every task by creation order (its paging key).
    by_order: BTreeMap<u64, Arc<Journal>>,
    by_id: HashMap<String, u64>,
    /// Finished tasks in the order they finished, with the time.
    finished: VecDeque<(Instant, u64)>,
}

impl MemoryStore {
    /// An empty store keeping what `limits` allow.
    pub(crate) fn new(limits: TaskLimits) -> Self {
        Self {
            limits,
            tasks: Mutex::default(),
            page_token_key: page_token::SigningKey::random(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, kind: &'static str) -> Arc<Journal> {
        let mut tasks = self.lock();
        self.prune(&mut tasks);
        tasks.next_order += 1;
        let journal = Arc::new(Journal::new(tasks.next_order, kind, self.limits.max_events));
        tasks.by_id.insert(journal.id.clone(), journal.order);
        tasks.by_order.insert(journal.order, journal.clone());
        journal
    }

    fn find(&self, id: &str) -> Result<Arc<Journal>> {
        let mut tasks = self.lock();
        self.prune(&mut tasks);
        tasks
            .by_id
            .get(id)
            .and_then(|order| tasks.by_order.get(order))
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("task `{id}`")))
    }

    fn page(&self, page_size: usize, before: Option<u64>) -> TaskPage {
        let mut journals: Vec<Arc<Journal>> = {
            let tasks = self.lock();
            let older = tasks.by_order.range(..before.unwrap_or(u64::MAX));
            older
                .rev()
                .take(page_size + 1)
                .map(|(_, j)| j.clone())
                .collect()
        };
        let next_before = if journals.len() > page_size {
            journals.truncate(page_size);
            journals.last().map(|j| j.order)
        } else {
            None
        };
        TaskPage {
            tasks: journals.iter().map(|j| j.snapshot()).collect(),
            next_before,
        }
    }

    /// Forgets the finished tasks that are past retention.
    fn prune(&self, tasks: &mut Index) {
        let now = Instant::now();
        while let Some(&(finished, order)) = tasks.finished.front() {
            let expired = now.saturating_duration_since(finished) >= self.limits.retention;
            if !expired && tasks.finished.len() <= self.limits.max_finished_tasks {
                break;
            }
            tasks.finished.pop_front();
            if let Some(journal) = tasks.by_order.remove(&order) {
                tasks.by_id.remove(&journal.id);
            }
        }
    }
}

impl TaskStore for MemoryStore {
    fn create(&self, kind: &'static str) -> BoxFuture<'_, Result<Arc<Journal>>> {
        future::ready(Ok(self.insert(kind))).boxed()
    }

    fn ended(&self, journal: &Arc<Journal>) {
        let mut tasks = self.lock();
        tasks.finished.push_back((Instant::now(), journal.order));
        self.prune(&mut tasks);
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<TaskSnapshot>> {
        future::ready(self.find(id).map(|j| j.snapshot())).boxed()
    }

    fn last_sequence<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<u64>> {
        future::ready(self.find(id).map(|j| j.last_sequence())).boxed()
    }

    fn watch<'a>(&'a self, id: &'a str, after: u64) -> BoxFuture<'a, Result<TaskWatch>> {
        future::ready(self.find(id).map(|j| j.follow(after).boxed())).boxed()
    }

    fn list(&self, page_size: usize, before: Option<u64>) -> BoxFuture<'_, Result<TaskPage>> {
        future::ready(Ok(self.page(page_size, before))).boxed()
    }

    fn request_cancel(&self, _request: CancelRequest) -> BoxFuture<'_, Result<()>> {
        // Every task of this store runs in this process and is cancelled
        // there; a task that is not running any more has nothing to stop.
        future::ready(Ok(())).boxed()
    }

    fn cancel_requests(&self) -> Option<BoxStream<'static, CancelRequest>> {
        None
    }

    fn counts(&self) -> Option<TaskCounts> {
        let tasks = self.lock();
        let mut counts = TaskCounts::new();
        for journal in tasks.by_order.values() {
            *counts.entry((journal.kind, journal.state())).or_insert(0) += 1;
        }
        Some(counts)
    }

    fn page_token_key(&self) -> &[u8] {
        self.page_token_key.as_bytes()
    }
}
