//! The OpenAI-compatible chat completions over HTTP, through a real HTTP
//! client against a server on 127.0.0.1:0: framing (SSE, NDJSON, text,
//! whole JSON) byte for byte, the chunk semantics, every error status, and
//! cancellation proven on the server's counters as tests/chat.rs does for
//! gRPC.

mod common;

use std::time::Duration;

use agentstream::pb;
use common::{TestServer, http_client, http_url, user};
use futures::StreamExt;
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

fn ask(question: &str) -> Value {
    json!({"model": "echo", "messages": [{"role": "user", "content": question}]})
}

fn streaming(mut body: Value) -> Value {
    body["stream"] = json!(true);
    body
}

/// A stream that would run for a long time: synthetic tokens, large budget.
fn endless(n: u32) -> Value {
    json!({"model": "synthetic", "max_tokens": 200000, "n": n, "stream": true,
           "messages": [{"role": "user", "content": "go"}]})
}

/// The `data:` payloads of a complete SSE body, checking its framing byte
/// for byte: every event is exactly `data: <payload>\n\n`.
fn sse_data(body: &str) -> Vec<String> {
    assert!(body.ends_with("\n\n"), "{body:?}");
    body[..body.len() - 2]
        .split("\n\n")
        .map(|event| {
            let payload = event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {event:?}"));
            assert!(!payload.contains('\n'), "{event:?}");
            payload.to_owned()
        })
        .collect()
}

/// The chunks of a complete SSE body that ends with `[DONE]`.
fn sse_chunks(body: &str) -> Vec<Value> {
    let mut events = sse_data(body);
    assert_eq!(events.pop().as_deref(), Some("[DONE]"));
    events
        .iter()
        .map(|e| serde_json::from_str(e).expect("chunk JSON"))
        .collect()
}

fn text_of(chunks: &[Value], index: u64) -> String {
    chunks
        .iter()
        .flat_map(|c| c["choices"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["index"] == index)
        .filter_map(|c| c["delta"]["content"].as_str().map(str::to_owned))
        .collect()
}

/// POSTs `body` as it is to the chat completions route, declared as
/// `content_type`.
async fn post_raw(
    server: &TestServer,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let request = http_client()
        .post(http_url(server, "/v1/chat/completions"))
        .header(header::CONTENT_TYPE, content_type)
        .body(body);
    common::send(request).await
}

async fn error_of(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let body: Value = response.json().await.expect("JSON");
    for key in ["message", "type", "param", "code"] {
        assert!(body["error"].get(key).is_some(), "{key} missing in {body}");
    }
    body
}

#[tokio::test]
async fn a_streamed_completion_is_openai_sse_ending_with_done() {
    let server = TestServer::start().await;
    let response = server
        .post_completion(&streaming(ask("What is async programming?")), None)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
    assert!(response.headers().contains_key("x-request-id"));
    let body = response.text().await.expect("body");
    let chunks = sse_chunks(&body);
    assert!(chunks.len() > 10, "{} chunks", chunks.len());
    let id = chunks[0]["id"].as_str().expect("id");
    assert!(id.starts_with("chatcmpl-"));
    for (i, chunk) in chunks.iter().enumerate() {
        assert_eq!(chunk["id"], id);
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["created"], chunks[0]["created"]);
        assert_eq!(chunk["model"], "echo");
        let choice = &chunk["choices"][0];
        assert_eq!(choice["index"], 0);
        let last = i == chunks.len() - 1;
        assert_eq!(
            choice["finish_reason"],
            if last { json!("stop") } else { Value::Null }
        );
        assert_eq!(choice["delta"].get("role").is_some(), i == 0, "{chunk}");
        assert!(chunk.get("usage").is_none());
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(text_of(&chunks, 0).contains("What is async programming?"));
}

#[tokio::test]
async fn include_usage_n_and_stop_behave_as_over_grpc() {
    let server = TestServer::start().await;
    let mut body = streaming(ask("Tell me about streams and the model"));
    body["n"] = json!(2);
    body["stop"] = json!("model");
    body["stream_options"] = json!({"include_usage": true});
    let text = server
        .post_completion(&body, None)
        .await
        .text()
        .await
        .expect("body");
    let chunks = sse_chunks(&text);
    let usage = chunks.last().expect("usage chunk");
    assert_eq!(usage["choices"], json!([]));
    let completion = usage["usage"]["completion_tokens"]
        .as_u64()
        .expect("tokens");
    let prompt = usage["usage"]["prompt_tokens"].as_u64().expect("tokens");
    assert_eq!(
        usage["usage"]["total_tokens"].as_u64(),
        Some(completion + prompt)
    );
    for index in 0..2 {
        let text = text_of(&chunks, index);
        assert!(!text.is_empty() && !text.contains("model"), "{text:?}");
    }
}

#[tokio::test]
async fn stream_false_answers_one_chat_completion_with_usage() {
    let server = TestServer::start().await;
    let response = server.post_completion(&ask("你好，世界"), None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "echo");
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(
        choice["message"]["content"]
            .as_str()
            .expect("text")
            .contains("你好，世界")
    );
    assert_eq!(choice["finish_reason"], "stop");
    let usage = &body["usage"];
    assert!(usage["completion_tokens"].as_u64().expect("tokens") > 0);
}

#[tokio::test]
async fn ndjson_and_text_framings_carry_the_same_completion() {
    let server = TestServer::start().await;
    let whole: Value = server
        .post_completion(&ask("frame me"), None)
        .await
        .json()
        .await
        .expect("JSON");
    let expected = whole["choices"][0]["message"]["content"]
        .as_str()
        .expect("text")
        .to_owned();

    let response = server
        .post_completion(&streaming(ask("frame me")), Some("application/x-ndjson"))
        .await;
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/x-ndjson"
    );
    let body = response.text().await.expect("body");
    assert!(body.ends_with('\n') && !body.contains("[DONE]"));
    let chunks: Vec<Value> = body
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON per line"))
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(text_of(&chunks, 0), expected);

    let response = server
        .post_completion(&streaming(ask("frame me")), Some("text/plain"))
        .await;
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
    assert_eq!(response.text().await.expect("text"), expected);
}

