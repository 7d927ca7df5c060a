//! Write coalescing: an HTTP/2 connection writes once for all the streams
//! that have something to send, not once per stream.
//!
//! Each HTTP/2 response stream is driven by its own task, which hands its
//! frames to the connection's task and wakes it. tokio runs a task woken by
//! the running one next (its LIFO slot), so when a timer woke a hundred
//! paced streams at once, the connection's task ran after each of them and
//! wrote one frame per `writev`: at 10,000 streams × 10 tokens/s over eight
//! connections, agentstream and the minimal tonic baseline alike made about
//! 83,000 `writev`s a second for 100,000 chunks, and the kernel's side of
//! them took half the core.
//!
//! [`Coalesced`] defers the first write of a round: it wakes its own task
//! and returns `Pending`, which puts the connection at the back of the run
//! queue. The streams woken with it run first and queue their frames; when
//! the connection runs again, one write carries them all (15,000 `writev`s a
//! second in the same run, and the server's core half idle). A write is
//! deferred at most once in a row, the next attempt goes through, so it
//! costs one extra poll of the connection per round and can never stall it;
//! the frames wait in hyper's own bounded send buffer, nothing is copied or
//! held here.
//!
//! It defers only while more than one request is in flight on the
//! connection: with one there is nothing to gather, and the extra poll
//! would only delay a lone call's first chunk and slow a lone fast stream
//! (by 8 µs and 7% when every write waited). A write that is already
//! large ([`LARGE_WRITE`], as fast streams make) goes out at once too:
//! gathering saves the system calls of small writes, not of large ones.
//! HTTP/1 connections (and WebSockets upgraded from them) carry one
//! response at a time: they are passed through untouched. A port that
//! speaks both tells them apart by the HTTP/2 preface.
//!
//! A deferred write gathers at most [`GATHER`] frames ([`Round`]): when the
//! server falls behind, every stream with a chunk due would otherwise queue
//! a frame before the connection's task came round again, and h2 keeps its
//! per-connection queue at the largest size it reached (a slot of about 300
//! bytes a frame: up to one per open stream, BENCHMARKS.md, stops 22 and
//! 23). A stream that finds the round full waits, in order, for the write,
//! instead of polling its body; each write wakes the next [`GATHER`] of
//! them, which then go on the turn it gave them.

use std::{
    collections::VecDeque,
    io,
    pin::Pin,
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering::Relaxed},
    },
    task::{Context, Poll, Waker},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Protocols, load::Load};

/// The first bytes of the HTTP/2 client preface (`PRI * HTTP/2.0...`). No
/// HTTP/1 method starts with them.
const HTTP2_PREFACE_START: &[u8] = b"PRI ";

/// Bytes from which a write goes out without waiting for others: about
/// forty paced chunks' frames (a hundred bytes each), a quarter of a fast
/// stream's full frame.
const LARGE_WRITE: usize = 4 * 1024;

/// Frames a deferred write gathers at most: about six kilobytes of paced
/// chunks, one `writev`.
const GATHER: u32 = 64;

/// Streams that may wait for a connection's write at once; past that, a
/// stream queues its frame without waiting (h2 bounds what it queues).
const MAX_WAITING: usize = 4096;

/// The credit of a round when no write is deferred: no limit.
const NO_ROUND: u32 = u32::MAX;

/// One connection's gathering of frames for a deferred write: the credit of
/// frames its streams may still queue, and the streams waiting for the
/// write because there was none left.
#[derive(Debug)]
pub(crate) struct Round {
    credit: AtomicU32,
    waiting: Mutex<Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    /// In the order they came.
    streams: VecDeque<Waker>,
    /// Streams woken by the last write that have not come back yet: they
    /// queue their frame whatever the credit, rather than wait again (a
    /// write that goes out before they come back starts the count anew,
    /// and those left wait once more).
    passes: u32,
}

/// Whether a stream may poll its body now ([`Round::admit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Yes: no write is deferred, or the round has room.
    Now,
    /// Yes, on the turn the last write gave it; if it has nothing to send
    /// it gives the turn on ([`Round::pass_on`]).
    Passed,
    /// No: it waits for the write, and is woken then.
    Wait,
}

