//! Usage of calls cut short, as billing needs it: the server binary with
//! JSON logs, a tonic and an HTTP client. A chat call that is cancelled,
//! runs past its deadline or fails mid-stream reports the prompt and
//! completion tokens it used on its closing log line, and the token counter
//! on `/metrics` moved by exactly those completion tokens. What an upstream
//! logs while the call streams carries the call's request id.

mod common;
#[allow(dead_code)]
#[path = "upstream/fake_openai.rs"]
mod fake_openai;

use std::{net::SocketAddr, time::Duration};

use agentstream::pb::{self, chat_service_client::ChatServiceClient};
use common::{PATIENCE, ask, binary::Binary, connect, eventually, http_client};
use fake_openai::{FakeOpenAi, content, data};
use futures::StreamExt;
use serde_json::{Value, json};
use tonic::transport::Channel;

/// The server binary on free ports with JSON logs, and its addresses.
struct Process {
    binary: Binary,
    grpc: SocketAddr,
    http: SocketAddr,
}

impl Process {
    async fn start(extra: &[&str]) -> Self {
        let mut args = vec!["--http-listen", "127.0.0.1:0"];
        args.extend(["--log-format", "json", "--mock-token-delay", "1ms"]);
        args.extend(extra);
        let mut process = Self {
            binary: Binary::serve(&args),
            grpc: "0.0.0.0:0".parse().expect("addr"),
            http: "0.0.0.0:0".parse().expect("addr"),
        };
        let addr = |line: &Value| {
            line["fields"]["addr"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .expect("addr")
        };
        process.http = addr(
            &process
                .next(|l| l["fields"]["message"] == "http listening")
                .await,
        );
        process.grpc = addr(
            &process
                .next(|l| l["fields"]["message"] == "agentstream listening")
                .await,
        );
        process
    }

    /// The next JSON log line matching `wanted`.
    async fn next(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        let json = |line: &str| serde_json::from_str::<Value>(line).ok();
        let line = self
            .binary
            .next_line(PATIENCE, |line| json(line).is_some_and(|l| wanted(&l)))
            .await
            .expect("the server is running");
        json(&line).expect("JSON")
    }

    /// The closing line of the call with request id `id`: its span's fields.
    async fn closing_line(&mut self, id: &str) -> Value {
        let line = self
            .next(|l| l["span"]["request_id"] == id && !l["span"]["outcome"].is_null())
            .await;
        line["span"].clone()
    }

    async fn chat(&self) -> ChatServiceClient<Channel> {
        ChatServiceClient::new(connect(self.grpc).await)
    }

    /// One unlabelled series from `/metrics`.
    async fn metric(&self, name: &str) -> u64 {
        common::scrape_series(&format!("http://{}/metrics", self.http), name).await
    }

    /// Waits until no generation runs.
    async fn idle(&self) {
        eventually("no live generation", || async {
            (self.metric("agentstream_live_generations").await == 0).then_some(())
        })
        .await;
    }
}

fn with_id<T>(message: T, id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-request-id", id.parse().expect("ascii"));
    request
}

fn tokens(span: &Value) -> (u64, u64) {
    let field = |name: &str| {
        span[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} missing in {span}"))
    };
    (field("prompt_tokens"), field("completion_tokens"))
}

fn long_request() -> pb::StreamChatRequest {
    pb::StreamChatRequest {
        model: "synthetic".into(),
        max_tokens: 200_000,
        ..ask("Count every token, even of an answer cut short.")
    }
}

#[tokio::test]
async fn cancelled_and_expired_chat_calls_log_the_tokens_they_used() {
    let mut server = Process::start(&[]).await;
    let mut chat = server.chat().await;

    // A whole call: its closing line agrees with its usage chunk.
    let mut whole = long_request();
    whole.max_tokens = 7;
    whole.include_usage = true;
    let mut stream = chat
        .stream_chat(with_id(whole, "usage-whole"))
        .await
        .expect("call")
        .into_inner();
    let mut usage = None;
    while let Some(chunk) = stream.next().await {
        usage = chunk.expect("chunk").usage.or(usage);
    }
    let usage = usage.expect("usage chunk");
    let span = server.closing_line("usage-whole").await;
    assert_eq!(span["outcome"], "ok", "{span}");
    assert_eq!(
        tokens(&span),
        (
            u64::from(usage.prompt_tokens),
            u64::from(usage.completion_tokens)
        )
    );
    let prompt = u64::from(usage.prompt_tokens);
    assert!(prompt > 0);

    // Cancelled after a few chunks.
    server.idle().await;
    let before = server.metric("agentstream_tokens_generated_total").await;
    let mut stream = chat
        .stream_chat(with_id(long_request(), "usage-cancelled"))
        .await
        .expect("call")
        .into_inner();
    for _ in 0..5 {
        stream.next().await.expect("a chunk").expect("ok");
    }
    drop(stream);
    let span = server.closing_line("usage-cancelled").await;
    assert_eq!(span["outcome"], "cancelled", "{span}");
    let (logged_prompt, completion) = tokens(&span);
    assert_eq!(logged_prompt, prompt, "the same prompt as the whole call's");
    assert!(completion >= 5, "at least the tokens received: {span}");
    assert!(completion < 200_000, "{span}");
    server.idle().await;
    let after = server.metric("agentstream_tokens_generated_total").await;
    assert_eq!(
        after - before,
        completion,
        "the counter moved by the logged tokens"
    );

    // Ended by its deadline.
    let mut request = with_id(long_request(), "usage-deadline");
    request.set_timeout(Duration::from_millis(200));
    let mut stream = chat.stream_chat(request).await.expect("call").into_inner();
    let mut received = 0u64;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(_) => received += 1,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
                break;
            }
        }
    }
    let span = server.closing_line("usage-deadline").await;
    assert_eq!(span["outcome"], "error", "{span}");
    assert_eq!(span["code"], "DeadlineExceeded", "{span}");
    let (logged_prompt, completion) = tokens(&span);
    assert_eq!(logged_prompt, prompt);
    assert!(
        completion >= received && completion > 0,
        "{received} chunks: {span}"
    );
}