#[tokio::test]
async fn bad_fields_are_400_naming_the_same_field_as_grpc() {
    let server = TestServer::start().await;
    let cases = [
        (
            json!({"messages": []}),
            "messages",
            pb::StreamChatRequest::default(),
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "n": 9}),
            "n",
            pb::StreamChatRequest {
                messages: vec![user("x")],
                n: 9,
                ..Default::default()
            },
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "temperature": 5}),
            "temperature",
            pb::StreamChatRequest {
                messages: vec![user("x")],
                temperature: Some(5.0),
                ..Default::default()
            },
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "stop": ["ok", ""]}),
            "stop[1]",
            pb::StreamChatRequest {
                messages: vec![user("x")],
                stop: vec!["ok".into(), String::new()],
                ..Default::default()
            },
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 10000000}),
            "max_tokens",
            pb::StreamChatRequest {
                messages: vec![user("x")],
                max_tokens: 10_000_000,
                ..Default::default()
            },
        ),
    ];
    for (body, field, grpc) in cases {
        let error = error_of(
            server.post_completion(&body, None).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert_eq!(error["error"]["param"], field, "{error}");
        let status = server.chat().stream_chat(grpc).await.expect_err("invalid");
        assert_eq!(common::bad_request_fields(&status)[0], field);
    }
    // Fields the core never sees are named too.
    for (body, field) in [
        (
            json!({"messages": [{"role": "robot", "content": "x"}]}),
            "messages[0].role",
        ),
        (json!({"messages": [], "max_tokens": -1}), "max_tokens"),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
            "messages[0].content[0].type",
        ),
    ] {
        let response = server.post_completion(&body, None).await;
        let error = error_of(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(error["error"]["param"], field);
    }
}