impl Default for Round {
    fn default() -> Self {
        Self {
            credit: AtomicU32::new(NO_ROUND),
            waiting: Mutex::default(),
        }
    }
}

impl Round {
    /// Called by a stream before it polls its body: whether it may queue a
    /// frame now. One atomic operation unless the round is full.
    pub(crate) fn admit(&self, cx: &Context<'_>) -> Admission {
        let took = self.credit.fetch_update(Relaxed, Relaxed, |credit| {
            (credit != NO_ROUND && credit > 0).then(|| credit - 1)
        });
        if matches!(took, Ok(_) | Err(NO_ROUND)) {
            return Admission::Now;
        }
        // A poisoned lock (a panic elsewhere) stops the gathering, not the
        // stream.
        let Ok(mut waiting) = self.waiting.lock() else {
            return Admission::Now;
        };
        // The write may have gone out meanwhile (it ends the round under
        // this lock).
        if self.credit.load(Relaxed) == NO_ROUND {
            return Admission::Now;
        }
        if waiting.passes > 0 {
            waiting.passes -= 1;
            return Admission::Passed;
        }
        if waiting.streams.len() >= MAX_WAITING {
            return Admission::Now;
        }
        waiting.streams.push_back(cx.waker().clone());
        Admission::Wait
    }

    /// A stream let through by [`Admission::Passed`] had nothing to send:
    /// the next waiting one gets its turn, so a round of streams that were
    /// woken for nothing cannot leave the others waiting.
    pub(crate) fn pass_on(&self) {
        let next = match self.waiting.lock() {
            Ok(mut waiting) => waiting
                .streams
                .pop_front()
                .inspect(|_| waiting.passes = waiting.passes.saturating_add(1)),
            Err(_) => None,
        };
        if let Some(stream) = next {
            stream.wake();
        }
    }

    /// A write is deferred: from now on its streams queue at most
    /// [`GATHER`] frames before it goes out.
    fn open(&self) {
        self.credit.store(GATHER, Relaxed);
    }

    /// A write went out: the round ends, and the first `wake` waiting
    /// streams get their turn.
    fn close(&self, wake: usize) {
        let woken: Vec<Waker> = match self.waiting.lock() {
            Ok(mut waiting) => {
                self.credit.store(NO_ROUND, Relaxed);
                let n = wake.min(waiting.streams.len());
                waiting.passes = u32::try_from(n).unwrap_or(u32::MAX);
                waiting.streams.drain(..n).collect()
            }
            Err(_) => {
                self.credit.store(NO_ROUND, Relaxed);
                Vec::new()
            }
        };
        for stream in woken {
            stream.wake();
        }
    }
}

/// A connection's socket whose writes wait one turn of the scheduler when
/// it speaks HTTP/2.
#[derive(Debug)]
pub(crate) struct Coalesced<T> {
    inner: T,
    mode: Mode,
    /// The connection's requests in flight.
    load: Load,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The protocol is not known yet: writes go through.
    Sniffing,
    /// HTTP/1: writes go through.
    PassThrough,
    /// HTTP/2; `deferred`: this round's write was deferred once already,
    /// the next goes through.
    Coalescing { deferred: bool },
}

impl<T> Coalesced<T> {
    /// `inner` as a connection of a port that speaks `protocols`, with
    /// `load` counting its requests in flight.
    pub(crate) fn new(inner: T, protocols: Protocols, load: Load) -> Self {
        let mode = match protocols {
            Protocols::Http2 => Mode::Coalescing { deferred: false },
            Protocols::Http1AndHttp2 => Mode::Sniffing,
        };
        Self { inner, mode, load }
    }

