//! The `agentstream` binary: parses the command line and hands over to the
//! library.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    agentstream::cli::run(agentstream::cli::Cli::parse()).await
}
