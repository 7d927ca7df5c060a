//! Shared test harness: a real server on 127.0.0.1:0, in this process, and
//! tonic clients connected to it over TCP.

#![allow(dead_code)]

pub mod binary;
pub mod sse;
pub mod ws;

use std::{future::Future, sync::Arc, time::Duration};

use agentstream::{
    config::ServeConfig,
    metrics::{Metrics, MetricsSnapshot},
    pb::{
        self, chat_service_client::ChatServiceClient, rag_service_client::RagServiceClient,
        task_service_client::TaskServiceClient,
    },
    rag::DocumentIndex,
    server::{Server, Shutdown},
};
use tonic::{
    IntoRequest, Streaming,
    transport::{Channel, Endpoint},
};

/// How long `eventually` waits before failing a test.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A running server and a channel to it.
pub struct TestServer {
    pub server: Server,
    pub channel: Channel,
    pub metrics: Arc<Metrics>,
    pub shutdown: Shutdown,
    pub data_dir: tempfile::TempDir,
}

impl TestServer {
    /// A server on the defaults, with tokens 1 ms apart.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A server whose configuration `tweak` adjusts.
    pub async fn start_with(tweak: impl FnOnce(&mut ServeConfig)) -> Self {
        Self::start_in(tempfile::tempdir().expect("temp dir"), tweak).await
    }

    /// Stops this server and starts a new one on the same data directory
    /// (on the test defaults and a short shutdown grace).
    pub async fn restart(self) -> Self {
        let data_dir = self.stop().await;
        Self::start_in(data_dir, |config| {
            config.shutdown_grace = Duration::from_millis(100);
        })
        .await
    }

    /// A server whose document index is `documents` (on a test disk, say),
    /// on the test defaults that `tweak` adjusts.
    pub async fn start_with_index(
        data_dir: tempfile::TempDir,
        documents: DocumentIndex,
        tweak: impl FnOnce(&mut ServeConfig),
    ) -> Self {
        let mut config = test_config(&data_dir);
        tweak(&mut config);
        let server = Server::start_with_documents(config, Some(documents))
            .await
            .expect("server starts");
        Self::around(server, data_dir).await
    }

    /// Stops the server, waiting until it has, and hands back its data
    /// directory.
    pub async fn stop(self) -> tempfile::TempDir {
        let Self {
            server,
            channel,
            shutdown,
            data_dir,
            ..
        } = self;
        drop(channel);
        shutdown.request();
        server.wait().await.expect("server stops");
        data_dir
    }

    async fn start_in(data_dir: tempfile::TempDir, tweak: impl FnOnce(&mut ServeConfig)) -> Self {
        let mut config = test_config(&data_dir);
        tweak(&mut config);
        let server = Server::start(config).await.expect("server starts");
        Self::around(server, data_dir).await
    }

    async fn around(server: Server, data_dir: tempfile::TempDir) -> Self {
        let channel = connect(server.local_addr()).await;
        Self {
            metrics: server.metrics(),
            shutdown: server.shutdown(),
            server,
            channel,
            data_dir,
        }
    }

    pub fn chat(&self) -> ChatServiceClient<Channel> {
        ChatServiceClient::new(self.channel.clone())
    }

    pub fn rag(&self) -> RagServiceClient<Channel> {
        RagServiceClient::new(self.channel.clone())
    }

