//! Log output: `RUST_LOG`-style filters (default `info`), text or JSON lines
//! on standard error, with each call's span fields on its lines.
//!
//! Lines are written by a dedicated thread behind a bounded queue
//! (tracing-appender's non-blocking writer), so a slow reader of standard
//! error (a full pipe, a stalled log shipper) never blocks the threads that
//! serve streams; if the queue fills up, lines are dropped rather than
//! streams delayed.
//!
//! Log lines carry values clients chose (model names, document and task
//! ids, error messages quoting them). In text lines every field value is
//! escaped ([`EscapedFields`]): control characters (newline, carriage
//! return, ESC, NUL, ...) are written as `\n`, `\u{1b}` and the like, so a
//! client can neither forge a line nor send escape sequences to a terminal;
//! JSON lines are escaped by the JSON encoder. Colours are used only when
//! standard error is a terminal and `NO_COLOR` is not set.

use std::{
    fmt::{self, Write as _},
    io::IsTerminal,
};

use tracing::field::{Field, Visit};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::{
    EnvFilter,
    field::RecordFields,
    fmt::{FormatFields, format::Writer},
};

use crate::config::LogFormat;

/// Installs the global subscriber and returns the guard of the writer
/// thread: keep it until the process exits, so the last lines are flushed.
/// If a subscriber is already installed, that one stays.
pub fn init(format: LogFormat) -> WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(colours_wanted(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ));
    let _already_set = match format {
        LogFormat::Text => builder.fmt_fields(EscapedFields).try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    guard
}

/// Colours only on a terminal, and never with `NO_COLOR` set to anything
/// but the empty string (<https://no-color.org>).
fn colours_wanted(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Formats fields as `name=value`, the message bare, every value escaped.
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = EscapingVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'writer> {
    writer: Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl EscapingVisitor<'_> {
    fn write(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_err() {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        let mut escaped = Escaping {
            out: &mut self.writer,
        };
        self.result = if field.name() == "message" {
            write!(escaped.out, "{separator}").and_then(|()| escaped.write_fmt(value))
        } else {
            write!(escaped.out, "{separator}{}=", field.name())
                .and_then(|()| escaped.write_fmt(value))
        };
    }
}

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.write(field, format_args!("{value}"));
        } else {
            // Quoted, as the default formatter does, so a value with spaces
            // cannot pose as more fields.
            self.write(field, format_args!("{value:?}"));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.write(field, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, format_args!("{value:?}"));
    }
}

/// Writes through to `out`, escaping control characters.
struct Escaping<'a, 'writer> {
    out: &'a mut Writer<'writer>,
}

impl fmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text;
        while let Some(at) = rest.find(needs_escape) {
            self.out.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            write!(self.out, "{}", c.escape_default())?;
            rest = &rest[at + c.len_utf8()..];
        }
        self.out.write_str(rest)
    }
}

/// Control characters (C0, DEL, C1) and the Unicode line and paragraph
/// separators, which some viewers break lines at.
fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colours_wanted(true, None));
        assert!(colours_wanted(true, Some("".into())));
        assert!(!colours_wanted(true, Some("1".into())));
        assert!(!colours_wanted(false, None));
    }
}
