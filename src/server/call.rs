//! What every call shares: its request id and tracing span, its deadline,
//! the server's drain signal, capacity limits and the record of how it ended.
//!
//! A streaming response is wrapped in a [`CallStream`], which ends the stream
//! with DEADLINE_EXCEEDED when the client's `grpc-timeout` expires, with
//! UNAVAILABLE when the server's drain period is over, and converts domain
//! errors to `Status` (the edge). Ending, for whatever reason, drops the
//! inner stream at once, which drops the work behind it. When the client goes
//! away first, tonic drops the `CallStream` and the outcome is `cancelled`.
//! Each call logs one line when it ends, inside its span.
//!
//! The per-chunk path is kept cheap (see BENCHMARKS.md): the deadline timer
//! and the abort signal register the task's waker once (again only if the
//! waker changes) and are otherwise checked with a flag read each poll, and
//! streams whose items never log can skip entering the span per poll.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker, ready},
    time::Duration,
};

use futures::{Stream, StreamExt, stream::BoxStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;
use tonic::{Request, Response, Status, metadata::MetadataMap};
use tracing::{Span, field::Empty};

use super::shutdown::Shutdown;
use crate::{
    error::{Error, Result},
    metrics::{LiveGuard, Metrics},
};

/// Header carrying the request id (set by the client or generated).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Starts the bookkeeping of calls; one per server, shared by every service.
#[derive(Debug, Clone)]
pub struct Calls {
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    max_active_streams: usize,
}

impl Calls {
    /// Calls that report to `metrics` and end on `shutdown`.
    pub fn new(metrics: Arc<Metrics>, shutdown: Shutdown, max_active_streams: usize) -> Self {
        Self {
            metrics,
            shutdown,
            max_active_streams,
        }
    }

    /// Opens the span of a call to `method` and reads its deadline.
    pub fn start<T>(&self, method: &'static str, request: &Request<T>) -> Call {
        let request_id = request
            .metadata()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let span = tracing::info_span!(
            "call",
            request_id,
            method,
            model = Empty,
            chunks = Empty,
            outcome = Empty,
            code = Empty,
        );
        Call {
            span,
            started: Instant::now(),
            timeout: grpc_timeout(request.metadata()),
            calls: self.clone(),
        }
    }

    /// The server's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

/// One call in progress.
#[derive(Debug)]
pub struct Call {
    span: Span,
    started: Instant,
    timeout: Option<Duration>,
    calls: Calls,
}

impl Call {
    /// Records the model that serves the call.
    pub fn record_model(&self, model: &str) {
        self.span.record("model", model);
    }

    /// The call's span, for work done on its behalf.
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Ends a unary call with `result`.
    pub fn unary<T>(self, result: Result<T>) -> Result<Response<T>, Status> {
        match result {
            Ok(value) => {
                finish(&self.span, self.started, 1, None);
                Ok(Response::new(value))
            }
            Err(error) => Err(self.fail(error)),
        }
    }

    /// Ends the call before any response with `error`.
    pub fn fail(self, error: Error) -> Status {
        finish(&self.span, self.started, 0, Some(&error));
        error.into()
    }

    /// Answers with a stream of items; refuses when the server is draining
    /// or already serves its maximum of streams. Every poll of `items` runs
    /// inside the call's span, so what the work logs carries the call's
    /// fields.
    pub fn stream<T: Send + 'static>(
        self,
        items: impl Stream<Item = Result<T>> + Send + 'static,
    ) -> Result<Response<CallStream<T>>, Status> {
        self.stream_with(items, true)
    }

    /// Like [`Call::stream`], for item streams that never log (the built-in
    /// models): their polls skip entering the span, which costs a few
    /// hundred instructions per chunk with the fmt subscriber. The call's
    /// closing line is still logged in its span.
    pub fn stream_quiet<T: Send + 'static>(
        self,
        items: impl Stream<Item = Result<T>> + Send + 'static,
    ) -> Result<Response<CallStream<T>>, Status> {
        self.stream_with(items, false)
    }

    fn stream_with<T: Send + 'static>(
        self,
        items: impl Stream<Item = Result<T>> + Send + 'static,
        enter_span: bool,
    ) -> Result<Response<CallStream<T>>, Status> {
        if self.calls.shutdown.is_draining() {
            return Err(self.fail(Error::ShuttingDown));
        }
        let active = self.calls.metrics.active_streams();
        if active >= self.calls.max_active_streams as i64 {
            let limit = self.calls.max_active_streams;
            return Err(self.fail(Error::ResourceExhausted(format!(
                "the server is at its limit of {limit} concurrent streams; retry later"
            ))));
        }
        Ok(Response::new(CallStream {
            inner: Some(items.boxed()),
            deadline: self
                .timeout
                .map(|t| (Box::pin(tokio::time::sleep_until(self.started + t)), t)),
            aborted: Box::pin(self.calls.shutdown.streams_aborted()),
            shutdown: self.calls.shutdown.clone(),
            registered: None,
            enter_span,
            _live: self.calls.metrics.stream(),
            items: 0,
            span: self.span,
            started: self.started,
        }))
    }
}

