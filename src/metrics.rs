//! What the server is doing, for operators and for tests: one Prometheus
//! registry (prometheus-client) served as text on `GET /metrics`.
//!
//! The first three series are the oldest and keep their names, unlabelled,
//! because tests and tools in other languages read them to *observe*
//! cancellation: `agentstream_active_streams`, `agentstream_live_generations`
//! (they return to zero once clients go away) and
//! `agentstream_tokens_generated_total` (it stops growing). Every other
//! family carries labels and is described where it is registered in
//! [`Metrics::new`].
//!
//! Everything on the per-chunk path is one relaxed atomic operation: counters
//! and gauges are prometheus-client's atomics, the histograms are this
//! module's [`Histogram`] (atomic buckets instead of prometheus-client's
//! mutex), and labelled handles are looked up once per call, never per
//! chunk.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use prometheus_client::{
    collector::Collector,
    encoding::{
        DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet, prometheus_text,
    },
    metrics::{
        MetricType, TypedMetric, counter::Counter, exemplar::Exemplar, family::Family, gauge::Gauge,
    },
    registry::Registry,
};

/// The `Content-Type` of [`Metrics::render_prometheus`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Labels of calls.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CallLabels {
    /// Full service name, e.g. `agentstream.v1.ChatService`.
    pub service: &'static str,
    /// Method name, e.g. `StreamChat`.
    pub method: &'static str,
    /// gRPC status code name, e.g. `OK`, `CANCELLED`.
    pub code: &'static str,
}

/// Labels of streams and generations.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MethodModelLabels {
    /// Method name.
    pub method: &'static str,
    /// The model serving the call (only served models: the set is bounded).
    pub model: String,
}

/// A model label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ModelLabels {
    /// The model (only served models).
    pub model: String,
}

/// A method label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MethodLabels {
    /// Method name.
    pub method: &'static str,
}

/// An upstream label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct UpstreamLabels {
    /// The upstream's configured name.
    pub upstream: String,
}

/// Labels of upstream errors.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct UpstreamErrorLabels {
    /// The upstream's configured name.
    pub upstream: String,
    /// What went wrong: `connect`, `timeout`, `status_4xx`, `status_5xx`,
    /// `rate_limited`, `stream`, `decode`.
    pub class: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every series of the server.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    live_generations: Gauge,
    tokens_generated: Counter,
    active_streams: Gauge,
    /// Calls ended, by service, method and status code.
    pub(crate) calls: Family<CallLabels, Counter>,
    /// Streaming calls open, by method and model.
    pub(crate) streams_by_model: Family<MethodModelLabels, Gauge>,
    /// Generations running, by model.
    pub(crate) generations_by_model: Family<ModelLabels, Gauge>,
    /// Time from the call's start to its first chunk, by model.
    pub(crate) time_to_first_chunk: HistogramFamily<ModelLabels>,
    /// Time between two chunks of one stream, by model.
    pub(crate) inter_chunk_gap: HistogramFamily<ModelLabels>,
    /// Time from a stream's start to its end, by model.
    pub(crate) stream_duration: HistogramFamily<ModelLabels>,
    /// Prompt tokens, by model.
    pub(crate) prompt_tokens: Family<ModelLabels, Counter>,
    /// Completion tokens, by model.
    pub(crate) completion_tokens: Family<ModelLabels, Counter>,
    /// Calls the client cancelled, by method.
    pub(crate) cancellations: Family<MethodLabels, Counter>,
    /// Calls ended by their deadline, by method.
    pub(crate) deadline_expiries: Family<MethodLabels, Counter>,
    /// Requests sent to upstreams (retries included).
    pub(crate) upstream_requests: Family<UpstreamLabels, Counter>,
    /// Failed upstream requests, by upstream and class.
    pub(crate) upstream_errors: Family<UpstreamErrorLabels, Counter>,
    /// Upstream requests retried.
    pub(crate) upstream_retries: Family<UpstreamLabels, Counter>,
    /// Documents ingested into the index.
    pub(crate) ingested_documents: Counter,
    /// Bytes of text ingested into the index.
    pub(crate) ingested_bytes: Counter,
}

