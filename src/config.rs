//! Server configuration: command-line flags, each also settable through an
//! `AGENTSTREAM_*` environment variable, with defaults that run out of the box
//! (built-in mock models, loopback address, local data directory).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, ValueEnum};

use crate::{llm::openai::UpstreamSpec, server::transport::TransportLimits};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the call's span fields.
    Json,
}

/// Everything `agentstream serve` can be told.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on (use port 0 for any free port).
    #[arg(long, env = "AGENTSTREAM_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Address of the HTTP edge (OpenAI-compatible chat, SSE/NDJSON/WebSocket
    /// streams, gRPC-Web, `/healthz`, `/readyz`, `/metrics`), HTTP/1.1 and
    /// h2c on one port; port 0 picks any free port, `off` disables it.
    #[arg(
        long,
        env = "AGENTSTREAM_HTTP_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub http_listen: HttpListen,

    /// An origin allowed to call the HTTP edge from a browser (CORS); repeat
    /// the flag for several, or `*` for any. CORS is off when not given. In
    /// the environment variable, separate several origins with spaces.
    #[arg(long = "cors-allow-origin", value_name = "ORIGIN", env = "AGENTSTREAM_CORS_ALLOW_ORIGIN", value_delimiter = ' ', value_parser = parse_origin)]
    pub cors_allow_origins: Vec<String>,

    /// Largest HTTP request body, in bytes (also when sent chunked); beyond
    /// it: 413.
    #[arg(long, env = "AGENTSTREAM_MAX_HTTP_BODY", default_value_t = 2 << 20)]
    pub max_http_body: usize,

    /// Interval of the `: keep-alive` comment on idle HTTP event streams
    /// (e.g. `15s`; `0` sends none).
    #[arg(long, env = "AGENTSTREAM_SSE_KEEP_ALIVE", default_value = "15s", value_parser = parse_duration)]
    pub sse_keep_alive: Duration,

    /// Also serve Prometheus metrics (`GET /metrics`: active streams, live
    /// generations, tokens generated) on this address; off when not given.
    #[arg(long, env = "AGENTSTREAM_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Model used when a request names none.
    #[arg(long, env = "AGENTSTREAM_DEFAULT_MODEL", default_value = "echo")]
    pub default_model: String,

    /// An OpenAI-compatible upstream (OpenAI, vLLM, TGI, Ollama, llama.cpp);
    /// repeat the flag for several. A spec is comma-separated key=value:
    /// `name=` (required), `url=` base URL up to `/v1` (required),
    /// `key-env=VAR` or `key-file=PATH` (the API key; never logged),
    /// `models=a;b` and/or `discover=true` (default when no models: list
    /// `GET {url}/models` at start-up), `connect-timeout=5s`,
    /// `first-token-timeout=60s`, `idle-timeout=30s`, `retries=2`. Example:
    /// `name=openai,url=https://api.openai.com/v1,key-env=OPENAI_API_KEY,models=gpt-4o-mini;gpt-4o`.
    /// In the environment variable, separate several specs with spaces.
    #[arg(long = "upstream", value_name = "SPEC", env = "AGENTSTREAM_UPSTREAMS", value_delimiter = ' ', value_parser = UpstreamSpec::parse)]
    pub upstreams: Vec<UpstreamSpec>,

    /// Delay between two tokens of the built-in models (e.g. `20ms`; `0` for
    /// benchmarks). 20 ms is about the 50 tokens/s of a real model.
    #[arg(long, env = "AGENTSTREAM_MOCK_TOKEN_DELAY", default_value = "20ms", value_parser = parse_duration)]
    pub mock_token_delay: Duration,

    /// Tokens generated per choice when a request sets `max_tokens` to 0.
    #[arg(long, env = "AGENTSTREAM_DEFAULT_MAX_TOKENS", default_value_t = 512)]
    pub default_max_tokens: u32,

    /// Largest `max_tokens` a request may ask for; above it: INVALID_ARGUMENT.
    #[arg(long, env = "AGENTSTREAM_MAX_TOKENS_LIMIT", default_value_t = 262_144)]
    pub max_tokens_limit: u32,

    /// Largest total message content of one chat request, in bytes.
    #[arg(long, env = "AGENTSTREAM_MAX_REQUEST_BYTES", default_value_t = 1 << 20)]
    pub max_request_bytes: usize,

    /// Most streaming calls served at once; beyond it new calls get
    /// RESOURCE_EXHAUSTED instead of degrading every stream.
    #[arg(long, env = "AGENTSTREAM_MAX_ACTIVE_STREAMS", default_value_t = 50_000)]
    pub max_active_streams: usize,

    /// Most client connections open at once; beyond it new connections are
    /// closed as soon as they are accepted.
    #[arg(long, env = "AGENTSTREAM_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Most concurrent streams on one HTTP/2 connection (advertised to
    /// clients as SETTINGS_MAX_CONCURRENT_STREAMS; they queue beyond it).
    #[arg(
        long,
        env = "AGENTSTREAM_MAX_STREAMS_PER_CONNECTION",
        default_value_t = 2_000
    )]
    pub max_streams_per_connection: u32,

    /// Time a new connection has to send its HTTP/2 preface (or its first
    /// HTTP/1 request) before it is closed.
    #[arg(long, env = "AGENTSTREAM_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub handshake_timeout: Duration,

    /// A connection with no call in flight for this long is closed
    /// (gracefully: GOAWAY).
    #[arg(long, env = "AGENTSTREAM_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_positive_duration)]
    pub idle_timeout: Duration,

    /// Interval of HTTP/2 keepalive pings; a peer that does not answer one
    /// within `--keepalive-timeout` is disconnected.
    #[arg(long, env = "AGENTSTREAM_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = parse_positive_duration)]
    pub keepalive_interval: Duration,

    /// Time a keepalive ping has to be answered.
    #[arg(long, env = "AGENTSTREAM_KEEPALIVE_TIMEOUT", default_value = "20s", value_parser = parse_positive_duration)]
    pub keepalive_timeout: Duration,

    /// A response stream whose client has read nothing for this long is
    /// ended (reset), freeing its buffers and the work behind it.
    #[arg(long, env = "AGENTSTREAM_SEND_TIMEOUT", default_value = "30s", value_parser = parse_positive_duration)]
    pub send_timeout: Duration,

    /// On SIGTERM or Ctrl-C, how long in-flight streams may run on before
    /// they are ended with UNAVAILABLE (e.g. `10s`).
    #[arg(long, env = "AGENTSTREAM_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// How long a finished task is remembered (GetTask, WatchTask replay).
    #[arg(long, env = "AGENTSTREAM_TASK_RETENTION", default_value = "1h", value_parser = parse_duration)]
    pub task_retention: Duration,

    /// Most finished tasks remembered; beyond it the oldest are forgotten.
    #[arg(long, env = "AGENTSTREAM_MAX_FINISHED_TASKS", default_value_t = 10_000)]
    pub max_finished_tasks: usize,

    /// Most tasks pending or running at once; StartTask beyond it gets
    /// RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "AGENTSTREAM_MAX_UNFINISHED_TASKS",
        default_value_t = 1_000
    )]
    pub max_unfinished_tasks: usize,

    /// Events kept per running task; older progress events are compacted
    /// (state changes never are). At least 4.
    #[arg(long, env = "AGENTSTREAM_MAX_TASK_EVENTS", default_value_t = 1_000)]
    pub max_task_events: usize,

    /// Events kept per finished task (its log is compacted to this when it
    /// ends). At least 4.
    #[arg(
        long,
        env = "AGENTSTREAM_MAX_FINISHED_TASK_EVENTS",
        default_value_t = 100
    )]
    pub max_finished_task_events: usize,

    /// How long a resumable chat stream is kept after its last reader left
    /// (it keeps generating meanwhile); after it, the stream is stopped and
    /// forgotten, and resuming it gets NOT_FOUND.
    #[arg(long, env = "AGENTSTREAM_RESUMABLE_TTL", default_value = "10m", value_parser = parse_duration)]
    pub resumable_ttl: Duration,

    /// Most resumable chat streams kept at once (generating or finished);
    /// at the limit the finished, unread stream that ended first is
    /// forgotten, and if none is, a new resumable request gets
    /// RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "AGENTSTREAM_MAX_RESUMABLE_STREAMS",
        default_value_t = 1_000
    )]
    pub max_resumable_streams: usize,

    /// Bytes of chunks kept per resumable stream for replay (text plus 128
    /// per chunk); past it the oldest chunks are dropped and resuming
    /// before them gets OUT_OF_RANGE.
    #[arg(
        long,
        env = "AGENTSTREAM_RESUMABLE_BUFFER_BYTES",
        default_value_t = 1 << 20
    )]
    pub resumable_buffer_bytes: usize,

    /// Directory for the server's on-disk state (search index, ...).
    #[arg(
        long,
        env = "AGENTSTREAM_DATA_DIR",
        default_value = "./agentstream-data"
    )]
    pub data_dir: PathBuf,

    /// Keep tasks in Redis (`redis://host:port/db`) so that every replica on
    /// the same Redis serves every task; unset: in this process's memory.
    /// The server refuses to start when Redis cannot be reached.
    #[arg(long, env = "AGENTSTREAM_REDIS_URL")]
    pub redis_url: Option<String>,

    /// With --redis-url: how long a replica's lease lasts without renewal;
    /// the unfinished tasks of a replica that stopped renewing (killed) are
    /// marked FAILED by the others within about this time. At least 300ms.
    #[arg(long, env = "AGENTSTREAM_REDIS_LEASE", default_value = "10s", value_parser = parse_duration)]
    pub redis_lease: Duration,

    /// Log line format.
    #[arg(long, env = "AGENTSTREAM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Default for ServeConfig {
    /// The defaults of the command line (environment variables included).
    fn default() -> Self {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            config: ServeConfig,
        }
        Defaults::parse_from(["agentstream"]).config
    }
}

