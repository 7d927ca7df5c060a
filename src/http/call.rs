//! The HTTP side of a call: what the edge reads off the request for the
//! core's per-call bookkeeping (the twin of `grpc::call`).
//!
//! The bookkeeping itself (span, admission under `--max-active-streams`,
//! drain, counters, the closing log line) is the core's
//! [`crate::server::call`], the very same for both edges; only the request
//! id and the caller come from a different place here.

use std::{convert::Infallible, ops::Deref};

use axum::{extract::FromRequestParts, http::HeaderMap, http::request::Parts};

use crate::server::{
    Call, CallMeta, Calls, ConnectionStreams, Method, auth::Caller, call::REQUEST_ID_HEADER,
};

/// A request's headers and the caller the API key check let in (when keys
/// are configured): what a handler needs to start its call.
#[derive(Debug, Clone)]
pub(crate) struct CallHeaders {
    headers: HeaderMap,
    caller: Option<Caller>,
    connection: Option<ConnectionStreams>,
}

impl Deref for CallHeaders {
    type Target = HeaderMap;

    fn deref(&self) -> &HeaderMap {
        &self.headers
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CallHeaders {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            headers: parts.headers.clone(),
            caller: parts.extensions.get::<Caller>().cloned(),
            connection: parts.extensions.get::<ConnectionStreams>().cloned(),
        })
    }
}

impl CallHeaders {
    /// The key's caller, when keys are configured.
    pub(crate) fn caller(&self) -> Option<&Caller> {
        self.caller.as_ref()
    }

    /// The share of streams of the connection the request came on.
    pub(crate) fn connection(&self) -> Option<&ConnectionStreams> {
        self.connection.as_ref()
    }
}

/// Starts the call of `method` for a request with `headers`. The request id
/// is always there: the edge's request-id layer sets one when the client
/// sent none. HTTP clients have no standard deadline header, so the call
/// has none (a client that gives up closes the connection, which cancels).
pub(crate) fn start(calls: &Calls, method: Method, headers: &CallHeaders) -> Call {
    let call = start_with_id(
        calls,
        method,
        request_id(headers),
        headers.caller(),
        headers.connection(),
    );
    crate::telemetry::accept_trace_context(call.span(), headers);
    call
}

/// Starts the call of `method` under `request_id`, made by `caller` on
/// `connection`.
pub(crate) fn start_with_id(
    calls: &Calls,
    method: Method,
    request_id: &str,
    caller: Option<&Caller>,
    connection: Option<&ConnectionStreams>,
) -> Call {
    calls.start(
        method,
        CallMeta {
            request_id,
            timeout: None,
            caller,
            connection,
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
