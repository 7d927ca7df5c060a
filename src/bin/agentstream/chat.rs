//! `agentstream chat`: streams answers to standard output as they arrive.
//!
//! - `chat "question"` asks once; `chat -` reads the question from standard
//!   input (`git diff | agentstream chat -`).
//! - `chat` alone is a conversation: each line you type is a turn, sent
//!   with the history of the turns before it. Ctrl-C cancels the answer being
//!   streamed (the server stops generating; the unanswered question is
//!   dropped from the history) and the conversation goes on; Ctrl-D (end of
//!   input) leaves. With standard input from a pipe, each line is a turn.

use std::{
    io::{self, BufRead, IsTerminal, Read, Write},
    time::Duration,
};

use agentstream::pb::{self, chat_service_client::ChatServiceClient};
use clap::Args;
use futures::StreamExt;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::{CliError, choices::Choices, client::ClientArgs, interrupted};

type Client = ChatServiceClient<Channel>;

/// Largest question read from standard input (the server's default limit
/// of a whole request is 1 MiB; it reports anything over its own limit).
const MAX_STDIN_BYTES: u64 = 4 << 20;

/// Most messages a conversation sends: beyond, its oldest turns are
/// forgotten, so a long session neither grows without bound nor runs into
/// the server's request size limit at once.
const MAX_HISTORY_MESSAGES: usize = 64;

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The question (the last user message); `-` reads it from standard
    /// input; none: a conversation, one turn per line.
    prompt: Option<String>,
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
    /// Number of choices to generate (1 to 8), all streamed live: on a
    /// terminal one growing line each, elsewhere lines prefixed `[i]`. A
    /// conversation keeps choice 0.
    #[arg(short, long, default_value_t = 1)]
    n: u32,
    /// Print token usage to standard error after each answer.
    #[arg(long)]
    usage: bool,
    /// Give up on an answer after this long (e.g. `30s`); the server stops
    /// generating.
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: ChatArgs) -> Result<(), CliError> {
    let question = match args.prompt.as_deref() {
        Some("-") => Some(read_stdin().await?),
        Some(prompt) => Some(prompt.to_owned()),
        None => None,
    };
    let mut client = Client::new(args.client.connect().await?);
    match question {
        Some(question) => ask_once(&mut client, &args, question).await,
        None => converse(&mut client, &args).await,
    }
}

/// One question, one answer; Ctrl-C cancels it.
async fn ask_once(client: &mut Client, args: &ChatArgs, question: String) -> Result<(), CliError> {
    let mut messages = args.system_messages();
    messages.push(message(pb::Role::User, question));
    let mut view = Choices::new(args.n);
    let outcome = tokio::select! {
        result = stream_answer(client, args, messages, &mut view) => result,
        () = interrupted() => Err(CliError::Cancelled),
    };
    view.finish()?;
    outcome
}

/// The conversation loop: a turn per line until end of input.
async fn converse(client: &mut Client, args: &ChatArgs) -> Result<(), CliError> {
    let interactive = io::stdin().is_terminal();
    if interactive {
        eprintln!(
            "Chatting with {} at {}. Ctrl-C cancels an answer, Ctrl-D leaves.",
            args.model
                .as_deref()
                .unwrap_or("the server's default model"),
            args.client.server()
        );
    }
    let mut lines = stdin_lines();
    let mut history = args.system_messages();
    let kept = history.len();
    loop {
        if interactive {
            eprint!("> ");
            let _ = io::stderr().flush();
        }
        let line = tokio::select! {
            line = lines.recv() => line,
            () = interrupted() => {
                eprintln!();
                continue;
            }
        };
        let Some(line) = line else {
            break; // end of input
        };
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        history.push(message(pb::Role::User, line));
        let mut view = Choices::new(args.n);
        let outcome = tokio::select! {
            result = stream_answer(client, args, history.clone(), &mut view) => result,
            () = interrupted() => Err(CliError::Cancelled),
        };
        view.finish()?;
        match outcome {
            Ok(()) => history.push(message(pb::Role::Assistant, view.first().to_owned())),
            Err(CliError::Io(error)) => return Err(error.into()),
            Err(error) => {
                history.pop();
                let prefix = if matches!(error, CliError::Cancelled) {
                    ""
                } else {
                    "error: "
                };
                eprintln!("{prefix}{error}");
            }
        }
        forget_oldest_turns(&mut history, kept);
    }
    if interactive {
        eprintln!();
    }
    Ok(())
}

