//! A task's journal (its status and event log) and how watchers follow it.
//!
//! The mutable part of a task lives in a `tokio::sync::watch` channel: the
//! work writes to it under a short lock and every watcher is notified, but a
//! watcher only ever *reads* the shared log through its own cursor, so
//! nothing the watchers do (or fail to do) can make the work wait. Every
//! change goes through [`TaskState::can_become`], so a late result of work
//! that was already cancelled can never move a finished task again.

use std::time::SystemTime;

use futures::Stream;
use tokio::sync::watch;

use super::{
    TaskState,
    log::{Change, EventLog, TaskEvent, TaskStatus},
    store::TaskSnapshot,
};

/// One task as the replica that runs it (or, in memory, the store) holds it:
/// what never changes and its journal.
#[derive(Debug)]
pub(crate) struct Journal {
    /// Unique id, `task-` and 32 hex digits.
    pub id: String,
    /// The paging key of the newest-first list: larger is newer.
    pub order: u64,
    /// What the task does.
    pub kind: &'static str,
    /// When the task was registered.
    pub created: SystemTime,
    sender: watch::Sender<Entries>,
}

/// The mutable part of a task.
#[derive(Debug)]
pub(crate) struct Entries {
    /// The state and latest progress.
    pub status: TaskStatus,
    /// The retained events.
    pub log: EventLog,
}

/// How the work of a task ended.
#[derive(Debug, Clone)]
pub(crate) enum Ending {
    /// It did its job.
    Succeeded,
    /// It stopped with this error.
    Failed(String),
    /// It was cancelled for this reason.
    Cancelled(String),
}

impl Journal {
    /// A PENDING task whose log holds its first event.
    pub(crate) fn new(order: u64, kind: &'static str, max_events: usize) -> Self {
        // Whole microseconds, as every store keeps it.
        let created = whole_micros(SystemTime::now());
        let status = TaskStatus::pending(created);
        let mut log = EventLog::new(max_events);
        log.record(Change::State, &status);
        Self {
            id: format!("task-{}", uuid::Uuid::new_v4().simple()),
            order,
            kind,
            created,
            sender: watch::Sender::new(Entries { status, log }),
        }
    }

    /// The task's state now.
    pub(crate) fn state(&self) -> TaskState {
        self.sender.borrow().status.state
    }

    /// The task as it is now.
    pub(crate) fn snapshot(&self) -> TaskSnapshot {
        TaskSnapshot {
            id: self.id.clone(),
            kind: self.kind.into(),
            created: self.created,
            status: self.sender.borrow().status.clone(),
        }
    }

    /// The sequence of the last event recorded so far.
    pub(crate) fn last_sequence(&self) -> u64 {
        self.sender.borrow().log.last_sequence()
    }

    /// The events after `after`, then the live ones, ending right after the
    /// terminal event.
    pub(crate) fn follow(&self, after: u64) -> impl Stream<Item = TaskEvent> + Send + 'static {
        follow(self.sender.subscribe(), after)
    }

    /// Waits until the task has ended.
    pub(crate) async fn ended(&self) {
        let mut entries = self.sender.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = entries.wait_for(|e| e.status.state.is_terminal()).await;
    }

    /// PENDING → RUNNING; false when the task was cancelled first.
    pub(crate) fn start_running(&self) -> bool {
        self.sender
            .send_if_modified(|entries| entries.change_state(TaskState::Running))
    }

    /// Records progress; ignored unless the task is RUNNING.
    pub(crate) fn progress(&self, step: u32, total_steps: u32, message: String) {
        self.sender.send_if_modified(|entries| {
            if entries.status.state != TaskState::Running {
                return false;
            }
            let now = SystemTime::now();
            entries.status.set_progress(step, total_steps, message, now);
            entries.log.record(Change::Progress, &entries.status);
            true
        });
    }

    /// Moves the task to its terminal state and compacts its log to
    /// `keep_events`; false if it had ended already.
    pub(crate) fn end(&self, ending: Ending, keep_events: usize) -> bool {
        self.sender.send_if_modified(|entries| {
            if entries.status.state.is_terminal() {
                return false;
            }
            if entries.status.state == TaskState::Pending {
                // Cancelled before its work started: the life cycle still
                // goes through RUNNING, which the work will then skip.
                entries.change_state(TaskState::Running);
            }
            let next = match ending {
                Ending::Succeeded => {
                    entries.status.percent = 100.0;
                    TaskState::Succeeded
                }
                Ending::Failed(error) => {
                    entries.status.set_error(error);
                    TaskState::Failed
                }
                Ending::Cancelled(reason) => {
                    entries.status.message = reason;
                    TaskState::Cancelled
                }
            };
            let changed = entries.change_state(next);
            entries.log.compact_to(keep_events);
            changed
        })
    }
}

impl Entries {
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

/// Follows a journal from `after`: each poll takes the next retained event
/// after the cursor, or waits for the work to record one.
fn follow(
    entries: watch::Receiver<Entries>,
    after: u64,
) -> impl Stream<Item = TaskEvent> + Send + 'static {
    futures::stream::unfold(Some((entries, after)), |state| async move {
        let (mut entries, cursor) = state?;
        loop {
            let (next, finished) = {
                let entries = entries.borrow_and_update();
                let next = entries.log.next_after(cursor).cloned();
                (next, entries.status.state.is_terminal())
            };
            if let Some(event) = next {
                let more = !event.status.state.is_terminal();
                let cursor = event.sequence;
                return Some((event, more.then_some((entries, cursor))));
            }
            // Nothing after the cursor: the task has finished (the cursor is
            // at its terminal event) or the next event is not recorded yet.
            if finished || entries.changed().await.is_err() {
                return None;
            }
        }
    })
}

/// `time` without its sub-microsecond part.
fn whole_micros(time: SystemTime) -> SystemTime {
    match time.duration_since(std::time::UNIX_EPOCH) {
        Ok(since) => {
            let micros = u64::try_from(since.as_micros()).unwrap_or(u64::MAX);
            std::time::UNIX_EPOCH + std::time::Duration::from_micros(micros)
        }
        Err(_) => time,
    }
}
