//! `agentstream task`: start, watch, list, inspect and cancel tasks.
//!
//! `watch` is the interesting one: it draws a live progress bar and, when
//! the connection drops (server restart, network), reconnects with the last
//! sequence it saw so the bar carries on where it was, missing nothing the
//! server retained. Ctrl-C stops watching; the task keeps running.

use std::time::{Duration, SystemTime};

use agentstream::pb::{self, TaskState, task_service_client::TaskServiceClient};
use clap::{Args, Subcommand};
use tonic::{Code, Status, transport::Channel};

use crate::{CliError, client::ClientArgs, interrupted, output, progress::Progress};

type Client = TaskServiceClient<Channel>;

/// First wait before reconnecting; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Reconnection attempts in a row (with no event received) before giving up:
/// about a minute and a half with the backoff above.
const MAX_ATTEMPTS: u32 = 20;

#[derive(Debug, Args)]
pub struct TaskArgs {
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

pub async fn run(args: TaskArgs) -> Result<(), CliError> {
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
            print_task(client.get_task(request).await?.into_inner().task)
        }
        TaskCommand::Cancel(args) => {
            let mut client = Client::new(args.client.connect().await?);
            let request = pb::CancelTaskRequest {
                task_id: args.task_id,
            };
            print_task(client.cancel_task(request).await?.into_inner().task)
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
        return print_task(Some(task));
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
        output::line(&summary(task))?;
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
    let mut display = TaskDisplay::new(task.as_ref());
    let watched = tokio::select! {
        result = follow_with_reconnect(client, task_id, after, &mut display) => result,
        () = interrupted() => {
            display.progress.stop();
            return Err(CliError::StoppedWatching { task_id: task_id.to_owned() });
        }
    };
    match watched {
        Ok(terminal) => display.finish(&terminal),
        Err(error) => {
            display.progress.stop();
            Err(error)
        }
    }
}

/// Follows the task's events, reconnecting after transport failures with
/// the last sequence seen, with bounded exponential backoff.
async fn follow_with_reconnect(
    client: &mut Client,
    task_id: &str,
    mut last: u64,
    display: &mut TaskDisplay,
) -> Result<pb::TaskEvent, CliError> {
    let mut backoff = FIRST_BACKOFF;
    let mut attempts = 0;
    loop {
        let before = last;
        let why = match follow(client, task_id, &mut last, display).await {
            Ok(Some(terminal)) => return Ok(terminal),
            Ok(None) => "the stream ended early".to_owned(),
            Err(CliError::Status(status)) if retryable(&status) => {
                format!("{:?}: {}", status.code(), status.message())
            }
            Err(error) => return Err(error),
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
        display.progress.note(&format!(
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
    display: &mut TaskDisplay,
) -> Result<Option<pb::TaskEvent>, CliError> {
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
        display.show(&event)?;
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

/// A task's progress: a bar on a terminal, one line per event otherwise.
struct TaskDisplay {
    progress: Progress,
    created: Option<SystemTime>,
    /// When the task started running (its RUNNING event), once seen.
    running_since: Option<SystemTime>,
}

impl TaskDisplay {
    fn new(task: Option<&pb::Task>) -> Self {
        let progress = Progress::new("steps");
        let created = task
            .and_then(|t| t.create_time)
            .and_then(|t| pb::system_time(&t));
        if let Some(created) = created {
            progress.started(created.elapsed().unwrap_or_default());
        }
        Self {
            progress,
            created,
            running_since: None,
        }
    }

    fn show(&mut self, event: &pb::TaskEvent) -> Result<(), CliError> {
        let time = event.time.and_then(|t| pb::system_time(&t));
        if event.state() == TaskState::Running && self.running_since.is_none() {
            self.running_since = time;
        }
        if !self.progress.draws() {
            output::line(&format!(
                "{:>6} {:<10} {}/{} {:>5.1}% {}{}",
                event.sequence,
                state_name(event.state()),
                event.step,
                event.total_steps,
                event.percent,
                event.message,
                error_suffix(&event.error),
            ))?;
            return Ok(());
        }
        // The task's own pace: steps done since it started running, by the
        // server's clock, whenever this watcher joined.
        let since = self.running_since.or(self.created);
        let rate = since
            .zip(time)
            .and_then(|(since, now)| now.duration_since(since).ok())
            .map(|took| (u64::from(event.step), took));
        self.progress.show(
            event.step.into(),
            event.total_steps.into(),
            rate,
            &format!("{} {}", state_name(event.state()), event.message),
        );
        Ok(())
    }

    /// Ends the display; a task that did not succeed is the command's error,
    /// reported once.
    fn finish(&self, terminal: &pb::TaskEvent) -> Result<(), CliError> {
        let state = terminal.state();
        // The task's own duration, from its creation to its last event.
        let ended = terminal.time.and_then(|t| pb::system_time(&t));
        let took = self
            .created
            .zip(ended)
            .and_then(|(created, ended)| ended.duration_since(created).ok())
            .unwrap_or_default();
        let at = format!("step {}/{}", terminal.step, terminal.total_steps);
        let after = format!("after {:.1} s", took.as_secs_f64());
        match state {
            TaskState::Succeeded => {
                let summary = format!("SUCCEEDED {after}: {}", terminal.message);
                if self.progress.draws() {
                    self.progress.succeed(summary);
                }
                Ok(())
            }
            TaskState::Failed => {
                self.progress.fail("FAILED");
                Err(CliError::Task(format!(
                    "task {} failed at {at} {after}: {}",
                    terminal.task_id,
                    if terminal.error.is_empty() {
                        &terminal.message
                    } else {
                        &terminal.error
                    }
                )))
            }
            _ => {
                self.progress.fail("CANCELLED");
                Err(CliError::Task(format!(
                    "task {} was cancelled at {at} {after}",
                    terminal.task_id
                )))
            }
        }
    }
}

fn print_task(task: Option<pb::Task>) -> Result<(), CliError> {
    let Some(task) = task else {
        return Ok(());
    };
    output::line(&summary(&task))?;
    if let Some(created) = task.create_time.as_ref().and_then(pb::system_time) {
        output::line(&format!(
            "  created: {}",
            humantime::format_rfc3339(created)
        ))?;
    }
    if let Some(updated) = task.update_time.as_ref().and_then(pb::system_time) {
        output::line(&format!(
            "  updated: {}",
            humantime::format_rfc3339(updated)
        ))?;
    }
    Ok(())
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