/// Streams one answer into `view`; the usage, if asked for, goes to
/// standard error after it.
async fn stream_answer(
    client: &mut Client,
    args: &ChatArgs,
    messages: Vec<pb::ChatMessage>,
    view: &mut Choices,
) -> Result<(), CliError> {
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
    let mut stream = client.stream_chat(request).await?.into_inner();
    let mut usage = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        for choice in &chunk.choices {
            view.push(choice)?;
        }
        usage = chunk.usage.or(usage);
    }
    if let Some(usage) = usage {
        view.finish()?;
        eprintln!(
            "usage: {} prompt + {} completion = {} tokens",
            usage.prompt_tokens, usage.completion_tokens, usage.total_tokens
        );
    }
    Ok(())
}

impl ChatArgs {
    fn system_messages(&self) -> Vec<pb::ChatMessage> {
        self.system
            .iter()
            .map(|system| message(pb::Role::System, system.clone()))
            .collect()
    }
}

fn message(role: pb::Role, content: String) -> pb::ChatMessage {
    pb::ChatMessage {
        role: role as i32,
        content,
        ..Default::default()
    }
}

/// Drops the oldest turns (after the `kept` system messages) until the
/// history fits [`MAX_HISTORY_MESSAGES`].
fn forget_oldest_turns(history: &mut Vec<pb::ChatMessage>, kept: usize) {
    let excess = history
        .len()
        .saturating_sub(MAX_HISTORY_MESSAGES.max(kept + 2));
    // Whole turns: a user message and its answer.
    let excess = excess + excess % 2;
    if excess > 0 {
        history.drain(kept..(kept + excess).min(history.len()));
    }
}

/// The whole of standard input, as the question of `chat -`.
async fn read_stdin() -> Result<String, CliError> {
    let read = tokio::task::spawn_blocking(|| {
        let mut text = String::new();
        io::stdin()
            .lock()
            .take(MAX_STDIN_BYTES + 1)
            .read_to_string(&mut text)
            .map(|_| text)
    })
    .await
    .map_err(|e| CliError::Input(format!("cannot read standard input: {e}")))?;
    let text = read.map_err(|e| CliError::Input(format!("cannot read standard input: {e}")))?;
    if text.len() as u64 > MAX_STDIN_BYTES {
        return Err(CliError::Input(format!(
            "the question on standard input is larger than {} MiB",
            MAX_STDIN_BYTES >> 20
        )));
    }
    if text.trim().is_empty() {
        return Err(CliError::Input(
            "standard input is empty; `chat -` reads the question from it".into(),
        ));
    }
    Ok(text)
}

/// Lines of standard input, read by a thread of their own (a blocking read
/// of a terminal cannot be cancelled, and must not hold up the runtime).
fn stdin_lines() -> mpsc::Receiver<io::Result<String>> {
    let (tx, rx) = mpsc::channel(1);
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            if tx.blocking_send(line).is_err() {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(history: &[pb::ChatMessage]) -> Vec<&str> {
        history.iter().map(|m| m.content.as_str()).collect()
    }

    #[test]
    fn long_conversations_forget_whole_turns_but_keep_the_system_message() {
        let mut history = vec![message(pb::Role::System, "sys".into())];
        for i in 0..MAX_HISTORY_MESSAGES {
            let role = if i % 2 == 0 {
                pb::Role::User
            } else {
                pb::Role::Assistant
            };
            history.push(message(role, i.to_string()));
        }
        forget_oldest_turns(&mut history, 1);
        assert_eq!(history.len(), MAX_HISTORY_MESSAGES - 1);
        assert_eq!(texts(&history)[..3], ["sys", "2", "3"]);
        assert_eq!(history[1].role, pb::Role::User as i32);
    }
}
