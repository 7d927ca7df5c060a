//! The OpenAI-compatible upstream backend against a real HTTP server: a fake
//! OpenAI on 127.0.0.1:0, agentstream in front of it, a tonic client.

mod common;
#[path = "upstream/fake_openai.rs"]
mod fake_openai;

use std::time::Duration;

use agentstream::{
    config::ServeConfig,
    llm::{
        Backend, ChatMessage, FinishReason, GenerationEvent, GenerationRequest,
        openai::{OpenAiBackend, UpstreamSpec},
    },
    metrics::Metrics,
    pb::{self, StreamChatRequest, StreamChatResponse},
    server::Server,
    tokenizer::Tokenizer,
};
use common::{TestServer, drain, text_of, user};
use fake_openai::{After, FakeOpenAi, Reply, completion, content, data, error, stream};
use futures::StreamExt;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// Generous bound for "at once": the upstream is observed to close well
/// within it, and a broken build fails instead of hanging.
const SOON: Duration = Duration::from_secs(5);

const MODEL: &str = "fake-model";

/// An agentstream server whose upstream `fake` serves `fake-model` at `url`,
/// with `extra` spec fields (`,retries=0` ...).
async fn server_for(url: &str, extra: &str) -> TestServer {
    let spec = upstream_spec(url, extra);
    TestServer::start_with(|c| c.upstreams = vec![spec]).await
}

fn upstream_spec(url: &str, extra: &str) -> UpstreamSpec {
    UpstreamSpec::parse(&format!("name=fake,url={url},models={MODEL}{extra}")).expect("spec")
}

fn ask(text: &str) -> StreamChatRequest {
    StreamChatRequest {
        model: MODEL.into(),
        messages: vec![user(text)],
        ..Default::default()
    }
}

fn finish_of(chunks: &[StreamChatResponse], index: u32) -> Vec<i32> {
    chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter(|c| c.index == index && c.finish_reason != pb::FinishReason::Unspecified as i32)
        .map(|c| c.finish_reason)
        .collect()
}

/// Status of a call that fails, before or after some chunks.
async fn failure(
    server: &TestServer,
    request: StreamChatRequest,
) -> (Vec<StreamChatResponse>, Status) {
    match server.chat().stream_chat(request).await {
        Err(status) => (Vec::new(), status),
        Ok(response) => {
            let (chunks, end) = drain(&mut response.into_inner()).await;
            (chunks, end.expect_err("the call should fail"))
        }
    }
}

#[tokio::test]
async fn streams_the_upstream_answer_with_its_usage_and_maps_the_request() {
    let fake = FakeOpenAi::start(
        vec![stream(completion(
            &["Hel", "lo", " 世界"],
            "stop",
            Some((11, 3)),
        ))],
        &[],
    )
    .await;
    let key_dir = tempfile::tempdir().expect("dir");
    let key_file = key_dir.path().join("key");
    std::fs::write(&key_file, "sk-test-123\n").expect("key");
    let server = server_for(&fake.url(), &format!(",key-file={}", key_file.display())).await;

    let mut request = ask("Say hello");
    request.messages.insert(
        0,
        pb::ChatMessage {
            role: pb::Role::System as i32,
            content: "Be brief.".into(),
            ..Default::default()
        },
    );
    request.max_tokens = 50;
    request.temperature = Some(0.25);
    request.stop = vec!["END".into()];
    request.include_usage = true;
    let (chunks, end) = drain(&mut server.stream_chat(request).await).await;
    end.expect("ends OK");

    assert_eq!(text_of(&chunks, 0), "Hello 世界");
    assert_eq!(finish_of(&chunks, 0), [pb::FinishReason::Stop as i32]);
    assert!(chunks.iter().all(|c| c.model == MODEL));
    let first = &chunks[0].choices[0];
    assert_eq!(
        first.delta.as_ref().map(|d| d.role),
        Some(pb::Role::Assistant as i32)
    );
    // Nothing re-chunked: one chunk per upstream piece, then finish, usage.
    assert_eq!(chunks.len(), 5, "{chunks:?}");
    let usage = chunks.last().and_then(|c| c.usage).expect("usage chunk");
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (11, 3, 14)
    );

    let body = &fake.bodies()[0];
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["max_tokens"], 50);
    assert_eq!(body["temperature"], 0.25);
    assert_eq!(body["stop"], serde_json::json!(["END"]));
    assert_eq!(
        body["messages"][0],
        serde_json::json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(
        body["messages"][1],
        serde_json::json!({"role": "user", "content": "Say hello"})
    );
    assert!(body.get("n").is_none());
    assert_eq!(
        fake.authorizations(),
        [Some("Bearer sk-test-123".to_owned())]
    );
}

