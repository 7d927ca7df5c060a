//! The real binary against hostile values: client strings in its text log
//! lines, odd request ids, a second signal during the drain.

mod common;

use std::{net::SocketAddr, time::Duration};

use agentstream::pb::{self, StreamChatRequest};
use common::{binary::Binary, connect, user, with_key};
use futures::StreamExt;

/// The binary with text logs (standard error, a pipe: not a terminal), its
/// address and its start-up line.
struct Started {
    binary: Binary,
    addr: SocketAddr,
    listening: String,
}

async fn start(extra: &[&str]) -> Started {
    let mut args = vec!["--http-listen", "127.0.0.1:0"];
    args.extend(extra);
    let mut binary = Binary::serve(&args);
    // Four binaries start at once in debug builds: a generous wait.
    let (listening, addr) = binary.listening(Duration::from_secs(120)).await;
    Started {
        binary,
        addr,
        listening,
    }
}

async fn next_line_with(binary: &mut Binary, needle: &str) -> String {
    binary.next_line_with(needle, common::PATIENCE * 3).await
}

#[tokio::test]
async fn client_values_cannot_forge_log_lines_or_reach_the_terminal() {
    let mut binary = start(&["--mock-token-delay", "0"]).await;
    let mut chat = pb::chat_service_client::ChatServiceClient::new(connect(binary.addr).await);
    let forged = "evil\nINFO forged line\r\u{1b}]0;title\u{7}\u{1b}[31mred\u{0}end";
    let status = chat
        .stream_chat(StreamChatRequest {
            messages: vec![user("hi")],
            model: forged.into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown model");
    assert_eq!(status.code(), tonic::Code::NotFound);
    // The call's line: one line, the model escaped, no raw control byte.
    let line = next_line_with(&mut binary.binary, "call failed").await;
    assert!(
        line.contains(r"evil\nINFO forged line\r\u{1b}]0;title\u{7}\u{1b}[31mred\u{0}end"),
        "{line}"
    );
    assert!(
        !line.chars().any(|c| c.is_control()),
        "control character in {line:?}"
    );
    // Sync point: the next call's line comes next; nothing forged between.
    let mut request = tonic::Request::new(common::ask("after"));
    request
        .metadata_mut()
        .insert("x-request-id", "sync-point".parse().expect("ascii"));
    let mut stream = chat.stream_chat(request).await.expect("call").into_inner();
    while stream.next().await.is_some() {}
    loop {
        let line = tokio::time::timeout(common::PATIENCE, binary.binary.lines.recv())
            .await
            .expect("a line")
            .expect("running");
        assert!(!line.contains("forged line"), "forged line: {line:?}");
        if line.contains("sync-point") {
            break;
        }
    }
}

#[tokio::test]
async fn invalid_request_ids_are_replaced_echoed_and_logged() {
    let mut binary = start(&["--mock-token-delay", "0"]).await;
    let mut chat = pb::chat_service_client::ChatServiceClient::new(connect(binary.addr).await);
    let mut request = tonic::Request::new(common::ask("id"));
    let non_ascii =
        tonic::metadata::MetadataValue::try_from("ça-va-ü".as_bytes()).expect("obs-text");
    request.metadata_mut().insert("x-request-id", non_ascii);
    let response = chat.stream_chat(request).await.expect("call");
    let echoed = response
        .metadata()
        .get("x-request-id")
        .expect("echoed")
        .to_str()
        .expect("a plain token")
        .to_owned();
    assert!(
        uuid::Uuid::parse_str(&echoed).is_ok(),
        "generated: {echoed}"
    );
    let mut stream = response.into_inner();
    while stream.next().await.is_some() {}
    let line = next_line_with(&mut binary.binary, "call finished").await;
    assert!(line.contains(&echoed), "the replacement is logged: {line}");
}

#[tokio::test]
async fn a_second_signal_stops_the_drain_at_once() {
    let mut binary = start(&["--shutdown-grace", "1h", "--mock-token-delay", "50ms"]).await;
    let mut chat = pb::chat_service_client::ChatServiceClient::new(connect(binary.addr).await);
    let mut stream = chat
        .stream_chat(StreamChatRequest {
            messages: vec![user("go")],
            model: "synthetic".into(),
            max_tokens: 100_000,
            ..Default::default()
        })
        .await
        .expect("call")
        .into_inner();
    stream.next().await.expect("chunk").expect("ok");
    binary.binary.signal("TERM");
    next_line_with(&mut binary.binary, "draining").await;
    binary.binary.signal("TERM");
    // Bounded by the test's patience: not the hour of grace.
    let status = binary.binary.exit_status().await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn text_logs_have_no_colours_when_stderr_is_not_a_terminal() {
    let binary = start(&[]).await;
    let line = &binary.listening;
    assert!(!line.contains('\u{1b}'), "escape sequence in {line:?}");
}

#[tokio::test]
async fn the_key_name_is_logged_and_the_key_never() {
    let keys = tempfile::tempdir().expect("temp dir");
    let path = keys.path().join("keys");
    std::fs::write(&path, "alice:sk-alice-7d1e90b3c25a4f86\n").expect("keys file");
    let path = path.to_str().expect("utf-8 path").to_owned();
    let mut binary = start(&["--mock-token-delay", "0", "--api-keys-file", &path]).await;
    assert!(
        binary.listening.contains("API key required"),
        "{}",
        binary.listening
    );
    let mut chat = pb::chat_service_client::ChatServiceClient::new(connect(binary.addr).await);

    let hi = common::ask("hi");
    let wrong = with_key(hi.clone(), "sk-guess-0000000000000000");
    let refused = chat.stream_chat(wrong).await.expect_err("wrong key");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let line = next_line_with(&mut binary.binary, "call refused").await;
    assert!(line.contains("StreamChat"), "{line}");
    assert!(
        !line.contains("sk-guess"),
        "the presented key is logged: {line}"
    );

    let request = with_key(hi, "sk-alice-7d1e90b3c25a4f86");
    let mut stream = chat.stream_chat(request).await.expect("call").into_inner();
    while stream.next().await.is_some() {}
    let line = next_line_with(&mut binary.binary, "call finished").await;
    assert!(line.contains(r#"key="alice""#), "{line}");
    assert!(!line.contains("sk-alice"), "the key is logged: {line}");
}

#[tokio::test]
async fn an_open_server_says_so_when_it_starts() {
    let binary = start(&[]).await;
    assert!(
        binary.listening.contains("open: no API keys"),
        "{}",
        binary.listening
    );
}
