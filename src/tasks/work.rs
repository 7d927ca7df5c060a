//! The work of tasks: spawning it, what it may do ([`TaskContext`]), how its
//! ending is recorded, and cancelling it, whichever store keeps the tasks.
//!
//! The work of a task runs in its own tokio task, not tied to any call, in
//! the replica that started it, and stops when it observes its
//! [`CancellationToken`]. A cancel request for a task this replica runs is
//! handled here at once; one for a task of another replica goes through the
//! store, which delivers it to that replica's runner.

use std::{
    collections::HashMap,
    fmt,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use futures::{FutureExt, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    TaskState,
    memory::MemoryStore,
    page_token::PageTokens,
    service::DEMO_TASK_KIND,
    store::{CancelRequest, TaskCounts, TaskLimits, TaskPage, TaskSnapshot, TaskStore, TaskWatch},
    watch::{Ending, Journal},
};
use crate::error::{Error, Result};

/// How long CancelTask waits for a running task's work to stop.
pub(crate) const CANCEL_ACK_WAIT: Duration = Duration::from_secs(5);

/// The reason CancelTask gives.
const CANCELLED_BY_REQUEST: &str = "cancelled by request";

/// Every task the server can see, and the work of those it runs; cheap to
/// clone, shared by the services.
#[derive(Clone)]
pub(crate) struct TaskRegistry {
    shared: Arc<Shared>,
}

struct Shared {
    limits: TaskLimits,
    /// Kinds of task with a budget of their own (within the limit of
    /// unfinished tasks): a permit per unfinished task of the kind.
    budgets: HashMap<&'static str, KindBudget>,
    store: Arc<dyn TaskStore>,
    /// Issues and checks ListTasks page tokens with the store's key.
    page_tokens: PageTokens,
    /// The tasks whose work runs in this process, until they end.
    running: Mutex<HashMap<String, Arc<Running>>>,
}

/// The budget of one kind of task.
struct KindBudget {
    limit: usize,
    permits: Arc<Semaphore>,
}

impl KindBudget {
    fn new(limit: usize) -> Self {
        let limit = limit.min(Semaphore::MAX_PERMITS);
        Self {
            limit,
            permits: Arc::new(Semaphore::new(limit)),
        }
    }
}

/// A task whose work runs here: its journal and its cancellation.
struct Running {
    journal: Arc<Journal>,
    cancel: CancellationToken,
    /// Why cancellation was requested (the first reason wins).
    cancel_reason: Mutex<Option<String>>,
    /// The task's place in its kind's budget, given back when it ends.
    budget: Mutex<Option<OwnedSemaphorePermit>>,
}

impl TaskRegistry {
    /// A registry keeping its tasks in memory, as `limits` allow.
    pub(crate) fn new(limits: TaskLimits) -> Self {
        Self::with_store(limits, Arc::new(MemoryStore::new(limits)))
    }

    /// A registry over `store`; must be called within a tokio runtime when
    /// the store delivers cancel requests from other replicas.
    pub(crate) fn with_store(limits: TaskLimits, store: Arc<dyn TaskStore>) -> Self {
        let budgets = HashMap::from([(DEMO_TASK_KIND, KindBudget::new(limits.max_demo_tasks))]);
        let shared = Arc::new(Shared {
            limits,
            budgets,
            page_tokens: PageTokens::new(store.page_token_key()),
            store,
            running: Mutex::default(),
        });
        if let Some(requests) = shared.store.cancel_requests() {
            tokio::spawn(serve_cancel_requests(Arc::downgrade(&shared), requests));
        }
        Self { shared }
    }

    /// Registers a task of `kind` (e.g. "ingest"), spawns `work` and returns
    /// the task as created (PENDING or RUNNING).
    ///
    /// `work` returning `Ok(())` makes the task SUCCEEDED, `Err(error)`
    /// FAILED with that error (its message, and its sources in the log);
    /// once its token is cancelled the task is CANCELLED whatever the work
    /// returns. A panic in `work` makes it FAILED. This never refuses (but
    /// for a failing store): callers with their own admission control use
    /// it; [`TaskRegistry::try_start`] applies the registry's limit.
    #[cfg(test)]
    pub(crate) async fn start<F, Fut, E>(&self, kind: &'static str, work: F) -> Result<TaskSnapshot>
    where
        F: FnOnce(TaskContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::error::Error + Send + 'static,
    {
        let journal = self.shared.store.create(kind).await?;
        Ok(self.spawn(journal, None, work))
    }

    /// Like [`TaskRegistry::start`], but refuses with RESOURCE_EXHAUSTED when
    /// `max_unfinished_tasks` tasks of this replica are pending or running,
    /// or when `kind` has a budget of its own (demo tasks:
    /// `max_demo_tasks`) and that is full.
    pub(crate) async fn try_start<F, Fut, E>(
        &self,
        kind: &'static str,
        work: F,
    ) -> Result<TaskSnapshot>
    where
        F: FnOnce(TaskContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::error::Error + Send + 'static,
    {
        let limit = self.shared.limits.max_unfinished_tasks;
        if self.shared.running().len() >= limit {
            return Err(Error::ResourceExhausted(format!(
                "the server is at its limit of {limit} unfinished tasks; retry later"
            )));
        }
        let permit = match self.shared.budgets.get(kind) {
            None => None,
            Some(budget) => match budget.permits.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    return Err(Error::ResourceExhausted(format!(
                        "the server runs at most {} {kind} tasks at once; retry when one has \
                         finished or cancel one",
                        budget.limit
                    )));
                }
            },
        };
        let journal = self.shared.store.create(kind).await?;
        Ok(self.spawn(journal, permit, work))
    }

    /// The task with `id` as it is now.
    pub(crate) async fn get(&self, id: &str) -> Result<TaskSnapshot> {
        self.shared.store.get(id).await
    }

    /// Cancels the task with `id` and returns it once its work has stopped
    /// (waiting at most [`CANCEL_ACK_WAIT`]): a pending task becomes
    /// CANCELLED at once; a running one becomes CANCELLED when its work
    /// observes the request, or SUCCEEDED/FAILED if the work finished first,
    /// so the state always says what the work really did (an ingestion that
    /// committed is never reported CANCELLED). A finished task is returned
    /// unchanged.
    pub(crate) async fn cancel(&self, id: &str) -> Result<TaskSnapshot> {
        let local = self.shared.running().get(id).cloned();
        if let Some(task) = local {
            self.shared.cancel(&task, CANCELLED_BY_REQUEST);
            if tokio::time::timeout(CANCEL_ACK_WAIT, task.journal.ended())
                .await
                .is_err()
            {
                tracing::warn!(task_id = %id, "task still stopping after cancellation");
            }
            return Ok(task.journal.snapshot());
        }
        let task = self.shared.store.get(id).await?;
        if task.status.state.is_terminal() {
            return Ok(task);
        }
        let request = CancelRequest {
            id: id.to_owned(),
            reason: CANCELLED_BY_REQUEST.to_owned(),
        };
        self.shared.store.request_cancel(request).await?;
        let mut events = self.shared.store.watch(id, 0).await?;
        let ended = async { while events.next().await.is_some() {} };
        if tokio::time::timeout(CANCEL_ACK_WAIT, ended).await.is_err() {
            tracing::warn!(task_id = %id, "task of another replica still stopping after cancellation");
        }
        self.shared.store.get(id).await
    }

    /// Cancels every unfinished task of this replica (at server shutdown),
    /// with `reason` as their last message.
    pub(crate) fn cancel_all(&self, reason: &str) {
        let running: Vec<_> = self.shared.running().values().cloned().collect();
        for task in running {
            self.shared.cancel(&task, reason);
        }
    }

    /// The sequence of the last event task `id` recorded so far.
    pub(crate) async fn last_sequence(&self, id: &str) -> Result<u64> {
        self.shared.store.last_sequence(id).await
    }

    /// The events of task `id` with a sequence greater than `after`, then
    /// the live ones, ending right after the terminal event.
    pub(crate) async fn watch(&self, id: &str, after: u64) -> Result<TaskWatch> {
        self.shared.store.watch(id, after).await
    }

    /// How many tasks the store keeps by kind and state; with a shared
    /// store, the unfinished tasks this replica runs.
    pub(crate) fn counts(&self) -> TaskCounts {
        if let Some(counts) = self.shared.store.counts() {
            return counts;
        }
        let mut counts = TaskCounts::new();
        for task in self.shared.running().values() {
            let key = (task.journal.kind, task.journal.state());
            *counts.entry(key).or_insert(0) += 1;
        }
        counts
    }

    /// The page tokens of [`TaskRegistry::list`]: valid on every replica
    /// of the store.
    pub(crate) fn page_tokens(&self) -> &PageTokens {
        &self.shared.page_tokens
    }

    /// Up to `page_size` tasks created before the list key `before` (from
    /// the newest when `None`), newest first.
    pub(crate) async fn list(&self, page_size: usize, before: Option<u64>) -> Result<TaskPage> {
        self.shared.store.list(page_size, before).await
    }

    fn spawn<F, Fut, E>(
        &self,
        journal: Arc<Journal>,
        budget: Option<OwnedSemaphorePermit>,
        work: F,
    ) -> TaskSnapshot
    where
        F: FnOnce(TaskContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::error::Error + Send + 'static,
    {
        let snapshot = journal.snapshot();
        let task = Arc::new(Running {
            journal,
            cancel: CancellationToken::new(),
            cancel_reason: Mutex::new(None),
            budget: Mutex::new(budget),
        });
        let id = task.journal.id.clone();
        self.shared.running().insert(id.clone(), task.clone());
        let span = tracing::info_span!("task", task_id = %id, kind = task.journal.kind);
        tokio::spawn(run(self.shared.clone(), task, work).instrument(span));
        snapshot
    }
}

impl fmt::Debug for TaskRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskRegistry")
            .field("limits", &self.shared.limits)
            .field("store", &self.shared.store)
            .finish_non_exhaustive()
    }
}

/// Runs the work of one task and records how it ended.
async fn run<F, Fut, E>(shared: Arc<Shared>, task: Arc<Running>, work: F)
where
    F: FnOnce(TaskContext) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::error::Error + Send + 'static,
{
    if !task.journal.start_running() {
        tracing::info!("task cancelled before it started");
        return;
    }
    tracing::info!("task started");
    let context = TaskContext { task: task.clone() };
    let result = AssertUnwindSafe(async move { work(context).await })
        .catch_unwind()
        .await;
    let ending = match result {
        // Work that completed did its job, even if a cancel came too late.
        Ok(Ok(())) => Ending::Succeeded,
        _ if task.cancel.is_cancelled() => Ending::Cancelled(task.cancel_reason()),
        Ok(Err(error)) => {
            tracing::warn!(error = %ErrorChain(&error), "the task's work failed");
            Ending::Failed(error.to_string())
        }
        Err(_) => {
            tracing::error!("the task's work panicked");
            Ending::Failed("internal error: the task's work panicked".into())
        }
    };
    shared.end(&task, ending);
    tracing::info!(state = task.journal.state().as_str(), "task ended");
}

/// Cancels this replica's tasks named by other replicas' requests, for as
/// long as the registry lives.
async fn serve_cancel_requests(
    shared: std::sync::Weak<Shared>,
    mut requests: futures::stream::BoxStream<'static, CancelRequest>,
) {
    while let Some(request) = requests.next().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let task = shared.running().get(&request.id).cloned();
        if let Some(task) = task {
            tracing::info!(task_id = %request.id, "cancel request from another replica");
            shared.cancel(&task, &request.reason);
        }
    }
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

impl Shared {
    fn running(&self) -> MutexGuard<'_, HashMap<String, Arc<Running>>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells the task's work to stop. A task whose work has not started ends
    /// here; a running one ends when its work returns (see [`run`]).
    fn cancel(&self, task: &Running, reason: &str) {
        task.request_cancel(reason);
        if task.journal.state() == TaskState::Pending {
            self.end(task, Ending::Cancelled(reason.to_owned()));
        }
    }

    /// Ends `task` unless it has already ended, then hands it to the store's
    /// retention.
    fn end(&self, task: &Running, ending: Ending) {
        if task.journal.end(ending, self.limits.max_finished_events) {
            self.running().remove(&task.journal.id);
            drop(
                task.budget
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take(),
            );
            self.store.ended(&task.journal);
        }
    }
}

impl Running {
    /// Records why the task should stop and tells its work.
    fn request_cancel(&self, reason: &str) {
        let mut why = self
            .cancel_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        why.get_or_insert_with(|| reason.to_owned());
        self.cancel.cancel();
    }

    /// The reason given to [`Running::request_cancel`].
    fn cancel_reason(&self) -> String {
        let why = self
            .cancel_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        why.clone().unwrap_or_else(|| "cancelled".to_owned())
    }
}

/// What a task's work gets: a way to report progress and its cancellation.
pub(crate) struct TaskContext {
    task: Arc<Running>,
}

impl TaskContext {
    /// Records progress: `step` of `total_steps` (0 while unknown) and a
    /// human-readable message (cut to 1 KiB). Cheap; watchers never slow it
    /// down. Ignored once the task has ended.
    pub(crate) fn progress(&self, step: u32, total_steps: u32, message: impl Into<String>) {
        self.task
            .journal
            .progress(step, total_steps, message.into());
    }

    /// Whether the task was cancelled; the work should stop (and undo what
    /// it has not committed) at its next check.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.task.cancel.is_cancelled()
    }

    /// The task's cancellation token, to `select!` on in long waits.
    pub(crate) fn cancellation(&self) -> &CancellationToken {
        &self.task.cancel
    }
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("task_id", &self.task.journal.id)
            .field("kind", &self.task.journal.kind)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::tasks::TaskEvent;

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
        registry.watch(id, 0).await.expect("watch").collect().await
    }

    /// Starts work that, once running, waits for its cancellation and then
    /// returns `outcome`; returns when the work runs.
    async fn start_running_until_cancelled(
        registry: &TaskRegistry,
        outcome: Outcome,
    ) -> TaskSnapshot {
        let (started, mut running) = tokio::sync::watch::channel(false);
        let task = registry
            .start("test", move |context| async move {
                started.send_replace(true);
                context.cancellation().cancelled().await;
                outcome
            })
            .await
            .expect("start");
        running.wait_for(|&r| r).await.expect("work starts");
        task
    }

    fn states(events: &[TaskEvent]) -> Vec<TaskState> {
        let mut states: Vec<_> = events.iter().map(|e| e.status.state).collect();
        states.dedup();
        states
    }

    #[tokio::test]
    async fn work_that_returns_ok_succeeds_with_its_progress_logged() {
        let registry = registry(TaskLimits::default());
        let task = registry
            .start("test", |context| async move {
                for step in 1..=3 {
                    context.progress(step, 3, format!("step {step}"));
                }
                Outcome::Ok(())
            })
            .await
            .expect("start");
        assert_eq!(task.status.state, TaskState::Pending);
        let events = events(&registry, &task.id).await;
        let sequences: Vec<_> = events.iter().map(|e| e.sequence).collect();
        assert_eq!(sequences, [1, 2, 3, 4, 5, 6]);
        assert_eq!(
            states(&events),
            [TaskState::Pending, TaskState::Running, TaskState::Succeeded]
        );
        let done = registry.get(&task.id).await.expect("task");
        assert_eq!((done.status.step, done.status.percent), (3, 100.0));
        assert_eq!(done.status.message, "step 3");
    }

    #[tokio::test]
    async fn work_that_returns_an_error_fails_with_it() {
        let registry = registry(TaskLimits::default());
        let task = registry
            .start("test", |_| async { Outcome::Err(Failure("disk full")) })
            .await
            .expect("start");
        let events = events(&registry, &task.id).await;
        let last = events.last().expect("terminal event");
        assert_eq!(last.status.state, TaskState::Failed);
        assert_eq!(last.status.error, "disk full");
    }

    #[tokio::test]
    async fn work_that_panics_fails() {
        let registry = registry(TaskLimits::default());
        let task = registry
            .start("test", |_| async { panic!("bug") as Outcome })
            .await
            .expect("start");
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
        let task = start_running_until_cancelled(&registry, Err(Failure("stopped"))).await;
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
        // Past the point of no return (say, a commit): finish anyway.
        let task = start_running_until_cancelled(&registry, Ok(())).await;
        let after = registry.cancel(&task.id).await.expect("cancel");
        assert_eq!(after.status.state, TaskState::Succeeded);
    }

    #[tokio::test]
    async fn a_task_cancelled_before_it_starts_never_runs_its_work() {
        let registry = registry(TaskLimits::default());
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        // The current-thread runtime has not polled the spawned work yet.
        let task = registry
            .start("test", move |_| async move {
                flag.store(true, Ordering::SeqCst);
                Outcome::Ok(())
            })
            .await
            .expect("start");
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
        let done = registry
            .start("test", |_| async { Outcome::Ok(()) })
            .await
            .expect("start");
        events(&registry, &done.id).await;
        let waiting = registry
            .start("test", |context| async move {
                context.cancellation().cancelled().await;
                Outcome::Ok(())
            })
            .await
            .expect("start");
        registry.cancel_all("shutting down");
        events(&registry, &waiting.id).await;
        let waiting = registry.get(&waiting.id).await.expect("task");
        assert_eq!(waiting.status.state, TaskState::Cancelled);
        assert_eq!(waiting.status.message, "shutting down");
        let done = registry.get(&done.id).await.expect("task");
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
            .await
            .expect("first");
        let refused = registry
            .try_start("test", |_| async { Outcome::Ok(()) })
            .await;
        assert!(matches!(refused, Err(Error::ResourceExhausted(_))));
        registry.cancel(&first.id).await.expect("cancel");
        assert!(
            registry
                .try_start("test", |_| async { Outcome::Ok(()) })
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn demo_tasks_have_a_budget_of_their_own() {
        let registry = registry(TaskLimits {
            max_unfinished_tasks: 3,
            max_demo_tasks: 1,
            ..TaskLimits::default()
        });
        let forever = |c: TaskContext| async move {
            c.cancellation().cancelled().await;
            Outcome::Err(Failure("stopped"))
        };
        let demo = registry
            .try_start(DEMO_TASK_KIND, forever)
            .await
            .expect("first demo");
        let refused = registry.try_start(DEMO_TASK_KIND, forever).await;
        assert!(matches!(refused, Err(Error::ResourceExhausted(_))));
        // Other kinds still have the rest of the room.
        let other = registry.try_start("ingest", forever).await.expect("ingest");
        registry.cancel(&demo.id).await.expect("cancel");
        registry
            .try_start(DEMO_TASK_KIND, forever)
            .await
            .expect("room again once the first ended");
        registry.cancel_all("done");
        let _ = other;
    }

    #[tokio::test]
    async fn the_oldest_finished_tasks_beyond_the_count_are_forgotten() {
        let registry = registry(TaskLimits {
            max_finished_tasks: 2,
            ..TaskLimits::default()
        });
        let mut ids = Vec::new();
        for _ in 0..3 {
            let task = registry
                .start("test", |_| async { Outcome::Ok(()) })
                .await
                .expect("start");
            events(&registry, &task.id).await;
            ids.push(task.id);
        }
        assert!(matches!(
            registry.get(&ids[0]).await,
            Err(Error::NotFound(_))
        ));
        assert!(registry.get(&ids[1]).await.is_ok() && registry.get(&ids[2]).await.is_ok());
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
            let task = registry
                .start("test", |_| async { Outcome::Ok(()) })
                .await
                .expect("start");
            events(&registry, &task.id).await;
            assert_eq!(registry.get(&task.id).await.is_ok(), kept, "{retention:?}");
        }
    }

    #[tokio::test]
    async fn a_finished_task_keeps_its_state_changes_within_the_finished_limit() {
        let registry = registry(TaskLimits {
            max_events: 50,
            max_finished_events: 5,
            ..TaskLimits::default()
        });
        let task = registry
            .start("test", |context| async move {
                for step in 1..=100 {
                    context.progress(step, 100, "");
                }
                Outcome::Ok(())
            })
            .await
            .expect("start");
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
        let mut ids = Vec::new();
        for _ in 0..5 {
            let task = registry.start("test", |_| async { Outcome::Ok(()) }).await;
            ids.push(task.expect("start").id);
        }
        let first = registry.list(2, None).await.expect("list");
        let page_ids =
            |page: &TaskPage| page.tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>();
        assert_eq!(page_ids(&first), [ids[4].clone(), ids[3].clone()]);
        // A task started between pages does not shift the next page.
        registry
            .start("test", |_| async { Outcome::Ok(()) })
            .await
            .expect("start");
        let second = registry.list(2, first.next_before).await.expect("list");
        assert_eq!(page_ids(&second), [ids[2].clone(), ids[1].clone()]);
        let last = registry.list(2, second.next_before).await.expect("list");
        assert_eq!(page_ids(&last), [ids[0].clone()]);
        assert_eq!(last.next_before, None);
    }

    #[tokio::test]
    async fn unknown_ids_are_not_found() {
        let registry = registry(TaskLimits::default());
        assert!(matches!(
            registry.last_sequence("task-x").await,
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            registry.watch("task-x", 0).await,
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            registry.cancel("task-x").await,
            Err(Error::NotFound(_))
        ));
    }
}
