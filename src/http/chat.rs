//! `POST /v1/chat/completions`: OpenAI's Chat Completions over the core's
//! chat, and `GET /v1/models`.
//!
//! The request becomes the core's [`ChatDraft`](crate::chat::ChatDraft), so
//! every limit and field path is the gRPC edge's; the call goes through the
//! same bookkeeping ([`crate::server::call`]) and the core's chunks come back
//! as OpenAI's JSON, framed by what the client asked for:
//! - `stream: false`: one `chat.completion` document;
//! - `stream: true`: server-sent events, one `data:` per chunk, then
//!   `data: [DONE]`; `Accept: application/x-ndjson` gives the same chunks
//!   one per line without `[DONE]`; `Accept: text/plain` streams only the
//!   text of choice 0.
//!
//! With `"resumable": true` (and `stream: true`) the completion is kept
//! and outlives the response; [`streams`] answers it.
//!
//! A failure before the first chunk is an error response with its status
//! (the response waits for that chunk before it sends its headers, up to
//! the keep-alive interval); a failure after it is a last
//! `data: {"error":...}` event (or line), with no `[DONE]`, and a text
//! stream is cut off so the client sees it incomplete.

use axum::{
    body::Bytes,
    extract::State,
    response::{IntoResponse, Response},
};
use futures::StreamExt;

use super::{
    Edge, call,
    error::ApiError,
    json::Json,
    openai::{ChatCompletionRequest, CompletionBuilder, ModelList, ParamNames, chunk_json},
    stream::{self, Frame, Frames, Framing},
    streams,
};
use crate::{
    chat::{ChatChunk, ChatChunks, ChatDraft, ChoiceDelta},
    error::{Error, FieldViolation},
    server::{Call, CallStream, Method},
};

/// `POST /v1/chat/completions`.
pub(crate) async fn completions(
    State(edge): State<Edge>,
    headers: call::CallHeaders,
    Json(request): Json<ChatCompletionRequest>,
) -> Response {
    let mut call = call::start(&edge.calls, Method::StreamChat, &headers);
    let streaming = request.stream();
    let request_resumable = request.resumable();
    // A whole completion always reports its usage, as OpenAI's does.
    let include_usage = !streaming || request.include_usage();
    let names = request.param_names();
    let draft = match request.into_draft(include_usage) {
        Ok(draft) => draft,
        Err(error) => return ApiError::from(call.fail(error)).into_response(),
    };
    if request_resumable {
        return resumable(&edge, call, &headers, streaming, draft, names).await;
    }
    let choices = draft.n.max(1);
    let completion = match call.in_span(|| edge.chat.start(draft).map_err(|e| names.rename(e))) {
        Ok(completion) => completion,
        Err(error) => return ApiError::from(call.fail(error)).into_response(),
    };
    call.record_model(&completion.header().model);
    call.record_usage(completion.usage());
    let (header, chunks) = call.in_span(|| completion.into_chunks());
    let chunks = match call.stream_of(chunks) {
        Ok(chunks) => chunks,
        Err(error) => return ApiError::from(error).into_response(),
    };
    if !streaming {
        return whole_completion(CompletionBuilder::new(header, choices), chunks).await;
    }
    let chunks = match stream::unless_failed_first(chunks, edge.keep_alive).await {
        Ok(chunks) => chunks,
        // The call's stream has recorded the failure.
        Err(error) => return error_body(error).into_response(),
    };
    let framing = Framing::negotiate(&headers, true);
    let frame = move |chunk: crate::Result<ChatChunk>| -> Frame {
        match (framing, chunk) {
            (Framing::Text, chunk) => text_of_choice_0(chunk),
            (Framing::EventStream, Ok(chunk)) => Ok(stream::sse_data(&chunk_json(&header, &chunk))),
            (Framing::EventStream, Err(error)) => Ok(stream::sse_data(&error_body(error))),
            (Framing::Ndjson, Ok(chunk)) => Ok(stream::ndjson_line(&chunk_json(&header, &chunk))),
            (Framing::Ndjson, Err(error)) => Ok(stream::ndjson_line(&error_body(error))),
        }
    };
    let end = (framing == Framing::EventStream).then_some(Bytes::from_static(stream::DONE));
    let frames = Frames::new(chunks, frame, end);
    stream::streaming_response(framing, frames, edge.keep_alive)
}

/// A completion asked with `"resumable": true`: kept and generated to its
/// end whoever reads it (see [`streams`]); only a stream can be resumed.
async fn resumable(
    edge: &Edge,
    call: Call,
    headers: &axum::http::HeaderMap,
    streaming: bool,
    draft: ChatDraft,
    names: ParamNames,
) -> Response {
    if !streaming {
        let error = Error::InvalidArgument(vec![FieldViolation::new(
            "resumable",
            "needs \"stream\": true (only a stream can be resumed)",
        )]);
        return ApiError::from(call.fail(error)).into_response();
    }
    let started = edge
        .chat
        .start_resumable(draft, call.owner(), call.span())
        .await;
    match started {
        Ok(follow) => streams::started(edge, call, headers, follow).await,
        Err(error) => ApiError::from(call.fail(names.rename(error))).into_response(),
    }
}

/// The OpenAI error document of `error`.
fn error_body(error: Error) -> ApiError {
    ApiError::from(error)
}

/// The text of choice 0 in `chunk`; a failure aborts the body.
fn text_of_choice_0(chunk: crate::Result<ChatChunk>) -> Frame {
    match chunk {
        Ok(ChatChunk::Choice {
            index: 0,
            delta: ChoiceDelta::Content(text),
            ..
        }) => Ok(Bytes::from(text)),
        Ok(_) => Ok(Bytes::new()),
        Err(error) => Err(std::io::Error::other(error.to_string())),
    }
}

/// Gathers every chunk into one `chat.completion`; a failure answers the
/// error instead.
async fn whole_completion(
    mut completion: CompletionBuilder,
    chunks: CallStream<ChatChunks>,
) -> Response {
    let mut chunks = std::pin::pin!(chunks);
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(chunk) => completion.push(chunk),
            Err(error) => return ApiError::from(error).into_response(),
        }
    }
    axum::Json(completion.finish()).into_response()
}

/// `GET /v1/models`: every model the server serves.
pub(crate) async fn models(State(edge): State<Edge>) -> Response {
    let list = ModelList::new(edge.chat.models().list());
    axum::Json(list).into_response()
}
