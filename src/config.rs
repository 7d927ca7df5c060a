//! Server configuration: everything [`Server::start`](crate::server::Server::start)
//! needs, with defaults that run out of the box (built-in models, loopback
//! address, local data directory).
//!
//! The library never reads the environment: `ServeConfig::default()` is the
//! same whatever the shell exports, so tests and programs that embed the
//! server get the server they describe. The `agentstream` binary fills this
//! struct from its flags and their `AGENTSTREAM_*` variables.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use crate::{
    llm::openai::UpstreamSpec,
    offload::{self, OffloadLimits},
    server::transport::TransportLimits,
};

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the call's span fields.
    Json,
}

/// Everything the server can be told. Each field's meaning, units and
/// default are those of the command-line flag of the same name
/// (`agentstream serve --help`).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on (port 0: any free port). Default `127.0.0.1:50051`.
    pub listen: SocketAddr,
    /// Where the HTTP edge listens. Default `127.0.0.1:8080`.
    pub http_listen: HttpListen,
    /// Origins allowed to call the HTTP edge from a browser (CORS; `*` for
    /// any). Default: none, CORS off.
    pub cors_allow_origins: Vec<String>,
    /// Largest HTTP request body, in bytes. Default 2 MiB.
    pub max_http_body: usize,
    /// Interval of the keep-alive comment on idle HTTP event streams
    /// (zero: none). Default 15 s.
    pub sse_keep_alive: Duration,
    /// PEM certificate chain (leaf first) to serve both ports over TLS;
    /// with `tls_key`. Default: none, plaintext.
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert`. Default: none.
    pub tls_key: Option<PathBuf>,
    /// A file of API keys (one a line, optionally `name:key`; `#` comments)
    /// that every call must present. Default: none, the server is open.
    pub api_keys_file: Option<PathBuf>,
    /// Most streaming calls one API key may have open at once. Default:
    /// unlimited (`max_active_streams` still applies).
    pub max_streams_per_key: Option<usize>,
    /// Also serve Prometheus `GET /metrics` on this address. Default: off.
    pub metrics_listen: Option<SocketAddr>,
    /// Model used when a request names none. Default `echo`.
    pub default_model: String,
    /// OpenAI-compatible upstreams. Default: none.
    pub upstreams: Vec<UpstreamSpec>,
    /// Delay between two tokens of the built-in models. Default 20 ms.
    pub mock_token_delay: Duration,
    /// Build the tokenizer's tables (about 22 MB, 0.06 s in a release
    /// build) before serving instead of on the first call that counts
    /// tokens. Default: off, so an idle server stays small.
    pub preload_tokenizer: bool,
    /// Tokens generated per choice when a request sets `max_tokens` to 0.
    /// Default 512.
    pub default_max_tokens: u32,
    /// Largest `max_tokens` a request may ask for. Default 262144.
    pub max_tokens_limit: u32,
    /// Largest total message content of one chat request, in bytes.
    /// Default 1 MiB.
    pub max_request_bytes: usize,
    /// Requests with at least this many bytes of prompt have their tokens
    /// counted on blocking threads, off the async workers. Default 8 KiB.
    pub offload_threshold_bytes: usize,
    /// Most large prompts counted at once. Default: half the cores (at
    /// least 1).
    pub max_offload_running: usize,
    /// Most large prompts waiting for their turn; beyond it such requests
    /// get RESOURCE_EXHAUSTED. Default 64.
    pub max_offload_queued: usize,
    /// Most streaming calls served at once. Default 50000.
    pub max_active_streams: usize,
    /// Most client connections open at once; beyond it new connections are
    /// closed as soon as they are accepted. Default 10000.
    pub max_connections: usize,
    /// Most concurrent streams on one HTTP/2 connection (advertised as
    /// SETTINGS_MAX_CONCURRENT_STREAMS). Default 2000.
    pub max_streams_per_connection: u32,
    /// Most streaming calls one connection may have open at once, so one
    /// client's connection cannot take the whole `max_active_streams`
    /// budget. Default: a quarter of `max_active_streams` (at least 1).
    pub max_active_streams_per_connection: Option<usize>,
    /// Time a new connection has to send its HTTP/2 preface or first HTTP/1
    /// request. Default 10 s.
    pub handshake_timeout: Duration,
    /// A connection with no call in flight for this long is closed
    /// (gracefully). Default 5 min.
    pub idle_timeout: Duration,
    /// Interval of HTTP/2 keepalive pings. Default 30 s.
    pub keepalive_interval: Duration,
    /// Time a keepalive ping has to be answered. Default 20 s.
    pub keepalive_timeout: Duration,
    /// A response stream whose client has read nothing for this long is
    /// ended. Default 30 s.
    pub send_timeout: Duration,
    /// How long in-flight streams may run on after a shutdown request.
    /// Default 10 s.
    pub shutdown_grace: Duration,
    /// How long a finished task is remembered. Default 1 h.
    pub task_retention: Duration,
    /// Most finished tasks remembered. Default 10000.
    pub max_finished_tasks: usize,
    /// Most tasks pending or running at once. Default 1000.
    pub max_unfinished_tasks: usize,
    /// Most demo tasks pending or running at once, within
    /// `max_unfinished_tasks`, so that demo tasks cannot take the room
    /// ingestion needs. Default 16.
    pub max_demo_tasks: usize,
    /// Most bytes of documents that ingestions queued for the index writer
    /// (the running one included) may hold; beyond it IngestDocuments is
    /// refused with RESOURCE_EXHAUSTED. Default 128 MiB.
    pub max_queued_ingest_bytes: usize,
    /// Events kept per running task (at least 4). Default 1000.
    pub max_task_events: usize,
    /// Events kept per finished task (at least 4). Default 100.
    pub max_finished_task_events: usize,
    /// How long a resumable chat stream is kept (generating) after its last
    /// reader left. Default 10 min.
    pub resumable_ttl: Duration,
    /// Most resumable chat streams kept at once. Default 1000.
    pub max_resumable_streams: usize,
    /// Bytes of chunks kept per resumable stream for replay. Default 1 MiB.
    pub resumable_buffer_bytes: usize,
    /// Directory for the on-disk state (the document index).
    /// Default `./agentstream-data`.
    pub data_dir: PathBuf,
    /// Keep tasks and resumable streams in Redis (`redis://host:port/db`)
    /// so that every replica on it serves them. Default: none, in memory.
    pub redis_url: Option<String>,
    /// With `redis_url`: how long a replica's lease lasts without renewal
    /// (at least 300 ms). Default 10 s.
    pub redis_lease: Duration,
    /// Log line format. Default text.
    pub log_format: LogFormat,
    /// Base URL of an OTLP/HTTP receiver to export traces to (spans go to
    /// `<url>/v1/traces`). Default: none, no export.
    pub otlp_endpoint: Option<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 50051)),
            http_listen: HttpListen::On(SocketAddr::from((Ipv4Addr::LOCALHOST, 8080))),
            cors_allow_origins: Vec::new(),
            max_http_body: 2 << 20,
            sse_keep_alive: Duration::from_secs(15),
            tls_cert: None,
            tls_key: None,
            api_keys_file: None,
            max_streams_per_key: None,
            metrics_listen: None,
            default_model: "echo".to_owned(),
            upstreams: Vec::new(),
            mock_token_delay: Duration::from_millis(20),
            preload_tokenizer: false,
            default_max_tokens: 512,
            max_tokens_limit: 262_144,
            max_request_bytes: 1 << 20,
            offload_threshold_bytes: offload::DEFAULT_THRESHOLD_BYTES,
            max_offload_running: offload::default_max_running(),
            max_offload_queued: 64,
            max_active_streams: 50_000,
            max_connections: 10_000,
            max_streams_per_connection: 2_000,
            max_active_streams_per_connection: None,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            send_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            task_retention: Duration::from_secs(3600),
            max_finished_tasks: 10_000,
            max_unfinished_tasks: 1_000,
            max_demo_tasks: 16,
            max_queued_ingest_bytes: crate::rag::queue::DEFAULT_MAX_QUEUED_INGEST_BYTES,
            max_task_events: 1_000,
            max_finished_task_events: 100,
            resumable_ttl: Duration::from_secs(600),
            max_resumable_streams: 1_000,
            resumable_buffer_bytes: 1 << 20,
            redis_url: None,
            redis_lease: Duration::from_secs(10),
            data_dir: PathBuf::from("./agentstream-data"),
            log_format: LogFormat::Text,
            otlp_endpoint: None,
        }
    }
}

