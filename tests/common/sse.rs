//! Server-sent events as a browser's `EventSource` reads them, parsed off
//! a real HTTP response with the framing checked byte for byte: an `event:`
//! line (exactly when the stream names its events), an optional `id:`
//! line, one `data:` line and a blank line; `: ` comments are keep-alives.

use std::collections::VecDeque;

use futures::{StreamExt, stream::BoxStream};
use reqwest::{StatusCode, header};

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its `event:` name; empty on a stream that does not name events.
    pub name: String,
    /// Its `id:`, when it has one.
    pub id: Option<u64>,
    /// Its `data:` payload.
    pub data: String,
}

impl Event {
    /// An event without a name, as an unnamed stream carries it.
    pub fn unnamed(id: Option<u64>, data: &str) -> Self {
        Self {
            name: String::new(),
            id,
            data: data.into(),
        }
    }

    /// The payload as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).expect("JSON data")
    }
}

/// Parses the complete events off the front of `buffer`; `named` says
/// whether every event must have an `event:` line (or none may).
pub fn take_events(buffer: &mut String, named: bool) -> Vec<Event> {
    let mut events = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        if block.starts_with(": ") {
            continue; // keep-alive comment
        }
        let mut lines: &[&str] = &block.trim_end_matches('\n').split('\n').collect::<Vec<_>>();
        let mut name = String::new();
        if named {
            let (first, rest) = lines.split_first().expect("a line");
            name = first
                .strip_prefix("event: ")
                .expect("event line")
                .to_owned();
            lines = rest;
        }
        let (id, data) = match lines {
            [id, data] => (
                Some(
                    id.strip_prefix("id: ")
                        .expect("id line")
                        .parse()
                        .expect("a sequence"),
                ),
                data,
            ),
            [data] => (None, data),
            other => panic!("unexpected event block {other:?}"),
        };
        let data = data.strip_prefix("data: ").expect("data line").to_owned();
        events.push(Event { name, id, data });
    }
    events
}

/// An open event-stream response, read event by event.
pub struct Events {
    stream: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    named: bool,
    buffer: String,
    ready: VecDeque<Event>,
}

impl Events {
    /// Reads `response`, a `200 text/event-stream` whose events carry no
    /// `event:` line (chat completions).
    pub fn new(response: reqwest::Response) -> Self {
        Self::read(response, false)
    }

    /// Reads `response`, a `200 text/event-stream` whose every event is
    /// named (task and RAG answer streams).
    pub fn named(response: reqwest::Response) -> Self {
        Self::read(response, true)
    }

    fn read(response: reqwest::Response, named: bool) -> Self {
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        Self {
            stream: response.bytes_stream().boxed(),
            named,
            buffer: String::new(),
            ready: VecDeque::new(),
        }
    }

    /// The next event, or `None` at the end of the response.
    pub async fn next(&mut self) -> Option<Event> {
        while self.ready.is_empty() {
            let bytes = self.stream.next().await?.expect("bytes");
            self.buffer
                .push_str(std::str::from_utf8(&bytes).expect("UTF-8"));
            self.ready.extend(take_events(&mut self.buffer, self.named));
        }
        self.ready.pop_front()
    }

    /// The next `n` events, which must come.
    pub async fn take(&mut self, n: usize) -> Vec<Event> {
        let mut events = Vec::new();
        for _ in 0..n {
            events.push(self.next().await.expect("an event"));
        }
        events
    }

    /// The events read until `enough` says so or the response ends.
    pub async fn until(&mut self, enough: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        let mut events = Vec::new();
        while !enough(&events) {
            match self.next().await {
                Some(event) => events.push(event),
                None => break,
            }
        }
        events
    }

    /// Every event left, to the end of the response.
    pub async fn rest(mut self) -> Vec<Event> {
        self.until(|_| false).await
    }
}
