//! Probes and metrics for orchestrators and scrapers.
//!
//! `/healthz` answers 200 as long as the process serves at all (liveness);
//! `/readyz` answers 503 from the moment the drain starts, so a load
//! balancer stops sending new work while in-flight streams finish
//! (readiness); `/metrics` is the same Prometheus text as
//! `--metrics-listen`, whose gauges count gRPC and HTTP streams alike.

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use serde_json::json;

use super::Edge;

/// `GET /healthz`: the process is up.
pub(crate) async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 while serving, 503 while draining.
pub(crate) async fn readyz(State(edge): State<Edge>) -> impl IntoResponse {
    if edge.shutdown.is_draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        )
    } else {
        (StatusCode::OK, Json(json!({"status": "serving"})))
    }
}

/// `GET /metrics`: the server's counters in the Prometheus text format.
pub(crate) async fn metrics(State(edge): State<Edge>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        edge.metrics.render_prometheus(),
    )
}
