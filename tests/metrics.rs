//! `GET /metrics` as an operator's scraper sees it: each family moves when
//! the server does what it counts, and only then.

mod common;
#[path = "upstream/fake_openai.rs"]
#[allow(dead_code)]
mod fake_openai;

use std::{collections::BTreeMap, time::Duration};

use agentstream::{llm::openai::UpstreamSpec, pb};
use common::{TestServer, eventually, user};
use fake_openai::{After, FakeOpenAi, Reply, completion};
use futures::StreamExt;

/// Every sample of one scrape, by name with its labels
/// (`name{a="x",b="y"}`), exactly as exposed.
type Samples = BTreeMap<String, f64>;

async fn scrape(server: &TestServer) -> Samples {
    // reqwest is built without a TLS provider of its own (as in the server).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let addr = server.server.metrics_addr().expect("metrics endpoint");
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("scrape");
    assert!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        response.headers()
    );
    let text = response.text().await.expect("body");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').expect("sample line");
            (name.to_owned(), value.parse().expect("number"))
        })
        .collect()
}

fn get(samples: &Samples, name: &str) -> f64 {
    samples.get(name).copied().unwrap_or(0.0)
}

/// How much each of `names` moved between two scrapes.
fn moved(before: &Samples, after: &Samples, name: &str) -> f64 {
    get(after, name) - get(before, name)
}

async fn start() -> TestServer {
    TestServer::start_with(|c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"));
        c.mock_token_delay = Duration::from_millis(2);
    })
    .await
}

fn chat_request(model: &str, max_tokens: u32) -> pb::StreamChatRequest {
    pb::StreamChatRequest {
        messages: vec![user("count my tokens")],
        model: model.into(),
        max_tokens,
        include_usage: true,
        ..Default::default()
    }
}

const CHAT: &str = "service=\"agentstream.v1.ChatService\",method=\"StreamChat\"";

#[tokio::test]
async fn a_finished_chat_moves_calls_latency_and_tokens_by_model() {
    let server = start().await;
    let before = scrape(&server).await;
    let mut stream = server.stream_chat(chat_request("synthetic", 5)).await;
    let mut chunks = 0.0;
    let mut usage = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk");
        usage = chunk.usage.or(usage);
        chunks += 1.0;
    }
    let usage = usage.expect("usage");
    let after = eventually("the call is counted", || {
        let server = &server;
        async move {
            let after = scrape(server).await;
            (get(
                &after,
                &format!("agentstream_calls_total{{{CHAT},code=\"OK\"}}"),
            ) >= 1.0)
                .then_some(after)
        }
    })
    .await;
    let model = "model=\"synthetic\"";
    assert_eq!(
        moved(
            &before,
            &after,
            &format!("agentstream_calls_total{{{CHAT},code=\"OK\"}}")
        ),
        1.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            &format!("agentstream_time_to_first_chunk_seconds_count{{{model}}}")
        ),
        1.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            &format!("agentstream_inter_chunk_gap_seconds_count{{{model}}}")
        ),
        chunks - 1.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            &format!("agentstream_stream_duration_seconds_count{{{model}}}")
        ),
        1.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            &format!("agentstream_completion_tokens_total{{{model}}}")
        ),
        f64::from(usage.completion_tokens)
    );
    assert_eq!(
        moved(
            &before,
            &after,
            &format!("agentstream_prompt_tokens_total{{{model}}}")
        ),
        f64::from(usage.prompt_tokens)
    );
    assert_eq!(
        moved(&before, &after, "agentstream_tokens_generated_total"),
        f64::from(usage.completion_tokens)
    );
}

#[tokio::test]
async fn open_streams_and_generations_are_gauged_by_model_until_cancelled() {
    let server = start().await;
    let before = scrape(&server).await;
    let mut stream = server
        .chat()
        .stream_chat(pb::StreamChatRequest {
            n: 2,
            ..chat_request("synthetic", 100_000)
        })
        .await
        .expect("call")
        .into_inner();
    stream.next().await.expect("chunk").expect("ok");
    let open = scrape(&server).await;
    let labels = "method=\"StreamChat\",model=\"synthetic\"";
    assert_eq!(
        get(&open, &format!("agentstream_streams_by_model{{{labels}}}")),
        1.0
    );
    assert_eq!(
        get(
            &open,
            "agentstream_generations_by_model{model=\"synthetic\"}"
        ),
        2.0
    );
    assert_eq!(get(&open, "agentstream_active_streams"), 1.0);
    assert_eq!(get(&open, "agentstream_live_generations"), 2.0);
    drop(stream);
    let after = eventually("the cancellation is counted", || {
        let server = &server;
        async move {
            let after = scrape(server).await;
            (get(
                &after,
                "agentstream_cancellations_total{method=\"StreamChat\"}",
            ) >= 1.0)
                .then_some(after)
        }
    })
    .await;
    assert_eq!(
        get(&after, &format!("agentstream_streams_by_model{{{labels}}}")),
        0.0
    );
    assert_eq!(
        get(
            &after,
            "agentstream_generations_by_model{model=\"synthetic\"}"
        ),
        0.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            &format!("agentstream_calls_total{{{CHAT},code=\"CANCELLED\"}}")
        ),
        1.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            "agentstream_deadline_expiries_total{method=\"StreamChat\"}"
        ),
        0.0
    );
}

