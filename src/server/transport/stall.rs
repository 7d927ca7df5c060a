//! The send timeout: a response that the client has stopped reading is
//! ended after `send_timeout` instead of holding its buffers, its stream
//! slot and the work behind it for ever.
//!
//! hyper pulls the next piece of a response body only when the stream has
//! send capacity, i.e. when the client has read (acknowledged with a
//! WINDOW_UPDATE, or drained from the socket) what was sent before. So "the
//! client reads nothing" shows up as: the body yielded data and has not been
//! polled again since. Nothing polls a body in that state, so the watch is
//! kept by the task that drives the stream (a [`StallClock`], around every
//! HTTP/2 stream through the [`WatchingExecutor`] hyper spawns them with,
//! and around every HTTP/1 connection): the body ([`SendWatch`]) reaches it
//! through a
//! task-local and marks two relaxed atomics per poll; the task arms one timer
//! only while the body waits to be pulled, and when the timer fires with no
//! pull since, it drops the stream: hyper resets it (RST_STREAM CANCEL), the
//! response stream and its work are dropped as on a client cancel.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::Duration,
};

use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

tokio::task_local! {
    /// The progress record of the stream (or HTTP/1 connection) whose task
    /// is being polled.
    static CURRENT: Arc<Progress>;
}

/// Whether a response body waits for the client, and how often it was
/// pulled.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// The body yielded data and has not been polled since.
    waiting: AtomicBool,
    /// Polls of the body: changes whenever the client made room.
    pulls: AtomicU64,
}

/// Spawns hyper's per-stream tasks on tokio, each under a send timeout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WatchingExecutor {
    pub(crate) send_timeout: Duration,
}

impl<F> hyper::rt::Executor<F> for WatchingExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(watched(future, self.send_timeout));
    }
}

/// `future` (one HTTP/2 stream), ended when its body waits for the client
/// longer than `send_timeout`. Resolves to `None` when it was ended that way.
pub(crate) async fn watched<F: Future>(future: F, send_timeout: Duration) -> Option<F::Output> {
    let mut clock = StallClock::new(send_timeout);
    let future = std::pin::pin!(future);
    clock.run(future).await
}

/// The longest send timeout honoured (a year: in effect, none).
const MAX_SEND_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// The send timeout of one task: the progress record its bodies report to
/// and the timer armed while one of them waits for the client.
pub(crate) struct StallClock {
    progress: Arc<Progress>,
    send_timeout: Duration,
    /// Armed while a body waits for the client.
    timer: Option<Pin<Box<Sleep>>>,
    pulls_when_armed: u64,
}

impl StallClock {
    pub(crate) fn new(send_timeout: Duration) -> Self {
        Self {
            progress: Arc::default(),
            // Bounded so `now + send_timeout` can never overflow when the
            // timer is re-armed, whatever the flag says.
            send_timeout: send_timeout.min(MAX_SEND_TIMEOUT),
            timer: None,
            pulls_when_armed: 0,
        }
    }

    /// Polls `future` with this clock's progress record as the task-local
    /// the bodies it polls report to; `None` if a body waited for the
    /// client longer than the send timeout (the future is then left
    /// unfinished, for the caller to drop).
    pub(crate) async fn run<F: Future>(&mut self, future: Pin<&mut F>) -> Option<F::Output> {
        // Set around each poll by swapping it in and out: no reference
        // counting per poll (the task wakes for every chunk it sends); a
        // body takes its own reference on its first poll.
        let mut scoped = std::pin::pin!(CURRENT.scope(self.progress.clone(), future));
        std::future::poll_fn(|cx| {
            if let Poll::Ready(output) = scoped.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            match self.poll_stalled(cx) {
                Poll::Ready(()) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Ready when a body has waited for the client for the send timeout.
    fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.progress.waiting.load(Relaxed) {
            // Nothing waits for the client; an armed timer may fire once,
            // harmlessly: this check runs again then.
            return Poll::Pending;
        }
        // Waiting is cleared only by a pull, which counts: an unchanged count
        // means the body has waited ever since the timer was (re)armed.
        let pulls = self.progress.pulls.load(Relaxed);
        let timer = match self.timer.as_mut() {
            Some(timer) if pulls == self.pulls_when_armed => timer,
            Some(timer) => {
                timer.as_mut().reset(Instant::now() + self.send_timeout);
                self.pulls_when_armed = pulls;
                timer
            }
            None => {
                self.pulls_when_armed = pulls;
                self.timer
                    .insert(Box::pin(tokio::time::sleep(self.send_timeout)))
            }
        };
        if timer.as_mut().poll(cx).is_ready() {
            tracing::info!(
                send_timeout_ms = self.send_timeout.as_millis() as u64,
                "ending a response the client has not read for the send timeout"
            );
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// A response body that reports its pulls to the send timeout of the task
/// that polls it.
#[derive(Debug)]
pub(crate) struct SendWatch<B> {
    inner: B,
    /// Taken from the task-local on the first poll (absent outside a
    /// watched task, e.g. in unit tests).
    progress: Option<Option<Arc<Progress>>>,
}

impl<B> SendWatch<B> {
    pub(crate) fn new(inner: B) -> Self {
        Self {
            inner,
            progress: None,
        }
    }
}

impl<B: Body + Unpin> Body for SendWatch<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let progress = this
            .progress
            .get_or_insert_with(|| CURRENT.try_with(Arc::clone).ok());
        // A plain load first: the flag is usually clear (the body was
        // pulled again right after its last frame), and a swap is a locked
        // instruction on every poll.
        if let Some(progress) = progress
            && progress.waiting.load(Relaxed)
        {
            progress.waiting.store(false, Relaxed);
            progress.pulls.fetch_add(1, Relaxed);
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Some(progress), Poll::Ready(Some(Ok(frame)))) = (progress, &polled)
            && frame.is_data()
        {
            progress.waiting.store(true, Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