    pub fn tasks(&self) -> TaskServiceClient<Channel> {
        TaskServiceClient::new(self.channel.clone())
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Opens a StreamChat call that must be accepted.
    pub async fn stream_chat(
        &self,
        request: impl IntoRequest<pb::StreamChatRequest>,
    ) -> Streaming<pb::StreamChatResponse> {
        accepted(self.chat().stream_chat(request).await)
    }

    /// Opens a StreamAnswer call that must be accepted.
    pub async fn stream_answer(
        &self,
        request: impl IntoRequest<pb::StreamAnswerRequest>,
    ) -> Streaming<pb::StreamAnswerResponse> {
        accepted(self.rag().stream_answer(request).await)
    }

    /// ResumeStream of `stream_id` after chunk `after_sequence`.
    pub async fn resume_stream(
        &self,
        stream_id: &str,
        after_sequence: u64,
    ) -> Result<Streaming<pb::StreamChatResponse>, tonic::Status> {
        self.chat()
            .resume_stream(pb::ResumeStreamRequest {
                stream_id: stream_id.into(),
                after_sequence,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// CancelStream of `stream_id`.
    pub async fn cancel_stream(&self, stream_id: &str) -> Result<(), tonic::Status> {
        let request = pb::CancelStreamRequest {
            stream_id: stream_id.into(),
        };
        self.chat().cancel_stream(request).await.map(drop)
    }

    /// The models ListModels names.
    pub async fn list_models(&self) -> Vec<pb::Model> {
        self.chat()
            .list_models(pb::ListModelsRequest {})
            .await
            .expect("list")
            .into_inner()
            .models
    }

    /// DeleteDocument of `document_id`.
    pub async fn delete_document(&self, document_id: &str) -> Result<(), tonic::Status> {
        self.rag()
            .delete_document(pb::DeleteDocumentRequest {
                document_id: document_id.into(),
            })
            .await
            .map(drop)
    }

    /// The ids on the first page (up to 1000) of ListDocuments.
    pub async fn document_ids(&self) -> Vec<String> {
        let page = self
            .rag()
            .list_documents(pb::ListDocumentsRequest {
                page_size: 1000,
                page_token: String::new(),
            })
            .await
            .expect("list")
            .into_inner();
        page.documents.into_iter().map(|d| d.id).collect()
    }

    /// Waits until no generation is live; `what` says why none should be.
    pub async fn until_no_generation(&self, what: &str) -> MetricsSnapshot {
        self.until(what, |m| m.live_generations == 0).await
    }

    /// Asserts how many generations are live and streams open now.
    #[track_caller]
    pub fn assert_live(&self, generations: i64, streams: i64) {
        let live = self.metrics();
        assert_eq!(
            (live.live_generations, live.active_streams),
            (generations, streams)
        );
    }

    /// Waits until the calls a client left are gone (no live generation,
    /// no open stream), then proves none of them still produces tokens.
    pub async fn assert_dropped(&self, what: &str) {
        self.until(what, |m| m.live_generations == 0 && m.active_streams == 0)
            .await;
        self.assert_no_token_produced_meanwhile().await;
    }

    /// The URL of `path` on the HTTP edge.
    pub fn url(&self, path: &str) -> String {
        http_url(self, path)
    }

    /// GET `path` on the HTTP edge.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        send(http_client().get(self.url(path))).await
    }

    /// POST `body` as JSON to `path` on the HTTP edge.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        send(http_client().post(self.url(path)).json(body)).await
    }

    /// POST `path` on the HTTP edge without a body.
    pub async fn post_empty(&self, path: &str) -> reqwest::Response {
        send(http_client().post(self.url(path))).await
    }

    /// A browser's CORS preflight from `http://app.example` for a POST to
    /// the chat completions route with `request_headers`.
    pub async fn preflight(&self, request_headers: &str) -> reqwest::Response {
        use reqwest::header;
        http_client()
            .request(reqwest::Method::OPTIONS, self.url("/v1/chat/completions"))
            .header(header::ORIGIN, "http://app.example")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, request_headers)
            .send()
            .await
            .expect("preflight")
    }

    /// POST `body` to the chat completions route, asking for `accept` when
    /// given.
    pub async fn post_completion(
        &self,
        body: &serde_json::Value,
        accept: Option<&str>,
    ) -> reqwest::Response {
        let mut request = http_client()
            .post(self.url("/v1/chat/completions"))
            .json(body);
        if let Some(accept) = accept {
            request = request.header(reqwest::header::ACCEPT, accept);
        }
        send(request).await
    }

    /// DELETE `path` on the HTTP edge.
    pub async fn delete(&self, path: &str) -> reqwest::Response {
        send(http_client().delete(self.url(path))).await
    }

    /// Proves that nothing left over is still producing tokens: a call of
    /// known size, made once no generation should be live, moves the
    /// server's token counter by exactly its own usage.
    pub async fn assert_no_token_produced_meanwhile(&self) {
        use futures::StreamExt;

        self.until_no_generation("no live generation").await;
        let before = self.metrics().tokens_generated;
        let request = pb::StreamChatRequest {
            messages: vec![user("sync point")],
            model: "echo".into(),
            include_usage: true,
            ..Default::default()
        };
        let mut stream = self.stream_chat(request).await;
        let mut own = None;
        while let Some(chunk) = stream.next().await {
            own = chunk
                .expect("chunk")
                .usage
                .map(|u| u.completion_tokens)
                .or(own);
        }
        let own = own.expect("usage chunk");
        assert_eq!(
            self.metrics().tokens_generated,
            before + u64::from(own),
            "tokens were produced for a call that was gone"
        );
    }

    /// Starts an ingestion over RPC (IngestDocuments) and returns its task.
    pub async fn start_ingestion(
        &self,
        documents: Vec<agentstream::pb::Document>,
    ) -> agentstream::pb::Task {
        let task = self
            .rag()
            .ingest_documents(agentstream::pb::IngestDocumentsRequest { documents })
            .await
            .expect("ingestion accepted")
            .into_inner()
            .task
            .expect("task");
        assert_eq!(task.kind, "ingest");
        task
    }

    /// Watches task `task_id` from its first event to its end.
    pub async fn watch_to_end(&self, task_id: &str) -> Vec<agentstream::pb::TaskEvent> {
        use futures::StreamExt;

        let mut stream = self
            .tasks()
            .watch_task(agentstream::pb::WatchTaskRequest {
                task_id: task_id.into(),
                after_sequence: 0,
            })
            .await
            .expect("watch")
            .into_inner();
        let mut events = Vec::new();
        while let Some(event) = stream.next().await {
            events.extend(event.expect("event").event);
        }
        events
    }

    /// Ingests `documents` over RPC and waits for the task to succeed.
    pub async fn ingest(&self, documents: Vec<agentstream::pb::Document>) {
        let task = self.start_ingestion(documents).await;
        let events = self.watch_to_end(&task.task_id).await;
        let last = events.last().expect("events");
        assert_eq!(
            last.state(),
            agentstream::pb::TaskState::Succeeded,
            "{last:?}"
        );
        assert_eq!(last.percent, 100.0);
    }

    /// Waits until `condition` holds on the server's counters.
    pub async fn until(
        &self,
        what: &str,
        condition: impl Fn(&MetricsSnapshot) -> bool,
    ) -> MetricsSnapshot {
        let metrics = self.metrics.clone();
        eventually(what, || {
            let snapshot = metrics.snapshot();
            let ready = condition(&snapshot).then_some(snapshot);
            async move { ready }
        })
        .await
    }
}

/// The configuration test servers start from: free ports, `data_dir`,
/// tokens 1 ms apart, the tokenizer's tables built before serving (so a
/// test's deadline never covers their one-time load in a debug build;
/// tests/tokenizer_load.rs covers the lazy default).
pub fn test_config(data_dir: &tempfile::TempDir) -> ServeConfig {
    ServeConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        http_listen: "127.0.0.1:0".parse().expect("addr"),
        mock_token_delay: Duration::from_millis(1),
        preload_tokenizer: true,
        data_dir: data_dir.path().to_path_buf(),
        ..ServeConfig::default()
    }
}