/// A point-in-time copy of the unlabelled series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Choices being generated right now.
    pub live_generations: i64,
    /// Tokens produced by every backend since start.
    pub tokens_generated: u64,
    /// Streaming calls open right now.
    pub active_streams: i64,
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Self {
            registry: Mutex::new(Registry::with_prefix("agentstream")),
            live_generations: Gauge::default(),
            tokens_generated: Counter::default(),
            active_streams: Gauge::default(),
            calls: Family::default(),
            streams_by_model: Family::default(),
            generations_by_model: Family::default(),
            time_to_first_chunk: Family::new_with_constructor(|| Histogram::new(&LATENCY_BUCKETS)),
            inter_chunk_gap: Family::new_with_constructor(|| Histogram::new(&GAP_BUCKETS)),
            stream_duration: Family::new_with_constructor(|| Histogram::new(&DURATION_BUCKETS)),
            prompt_tokens: Family::default(),
            completion_tokens: Family::default(),
            cancellations: Family::default(),
            deadline_expiries: Family::default(),
            upstream_requests: Family::default(),
            upstream_errors: Family::default(),
            upstream_retries: Family::default(),
            ingested_documents: Counter::default(),
            ingested_bytes: Counter::default(),
        };
        metrics.register_all();
        metrics
    }
}

