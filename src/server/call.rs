//! What every call shares, whichever protocol it came in by: its request id
//! and tracing span, its deadline, the server's drain signal, admission
//! against the stream limit and the record of how it ended.
//!
//! An edge reads the request id and deadline off its wire ([`CallMeta`]),
//! starts a [`Call`] for a [`Method`], and answers either with
//! [`Call::unary`] or with a [`CallStream`] from [`Call::stream`]. The stream
//! ends with [`Error::DeadlineExceeded`] when the client's deadline expires
//! and with [`Error::ShuttingDown`] when the server's drain period is over;
//! the edge converts those errors like any other. Ending, for whatever
//! reason, drops the inner stream at once, which drops the work behind it.
//! When the client goes away first, the edge drops the `CallStream` and the
//! outcome is `cancelled`. Each call logs one line when it ends, inside its
//! span.
//!
//! A streaming call closes its span while it streams unless spans are
//! exported, and reopens it, with the same fields, for its closing line
//! ([`StreamSpan`]): the log layer keeps about 470 bytes for an open span
//! (a registry slot, an extensions map, the formatted fields), which every
//! open stream would otherwise hold for nothing, since nothing logs inside
//! the call's span while it streams unless it holds the span itself (a
//! backend that logs while streaming keeps a child of it, which keeps it
//! open). Traces need the span's whole duration, so exported calls keep it.
//!
//! Admission is a [`Slot`] held by the stream (as tower's concurrency limit
//! holds a semaphore permit): taking it is the check, so concurrent calls
//! can never overshoot `--max-active-streams`, and dropping the stream frees
//! it.
//!
//! The per-chunk path is kept cheap (see BENCHMARKS.md): the deadline timer
//! and the abort signal register the task's waker once (again only if the
//! waker changes) and are otherwise checked with a flag read each poll, and
//! the span is not entered per poll (a backend that logs while streaming
//! enters it itself).

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::Duration,
};

use futures::{Stream, StreamExt, stream::BoxStream};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::WaitForCancellationFutureOwned;
use tracing::{Span, field::Empty};

use super::{
    auth::Caller,
    shutdown::Shutdown,
    slots::{Slot, Slots},
};
use crate::{
    error::{Error, ErrorKind, Result},
    llm::UsageMeter,
    metrics::{self, Metrics, StreamMetrics},
    telemetry,
};

/// Header carrying the request id (set by the client or generated).
pub(crate) const REQUEST_ID_HEADER: &str = "x-request-id";

/// Every operation the server offers, named once: the name is the gRPC
/// method path, which the HTTP edge's log lines use too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Method {
    /// ChatService.StreamChat (and the HTTP chat completions).
    StreamChat,
    /// ChatService.ListModels (and the HTTP model list).
    ListModels,
    /// ChatService.ResumeStream.
    ResumeStream,
    /// ChatService.CancelStream.
    CancelStream,
    /// RagService.IngestDocuments.
    IngestDocuments,
    /// RagService.StreamAnswer.
    StreamAnswer,
    /// RagService.ListDocuments.
    ListDocuments,
    /// RagService.DeleteDocument.
    DeleteDocument,
    /// TaskService.StartTask.
    StartTask,
    /// TaskService.GetTask.
    GetTask,
    /// TaskService.WatchTask.
    WatchTask,
    /// TaskService.CancelTask.
    CancelTask,
    /// TaskService.ListTasks.
    ListTasks,
}

impl Method {
    /// The method's full gRPC name, as logged.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Method::StreamChat => "agentstream.v1.ChatService/StreamChat",
            Method::ListModels => "agentstream.v1.ChatService/ListModels",
            Method::ResumeStream => "agentstream.v1.ChatService/ResumeStream",
            Method::CancelStream => "agentstream.v1.ChatService/CancelStream",
            Method::IngestDocuments => "agentstream.v1.RagService/IngestDocuments",
            Method::StreamAnswer => "agentstream.v1.RagService/StreamAnswer",
            Method::ListDocuments => "agentstream.v1.RagService/ListDocuments",
            Method::DeleteDocument => "agentstream.v1.RagService/DeleteDocument",
            Method::StartTask => "agentstream.v1.TaskService/StartTask",
            Method::GetTask => "agentstream.v1.TaskService/GetTask",
            Method::WatchTask => "agentstream.v1.TaskService/WatchTask",
            Method::CancelTask => "agentstream.v1.TaskService/CancelTask",
            Method::ListTasks => "agentstream.v1.TaskService/ListTasks",
        }
    }
}

