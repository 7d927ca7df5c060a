//! `agentstream-bench`: the load generator of BENCHMARKS.md, and the minimal
//! tonic server every figure is compared with.
//!
//! - `run <scenario>` drives one server (agentstream, the baseline or a peer,
//!   started by the bench itself with `--spawn` so it can read its memory)
//!   through `single`, `fanout`, `ttft` or `cancel`, prints a table and
//!   optionally appends one JSON line per result;
//! - `baseline` serves ChatService/StreamChat with no logic at all: the same
//!   messages, byte for byte the same size, from a hand-written stream;
//! - `report` turns the JSON lines of interleaved runs into medians and
//!   ratios to the baseline (the tables of BENCHMARKS.md);
//! - `task-store` measures task event throughput and WatchTask latency of
//!   servers keeping tasks in memory and in Redis, side by side;
//! - `rag-eval` measures RagService's retrieval and answers on a corpus
//!   with known answers (eval/rag, docs/rag.md).
//!
//! It is a separate binary so the service carries none of it; it uses only
//! the crate's own dependencies and traffic goes to loopback only.

mod baseline;
mod client;
mod rag_eval;
mod report;
mod scenarios;
mod server;
mod stats;
mod task_store;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// mimalloc, as in the `agentstream` binary: the baseline server must run on
/// the same allocator as the service it is the ceiling of, or part of every
/// ratio is the allocator (glibc's malloc/free cost about 290 instructions a
/// chunk more). The load generator uses it too; it is the same client for
/// every server.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator and baseline server for agentstream's benchmarks.
#[derive(Debug, Parser)]
#[command(name = "agentstream-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one scenario against one server.
    Run(Box<RunArgs>),
    /// Serve the minimal tonic baseline (the ceiling).
    Baseline(baseline::BaselineArgs),
    /// Summarise JSON lines of several runs: medians and ratios to the baseline.
    Report(report::ReportArgs),
    /// Retrieval and answer quality of RagService on a corpus with known
    /// answers (eval/rag).
    RagEval(rag_eval::RagEvalArgs),
    /// Task event throughput and WatchTask latency of servers keeping tasks
    /// in memory and in Redis, interleaved round by round.
    TaskStore(task_store::TaskStoreArgs),
}

/// The scenarios of issue 7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// One stream as fast as the server goes: chunks/s and MB/s.
    Single,
    /// Many paced streams at once: rate held, lateness, TTFT, memory.
    Fanout,
    /// Sequential short calls: time to first chunk.
    Ttft,
    /// Many streams cancelled mid-way: time until live generations are 0.
    Cancel,
}

/// The protocol the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// gRPC `agentstream.v1.ChatService/StreamChat` (agentstream, the
    /// baseline, the grpc.aio peer).
    Grpc,
    /// OpenAI-style Server-Sent Events on `POST /v1/chat/completions`.
    Sse,
}

/// Options of `run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Which scenario.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// A name for the server in tables and JSON (`baseline` is the ceiling
    /// the report divides by).
    #[arg(long, default_value = "agentstream")]
    pub label: String,
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: SocketAddr,
    /// The protocol it speaks.
    #[arg(long, value_enum, default_value_t = Protocol::Grpc)]
    pub protocol: Protocol,
    /// Connect over TLS (gRPC), verifying the server against this PEM
    /// certificate (its CA, or itself when self-signed).
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// The name the server's certificate is verified for (with `--tls-ca`).
    #[arg(long, default_value = "localhost")]
    pub tls_domain: String,
    /// A shell command that starts the server; the bench runs it, waits for
    /// `--addr` to accept, samples its memory and kills it at the end.
    #[arg(long)]
    pub spawn: Option<String>,
    /// CPUs the spawned server is pinned to (`taskset -c`), e.g. `0`.
    #[arg(long)]
    pub server_cpus: Option<String>,
    /// Where the spawned server's output goes.
    #[arg(long, default_value = "/tmp/agentstream-bench-server.log")]
    pub server_log: PathBuf,
    /// The server's Prometheus endpoint (host:port), for `cancel`.
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    /// Tokens per stream for `single` (`ttft` asks for 1).
    #[arg(long, default_value_t = 200_000)]
    pub tokens: u32,
    /// Concurrent streams for `fanout` and `cancel`.
    #[arg(long, default_value_t = 10_000)]
    pub streams: usize,
    /// HTTP/2 connections the streams share (gRPC; SSE uses one each).
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Tokens per second per stream the server is configured for (its
    /// per-token delay is 1/rate); the reference for lateness.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// How long each `fanout` stream runs (max_tokens = rate x duration).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Stream starts are spread evenly over this period.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub ramp: Duration,
    /// Streams run one after the other by `single` (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Streams `single` runs at once on its one connection, each of
    /// `--tokens` (chunks/s is then their sum).
    #[arg(long, default_value_t = 1)]
    pub parallel: usize,
    /// Calls made by `ttft`.
    #[arg(long, default_value_t = 2_000)]
    pub calls: usize,
    /// While `ttft` measures, this many other connections each keep one
    /// call with a `--heavy-bytes` prompt in flight (gRPC only), so the
    /// figures say what large prompts cost everyone else.
    #[arg(long, default_value_t = 0)]
    pub heavy_calls: usize,
    /// Bytes of each heavy call's prompt (plain English words; at most the
    /// server's `--max-request-bytes`).
    #[arg(long, default_value_t = 1_000_000)]
    pub heavy_bytes: usize,
    /// Client runtime worker threads (1 when the client is pinned to one core).
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// Client HTTP/2 stream and connection window, bytes (same for every
    /// server).
    #[arg(long, default_value_t = 4 << 20)]
    pub window: u32,
    /// Ask agentstream for resumable streams (`resumable: true`), to
    /// compare the kept path with the direct one.
    #[arg(long)]
    pub resumable: bool,
    /// Append one JSON line per result here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => {
            let runtime = runtime(args.client_threads);
            runtime.block_on(scenarios::run(*args))
        }
        Command::Baseline(args) => runtime(args.threads).block_on(baseline::serve(args)),
        Command::Report(args) => report::run(&args),
        Command::RagEval(args) => runtime(1).block_on(rag_eval::run(args)),
        Command::TaskStore(args) => runtime(1).block_on(task_store::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// A multi-thread runtime with `threads` workers (0: one per available CPU).
fn runtime(threads: usize) -> tokio::runtime::Runtime {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        builder.worker_threads(threads);
    }
    builder.enable_all().build().expect("tokio runtime")
}

/// Every error of the bench, as text.
pub type BenchResult<T> = Result<T, String>;
