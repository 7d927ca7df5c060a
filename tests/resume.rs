//! Resumable chat streams through a real tonic client: detach, resume
//! without missing or repeating a chunk, the final usage on resume,
//! CancelStream, unknown ids, the time to live and the limits.

mod common;

use std::time::Duration;

use agentstream::pb::{StreamChatRequest, StreamChatResponse};
use common::{TestServer, drain, drain_ok, resumable, sequences, take, text_of};
use futures::StreamExt;
use tonic::Code;

/// The same request answered straight, not resumable, with its usage: the
/// chunks a resumable stream must match.
async fn reference(server: &TestServer, mut request: StreamChatRequest) -> Vec<StreamChatResponse> {
    request.resumable = false;
    request.include_usage = true;
    drain_ok(&mut server.stream_chat(request).await).await
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_resumes_without_missing_or_repeating_a_chunk() {
    let server = TestServer::start_with(|c| c.mock_token_delay = Duration::from_millis(10)).await;
    let request = resumable(120);
    let mut first = server.stream_chat(request.clone()).await;
    let seen = take(&mut first, 5).await;
    let stream_id = seen[0].stream_id.clone();
    assert!(stream_id.starts_with("stream-"), "{stream_id}");
    assert!(seen.iter().all(|c| c.stream_id == stream_id));
    assert_eq!(sequences(&seen), [1, 2, 3, 4, 5]);
    drop(first);

    // Still generating while nobody reads: resume at once, mid-stream.
    let mut resumed = server.resume_stream(&stream_id, 5).await.expect("resumes");
    let rest = drain_ok(&mut resumed).await;
    assert_eq!(
        sequences(&rest),
        (6..6 + rest.len() as u64).collect::<Vec<_>>()
    );
    assert!(
        rest.iter()
            .all(|c| c.stream_id == stream_id && c.id == seen[0].id)
    );
    let whole: Vec<_> = seen.into_iter().chain(rest).collect();
    let straight = reference(&server, request).await;
    assert_eq!(whole.len(), straight.len());
    assert_eq!(text_of(&whole, 0), text_of(&straight, 0));
    let usage = whole.last().and_then(|c| c.usage).expect("ends with usage");
    assert_eq!(usage.completion_tokens, 120);
}

#[tokio::test]
async fn a_stream_nobody_reads_runs_to_its_end_and_a_resume_gets_the_tail_and_usage() {
    let server = TestServer::start_with(|c| c.mock_token_delay = Duration::from_millis(2)).await;
    // include_usage is not asked for: a resumable stream keeps it anyway.
    let request = resumable(60);
    let mut first = server.stream_chat(request.clone()).await;
    let seen = take(&mut first, 3).await;
    let stream_id = seen[0].stream_id.clone();
    drop(first);
    server
        .until_no_generation("the detached generation finished")
        .await;

    let straight = reference(&server, request).await;
    let last = straight.len() as u64;
    let tail = drain_ok(&mut server.resume_stream(&stream_id, 3).await.expect("resumes")).await;
    assert_eq!(
        sequences(&tail),
        (4..=last).collect::<Vec<_>>(),
        "the whole tail, once"
    );
    let usage = tail.last().and_then(|c| c.usage).expect("usage last");
    assert_eq!(usage.completion_tokens, 60);
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );
    let whole: Vec<_> = seen.into_iter().chain(tail).collect();
    assert_eq!(text_of(&whole, 0), text_of(&straight, 0));
    assert_eq!(
        whole.last().and_then(|c| c.usage),
        straight.last().and_then(|c| c.usage)
    );

    // From the start, and after the last chunk (nothing, then OK).
    let all = drain_ok(&mut server.resume_stream(&stream_id, 0).await.expect("resumes")).await;
    assert_eq!(sequences(&all), (1..=last).collect::<Vec<_>>());
    let none = drain_ok(
        &mut server
            .resume_stream(&stream_id, last)
            .await
            .expect("resumes"),
    )
    .await;
    assert!(none.is_empty());
    let beyond = server
        .resume_stream(&stream_id, last + 1)
        .await
        .expect_err("beyond");
    assert_eq!(beyond.code(), Code::OutOfRange, "{beyond:?}");
}

#[tokio::test]
async fn several_readers_follow_one_generation() {
    let server = TestServer::start_with(|c| c.mock_token_delay = Duration::from_millis(5)).await;
    let mut first = server.stream_chat(resumable(40)).await;
    let head = take(&mut first, 2).await;
    let mut second = server
        .resume_stream(&head[0].stream_id, 0)
        .await
        .expect("resumes");
    let (a, b) = tokio::join!(drain_ok(&mut first), drain_ok(&mut second));
    let last = b.len() as u64;
    assert_eq!(sequences(&b), (1..=last).collect::<Vec<_>>());
    assert_eq!(sequences(&a), (3..=last).collect::<Vec<_>>());
    assert_eq!(b[..2], head[..]);
    assert_eq!(b[2..], a[..]);
}

#[tokio::test]
async fn cancel_stream_stops_the_generation_and_is_idempotent() {
    let server = TestServer::start_with(|c| c.mock_token_delay = Duration::from_millis(20)).await;
    let mut reader = server.stream_chat(common::endless_resumable(2)).await;
    let head = take(&mut reader, 3).await;
    let stream_id = head[0].stream_id.clone();
    assert_eq!(server.metrics().live_generations, 2);

    server.cancel_stream(&stream_id).await.expect("cancelled");
    // CancelStream answers once the generation has stopped.
    assert_eq!(server.metrics().live_generations, 0);
    let (rest, end) = drain(&mut reader).await;
    let status = end.expect_err("the reader is told");
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    server
        .until("the reader's call ended", |m| m.active_streams == 0)
        .await;
    server.assert_no_token_produced_meanwhile().await;

    server
        .cancel_stream(&stream_id)
        .await
        .expect("again: idempotent");
    // What was made stays kept: a resume replays it, then says CANCELLED.
    let (replayed, end) =
        drain(&mut server.resume_stream(&stream_id, 0).await.expect("kept")).await;
    assert_eq!(end.expect_err("cancelled").code(), Code::Cancelled);
    assert_eq!(replayed.len(), head.len() + rest.len());
    assert_eq!(replayed[..3], head[..]);
}