/// A demo task of `steps` steps `step_delay_ms` apart that fails at step
/// `fail_at_step` (0: never).
pub fn demo(steps: u32, step_delay_ms: u32, fail_at_step: u32) -> pb::StartTaskRequest {
    pb::StartTaskRequest {
        spec: Some(pb::start_task_request::Spec::Demo(pb::DemoTaskSpec {
            steps,
            step_delay_ms,
            fail_at_step,
        })),
    }
}

/// A TaskService client.
pub type TaskClient = TaskServiceClient<Channel>;

/// StartTask, which must be accepted.
pub async fn start_task(client: &mut TaskClient, request: pb::StartTaskRequest) -> pb::Task {
    let response = client.start_task(request).await.expect("StartTask");
    response.into_inner().task.expect("task")
}

/// GetTask of `task_id`.
pub async fn get_task(client: &mut TaskClient, task_id: &str) -> Result<pb::Task, tonic::Status> {
    let request = pb::GetTaskRequest {
        task_id: task_id.into(),
    };
    Ok(client
        .get_task(request)
        .await?
        .into_inner()
        .task
        .expect("task"))
}

/// WatchTask of `task_id` after event `after_sequence`.
pub async fn watch_task(
    client: &mut TaskClient,
    task_id: &str,
    after_sequence: u64,
) -> Result<Streaming<pb::WatchTaskResponse>, tonic::Status> {
    let request = pb::WatchTaskRequest {
        task_id: task_id.into(),
        after_sequence,
    };
    Ok(client.watch_task(request).await?.into_inner())
}

