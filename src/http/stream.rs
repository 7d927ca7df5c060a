//! How the edge frames a stream on the wire: Server-Sent Events, NDJSON or
//! plain text, chosen by the request's `Accept` header, and the keep-alive
//! comments of idle event streams.
//!
//! Frames are written straight into [`Bytes`] (`data: {json}\n\n`) rather
//! than through axum's `sse::Event` builder: the per-chunk path stays one
//! serialisation and one allocation, the framing is byte-exact by
//! construction, and the keep-alive check costs one clock read per frame
//! instead of a timer reset. Compact JSON never contains a raw newline, so
//! one `data:` line always holds one whole JSON document.
//!
//! The response body *pulls* the frames: when the client goes away, hyper
//! drops the body, which drops the stream and the work behind it. Frames
//! that are ready together are handed to hyper as one buffer ([`Coalesce`],
//! as tonic does for gRPC messages): hyper's cost is per body frame, not
//! per byte, and a fast stream would otherwise pay it for every chunk. A
//! frame is never held back waiting for the next one.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    http::{HeaderMap, HeaderValue, Uri, header},
    response::{IntoResponse, Response},
};
use bytes::BytesMut;
use futures::{Stream, StreamExt as _, stream::Peekable};
use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, Sleep};

use super::json::query;
use crate::error::{Error, FieldViolation};

/// The SSE comment sent on an idle stream.
pub(crate) const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// The last event of an OpenAI chat stream.
pub(crate) const DONE: &[u8] = b"data: [DONE]\n\n";

/// How a client asked for a stream to be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `text/event-stream`: one `data:` event per item (the default).
    EventStream,
    /// `application/x-ndjson`: one JSON document per line.
    Ndjson,
    /// `text/plain`: only the generated text (chat only).
    Text,
}

impl Framing {
    /// The framing the `Accept` header asks for: the first of its media
    /// types that the edge can produce, in the order the client listed them
    /// (quality values are not weighed); server-sent events otherwise.
    /// `text/plain` counts only where `text_allowed`.
    pub(crate) fn negotiate(headers: &HeaderMap, text_allowed: bool) -> Self {
        let accept = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','));
        for range in accept {
            let essence = range.split(';').next().unwrap_or_default().trim();
            if essence.eq_ignore_ascii_case("text/event-stream") {
                return Framing::EventStream;
            }
            if essence.eq_ignore_ascii_case("application/x-ndjson")
                || essence.eq_ignore_ascii_case("application/jsonl")
            {
                return Framing::Ndjson;
            }
            if text_allowed && essence.eq_ignore_ascii_case("text/plain") {
                return Framing::Text;
            }
        }
        Framing::EventStream
    }

    fn content_type(self) -> &'static str {
        match self {
            Framing::EventStream => "text/event-stream",
            Framing::Ndjson => "application/x-ndjson",
            Framing::Text => "text/plain; charset=utf-8",
        }
    }
}

/// A `data:` event holding `value` as JSON.
pub(crate) fn sse_data(value: &impl Serialize) -> Bytes {
    let mut frame = b"data: ".to_vec();
    write_json(&mut frame, value);
    frame.extend_from_slice(b"\n\n");
    frame.into()
}

/// A `data:` event with an `id:` (a sequence to resume after), holding
/// `value` as JSON.
pub(crate) fn sse_data_with_id(id: u64, value: &impl Serialize) -> Bytes {
    let mut frame = format!("id: {id}\ndata: ").into_bytes();
    write_json(&mut frame, value);
    frame.extend_from_slice(b"\n\n");
    frame.into()
}

/// A named event with an id, holding `value` as JSON.
pub(crate) fn sse_event(event: &str, id: u64, value: &impl Serialize) -> Bytes {
    let mut frame = format!("event: {event}\nid: {id}\ndata: ").into_bytes();
    write_json(&mut frame, value);
    frame.extend_from_slice(b"\n\n");
    frame.into()
}

/// `value` as one NDJSON line.
pub(crate) fn ndjson_line(value: &impl Serialize) -> Bytes {
    let mut line = Vec::new();
    write_json(&mut line, value);
    line.push(b'\n');
    line.into()
}

fn write_json(out: &mut Vec<u8>, value: &impl Serialize) {
    if serde_json::to_writer(&mut *out, value).is_err() {
        // Only a map with non-string keys can fail, and the edge sends none.
        out.extend_from_slice(b"null");
    }
}

/// `?after_sequence=` of a resumable stream.
#[derive(Debug, Default, Deserialize)]
struct ResumeQuery {
    #[serde(default)]
    after_sequence: u64,
}

