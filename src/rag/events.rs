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

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{Stream, StreamExt};
use tracing::Instrument;

use super::{
    answer::{compose, prompt},
    index::{DocumentIndex, Retrieval, RetrievedPassage},
    request::AnswerRequest,
};
use crate::{
    error::Result,
    llm::{Backend, FinishReason, GenerationEvent, GenerationRequest, GenerationStream, Usage},
    tokenizer::Tokenizer,
};

/// One event of an answer, in the order they are produced.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AnswerEvent {
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
        retrieval: Duration,
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
        retrieval: Duration,
        /// Time spent generating.
        generation: Duration,
    },
}

/// The stream that writes the answer: a backend that can recite text (the
/// built-in models) streams the extractive answer; any other generates
/// from a prompt with the numbered passages.
fn write_answer(
    backend: &dyn Backend,
    request: &AnswerRequest,
    model: &str,
    found: &Retrieval,
) -> GenerationStream {
    let generation = GenerationRequest {
        model: model.to_owned(),
        messages: prompt(&request.question, &found.passages),
        max_tokens: request.max_tokens,
        temperature: None,
        stop: Vec::new(),
        n: 1,
        ..GenerationRequest::default()
    };
    if backend.can_recite() {
        backend.recite(&compose(&found.question, &found.passages), generation)
    } else {
        backend.generate(generation)
    }
}

/// The events answering `request` with `model`, written by `backend`.
pub(crate) fn answer_events(
    index: DocumentIndex,
    request: AnswerRequest,
    model: String,
    backend: Arc<dyn Backend>,
) -> impl Stream<Item = Result<AnswerEvent>> + Send + 'static {
    // The call's span, for the line logged while the stream is polled.
    let span = tracing::Span::current();
    async_stream::try_stream! {
        yield AnswerEvent::RetrievalStarted { top_k: request.top_k as u32 };
        let started = Instant::now();
        let retrieval = tracing::info_span!(parent: &span, "retrieval", top_k = request.top_k);
        let found = index
            .search(&request.question, request.top_k)
            .instrument(retrieval)
            .await?;
        let retrieval = started.elapsed();
        tracing::debug!(
            parent: &span,
            passages = found.passages.len(),
            retrieval_us = retrieval.as_micros() as u64,
            "passages retrieved"
        );
        yield AnswerEvent::PassagesRetrieved { passages: found.passages.clone(), retrieval };
        yield AnswerEvent::GenerationStarted { model: model.clone() };
        let started = Instant::now();
        // The answer is split into tokens: on a server's first call the
        // tables are built off the async workers first.
        Tokenizer::loaded().await;
        // Created in the call's span: the backend's spans are its children.
        let mut generation =
            span.in_scope(|| write_answer(backend.as_ref(), &request, &model, &found));
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
            retrieval,
            generation: started.elapsed(),
        };
    }
}