#[tokio::test]
async fn unknown_models_are_404_model_not_found() {
    let server = TestServer::start().await;
    let mut body = ask("hi");
    body["model"] = json!("gpt-9");
    let error = error_of(
        server.post_completion(&body, None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(error["error"]["code"], "model_not_found");
    assert_eq!(error["error"]["param"], "model");
}

#[tokio::test]
async fn bodies_that_are_not_json_are_415_and_broken_json_400() {
    let server = TestServer::start().await;
    let response = post_raw(&server, "text/plain", ask("hi").to_string()).await;
    error_of(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    let response = post_raw(&server, "application/json", "not json").await;
    let error = error_of(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(error["error"]["param"], Value::Null);
    // Broken inside a field: that field is named.
    let response = post_raw(&server, "application/json", "{\"messages\": [").await;
    let error = error_of(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(error["error"]["param"], "messages");
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_also_when_chunked() {
    let server = TestServer::start_with(|c| c.max_http_body = 1024).await;
    let big = ask(&"x".repeat(2000)).to_string();
    let response = post_raw(&server, "application/json", big.clone()).await;
    error_of(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    // No Content-Length: the limit is enforced while reading.
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> = big
        .into_bytes()
        .chunks(100)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let response = post_raw(
        &server,
        "application/json",
        reqwest::Body::wrap_stream(futures::stream::iter(pieces)),
    )
    .await;
    error_of(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    // A small request still passes.
    assert_eq!(
        server.post_completion(&ask("ok"), None).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn at_capacity_new_streams_get_429_with_retry_after() {
    let server = TestServer::start_with(|c| {
        c.max_active_streams = 1;
        c.mock_token_delay = Duration::from_millis(20);
    })
    .await;
    let first = server.post_completion(&endless(1), None).await;
    let mut first = first.bytes_stream();
    first.next().await.expect("first bytes").expect("ok");
    let response = server
        .post_completion(&streaming(ask("one more")), None)
        .await;
    assert!(
        response.headers()[header::RETRY_AFTER]
            .to_str()
            .expect("ascii")
            .parse::<u64>()
            .is_ok()
    );
    let error = error_of(response, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(error["error"]["type"], "rate_limit_error");
    drop(first);
    server
        .until("first stream gone", |m| m.active_streams == 0)
        .await;
    assert_eq!(
        server
            .post_completion(&ask("now it fits"), None)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_failure_after_the_start_is_a_last_error_event_without_done() {
    let server = TestServer::start_with(|c| {
        c.shutdown_grace = Duration::from_millis(200);
        c.mock_token_delay = Duration::from_millis(5);
    })
    .await;
    let response = server.post_completion(&endless(1), None).await;
    let mut stream = response.bytes_stream();
    let mut body = Vec::from(stream.next().await.expect("bytes").expect("ok"));
    server.shutdown.request();
    while let Some(bytes) = stream.next().await {
        body.extend_from_slice(&bytes.expect("a clean end"));
    }
    let body = String::from_utf8(body).expect("UTF-8");
    let events = sse_data(&body);
    let last: Value = serde_json::from_str(events.last().expect("events")).expect("JSON");
    assert_eq!(last["error"]["code"], "shutting_down", "{last}");
    assert!(!body.contains("[DONE]"));
}

/// Opens an endless stream with `accept`, reads some of it, drops it, and
/// proves the generation stopped at once.
async fn dropping_the_response_stops_generation(accept: Option<&str>) {
    let server = TestServer::start_with(|c| c.mock_token_delay = Duration::from_millis(20)).await;
    let response = server.post_completion(&endless(2), accept).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = response.bytes_stream();
    for _ in 0..3 {
        stream.next().await.expect("bytes").expect("ok");
    }
    server.assert_live(2, 1);
    drop(stream);
    server.assert_dropped("generation dropped").await;
}

#[tokio::test]
async fn closing_an_sse_stream_stops_generation() {
    dropping_the_response_stops_generation(None).await;
}

#[tokio::test]
async fn closing_an_ndjson_stream_stops_generation() {
    dropping_the_response_stops_generation(Some("application/x-ndjson")).await;
}

#[tokio::test]
async fn closing_a_text_stream_stops_generation() {
    dropping_the_response_stops_generation(Some("text/plain")).await;
}

#[tokio::test]
async fn models_lists_every_served_model() {
    let server = TestServer::start().await;
    let response = server.get("/v1/models").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["object"], "list");
    let ids: Vec<_> = body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| {
            assert_eq!(m["object"], "model");
            assert_eq!(m["owned_by"], "agentstream");
            assert!(m["created"].as_i64().is_some());
            m["id"].as_str().expect("id").to_owned()
        })
        .collect();
    for builtin in ["echo", "synthetic"] {
        assert!(ids.iter().any(|id| id == builtin), "{ids:?}");
    }
}
