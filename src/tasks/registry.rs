//! The task registry: every task the server knows, its work, its log and
//! how long it is remembered.
//!
//! A task's mutable part (its [`TaskStatus`] and [`EventLog`]) lives in a
//! `tokio::sync::watch` channel: the work writes to it under a short lock and
//! every watcher is notified, but a watcher only ever *reads* the shared log
//! through its own cursor, so nothing the watchers do (or fail to do) can
//! make the work wait. The work runs in its own tokio task, not tied to any
//! call, and stops when it observes its [`CancellationToken`].
//!
//! Finished tasks are forgotten lazily, on the next access to the registry,
//! once they are older than the retention time or outnumber the retention
//! count; a watcher that is still following a forgotten task keeps its copy
//! of the log until it ends.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    fmt,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime},
};

use futures::{FutureExt, StreamExt, stream::BoxStream};
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    TaskState,
    log::{Change, EventLog, TaskEvent, TaskStatus},
};
use crate::error::{Error, Result};

/// How long CancelTask waits for a running task's work to stop.
pub const CANCEL_ACK_WAIT: Duration = Duration::from_secs(5);

/// How much the registry keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskLimits {
    /// How long a finished task is kept.
    pub retention: Duration,
    /// Most finished tasks kept; the oldest finished are forgotten first.
    pub max_finished_tasks: usize,
    /// Most unfinished tasks [`TaskRegistry::try_start`] accepts.
    pub max_unfinished_tasks: usize,
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
    pub kind: &'static str,
    /// When the task was registered.
    pub created: SystemTime,
    /// State and latest progress.
    pub status: TaskStatus,
}

/// One page of [`TaskRegistry::list`].
#[derive(Debug, Clone)]
pub struct TaskPage {
    /// Tasks, newest first.
    pub tasks: Vec<TaskSnapshot>,
    /// Pass as `before` to get the next page; `None` on the last page.
    pub next_before: Option<u64>,
}

/// A task's events, as a watcher receives them; ends after the terminal one.
pub type TaskWatch = BoxStream<'static, TaskEvent>;

/// Every task of the server; cheap to clone, shared by the services.
#[derive(Clone)]
pub struct TaskRegistry {
    shared: Arc<Shared>,
}

struct Shared {
    limits: TaskLimits,
    tasks: Mutex<Tasks>,
}

/// The index of tasks, behind the registry's lock.
#[derive(Default)]
struct Tasks {
    next_order: u64,
    /// Every task by creation order (its paging key).
    by_order: BTreeMap<u64, Arc<TaskEntry>>,
    by_id: HashMap<String, u64>,
    /// Finished tasks in the order they finished, with the time.
    finished: VecDeque<(Instant, u64)>,
}

/// One task: what never changes, its cancellation and its journal.
struct TaskEntry {
    id: String,
    order: u64,
    kind: &'static str,
    created: SystemTime,
    cancel: CancellationToken,
    /// Why cancellation was requested (the first reason wins).
    cancel_reason: Mutex<Option<String>>,
    journal: watch::Sender<Journal>,
}

/// The mutable part of a task.
struct Journal {
    status: TaskStatus,
    log: EventLog,
}

/// How the work of a task ended.
enum Ending {
    Succeeded,
    Failed(String),
    Cancelled(String),
}

impl TaskRegistry {
    /// An empty registry keeping what `limits` allow.
    pub fn new(limits: TaskLimits) -> Self {
        Self {
            shared: Arc::new(Shared {
                limits,
                tasks: Mutex::default(),
            }),
        }
    }