#[tokio::test]
async fn a_chat_call_failing_mid_stream_logs_the_tokens_it_used() {
    // Three one-token pieces, then the upstream fails.
    let frames = vec![
        data(&content(0, "Hello", None)),
        data(&content(0, " world", None)),
        data(&content(0, " again", None)),
        data(r#"{"error":{"message":"the GPU fell over","type":"server_error"}}"#),
    ];
    let fake = FakeOpenAi::start(vec![fake_openai::stream(frames)], &[]).await;
    let upstream = format!("name=fake,url={},models=fake-model", fake.url());
    let mut server = Process::start(&["--upstream", &upstream]).await;

    let body = http_client()
        .post(format!("http://{}/v1/chat/completions", server.http))
        .header("x-request-id", "usage-failed")
        .json(&json!({"model": "fake-model", "stream": true,
            "messages": [{"role": "user", "content": "Say hello, twice."}]}))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    assert!(body.contains("the GPU fell over"), "{body}");
    // The line the upstream's failure logs while the call streams carries
    // the call's request id.
    let warning = server
        .next(|l| l["fields"]["message"] == "upstream failed mid-stream")
        .await;
    let spans = warning["spans"].as_array().expect("the span list");
    assert!(
        spans.iter().any(|s| s["request_id"] == "usage-failed"),
        "{warning}"
    );
    let span = server.closing_line("usage-failed").await;
    assert_eq!(span["outcome"], "error", "{span}");
    let (prompt, completion) = tokens(&span);
    assert!(
        prompt > 0,
        "the prompt is counted though no usage came: {span}"
    );
    assert_eq!(completion, 3, "{span}");
}
