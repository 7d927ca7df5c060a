//! The server: builds the core once, serves it through the edges, and runs
//! the graceful shutdown sequence.
//!
//! [`Server::start`] binds, builds the core (models, chat, the document
//! index, the task registry) on the shared state, hands it to the gRPC edge
//! ([`crate::grpc`]) and serves in a background task; the returned handle gives the bound address
//! (useful with port 0), the live [`Metrics`] and the [`Shutdown`] signal.
//! Shutdown goes: health NOT_SERVING, stop accepting calls, let in-flight
//! streams run for the grace period, end the rest with UNAVAILABLE, return.

pub(crate) mod auth;
pub(crate) mod call;
mod metrics_endpoint;
pub(crate) mod request_id;
pub(crate) mod shutdown;
pub(crate) mod slots;
pub(crate) mod transport;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, task::JoinHandle};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use auth::{ApiKeys, RequireKeyLayer};
pub(crate) use call::{Call, CallMeta, CallStream, Calls, ConnectionStreams, Method};
pub use shutdown::Shutdown;
use transport::{Protocols, Transport, tls::Tls};

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
    metrics::{Metrics, ScrapedGauges},
    offload::Offload,
    rag::{DocumentIndex, Rag},
    streams::{StreamLimits, Streams, redis::RedisStreams},
    tasks::{
        TaskLimits, TaskRegistry, Tasks,
        redis::{RedisOptions, RedisStore},
    },
    tokenizer::Tokenizer,
};

/// How long ended streams get to deliver their final status before the
/// remaining connections are closed.
const FLUSH_AFTER_ABORT: Duration = Duration::from_secs(1);