/// What an edge read off the wire about a call.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CallMeta<'a> {
    /// The request id (the client's or the one generated for it).
    pub request_id: &'a str,
    /// The client's deadline, measured from now, when it set one.
    pub timeout: Option<Duration>,
    /// The API key's caller, when keys are configured.
    pub caller: Option<&'a Caller>,
    /// The share of streams of the connection the call came on (set by the
    /// server's transport; absent for calls made in-process).
    pub connection: Option<&'a ConnectionStreams>,
}

/// One connection's share of streaming calls
/// (`--max-active-streams-per-connection`): the transport makes one per
/// connection and hands it to every request of it, so that one client's
/// connection cannot take the whole `--max-active-streams` budget.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionStreams(Slots);

impl ConnectionStreams {
    /// A connection that may have `limit` streams open at once.
    pub(crate) fn new(limit: usize) -> Self {
        Self(Slots::new(limit))
    }
}

/// Starts the bookkeeping of calls; one per server, shared by every service
/// of both edges. Each call keeps a clone (one reference count).
#[derive(Debug, Clone)]
pub(crate) struct Calls(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    /// `--max-active-streams`, counted in the active streams gauge.
    streams: Slots,
}

impl Calls {
    /// Calls that report to `metrics`, end on `shutdown` and admit at most
    /// `max_active_streams` streams at once.
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        shutdown: Shutdown,
        max_active_streams: usize,
    ) -> Self {
        Self(Arc::new(Shared {
            streams: Slots::counted_in(metrics.active_streams_gauge(), max_active_streams),
            metrics,
            shutdown,
        }))
    }

    /// Opens the span of a call to `method`.
    pub(crate) fn start(&self, method: Method, meta: CallMeta<'_>) -> Call {
        Call {
            span: call_span(method, meta.request_id, meta.caller.map(Caller::name), None),
            request_id: meta.request_id.into(),
            end: CallEnd {
                usage: None,
                method,
                started: metrics::monotonic_nanos(),
                calls: self.clone(),
            },
            model: None,
            started: Instant::now(),
            timeout: meta.timeout,
            caller: meta.caller.cloned(),
            connection: meta.connection.cloned(),
        }
    }

    /// The server's counters.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.0.metrics
    }

    /// The server's shutdown signal.
    fn shutdown(&self) -> &Shutdown {
        &self.0.shutdown
    }
}

/// The span of a call to `method`, with the fields every line of the call
/// carries (the rest are recorded when it ends).
fn call_span(method: Method, request_id: &str, key: Option<&str>, model: Option<&str>) -> Span {
    // `key` and `model` are recorded when `Some` (each later `record` would
    // format the span's fields again).
    tracing::info_span!(
        "call",
        request_id,
        method = method.as_str(),
        key,
        model,
        chunks = Empty,
        prompt_tokens = Empty,
        completion_tokens = Empty,
        outcome = Empty,
        code = Empty,
    )
}

/// One call in progress.
#[derive(Debug)]
pub(crate) struct Call {
    /// The call's span; a streaming call's stream keeps it as a
    /// [`StreamSpan`].
    span: Span,
    /// What ending the call takes; a streaming call's stream keeps this and
    /// its [`StreamSpan`].
    end: CallEnd,
    /// The request id, to reopen the span with (see [`StreamSpan`]).
    request_id: Box<str>,
    /// The model serving the call, once known.
    model: Option<String>,
    /// When the call started, on the runtime's clock: its deadline counts
    /// from here.
    started: Instant,
    /// The client's deadline, measured from `started`.
    timeout: Option<Duration>,
    /// Who called, for the streams its key may open.
    caller: Option<Caller>,
    /// The connection's share of streams the call came on.
    connection: Option<ConnectionStreams>,
}

