//! Budgets that keep one client from taking everything: large prompts
//! counted off the async workers in a bounded pool, a connection's share of
//! the server's streams, and a small budget of demo tasks that leaves
//! ingestion its room.

mod common;

use std::time::Duration;

use agentstream::pb::{self, chat_service_client::ChatServiceClient};
use common::{TestServer, ask, connect, demo, drain, drain_ok, endless, eventually, text_of};
use futures::StreamExt;
use tonic::Code;

/// A prompt of 70 KB, well above the 8 KiB from which prompts are counted
/// in the pool (the bench measures the 1 MB ones).
fn large(tag: &str) -> pb::StreamChatRequest {
    pb::StreamChatRequest {
        max_tokens: 3,
        include_usage: true,
        ..ask(&format!(
            "{tag} {}",
            "many words of a long prompt ".repeat(2_500)
        ))
    }
}

/// Waits until `count` large prompts hold a place in the server's pool.
async fn in_pool(server: &TestServer, count: usize) {
    let offload = server.server.offload();
    eventually(&format!("{count} large prompts in the pool"), || {
        let now = offload.in_flight();
        async move { (now == count).then_some(()) }
    })
    .await;
}

// One runtime worker serves every call: were the prompts counted on it, the
// small call could not be served until they were done.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_small_call_is_served_while_large_prompts_are_counted() {
    let server = TestServer::start_with(|c| {
        c.max_offload_running = 2;
        c.max_offload_queued = 8;
    })
    .await;
    // The pool's jobs are held back until `paused` drops: the large prompts
    // are "being counted" for as long as the test needs.
    let paused = server.server.offload().pause().expect("not paused yet");
    let mut large_calls = Vec::new();
    for i in 0..8 {
        let mut client = server.chat();
        let response = client.stream_chat(large(&i.to_string())).await;
        large_calls.push(response.expect("a large call is accepted").into_inner());
    }
    // Each large call's work starts when its stream is first read.
    let readers: Vec<_> = large_calls
        .into_iter()
        .map(|mut stream| tokio::spawn(async move { drain(&mut stream).await }))
        .collect();
    in_pool(&server, 8).await;

    let small = drain_ok(&mut server.stream_chat(ask("quick one")).await).await;
    assert!(text_of(&small, 0).contains("quick one"));
    assert_eq!(
        server.server.offload().in_flight(),
        8,
        "the small call finished while every large prompt was still held"
    );

    drop(paused);
    for reader in readers {
        let (chunks, end) = reader.await.expect("reader");
        end.expect("the large call completes");
        let usage = chunks.iter().find_map(|c| c.usage).expect("usage chunk");
        assert!(usage.prompt_tokens > 10_000, "{usage:?}");
    }
    assert_eq!(server.server.offload().in_flight(), 0);
}

#[tokio::test]
async fn large_prompts_beyond_the_pool_are_refused_and_waiting_ones_keep_their_deadline() {
    let server = TestServer::start_with(|c| {
        c.max_offload_running = 1;
        c.max_offload_queued = 1;
    })
    .await;
    let paused = server.server.offload().pause().expect("not paused yet");
    let mut running = server.stream_chat(large("running")).await;
    let first = tokio::spawn(async move { drain(&mut running).await });
    in_pool(&server, 1).await;
    // The second waits for a turn, within its deadline.
    let mut waiting = tonic::Request::new(large("waiting"));
    waiting.set_timeout(Duration::from_millis(300));
    let mut waiting = server.stream_chat(waiting).await;
    let second = tokio::spawn(async move { drain(&mut waiting).await });
    in_pool(&server, 2).await;

    // The pool is full: refused at once, before any chunk (gRPC and HTTP).
    let refused = server
        .chat()
        .stream_chat(large("refused"))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let body = serde_json::json!({
        "stream": true,
        "messages": [{"role": "user", "content": "x".repeat(500_000)}],
    });
    let http = server.post_completion(&body, None).await;
    assert_eq!(http.status(), reqwest::StatusCode::TOO_MANY_REQUESTS);
    // Small calls are not affected.
    drain_ok(&mut server.stream_chat(ask("still fine")).await).await;

    // The waiting call ends at its deadline and gives its place back.
    let (_, end) = second.await.expect("second reader");
    assert_eq!(end.expect_err("deadline").code(), Code::DeadlineExceeded);
    in_pool(&server, 1).await;
    drop(paused);
    first
        .await
        .expect("first reader")
        .1
        .expect("the first completes");
    in_pool(&server, 0).await;
}

/// Opens an endless stream on `client` and waits for its first chunk.
async fn open_stream(
    client: &mut ChatServiceClient<tonic::transport::Channel>,
) -> Result<tonic::Streaming<pb::StreamChatResponse>, tonic::Status> {
    let mut stream = client.stream_chat(endless(1)).await?.into_inner();
    match stream.next().await {
        Some(Ok(_)) => Ok(stream),
        Some(Err(status)) => Err(status),
        None => panic!("an endless stream ended"),
    }
}

#[tokio::test]
async fn one_connection_cannot_take_every_stream() {
    // 8 streams server-wide: by default a connection gets a quarter.
    let server = TestServer::start_with(|c| c.max_active_streams = 8).await;
    let mut first = server.chat();
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(open_stream(&mut first).await.expect("within the share"));
    }
    let refused = open_stream(&mut first).await.expect_err("beyond the share");
    common::assert_status(&refused, Code::ResourceExhausted, "connection");

    // Another connection has its own share of what is left.
    let mut second = ChatServiceClient::new(connect(server.server.local_addr()).await);
    held.push(open_stream(&mut second).await.expect("another connection"));
    // A stream that ends gives its place back to its connection.
    held.remove(0);
    server
        .until("one stream fewer", |m| m.active_streams == 2)
        .await;
    held.push(open_stream(&mut first).await.expect("room again"));
}

#[tokio::test]
async fn demo_tasks_cannot_block_ingestion() {
    let server = TestServer::start_with(|c| {
        c.max_unfinished_tasks = 4;
        c.max_demo_tasks = 2;
    })
    .await;
    let mut tasks = server.tasks();
    let mut running = Vec::new();
    for _ in 0..2 {
        let task = tasks.start_task(demo(1_000, 1_000, 0)).await.expect("demo");
        running.push(task.into_inner().task.expect("task").task_id);
    }
    let refused = tasks
        .start_task(demo(1, 0, 0))
        .await
        .expect_err("demo budget");
    common::assert_status(&refused, Code::ResourceExhausted, "demo");

    // Ingestion still has its room, and completes.
    let document = pb::Document {
        id: "budget".into(),
        title: "Budgets".into(),
        text: "Demo tasks have a budget of their own.".into(),
        ..Default::default()
    };
    server.ingest(vec![document]).await;

    // A demo task that ends gives its place back.
    let cancel = pb::CancelTaskRequest {
        task_id: running.remove(0),
    };
    tasks.cancel_task(cancel).await.expect("cancel");
    tasks.start_task(demo(1, 0, 0)).await.expect("room again");
}
