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
///
/// Its JSON (what a Redis-backed resumable stream stores) is the record
/// of [`record`]: the same for every version of the server, so replicas of
/// two versions can share streams during an upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChatChunk {
    /// What one chunk adds to a choice.
    Choice {
        /// Choice index.
        index: u32,
        /// True on the first chunk of the choice (it carries the role).
        first: bool,
        /// What it adds.
        delta: ChoiceDelta,
    },
    /// The usage chunk, after every choice finished.
    Usage(Usage),
}

/// What a chunk adds to its choice: one thing, as a backend's events come
/// one thing at a time. An enum rather than a field for each (three texts,
/// a list of calls and a finish reason, most of them empty on every chunk):
/// a chunk is moved through every layer of a response, once a token, and
/// this one is 40 bytes where the fields were 104.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChoiceDelta {
    /// More of the choice's text (empty only on a choice with no text).
    Content(String),
    /// More of its reasoning, kept apart from the text.
    Reasoning(String),
    /// More of its refusal message.
    Refusal(String),
    /// A piece of a tool call (boxed: rare, and three times the others).
    ToolCall(Box<ToolCallDelta>),
    /// The choice ends, for this reason.
    Finished(FinishReason),
}

impl ChoiceDelta {
    /// The text it adds (empty unless it is text).
    pub(crate) fn content(&self) -> &str {
        match self {
            Self::Content(text) => text,
            _ => "",
        }
    }

    /// The reasoning it adds (empty unless it is reasoning).
    pub(crate) fn reasoning(&self) -> &str {
        match self {
            Self::Reasoning(text) => text,
            _ => "",
        }
    }

    /// The refusal it adds (empty unless it is a refusal).
    pub(crate) fn refusal(&self) -> &str {
        match self {
            Self::Refusal(text) => text,
            _ => "",
        }
    }

    /// The tool-call pieces it adds: none, or one.
    pub(crate) fn tool_calls(&self) -> &[ToolCallDelta] {
        match self {
            Self::ToolCall(call) => std::slice::from_ref(&**call),
            _ => &[],
        }
    }

    /// Why the choice ended, on its last chunk.
    pub(crate) fn finish_reason(&self) -> Option<FinishReason> {
        match self {
            Self::Finished(reason) => Some(*reason),
            _ => None,
        }
    }
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

    // Inlined into the edge's conversion, the chunk need not be written to
    // memory and read back between the two (see `grpc::chat::WireChunks`).
    #[inline]
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
#[inline]
fn to_chunk(
    started: &mut u64,
    include_usage: bool,
    event: Result<GenerationEvent>,
) -> Option<Result<ChatChunk>> {
    let (index, delta) = match event {
        Err(e) => return Some(Err(e)),
        Ok(GenerationEvent::Usage(usage)) => {
            return include_usage.then_some(Ok(ChatChunk::Usage(usage)));
        }
        Ok(GenerationEvent::Delta { choice, text }) => (choice, ChoiceDelta::Content(text)),
        Ok(GenerationEvent::Reasoning { choice, text }) => (choice, ChoiceDelta::Reasoning(text)),
        Ok(GenerationEvent::Refusal { choice, text }) => (choice, ChoiceDelta::Refusal(text)),
        Ok(GenerationEvent::ToolCall { choice, call }) => (choice, ChoiceDelta::ToolCall(call)),
        Ok(GenerationEvent::Finished { choice, reason }) => (choice, ChoiceDelta::Finished(reason)),
    };
    let bit = 1u64 << (index % 64);
    let first = *started & bit == 0;
    *started |= bit;
    Some(Ok(ChatChunk::Choice {
        index,
        first,
        delta,
    }))
}

mod record {
    //! The JSON of a [`ChatChunk`], as stored by Redis-backed resumable
    //! streams since they exist: `{"Choice":{"index","first","content",
    //! "reasoning","refusal","tool_calls","finish_reason"}}` or
    //! `{"Usage":{...}}`.
    //!
    //! A stored chunk with more than one of those set (no version of the
    //! server wrote one) reads as the first of: finish reason, tool call,
    //! reasoning, refusal, text.

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{ChatChunk, ChoiceDelta};
    use crate::llm::{FinishReason, ToolCallDelta, Usage};