impl Metrics {
    /// New series, all zero.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn register_all(&self) {
        let mut r = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        r.register(
            "active_streams",
            "Streaming calls open right now",
            self.active_streams.clone(),
        );
        r.register(
            "live_generations",
            "Choices being generated right now",
            self.live_generations.clone(),
        );
        r.register(
            "tokens_generated",
            "Tokens produced by every backend since start",
            self.tokens_generated.clone(),
        );
        r.register(
            "calls",
            "Calls ended, by service, method and gRPC status code",
            self.calls.clone(),
        );
        r.register(
            "streams_by_model",
            "Streaming calls open right now, by method and model",
            self.streams_by_model.clone(),
        );
        r.register(
            "generations_by_model",
            "Choices being generated right now, by model",
            self.generations_by_model.clone(),
        );
        r.register(
            "time_to_first_chunk_seconds",
            "Time from the start of a streaming call to its first chunk, by model",
            self.time_to_first_chunk.clone(),
        );
        r.register(
            "inter_chunk_gap_seconds",
            "Time between two chunks of one stream, by model",
            self.inter_chunk_gap.clone(),
        );
        r.register(
            "stream_duration_seconds",
            "Time from the start of a streaming call to its end, by model",
            self.stream_duration.clone(),
        );
        r.register(
            "prompt_tokens",
            "Prompt tokens of generations, by model",
            self.prompt_tokens.clone(),
        );
        r.register(
            "completion_tokens",
            "Completion tokens generated, by model",
            self.completion_tokens.clone(),
        );
        r.register(
            "cancellations",
            "Calls cancelled by the client before their end, by method",
            self.cancellations.clone(),
        );
        r.register(
            "deadline_expiries",
            "Calls ended by their deadline (DEADLINE_EXCEEDED), by method",
            self.deadline_expiries.clone(),
        );
        r.register(
            "upstream_requests",
            "Requests sent to upstream model servers, retries included",
            self.upstream_requests.clone(),
        );
        r.register(
            "upstream_errors",
            "Failed upstream requests, by upstream and class",
            self.upstream_errors.clone(),
        );
        r.register(
            "upstream_retries",
            "Upstream requests retried, by upstream",
            self.upstream_retries.clone(),
        );
        r.register(
            "ingested_documents",
            "Documents ingested into the index",
            self.ingested_documents.clone(),
        );
        r.register(
            "ingested_bytes",
            "Bytes of document text ingested into the index",
            self.ingested_bytes.clone(),
        );
    }

    /// Adds gauges read at each scrape (tasks, index size).
    pub(crate) fn register_scraped(&self, gauges: ScrapedGauges) {
        self.registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .register_collector(Box::new(gauges));
    }

    /// Reads the unlabelled series.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            live_generations: self.live_generations.get(),
            tokens_generated: self.tokens_generated.get(),
            active_streams: self.active_streams.get(),
        }
    }

    /// Every series in the Prometheus text exposition format (0.0.4).
    pub(crate) fn render_prometheus(&self) -> String {
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(error) = prometheus_text::encode(&mut text, &registry) {
            tracing::error!(%error, "cannot encode the metrics");
        }
        text
    }

    /// Counts `n` produced tokens.
    pub(crate) fn add_tokens(&self, n: u64) {
        self.tokens_generated.inc_by(n);
    }

    /// Marks a generation live until the returned guard is dropped.
    pub(crate) fn generation(&self) -> LiveGuard {
        LiveGuard::new(self.live_generations.clone())
    }

    /// The active streams gauge, for the server's places for streaming
    /// calls to count in (`server::slots`): a call is open while it holds
    /// one. Nothing else moves it.
    pub(crate) fn active_streams_gauge(&self) -> Gauge {
        self.active_streams.clone()
    }

    /// Streaming calls open right now.
    pub fn active_streams(&self) -> i64 {
        self.active_streams.get()
    }

    /// Counts a call to `path` (`package.Service/Method`) that ended with
    /// `code` (a gRPC status code name, e.g. `OK`, `CANCELLED`);
    /// cancellations and deadline expiries also in their own series.
    pub(crate) fn call_ended(&self, path: &'static str, code: &'static str) {
        let (service, method) = path.split_once('/').unwrap_or(("", path));
        self.calls
            .get_or_create(&CallLabels {
                service,
                method,
                code,
            })
            .inc();
        let by_method = MethodLabels { method };
        if code == CANCELLED {
            self.cancellations.get_or_create(&by_method).inc();
        } else if code == DEADLINE_EXCEEDED {
            self.deadline_expiries.get_or_create(&by_method).inc();
        }
    }

    /// The labelled series of one stream of `path` served by `model`,
    /// looked up once so that chunks touch only atomics.
    pub(crate) fn stream_of(&self, path: &'static str, model: &str) -> StreamMetrics {
        let method = path.split_once('/').map_or(path, |(_, m)| m);
        let by_model = ModelLabels {
            model: model.to_owned(),
        };
        StreamMetrics {
            time_to_first_chunk: self.time_to_first_chunk.get_or_create_owned(&by_model),
            inter_chunk_gap: self.inter_chunk_gap.get_or_create_owned(&by_model),
            duration: self.stream_duration.get_or_create_owned(&by_model),
            _open: LiveGuard::new(
                self.streams_by_model
                    .get_or_create_owned(&MethodModelLabels {
                        method,
                        model: by_model.model,
                    }),
            ),
        }
    }

    /// The token counters of `model`, looked up once per generation.
    pub(crate) fn tokens_of(&self, model: &str) -> TokenCounters {
        let by_model = ModelLabels {
            model: model.to_owned(),
        };
        TokenCounters {
            prompt: self.prompt_tokens.get_or_create_owned(&by_model),
            generated: GeneratedCounters {
                by_model: self.completion_tokens.get_or_create_owned(&by_model),
                all: self.tokens_generated.clone(),
            },
        }
    }

    /// The counters of upstream `name`.
    pub(crate) fn upstream_of(&self, name: &str) -> UpstreamCounters {
        let labels = UpstreamLabels {
            upstream: name.to_owned(),
        };
        UpstreamCounters {
            name: name.to_owned(),
            requests: self.upstream_requests.get_or_create_owned(&labels),
            retries: self.upstream_retries.get_or_create_owned(&labels),
            errors: self.upstream_errors.clone(),
        }
    }

    /// Marks a generation of `model` live (in the unlabelled and the
    /// by-model gauge) until the returned guards are dropped.
    pub(crate) fn generation_of(&self, model: &str) -> [LiveGuard; 2] {
        let labelled = self.generations_by_model.get_or_create_owned(&ModelLabels {
            model: model.to_owned(),
        });
        [self.generation(), LiveGuard::new(labelled)]
    }
}

/// The counters of one upstream (see [`Metrics::upstream_of`]).
#[derive(Debug, Clone)]
pub(crate) struct UpstreamCounters {
    name: String,
    requests: Counter,
    retries: Counter,
    errors: Family<UpstreamErrorLabels, Counter>,
}