    /// Registers a task of `kind` (e.g. "ingest"), spawns `work` and returns
    /// the task as created (PENDING or RUNNING).
    ///
    /// `work` returning `Ok(())` makes the task SUCCEEDED, `Err(error)`
    /// FAILED with that error (its message, and its sources in the log); once its token is cancelled the task is
    /// CANCELLED whatever the work returns. A panic in `work` makes it
    /// FAILED. This never refuses: callers with their own admission control
    /// use it; [`TaskRegistry::try_start`] applies the registry's limit.
    pub fn start<F, Fut, E>(&self, kind: &'static str, work: F) -> TaskSnapshot
    where
        F: FnOnce(TaskContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::error::Error + Send + 'static,
    {
        let entry = self.shared.register(kind);
        self.spawn(entry, work)
    }

    /// Like [`TaskRegistry::start`], but refuses with RESOURCE_EXHAUSTED when
    /// `max_unfinished_tasks` tasks are already pending or running.
    pub fn try_start<F, Fut, E>(&self, kind: &'static str, work: F) -> Result<TaskSnapshot>
    where
        F: FnOnce(TaskContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::error::Error + Send + 'static,
    {
        let entry = self.shared.try_register(kind)?;
        Ok(self.spawn(entry, work))
    }

    /// The task with `id` as it is now.
    pub fn get(&self, id: &str) -> Result<TaskSnapshot> {
        Ok(self.shared.find(id)?.snapshot())
    }

    /// Cancels the task with `id` and returns it once its work has stopped
    /// (waiting at most [`CANCEL_ACK_WAIT`]): a pending task becomes
    /// CANCELLED at once; a running one becomes CANCELLED when its work
    /// observes the request, or SUCCEEDED/FAILED if the work finished first,
    /// so the state always says what the work really did (an ingestion that
    /// committed is never reported CANCELLED). A finished task is returned
    /// unchanged.
    pub async fn cancel(&self, id: &str) -> Result<TaskSnapshot> {
        let entry = self.shared.find(id)?;
        self.shared.cancel(&entry, "cancelled by request");
        let mut journal = entry.journal.subscribe();
        let stopped = journal.wait_for(|j| j.status.state.is_terminal());
        if tokio::time::timeout(CANCEL_ACK_WAIT, stopped)
            .await
            .is_err()
        {
            tracing::warn!(task_id = %entry.id, "task still stopping after cancellation");
        }
        Ok(entry.snapshot())
    }

    /// Cancels every unfinished task (at server shutdown), with `reason` as
    /// their last message.
    pub fn cancel_all(&self, reason: &str) {
        let unfinished: Vec<_> = self
            .shared
            .lock()
            .by_order
            .values()
            .filter(|entry| !entry.state().is_terminal())
            .cloned()
            .collect();
        for entry in unfinished {
            self.shared.cancel(&entry, reason);
        }
    }

    /// The sequence of the last event task `id` recorded so far.
    pub fn last_sequence(&self, id: &str) -> Result<u64> {
        let entry = self.shared.find(id)?;
        let last = entry.journal.borrow().log.last_sequence();
        Ok(last)
    }

    /// The events of task `id` with a sequence greater than `after`, then
    /// the live ones, ending right after the terminal event.
    pub fn watch(&self, id: &str, after: u64) -> Result<TaskWatch> {
        let entry = self.shared.find(id)?;
        Ok(follow(entry.journal.subscribe(), after).boxed())
    }

    /// How many tasks the registry keeps, by kind and state (for metrics).
    pub fn counts(&self) -> BTreeMap<(&'static str, TaskState), usize> {
        let tasks = self.shared.lock();
        let mut counts = BTreeMap::new();
        for entry in tasks.by_order.values() {
            *counts.entry((entry.kind, entry.state())).or_insert(0) += 1;
        }
        counts
    }

    /// Up to `page_size` tasks created before the task of order `before`
    /// (from the newest when `None`), newest first.
    pub fn list(&self, page_size: usize, before: Option<u64>) -> TaskPage {
        let mut entries: Vec<Arc<TaskEntry>> = {
            let tasks = self.shared.lock();
            let older = tasks.by_order.range(..before.unwrap_or(u64::MAX));
            older
                .rev()
                .take(page_size + 1)
                .map(|(_, e)| e.clone())
                .collect()
        };
        let next_before = if entries.len() > page_size {
            entries.truncate(page_size);
            entries.last().map(|e| e.order)
        } else {
            None
        };
        TaskPage {
            tasks: entries.iter().map(|e| e.snapshot()).collect(),
            next_before,
        }
    }

    fn spawn<F, Fut, E>(&self, entry: Arc<TaskEntry>, work: F) -> TaskSnapshot
    where
        F: FnOnce(TaskContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::error::Error + Send + 'static,
    {
        let snapshot = entry.snapshot();
        let span = tracing::info_span!("task", task_id = %entry.id, kind = entry.kind);
        tokio::spawn(run(self.shared.clone(), entry, work).instrument(span));
        snapshot
    }
}

impl fmt::Debug for TaskRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskRegistry")
            .field("limits", &self.shared.limits)
            .finish_non_exhaustive()
    }
}

/// Runs the work of one task and records how it ended.
async fn run<F, Fut, E>(shared: Arc<Shared>, entry: Arc<TaskEntry>, work: F)
where
    F: FnOnce(TaskContext) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::error::Error + Send + 'static,
{
    if !entry.start_running() {
        tracing::info!("task cancelled before it started");
        return;
    }
    tracing::info!("task started");
    let context = TaskContext {
        entry: entry.clone(),
    };
    let result = AssertUnwindSafe(async move { work(context).await })
        .catch_unwind()
        .await;
    let ending = match result {
        // Work that completed did its job, even if a cancel came too late.
        Ok(Ok(())) => Ending::Succeeded,
        _ if entry.cancel.is_cancelled() => Ending::Cancelled(entry.cancel_reason()),
        Ok(Err(error)) => {
            tracing::warn!(error = %ErrorChain(&error), "the task's work failed");
            Ending::Failed(error.to_string())
        }
        Err(_) => {
            tracing::error!("the task's work panicked");
            Ending::Failed("internal error: the task's work panicked".into())
        }
    };
    shared.end(&entry, ending);
    tracing::info!(state = entry.state().as_str(), "task ended");
}

/// Formats an error with its sources: `outer: inner: root`.
struct ErrorChain<'a>(&'a dyn std::error::Error);

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

/// Follows a journal from `after`: each poll takes the next retained event
/// after the cursor, or waits for the work to record one.
fn follow(
    journal: watch::Receiver<Journal>,
    after: u64,
) -> impl futures::Stream<Item = TaskEvent> + Send + 'static {
    futures::stream::unfold(Some((journal, after)), |state| async move {
        let (mut journal, cursor) = state?;
        loop {
            let (next, finished) = {
                let journal = journal.borrow_and_update();
                let next = journal.log.next_after(cursor).cloned();
                (next, journal.status.state.is_terminal())
            };
            if let Some(event) = next {
                let more = !event.status.state.is_terminal();
                let cursor = event.sequence;
                return Some((event, more.then_some((journal, cursor))));
            }
            // Nothing after the cursor: the task has finished (the cursor is
            // at its terminal event) or the next event is not recorded yet.
            if finished || journal.changed().await.is_err() {
                return None;
            }
        }
    })
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Tasks> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn register(&self, kind: &'static str) -> Arc<TaskEntry> {
        let mut tasks = self.lock();
        self.prune(&mut tasks);
        tasks.insert(kind, self.limits.max_events)
    }

    fn try_register(&self, kind: &'static str) -> Result<Arc<TaskEntry>> {
        let mut tasks = self.lock();
        self.prune(&mut tasks);
        let unfinished = tasks.by_order.len() - tasks.finished.len();
        if unfinished >= self.limits.max_unfinished_tasks {
            let limit = self.limits.max_unfinished_tasks;
            return Err(Error::ResourceExhausted(format!(
                "the server is at its limit of {limit} unfinished tasks; retry later"
            )));
        }
        Ok(tasks.insert(kind, self.limits.max_events))
    }

    fn find(&self, id: &str) -> Result<Arc<TaskEntry>> {
        let mut tasks = self.lock();
        self.prune(&mut tasks);
        tasks
            .by_id
            .get(id)
            .and_then(|order| tasks.by_order.get(order))
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("task `{id}`")))
    }

    /// Tells the task's work to stop. A task whose work has not started ends
    /// here; a running one ends when its work returns (see [`run`]).
    fn cancel(&self, entry: &TaskEntry, reason: &str) {
        entry.request_cancel(reason);
        if entry.state() == TaskState::Pending {
            self.end(entry, Ending::Cancelled(reason.to_owned()));
        }
    }

    /// Ends `entry` unless it has already ended, then applies retention.
    fn end(&self, entry: &TaskEntry, ending: Ending) {
        if entry.end(ending, self.limits.max_finished_events) {
            let mut tasks = self.lock();
            tasks.finished.push_back((Instant::now(), entry.order));
            self.prune(&mut tasks);
        }
    }

    /// Forgets the finished tasks that are past retention.
    fn prune(&self, tasks: &mut Tasks) {
        let now = Instant::now();
        while let Some(&(finished, order)) = tasks.finished.front() {
            let expired = now.saturating_duration_since(finished) >= self.limits.retention;
            if !expired && tasks.finished.len() <= self.limits.max_finished_tasks {
                break;
            }
            tasks.finished.pop_front();
            if let Some(entry) = tasks.by_order.remove(&order) {
                tasks.by_id.remove(&entry.id);
            }
        }
    }
}

