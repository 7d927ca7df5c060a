//! TaskService through a real tonic client.

mod common;

use agentstream::pb::{self, TaskState, task_service_client::TaskServiceClient};
use common::{
    TestServer, bad_request_fields, demo, eventually, get_task, next_event, rest_of_watch,
    start_task, watch_task,
};
use tonic::{Code, Status, transport::Channel};

type Client = TaskServiceClient<Channel>;

async fn cancel(client: &mut Client, task_id: &str) -> pb::Task {
    let request = pb::CancelTaskRequest {
        task_id: task_id.into(),
    };
    let response = client.cancel_task(request).await.expect("CancelTask");
    response.into_inner().task.expect("task")
}

/// Every event of a task after `after_sequence`, until the watch ends.
async fn watch_all(client: &mut Client, task_id: &str, after_sequence: u64) -> Vec<pb::TaskEvent> {
    let mut stream = watch_task(client, task_id, after_sequence)
        .await
        .expect("WatchTask");
    rest_of_watch(&mut stream).await
}

fn state(event: &pb::TaskEvent) -> TaskState {
    TaskState::try_from(event.state).expect("a known state")
}

fn task_state(task: &pb::Task) -> TaskState {
    TaskState::try_from(task.state).expect("a known state")
}

/// The states of `events` with repeats collapsed.
fn states(events: &[pb::TaskEvent]) -> Vec<TaskState> {
    let mut states: Vec<_> = events.iter().map(state).collect();
    states.dedup();
    states
}

fn sequences(events: &[pb::TaskEvent]) -> Vec<u64> {
    events.iter().map(|e| e.sequence).collect()
}

#[tokio::test]
async fn events_arrive_in_order_with_gapless_sequences() {
    let server = TestServer::start().await;
    let mut client = server.tasks();
    let task = start_task(&mut client, demo(5, 1, 0)).await;
    assert_eq!(task.kind, "demo");
    assert!(task.task_id.starts_with("task-"), "{}", task.task_id);

    let events = watch_all(&mut client, &task.task_id, 0).await;
    // PENDING, RUNNING, progress 0..=5, SUCCEEDED.
    assert_eq!(sequences(&events), (1..=9).collect::<Vec<_>>());
    assert_eq!(
        states(&events),
        [TaskState::Pending, TaskState::Running, TaskState::Succeeded]
    );
    assert!(events.iter().all(|e| e.task_id == task.task_id));
    assert!(events.windows(2).all(|w| w[0].step <= w[1].step));
    let times: Vec<_> = events
        .iter()
        .map(|e| e.time.map(|t| (t.seconds, t.nanos)).expect("time"))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    let last = events.last().expect("terminal event");
    assert_eq!((last.step, last.total_steps, last.percent), (5, 5, 100.0));

    let done = get_task(&mut client, &task.task_id).await.expect("GetTask");
    assert_eq!(task_state(&done), TaskState::Succeeded);
    assert_eq!(done.update_time, last.time);
}

#[tokio::test]
async fn concurrent_watchers_see_identical_events() {
    let server = TestServer::start().await;
    let mut client = server.tasks();
    let task = start_task(&mut client, demo(20, 5, 0)).await;
    let watchers: Vec<_> = (0..5)
        .map(|_| {
            let mut client = server.tasks();
            let id = task.task_id.clone();
            tokio::spawn(async move { watch_all(&mut client, &id, 0).await })
        })
        .collect();
    let mut seen = Vec::new();
    for watcher in watchers {
        seen.push(watcher.await.expect("watcher"));
    }
    assert_eq!(seen[0].len(), 24);
    assert!(seen.iter().all(|events| *events == seen[0]));
}

#[tokio::test]
async fn a_watcher_that_reconnects_with_its_last_sequence_misses_nothing() {
    let server = TestServer::start().await;
    let mut client = server.tasks();
    let task = start_task(&mut client, demo(30, 5, 0)).await;

    // Watch in three connections, each dropped after a few events.
    let mut received = Vec::new();
    for _ in 0..2 {
        let after = received.last().map_or(0, |e: &pb::TaskEvent| e.sequence);
        let mut stream = watch_task(&mut client, &task.task_id, after)
            .await
            .expect("WatchTask");
        for _ in 0..10 {
            received.push(next_event(&mut stream).await.expect("an event"));
        }
    }
    let after = received.last().map_or(0, |e| e.sequence);
    received.extend(watch_all(&mut client, &task.task_id, after).await);

    let everything = watch_all(&mut client, &task.task_id, 0).await;
    assert_eq!(sequences(&received), (1..=34).collect::<Vec<_>>());
    assert_eq!(received, everything);
}