/// What ending a call takes besides its span: what it reports on its
/// closing line and in the metrics, and when it started. A streaming call
/// holds this (not the whole [`Call`]) until its stream ends, so that what
/// only its start needed (the caller and its connection) is not kept by
/// every open stream; a deadline's length stays with its timer.
#[derive(Debug)]
struct CallEnd {
    /// The generation's token counts, for calls that generate.
    usage: Option<UsageMeter>,
    method: Method,
    /// When the call started, in `metrics::monotonic_nanos` (the clock of
    /// the per-chunk histograms).
    started: u64,
    calls: Calls,
}

impl CallEnd {
    /// Nanoseconds since the call started.
    fn elapsed_nanos(&self) -> u64 {
        metrics::monotonic_nanos().saturating_sub(self.started)
    }

    /// Records how the call ended, `duration` nanoseconds after its start,
    /// and logs its one closing line in `span`.
    fn finish(&self, span: &Span, duration: u64, items: u64, error: Option<&Error>) {
        record_usage(span, self.usage.as_ref());
        self.calls.metrics().call_ended(
            self.method.as_str(),
            error.map_or(metrics::OK, |e| metrics::code_of(e.kind())),
        );
        let _entered = span.enter();
        span.record("chunks", items);
        let duration_ms = duration / 1_000_000;
        match error {
            None => {
                span.record("outcome", "ok");
                tracing::info!(duration_ms, "call finished");
            }
            Some(error) => {
                let kind = error.kind();
                span.record("outcome", "error");
                span.record("code", kind.as_str());
                if kind == ErrorKind::Internal {
                    tracing::error!(duration_ms, %error, "call failed");
                } else {
                    tracing::info!(duration_ms, %error, "call failed");
                }
            }
        }
    }

    /// Records a call its client cancelled after `items` items, in `span`.
    fn cancelled(&self, span: &Span, items: u64, series: Option<&StreamMetrics>) {
        let duration = self.elapsed_nanos();
        if let Some(series) = series {
            series.duration.observe_nanos(duration);
        }
        self.calls
            .metrics()
            .call_ended(self.method.as_str(), metrics::CANCELLED);
        let _entered = span.enter();
        span.record("outcome", "cancelled");
        span.record("chunks", items);
        record_usage(span, self.usage.as_ref());
        tracing::info!(
            duration_ms = duration / 1_000_000,
            "call cancelled by the client"
        );
    }
}

impl Call {
    /// Records the model that serves the call (its streams are then
    /// measured by model).
    pub(crate) fn record_model(&mut self, model: &str) {
        self.span.record("model", model);
        self.model = Some(model.to_owned());
    }

    /// Records where the call's generation counts its tokens: the call's
    /// closing line then reports them however it ends, cut short too.
    pub(crate) fn record_usage(&mut self, meter: UsageMeter) {
        self.end.usage = Some(meter);
    }

    /// The name of the API key the call presented (`None` on an open
    /// server): what owns the resumable streams it starts.
    pub(crate) fn owner(&self) -> Option<&str> {
        self.caller.as_ref().map(Caller::name)
    }

    /// The call's span, for work done on its behalf.
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// Runs `f` inside the call's span: work created there (a backend's
    /// generation) records what it logs under the call, and its spans are
    /// the call's children.
    pub(crate) fn in_span<R>(&self, f: impl FnOnce() -> R) -> R {
        self.span.in_scope(f)
    }

    /// Ends a unary call with `result`, logging how it went.
    pub(crate) fn unary<T>(self, result: Result<T>) -> Result<T> {
        match result {
            Ok(value) => {
                self.finish(1, None);
                Ok(value)
            }
            Err(error) => Err(self.fail(error)),
        }
    }

