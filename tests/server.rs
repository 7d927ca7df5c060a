//! Server-wide behaviour: reflection, health, graceful shutdown, and the real
//! `agentstream` binary (JSON logs with request ids, exit 0 on SIGTERM).

mod common;

use std::time::Duration;

use agentstream::pb;
use common::{TestServer, ask, binary::Binary, connect, endless};
use futures::StreamExt;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::{v1, v1alpha};

#[tokio::test]
async fn reflection_v1_lists_every_service_and_describes_their_files() {
    let server = TestServer::start().await;
    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(server.channel.clone());
    let requests = [
        v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        },
        v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                    "agentstream.v1.RagService".into(),
                ),
            ),
        },
    ];
    let mut responses = client
        .server_reflection_info(futures::stream::iter(requests))
        .await
        .expect("reflection")
        .into_inner();

    let listed = match next_answer(&mut responses).await {
        Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
        }
        other => panic!("unexpected {other:?}"),
    };
    for service in [
        "agentstream.v1.ChatService",
        "agentstream.v1.RagService",
        "agentstream.v1.TaskService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            listed.iter().any(|s| s == service),
            "{service} not in {listed:?}"
        );
    }

    // The file comes back with its imports named, and each import (the
    // google.protobuf ones included) is served by name, so grpcurl and buf
    // curl can encode every message.
    let rag = next_files(&mut responses).await;
    let rag = rag
        .iter()
        .find(|f| f.name() == "agentstream/v1/rag.proto")
        .expect("rag.proto");
    for import in [
        "agentstream/v1/task.proto",
        "google/protobuf/timestamp.proto",
    ] {
        assert!(
            rag.dependency.iter().any(|d| d == import),
            "{import} not imported"
        );
    }
    let by_name = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1::server_reflection_request::MessageRequest::FileByFilename(
                "google/protobuf/timestamp.proto".into(),
            ),
        ),
    };
    let mut responses = client
        .server_reflection_info(futures::stream::iter([by_name]))
        .await
        .expect("reflection")
        .into_inner();
    let timestamp = next_files(&mut responses).await;
    assert!(
        timestamp
            .iter()
            .any(|f| f.name() == "google/protobuf/timestamp.proto")
    );
}

/// What the next answer of a reflection stream carries.
async fn next_answer(
    responses: &mut tonic::Streaming<v1::ServerReflectionResponse>,
) -> Option<v1::server_reflection_response::MessageResponse> {
    let answer = responses.next().await.expect("answer").expect("ok");
    answer.message_response
}

async fn next_files(
    responses: &mut tonic::Streaming<v1::ServerReflectionResponse>,
) -> Vec<prost_types::FileDescriptorProto> {
    match next_answer(responses).await {
        Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) => {
            files
                .file_descriptor_proto
                .iter()
                .map(|bytes| {
                    <prost_types::FileDescriptorProto as prost::Message>::decode(bytes.as_slice())
                        .expect("descriptor")
                })
                .collect()
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn reflection_v1alpha_is_served_too() {
    let server = TestServer::start().await;
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(server.channel.clone());
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut responses = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let answer = responses.next().await.expect("answer").expect("ok");
    assert!(format!("{answer:?}").contains("agentstream.v1.ChatService"));
}

#[tokio::test]
async fn health_reports_each_service() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel.clone());
    let status = |service: &str| {
        let mut health = health.clone();
        let service = service.to_owned();
        async move {
            health
                .check(HealthCheckRequest { service })
                .await
                .map(|r| r.into_inner().status)
        }
    };
    assert_eq!(
        status("").await.expect("overall"),
        ServingStatus::Serving as i32
    );
    assert_eq!(
        status("agentstream.v1.ChatService").await.expect("chat"),
        ServingStatus::Serving as i32
    );
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await;
    assert_eq!(unknown.expect_err("unknown").code(), Code::NotFound);
}