#[tokio::test]
async fn a_watcher_that_never_reads_does_not_delay_the_task_or_other_watchers() {
    let server = TestServer::start_with(|config| {
        config.max_task_events = 50;
        config.max_finished_task_events = 20;
    })
    .await;
    let mut client = server.tasks();
    let task = start_task(&mut client, demo(500, 2, 0)).await;

    // A client with tiny HTTP/2 windows: once they are full, the server can
    // send it nothing more until it reads.
    let slow_channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.server.local_addr()))
            .expect("endpoint")
            .initial_stream_window_size(1024)
            .initial_connection_window_size(1024)
            .connect()
            .await
            .expect("connects");
    let mut slow_client = TaskServiceClient::new(slow_channel);
    let mut slow = watch_task(&mut slow_client, &task.task_id, 0)
        .await
        .expect("WatchTask");
    let first = next_event(&mut slow).await.expect("first event");
    assert_eq!(first.sequence, 1);

    // Another watcher follows the whole task while the slow one reads nothing.
    let fast = watch_all(&mut client, &task.task_id, 0).await;
    let terminal = fast.last().expect("terminal event").clone();
    assert_eq!(state(&terminal), TaskState::Succeeded);
    assert_eq!(terminal.sequence, 504);
    let done = get_task(&mut client, &task.task_id).await.expect("GetTask");
    assert_eq!(task_state(&done), TaskState::Succeeded);

    // The task finished while the slow watcher still had events to read.
    let rest = rest_of_watch(&mut slow).await;
    let next = rest.first().expect("unread events");
    assert!(next.sequence < terminal.sequence, "{next:?}");
    // It then got a coalesced but ordered view, with every state change.
    let mut seen = vec![first];
    seen.extend(rest);
    assert!(seen.windows(2).all(|w| w[0].sequence < w[1].sequence));
    assert_eq!(
        states(&seen),
        [TaskState::Pending, TaskState::Running, TaskState::Succeeded]
    );
    assert_eq!(seen.last(), Some(&terminal));
    assert!(
        seen.len() < fast.len(),
        "progress was coalesced for the slow watcher: {} of {} events",
        seen.len(),
        fast.len()
    );
}

