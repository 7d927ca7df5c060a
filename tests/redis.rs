//! Tasks on Redis: two agentstream replicas on one real `redis-server`,
//! started by the test on a free loopback port with a temporary directory.
//!
//! Without a `redis-server` binary these tests print SKIPPED and pass, so
//! a developer without Redis can still run the suite; with
//! `AGENTSTREAM_REQUIRE_REDIS=1` (set by `.ci/run`) they fail instead, so CI
//! never skips them.

mod common;

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use agentstream::pb::{self, TaskState, task_service_client::TaskServiceClient};
use common::{PATIENCE, TestServer};
use futures::StreamExt;
use tonic::transport::Channel;

type Client = TaskServiceClient<Channel>;

/// A `redis-server` of this test, killed when dropped.
struct Redis {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `redis-server` on PATH, if any.
fn redis_server_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
}

/// Starts a private Redis, or `None` (after saying so) when there is no
/// `redis-server` and the environment does not require one.
async fn redis() -> Option<Redis> {
    let Some(binary) = redis_server_binary() else {
        assert!(
            std::env::var_os("AGENTSTREAM_REQUIRE_REDIS").is_none(),
            "AGENTSTREAM_REQUIRE_REDIS is set but no redis-server is on PATH"
        );
        eprintln!(
            "SKIPPED: no redis-server on PATH; install it (apt-get install redis-server) to run the Redis tests"
        );
        return None;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("free port");
        listener.local_addr().expect("addr").port()
    };
    let mut child = Command::new(binary)
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let stdout = child.stdout.take().expect("stdout");
    // Ready once it says so (an event, not a sleep); the rest of its output
    // is drained so it never blocks on a full pipe.
    let ready = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|line| line.contains("Ready to accept connections"));
        std::thread::spawn(move || lines.for_each(drop));
        ready
    });
    let ready = tokio::time::timeout(PATIENCE, ready)
        .await
        .expect("redis-server ready in time")
        .expect("reader");
    assert!(ready, "redis-server exited before it was ready");
    Some(Redis {
        child,
        url: format!("redis://127.0.0.1:{port}/"),
        _dir: dir,
    })
}

/// A replica on `redis`.
async fn replica(redis: &Redis) -> TestServer {
    let url = redis.url.clone();
    TestServer::start_with(move |config| config.redis_url = Some(url)).await
}

fn demo(steps: u32, step_delay_ms: u32) -> pb::StartTaskRequest {
    pb::StartTaskRequest {
        spec: Some(pb::start_task_request::Spec::Demo(pb::DemoTaskSpec {
            steps,
            step_delay_ms,
            fail_at_step: 0,
        })),
    }
}

async fn start(client: &mut Client, request: pb::StartTaskRequest) -> pb::Task {
    let response = client.start_task(request).await.expect("StartTask");
    response.into_inner().task.expect("task")
}

async fn get(client: &mut Client, task_id: &str) -> pb::Task {
    let request = pb::GetTaskRequest {
        task_id: task_id.into(),
    };
    let response = client.get_task(request).await.expect("GetTask");
    response.into_inner().task.expect("task")
}

async fn watch(
    client: &mut Client,
    task_id: &str,
    after_sequence: u64,
) -> tonic::Streaming<pb::WatchTaskResponse> {
    let request = pb::WatchTaskRequest {
        task_id: task_id.into(),
        after_sequence,
    };
    client
        .watch_task(request)
        .await
        .expect("WatchTask")
        .into_inner()
}

/// The next event of `events`, within the test's patience.
async fn next(events: &mut tonic::Streaming<pb::WatchTaskResponse>) -> Option<pb::TaskEvent> {
    let item = tokio::time::timeout(PATIENCE, events.next())
        .await
        .expect("an event in time")?;
    Some(item.expect("event").event.expect("event"))
}

/// Every remaining event of `events`.
async fn rest(events: &mut tonic::Streaming<pb::WatchTaskResponse>) -> Vec<pb::TaskEvent> {
    let mut all = Vec::new();
    while let Some(event) = next(events).await {
        all.push(event);
    }
    all
}

fn state(event: &pb::TaskEvent) -> TaskState {
    TaskState::try_from(event.state).expect("state")
}

#[tokio::test]
async fn a_task_started_on_one_replica_is_watched_listed_fetched_and_cancelled_through_another() {
    let Some(redis) = redis().await else { return };
    let (a, b) = (replica(&redis).await, replica(&redis).await);
    let (mut on_a, mut on_b) = (a.tasks(), b.tasks());
    let task = start(&mut on_a, demo(10_000, 5)).await;

    // Watched through B: the replayed start, then live progress.
    let mut events = watch(&mut on_b, &task.task_id, 0).await;
    let first = next(&mut events).await.expect("first event");
    assert_eq!((first.sequence, state(&first)), (1, TaskState::Pending));
    let mut last = first;
    while last.step < 3 {
        let event = next(&mut events).await.expect("progress");
        assert_eq!(event.sequence, last.sequence + 1, "no gap");
        last = event;
    }

    // Fetched and listed through B.
    let fetched = get(&mut on_b, &task.task_id).await;
    assert_eq!(fetched.task_id, task.task_id);
    assert_eq!(fetched.kind, "demo");
    assert_eq!(fetched.create_time, task.create_time);
    assert_eq!(TaskState::try_from(fetched.state), Ok(TaskState::Running));
    let listed = on_b
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .expect("ListTasks")
        .into_inner();
    assert_eq!(
        listed.tasks.first().map(|t| t.task_id.as_str()),
        Some(task.task_id.as_str())
    );

    // Cancelled through B: the work on A stops, and B says so.
    let request = pb::CancelTaskRequest {
        task_id: task.task_id.clone(),
    };
    let cancelled = on_b.cancel_task(request).await.expect("CancelTask");
    let cancelled = cancelled.into_inner().task.expect("task");
    assert_eq!(
        TaskState::try_from(cancelled.state),
        Ok(TaskState::Cancelled)
    );
    assert_eq!(
        TaskState::try_from(get(&mut on_a, &task.task_id).await.state),
        Ok(TaskState::Cancelled)
    );
    let tail = rest(&mut events).await;
    let end = tail.last().expect("terminal event");
    assert_eq!(state(end), TaskState::Cancelled);
    assert!(end.step < 10_000, "the work stopped early");
}

