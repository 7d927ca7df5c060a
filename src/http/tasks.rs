//! Tasks over HTTP: start, get, list and cancel as JSON, and a task's event
//! stream as server-sent events an `EventSource` can follow and resume.
//!
//! Bodies are the gRPC messages in the proto3 JSON mapping (pbjson), read
//! through the gRPC edge's conversions into the core's drafts, so both
//! edges accept and answer the same documents.
//!
//! `GET /v1/tasks/{id}/events` is WatchTask: `event:` is the state in lower
//! case, `id:` the sequence, `data:` the `WatchTaskResponse`. A browser's
//! `EventSource` reconnects with `Last-Event-ID` (which wins over
//! `?after_sequence=`, the first connection's resume point) and gets every
//! later event exactly once. After the terminal event comes `event: end`
//! with `data: {}`, so a page can close its `EventSource` instead of
//! reconnecting forever. Leaving the stream never cancels the task.

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use serde::Deserialize;

use super::{
    Edge, call,
    error::ApiError,
    json::{Json, query},
    stream::{self, Frame, Frames, Framing},
};
use crate::{
    grpc::tasks::{event_to_wire, start_draft},
    pb,
    server::Method,
    tasks::{TaskEvent, TaskSnapshot, TaskState, request::ListDraft},
};

/// The event that closes a finished task's stream.
const END: &[u8] = b"event: end\ndata: {}\n\n";

/// `?page_size=&page_token=` of the list routes.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PageQuery {
    #[serde(default)]
    pub page_size: u32,
    #[serde(default)]
    pub page_token: String,
}

/// JSON of a message in the proto3 JSON mapping.
fn proto_json(status: StatusCode, message: &impl serde::Serialize) -> Response {
    (status, axum::Json(message)).into_response()
}

/// `status` with the message `wrap` makes of `task`, its `Location` the
/// task's URL: how StartTask (201) and IngestDocuments (202) answer.
pub(crate) fn task_at_location<M: serde::Serialize>(
    status: StatusCode,
    task: TaskSnapshot,
    wrap: impl FnOnce(pb::Task) -> M,
) -> Response {
    let location = format!("/v1/tasks/{}", task.id);
    let mut response = proto_json(status, &wrap(task.into()));
    if let Ok(location) = location.parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// `POST /v1/tasks`: 201 with the task, `Location` its URL.
pub(crate) async fn start(
    State(edge): State<Edge>,
    headers: call::CallHeaders,
    Json(request): Json<pb::StartTaskRequest>,
) -> Response {
    let call = call::start(&edge.calls, Method::StartTask, &headers);
    match call.unary(edge.tasks.start(start_draft(request)).await) {
        Ok(task) => task_at_location(StatusCode::CREATED, task, |task| pb::StartTaskResponse {
            task: Some(task),
        }),
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// `GET /v1/tasks/{id}`.
pub(crate) async fn get(
    State(edge): State<Edge>,
    Path(id): Path<String>,
    headers: call::CallHeaders,
) -> Response {
    let call = call::start(&edge.calls, Method::GetTask, &headers);
    match call.unary(edge.tasks.get(&id).await) {
        Ok(task) => proto_json(
            StatusCode::OK,
            &pb::GetTaskResponse {
                task: Some(task.into()),
            },
        ),
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// `GET /v1/tasks?page_size=&page_token=`, newest first.
pub(crate) async fn list(
    State(edge): State<Edge>,
    headers: call::CallHeaders,
    uri: Uri,
) -> Response {
    let call = call::start(&edge.calls, Method::ListTasks, &headers);
    let listed = match query::<PageQuery>(&uri) {
        Ok(page) => {
            edge.tasks
                .list(&ListDraft {
                    page_size: page.page_size,
                    page_token: page.page_token,
                })
                .await
        }
        Err(error) => Err(error),
    };
    match call.unary(listed) {
        Ok(page) => proto_json(
            StatusCode::OK,
            &pb::ListTasksResponse {
                tasks: page.tasks.into_iter().map(Into::into).collect(),
                next_page_token: page.next_page_token,
            },
        ),
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// `POST /v1/tasks/{id}/cancel`: idempotent; the task once its work stopped.
pub(crate) async fn cancel(
    State(edge): State<Edge>,
    Path(id): Path<String>,
    headers: call::CallHeaders,
) -> Response {
    let call = call::start(&edge.calls, Method::CancelTask, &headers);
    match call.unary(edge.tasks.cancel(&id).await) {
        Ok(task) => proto_json(
            StatusCode::OK,
            &pb::CancelTaskResponse {
                task: Some(task.into()),
            },
        ),
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// `GET /v1/tasks/{id}/events`: the task's events from the resume point on.
pub(crate) async fn events(
    State(edge): State<Edge>,
    Path(id): Path<String>,
    headers: call::CallHeaders,
    uri: Uri,
) -> Response {
    let call = call::start(&edge.calls, Method::WatchTask, &headers);
    let watch = match stream::resume_point(&headers, &uri) {
        Ok(after) => edge.tasks.watch(&id, after).await,
        Err(error) => Err(error),
    };
    let watch = match watch {
        Ok(watch) => watch,
        Err(error) => return ApiError::from(call.fail(error)).into_response(),
    };
    let events = match call.stream(watch.map(Ok)) {
        Ok(events) => events,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let framing = Framing::negotiate(&headers, false);
    let frame = move |event: crate::Result<TaskEvent>| -> Frame {
        Ok(match (framing, event) {
            (Framing::EventStream, Ok(event)) => {
                let name = state_name(event.status.state);
                let sequence = event.sequence;
                let message = pb::WatchTaskResponse {
                    event: Some(event_to_wire(&id, event)),
                };
                stream::sse_event(name, sequence, &message)
            }
            (_, Ok(event)) => stream::ndjson_line(&pb::WatchTaskResponse {
                event: Some(event_to_wire(&id, event)),
            }),
            (Framing::EventStream, Err(error)) => stream::sse_data(&ApiError::from(error)),
            (_, Err(error)) => stream::ndjson_line(&ApiError::from(error)),
        })
    };
    let end = (framing == Framing::EventStream).then_some(Bytes::from_static(END));
    stream::streaming_response(framing, Frames::new(events, frame, end), edge.keep_alive)
}

/// The `event:` name of a state: its name in lower case, without prefix.
fn state_name(state: TaskState) -> &'static str {
    match state {
        TaskState::Pending => "pending",
        TaskState::Running => "running",
        TaskState::Succeeded => "succeeded",
        TaskState::Failed => "failed",
        TaskState::Cancelled => "cancelled",
    }
}
