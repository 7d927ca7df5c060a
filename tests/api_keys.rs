//! API keys (`--api-keys-file`): one check for gRPC, gRPC-Web and HTTP,
//! through a tonic client and an HTTP client against a real server.

mod common;

use std::path::PathBuf;

use agentstream::{config::ServeConfig, pb, server::Server};
use common::{TestServer, ask, endless, grpc_web_frame, http_client, http_url, send, with_key};
use futures::StreamExt;
use prost::Message;
use reqwest::{StatusCode, header};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::v1;

const ALICE: &str = "sk-alice-3f9a0c1e7b2d4a68";
const BOB: &str = "sk-bob-51c7e2a9d0b34f16";

/// A keys file for alice and bob (and a comment) in `dir`.
fn keys_file(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("keys");
    std::fs::write(&path, format!("# test keys\nalice:{ALICE}\n\nbob:{BOB}\n")).expect("keys file");
    path
}

/// A server that requires keys, with `tweak` applied on top.
async fn keyed_server(tweak: impl FnOnce(&mut ServeConfig)) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = keys_file(&dir);
    let server = TestServer::start_with(|c| {
        c.api_keys_file = Some(path);
        tweak(c);
    })
    .await;
    (server, dir)
}

#[tokio::test]
async fn grpc_calls_need_a_configured_key() {
    let (server, _dir) = keyed_server(|_| {}).await;
    let mut chat = server.chat();

    let refused = chat.stream_chat(ask("hi")).await.expect_err("no key");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("Bearer"), "{refused:?}");
    let refused = chat
        .list_models(pb::ListModelsRequest::default())
        .await
        .expect_err("no key");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let wrong = chat
        .stream_chat(with_key(ask("hi"), "sk-alice-3f9a0c1e7b2d4a69"))
        .await
        .expect_err("wrong key");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert!(!wrong.message().contains("sk-"), "{wrong:?}");
    let unknown_task = server
        .tasks()
        .get_task(pb::GetTaskRequest {
            task_id: "nope".into(),
        })
        .await
        .expect_err("no key");
    assert_eq!(unknown_task.code(), Code::Unauthenticated);

    // An unknown model without a key learns nothing about the models served.
    let probe = chat
        .stream_chat(pb::StreamChatRequest {
            model: "gpt-probe".into(),
            ..ask("hi")
        })
        .await
        .expect_err("no key");
    assert_eq!(probe.code(), Code::Unauthenticated);
    assert!(!probe.message().contains("echo"), "{probe:?}");

    // With a key: served as usual; both keys work.
    for key in [ALICE, BOB] {
        let mut stream = chat
            .stream_chat(with_key(ask("with a key"), key))
            .await
            .expect("served")
            .into_inner();
        let chunks = common::drain_ok(&mut stream).await;
        assert!(common::text_of(&chunks, 0).contains("with a key"));
    }
    let models = chat
        .list_models(with_key(pb::ListModelsRequest::default(), ALICE))
        .await
        .expect("models")
        .into_inner();
    assert!(models.models.iter().any(|m| m.id == "echo"), "{models:?}");
    // ...and an unknown model is NOT_FOUND once the caller has a key.
    let not_found = chat
        .stream_chat(with_key(
            pb::StreamChatRequest {
                model: "gpt-probe".into(),
                ..ask("hi")
            },
            ALICE,
        ))
        .await
        .expect_err("unknown model");
    assert_eq!(not_found.code(), Code::NotFound);
}

#[tokio::test]
async fn health_and_reflection_stay_open() {
    let (server, _dir) = keyed_server(|_| {}).await;
    let health = HealthClient::new(server.channel.clone())
        .check(HealthCheckRequest {
            service: "agentstream.v1.ChatService".into(),
        })
        .await
        .expect("health needs no key")
        .into_inner();
    assert_eq!(health.status, 1, "SERVING");

    let mut reflection =
        v1::server_reflection_client::ServerReflectionClient::new(server.channel.clone());
    let list = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter([list]))
        .await
        .expect("reflection needs no key")
        .into_inner();
    let answer = responses.next().await.expect("answer").expect("ok");
    assert!(answer.message_response.is_some());
}

