//! Trace export: the server binary, started with `--otlp-endpoint`, sends its
//! spans to a fake OTLP/HTTP collector (protobuf on 127.0.0.1:0); a client's
//! W3C `traceparent` makes the call's span a child of the client's trace,
//! and the upstream model server receives the trace context with its
//! request.

#[path = "upstream/fake_openai.rs"]
#[allow(dead_code)]
mod fake_openai;

use std::{process::Stdio, time::Duration};

use agentstream::pb::{self, chat_service_client::ChatServiceClient};
use axum::{Router, body::Bytes, extract::State, routing::post};
use fake_openai::{FakeOpenAi, Reply, completion};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
};

/// What the fake collector keeps of each span.
#[derive(Debug, Clone)]
struct SeenSpan {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

/// A fake OTLP/HTTP collector: every span it receives goes to the channel.
async fn collector() -> (String, mpsc::UnboundedReceiver<SeenSpan>) {
    let (spans, seen) = mpsc::unbounded_channel();
    let app = Router::new()
        .route("/v1/traces", post(export))
        .with_state(spans);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("collector binds");
    let addr = listener.local_addr().expect("collector addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

async fn export(State(spans): State<mpsc::UnboundedSender<SeenSpan>>, body: Bytes) -> Vec<u8> {
    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
    for span in request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
    {
        let _ = spans.send(SeenSpan {
            name: span.name.clone(),
            trace_id: hex(&span.trace_id),
            span_id: hex(&span.span_id),
            parent_span_id: hex(&span.parent_span_id),
        });
    }
    ExportTraceServiceResponse::default().encode_to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The server binary with trace export on; returns it and its address.
async fn start_server(otlp: &str, upstream: &str, data: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentstream"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(["--mock-token-delay", "0", "--otlp-endpoint", otlp])
        .arg("--upstream")
        .arg(format!("name=fake,url={upstream},models=fake-model"))
        .arg("--data-dir")
        .arg(data)
        // Export each batch at once rather than every 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "10")
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("server starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr = loop {
        let line = lines
            .next_line()
            .await
            .expect("server log")
            .expect("the server exited before listening");
        let fields = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v.get("fields").cloned());
        if let Some(fields) = fields
            && fields["message"] == "agentstream listening"
        {
            break fields["addr"].as_str().expect("addr").to_owned();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, format!("http://{addr}"))
}

/// A streaming chat call with `traceparent` in its metadata, read to its end.
async fn chat(server: &str, model: &str, traceparent: &str) {
    let mut client = ChatServiceClient::connect(server.to_owned())
        .await
        .expect("connect");
    let mut request = tonic::Request::new(pb::StreamChatRequest {
        model: model.into(),
        messages: vec![pb::ChatMessage {
            role: pb::Role::User as i32,
            content: "trace me".into(),
            ..Default::default()
        }],
        max_tokens: 5,
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().expect("ascii"));
    let mut stream = client
        .stream_chat(request)
        .await
        .expect("call")
        .into_inner();
    while stream.message().await.expect("chunk").is_some() {}
}

/// Waits for spans until `done` holds over all seen so far.
async fn spans_until(
    seen: &mut mpsc::UnboundedReceiver<SeenSpan>,
    done: impl Fn(&[SeenSpan]) -> bool,
) -> Vec<SeenSpan> {
    let mut all = Vec::new();
    let wait = async {
        while !done(&all) {
            all.push(seen.recv().await.expect("collector alive"));
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .is_err()
    {
        panic!("the collector did not see the expected spans; it saw {all:#?}");
    }
    all
}

#[tokio::test]
async fn spans_reach_the_collector_in_the_clients_trace_and_go_on_upstream() {
    let (otlp, mut seen) = collector().await;
    let upstream = FakeOpenAi::start(
        vec![Reply::Sse {
            frames: completion(&["Hello", " there"], "stop", None),
            delay: Duration::from_millis(1),
            after: fake_openai::After::End,
        }],
        &["fake-model"],
    )
    .await;
    let data = tempfile::tempdir().expect("tempdir");
    let (_server, addr) = start_server(&otlp, &upstream.url(), data.path()).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{client_span}-01");
    chat(&addr, "echo", &traceparent).await;
    chat(&addr, "fake-model", &traceparent).await;

    let in_trace = |s: &SeenSpan| s.trace_id == trace_id;
    let spans = spans_until(&mut seen, |all| {
        let calls = all
            .iter()
            .filter(|s| in_trace(s) && s.name == "call" && s.parent_span_id == client_span)
            .count();
        calls == 2 && all.iter().any(|s| in_trace(s) && s.name == "upstream")
    })
    .await;
    let calls: Vec<_> = spans
        .iter()
        .filter(|s| in_trace(s) && s.name == "call")
        .collect();
    for name in ["generation", "upstream"] {
        let child = spans
            .iter()
            .find(|s| in_trace(s) && s.name == name)
            .unwrap_or_else(|| panic!("no {name} span in {spans:#?}"));
        assert!(
            spans.iter().any(|s| s.span_id == child.parent_span_id),
            "the {name} span's parent was not exported: {spans:#?}"
        );
    }
    assert_eq!(calls.len(), 2);

    let sent = upstream.traceparents();
    let sent = sent
        .last()
        .cloned()
        .flatten()
        .expect("the upstream request carried a traceparent");
    let parts: Vec<_> = sent.split('-').collect();
    assert_eq!(parts.len(), 4, "{sent}");
    assert_eq!(
        parts[1], trace_id,
        "the upstream request is in the client's trace"
    );
    assert_ne!(
        parts[2], client_span,
        "the upstream request has its own parent span"
    );
}
