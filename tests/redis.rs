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
use common::{
    PATIENCE, TestServer, binary::Binary, demo, get_task, json_of, next_event, rest_of_watch,
    resumable, sequences, start_task, take, watch_task, with_key,
};
use tonic::transport::Channel;

type Client = TaskServiceClient<Channel>;

/// A `redis-server` of this test, killed when dropped.
struct Redis {
    child: Child,
    url: String,
    port: u16,
    binary: PathBuf,
    /// Whether it writes every command to its append-only file.
    persistent: bool,
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
    redis_started(false).await
}

/// A private Redis that keeps its data across a restart (append-only file,
/// fsync on every write), or `None` as for [`redis`].
async fn persistent_redis() -> Option<Redis> {
    redis_started(true).await
}

async fn redis_started(persistent: bool) -> Option<Redis> {
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
    let child = spawn_redis(&binary, port, dir.path(), persistent).await;
    Some(Redis {
        child,
        url: format!("redis://127.0.0.1:{port}/"),
        port,
        binary,
        persistent,
        _dir: dir,
    })
}

impl Redis {
    /// Kills this Redis (`kill -9`): every key is lost with it.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a fresh Redis on the same port after [`Redis::kill`].
    async fn start_again(&mut self) {
        self.child = spawn_redis(&self.binary, self.port, self._dir.path(), self.persistent).await;
    }

    /// Stops this Redis as an operator's restart does (`SHUTDOWN`: clients
    /// are disconnected, the append-only file is complete) and starts it
    /// again on the same files.
    async fn restart(&mut self) {
        let client = redis::Client::open(self.url.as_str()).expect("url");
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("connects");
        // The connection closes instead of answering.
        let _ = redis::cmd("SHUTDOWN")
            .query_async::<()>(&mut connection)
            .await;
        let _ = self.child.wait();
        self.start_again().await;
    }

    /// `CONFIG SET name value` on this Redis.
    async fn config_set(&self, name: &str, value: &str) {
        let client = redis::Client::open(self.url.as_str()).expect("url");
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("connects");
        redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async::<()>(&mut connection)
            .await
            .expect("CONFIG SET");
    }
}

/// A TCP proxy in front of a Redis that can stall: while stalled it
/// forwards nothing in either direction (a Redis that stopped answering,
/// or a network that lost its packets); once it resumes, every byte held
/// back is delivered.
struct Proxy {
    url: String,
    stalled: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    async fn start(redis: &Redis) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let addr = listener.local_addr().expect("addr");
        let (stalled, _) = tokio::sync::watch::channel(false);
        let upstream = format!("127.0.0.1:{}", redis.port);
        let gate = stalled.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(forward(client_read, server_write, gate.subscribe()));
                tokio::spawn(forward(server_read, client_write, gate.subscribe()));
            }
        });
        Self {
            url: format!("redis://{addr}/"),
            stalled,
        }
    }

    fn stall(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }
}

/// Copies `from` to `to`, holding the bytes while the proxy is stalled.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if stalled.wait_for(|stalled| !*stalled).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// Starts `redis-server` on `port`, returning once it accepts connections.
async fn spawn_redis(
    binary: &std::path::Path,
    port: u16,
    dir: &std::path::Path,
    persistent: bool,
) -> Child {
    let appendonly = if persistent { "yes" } else { "no" };
    let mut child = Command::new(binary)
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--save",
            "",
            "--appendonly",
            appendonly,
            "--daemonize",
            "no",
        ])
        .args(["--appendfsync", "always"])
        .arg("--dir")
        .arg(dir)
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
    child
}

/// A replica on `redis`.
async fn replica(redis: &Redis) -> TestServer {
    replica_with(redis, |_| {}).await
}

/// A replica on `redis`, configured further by `tweak`.
async fn replica_with(
    redis: &Redis,
    tweak: impl FnOnce(&mut agentstream::config::ServeConfig),
) -> TestServer {
    replica_at(&redis.url, tweak).await
}