/// Binds `listen`; returns the listener and its bound address (useful with
/// port 0).
pub(crate) async fn bind(listen: SocketAddr) -> Result<(TcpListener, SocketAddr), ServeError> {
    let bind_error = |source| ServeError::Bind {
        addr: listen,
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, addr))
}

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
    /// The TLS certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] transport::tls::TlsError),
    /// Only one of `--tls-cert` and `--tls-key` is set.
    #[error("--tls-cert and --tls-key go together: set both or neither")]
    TlsHalf,
    /// The API keys file cannot be used.
    #[error(transparent)]
    ApiKeys(#[from] auth::KeysFileError),
    /// The serving task panicked or was cancelled.
    #[error("server task ended abnormally: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A running server.
pub struct Server {
    offload: Offload,
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
        Self::start_with_documents(config, None).await
    }

    /// Like [`Server::start`], over `documents` when given (an index opened
    /// with [`DocumentIndex::open_in`], e.g. on a directory that injects
    /// faults in tests) instead of the one in `config.data_dir`.
    pub async fn start_with_documents(
        config: ServeConfig,
        documents: Option<DocumentIndex>,
    ) -> Result<Self, ServeError> {
        let (listener, addr) = bind(config.listen).await?;
        let keys = match &config.api_keys_file {
            Some(path) => Some(Arc::new(ApiKeys::load(path, config.max_streams_per_key)?)),
            None => None,
        };
        let access = match &keys {
            Some(keys) => format!("API key required ({} keys)", keys.len()),
            None => "open: no API keys (--api-keys-file), every client is served".to_owned(),
        };
        let auth = RequireKeyLayer::new(keys);
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(Tls::load(cert, key)?),
            (None, None) => None,
            _ => return Err(ServeError::TlsHalf),
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let metrics = Metrics::new();
        let shutdown = Shutdown::new();
        let calls = Calls::new(metrics.clone(), shutdown.clone(), config.max_active_streams);

        let tokenizer = Tokenizer::cl100k();
        if config.preload_tokenizer {
            Tokenizer::loaded().await;
        }
        let mut models = Models::new(config.default_model.clone());
        models.list_models_in_errors(config.api_keys_file.is_none());
        models.register(Arc::new(MockBackend::new(
            config.mock_token_delay,
            tokenizer,
            metrics.clone(),
        )));
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
        let redis = redis_store(&config).await?;
        let streams = match &redis {
            Some(store) => Streams::new(Arc::new(RedisStreams::new(
                store.link(),
                stream_limits(&config),
            ))),
            None => Streams::in_memory(stream_limits(&config)),
        };
        let offload = Offload::new(config.offload_limits());
        let chat = Chat::new(models.clone(), chat_limits(&config))
            .with_streams(streams.clone())
            .with_offload(offload.clone());
        let registry = match redis {
            Some(store) => TaskRegistry::with_store(task_limits(&config), store),
            None => TaskRegistry::new(task_limits(&config)),
        };
        tokio::spawn(cancel_tasks_on_abort(registry.clone(), shutdown.clone()));
        let documents = match documents {
            Some(documents) => documents,
            None => DocumentIndex::open(&config.data_dir).await?,
        };
        let rag = Rag::new(
            documents.clone(),
            registry.clone(),
            models,
            token_budget(&config),
        )
        .with_max_queued_ingest_bytes(config.max_queued_ingest_bytes)
        .with_metrics(metrics.clone());
        register_scraped(&metrics, &registry, &documents, &streams);
        let tasks = Tasks::new(registry);

        let (health, health_service) = tonic_health::server::health_reporter();
        set_health(&health, ServingStatus::Serving).await;
        let mut services =
            grpc::Services::new(chat.clone(), rag.clone(), tasks.clone(), calls.clone());
        services.chat = services
            .chat
            .max_decoding_message_size(chat_decoding_limit(config.max_request_bytes));
        let routes = grpc::routes(services.clone(), health_service)?;
        // In order: an unacceptable client id is dropped, a request id is
        // set (the client's, or a new one), marked unindexed, then echoed
        // on the response.
        let grpc = tower::ServiceBuilder::new()
            .map_request(request_id::drop_unacceptable)
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .map_request(request_id::unindexed)
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(auth.clone())
            .service(routes);

        let metrics_addr = match config.metrics_listen {
            Some(listen) => {
                Some(metrics_endpoint::start(listen, metrics.clone(), shutdown.clone()).await?)
            }
            None => None,
        };
        let transport = Transport::new(config.transport_limits(), tls, shutdown.clone());
        transport.serve(listener, grpc, Protocols::Http2);
        let http_addr = match config.http_listen.addr() {
            Some(listen) => {
                let core = http::Core {
                    chat,
                    rag,
                    tasks,
                    calls,
                    shutdown: shutdown.clone(),
                };
                let edge = http::Edge::new(&config, core);
                let http =
                    http::bind(listen, edge, services, &config.cors_allow_origins, auth).await?;
                tracing::info!(addr = %http.addr, scheme, "http listening");
                transport.serve(http.listener, http.app, Protocols::Http1AndHttp2);
                Some(http.addr)
            }
            None => None,
        };
        let serving = run(transport, shutdown.clone(), health, config.shutdown_grace);
        let index = documents.clone();
        let task = tokio::spawn(async move {
            let result = serving.await;
            // Resumable streams outlive calls: once nothing is served any
            // more, stop their generations and forget them.
            streams.close();
            // Release the index writer so a new server can open the data dir.
            index.close().await;
            result
        });
        tracing::info!(%addr, scheme, default_model = %config.default_model, %access, "agentstream listening");
        Ok(Self {
            offload,
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

    /// The pool of CPU-heavy request work (for tests and tools in the same
    /// process).
    pub fn offload(&self) -> Offload {
        self.offload.clone()
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

/// The largest StreamChat request tonic decodes: gRPC's usual 4 MiB, or
/// more when `--max-request-bytes` allows more content, with room for the
/// other fields, so that an oversized request is refused by validation
/// (INVALID_ARGUMENT naming the field) rather than by the decoder.
fn chat_decoding_limit(max_request_bytes: usize) -> usize {
    const GRPC_DEFAULT: usize = 4 << 20;
    const OTHER_FIELDS: usize = 1 << 20;
    max_request_bytes
        .saturating_add(OTHER_FIELDS)
        .max(GRPC_DEFAULT)
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
        max_demo_tasks: config.max_demo_tasks,
        max_events: config.max_task_events,
        max_finished_events: config.max_finished_task_events,
    }
}

/// The Redis store the configuration names, connected (tasks and
/// resumable streams share it), or `None` to keep both in memory.
async fn redis_store(config: &ServeConfig) -> Result<Option<Arc<RedisStore>>, ServeError> {
    let Some(url) = &config.redis_url else {
        return Ok(None);
    };
    let options = RedisOptions {
        url: url.clone(),
        lease: config.redis_lease,
    };
    let store = RedisStore::connect(&options, task_limits(config))
        .await
        .map_err(|source| ServeError::Redis { source })?;
    tracing::info!("tasks and resumable streams are kept in Redis");
    Ok(Some(Arc::new(store)))
}

fn stream_limits(config: &ServeConfig) -> StreamLimits {
    StreamLimits {
        ttl: config.resumable_ttl,
        max_streams: config.max_resumable_streams,
        max_buffer_bytes: config.resumable_buffer_bytes,
    }
}

/// Tasks outlive calls, so the end of the drain period cancels them
/// explicitly: their watchers see CANCELLED and the process can exit.
async fn cancel_tasks_on_abort(tasks: TaskRegistry, shutdown: Shutdown) {
    shutdown.streams_aborted().await;
    tasks.cancel_all("cancelled: the server is shutting down");
}

/// Waits for shutdown, then runs the drain sequence: the listeners stay open
/// (a health check then answers NOT_SERVING), every connection is closed
/// gracefully (idle ones at once), and the drain ends as soon as no call is
/// in flight, at the end of the grace period, or on a second signal.
async fn run(
    transport: Transport,
    shutdown: Shutdown,
    health: HealthReporter,
    grace: Duration,
) -> Result<(), ServeError> {
    shutdown.requested().await;
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "shutting down: draining in-flight calls"
    );
    set_health(&health, ServingStatus::NotServing).await;
    shutdown.start_draining();
    tokio::select! {
        () = transport.idle() => {}
        () = tokio::time::sleep(grace) => {
            tracing::info!("grace period over: ending in-flight streams");
        }
        () = shutdown.forced() => {
            tracing::info!("second signal: stopping now");
        }
    }
    shutdown.abort_streams();
    tokio::select! {
        () = transport.idle() => {}
        () = tokio::time::sleep(FLUSH_AFTER_ABORT) => {
            tracing::info!("closing the remaining connections");
        }
        () = shutdown.forced() => {}
    }
    transport.close();
    Ok(())
}

/// Reports "" (the server as a whole) and every agentstream service with
/// `status`.
async fn set_health(health: &HealthReporter, status: ServingStatus) {
    for service in std::iter::once("").chain(grpc::SERVICE_NAMES) {
        health.set_service_status(service, status).await;
    }
}

/// Gauges read at each scrape: tasks by kind and state, resumable streams
/// by state, the index's size.
fn register_scraped(
    metrics: &Metrics,
    registry: &TaskRegistry,
    documents: &DocumentIndex,
    streams: &Streams,
) {
    let kept = streams.clone();
    metrics.register_scraped(ScrapedGauges::new(
        "resumable_streams",
        "Resumable chat streams kept by this process, by state (generating, or ended and kept \
         for their time to live); with Redis, the streams this replica generates",
        move || {
            let kept = kept.kept();
            [("generating", kept.generating), ("ended", kept.ended)]
                .into_iter()
                .map(|(state, n)| {
                    let labels = vec![("state", state.to_owned())];
                    (labels, i64::try_from(n).unwrap_or(i64::MAX))
                })
                .collect()
        },
    ));
    let registry = registry.clone();
    metrics.register_scraped(ScrapedGauges::new(
        "tasks",
        "Tasks kept by the server, by kind and state",
        move || {
            registry
                .counts()
                .into_iter()
                .map(|((kind, state), n)| {
                    let labels = vec![
                        ("kind", kind.to_owned()),
                        ("state", state.as_str().to_lowercase()),
                    ];
                    (labels, i64::try_from(n).unwrap_or(i64::MAX))
                })
                .collect()
        },
    ));
    let index = documents.clone();
    metrics.register_scraped(ScrapedGauges::new(
        "index_documents",
        "Documents in the index",
        move || vec![(Vec::new(), i64::try_from(index.len()).unwrap_or(i64::MAX))],
    ));
    let index = documents.clone();
    metrics.register_scraped(ScrapedGauges::new(
        "index_bytes",
        "Size of the index on disk, in bytes",
        move || {
            let bytes = index.disk_bytes();
            vec![(Vec::new(), i64::try_from(bytes).unwrap_or(i64::MAX))]
        },
    ));
}