impl UpstreamCounters {
    /// Counts a request sent.
    pub(crate) fn request(&self) {
        self.requests.inc();
    }

    /// Counts a retry.
    pub(crate) fn retry(&self) {
        self.retries.inc();
    }

    /// Counts a failure of `class`.
    pub(crate) fn error(&self, class: &'static str) {
        self.errors
            .get_or_create(&UpstreamErrorLabels {
                upstream: self.name.clone(),
                class,
            })
            .inc();
    }
}

/// A family of gauges read when scraped (task counts, index size): `read`
/// returns each series' labels and value.
pub(crate) struct ScrapedGauges {
    name: &'static str,
    help: &'static str,
    read: Box<dyn Fn() -> Vec<(Labels, i64)> + Send + Sync>,
}

/// The labels of one series of [`ScrapedGauges`].
pub(crate) type Labels = Vec<(&'static str, String)>;

impl ScrapedGauges {
    /// Gauges `name` (prefixed with `agentstream_`) described by `help`.
    pub(crate) fn new(
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> Vec<(Labels, i64)> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name,
            help,
            read: Box::new(read),
        }
    }
}

impl std::fmt::Debug for ScrapedGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrapedGauges")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Collector for ScrapedGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let series = (self.read)();
        let mut family =
            encoder.encode_descriptor(self.name, self.help, None, MetricType::Gauge)?;
        for (labels, value) in &series {
            if labels.is_empty() {
                family.encode_gauge(value)?;
            } else {
                family.encode_family(labels)?.encode_gauge(value)?;
            }
        }
        Ok(())
    }
}

/// The labelled series of one open stream (see [`Metrics::stream_of`]);
/// keeps the stream counted as open by model while it lives.
#[derive(Debug)]
pub(crate) struct StreamMetrics {
    /// Start to first chunk.
    pub time_to_first_chunk: Histogram,
    /// Between two chunks.
    pub inter_chunk_gap: Histogram,
    /// Start to end.
    pub duration: Histogram,
    _open: LiveGuard,
}

/// Token counters of one model (see [`Metrics::tokens_of`]).
#[derive(Debug, Clone)]
pub(crate) struct TokenCounters {
    prompt: Counter,
    generated: GeneratedCounters,
}

/// The counters of a model's generated tokens (see
/// [`TokenCounters::generated`]): what a generating stream keeps for as
/// long as it is open, without the prompt's, which it counted at its start.
#[derive(Debug, Clone)]
pub(crate) struct GeneratedCounters {
    by_model: Counter,
    all: Counter,
}

impl TokenCounters {
    /// Counts the prompt's tokens.
    pub(crate) fn prompt(&self, n: u64) {
        self.prompt.inc_by(n);
    }

    /// Counts `n` generated tokens (by model, and in the server's total).
    pub(crate) fn completion(&self, n: u64) {
        self.generated.add(n);
    }

    /// The counters of generated tokens alone.
    pub(crate) fn generated(&self) -> GeneratedCounters {
        self.generated.clone()
    }
}

impl GeneratedCounters {
    /// Counts `n` generated tokens (by model, and in the server's total).
    pub(crate) fn add(&self, n: u64) {
        self.by_model.inc_by(n);
        self.all.inc_by(n);
    }
}

/// The `code` of a call that succeeded.
pub const OK: &str = "OK";
/// The `code` of a call the client cancelled.
pub const CANCELLED: &str = "CANCELLED";
/// The `code` of a call its deadline ended.
pub const DEADLINE_EXCEEDED: &str = "DEADLINE_EXCEEDED";