/// Where a resumable event stream (a task's events, a chat stream) starts:
/// after `Last-Event-ID` (an `EventSource` reconnecting; it wins) or else
/// `?after_sequence=`; 0 for the first event.
pub(crate) fn resume_point(headers: &HeaderMap, uri: &Uri) -> crate::Result<u64> {
    if let Some(last) = headers.get("last-event-id") {
        let last = last.to_str().ok().map(str::trim).unwrap_or("x");
        if last.is_empty() {
            return Ok(0);
        }
        return last.parse().map_err(|_| {
            Error::InvalidArgument(vec![FieldViolation::new(
                "after_sequence",
                "Last-Event-ID must be the `id:` of an event of this stream (a sequence)",
            )])
        });
    }
    query::<ResumeQuery>(uri).map(|q| q.after_sequence)
}

/// One frame of a response body; an error aborts the body, so the client
/// sees an incomplete response (how a text stream reports a failure).
pub(crate) type Frame = Result<Bytes, std::io::Error>;

/// A streaming response of `frames` framed as `framing`; event streams get
/// a keep-alive comment after each `keep_alive` without a frame.
pub(crate) fn streaming_response(
    framing: Framing,
    frames: impl Stream<Item = Frame> + Send + 'static,
    keep_alive: Option<Duration>,
) -> Response {
    let frames = Coalesce::new(frames);
    let body = match (framing, keep_alive) {
        (Framing::EventStream, Some(interval)) if !interval.is_zero() => {
            Body::from_stream(KeepAlive::new(frames, interval))
        }
        _ => Body::from_stream(frames),
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(framing.content_type()),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx-style proxies not to hold the stream back in a buffer.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// A call's items whose first one was looked at before the response began.
pub(crate) type Looked<S> = Pin<Box<Peekable<S>>>;

/// How long a streaming response waits for its first item before it sends
/// its headers anyway, when keep-alives are off.
const FIRST_ITEM_PATIENCE: Duration = Duration::from_secs(15);

/// Waits for the first of `items` before the response begins, so that a
/// call failing before its first item (an upstream that is rate limited or
/// unreachable) is answered with its own status (429 with `Retry-After`,
/// 502, ...) rather than with a 200 stream holding only the error.
///
/// It waits at most `keep_alive` (or [`FIRST_ITEM_PATIENCE`]): a model that
/// takes longer to start gets its headers and keep-alive comments then,
/// and a later failure is a last event, as it is after the first item.
pub(crate) async fn unless_failed_first<S, T>(
    items: S,
    keep_alive: Option<Duration>,
) -> Result<Looked<S>, Error>
where
    S: Stream<Item = crate::Result<T>>,
{
    let mut items = Box::pin(items.peekable());
    let patience = keep_alive.unwrap_or(FIRST_ITEM_PATIENCE);
    // `peek` keeps what it read in `items`, so giving up on it loses nothing.
    let first = tokio::time::timeout(patience, items.as_mut().peek()).await;
    if matches!(first, Ok(Some(Err(_))))
        && let Some(Err(error)) = items.next().await
    {
        return Err(error);
    }
    Ok(items)
}

pin_project! {
    /// The frames of a call's items: `frame` makes one of each item, and of
    /// the error that ends the stream early (after which nothing follows); a
    /// normal end is followed by `end`, when there is one.
    pub(crate) struct Frames<S, F> {
        #[pin]
        items: Option<S>,
        frame: F,
        end: Option<Bytes>,
    }
}

impl<S, F> Frames<S, F> {
    pub(crate) fn new(items: S, frame: F, end: Option<Bytes>) -> Self {
        Self {
            items: Some(items),
            frame,
            end,
        }
    }
}

impl<S, T, F> Stream for Frames<S, F>
where
    S: Stream<Item = crate::Result<T>>,
    F: FnMut(crate::Result<T>) -> Frame,
{
    type Item = Frame;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        let mut this = self.project();
        let Some(items) = this.items.as_mut().as_pin_mut() else {
            return Poll::Ready(None);
        };
        match std::task::ready!(items.poll_next(cx)) {
            Some(Ok(item)) => Poll::Ready(Some((this.frame)(Ok(item)))),
            Some(Err(error)) => {
                this.items.set(None);
                *this.end = None;
                Poll::Ready(Some((this.frame)(Err(error))))
            }
            None => {
                this.items.set(None);
                Poll::Ready(this.end.take().map(Ok))
            }
        }
    }
}

/// The most bytes [`Coalesce`] joins into one body frame (tonic's yield
/// threshold is 32 KiB; a smaller buffer keeps the copy in cache).
const COALESCE_BYTES: usize = 16 * 1024;

pin_project! {
    /// Joins the frames that `frames` has ready at once (up to
    /// [`COALESCE_BYTES`]) into one. An error or the end that follows ready
    /// frames is kept for the next poll, so the frames before it go out
    /// whole and the body still ends with it.
    pub(crate) struct Coalesce<S> {
        #[pin]
        frames: S,
        // What ended a batch early: `Some(None)` is the end of the stream.
        held: Option<Option<std::io::Error>>,
    }
}

impl<S> Coalesce<S> {
    pub(crate) fn new(frames: S) -> Self {
        Self { frames, held: None }
    }
}

impl<S: Stream<Item = Frame>> Stream for Coalesce<S> {
    type Item = Frame;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        let mut this = self.project();
        if let Some(held) = this.held.take() {
            // Once the end is held, it stays: nothing is polled after it.
            if held.is_none() {
                *this.held = Some(None);
            }
            return Poll::Ready(held.map(Err));
        }
        let first = match std::task::ready!(this.frames.as_mut().poll_next(cx)) {
            Some(Ok(first)) => first,
            other => return Poll::Ready(other),
        };
        let mut batch: Option<BytesMut> = None;
        while batch.as_ref().map_or(first.len(), BytesMut::len) < COALESCE_BYTES {
            let next = match this.frames.as_mut().poll_next(cx) {
                Poll::Pending => break,
                Poll::Ready(Some(Ok(next))) => next,
                Poll::Ready(Some(Err(error))) => {
                    *this.held = Some(Some(error));
                    break;
                }
                Poll::Ready(None) => {
                    *this.held = Some(None);
                    break;
                }
            };
            batch
                .get_or_insert_with(|| {
                    let mut joined = BytesMut::with_capacity(COALESCE_BYTES);
                    joined.extend_from_slice(&first);
                    joined
                })
                .extend_from_slice(&next);
        }
        Poll::Ready(Some(Ok(batch.map_or(first, BytesMut::freeze))))
    }
}

