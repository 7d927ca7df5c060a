//! Memory a client can make the server hold: streams whose client grants
//! the largest HTTP/2 windows and then never reads its socket. Heap bytes
//! are counted by this test binary's allocator (client and server share
//! the process; the client, which reads nothing, holds next to nothing).

mod common;
mod raw_h2;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering::Relaxed},
    time::Duration,
};

use agentstream::pb::StreamChatRequest;
use common::{TestServer, user};
use raw_h2::{HUGE_WINDOW, RawClient};

/// Counts live heap bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
        PEAK.fetch_max(live, Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let live = LIVE.fetch_add(new_size - layout.size(), Relaxed) + new_size - layout.size();
            PEAK.fetch_max(live, Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Never-reading clients, each with a few streams: a server whose writes
/// are blocked stops reading its connection, so each client sends all its
/// requests before it stops reading.
const CLIENTS: usize = 10;
const STREAMS_PER_CLIENT: usize = 20;
const STREAMS: usize = CLIENTS * STREAMS_PER_CLIENT;
const STREAM_CHAT: &str = "/agentstream.v1.ChatService/StreamChat";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_reading_stream_holds_less_than_64_kib() {
    let server = TestServer::start_with(|c| {
        c.mock_token_delay = Duration::ZERO;
        c.send_timeout = Duration::from_secs(10);
    })
    .await;
    let addr = server.server.local_addr();
    let endless = StreamChatRequest {
        messages: vec![user("go")],
        model: "synthetic".into(),
        max_tokens: 200_000,
        ..Default::default()
    };
    // Warm up what every stream shares (lazy statics, pools), then measure.
    let mut warm = RawClient::connect(addr, HUGE_WINDOW).await;
    let short = StreamChatRequest {
        max_tokens: 10,
        ..endless.clone()
    };
    let (response, _body) = warm.call(STREAM_CHAT, &short).await;
    let mut body = response.await.expect("response").into_body();
    while body.data().await.is_some() {}
    drop((body, warm));
    server
        .until("the warm-up ended", |m| m.active_streams == 0)
        .await;

    let baseline = LIVE.load(Relaxed);
    PEAK.store(baseline, Relaxed);
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let mut client =
            RawClient::connect_with_receive_buffer(addr, HUGE_WINDOW, Some(4096)).await;
        let mut calls = Vec::with_capacity(STREAMS_PER_CLIENT);
        for _ in 0..STREAMS_PER_CLIENT {
            calls.push(client.call(STREAM_CHAT, &endless).await);
        }
        client.stop_reading();
        clients.push((client, calls));
    }
    server
        .until("every stream started", |m| {
            m.active_streams == STREAMS as i64
        })
        .await;
    // Each stream generates until its buffers are full, waits, and is
    // ended by the send timeout: the peak is everything they held at once.
    // (The harness's patience is shorter than the send timeout.)
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        while !(server.metrics().active_streams == 0 && server.metrics().live_generations == 0) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(ended.is_ok(), "the send timeout ended every stream");
    let per_stream = PEAK.load(Relaxed).saturating_sub(baseline) / STREAMS;
    eprintln!("peak heap per never-reading stream: {per_stream} bytes");
    assert!(
        per_stream < 64 * 1024,
        "{per_stream} bytes per never-reading stream"
    );
}