/// The next event of a task watch, within [`PATIENCE`]; `None` when the
/// watch ended with OK.
pub async fn next_event(events: &mut Streaming<pb::WatchTaskResponse>) -> Option<pb::TaskEvent> {
    use futures::StreamExt;
    let item = tokio::time::timeout(PATIENCE, events.next())
        .await
        .expect("an event or the end in time")?;
    Some(item.expect("no error status").event.expect("event"))
}

/// Every remaining event of a task watch that must end with OK.
pub async fn rest_of_watch(events: &mut Streaming<pb::WatchTaskResponse>) -> Vec<pb::TaskEvent> {
    let mut all = Vec::new();
    while let Some(event) = next_event(events).await {
        all.push(event);
    }
    all
}

/// One gRPC-Web message frame (flag 0, big-endian length, message).
pub fn grpc_web_frame(message: &impl prost::Message) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(bytes.len()).expect("small").to_be_bytes());
    frame.extend_from_slice(&bytes);
    frame
}

/// Sends an HTTP request that must get a response.
pub async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    request.send().await.expect("an HTTP response")
}

/// The JSON body of an HTTP response.
pub async fn json_of(response: reqwest::Response) -> serde_json::Value {
    response.json().await.expect("JSON body")
}

/// The `param` an HTTP 400 in OpenAI's error JSON names.
pub async fn bad_param(response: reqwest::Response) -> serde_json::Value {
    assert_eq!(response.status(), reqwest::StatusCode::BAD_REQUEST);
    json_of(response).await["error"]["param"].clone()
}

/// `message` with `authorization: Bearer key`.
pub fn with_key<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("ascii"),
    );
    request
}

/// A chat request asking `question` of the default model.
pub fn ask(question: &str) -> agentstream::pb::StreamChatRequest {
    agentstream::pb::StreamChatRequest {
        messages: vec![user(question)],
        ..Default::default()
    }
}

/// A chat request that would run for a long time: `n` choices of synthetic
/// tokens with a large budget.
pub fn endless(n: u32) -> agentstream::pb::StreamChatRequest {
    agentstream::pb::StreamChatRequest {
        model: "synthetic".into(),
        max_tokens: 200_000,
        n,
        ..ask("go")
    }
}

/// The stream of a streaming call that must be accepted.
pub fn accepted<T>(call: Result<tonic::Response<Streaming<T>>, tonic::Status>) -> Streaming<T> {
    call.expect("call accepted").into_inner()
}

/// Every message of `stream` until it ends, and how it ended.
pub async fn drain<T>(stream: &mut tonic::Streaming<T>) -> (Vec<T>, Result<(), tonic::Status>) {
    use futures::StreamExt;
    let mut items = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(item) => items.push(item),
            Err(status) => return (items, Err(status)),
        }
    }
    (items, Ok(()))
}

