//! The HTTP side of a call: what the edge reads off the request for the
//! core's per-call bookkeeping (the twin of `grpc::call`).
//!
//! The bookkeeping itself (span, admission under `--max-active-streams`,
//! drain, counters, the closing log line) is the core's
//! [`crate::server::call`], the very same for both edges; only the request
//! id comes from a different place here.

use axum::http::HeaderMap;

use crate::server::{Call, CallMeta, Calls, Method, call::REQUEST_ID_HEADER};

/// Starts the call of `method` for a request with `headers`. The request id
/// is always there: the edge's request-id layer sets one when the client
/// sent none. HTTP clients have no standard deadline header, so the call
/// has none (a client that gives up closes the connection, which cancels).
pub(crate) fn start(calls: &Calls, method: Method, headers: &HeaderMap) -> Call {
    start_with_id(calls, method, request_id(headers))
}

/// Starts the call of `method` under `request_id`.
pub(crate) fn start_with_id(calls: &Calls, method: Method, request_id: &str) -> Call {
    calls.start(
        method,
        CallMeta {
            request_id,
            timeout: None,
        },
    )
}

/// The request id of a request with `headers`.
pub(crate) fn request_id(headers: &HeaderMap) -> &str {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}
