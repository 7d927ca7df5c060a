//! The HTTP edge: the same streams as the gRPC edge, for clients that speak
//! HTTP (browsers, `curl -N`, the OpenAI SDKs), on its own port
//! (`--http-listen`, HTTP/1.1 and h2c).
//!
//! It is a second edge over the same core, not a proxy to the gRPC port:
//! handlers turn JSON into the core's requests, run them through the same
//! validation, limits and per-call bookkeeping (span, request id, counters,
//! admission, drain), and turn the core's domain streams back into JSON.
//! The gRPC port never goes through axum, so it keeps its speed.
//!
//! One module per concern:
//! - [`chat`]: `POST /v1/chat/completions` (SSE, NDJSON, text or one JSON)
//!   and `GET /v1/models`, in [`openai`]'s wire types;
//! - [`streams`]: resumable chat streams (the response of a resumable
//!   completion, resume, cancel);
//! - [`ws`]: the WebSocket chat, several completions per connection;
//! - [`rag`]: the RAG answer stream and the documents;
//! - [`tasks`]: tasks and their resumable event stream;
//! - [`call`]: what the core's per-call bookkeeping needs from a request;
//! - [`error`]: OpenAI's error JSON and the one mapping from the crate's
//!   error to an HTTP status (the twin of the gRPC mapping);
//! - [`json`]: JSON request bodies with the body limit, 415 and `param`;
//! - [`stream`]: SSE / NDJSON / text framing and keep-alive comments;
//! - [`health`]: `/healthz`, `/readyz` (503 while draining), `/metrics`;
//! - [`cors`]: cross-origin access, off by default;
//! - [`demo`]: the browser demo page at `/`, embedded in the binary;
//! - [`grpc_web`]: the gRPC services for browser gRPC clients.
//!
//! Unknown paths get 404 and known paths asked with another method 405,
//! both in the same error JSON as every other failure.

mod call;
mod chat;
mod cors;
mod demo;
mod error;
mod grpc_web;
mod health;
mod json;
mod openai;
mod rag;
mod stream;
mod streams;
mod tasks;
mod ws;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::FromRef,
    http::{Method, Uri},
    routing::{delete, get, post},
};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::{
    chat::Chat,
    config::ServeConfig,
    error::Error,
    grpc,
    metrics::Metrics,
    rag::Rag,
    server::{Calls, ServeError, Shutdown, auth::RequireKeyLayer, request_id},
    tasks::Tasks,
};
use error::ApiError;
use json::BodyLimit;

/// What every handler of the edge shares: the core, built once by the
/// server for both edges, and the edge's settings.
#[derive(Clone)]
pub(crate) struct Edge {
    /// Chat completions.
    pub(crate) chat: Chat,
    /// Documents and answers.
    pub(crate) rag: Rag,
    /// Tasks.
    pub(crate) tasks: Tasks,
    /// The per-call bookkeeping, shared with the gRPC edge.
    pub(crate) calls: Calls,
    /// The server's counters.
    pub(crate) metrics: Arc<Metrics>,
    /// The server's shutdown signal.
    pub(crate) shutdown: Shutdown,
    /// Interval of keep-alive comments on idle event streams.
    pub(crate) keep_alive: Option<Duration>,
    /// The largest request body read.
    pub(crate) body_limit: BodyLimit,
}

/// The core an [`Edge`] serves.
pub(crate) struct Core {
    /// Chat completions.
    pub(crate) chat: Chat,
    /// Documents and answers.
    pub(crate) rag: Rag,
    /// Tasks.
    pub(crate) tasks: Tasks,
    /// The per-call bookkeeping.
    pub(crate) calls: Calls,
    /// The server's shutdown signal.
    pub(crate) shutdown: Shutdown,
}

impl Edge {
    /// The edge over `core`, configured by `config`.
    pub(crate) fn new(config: &ServeConfig, core: Core) -> Self {
        Self {
            metrics: core.calls.metrics().clone(),
            chat: core.chat,
            rag: core.rag,
            tasks: core.tasks,
            calls: core.calls,
            shutdown: core.shutdown,
            keep_alive: Some(config.sse_keep_alive).filter(|d| !d.is_zero()),
            body_limit: BodyLimit(config.max_http_body),
        }
    }
}

impl FromRef<Edge> for BodyLimit {
    fn from_ref(edge: &Edge) -> Self {
        edge.body_limit
    }
}

/// A bound HTTP edge, not yet serving: the server's connection layer
/// (`server::transport`) serves `app` on `listener`, with the same
/// connection limits, timeouts and drain as the gRPC port.
pub(crate) struct Listening {
    /// The bound address (useful with port 0).
    pub(crate) addr: SocketAddr,
    /// The bound listener.
    pub(crate) listener: tokio::net::TcpListener,
    /// Every route of the edge.
    pub(crate) app: Router,
}

/// Binds `listen` and builds the edge's routes.
pub(crate) async fn bind(
    listen: SocketAddr,
    edge: Edge,
    grpc: grpc::Services,
    cors_origins: &[String],
    auth: RequireKeyLayer,
) -> Result<Listening, ServeError> {
    let (listener, addr) = crate::server::bind(listen).await?;
    let app = router(edge, grpc, cors_origins, auth);
    Ok(Listening {
        addr,
        listener,
        app,
    })
}

/// Every route of the edge, with its layers.
fn router(
    edge: Edge,
    grpc: grpc::Services,
    cors_origins: &[String],
    auth: RequireKeyLayer,
) -> Router {
    let api = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/models", get(chat::models))
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/chat/ws", get(ws::upgrade))
        .route("/v1/chat/streams/{stream_id}", get(streams::resume))
        .route("/v1/chat/streams/{stream_id}/cancel", post(streams::cancel))
        .route("/v1/rag/answer", post(rag::answer))
        .route("/v1/documents", post(rag::ingest).get(rag::list))
        .route("/v1/documents/{id}", delete(rag::delete))
        .route("/v1/tasks", post(tasks::start).get(tasks::list))
        .route("/v1/tasks/{id}", get(tasks::get))
        .route("/v1/tasks/{id}/cancel", post(tasks::cancel))
        .route("/v1/tasks/{id}/events", get(tasks::events))
        .merge(demo::routes())
        .with_state(edge);
    let app = grpc_web::routes(api, grpc)
        .fallback(|method: Method, uri: Uri| async move {
            ApiError::unknown_route(method.as_str(), uri.path())
        })
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            ApiError::method_not_allowed(method.as_str(), uri.path())
        })
        // Inside CORS: a browser can read the 401, and preflights (which
        // carry no credentials) are answered before the check.
        .layer(auth);
    let app = match cors::layer(cors_origins) {
        Some(cors) => app.layer(cors),
        None => app,
    };
    // The last layer runs first: an unacceptable client id is dropped, a
    // request id is set (the client's, or a new one), marked unindexed,
    // then echoed on the response.
    app.layer(PropagateRequestIdLayer::x_request_id())
        .layer(tower::util::MapRequestLayer::new(
            request_id::unindexed::<axum::body::Body>,
        ))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(tower::util::MapRequestLayer::new(
            request_id::drop_unacceptable::<axum::body::Body>,
        ))
}

/// An error answered as the edge answers every error: its status and
/// OpenAI's error JSON (for checks that run in front of the routes).
pub(crate) fn error_response(error: Error) -> axum::response::Response {
    use axum::response::IntoResponse;
    ApiError::from(error).into_response()
}
