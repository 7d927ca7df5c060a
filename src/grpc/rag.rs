//! `agentstream.v1.RagService`: wire requests become the core's drafts,
//! answer events and documents become wire messages.

use std::time::Duration;

use futures::StreamExt;
use tonic::{Request, Response, Status};

use super::call::{self, GrpcStream};
use crate::{
    pb::{self, rag_service_server::RagService},
    rag::{
        AnswerEvent, DocumentInfo, NewDocument, Rag, RetrievedPassage,
        request::{AnswerDraft, ListDraft},
    },
    server::{Calls, Method},
};

/// Implements `agentstream.v1.RagService` over the core's [`Rag`].
#[derive(Clone)]
pub(crate) struct RagApi {
    rag: Rag,
    calls: Calls,
}

impl RagApi {
    /// The service over `rag`.
    pub(crate) fn new(rag: Rag, calls: Calls) -> Self {
        Self { rag, calls }
    }
}

#[tonic::async_trait]
impl RagService for RagApi {
    type StreamAnswerStream = GrpcStream<pb::StreamAnswerResponse>;

    async fn ingest_documents(
        &self,
        request: Request<pb::IngestDocumentsRequest>,
    ) -> Result<Response<pb::IngestDocumentsResponse>, Status> {
        let call = call::start(&self.calls, Method::IngestDocuments, &request);
        let documents = request.into_inner().documents;
        let result = self
            .rag
            .ingest(documents.into_iter().map(document).collect())
            .await
            .map(|task| pb::IngestDocumentsResponse {
                task: Some(task.into()),
            });
        call::unary(call, result)
    }

    async fn stream_answer(
        &self,
        request: Request<pb::StreamAnswerRequest>,
    ) -> Result<Response<Self::StreamAnswerStream>, Status> {
        let mut call = call::start(&self.calls, Method::StreamAnswer, &request);
        let draft = answer_draft(request.into_inner());
        let (model, events) = match call.in_span(|| self.rag.answer(draft)) {
            Ok(answer) => answer,
            Err(error) => return Err(call.fail(error).into()),
        };
        call.record_model(&model);
        let events = events
            .enumerate()
            .map(|(i, event)| event.map(|e| to_wire(i as u64 + 1, e)));
        call::stream(call.stream(events))
    }

    async fn list_documents(
        &self,
        request: Request<pb::ListDocumentsRequest>,
    ) -> Result<Response<pb::ListDocumentsResponse>, Status> {
        let call = call::start(&self.calls, Method::ListDocuments, &request);
        let raw = request.into_inner();
        let draft = ListDraft {
            page_size: raw.page_size,
            page_token: raw.page_token,
        };
        let result = self.rag.list(draft).map(|page| pb::ListDocumentsResponse {
            documents: page.documents.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        });
        call::unary(call, result)
    }

    async fn delete_document(
        &self,
        request: Request<pb::DeleteDocumentRequest>,
    ) -> Result<Response<pb::DeleteDocumentResponse>, Status> {
        let call = call::start(&self.calls, Method::DeleteDocument, &request);
        let result = self.rag.delete(&request.get_ref().document_id).await;
        call::unary(call, result.map(|()| pb::DeleteDocumentResponse {}))
    }
}

/// The draft of a wire StreamAnswer request (the HTTP edge reads the same
/// message from JSON).
pub(crate) fn answer_draft(raw: pb::StreamAnswerRequest) -> AnswerDraft {
    AnswerDraft {
        question: raw.question,
        top_k: raw.top_k,
        model: raw.model,
        max_tokens: raw.max_tokens,
    }
}

/// The draft of a wire document.
pub(crate) fn document(d: pb::Document) -> NewDocument {
    NewDocument {
        id: d.id,
        title: d.title,
        text: d.text,
        source: d.source,
        metadata: d.metadata.into_iter().collect(),
    }
}

/// The wire form of the `sequence`-th event.
pub(crate) fn to_wire(sequence: u64, event: AnswerEvent) -> pb::StreamAnswerResponse {
    use pb::stream_answer_response::Event;
    let event = match event {
        AnswerEvent::RetrievalStarted { top_k } => {
            Event::RetrievalStarted(pb::RetrievalStarted { top_k })
        }
        AnswerEvent::PassagesRetrieved {
            passages,
            retrieval,
        } => Event::PassagesRetrieved(pb::PassagesRetrieved {
            passages: passages.into_iter().map(Into::into).collect(),
            retrieval_ms: millis(retrieval),
            retrieval_us: micros(retrieval),
        }),
        AnswerEvent::GenerationStarted { model } => {
            Event::GenerationStarted(pb::GenerationStarted { model })
        }
        AnswerEvent::Content(text) => Event::Content(pb::ContentDelta { text }),
        AnswerEvent::Done {
            finish_reason,
            usage,
            retrieval,
            generation,
        } => Event::Done(pb::AnswerDone {
            finish_reason: pb::FinishReason::from(finish_reason) as i32,
            usage: Some(usage.into()),
            retrieval_ms: millis(retrieval),
            generation_ms: millis(generation),
            retrieval_us: micros(retrieval),
            generation_us: micros(generation),
        }),
    };
    pb::StreamAnswerResponse {
        sequence,
        event: Some(event),
    }
}

/// Whole milliseconds, rounded down.
fn millis(time: Duration) -> u32 {
    u32::try_from(time.as_millis()).unwrap_or(u32::MAX)
}

/// Whole microseconds, rounded down.
fn micros(time: Duration) -> u64 {
    u64::try_from(time.as_micros()).unwrap_or(u64::MAX)
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
        pb::DocumentInfo {
            id: d.id,
            title: d.title,
            source: d.source,
            metadata: d.metadata.into_iter().collect(),
            size_bytes: d.size_bytes,
            ingest_time: Some(pb::timestamp(d.ingest_time)),
        }
    }
}
