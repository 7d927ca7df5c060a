//! The RagService edge: wire requests in, domain work, wire responses out.

use std::{sync::Arc, time::UNIX_EPOCH};

use futures::StreamExt;
use tonic::{Request, Response, Status};

use super::{
    events::{AnswerEvent, Writer, answer_events},
    index::{DocumentIndex, DocumentInfo, IngestProgress, NewDocument, RetrievedPassage},
    request::{self, AnswerRequest, ListRequest},
};
use crate::{
    error::Result,
    llm::{Backend, Models, TokenBudget, mock::MockBackend},
    pb::{self, rag_service_server::RagService},
    server::{CallStream, Calls},
    tasks::{TaskContext, TaskRegistry},
};

/// The `kind` of ingestion tasks in TaskService.
pub const INGEST_TASK_KIND: &str = "ingest";

/// Ingestion reports its progress as task events.
impl IngestProgress for TaskContext {
    fn progress(&self, step: u32, total_steps: u32, message: String) {
        TaskContext::progress(self, step, total_steps, message);
    }

    fn is_cancelled(&self) -> bool {
        TaskContext::is_cancelled(self)
    }
}

/// Implements `agentstream.v1.RagService`.
#[derive(Clone)]
pub struct RagApi {
    index: DocumentIndex,
    tasks: TaskRegistry,
    models: Arc<Models>,
    builtin: Arc<MockBackend>,
    budget: TokenBudget,
    calls: Calls,
}

impl RagApi {
    /// The service over `index`, answering with `models`; answers of the
    /// `builtin` models are extractive.
    pub fn new(
        index: DocumentIndex,
        tasks: TaskRegistry,
        models: Arc<Models>,
        builtin: Arc<MockBackend>,
        budget: TokenBudget,
        calls: Calls,
    ) -> Self {
        Self {
            index,
            tasks,
            models,
            builtin,
            budget,
            calls,
        }
    }

    /// Starts the ingestion of checked `documents` as a task of the task
    /// registry and returns it at once; the task commits once at the end and
    /// rolls back on failure or cancellation.
    fn start_ingestion(&self, documents: Vec<NewDocument>) -> Result<pb::Task> {
        let index = self.index.clone();
        let task = self
            .tasks
            .try_start(INGEST_TASK_KIND, move |ctx| async move {
                index
                    .ingest(documents, &ctx)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            })?;
        Ok(task.into())
    }

    fn writer(&self, model: &str, backend: Arc<dyn Backend>) -> Writer {
        if self.builtin.models().iter().any(|m| m == model) {
            Writer::Extractive(self.builtin.clone())
        } else {
            Writer::Model(backend)
        }
    }
}

#[tonic::async_trait]
impl RagService for RagApi {
    type StreamAnswerStream = CallStream<pb::StreamAnswerResponse>;

    async fn ingest_documents(
        &self,
        request: Request<pb::IngestDocumentsRequest>,
    ) -> Result<Response<pb::IngestDocumentsResponse>, Status> {
        let call = self
            .calls
            .start("agentstream.v1.RagService/IngestDocuments", &request);
        let result = request::ingest_request(request.into_inner())
            .and_then(|documents| self.start_ingestion(documents))
            .map(|task| pb::IngestDocumentsResponse { task: Some(task) });
        call.unary(result)
    }

    async fn stream_answer(
        &self,
        request: Request<pb::StreamAnswerRequest>,
    ) -> Result<Response<Self::StreamAnswerStream>, Status> {
        let call = self
            .calls
            .start("agentstream.v1.RagService/StreamAnswer", &request);
        let prepared = AnswerRequest::validate(request.into_inner(), &self.budget)
            .and_then(|r| Ok((self.models.resolve(&r.model)?, r)));
        let ((model, backend), request) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => return Err(call.fail(error)),
        };
        call.record_model(&model);
        let writer = self.writer(&model, backend);
        let events = answer_events(self.index.clone(), request, model, writer)
            .enumerate()
            .map(|(i, event)| event.map(|e| to_wire(i as u64 + 1, e)));
        call.stream(events)
    }

    async fn list_documents(
        &self,
        request: Request<pb::ListDocumentsRequest>,
    ) -> Result<Response<pb::ListDocumentsResponse>, Status> {
        let call = self
            .calls
            .start("agentstream.v1.RagService/ListDocuments", &request);
        let result = ListRequest::validate(request.into_inner()).and_then(|list| {
            let page = self.index.list(list.page_size, list.after.as_deref())?;
            Ok(pb::ListDocumentsResponse {
                documents: page.documents.into_iter().map(Into::into).collect(),
                next_page_token: page
                    .next_after
                    .map(|id| request::encode_page_token(&id))
                    .unwrap_or_default(),
            })
        });
        call.unary(result)
    }

    async fn delete_document(
        &self,
        request: Request<pb::DeleteDocumentRequest>,
    ) -> Result<Response<pb::DeleteDocumentResponse>, Status> {
        let call = self
            .calls
            .start("agentstream.v1.RagService/DeleteDocument", &request);
        let result = match request::delete_request(request.into_inner()) {
            Ok(id) => self.index.delete(&id).await,
            Err(error) => Err(error),
        };
        call.unary(result.map(|()| pb::DeleteDocumentResponse {}))
    }
}

/// The wire form of the `sequence`-th event.
fn to_wire(sequence: u64, event: AnswerEvent) -> pb::StreamAnswerResponse {
    use pb::stream_answer_response::Event;
    let event = match event {
        AnswerEvent::RetrievalStarted { top_k } => {
            Event::RetrievalStarted(pb::RetrievalStarted { top_k })
        }
        AnswerEvent::PassagesRetrieved {
            passages,
            retrieval_ms,
        } => Event::PassagesRetrieved(pb::PassagesRetrieved {
            passages: passages.into_iter().map(Into::into).collect(),
            retrieval_ms,
        }),
        AnswerEvent::GenerationStarted { model } => {
            Event::GenerationStarted(pb::GenerationStarted { model })
        }
        AnswerEvent::Content(text) => Event::Content(pb::ContentDelta { text }),
        AnswerEvent::Done {
            finish_reason,
            usage,
            retrieval_ms,
            generation_ms,
        } => Event::Done(pb::AnswerDone {
            finish_reason: pb::FinishReason::from(finish_reason) as i32,
            usage: Some(usage.into()),
            retrieval_ms,
            generation_ms,
        }),
    };
    pb::StreamAnswerResponse {
        sequence,
        event: Some(event),
    }
}

impl From<RetrievedPassage> for pb::Passage {
    fn from(p: RetrievedPassage) -> Self {
        pb::Passage {
            document_id: p.document_id,
            title: p.title,
            text: p.text,
            score: p.score,
            source: p.source,
        }
    }
}

impl From<DocumentInfo> for pb::DocumentInfo {
    fn from(d: DocumentInfo) -> Self {
        let since_epoch = d.ingest_time.duration_since(UNIX_EPOCH).unwrap_or_default();
        pb::DocumentInfo {
            id: d.id,
            title: d.title,
            source: d.source,
            metadata: d.metadata.into_iter().collect(),
            size_bytes: d.size_bytes,
            ingest_time: Some(prost_types::Timestamp {
                seconds: since_epoch.as_secs() as i64,
                nanos: since_epoch.subsec_nanos() as i32,
            }),
        }
    }
}