#[tokio::test]
async fn models_route_to_their_backend_and_unknown_ones_are_not_found() {
    let fake = FakeOpenAi::start(vec![stream(completion(&["up"], "stop", None))], &[]).await;
    let server = server_for(&fake.url(), "").await;

    let (chunks, end) = drain(&mut server.stream_chat(ask("hi")).await).await;
    end.expect("upstream model");
    assert_eq!(text_of(&chunks, 0), "up");

    let mut echo = ask("hi");
    echo.model = "echo".into();
    let (chunks, end) = drain(&mut server.stream_chat(echo).await).await;
    end.expect("built-in model");
    assert!(text_of(&chunks, 0).contains("hi"));
    assert_eq!(fake.requests(), 1, "echo must not reach the upstream");

    let mut unknown = ask("hi");
    unknown.model = "gpt-99".into();
    let (_, status) = failure(&server, unknown).await;
    common::assert_status(&status, Code::NotFound, MODEL);
}

#[tokio::test]
async fn the_default_model_can_be_an_upstream_one_and_must_exist() {
    let fake = FakeOpenAi::start(vec![stream(completion(&["dflt"], "stop", None))], &[]).await;
    let spec = upstream_spec(&fake.url(), "");
    let server = TestServer::start_with(|c| {
        c.upstreams = vec![spec];
        c.default_model = MODEL.into();
    })
    .await;
    let mut request = ask("hi");
    request.model = String::new();
    let (chunks, end) = drain(&mut server.stream_chat(request).await).await;
    end.expect("default model");
    assert_eq!(text_of(&chunks, 0), "dflt");

    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        default_model: "missing".into(),
        ..ServeConfig::default()
    };
    let error = Server::start(config).await.err().expect("refused");
    assert!(
        error.to_string().contains("--default-model `missing`"),
        "{error}"
    );
}

#[tokio::test]
async fn models_are_discovered_and_failed_discovery_stops_start_up() {
    let fake = FakeOpenAi::start(
        vec![stream(completion(&["found"], "stop", None))],
        &["disc-a", "disc-b"],
    )
    .await;
    let spec = UpstreamSpec::parse(&format!("name=fake,url={}", fake.url())).expect("spec");
    let server = TestServer::start_with(|c| c.upstreams = vec![spec]).await;
    let mut request = ask("hi");
    request.model = "disc-b".into();
    let (chunks, end) = drain(&mut server.stream_chat(request).await).await;
    end.expect("discovered model");
    assert_eq!(text_of(&chunks, 0), "found");
    assert_eq!(fake.bodies()[0]["model"], "disc-b");

    let refused = refused_url().await;
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        upstreams: vec![UpstreamSpec::parse(&format!("name=gone,url={refused}")).expect("spec")],
        ..ServeConfig::default()
    };
    let error = Server::start(config).await.err().expect("refused");
    assert!(
        error
            .to_string()
            .contains("cannot discover the models of upstream `gone`"),
        "{error}"
    );
}

#[tokio::test]
async fn usage_is_counted_with_the_tokenizer_when_the_upstream_sends_none() {
    let fake = FakeOpenAi::start(
        vec![stream(completion(&["Hello", " world"], "length", None))],
        &[],
    )
    .await;
    let server = server_for(&fake.url(), "").await;
    let mut request = ask("Count me");
    request.include_usage = true;
    let (chunks, end) = drain(&mut server.stream_chat(request).await).await;
    end.expect("ok");
    assert_eq!(finish_of(&chunks, 0), [pb::FinishReason::Length as i32]);
    let usage = chunks.last().and_then(|c| c.usage).expect("usage");
    let tokenizer = Tokenizer::cl100k();
    assert_eq!(
        usage.prompt_tokens,
        tokenizer.prompt_tokens(&[ChatMessage::user("Count me")])
    );
    assert_eq!(usage.completion_tokens, 2);
}

#[tokio::test]
async fn n_choices_interleave_and_each_finishes_once() {
    let frames = vec![
        data(&content(0, "A1", None)),
        data(&content(1, "B1", None)),
        data(&content(1, "B2", Some("stop"))),
        data(&content(0, "A2", None)),
        data(&content(0, "", Some("length"))),
        data(&fake_openai::usage(5, 4)),
        data("[DONE]"),
    ];
    let fake = FakeOpenAi::start(vec![stream(frames)], &[]).await;
    let server = server_for(&fake.url(), "").await;
    let mut request = ask("two please");
    request.n = 2;
    request.include_usage = true;
    let (chunks, end) = drain(&mut server.stream_chat(request).await).await;
    end.expect("ok");
    assert_eq!(fake.bodies()[0]["n"], 2);
    assert_eq!(text_of(&chunks, 0), "A1A2");
    assert_eq!(text_of(&chunks, 1), "B1B2");
    assert_eq!(finish_of(&chunks, 0), [pb::FinishReason::Length as i32]);
    assert_eq!(finish_of(&chunks, 1), [pb::FinishReason::Stop as i32]);
    let order: Vec<u32> = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .map(|c| c.index)
        .collect();
    assert_eq!(order[..3], [0, 1, 1], "chunks interleave as produced");
    assert_eq!(common::completion_tokens(&chunks), Some(4));
}

