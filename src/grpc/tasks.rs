//! `agentstream.v1.TaskService`: wire requests become the core's drafts,
//! tasks and their events become wire messages.

use futures::StreamExt;
use tonic::{Request, Response, Status};

use super::call::{self, GrpcStream};
use crate::{
    pb::{self, task_service_server::TaskService},
    server::{Calls, Method},
    tasks::{
        TaskEvent, TaskSnapshot, TaskState, TaskStatus, Tasks,
        request::{ListDraft, StartDraft},
    },
};

/// Implements `agentstream.v1.TaskService` over the core's [`Tasks`].
#[derive(Debug, Clone)]
pub(crate) struct TaskApi {
    tasks: Tasks,
    calls: Calls,
}

impl TaskApi {
    /// The service over `tasks`.
    pub(crate) fn new(tasks: Tasks, calls: Calls) -> Self {
        Self { tasks, calls }
    }
}

#[tonic::async_trait]
impl TaskService for TaskApi {
    type WatchTaskStream = GrpcStream<pb::WatchTaskResponse>;

    async fn start_task(
        &self,
        request: Request<pb::StartTaskRequest>,
    ) -> Result<Response<pb::StartTaskResponse>, Status> {
        let call = call::start(&self.calls, Method::StartTask, &request);
        let result = self
            .tasks
            .start(start_draft(request.into_inner()))
            .await
            .map(|task| pb::StartTaskResponse {
                task: Some(task.into()),
            });
        call::unary(call, result)
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::GetTaskResponse>, Status> {
        let call = call::start(&self.calls, Method::GetTask, &request);
        let result = self
            .tasks
            .get(&request.get_ref().task_id)
            .await
            .map(|task| pb::GetTaskResponse {
                task: Some(task.into()),
            });
        call::unary(call, result)
    }

    async fn watch_task(
        &self,
        request: Request<pb::WatchTaskRequest>,
    ) -> Result<Response<Self::WatchTaskStream>, Status> {
        let call = call::start(&self.calls, Method::WatchTask, &request);
        let pb::WatchTaskRequest {
            task_id,
            after_sequence,
        } = request.into_inner();
        let events = match self.tasks.watch(&task_id, after_sequence).await {
            Ok(events) => events,
            Err(error) => return Err(call.fail(error).into()),
        };
        let events = events.map(move |event| {
            Ok(pb::WatchTaskResponse {
                event: Some(event_to_wire(&task_id, event)),
            })
        });
        call::stream(call.stream(events))
    }

    async fn cancel_task(
        &self,
        request: Request<pb::CancelTaskRequest>,
    ) -> Result<Response<pb::CancelTaskResponse>, Status> {
        let call = call::start(&self.calls, Method::CancelTask, &request);
        let result = self.tasks.cancel(&request.get_ref().task_id).await;
        call::unary(
            call,
            result.map(|task| pb::CancelTaskResponse {
                task: Some(task.into()),
            }),
        )
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let call = call::start(&self.calls, Method::ListTasks, &request);
        let raw = request.into_inner();
        let draft = ListDraft {
            page_size: raw.page_size,
            page_token: raw.page_token,
        };
        let result = self
            .tasks
            .list(&draft)
            .await
            .map(|page| pb::ListTasksResponse {
                tasks: page.tasks.into_iter().map(Into::into).collect(),
                next_page_token: page.next_page_token,
            });
        call::unary(call, result)
    }
}

/// The draft of a wire StartTask request (the HTTP edge reads the same
/// message from JSON).
pub(crate) fn start_draft(request: pb::StartTaskRequest) -> StartDraft {
    match request.spec {
        Some(pb::start_task_request::Spec::Demo(demo)) => StartDraft::Demo {
            steps: demo.steps,
            step_delay_ms: demo.step_delay_ms,
            fail_at_step: demo.fail_at_step,
        },
        None => StartDraft::Missing,
    }
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
            kind: task.kind,
            state: pb::TaskState::from(state) as i32,
            step,
            total_steps,
            percent,
            message,
            error,
            create_time: Some(pb::timestamp(task.created)),
            update_time: Some(pb::timestamp(time)),
        }
    }
}

/// The wire form of an event of task `task_id`.
pub(crate) fn event_to_wire(task_id: &str, event: TaskEvent) -> pb::TaskEvent {
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
        time: Some(pb::timestamp(time)),
        state: pb::TaskState::from(state) as i32,
        step,
        total_steps,
        percent,
        message,
        error,
    }
}