    #[derive(Serialize)]
    enum Written<'a> {
        Choice {
            index: u32,
            first: bool,
            content: &'a str,
            reasoning: &'a str,
            refusal: &'a str,
            tool_calls: &'a [ToolCallDelta],
            finish_reason: Option<FinishReason>,
        },
        Usage(&'a Usage),
    }

    #[derive(Deserialize)]
    enum Read {
        Choice {
            index: u32,
            first: bool,
            content: String,
            reasoning: String,
            refusal: String,
            tool_calls: Vec<ToolCallDelta>,
            finish_reason: Option<FinishReason>,
        },
        Usage(Usage),
    }

    impl Serialize for ChatChunk {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            match self {
                ChatChunk::Choice {
                    index,
                    first,
                    delta,
                } => Written::Choice {
                    index: *index,
                    first: *first,
                    content: delta.content(),
                    reasoning: delta.reasoning(),
                    refusal: delta.refusal(),
                    tool_calls: delta.tool_calls(),
                    finish_reason: delta.finish_reason(),
                },
                ChatChunk::Usage(usage) => Written::Usage(usage),
            }
            .serialize(serializer)
        }
    }

    impl<'de> Deserialize<'de> for ChatChunk {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            Ok(match Read::deserialize(deserializer)? {
                Read::Choice {
                    index,
                    first,
                    content,
                    reasoning,
                    refusal,
                    tool_calls,
                    finish_reason,
                } => {
                    let delta = if let Some(reason) = finish_reason {
                        ChoiceDelta::Finished(reason)
                    } else if let Some(call) = tool_calls.into_iter().next() {
                        ChoiceDelta::ToolCall(Box::new(call))
                    } else if !reasoning.is_empty() {
                        ChoiceDelta::Reasoning(reasoning)
                    } else if !refusal.is_empty() {
                        ChoiceDelta::Refusal(refusal)
                    } else {
                        ChoiceDelta::Content(content)
                    };
                    ChatChunk::Choice {
                        index,
                        first,
                        delta,
                    }
                }
                Read::Usage(usage) => ChatChunk::Usage(usage),
            })
        }
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

    #[test]
    fn chunks_are_stored_as_the_json_every_version_reads() {
        let text = ChatChunk::Choice {
            index: 1,
            first: true,
            delta: ChoiceDelta::Content("Hi".into()),
        };
        let written = r#"{"Choice":{"index":1,"first":true,"content":"Hi","reasoning":"","refusal":"","tool_calls":[],"finish_reason":null}}"#;
        assert_eq!(serde_json::to_string(&text).expect("json"), written);
        let call = ChatChunk::Choice {
            index: 0,
            first: false,
            delta: ChoiceDelta::ToolCall(Box::new(ToolCallDelta {
                index: 2,
                id: "call_1".into(),
                name: "f".into(),
                arguments: "{".into(),
            })),
        };
        let end = ChatChunk::Choice {
            index: 0,
            first: false,
            delta: ChoiceDelta::Finished(FinishReason::Length),
        };
        let usage = ChatChunk::Usage(Usage {
            prompt_tokens: 3,
            completion_tokens: 4,
        });
        let reasoning = ChatChunk::Choice {
            index: 0,
            first: false,
            delta: ChoiceDelta::Reasoning("hmm".into()),
        };
        for chunk in [text, call, end, usage, reasoning] {
            let json = serde_json::to_string(&chunk).expect("json");
            let read: ChatChunk = serde_json::from_str(&json).expect("reads back");
            assert_eq!(read, chunk, "{json}");
        }
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
