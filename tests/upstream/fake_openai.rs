//! A fake OpenAI-compatible server (axum on 127.0.0.1:0) that answers from a
//! script, records what it was asked, and reports when hyper drops one of
//! its event streams before the stream ended by itself: that is what a
//! closed upstream connection looks like from the model server's side.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::Response,
    routing::{get, post},
};
use serde_json::{Value, json};
use tokio::sync::watch;

/// How the fake answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A plain HTTP answer (an error, usually).
    Status {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// An event stream: `frames` (raw SSE text) each after `delay`, then
    /// `after`.
    Sse {
        frames: Vec<String>,
        delay: Duration,
        after: After,
    },
    /// An event stream sent as these raw body chunks, `delay` apart (to
    /// split events anywhere, even inside a UTF-8 character).
    Bytes {
        chunks: Vec<Vec<u8>>,
        delay: Duration,
    },
}

impl Reply {
    /// A model that sends `"tick "` every `delay` until it is stopped.
    pub fn endless(delay: Duration) -> Self {
        Reply::Sse {
            frames: Vec::new(),
            delay,
            after: After::Endless,
        }
    }

    /// A model that opens its event stream and then sends nothing.
    pub fn stalled() -> Self {
        Reply::Sse {
            frames: Vec::new(),
            delay: Duration::from_millis(1),
            after: After::Hang,
        }
    }
}

/// What an event stream does once its frames are sent.
#[derive(Debug, Clone, Copy)]
pub enum After {
    /// Ends the body.
    End,
    /// Sends a content chunk (`"tick "`) every delay, forever: a model that
    /// generates until it is stopped.
    Endless,
    /// Sends nothing more and never ends: a stalled model.
    Hang,
}

/// The fake's record of what happened.
#[derive(Default)]
struct Record {
    bodies: Vec<Value>,
    authorizations: Vec<Option<String>>,
    traceparents: Vec<Option<String>>,
}

#[derive(Clone)]
struct FakeState {
    script: Arc<Vec<Reply>>,
    models: Arc<Vec<String>>,
    record: Arc<Mutex<Record>>,
    /// Counts event streams dropped before they ended by themselves.
    dropped: Arc<watch::Sender<usize>>,
}

/// A running fake upstream.
pub struct FakeOpenAi {
    pub addr: SocketAddr,
    state: FakeState,
}

impl FakeOpenAi {
    /// Serves `script`: request k gets `script[k]`, or the last entry once
    /// the script is used up. `GET /v1/models` lists `models`.
    pub async fn start(script: Vec<Reply>, models: &[&str]) -> Self {
        let (dropped, _) = watch::channel(0);
        let state = FakeState {
            script: Arc::new(script),
            models: Arc::new(models.iter().map(|m| m.to_string()).collect()),
            record: Arc::default(),
            dropped: Arc::new(dropped),
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/models", get(list_models))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake binds");
        let addr = listener.local_addr().expect("fake addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, state }
    }

    /// The base URL to configure (`http://127.0.0.1:PORT/v1`).
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The JSON bodies of every chat request received.
    pub fn bodies(&self) -> Vec<Value> {
        self.state.record.lock().expect("record").bodies.clone()
    }

    /// The `Authorization` header of every chat request received.
    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.state
            .record
            .lock()
            .expect("record")
            .authorizations
            .clone()
    }

    /// The W3C `traceparent` header of every chat request received.
    #[allow(dead_code)] // used by tests/telemetry.rs only
    pub fn traceparents(&self) -> Vec<Option<String>> {
        self.state
            .record
            .lock()
            .expect("record")
            .traceparents
            .clone()
    }

    /// How many chat requests were received.
    pub fn requests(&self) -> usize {
        self.bodies().len()
    }

    /// Waits until an event stream has been dropped before its end (the
    /// client closed the connection); panics after `within`.
    pub async fn stream_dropped(&self, within: Duration) {
        let mut seen = self.state.dropped.subscribe();
        tokio::time::timeout(within, seen.wait_for(|n| *n >= 1))
            .await
            .expect("the upstream response stream was not dropped in time")
            .expect("fake alive");
    }

    /// Event streams dropped before their end so far.
    pub fn dropped_streams(&self) -> usize {
        *self.state.dropped.borrow()
    }
}