/// A replica on the Redis at `url`, configured further by `tweak`.
async fn replica_at(
    url: &str,
    tweak: impl FnOnce(&mut agentstream::config::ServeConfig),
) -> TestServer {
    let url = url.to_owned();
    TestServer::start_with(move |config| {
        config.redis_url = Some(url);
        tweak(config);
    })
    .await
}

async fn get(client: &mut Client, task_id: &str) -> pb::Task {
    get_task(client, task_id).await.expect("GetTask")
}

async fn watch(
    client: &mut Client,
    task_id: &str,
    after_sequence: u64,
) -> tonic::Streaming<pb::WatchTaskResponse> {
    let watch = watch_task(client, task_id, after_sequence).await;
    watch.expect("WatchTask")
}

fn state(event: &pb::TaskEvent) -> TaskState {
    TaskState::try_from(event.state).expect("state")
}

#[tokio::test]
async fn a_task_started_on_one_replica_is_watched_listed_fetched_and_cancelled_through_another() {
    let Some(redis) = redis().await else { return };
    let (a, b) = (replica(&redis).await, replica(&redis).await);
    let (mut on_a, mut on_b) = (a.tasks(), b.tasks());
    let task = start_task(&mut on_a, demo(10_000, 5, 0)).await;

    // Watched through B: the replayed start, then live progress.
    let mut events = watch(&mut on_b, &task.task_id, 0).await;
    let first = next_event(&mut events).await.expect("first event");
    assert_eq!((first.sequence, state(&first)), (1, TaskState::Pending));
    let mut last = first;
    while last.step < 3 {
        let event = next_event(&mut events).await.expect("progress");
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
    let tail = rest_of_watch(&mut events).await;
    let end = tail.last().expect("terminal event");
    assert_eq!(state(end), TaskState::Cancelled);
    assert!(end.step < 10_000, "the work stopped early");
}

#[tokio::test]
async fn a_page_token_of_one_replica_pages_on_another_and_forged_ones_are_refused() {
    let Some(redis) = redis().await else { return };
    let (a, b) = (replica(&redis).await, replica(&redis).await);
    let (mut on_a, mut on_b) = (a.tasks(), b.tasks());
    for _ in 0..3 {
        start_task(&mut on_a, demo(1, 0, 0)).await;
    }
    let page = |page_token: String| pb::ListTasksRequest {
        page_size: 1,
        page_token,
    };
    let first = on_a
        .list_tasks(page(String::new()))
        .await
        .expect("ListTasks");
    let token = first.into_inner().next_page_token;
    assert!(!token.is_empty());
    let second = on_b
        .list_tasks(page(token.clone()))
        .await
        .expect("A's token pages on B")
        .into_inner();
    assert_eq!(second.tasks.len(), 1);
    // A replica started later shares the same key.
    let c = replica(&redis).await;
    let again = c.tasks().list_tasks(page(token)).await.expect("and on C");
    let ids = |tasks: &[pb::Task]| tasks.iter().map(|t| t.task_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&again.into_inner().tasks), ids(&second.tasks));
    let status = on_b
        .list_tasks(page("before-99999999999999".into()))
        .await
        .expect_err("forged");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
}

#[tokio::test]
async fn a_watcher_moving_from_one_replica_to_another_misses_nothing() {
    let Some(redis) = redis().await else { return };
    let (a, b) = (replica(&redis).await, replica(&redis).await);
    let (mut on_a, mut on_b) = (a.tasks(), b.tasks());
    let task = start_task(&mut on_a, demo(40, 5, 0)).await;

    let mut seen = Vec::new();
    let mut events = watch(&mut on_a, &task.task_id, 0).await;
    while seen.len() < 5 {
        seen.push(next_event(&mut events).await.expect("event"));
    }
    drop(events);
    let resume = seen.last().map(|e| e.sequence).expect("a sequence");
    let mut events = watch(&mut on_b, &task.task_id, resume).await;
    seen.extend(rest_of_watch(&mut events).await);

    let sequences: Vec<u64> = seen.iter().map(|e| e.sequence).collect();
    let expected: Vec<u64> = (1..=sequences.len() as u64).collect();
    assert_eq!(sequences, expected, "every event once, in order");
    let end = seen.last().expect("terminal event");
    assert_eq!((state(end), end.step), (TaskState::Succeeded, 40));

    // A full replay through either replica is the same history.
    let mut replay = watch(&mut on_a, &task.task_id, 0).await;
    assert_eq!(rest_of_watch(&mut replay).await, seen);
}

