//! `agentstream ask "question"`: prints the passages found, streams the
//! cited answer as it is generated, then the timings.

use std::time::Duration;

use agentstream::pb::{self, rag_service_client::RagServiceClient, stream_answer_response::Event};
use clap::Args;
use futures::StreamExt;

use crate::{CliError, client::ClientArgs, interrupted, output};

#[derive(Debug, Args)]
pub struct AskArgs {
    /// The question.
    question: String,
    /// Passages to retrieve (1 to 20); the server's default (4) when not given.
    #[arg(long, short = 'k')]
    top_k: Option<u32>,
    /// The model; the server's default when not given.
    #[arg(long, short)]
    model: Option<String>,
    /// Most tokens in the answer; the server's default when not given.
    #[arg(long)]
    max_tokens: Option<u32>,
    /// Give up after this long (e.g. `30s`); the server stops generating.
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: AskArgs) -> Result<(), CliError> {
    let mut client = RagServiceClient::new(args.client.connect().await?);
    let mut request = tonic::Request::new(pb::StreamAnswerRequest {
        question: args.question.clone(),
        top_k: args.top_k.unwrap_or(0),
        model: args.model.clone().unwrap_or_default(),
        max_tokens: args.max_tokens.unwrap_or(0),
    });
    if let Some(timeout) = args.timeout {
        request.set_timeout(timeout);
    }
    tokio::select! {
        result = print_answer(&mut client, request) => result,
        () = interrupted() => Err(CliError::Cancelled),
    }
}

async fn print_answer(
    client: &mut RagServiceClient<tonic::transport::Channel>,
    request: tonic::Request<pb::StreamAnswerRequest>,
) -> Result<(), CliError> {
    let mut events = client.stream_answer(request).await?.into_inner();
    while let Some(response) = events.next().await {
        match response?.event {
            Some(Event::PassagesRetrieved(found)) => print_passages(&found)?,
            Some(Event::GenerationStarted(started)) => {
                output::line(&format!("Answer ({}):", started.model))?;
            }
            Some(Event::Content(delta)) => output::write(&delta.text)?,
            Some(Event::Done(done)) => {
                output::end_line()?;
                print_timings(&done);
            }
            Some(Event::RetrievalStarted(_)) | None => {}
        }
    }
    Ok(())
}

fn print_passages(found: &pb::PassagesRetrieved) -> std::io::Result<()> {
    if found.passages.is_empty() {
        output::line("No passage matches the question.")?;
    } else {
        output::line("Passages:")?;
    }
    for (i, passage) in found.passages.iter().enumerate() {
        let title = if passage.title.is_empty() {
            passage.document_id.as_str()
        } else {
            passage.title.as_str()
        };
        let mut line = format!("  [{}] {title}  (score {:.2}", i + 1, passage.score);
        if !passage.source.is_empty() {
            line.push_str(", ");
            line.push_str(&passage.source);
        }
        line.push(')');
        output::line(&line)?;
    }
    output::line("")
}

fn print_timings(done: &pb::AnswerDone) {
    let reason =
        pb::FinishReason::try_from(done.finish_reason).map_or("unknown", |r| r.as_str_name());
    let usage = done.usage.unwrap_or_default();
    eprintln!(
        "retrieval {:.1} ms, generation {:.1} ms, {} prompt + {} completion tokens, {reason}",
        done.retrieval_us as f64 / 1000.0,
        done.generation_us as f64 / 1000.0,
        usage.prompt_tokens,
        usage.completion_tokens
    );
}
