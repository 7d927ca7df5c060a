//! TaskService until its issue lands: every RPC answers UNIMPLEMENTED with a
//! message naming what is missing, and health reports it NOT_SERVING.

use tonic::{Request, Response, Status};

use crate::{
    error::Error,
    pb::{self, task_service_server::TaskService},
    server::{CallStream, Calls},
};

/// TaskService without a task registry yet.
#[derive(Debug, Clone)]
pub struct TaskPlaceholder {
    calls: Calls,
}

impl TaskPlaceholder {
    /// The placeholder.
    pub fn new(calls: Calls) -> Self {
        Self { calls }
    }

    fn missing<T>(&self, method: &'static str, request: &Request<T>) -> Status {
        self.calls
            .start(method, request)
            .fail(Error::Unimplemented("TaskService (the task registry)"))
    }
}

#[tonic::async_trait]
impl TaskService for TaskPlaceholder {
    type WatchTaskStream = CallStream<pb::WatchTaskResponse>;

    async fn start_task(
        &self,
        request: Request<pb::StartTaskRequest>,
    ) -> Result<Response<pb::StartTaskResponse>, Status> {
        Err(self.missing("agentstream.v1.TaskService/StartTask", &request))
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::GetTaskResponse>, Status> {
        Err(self.missing("agentstream.v1.TaskService/GetTask", &request))
    }

    async fn watch_task(
        &self,
        request: Request<pb::WatchTaskRequest>,
    ) -> Result<Response<Self::WatchTaskStream>, Status> {
        Err(self.missing("agentstream.v1.TaskService/WatchTask", &request))
    }

    async fn cancel_task(
        &self,
        request: Request<pb::CancelTaskRequest>,
    ) -> Result<Response<pb::CancelTaskResponse>, Status> {
        Err(self.missing("agentstream.v1.TaskService/CancelTask", &request))
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        Err(self.missing("agentstream.v1.TaskService/ListTasks", &request))
    }
}
