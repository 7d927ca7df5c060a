//! TaskService: work that outlives a single call (ingestion today, batch
//! jobs later), with progress that any number of watchers can stream,
//! leave, and resume without missing anything.
//!
//! Why it is built this way:
//! - The work of a task runs in its own tokio task (the one exception to
//!   "nothing outlives its call"), so watchers come and go freely; it stops
//!   when it observes its cancellation token (CancelTask, or the server's
//!   shutdown).
//! - Each task has one append-only, bounded [`log`] of events numbered 1, 2,
//!   3, ... Watchers do not get a queue each: a WatchTask stream keeps only a
//!   cursor and pulls the next retained event from the shared log when the
//!   transport asks for it. A watcher that stops reading therefore never
//!   slows the work or the other watchers, and costs no memory but its
//!   cursor; if it falls behind the log's compaction, its progress events
//!   are coalesced, but state changes are never dropped.
//! - Where tasks are kept is a [`store::TaskStore`]: [`memory`] (the
//!   default) forgets finished tasks after a retention time and beyond a
//!   retention count, so memory stays bounded on a long-lived server;
//!   [`redis`] shares tasks between replicas on one Redis.
//!
//! The layers: [`service`] is the set of operations both protocol edges
//! call; [`request`] checks their drafts; [`work`] runs the work of tasks
//! and cancels it; [`store`] is where tasks are kept; [`watch`] is a task's
//! journal and how watchers follow it; [`log`] is the pure event log;
//! [`state`] is the life cycle; [`demo`] is the simulated job;
//! [`page_token`] signs ListTasks page tokens.
//! Other services start their own kinds of task with [`TaskRegistry::start`].

pub(crate) mod demo;
pub(crate) mod log;
pub(crate) mod memory;
pub(crate) mod page_token;
pub(crate) mod redis;
pub(crate) mod request;
pub(crate) mod service;
pub(crate) mod state;
pub(crate) mod store;
pub(crate) mod watch;
pub(crate) mod work;

pub(crate) use demo::DemoSpec;
pub(crate) use log::{TaskEvent, TaskStatus};
pub(crate) use service::Tasks;
pub(crate) use state::TaskState;
pub(crate) use store::{TaskLimits, TaskPage, TaskSnapshot, TaskWatch};
pub(crate) use work::{TaskContext, TaskRegistry};
