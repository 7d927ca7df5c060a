//! RAG over HTTP: the answer as an event stream, and the documents.
//!
//! `POST /v1/rag/answer` is StreamAnswer: one server-sent event per answer
//! event, `event:` its kind (`retrieval_started`, `passages_retrieved`,
//! `generation_started`, `content`, `done`), `id:` its sequence and
//! `data:` the `StreamAnswerResponse` in the proto3 JSON mapping; NDJSON
//! on request. Documents are ingested as a task (202 and its `Location`),
//! listed and deleted. Bodies are the gRPC messages in the proto3 JSON
//! mapping, read through the gRPC edge's conversions into the core's drafts.

use axum::{
    extract::{Path, State},
    http::{StatusCode, Uri},
    response::{IntoResponse, Response},
};
use futures::StreamExt;

use super::{
    Edge, call,
    error::ApiError,
    json::{Json, query},
    stream::{self, Frame, Frames, Framing},
    tasks::{PageQuery, task_at_location},
};
use crate::{
    grpc::rag::{answer_draft, document, to_wire as answer_to_wire},
    pb,
    rag::request::ListDraft,
    server::Method,
};

/// `POST /v1/rag/answer`.
pub(crate) async fn answer(
    State(edge): State<Edge>,
    headers: call::CallHeaders,
    Json(request): Json<pb::StreamAnswerRequest>,
) -> Response {
    let mut call = call::start(&edge.calls, Method::StreamAnswer, &headers);
    let (model, events) = match call.in_span(|| edge.rag.answer(answer_draft(request))) {
        Ok(answer) => answer,
        Err(error) => return ApiError::from(call.fail(error)).into_response(),
    };
    call.record_model(&model);
    let events = events
        .enumerate()
        .map(|(i, event)| event.map(|e| answer_to_wire(i as u64 + 1, e)));
    let events = match call.stream(events) {
        Ok(events) => events,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let framing = Framing::negotiate(&headers, false);
    let frame = move |event: crate::Result<pb::StreamAnswerResponse>| -> Frame {
        Ok(match (framing, event) {
            (Framing::EventStream, Ok(event)) => {
                stream::sse_event(event_name(&event), event.sequence, &event)
            }
            (_, Ok(event)) => stream::ndjson_line(&event),
            (Framing::EventStream, Err(error)) => stream::sse_data(&ApiError::from(error)),
            (_, Err(error)) => stream::ndjson_line(&ApiError::from(error)),
        })
    };
    stream::streaming_response(framing, Frames::new(events, frame, None), edge.keep_alive)
}

/// The contract's name of an answer event's kind.
fn event_name(event: &pb::StreamAnswerResponse) -> &'static str {
    use pb::stream_answer_response::Event;
    match event.event {
        Some(Event::RetrievalStarted(_)) => "retrieval_started",
        Some(Event::PassagesRetrieved(_)) => "passages_retrieved",
        Some(Event::GenerationStarted(_)) => "generation_started",
        Some(Event::Content(_)) => "content",
        Some(Event::Done(_)) => "done",
        None => "message",
    }
}

/// `POST /v1/documents`: 202 with the ingestion task, `Location` its URL.
pub(crate) async fn ingest(
    State(edge): State<Edge>,
    headers: call::CallHeaders,
    Json(request): Json<pb::IngestDocumentsRequest>,
) -> Response {
    let call = call::start(&edge.calls, Method::IngestDocuments, &headers);
    let documents = request.documents.into_iter().map(document).collect();
    match call.unary(edge.rag.ingest(documents).await) {
        Ok(task) => task_at_location(StatusCode::ACCEPTED, task, |task| {
            pb::IngestDocumentsResponse { task: Some(task) }
        }),
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// `GET /v1/documents?page_size=&page_token=`.
pub(crate) async fn list(
    State(edge): State<Edge>,
    headers: call::CallHeaders,
    uri: Uri,
) -> Response {
    let call = call::start(&edge.calls, Method::ListDocuments, &headers);
    let listed = query::<PageQuery>(&uri).and_then(|page| {
        edge.rag.list(ListDraft {
            page_size: page.page_size,
            page_token: page.page_token,
        })
    });
    match call.unary(listed) {
        Ok(page) => axum::Json(pb::ListDocumentsResponse {
            documents: page.documents.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        })
        .into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// `DELETE /v1/documents/{id}`: 204; an unknown id is 404.
pub(crate) async fn delete(
    State(edge): State<Edge>,
    Path(id): Path<String>,
    headers: call::CallHeaders,
) -> Response {
    let call = call::start(&edge.calls, Method::DeleteDocument, &headers);
    match call.unary(edge.rag.delete(&id).await) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}
