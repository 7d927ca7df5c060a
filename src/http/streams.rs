//! Resumable chat streams over HTTP: the response of a chat completion
//! asked with `"resumable": true`, its resume route and its cancel route.
//!
//! - `POST /v1/chat/completions` with `"stream": true, "resumable": true`
//!   answers like any streamed completion, plus the stream's id in the
//!   `x-agentstream-stream-id` header and each chunk's sequence as its SSE
//!   `id:`; leaving the response leaves the generation running.
//! - `GET /v1/chat/streams/{stream_id}` resumes: the chunks after
//!   `Last-Event-ID` (what a reconnecting `EventSource` sends) or else
//!   `?after_sequence=`, then the live ones, then `data: [DONE]` when the
//!   stream finished; a stream that failed or was cancelled ends with one
//!   `data: {"error":...}` event instead.
//! - `POST /v1/chat/streams/{stream_id}/cancel` stops it (idempotent) and
//!   answers `{}` once its generation has stopped.
//!
//! Errors are the edge's one mapping: unknown or expired id 404, a resume
//! point outside what is kept 400 (`param: after_sequence`), too many
//! resumable streams 429. `Accept: application/x-ndjson` and `text/plain`
//! frame the chunks as for any completion (without sequences: resume from
//! an SSE stream to resume exactly).

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, Uri},
    response::{IntoResponse, Response},
};

use super::{
    Edge, call,
    error::ApiError,
    openai::chunk_json,
    stream::{self, Frame, Frames, Framing},
};
use crate::{
    chat::{ChatChunk, ChoiceDelta, CompletionHeader},
    grpc::chat::STREAM_ID_HEADER,
    server::{Call, Method},
    streams::{Follow, Kept},
};

/// The response of a resumable completion just started by `call`: its
/// first reader, framed as the client asked.
pub(crate) async fn started(
    edge: &Edge,
    call: Call,
    headers: &HeaderMap,
    follow: Follow,
) -> Response {
    let stream_id = follow.stream_id.clone();
    call.in_span(|| tracing::info!(%stream_id, "resumable stream started"));
    let owner = call.owner().map(str::to_owned);
    let response = respond(edge, call, headers, follow);
    if !response.status().is_success() {
        // Refused (drain, capacity) before anyone could read it: stop it.
        let streams = edge.chat.streams();
        let _ = streams.cancel(&stream_id, owner.as_deref()).await;
    }
    response
}

/// `GET /v1/chat/streams/{stream_id}`: the stream from the resume point on.
pub(crate) async fn resume(
    State(edge): State<Edge>,
    Path(stream_id): Path<String>,
    headers: call::CallHeaders,
    uri: Uri,
) -> Response {
    let call = call::start(&edge.calls, Method::ResumeStream, &headers);
    let resumed = match stream::resume_point(&headers, &uri) {
        Ok(after) => {
            let streams = edge.chat.streams();
            streams.resume(&stream_id, after, call.owner()).await
        }
        Err(error) => Err(error),
    };
    match resumed {
        Ok(follow) => respond(&edge, call, &headers, follow),
        Err(error) => ApiError::from(call.fail(error)).into_response(),
    }
}

/// `POST /v1/chat/streams/{stream_id}/cancel`: `{}` once stopped.
pub(crate) async fn cancel(
    State(edge): State<Edge>,
    Path(stream_id): Path<String>,
    headers: call::CallHeaders,
) -> Response {
    let call = call::start(&edge.calls, Method::CancelStream, &headers);
    let cancelled = edge.chat.streams().cancel(&stream_id, call.owner()).await;
    match call.unary(cancelled) {
        Ok(()) => axum::Json(serde_json::json!({})).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// A reader of a resumable stream as the response of `call`.
fn respond(edge: &Edge, mut call: Call, headers: &HeaderMap, follow: Follow) -> Response {
    let Follow {
        stream_id,
        header,
        chunks,
    } = follow;
    call.record_model(&header.model);
    let chunks = match call.stream(chunks) {
        Ok(chunks) => chunks,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let framing = Framing::negotiate(headers, true);
    let frame = move |kept: crate::Result<Kept>| frame(framing, &header, kept);
    let end = (framing == Framing::EventStream).then_some(Bytes::from_static(stream::DONE));
    let mut response =
        stream::streaming_response(framing, Frames::new(chunks, frame, end), edge.keep_alive);
    if let Ok(value) = HeaderValue::from_str(&stream_id) {
        response.headers_mut().insert(STREAM_ID_HEADER, value);
    }
    response
}

/// One chunk of a resumable stream on the wire; SSE gives it its sequence
/// as `id:`.
fn frame(framing: Framing, header: &CompletionHeader, kept: crate::Result<Kept>) -> Frame {
    match (framing, kept) {
        (Framing::EventStream, Ok(kept)) => Ok(stream::sse_data_with_id(
            kept.sequence,
            &chunk_json(header, &kept.chunk),
        )),
        (Framing::Ndjson, Ok(kept)) => Ok(stream::ndjson_line(&chunk_json(header, &kept.chunk))),
        (Framing::Text, Ok(kept)) => Ok(match kept.chunk {
            ChatChunk::Choice {
                index: 0,
                delta: ChoiceDelta::Content(text),
                ..
            } => Bytes::from(text),
            _ => Bytes::new(),
        }),
        (Framing::EventStream, Err(error)) => Ok(stream::sse_data(&ApiError::from(error))),
        (Framing::Ndjson, Err(error)) => Ok(stream::ndjson_line(&ApiError::from(error))),
        (Framing::Text, Err(error)) => Err(std::io::Error::other(error.to_string())),
    }
}
