//! `GET /v1/chat/ws`: chat completions over one WebSocket, for clients that
//! keep a connection for a whole conversation.
//!
//! Client messages: `{"type":"chat","id":"c1","request":{...}}` starts a
//! completion (the chat completions body), `{"type":"cancel","id":"c1"}`
//! stops it. Server messages: `{"type":"chunk","id","chunk":{...}}` per
//! chunk, then `{"type":"done","id"}` (`"cancelled":true` after a cancel),
//! or `{"type":"error","id","error":{...}}`.
//!
//! One task per connection (axum's), nothing spawned per completion: the
//! connection's loop pulls every running completion from a `StreamMap`
//! keyed by id, so a `cancel` removes (drops) one completion and closing
//! the socket drops them all, which stops their generation at once. Each
//! completion is a call of its own, with the core's bookkeeping and limits.
//!
//! Memory per connection is bounded: incoming messages by `--max-http-body`,
//! running completions by [`MAX_RUNNING`], and outgoing messages by a queue
//! of [`SEND_QUEUE`] messages between the loop and the socket writer. A
//! client that stops reading fills its queue and is disconnected then,
//! rather than buffered without bound or allowed to stall its completions.

use std::sync::Arc;

use axum::{
    extract::{
        State, WebSocketUpgrade,
        ws::{Message, Utf8Bytes, WebSocket},
    },
    response::Response,
};
use futures::{SinkExt, StreamExt, stream::BoxStream};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::StreamMap;

use super::{
    Edge, call,
    error::ApiError,
    json,
    openai::{ChatCompletionRequest, chunk_json},
};
use crate::{
    chat::ChatChunk,
    error::Error,
    server::{ConnectionStreams, Method, auth::Caller},
};

/// Messages waiting for a slow client before it is disconnected.
pub(crate) const SEND_QUEUE: usize = 64;

/// Completions one connection may run at once.
pub(crate) const MAX_RUNNING: usize = 16;

/// Longest completion id accepted, in bytes.
const MAX_ID_BYTES: usize = 128;

/// A message from the client.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ClientMessage {
    /// Start a completion.
    Chat {
        id: String,
        request: Box<ChatCompletionRequest>,
    },
    /// Stop one.
    Cancel { id: String },
}

/// A message to the client.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ServerMessage<'a, C: Serialize> {
    Chunk {
        id: &'a str,
        chunk: C,
    },
    Done {
        id: &'a str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        cancelled: bool,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        error: &'a super::error::ErrorObject,
    },
}

/// A message that carries no chunk.
type Control<'a> = ServerMessage<'a, ()>;

fn text(message: &impl Serialize) -> Message {
    let json = serde_json::to_string(message).unwrap_or_else(|_| "{}".to_owned());
    Message::Text(Utf8Bytes::from(json))
}

fn error_message(id: Option<&str>, error: ApiError) -> Message {
    text(&Control::Error {
        id,
        error: error.object(),
    })
}

fn done_message(id: &str, cancelled: bool) -> Message {
    text(&Control::Done { id, cancelled })
}

/// Who opened a WebSocket: what each completion on it is logged under.
struct Origin {
    /// The upgrade request's id; a completion's is `{request_id}/{id}`.
    request_id: Arc<str>,
    /// The key that opened it, when keys are configured.
    caller: Option<Caller>,
    /// The share of streams of the connection it runs on.
    connection: Option<ConnectionStreams>,
}

/// `GET /v1/chat/ws`.
pub(crate) async fn upgrade(
    State(edge): State<Edge>,
    headers: call::CallHeaders,
    upgrade: WebSocketUpgrade,
) -> Response {
    let origin = Origin {
        request_id: Arc::from(call::request_id(&headers)),
        caller: headers.caller().cloned(),
        connection: headers.connection().cloned(),
    };
    let limit = edge.body_limit.0;
    upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| session(edge, socket, origin))
}

