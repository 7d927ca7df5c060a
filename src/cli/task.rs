//! `agentstream task`: start, watch, list, inspect and cancel tasks.
//!
//! `watch` is the interesting one: it draws a live progress bar and, when
//! the connection drops (server restart, network), reconnects with the last
//! sequence it saw so the bar carries on where it was, missing nothing the
//! server retained. Ctrl-C stops watching; the task goes on.

use std::{
    io::IsTerminal,
    time::{Duration, SystemTime},
};

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tonic::{Code, Status, transport::Channel};

use super::{CliError, ClientArgs, interrupted};
use crate::pb::{self, TaskState, task_service_client::TaskServiceClient};

type Client = TaskServiceClient<Channel>;

/// First wait before reconnecting; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Reconnection attempts in a row (with no event received) before giving up:
/// about a minute and a half with the backoff above.
const MAX_ATTEMPTS: u32 = 20;

#[derive(Debug, Args)]
pub(super) struct TaskArgs {
    #[command(subcommand)]
    command: TaskCommand,
}

#[derive(Debug, Subcommand)]
enum TaskCommand {
    /// Start a demo task (a simulated job) and watch its progress.
    Demo(DemoArgs),
    /// Watch a task's progress live until it ends, reconnecting if needed.
    Watch(WatchArgs),
    /// List tasks, newest first.
    List(ListArgs),
    /// Show a task.
    Get(TaskIdArgs),
    /// Cancel a task (a finished task is left as it is).
    Cancel(TaskIdArgs),
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Number of steps, 1 to 10000.
    #[arg(long, default_value_t = 20)]
    steps: u32,
    /// Time each step takes, in milliseconds (at most 60000).
    #[arg(long, default_value_t = 200)]
    delay_ms: u32,
    /// Make the task fail at this step (1-based).
    #[arg(long)]
    fail_at: Option<u32>,
    /// Print the task and return without watching it.
    #[arg(long)]
    detach: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct WatchArgs {
    /// The task's id.
    task_id: String,
    /// Show only events after this sequence.
    #[arg(long, default_value_t = 0)]
    after: u64,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Tasks per page (at most 1000).
    #[arg(long, default_value_t = 50)]
    page_size: u32,
    /// The token printed at the end of the previous page.
    #[arg(long, default_value = "")]
    page_token: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct TaskIdArgs {
    /// The task's id.
    task_id: String,
    #[command(flatten)]
    client: ClientArgs,
}

pub(super) async fn run(args: TaskArgs) -> Result<(), CliError> {
    match args.command {
        TaskCommand::Demo(args) => demo(args).await,
        TaskCommand::Watch(args) => {
            let mut client = Client::new(args.client.connect().await?);
            watch(&mut client, &args.task_id, args.after).await
        }
        TaskCommand::List(args) => list(args).await,
        TaskCommand::Get(args) => {
            let mut client = Client::new(args.client.connect().await?);
            let request = pb::GetTaskRequest {
                task_id: args.task_id,
            };
            print_task(client.get_task(request).await?.into_inner().task);
            Ok(())
        }
        TaskCommand::Cancel(args) => {
            let mut client = Client::new(args.client.connect().await?);
            let request = pb::CancelTaskRequest {
                task_id: args.task_id,
            };
            print_task(client.cancel_task(request).await?.into_inner().task);
            Ok(())
        }
    }
}

async fn demo(args: DemoArgs) -> Result<(), CliError> {
    let mut client = Client::new(args.client.connect().await?);
    let request = pb::StartTaskRequest {
        spec: Some(pb::start_task_request::Spec::Demo(pb::DemoTaskSpec {
            steps: args.steps,
            step_delay_ms: args.delay_ms,
            fail_at_step: args.fail_at.unwrap_or(0),
        })),
    };
    let task = client.start_task(request).await?.into_inner().task;
    let Some(task) = task else {
        return Err(CliError::Task("the server returned no task".into()));
    };
    if args.detach {
        print_task(Some(task));
        return Ok(());
    }
    eprintln!("started {}", task.task_id);
    watch(&mut client, &task.task_id, 0).await
}

async fn list(args: ListArgs) -> Result<(), CliError> {
    let mut client = Client::new(args.client.connect().await?);
    let request = pb::ListTasksRequest {
        page_size: args.page_size,
        page_token: args.page_token,
    };
    let page = client.list_tasks(request).await?.into_inner();
    for task in &page.tasks {
        println!("{}", summary(task));
    }
    if !page.next_page_token.is_empty() {
        eprintln!("more: --page-token {}", page.next_page_token);
    }
    Ok(())
}

/// Watches `task_id` until its terminal event or Ctrl-C.
async fn watch(client: &mut Client, task_id: &str, after: u64) -> Result<(), CliError> {
    let request = pb::GetTaskRequest {
        task_id: task_id.to_owned(),
    };
    let task = client.get_task(request).await?.into_inner().task;
    let display = ProgressDisplay::new(task.as_ref());
    let watched = tokio::select! {
        result = follow_with_reconnect(client, task_id, after, &display) => result,
        () = interrupted() => {
            display.bar.abandon();
            eprintln!("stopped watching; the task goes on (agentstream task cancel {task_id})");
            return Err(CliError::Cancelled);
        }
    };
    display.finish(watched?)
}

/// Follows the task's events, reconnecting after transport failures with
/// the last sequence seen, with bounded exponential backoff.
async fn follow_with_reconnect(
    client: &mut Client,
    task_id: &str,
    mut last: u64,
    display: &ProgressDisplay,
) -> Result<pb::TaskEvent, CliError> {
    let mut backoff = FIRST_BACKOFF;
    let mut attempts = 0;
    loop {
        let before = last;
        let why = match follow(client, task_id, &mut last, display).await {
            Ok(Some(terminal)) => return Ok(terminal),
            Ok(None) => "the stream ended early".to_owned(),
            Err(status) if retryable(&status) => {
                format!("{:?}: {}", status.code(), status.message())
            }
            Err(status) => return Err(status.into()),
        };
        if last > before {
            backoff = FIRST_BACKOFF;
            attempts = 0;
        }
        attempts += 1;
        if attempts > MAX_ATTEMPTS {
            return Err(CliError::Task(format!(
                "gave up after {MAX_ATTEMPTS} reconnection attempts: {why}"
            )));
        }
        display.note(&format!(
            "connection lost ({why}); resuming after event {last} in {backoff:?}"
        ));
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One WatchTask call: shows each event and records its sequence in `last`;
/// returns the terminal event, or `None` if the stream ended without it.
async fn follow(
    client: &mut Client,
    task_id: &str,
    last: &mut u64,
    display: &ProgressDisplay,
) -> Result<Option<pb::TaskEvent>, Status> {
    let request = pb::WatchTaskRequest {
        task_id: task_id.to_owned(),
        after_sequence: *last,
    };
    let mut stream = client.watch_task(request).await?.into_inner();
    while let Some(response) = stream.message().await? {
        let Some(event) = response.event else {
            continue;
        };
        *last = event.sequence;
        display.show(&event);
        if is_terminal(event.state()) {
            return Ok(Some(event));
        }
    }
    Ok(None)
}

/// Failures worth retrying: the server or the network went away.
fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Aborted | Code::ResourceExhausted
    )
}

fn is_terminal(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled
    )
}

/// A progress bar on a terminal; one line per event otherwise.
struct ProgressDisplay {
    bar: ProgressBar,
    lines: bool,
    created: Option<SystemTime>,
}

impl ProgressDisplay {
    fn new(task: Option<&pb::Task>) -> Self {
        let bar = ProgressBar::no_length()
            .with_style(style("{spinner:.green} [{elapsed_precise}] {msg}"));
        let created = task
            .and_then(|t| t.create_time)
            .and_then(|t| pb::system_time(&t));
        if let Some(created) = created {
            bar.set_elapsed(created.elapsed().unwrap_or_default());
        }
        bar.enable_steady_tick(Duration::from_millis(100));
        let lines = !std::io::stderr().is_terminal() || bar.is_hidden();
        Self {
            bar,
            lines,
            created,
        }
    }

