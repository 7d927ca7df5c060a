//! The HTTP edge's one error type and its single mapping from [`Error`].
//!
//! [`ApiError`] is the twin of the gRPC edge's `From<Error> for Status`: every
//! domain error reaches an HTTP client through the one `From<Error>` impl
//! below, so a status is never chosen ad hoc. Its body is OpenAI's error JSON
//! (`{"error":{"message","type","param","code"}}`), which the official SDKs
//! parse into their typed exceptions (`BadRequestError`, `NotFoundError`,
//! `RateLimitError`, ...). The same JSON is what a stream that fails after
//! it started sends as its last event, and what the WebSocket sends in its
//! `error` messages.

use std::time::Duration;

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::error::{Error, StorageFault};

/// How long a client is told to wait when the server is at capacity or
/// draining and nobody gave a better hint.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// An error answered over HTTP: a status and OpenAI's error object.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    status: StatusCode,
    body: ErrorObject,
    retry_after: Option<Duration>,
}

/// OpenAI's error object, the value of the `error` key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ErrorObject {
    /// What went wrong, for people.
    pub message: String,
    /// The class of error (`invalid_request_error`, `rate_limit_error`, ...).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The request field at fault, as a path (`messages[0].role`).
    pub param: Option<String>,
    /// A stable machine-readable code (`model_not_found`, ...).
    pub code: Option<&'static str>,
}

/// The JSON document of an error: `{"error": {...}}`.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: &'a ErrorObject,
}

/// An error serializes as its JSON document, `{"error": {...}}`: the body
/// of an error response, and the last event of a stream that failed.
impl Serialize for ApiError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ErrorBody { error: &self.body }.serialize(serializer)
    }
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorObject {
                message: message.into(),
                kind,
                param: None,
                code: None,
            },
            retry_after: None,
        }
    }

    fn param(mut self, param: impl Into<String>) -> Self {
        self.body.param = Some(param.into());
        self
    }

    fn code(mut self, code: &'static str) -> Self {
        self.body.code = Some(code);
        self
    }

    fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// A request whose JSON could not be read: 400 naming the field at
    /// fault when there is one.
    pub(crate) fn invalid_json(message: impl Into<String>, param: Option<String>) -> Self {
        let error = Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message);
        match param {
            Some(param) => error.param(param),
            None => error,
        }
    }

    /// A body larger than `--max-http-body`: 413.
    pub(crate) fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("the request body is larger than the server's limit of {limit} bytes"),
        )
        .code("request_too_large")
    }

    /// A body that is not JSON where JSON is expected: 415.
    pub(crate) fn not_json() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "the request body must be JSON: send `Content-Type: application/json`",
        )
        .code("unsupported_media_type")
    }

    /// A path that no route serves: 404.
    pub(crate) fn unknown_route(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("no route for {method} {}", path.escape_debug()),
        )
        .code("unknown_url")
    }

    /// A route asked with a method it does not serve: 405.
    pub(crate) fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            format!("{method} is not allowed on {}", path.escape_debug()),
        )
        .code("method_not_allowed")
    }

    /// OpenAI's error object.
    pub(crate) fn object(&self) -> &ErrorObject {
        &self.body
    }

    /// The error as its JSON document, `{"error":{...}}`.
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            // Serializing strings and options cannot fail; stay valid JSON anyway.
            r#"{"error":{"message":"internal error","type":"server_error","param":null,"code":null}}"#
                .to_owned()
        })
    }
}

