//! The client side: one stream of chunks from a gRPC or an SSE server, with
//! the arrival time of every chunk reported to the scenario.
//!
//! Every server gets the same client settings (HTTP/2 window, TCP_NODELAY),
//! so differences in the figures are the servers'.

use std::{net::SocketAddr, time::Duration};

use agentstream::pb;
use bytes_free::{CountingCodec, STREAM_CHAT};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};
use tonic::transport::{Channel, Endpoint};

use crate::{BenchResult, Protocol};

/// Where and how to connect.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Protocol.
    pub protocol: Protocol,
    /// Server address.
    pub addr: SocketAddr,
    /// HTTP/2 stream and connection window (gRPC).
    pub window: u32,
}

/// One connection (gRPC: an HTTP/2 connection that streams share; SSE: an
/// address, each stream opens its own HTTP/1.1 connection as browsers and
/// `httpx` do).
#[derive(Debug, Clone)]
pub enum Conn {
    /// A tonic client on one HTTP/2 connection.
    Grpc(tonic::client::Grpc<Channel>),
    /// The SSE server.
    Sse(SocketAddr),
}

impl Target {
    /// Opens one connection.
    pub async fn connect(&self) -> BenchResult<Conn> {
        match self.protocol {
            Protocol::Grpc => {
                let channel = Endpoint::from_shared(format!("http://{}", self.addr))
                    .map_err(|e| e.to_string())?
                    .tcp_nodelay(true)
                    .initial_stream_window_size(self.window)
                    .initial_connection_window_size(self.window.saturating_mul(4))
                    .connect_timeout(Duration::from_secs(5))
                    .connect()
                    .await
                    .map_err(|e| format!("connect {}: {e}", self.addr))?;
                Ok(Conn::Grpc(tonic::client::Grpc::new(channel)))
            }
            Protocol::Sse => Ok(Conn::Sse(self.addr)),
        }
    }
}

/// The request every server gets: the synthetic model, `max_tokens` tokens.
fn request(max_tokens: u32) -> pb::StreamChatRequest {
    pb::StreamChatRequest {
        messages: vec![pb::ChatMessage {
            role: pb::Role::User as i32,
            content: "benchmark".into(),
            ..Default::default()
        }],
        model: "synthetic".into(),
        max_tokens,
        ..Default::default()
    }
}

impl Conn {
    /// Streams one answer of `max_tokens` tokens; `on_chunk(arrival, bytes)`
    /// is called for every chunk (bytes as framed on the wire: the gRPC
    /// message plus its 5-byte prefix, or the SSE event). Returns the number
    /// of chunks.
    pub async fn stream(
        &self,
        max_tokens: u32,
        mut on_chunk: impl FnMut(Instant, usize),
    ) -> BenchResult<u64> {
        match self {
            Conn::Grpc(client) => {
                let mut client = client.clone();
                client.ready().await.map_err(|e| e.to_string())?;
                let mut stream = client
                    .server_streaming(
                        tonic::Request::new(request(max_tokens)),
                        tonic::codegen::http::uri::PathAndQuery::from_static(STREAM_CHAT),
                        CountingCodec,
                    )
                    .await
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
                    .into_inner();
                let mut chunks = 0;
                while let Some(len) = stream
                    .message()
                    .await
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
                {
                    chunks += 1;
                    on_chunk(Instant::now(), len + 5);
                }
                Ok(chunks)
            }
            Conn::Sse(addr) => sse_stream(*addr, max_tokens, on_chunk).await,
        }
    }
}

/// A gRPC codec that encodes the request with prost but does not decode
/// responses: it only takes each message's length. The client then spends
/// next to nothing per chunk, so it is not what limits the figures (tonic
/// still checks the gRPC framing of every message).
mod bytes_free {
    use prost::Message;
    use tonic::{
        Status,
        codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    };

    use super::pb;

    /// The method every gRPC server under test serves.
    pub const STREAM_CHAT: &str = "/agentstream.v1.ChatService/StreamChat";

    /// Requests in, message lengths out.
    #[derive(Debug, Clone, Copy)]
    pub struct CountingCodec;

    impl Codec for CountingCodec {
        type Encode = pb::StreamChatRequest;
        type Decode = usize;
        type Encoder = Self;
        type Decoder = Self;

        fn encoder(&mut self) -> Self {
            *self
        }

        fn decoder(&mut self) -> Self {
            *self
        }
    }

    impl Encoder for CountingCodec {
        type Item = pb::StreamChatRequest;
        type Error = Status;

        fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            item.encode(dst)
                .map_err(|e| Status::internal(e.to_string()))
        }
    }

    impl Decoder for CountingCodec {
        type Item = usize;
        type Error = Status;

        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<usize>, Status> {
            use prost::bytes::Buf;
            let len = src.remaining();
            src.advance(len);
            Ok(Some(len))
        }
    }
}

/// A minimal SSE client: HTTP/1.1 POST, then it counts `data: {` events in
/// the body until `data: [DONE]` (chunked framing is skipped over, since a
/// chunk-size line never contains `data: `).
async fn sse_stream(
    addr: SocketAddr,
    max_tokens: u32,
    mut on_chunk: impl FnMut(Instant, usize),
) -> BenchResult<u64> {
    let mut socket = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    socket.set_nodelay(true).map_err(|e| e.to_string())?;
    let body = format!(
        r#"{{"model":"synthetic","max_tokens":{max_tokens},"stream":true,"messages":[{{"role":"user","content":"benchmark"}}]}}"#
    );
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\naccept: text/event-stream\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    socket
        .write_all(format!("{head}{body}").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut window: Vec<u8> = Vec::with_capacity(buf.len() + 8);
    let mut in_body = false;
    let mut chunks = 0u64;
    loop {
        let n = socket.read(&mut buf).await.map_err(|e| e.to_string())?;
        let now = Instant::now();
        if n == 0 {
            return Err(format!("connection closed after {chunks} chunks"));
        }
        window.extend_from_slice(&buf[..n]);
        if !in_body {
            let Some(end) = find(&window, b"\r\n\r\n") else {
                continue;
            };
            if !window.starts_with(b"HTTP/1.1 200") {
                let line = String::from_utf8_lossy(&window[..window.len().min(80)]).into_owned();
                return Err(format!("bad response: {line}"));
            }
            window.drain(..end + 4);
            in_body = true;
        }
        let mut events = 0usize;
        let mut done = false;
        let mut at = 0;
        while let Some(found) = find(&window[at..], b"data: ") {
            let start = at + found;
            let Some(&next) = window.get(start + 6) else {
                break;
            };
            if next == b'[' {
                done = true;
                break;
            }
            events += 1;
            at = start + 6;
        }
        if let Some(share) = n.checked_div(events) {
            for _ in 0..events {
                on_chunk(now, share);
            }
            chunks += events as u64;
        }
        if done {
            return Ok(chunks);
        }
        // Keep only what could begin a pattern split by this read.
        let keep = (window.len() - at).min(7);
        window.drain(..window.len() - keep);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
