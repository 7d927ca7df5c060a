//! The one error type of the service and its single mapping to gRPC status.
//!
//! Every layer returns [`Error`]; only the service edge turns it into a
//! [`tonic::Status`], through the one `From` impl below, so a code is never
//! chosen ad hoc and invalid arguments always carry a `google.rpc.BadRequest`
//! naming each offending field.

use std::{fmt, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// A result with the service's error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while serving a call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request broke one or more documented limits.
    #[error("invalid request: {}", Violations(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The request names a model that no backend serves.
    #[error("model `{model}` is not served here; available: {available}")]
    ModelNotFound {
        /// The model asked for.
        model: String,
        /// The models served, comma-separated.
        available: String,
    },
    /// A named resource (task, document) does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The RPC exists in the contract but this build does not implement it.
    #[error("{0} is not implemented yet")]
    Unimplemented(&'static str),
    /// The call's `grpc-timeout` expired.
    #[error("deadline exceeded after {0} ms")]
    DeadlineExceeded(u64),
    /// The server is draining and ends in-flight calls.
    #[error("the server is shutting down; retry on another instance")]
    ShuttingDown,
    /// A dependency (an upstream model) failed or cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// A rate limit or a server capacity limit was hit.
    #[error("{0}")]
    ResourceExhausted(String),
    /// An upstream model rate-limits us; `retry_after` is its hint, sent to
    /// the client as a `google.rpc.RetryInfo` detail too.
    #[error("{message}")]
    RateLimited {
        /// What happened, including the hint in words.
        message: String,
        /// How long the upstream asked us to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// An upstream model refused the request as invalid: the caller's fault,
    /// reported with the upstream's own words.
    #[error("the model rejected the request: {message}")]
    UpstreamRejected {
        /// The upstream's explanation.
        message: String,
        /// The request field the upstream blamed, when it named one.
        field: Option<String>,
    },
    /// The server's own configuration prevents the call.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A bug: something that should not happen did.
    #[error("internal error: {0}")]
    Internal(String),
}

/// One offending field of a request, as in `google.rpc.BadRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field, such as `messages[3].content` or `stop[0]`.
    pub field: String,
    /// What is wrong, and what would be accepted.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

impl Error {
    /// The gRPC code this error is reported with.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) | Error::UpstreamRejected { .. } => Code::InvalidArgument,
            Error::ModelNotFound { .. } | Error::NotFound(_) => Code::NotFound,
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::ShuttingDown | Error::Unavailable(_) => Code::Unavailable,
            Error::ResourceExhausted(_) | Error::RateLimited { .. } => Code::ResourceExhausted,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Internal(_) => Code::Internal,
        }
    }

    /// An [`Error::InvalidArgument`] when `violations` is not empty.
    pub fn check(violations: Vec<FieldViolation>) -> Result<()> {
        if violations.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(violations))
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::InvalidArgument(violations) => {
                let mut details = ErrorDetails::new();
                for v in violations {
                    details.add_bad_request_violation(v.field, v.description);
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            Error::UpstreamRejected {
                field: Some(field),
                message: description,
            } => {
                let mut details = ErrorDetails::new();
                details.add_bad_request_violation(field, description);
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            Error::RateLimited {
                retry_after: Some(delay),
                ..
            } => Status::with_error_details(
                Code::ResourceExhausted,
                message,
                ErrorDetails::with_retry_info(Some(delay)),
            ),
            other => Status::new(other.code(), message),
        }
    }
}

/// Formats violations as `field: description; field: description`.
struct Violations<'a>(&'a [FieldViolation]);

impl fmt::Display for Violations<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", v.field, v.description)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_carries_every_violation_as_bad_request() {
        let error = Error::InvalidArgument(vec![
            FieldViolation::new("n", "at most 8"),
            FieldViolation::new("stop[0]", "must not be empty"),
        ]);
        let status = Status::from(error);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "invalid request: n: at most 8; stop[0]: must not be empty"
        );
        let bad_request = status.get_details_bad_request().expect("BadRequest detail");
        let fields: Vec<_> = bad_request
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["n", "stop[0]"]);
    }

    #[test]
    fn rate_limits_carry_retry_info() {
        let status = Status::from(Error::RateLimited {
            message: "slow down; retry after 3s".into(),
            retry_after: Some(Duration::from_secs(3)),
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("retry after 3s"));
        let info = status.get_details_retry_info().expect("RetryInfo detail");
        assert_eq!(info.retry_delay, Some(Duration::from_secs(3)));
    }

    #[test]
    fn upstream_rejections_name_the_blamed_field() {
        let status = Status::from(Error::UpstreamRejected {
            message: "temperature is too high".into(),
            field: Some("temperature".into()),
        });
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "the model rejected the request: temperature is too high"
        );
        let bad_request = status.get_details_bad_request().expect("BadRequest detail");
        assert_eq!(bad_request.field_violations[0].field, "temperature");
    }
}
