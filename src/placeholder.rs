//! RagService until its issue lands: every RPC answers UNIMPLEMENTED with a
//! message naming what is missing, and health reports it NOT_SERVING.

use tonic::{Request, Response, Status};

use crate::{
    error::Error,
    pb::{self, rag_service_server::RagService},
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
