//! The real binary against hostile values: client strings in its text log
//! lines, odd request ids, a second signal during the drain.

mod common;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
};

use agentstream::pb::{self, StreamChatRequest};
use common::{connect, user};
use futures::StreamExt;
use tokio::sync::mpsc::Receiver;

/// The binary, its log lines (standard error, a pipe: not a terminal) and
/// its address.
struct Binary {
    child: Child,
    lines: Receiver<String>,
    addr: SocketAddr,
    /// The start-up line.
    listening: String,
    _data_dir: tempfile::TempDir,
}

impl Binary {
    async fn start(extra: &[&str]) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_agentstream"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .arg("--data-dir")
            .arg(data_dir.path())
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, mut lines) = tokio::sync::mpsc::channel(4096);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        // Four binaries start at once in debug builds: a generous wait.
        let listening = tokio::time::timeout(
            std::time::Duration::from_secs(120),
            next_line_with(&mut lines, "agentstream listening"),
        )
        .await
        .expect("the binary started");
        let addr = listening
            .split("addr=")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no addr in {listening}"));
        Self {
            child,
            lines,
            addr,
            listening,
            _data_dir: data_dir,
        }
    }

    fn signal(&self, name: &str) {
        let killed = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(killed.success());
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn next_line_with(lines: &mut Receiver<String>, needle: &str) -> String {
    loop {
        let line = tokio::time::timeout(common::PATIENCE * 3, lines.recv())
            .await
            .unwrap_or_else(|_| panic!("no log line with {needle}"))
            .unwrap_or_else(|| panic!("server exited before logging {needle}"));
        if line.contains(needle) {
            return line;
        }
    }
}

#[tokio::test]
async fn client_values_cannot_forge_log_lines_or_reach_the_terminal() {
    let mut binary = Binary::start(&["--mock-token-delay", "0"]).await;
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
    let line = next_line_with(&mut binary.lines, "call failed").await;
    assert!(
        line.contains(r"evil\nINFO forged line\r\u{1b}]0;title\u{7}\u{1b}[31mred\u{0}end"),
        "{line}"
    );
    assert!(
        !line.chars().any(|c| c.is_control()),
        "control character in {line:?}"
    );
    // Sync point: the next call's line comes next; nothing forged between.
    let mut request = tonic::Request::new(StreamChatRequest {
        messages: vec![user("after")],
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-request-id", "sync-point".parse().expect("ascii"));
    let mut stream = chat.stream_chat(request).await.expect("call").into_inner();
    while stream.next().await.is_some() {}
    loop {
        let line = tokio::time::timeout(common::PATIENCE, binary.lines.recv())
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
    let mut binary = Binary::start(&["--mock-token-delay", "0"]).await;
    let mut chat = pb::chat_service_client::ChatServiceClient::new(connect(binary.addr).await);
    let mut request = tonic::Request::new(StreamChatRequest {
        messages: vec![user("id")],
        ..Default::default()
    });
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
    let line = next_line_with(&mut binary.lines, "call finished").await;
    assert!(line.contains(&echoed), "the replacement is logged: {line}");
}

#[tokio::test]
async fn a_second_signal_stops_the_drain_at_once() {
    let mut binary = Binary::start(&["--shutdown-grace", "1h", "--mock-token-delay", "50ms"]).await;
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
    binary.signal("TERM");
    next_line_with(&mut binary.lines, "draining").await;
    binary.signal("TERM");
    let mut child = std::mem::replace(
        &mut binary.child,
        Command::new("true").spawn().expect("placeholder"),
    );
    let status = tokio::time::timeout(
        common::PATIENCE,
        tokio::task::spawn_blocking(move || child.wait()),
    )
    .await
    .expect("exited without waiting out the hour of grace")
    .expect("join")
    .expect("wait");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn text_logs_have_no_colours_when_stderr_is_not_a_terminal() {
    let binary = Binary::start(&[]).await;
    let line = &binary.listening;
    assert!(!line.contains('\u{1b}'), "escape sequence in {line:?}");
}

#[tokio::test]
async fn the_key_name_is_logged_and_the_key_never() {
    let keys = tempfile::tempdir().expect("temp dir");
    let path = keys.path().join("keys");
    std::fs::write(&path, "alice:sk-alice-7d1e90b3c25a4f86\n").expect("keys file");
    let path = path.to_str().expect("utf-8 path").to_owned();
    let mut binary = Binary::start(&["--mock-token-delay", "0", "--api-keys-file", &path]).await;
    assert!(
        binary.listening.contains("API key required"),
        "{}",
        binary.listening
    );
    let mut chat = pb::chat_service_client::ChatServiceClient::new(connect(binary.addr).await);

    let mut wrong = tonic::Request::new(StreamChatRequest {
        messages: vec![user("hi")],
        ..Default::default()
    });
    wrong.metadata_mut().insert(
        "authorization",
        "Bearer sk-guess-0000000000000000".parse().expect("ascii"),
    );
    let refused = chat.stream_chat(wrong).await.expect_err("wrong key");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let line = next_line_with(&mut binary.lines, "call refused").await;
    assert!(line.contains("StreamChat"), "{line}");
    assert!(
        !line.contains("sk-guess"),
        "the presented key is logged: {line}"
    );

    let mut request = tonic::Request::new(StreamChatRequest {
        messages: vec![user("hi")],
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        "Bearer sk-alice-7d1e90b3c25a4f86".parse().expect("ascii"),
    );
    let mut stream = chat.stream_chat(request).await.expect("call").into_inner();
    while stream.next().await.is_some() {}
    let line = next_line_with(&mut binary.lines, "call finished").await;
    assert!(line.contains(r#"key="alice""#), "{line}");
    assert!(!line.contains("sk-alice"), "the key is logged: {line}");
}

#[tokio::test]
async fn an_open_server_says_so_when_it_starts() {
    let binary = Binary::start(&[]).await;
    assert!(
        binary.listening.contains("open: no API keys"),
        "{}",
        binary.listening
    );
}