pin_project! {
    /// Inserts [`KEEP_ALIVE`] whenever `frames` has been idle for `interval`.
    ///
    /// The timer is only polled while the inner stream is pending; a frame
    /// just records the time, and the timer, when it fires early, is moved
    /// to the end of the current idle interval instead of emitting.
    pub(crate) struct KeepAlive<S> {
        #[pin]
        frames: S,
        #[pin]
        timer: Sleep,
        interval: Duration,
        last_frame: Instant,
    }
}

impl<S> KeepAlive<S> {
    pub(crate) fn new(frames: S, interval: Duration) -> Self {
        let now = Instant::now();
        Self {
            frames,
            timer: tokio::time::sleep_until(now + interval),
            interval,
            last_frame: now,
        }
    }
}

impl<S: Stream<Item = Frame>> Stream for KeepAlive<S> {
    type Item = Frame;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.frames.poll_next(cx) {
            if frame.is_some() {
                *this.last_frame = Instant::now();
            }
            return Poll::Ready(frame);
        }
        loop {
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = *this.last_frame + *this.interval;
            let now = Instant::now();
            if now >= due {
                *this.last_frame = now;
                this.timer.as_mut().reset(now + *this.interval);
                return Poll::Ready(Some(Ok(Bytes::from_static(KEEP_ALIVE))));
            }
            this.timer.as_mut().reset(due);
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn accept(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn accept_picks_the_first_framing_the_edge_produces() {
        assert_eq!(
            Framing::negotiate(&HeaderMap::new(), true),
            Framing::EventStream
        );
        assert_eq!(
            Framing::negotiate(&accept("application/x-ndjson"), true),
            Framing::Ndjson
        );
        assert_eq!(
            Framing::negotiate(&accept("text/plain;q=0.9, */*"), true),
            Framing::Text
        );
        assert_eq!(
            Framing::negotiate(&accept("text/plain"), false),
            Framing::EventStream
        );
        assert_eq!(
            Framing::negotiate(&accept("application/json, text/event-stream"), true),
            Framing::EventStream
        );
    }

    #[test]
    fn frames_are_byte_exact() {
        let value = serde_json::json!({"a": "line\nbreak"});
        assert_eq!(&sse_data(&value)[..], b"data: {\"a\":\"line\\nbreak\"}\n\n");
        assert_eq!(
            &sse_event("running", 7, &value)[..],
            b"event: running\nid: 7\ndata: {\"a\":\"line\\nbreak\"}\n\n"
        );
        assert_eq!(&ndjson_line(&value)[..], b"{\"a\":\"line\\nbreak\"}\n");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_streams_get_keep_alive_comments_and_busy_ones_none() {
        let (sender, receiver) = futures::channel::mpsc::unbounded::<Frame>();
        let mut stream = Box::pin(KeepAlive::new(receiver, Duration::from_secs(15)));
        let mut next = async || stream.next().await.map(|f| f.expect("frame"));
        sender
            .unbounded_send(Ok(Bytes::from_static(b"a")))
            .expect("send");
        assert_eq!(next().await.as_deref(), Some(&b"a"[..]));
        let started = Instant::now();
        assert_eq!(next().await.as_deref(), Some(KEEP_ALIVE));
        assert_eq!(started.elapsed(), Duration::from_secs(15));
        tokio::time::advance(Duration::from_secs(10)).await;
        sender
            .unbounded_send(Ok(Bytes::from_static(b"b")))
            .expect("send");
        assert_eq!(next().await.as_deref(), Some(&b"b"[..]));
        let idle_from = Instant::now();
        assert_eq!(next().await.as_deref(), Some(KEEP_ALIVE));
        assert_eq!(idle_from.elapsed(), Duration::from_secs(15));
        drop(sender);
        assert!(next().await.is_none());
    }

    #[tokio::test]
    async fn frames_end_with_the_end_frame_or_after_the_error() {
        let frame = |item: crate::Result<u8>| -> Frame {
            Ok(match item {
                Ok(n) => Bytes::from(vec![n]),
                Err(_) => Bytes::from_static(b"E"),
            })
        };
        let end = Some(Bytes::from_static(b"."));
        let ok = futures::stream::iter([Ok(1), Ok(2)]);
        let frames: Vec<_> = Frames::new(ok, frame, end.clone())
            .map(|f| f.expect("frame"))
            .collect()
            .await;
        assert_eq!(frames, [&[1u8][..], &[2], b"."]);
        let failing =
            futures::stream::iter([Ok(1), Err(crate::Error::Internal("x".into())), Ok(3)]);
        let frames: Vec<_> = Frames::new(failing, frame, end)
            .map(|f| f.expect("frame"))
            .collect()
            .await;
        assert_eq!(frames, [&[1u8][..], b"E"]);
    }

    #[tokio::test]
    async fn ready_frames_go_out_together_and_an_error_after_them() {
        let frames = futures::stream::iter([
            Ok(Bytes::from_static(b"a")),
            Ok(Bytes::from_static(b"b")),
            Err(std::io::Error::other("boom")),
            Ok(Bytes::from_static(b"never")),
        ]);
        let mut coalesced = Box::pin(Coalesce::new(frames));
        assert_eq!(
            coalesced.next().await.map(|f| f.ok()),
            Some(Some(Bytes::from_static(b"ab")))
        );
        assert!(matches!(coalesced.next().await, Some(Err(_))));
        // The stream goes on after an error only if the inner one does.
        assert_eq!(
            coalesced.next().await.map(|f| f.ok()),
            Some(Some(Bytes::from_static(b"never")))
        );

        let ended =
            futures::stream::iter([Ok(Bytes::from_static(b"a")), Ok(Bytes::from_static(b"b"))]);
        let all: Vec<_> = Coalesce::new(ended)
            .map(|f| f.expect("frame"))
            .collect()
            .await;
        assert_eq!(all, [Bytes::from_static(b"ab")]);
    }

    #[tokio::test]
    async fn a_frame_is_not_held_back_for_the_next_one() {
        let (sender, receiver) = futures::channel::mpsc::unbounded::<Frame>();
        let mut coalesced = Box::pin(Coalesce::new(receiver));
        sender
            .unbounded_send(Ok(Bytes::from_static(b"a")))
            .expect("send");
        assert_eq!(
            coalesced.next().await.map(|f| f.ok()),
            Some(Some(Bytes::from_static(b"a")))
        );
        sender
            .unbounded_send(Ok(Bytes::from_static(b"b")))
            .expect("send");
        drop(sender);
        assert_eq!(
            coalesced.next().await.map(|f| f.ok()),
            Some(Some(Bytes::from_static(b"b")))
        );
        assert!(coalesced.next().await.is_none());
        assert!(coalesced.next().await.is_none());
    }

    #[tokio::test]
    async fn a_batch_stops_near_the_coalescing_limit() {
        let big = Bytes::from(vec![b'x'; COALESCE_BYTES / 2 + 1]);
        let frames = futures::stream::iter([Ok(big.clone()), Ok(big.clone()), Ok(big.clone())]);
        let sizes: Vec<_> = Coalesce::new(frames)
            .map(|f| f.expect("frame").len())
            .collect()
            .await;
        assert_eq!(sizes, [2 * big.len(), big.len()]);
    }
}
