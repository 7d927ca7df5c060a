//! The one error type of the core, protocol-free.
//!
//! Every layer returns [`Error`]. Each edge converts it once: the gRPC edge
//! to a `tonic::Status` (`grpc::status`), the HTTP edge to a status code and
//! OpenAI's error JSON. Both choose by [`ErrorKind`], the canonical error
//! model (the one gRPC's codes name), so a kind is never chosen ad hoc and
//! invalid arguments always carry the offending fields.

use std::{fmt, time::Duration};

/// A result with the service's error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while serving a call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request broke one or more documented limits.
    #[error("invalid request: {}", ViolationList(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The request names a model that no backend serves.
    #[error("model `{model}` is not served here; {}", ModelHint(.available))]
    ModelNotFound {
        /// The model asked for.
        model: String,
        /// The models served, comma-separated; empty when the server does
        /// not list them in errors (API keys configured: callers ask
        /// ListModels).
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
    /// A rate or capacity limit that says when to retry: an upstream model
    /// rate-limits us, or a queue of the server's own is full.
    /// `retry_after` goes to the client as a `google.rpc.RetryInfo` detail
    /// (HTTP: `Retry-After`).
    #[error("{message}")]
    RateLimited {
        /// What happened, including the hint in words.
        message: String,
        /// How long to wait, when the upstream (or the queue) said.
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
    /// A position asked for is outside what exists or is kept (a resume
    /// point past a stream's end, or before its replay buffer).
    #[error("{0}")]
    OutOfRange(String),
    /// The work was cancelled by a request (CancelStream) before it ended.
    #[error("{0}")]
    Cancelled(String),
    /// A bug: something that should not happen did.
    #[error("internal error: {0}")]
    Internal(String),
    /// The call carries no valid API key (when keys are configured).
    #[error("{0}")]
    Unauthenticated(String),
    /// The server's storage refused a write: the disk is full (or over
    /// quota), or it cannot be written at all. The message says what
    /// happened to the request and names no file of the server.
    #[error("{message}")]
    Storage {
        /// Why the storage refused.
        fault: StorageFault,
        /// What happened, for the client.
        message: String,
    },
}

/// Why the server's storage refused a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageFault {
    /// No space left (`ENOSPC`) or over quota (`EDQUOT`): retrying helps
    /// once space is freed, so it is a capacity limit (RESOURCE_EXHAUSTED).
    Full,
    /// Not allowed to write (`EPERM`, `EACCES`) or a read-only file system
    /// (`EROFS`): the operator must fix it (UNAVAILABLE).
    NotWritable,
}

impl StorageFault {
    /// The fault an I/O error reports, if it is a storage fault at all.
    pub fn of(error: &std::io::Error) -> Option<Self> {
        use std::io::ErrorKind as Io;
        match error.kind() {
            Io::StorageFull | Io::QuotaExceeded => Some(StorageFault::Full),
            Io::PermissionDenied | Io::ReadOnlyFilesystem => Some(StorageFault::NotWritable),
            _ => None,
        }
    }
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

/// What kind of failure an [`Error`] is: the canonical error model that
/// both edges map from (to gRPC codes, to HTTP statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The client sent something the contract does not allow.
    InvalidArgument,
    /// A named model, task or document does not exist.
    NotFound,
    /// Not implemented by this build.
    Unimplemented,
    /// The client's deadline expired.
    DeadlineExceeded,
    /// Retry later, maybe elsewhere: draining, or a failing dependency.
    Unavailable,
    /// A rate limit or capacity limit.
    ResourceExhausted,
    /// The server's configuration prevents the call.
    FailedPrecondition,
    /// A position outside what exists or is kept.
    OutOfRange,
    /// Cancelled by a request.
    Cancelled,
    /// A bug.
    Internal,
    /// No valid credentials.
    Unauthenticated,
}

impl ErrorKind {
    /// The kind's name, as the call's log line records it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "InvalidArgument",
            ErrorKind::NotFound => "NotFound",
            ErrorKind::Unimplemented => "Unimplemented",
            ErrorKind::DeadlineExceeded => "DeadlineExceeded",
            ErrorKind::Unavailable => "Unavailable",
            ErrorKind::ResourceExhausted => "ResourceExhausted",
            ErrorKind::FailedPrecondition => "FailedPrecondition",
            ErrorKind::OutOfRange => "OutOfRange",
            ErrorKind::Cancelled => "Cancelled",
            ErrorKind::Internal => "Internal",
            ErrorKind::Unauthenticated => "Unauthenticated",
        }
    }
}

impl Error {
    /// The kind of failure, which each edge maps to its protocol.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument(_) | Error::UpstreamRejected { .. } => {
                ErrorKind::InvalidArgument
            }
            Error::ModelNotFound { .. } | Error::NotFound(_) => ErrorKind::NotFound,
            Error::Unimplemented(_) => ErrorKind::Unimplemented,
            Error::DeadlineExceeded(_) => ErrorKind::DeadlineExceeded,
            Error::ShuttingDown | Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::ResourceExhausted(_) | Error::RateLimited { .. } => ErrorKind::ResourceExhausted,
            Error::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            Error::OutOfRange(_) => ErrorKind::OutOfRange,
            Error::Cancelled(_) => ErrorKind::Cancelled,
            Error::Internal(_) => ErrorKind::Internal,
            Error::Unauthenticated(_) => ErrorKind::Unauthenticated,
            Error::Storage {
                fault: StorageFault::Full,
                ..
            } => ErrorKind::ResourceExhausted,
            Error::Storage {
                fault: StorageFault::NotWritable,
                ..
            } => ErrorKind::Unavailable,
        }
    }
}

/// The end of a model-not-found message: the models served, or where to
/// find them.
struct ModelHint<'a>(&'a str);

impl fmt::Display for ModelHint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("ListModels (GET /v1/models) lists the models served")
        } else {
            write!(f, "available: {}", self.0)
        }
    }
}

/// Formats violations as `field: description; field: description` (at
/// most a few KiB: `validation` bounds what is listed).
struct ViolationList<'a>(&'a [FieldViolation]);

impl fmt::Display for ViolationList<'_> {
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
    use std::io;

    use super::*;

    /// The errno values of Linux (and most Unixes but EDQUOT's).
    #[cfg(target_os = "linux")]
    #[test]
    fn storage_faults_are_told_by_the_io_error() {
        let of = |errno| StorageFault::of(&io::Error::from_raw_os_error(errno));
        const EPERM: i32 = 1;
        const EACCES: i32 = 13;
        const ENOSPC: i32 = 28;
        const EROFS: i32 = 30;
        const EDQUOT: i32 = 122;
        const EIO: i32 = 5;
        assert_eq!(of(ENOSPC), Some(StorageFault::Full));
        assert_eq!(of(EDQUOT), Some(StorageFault::Full));
        assert_eq!(of(EPERM), Some(StorageFault::NotWritable));
        assert_eq!(of(EACCES), Some(StorageFault::NotWritable));
        assert_eq!(of(EROFS), Some(StorageFault::NotWritable));
        assert_eq!(of(EIO), None);
    }

    #[test]
    fn a_full_disk_is_capacity_and_an_unwritable_one_unavailable() {
        let full = Error::Storage {
            fault: StorageFault::Full,
            message: "full".into(),
        };
        let read_only = Error::Storage {
            fault: StorageFault::NotWritable,
            message: "read-only".into(),
        };
        assert_eq!(full.kind(), ErrorKind::ResourceExhausted);
        assert_eq!(read_only.kind(), ErrorKind::Unavailable);
    }
}
