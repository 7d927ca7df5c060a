//! The chat WebSocket (`/v1/chat/ws`) as a browser uses it: JSON text
//! messages, each tagged with the id of the completion it belongs to.

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

use super::{PATIENCE, TestServer};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket to `server`'s chat endpoint, its handshake answered with a
/// request id.
pub async fn connect(server: &TestServer) -> Socket {
    let addr = server.server.http_addr().expect("HTTP edge");
    let (socket, response) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/chat/ws"))
        .await
        .expect("WebSocket handshake");
    assert!(response.headers().contains_key("x-request-id"));
    socket
}

/// The message that starts completion `id` of `request`.
pub fn chat(id: &str, request: Value) -> Message {
    Message::text(json!({"type": "chat", "id": id, "request": request}).to_string())
}

/// The next JSON message from the server.
pub async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("a message in time")
            .expect("socket open")
            .expect("message");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).expect("JSON");
        }
    }
}

/// Messages until the `done` or `error` of `id`.
pub async fn until_end_of(socket: &mut Socket, id: &str) -> Vec<Value> {
    let mut messages = Vec::new();
    loop {
        let message = next(socket).await;
        let end = message["id"] == id && message["type"] != "chunk";
        messages.push(message);
        if end {
            return messages;
        }
    }
}
