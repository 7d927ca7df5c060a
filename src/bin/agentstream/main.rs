//! The `agentstream` binary: the server (`serve`, the default) and client
//! commands for people at a terminal.
//!
//! Everything that belongs to a command line lives here and not in the
//! library: flags and their `AGENTSTREAM_*` variables (clap), progress bars
//! (indicatif), terminal output and exit codes. The library it drives reads
//! no environment and prints nothing.

mod ask;
mod chat;
mod choices;
mod client;
mod docs;
mod error;
mod ingest;
mod output;
mod progress;
mod serve;
mod task;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use error::CliError;

/// mimalloc instead of the system allocator: every chunk allocates its
/// strings and frees them once encoded, and glibc's malloc/free pair cost
/// several hundred instructions a chunk more (BENCHMARKS.md, "Tuning").
/// Built without transparent huge pages (Cargo.toml), which would make an
/// idle server's memory grow by whole 2 MiB pages.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Streams AI-agent output (chat chunks, RAG answers, task progress) over gRPC.
#[derive(Debug, Parser)]
#[command(
    name = "agentstream",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// With no subcommand, these configure the server.
    #[command(flatten)]
    serve: serve::ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default when no subcommand is given).
    Serve(Box<serve::ServeArgs>),
    /// Stream a chat answer as it is generated; with no prompt, a
    /// conversation that keeps its history (Ctrl-C cancels an answer,
    /// Ctrl-D leaves).
    Chat(chat::ChatArgs),
    /// Send text files (Markdown, reStructuredText, AsciiDoc, plain text;
    /// directories recursively) to the document index and show the
    /// ingestion's progress.
    Ingest(ingest::IngestArgs),
    /// Ask a question about the indexed documents: passages, then the
    /// streamed, cited answer.
    Ask(ask::AskArgs),
    /// List and delete indexed documents.
    Docs(docs::DocsArgs),
    /// Start, watch, list, show and cancel long-running tasks.
    Task(task::TaskArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve::run(cli.serve).await,
        Some(Command::Serve(args)) => serve::run(*args).await,
        Some(Command::Chat(args)) => chat::run(args).await,
        Some(Command::Ingest(args)) => ingest::run(args).await,
        Some(Command::Ask(args)) => ask::run(args).await,
        Some(Command::Docs(args)) => docs::run(args).await,
        Some(Command::Task(args)) => task::run(args).await,
    };
    error::report(result)
}

/// Resolves on Ctrl-C. Client commands race their call against it: the
/// losing call is dropped, which cancels it, and the server stops its work.
async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}