#[tokio::test]
async fn deadlines_and_bad_requests_are_counted_by_code() {
    let server = start().await;
    let before = scrape(&server).await;
    let mut request = tonic::Request::new(chat_request("synthetic", 100_000));
    request.set_timeout(Duration::from_millis(50));
    let mut stream = server.stream_chat(request).await;
    let status = loop {
        match stream.next().await.expect("the stream ends with an error") {
            Ok(_) => continue,
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    let invalid = server
        .chat()
        .stream_chat(pb::StreamChatRequest::default())
        .await
        .expect_err("no messages");
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    let after = scrape(&server).await;
    assert_eq!(
        moved(
            &before,
            &after,
            "agentstream_deadline_expiries_total{method=\"StreamChat\"}"
        ),
        1.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            &format!("agentstream_calls_total{{{CHAT},code=\"DEADLINE_EXCEEDED\"}}")
        ),
        1.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            &format!("agentstream_calls_total{{{CHAT},code=\"INVALID_ARGUMENT\"}}")
        ),
        1.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            "agentstream_cancellations_total{method=\"StreamChat\"}"
        ),
        0.0
    );
}

#[tokio::test]
async fn ingestion_moves_the_index_and_task_series() {
    let server = start().await;
    let before = scrape(&server).await;
    assert_eq!(get(&before, "agentstream_index_documents"), 0.0);
    let text = "Streams are pulled by the client. 流式输出。";
    server
        .ingest(vec![
            pb::Document {
                id: "a".into(),
                title: "A".into(),
                text: text.into(),
                ..Default::default()
            },
            pb::Document {
                id: "b".into(),
                title: "B".into(),
                text: text.into(),
                ..Default::default()
            },
        ])
        .await;
    let after = scrape(&server).await;
    assert_eq!(get(&after, "agentstream_index_documents"), 2.0);
    assert!(get(&after, "agentstream_index_bytes") > get(&before, "agentstream_index_bytes"));
    assert_eq!(
        moved(&before, &after, "agentstream_ingested_documents_total"),
        2.0
    );
    assert_eq!(
        moved(&before, &after, "agentstream_ingested_bytes_total"),
        2.0 * text.len() as f64
    );
    assert_eq!(
        get(
            &after,
            "agentstream_tasks{kind=\"ingest\",state=\"succeeded\"}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &after,
            "agentstream_tasks{kind=\"ingest\",state=\"running\"}"
        ),
        0.0
    );
}

#[tokio::test]
async fn upstream_requests_errors_and_retries_are_counted_by_upstream() {
    let upstream = FakeOpenAi::start(
        vec![
            Reply::Status {
                status: 503,
                headers: Vec::new(),
                body: "{\"error\":{\"message\":\"busy\"}}".into(),
            },
            Reply::Sse {
                frames: completion(&["Hello"], "stop", None),
                delay: Duration::from_millis(1),
                after: After::End,
            },
        ],
        &["fake-model"],
    )
    .await;
    let spec = UpstreamSpec::parse(&format!(
        "name=fake,url={},models=fake-model,retries=1",
        upstream.url()
    ))
    .expect("spec");
    let server = TestServer::start_with(|c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"));
        c.upstreams = vec![spec];
    })
    .await;
    let before = scrape(&server).await;
    let mut stream = server.stream_chat(chat_request("fake-model", 10)).await;
    while stream.next().await.transpose().expect("chunk").is_some() {}
    let after = scrape(&server).await;
    assert_eq!(
        moved(
            &before,
            &after,
            "agentstream_upstream_requests_total{upstream=\"fake\"}"
        ),
        2.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            "agentstream_upstream_errors_total{upstream=\"fake\",class=\"status_5xx\"}"
        ),
        1.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            "agentstream_upstream_retries_total{upstream=\"fake\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn kept_resumable_streams_are_gauged_by_state() {
    let server = start().await;
    let generating = "agentstream_resumable_streams{state=\"generating\"}";
    let ended = "agentstream_resumable_streams{state=\"ended\"}";
    let before = scrape(&server).await;
    assert_eq!(
        (get(&before, generating), get(&before, ended)),
        (0.0, 0.0),
        "both series are exposed from the start: {before:?}"
    );
    assert!(before.contains_key(generating) && before.contains_key(ended));

    let request = common::endless_resumable(1);
    let mut stream = server.stream_chat(request).await;
    let first = stream.next().await.expect("a chunk").expect("ok");
    let short = pb::StreamChatRequest {
        resumable: true,
        ..chat_request("synthetic", 3)
    };
    let finished = common::drain_ok(&mut server.stream_chat(short).await).await;
    assert!(!finished.is_empty());
    let during = scrape(&server).await;
    assert_eq!((get(&during, generating), get(&during, ended)), (1.0, 1.0));

    server
        .chat()
        .cancel_stream(pb::CancelStreamRequest {
            stream_id: first.stream_id.clone(),
        })
        .await
        .expect("CancelStream");
    let after = scrape(&server).await;
    assert_eq!((get(&after, generating), get(&after, ended)), (0.0, 2.0));
}
