//! The connection layer against clients that misbehave on purpose (raw
//! HTTP/2 through the `h2` crate, bare TCP): handshake and idle timeouts,
//! keepalive, the connection cap, the advertised stream limit, the limit on
//! streams a client makes the server reset, and the drain.

mod common;
mod raw_h2;

use std::time::Duration;

use agentstream::pb::{self, StreamChatRequest};
use common::{PATIENCE, TestServer, connect, drain_ok, user};
use futures::StreamExt;
use raw_h2::{HUGE_WINDOW, RawClient};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const STREAM_CHAT: &str = "/agentstream.v1.ChatService/StreamChat";

fn endless() -> StreamChatRequest {
    StreamChatRequest {
        messages: vec![user("go")],
        model: "synthetic".into(),
        max_tokens: 200_000,
        ..Default::default()
    }
}

/// Reads until the server closes the socket (EOF or reset), failing after
/// [`PATIENCE`]; returns what was read.
async fn read_until_closed(socket: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept the connection open");
    seen
}

#[tokio::test]
async fn connections_that_never_complete_the_preface_are_closed() {
    let server = TestServer::start_with(|c| c.handshake_timeout = Duration::from_millis(200)).await;
    let addr = server.server.local_addr();

    let mut silent = TcpStream::connect(addr).await.expect("connect");
    read_until_closed(&mut silent).await;

    // Half a preface, then nothing.
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"PRI * HTTP/2.0\r\n").await.expect("write");
    read_until_closed(&mut slow).await;

    // A client that completes the preface in time stays connected past it.
    let mut client = RawClient::connect(addr, 65_535).await;
    let (response, _body) = client.call(STREAM_CHAT, &common::ask("still here")).await;
    assert_eq!(response.await.expect("response").status(), 200);
}

#[tokio::test]
async fn idle_connections_are_closed_gracefully() {
    let server = TestServer::start_with(|c| c.idle_timeout = Duration::from_millis(300)).await;
    let mut client = RawClient::connect(server.server.local_addr(), 65_535).await;
    let (response, _body) = client
        .call(STREAM_CHAT, &common::ask("one call, then silence"))
        .await;
    let mut body = response.await.expect("response").into_body();
    while let Some(data) = body.data().await {
        let data = data.expect("data");
        let _ = body.flow_control().release_capacity(data.len());
    }
    let closed = tokio::time::timeout(PATIENCE, client.closed)
        .await
        .expect("the server closed the idle connection")
        .expect("driver");
    assert!(
        closed.is_ok(),
        "closed gracefully (GOAWAY NO_ERROR): {closed:?}"
    );
}

#[tokio::test]
async fn a_busy_connection_is_not_idle() {
    let server = TestServer::start_with(|c| {
        c.idle_timeout = Duration::from_millis(100);
        c.mock_token_delay = Duration::from_millis(5);
    })
    .await;
    // One stream that outlives many idle periods runs to its end.
    let request = StreamChatRequest {
        max_tokens: 200,
        ..endless()
    };
    let mut stream = server.stream_chat(request).await;
    let chunks = drain_ok(&mut stream).await.len();
    assert!(chunks > 200, "every token arrived: {chunks} chunks");
}

#[tokio::test]
async fn keepalive_disconnects_a_peer_that_stopped_reading() {
    let server = TestServer::start_with(|c| {
        c.keepalive_interval = Duration::from_millis(200);
        c.keepalive_timeout = Duration::from_millis(200);
        // Slow tokens: the stream itself never waits for the client.
        c.mock_token_delay = Duration::from_millis(500);
        c.send_timeout = Duration::from_secs(3600);
    })
    .await;
    let mut client = RawClient::connect(server.server.local_addr(), 65_535).await;
    let (response, _body) = client.call(STREAM_CHAT, &endless()).await;
    let _response = response.await.expect("headers");
    server
        .until("the stream is open", |m| m.active_streams == 1)
        .await;
    client.stop_reading();
    // The unanswered ping closes the connection, which ends its stream.
    server
        .until("the dead peer's stream ended", |m| m.active_streams == 0)
        .await;
}

