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
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut config = ServeConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
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
