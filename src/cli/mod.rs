//! The `agentstream` command line: the server (`serve`, the default) and
//! client commands for people at a terminal.

mod ask;
mod chat;
mod ingest;
mod task;

use std::{process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};
use tonic::transport::{Channel, Endpoint};

use crate::{
    config::ServeConfig,
    server::{ServeError, Server},
    telemetry,
};

/// Streams AI-agent output (chat chunks, RAG answers, task progress) over gRPC.
#[derive(Debug, Parser)]
#[command(
    name = "agentstream",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// With no subcommand, these configure the server.
    #[command(flatten)]
    serve: ServeConfig,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default when no subcommand is given).
    Serve(Box<ServeConfig>),
    /// Stream a chat answer to standard output as it is generated.
    Chat(chat::ChatArgs),
    /// Start, watch, list, show and cancel long-running tasks.
    Task(task::TaskArgs),
    /// Send Markdown/text files (directories recursively) to the document
    /// index and show the ingestion's progress.
    Ingest(ingest::IngestArgs),
    /// Ask a question about the indexed documents: passages, then the
    /// streamed, cited answer.
    Ask(ask::AskArgs),
}

/// Where client commands connect.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The server's address.
    #[arg(
        long,
        env = "AGENTSTREAM_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    server: String,
}

impl ClientArgs {
    async fn connect(&self) -> Result<Channel, CliError> {
        let endpoint = Endpoint::from_shared(self.server.clone())
            .map_err(|e| CliError::Connect(self.server.clone(), e.to_string()))?
            .connect_timeout(Duration::from_secs(5));
        endpoint
            .connect()
            .await
            .map_err(|e| CliError::Connect(self.server.clone(), e.to_string()))
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("{code:?}: {message}", code = .0.code(), message = .0.message())]
    Status(#[from] tonic::Status),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("cannot write output: {0}")]
    Io(#[from] std::io::Error),
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Task(String),
}

/// Runs the command line; returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(config)) => serve(*config).await,
        Some(Command::Chat(args)) => chat::run(args).await,
        Some(Command::Task(args)) => task::run(args).await,
        Some(Command::Ingest(args)) => ingest::run(args).await,
        Some(Command::Ask(args)) => ask::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Cancelled) => {
            eprintln!("\ncancelled");
            ExitCode::from(130)
        }
        Err(error) => {
            // The error and its causes: `outer: inner: root`.
            let mut line = format!("error: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                line.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("{line}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: ServeConfig) -> Result<(), CliError> {
    let _flush_logs_on_exit = telemetry::init(config.log_format);
    let server = Server::start(config).await?;
    let shutdown = server.shutdown();
    tokio::spawn(async move {
        let mut signals = Signals::new();
        signals.next().await;
        shutdown.request();
        signals.next().await;
        shutdown.force();
    });
    server.wait().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Ctrl-C and SIGTERM: the first starts the drain, a second stops at once.
struct Signals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        Self {
            #[cfg(unix)]
            terminate: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .ok(),
        }
    }

    /// Resolves on the next Ctrl-C or SIGTERM.
    async fn next(&mut self) {
        let ctrl_c = async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        #[cfg(unix)]
        let terminate = async {
            match self.terminate.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => tracing::info!("Ctrl-C received"),
            () = terminate => tracing::info!("SIGTERM received"),
        }
    }
}

/// Resolves on Ctrl-C; client commands race their call against it.
async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}