#[tokio::test]
async fn max_concurrent_streams_is_advertised() {
    let server = TestServer::start_with(|c| c.max_streams_per_connection = 7).await;
    let client = RawClient::connect(server.server.local_addr(), 65_535).await;
    assert_eq!(client.max_streams, 7);
    let server = TestServer::start().await;
    let client = RawClient::connect(server.server.local_addr(), 65_535).await;
    assert_eq!(client.max_streams, 2_000, "the default");
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_until_a_slot_frees() {
    // The harness's own channel holds one of the two slots.
    let server = TestServer::start_with(|c| c.max_connections = 2).await;
    let addr = server.server.local_addr();
    let second = RawClient::connect(addr, 65_535).await;

    let mut third = TcpStream::connect(addr).await.expect("tcp connect");
    let _ = third.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    read_until_closed(&mut third).await;

    drop(second);
    // Once the server has seen the close, a new connection is served.
    common::eventually("a slot frees", || async {
        let tcp = TcpStream::connect(addr).await.ok()?;
        let (send, conn) = h2::client::handshake(tcp).await.ok()?;
        let driver = tokio::spawn(conn);
        let mut send = send.ready().await.ok()?;
        let request = http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
            .header("content-type", "application/grpc")
            .body(())
            .ok()?;
        let (response, mut body) = send.send_request(request, false).ok()?;
        body.send_data(raw_h2::grpc_frame(&HealthCheckRequest::default()), true)
            .ok()?;
        let status = response.await.ok()?.status();
        driver.abort();
        (status == 200).then_some(())
    })
    .await;
}

/// Frames of a request on `stream_id` followed by trailers without
/// END_STREAM: a malformed message the server must answer with RST_STREAM.
fn malformed_request(stream_id: u32) -> Vec<u8> {
    // HPACK: :method POST (static 3), :scheme http (static 6), :path "/x"
    // and content-type application/grpc as literals with indexed names.
    let mut block = vec![0x83, 0x86, 0x04, 0x02, b'/', b'x', 0x0f, 0x10, 16];
    block.extend_from_slice(b"application/grpc");
    let mut frames = frame(0x1, 0x4, stream_id, &block);
    frames.extend(frame(0x1, 0x4, stream_id, &[]));
    frames
}

fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small");
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream_id.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[tokio::test]
async fn a_client_that_makes_the_server_reset_streams_gets_goaway() {
    let server = TestServer::start().await;
    let mut socket = TcpStream::connect(server.server.local_addr())
        .await
        .expect("connect");
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    socket.write_all(&out).await.expect("preface");
    let (mut read, mut write) = socket.into_split();
    let writer = tokio::spawn(async move {
        for i in 0..3_000u32 {
            if write
                .write_all(&malformed_request(2 * i + 1))
                .await
                .is_err()
            {
                return;
            }
        }
        // A PING last: its ACK before any GOAWAY means no limit applied.
        let _ = write.write_all(&frame(0x6, 0, 0, &[7; 8])).await;
        // Keep the write half open until the test ends.
        std::future::pending::<()>().await;
    });
    let mut buf = Vec::new();
    let outcome = tokio::time::timeout(PATIENCE, async {
        let mut chunk = [0u8; 16384];
        loop {
            while buf.len() >= 9 {
                let len =
                    usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
                if buf.len() < 9 + len {
                    break;
                }
                let (kind, flags) = (buf[3], buf[4]);
                let payload = buf[9..9 + len].to_vec();
                buf.drain(..9 + len);
                match (kind, flags) {
                    (0x7, _) => return Ok(payload),
                    (0x6, 0x1) if payload == [7; 8] => return Err("PING answered, no GOAWAY"),
                    _ => {}
                }
            }
            match read.read(&mut chunk).await {
                Ok(0) | Err(_) => return Err("closed without GOAWAY"),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("an answer");
    writer.abort();
    let goaway = outcome.expect("GOAWAY");
    let code = u32::from_be_bytes(goaway[4..8].try_into().expect("code"));
    assert_eq!(code, 0xb, "ENHANCE_YOUR_CALM");
}

#[tokio::test]
async fn idle_connections_do_not_hold_shutdown() {
    let server = TestServer::start_with(|c| c.shutdown_grace = Duration::from_secs(3600)).await;
    let mut health = HealthClient::new(server.channel.clone());
    health
        .check(HealthCheckRequest::default())
        .await
        .expect("check");
    server.shutdown.request();
    tokio::time::timeout(PATIENCE, server.server.wait())
        .await
        .expect("stopped without waiting for the idle connection")
        .expect("clean stop");
}

#[tokio::test]
async fn a_new_connection_during_the_drain_is_told_not_serving() {
    let server = TestServer::start_with(|c| {
        c.shutdown_grace = Duration::from_secs(3600);
        c.mock_token_delay = Duration::from_millis(50);
    })
    .await;
    // An in-flight stream keeps the server draining.
    let mut stream = server.stream_chat(endless()).await;
    stream.next().await.expect("first chunk").expect("ok");
    server.shutdown.request();
    let check = common::eventually("health answers NOT_SERVING", || async {
        let channel = connect_quietly(server.server.local_addr()).await?;
        let status = HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .ok()?
            .into_inner()
            .status();
        (status == ServingStatus::NotServing).then_some(status)
    })
    .await;
    assert_eq!(check, ServingStatus::NotServing);
    // The stream is still served meanwhile.
    stream.next().await.expect("chunk").expect("ok");
}

async fn connect_quietly(addr: std::net::SocketAddr) -> Option<tonic::transport::Channel> {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect()
        .await
        .ok()
}

/// A server whose built-in models answer at once, with a 300 ms send
/// timeout.
async fn fast_server_with_a_short_send_timeout() -> TestServer {
    TestServer::start_with(|c| {
        c.mock_token_delay = Duration::ZERO;
        c.send_timeout = Duration::from_millis(300);
    })
    .await
}

/// Waits until no stream is open and no generation runs.
async fn until_the_send_timeout_ended_them(server: &TestServer) {
    server
        .until("the send timeout ended them", |m| {
            m.active_streams == 0 && m.live_generations == 0
        })
        .await;
}

#[tokio::test]
async fn a_stream_the_client_stops_reading_is_ended_by_the_send_timeout() {
    let server = fast_server_with_a_short_send_timeout().await;
    let mut client = RawClient::connect(server.server.local_addr(), HUGE_WINDOW).await;
    let mut streams = Vec::new();
    for _ in 0..4 {
        streams.push(client.call(STREAM_CHAT, &endless()).await);
    }
    client.stop_reading();
    server
        .until("the streams started", |m| m.active_streams == 4)
        .await;
    until_the_send_timeout_ended_them(&server).await;
    // A well-behaved client on another connection is unaffected.
    let channel = connect(server.server.local_addr()).await;
    let mut ok = pb::chat_service_client::ChatServiceClient::new(channel)
        .stream_chat(StreamChatRequest {
            max_tokens: 5,
            ..endless()
        })
        .await
        .expect("call")
        .into_inner();
    let chunks = drain_ok(&mut ok).await.len();
    assert!(chunks > 5, "every token arrived: {chunks} chunks");
}

#[tokio::test]
async fn an_http1_response_the_client_stops_reading_is_ended_by_the_send_timeout() {
    let server = fast_server_with_a_short_send_timeout().await;
    let addr = server.server.http_addr().expect("the HTTP edge listens");
    let body = r#"{"model":"synthetic","max_tokens":200000,"stream":true,"messages":[{"role":"user","content":"go"}]}"#;
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.expect("send");
    // The client reads nothing: the socket's buffers fill, the response
    // waits, and the send timeout ends it.
    server
        .until("the stream started", |m| m.active_streams == 1)
        .await;
    until_the_send_timeout_ended_them(&server).await;
    let seen = read_until_closed(&mut socket).await;
    assert!(
        seen.starts_with(b"HTTP/1.1 200"),
        "the response had started: {:?}",
        String::from_utf8_lossy(&seen[..seen.len().min(64)])
    );
}

#[tokio::test]
async fn max_request_bytes_above_4_mib_raises_the_decoding_limit() {
    let server = TestServer::start_with(|c| c.max_request_bytes = 5 << 20).await;
    let big = |bytes: usize| StreamChatRequest {
        messages: vec![user(&"word ".repeat(bytes / 5))],
        max_tokens: 1,
        ..endless()
    };
    let mut ok = server.stream_chat(big(9 << 19)).await;
    common::drain_ok(&mut ok).await;
    let refused = server
        .chat()
        .stream_chat(big(11 << 19))
        .await
        .expect_err("5.5 MiB refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
}