#[tokio::test]
async fn a_stop_sequence_is_never_sent_and_the_upstream_is_closed() {
    // This upstream ignores `stop` and would generate forever.
    let fake = FakeOpenAi::start(
        vec![Reply::Sse {
            frames: vec![
                data(&content(0, "Hello E", None)),
                data(&content(0, "ND of it", None)),
            ],
            delay: Duration::from_millis(5),
            after: After::Endless,
        }],
        &[],
    )
    .await;
    let server = server_for(&fake.url(), "").await;
    let mut request = ask("hi");
    request.stop = vec!["END".into()];
    let (chunks, end) = drain(&mut server.stream_chat(request).await).await;
    end.expect("ok");
    assert_eq!(text_of(&chunks, 0), "Hello ");
    assert_eq!(finish_of(&chunks, 0), [pb::FinishReason::Stop as i32]);
    fake.stream_dropped(SOON).await;
}

#[tokio::test]
async fn a_client_that_goes_away_closes_the_upstream_stream() {
    let fake = FakeOpenAi::start(vec![Reply::endless(Duration::from_millis(20))], &[]).await;
    let server = server_for(&fake.url(), "").await;
    let mut stream = server.stream_chat(ask("go on forever")).await;
    for _ in 0..2 {
        let chunk = stream.next().await.expect("a chunk").expect("ok");
        assert_eq!(text_of(&[chunk], 0), "tick ");
    }
    assert_eq!(fake.dropped_streams(), 0);
    drop(stream);
    fake.stream_dropped(SOON).await;
    server.until_no_generation("no live generation").await;
}

#[tokio::test]
async fn a_deadline_ends_the_call_and_closes_the_upstream_stream() {
    let fake = FakeOpenAi::start(vec![Reply::endless(Duration::from_millis(20))], &[]).await;
    let server = server_for(&fake.url(), "").await;
    let mut request = tonic::Request::new(ask("go on forever"));
    request.set_timeout(Duration::from_millis(300));
    let response = server.chat().stream_chat(request).await.expect("accepted");
    let (chunks, end) = drain(&mut response.into_inner()).await;
    assert!(!chunks.is_empty());
    assert_eq!(end.expect_err("deadline").code(), Code::DeadlineExceeded);
    fake.stream_dropped(SOON).await;
}

#[tokio::test]
async fn a_refused_connection_is_unavailable() {
    let url = refused_url().await;
    let server = server_for(&url, ",retries=1").await;
    let (_, status) = failure(&server, ask("hi")).await;
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status
            .message()
            .contains("cannot connect to upstream `fake`"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn server_errors_are_unavailable_after_bounded_retries() {
    let fake = FakeOpenAi::start(vec![error(503, "overloaded", None)], &[]).await;
    let server = server_for(&fake.url(), ",retries=2").await;
    let (_, status) = failure(&server, ask("hi")).await;
    common::assert_status(&status, Code::Unavailable, "overloaded");
    assert_eq!(fake.requests(), 3, "one attempt and two retries");
}

#[tokio::test]
async fn a_failure_before_the_first_token_is_retried() {
    let fake = FakeOpenAi::start(
        vec![
            error(502, "bad gateway", None),
            Reply::Status {
                status: 429,
                headers: vec![("retry-after", "0".into())],
                body: "{}".into(),
            },
            stream(completion(&["third time lucky"], "stop", None)),
        ],
        &[],
    )
    .await;
    let server = server_for(&fake.url(), "").await;
    let (chunks, end) = drain(&mut server.stream_chat(ask("hi")).await).await;
    end.expect("ok after retries");
    assert_eq!(text_of(&chunks, 0), "third time lucky");
    assert_eq!(fake.requests(), 3);
}

#[tokio::test]
async fn rate_limits_are_resource_exhausted_with_the_retry_hint() {
    let fake = FakeOpenAi::start(
        vec![Reply::Status {
            status: 429,
            headers: vec![("retry-after", "30".into())],
            body: r#"{"error":{"message":"Rate limit reached for requests"}}"#.into(),
        }],
        &[],
    )
    .await;
    let server = server_for(&fake.url(), "").await;
    let (_, status) = failure(&server, ask("hi")).await;
    common::assert_status(&status, Code::ResourceExhausted, "Rate limit reached");
    assert!(
        status.message().contains("retry after 30s"),
        "{}",
        status.message()
    );
    let retry = status.get_details_retry_info().expect("RetryInfo");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(30)));
    assert_eq!(fake.requests(), 1, "a 30 s hint is too long to wait for");
}

