//! Shapes generation events into the chunks of the contract.

use futures::{Stream, StreamExt};

use crate::{
    error::Result,
    llm::{FinishReason, GenerationEvent, GenerationStream, Usage},
};

/// One chunk of a chat completion, before it meets the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatChunk {
    /// Text for one choice.
    Choice {
        /// Choice index.
        index: u32,
        /// True on the first chunk of the choice (it carries the role).
        first: bool,
        /// The text (may be empty on the last chunk).
        content: String,
        /// Set on the last chunk of the choice.
        finish_reason: Option<FinishReason>,
    },
    /// The usage chunk, after every choice finished.
    Usage(Usage),
}

/// Turns a backend's events into chunks: marks the first chunk of each
/// choice, puts the finish reason on its own closing chunk, and keeps the
/// usage chunk only when the client asked for it.
pub fn chat_chunks(
    events: GenerationStream,
    include_usage: bool,
) -> impl Stream<Item = Result<ChatChunk>> + Send {
    let mut started: u64 = 0; // bit i: choice i has sent its first chunk
    events.filter_map(move |event| {
        let chunk = match event {
            Err(e) => Some(Err(e)),
            Ok(GenerationEvent::Usage(usage)) => {
                include_usage.then_some(Ok(ChatChunk::Usage(usage)))
            }
            Ok(GenerationEvent::Delta { choice, text }) => {
                Some(Ok(choice_chunk(&mut started, choice, text, None)))
            }
            Ok(GenerationEvent::Finished { choice, reason }) => Some(Ok(choice_chunk(
                &mut started,
                choice,
                String::new(),
                Some(reason),
            ))),
        };
        std::future::ready(chunk)
    })
}

fn choice_chunk(
    started: &mut u64,
    index: u32,
    content: String,
    finish_reason: Option<FinishReason>,
) -> ChatChunk {
    let bit = 1u64 << (index % 64);
    let first = *started & bit == 0;
    *started |= bit;
    ChatChunk::Choice {
        index,
        first,
        content,
        finish_reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{StreamExt, stream};

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
        let chunks: Vec<_> = chat_chunks(events, false)
            .collect::<Vec<_>>()
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
