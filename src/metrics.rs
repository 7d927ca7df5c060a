//! Live counters of the work the server is doing.
//!
//! They exist so that cancellation can be *observed*: a test (or an operator)
//! can see that the number of live generations returns to zero and that the
//! produced-token count stops growing once a client goes away. Updates are
//! single relaxed atomic operations, cheap enough for the per-token path.

use std::sync::{
    Arc,
    atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
};

/// Counters shared by every part of the server.
#[derive(Debug, Default)]
pub struct Metrics {
    live_generations: AtomicI64,
    tokens_generated: AtomicU64,
    active_streams: AtomicI64,
}

/// A point-in-time copy of [`Metrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Choices being generated right now.
    pub live_generations: i64,
    /// Tokens produced by every backend since start.
    pub tokens_generated: u64,
    /// Streaming calls open right now.
    pub active_streams: i64,
}

impl Metrics {
    /// New counters, all zero.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            live_generations: self.live_generations.load(Relaxed),
            tokens_generated: self.tokens_generated.load(Relaxed),
            active_streams: self.active_streams.load(Relaxed),
        }
    }

    /// The counters in the Prometheus text exposition format.
    pub fn render_prometheus(&self) -> String {
        let m = self.snapshot();
        format!(
            "# HELP agentstream_active_streams Streaming calls open right now.\n\
             # TYPE agentstream_active_streams gauge\n\
             agentstream_active_streams {}\n\
             # HELP agentstream_live_generations Choices being generated right now.\n\
             # TYPE agentstream_live_generations gauge\n\
             agentstream_live_generations {}\n\
             # HELP agentstream_tokens_generated_total Tokens produced by every backend since start.\n\
             # TYPE agentstream_tokens_generated_total counter\n\
             agentstream_tokens_generated_total {}\n",
            m.active_streams, m.live_generations, m.tokens_generated
        )
    }

    /// Counts `n` produced tokens.
    pub fn add_tokens(&self, n: u64) {
        self.tokens_generated.fetch_add(n, Relaxed);
    }

    /// Marks a generation live until the returned guard is dropped.
    pub fn generation(self: &Arc<Self>) -> LiveGuard {
        LiveGuard::new(self.clone(), |m| &m.live_generations)
    }

    /// Marks a streaming call open until the returned guard is dropped.
    pub fn stream(self: &Arc<Self>) -> LiveGuard {
        LiveGuard::new(self.clone(), |m| &m.active_streams)
    }

    /// Streaming calls open right now.
    pub fn active_streams(&self) -> i64 {
        self.active_streams.load(Relaxed)
    }
}

/// Keeps one gauge of [`Metrics`] raised while it lives.
#[derive(Debug)]
pub struct LiveGuard {
    metrics: Arc<Metrics>,
    gauge: fn(&Metrics) -> &AtomicI64,
}

impl LiveGuard {
    fn new(metrics: Arc<Metrics>, gauge: fn(&Metrics) -> &AtomicI64) -> Self {
        gauge(&metrics).fetch_add(1, Relaxed);
        Self { metrics, gauge }
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        (self.gauge)(&self.metrics).fetch_sub(1, Relaxed);
    }
}