#[tokio::test]
async fn a_stream_failing_before_its_first_chunk_gets_its_http_status() {
    let hi = serde_json::json!({
        "model": MODEL,
        "stream": true,
        "messages": [{"role": "user", "content": "hi"}],
    });
    let rate_limited = Reply::Status {
        status: 429,
        headers: vec![("retry-after", "30".into())],
        body: r#"{"error":{"message":"Rate limit reached for requests"}}"#.into(),
    };
    for accept in [None, Some("application/x-ndjson"), Some("text/plain")] {
        let fake = FakeOpenAi::start(vec![rate_limited.clone()], &[]).await;
        let server = server_for(&fake.url(), "").await;
        let response = server.post_completion(&hi, accept).await;
        assert_eq!(response.status().as_u16(), 429, "{accept:?}");
        assert_eq!(response.headers()["retry-after"], "30");
        let body: serde_json::Value = response.json().await.expect("an error document");
        assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    }

    let server = server_for(&refused_url().await, ",retries=0").await;
    let response = server.post_completion(&hi, None).await;
    assert_eq!(response.status().as_u16(), 502);
    let body: serde_json::Value = response.json().await.expect("an error document");
    assert!(body["error"]["message"].is_string(), "{body}");

    // Once a chunk went out, a failure is the stream's last event.
    let frames = vec![
        data(&content(0, "partial ", None)),
        data(&serde_json::json!({"error": {"message": "overloaded"}}).to_string()),
    ];
    let fake = FakeOpenAi::start(vec![stream(frames)], &[]).await;
    let server = server_for(&fake.url(), "").await;
    let response = server.post_completion(&hi, None).await;
    assert_eq!(response.status().as_u16(), 200);
    let body = response.text().await.expect("body");
    assert!(body.contains("partial "), "{body}");
    assert!(
        body.trim_end().ends_with('}'),
        "no [DONE] after an error: {body}"
    );
    assert!(body.contains(r#"{"error":"#), "{body}");
}

#[tokio::test]
async fn a_rejected_request_is_invalid_argument_with_the_upstream_message() {
    let fake = FakeOpenAi::start(
        vec![error(
            400,
            "'temperature' must be at most 1 for this model",
            Some("temperature"),
        )],
        &[],
    )
    .await;
    let server = server_for(&fake.url(), "").await;
    let mut request = ask("hi");
    request.temperature = Some(1.5);
    let (_, status) = failure(&server, request).await;
    common::assert_status(
        &status,
        Code::InvalidArgument,
        "'temperature' must be at most 1",
    );
    assert_eq!(common::bad_request_fields(&status)[0], "temperature");
    assert_eq!(fake.requests(), 1, "never retried");
}

/// Asserts that `message` names upstream `fake` and nothing of where it
/// runs (`host` is its `127.0.0.1:PORT`) or of its raw body.
fn assert_sanitized(message: &str, host: &str) {
    let port = host.rsplit(':').next().expect("port");
    for leak in [
        host,
        "127.0.0.1",
        port,
        "cluster.local",
        "internal-gpu-7",
        "<html>",
        "/v1/",
    ] {
        assert!(!message.contains(leak), "{leak:?} leaked in {message:?}");
    }
    assert!(message.contains("upstream `fake`"), "{message}");
}

#[tokio::test]
async fn upstream_error_bodies_never_reach_clients_with_the_upstreams_address() {
    let said =
        "backend http://{host}/v1/chat/completions (gpu-7.cluster.local:8000 behind {host}) failed";
    let html = "<html><body>502 from internal-gpu-7 at {host}</body></html>";
    let replies = [
        (
            error(400, said, Some("http://{host}/")),
            Code::InvalidArgument,
        ),
        (error(401, said, None), Code::FailedPrecondition),
        (error(404, said, None), Code::FailedPrecondition),
        (error(418, said, None), Code::Internal),
        (error(500, said, None), Code::Unavailable),
        (
            Reply::Status {
                status: 502,
                headers: Vec::new(),
                body: html.into(),
            },
            Code::Unavailable,
        ),
        (
            Reply::Status {
                status: 429,
                headers: vec![("retry-after", "30".into())],
                body: serde_json::json!({"error": {"message": said}}).to_string(),
            },
            Code::ResourceExhausted,
        ),
    ];
    for (reply, code) in replies {
        let fake = FakeOpenAi::start(vec![reply], &[]).await;
        let host = fake.addr.to_string();
        let server = server_for(&fake.url(), ",retries=0").await;
        let (_, status) = failure(&server, ask("hi")).await;
        assert_eq!(status.code(), code, "{status:?}");
        assert_sanitized(status.message(), &host);
        if let Some(bad) = status.get_details_bad_request() {
            assert!(
                bad.field_violations
                    .iter()
                    .all(|v| !v.field.contains(&host))
            );
        }
        // The HTTP edge says the same.
        let hi =
            serde_json::json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]});
        let http = server.post_completion(&hi, None).await;
        let body = http.text().await.expect("body");
        assert_sanitized(&body, &host);
    }

    // Mid-stream, in an error event.
    let frames = vec![
        data(&content(0, "partial ", None)),
        data(&serde_json::json!({"error": {"message": said}}).to_string()),
    ];
    let fake = FakeOpenAi::start(vec![stream(frames)], &[]).await;
    let host = fake.addr.to_string();
    let server = server_for(&fake.url(), "").await;
    let (_, end) = drain(&mut server.stream_chat(ask("hi")).await).await;
    let status = end.expect_err("fails");
    assert_eq!(status.code(), Code::Unavailable);
    assert_sanitized(status.message(), &host);
    assert!(status.message().contains("failed"), "{}", status.message());

    // Nobody listening: the client hears why, not where.
    let url = refused_url().await;
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_owned();
    let server = server_for(&url, ",retries=0").await;
    let (_, status) = failure(&server, ask("hi")).await;
    assert_eq!(status.code(), Code::Unavailable);
    assert_sanitized(status.message(), &host);
    assert!(status.message().contains("refused"), "{}", status.message());
}

