//! The server: builds the core once, serves it through the edges, and runs
//! the graceful shutdown sequence.
//!
//! [`Server::start`] binds, builds the core (models, chat, the document
//! index, the task registry) on the shared state, hands it to the gRPC edge
//! ([`crate::grpc`]) and serves in a background task; the returned handle gives the bound address
//! (useful with port 0), the live [`Metrics`] and the [`Shutdown`] signal.
//! Shutdown goes: health NOT_SERVING, stop accepting calls, let in-flight
//! streams run for the grace period, end the rest with UNAVAILABLE, return.

pub mod call;
mod metrics_endpoint;
pub mod shutdown;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic_health::{ServingStatus, server::HealthReporter};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

pub use call::{Call, CallMeta, CallStream, Calls, Method};
pub use shutdown::Shutdown;

use crate::{
    chat::{Chat, ChatLimits},
    config::ServeConfig,
    grpc, http,
    llm::{
        Models, TokenBudget,
        mock::MockBackend,
        openai::{OpenAiBackend, UpstreamSetupError},
        tool_model::ToolModel,
    },
    metrics::Metrics,
    rag::{DocumentIndex, Rag},
    tasks::{
        TaskLimits, TaskRegistry, Tasks,
        redis::{RedisOptions, RedisStore},
    },
    tokenizer::Tokenizer,
};

