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
//! - [`error`]: OpenAI's error JSON and the one mapping from the crate's
//!   error to an HTTP status (the twin of the gRPC mapping);
//! - [`health`]: `/healthz`, `/readyz` (503 while draining), `/metrics`;
//! - [`cors`]: cross-origin access, off by default;
//! - [`demo`]: the browser demo page at `/`, embedded in the binary;
//! - [`grpc_web`]: the gRPC services for browser gRPC clients.
//!
//! Unknown paths get 404 and known paths asked with another method 405,
//! both in the same error JSON as every other failure.

mod cors;
mod demo;
mod error;
mod grpc_web;
mod health;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    http::{Method, Uri},
    routing::get,
    serve::ListenerExt,
};
use futures::future::BoxFuture;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

pub(crate) use crate::grpc::Services as GrpcServices;

use crate::{
    metrics::Metrics,
    server::{ServeError, Shutdown},
};
use error::ApiError;

/// How often the end of the drain is checked once shutdown has started.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// What every handler of the edge shares.
#[derive(Clone)]
pub(crate) struct Edge {
    /// The server's counters.
    pub(crate) metrics: Arc<Metrics>,
    /// The server's shutdown signal.
    pub(crate) shutdown: Shutdown,
}

impl Edge {
    /// The edge's shared state.
    pub(crate) fn new(metrics: Arc<Metrics>, shutdown: Shutdown) -> Self {
        Self { metrics, shutdown }
    }
}

/// A bound HTTP edge, not yet serving.
pub(crate) struct Listening {
    /// The bound address (useful with port 0).
    pub(crate) addr: SocketAddr,
    /// Serves until the drain is over; resolves once every connection closed.
    pub(crate) serving: BoxFuture<'static, Result<(), ServeError>>,
}

/// Binds `listen` and prepares the edge; nothing is served until
/// [`Listening::serving`] is polled.
pub(crate) async fn bind(
    listen: SocketAddr,
    edge: Edge,
    grpc: GrpcServices,
    cors_origins: &[String],
) -> Result<Listening, ServeError> {
    let bind_error = |source| ServeError::Bind {
        addr: listen,
        source,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    let listener = listener.tap_io(|tcp| {
        // Chunks are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
    });
    let app = router(edge.clone(), grpc, cors_origins);
    let serving = Box::pin(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(drained(edge))
            .await
            .map_err(ServeError::Http)
    });
    Ok(Listening { addr, serving })
}

/// Every route of the edge, with its layers.
fn router(edge: Edge, grpc: GrpcServices, cors_origins: &[String]) -> Router {
    let api = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .merge(demo::routes())
        .with_state(edge);
    let app = grpc_web::routes(api, grpc)
        .fallback(|method: Method, uri: Uri| async move {
            ApiError::unknown_route(method.as_str(), uri.path())
        })
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            ApiError::method_not_allowed(method.as_str(), uri.path())
        });
    let app = match cors::layer(cors_origins) {
        Some(cors) => app.layer(cors),
        None => app,
    };
    // The last layer runs first: a request id is set (the client's, or a
    // new one), then echoed on the response.
    app.layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// Resolves when the edge may stop: the drain has started and no stream is
/// in flight any more (gRPC's or HTTP's: the gauge counts both), or the
/// grace period is over. Until then the listener stays open, so `/readyz`
/// answers 503 and new calls are refused with an error rather than a
/// refused connection.
async fn drained(edge: Edge) {
    edge.shutdown.draining().await;
    let aborted = edge.shutdown.streams_aborted();
    tokio::pin!(aborted);
    while edge.metrics.active_streams() > 0 {
        tokio::select! {
            () = &mut aborted => return,
            () = tokio::time::sleep(DRAIN_POLL) => {}
        }
    }
}