/// The gRPC status code name of a failure of `kind` (the `code` label; the
/// same name whichever edge served the call).
pub(crate) fn code_of(kind: crate::error::ErrorKind) -> &'static str {
    use crate::error::ErrorKind;
    match kind {
        ErrorKind::InvalidArgument => "INVALID_ARGUMENT",
        ErrorKind::NotFound => "NOT_FOUND",
        ErrorKind::Unimplemented => "UNIMPLEMENTED",
        ErrorKind::DeadlineExceeded => DEADLINE_EXCEEDED,
        ErrorKind::Unavailable => "UNAVAILABLE",
        ErrorKind::ResourceExhausted => "RESOURCE_EXHAUSTED",
        ErrorKind::FailedPrecondition => "FAILED_PRECONDITION",
        ErrorKind::Internal => "INTERNAL",
        ErrorKind::OutOfRange => "OUT_OF_RANGE",
        ErrorKind::Cancelled => "CANCELLED",
        ErrorKind::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Keeps a gauge raised while it lives.
#[derive(Debug)]
pub(crate) struct LiveGuard {
    gauge: Gauge,
}

impl LiveGuard {
    /// Raises `gauge` until the guard is dropped.
    pub(crate) fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Self { gauge }
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Bucket bounds of time to first chunk, in nanoseconds (0.5 ms to 10 s).
const LATENCY_BUCKETS: [u64; 14] = millis([
    0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1e3, 2.5e3, 5e3, 10e3,
]);
/// Bucket bounds of the gap between chunks (0.1 ms to 2.5 s).
const GAP_BUCKETS: [u64; 13] = millis([
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1e3, 2.5e3,
]);
/// Bucket bounds of stream durations (10 ms to 10 min).
const DURATION_BUCKETS: [u64; 13] = millis([
    10.0, 50.0, 100.0, 250.0, 500.0, 1e3, 2.5e3, 5e3, 10e3, 30e3, 60e3, 120e3, 600e3,
]);

const fn millis<const N: usize>(ms: [f64; N]) -> [u64; N] {
    let mut nanos = [0; N];
    let mut i = 0;
    while i < N {
        nanos[i] = (ms[i] * 1e6) as u64;
        i += 1;
    }
    nanos
}

/// A histogram of durations whose buckets, sum and count are atomics, so an
/// observation is a bucket search and two relaxed additions (no lock: it is
/// on the per-chunk path). Exposed in seconds.
#[derive(Debug, Clone)]
pub(crate) struct Histogram(Arc<HistogramInner>);

#[derive(Debug)]
struct HistogramInner {
    /// Upper bounds, nanoseconds, ascending.
    bounds: &'static [u64],
    /// One count per bound, then the `+Inf` bucket.
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// An empty histogram with these upper bounds (nanoseconds, ascending).
    pub(crate) fn new(bounds: &'static [u64]) -> Self {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self(Arc::new(HistogramInner {
            bounds,
            counts,
            sum_nanos: AtomicU64::new(0),
        }))
    }

    /// Records one duration given in nanoseconds (see [`monotonic_nanos`]).
    pub(crate) fn observe_nanos(&self, nanos: u64) {
        let bucket = self.0.bounds.partition_point(|&bound| bound < nanos);
        if let Some(count) = self.0.counts.get(bucket) {
            count.fetch_add(1, Relaxed);
        }
        // Most gaps of a fast stream are zero (see `server::call`).
        if nanos > 0 {
            self.0.sum_nanos.fetch_add(nanos, Relaxed);
        }
    }

    /// Records `n` durations of zero at once (see `server::call`).
    pub(crate) fn observe_zeros(&self, n: u64) {
        if let Some(count) = self.0.counts.first() {
            count.fetch_add(n, Relaxed);
        }
    }

    /// Observations so far.
    #[cfg(test)]
    pub(crate) fn count(&self) -> u64 {
        self.0.counts.iter().map(|c| c.load(Relaxed)).sum()
    }
}

