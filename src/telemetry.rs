//! Logs and traces.
//!
//! **Logs**: `RUST_LOG`-style filters (default `info`), text or JSON lines on
//! standard error, with each call's span fields on its lines (in JSON, the
//! innermost span as `span` and all of them, outermost first, as `spans`:
//! a line logged in a call's child span, such as an upstream request's,
//! carries the call's request id there). Lines are written by a dedicated
//! thread behind a bounded queue (tracing-appender's non-blocking writer),
//! so a slow reader of standard error (a full pipe, a stalled log shipper)
//! never blocks the threads that serve streams; if the queue fills up,
//! lines are dropped rather than streams delayed.
//!
//! Log lines carry values clients chose (model names, document and task
//! ids, error messages quoting them). In text lines every field value is
//! escaped ([`EscapedFields`]): control characters (newline, carriage
//! return, ESC, NUL, ...) are written as `\n`, `\u{1b}` and the like, so a
//! client can neither forge a line nor send escape sequences to a terminal;
//! JSON lines are escaped by the JSON encoder. Colours are used only when
//! standard error is a terminal and `NO_COLOR` is not set.
//!
//! **Traces** (off unless an OTLP endpoint is configured): the same `tracing`
//! spans (one per call, children for retrieval, generation and upstream
//! requests) are exported as OpenTelemetry spans over OTLP/HTTP (protobuf),
//! batched by the SDK's own thread and sent through the runtime's reqwest
//! client. The export sees agentstream's spans at `info` whatever `RUST_LOG`
//! says about log lines. W3C `traceparent` from a client makes the call's
//! span a child of the client's trace ([`accept_trace_context`], called by
//! every edge), and upstream requests carry the current span's context on
//! ([`inject_trace_context`]). Nothing here runs per chunk. A generation's
//! span is for traces only: log lines carry the call's span, whose fields
//! say the same, and without an exporter that span is not created at all.

use std::{
    fmt::{self as sfmt, Write as _},
    io::IsTerminal,
    sync::atomic::{AtomicBool, Ordering::Relaxed},
};

use http::HeaderMap;
use opentelemetry::{
    propagation::TextMapPropagator,
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_http::{Bytes, HeaderExtractor, HeaderInjector, HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::{
    Level, Metadata, Span,
    field::{Field, Visit},
};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer,
    field::RecordFields,
    filter::{FilterExt, LevelFilter, Targets, filter_fn},
    fmt::{self, FormatFields, format::Writer},
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

use crate::config::LogFormat;

/// Whether spans are exported (so trace context is worth reading).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Errors setting up telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built (e.g. a malformed endpoint).
    #[error("cannot export traces to `{endpoint}`: {source}")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// Why.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// Traces need a Tokio runtime to send from.
    #[error("trace export needs a Tokio runtime")]
    NoRuntime(#[source] tokio::runtime::TryCurrentError),
}

/// Keeps the log writer and the trace exporter alive; dropping it flushes
/// the last log lines and the spans not yet exported.
pub struct Telemetry {
    _logs: WorkerGuard,
    traces: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.traces.take()
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "trace export did not shut down cleanly");
        }
    }
}

/// Installs the global subscriber: log lines in `format`, and, when
/// `otlp_endpoint` is given (the base URL of an OTLP/HTTP receiver, as in
/// `OTEL_EXPORTER_OTLP_ENDPOINT`; spans go to `<endpoint>/v1/traces`),
/// span export. If a subscriber is already installed, that one stays. Keep
/// the returned value until the process exits.
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> Result<Telemetry, TelemetryError> {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match format {
        LogFormat::Text => fmt::layer()
            .with_writer(writer)
            .with_ansi(colours_wanted(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR"),
            ))
            .fmt_fields(EscapedFields)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(writer)
            .boxed(),
    }
    .with_filter(log_filter(filter));
    let Some(endpoint) = otlp_endpoint.filter(|e| !e.is_empty()) else {
        let _already_set = tracing_subscriber::registry().with(logs).try_init();
        return Ok(Telemetry {
            _logs: guard,
            traces: None,
        });
    };
    let provider = tracer_provider(endpoint)?;
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("agentstream"))
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_filter(Targets::new().with_target("agentstream", Level::INFO));
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init();
    EXPORTING.store(installed.is_ok(), Relaxed);
    tracing::info!(endpoint, "exporting traces over OTLP/HTTP");
    Ok(Telemetry {
        _logs: guard,
        traces: Some(provider),
    })
}

/// The target of spans that only give a call's trace its structure (the
/// generation's): their fields repeat the call span's, so log lines do
/// without them. Without an exporter no layer wants them and they are never
/// created, which saves each chat call a span's slot and formatted fields
/// (about 250 bytes an open stream). It is under `agentstream`, so the
/// exporter keeps them.
pub(crate) const TRACE_ONLY: &str = "agentstream::trace";

/// The log layer's filter: `RUST_LOG`'s directives, without the trace-only
/// spans.
///
/// Its level hint is `RUST_LOG`'s: tracing's global maximum level is the
/// most verbose hint of all layers, and a filter without one counts as
/// TRACE. Every `trace!` in h2, hyper and tokio would then get past the
/// macro's level check to its callsite's interest check, several times for
/// each frame sent (about 300 instructions a paced chunk).
fn log_filter<S>(directives: EnvFilter) -> impl tracing_subscriber::layer::Filter<S> {
    // `logged` only removes spans: it lets any level through.
    directives.and(filter_fn(logged).with_max_level_hint(LevelFilter::TRACE))
}

/// Whether the log layer keeps `meta` (every event, every span but the
/// trace-only ones).
fn logged(meta: &Metadata<'_>) -> bool {
    !(meta.is_span() && meta.target() == TRACE_ONLY)
}

