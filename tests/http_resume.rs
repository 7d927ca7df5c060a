//! Resumable chat streams over HTTP, through a real HTTP client: the
//! stream id header and SSE ids, resuming with `Last-Event-ID` or
//! `?after_sequence=` without a missing or repeated chunk, the final usage
//! on resume, the cancel route, unknown ids, the TTL and the limit. One
//! core: a stream started over HTTP resumes over gRPC.

mod common;

use std::time::Duration;

use agentstream::pb;
use common::{
    TestServer, http_client, http_url,
    sse::{Event, Events},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const STREAM_ID: &str = "x-agentstream-stream-id";

/// `tokens` synthetic tokens as a streamed completion, resumable or not.
fn synthetic(tokens: u32, resumable: bool) -> Value {
    json!({"model": "synthetic", "max_tokens": tokens, "stream": true, "resumable": resumable,
           "messages": [{"role": "user", "content": "go"}]})
}

async fn post(server: &TestServer, body: &Value) -> reqwest::Response {
    server.post("/v1/chat/completions", body).await
}

async fn get_stream(
    server: &TestServer,
    stream_id: &str,
    last_event_id: Option<&str>,
    query: &str,
) -> reqwest::Response {
    let mut request = http_client().get(http_url(
        server,
        &format!("/v1/chat/streams/{stream_id}{query}"),
    ));
    if let Some(last) = last_event_id {
        request = request.header("last-event-id", last);
    }
    request.send().await.expect("request")
}

async fn cancel(server: &TestServer, stream_id: &str) -> reqwest::Response {
    server
        .post_empty(&format!("/v1/chat/streams/{stream_id}/cancel"))
        .await
}

fn stream_id_of(response: &reqwest::Response) -> String {
    response.headers()[STREAM_ID]
        .to_str()
        .expect("ASCII")
        .to_owned()
}

/// The concatenated content of choice 0 over chunk events.
fn text_of(events: &[Event]) -> String {
    events
        .iter()
        .filter(|e| e.data != "[DONE]")
        .flat_map(|e| e.json()["choices"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["index"] == 0)
        .filter_map(|c| c["delta"]["content"].as_str().map(str::to_owned))
        .collect()
}

fn ids(events: &[Event]) -> Vec<u64> {
    events.iter().filter_map(|e| e.id).collect()
}

async fn error_of(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.expect("error JSON");
    body["error"].clone()
}

#[tokio::test]
async fn a_client_that_leaves_resumes_with_last_event_id_without_missing_or_repeating() {
    let server = TestServer::start_with(|c| c.mock_token_delay = Duration::from_millis(10)).await;
    let response = post(&server, &synthetic(80, true)).await;
    let stream_id = stream_id_of(&response);
    assert!(stream_id.starts_with("stream-"), "{stream_id}");
    let mut first = Events::new(response);
    let seen = first.take(4).await;
    assert_eq!(ids(&seen), [1, 2, 3, 4]);
    drop(first);

    let response = get_stream(&server, &stream_id, Some("4"), "").await;
    assert_eq!(stream_id_of(&response), stream_id);
    let rest = Events::new(response).rest().await;
    let (done, chunks) = rest.split_last().expect("events");
    assert_eq!(done.data, "[DONE]");
    assert_eq!(done.id, None);
    assert_eq!(
        ids(chunks),
        (5..5 + chunks.len() as u64).collect::<Vec<_>>()
    );
    let whole: Vec<_> = seen.iter().chain(chunks).cloned().collect();
    let straight = Events::new(post(&server, &synthetic(80, false)).await)
        .rest()
        .await;
    assert_eq!(text_of(&whole), text_of(&straight));
    let usage = whole.last().expect("chunks").json()["usage"].clone();
    assert_eq!(usage["completion_tokens"], 80, "usage last: {usage}");
}

#[tokio::test]
async fn after_the_end_a_resume_returns_the_tail_and_usage_over_http_and_grpc() {
    let server = TestServer::start_with(|c| c.mock_token_delay = Duration::from_millis(2)).await;
    let response = post(&server, &synthetic(30, true)).await;
    let stream_id = stream_id_of(&response);
    drop(response);
    server
        .until_no_generation("the detached generation finished")
        .await;

    let all = Events::new(get_stream(&server, &stream_id, None, "?after_sequence=0").await)
        .rest()
        .await;
    let last = all.len() as u64 - 1; // all but [DONE]
    assert_eq!(ids(&all), (1..=last).collect::<Vec<_>>());
    let tail = Events::new(
        get_stream(
            &server,
            &stream_id,
            None,
            &format!("?after_sequence={}", last - 2),
        )
        .await,
    )
    .rest()
    .await;
    assert_eq!(ids(&tail), [last - 1, last]);
    assert_eq!(tail[1].json()["usage"]["completion_tokens"], 30);
    assert_eq!(tail[2].data, "[DONE]");
    // Last-Event-ID wins over the query, as for a reconnecting EventSource.
    let none = Events::new(
        get_stream(
            &server,
            &stream_id,
            Some(&last.to_string()),
            "?after_sequence=1",
        )
        .await,
    )
    .rest()
    .await;
    assert_eq!(none, [Event::unnamed(None, "[DONE]")]);

    // The same stream over gRPC: one core.
    let mut grpc = server
        .chat()
        .resume_stream(pb::ResumeStreamRequest {
            stream_id: stream_id.clone(),
            after_sequence: last - 1,
        })
        .await
        .expect("resumes over gRPC")
        .into_inner();
    let chunks = common::drain_ok(&mut grpc).await;
    assert_eq!(chunks.len(), 1);
    assert_eq!(
        (chunks[0].sequence, chunks[0].stream_id.as_str()),
        (last, stream_id.as_str())
    );
    assert_eq!(chunks[0].usage.map(|u| u.completion_tokens), Some(30));
}

#[tokio::test]
async fn the_cancel_route_stops_the_generation_and_ends_readers_with_an_error_event() {
    let server = TestServer::start_with(|c| c.mock_token_delay = Duration::from_millis(20)).await;
    let mut body = synthetic(200_000, true);
    body["n"] = json!(2);
    let response = post(&server, &body).await;
    let stream_id = stream_id_of(&response);
    let mut reader = Events::new(response);
    reader.take(3).await;
    assert_eq!(server.metrics().live_generations, 2);

    let response = cancel(&server, &stream_id).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.expect("JSON"), json!({}));
    assert_eq!(
        server.metrics().live_generations,
        0,
        "stopped when answered"
    );
    let rest = reader.rest().await;
    let last = rest.last().expect("an error event");
    assert_eq!(last.id, None);
    assert_eq!(last.json()["error"]["code"], "cancelled", "{last:?}");
    assert!(rest.iter().all(|e| e.data != "[DONE]"));
    server.assert_no_token_produced_meanwhile().await;

    assert_eq!(
        cancel(&server, &stream_id).await.status(),
        StatusCode::OK,
        "idempotent"
    );
}

#[tokio::test]
async fn unknown_streams_are_404_and_bad_resume_points_400() {
    let server = TestServer::start_with(|c| c.mock_token_delay = Duration::ZERO).await;
    let error = error_of(
        get_stream(&server, "stream-nope", None, "").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(error["code"], "not_found", "{error}");
    let error = error_of(cancel(&server, "stream-nope").await, StatusCode::NOT_FOUND).await;
    assert_eq!(error["type"], "invalid_request_error", "{error}");

    let response = post(&server, &synthetic(5, true)).await;
    let stream_id = stream_id_of(&response);
    Events::new(response).rest().await;
    let error = error_of(
        get_stream(&server, &stream_id, Some("soon"), "").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(error["param"], "after_sequence", "{error}");
    let error = error_of(
        get_stream(&server, &stream_id, None, "?after_sequence=999").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(
        (error["param"].as_str(), error["code"].as_str()),
        (Some("after_sequence"), Some("out_of_range")),
        "{error}"
    );

    let mut whole = synthetic(5, true);
    whole["stream"] = json!(false);
    let error = error_of(post(&server, &whole).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(error["param"], "resumable", "{error}");
}

#[tokio::test]
async fn streams_expire_after_the_ttl_and_their_number_is_bounded() {
    let server = TestServer::start_with(|c| {
        c.mock_token_delay = Duration::from_millis(20);
        c.resumable_ttl = Duration::from_millis(200);
        c.max_resumable_streams = 1;
    })
    .await;
    let response = post(&server, &synthetic(200_000, true)).await;
    let stream_id = stream_id_of(&response);
    let mut reader = Events::new(response);
    reader.take(1).await;
    let refused = post(&server, &synthetic(10, true)).await;
    let error = error_of(refused, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(error["code"], "rate_limit_exceeded", "{error}");

    drop(reader);
    server
        .until_no_generation("the generation stopped at the TTL")
        .await;
    common::eventually("the stream is forgotten", || async {
        let status = get_stream(&server, &stream_id, None, "").await.status();
        (status == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    // Its place is free again.
    let response = post(&server, &synthetic(3, true)).await;
    assert_eq!(response.status(), StatusCode::OK);
}