#[tokio::test]
async fn a_watcher_moving_from_one_replica_to_another_misses_nothing() {
    let Some(redis) = redis().await else { return };
    let (a, b) = (replica(&redis).await, replica(&redis).await);
    let (mut on_a, mut on_b) = (a.tasks(), b.tasks());
    let task = start(&mut on_a, demo(40, 5)).await;

    let mut seen = Vec::new();
    let mut events = watch(&mut on_a, &task.task_id, 0).await;
    while seen.len() < 5 {
        seen.push(next(&mut events).await.expect("event"));
    }
    drop(events);
    let resume = seen.last().map(|e| e.sequence).expect("a sequence");
    let mut events = watch(&mut on_b, &task.task_id, resume).await;
    seen.extend(rest(&mut events).await);

    let sequences: Vec<u64> = seen.iter().map(|e| e.sequence).collect();
    let expected: Vec<u64> = (1..=sequences.len() as u64).collect();
    assert_eq!(sequences, expected, "every event once, in order");
    let end = seen.last().expect("terminal event");
    assert_eq!((state(end), end.step), (TaskState::Succeeded, 40));

    // A full replay through either replica is the same history.
    let mut replay = watch(&mut on_a, &task.task_id, 0).await;
    assert_eq!(rest(&mut replay).await, seen);
}

/// A replica started from the binary (so the test can kill it), and the
/// address it listens on.
struct Process {
    child: Child,
    addr: std::net::SocketAddr,
    _data_dir: tempfile::TempDir,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn replica_process(redis: &Redis, lease: &str) -> Process {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentstream"))
        .args(["serve", "--listen", "127.0.0.1:0", "--http-listen", "off"])
        .args(["--log-format", "json", "--redis-url", &redis.url])
        .args(["--redis-lease", lease])
        .arg("--data-dir")
        .arg(data_dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let stderr = child.stderr.take().expect("stderr");
    let listening = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stderr).lines();
        let line = lines
            .by_ref()
            .map_while(Result::ok)
            .find(|line| line.contains("agentstream listening"));
        std::thread::spawn(move || lines.for_each(drop));
        line
    });
    // A debug binary on a loaded machine takes a while to load its
    // tokenizer; this bounds a hang, it is not a timing goal.
    let line = tokio::time::timeout(4 * PATIENCE, listening)
        .await
        .expect("listening in time")
        .expect("reader")
        .expect("the binary logs its address");
    let addr = line
        .split("\"addr\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no addr in {line}"));
    Process {
        child,
        addr,
        _data_dir: data_dir,
    }
}

#[tokio::test]
async fn the_tasks_of_a_killed_replica_become_failed_on_the_others() {
    let Some(redis) = redis().await else { return };
    let mut a = replica_process(&redis, "1s").await;
    let url = redis.url.clone();
    let b = TestServer::start_with(move |config| {
        config.redis_url = Some(url);
        config.redis_lease = std::time::Duration::from_secs(1);
    })
    .await;
    let mut on_a = Client::new(common::connect(a.addr).await);
    let mut on_b = b.tasks();
    let task = start(&mut on_a, demo(10_000, 10)).await;
    let mut events = watch(&mut on_b, &task.task_id, 0).await;
    while next(&mut events).await.expect("event").step < 2 {}

    a.child.kill().expect("kill -9");
    a.child.wait().expect("reaped");

    let tail = rest(&mut events).await;
    let end = tail.last().expect("terminal event");
    assert_eq!(state(end), TaskState::Failed);
    assert_eq!(end.error, "the replica running this task stopped");
    let fetched = get(&mut on_b, &task.task_id).await;
    assert_eq!(TaskState::try_from(fetched.state), Ok(TaskState::Failed));
}

#[tokio::test]
async fn a_server_whose_redis_cannot_be_reached_does_not_start() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("free port");
        listener.local_addr().expect("addr").port()
    };
    let data_dir = tempfile::tempdir().expect("temp dir");
    let config = agentstream::config::ServeConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        http_listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: data_dir.path().to_path_buf(),
        redis_url: Some(format!("redis://127.0.0.1:{port}/")),
        ..agentstream::config::ServeConfig::default()
    };
    let error = agentstream::server::Server::start(config)
        .await
        .err()
        .expect("refuses to start");
    assert!(error.to_string().contains("cannot use Redis"), "{error}");
}