#[tokio::test]
async fn http_routes_need_a_key_and_answer_401_in_openai_json() {
    let (server, _dir) = keyed_server(|_| {}).await;
    let client = http_client();

    for (path, bearer) in [
        ("/v1/models", None),
        ("/v1/models", Some("Bearer sk-unknown-0000000000000")),
        ("/v1/models", Some(ALICE)),
        ("/v1/tasks", None),
        ("/metrics", None),
        ("/no/such/route", None),
    ] {
        let mut request = client
            .get(http_url(&server, path))
            .header("x-request-id", "r-401");
        if let Some(bearer) = bearer {
            request = request.header(header::AUTHORIZATION, bearer);
        }
        let response = request.send().await.expect("response");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(response.headers()["x-request-id"], "r-401");
        let body: serde_json::Value = response.json().await.expect("JSON");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
        assert!(body["error"]["param"].is_null(), "{body}");
        assert!(!body.to_string().contains("sk-"), "{body}");
    }

    let completion = serde_json::json!({
        "model": "echo",
        "messages": [{"role": "user", "content": "a keyed completion"}],
    });
    let refused = client
        .post(http_url(&server, "/v1/chat/completions"))
        .json(&completion)
        .send()
        .await
        .expect("response");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let served = client
        .post(http_url(&server, "/v1/chat/completions"))
        .bearer_auth(BOB)
        .json(&completion)
        .send()
        .await
        .expect("response");
    assert_eq!(served.status(), StatusCode::OK);
    let body: serde_json::Value = served.json().await.expect("JSON");
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .is_some_and(|c| c.contains("a keyed completion")),
        "{body}"
    );

    // Probes and the demo page need no key.
    for path in [
        "/healthz",
        "/readyz",
        "/",
        "/demo/app.js",
        "/demo/style.css",
    ] {
        let response = client
            .get(http_url(&server, path))
            .send()
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let metrics = client
        .get(http_url(&server, "/metrics"))
        .bearer_auth(ALICE)
        .send()
        .await
        .expect("response");
    assert_eq!(metrics.status(), StatusCode::OK);
}

#[tokio::test]
async fn browsers_get_cors_preflights_and_can_read_the_401() {
    let (server, _dir) = keyed_server(|c| {
        c.cors_allow_origins = vec!["http://app.example".into()];
    })
    .await;
    let preflight = server.preflight("authorization,content-type").await;
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let refused = http_client()
        .get(http_url(&server, "/v1/models"))
        .header(header::ORIGIN, "http://app.example")
        .send()
        .await
        .expect("response");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "http://app.example"
    );
}

