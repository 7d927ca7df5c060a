//! `agentstream chat`: streams an answer to standard output as it arrives.

use std::{
    io::{Write, stdout},
    time::Duration,
};

use clap::Args;
use futures::StreamExt;

use super::{CliError, ClientArgs, interrupted};
use crate::pb::{self, chat_service_client::ChatServiceClient};

#[derive(Debug, Args)]
pub(super) struct ChatArgs {
    /// The question (the last user message).
    prompt: String,
    /// A system message sent before the question.
    #[arg(long)]
    system: Option<String>,
    /// The model; the server's default when not given.
    #[arg(long, short)]
    model: Option<String>,
    /// Most tokens per choice; the server's default when not given.
    #[arg(long)]
    max_tokens: Option<u32>,
    /// Sampling temperature, 0 to 2.
    #[arg(long)]
    temperature: Option<f32>,
    /// A stop sequence (repeat for up to 4).
    #[arg(long)]
    stop: Vec<String>,
    /// Number of choices to generate (1 to 8); with more than one, each is
    /// printed under its own heading when it finishes.
    #[arg(short, long, default_value_t = 1)]
    n: u32,
    /// Print token usage to standard error at the end.
    #[arg(long)]
    usage: bool,
    /// Give up after this long (e.g. `30s`); the server stops generating.
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    #[command(flatten)]
    client: ClientArgs,
}

pub(super) async fn run(args: ChatArgs) -> Result<(), CliError> {
    let mut client = ChatServiceClient::new(args.client.connect().await?);
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(message(pb::Role::System, system));
    }
    messages.push(message(pb::Role::User, &args.prompt));
    let mut request = tonic::Request::new(pb::StreamChatRequest {
        messages,
        model: args.model.clone().unwrap_or_default(),
        max_tokens: args.max_tokens.unwrap_or(0),
        temperature: args.temperature,
        stop: args.stop.clone(),
        n: args.n,
        include_usage: args.usage,
        ..Default::default()
    });
    if let Some(timeout) = args.timeout {
        request.set_timeout(timeout);
    }
    tokio::select! {
        result = print_stream(&mut client, request, args.n) => result,
        () = interrupted() => Err(CliError::Cancelled),
    }
}

fn message(role: pb::Role, content: &str) -> pb::ChatMessage {
    pb::ChatMessage {
        role: role as i32,
        content: content.to_owned(),
        ..Default::default()
    }
}

async fn print_stream(
    client: &mut ChatServiceClient<tonic::transport::Channel>,
    request: tonic::Request<pb::StreamChatRequest>,
    n: u32,
) -> Result<(), CliError> {
    let mut stream = client.stream_chat(request).await?.into_inner();
    let mut out = stdout().lock();
    let mut choices = vec![String::new(); n.max(1) as usize];
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if let Some(usage) = chunk.usage {
            eprintln!(
                "\nusage: {} prompt + {} completion = {} tokens",
                usage.prompt_tokens, usage.completion_tokens, usage.total_tokens
            );
        }
        for choice in chunk.choices {
            let content = choice.delta.map(|d| d.content).unwrap_or_default();
            let finished = choice.finish_reason != pb::FinishReason::Unspecified as i32;
            if n <= 1 {
                out.write_all(content.as_bytes())?;
                out.flush()?;
                if finished {
                    writeln!(out)?;
                }
            } else if let Some(text) = choices.get_mut(choice.index as usize) {
                text.push_str(&content);
                if finished {
                    let reason = pb::FinishReason::try_from(choice.finish_reason)
                        .map_or("unknown", |r| r.as_str_name());
                    writeln!(out, "--- choice {} ({reason}) ---\n{text}", choice.index)?;
                    out.flush()?;
                }
            }
        }
    }
    Ok(())
}
