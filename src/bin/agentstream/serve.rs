//! `agentstream serve`: the server's flags (each also settable through an
//! `AGENTSTREAM_*` environment variable), turned into the library's
//! [`ServeConfig`], and the process around the server: logs, signals, exit.
//!
//! The defaults shown by `--help` are the library's `ServeConfig::default()`
//! (a test below keeps the two in step).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use agentstream::{
    config::{HttpListen, LogFormat, ServeConfig},
    llm::openai::UpstreamSpec,
    server::Server,
    telemetry,
};
use clap::{Args, ValueEnum};

use crate::CliError;

/// Everything `agentstream serve` can be told.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (use port 0 for any free port).
    #[arg(long, env = "AGENTSTREAM_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,

    /// Address of the HTTP edge (OpenAI-compatible chat, SSE/NDJSON/WebSocket
    /// streams, gRPC-Web, `/healthz`, `/readyz`, `/metrics`), HTTP/1.1 and
    /// h2c on one port; port 0 picks any free port, `off` disables it.
    #[arg(
        long,
        env = "AGENTSTREAM_HTTP_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    http_listen: HttpListen,

    /// An origin allowed to call the HTTP edge from a browser (CORS); repeat
    /// the flag for several, or `*` for any. CORS is off when not given. In
    /// the environment variable, separate several origins with spaces.
    #[arg(long = "cors-allow-origin", value_name = "ORIGIN", env = "AGENTSTREAM_CORS_ALLOW_ORIGIN", value_delimiter = ' ', value_parser = parse_origin)]
    cors_allow_origins: Vec<String>,

    /// Largest HTTP request body, in bytes (also when sent chunked); beyond
    /// it: 413.
    #[arg(long, env = "AGENTSTREAM_MAX_HTTP_BODY", default_value_t = 2 << 20)]
    max_http_body: usize,

    /// Interval of the `: keep-alive` comment on idle HTTP event streams
    /// (e.g. `15s`; `0` sends none).
    #[arg(long, env = "AGENTSTREAM_SSE_KEEP_ALIVE", default_value = "15s", value_parser = parse_duration)]
    sse_keep_alive: Duration,

    /// Serve both ports over TLS with this PEM certificate chain (leaf
    /// first); needs `--tls-key`. HTTP/2 is negotiated with ALPN (`h2`; the
    /// HTTP port also offers `http/1.1`).
    #[arg(
        long,
        env = "AGENTSTREAM_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,

    /// The PEM private key of `--tls-cert` (PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "AGENTSTREAM_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,

    /// Require an API key on every call: a file with one key a line,
    /// optionally `name:key` (the name is what logs show); `#` starts a
    /// comment line. Health, reflection, `/healthz`, `/readyz` and the demo
    /// page stay open. Without it the server is open to every client.
    #[arg(long, env = "AGENTSTREAM_API_KEYS_FILE", value_name = "FILE")]
    api_keys_file: Option<PathBuf>,

    /// Most streaming calls one API key may have open at once (with
    /// `--api-keys-file`); beyond it RESOURCE_EXHAUSTED. Unlimited when not
    /// given (`--max-active-streams` still applies).
    #[arg(long, env = "AGENTSTREAM_MAX_STREAMS_PER_KEY")]
    max_streams_per_key: Option<usize>,

    /// Also serve Prometheus metrics (`GET /metrics`: active streams, live
    /// generations, tokens generated) on this address; off when not given.
    #[arg(long, env = "AGENTSTREAM_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,

    /// Model used when a request names none.
    #[arg(long, env = "AGENTSTREAM_DEFAULT_MODEL", default_value = "echo")]
    default_model: String,

    /// An OpenAI-compatible upstream (OpenAI, vLLM, TGI, Ollama, llama.cpp);
    /// repeat the flag for several. A spec is comma-separated key=value:
    /// `name=` (required), `url=` base URL up to `/v1` (required),
    /// `key-env=VAR` or `key-file=PATH` (the API key; never logged),
    /// `models=a;b` and/or `discover=true` (default when no models: list
    /// `GET {url}/models` at start-up), `connect-timeout=5s`,
    /// `first-token-timeout=60s`, `idle-timeout=30s`, `retries=2`. Example:
    /// `name=openai,url=https://api.openai.com/v1,key-env=OPENAI_API_KEY,models=gpt-4o-mini;gpt-4o`.
    /// In the environment variable, separate several specs with spaces.
    #[arg(long = "upstream", value_name = "SPEC", env = "AGENTSTREAM_UPSTREAMS", value_delimiter = ' ', value_parser = parse_upstream)]
    upstreams: Vec<UpstreamSpec>,

    /// Delay between two tokens of the built-in models (e.g. `20ms`; `0` for
    /// benchmarks). 20 ms is about the 50 tokens/s of a real model.
    #[arg(long, env = "AGENTSTREAM_MOCK_TOKEN_DELAY", default_value = "20ms", value_parser = parse_duration)]
    mock_token_delay: Duration,

    /// Build the tokenizer's tables (about 22 MB, 0.06 s in a release
    /// build) at start-up rather than on the first chat call, which
    /// otherwise waits for them once.
    #[arg(long, env = "AGENTSTREAM_PRELOAD_TOKENIZER")]
    preload_tokenizer: bool,

    /// Tokens generated per choice when a request sets `max_tokens` to 0.
    #[arg(long, env = "AGENTSTREAM_DEFAULT_MAX_TOKENS", default_value_t = 512)]
    default_max_tokens: u32,

    /// Largest `max_tokens` a request may ask for; above it: INVALID_ARGUMENT.
    #[arg(long, env = "AGENTSTREAM_MAX_TOKENS_LIMIT", default_value_t = 262_144)]
    max_tokens_limit: u32,

    /// Largest total message content of one chat request, in bytes.
    #[arg(long, env = "AGENTSTREAM_MAX_REQUEST_BYTES", default_value_t = 1 << 20)]
    max_request_bytes: usize,

    /// Requests with at least this many bytes of prompt have their tokens
    /// counted on blocking threads, so small calls keep their latency;
    /// smaller ones are counted in place.
    #[arg(long, env = "AGENTSTREAM_OFFLOAD_THRESHOLD_BYTES", default_value_t = agentstream::offload::DEFAULT_THRESHOLD_BYTES)]
    offload_threshold_bytes: usize,

    /// Most large prompts counted at once (default: half the cores, at
    /// least 1).
    #[arg(long, env = "AGENTSTREAM_MAX_OFFLOAD_RUNNING", default_value_t = agentstream::offload::default_max_running())]
    max_offload_running: usize,

    /// Most large prompts waiting for their turn; beyond it such requests
    /// get RESOURCE_EXHAUSTED at once. A waiting request is bounded by its
    /// deadline.
    #[arg(long, env = "AGENTSTREAM_MAX_OFFLOAD_QUEUED", default_value_t = 64)]
    max_offload_queued: usize,

    /// Most streaming calls served at once; beyond it new calls get
    /// RESOURCE_EXHAUSTED instead of degrading every stream.
    #[arg(long, env = "AGENTSTREAM_MAX_ACTIVE_STREAMS", default_value_t = 50_000)]
    max_active_streams: usize,

    /// Most streaming calls one connection may have open at once; beyond it
    /// RESOURCE_EXHAUSTED, so one client's connection cannot take every
    /// stream. Default: a quarter of `--max-active-streams` (at least 1).
    #[arg(long, env = "AGENTSTREAM_MAX_ACTIVE_STREAMS_PER_CONNECTION")]
    max_active_streams_per_connection: Option<usize>,

    /// Most client connections open at once; beyond it new connections are
    /// closed as soon as they are accepted.
    #[arg(long, env = "AGENTSTREAM_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,

    /// Most concurrent streams on one HTTP/2 connection (advertised to
    /// clients as SETTINGS_MAX_CONCURRENT_STREAMS; they queue beyond it).
    #[arg(
        long,
        env = "AGENTSTREAM_MAX_STREAMS_PER_CONNECTION",
        default_value_t = 2_000
    )]
    max_streams_per_connection: u32,

    /// Time a new connection has to send its HTTP/2 preface (or its first
    /// HTTP/1 request) before it is closed.
    #[arg(long, env = "AGENTSTREAM_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    handshake_timeout: Duration,

    /// A connection with no call in flight for this long is closed
    /// (gracefully: GOAWAY).
    #[arg(long, env = "AGENTSTREAM_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_positive_duration)]
    idle_timeout: Duration,

    /// Interval of HTTP/2 keepalive pings; a peer that does not answer one
    /// within `--keepalive-timeout` is disconnected.
    #[arg(long, env = "AGENTSTREAM_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = parse_positive_duration)]
    keepalive_interval: Duration,

    /// Time a keepalive ping has to be answered.
    #[arg(long, env = "AGENTSTREAM_KEEPALIVE_TIMEOUT", default_value = "20s", value_parser = parse_positive_duration)]
    keepalive_timeout: Duration,

    /// A response stream whose client has read nothing for this long is
    /// ended (reset), freeing its buffers and the work behind it.
    #[arg(long, env = "AGENTSTREAM_SEND_TIMEOUT", default_value = "30s", value_parser = parse_positive_duration)]
    send_timeout: Duration,

    /// On SIGTERM or Ctrl-C, how long in-flight streams may run on before
    /// they are ended with UNAVAILABLE (e.g. `10s`).
    #[arg(long, env = "AGENTSTREAM_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    shutdown_grace: Duration,

    /// How long a finished task is remembered (GetTask, WatchTask replay).
    #[arg(long, env = "AGENTSTREAM_TASK_RETENTION", default_value = "1h", value_parser = parse_duration)]
    task_retention: Duration,

    /// Most finished tasks remembered; beyond it the oldest are forgotten.
    #[arg(long, env = "AGENTSTREAM_MAX_FINISHED_TASKS", default_value_t = 10_000)]
    max_finished_tasks: usize,

    /// Most tasks pending or running at once; StartTask beyond it gets
    /// RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "AGENTSTREAM_MAX_UNFINISHED_TASKS",
        default_value_t = 1_000
    )]
    max_unfinished_tasks: usize,

    /// Most demo tasks pending or running at once (within
    /// `--max-unfinished-tasks`); StartTask beyond it gets
    /// RESOURCE_EXHAUSTED. Small, so demo tasks cannot take the room
    /// ingestion needs.
    #[arg(long, env = "AGENTSTREAM_MAX_DEMO_TASKS", default_value_t = 16)]
    max_demo_tasks: usize,
    /// Most bytes of documents that ingestions waiting for the index writer
    /// (and the running one) may hold; IngestDocuments beyond it gets
    /// RESOURCE_EXHAUSTED with a retry hint. One ingestion is always
    /// admitted when no other is queued.
    #[arg(
        long,
        env = "AGENTSTREAM_MAX_QUEUED_INGEST_BYTES",
        default_value_t = agentstream::rag::DEFAULT_MAX_QUEUED_INGEST_BYTES
    )]
    max_queued_ingest_bytes: usize,

    /// Events kept per running task; older progress events are compacted
    /// (state changes never are). At least 4.
    #[arg(long, env = "AGENTSTREAM_MAX_TASK_EVENTS", default_value_t = 1_000)]
    max_task_events: usize,

    /// Events kept per finished task (its log is compacted to this when it
    /// ends). At least 4.
    #[arg(
        long,
        env = "AGENTSTREAM_MAX_FINISHED_TASK_EVENTS",
        default_value_t = 100
    )]
    max_finished_task_events: usize,

    /// How long a resumable chat stream is kept after its last reader left
    /// (it keeps generating meanwhile); after it, the stream is stopped and
    /// forgotten, and resuming it gets NOT_FOUND.
    #[arg(long, env = "AGENTSTREAM_RESUMABLE_TTL", default_value = "10m", value_parser = parse_duration)]
    resumable_ttl: Duration,

    /// Most resumable chat streams kept at once (generating or finished);
    /// at the limit the finished, unread stream that ended first is
    /// forgotten, and if none is, a new resumable request gets
    /// RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "AGENTSTREAM_MAX_RESUMABLE_STREAMS",
        default_value_t = 1_000
    )]
    max_resumable_streams: usize,

    /// Bytes of chunks kept per resumable stream for replay (text plus 128
    /// per chunk); past it the oldest chunks are dropped and resuming
    /// before them gets OUT_OF_RANGE.
    #[arg(
        long,
        env = "AGENTSTREAM_RESUMABLE_BUFFER_BYTES",
        default_value_t = 1 << 20
    )]
    resumable_buffer_bytes: usize,

    /// Keep tasks and resumable chat streams in Redis
    /// (`redis://host:port/db`) so that every replica on the same Redis
    /// serves every task and stream; unset: in this process's memory. The
    /// server refuses to start when Redis cannot be reached.
    #[arg(long, env = "AGENTSTREAM_REDIS_URL")]
    redis_url: Option<String>,

    /// With --redis-url: how long a replica's lease lasts without renewal;
    /// the unfinished tasks of a replica that stopped renewing (killed) are
    /// marked FAILED by the others within about this time. At least 300ms.
    #[arg(long, env = "AGENTSTREAM_REDIS_LEASE", default_value = "10s", value_parser = parse_duration)]
    redis_lease: Duration,

    /// Directory for the server's on-disk state (the document index). One
    /// server at a time may use a directory.
    #[arg(
        long,
        env = "AGENTSTREAM_DATA_DIR",
        default_value = "./agentstream-data"
    )]
    data_dir: PathBuf,

    /// Log line format. Colours are used only when standard error is a
    /// terminal and NO_COLOR is unset.
    #[arg(long, env = "AGENTSTREAM_LOG_FORMAT", value_enum, default_value_t = LogFormatArg::Text)]
    log_format: LogFormatArg,

    /// Export traces (one span per call, with children for retrieval,
    /// generation and upstream requests) over OTLP/HTTP protobuf to this
    /// receiver's base URL (spans go to `<url>/v1/traces`), e.g.
    /// `http://127.0.0.1:4318`; off when not given.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the call's span fields.
    Json,
}

