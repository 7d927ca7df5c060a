//! The `agentstream` binary: parses the command line and hands over to the
//! library.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of the system allocator: every chunk allocates its
/// strings and frees them once encoded, and glibc's malloc/free pair cost
/// several hundred instructions a chunk more (BENCHMARKS.md, "Tuning").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    agentstream::cli::run(agentstream::cli::Cli::parse()).await
}