impl Tasks {
    fn insert(&mut self, kind: &'static str, max_events: usize) -> Arc<TaskEntry> {
        self.next_order += 1;
        let entry = Arc::new(TaskEntry::new(self.next_order, kind, max_events));
        self.by_id.insert(entry.id.clone(), entry.order);
        self.by_order.insert(entry.order, entry.clone());
        entry
    }
}

impl TaskEntry {
    /// A PENDING task whose log holds its first event.
    fn new(order: u64, kind: &'static str, max_events: usize) -> Self {
        let created = SystemTime::now();
        let status = TaskStatus::pending(created);
        let mut log = EventLog::new(max_events);
        log.record(Change::State, &status);
        Self {
            id: format!("task-{}", uuid::Uuid::new_v4().simple()),
            order,
            kind,
            created,
            cancel: CancellationToken::new(),
            cancel_reason: Mutex::new(None),
            journal: watch::Sender::new(Journal { status, log }),
        }
    }

    /// Records why the task should stop and tells its work.
    fn request_cancel(&self, reason: &str) {
        let mut why = self
            .cancel_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        why.get_or_insert_with(|| reason.to_owned());
        self.cancel.cancel();
    }

    /// The reason given to [`TaskEntry::request_cancel`].
    fn cancel_reason(&self) -> String {
        let why = self
            .cancel_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        why.clone().unwrap_or_else(|| "cancelled".to_owned())
    }

