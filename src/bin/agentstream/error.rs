//! Why a command failed, and how that reaches the person at the terminal:
//! one line on standard error (after finishing any half-written output
//! line), then the exit code.

use std::{fmt, io, process::ExitCode};

use agentstream::{server::ServeError, telemetry};
use tonic_types::StatusExt;

use crate::{client::ConnectFailure, output};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server could not be reached.
    #[error("cannot connect to {server}: {why}")]
    Connect {
        /// The `--server` address.
        server: String,
        /// Why, in the user's terms.
        why: ConnectFailure,
    },
    /// A call failed with a gRPC status (shown as code, message and fields;
    /// not a `source`, whose own text is tonic's debugging form).
    #[error("{}", StatusReport(.0))]
    Status(tonic::Status),
    /// The server could not start or stopped with an error.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// Trace export could not be set up.
    #[error(transparent)]
    Telemetry(#[from] telemetry::TelemetryError),
    /// The server cannot listen for Ctrl-C and SIGTERM.
    #[error("cannot listen for Ctrl-C and SIGTERM")]
    Signals(#[source] io::Error),
    /// Standard input or output failed.
    #[error("cannot read or write the terminal")]
    Io(#[from] io::Error),
    /// Ctrl-C ended a call; the server stopped its work.
    #[error("cancelled")]
    Cancelled,
    /// Ctrl-C ended watching a task that keeps running on the server.
    #[error(
        "stopped watching; task {task_id} keeps running on the server \
         (`agentstream task cancel {task_id}` stops it)"
    )]
    StoppedWatching {
        /// The task left running.
        task_id: String,
    },
    /// The command line or the files named on it cannot be used.
    #[error("{0}")]
    Input(String),
    /// A task ended without succeeding, or could not be followed.
    #[error("{0}")]
    Task(String),
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        Self::Status(status)
    }
}

/// Prints the outcome of a command and turns it into the exit code: 0 on
/// success (and when a reader such as `head` closed the pipe early), 130
/// after Ctrl-C, 1 otherwise.
pub fn report(result: Result<(), CliError>) -> ExitCode {
    let error = match result {
        Ok(()) => return ExitCode::SUCCESS,
        Err(CliError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
            return ExitCode::SUCCESS;
        }
        Err(error) => error,
    };
    // Whatever was streamed so far stays, on a line of its own.
    let _ = output::end_line();
    match error {
        CliError::Cancelled | CliError::StoppedWatching { .. } => {
            eprintln!("{error}");
            ExitCode::from(130)
        }
        error => {
            // The error and its causes: `outer: inner: root` (a cause that
            // its error already shows is not repeated).
            let mut line = format!("error: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                if !line.ends_with(&cause_text) {
                    line.push_str(": ");
                    line.push_str(&cause_text);
                }
                source = cause.source();
            }
            eprintln!("{line}");
            ExitCode::FAILURE
        }
    }
}

/// A status as `CODE: message`, then one indented line per field named by
/// a `google.rpc.BadRequest` detail.
struct StatusReport<'a>(&'a tonic::Status);

impl fmt::Display for StatusReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.0;
        write!(f, "{}: {}", code_name(status.code()), status.message())?;
        if let Some(bad_request) = status.get_details_bad_request() {
            for violation in &bad_request.field_violations {
                write!(f, "\n  {}: {}", violation.field, violation.description)?;
            }
        }
        if status.code() == tonic::Code::Unavailable && status.message().contains("connect") {
            f.write_str(" (is the server running? agentstream serve)")?;
        }
        Ok(())
    }
}

/// The code's name as in the gRPC spec and every other client
/// (`INVALID_ARGUMENT`).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