/// [`endless`] `n` choices, asked as a resumable stream.
pub fn endless_resumable(n: u32) -> pb::StreamChatRequest {
    pb::StreamChatRequest {
        resumable: true,
        ..endless(n)
    }
}

/// `tokens` synthetic tokens, asked as a resumable stream.
pub fn resumable(tokens: u32) -> pb::StreamChatRequest {
    pb::StreamChatRequest {
        model: "synthetic".into(),
        max_tokens: tokens,
        messages: vec![user("go")],
        resumable: true,
        ..Default::default()
    }
}

/// The sequence numbers of `chunks`.
pub fn sequences(chunks: &[pb::StreamChatResponse]) -> Vec<u64> {
    chunks.iter().map(|c| c.sequence).collect()
}

/// The next `n` chunks of a chat stream, which must come.
pub async fn take(
    stream: &mut Streaming<pb::StreamChatResponse>,
    n: usize,
) -> Vec<pb::StreamChatResponse> {
    use futures::StreamExt;
    let mut chunks = Vec::new();
    for _ in 0..n {
        chunks.push(stream.next().await.expect("a chunk").expect("ok"));
    }
    chunks
}

/// Every message of a stream that must end with OK.
pub async fn drain_ok<T>(stream: &mut tonic::Streaming<T>) -> Vec<T> {
    let (items, end) = drain(stream).await;
    if let Err(status) = end {
        panic!("the stream ended with {status:?}");
    }
    items
}

/// Asserts that `status` has `code` and a message that says `says`.
#[track_caller]
pub fn assert_status(status: &tonic::Status, code: tonic::Code, says: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(says), "{}", status.message());
}

/// The fields named by the BadRequest detail of an INVALID_ARGUMENT
/// status, in order.
pub fn bad_request_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .expect("BadRequest detail")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect()
}

/// A user message.
pub fn user(content: &str) -> agentstream::pb::ChatMessage {
    agentstream::pb::ChatMessage {
        role: agentstream::pb::Role::User as i32,
        content: content.into(),
        ..Default::default()
    }
}

/// The concatenated text of choice `index` over `chunks`.
pub fn text_of(chunks: &[agentstream::pb::StreamChatResponse], index: u32) -> String {
    chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter(|c| c.index == index)
        .filter_map(|c| c.delta.as_ref())
        .map(|d| d.content.as_str())
        .collect()
}

/// The completion tokens the usage chunk (the last one) of `chunks`
/// counts, if there is one.
pub fn completion_tokens(chunks: &[pb::StreamChatResponse]) -> Option<u32> {
    chunks
        .last()
        .and_then(|c| c.usage)
        .map(|u| u.completion_tokens)
}

/// The value of the unlabelled series `name` on the Prometheus text page
/// at `url`.
pub async fn scrape_series<T: std::str::FromStr>(url: &str, name: &str) -> T {
    let text = send(http_client().get(url))
        .await
        .text()
        .await
        .expect("body");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// The URL of `path` on the server's HTTP edge.
pub fn http_url(server: &TestServer, path: &str) -> String {
    let addr = server.server.http_addr().expect("the HTTP edge is on");
    format!("http://{addr}{path}")
}

/// An HTTP/1.1 client for the HTTP edge (reqwest is built with rustls but
/// without a crypto provider, which is installed here once).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A channel to `addr`.
pub async fn connect(addr: std::net::SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connects")
}

/// Polls `check` until it yields a value, failing the test after [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A JSON value as a `google.protobuf.Value` (for tool schemas).
pub fn to_struct_value(v: &serde_json::Value) -> pbjson_types::Value {
    use pbjson_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(pbjson_types::ListValue {
            values: a.iter().map(to_struct_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(pbjson_types::Struct {
            fields: o
                .iter()
                .map(|(k, v)| (k.clone(), to_struct_value(v)))
                .collect(),
        }),
    };
    pbjson_types::Value { kind: Some(kind) }
}
