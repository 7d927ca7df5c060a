//! A raw HTTP/2 client (the `h2` crate) for what a well-behaved gRPC client
//! never does: granting huge windows and then not reading its socket,
//! opening connections that never speak, sending frames by hand.

#![allow(dead_code)]

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use bytes::{BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use prost::Message;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

/// The largest HTTP/2 flow-control window.
pub const HUGE_WINDOW: u32 = (1 << 31) - 1;

/// A socket whose reads can be stopped: once paused, the client never
/// reads again (writes still go out).
pub struct PausableIo {
    inner: TcpStream,
    paused: Arc<AtomicBool>,
}

impl AsyncRead for PausableIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.paused.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PausableIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A raw HTTP/2 connection: requests go through `send`; the connection is
/// driven by a background task that ends (`closed`) when the server closes.
pub struct RawClient {
    pub send: SendRequest<Bytes>,
    paused: Arc<AtomicBool>,
    /// What the server advertised as SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_streams: usize,
    pub closed: tokio::task::JoinHandle<Result<(), h2::Error>>,
}

impl RawClient {
    /// Connects with `window` as both the stream and the connection
    /// window, and waits for the server's settings (one PING round trip).
    pub async fn connect(addr: SocketAddr, window: u32) -> Self {
        Self::connect_with_receive_buffer(addr, window, None).await
    }

    /// Like [`RawClient::connect`], with the socket's receive buffer set
    /// (small: the kernel then holds little of what the client leaves
    /// unread).
    pub async fn connect_with_receive_buffer(
        addr: SocketAddr,
        window: u32,
        receive_buffer: Option<u32>,
    ) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if let Some(size) = receive_buffer {
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        let tcp = socket.connect(addr).await.expect("tcp connect");
        let paused = Arc::new(AtomicBool::new(false));
        let io = PausableIo {
            inner: tcp,
            paused: paused.clone(),
        };
        let (send, mut conn) = h2::client::Builder::new()
            .initial_window_size(window)
            .initial_connection_window_size(window)
            .handshake(io)
            .await
            .expect("h2 handshake");
        let mut ping = conn.ping_pong().expect("ping handle");
        // The server's SETTINGS precede its PING ack.
        tokio::select! {
            ended = &mut conn => panic!("connection ended during the handshake: {ended:?}"),
            pong = ping.ping(h2::Ping::opaque()) => { pong.expect("ping"); }
        }
        let max_streams = conn.max_concurrent_send_streams();
        let closed = tokio::spawn(conn);
        let send = send.ready().await.expect("ready");
        Self {
            send,
            paused,
            max_streams,
            closed,
        }
    }

    /// Stops reading the socket for good.
    pub fn stop_reading(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    /// Sends one gRPC call of `path` with `message`; returns the response
    /// future and the request's body stream.
    pub async fn call(
        &mut self,
        path: &str,
        message: &impl Message,
    ) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
        self.call_raw(path, grpc_frame(message)).await
    }

    /// Sends one gRPC call of `path` whose body is `body`, as is.
    pub async fn call_raw(
        &mut self,
        path: &str,
        body: Bytes,
    ) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("http://localhost{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
        self.send = self.send.clone().ready().await.expect("ready");
        let (response, mut stream) = self.send.send_request(request, false).expect("send");
        stream.send_data(body, true).expect("body");
        (response, stream)
    }
}

/// A message in gRPC's length-prefixed framing.
pub fn grpc_frame(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).expect("small message"));
    message.encode(&mut buf).expect("encode");
    buf.freeze()
}
