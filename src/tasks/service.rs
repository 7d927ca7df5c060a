//! The TaskService edge: checks wire requests, calls the registry and
//! converts its domain types back to the wire.

use futures::StreamExt;
use tonic::{Request, Response, Status};

use super::{DemoSpec, TaskEvent, TaskRegistry, TaskSnapshot, TaskState, TaskStatus};
use crate::{
    error::{Error, FieldViolation, Result},
    pb::{self, task_service_server::TaskService},
    server::{CallStream, Calls},
};

/// Tasks per ListTasks page when the request sets none.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// Most tasks per ListTasks page.
pub const MAX_PAGE_SIZE: u32 = 1_000;

/// Longest task id accepted; the server's own are 37 bytes.
pub const MAX_TASK_ID_BYTES: usize = 128;

/// What page tokens start with; the rest is the creation order of the last
/// task of the previous page, so pages stay stable as tasks come and go.
const PAGE_TOKEN_PREFIX: &str = "before-";

/// Implements `agentstream.v1.TaskService`.
#[derive(Debug, Clone)]
pub struct TaskApi {
    registry: TaskRegistry,
    calls: Calls,
}

impl TaskApi {
    /// The service over `registry`.
    pub fn new(registry: TaskRegistry, calls: Calls) -> Self {
        Self { registry, calls }
    }

    fn start(&self, request: pb::StartTaskRequest) -> Result<pb::StartTaskResponse> {
        let task = match request.spec {
            Some(pb::start_task_request::Spec::Demo(demo)) => {
                let spec = DemoSpec::new(demo.steps, demo.step_delay_ms, demo.fail_at_step)?;
                self.registry
                    .try_start("demo", move |context| spec.run(context))?
            }
            None => {
                return Err(Error::InvalidArgument(vec![FieldViolation::new(
                    "spec",
                    "required: set `demo`",
                )]));
            }
        };
        Ok(pb::StartTaskResponse {
            task: Some(task.into()),
        })
    }

    fn list(&self, request: &pb::ListTasksRequest) -> Result<pb::ListTasksResponse> {
        let (page_size, before) = check_page(request)?;
        let page = self.registry.list(page_size, before);
        Ok(pb::ListTasksResponse {
            tasks: page.tasks.into_iter().map(Into::into).collect(),
            next_page_token: page
                .next_before
                .map(|order| format!("{PAGE_TOKEN_PREFIX}{order}"))
                .unwrap_or_default(),
        })
    }
}

#[tonic::async_trait]
impl TaskService for TaskApi {
    type WatchTaskStream = CallStream<pb::WatchTaskResponse>;