#[tokio::test]
async fn with_api_keys_an_unknown_model_lists_no_model() {
    let fake = FakeOpenAi::start(
        vec![stream(completion(&["up"], "stop", None))],
        &["secret-upstream-model"],
    )
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "tester:sk-agentstream-test-key-0001\n").expect("keys");
    let spec = upstream_spec(&fake.url(), "");
    let server = TestServer::start_with(move |c| {
        c.upstreams = vec![spec];
        c.api_keys_file = Some(keys);
    })
    .await;
    let mut request = tonic::Request::new(ask("hi"));
    request.get_mut().model = "gpt-99".into();
    request.metadata_mut().insert(
        "authorization",
        "Bearer sk-agentstream-test-key-0001"
            .parse()
            .expect("header"),
    );
    let status = match server.chat().stream_chat(request).await {
        Err(status) => status,
        Ok(response) => drain(&mut response.into_inner())
            .await
            .1
            .expect_err("not found"),
    };
    common::assert_status(&status, Code::NotFound, "gpt-99");
    for model in [MODEL, "echo", "synthetic"] {
        assert!(
            !status.message().contains(model),
            "{model} listed: {}",
            status.message()
        );
    }
    assert!(
        status.message().contains("ListModels"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn bad_credentials_are_the_servers_problem_and_the_key_never_leaks() {
    for status_code in [401, 403] {
        let fake = FakeOpenAi::start(
            vec![error(
                status_code,
                "Incorrect API key provided: sk-leaky-999",
                None,
            )],
            &[],
        )
        .await;
        let key_dir = tempfile::tempdir().expect("dir");
        let key_file = key_dir.path().join("key");
        std::fs::write(&key_file, "sk-leaky-999").expect("key");
        let server = server_for(&fake.url(), &format!(",key-file={}", key_file.display())).await;
        let (_, status) = failure(&server, ask("hi")).await;
        assert_eq!(status.code(), Code::FailedPrecondition, "{status_code}");
        assert!(
            status.message().contains("credentials"),
            "{}",
            status.message()
        );
        assert!(
            !status.message().contains("sk-leaky-999"),
            "{}",
            status.message()
        );
        assert_eq!(fake.requests(), 1);
    }
}

#[tokio::test]
async fn an_error_event_mid_stream_ends_with_unavailable_after_the_chunks() {
    let frames = vec![
        data(&content(0, "partial ", None)),
        data(r#"{"error":{"message":"the GPU fell over","type":"server_error"}}"#),
    ];
    let fake = FakeOpenAi::start(vec![stream(frames)], &[]).await;
    let server = server_for(&fake.url(), "").await;
    let (chunks, end) = drain(&mut server.stream_chat(ask("hi")).await).await;
    assert_eq!(text_of(&chunks, 0), "partial ");
    let status = end.expect_err("fails");
    common::assert_status(&status, Code::Unavailable, "the GPU fell over");
    assert_eq!(fake.requests(), 1, "no retry after the first token");
}

#[tokio::test]
async fn malformed_data_mid_stream_ends_with_internal_after_the_chunks() {
    let frames = vec![
        data(&content(0, "fine so far", None)),
        data("{\"choices\": [oops"),
    ];
    let fake = FakeOpenAi::start(vec![stream(frames)], &[]).await;
    let server = server_for(&fake.url(), "").await;
    let (chunks, end) = drain(&mut server.stream_chat(ask("hi")).await).await;
    assert_eq!(text_of(&chunks, 0), "fine so far");
    let status = end.expect_err("fails");
    common::assert_status(&status, Code::Internal, "malformed");
}

#[tokio::test]
async fn a_stream_cut_short_is_unavailable() {
    let frames = vec![data(&content(0, "half an ans", None))];
    let fake = FakeOpenAi::start(vec![stream(frames)], &[]).await;
    let server = server_for(&fake.url(), "").await;
    let (chunks, end) = drain(&mut server.stream_chat(ask("hi")).await).await;
    assert_eq!(text_of(&chunks, 0), "half an ans");
    assert_eq!(end.expect_err("fails").code(), Code::Unavailable);
}

#[tokio::test]
async fn a_stalled_upstream_hits_the_idle_timeout_and_is_closed() {
    let fake = FakeOpenAi::start(
        vec![Reply::Sse {
            frames: vec![data(&content(0, "one", None))],
            delay: Duration::from_millis(1),
            after: After::Hang,
        }],
        &[],
    )
    .await;
    let server = server_for(&fake.url(), ",idle-timeout=300ms").await;
    let (chunks, end) = drain(&mut server.stream_chat(ask("hi")).await).await;
    assert_eq!(text_of(&chunks, 0), "one");
    let status = end.expect_err("times out");
    common::assert_status(&status, Code::Unavailable, "idle timeout of 300ms");
    fake.stream_dropped(SOON).await;
}

#[tokio::test]
async fn an_upstream_that_never_starts_hits_the_first_token_timeout() {
    let fake = FakeOpenAi::start(vec![Reply::stalled()], &[]).await;
    let server = server_for(&fake.url(), ",first-token-timeout=300ms").await;
    let (chunks, status) = failure(&server, ask("hi")).await;
    assert!(chunks.is_empty());
    common::assert_status(&status, Code::Unavailable, "first-token timeout");
}

/// What the RAG answerer does: a plain `Backend::generate` with a system and
/// a user message.
#[tokio::test]
async fn the_backend_serves_a_system_and_user_prompt_directly() {
    let fake = FakeOpenAi::start(
        vec![stream(completion(&["Paris [1]."], "stop", Some((20, 4))))],
        &[],
    )
    .await;
    let backend = OpenAiBackend::connect(
        &upstream_spec(&fake.url(), ""),
        Tokenizer::cl100k(),
        Metrics::new(),
    )
    .await
    .expect("backend");
    assert_eq!(backend.models(), [MODEL]);
    let events: Vec<_> = backend
        .generate(GenerationRequest {
            model: MODEL.into(),
            messages: vec![
                ChatMessage::system("Answer from the sources; cite them as [n]."),
                ChatMessage::user(
                    "Sources:\n[1] Paris is the capital of France.\n\nQuestion: capital?",
                ),
            ],
            max_tokens: 100,
            temperature: None,
            stop: Vec::new(),
            n: 1,
            ..GenerationRequest::default()
        })
        .map(|e| e.expect("event"))
        .collect()
        .await;
    assert_eq!(
        events,
        [
            GenerationEvent::Delta {
                choice: 0,
                text: "Paris [1].".into()
            },
            GenerationEvent::Finished {
                choice: 0,
                reason: FinishReason::Stop
            },
            GenerationEvent::Usage(agentstream::llm::Usage {
                prompt_tokens: 20,
                completion_tokens: 4
            }),
        ]
    );
    assert_eq!(fake.bodies()[0]["messages"][0]["role"], "system");
}

/// A URL where nothing listens.
async fn refused_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}/v1")
}

/// Ingests one document over RPC and waits for the task to succeed.
async fn ingest_one(server: &TestServer, id: &str, text: &str) {
    let document = pb::Document {
        id: id.into(),
        title: format!("About {id}"),
        text: text.into(),
        source: format!("{id}.md"),
        ..Default::default()
    };
    server.ingest(vec![document]).await;
}

fn question_for_model(question: &str) -> pb::StreamAnswerRequest {
    pb::StreamAnswerRequest {
        question: question.into(),
        model: MODEL.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn rag_with_an_upstream_model_prompts_with_numbered_sources_and_streams_its_answer() {
    let fake = FakeOpenAi::start(
        vec![stream(completion(
            &["Shutdown drains ", "streams first [1]."],
            "stop",
            Some((120, 7)),
        ))],
        &[],
    )
    .await;
    let server = server_for(&fake.url(), "").await;
    ingest_one(
        &server,
        "shutdown",
        "On SIGTERM the server drains in-flight streams for a grace period.",
    )
    .await;
    ingest_one(&server, "weather", "It is sunny in Beijing today.").await;

    let mut stream = server
        .stream_answer(question_for_model("What happens to streams on SIGTERM?"))
        .await;
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        events.push(event.expect("event").event.expect("set"));
    }
    use pb::stream_answer_response::Event;
    let passages = match &events[1] {
        Event::PassagesRetrieved(p) => p.passages.clone(),
        other => panic!("expected passages, got {other:?}"),
    };
    assert_eq!(passages[0].document_id, "shutdown");
    assert!(matches!(&events[2], Event::GenerationStarted(g) if g.model == MODEL));
    let answer: String = events
        .iter()
        .filter_map(|e| match e {
            Event::Content(c) => Some(c.text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(answer, "Shutdown drains streams first [1].");
    match events.last() {
        Some(Event::Done(done)) => {
            let usage = done.usage.expect("usage");
            assert_eq!((usage.prompt_tokens, usage.completion_tokens), (120, 7));
        }
        other => panic!("expected done, got {other:?}"),
    }

    // The upstream got the passages as numbered sources and the question.
    let body = &fake.bodies()[0];
    let system = body["messages"][0]["content"]
        .as_str()
        .expect("system prompt");
    assert_eq!(body["messages"][0]["role"], "system");
    assert!(
        system.contains("[1] About shutdown (shutdown.md)"),
        "{system}"
    );
    assert!(system.contains("drains in-flight streams"), "{system}");
    assert!(system.to_lowercase().contains("cite"), "{system}");
    assert_eq!(body["messages"][1]["role"], "user");
    assert_eq!(
        body["messages"][1]["content"],
        "What happens to streams on SIGTERM?"
    );
}

#[tokio::test]
async fn rag_client_that_goes_away_closes_the_upstream_stream() {
    let fake = FakeOpenAi::start(vec![Reply::endless(Duration::from_millis(20))], &[]).await;
    let server = server_for(&fake.url(), "").await;
    ingest_one(&server, "streams", "Streams carry tokens to clients.").await;
    let mut stream = server
        .stream_answer(question_for_model("What do streams carry?"))
        .await;
    let mut contents = 0;
    while contents < 2 {
        let event = stream.next().await.expect("event").expect("ok");
        if matches!(
            event.event,
            Some(pb::stream_answer_response::Event::Content(_))
        ) {
            contents += 1;
        }
    }
    drop(stream);
    fake.stream_dropped(SOON).await;
    server
        .until("no live generation", |m| {
            m.live_generations == 0 && m.active_streams == 0
        })
        .await;
}

/// Each call's (id, type, name) from its first delta and its joined
/// arguments, by call index, for choice 0; panics when a later delta
/// repeats the id or name.
fn tool_calls_of(chunks: &[StreamChatResponse]) -> Vec<(String, String, String, String)> {
    let mut calls: Vec<(String, String, String, String)> = Vec::new();
    for delta in chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|c| c.delta.as_ref())
        .flat_map(|d| &d.tool_calls)
    {
        let index = delta.index as usize;
        let function = delta.function.clone().unwrap_or_default();
        if index == calls.len() {
            calls.push((
                delta.id.clone(),
                delta.r#type.clone(),
                function.name,
                String::new(),
            ));
        } else {
            assert!(delta.id.is_empty() && function.name.is_empty(), "{delta:?}");
        }
        calls[index].3.push_str(&function.arguments);
    }
    calls
}

fn weather_tool() -> pb::Tool {
    let schema: serde_json::Value = serde_json::json!({
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"]
    });
    let fields = schema
        .as_object()
        .expect("object")
        .iter()
        .map(|(k, v)| (k.clone(), common::to_struct_value(v)))
        .collect();
    pb::Tool {
        r#type: "function".into(),
        function: Some(pb::FunctionDefinition {
            name: "get_weather".into(),
            description: "Weather of a city".into(),
            parameters: Some(pbjson_types::Struct { fields }),
        }),
    }
}

#[tokio::test]
async fn parallel_tool_calls_and_reasoning_pass_through_split_anywhere() {
    use serde_json::json;
    let args_a = r#"{"city": "Zürich 🌍", "unit": "c"}"#;
    let args_b = r#"{"city": "東京"}"#;
    let frames = vec![
        data(&fake_openai::delta(
            json!({"role": "assistant", "content": null}),
            None,
        )),
        data(&fake_openai::delta(
            json!({"reasoning_content": "Two cities: "}),
            None,
        )),
        data(&fake_openai::delta(
            json!({"reasoning_content": "call twice 🤔"}),
            None,
        )),
        data(&fake_openai::delta(
            json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                "function": {"name": "get_weather", "arguments": ""}}]}),
            None,
        )),
        data(&fake_openai::delta(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": &args_a[..4]}}]}),
            None,
        )),
        data(&fake_openai::delta(
            json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                "function": {"name": "get_weather", "arguments": &args_b[..7]}}]}),
            None,
        )),
        data(&fake_openai::delta(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": &args_a[4..13]}}]}),
            None,
        )),
        data(&fake_openai::delta(
            json!({"tool_calls": [
                {"index": 0, "function": {"arguments": &args_a[13..]}},
                {"index": 1, "id": "", "function": {"arguments": &args_b[7..]}}
            ]}),
            None,
        )),
        data(&fake_openai::delta(json!({}), Some("tool_calls"))),
        data(&fake_openai::usage(20, 30)),
        data("[DONE]"),
    ];
    // Cut every 5 bytes: inside events, JSON tokens and UTF-8 characters.
    let fake = FakeOpenAi::start(vec![fake_openai::split_every(&frames, 5)], &[]).await;
    let server = server_for(&fake.url(), "").await;

    let mut request = ask("Weather in Zürich and Tokyo?");
    request.tools = vec![weather_tool()];
    request.tool_choice = Some(pb::ToolChoice {
        choice: Some(pb::tool_choice::Choice::Mode(
            pb::ToolChoiceMode::Required as i32,
        )),
    });
    request.parallel_tool_calls = Some(true);
    request.messages.push(pb::ChatMessage {
        role: pb::Role::Assistant as i32,
        tool_calls: vec![pb::ToolCall {
            id: "call_0".into(),
            r#type: "function".into(),
            function: Some(pb::FunctionCall {
                name: "get_weather".into(),
                arguments: r#"{"city":"Bern"}"#.into(),
            }),
        }],
        ..Default::default()
    });
    request.messages.push(pb::ChatMessage {
        role: pb::Role::Tool as i32,
        content: "12 °C".into(),
        tool_call_id: "call_0".into(),
        ..Default::default()
    });
    let (chunks, end) = drain(&mut server.stream_chat(request).await).await;
    end.expect("ok");

    assert_eq!(
        tool_calls_of(&chunks),
        [
            (
                "call_a".into(),
                "function".into(),
                "get_weather".into(),
                args_a.into()
            ),
            (
                "call_b".into(),
                "function".into(),
                "get_weather".into(),
                args_b.into()
            ),
        ]
    );
    let reasoning: String = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|c| c.delta.as_ref())
        .map(|d| d.reasoning.as_str())
        .collect();
    assert_eq!(reasoning, "Two cities: call twice 🤔");
    assert_eq!(text_of(&chunks, 0), "");
    assert_eq!(finish_of(&chunks, 0), [pb::FinishReason::ToolCalls as i32]);
    let sequences: Vec<u64> = chunks.iter().map(|c| c.sequence).collect();
    assert_eq!(sequences, (1..=chunks.len() as u64).collect::<Vec<_>>());

    let body = &fake.bodies()[0];
    assert_eq!(
        body["tools"],
        serde_json::json!([{"type": "function", "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        }}])
    );
    assert_eq!(body["tool_choice"], "required");
    assert_eq!(body["parallel_tool_calls"], true);
    assert_eq!(
        body["messages"][1],
        serde_json::json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Bern\"}"}}
        ]})
    );
    assert_eq!(
        body["messages"][2],
        serde_json::json!({"role": "tool", "content": "12 °C", "tool_call_id": "call_0"})
    );
}