#[tokio::test]
async fn a_task_outlives_its_watchers() {
    let server = TestServer::start().await;
    let mut client = server.tasks();
    let task = start_task(&mut client, demo(10, 5, 0)).await;
    let mut stream = watch_task(&mut client, &task.task_id, 0)
        .await
        .expect("WatchTask");
    next_event(&mut stream).await.expect("an event");
    drop(stream);
    eventually("the unwatched task succeeds", || {
        let mut client = client.clone();
        let id = task.task_id.clone();
        async move {
            let task = get_task(&mut client, &id).await.ok()?;
            (task_state(&task) == TaskState::Succeeded).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn cancelling_mid_way_ends_the_task_and_its_watchers() {
    let server = TestServer::start().await;
    let mut client = server.tasks();
    let task = start_task(&mut client, demo(1000, 10, 0)).await;
    let mut stream = watch_task(&mut client, &task.task_id, 0)
        .await
        .expect("WatchTask");
    let mut events = Vec::new();
    while events.last().is_none_or(|e: &pb::TaskEvent| e.step < 3) {
        events.push(next_event(&mut stream).await.expect("an event"));
    }

    let cancelled = cancel(&mut client, &task.task_id).await;
    assert_eq!(task_state(&cancelled), TaskState::Cancelled);
    assert!(cancelled.step < 1000, "{cancelled:?}");
    assert_eq!(cancelled.error, "");

    events.extend(rest_of_watch(&mut stream).await);
    assert_eq!(
        states(&events),
        [TaskState::Pending, TaskState::Running, TaskState::Cancelled]
    );
    let last = events.last().expect("terminal event");
    assert_eq!(last.time, cancelled.update_time);

    // Idempotent, and the task stays as it was cancelled.
    assert_eq!(cancel(&mut client, &task.task_id).await, cancelled);
    assert_eq!(
        get_task(&mut client, &task.task_id).await.expect("GetTask"),
        cancelled
    );
}

#[tokio::test]
async fn cancelling_a_finished_task_returns_it_unchanged() {
    let server = TestServer::start().await;
    let mut client = server.tasks();
    let task = start_task(&mut client, demo(2, 0, 0)).await;
    watch_all(&mut client, &task.task_id, 0).await;
    let done = get_task(&mut client, &task.task_id).await.expect("GetTask");
    assert_eq!(task_state(&done), TaskState::Succeeded);
    assert_eq!(cancel(&mut client, &task.task_id).await, done);
}

#[tokio::test]
async fn a_task_fails_at_fail_at_step_with_the_error() {
    let server = TestServer::start().await;
    let mut client = server.tasks();
    let task = start_task(&mut client, demo(5, 1, 3)).await;
    let events = watch_all(&mut client, &task.task_id, 0).await;
    assert_eq!(
        states(&events),
        [TaskState::Pending, TaskState::Running, TaskState::Failed]
    );
    let failed = events.last().expect("terminal event");
    assert!(failed.error.contains("step 3"), "{}", failed.error);
    assert_eq!(failed.step, 2, "the last step done");
    assert!(events.iter().rev().skip(1).all(|e| e.error.is_empty()));

    let task = get_task(&mut client, &task.task_id).await.expect("GetTask");
    assert_eq!(task_state(&task), TaskState::Failed);
    assert_eq!(task.error, failed.error);
}

#[tokio::test]
async fn watching_a_finished_task_replays_and_ends() {
    let server = TestServer::start().await;
    let mut client = server.tasks();
    let task = start_task(&mut client, demo(3, 0, 0)).await;
    let live = watch_all(&mut client, &task.task_id, 0).await;
    let last = live.last().expect("terminal event").sequence;

    assert_eq!(watch_all(&mut client, &task.task_id, 0).await, live);
    assert_eq!(watch_all(&mut client, &task.task_id, 4).await, live[4..]);
    assert!(watch_all(&mut client, &task.task_id, last).await.is_empty());
    let beyond = watch_task(&mut client, &task.task_id, last + 1)
        .await
        .expect_err("refused");
    assert_eq!(bad_request_fields(&beyond), ["after_sequence"]);
}

#[tokio::test]
async fn a_long_finished_task_keeps_every_state_change() {
    let server = TestServer::start_with(|config| config.max_finished_task_events = 10).await;
    let mut client = server.tasks();
    let task = start_task(&mut client, demo(200, 0, 0)).await;
    let live = watch_all(&mut client, &task.task_id, 0).await;
    let replay = watch_all(&mut client, &task.task_id, 0).await;
    assert_eq!(replay.len(), 10);
    assert_eq!(
        states(&replay),
        [TaskState::Pending, TaskState::Running, TaskState::Succeeded]
    );
    assert_eq!(replay.last(), live.last());
    // The retained progress is the newest.
    assert_eq!(replay[replay.len() - 2].step, 200);
}

#[tokio::test]
async fn every_limit_is_checked_and_named() {
    let server = TestServer::start().await;
    let mut client = server.tasks();
    let start_cases = [
        (demo(0, 0, 0), vec!["demo.steps"]),
        (demo(10_001, 0, 0), vec!["demo.steps"]),
        (demo(1, 60_001, 0), vec!["demo.step_delay_ms"]),
        (demo(5, 0, 6), vec!["demo.fail_at_step"]),
        (
            demo(0, 70_000, 1),
            vec!["demo.steps", "demo.step_delay_ms", "demo.fail_at_step"],
        ),
        (pb::StartTaskRequest { spec: None }, vec!["spec"]),
    ];
    for (request, fields) in start_cases {
        let status = client.start_task(request).await.expect_err("refused");
        assert_eq!(bad_request_fields(&status), fields);
    }
    // The limits themselves are accepted.
    let edge = start_task(&mut client, demo(10_000, 60_000, 10_000)).await;
    cancel(&mut client, &edge.task_id).await;

    for task_id in [String::new(), "x".repeat(129)] {
        let status = get_task(&mut client, &task_id).await.expect_err("refused");
        assert_eq!(bad_request_fields(&status), ["task_id"]);
        let status = watch_task(&mut client, &task_id, 0)
            .await
            .expect_err("refused");
        assert_eq!(bad_request_fields(&status), ["task_id"]);
        let request = pb::CancelTaskRequest { task_id };
        let status = client.cancel_task(request).await.expect_err("refused");
        assert_eq!(bad_request_fields(&status), ["task_id"]);
    }

    let list_cases = [(1001, ""), (10, "garbage"), (10, "before-x")];
    for (page_size, page_token) in list_cases {
        let request = pb::ListTasksRequest {
            page_size,
            page_token: page_token.into(),
        };
        let status = client.list_tasks(request).await.expect_err("refused");
        let expected = if page_size > 1000 {
            "page_size"
        } else {
            "page_token"
        };
        assert_eq!(bad_request_fields(&status), [expected]);
    }
}

#[tokio::test]
async fn unknown_task_ids_are_not_found() {
    let server = TestServer::start().await;
    let mut client = server.tasks();
    let unknown = "task-00000000000000000000000000000000";
    assert_eq!(
        get_task(&mut client, unknown).await.expect_err("").code(),
        Code::NotFound
    );
    let status = watch_task(&mut client, unknown, 0).await.expect_err("");
    assert_eq!(status.code(), Code::NotFound);
    let request = pb::CancelTaskRequest {
        task_id: unknown.into(),
    };
    let status = client.cancel_task(request).await.expect_err("");
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn list_pages_newest_first() {
    let server = TestServer::start().await;
    let mut client = server.tasks();
    let mut started = Vec::new();
    for _ in 0..5 {
        started.push(start_task(&mut client, demo(1, 0, 0)).await.task_id);
    }
    started.reverse();

    let mut listed = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let request = pb::ListTasksRequest {
            page_size: 2,
            page_token,
        };
        let page = client
            .list_tasks(request)
            .await
            .expect("ListTasks")
            .into_inner();
        pages += 1;
        assert!(page.tasks.len() <= 2);
        listed.extend(page.tasks.into_iter().map(|t| t.task_id));
        if page.next_page_token.is_empty() {
            break;
        }
        if pages == 1 {
            // A task started meanwhile does not shift the following pages.
            start_task(&mut client, demo(1, 0, 0)).await;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(listed, started);

    let request = pb::ListTasksRequest::default();
    let all = client
        .list_tasks(request)
        .await
        .expect("ListTasks")
        .into_inner();
    assert_eq!(all.tasks.len(), 6);
    assert!(all.next_page_token.is_empty());
}

/// One ListTasks page.
async fn list_page(
    client: &mut Client,
    page_size: u32,
    page_token: &str,
) -> Result<pb::ListTasksResponse, Status> {
    let request = pb::ListTasksRequest {
        page_size,
        page_token: page_token.into(),
    };
    client
        .list_tasks(request)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn forged_page_tokens_are_refused() {
    let server = TestServer::start().await;
    let mut client = server.tasks();
    for _ in 0..3 {
        start_task(&mut client, demo(1, 0, 0)).await;
    }
    let first = list_page(&mut client, 1, "").await.expect("first page");
    let token = first.next_page_token;
    assert!(!token.is_empty());
    let second = list_page(&mut client, 1, &token)
        .await
        .expect("a real token works");
    assert_eq!(second.tasks.len(), 1);
    assert_ne!(second.tasks[0].task_id, first.tasks[0].task_id);

    // A token the server did not issue: a cursor written by hand (the
    // format tokens used to have), any edited character, another server's.
    let other = TestServer::start().await;
    let mut other_client = other.tasks();
    for _ in 0..2 {
        start_task(&mut other_client, demo(1, 0, 0)).await;
    }
    let foreign = list_page(&mut other_client, 1, "")
        .await
        .expect("page")
        .next_page_token;
    let mut forged = vec![
        "before-18446744073709551615".to_owned(),
        "before-2".to_owned(),
        foreign,
    ];
    for i in [token.len() / 2, token.len() - 1] {
        let mut edited = token.clone().into_bytes();
        edited[i] = if edited[i] == b'0' { b'1' } else { b'0' };
        forged.push(String::from_utf8(edited).expect("ascii"));
    }
    for bad in forged {
        let status = list_page(&mut client, 1, &bad).await.expect_err(&bad);
        assert_eq!(bad_request_fields(&status), ["page_token"], "{bad}");
    }
}

#[tokio::test]
async fn finished_tasks_beyond_the_retention_count_are_forgotten() {
    let server = TestServer::start_with(|config| config.max_finished_tasks = 1).await;
    let mut client = server.tasks();
    let first = start_task(&mut client, demo(1, 0, 0)).await;
    watch_all(&mut client, &first.task_id, 0).await;
    let second = start_task(&mut client, demo(1, 0, 0)).await;
    watch_all(&mut client, &second.task_id, 0).await;
    let status = get_task(&mut client, &first.task_id)
        .await
        .expect_err("forgotten");
    assert_eq!(status.code(), Code::NotFound);
    assert!(get_task(&mut client, &second.task_id).await.is_ok());
}

#[tokio::test]
async fn starting_beyond_the_unfinished_limit_is_resource_exhausted() {
    let server = TestServer::start_with(|config| config.max_unfinished_tasks = 1).await;
    let mut client = server.tasks();
    let running = start_task(&mut client, demo(100, 1_000, 0)).await;
    let status = client.start_task(demo(1, 0, 0)).await.expect_err("refused");
    assert_eq!(status.code(), Code::ResourceExhausted);
    cancel(&mut client, &running.task_id).await;
    start_task(&mut client, demo(1, 0, 0)).await;
}

#[tokio::test]
async fn health_reports_task_service_serving() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel.clone());
    let request = HealthCheckRequest {
        service: "agentstream.v1.TaskService".into(),
    };
    let response = health.check(request).await.expect("Check").into_inner();
    assert_eq!(response.status(), ServingStatus::Serving);
}
