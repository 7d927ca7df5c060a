//! Log output: `RUST_LOG`-style filters (default `info`), text or JSON lines
//! on standard error, with each call's span fields on its lines.
//!
//! Lines are written by a dedicated thread behind a bounded queue
//! (tracing-appender's non-blocking writer), so a slow reader of standard
//! error (a full pipe, a stalled log shipper) never blocks the threads that
//! serve streams; if the queue fills up, lines are dropped rather than
//! streams delayed.
//!
//! Text lines are coloured only when standard error is a terminal and
//! `NO_COLOR` is unset or empty (<https://no-color.org>): logs sent to a file
//! or a collector carry no escape codes.

use std::io::IsTerminal;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::{EnvFilter, fmt};

use crate::config::LogFormat;

/// Installs the global subscriber and returns the guard of the writer
/// thread: keep it until the process exits, so the last lines are flushed.
/// If a subscriber is already installed, that one stays.
pub fn init(format: LogFormat) -> WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(colours_wanted());
    let _already_set = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    guard
}

/// Whether log lines may carry ANSI colours.
fn colours_wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