    fn state(&self) -> TaskState {
        self.journal.borrow().status.state
    }

    fn snapshot(&self) -> TaskSnapshot {
        TaskSnapshot {
            id: self.id.clone(),
            kind: self.kind,
            created: self.created,
            status: self.journal.borrow().status.clone(),
        }
    }

    /// PENDING → RUNNING; false when the task was cancelled first.
    fn start_running(&self) -> bool {
        self.journal
            .send_if_modified(|journal| journal.change_state(TaskState::Running))
    }

    /// Records progress; ignored unless the task is RUNNING.
    fn progress(&self, step: u32, total_steps: u32, message: String) {
        self.journal.send_if_modified(|journal| {
            if journal.status.state != TaskState::Running {
                return false;
            }
            let now = SystemTime::now();
            journal.status.set_progress(step, total_steps, message, now);
            journal.log.record(Change::Progress, &journal.status);
            true
        });
    }

    /// Moves the task to its terminal state; false if it had one already.
    fn end(&self, ending: Ending, keep_events: usize) -> bool {
        self.journal.send_if_modified(|journal| {
            if journal.status.state.is_terminal() {
                return false;
            }
            if journal.status.state == TaskState::Pending {
                // Cancelled before its work started: the life cycle still
                // goes through RUNNING, which the work will then skip.
                journal.change_state(TaskState::Running);
            }
            let next = match ending {
                Ending::Succeeded => {
                    journal.status.percent = 100.0;
                    TaskState::Succeeded
                }
                Ending::Failed(error) => {
                    journal.status.set_error(error);
                    TaskState::Failed
                }
                Ending::Cancelled(reason) => {
                    journal.status.message = reason;
                    TaskState::Cancelled
                }
            };
            let changed = journal.change_state(next);
            journal.log.compact_to(keep_events);
            changed
        })
    }
}

