//! `task-store`: what keeping tasks in Redis costs against keeping them in
//! memory, measured through TaskService as a client sees it.
//!
//! Each target is a server (and optionally a second replica to watch on);
//! rounds alternate between targets, so that a noisy machine hurts every
//! target alike, and the report gives the median over rounds:
//!
//! - **throughput**: `--tasks` demo tasks of `--steps` instant steps at
//!   once, each followed by one watcher from its start: the time from the
//!   first StartTask to the last terminal event a watcher received, and the
//!   events the watchers received per second. Steps faster than the store
//!   can keep up with are coalesced for watchers (progress only, never a
//!   state change), so both the time and the event count say what a store
//!   sustains.
//! - **latency**: one paced task (`--paced-steps` steps, `--step-delay-ms`
//!   apart) watched from its start; for each event, the time from its
//!   publication (the event's own `time`, stamped by the server when the
//!   task reported it) to its arrival at the watcher: median and p99.
//!   Server and bench share one clock (loopback only).

use std::{net::SocketAddr, time::SystemTime};

use agentstream::pb::{self, task_service_client::TaskServiceClient};
use clap::Args;
use futures::StreamExt;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::{BenchResult, stats::percentile};

/// Options of `task-store`.
#[derive(Debug, Clone, Args)]
pub struct TaskStoreArgs {
    /// A server to measure: `NAME=ADDR` (tasks started and watched there)
    /// or `NAME=ADDR,WATCH_ADDR` (started on ADDR, watched through another
    /// replica on the same store). Repeat for each target.
    #[arg(long = "target", required = true, value_parser = parse_target)]
    pub targets: Vec<TaskTarget>,
    /// Rounds; each round measures every target once, in turn.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Concurrent tasks of the throughput run.
    #[arg(long, default_value_t = 4)]
    pub tasks: usize,
    /// Instant steps per task of the throughput run (at most 10,000).
    #[arg(long, default_value_t = 5_000)]
    pub steps: u32,
    /// Steps of the paced task of the latency run.
    #[arg(long, default_value_t = 400)]
    pub paced_steps: u32,
    /// Milliseconds between the paced task's steps.
    #[arg(long, default_value_t = 5)]
    pub step_delay_ms: u32,
}

/// One target of `task-store`.
#[derive(Debug, Clone)]
pub struct TaskTarget {
    name: String,
    start: SocketAddr,
    watch: SocketAddr,
}

fn parse_target(text: &str) -> Result<TaskTarget, String> {
    let (name, addrs) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected NAME=ADDR[,WATCH_ADDR]"))?;
    let mut addrs = addrs.split(',');
    let parse = |addr: &str| {
        addr.parse::<SocketAddr>()
            .map_err(|e| format!("`{addr}`: {e}"))
    };
    let start = parse(addrs.next().unwrap_or_default())?;
    let watch = match addrs.next() {
        Some(addr) => parse(addr)?,
        None => start,
    };
    Ok(TaskTarget {
        name: name.to_owned(),
        start,
        watch,
    })
}

type Client = TaskServiceClient<Channel>;

/// Events of the paced task left out of the latency (see [`latencies`]).
const REPLAYED: usize = 10;

/// The figures of one target in one round.
#[derive(Debug, Default, Clone)]
struct Round {
    finish_ms: f64,
    events_per_s: f64,
    events: u64,
    latency_p50_us: u64,
    latency_p99_us: u64,
}