/// How long ended streams get to deliver their final status before the
/// remaining connections are closed.
const FLUSH_AFTER_ABORT: Duration = Duration::from_secs(1);

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The embedded descriptors could not be loaded for reflection.
    #[error("cannot build reflection: {0}")]
    Reflection(#[from] grpc::ReflectionError),
    /// The transport failed while serving.
    #[error("server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The HTTP edge failed while serving.
    #[error("HTTP edge failed: {0}")]
    Http(#[source] std::io::Error),
    /// An upstream model server is misconfigured or its models could not be
    /// discovered.
    #[error(transparent)]
    Upstream(#[from] UpstreamSetupError),
    /// `--default-model` names a model that nothing serves.
    #[error("--default-model `{model}` is not served; available: {available}")]
    DefaultModel {
        /// The configured default.
        model: String,
        /// The models served, comma-separated.
        available: String,
    },
    /// `--redis-url` is set but Redis cannot be reached (or the URL is bad).
    #[error("cannot use Redis for tasks (--redis-url): {source}")]
    Redis {
        /// Why.
        #[source]
        source: redis::RedisError,
    },
    /// The document index could not be opened.
    #[error("cannot open the document index: {0}")]
    Index(#[from] crate::Error),
    /// The serving task panicked or was cancelled.
    #[error("server task ended abnormally: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    documents: DocumentIndex,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Server {
    /// Binds `config.listen` and starts serving in the background.
    pub async fn start(config: ServeConfig) -> Result<Self, ServeError> {
        let incoming = TcpIncoming::bind(config.listen)
            .map_err(|source| ServeError::Bind {
                addr: config.listen,
                source,
            })?
            .with_nodelay(Some(true));
        let addr = incoming.local_addr().map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
        let metrics = Metrics::new();
        let shutdown = Shutdown::new();
        let calls = Calls::new(metrics.clone(), shutdown.clone(), config.max_active_streams);

        let tokenizer = Tokenizer::cl100k();
        let mut models = Models::new(config.default_model.clone());
        let builtin = Arc::new(MockBackend::new(
            config.mock_token_delay,
            tokenizer,
            metrics.clone(),
        ));
        models.register(builtin.clone());
        models.register(Arc::new(ToolModel::new(
            config.mock_token_delay,
            tokenizer,
            metrics.clone(),
        )));
        for upstream in OpenAiBackend::connect_all(&config.upstreams, tokenizer, &metrics).await? {
            models.register(Arc::new(upstream));
        }
        if models.resolve("").is_err() {
            return Err(ServeError::DefaultModel {
                model: config.default_model.clone(),
                available: models.names().join(", "),
            });
        }
        let models = Arc::new(models);
        let chat = Chat::new(models.clone(), chat_limits(&config));
        let registry = task_registry(&config).await?;
        tokio::spawn(cancel_tasks_on_abort(registry.clone(), shutdown.clone()));
        let documents = DocumentIndex::open(&config.data_dir).await?;
        let rag = Rag::new(
            documents.clone(),
            registry.clone(),
            models,
            builtin,
            token_budget(&config),
        );
        let tasks = Tasks::new(registry);

        let (health, health_service) = tonic_health::server::health_reporter();
        set_health(&health, ServingStatus::Serving).await;
        let services = grpc::Services::new(chat, rag, tasks, calls);
        let routes = grpc::routes(services.clone(), health_service)?;
        let router = tonic::transport::Server::builder()
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(PropagateRequestIdLayer::x_request_id())
            .add_routes(routes);

        let metrics_addr = match config.metrics_listen {
            Some(listen) => {
                Some(metrics_endpoint::start(listen, metrics.clone(), shutdown.clone()).await?)
            }
            None => None,
        };
        let http = match config.http_listen.addr() {
            Some(listen) => {
                let edge = http::Edge::new(metrics.clone(), shutdown.clone());
                let http = http::bind(listen, edge, services, &config.cors_allow_origins).await?;
                tracing::info!(addr = %http.addr, "http listening");
                Some(http)
            }
            None => None,
        };
        let http_addr = http.as_ref().map(|http| http.addr);
        let grpc = router.serve_with_incoming_shutdown(incoming, shutdown.draining());
        let serve = async move {
            let serve_http = async move {
                match http {
                    Some(http) => http.serving.await,
                    None => Ok(()),
                }
            };
            let (grpc, http) = tokio::join!(grpc, serve_http);
            grpc?;
            http
        };
        let serving = run(serve, shutdown.clone(), health, config.shutdown_grace);
        let index = documents.clone();
        let task = tokio::spawn(async move {
            let result = serving.await;
            // Release the index writer so a new server can open the data dir.
            index.close().await;
            result
        });
        tracing::info!(%addr, default_model = %config.default_model, "agentstream listening");
        Ok(Self {
            addr,
            http_addr,
            metrics_addr,
            metrics,
            shutdown,
            documents,
            task,
        })
    }

    /// The address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the HTTP edge, unless `--http-listen off`.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The address of the metrics endpoint, when `--metrics-listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The server's live counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The shutdown signal; [`Shutdown::request`] starts a graceful shutdown.
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// The document index (for tests and tools in the same process).
    pub fn documents(&self) -> DocumentIndex {
        self.documents.clone()
    }

    /// Waits until the server has stopped.
    pub async fn wait(self) -> Result<(), ServeError> {
        self.task.await?
    }
}

fn chat_limits(config: &ServeConfig) -> ChatLimits {
    ChatLimits {
        budget: token_budget(config),
        max_request_bytes: config.max_request_bytes,
    }
}

fn token_budget(config: &ServeConfig) -> TokenBudget {
    TokenBudget {
        default_max_tokens: config.default_max_tokens,
        max_tokens_limit: config.max_tokens_limit,
    }
}

fn task_limits(config: &ServeConfig) -> TaskLimits {
    TaskLimits {
        retention: config.task_retention,
        max_finished_tasks: config.max_finished_tasks,
        max_unfinished_tasks: config.max_unfinished_tasks,
        max_events: config.max_task_events,
        max_finished_events: config.max_finished_task_events,
    }
}

/// The task registry over the store the configuration names.
async fn task_registry(config: &ServeConfig) -> Result<TaskRegistry, ServeError> {
    let limits = task_limits(config);
    let Some(url) = &config.redis_url else {
        return Ok(TaskRegistry::new(limits));
    };
    let options = RedisOptions {
        url: url.clone(),
        lease: config.redis_lease,
    };
    let store = RedisStore::connect(&options, limits)
        .await
        .map_err(|source| ServeError::Redis { source })?;
    tracing::info!("tasks are kept in Redis");
    Ok(TaskRegistry::with_store(limits, Arc::new(store)))
}

/// Tasks outlive calls, so the end of the drain period cancels them
/// explicitly: their watchers see CANCELLED and the process can exit.
async fn cancel_tasks_on_abort(tasks: TaskRegistry, shutdown: Shutdown) {
    shutdown.streams_aborted().await;
    tasks.cancel_all("cancelled: the server is shutting down");
}

/// Serves until shutdown, then runs the drain sequence.
async fn run(
    serve: impl Future<Output = Result<(), ServeError>>,
    shutdown: Shutdown,
    health: HealthReporter,
    grace: Duration,
) -> Result<(), ServeError> {
    tokio::pin!(serve);
    tokio::select! {
        result = &mut serve => return result,
        () = shutdown.requested() => {}
    }
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "shutting down: draining in-flight calls"
    );
    set_health(&health, ServingStatus::NotServing).await;
    shutdown.start_draining();
    tokio::select! {
        result = &mut serve => return result,
        () = tokio::time::sleep(grace) => {}
    }
    tracing::info!("grace period over: ending in-flight streams");
    shutdown.abort_streams();
    tokio::select! {
        result = &mut serve => result,
        () = tokio::time::sleep(FLUSH_AFTER_ABORT) => {
            tracing::info!("closing the remaining connections");
            Ok(())
        }
    }
}

/// Reports "" (the server as a whole) and every agentstream service with
/// `status`.
async fn set_health(health: &HealthReporter, status: ServingStatus) {
    for service in std::iter::once("").chain(grpc::SERVICE_NAMES) {
        health.set_service_status(service, status).await;
    }
}