impl From<ServeArgs> for ServeConfig {
    fn from(args: ServeArgs) -> Self {
        Self {
            listen: args.listen,
            http_listen: args.http_listen,
            cors_allow_origins: args.cors_allow_origins,
            max_http_body: args.max_http_body,
            sse_keep_alive: args.sse_keep_alive,
            tls_cert: args.tls_cert,
            tls_key: args.tls_key,
            api_keys_file: args.api_keys_file,
            max_streams_per_key: args.max_streams_per_key,
            metrics_listen: args.metrics_listen,
            default_model: args.default_model,
            upstreams: args.upstreams,
            mock_token_delay: args.mock_token_delay,
            preload_tokenizer: args.preload_tokenizer,
            default_max_tokens: args.default_max_tokens,
            max_tokens_limit: args.max_tokens_limit,
            max_request_bytes: args.max_request_bytes,
            offload_threshold_bytes: args.offload_threshold_bytes,
            max_offload_running: args.max_offload_running,
            max_offload_queued: args.max_offload_queued,
            max_active_streams: args.max_active_streams,
            max_active_streams_per_connection: args.max_active_streams_per_connection,
            max_connections: args.max_connections,
            max_streams_per_connection: args.max_streams_per_connection,
            handshake_timeout: args.handshake_timeout,
            idle_timeout: args.idle_timeout,
            keepalive_interval: args.keepalive_interval,
            keepalive_timeout: args.keepalive_timeout,
            send_timeout: args.send_timeout,
            shutdown_grace: args.shutdown_grace,
            task_retention: args.task_retention,
            max_finished_tasks: args.max_finished_tasks,
            max_unfinished_tasks: args.max_unfinished_tasks,
            max_demo_tasks: args.max_demo_tasks,
            max_queued_ingest_bytes: args.max_queued_ingest_bytes,
            max_task_events: args.max_task_events,
            max_finished_task_events: args.max_finished_task_events,
            resumable_ttl: args.resumable_ttl,
            max_resumable_streams: args.max_resumable_streams,
            resumable_buffer_bytes: args.resumable_buffer_bytes,
            redis_url: args.redis_url,
            redis_lease: args.redis_lease,
            data_dir: args.data_dir,
            log_format: match args.log_format {
                LogFormatArg::Text => LogFormat::Text,
                LogFormatArg::Json => LogFormat::Json,
            },
            otlp_endpoint: args.otlp_endpoint,
        }
    }
}

