//! One client connection, from its first byte to its close.
//!
//! Around hyper's connection it enforces what hyper leaves to the server:
//! - the handshake timeout: a client that has not finished TLS (when it is
//!   on) and sent the 24-byte HTTP/2 preface (or an HTTP/1 request line)
//!   within `handshake_timeout` is disconnected, so silent sockets cannot
//!   pile up;
//! - the idle timeout: a connection with no request in flight for
//!   `idle_timeout` is closed gracefully (GOAWAY);
//! - the drain: when the server starts draining, each connection is closed
//!   gracefully, at once if idle, after its last stream otherwise;
//! - the send timeout of HTTP/1 responses (HTTP/2 streams get theirs from
//!   the executor, see [`super::stall`]).

use std::{
    convert::Infallible,
    io,
    pin::{Pin, pin},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::{StreamExt, stream::FuturesUnordered};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::OwnedSemaphorePermit,
};
use tower::Service;

use super::{
    super::ConnectionStreams,
    Shared,
    coalesce::{Admission, Coalesced},
    load::{InFlight, Load},
    stall::{SendWatch, StallClock},
    tls::{self, MaybeTls},
};

/// Length of the HTTP/2 client preface (`PRI * HTTP/2.0...`).
const PREFACE_LEN: u64 = 24;

/// Serves one accepted connection until it closes or the server stops.
pub(crate) async fn serve<S, B>(
    stream: TcpStream,
    service: S,
    shared: Arc<Shared>,
    _slot: OwnedSemaphorePermit,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let deadline = tokio::time::Instant::now() + shared.limits.handshake_timeout;
    let stream = tokio::select! {
        accepted = tokio::time::timeout_at(deadline, tls::accept(stream, shared.tls.as_ref())) => {
            match accepted {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("closing a connection that did not complete its TLS handshake in time");
                    return;
                }
            }
        }
        () = shared.closed.cancelled() => return,
    };
    let greeted = Arc::new(AtomicBool::new(false));
    let load = Load::default();
    let io = TokioIo::new(Coalesced::new(
        Greeting {
            inner: stream,
            read: 0,
            greeted: greeted.clone(),
        },
        shared.protocols,
        load.clone(),
    ));
    let service = Counted {
        inner: service,
        connection: load.clone(),
        server: shared.load.clone(),
        streams: ConnectionStreams::new(shared.limits.max_active_streams_per_connection),
    };
    // With upgrades: the HTTP edge serves WebSockets.
    let mut conn = pin!(shared.builder.serve_connection_with_upgrades(io, service));
    let mut clock = StallClock::new(shared.limits.send_timeout);
    // A connection opened during the drain is served (a health check then
    // answers NOT_SERVING) until the server stops.
    let mut closing = shared.shutdown.is_draining();
    let mut endings = Endings::new();
    endings.push(Box::pin(async move {
        tokio::time::sleep_until(deadline).await;
        Ending::HandshakeDue
    }));
    if !closing {
        endings.push(Box::pin(async {
            load.idle_for(shared.limits.idle_timeout).await;
            Ending::Idle
        }));
        endings.push(Box::pin(async {
            shared.shutdown.draining().await;
            Ending::Draining
        }));
    }
    endings.push(Box::pin(async {
        shared.closed.cancelled().await;
        Ending::Closed
    }));
    loop {
        tokio::select! {
            biased;
            served = clock.run(conn.as_mut()) => {
                match served {
                    Some(Err(error)) => tracing::debug!(error = %error, "connection ended with an error"),
                    Some(Ok(())) => {}
                    None => tracing::debug!("HTTP/1 connection closed: send timeout"),
                }
                return;
            }
            Some(ending) = endings.next() => match ending {
                Ending::HandshakeDue if !greeted.load(Relaxed) => {
                    tracing::debug!("closing a connection that did not complete its handshake in time");
                    return;
                }
                Ending::HandshakeDue => {}
                Ending::Idle | Ending::Draining if !closing => {
                    if matches!(ending, Ending::Idle) {
                        tracing::debug!("closing an idle connection");
                    }
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                Ending::Idle | Ending::Draining => {}
                Ending::Closed => return,
            },
        }
    }
}

/// What ends a connection other than its client.
enum Ending {
    /// The handshake deadline passed (the connection ends unless it was
    /// greeted by then).
    HandshakeDue,
    /// No request has been in flight for the idle timeout.
    Idle,
    /// The server began to drain.
    Draining,
    /// The server stopped.
    Closed,
}

/// The pending [`Ending`]s of a connection. They are rare, while the
/// connection's task wakes for every frame it sends; a `FuturesUnordered`
/// polls only the futures whose own wakers fired, so a wake-up for a frame
/// costs them nothing (a `select!` over them polled all four each time:
/// about 1,500 instructions a chunk on 200 paced streams, callgrind).
type Endings<'a> = FuturesUnordered<Pin<Box<dyn Future<Output = Ending> + Send + 'a>>>;

/// The connection's socket, noting when the client has sent at least a
/// preface's worth of bytes.
struct Greeting {
    inner: MaybeTls,
    read: u64,
    greeted: Arc<AtomicBool>,
}

impl AsyncRead for Greeting {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.read < PREFACE_LEN {
            this.read += (buf.filled().len() - before) as u64;
            if this.read >= PREFACE_LEN {
                this.greeted.store(true, Relaxed);
            }
        }
        polled
    }
}

impl AsyncWrite for Greeting {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The service of one connection: counts each request in flight, hands
/// it the connection's share of streams and watches its response body for
/// the send timeout.
#[derive(Clone)]
struct Counted<S> {
    inner: S,
    connection: Load,
    server: Load,
    streams: ConnectionStreams,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Counted<S>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone,
{
    type Response = Response<Served<B>>;
    type Error = Infallible;
    type Future = CountedFuture<S::Future>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let in_flight = self.connection.enter(&self.server);
        request.extensions_mut().insert(self.streams.clone());
        // The services served here (tonic routes, axum routers) are always
        // ready, as hyper's tower glue assumes too.
        let mut inner = self.inner.clone();
        CountedFuture {
            inner: Box::pin(inner.call(request)),
            in_flight: Some(in_flight),
        }
    }
}

/// The response future of [`Counted`].
pub(crate) struct CountedFuture<F> {
    inner: Pin<Box<F>>,
    in_flight: Option<InFlight>,
}

impl<F, B> Future for CountedFuture<F>
where
    F: Future<Output = Result<Response<B>, Infallible>>,
{
    type Output = Result<Response<Served<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Ok(response) = std::task::ready!(this.inner.as_mut().poll(cx));
        let in_flight = this.in_flight.take();
        Poll::Ready(Ok(response.map(|body| Served {
            body: SendWatch::new(body),
            in_flight,
        })))
    }
}

/// A response body, counted in flight until it is dropped.
pub(crate) struct Served<B> {
    body: SendWatch<B>,
    in_flight: Option<InFlight>,
}

impl<B: Body + Unpin> Body for Served<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        // A full round of frames waits for the connection's write first
        // (see `coalesce`); HTTP/1 connections never gather.
        let round = this.in_flight.as_ref().map(InFlight::round);
        let admission = round.map_or(Admission::Now, |round| round.admit(cx));
        if admission == Admission::Wait {
            return Poll::Pending;
        }
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if admission == Admission::Passed
            && polled.is_pending()
            && let Some(round) = round
        {
            round.pass_on();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