#[tokio::test]
async fn shutdown_drains_then_ends_in_flight_streams_with_unavailable() {
    let server = TestServer::start_with(|c| {
        c.mock_token_delay = Duration::from_millis(10);
        c.shutdown_grace = Duration::from_millis(300);
    })
    .await;
    let mut health = HealthClient::new(server.channel.clone());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "agentstream.v1.ChatService".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(
        watch.next().await.expect("status").expect("ok").status,
        ServingStatus::Serving as i32
    );

    let mut stream = server.stream_chat(endless(1)).await;
    stream.next().await.expect("chunk").expect("ok");
    server.shutdown.request();

    // Health turns NOT_SERVING, and the in-flight stream keeps flowing while
    // the grace period lasts...
    assert_eq!(
        watch.next().await.expect("status").expect("ok").status,
        ServingStatus::NotServing as i32
    );
    stream
        .next()
        .await
        .expect("chunk during grace")
        .expect("ok");
    // ...then ends with UNAVAILABLE.
    let status = loop {
        match stream.next().await {
            Some(Ok(_)) => continue,
            Some(Err(status)) => break status,
            None => panic!("stream ended OK during shutdown"),
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let metrics = server.metrics.clone();
    let addr = server.server.local_addr();
    server.server.wait().await.expect("server stops cleanly");
    assert_eq!(metrics.snapshot().live_generations, 0);
    // No new calls once stopped.
    let refused = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await;
    assert!(refused.is_err());
}

#[tokio::test]
async fn shutdown_lets_streams_that_finish_within_the_grace_period_complete() {
    let server = TestServer::start_with(|c| {
        c.mock_token_delay = Duration::from_millis(2);
        c.shutdown_grace = Duration::from_secs(30);
    })
    .await;
    let mut stream = server.stream_chat(ask("finish me")).await;
    stream.next().await.expect("chunk").expect("ok");
    server.shutdown.request();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        for choice in chunk.expect("no error during a graceful drain").choices {
            text.push_str(&choice.delta.expect("delta").content);
        }
    }
    assert!(text.contains("finish me"));
    // The server stops as soon as the last call is done, long before 30 s.
    tokio::time::timeout(Duration::from_secs(10), server.server.wait())
        .await
        .expect("stops without waiting for the grace period")
        .expect("clean stop");
}

/// Runs the real binary, checks a call is logged as JSON with its request id,
/// and that SIGTERM makes it exit 0.
#[tokio::test]
async fn the_binary_logs_json_per_call_and_exits_zero_on_sigterm() {
    let mut binary = Binary::serve(&[
        "--http-listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--mock-token-delay",
        "0",
    ]);
    let (_, addr) = binary.listening(common::PATIENCE).await;
    let channel = connect(addr).await;
    let mut chat = pb::chat_service_client::ChatServiceClient::new(channel);
    let mut request = tonic::Request::new(ask("log me"));
    request
        .metadata_mut()
        .insert("x-request-id", "req-from-test-42".parse().expect("ascii"));
    let mut stream = chat.stream_chat(request).await.expect("call").into_inner();
    common::drain_ok(&mut stream).await;
    let logged = binary
        .next_line_with("req-from-test-42", common::PATIENCE)
        .await;
    for field in [
        "\"outcome\":\"ok\"",
        "\"model\":\"echo\"",
        "\"method\":\"agentstream.v1.ChatService/StreamChat\"",
        "\"chunks\":",
    ] {
        assert!(logged.contains(field), "{field} missing in {logged}");
    }

    binary.signal("TERM");
    let status = binary.exit_status().await;
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
}

/// Reads one metric from the Prometheus endpoint over HTTP.
async fn scrape(addr: std::net::SocketAddr, name: &str) -> i64 {
    common::scrape_series(&format!("http://{addr}/metrics"), name).await
}

#[tokio::test]
async fn metrics_endpoint_shows_streams_open_and_closed() {
    let server = TestServer::start_with(|c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"));
        c.mock_token_delay = Duration::from_millis(20);
    })
    .await;
    let addr = server.server.metrics_addr().expect("metrics enabled");
    assert_eq!(scrape(addr, "agentstream_active_streams").await, 0);

    let mut stream = server.stream_chat(endless(1)).await;
    stream.next().await.expect("chunk").expect("ok");
    assert_eq!(scrape(addr, "agentstream_active_streams").await, 1);
    assert_eq!(scrape(addr, "agentstream_live_generations").await, 1);
    assert!(scrape(addr, "agentstream_tokens_generated_total").await >= 1);

    drop(stream);
    common::eventually("stream closed in metrics", || async {
        (scrape(addr, "agentstream_active_streams").await == 0
            && scrape(addr, "agentstream_live_generations").await == 0)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn reflection_describes_the_google_rpc_error_details() {
    // Error statuses carry google.rpc.BadRequest / RetryInfo details; serving
    // their descriptors (and the google.protobuf.Duration they import) lets
    // grpcurl and other reflection clients decode them.
    let server = TestServer::start().await;
    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(server.channel.clone());
    let ask = |request| v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = client
        .server_reflection_info(futures::stream::iter([ask(
            v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                "google.rpc.BadRequest".into(),
            ),
        )]))
        .await
        .expect("reflection")
        .into_inner();
    let files = next_files(&mut responses).await;
    let details = files
        .iter()
        .find(|f| f.message_type.iter().any(|m| m.name() == "BadRequest"))
        .expect("the file defining google.rpc.BadRequest");
    assert_eq!(details.package(), "google.rpc");
    for import in &details.dependency {
        let mut responses = client
            .server_reflection_info(futures::stream::iter([ask(
                v1::server_reflection_request::MessageRequest::FileByFilename(import.clone()),
            )]))
            .await
            .expect("reflection")
            .into_inner();
        let served = next_files(&mut responses).await;
        assert!(
            served.iter().any(|f| f.name() == import),
            "{import} not served"
        );
    }
}