/// Serves one connection until it closes, fails, or stops reading.
async fn session(edge: Edge, socket: WebSocket, origin: Origin) {
    let (mut sink, mut source) = socket.split();
    let (queue, mut outbox) = mpsc::channel::<Message>(SEND_QUEUE);
    let writer = async move {
        while let Some(message) = outbox.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
    };
    let reader = async move {
        let mut running: StreamMap<String, BoxStream<'static, Message>> = StreamMap::new();
        loop {
            let outgoing = tokio::select! {
                incoming = source.next() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        handle(&edge, &origin, text.as_bytes(), &mut running)
                    }
                    Some(Ok(Message::Binary(_))) => Some(error_message(
                        None,
                        ApiError::from(Error::InvalidArgument(vec![
                            crate::error::FieldViolation::new("type", "send JSON text messages"),
                        ])),
                    )),
                    // Pings are answered by the WebSocket layer itself.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                },
                Some((_, message)) = running.next(), if !running.is_empty() => Some(message),
            };
            if let Some(message) = outgoing {
                // A full queue is a client that stopped reading: disconnect.
                if queue.try_send(message).is_err() {
                    tracing::info!(request_id = %origin.request_id, "WebSocket client is not reading; disconnecting");
                    break;
                }
            }
        }
        // Returning drops `running`: every completion still going stops.
    };
    tokio::select! {
        () = writer => {}
        () = reader => {}
    }
}

/// Acts on one client message; returns the reply to send at once, if any.
fn handle(
    edge: &Edge,
    origin: &Origin,
    text: &[u8],
    running: &mut StreamMap<String, BoxStream<'static, Message>>,
) -> Option<Message> {
    let message: ClientMessage = match json::parse(text) {
        Ok(message) => message,
        Err(error) => return Some(error_message(None, error)),
    };
    match message {
        // Cancelling a completion that already ended is a no-op: its
        // `done` or `error` was sent.
        ClientMessage::Cancel { id } => running.remove(&id).map(|_| done_message(&id, true)),
        ClientMessage::Chat { id, request } => {
            let refused = if id.is_empty() || id.len() > MAX_ID_BYTES {
                Some(Error::InvalidArgument(vec![
                    crate::error::FieldViolation::new(
                        "id",
                        format!("1 to {MAX_ID_BYTES} bytes required"),
                    ),
                ]))
            } else if running.contains_key(&id) {
                Some(Error::InvalidArgument(vec![
                    crate::error::FieldViolation::new(
                        "id",
                        "a completion with this id is still running",
                    ),
                ]))
            } else if running.len() >= MAX_RUNNING {
                Some(Error::ResourceExhausted(format!(
                    "at most {MAX_RUNNING} completions run at once on one connection"
                )))
            } else {
                None
            };
            if let Some(error) = refused {
                return Some(error_message(Some(&id), ApiError::from(error)));
            }
            match start(edge, origin, &id, *request) {
                Ok(messages) => {
                    running.insert(id, messages);
                    None
                }
                Err(error) => Some(error_message(Some(&id), error)),
            }
        }
    }
}

/// Starts completion `id`: its messages, pulled by the connection's loop.
fn start(
    edge: &Edge,
    origin: &Origin,
    id: &str,
    request: ChatCompletionRequest,
) -> Result<BoxStream<'static, Message>, ApiError> {
    let mut call = call::start_with_id(
        &edge.calls,
        Method::StreamChat,
        &format!("{}/{id}", origin.request_id),
        origin.caller.as_ref(),
        origin.connection.as_ref(),
    );
    let include_usage = request.include_usage();
    let completion = call.in_span(|| request.start(&edge.chat, include_usage));
    let completion = match completion {
        Ok(completion) => completion,
        Err(error) => return Err(ApiError::from(call.fail(error))),
    };
    call.record_model(&completion.header().model);
    call.record_usage(completion.usage());
    let (header, chunks) = call.in_span(|| completion.into_chunks());
    let chunks = call.stream(chunks).map_err(ApiError::from)?;
    let id = id.to_owned();
    Ok(Box::pin(async_stream::stream! {
        let mut chunks = std::pin::pin!(chunks);
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(chunk) => yield chunk_message(&id, &header, &chunk),
                Err(error) => {
                    yield error_message(Some(&id), ApiError::from(error));
                    return;
                }
            }
        }
        yield done_message(&id, false);
    }))
}

fn chunk_message(id: &str, header: &crate::chat::CompletionHeader, chunk: &ChatChunk) -> Message {
    text(&ServerMessage::Chunk {
        id,
        chunk: chunk_json(header, chunk),
    })
}