impl ServeConfig {
    /// The limits of the connection layer.
    pub fn transport_limits(&self) -> TransportLimits {
        TransportLimits {
            max_connections: self.max_connections,
            max_streams_per_connection: self.max_streams_per_connection,
            handshake_timeout: self.handshake_timeout,
            idle_timeout: self.idle_timeout,
            keepalive_interval: self.keepalive_interval,
            keepalive_timeout: self.keepalive_timeout,
            send_timeout: self.send_timeout,
        }
    }
}

/// Where the HTTP edge listens: an address, or nowhere (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpListen {
    /// The HTTP edge is disabled.
    Off,
    /// Listen on this address (port 0: any free port).
    On(SocketAddr),
}

impl HttpListen {
    /// The address to bind, if any.
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            HttpListen::Off => None,
            HttpListen::On(addr) => Some(addr),
        }
    }
}

/// Parses a duration that must not be zero (`10s`, `5m`).
fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err("must be more than 0".into()),
        duration => Ok(duration),
    }
}

impl std::str::FromStr for HttpListen {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().eq_ignore_ascii_case("off") {
            return Ok(HttpListen::Off);
        }
        text.trim()
            .parse()
            .map(HttpListen::On)
            .map_err(|e| format!("{e} (an address such as 127.0.0.1:8080, or `off`)"))
    }
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
fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 0, 20ms, 10s, 1m30s)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_and_bare_zero() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("20ms"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert!(parse_duration("ten").is_err());
    }

    #[test]
    fn http_listen_is_an_address_or_off() {
        assert_eq!("off".parse(), Ok(HttpListen::Off));
        assert_eq!(
            "127.0.0.1:0".parse::<HttpListen>().map(HttpListen::addr),
            Ok(Some("127.0.0.1:0".parse().expect("addr")))
        );
        assert!("localhost".parse::<HttpListen>().is_err());
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
