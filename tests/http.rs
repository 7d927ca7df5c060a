//! The HTTP edge's infrastructure through a real HTTP client against a
//! server on 127.0.0.1:0: probes, metrics, errors for unknown routes and
//! methods, CORS, request ids, gRPC-Web (binary and text) and h2c.

mod common;

use std::time::Duration;

use agentstream::pb;
use base64::Engine as _;
use common::{TestServer, grpc_web_frame, http_client as client, http_url as url, json_of, user};
use futures::StreamExt;
use prost::Message;
use reqwest::{StatusCode, header};

#[tokio::test]
async fn probes_answer_while_serving() {
    let server = TestServer::start().await;
    let health = server.get("/healthz").await;
    assert_eq!(health.status(), StatusCode::OK);
    let ready = server.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(json_of(ready).await["status"], "serving");
}

#[tokio::test]
async fn metrics_are_the_prometheus_text_of_the_grpc_side() {
    let server = TestServer::start().await;
    let response = server.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain")
    );
    let text = response.text().await.expect("text");
    for series in [
        "agentstream_active_streams 0",
        "agentstream_live_generations 0",
        "agentstream_tokens_generated_total 0",
    ] {
        assert!(text.lines().any(|l| l == series), "{series} in {text}");
    }
}

#[tokio::test]
async fn readyz_is_503_while_draining_and_new_calls_are_refused() {
    let server = TestServer::start_with(|c| c.shutdown_grace = Duration::from_secs(30)).await;
    // An in-flight stream keeps the server draining rather than stopped.
    let mut request = pb::StreamChatRequest {
        messages: vec![user("go")],
        model: "synthetic".into(),
        max_tokens: 200_000,
        ..Default::default()
    };
    let mut stream = server.stream_chat(request.clone()).await;
    stream.next().await.expect("first chunk").expect("chunk");
    server.shutdown.request();
    let client = client();
    let ready = common::eventually("readyz 503", || {
        let request = client.get(url(&server, "/readyz")).send();
        async move {
            let response = request.await.ok()?;
            (response.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(response)
        }
    })
    .await;
    assert_eq!(json_of(ready).await["status"], "draining");
    let health = server.get("/healthz").await;
    assert_eq!(health.status(), StatusCode::OK);
    // New streams are refused while in-flight ones go on.
    request.max_tokens = 1;
    let refused = server.chat().stream_chat(request).await;
    assert!(refused.is_err(), "a new call was accepted while draining");
    stream
        .next()
        .await
        .expect("still streaming")
        .expect("chunk");
    drop(stream);
    server
        .until("no stream left", |m| m.active_streams == 0)
        .await;
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_get_openai_error_json() {
    let server = TestServer::start().await;
    let missing = server.get("/v1/nothing").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let body = json_of(missing).await;
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("/v1/nothing")
    );
    assert!(body["error"].get("param").is_some(), "{body}");

    let wrong = server.post_empty("/healthz").await;
    assert_eq!(wrong.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(wrong.headers().contains_key(header::ALLOW));
    let body = json_of(wrong).await;
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let server = TestServer::start().await;
    for id in ["my-id-42", "my request 42"] {
        let echoed = client()
            .get(url(&server, "/healthz"))
            .header("x-request-id", id)
            .send()
            .await
            .expect("healthz");
        assert_eq!(echoed.headers()["x-request-id"], id);
    }
    let generated = server.get("/v1/nothing").await;
    assert_eq!(generated.headers()["x-request-id"].len(), 36);
}

/// `GET /healthz` as a page on `origin` makes it.
async fn get_from(server: &TestServer, origin: &str) -> reqwest::Response {
    client()
        .get(url(server, "/healthz"))
        .header(header::ORIGIN, origin)
        .send()
        .await
        .expect("get")
}

/// Asserts that the comma-separated header `name` lists each of `items`.
fn assert_lists(headers: &header::HeaderMap, name: header::HeaderName, items: &[&str]) {
    let list = headers[&name].to_str().expect("ascii");
    for item in items {
        assert!(list.contains(item), "{name}: {list}");
    }
}

async fn preflight(server: &TestServer) -> reqwest::Response {
    server.preflight("content-type,last-event-id").await
}

#[tokio::test]
async fn cors_is_off_by_default() {
    let server = TestServer::start().await;
    let response = preflight(&server).await;
    assert!(
        !response
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
        "{:?}",
        response.headers()
    );
}

#[tokio::test]
async fn cors_allows_the_configured_origins() {
    let server = TestServer::start_with(|c| {
        c.cors_allow_origins = vec!["http://app.example".into()];
    })
    .await;
    let response = preflight(&server).await;
    assert!(response.status().is_success(), "{}", response.status());
    let headers = response.headers();
    assert_eq!(
        headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "http://app.example"
    );
    assert_lists(
        headers,
        header::ACCESS_CONTROL_ALLOW_METHODS,
        &["GET", "POST", "DELETE", "OPTIONS"],
    );
    assert_lists(
        headers,
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        &[
            "content-type",
            "authorization",
            "x-request-id",
            "last-event-id",
        ],
    );
    // What a page may read of a response: its request id, a resumable
    // stream's id (to resume it), where a task is, when to retry.
    let answer = get_from(&server, "http://app.example").await;
    assert_lists(
        answer.headers(),
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        &[
            "x-request-id",
            "x-agentstream-stream-id",
            "location",
            "retry-after",
        ],
    );
    // Another origin is not let in.
    let other = get_from(&server, "http://evil.example").await;
    assert!(
        !other
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    );

    let any = TestServer::start_with(|c| c.cors_allow_origins = vec!["*".into()]).await;
    let response = preflight(&any).await;
    assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
}

/// Splits a gRPC-Web response body into its messages and its trailers.
fn grpc_web_frames(mut body: &[u8]) -> (Vec<Vec<u8>>, String) {
    let mut messages = Vec::new();
    let mut trailers = String::new();
    while !body.is_empty() {
        let flag = body[0];
        let length = u32::from_be_bytes(body[1..5].try_into().expect("4 bytes")) as usize;
        let payload = &body[5..5 + length];
        if flag & 0x80 == 0 {
            messages.push(payload.to_vec());
        } else {
            trailers.push_str(std::str::from_utf8(payload).expect("ascii trailers"));
        }
        body = &body[5 + length..];
    }
    (messages, trailers)
}

#[tokio::test]
async fn grpc_web_streams_a_chat_in_binary_mode() {
    let server = TestServer::start().await;
    let request = pb::StreamChatRequest {
        messages: vec![user("grpc-web from a browser")],
        include_usage: true,
        ..Default::default()
    };
    let response = client()
        .post(url(&server, "/agentstream.v1.ChatService/StreamChat"))
        .header(header::CONTENT_TYPE, "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("x-request-id", "web-1")
        .body(grpc_web_frame(&request))
        .send()
        .await
        .expect("grpc-web call");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/grpc-web+proto"
    );
    assert_eq!(response.headers()["x-request-id"], "web-1");
    let body = response.bytes().await.expect("body");
    let (messages, trailers) = grpc_web_frames(&body);
    let chunks: Vec<_> = messages
        .iter()
        .map(|m| pb::StreamChatResponse::decode(&m[..]).expect("chunk"))
        .collect();
    assert!(chunks.len() > 3, "{} chunks", chunks.len());
    assert!(common::text_of(&chunks, 0).contains("grpc-web from a browser"));
    assert!(chunks.last().expect("usage").usage.is_some());
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
}

#[tokio::test]
async fn grpc_web_text_mode_answers_in_base64_with_errors_in_trailers() {
    let server = TestServer::start().await;
    let base64 = base64::engine::general_purpose::STANDARD;
    let request = pb::GetTaskRequest {
        task_id: "no-such-task".into(),
    };
    // With `Accept` naming text mode, and with curl's `*/*`.
    for accept in ["application/grpc-web-text", "*/*"] {
        let response = client()
            .post(url(&server, "/agentstream.v1.TaskService/GetTask"))
            .header(header::CONTENT_TYPE, "application/grpc-web-text")
            .header(header::ACCEPT, accept)
            .body(base64.encode(grpc_web_frame(&request)))
            .send()
            .await
            .expect("grpc-web-text call");
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()[header::CONTENT_TYPE]
                .to_str()
                .expect("ascii")
                .starts_with("application/grpc-web-text"),
            "{accept}: {:?}",
            response.headers()
        );
        let in_headers = response
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().expect("ascii").to_owned());
        let text = response.text().await.expect("body");
        // Frames are base64-encoded one by one, padded: decode quad by quad.
        let mut body = Vec::new();
        for quad in text.as_bytes().chunks(4) {
            body.extend(base64.decode(quad).expect("base64"));
        }
        let (messages, trailers) = grpc_web_frames(&body);
        assert!(messages.is_empty());
        assert!(
            trailers.contains("grpc-status:5") || in_headers.as_deref() == Some("5"),
            "{trailers} {in_headers:?}"
        );
    }
}

#[tokio::test]
async fn grpc_over_h2c_reaches_the_same_services_on_the_http_port() {
    let server = TestServer::start().await;
    let channel = common::connect(server.server.http_addr().expect("HTTP edge")).await;
    let mut client = pb::task_service_client::TaskServiceClient::new(channel);
    let listed = client
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .expect("ListTasks over h2c");
    assert!(listed.into_inner().tasks.is_empty());
}

#[tokio::test]
async fn http_listen_off_serves_no_http() {
    let server = TestServer::start_with(|c| c.http_listen = "off".parse().expect("off")).await;
    assert_eq!(server.server.http_addr(), None);
}
