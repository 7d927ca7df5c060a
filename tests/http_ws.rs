//! The WebSocket chat (`GET /v1/chat/ws`) through a real WebSocket client
//! against a server on 127.0.0.1:0: completions told apart by id, cancel
//! by message and by closing, and a client that never reads.

mod common;

use std::time::Duration;

use common::{
    PATIENCE, TestServer,
    ws::{chat, connect, next, until_end_of},
};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn ask(question: &str) -> Value {
    json!({"messages": [{"role": "user", "content": question}], "stream_options": {"include_usage": true}})
}

fn endless() -> Value {
    json!({"model": "synthetic", "max_tokens": 200000, "messages": [{"role": "user", "content": "go"}]})
}

#[tokio::test]
async fn completions_stream_as_chunk_messages_then_done() {
    let server = TestServer::start().await;
    let mut socket = connect(&server).await;
    socket
        .send(chat("a", ask("first question")))
        .await
        .expect("send");
    socket
        .send(chat("b", ask("second question")))
        .await
        .expect("send");
    let mut text = std::collections::HashMap::<String, String>::new();
    let mut done = 0;
    while done < 2 {
        let message = next(&mut socket).await;
        let id = message["id"].as_str().expect("id").to_owned();
        match message["type"].as_str() {
            Some("chunk") => {
                assert_eq!(message["chunk"]["object"], "chat.completion.chunk");
                if let Some(content) = message["chunk"]["choices"][0]["delta"]["content"].as_str() {
                    text.entry(id).or_default().push_str(content);
                }
            }
            Some("done") => {
                assert!(message.get("cancelled").is_none(), "{message}");
                done += 1;
            }
            other => panic!("unexpected {other:?}: {message}"),
        }
    }
    assert!(text["a"].contains("first question"), "{text:?}");
    assert!(text["b"].contains("second question"), "{text:?}");
}

#[tokio::test]
async fn bad_requests_are_error_messages_and_the_socket_stays_usable() {
    let server = TestServer::start().await;
    let mut socket = connect(&server).await;
    socket
        .send(chat("x", json!({"messages": [], "n": 99})))
        .await
        .expect("send");
    let error = next(&mut socket).await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["id"], "x");
    assert_eq!(error["error"]["param"], "messages");
    socket.send(Message::text("not json")).await.expect("send");
    assert_eq!(next(&mut socket).await["type"], "error");
    socket
        .send(chat("y", ask("still here")))
        .await
        .expect("send");
    let messages = until_end_of(&mut socket, "y").await;
    assert_eq!(messages.last().expect("end")["type"], "done");
}

#[tokio::test]
async fn a_cancel_message_stops_that_completion_at_once() {
    let server = TestServer::start_with(|c| c.mock_token_delay = Duration::from_millis(20)).await;
    let mut socket = connect(&server).await;
    socket.send(chat("long", endless())).await.expect("send");
    assert_eq!(next(&mut socket).await["type"], "chunk");
    assert_eq!(server.metrics().live_generations, 1);
    socket
        .send(Message::text(
            json!({"type": "cancel", "id": "long"}).to_string(),
        ))
        .await
        .expect("send");
    let messages = until_end_of(&mut socket, "long").await;
    assert_eq!(
        messages.last().expect("done"),
        &json!({"type": "done", "id": "long", "cancelled": true})
    );
    server.assert_dropped("generation dropped").await;
    // The connection goes on.
    socket
        .send(chat("next", ask("after the cancel")))
        .await
        .expect("send");
    assert_eq!(
        until_end_of(&mut socket, "next").await.last().expect("end")["type"],
        "done"
    );
}

#[tokio::test]
async fn closing_the_socket_stops_everything_it_started() {
    let server = TestServer::start_with(|c| c.mock_token_delay = Duration::from_millis(20)).await;
    let mut socket = connect(&server).await;
    for id in ["one", "two", "three"] {
        socket.send(chat(id, endless())).await.expect("send");
    }
    server
        .until("three generations", |m| m.live_generations == 3)
        .await;
    socket.close(None).await.expect("close");
    drop(socket);
    server.assert_dropped("generations dropped").await;
}

#[tokio::test]
async fn a_client_that_never_reads_is_disconnected_with_bounded_memory() {
    let server = TestServer::start_with(|c| c.mock_token_delay = Duration::ZERO).await;
    // A small receive buffer, so the kernel cannot absorb much either.
    let addr = server.server.http_addr().expect("HTTP edge");
    let tcp = tokio::net::TcpSocket::new_v4().expect("socket");
    tcp.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let tcp = tcp.connect(addr).await.expect("connect");
    let (mut socket, _) = tokio_tungstenite::client_async(format!("ws://{addr}/v1/chat/ws"), tcp)
        .await
        .expect("handshake");
    for id in ["a", "b", "c", "d"] {
        socket.send(chat(id, endless())).await.expect("send");
    }
    // Never read: the server's queue fills, and it hangs up on us, which
    // drops every completion of the connection.
    server
        .until("generations started", |m| m.tokens_generated > 0)
        .await;
    server
        .until("the silent client was disconnected", |m| {
            m.live_generations == 0 && m.active_streams == 0
        })
        .await;
    let tokens = server.metrics().tokens_generated;
    server.assert_no_token_produced_meanwhile().await;
    // Reading now finds the end of the connection after what was buffered.
    let mut read = 0u64;
    let ended = tokio::time::timeout(PATIENCE, async {
        while let Some(Ok(_)) = socket.next().await {
            read += 1;
        }
    })
    .await;
    assert!(ended.is_ok(), "the connection is closed");
    assert!(
        read < tokens,
        "{read} messages were buffered of {tokens} tokens"
    );
}