/// Runs `task-store` and prints the medians.
pub async fn run(args: TaskStoreArgs) -> BenchResult<()> {
    let mut clients = Vec::new();
    for target in &args.targets {
        let start = connect(target.start).await?;
        let watch = connect(target.watch).await?;
        clients.push((start, watch));
    }
    let mut results: Vec<Vec<Round>> = vec![Vec::new(); args.targets.len()];
    // A warm-up task per target (connections, script caches), not counted.
    for (start, watch) in &mut clients {
        throughput(start, watch, 1, 10).await?;
    }
    for round in 1..=args.rounds {
        for (i, target) in args.targets.iter().enumerate() {
            let (start, watch) = &mut clients[i];
            let (finish, events) = throughput(start, watch, args.tasks, args.steps).await?;
            let mut latencies =
                latencies(start, watch, args.paced_steps, args.step_delay_ms).await?;
            latencies.sort_unstable();
            let secs = finish.as_secs_f64();
            let figures = Round {
                finish_ms: secs * 1e3,
                events_per_s: events as f64 / secs,
                events,
                latency_p50_us: percentile(&latencies, 50.0),
                latency_p99_us: percentile(&latencies, 99.0),
            };
            println!(
                "round {round} {:<8} throughput: {} tasks x {} steps in {:.1} ms, {} events \
                 watched ({:.0}/s); latency: p50 {} us, p99 {} us ({} events)",
                target.name,
                args.tasks,
                args.steps,
                figures.finish_ms,
                figures.events,
                figures.events_per_s,
                figures.latency_p50_us,
                figures.latency_p99_us,
                latencies.len(),
            );
            results[i].push(figures);
        }
    }
    println!(
        "\nmedians over {} rounds ({} tasks x {} instant steps; {} steps {} ms apart)",
        args.rounds, args.tasks, args.steps, args.paced_steps, args.step_delay_ms
    );
    println!(
        "| store | tasks done in | events watched/s | events watched | WatchTask latency p50 | p99 |"
    );
    println!("|---|---|---|---|---|---|");
    for (target, rounds) in args.targets.iter().zip(&results) {
        let median = |f: fn(&Round) -> f64| {
            let mut values: Vec<f64> = rounds.iter().map(f).collect();
            values.sort_by(f64::total_cmp);
            values.get(values.len() / 2).copied().unwrap_or_default()
        };
        println!(
            "| {} | {:.1} ms | {:.0} | {:.0} | {:.0} µs | {:.0} µs |",
            target.name,
            median(|r| r.finish_ms),
            median(|r| r.events_per_s),
            median(|r| r.events as f64),
            median(|r| r.latency_p50_us as f64),
            median(|r| r.latency_p99_us as f64),
        );
    }
    Ok(())
}

async fn connect(addr: SocketAddr) -> BenchResult<Client> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    Ok(TaskServiceClient::new(channel))
}

async fn start_task(client: &mut Client, steps: u32, step_delay_ms: u32) -> BenchResult<String> {
    let request = pb::StartTaskRequest {
        spec: Some(pb::start_task_request::Spec::Demo(pb::DemoTaskSpec {
            steps,
            step_delay_ms,
            fail_at_step: 0,
        })),
    };
    let task = client
        .start_task(request)
        .await
        .map_err(|s| format!("StartTask: {s}"))?
        .into_inner()
        .task
        .ok_or("StartTask: no task")?;
    Ok(task.task_id)
}

/// Every event of task `id` from its start, each with when it arrived.
async fn watch_all(
    client: &mut Client,
    id: String,
) -> BenchResult<Vec<(pb::TaskEvent, SystemTime)>> {
    let request = pb::WatchTaskRequest {
        task_id: id,
        after_sequence: 0,
    };
    let mut events = client
        .watch_task(request)
        .await
        .map_err(|s| format!("WatchTask: {s}"))?
        .into_inner();
    let mut seen = Vec::new();
    while let Some(item) = events.next().await {
        let event = item
            .map_err(|s| format!("WatchTask: {s}"))?
            .event
            .ok_or("WatchTask: no event")?;
        seen.push((event, SystemTime::now()));
    }
    let terminal = seen.last().map(|(e, _)| e.state);
    if terminal != Some(pb::TaskState::Succeeded as i32) {
        return Err(format!("a task ended in state {terminal:?}"));
    }
    Ok(seen)
}

/// `tasks` tasks of `steps` instant steps, each watched to its end: how
/// long until the last ended, and how many events the watchers received.
async fn throughput(
    start: &mut Client,
    watch: &mut Client,
    tasks: usize,
    steps: u32,
) -> BenchResult<(std::time::Duration, u64)> {
    let began = Instant::now();
    let mut watchers = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let id = start_task(start, steps, 0).await?;
        let mut client = watch.clone();
        watchers.push(tokio::spawn(
            async move { watch_all(&mut client, id).await },
        ));
    }
    let mut events = 0u64;
    for watcher in watchers {
        let seen = watcher.await.map_err(|e| e.to_string())??;
        events += seen.len() as u64;
    }
    Ok((began.elapsed(), events))
}

/// Publication-to-arrival times of a paced task's events, in µs.
async fn latencies(
    start: &mut Client,
    watch: &mut Client,
    steps: u32,
    step_delay_ms: u32,
) -> BenchResult<Vec<u64>> {
    let id = start_task(start, steps, step_delay_ms).await?;
    let seen = watch_all(watch, id).await?;
    // The first events were published before the watch began: they are
    // replayed, not followed.
    Ok(seen
        .iter()
        .skip(REPLAYED)
        .filter_map(|(event, arrived)| {
            let time = event.time.as_ref()?;
            let published = SystemTime::UNIX_EPOCH
                + std::time::Duration::new(
                    u64::try_from(time.seconds).ok()?,
                    u32::try_from(time.nanos).ok()?,
                );
            let waited = arrived.duration_since(published).unwrap_or_default();
            u64::try_from(waited.as_micros()).ok()
        })
        .collect())
}