async fn list_models(State(state): State<FakeState>) -> Json<Value> {
    let data: Vec<Value> = state
        .models
        .iter()
        .map(|id| json!({"id": id, "object": "model", "owned_by": "fake"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

async fn chat(
    State(state): State<FakeState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let index = {
        let mut record = state.record.lock().expect("record");
        record.bodies.push(body);
        record.authorizations.push(
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        );
        record.traceparents.push(
            headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        );
        record.bodies.len() - 1
    };
    let reply = state.script[index.min(state.script.len() - 1)].clone();
    // `{host}` in a scripted body or frame becomes the fake's own
    // `host:port`, as a real server's error text may name itself.
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    match reply {
        Reply::Status {
            status,
            headers,
            body,
        } => {
            let body = body.replace("{host}", &host);
            let mut response = Response::builder()
                .status(StatusCode::from_u16(status).expect("status"))
                .header(header::CONTENT_TYPE, "application/json");
            for (name, value) in headers {
                response = response.header(name, value);
            }
            response.body(Body::from(body)).expect("response")
        }
        Reply::Sse {
            frames,
            delay,
            after,
        } => {
            let frames = frames.iter().map(|f| f.replace("{host}", &host)).collect();
            Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .body(Body::from_stream(sse(frames, delay, after, state.dropped)))
                .expect("response")
        }
        Reply::Bytes { chunks, delay } => Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(Body::from_stream(async_stream::stream! {
                for chunk in chunks {
                    tokio::time::sleep(delay).await;
                    yield Ok::<_, Infallible>(chunk);
                }
            }))
            .expect("response"),
    }
}

/// Signals the fake when dropped before `ended` was set.
struct DropSignal {
    dropped: Arc<watch::Sender<usize>>,
    ended: bool,
}

impl Drop for DropSignal {
    fn drop(&mut self) {
        if !self.ended {
            self.dropped.send_modify(|n| *n += 1);
        }
    }
}

fn sse(
    frames: Vec<String>,
    delay: Duration,
    after: After,
    dropped: Arc<watch::Sender<usize>>,
) -> impl futures::Stream<Item = Result<String, Infallible>> + Send {
    async_stream::stream! {
        let mut signal = DropSignal { dropped, ended: false };
        for frame in frames {
            tokio::time::sleep(delay).await;
            yield Ok(frame);
        }
        match after {
            After::End => {}
            After::Endless => loop {
                tokio::time::sleep(delay).await;
                yield Ok(data(&content(0, "tick ", None)));
            },
            After::Hang => std::future::pending::<()>().await,
        }
        signal.ended = true;
    }
}

/// An SSE frame carrying `payload` as its data.
pub fn data(payload: &str) -> String {
    format!("data: {payload}\n\n")
}

/// A `chat.completion.chunk` with one choice.
pub fn content(index: u32, text: &str, finish_reason: Option<&str>) -> String {
    json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "fake-model",
        "choices": [{
            "index": index,
            "delta": {"content": text},
            "logprobs": null,
            "finish_reason": finish_reason
        }]
    })
    .to_string()
}

/// The usage chunk OpenAI sends last when `include_usage` is set.
pub fn usage(prompt: u32, completion: u32) -> String {
    json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion
        }
    })
    .to_string()
}

/// A whole stream for one choice: a role chunk, `pieces`, a finish chunk,
/// optionally the usage, and `[DONE]`.
pub fn completion(pieces: &[&str], finish: &str, with_usage: Option<(u32, u32)>) -> Vec<String> {
    let role = json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]});
    let mut frames = vec![data(&role.to_string())];
    frames.extend(pieces.iter().map(|p| data(&content(0, p, None))));
    frames.push(data(&content(0, "", Some(finish))));
    if let Some((prompt, completion)) = with_usage {
        frames.push(data(&usage(prompt, completion)));
    }
    frames.push(data("[DONE]"));
    frames
}

/// A stream reply with frames `delay` apart that ends.
pub fn stream(frames: Vec<String>) -> Reply {
    Reply::Sse {
        frames,
        delay: Duration::from_millis(1),
        after: After::End,
    }
}

/// An error reply with an OpenAI-shaped body.
pub fn error(status: u16, message: &str, param: Option<&str>) -> Reply {
    Reply::Status {
        status,
        headers: Vec::new(),
        body: json!({"error": {"message": message, "type": "error", "param": param, "code": null}})
            .to_string(),
    }
}

/// `frames` joined and cut every `size` bytes: events, JSON tokens and
/// UTF-8 characters all split across body chunks.
pub fn split_every(frames: &[String], size: usize) -> Reply {
    let body = frames.concat().into_bytes();
    Reply::Bytes {
        chunks: body.chunks(size).map(<[u8]>::to_vec).collect(),
        delay: Duration::from_millis(1),
    }
}

/// A chunk whose only choice has `delta` and `finish_reason`.
pub fn delta(delta: Value, finish_reason: Option<&str>) -> String {
    json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    })
    .to_string()
}