    /// Ends the call before any response with `error`.
    pub(crate) fn fail(self, error: Error) -> Error {
        self.finish(0, Some(&error));
        error
    }

    fn finish(&self, items: u64, error: Option<&Error>) {
        self.end
            .finish(&self.span, self.end.elapsed_nanos(), items, error);
    }

    /// Answers with a stream of items (boxed); refuses when the server is
    /// draining or already serves its maximum of streams, or the call's
    /// connection or the caller's key its share of them.
    pub(crate) fn stream<T: Send + 'static>(
        self,
        items: impl Stream<Item = Result<T>> + Send + 'static,
    ) -> Result<BoxedCallStream<T>> {
        self.stream_of(items.boxed())
    }

    /// [`Call::stream`] without the box, for a response stream whose type
    /// can be named: one allocation and one indirect call a poll fewer.
    pub(crate) fn stream_of<S: Stream + Unpin>(self, items: S) -> Result<CallStream<S>> {
        let calls = &self.end.calls.0;
        if calls.shutdown.is_draining() {
            return Err(self.fail(Error::ShuttingDown));
        }
        let Some(slot) = calls.streams.try_take() else {
            let limit = calls.streams.limit();
            return Err(self.fail(Error::ResourceExhausted(format!(
                "the server is at its limit of {limit} concurrent streams; retry later"
            ))));
        };
        let connection_slot = match &self.connection {
            None => None,
            Some(ConnectionStreams(slots)) => match slots.try_take() {
                Some(slot) => Some(slot),
                None => {
                    let limit = slots.limit();
                    return Err(self.fail(Error::ResourceExhausted(format!(
                        "this connection is at its limit of {limit} concurrent streams; \
                         retry later or open another connection"
                    ))));
                }
            },
        };
        let key_slot = match self.caller.as_ref().map(Caller::admit_stream) {
            None | Some(Ok(None)) => None,
            Some(Ok(Some(slot))) => Some(slot),
            Some(Err(limit)) => {
                return Err(self.fail(Error::ResourceExhausted(format!(
                    "this API key is at its limit of {limit} concurrent streams; retry later"
                ))));
            }
        };
        let metrics = &calls.metrics;
        Ok(CallStream {
            inner: Some(items),
            // A deadline too far to represent (`grpc-timeout` allows up to
            // 10^8 hours; clients send more) is no deadline at all.
            deadline: self.timeout.and_then(|timeout| {
                let at = self.started.checked_add(timeout)?;
                Some(Box::pin(Deadline {
                    sleep: sleep_until(at),
                    timeout,
                }))
            }),
            aborted: calls.shutdown.streams_aborted(),
            registered: None,
            _slot: slot,
            _connection_slot: connection_slot,
            _key_slot: key_slot,
            series: self
                .model
                .as_deref()
                .map(|model| metrics.stream_of(self.end.method.as_str(), model)),
            gaps: Gaps::since(self.end.started),
            items: 0,
            span: Box::new(if telemetry::exporting() {
                StreamSpan::Open(self.span)
            } else {
                StreamSpan::Closed(Reopen::new(
                    &self.request_id,
                    self.caller.as_ref().map(Caller::name),
                    self.model.as_deref(),
                ))
            }),
            end: self.end,
        })
    }
}

/// A streaming call's span while it streams (see the module doc): open
/// while spans are exported, otherwise closed, with what reopens it. The
/// stream keeps it boxed: it is read once, at the end, and a span is 40
/// bytes that every open stream would otherwise carry.
#[derive(Debug)]
enum StreamSpan {
    Open(Span),
    Closed(Reopen),
}

/// The fields a closed call's span is reopened with: the request id, the
/// key's name and the model, one after the other in one string. Every open
/// stream keeps one; as three strings (and a box of 56 bytes) they took
/// four allocations, in all 32 bytes more a stream.
#[derive(Debug)]
struct Reopen {
    text: Box<str>,
    /// Lengths of the key's name and the model at the end of `text`.
    key: Option<u32>,
    model: Option<u32>,
}

