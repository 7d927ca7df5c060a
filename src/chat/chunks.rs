//! Shapes generation events into the chunks of the contract.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use futures::Stream;

use crate::{
    error::Result,
    llm::{FinishReason, GenerationEvent, GenerationStream, ToolCallDelta, Usage},
};

/// One chunk of a chat completion, before it meets the wire.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum ChatChunk {
    /// Text for one choice.
    Choice {
        /// Choice index.
        index: u32,
        /// True on the first chunk of the choice (it carries the role).
        first: bool,
        /// The text (may be empty on the last chunk).
        content: String,
        /// Reasoning text, kept apart from `content` (usually empty).
        reasoning: String,
        /// Refusal text (usually empty).
        refusal: String,
        /// Pieces of tool calls (usually none).
        tool_calls: Vec<ToolCallDelta>,
        /// Set on the last chunk of the choice.
        finish_reason: Option<FinishReason>,
    },
    /// The usage chunk, after every choice finished.
    Usage(Usage),
}

/// Turns a backend's events into chunks: marks the first chunk of each
/// choice, puts the finish reason on its own closing chunk, and keeps the
/// usage chunk only when the client asked for it.
pub(crate) fn chat_chunks(events: GenerationStream, include_usage: bool) -> ChatChunks {
    ChatChunks {
        events,
        include_usage,
        started: 0,
    }
}

/// The stream of [`chat_chunks`]. A named type rather than a `filter_map`
/// with a closure, so that an edge can hold it (and its own conversion to
/// the wire) in a response stream without boxing it again.
pub(crate) struct ChatChunks {
    events: GenerationStream,
    include_usage: bool,
    /// Bit i: choice i has sent its first chunk.
    started: u64,
}

impl Stream for ChatChunks {
    type Item = Result<ChatChunk>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let Some(event) = ready!(this.events.as_mut().poll_next(cx)) else {
                return Poll::Ready(None);
            };
            if let Some(chunk) = to_chunk(&mut this.started, this.include_usage, event) {
                return Poll::Ready(Some(chunk));
            }
        }
    }
}

/// The chunk of an event (none for the usage event unless asked for).
fn to_chunk(
    started: &mut u64,
    include_usage: bool,
    event: Result<GenerationEvent>,
) -> Option<Result<ChatChunk>> {
    let (choice, delta) = match event {
        Err(e) => return Some(Err(e)),
        Ok(GenerationEvent::Usage(usage)) => {
            return include_usage.then_some(Ok(ChatChunk::Usage(usage)));
        }
        Ok(GenerationEvent::Delta { choice, text }) => (choice, Delta::Content(text)),
        Ok(GenerationEvent::Reasoning { choice, text }) => (choice, Delta::Reasoning(text)),
        Ok(GenerationEvent::Refusal { choice, text }) => (choice, Delta::Refusal(text)),
        Ok(GenerationEvent::ToolCall { choice, call }) => (choice, Delta::ToolCall(call)),
        Ok(GenerationEvent::Finished { choice, reason }) => (choice, Delta::Finished(reason)),
    };
    Some(Ok(choice_chunk(started, choice, delta)))
}

/// What one generation event adds to a choice.
enum Delta {
    Content(String),
    Reasoning(String),
    Refusal(String),
    ToolCall(ToolCallDelta),
    Finished(FinishReason),
}

fn choice_chunk(started: &mut u64, index: u32, delta: Delta) -> ChatChunk {
    let bit = 1u64 << (index % 64);
    let first = *started & bit == 0;
    *started |= bit;
    let (mut content, mut reasoning, mut refusal) = (String::new(), String::new(), String::new());
    let mut tool_calls = Vec::new();
    let mut finish_reason = None;
    match delta {
        Delta::Content(text) => content = text,
        Delta::Reasoning(text) => reasoning = text,
        Delta::Refusal(text) => refusal = text,
        Delta::ToolCall(call) => tool_calls.push(call),
        Delta::Finished(reason) => finish_reason = Some(reason),
    }
    ChatChunk::Choice {
        index,
        first,
        content,
        reasoning,
        refusal,
        tool_calls,
        finish_reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{StreamExt as _, stream};

    fn delta(choice: u32, text: &str) -> Result<GenerationEvent> {
        Ok(GenerationEvent::Delta {
            choice,
            text: text.into(),
        })
    }

    #[tokio::test]
    async fn role_on_first_chunk_and_finish_on_last() {
        let events = stream::iter(vec![
            delta(0, "a"),
            delta(1, "b"),
            delta(0, "c"),
            Ok(GenerationEvent::Finished {
                choice: 1,
                reason: FinishReason::Stop,
            }),
            Ok(GenerationEvent::Usage(Usage::default())),
        ])
        .boxed();
        let chunks: Vec<_> = tokio_stream::StreamExt::collect::<Vec<_>>(chat_chunks(events, false))
            .await
            .into_iter()
            .map(|c| c.expect("ok"))
            .collect();
        let firsts: Vec<_> = chunks
            .into_iter()
            .map(|c| match c {
                ChatChunk::Choice { index, first, .. } => (index, first),
                ChatChunk::Usage(_) => panic!("usage not asked for"),
            })
            .collect();
        assert_eq!(firsts, [(0, true), (1, true), (0, false), (1, false)]);
    }
}