#[tokio::test]
async fn unknown_ids_are_not_found_and_empty_ones_invalid() {
    let server = TestServer::start().await;
    for id in ["stream-00000000000000000000000000000000", "s-1"] {
        let status = server.resume_stream(id, 0).await.expect_err("unknown");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        let status = server.cancel_stream(id).await.expect_err("unknown");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
    let status = server.resume_stream("", 0).await.expect_err("empty");
    assert_eq!(
        common::bad_request_fields(&status),
        ["stream_id"],
        "{status:?}"
    );
    let status = server
        .cancel_stream(&"x".repeat(10_000))
        .await
        .expect_err("huge");
    assert_eq!(common::bad_request_fields(&status), ["stream_id"]);
}

#[tokio::test]
async fn a_stream_without_readers_expires_after_its_ttl_and_not_while_read() {
    let ttl = Duration::from_millis(300);
    let server = TestServer::start_with(|c| {
        c.mock_token_delay = Duration::from_millis(10);
        c.resumable_ttl = ttl;
    })
    .await;
    let request = common::endless_resumable(1);
    // Read for three times the TTL: a stream being read never expires.
    let mut reader = server.stream_chat(request.clone()).await;
    let started = tokio::time::Instant::now();
    let mut stream_id = String::new();
    while started.elapsed() < 3 * ttl {
        let chunk = reader.next().await.expect("chunk").expect("still kept");
        stream_id = chunk.stream_id;
    }
    drop(reader);
    // Nobody comes back: the generation stops, then the id is forgotten.
    server
        .until_no_generation("the generation stopped at the TTL")
        .await;
    common::eventually("the stream is forgotten", || async {
        match server.resume_stream(&stream_id, 0).await {
            Err(status) if status.code() == Code::NotFound => Some(()),
            _ => None,
        }
    })
    .await;
    server.assert_no_token_produced_meanwhile().await;
}

#[tokio::test]
async fn beyond_the_stream_limit_new_resumable_requests_are_refused() {
    let server = TestServer::start_with(|c| {
        c.mock_token_delay = Duration::from_millis(20);
        c.max_resumable_streams = 2;
    })
    .await;
    let request = common::endless_resumable(1);
    let mut a = server.stream_chat(request.clone()).await;
    let a_id = take(&mut a, 1).await[0].stream_id.clone();
    let mut b = server.stream_chat(request.clone()).await;
    take(&mut b, 1).await;
    let status = server
        .chat()
        .stream_chat(request.clone())
        .await
        .expect_err("at the limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // Non-resumable requests are not affected.
    assert!(
        !drain_ok(&mut server.stream_chat(common::ask("still fine")).await)
            .await
            .is_empty()
    );

    // A cancelled stream nobody reads makes room for a new one.
    server.cancel_stream(&a_id).await.expect("cancelled");
    let (_, end) = drain(&mut a).await;
    assert_eq!(end.expect_err("cancelled").code(), Code::Cancelled);
    let mut c = server.stream_chat(request).await;
    assert!(!take(&mut c, 1).await[0].stream_id.is_empty());
    let status = server.resume_stream(&a_id, 0).await.expect_err("evicted");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test]
async fn a_reader_behind_the_replay_buffer_gets_out_of_range() {
    let server = TestServer::start_with(|c| {
        c.mock_token_delay = Duration::ZERO;
        // About ten chunks.
        c.resumable_buffer_bytes = 1_500;
    })
    .await;
    // The id is in the response headers too: leave before any chunk.
    let first = server
        .chat()
        .stream_chat(resumable(100))
        .await
        .expect("call");
    let stream_id = first
        .metadata()
        .get("x-agentstream-stream-id")
        .and_then(|v| v.to_str().ok())
        .expect("the stream id header")
        .to_owned();
    drop(first);
    server.until_no_generation("generated").await;
    let last = reference(&server, resumable(100)).await.len() as u64;
    let status = server
        .resume_stream(&stream_id, 0)
        .await
        .expect_err("dropped");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    // The newest chunks, usage last, are still there.
    let tail = drain_ok(
        &mut server
            .resume_stream(&stream_id, last - 4)
            .await
            .expect("kept"),
    )
    .await;
    assert_eq!(sequences(&tail), (last - 3..=last).collect::<Vec<_>>());
    assert_eq!(common::completion_tokens(&tail), Some(100));
}

#[tokio::test]
async fn shutdown_stops_detached_generations() {
    let server = TestServer::start_with(|c| {
        c.mock_token_delay = Duration::from_millis(20);
        c.shutdown_grace = Duration::from_millis(50);
    })
    .await;
    let mut reader = server.stream_chat(common::endless_resumable(1)).await;
    take(&mut reader, 1).await;
    drop(reader);
    assert_eq!(server.metrics().live_generations, 1);
    let metrics = server.metrics.clone();
    server.shutdown.request();
    server.server.wait().await.expect("stops");
    common::eventually("the detached generation stopped", || {
        let live = metrics.snapshot().live_generations;
        async move { (live == 0).then_some(()) }
    })
    .await;
}
