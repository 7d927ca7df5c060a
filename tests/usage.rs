//! Usage of calls cut short, as billing needs it: the server binary with
//! JSON logs, a tonic and an HTTP client. A chat call that is cancelled,
//! runs past its deadline or fails mid-stream reports the prompt and
//! completion tokens it used on its closing log line, and the token counter
//! on `/metrics` moved by exactly those completion tokens.

mod common;
#[allow(dead_code)]
#[path = "upstream/fake_openai.rs"]
mod fake_openai;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use agentstream::pb::{self, chat_service_client::ChatServiceClient};
use common::{PATIENCE, ask, connect, eventually, http_client};
use fake_openai::{FakeOpenAi, content, data};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// The server binary on free ports with JSON logs, and its log lines.
struct Binary {
    child: Child,
    lines: mpsc::Receiver<Value>,
    grpc: SocketAddr,
    http: SocketAddr,
    _data: tempfile::TempDir,
}

impl Binary {
    async fn start(extra: &[String]) -> Self {
        let data = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_agentstream"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .args(["--log-format", "json", "--mock-token-delay", "1ms"])
            .args(extra)
            .arg("--data-dir")
            .arg(data.path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel(4096);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let Ok(line) = serde_json::from_str(&line) else {
                    continue;
                };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        let mut binary = Self {
            child,
            lines,
            grpc: "0.0.0.0:0".parse().expect("addr"),
            http: "0.0.0.0:0".parse().expect("addr"),
            _data: data,
        };
        let addr = |line: &Value| {
            line["fields"]["addr"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .expect("addr")
        };
        binary.http = addr(
            &binary
                .next(|l| l["fields"]["message"] == "http listening")
                .await,
        );
        binary.grpc = addr(
            &binary
                .next(|l| l["fields"]["message"] == "agentstream listening")
                .await,
        );
        binary
    }

    /// The next log line matching `wanted`.
    async fn next(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        loop {
            let line = tokio::time::timeout(PATIENCE, self.lines.recv())
                .await
                .expect("a log line in time")
                .expect("the server is running");
            if wanted(&line) {
                return line;
            }
        }
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
        let text = http_client()
            .get(format!("http://{}/metrics", self.http))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("body");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    }

    /// Waits until no generation runs.
    async fn idle(&self) {
        eventually("no live generation", || async {
            (self.metric("agentstream_live_generations").await == 0).then_some(())
        })
        .await;
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    let mut server = Binary::start(&[]).await;
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
    let mut server = Binary::start(&["--upstream".into(), upstream]).await;

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
    let span = server.closing_line("usage-failed").await;
    assert_eq!(span["outcome"], "error", "{span}");
    let (prompt, completion) = tokens(&span);
    assert!(
        prompt > 0,
        "the prompt is counted though no usage came: {span}"
    );
    assert_eq!(completion, 3, "{span}");
}