fn tracer_provider(endpoint: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(TelemetryError::NoRuntime)?;
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    // reqwest is built without a TLS provider of its own: use ring's (an
    // error means one is installed already).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_http_client(RuntimeClient {
            client: reqwest::Client::new(),
            runtime,
        })
        .build()
        .map_err(|source| TelemetryError::Exporter {
            endpoint: endpoint.to_owned(),
            source,
        })?;
    // `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` apply; the
    // service is `agentstream` unless they name it.
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("agentstream");
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// The exporter's HTTP client: the SDK exports from its own thread, outside
/// the runtime, so each request is sent as a task on the server's runtime.
#[derive(Debug)]
struct RuntimeClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[tonic::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await?
    }
}

/// Whether spans are exported (set once, when telemetry is installed).
pub(crate) fn exporting() -> bool {
    EXPORTING.load(Relaxed)
}

/// Makes `span` (a call's span) a child of the W3C trace context in
/// `headers` (`traceparent`, `tracestate`), when spans are exported and the
/// client sent a valid one. Both edges (gRPC metadata, HTTP headers) call it.
pub(crate) fn accept_trace_context(span: &Span, headers: &HeaderMap) {
    if !exporting() || !headers.contains_key("traceparent") {
        return;
    }
    let context = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if context.span().span_context().is_valid() {
        // Fails only when the span is disabled; then there is nothing to do.
        let _ = span.set_parent(context);
    }
}

/// Adds the W3C trace context of `span` to an outgoing request's headers
/// (upstream model servers), when spans are exported.
pub(crate) fn inject_trace_context(span: &Span, headers: &mut HeaderMap) {
    if !exporting() {
        return;
    }
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
}

/// Colours only on a terminal, and never with `NO_COLOR` set to anything
/// but the empty string (<https://no-color.org>).
fn colours_wanted(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Formats fields as `name=value`, the message bare, every value escaped.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> sfmt::Result {
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
    result: sfmt::Result,
}

/// A field's value as [`EscapingVisitor::write`] takes it.
enum Value<'a> {
    /// Needs no escaping ([`is_plain`]): written as it is, quoted unless it
    /// is the message, without a character-by-character pass (a call's
    /// request id, method and model take this path).
    Plain(&'a str),
    /// Formatted through [`Escaping`].
    Escaped(sfmt::Arguments<'a>),
}

impl EscapingVisitor<'_> {
    fn write(&mut self, field: &Field, value: Value<'_>) {
        if self.result.is_err() {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        let message = field.name() == "message";
        let out = &mut self.writer;
        self.result = out.write_str(separator).and_then(|()| {
            if !message {
                out.write_str(field.name())?;
                out.write_char('=')?;
            }
            match value {
                Value::Plain(text) if message => out.write_str(text),
                Value::Plain(text) => {
                    out.write_char('"')?;
                    out.write_str(text)?;
                    out.write_char('"')
                }
                Value::Escaped(args) => Escaping { out }.write_fmt(args),
            }
        });
    }
}

/// Printable ASCII: written as it is by both `Display` and the escaping,
/// and by `Debug` too unless it holds a quote or a backslash.
fn is_plain(value: &str, quoted: bool) -> bool {
    value
        .bytes()
        .all(|b| matches!(b, b' '..=b'~') && !(quoted && (b == b'"' || b == b'\\')))
}

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if is_plain(value, field.name() != "message") {
            self.write(field, Value::Plain(value));
        } else if field.name() == "message" {
            self.write(field, Value::Escaped(format_args!("{value}")));
        } else {
            // Quoted, as the default formatter does, so a value with spaces
            // cannot pose as more fields.
            self.write(field, Value::Escaped(format_args!("{value:?}")));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.write(field, Value::Escaped(format_args!("{value}")));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn sfmt::Debug) {
        self.write(field, Value::Escaped(format_args!("{value:?}")));
    }
}

/// Writes through to `out`, escaping control characters.
struct Escaping<'a, 'writer> {
    out: &'a mut Writer<'writer>,
}

impl sfmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, text: &str) -> sfmt::Result {
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

    /// The fields of one event, as [`EscapedFields`] writes them.
    fn formatted(event: impl FnOnce()) -> String {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("lock").extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = fmt::fmt()
            .fmt_fields(EscapedFields)
            .without_time()
            .with_level(false)
            .with_target(false)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, event);
        let bytes = lines.0.lock().expect("lock").clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn plain_values_are_written_as_the_escaping_path_writes_them() {
        let line = formatted(|| {
            tracing::info!(
                request_id = "0b9e3c1a-id",
                model = "a model \"quoted\" \\ here",
                bell = "ring\u{7}",
                "plain message with \"quotes\""
            );
        });
        assert_eq!(
            line,
            "plain message with \"quotes\" request_id=\"0b9e3c1a-id\" \
             model=\"a model \\\"quoted\\\" \\\\ here\" bell=\"ring\\u{7}\"\n"
        );
        let escaped = formatted(|| tracing::info!("tab\there, é"));
        assert_eq!(escaped, "tab\\there, é\n");
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colours_wanted(true, None));
        assert!(colours_wanted(true, Some("".into())));
        assert!(!colours_wanted(true, Some("1".into())));
        assert!(!colours_wanted(false, None));
    }

    #[test]
    fn the_log_filter_hints_the_level_of_its_directives() {
        use tracing_subscriber::{Registry, layer::Filter};
        for (directives, level) in [
            ("info", LevelFilter::INFO),
            ("warn,agentstream=debug", LevelFilter::DEBUG),
            ("trace", LevelFilter::TRACE),
        ] {
            let filter = log_filter::<Registry>(EnvFilter::new(directives));
            assert_eq!(filter.max_level_hint(), Some(level), "{directives}");
        }
    }
}