impl Reopen {
    fn new(request_id: &str, key: Option<&str>, model: Option<&str>) -> Self {
        // A field too long to measure in a u32 (none is: ids, key names and
        // model names are bounded far below) is left out, not cut.
        let key = key.and_then(|k| Some((k, u32::try_from(k.len()).ok()?)));
        let model = model.and_then(|m| Some((m, u32::try_from(m.len()).ok()?)));
        let mut text = String::from(request_id);
        text.extend(key.map(|(k, _)| k));
        text.extend(model.map(|(m, _)| m));
        Self {
            text: text.into_boxed_str(),
            key: key.map(|(_, len)| len),
            model: model.map(|(_, len)| len),
        }
    }

    /// The request id, the key's name and the model.
    fn fields(&self) -> (&str, Option<&str>, Option<&str>) {
        let (rest, model) = split_tail(&self.text, self.model);
        let (request_id, key) = split_tail(rest, self.key);
        (request_id, key, model)
    }
}

/// `text` without its last `len` bytes, and those bytes (when `len` is
/// given and they are whole characters of `text`).
fn split_tail(text: &str, len: Option<u32>) -> (&str, Option<&str>) {
    let at = len.and_then(|len| text.len().checked_sub(usize::try_from(len).ok()?));
    match at.filter(|&at| text.is_char_boundary(at)) {
        Some(at) => (&text[..at], Some(&text[at..])),
        None => (text, None),
    }
}

impl StreamSpan {
    /// The span the closing line of a call to `method` is logged in.
    fn closing(&self, method: Method) -> Span {
        match self {
            StreamSpan::Open(span) => span.clone(),
            StreamSpan::Closed(reopen) => {
                let (request_id, key, model) = reopen.fields();
                call_span(method, request_id, key, model)
            }
        }
    }
}

pin_project! {
    /// A call's deadline: its timer, and the timeout it was set from (for
    /// the error that ends the call).
    struct Deadline {
        #[pin]
        sleep: Sleep,
        timeout: Duration,
    }
}

pin_project! {
    /// A response stream with the call's deadline, drain and accounting.
    pub struct CallStream<S> {
        // `None` once the call has ended.
        inner: Option<S>,
        // Boxed: most calls set none, and a timer is a hundred bytes that
        // every open stream would otherwise carry.
        deadline: Option<Pin<Box<Deadline>>>,
        #[pin]
        aborted: WaitForCancellationFutureOwned,
        // The waker `deadline` and `aborted` were last polled with.
        registered: Option<Waker>,
        // The stream's place under `--max-active-streams` (and in the
        // active streams gauge).
        _slot: Slot,
        // Its place in its connection's share, when it came on one.
        _connection_slot: Option<Slot>,
        // Its place under `--max-streams-per-key`, when that applies.
        _key_slot: Option<Slot>,
        // Time to first chunk, gaps and duration, for streams of a model.
        series: Option<StreamMetrics>,
        // What the time-to-first-chunk and gap histograms are fed.
        gaps: Gaps,
        items: u64,
        span: Box<StreamSpan>,
        end: CallEnd,
    }

    impl<S> PinnedDrop for CallStream<S> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(inner) = this.inner.take() {
                // The client went away (cancel, disconnect) before the end:
                // stop the work first, so that what it used counts in full.
                drop(inner);
                record_zero_gaps(this.series.as_ref(), this.gaps);
                let span = this.span.closing(this.end.method);
                this.end.cancelled(&span, *this.items, this.series.as_ref());
            }
        }
    }
}

