//! The one conversion of the core's [`Error`] to a gRPC [`Status`].
//!
//! The code comes from the error's [`ErrorKind`]; invalid arguments carry a
//! `google.rpc.BadRequest` naming each offending field, and rate limits a
//! `google.rpc.RetryInfo` when the upstream said how long to wait.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::{Error, ErrorKind};

/// The gRPC code of each kind of error.
pub(crate) fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::Unimplemented => Code::Unimplemented,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::OutOfRange => Code::OutOfRange,
        ErrorKind::Cancelled => Code::Cancelled,
        ErrorKind::Internal => Code::Internal,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::InvalidArgument(violations) => {
                // The violations travel once, in the BadRequest detail; the
                // message names the first and counts the rest, so the
                // trailers stay small.
                let message = summary(&violations);
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
            other => Status::new(code(other.kind()), message),
        }
    }
}

/// `invalid request: field: description`, and how many more there are.
fn summary(violations: &[crate::error::FieldViolation]) -> String {
    match violations {
        [] => "invalid request".into(),
        [only] => format!("invalid request: {}: {}", only.field, only.description),
        [first, rest @ ..] => format!(
            "invalid request: {}: {} (and {} more in the BadRequest detail)",
            first.field,
            first.description,
            rest.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::error::FieldViolation;

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
            "invalid request: n: at most 8 (and 1 more in the BadRequest detail)"
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