/// Runs the server until Ctrl-C or SIGTERM has drained it; a second signal
/// during the drain stops it at once.
pub async fn run(args: ServeArgs) -> Result<(), CliError> {
    let config = ServeConfig::from(args);
    let _flush_on_exit = telemetry::init(config.log_format, config.otlp_endpoint.as_deref())?;
    // Listening before the server starts: a signal during start-up still
    // means a graceful shutdown, not the default instant exit.
    let mut signals = Signals::new().map_err(CliError::Signals)?;
    let server = Server::start(config).await?;
    let shutdown = server.shutdown();
    tokio::spawn(async move {
        tracing::info!("{} received", signals.next().await);
        shutdown.request();
        tracing::info!(
            "{} received during the drain: stopping now",
            signals.next().await
        );
        shutdown.force();
    });
    server.wait().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Ctrl-C and SIGTERM, as a sequence: the first drains, a second forces.
#[cfg(unix)]
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Resolves on the next Ctrl-C or SIGTERM, naming which.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "Ctrl-C",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

/// Ctrl-C, as a sequence: the first drains, a second forces.
#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self)
    }

    async fn next(&mut self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

fn parse_upstream(text: &str) -> Result<UpstreamSpec, String> {
    text.parse::<UpstreamSpec>().map_err(|e| e.to_string())
}

/// An allowed CORS origin: `*`, or an origin such as `https://app.example`
/// that can be sent back in a header.
fn parse_origin(text: &str) -> Result<String, String> {
    let text = text.trim();
    let printable = !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic());
    if text == "*" || (printable && text.contains("://")) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "`{}` is not an origin (e.g. https://app.example or *)",
            text.escape_debug()
        ))
    }
}