/// When a stream's chunks came, for its time-to-first-chunk and gap
/// histograms, reading the clock only when the stream had to wait.
///
/// A chunk that was ready when the client's stream asked for it (a fast
/// model, a burst from an upstream, a client reading behind the model)
/// came after a gap of zero: no time was spent waiting for it. Only a
/// chunk the stream waited for reads the clock. On this machine a clock
/// read costs about 30 ns, a tenth of what a whole chunk costs the
/// minimal server, so a fast stream no longer pays one per chunk.
#[derive(Debug)]
struct Gaps {
    /// When the stream started waiting for its next chunk (the call's
    /// start, or the chunk before), in `metrics::monotonic_nanos`.
    since: u64,
    /// The stream returned Pending since its last chunk.
    waited: bool,
    /// `since` is older than the last chunk: that one was ready at once
    /// and the clock was not read for it.
    stale: bool,
    /// Chunks that were ready at once, not yet added to the histogram (an
    /// atomic add per chunk would be most of what timing them costs).
    zeros: u32,
}

impl Gaps {
    /// Gaps from a call that started at `started` (the first chunk is
    /// always timed, from there).
    fn since(started: u64) -> Self {
        Self {
            since: started,
            waited: true,
            stale: false,
            zeros: 0,
        }
    }

    /// The stream has to wait: the wait starts now, unless it already did.
    fn waiting(&mut self, now: impl FnOnce() -> u64) {
        if self.stale {
            self.since = now();
            self.stale = false;
        }
        self.waited = true;
    }

    /// A chunk came: the gap before it, in nanoseconds (from the call's
    /// start for the first one), or `None` for a gap of zero, counted in
    /// [`Self::take_zeros`] instead.
    fn item(&mut self, now: impl FnOnce() -> u64) -> Option<u64> {
        if !self.waited {
            self.stale = true;
            self.zeros = self.zeros.saturating_add(1);
            return None;
        }
        let now = now();
        let gap = now.saturating_sub(self.since);
        self.since = now;
        self.waited = false;
        self.stale = false;
        Some(gap)
    }

    /// The zero gaps not yet recorded, now taken.
    fn take_zeros(&mut self) -> u32 {
        std::mem::take(&mut self.zeros)
    }
}

/// Zero gaps recorded together at most (see [`Gaps::zeros`]).
const ZERO_GAPS_BATCH: u32 = 64;

/// Adds the zero gaps `gaps` holds to the histogram: when the stream waits,
/// when it ends, and every [`ZERO_GAPS_BATCH`], so the histogram lags a
/// fast stream by less than a batch.
fn record_zero_gaps(series: Option<&StreamMetrics>, gaps: &mut Gaps) {
    let zeros = gaps.take_zeros();
    if zeros > 0
        && let Some(series) = series
    {
        series.inter_chunk_gap.observe_zeros(u64::from(zeros));
    }
}

/// The response stream of [`Call::stream`].
pub(crate) type BoxedCallStream<T> = CallStream<BoxStream<'static, Result<T>>>;

impl<T, S: Stream<Item = Result<T>> + Unpin> Stream for CallStream<S> {
    type Item = Result<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        // The deadline and the abort signal wake this task through the
        // waker they were polled with; poll them again only when the task's
        // waker changes, and otherwise read their state.
        let waker_changed = !this
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        let aborted = if waker_changed {
            this.aborted.poll(cx).is_ready()
        } else {
            this.end.calls.shutdown().are_streams_aborted()
        };
        let expired = match this.deadline.as_mut().map(|d| d.as_mut().project()) {
            Some(deadline) if waker_changed => deadline.sleep.poll(cx).is_ready(),
            Some(deadline) => deadline.sleep.is_elapsed(),
            None => false,
        };
        if waker_changed {
            *this.registered = Some(cx.waker().clone());
        }
        let outcome = if aborted {
            Err(Error::ShuttingDown)
        } else if expired {
            let timeout = this.deadline.as_ref().map_or(Duration::ZERO, |d| d.timeout);
            Err(Error::DeadlineExceeded(timeout.as_millis() as u64))
        } else {
            let polled = inner.poll_next_unpin(cx);
            match polled {
                Poll::Pending => {
                    this.gaps.waiting(metrics::monotonic_nanos);
                    record_zero_gaps(this.series.as_ref(), this.gaps);
                    return Poll::Pending;
                }
                // Handed on as it came, not taken apart and rebuilt: a
                // chunk is a few hundred bytes, and each move copies them.
                Poll::Ready(Some(Ok(_))) => {
                    if let Some(series) = this.series {
                        match this.gaps.item(metrics::monotonic_nanos) {
                            Some(gap) if *this.items == 0 => {
                                series.time_to_first_chunk.observe_nanos(gap);
                            }
                            Some(gap) => series.inter_chunk_gap.observe_nanos(gap),
                            None if this.gaps.zeros >= ZERO_GAPS_BATCH => {
                                record_zero_gaps(Some(series), this.gaps);
                            }
                            None => {}
                        }
                    }
                    *this.items += 1;
                    return polled;
                }
                Poll::Ready(Some(Err(error))) => Err(error),
                Poll::Ready(None) => Ok(()),
            }
        };
        // The call ends: drop the work now and record how it went.
        *this.inner = None;
        record_zero_gaps(this.series.as_ref(), this.gaps);
        let duration = this.end.elapsed_nanos();
        if let Some(series) = this.series {
            series.duration.observe_nanos(duration);
        }
        let span = this.span.closing(this.end.method);
        this.end
            .finish(&span, duration, *this.items, outcome.as_ref().err());
        Poll::Ready(outcome.err().map(Err))
    }
}

