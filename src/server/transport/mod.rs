//! The connection layer under the services: the server's own accept loop
//! over hyper, because what keeps one client from exhausting the server
//! lives at this level and tonic's built-in server does not expose it.
//!
//! Per connection: an advertised MAX_CONCURRENT_STREAMS, a small per-stream
//! send buffer, HTTP/2 keepalive pings that close dead peers, limits on the
//! streams a client may reset or make the server reset (rapid reset,
//! MadeYouReset), a handshake and an idle timeout, and writes gathered
//! across the streams of an HTTP/2 connection ([`coalesce`]). Per stream: a
//! send timeout that ends a response its client has stopped reading. Per
//! server: a cap on connections and a backoff when file descriptors run
//! out.
//!
//! Together they bound what a client can make the server hold: a response
//! never buffers more than [`STREAM_SEND_BUFFER`] in the HTTP/2 layer plus
//! one encoded batch of messages, whatever windows the client grants.

mod accept;
mod coalesce;
pub(crate) mod codec;
mod connection;
mod load;
mod stall;
pub(crate) mod tls;

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::{rt::TokioTimer, server::conn::auto};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tower::Service;

use self::{load::Load, stall::WatchingExecutor, tls::Tls};
use super::Shutdown;
use tokio_rustls::TlsAcceptor;

/// Bytes of response data one HTTP/2 stream may have queued for sending
/// before the service is asked for more (hyper's default is 400 KiB).
///
/// The largest that keeps a never-reading stream under the 64 KiB that
/// `tests/stalled_clients.rs` allows (about 53 KB with it; 32 KiB held
/// 79 KB). 8 KiB held 41 KB, but a fast stream's task then waited for the
/// connection's writes after every batch: 16 KiB streamed one fast stream
/// 10% faster (3.02 M against 2.73 M chunks/s, 7 interleaved rounds).
pub(crate) const STREAM_SEND_BUFFER: usize = 16 * 1024;

/// Streams the server makes its peer reset (protocol errors it answers
/// with RST_STREAM) before it ends the connection with GOAWAY: the
/// MadeYouReset mitigation. hyper's own default; tonic turns it off.
pub(crate) const MAX_LOCAL_RESETS: usize = 1024;

/// Streams a client may open and reset before the server accepted them
/// (the HTTP/2 rapid-reset mitigation).
pub(crate) const MAX_PENDING_RESETS: usize = 20;

/// Largest HTTP/1 read or write buffer of one connection.
const HTTP1_BUFFER: usize = 64 * 1024;

/// Limits of the connection layer (from the command line).
#[derive(Debug, Clone)]
pub(crate) struct TransportLimits {
    /// Connections open at once; beyond it new ones are closed.
    pub max_connections: usize,
    /// The advertised SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_streams_per_connection: u32,
    /// Most streaming calls one connection may have open at once (its
    /// share of `--max-active-streams`); beyond it RESOURCE_EXHAUSTED.
    pub max_active_streams_per_connection: usize,
    /// Time a new connection has to send its preface.
    pub handshake_timeout: Duration,
    /// A connection without requests for this long is closed.
    pub idle_timeout: Duration,
    /// Interval of HTTP/2 keepalive pings.
    pub keepalive_interval: Duration,
    /// Time a keepalive ping has to be answered before the connection is
    /// closed.
    pub keepalive_timeout: Duration,
    /// A response whose client has read nothing for this long is ended.
    pub send_timeout: Duration,
}

/// Which HTTP versions a port speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocols {
    /// HTTP/2 only, with prior knowledge (the gRPC port).
    Http2,
    /// HTTP/1.1 and HTTP/2 (h2c), told apart by the preface.
    Http1AndHttp2,
}

/// What every connection of a port shares.
struct Shared {
    builder: auto::Builder<WatchingExecutor>,
    protocols: Protocols,
    limits: TransportLimits,
    shutdown: Shutdown,
    /// Requests in flight on every connection of every port.
    load: Load,
    /// Cancelled when the server stops: every connection closes at once.
    closed: CancellationToken,
    /// The port's TLS acceptor, when TLS is on.
    tls: Option<TlsAcceptor>,
}

/// The connection layer of a server: its ports share the connection cap,
/// the count of requests in flight and the signal that closes everything.
#[derive(Debug, Clone)]
pub(crate) struct Transport {
    limits: TransportLimits,
    tls: Option<Tls>,
    shutdown: Shutdown,
    slots: Arc<Semaphore>,
    load: Load,
    closed: CancellationToken,
}

impl Transport {
    /// A connection layer with `limits` that drains on `shutdown`, serving
    /// TLS on every port when `tls` is set.
    pub(crate) fn new(limits: TransportLimits, tls: Option<Tls>, shutdown: Shutdown) -> Self {
        Self {
            tls,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            shutdown,
            load: Load::default(),
            closed: CancellationToken::new(),
        }
    }

    /// Serves `service` on `listener` in the background until [`close`].
    ///
    /// [`close`]: Transport::close
    pub(crate) fn serve<S, B>(
        &self,
        listener: TcpListener,
        service: S,
        protocols: Protocols,
    ) -> JoinHandle<()>
    where
        S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let shared = Arc::new(Shared {
            builder: self.builder(protocols),
            protocols,
            limits: self.limits.clone(),
            shutdown: self.shutdown.clone(),
            load: self.load.clone(),
            closed: self.closed.clone(),
            tls: self.tls.as_ref().map(|tls| tls.acceptor(protocols)),
        });
        let slots = self.slots.clone();
        let closed = self.closed.clone();
        tokio::spawn(accept::accept_loop(
            listener,
            slots,
            closed,
            move |stream, slot| {
                tokio::spawn(connection::serve(
                    stream,
                    service.clone(),
                    shared.clone(),
                    slot,
                ));
            },
        ))
    }

    /// Resolves when no request is in flight on any connection.
    pub(crate) async fn idle(&self) {
        self.load.idle().await;
    }

    /// Stops accepting and closes every connection at once.
    pub(crate) fn close(&self) {
        self.closed.cancel();
    }

    fn builder(&self, protocols: Protocols) -> auto::Builder<WatchingExecutor> {
        let executor = WatchingExecutor {
            send_timeout: self.limits.send_timeout,
        };
        let mut builder = auto::Builder::new(executor);
        if protocols == Protocols::Http2 {
            builder = builder.http2_only();
        }
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.handshake_timeout)
            .max_buf_size(HTTP1_BUFFER);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.limits.max_streams_per_connection)
            .max_send_buf_size(STREAM_SEND_BUFFER)
            .keep_alive_interval(self.limits.keepalive_interval)
            .keep_alive_timeout(self.limits.keepalive_timeout)
            .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
            .max_local_error_reset_streams(MAX_LOCAL_RESETS);
        builder
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}
