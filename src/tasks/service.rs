//! The TaskService operations, protocol-free: what both edges call.

use super::{
    TaskPage, TaskRegistry, TaskSnapshot, TaskWatch,
    request::{self, ListDraft, StartDraft, TaskSpec},
};
use crate::error::Result;

/// The `kind` of demo tasks.
pub(crate) const DEMO_TASK_KIND: &str = "demo";

/// Starts, finds, watches, cancels and lists tasks.
#[derive(Debug, Clone)]
pub(crate) struct Tasks {
    registry: TaskRegistry,
}

/// One page of the task list, newest first.
#[derive(Debug, Clone)]
pub(crate) struct TaskListing {
    /// The tasks.
    pub tasks: Vec<TaskSnapshot>,
    /// The token of the next page; empty on the last.
    pub next_page_token: String,
}

impl Tasks {
    /// The operations over `registry`.
    pub(crate) fn new(registry: TaskRegistry) -> Self {
        Self { registry }
    }

    /// Checks `draft` and starts the task it asks for.
    pub(crate) async fn start(&self, draft: StartDraft) -> Result<TaskSnapshot> {
        match request::start_request(draft)? {
            TaskSpec::Demo(spec) => {
                self.registry
                    .try_start(DEMO_TASK_KIND, move |context| spec.run(context))
                    .await
            }
        }
    }

    /// The task `id` as it is now.
    pub(crate) async fn get(&self, id: &str) -> Result<TaskSnapshot> {
        request::check_task_id(id)?;
        self.registry.get(id).await
    }

    /// The events of task `id` after `after_sequence`, then the live ones.
    pub(crate) async fn watch(&self, id: &str, after_sequence: u64) -> Result<TaskWatch> {
        request::check_task_id(id)?;
        request::check_after_sequence(after_sequence, self.registry.last_sequence(id).await?)?;
        self.registry.watch(id, after_sequence).await
    }

    /// Cancels task `id` (idempotent) and returns it once its work stopped.
    pub(crate) async fn cancel(&self, id: &str) -> Result<TaskSnapshot> {
        request::check_task_id(id)?;
        self.registry.cancel(id).await
    }

    /// One page of the tasks, newest first.
    pub(crate) async fn list(&self, draft: &ListDraft) -> Result<TaskListing> {
        let tokens = self.registry.page_tokens();
        let list = request::list_request(draft, tokens)?;
        let TaskPage { tasks, next_before } =
            self.registry.list(list.page_size, list.before).await?;
        Ok(TaskListing {
            tasks,
            next_page_token: next_before
                .map(|before| tokens.issue(before))
                .unwrap_or_default(),
        })
    }
}