#[tokio::test]
async fn refusal_and_content_filter_are_passed_on_never_turned_into_stop() {
    use serde_json::json;
    let frames = vec![
        data(&fake_openai::delta(
            json!({"role": "assistant", "refusal": "I can"}),
            None,
        )),
        data(&fake_openai::delta(
            json!({"refusal": "not help with that."}),
            None,
        )),
        data(&fake_openai::delta(
            json!({"content": "Partial"}),
            Some("content_filter"),
        )),
        data("[DONE]"),
    ];
    let fake = FakeOpenAi::start(vec![stream(frames)], &[]).await;
    let server = server_for(&fake.url(), "").await;
    let (chunks, end) = drain(&mut server.stream_chat(ask("something bad")).await).await;
    end.expect("ok");
    let refusal: String = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|c| c.delta.as_ref())
        .map(|d| d.refusal.as_str())
        .collect();
    assert_eq!(refusal, "I cannot help with that.");
    assert_eq!(text_of(&chunks, 0), "Partial");
    assert_eq!(
        finish_of(&chunks, 0),
        [pb::FinishReason::ContentFilter as i32]
    );
}

#[tokio::test]
async fn list_models_names_the_upstream_as_owner() {
    let fake = FakeOpenAi::start(vec![stream(completion(&["x"], "stop", None))], &[]).await;
    let server = server_for(&fake.url(), "").await;
    let models = server.list_models().await;
    let owner = |id: &str| {
        models
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.owned_by.clone())
    };
    assert_eq!(owner(MODEL).as_deref(), Some("fake"));
    assert_eq!(owner("echo").as_deref(), Some("agentstream"));
    assert_eq!(owner("tools").as_deref(), Some("agentstream"));
    assert!(models.iter().all(|m| m.created > 0));
}