    fn show(&self, event: &pb::TaskEvent) {
        if self.lines {
            println!(
                "{:>6} {:<10} {}/{} {:>5.1}% {}{}",
                event.sequence,
                state_name(event.state()),
                event.step,
                event.total_steps,
                event.percent,
                event.message,
                error_suffix(&event.error),
            );
            return;
        }
        if event.total_steps > 0 && self.bar.length() != Some(event.total_steps.into()) {
            self.bar.set_length(event.total_steps.into());
            self.bar.set_style(style(
                "{spinner:.green} [{elapsed_precise}] [{wide_bar:.cyan/blue}] {percent:>3}% {pos}/{len} ETA {eta} {msg}",
            ));
        }
        self.bar.set_position(event.step.into());
        self.bar
            .set_message(format!("{} {}", state_name(event.state()), event.message));
    }

    fn note(&self, text: &str) {
        if self.lines {
            eprintln!("{text}");
        } else {
            self.bar.println(text);
        }
    }

    /// Ends the display; a task that did not succeed is an error.
    fn finish(&self, terminal: pb::TaskEvent) -> Result<(), CliError> {
        let state = terminal.state();
        // The task's own duration, from its creation to its last event.
        let ended = terminal.time.and_then(|t| pb::system_time(&t));
        let took = match (self.created, ended) {
            (Some(created), Some(ended)) => ended.duration_since(created).unwrap_or_default(),
            _ => self.bar.elapsed(),
        };
        let summary = format!(
            "{} after {:.1}s: {}{}",
            state_name(state),
            took.as_secs_f64(),
            terminal.message,
            error_suffix(&terminal.error)
        );
        if state == TaskState::Succeeded {
            self.bar.finish_with_message(summary);
            Ok(())
        } else {
            self.bar.abandon_with_message(summary.clone());
            Err(CliError::Task(format!(
                "task {} {summary}",
                terminal.task_id
            )))
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

fn print_task(task: Option<pb::Task>) {
    let Some(task) = task else {
        return;
    };
    println!("{}", summary(&task));
    if let Some(created) = task.create_time.as_ref().and_then(pb::system_time) {
        println!("  created: {}", humantime::format_rfc3339(created));
    }
    if let Some(updated) = task.update_time.as_ref().and_then(pb::system_time) {
        println!("  updated: {}", humantime::format_rfc3339(updated));
    }
}

/// One line per task: id, kind, state, progress, message, error.
fn summary(task: &pb::Task) -> String {
    format!(
        "{}  {:<8} {:<10} {}/{} {:>5.1}%  {}{}",
        task.task_id,
        task.kind,
        state_name(task.state()),
        task.step,
        task.total_steps,
        task.percent,
        task.message,
        error_suffix(&task.error)
    )
}

fn state_name(state: TaskState) -> &'static str {
    state
        .as_str_name()
        .strip_prefix("TASK_STATE_")
        .unwrap_or("UNKNOWN")
}

fn error_suffix(error: &str) -> String {
    if error.is_empty() {
        String::new()
    } else {
        format!(" (error: {error})")
    }
}
