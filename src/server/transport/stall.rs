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
//! through a thread-local the task lends its record to while it polls, and
//! marks two relaxed atomics per poll; the task arms one timer only while
//! the body waits to be pulled, and when the timer fires with no pull since,
//! it drops the stream: hyper resets it (RST_STREAM CANCEL), the response
//! stream and its work are dropped as on a client cancel.
//!
//! An HTTP/2 stream's task is a [`Watched`] future, written by hand rather
//! than as an `async fn` around tokio's task-local scope: every open stream
//! keeps its task for as long as it is open, and the hand-written one holds
//! the stream's future and the clock and nothing else. With the `async fn`
//! (its argument pinned into a local, then scoped) a paced stream held
//! about 250 bytes more (BENCHMARKS.md, issue 16).

use std::{
    cell::Cell,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::Duration,
};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

thread_local! {
    /// The progress record of the stream (or HTTP/1 connection) whose task
    /// this thread is polling, lent by its [`StallClock`] for the poll.
    static CURRENT: Cell<Option<Arc<Progress>>> = const { Cell::new(None) };
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
        tokio::spawn(Watched::new(future, self.send_timeout));
    }
}

pin_project! {
    /// `future` (one HTTP/2 stream), ended when its body waits for the
    /// client longer than the send timeout. Resolves to `None` when it was
    /// ended that way.
    struct Watched<F> {
        #[pin]
        future: F,
        clock: StallClock,
    }
}

impl<F: Future> Watched<F> {
    fn new(future: F, send_timeout: Duration) -> Self {
        Self {
            future,
            clock: StallClock::new(send_timeout),
        }
    }
}

impl<F: Future> Future for Watched<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        this.clock.poll_watched(this.future, cx)
    }
}

/// The longest send timeout honoured (a year: in effect, none).
const MAX_SEND_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// The send timeout of one task: the progress record its bodies report to
/// and the timer armed while one of them waits for the client.
pub(crate) struct StallClock {
    /// Always here, except while it is lent to [`CURRENT`] for a poll.
    progress: Option<Arc<Progress>>,
    send_timeout: Duration,
    /// Armed while a body waits for the client.
    timer: Option<Pin<Box<Sleep>>>,
    pulls_when_armed: u64,
}

impl StallClock {
    pub(crate) fn new(send_timeout: Duration) -> Self {
        Self {
            progress: Some(Arc::default()),
            // Bounded so `now + send_timeout` can never overflow when the
            // timer is re-armed, whatever the flag says.
            send_timeout: send_timeout.min(MAX_SEND_TIMEOUT),
            timer: None,
            pulls_when_armed: 0,
        }
    }

    /// Polls `future` with this clock's progress record as the one the
    /// bodies it polls report to; `None` if a body waited for the client
    /// longer than the send timeout (the future is then left unfinished,
    /// for the caller to drop).
    pub(crate) async fn run<F: Future>(&mut self, mut future: Pin<&mut F>) -> Option<F::Output> {
        std::future::poll_fn(|cx| self.poll_watched(future.as_mut(), cx)).await
    }

    fn poll_watched<F: Future>(
        &mut self,
        future: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<F::Output>> {
        if let Poll::Ready(output) = self.lending(|| future.poll(cx)) {
            return Poll::Ready(Some(output));
        }
        self.poll_stalled(cx).map(|()| None)
    }

    /// Runs `poll` with this clock's progress record lent to [`CURRENT`]:
    /// moved in and back out, so no reference is counted per poll (the task
    /// wakes for every chunk it sends; a body takes its own reference on its
    /// first poll). Given back even if `poll` panics.
    fn lending<R>(&mut self, poll: impl FnOnce() -> R) -> R {
        struct Lent<'a> {
            home: &'a mut Option<Arc<Progress>>,
            previous: Option<Arc<Progress>>,
        }
        impl Drop for Lent<'_> {
            fn drop(&mut self) {
                *self.home = CURRENT.replace(self.previous.take());
            }
        }
        let _lent = Lent {
            previous: CURRENT.replace(self.progress.take()),
            home: &mut self.progress,
        };
        poll()
    }

    /// Ready when a body has waited for the client for the send timeout.
    fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(progress) = self.progress.as_ref() else {
            return Poll::Pending;
        };
        if !progress.waiting.load(Relaxed) {
            // Nothing waits for the client; an armed timer may fire once,
            // harmlessly: this check runs again then.
            return Poll::Pending;
        }
        // Waiting is cleared only by a pull, which counts: an unchanged count
        // means the body has waited ever since the timer was (re)armed.
        let pulls = progress.pulls.load(Relaxed);
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
    /// Taken from [`CURRENT`] on the first poll (absent outside a watched
    /// task, e.g. in unit tests).
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

/// The progress record lent to [`CURRENT`], if any (a reference of its own).
fn current_progress() -> Option<Arc<Progress>> {
    CURRENT.with(|current| {
        let lent = current.take();
        let own = lent.clone();
        current.set(lent);
        own
    })
}

impl<B: Body + Unpin> Body for SendWatch<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let progress = this.progress.get_or_insert_with(current_progress);
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

#[cfg(test)]
mod tests {
    use std::{future::poll_fn, panic::AssertUnwindSafe, task::Waker};

    use super::*;

    #[test]
    fn a_poll_sees_its_own_record_and_gives_it_back_even_when_it_panics() {
        let mut cx = Context::from_waker(Waker::noop());
        let mut clock = StallClock::new(Duration::from_secs(1));
        let own = clock.progress.clone().expect("the clock's record");

        let mut seen = std::pin::pin!(poll_fn(|_| Poll::Ready(current_progress())));
        let Poll::Ready(Some(seen)) = clock.poll_watched(seen.as_mut(), &mut cx) else {
            panic!("the record was not lent to the poll");
        };
        assert!(seen.as_ref().is_some_and(|p| Arc::ptr_eq(p, &own)));
        assert!(current_progress().is_none(), "still lent after the poll");

        let panicked = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut panics = std::pin::pin!(poll_fn(|_| -> Poll<()> { panic!("the poll panics") }));
            let _ = clock.poll_watched(panics.as_mut(), &mut cx);
        }));
        assert!(panicked.is_err());
        assert!(current_progress().is_none(), "left lent after a panic");
        assert!(
            clock
                .progress
                .as_ref()
                .is_some_and(|p| Arc::ptr_eq(p, &own)),
            "the clock lost its record"
        );
    }
}