/// A replica started from the binary (so the test can kill it), and the
/// address it listens on.
struct Process {
    binary: Binary,
    addr: std::net::SocketAddr,
}

async fn replica_process(redis: &Redis, lease: &str, extra: &[&str]) -> Process {
    let mut args = vec!["--http-listen", "off", "--log-format", "json"];
    args.extend(["--redis-url", &redis.url, "--redis-lease", lease]);
    args.extend(extra);
    let mut binary = Binary::serve(&args);
    // A debug binary on a loaded machine takes a while to load its
    // tokenizer; this bounds a hang, it is not a timing goal.
    let (_, addr) = binary.listening(4 * PATIENCE).await;
    // Its later log lines are read and dropped.
    binary.lines.close();
    Process { binary, addr }
}

#[tokio::test]
async fn the_tasks_of_a_killed_replica_become_failed_on_the_others() {
    let Some(redis) = redis().await else { return };
    let mut a = replica_process(&redis, "1s", &[]).await;
    let url = redis.url.clone();
    let b = TestServer::start_with(move |config| {
        config.redis_url = Some(url);
        config.redis_lease = std::time::Duration::from_secs(1);
    })
    .await;
    let mut on_a = Client::new(common::connect(a.addr).await);
    let mut on_b = b.tasks();
    let task = start_task(&mut on_a, demo(10_000, 10, 0)).await;
    let mut events = watch(&mut on_b, &task.task_id, 0).await;
    while next_event(&mut events).await.expect("event").step < 2 {}

    a.binary.child.kill().expect("kill -9");
    a.binary.child.wait().expect("reaped");

    let tail = rest_of_watch(&mut events).await;
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

/// Starts a demo task over HTTP on `server` and returns its id.
async fn start_over_http(server: &TestServer, steps: u32, step_delay_ms: u32) -> String {
    let demo = serde_json::json!({"demo": {"steps": steps, "stepDelayMs": step_delay_ms}});
    let started = json_of(server.post("/v1/tasks", &demo).await).await;
    started["task"]["taskId"]
        .as_str()
        .expect("taskId")
        .to_owned()
}

#[tokio::test]
async fn the_http_task_routes_of_one_replica_serve_the_tasks_of_another() {
    let Some(redis) = redis().await else { return };
    let (a, b) = (replica(&redis).await, replica(&redis).await);
    let http = common::http_client();
    let id = start_over_http(&a, 5, 1).await;

    // B streams the whole history as SSE, `id:` the sequence, to the end.
    let events = http
        .get(common::http_url(&b, &format!("/v1/tasks/{id}/events")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("GET events");
    assert_eq!(events.status(), 200);
    let body = events.text().await.expect("events to the end");
    let ids: Vec<u64> = body
        .lines()
        .filter_map(|line| line.strip_prefix("id:"))
        .filter_map(|id| id.trim().parse().ok())
        .collect();
    let expected: Vec<u64> = (1..=ids.len() as u64).collect();
    assert!(ids.len() >= 3, "start, progress and end: {body}");
    assert_eq!(ids, expected, "every event once, in order");
    assert!(body.contains("event: succeeded"), "{body}");

    // B fetches it; A lists it.
    let fetched = json_of(b.get(&format!("/v1/tasks/{id}")).await).await;
    assert_eq!(fetched["task"]["state"], "TASK_STATE_SUCCEEDED");
    let listed = json_of(a.get("/v1/tasks").await).await;
    assert_eq!(listed["tasks"][0]["taskId"], id.as_str());

    // A long task started on A is cancelled through B.
    let id = start_over_http(&a, 10000, 5).await;
    let cancelled = b.post_empty(&format!("/v1/tasks/{id}/cancel")).await;
    assert_eq!(cancelled.status(), 200);
    let cancelled = json_of(cancelled).await;
    assert_eq!(cancelled["task"]["state"], "TASK_STATE_CANCELLED");
}

type Chunks = tonic::Streaming<pb::StreamChatResponse>;

fn slow(config: &mut agentstream::config::ServeConfig) {
    config.mock_token_delay = std::time::Duration::from_millis(10);
}

#[tokio::test]
async fn a_stream_started_on_one_replica_resumes_on_another_without_a_gap_or_repeat() {
    let Some(redis) = redis().await else { return };
    let (a, b) = (replica_with(&redis, slow).await, replica(&redis).await);
    let request = resumable(120);
    let mut first = a.stream_chat(request.clone()).await;
    let seen = take(&mut first, 5).await;
    let stream_id = seen[0].stream_id.clone();
    assert!(stream_id.starts_with("stream-"), "{stream_id}");
    assert_eq!(sequences(&seen), [1, 2, 3, 4, 5]);
    drop(first);

    // B replays what A made since, then follows A's generation live.
    let mut resumed = b.resume_stream(&stream_id, 5).await.expect("resumes on B");
    let rest = common::drain_ok(&mut resumed).await;
    assert_eq!(
        sequences(&rest),
        (6..6 + rest.len() as u64).collect::<Vec<_>>(),
        "every chunk once, in order"
    );
    assert!(
        rest.iter()
            .all(|c| c.stream_id == stream_id && c.id == seen[0].id)
    );
    let whole: Vec<_> = seen.into_iter().chain(rest).collect();
    let mut straight = request;
    straight.resumable = false;
    straight.include_usage = true;
    let straight = common::drain_ok(&mut b.stream_chat(straight).await).await;
    assert_eq!(whole.len(), straight.len());
    assert_eq!(common::text_of(&whole, 0), common::text_of(&straight, 0));
    let usage = whole.last().and_then(|c| c.usage).expect("ends with usage");
    assert_eq!(usage.completion_tokens, 120);

    // A full replay through A is the same stream.
    let replay = common::drain_ok(&mut a.resume_stream(&stream_id, 0).await.expect("kept")).await;
    assert_eq!(replay, whole);
}

#[tokio::test]
async fn cancel_stream_on_one_replica_stops_the_generation_on_another() {
    let Some(redis) = redis().await else { return };
    let (a, b) = (replica_with(&redis, slow).await, replica(&redis).await);
    let request = common::endless_resumable(2);
    let mut on_a = a.stream_chat(request).await;
    let head = take(&mut on_a, 3).await;
    let stream_id = head[0].stream_id.clone();
    let mut on_b = b.resume_stream(&stream_id, 3).await.expect("resumes on B");
    take(&mut on_b, 2).await;
    assert_eq!(a.metrics().live_generations, 2);

    b.cancel_stream(&stream_id)
        .await
        .expect("cancelled through B");
    // CancelStream answers once the generation on A has stopped.
    assert_eq!(a.metrics().live_generations, 0);
    let (rest, end) = common::drain(&mut on_a).await;
    assert_eq!(
        end.expect_err("A's reader is told").code(),
        tonic::Code::Cancelled
    );
    let (_, end) = common::drain(&mut on_b).await;
    assert_eq!(
        end.expect_err("B's reader is told").code(),
        tonic::Code::Cancelled
    );
    a.assert_no_token_produced_meanwhile().await;

    b.cancel_stream(&stream_id)
        .await
        .expect("again: idempotent");
    let (replayed, end) =
        common::drain(&mut b.resume_stream(&stream_id, 0).await.expect("kept")).await;
    assert_eq!(end.expect_err("cancelled").code(), tonic::Code::Cancelled);
    assert_eq!(replayed.len(), head.len() + rest.len());
    assert_eq!(replayed[..3], head[..]);

    let unknown = b
        .resume_stream("stream-0123", 0)
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn a_reader_whose_redis_dies_ends_unavailable_and_service_returns_with_redis() {
    let Some(mut redis) = redis().await else {
        return;
    };
    let (a, b) = (replica_with(&redis, slow).await, replica(&redis).await);
    let request = common::endless_resumable(1);
    let mut on_a = a.stream_chat(request.clone()).await;
    let head = take(&mut on_a, 2).await;
    let mut on_b = b
        .resume_stream(&head[0].stream_id, 2)
        .await
        .expect("resumes on B");
    take(&mut on_b, 2).await;

    redis.kill();
    // The reader on B ends (it does not hang) with UNAVAILABLE.
    let (_, end) = common::drain(&mut on_b).await;
    assert_eq!(end.expect_err("told").code(), tonic::Code::Unavailable);
    // New calls fail with a clear error rather than wait.
    let refused = b.chat().stream_chat(request.clone()).await;
    let refused = match refused {
        Ok(response) => common::drain(&mut response.into_inner())
            .await
            .1
            .expect_err("refused"),
        Err(status) => status,
    };
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("Redis"), "{refused:?}");
    drop(on_a);

    // Redis is back (empty): both replicas serve again.
    redis.start_again().await;
    let mut fresh = common::eventually("a resumable stream starts again", || {
        let a = &a;
        let request = pb::StreamChatRequest {
            max_tokens: 20,
            ..request.clone()
        };
        async move { a.chat().stream_chat(request).await.ok() }
    })
    .await
    .into_inner();
    let chunks = common::drain_ok(&mut fresh).await;
    let stream_id = chunks[0].stream_id.clone();
    let replay = common::drain_ok(&mut b.resume_stream(&stream_id, 0).await.expect("on B")).await;
    assert_eq!(replay, chunks);
}

#[tokio::test]
async fn a_stream_whose_generating_replica_is_killed_ends_unavailable_and_stays_readable() {
    let Some(redis) = redis().await else { return };
    let mut a = replica_process(&redis, "1s", &["--mock-token-delay", "10ms"]).await;
    let b = replica_with(&redis, |config| {
        config.redis_lease = std::time::Duration::from_secs(1);
    })
    .await;
    let mut on_a = pb::chat_service_client::ChatServiceClient::new(common::connect(a.addr).await);
    let request = common::endless_resumable(1);
    let mut first = on_a
        .stream_chat(request)
        .await
        .expect("StreamChat")
        .into_inner();
    let head = take(&mut first, 3).await;
    let stream_id = head[0].stream_id.clone();
    let mut on_b = b.resume_stream(&stream_id, 3).await.expect("resumes on B");
    take(&mut on_b, 2).await;

    a.binary.child.kill().expect("kill -9");
    a.binary.child.wait().expect("reaped");
    drop(first);

    // B's reader does not hang: it ends with UNAVAILABLE (within about two
    // lease times; PATIENCE bounds a hang, it is not a timing goal).
    let (tail, end) = tokio::time::timeout(PATIENCE, common::drain(&mut on_b))
        .await
        .expect("the reader ends");
    let end = end.expect_err("told the stream failed");
    assert_eq!(end.code(), tonic::Code::Unavailable, "{end:?}");
    assert!(end.message().contains("is gone"), "{end:?}");
    let made = 5 + tail.len();

    // What A made before it died stays readable, every chunk once, and a
    // later reader is told at once how the stream ended.
    let (replayed, end) = tokio::time::timeout(
        PATIENCE,
        common::drain(&mut b.resume_stream(&stream_id, 0).await.expect("kept")),
    )
    .await
    .expect("the replay ends");
    assert_eq!(end.expect_err("failed").code(), tonic::Code::Unavailable);
    assert_eq!(sequences(&replayed), (1..=made as u64).collect::<Vec<_>>());
    assert_eq!(replayed[..3], head[..]);
}

#[tokio::test]
async fn a_stream_is_bound_to_its_key_on_every_replica() {
    const ALICE: &str = "sk-alice-3f9a0c1e7b2d4a68";
    const BOB: &str = "sk-bob-51c7e2a9d0b34f16";
    let Some(redis) = redis().await else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = dir.path().join("keys");
    std::fs::write(&keys, format!("alice:{ALICE}\nbob:{BOB}\n")).expect("keys file");
    let keyed = |config: &mut agentstream::config::ServeConfig| {
        config.api_keys_file = Some(keys.clone());
        slow(config);
    };
    let (a, b) = (
        replica_with(&redis, keyed).await,
        replica_with(&redis, keyed).await,
    );
    let request = common::endless_resumable(1);
    let mut alices = a.stream_chat(with_key(request, ALICE)).await;
    let head = take(&mut alices, 2).await;
    let stream_id = head[0].stream_id.clone();

    // On B, Bob gets what an unknown id gets.
    let resume_as = |key: &str, id: &str| {
        let request = pb::ResumeStreamRequest {
            stream_id: id.into(),
            after_sequence: 2,
        };
        let request = with_key(request, key);
        let mut chat = b.chat();
        async move { chat.resume_stream(request).await }
    };
    let unknown = "stream-00000000000000000000000000000000";
    let not_found = resume_as(BOB, unknown).await.expect_err("unknown");
    assert_eq!(not_found.code(), tonic::Code::NotFound);
    let bobs = resume_as(BOB, &stream_id).await.expect_err("not bob's");
    assert_eq!(bobs.code(), tonic::Code::NotFound, "{bobs:?}");
    assert_eq!(
        bobs.message().replace(&stream_id, unknown),
        not_found.message()
    );
    let cancel = pb::CancelStreamRequest {
        stream_id: stream_id.clone(),
    };
    let bobs = b
        .chat()
        .cancel_stream(with_key(cancel.clone(), BOB))
        .await
        .expect_err("not bob's");
    assert_eq!(bobs.code(), tonic::Code::NotFound, "{bobs:?}");
    let http = common::http_client();
    let path = format!("/v1/chat/streams/{stream_id}");
    for response in [
        http.get(common::http_url(&b, &path))
            .bearer_auth(BOB)
            .send(),
        http.post(common::http_url(&b, &format!("{path}/cancel")))
            .bearer_auth(BOB)
            .send(),
    ] {
        let response = response.await.expect("response");
        assert_eq!(response.status(), reqwest::StatusCode::NOT_FOUND);
    }

    // Alice's stream still generates; she follows it on B and cancels it.
    assert_eq!(take(&mut alices, 1).await[0].sequence, 3);
    let mut on_b = resume_as(ALICE, &stream_id)
        .await
        .expect("alice resumes on B")
        .into_inner();
    assert_eq!(take(&mut on_b, 1).await[0].sequence, 3);
    b.chat()
        .cancel_stream(with_key(cancel, ALICE))
        .await
        .expect("alice cancels on B");
    let (_, end) = common::drain(&mut alices).await;
    assert_eq!(end.expect_err("cancelled").code(), tonic::Code::Cancelled);
}

/// A task and a resumable stream started on A and followed on B.
struct InFlight {
    task_id: String,
    stream_id: String,
    on_a: Chunks,
    on_b: Chunks,
}

async fn in_flight(a: &TestServer, b: &TestServer) -> InFlight {
    let task = start_task(&mut a.tasks(), demo(10_000, 10, 0)).await;
    let request = common::endless_resumable(1);
    let mut on_a = a.stream_chat(request).await;
    let head = take(&mut on_a, 2).await;
    let stream_id = head[0].stream_id.clone();
    let mut on_b = b.resume_stream(&stream_id, 2).await.expect("resumes on B");
    take(&mut on_b, 1).await;
    InFlight {
        task_id: task.task_id,
        stream_id,
        on_a,
        on_b,
    }
}

/// How `stream` ends (after any chunks), within a bound that only stops a
/// hang (it is not a timing goal).
async fn end_of(stream: &mut Chunks) -> tonic::Status {
    let (_, end) = tokio::time::timeout(3 * PATIENCE, common::drain(stream))
        .await
        .expect("the stream ends rather than hang");
    end.expect_err("the stream fails")
}

/// A call's status, bounded as in [`end_of`].
async fn status_of<T>(
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> tonic::Status {
    match tokio::time::timeout(3 * PATIENCE, call).await {
        Ok(Ok(_)) => panic!("the call succeeded"),
        Ok(Err(status)) => status,
        Err(_) => panic!("the call hung"),
    }
}

#[tokio::test]
async fn a_full_redis_is_answered_with_resource_exhausted_and_service_returns_with_room() {
    let Some(redis) = redis().await else { return };
    let (a, b) = (replica_with(&redis, slow).await, replica(&redis).await);
    let mut flight = in_flight(&a, &b).await;

    // No write fits any more (noeviction: Redis refuses writes, not data).
    redis.config_set("maxmemory-policy", "noeviction").await;
    redis.config_set("maxmemory", "1").await;

    // New work that needs Redis is refused with RESOURCE_EXHAUSTED (gRPC)
    // and 429 (HTTP), saying why; nothing is INTERNAL, nothing panics.
    let started = status_of(b.tasks().start_task(demo(3, 1, 0))).await;
    assert_eq!(
        started.code(),
        tonic::Code::ResourceExhausted,
        "{started:?}"
    );
    assert!(started.message().contains("full"), "{started:?}");
    let keep = common::endless_resumable(1);
    let refused = status_of(b.chat().stream_chat(keep)).await;
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    let http = common::http_client();
    let response = http
        .post(common::http_url(&b, "/v1/tasks"))
        .json(&serde_json::json!({"demo": {"steps": 3}}))
        .send()
        .await
        .expect("response");
    assert_eq!(response.status(), reqwest::StatusCode::TOO_MANY_REQUESTS);
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("full")),
        "{body}"
    );

    // The stream whose chunks no longer fit ends for both readers, and its
    // generation stops (nothing piles up on A).
    let end = end_of(&mut flight.on_b).await;
    assert_eq!(end.code(), tonic::Code::ResourceExhausted, "{end:?}");
    let end = end_of(&mut flight.on_a).await;
    assert_eq!(end.code(), tonic::Code::ResourceExhausted, "{end:?}");
    a.until_no_generation("the generation stopped").await;

    // Chat that keeps nothing in Redis is still served.
    common::drain_ok(&mut b.stream_chat(common::ask("still here")).await).await;

    // With room again, both replicas serve tasks and streams again; the
    // task that ran meanwhile is still known.
    redis.config_set("maxmemory", "0").await;
    let fetched = get(&mut b.tasks(), &flight.task_id).await;
    assert_eq!(fetched.task_id, flight.task_id);
    let task = start_task(&mut b.tasks(), demo(3, 1, 0)).await;
    let events = rest_of_watch(&mut watch(&mut a.tasks(), &task.task_id, 0).await).await;
    assert_eq!(events.last().map(state), Some(TaskState::Succeeded));
    let chunks = common::drain_ok(&mut a.stream_chat(resumable(5)).await).await;
    let mut replay = b
        .resume_stream(&chunks[0].stream_id, 0)
        .await
        .expect("on B");
    assert_eq!(common::drain_ok(&mut replay).await, chunks);
    let _ = flight.stream_id;
}

#[tokio::test]
async fn a_stalled_redis_times_calls_out_with_unavailable_and_service_returns() {
    let Some(redis) = redis().await else { return };
    let proxy = Proxy::start(&redis).await;
    let (a, b) = (
        replica_at(&proxy.url, slow).await,
        replica_at(&proxy.url, |_| {}).await,
    );
    let mut flight = in_flight(&a, &b).await;

    proxy.stall(true);
    // Every call that needs Redis ends with UNAVAILABLE, saying Redis did
    // not answer, instead of waiting for it.
    let (mut getter, mut starter) = (b.tasks(), b.tasks());
    let getting = getter.get_task(pb::GetTaskRequest {
        task_id: flight.task_id.clone(),
    });
    let starting = starter.start_task(demo(3, 1, 0));
    let resumed = b.resume_stream(&flight.stream_id, 0);
    let (got, started, resumed) =
        tokio::join!(status_of(getting), status_of(starting), status_of(resumed));
    for status in [got, started, resumed] {
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(status.message().contains("Redis"), "{status:?}");
    }
    // Readers end rather than wait, and the generation that can no longer
    // be shared stops: nothing accumulates while Redis is stalled.
    let end = end_of(&mut flight.on_b).await;
    assert_eq!(end.code(), tonic::Code::Unavailable, "{end:?}");
    let end = end_of(&mut flight.on_a).await;
    assert_eq!(end.code(), tonic::Code::Unavailable, "{end:?}");
    a.until_no_generation("the generation stopped").await;

    // Redis answers again: both replicas serve, the task is still known,
    // and the chunks kept before the stall are still there.
    proxy.stall(false);
    let fetched = common::eventually("B reads the task again", || {
        let mut tasks = b.tasks();
        let id = flight.task_id.clone();
        async move {
            let request = pb::GetTaskRequest { task_id: id };
            tasks.get_task(request).await.ok()
        }
    })
    .await;
    assert_eq!(
        fetched.into_inner().task.expect("task").task_id,
        flight.task_id
    );
    let mut replay = b.resume_stream(&flight.stream_id, 0).await.expect("kept");
    let (replayed, end) = common::drain(&mut replay).await;
    assert!(replayed.len() >= 3, "the chunks read before the stall");
    assert_eq!(end.expect_err("failed").code(), tonic::Code::Unavailable);
    let task = start_task(&mut b.tasks(), demo(3, 1, 0)).await;
    let events = rest_of_watch(&mut watch(&mut a.tasks(), &task.task_id, 0).await).await;
    assert_eq!(events.last().map(state), Some(TaskState::Succeeded));
}

#[tokio::test]
async fn a_task_watcher_rides_out_a_redis_restart_without_losing_or_repeating_an_event() {
    let Some(mut redis) = persistent_redis().await else {
        return;
    };
    let (a, b) = (replica(&redis).await, replica(&redis).await);
    let task = start_task(&mut a.tasks(), demo(300, 10, 0)).await;
    let mut events = watch(&mut b.tasks(), &task.task_id, 0).await;
    let mut seen = Vec::new();
    while seen.len() < 5 {
        seen.push(next_event(&mut events).await.expect("event"));
    }

    // The watcher on B and the work on A both lose Redis for a moment.
    redis.restart().await;
    seen.extend(rest_of_watch(&mut events).await);

    // Every event once, in order: progress made while Redis was away may be
    // coalesced (as for any slow watcher), state changes never are.
    let sequences: Vec<u64> = seen.iter().map(|e| e.sequence).collect();
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "no event twice, none out of order: {sequences:?}"
    );
    let states: Vec<TaskState> = seen
        .iter()
        .map(state)
        .filter(|s| *s != TaskState::Running)
        .collect();
    assert_eq!(states, [TaskState::Pending, TaskState::Succeeded]);
    assert!(seen.iter().any(|e| state(e) == TaskState::Running));
    let end = seen.last().expect("terminal event");
    assert_eq!(end.step, 300);

    // And the history is the same through A.
    let fetched = get(&mut a.tasks(), &task.task_id).await;
    assert_eq!(TaskState::try_from(fetched.state), Ok(TaskState::Succeeded));
}
