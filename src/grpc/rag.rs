//! `agentstream.v1.RagService`: wire requests become the core's drafts,
//! answer events and documents become wire messages.

use std::time::UNIX_EPOCH;

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
pub struct RagApi {
    rag: Rag,
    calls: Calls,
}

impl RagApi {
    /// The service over `rag`.
    pub fn new(rag: Rag, calls: Calls) -> Self {
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
        let call = call::start(&self.calls, Method::StreamAnswer, &request);
        let raw = request.into_inner();
        let draft = AnswerDraft {
            question: raw.question,
            top_k: raw.top_k,
            model: raw.model,
            max_tokens: raw.max_tokens,
        };
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

/// The draft of a wire document.
fn document(d: pb::Document) -> NewDocument {
    NewDocument {
        id: d.id,
        title: d.title,
        text: d.text,
        source: d.source,
        metadata: d.metadata.into_iter().collect(),
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
            ingest_time: Some(super::timestamp(since_epoch)),
        }
    }
}