impl ServeConfig {
    /// The streaming calls one connection may have open: as configured, or
    /// a quarter of `max_active_streams` (at least 1).
    pub(crate) fn active_streams_per_connection(&self) -> usize {
        self.max_active_streams_per_connection
            .unwrap_or(self.max_active_streams / 4)
            .max(1)
    }

    /// The bounds of the offloaded request work.
    pub(crate) fn offload_limits(&self) -> OffloadLimits {
        OffloadLimits {
            threshold_bytes: self.offload_threshold_bytes,
            max_running: self.max_offload_running,
            max_queued: self.max_offload_queued,
        }
    }

    /// The limits of the connection layer.
    pub(crate) fn transport_limits(&self) -> TransportLimits {
        TransportLimits {
            max_connections: self.max_connections,
            max_streams_per_connection: self.max_streams_per_connection,
            max_active_streams_per_connection: self.active_streams_per_connection(),
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

impl std::fmt::Display for HttpListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpListen::Off => f.write_str("off"),
            HttpListen::On(addr) => addr.fmt(f),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_listen_is_an_address_or_off() {
        assert_eq!("off".parse(), Ok(HttpListen::Off));
        assert_eq!(
            "127.0.0.1:0".parse::<HttpListen>().map(HttpListen::addr),
            Ok(Some("127.0.0.1:0".parse().expect("addr")))
        );
        assert!("localhost".parse::<HttpListen>().is_err());
    }
}
