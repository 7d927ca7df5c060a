//! A chat completion from draft to chunks, protocol-free.
//!
//! [`Chat::start`] validates a draft and routes it to the backend serving
//! its model; the returned [`Completion`] generates nothing until its
//! chunks are pulled, so an edge can refuse the call (capacity, drain)
//! before any token is produced.

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use futures::{StreamExt, TryStreamExt, stream};
use tracing::Span;

use super::{ChatChunks, ChatDraft, ChatLimits, ChatRequest, chat_chunks};
use crate::{
    error::Result,
    llm::{Backend, GenerationRequest, GenerationStream, Models, UsageMeter},
    offload::{Offload, Ticket},
    streams::{Follow, Streams},
    tokenizer::Tokenizer,
};

/// Runs chat completions over the server's models within its limits.
#[derive(Clone)]
pub(crate) struct Chat {
    models: Arc<Models>,
    limits: ChatLimits,
    streams: Streams,
    offload: Offload,
}

impl Chat {
    /// Completions answered by `models` within `limits`, resumable ones
    /// kept in memory on the default limits.
    pub(crate) fn new(models: Arc<Models>, limits: ChatLimits) -> Self {
        Self {
            models,
            limits,
            streams: Streams::default(),
            offload: Offload::default(),
        }
    }

    /// The same completions, large prompts counted in `offload`.
    pub(crate) fn with_offload(self, offload: Offload) -> Self {
        Self { offload, ..self }
    }

    /// The same completions, resumable ones kept by `streams`.
    pub(crate) fn with_streams(self, streams: Streams) -> Self {
        Self { streams, ..self }
    }

    /// The models served.
    pub(crate) fn models(&self) -> &Arc<Models> {
        &self.models
    }

    /// The resumable streams (resume, cancel).
    pub(crate) fn streams(&self) -> &Streams {
        &self.streams
    }

    /// Checks `draft` and starts it as a resumable stream: it generates to
    /// its end whether or not the returned reader (the starting call's) is
    /// read; see [`crate::streams`].
    /// `owner` is the caller's API key name, to which the stream is bound.
    pub(crate) async fn start_resumable(
        &self,
        draft: ChatDraft,
        owner: Option<&str>,
        span: &Span,
    ) -> Result<Follow> {
        self.streams.start(self, draft, owner, span).await
    }

    /// Checks `draft`, resolves its model and, for a large prompt, takes
    /// its place in the offload pool (RESOURCE_EXHAUSTED when the pool is
    /// full): its tokens are then counted off the async workers when the
    /// chunks are first pulled.
    pub(crate) fn start(&self, draft: ChatDraft) -> Result<Completion> {
        let mut request = ChatRequest::validate(draft, &self.limits)?;
        let (model, backend) = self.models.resolve(&request.generation.model)?;
        request.generation.model = model;
        let offload = self.offload.admit(prompt_bytes(&request.generation))?;
        Ok(Completion {
            header: CompletionHeader::new(&request.generation.model),
            request,
            backend,
            offload,
        })
    }
}

/// A checked completion, ready to generate.
pub(crate) struct Completion {
    header: CompletionHeader,
    request: ChatRequest,
    backend: Arc<dyn Backend>,
    /// The prompt's place in the offload pool, when it is large.
    offload: Option<Ticket>,
}

impl Completion {
    /// What every chunk of the completion repeats (its id and model).
    pub(crate) fn header(&self) -> &CompletionHeader {
        &self.header
    }

    /// Where the generation counts its tokens as it goes (see
    /// [`UsageMeter`]): what a call cut short reports.
    pub(crate) fn usage(&self) -> UsageMeter {
        self.request.generation.usage.clone()
    }

    /// Starts the generation: the chunks, pulled by the response stream.
    pub(crate) fn into_chunks(self) -> (CompletionHeader, ChatChunks) {
        let events = match self.offload {
            // The tokenizer's tables are built on first use; until then the
            // generation waits for them inside the stream (see
            // [`Tokenizer::loaded`]) rather than on an async worker.
            None if !Tokenizer::is_loaded() => {
                after_tokenizer_load(self.backend, self.request.generation)
            }
            None => self.backend.generate(self.request.generation),
            Some(ticket) => offloaded(ticket, self.backend, self.request.generation),
        };
        (self.header, chat_chunks(events, self.request.include_usage))
    }
}

/// Bytes of a request that the tokenizer reads: what makes counting its
/// prompt (and echoing it) expensive.
fn prompt_bytes(request: &GenerationRequest) -> usize {
    request
        .messages
        .iter()
        .map(|m| m.content.len() + m.name.len())
        .sum()
}

/// The generation of a large prompt: when first pulled, the prompt is
/// counted and the backend's setup done (a built-in model tokenizes its
/// answer then) on a blocking thread of the offload pool; the events then
/// flow as usual. Waiting for a turn happens inside the stream, so the
/// call's deadline and cancel apply to it.
fn offloaded(
    ticket: Ticket,
    backend: Arc<dyn Backend>,
    mut request: GenerationRequest,
) -> GenerationStream {
    // The backend's spans are children of the call's, on any thread.
    let span = Span::current();
    let setup = ticket.run(move || {
        span.in_scope(|| {
            request.prompt_tokens = Some(Tokenizer::cl100k().prompt_tokens(&request.messages));
            backend.generate(request)
        })
    });
    stream::once(setup).try_flatten().boxed()
}

/// The generation of a call that came before the tokenizer's tables were
/// built: it starts once they are, so its prompt is counted (and a built-in
/// model's answer split into tokens) without blocking an async worker.
fn after_tokenizer_load(backend: Arc<dyn Backend>, request: GenerationRequest) -> GenerationStream {
    let span = Span::current();
    let setup = async move {
        Tokenizer::loaded().await;
        span.in_scope(|| backend.generate(request))
    };
    stream::once(setup).flatten().boxed()
}

/// What every chunk of one completion repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CompletionHeader {
    /// `chatcmpl-` and a unique suffix.
    pub id: String,
    /// Unix seconds when the completion started.
    pub created: i64,
    /// The model that answers.
    pub model: String,
}

impl CompletionHeader {
    fn new(model: &str) -> Self {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Self {
            id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
            created,
            model: model.to_owned(),
        }
    }
}