/// Parses `20ms`, `10s`, `1m30s` or a bare `0`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 0, 20ms, 10s, 1m30s)"))
}

/// Parses a duration that must not be zero (`10s`, `5m`).
fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err("must be more than 0".into()),
        duration => Ok(duration),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches, Parser};

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        serve: ServeArgs,
    }

    /// Parses `args` with every `AGENTSTREAM_*` variable ignored, so the
    /// test does not depend on the developer's shell.
    fn parse_without_env(args: &[&str]) -> ServeConfig {
        let command = Flags::command().mut_args(|arg| arg.env(None::<&str>));
        let matches = command
            .try_get_matches_from(std::iter::once("agentstream").chain(args.iter().copied()))
            .expect("flags parse");
        Flags::from_arg_matches(&matches)
            .expect("flags convert")
            .serve
            .into()
    }

    #[test]
    fn flag_defaults_are_the_library_defaults() {
        assert_eq!(
            format!("{:?}", parse_without_env(&[])),
            format!("{:?}", ServeConfig::default())
        );
    }

    #[test]
    fn flags_reach_the_config() {
        let config = parse_without_env(&[
            "--listen",
            "0.0.0.0:7000",
            "--mock-token-delay",
            "0",
            "--log-format",
            "json",
            "--data-dir",
            "/tmp/x",
        ]);
        assert_eq!(config.listen, "0.0.0.0:7000".parse().expect("addr"));
        assert_eq!(config.mock_token_delay, Duration::ZERO);
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn durations_accept_units_and_bare_zero() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("20ms"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert!(parse_duration("ten").is_err());
    }

    #[test]
    fn origins_are_star_or_scheme_and_host() {
        assert_eq!(parse_origin("*").as_deref(), Ok("*"));
        assert_eq!(
            parse_origin("http://localhost:3000").as_deref(),
            Ok("http://localhost:3000")
        );
        assert!(parse_origin("not an origin").is_err());
        assert!(parse_origin("http://a\nb").is_err());
    }
}
