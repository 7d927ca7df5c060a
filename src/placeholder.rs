//! RagService and TaskService until their issues land: every RPC answers
//! UNIMPLEMENTED with a message naming what is missing, and health reports
//! these services NOT_SERVING.

use tonic::{Request, Response, Status};

use crate::{
    error::Error,
    pb::{self, rag_service_server::RagService, task_service_server::TaskService},
    server::{CallStream, Calls},
};

/// RagService without an index yet.
#[derive(Debug, Clone)]
pub struct RagPlaceholder {
    calls: Calls,
}

impl RagPlaceholder {
    /// The placeholder.
    pub fn new(calls: Calls) -> Self {
        Self { calls }
    }

    fn missing<T>(&self, method: &'static str, request: &Request<T>, what: &'static str) -> Status {
        self.calls
            .start(method, request)
            .fail(Error::Unimplemented(what))
    }
}

#[tonic::async_trait]
impl RagService for RagPlaceholder {
    type StreamAnswerStream = CallStream<pb::StreamAnswerResponse>;

    async fn ingest_documents(
        &self,
        request: Request<pb::IngestDocumentsRequest>,
    ) -> Result<Response<pb::IngestDocumentsResponse>, Status> {
        Err(self.missing(
            "agentstream.v1.RagService/IngestDocuments",
            &request,
            "RagService.IngestDocuments (the embedded search index)",
        ))
    }

    async fn stream_answer(
        &self,
        request: Request<pb::StreamAnswerRequest>,
    ) -> Result<Response<Self::StreamAnswerStream>, Status> {
        Err(self.missing(
            "agentstream.v1.RagService/StreamAnswer",
            &request,
            "RagService.StreamAnswer (retrieval-augmented answers)",
        ))
    }

    async fn list_documents(
        &self,
        request: Request<pb::ListDocumentsRequest>,
    ) -> Result<Response<pb::ListDocumentsResponse>, Status> {
        Err(self.missing(
            "agentstream.v1.RagService/ListDocuments",
            &request,
            "RagService.ListDocuments (the embedded search index)",
        ))
    }

    async fn delete_document(
        &self,
        request: Request<pb::DeleteDocumentRequest>,
    ) -> Result<Response<pb::DeleteDocumentResponse>, Status> {
        Err(self.missing(
            "agentstream.v1.RagService/DeleteDocument",
            &request,
            "RagService.DeleteDocument (the embedded search index)",
        ))
    }
}

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