impl Journal {
    /// Moves to `next` and records it, if the life cycle allows.
    fn change_state(&mut self, next: TaskState) -> bool {
        if !self.status.state.can_become(next) {
            return false;
        }
        self.status.state = next;
        self.status.time = SystemTime::now();
        self.log.record(Change::State, &self.status);
        true
    }
}

/// What a task's work gets: a way to report progress and its cancellation.
pub struct TaskContext {
    entry: Arc<TaskEntry>,
}

impl TaskContext {
    /// The id of the task this work belongs to.
    pub fn task_id(&self) -> &str {
        &self.entry.id
    }

    /// Records progress: `step` of `total_steps` (0 while unknown) and a
    /// human-readable message (cut to 1 KiB). Cheap; watchers never slow it
    /// down. Ignored once the task has ended.
    pub fn progress(&self, step: u32, total_steps: u32, message: impl Into<String>) {
        self.entry.progress(step, total_steps, message.into());
    }

    /// Whether the task was cancelled; the work should stop (and undo what
    /// it has not committed) at its next check.
    pub fn is_cancelled(&self) -> bool {
        self.entry.cancel.is_cancelled()
    }

    /// The task's cancellation token, to `select!` on in long waits.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.entry.cancel
    }
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("task_id", &self.entry.id)
            .field("kind", &self.entry.kind)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// What test work fails with.
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Failure(&'static str);

    /// What test work returns.
    type Outcome = Result<(), Failure>;

    fn registry(limits: TaskLimits) -> TaskRegistry {
        TaskRegistry::new(limits)
    }

    /// Every event of task `id`, from the first, until it ends.
    async fn events(registry: &TaskRegistry, id: &str) -> Vec<TaskEvent> {
        registry.watch(id, 0).expect("watch").collect().await
    }

    fn states(events: &[TaskEvent]) -> Vec<TaskState> {
        let mut states: Vec<_> = events.iter().map(|e| e.status.state).collect();
        states.dedup();
        states
    }

    #[tokio::test]
    async fn work_that_returns_ok_succeeds_with_its_progress_logged() {
        let registry = registry(TaskLimits::default());
        let task = registry.start("test", |context| async move {
            for step in 1..=3 {
                context.progress(step, 3, format!("step {step}"));
            }
            Outcome::Ok(())
        });
        assert_eq!(task.status.state, TaskState::Pending);
        let events = events(&registry, &task.id).await;
        let sequences: Vec<_> = events.iter().map(|e| e.sequence).collect();
        assert_eq!(sequences, [1, 2, 3, 4, 5, 6]);
        assert_eq!(
            states(&events),
            [TaskState::Pending, TaskState::Running, TaskState::Succeeded]
        );
        let done = registry.get(&task.id).expect("task");
        assert_eq!((done.status.step, done.status.percent), (3, 100.0));
        assert_eq!(done.status.message, "step 3");
    }

    #[tokio::test]
    async fn work_that_returns_an_error_fails_with_it() {
        let registry = registry(TaskLimits::default());
        let task = registry.start("test", |_| async { Outcome::Err(Failure("disk full")) });
        let events = events(&registry, &task.id).await;
        let last = events.last().expect("terminal event");
        assert_eq!(last.status.state, TaskState::Failed);
        assert_eq!(last.status.error, "disk full");
    }

    #[tokio::test]
    async fn work_that_panics_fails() {
        let registry = registry(TaskLimits::default());
        let task = registry.start("test", |_| async { panic!("bug") as Outcome });
        let events = events(&registry, &task.id).await;
        let last = events.last().expect("terminal event");
        assert_eq!(last.status.state, TaskState::Failed);
        assert!(
            last.status.error.contains("panicked"),
            "{}",
            last.status.error
        );
    }

    #[tokio::test]
    async fn cancelling_waits_for_the_work_to_stop_and_records_cancelled() {
        let registry = registry(TaskLimits::default());
        let (started, mut running) = tokio::sync::watch::channel(false);
        let task = registry.start("test", move |context| async move {
            started.send_replace(true);
            context.cancellation().cancelled().await;
            Outcome::Err(Failure("stopped"))
        });
        running.wait_for(|&r| r).await.expect("work starts");
        let cancelled = registry.cancel(&task.id).await.expect("cancel");
        assert_eq!(cancelled.status.state, TaskState::Cancelled);
        assert_eq!(cancelled.status.message, "cancelled by request");
        assert_eq!(cancelled.status.error, "");
        let events = events(&registry, &task.id).await;
        assert_eq!(
            states(&events),
            [TaskState::Pending, TaskState::Running, TaskState::Cancelled]
        );
        // Idempotent: a second cancel changes nothing.
        assert_eq!(
            registry.cancel(&task.id).await.expect("cancel again"),
            cancelled
        );
    }

    #[tokio::test]
    async fn work_that_completes_despite_a_cancel_is_reported_succeeded() {
        let registry = registry(TaskLimits::default());
        let (started, mut running) = tokio::sync::watch::channel(false);
        let task = registry.start("test", move |context| async move {
            started.send_replace(true);
            // Past the point of no return (say, a commit): finish anyway.
            context.cancellation().cancelled().await;
            Outcome::Ok(())
        });
        running.wait_for(|&r| r).await.expect("work starts");
        let after = registry.cancel(&task.id).await.expect("cancel");
        assert_eq!(after.status.state, TaskState::Succeeded);
    }

    #[tokio::test]
    async fn a_task_cancelled_before_it_starts_never_runs_its_work() {
        let registry = registry(TaskLimits::default());
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        // The current-thread runtime has not polled the spawned work yet.
        let task = registry.start("test", move |_| async move {
            flag.store(true, Ordering::SeqCst);
            Outcome::Ok(())
        });
        registry.cancel(&task.id).await.expect("cancel");
        tokio::task::yield_now().await;
        let events = events(&registry, &task.id).await;
        assert_eq!(
            states(&events),
            [TaskState::Pending, TaskState::Running, TaskState::Cancelled]
        );
        assert!(!ran.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn cancel_all_cancels_every_unfinished_task() {
        let registry = registry(TaskLimits::default());
        let done = registry.start("test", |_| async { Outcome::Ok(()) });
        events(&registry, &done.id).await;
        let waiting = registry.start("test", |context| async move {
            context.cancellation().cancelled().await;
            Outcome::Ok(())
        });
        registry.cancel_all("shutting down");
        events(&registry, &waiting.id).await;
        let waiting = registry.get(&waiting.id).expect("task");
        assert_eq!(waiting.status.state, TaskState::Cancelled);
        assert_eq!(waiting.status.message, "shutting down");
        let done = registry.get(&done.id).expect("task");
        assert_eq!(done.status.state, TaskState::Succeeded);
    }

    #[tokio::test]
    async fn try_start_refuses_beyond_the_unfinished_limit() {
        let registry = registry(TaskLimits {
            max_unfinished_tasks: 1,
            ..TaskLimits::default()
        });
        let first = registry
            .try_start("test", |c| async move {
                c.cancellation().cancelled().await;
                Outcome::Err(Failure("stopped"))
            })
            .expect("first");
        let refused = registry.try_start("test", |_| async { Outcome::Ok(()) });
        assert!(matches!(refused, Err(Error::ResourceExhausted(_))));
        registry.cancel(&first.id).await.expect("cancel");
        assert!(
            registry
                .try_start("test", |_| async { Outcome::Ok(()) })
                .is_ok()
        );
    }

    #[tokio::test]
    async fn the_oldest_finished_tasks_beyond_the_count_are_forgotten() {
        let registry = registry(TaskLimits {
            max_finished_tasks: 2,
            ..TaskLimits::default()
        });
        let mut ids = Vec::new();
        for _ in 0..3 {
            let task = registry.start("test", |_| async { Outcome::Ok(()) });
            events(&registry, &task.id).await;
            ids.push(task.id);
        }
        assert!(matches!(registry.get(&ids[0]), Err(Error::NotFound(_))));
        assert!(registry.get(&ids[1]).is_ok() && registry.get(&ids[2]).is_ok());
    }

    #[tokio::test]
    async fn finished_tasks_are_forgotten_after_the_retention_time() {
        // Retention 0: forgotten on the next access after finishing; the
        // default hour: still there.
        for (retention, kept) in [(Duration::ZERO, false), (Duration::from_secs(3600), true)] {
            let registry = registry(TaskLimits {
                retention,
                ..TaskLimits::default()
            });
            let task = registry.start("test", |_| async { Outcome::Ok(()) });
            events(&registry, &task.id).await;
            assert_eq!(registry.get(&task.id).is_ok(), kept, "{retention:?}");
        }
    }

    #[tokio::test]
    async fn a_finished_task_keeps_its_state_changes_within_the_finished_limit() {
        let registry = registry(TaskLimits {
            max_events: 50,
            max_finished_events: 5,
            ..TaskLimits::default()
        });
        let task = registry.start("test", |context| async move {
            for step in 1..=100 {
                context.progress(step, 100, "");
            }
            Outcome::Ok(())
        });
        let events = events(&registry, &task.id).await;
        assert_eq!(events.len(), 5);
        assert_eq!(
            states(&events),
            [TaskState::Pending, TaskState::Running, TaskState::Succeeded]
        );
        assert_eq!(events.last().map(|e| e.sequence), Some(103));
    }

    #[tokio::test]
    async fn list_pages_newest_first_from_a_stable_cursor() {
        let registry = registry(TaskLimits::default());
        let ids: Vec<_> = (0..5)
            .map(|_| registry.start("test", |_| async { Outcome::Ok(()) }).id)
            .collect();
        let first = registry.list(2, None);
        let page_ids =
            |page: &TaskPage| page.tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>();
        assert_eq!(page_ids(&first), [ids[4].clone(), ids[3].clone()]);
        // A task started between pages does not shift the next page.
        registry.start("test", |_| async { Outcome::Ok(()) });
        let second = registry.list(2, first.next_before);
        assert_eq!(page_ids(&second), [ids[2].clone(), ids[1].clone()]);
        let last = registry.list(2, second.next_before);
        assert_eq!(page_ids(&last), [ids[0].clone()]);
        assert_eq!(last.next_before, None);
    }

    #[tokio::test]
    async fn unknown_ids_are_not_found() {
        let registry = registry(TaskLimits::default());
        assert!(matches!(
            registry.last_sequence("task-x"),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            registry.watch("task-x", 0),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            registry.cancel("task-x").await,
            Err(Error::NotFound(_))
        ));
    }
}
