//! Cross-origin access for browser clients, off unless configured.
//!
//! With `--cors-allow-origin` (repeatable, or `*`) the edge answers
//! preflights and adds the `Access-Control-*` headers for the listed
//! origins: methods GET, POST, DELETE, OPTIONS and the request headers a
//! browser client of this API sends (`content-type`, `authorization`,
//! `x-request-id`, `last-event-id`, plus those of gRPC-Web). The response
//! headers a page may read are exposed too (`x-request-id`, a resumable
//! stream's `x-agentstream-stream-id`, `location`, `retry-after` and
//! gRPC-Web's status trailers).

use axum::http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Request headers a browser may send.
const ALLOWED_HEADERS: [&str; 8] = [
    "content-type",
    "authorization",
    "x-request-id",
    "last-event-id",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "connect-protocol-version",
];

/// Response headers a page may read.
const EXPOSED_HEADERS: [&str; 7] = [
    "x-request-id",
    "x-agentstream-stream-id",
    "location",
    "retry-after",
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
];

/// The CORS layer for `origins`, or `None` when CORS is off.
pub(crate) fn layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        // The config parser only lets printable ASCII through.
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
            .allow_headers(ALLOWED_HEADERS.map(HeaderName::from_static))
            .expose_headers(EXPOSED_HEADERS.map(HeaderName::from_static)),
    )
}