/// The monotonic clock in nanoseconds (from an unspecified start): what the
/// per-chunk histograms read. Taking an `Instant`, subtracting two and
/// converting the `Duration` (checked, normalised `timespec` arithmetic)
/// cost 70 instructions a chunk more than one clock read and an integer
/// subtraction (callgrind: 2,202 against 2,132 for the whole chunk).
pub(crate) fn monotonic_nanos() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let seconds = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    seconds.saturating_mul(1_000_000_000).saturating_add(nanos)
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let counts: Vec<u64> = self.0.counts.iter().map(|c| c.load(Relaxed)).collect();
        let buckets: Vec<(f64, u64)> = self
            .0
            .bounds
            .iter()
            .map(|&b| b as f64 / 1e9)
            .chain([f64::INFINITY])
            .zip(counts.iter().copied())
            .collect();
        let sum = self.0.sum_nanos.load(Relaxed) as f64 / 1e9;
        let exemplars: Option<&HashMap<usize, Exemplar<NoLabelSet, f64>>> = None;
        encoder.encode_histogram(sum, counts.iter().sum(), &buckets, exemplars)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn the_oldest_series_keep_their_names_and_move() {
        let metrics = Metrics::new();
        let slots = crate::server::slots::Slots::counted_in(metrics.active_streams_gauge(), 1);
        let stream = slots.try_take().expect("a place");
        let generation = metrics.generation();
        metrics.add_tokens(3);
        let text = metrics.render_prometheus();
        assert_eq!(sample(&text, "agentstream_active_streams"), Some(1.0));
        assert_eq!(sample(&text, "agentstream_live_generations"), Some(1.0));
        assert_eq!(
            sample(&text, "agentstream_tokens_generated_total"),
            Some(3.0)
        );
        drop((stream, generation));
        let text = metrics.render_prometheus();
        assert_eq!(sample(&text, "agentstream_active_streams"), Some(0.0));
        assert_eq!(sample(&text, "agentstream_live_generations"), Some(0.0));
    }

    #[test]
    fn scraped_gauges_are_read_at_each_scrape() {
        let metrics = Metrics::new();
        let documents = Arc::new(AtomicU64::new(2));
        let read = documents.clone();
        metrics.register_scraped(ScrapedGauges::new(
            "index_documents",
            "Documents",
            move || vec![(Vec::new(), read.load(Relaxed) as i64)],
        ));
        metrics.register_scraped(ScrapedGauges::new("tasks", "Tasks", || {
            vec![(
                vec![("kind", "ingest".into()), ("state", "running".into())],
                1,
            )]
        }));
        let text = metrics.render_prometheus();
        assert_eq!(sample(&text, "agentstream_index_documents"), Some(2.0));
        assert_eq!(
            sample(
                &text,
                "agentstream_tasks{kind=\"ingest\",state=\"running\"}"
            ),
            Some(1.0)
        );
        documents.store(5, Relaxed);
        let text = metrics.render_prometheus();
        assert_eq!(sample(&text, "agentstream_index_documents"), Some(5.0));
    }

    #[test]
    fn histograms_count_in_cumulative_buckets_of_seconds() {
        let metrics = Metrics::new();
        let model = ModelLabels {
            model: "echo".into(),
        };
        let gap = metrics.inter_chunk_gap.get_or_create_owned(&model);
        gap.observe_nanos(50_000);
        gap.observe_nanos(3_000_000);
        gap.observe_nanos(9_000_000_000);
        gap.observe_zeros(2);
        assert_eq!(gap.count(), 5);
        let text = metrics.render_prometheus();
        let series = |le: &str| {
            sample(
                &text,
                &format!(
                    "agentstream_inter_chunk_gap_seconds_bucket{{model=\"echo\",le=\"{le}\"}}"
                ),
            )
        };
        assert_eq!(series("0.0001"), Some(3.0));
        assert_eq!(series("0.005"), Some(4.0));
        assert_eq!(series("2.5"), Some(4.0));
        assert_eq!(series("+Inf"), Some(5.0));
        assert_eq!(
            sample(
                &text,
                "agentstream_inter_chunk_gap_seconds_count{model=\"echo\"}"
            ),
            Some(5.0)
        );
    }

    #[test]
    fn calls_are_counted_by_code_with_cancellations_apart() {
        let metrics = Metrics::new();
        metrics.call_ended("agentstream.v1.ChatService/StreamChat", OK);
        metrics.call_ended("agentstream.v1.ChatService/StreamChat", CANCELLED);
        let text = metrics.render_prometheus();
        assert_eq!(
            sample(
                &text,
                "agentstream_calls_total{service=\"agentstream.v1.ChatService\",method=\"StreamChat\",code=\"CANCELLED\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "agentstream_cancellations_total{method=\"StreamChat\"}"
            ),
            Some(1.0)
        );
    }
}
