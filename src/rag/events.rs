//! The event stream of one StreamAnswer call.
//!
//! The stream is *pulled*, like a chat generation: nothing happens until the
//! response stream asks for the first event. Retrieval runs when the event
//! after `RetrievalStarted` is polled; generation starts after
//! `GenerationStarted` and advances token by token as events are pulled.
//! Dropping the stream (client gone, deadline, drain) drops the backend
//! generation at once. The one piece of work that can outlive it is a search
//! already running on the blocking pool: it is not interruptible, finishes
//! (a few milliseconds) and its result is discarded.

use std::{sync::Arc, time::Instant};

use futures::{Stream, StreamExt};

use super::{
    answer::{extractive_answer, prompt},
    index::{DocumentIndex, RetrievedPassage},
    request::AnswerRequest,
};
use crate::{
    error::Result,
    llm::{Backend, FinishReason, GenerationEvent, GenerationRequest, Usage, mock::MockBackend},
};

/// One event of an answer, in the order they are produced.
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerEvent {
    /// Retrieval began.
    RetrievalStarted {
        /// Passages asked for.
        top_k: u32,
    },
    /// The passages found, best first.
    PassagesRetrieved {
        /// The passages; the answer cites them as `[1]`, `[2]`, ...
        passages: Vec<RetrievedPassage>,
        /// Time spent retrieving.
        retrieval_ms: u32,
    },
    /// Generation began.
    GenerationStarted {
        /// The model writing the answer.
        model: String,
    },
    /// A piece of the answer.
    Content(String),
    /// The answer is complete.
    Done {
        /// Why it ended.
        finish_reason: FinishReason,
        /// Token accounting.
        usage: Usage,
        /// Time spent retrieving.
        retrieval_ms: u32,
        /// Time spent generating.
        generation_ms: u32,
    },
}

/// Who writes the answer.
#[derive(Clone)]
pub enum Writer {
    /// A built-in model: the extractive answer, streamed like a model would.
    Extractive(Arc<MockBackend>),
    /// Any other backend, given a prompt with the numbered passages.
    Model(Arc<dyn Backend>),
}

impl Writer {
    fn generate(
        &self,
        request: &AnswerRequest,
        model: &str,
        passages: &[RetrievedPassage],
    ) -> crate::llm::GenerationStream {
        let generation = GenerationRequest {
            model: model.to_owned(),
            messages: prompt(&request.question, passages),
            max_tokens: request.max_tokens,
            temperature: None,
            stop: Vec::new(),
            n: 1,
            ..GenerationRequest::default()
        };
        match self {
            Writer::Extractive(mock) => {
                mock.stream_text(&extractive_answer(&request.question, passages), generation)
            }
            Writer::Model(backend) => backend.generate(generation),
        }
    }
}

/// The events answering `request` with `model`, written by `writer`.
pub fn answer_events(
    index: DocumentIndex,
    request: AnswerRequest,
    model: String,
    writer: Writer,
) -> impl Stream<Item = Result<AnswerEvent>> + Send + 'static {
    // The call's span, for the line logged while the stream is polled.
    let span = tracing::Span::current();
    async_stream::try_stream! {
        yield AnswerEvent::RetrievalStarted { top_k: request.top_k as u32 };
        let started = Instant::now();
        let passages = index.search(&request.question, request.top_k).await?;
        let retrieval_ms = millis(started);
        tracing::debug!(parent: &span, passages = passages.len(), retrieval_ms, "passages retrieved");
        yield AnswerEvent::PassagesRetrieved { passages: passages.clone(), retrieval_ms };
        yield AnswerEvent::GenerationStarted { model: model.clone() };
        let started = Instant::now();
        let mut generation = writer.generate(&request, &model, &passages);
        let mut finish_reason = FinishReason::Stop;
        let mut usage = Usage::default();
        while let Some(event) = generation.next().await {
            match event? {
                GenerationEvent::Delta { text, .. } if !text.is_empty() => {
                    yield AnswerEvent::Content(text);
                }
                GenerationEvent::Delta { .. } => {}
                GenerationEvent::Finished { reason, .. } => finish_reason = reason,
                GenerationEvent::Usage(u) => usage = u,
                // The extractive answerer streams text only.
                GenerationEvent::ToolCall { .. }
                | GenerationEvent::Reasoning { .. }
                | GenerationEvent::Refusal { .. } => {}
            }
        }
        yield AnswerEvent::Done {
            finish_reason,
            usage,
            retrieval_ms,
            generation_ms: millis(started),
        };
    }
}

fn millis(since: Instant) -> u32 {
    u32::try_from(since.elapsed().as_millis()).unwrap_or(u32::MAX)
}