/// A response stream with the call's deadline, drain and accounting.
pub struct CallStream<T> {
    /// `None` once the call has ended.
    inner: Option<BoxStream<'static, Result<T>>>,
    deadline: Option<(Pin<Box<Sleep>>, Duration)>,
    aborted: Pin<Box<WaitForCancellationFutureOwned>>,
    shutdown: Shutdown,
    /// The waker `deadline` and `aborted` were last polled with.
    registered: Option<Waker>,
    enter_span: bool,
    _live: LiveGuard,
    items: u64,
    span: Span,
    started: Instant,
}

impl<T> CallStream<T> {
    /// Ends the call: drops the work and records the outcome.
    fn end(&mut self, outcome: Result<(), Error>) -> Option<Result<T, Status>> {
        self.inner = None;
        finish(&self.span, self.started, self.items, outcome.as_ref().err());
        outcome.err().map(|e| Err(e.into()))
    }
}

impl<T> Stream for CallStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.inner.is_none() {
            return Poll::Ready(None);
        }
        // The deadline and the abort signal wake this task through the
        // waker they were polled with; poll them again only when the task's
        // waker changes, and otherwise read their state.
        let waker_changed = !this
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        let aborted = if waker_changed {
            this.aborted.as_mut().poll(cx).is_ready()
        } else {
            this.shutdown.are_streams_aborted()
        };
        if aborted {
            return Poll::Ready(this.end(Err(Error::ShuttingDown)));
        }
        if let Some((sleep, timeout)) = this.deadline.as_mut() {
            let expired = if waker_changed {
                sleep.as_mut().poll(cx).is_ready()
            } else {
                sleep.is_elapsed()
            };
            if expired {
                let ms = timeout.as_millis() as u64;
                return Poll::Ready(this.end(Err(Error::DeadlineExceeded(ms))));
            }
        }
        if waker_changed {
            this.registered = Some(cx.waker().clone());
        }
        let polled = match this.inner.as_mut() {
            Some(inner) if this.enter_span => {
                let _entered = this.span.enter();
                ready!(inner.poll_next_unpin(cx))
            }
            Some(inner) => ready!(inner.poll_next_unpin(cx)),
            None => None,
        };
        match polled {
            Some(Ok(item)) => {
                this.items += 1;
                Poll::Ready(Some(Ok(item)))
            }
            Some(Err(error)) => Poll::Ready(this.end(Err(error))),
            None => Poll::Ready(this.end(Ok(()))),
        }
    }
}

impl<T> Drop for CallStream<T> {
    fn drop(&mut self) {
        if self.inner.is_some() {
            // The client went away (cancel, disconnect) before the end.
            let _entered = self.span.enter();
            self.span.record("outcome", "cancelled");
            self.span.record("chunks", self.items);
            tracing::info!(
                duration_ms = self.started.elapsed().as_millis() as u64,
                "call cancelled by the client"
            );
        }
    }
}

/// Records how a call ended and logs its one closing line.
fn finish(span: &Span, started: Instant, items: u64, error: Option<&Error>) {
    let _entered = span.enter();
    span.record("chunks", items);
    let duration_ms = started.elapsed().as_millis() as u64;
    match error {
        None => {
            span.record("outcome", "ok");
            tracing::info!(duration_ms, "call finished");
        }
        Some(error) => {
            let code = error.code();
            span.record("outcome", "error");
            span.record("code", tracing::field::debug(code));
            if code == tonic::Code::Internal {
                tracing::error!(duration_ms, %error, "call failed");
            } else {
                tracing::info!(duration_ms, %error, "call failed");
            }
        }
    }
}

/// The client's deadline from the `grpc-timeout` header (`<digits><unit>`).
fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let split = value.len().checked_sub(1)?;
    let (digits, unit) = value.split_at(split);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout_of(value: &str) -> Option<Duration> {
        let mut metadata = MetadataMap::new();
        metadata.insert("grpc-timeout", value.parse().expect("ascii"));
        grpc_timeout(&metadata)
    }

    #[test]
    fn parses_every_grpc_timeout_unit() {
        assert_eq!(timeout_of("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(timeout_of("3M"), Some(Duration::from_secs(180)));
        assert_eq!(timeout_of("5S"), Some(Duration::from_secs(5)));
        assert_eq!(timeout_of("250m"), Some(Duration::from_millis(250)));
        assert_eq!(timeout_of("7u"), Some(Duration::from_micros(7)));
        assert_eq!(timeout_of("9n"), Some(Duration::from_nanos(9)));
        assert_eq!(timeout_of("10x"), None);
        assert_eq!(timeout_of("m"), None);
    }
}