    async fn start_task(
        &self,
        request: Request<pb::StartTaskRequest>,
    ) -> Result<Response<pb::StartTaskResponse>, Status> {
        let call = self
            .calls
            .start("agentstream.v1.TaskService/StartTask", &request);
        call.unary(self.start(request.into_inner()))
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::GetTaskResponse>, Status> {
        let call = self
            .calls
            .start("agentstream.v1.TaskService/GetTask", &request);
        let id = request.into_inner().task_id;
        let task = check_task_id(&id).and_then(|()| self.registry.get(&id));
        call.unary(task.map(|task| pb::GetTaskResponse {
            task: Some(task.into()),
        }))
    }

    async fn watch_task(
        &self,
        request: Request<pb::WatchTaskRequest>,
    ) -> Result<Response<Self::WatchTaskStream>, Status> {
        let call = self
            .calls
            .start("agentstream.v1.TaskService/WatchTask", &request);
        let pb::WatchTaskRequest {
            task_id,
            after_sequence,
        } = request.into_inner();
        let events =
            check_task_id(&task_id).and_then(|()| self.registry.watch(&task_id, after_sequence));
        match events {
            Ok(events) => call.stream(events.map(move |event| {
                Ok(pb::WatchTaskResponse {
                    event: Some(event_to_wire(&task_id, event)),
                })
            })),
            Err(error) => Err(call.fail(error)),
        }
    }

    async fn cancel_task(
        &self,
        request: Request<pb::CancelTaskRequest>,
    ) -> Result<Response<pb::CancelTaskResponse>, Status> {
        let call = self
            .calls
            .start("agentstream.v1.TaskService/CancelTask", &request);
        let id = request.into_inner().task_id;
        let task = match check_task_id(&id) {
            Ok(()) => self.registry.cancel(&id).await,
            Err(error) => Err(error),
        };
        call.unary(task.map(|task| pb::CancelTaskResponse {
            task: Some(task.into()),
        }))
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let call = self
            .calls
            .start("agentstream.v1.TaskService/ListTasks", &request);
        call.unary(self.list(request.get_ref()))
    }
}

/// A task id must be given and no longer than any id the server makes.
fn check_task_id(id: &str) -> Result<()> {
    let problem = if id.is_empty() {
        "required"
    } else if id.len() > MAX_TASK_ID_BYTES {
        "too long: task ids are at most 128 bytes"
    } else {
        return Ok(());
    };
    Err(Error::InvalidArgument(vec![FieldViolation::new(
        "task_id", problem,
    )]))
}

/// The page size (0 meaning the default) and where the page starts.
fn check_page(request: &pb::ListTasksRequest) -> Result<(usize, Option<u64>)> {
    let mut violations = Vec::new();
    if request.page_size > MAX_PAGE_SIZE {
        violations.push(FieldViolation::new(
            "page_size",
            format!("must be at most {MAX_PAGE_SIZE}, got {}", request.page_size),
        ));
    }
    let before = if request.page_token.is_empty() {
        None
    } else {
        let order = request
            .page_token
            .strip_prefix(PAGE_TOKEN_PREFIX)
            .and_then(|order| order.parse::<u64>().ok());
        if order.is_none() {
            violations.push(FieldViolation::new(
                "page_token",
                "not a token returned by ListTasks; leave empty for the first page",
            ));
        }
        order
    };
    Error::check(violations)?;
    let page_size = match request.page_size {
        0 => DEFAULT_PAGE_SIZE,
        size => size,
    };
    Ok((page_size as usize, before))
}

impl From<TaskState> for pb::TaskState {
    fn from(state: TaskState) -> Self {
        match state {
            TaskState::Pending => pb::TaskState::Pending,
            TaskState::Running => pb::TaskState::Running,
            TaskState::Succeeded => pb::TaskState::Succeeded,
            TaskState::Failed => pb::TaskState::Failed,
            TaskState::Cancelled => pb::TaskState::Cancelled,
        }
    }
}

impl From<TaskSnapshot> for pb::Task {
    fn from(task: TaskSnapshot) -> Self {
        let TaskStatus {
            state,
            step,
            total_steps,
            percent,
            message,
            error,
            time,
        } = task.status;
        pb::Task {
            task_id: task.id,
            kind: task.kind.to_owned(),
            state: pb::TaskState::from(state) as i32,
            step,
            total_steps,
            percent,
            message,
            error,
            create_time: Some(task.created.into()),
            update_time: Some(time.into()),
        }
    }
}

/// The wire form of an event of task `task_id`.
fn event_to_wire(task_id: &str, event: TaskEvent) -> pb::TaskEvent {
    let TaskStatus {
        state,
        step,
        total_steps,
        percent,
        message,
        error,
        time,
    } = event.status;
    pb::TaskEvent {
        task_id: task_id.to_owned(),
        sequence: event.sequence,
        time: Some(time.into()),
        state: pb::TaskState::from(state) as i32,
        step,
        total_steps,
        percent,
        message,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(page_size: u32, page_token: &str) -> Result<(usize, Option<u64>)> {
        check_page(&pb::ListTasksRequest {
            page_size,
            page_token: page_token.into(),
        })
    }

    #[test]
    fn page_tokens_round_trip_and_garbage_is_refused() {
        assert_eq!(page(0, "").ok(), Some((50, None)));
        assert_eq!(page(1000, "before-42").ok(), Some((1000, Some(42))));
        assert!(page(1001, "").is_err());
        for bad in ["42", "before-", "before-x", "before--1"] {
            assert!(page(10, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn task_ids_must_be_present_and_short() {
        assert!(check_task_id("task-1").is_ok());
        assert!(check_task_id("").is_err());
        assert!(check_task_id(&"x".repeat(MAX_TASK_ID_BYTES + 1)).is_err());
    }
}
