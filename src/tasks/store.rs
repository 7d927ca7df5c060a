//! Where tasks are kept: the [`TaskStore`] trait and the types it speaks.
//!
//! A store keeps task records, one event stream per task (read after a
//! sequence, then followed live), the newest-first list, and delivers
//! cancel requests to the replica whose work must stop. The work itself
//! always runs in the replica that started it ([`super::work`]); the store
//! decides who else can see it. [`super::memory::MemoryStore`] keeps
//! everything in this process (the default: nothing to run, nothing to
//! wait on); a Redis store keeps it in Redis, so every
//! replica on the same Redis serves every task.
//!
//! The trait is object-safe (boxed futures), because the store is chosen at
//! start-up from the command line.

use std::{fmt, sync::Arc, time::Duration, time::SystemTime};

use futures::{future::BoxFuture, stream::BoxStream};

use super::{TaskEvent, TaskStatus, watch::Journal};
use crate::error::Result;

/// How much a store and the work runner keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TaskLimits {
    /// How long a finished task is kept.
    pub retention: Duration,
    /// Most finished tasks kept; the oldest finished are forgotten first.
    pub max_finished_tasks: usize,
    /// Most unfinished tasks `TaskRegistry::try_start` accepts (per replica).
    pub max_unfinished_tasks: usize,
    /// Most unfinished demo tasks `TaskRegistry::try_start` accepts (per
    /// replica), within `max_unfinished_tasks`: demo tasks have a small
    /// budget of their own, so they cannot take the room ingestion needs.
    pub max_demo_tasks: usize,
    /// Most events kept per unfinished task (older progress is compacted).
    pub max_events: usize,
    /// Most events kept per finished task.
    pub max_finished_events: usize,
}

impl Default for TaskLimits {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(3600),
            max_finished_tasks: 10_000,
            max_unfinished_tasks: 1_000,
            max_demo_tasks: 16,
            max_events: 1_000,
            max_finished_events: 100,
        }
    }
}

/// A task as it is at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSnapshot {
    /// Unique id, `task-` and 32 hex digits.
    pub id: String,
    /// What the task does, such as `demo` or `ingest`.
    pub kind: String,
    /// When the task was registered.
    pub created: SystemTime,
    /// State and latest progress.
    pub status: TaskStatus,
}

/// One page of the newest-first task list.
#[derive(Debug, Clone)]
pub(crate) struct TaskPage {
    /// Tasks, newest first.
    pub tasks: Vec<TaskSnapshot>,
    /// Pass as `before` to get the next page; `None` on the last page.
    pub next_before: Option<u64>,
}

/// A task's events, as a watcher receives them; ends after the terminal one.
pub(crate) type TaskWatch = BoxStream<'static, TaskEvent>;

/// A request that the work of task `id` stop, for `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CancelRequest {
    /// The task.
    pub id: String,
    /// Why (becomes the task's last message).
    pub reason: String,
}

/// Task records, event streams, the list and cancel requests.
pub(crate) trait TaskStore: Send + Sync + fmt::Debug + 'static {
    /// Registers a PENDING task of `kind` (its first event recorded) and
    /// returns the journal its work writes to; once this returns, every
    /// replica on the store can see the task.
    fn create(&self, kind: &'static str) -> BoxFuture<'_, Result<Arc<Journal>>>;

    /// Tells the store that the task of `journal` has ended (its retention
    /// starts); called once, after its terminal event.
    fn ended(&self, journal: &Arc<Journal>);

    /// The task `id` as it is now; NOT_FOUND if unknown or forgotten.
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<TaskSnapshot>>;

    /// The sequence of the last event task `id` recorded so far.
    fn last_sequence<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<u64>>;

    /// The events of task `id` with a sequence greater than `after`, then
    /// the live ones, ending right after the terminal event.
    fn watch<'a>(&'a self, id: &'a str, after: u64) -> BoxFuture<'a, Result<TaskWatch>>;

    /// Up to `page_size` tasks older than the list key `before` (from the
    /// newest when `None`), newest first.
    fn list(&self, page_size: usize, before: Option<u64>) -> BoxFuture<'_, Result<TaskPage>>;

    /// Delivers `request` to the replica running the task (this replica's
    /// own tasks are cancelled without the store).
    fn request_cancel(&self, request: CancelRequest) -> BoxFuture<'_, Result<()>>;

    /// Cancel requests other replicas made for tasks this replica may run;
    /// `None` when the store serves one process only.
    fn cancel_requests(&self) -> Option<BoxStream<'static, CancelRequest>>;

    /// How many tasks the store keeps, by kind and state (for metrics), when
    /// it can tell without a round trip; `None` otherwise (a shared store),
    /// and the registry counts the tasks this replica runs.
    fn counts(&self) -> Option<TaskCounts> {
        None
    }

    /// The key that signs ListTasks page tokens
    /// ([`super::page_token`]): the same for every replica that sees this
    /// store's tasks, so a token from one is honoured by all.
    fn page_token_key(&self) -> &[u8];
}

/// Tasks by kind and state.
pub(crate) type TaskCounts = std::collections::BTreeMap<(&'static str, super::TaskState), usize>;