/// The one mapping of domain errors to HTTP, the twin of the gRPC edge's
/// `From<Error> for Status`.
impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::InvalidArgument(violations) => {
                let error = Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message);
                match violations.into_iter().next() {
                    Some(first) => error.param(first.field),
                    None => error,
                }
            }
            Error::UpstreamRejected { field, .. } => {
                let error = Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message);
                match field {
                    Some(field) => error.param(field),
                    None => error,
                }
            }
            Error::ModelNotFound { .. } => {
                Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
                    .param("model")
                    .code("model_not_found")
            }
            Error::NotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message).code("not_found")
            }
            Error::Unimplemented(_) => {
                Self::new(StatusCode::NOT_IMPLEMENTED, "server_error", message)
            }
            Error::DeadlineExceeded(_) => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout_error", message)
                    .code("deadline_exceeded")
            }
            Error::ShuttingDown => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
                    .code("shutting_down")
                    .retry_after(DEFAULT_RETRY_AFTER)
            }
            // An upstream that failed or cannot be reached, or whose setup
            // is wrong: the gateway's fault, not the client's.
            Error::Unavailable(_) | Error::FailedPrecondition(_) => {
                Self::new(StatusCode::BAD_GATEWAY, "server_error", message)
                    .code("upstream_unavailable")
            }
            Error::ResourceExhausted(_) => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
                    .code("rate_limit_exceeded")
                    .retry_after(DEFAULT_RETRY_AFTER)
            }
            Error::RateLimited { retry_after, .. } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
                    .code("rate_limit_exceeded")
                    .retry_after(retry_after.unwrap_or(DEFAULT_RETRY_AFTER))
            }
            // A resume point outside what a stream has or keeps.
            Error::OutOfRange(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
                    .param("after_sequence")
                    .code("out_of_range")
            }
            // Only ever the last event of a stream someone cancelled.
            Error::Cancelled(_) => {
                Self::new(StatusCode::CONFLICT, "invalid_request_error", message).code("cancelled")
            }
            Error::Internal(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
            }
            // The server's disk: 507 when it is full (the client may retry
            // once space is freed), 503 when it cannot be written at all.
            Error::Storage {
                fault: StorageFault::Full,
                ..
            } => Self::new(StatusCode::INSUFFICIENT_STORAGE, "server_error", message)
                .code("insufficient_storage"),
            Error::Storage {
                fault: StorageFault::NotWritable,
                ..
            } => Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
                .code("storage_unavailable"),
            // OpenAI's own answer to a missing or wrong key.
            Error::Unauthenticated(_) => {
                Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message)
                    .code("invalid_api_key")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            self.to_json(),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(delay) = self.retry_after {
            // Whole seconds, rounded up: `Retry-After: 0` would invite a storm.
            let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::FieldViolation;

    fn json(error: &ApiError) -> serde_json::Value {
        serde_json::from_str(&error.to_json()).expect("valid JSON")
    }

    #[test]
    fn invalid_arguments_are_400_naming_the_first_field() {
        let error = ApiError::from(Error::InvalidArgument(vec![
            FieldViolation::new("messages[0].role", "bad"),
            FieldViolation::new("n", "at most 8"),
        ]));
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        let body = json(&error);
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], "messages[0].role");
        assert_eq!(body["error"]["code"], serde_json::Value::Null);
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains("n: at most 8"), "{message}");
    }

    #[test]
    fn unknown_models_are_404_model_not_found() {
        let error = ApiError::from(Error::ModelNotFound {
            model: "gpt-9".into(),
            available: "echo".into(),
        });
        assert_eq!(error.status, StatusCode::NOT_FOUND);
        assert_eq!(json(&error)["error"]["code"], "model_not_found");
    }

    #[test]
    fn capacity_and_rate_limits_are_429_with_retry_after() {
        let response = ApiError::from(Error::ResourceExhausted("full".into())).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let response = ApiError::from(Error::RateLimited {
            message: "slow down".into(),
            retry_after: Some(Duration::from_millis(2500)),
        })
        .into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
    }

    #[test]
    fn every_error_has_its_status() {
        let cases = [
            (Error::NotFound("task x".into()), 404),
            (Error::Unimplemented("x"), 501),
            (Error::DeadlineExceeded(5), 504),
            (Error::ShuttingDown, 503),
            (Error::Unavailable("down".into()), 502),
            (Error::FailedPrecondition("key".into()), 502),
            (Error::Internal("bug".into()), 500),
            (Error::Unauthenticated("no key".into()), 401),
            (
                Error::Storage {
                    fault: StorageFault::Full,
                    message: "disk full".into(),
                },
                507,
            ),
            (
                Error::Storage {
                    fault: StorageFault::NotWritable,
                    message: "read-only".into(),
                },
                503,
            ),
            (
                Error::UpstreamRejected {
                    message: "no".into(),
                    field: Some("temperature".into()),
                },
                400,
            ),
        ];
        for (error, status) in cases {
            assert_eq!(ApiError::from(error).status.as_u16(), status);
        }
    }
}