    /// Whether to let the writes of other streams catch up with this one
    /// of `len` bytes first: once per round, while there are other streams
    /// and the write is small, with this task woken to come back at the
    /// end of the queue.
    fn defer(&mut self, cx: &Context<'_>, len: usize) -> bool {
        match &mut self.mode {
            Mode::Coalescing { deferred }
                if !*deferred && len < LARGE_WRITE && self.load.in_flight() > 1 =>
            {
                *deferred = true;
                self.load.round().open();
                cx.waker().wake_by_ref();
                true
            }
            _ => false,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesced<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.mode == Mode::Sniffing {
            let read = &buf.filled()[before..];
            // The preface comes first and whole (24 bytes) in practice; a
            // first read too short to tell is served as HTTP/1 would be.
            if !read.is_empty() {
                this.mode = if read.starts_with(HTTP2_PREFACE_START) {
                    Mode::Coalescing { deferred: false }
                } else {
                    Mode::PassThrough
                };
            }
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesced<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.defer(cx, buf.len()) {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len = bufs
            .iter()
            .fold(0usize, |sum, buf| sum.saturating_add(buf.len()));
        if this.defer(cx, len) {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.inner).poll_flush(cx);
        if flushed.is_ready()
            && let Mode::Coalescing { deferred } = &mut this.mode
        {
            // Everything written went out: the next write starts a round,
            // and the streams that waited for this one may go.
            *deferred = false;
            this.load.round().close(GATHER as usize);
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<T> Drop for Coalesced<T> {
    fn drop(&mut self) {
        // No write will come: every waiting stream goes (and finds its
        // connection gone).
        self.load.round().close(MAX_WAITING);
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering::Relaxed},
        },
        task::{Wake, Waker},
    };

    use super::{super::load::InFlight, *};

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    /// A waker and the count of its wake-ups.
    fn counted_waker() -> (Arc<Wakes>, Waker) {
        let wakes = Arc::new(Wakes::default());
        (wakes.clone(), Waker::from(wakes))
    }

    /// The writes (and reads) `Coalesced` makes of its socket.
    #[derive(Default)]
    struct Socket {
        written: Vec<u8>,
        writes: usize,
        incoming: &'static [u8],
    }

    impl AsyncRead for Socket {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = self.incoming.len().min(buf.remaining());
            buf.put_slice(&self.incoming[..n]);
            self.incoming = &self.incoming[n..];
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Socket {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes += 1;
            self.written.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn write(io: &mut Coalesced<Socket>, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<usize> {
        Pin::new(io).poll_write(cx, bytes).map(|r| r.unwrap())
    }

    fn flush(io: &mut Coalesced<Socket>, cx: &mut Context<'_>) {
        assert!(Pin::new(io).poll_flush(cx).is_ready());
    }

    fn read(io: &mut Coalesced<Socket>, cx: &mut Context<'_>) -> Vec<u8> {
        let mut bytes = [0; 64];
        let mut buf = ReadBuf::new(&mut bytes);
        assert!(Pin::new(io).poll_read(cx, &mut buf).is_ready());
        buf.filled().to_vec()
    }

    /// A connection's load with `requests` in flight (while the guards live).
    fn load_of(requests: usize) -> (Load, Vec<InFlight>) {
        let (connection, server) = (Load::default(), Load::default());
        let guards = (0..requests).map(|_| connection.enter(&server)).collect();
        (connection, guards)
    }

    /// An HTTP/2 connection with two requests in flight (while the guards
    /// live), and its load, which holds its round.
    fn busy_http2() -> (Coalesced<Socket>, Load, Vec<InFlight>) {
        let (load, requests) = load_of(2);
        let io = Coalesced::new(Socket::default(), Protocols::Http2, load.clone());
        (io, load, requests)
    }

    /// Takes the whole credit of the round just opened on `load`.
    fn fill_round(load: &Load, stream: &Context<'_>) {
        for _ in 0..GATHER {
            assert_eq!(load.round().admit(stream), Admission::Now);
        }
    }

    #[test]
    fn an_http2_write_waits_one_turn_with_its_task_woken() {
        let (wakes, waker) = counted_waker();
        let mut cx = Context::from_waker(&waker);
        let (mut io, _load, _requests) = busy_http2();

        assert_eq!(write(&mut io, &mut cx, b"frame"), Poll::Pending);
        assert_eq!(wakes.0.load(Relaxed), 1, "deferred without a wake-up");
        assert_eq!(io.inner.writes, 0);
        // The next attempt (with the frames queued since) goes through,
        // and so do the writes after it until the flush.
        assert_eq!(write(&mut io, &mut cx, b"frames"), Poll::Ready(6));
        assert_eq!(write(&mut io, &mut cx, b"more"), Poll::Ready(4));
        flush(&mut io, &mut cx);
        assert_eq!(io.inner.written, b"framesmore");
        // A flush ends the round: the next write waits again.
        assert_eq!(write(&mut io, &mut cx, b"next"), Poll::Pending);
        assert_eq!(wakes.0.load(Relaxed), 2);
        assert_eq!(write(&mut io, &mut cx, b"next"), Poll::Ready(4));
    }

    #[test]
    fn a_large_write_goes_at_once() {
        let (wakes, waker) = counted_waker();
        let mut cx = Context::from_waker(&waker);
        let (mut io, _load, _requests) = busy_http2();

        let large = vec![7; LARGE_WRITE];
        assert_eq!(write(&mut io, &mut cx, &large), Poll::Ready(LARGE_WRITE));
        assert_eq!(wakes.0.load(Relaxed), 0);
        // The vectored write counts all its slices.
        let half = vec![7; LARGE_WRITE / 2];
        let slices = [io::IoSlice::new(&half), io::IoSlice::new(&half)];
        let written = Pin::new(&mut io).poll_write_vectored(&mut cx, &slices);
        assert!(matches!(written, Poll::Ready(Ok(n)) if n > 0));
        assert_eq!(wakes.0.load(Relaxed), 0);
        // A small one still waits its turn.
        assert_eq!(write(&mut io, &mut cx, b"small"), Poll::Pending);
        assert_eq!(wakes.0.load(Relaxed), 1);
    }

    #[test]
    fn a_lone_request_writes_at_once() {
        let (wakes, waker) = counted_waker();
        let mut cx = Context::from_waker(&waker);
        let (load, mut requests) = load_of(1);
        let mut io = Coalesced::new(Socket::default(), Protocols::Http2, load.clone());

        assert_eq!(write(&mut io, &mut cx, b"alone"), Poll::Ready(5));
        flush(&mut io, &mut cx);
        // A second stream comes: the connection's writes gather again.
        let (server, _) = load_of(0);
        requests.push(load.enter(&server));
        assert_eq!(write(&mut io, &mut cx, b"two"), Poll::Pending);
        assert_eq!(wakes.0.load(Relaxed), 1);
        assert_eq!(io.inner.written, b"alone");
    }

    #[test]
    fn a_deferred_write_gathers_at_most_a_round_of_frames() {
        let (conn_wakes, conn_waker) = counted_waker();
        let mut conn = Context::from_waker(&conn_waker);
        let (mut io, round, _requests) = busy_http2();
        let (stream_wakes, stream_waker) = counted_waker();
        let stream = Context::from_waker(&stream_waker);

        // No write waits: streams go as they come.
        assert_eq!(round.round().admit(&stream), Admission::Now);
        assert_eq!(write(&mut io, &mut conn, b"first"), Poll::Pending);
        assert_eq!(conn_wakes.0.load(Relaxed), 1);
        fill_round(&round, &stream);
        // The round is full: the next streams wait for the write.
        assert_eq!(round.round().admit(&stream), Admission::Wait);
        assert_eq!(round.round().admit(&stream), Admission::Wait);
        assert_eq!(stream_wakes.0.load(Relaxed), 0);
        assert_eq!(write(&mut io, &mut conn, b"gathered"), Poll::Ready(8));
        flush(&mut io, &mut conn);
        // The write woke them, and they go whatever the next round holds.
        assert_eq!(stream_wakes.0.load(Relaxed), 2);
        assert_eq!(write(&mut io, &mut conn, b"next"), Poll::Pending);
        fill_round(&round, &stream);
        assert_eq!(round.round().admit(&stream), Admission::Passed);
        assert_eq!(round.round().admit(&stream), Admission::Passed);
        assert_eq!(round.round().admit(&stream), Admission::Wait);
    }

    #[test]
    fn a_turn_given_on_wakes_the_next_waiting_stream() {
        let (_conn_wakes, conn_waker) = counted_waker();
        let mut conn = Context::from_waker(&conn_waker);
        let (mut io, round, _requests) = busy_http2();
        let gather = GATHER as usize;
        let streams: Vec<_> = (0..gather + 2).map(|_| counted_waker()).collect();
        let admit = |i: usize| round.round().admit(&Context::from_waker(&streams[i].1));
        let wakes = |i: usize| streams[i].0.0.load(Relaxed);

        assert_eq!(write(&mut io, &mut conn, b"first"), Poll::Pending);
        for i in 0..gather {
            assert_eq!(admit(i), Admission::Now);
        }
        // Every stream comes back with its next chunk: all wait.
        for i in 0..gather + 2 {
            assert_eq!(admit(i), Admission::Wait);
        }
        assert_eq!(write(&mut io, &mut conn, b"gathered"), Poll::Ready(8));
        flush(&mut io, &mut conn);
        // A write wakes a round's worth of them, in the order they came.
        assert!((0..gather).all(|i| wakes(i) == 1));
        assert_eq!((wakes(gather), wakes(gather + 1)), (0, 0));
        // The next round fills; a woken stream still goes, on its turn.
        assert_eq!(write(&mut io, &mut conn, b"next"), Poll::Pending);
        fill_round(&round, &Context::from_waker(&conn_waker));
        assert_eq!(admit(0), Admission::Passed);
        // It had nothing to send: the next waiting stream gets the turn.
        round.round().pass_on();
        assert_eq!((wakes(gather), wakes(gather + 1)), (1, 0));
        assert_eq!(admit(gather), Admission::Passed);
    }

    #[test]
    fn a_closed_connection_wakes_every_waiting_stream() {
        let (_conn_wakes, conn_waker) = counted_waker();
        let mut conn = Context::from_waker(&conn_waker);
        let (mut io, round, _requests) = busy_http2();
        let (stream_wakes, stream_waker) = counted_waker();
        let stream = Context::from_waker(&stream_waker);

        assert_eq!(write(&mut io, &mut conn, b"first"), Poll::Pending);
        fill_round(&round, &stream);
        let waiting = 2 * GATHER as usize;
        for _ in 0..waiting {
            assert_eq!(round.round().admit(&stream), Admission::Wait);
        }
        drop(io);
        assert_eq!(stream_wakes.0.load(Relaxed), waiting);
        assert_eq!(round.round().admit(&stream), Admission::Now);
    }

    #[test]
    fn a_port_of_both_protocols_coalesces_only_http2() {
        let (wakes, waker) = counted_waker();
        let mut cx = Context::from_waker(&waker);

        let http1 = Socket {
            incoming: b"POST /v1/chat/completions HTTP/1.1\r\n",
            ..Socket::default()
        };
        let (load, _requests) = load_of(2);
        let mut io = Coalesced::new(http1, Protocols::Http1AndHttp2, load.clone());
        assert!(read(&mut io, &mut cx).starts_with(b"POST"));
        assert_eq!(write(&mut io, &mut cx, b"HTTP/1.1 200 OK"), Poll::Ready(15));
        assert_eq!(wakes.0.load(Relaxed), 0);

        let http2 = Socket {
            incoming: b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            ..Socket::default()
        };
        let mut io = Coalesced::new(http2, Protocols::Http1AndHttp2, load);
        // Writes before the first bytes arrive (none in practice) pass.
        assert_eq!(write(&mut io, &mut cx, b"x"), Poll::Ready(1));
        assert_eq!(read(&mut io, &mut cx).len(), 24);
        assert_eq!(write(&mut io, &mut cx, b"SETTINGS"), Poll::Pending);
        assert_eq!(wakes.0.load(Relaxed), 1);
    }
}
