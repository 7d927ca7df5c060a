//! What a call's span costs an open stream. The log layer keeps a few
//! hundred bytes for every open span, so without a trace exporter a
//! streaming call's span is closed while it streams and reopened, with the
//! same fields, for its closing line. A subscriber that follows the
//! server's `call` spans (installed for this test binary) watches a real
//! server on 127.0.0.1:0 through a tonic client.

mod common;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering::SeqCst},
    },
    time::Duration,
};

use agentstream::pb::StreamChatRequest;
use common::{PATIENCE, TestServer, user};
use futures::StreamExt;
use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
    span,
};
use tracing_subscriber::{
    Layer, filter::filter_fn, layer::Context, prelude::*, registry::LookupSpan,
};

/// What the subscriber saw of the server's `call` spans.
#[derive(Debug, Default)]
struct Calls {
    /// `call` spans open right now.
    open: AtomicI64,
    /// The request ids of the spans closing lines were logged in.
    closing_lines: Mutex<Vec<String>>,
}

/// A `call` span's request id, kept in the span's extensions.
struct RequestId(String);

impl Visit for RequestId {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "request_id" {
            value.clone_into(&mut self.0);
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

struct Following(Arc<Calls>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Following {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "call" {
            return;
        }
        self.0.open.fetch_add(1, SeqCst);
        let mut request_id = RequestId(String::new());
        attrs.record(&mut request_id);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(request_id);
        }
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        if ctx.span(&id).is_some_and(|span| span.name() == "call") {
            self.0.open.fetch_sub(1, SeqCst);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        if span.name() != "call" || event.metadata().fields().field("duration_ms").is_none() {
            return;
        }
        if let Some(RequestId(id)) = span.extensions().get::<RequestId>() {
            self.0.closing_lines.lock().expect("lock").push(id.clone());
        }
    }
}

#[tokio::test]
async fn a_streaming_call_holds_no_open_span_and_still_logs_its_closing_line_in_one() {
    let calls = Arc::new(Calls::default());
    // Like the server's log layer without an exporter, it does not want
    // the spans that only structure traces (the generation's).
    let logged = filter_fn(|meta| !(meta.is_span() && meta.target() == "agentstream::trace"));
    tracing_subscriber::registry()
        .with(Following(calls.clone()).with_filter(logged))
        .init();
    let server = TestServer::start_with(|c| c.mock_token_delay = Duration::from_millis(20)).await;
    let mut request = tonic::Request::new(StreamChatRequest {
        messages: vec![user("go")],
        model: "synthetic".into(),
        max_tokens: 5,
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-request-id", "spans-1".parse().expect("ascii"));
    let mut stream = server
        .chat()
        .stream_chat(request)
        .await
        .expect("call")
        .into_inner();
    stream.next().await.expect("a chunk").expect("ok");
    assert_eq!(
        calls.open.load(SeqCst),
        0,
        "the call's span is open while it streams"
    );
    while let Some(chunk) = tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("the stream ends")
    {
        chunk.expect("ok");
    }
    assert_eq!(
        *calls.closing_lines.lock().expect("lock"),
        ["spans-1"],
        "one closing line, in a span with the call's request id"
    );
    assert_eq!(calls.open.load(SeqCst), 0, "the reopened span was closed");
}
