//! Shared test harness: a real server on 127.0.0.1:0, in this process, and
//! tonic clients connected to it over TCP.

#![allow(dead_code)]

use std::{future::Future, time::Duration};

use agentstream::{
    config::ServeConfig,
    metrics::{Metrics, MetricsSnapshot},
    pb::{
        chat_service_client::ChatServiceClient, rag_service_client::RagServiceClient,
        task_service_client::TaskServiceClient,
    },
    server::{Server, Shutdown},
};
use std::sync::Arc;
use tonic::transport::{Channel, Endpoint};

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
        Self::start_in(data_dir, |config| {
            config.shutdown_grace = Duration::from_millis(100);
        })
        .await
    }

    async fn start_in(data_dir: tempfile::TempDir, tweak: impl FnOnce(&mut ServeConfig)) -> Self {
        let mut config = ServeConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            http_listen: "127.0.0.1:0".parse().expect("addr"),
            mock_token_delay: Duration::from_millis(1),
            data_dir: data_dir.path().to_path_buf(),
            ..ServeConfig::default()
        };
        tweak(&mut config);
        let server = Server::start(config).await.expect("server starts");
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

    /// Proves that nothing left over is still producing tokens: a call of
    /// known size, made once no generation should be live, moves the
    /// server's token counter by exactly its own usage.
    pub async fn assert_no_token_produced_meanwhile(&self) {
        use agentstream::pb;
        use futures::StreamExt;

        self.until("no live generation", |m| m.live_generations == 0)
            .await;
        let before = self.metrics().tokens_generated;
        let request = pb::StreamChatRequest {
            messages: vec![user("sync point")],
            model: "echo".into(),
            include_usage: true,
            ..Default::default()
        };
        let mut stream = self
            .chat()
            .stream_chat(request)
            .await
            .expect("call")
            .into_inner();
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

/// Every message of a stream that must end with OK.
pub async fn drain_ok<T>(stream: &mut tonic::Streaming<T>) -> Vec<T> {
    let (items, end) = drain(stream).await;
    if let Err(status) = end {
        panic!("the stream ended with {status:?}");
    }
    items
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