/// Records the tokens a call's generation used so far, for billing: on its
/// closing line whether it finished, failed or was cut short.
fn record_usage(span: &Span, usage: Option<&UsageMeter>) {
    if let Some(usage) = usage.map(UsageMeter::get) {
        span.record("prompt_tokens", usage.prompt_tokens);
        span.record("completion_tokens", usage.completion_tokens);
    }
}

#[cfg(test)]
mod tests {
    use super::{Gaps, Reopen};

    #[test]
    fn a_closed_span_reopens_with_the_fields_it_was_given() {
        for (request_id, key, model) in [
            ("req-1", Some("team-a"), Some("echo")),
            ("req-2", None, Some("synthetic")),
            ("req-3", Some("k"), None),
            ("req-4", None, None),
            ("ünïcode-id", Some("ключ"), Some("模型")),
            ("id", Some(""), Some("")),
        ] {
            let reopen = Reopen::new(request_id, key, model);
            assert_eq!(reopen.fields(), (request_id, key, model));
        }
    }

    /// A clock that must not be read.
    fn unread() -> u64 {
        panic!("the clock was read for a chunk that was ready at once")
    }

    #[test]
    fn the_first_chunk_is_timed_from_the_start_of_the_call() {
        let mut gaps = Gaps::since(1_000);
        assert_eq!(gaps.item(|| 1_500), Some(500));
    }

    #[test]
    fn a_chunk_the_stream_waited_for_is_timed_from_the_one_before() {
        let mut gaps = Gaps::since(0);
        assert_eq!(gaps.item(|| 100), Some(100));
        gaps.waiting(unread);
        assert_eq!(gaps.item(|| 10_100), Some(10_000));
        gaps.waiting(unread);
        gaps.waiting(unread);
        assert_eq!(gaps.item(|| 30_100), Some(20_000));
        assert_eq!(gaps.take_zeros(), 0);
    }

    #[test]
    fn chunks_ready_at_once_have_no_gap_and_read_no_clock() {
        let mut gaps = Gaps::since(0);
        assert_eq!(gaps.item(|| 100), Some(100));
        assert_eq!(gaps.item(unread), None);
        assert_eq!(gaps.item(unread), None);
        assert_eq!(gaps.take_zeros(), 2);
        assert_eq!(gaps.take_zeros(), 0);
        // The next wait starts when the stream starts waiting, not at the
        // last chunk the clock was read for.
        gaps.waiting(|| 5_000);
        gaps.waiting(unread);
        assert_eq!(gaps.item(|| 7_000), Some(2_000));
        assert_eq!(gaps.item(unread), None);
        assert_eq!(gaps.take_zeros(), 1);
    }
}