#[tokio::test]
async fn grpc_web_calls_need_a_key_too() {
    let (server, _dir) = keyed_server(|_| {}).await;
    let client = http_client();
    let call = |key: Option<&str>| {
        let mut request = client
            .post(http_url(&server, "/agentstream.v1.ChatService/ListModels"))
            .header(header::CONTENT_TYPE, "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .body(grpc_web_frame(&pb::ListModelsRequest::default()));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };

    let refused = call(None).await.expect("response");
    assert_eq!(
        refused.status(),
        StatusCode::OK,
        "gRPC-Web status rides in headers"
    );
    assert_eq!(
        refused.headers()[header::CONTENT_TYPE],
        "application/grpc-web+proto"
    );
    assert_eq!(refused.headers()["grpc-status"], "16");
    assert!(refused.bytes().await.expect("body").is_empty());

    let served = call(Some(ALICE)).await.expect("response");
    assert_eq!(served.status(), StatusCode::OK);
    assert!(!served.headers().contains_key("grpc-status"));
    let body = served.bytes().await.expect("body");
    let length = u32::from_be_bytes(body[1..5].try_into().expect("4 bytes")) as usize;
    assert_eq!(body[0], 0, "a message frame first");
    let models = pb::ListModelsResponse::decode(&body[5..5 + length]).expect("models");
    assert!(models.models.iter().any(|m| m.id == "echo"));
    let trailers = String::from_utf8_lossy(&body[5 + length..]);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
}

#[tokio::test]
async fn one_key_cannot_take_every_stream() {
    let (server, _dir) = keyed_server(|c| c.max_streams_per_key = Some(2)).await;
    let mut chat = server.chat();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = chat
            .stream_chat(with_key(endless(1), ALICE))
            .await
            .expect("within alice's share")
            .into_inner();
        stream.next().await.expect("a chunk").expect("ok");
        held.push(stream);
    }
    let third = chat
        .stream_chat(with_key(endless(1), ALICE))
        .await
        .expect_err("beyond alice's share");
    assert_eq!(third.code(), Code::ResourceExhausted, "{third:?}");
    assert!(third.message().contains("API key"), "{third:?}");
    // The share is per key, and counts HTTP streams too.
    let response = http_client()
        .post(http_url(&server, "/v1/chat/completions"))
        .bearer_auth(ALICE)
        .json(&serde_json::json!({
            "model": "echo", "stream": true,
            "messages": [{"role": "user", "content": "one more"}],
        }))
        .send()
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let mut bob = chat
        .stream_chat(with_key(ask("bob is served"), BOB))
        .await
        .expect("bob has his own share")
        .into_inner();
    common::drain_ok(&mut bob).await;
    // A stream that ends gives its place back.
    held.pop();
    server
        .until("alice's stream ended", |m| m.active_streams == 1)
        .await;
    let mut again = chat
        .stream_chat(with_key(ask("alice again"), ALICE))
        .await
        .expect("a place is free")
        .into_inner();
    common::drain_ok(&mut again).await;
}

#[tokio::test]
async fn a_bad_keys_file_stops_the_server_without_quoting_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("keys");
    std::fs::write(&path, "alice:sk-secret-value-0001\nbob:sk-secret value\n").expect("write");
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        http_listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().join("data"),
        api_keys_file: Some(path.clone()),
        ..ServeConfig::default()
    };
    let error = match Server::start(config.clone()).await {
        Ok(_) => panic!("a bad keys file was accepted"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("line 2"), "{error}");
    assert!(!error.contains("secret"), "{error}");

    std::fs::write(&path, "# only a comment\n").expect("write");
    let error = match Server::start(config).await {
        Ok(_) => panic!("an empty keys file was accepted"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("no key"), "{error}");
}

#[tokio::test]
async fn without_a_keys_file_the_server_stays_open() {
    let server = TestServer::start().await;
    let mut stream = server
        .chat()
        .stream_chat(common::ask("open"))
        .await
        .expect("no key needed")
        .into_inner();
    common::drain_ok(&mut stream).await;
    let models = server.get("/v1/models").await;
    assert_eq!(models.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_resumable_stream_is_only_seen_by_the_key_that_started_it() {
    let (server, _dir) = keyed_server(|_| {}).await;
    let mut chat = server.chat();
    let request = common::endless_resumable(1);
    let mut alices = chat
        .stream_chat(with_key(request, ALICE))
        .await
        .expect("StreamChat")
        .into_inner();
    let first = alices.next().await.expect("a chunk").expect("ok");
    let stream_id = first.stream_id.clone();
    let resume = |key: &str, id: &str| {
        let request = pb::ResumeStreamRequest {
            stream_id: id.into(),
            after_sequence: 1,
        };
        let mut chat = server.chat();
        let request = with_key(request, key);
        async move { chat.resume_stream(request).await }
    };
    let cancel = |key: &str, id: &str| {
        let request = pb::CancelStreamRequest {
            stream_id: id.into(),
        };
        let mut chat = server.chat();
        let request = with_key(request, key);
        async move { chat.cancel_stream(request).await }
    };

    // Bob is told exactly what an unknown id gets: NOT_FOUND, same words.
    let unknown = "stream-00000000000000000000000000000000";
    let not_found = resume(BOB, unknown).await.expect_err("unknown");
    assert_eq!(not_found.code(), Code::NotFound);
    let bobs = resume(BOB, &stream_id).await.expect_err("not bob's");
    assert_eq!(bobs.code(), Code::NotFound, "{bobs:?}");
    assert_eq!(
        bobs.message().replace(&stream_id, unknown),
        not_found.message()
    );
    let bobs = cancel(BOB, &stream_id).await.expect_err("not bob's");
    assert_eq!(bobs.code(), Code::NotFound, "{bobs:?}");

    // Over HTTP too: 404 for resume and cancel, like an unknown id.
    let client = http_client();
    let path = format!("/v1/chat/streams/{stream_id}");
    let cancel_path = format!("{path}/cancel");
    let cancel_as = |key: &str| {
        send(
            client
                .post(http_url(&server, &cancel_path))
                .bearer_auth(key),
        )
    };
    let resumed = send(client.get(http_url(&server, &path)).bearer_auth(BOB)).await;
    assert_eq!(resumed.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = resumed.json().await.expect("JSON");
    assert!(!body.to_string().contains("alice"), "{body}");
    let cancelled = cancel_as(BOB).await;
    assert_eq!(cancelled.status(), StatusCode::NOT_FOUND);

    // Bob's cancels did nothing: Alice's stream still generates, and she
    // reads and cancels it from anywhere.
    let next = alices.next().await.expect("a chunk").expect("ok");
    assert_eq!(next.sequence, 2);
    let mut resumed = resume(ALICE, &stream_id)
        .await
        .expect("alice resumes")
        .into_inner();
    assert_eq!(
        resumed.next().await.expect("a chunk").expect("ok").sequence,
        2
    );
    let resumed_http = client
        .get(http_url(&server, &path))
        .bearer_auth(ALICE)
        .header("accept", "text/event-stream");
    let resumed_http = send(resumed_http).await;
    assert_eq!(resumed_http.status(), StatusCode::OK);
    drop(resumed_http);
    let cancelled = cancel_as(ALICE).await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let (_, end) = common::drain(&mut alices).await;
    assert_eq!(end.expect_err("cancelled").code(), Code::Cancelled);
}
