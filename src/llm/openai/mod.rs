//! Real models behind any server that speaks OpenAI's chat-completions
//! streaming protocol: OpenAI itself, vLLM, TGI, Ollama, llama.cpp.
//!
//! Layers, each in its own file:
//! - [`config`]: the operator's `--upstream` spec and the API key;
//! - [`client`]: HTTP (reqwest), retries before the first token, and the
//!   one mapping of HTTP failures to gRPC codes;
//! - [`wire`]: the JSON of the protocol;
//! - [`decode`]: server-sent events (parsed by `eventsource-stream`) to
//!   generation events, enforcing the [`Backend`] contract;
//! - [`redact`]: what of the upstream's words clients may see (never its
//!   address or raw body; the server log has the detail).
//!
//! **Cancellation.** The generation is one pulled stream and spawns no
//! task: the HTTP request is sent when the stream is first polled, and the
//! response body lives inside the stream. When the gRPC client goes away
//! (or its deadline passes, or the server drains), the stream is dropped,
//! the body with it, and hyper closes that HTTP/1.1 connection at once: the
//! upstream sees its client disconnect and stops generating, which is what
//! frees the GPU. The same happens when a stop sequence is cut here while
//! the upstream is still generating.
//!
//! **Timeouts.** Connect (in reqwest), first token (from sending the request
//! to the first streamed event, retries excluded), and idle (between two
//! events); each one that passes ends the call with UNAVAILABLE, because the
//! client's own deadline has not passed (that one is DEADLINE_EXCEEDED).

pub(crate) mod client;
pub(crate) mod config;
pub(crate) mod decode;
pub(crate) mod redact;
pub(crate) mod wire;

use std::{
    collections::BTreeSet,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
    task::{Context, Poll},
};

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use pin_project_lite::pin_project;
use tokio::time::{Instant, timeout_at};
use tracing::Span;

pub use client::{DiscoveryError, Upstream};
pub use config::{ApiKey, KeyError, KeySource, Timeouts, UpstreamSpec};

use self::{
    client::error_chain,
    decode::{ChunkDecoder, Step},
    wire::ChatCompletionRequest,
};
use super::{Backend, GenerationRequest, GenerationStream};
use crate::{
    error::{Error, Result},
    metrics::{Metrics, TokenCounters},
    telemetry::TRACE_ONLY,
    tokenizer::Tokenizer,
};

/// Largest single server-sent event accepted; a chunk is a few hundred
/// bytes, so this only stops an upstream that never ends an event.
const MAX_EVENT_BYTES: usize = 1 << 20;

/// Serves the models of one OpenAI-compatible upstream.
#[derive(Debug, Clone)]
pub struct OpenAiBackend {
    upstream: Arc<Upstream>,
    models: Vec<String>,
    tokenizer: Tokenizer,
    metrics: Arc<Metrics>,
}

/// Why the upstreams could not be set up at start-up.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    /// The API key could not be read.
    #[error("upstream configuration: cannot read the API key of upstream `{upstream}`")]
    Key {
        /// The upstream.
        upstream: String,
        /// Why.
        #[source]
        source: KeyError,
    },
    /// The HTTP client could not be built.
    #[error("upstream configuration: cannot build the HTTP client of `{upstream}`")]
    Client {
        /// The upstream.
        upstream: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// Discovery failed and no model was listed.
    #[error("upstream configuration: cannot discover the models of upstream `{upstream}` at {url}")]
    Discovery {
        /// The upstream.
        upstream: String,
        /// The models URL.
        url: String,
        /// Why.
        #[source]
        source: DiscoveryError,
    },
    /// Nothing to serve.
    #[error("upstream configuration: upstream `{0}` lists no model; name them with models=a;b")]
    NoModels(String),
    /// Names must be unique.
    #[error("upstream configuration: two upstreams are named `{0}`")]
    DuplicateName(String),
}

impl OpenAiBackend {
    /// Sets up the upstream of `spec`: reads its key and, when asked,
    /// discovers its models. Discovery that fails is fatal when it would
    /// leave the upstream with no model, and a warning when models are also
    /// listed in the spec.
    pub async fn connect(
        spec: &UpstreamSpec,
        tokenizer: Tokenizer,
        metrics: Arc<Metrics>,
    ) -> Result<Self, UpstreamSetupError> {
        let key = ApiKey::load(&spec.key).map_err(|source| UpstreamSetupError::Key {
            upstream: spec.name.clone(),
            source,
        })?;
        let upstream = Upstream::new(spec, key)
            .map_err(|source| UpstreamSetupError::Client {
                upstream: spec.name.clone(),
                source,
            })?
            .with_metrics(&metrics);
        let mut models: BTreeSet<String> = spec.models.iter().cloned().collect();
        if spec.discover {
            match upstream.discover_models().await {
                Ok(found) => {
                    tracing::info!(upstream = %spec.name, models = ?found, "discovered models");
                    models.extend(found);
                }
                Err(e) if !models.is_empty() => tracing::warn!(
                    upstream = %spec.name,
                    error = %e,
                    "model discovery failed; serving the listed models only"
                ),
                Err(source) => {
                    return Err(UpstreamSetupError::Discovery {
                        upstream: spec.name.clone(),
                        url: spec.endpoint("models").to_string(),
                        source,
                    });
                }
            }
        }
        if models.is_empty() {
            return Err(UpstreamSetupError::NoModels(spec.name.clone()));
        }
        Ok(Self {
            upstream: Arc::new(upstream),
            models: models.into_iter().collect(),
            tokenizer,
            metrics,
        })
    }

    /// Sets up every upstream, in order; names must be unique.
    pub(crate) async fn connect_all(
        specs: &[UpstreamSpec],
        tokenizer: Tokenizer,
        metrics: &Arc<Metrics>,
    ) -> Result<Vec<Self>, UpstreamSetupError> {
        let mut names = BTreeSet::new();
        let mut backends = Vec::with_capacity(specs.len());
        for spec in specs {
            if !names.insert(spec.name.as_str()) {
                return Err(UpstreamSetupError::DuplicateName(spec.name.clone()));
            }
            let backend = Self::connect(spec, tokenizer, metrics.clone()).await?;
            tracing::info!(
                upstream = %spec.name,
                url = %spec.url,
                models = ?backend.models,
                "upstream ready"
            );
            backends.push(backend);
        }
        Ok(backends)
    }
}

impl Backend for OpenAiBackend {
    fn models(&self) -> Vec<String> {
        self.models.clone()
    }

    fn owner(&self) -> String {
        self.upstream.name().to_owned()
    }

    fn generate(&self, request: GenerationRequest) -> GenerationStream {
        // Spans of the generation (child of the call's) and of its upstream
        // request, whose trace context the request carries on. Without an
        // exporter the generation's span is not created, and the upstream's
        // is the call's child: what it logs carries the call's fields.
        let span = tracing::info_span!(target: TRACE_ONLY, "generation", model = %request.model, n = request.n);
        let parent = span.id().or_else(|| Span::current().id());
        let upstream =
            tracing::info_span!(parent: parent, "upstream", upstream = %self.upstream.name());
        let generation = generation(
            self.upstream.clone(),
            request,
            self.tokenizer,
            self.metrics.clone(),
        );
        InSpan::new(generation, upstream, span).boxed()
    }
}

pin_project! {
    /// Polls a generation inside its `upstream` span (a child of the
    /// `generation` span, itself a child of the call's), so what it logs
    /// while streaming (retries, upstream failures) carries the call's
    /// request id and model, and the request it sends carries the span's
    /// trace context. Only this backend logs per poll; the built-in models
    /// do not pay for it.
    struct InSpan<S> {
        #[pin]
        inner: S,
        span: Span,
        _generation: Span,
    }
}

impl<S> InSpan<S> {
    fn new(inner: S, span: Span, generation: Span) -> Self {
        Self {
            inner,
            span,
            _generation: generation,
        }
    }
}

impl<S: Stream> Stream for InSpan<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.project();
        let _entered = this.span.enter();
        this.inner.poll_next(cx)
    }
}

/// The pulled stream of one generation: request, then events until the
/// decoder is done, then the usage.
fn generation(
    upstream: Arc<Upstream>,
    request: GenerationRequest,
    tokenizer: Tokenizer,
    metrics: Arc<Metrics>,
) -> impl Stream<Item = Result<super::GenerationEvent>> + Send {
    async_stream::try_stream! {
        let _live: Vec<_> = (0..request.n.max(1)).map(|_| metrics.generation_of(&request.model)).collect();
        let tokens = metrics.tokens_of(&request.model);
        let _prompt = PromptIfCutShort {
            request: &request,
            tokenizer: &tokenizer,
            tokens: &tokens,
        };
        let (response, first_token_deadline) = upstream
            .open_stream(&ChatCompletionRequest::new(&request))
            .await?;
        tracing::debug!(upstream = %upstream.name(), model = %request.model, "upstream stream open");
        let mut events = bounded_events(response);
        let mut decoder = ChunkDecoder::new(upstream.redactor(), &request, tokenizer);
        let mut out = Vec::new();
        let mut wait = Wait::FirstToken(first_token_deadline);
        loop {
            let Some(event) = next_event(&upstream, &mut events, wait).await? else {
                break;
            };
            wait = Wait::Idle(Instant::now() + upstream.timeouts().idle);
            let before = decoder.counted_tokens();
            let step = decoder.on_event(&event.event, &event.data, &mut out)?;
            tokens.completion(u64::from(decoder.counted_tokens() - before));
            for event in out.drain(..) {
                yield event;
            }
            if step == Step::Done {
                break;
            }
        }
        // Close the connection before the (cheap) end: nothing more is read.
        drop(events);
        decoder.finish(&request, &mut out)?;
        for event in out.drain(..) {
            if let super::GenerationEvent::Usage(usage) = &event {
                tokens.prompt(u64::from(usage.prompt_tokens));
            }
            yield event;
        }
    }
}

/// Counts the prompt into the request's meter and the model's prompt
/// counter when the generation ends without usage (cancelled, failed, past
/// its deadline), so the call still reports it; a generation that ends
/// normally has set its usage already, and pays nothing more here.
struct PromptIfCutShort<'a> {
    request: &'a GenerationRequest,
    tokenizer: &'a Tokenizer,
    /// The model's token counters, which count the prompt too.
    tokens: &'a TokenCounters,
}

impl Drop for PromptIfCutShort<'_> {
    fn drop(&mut self) {
        let meter = &self.request.usage;
        if meter.get().prompt_tokens == 0 {
            let prompt = self.request.prompt_tokens_with(self.tokenizer);
            meter.set_prompt(prompt);
            self.tokens.prompt(u64::from(prompt));
        }
    }
}

/// A failure reading the body: the transport's, or an event too large.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("{}", error_chain(.0))]
    Transport(#[from] reqwest::Error),
    #[error("an event is larger than {MAX_EVENT_BYTES} bytes")]
    EventTooLarge,
}

/// The response body as server-sent events, none larger than
/// [`MAX_EVENT_BYTES`] (the parser's buffer is otherwise unbounded).
fn bounded_events(
    response: reqwest::Response,
) -> impl Stream<Item = Result<Event, EventStreamError<BodyError>>> + Send + Unpin {
    // Bytes since the last event ended; reset whenever one is parsed.
    let pending = Arc::new(AtomicUsize::new(0));
    let counter = pending.clone();
    let bytes = response.bytes_stream().map(move |chunk| {
        let chunk = chunk?;
        if counter.fetch_add(chunk.len(), Relaxed) + chunk.len() > MAX_EVENT_BYTES {
            return Err(BodyError::EventTooLarge);
        }
        Ok(chunk)
    });
    bytes.eventsource().map(move |event| {
        pending.store(0, Relaxed);
        event
    })
}

/// Until when the next event may take, and why.
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// No event yet: the first-token timeout runs since the request.
    FirstToken(Instant),
    /// The idle timeout runs since the last event.
    Idle(Instant),
}

/// The next event, or `None` at the end of the body; an error when the
/// deadline passes first or the body fails.
async fn next_event(
    upstream: &Upstream,
    events: &mut (impl Stream<Item = Result<Event, EventStreamError<BodyError>>> + Unpin),
    wait: Wait,
) -> Result<Option<Event>> {
    let name = upstream.name();
    let (deadline, limit, which) = match wait {
        Wait::FirstToken(at) => (at, upstream.timeouts().first_token, "first-token"),
        Wait::Idle(at) => (at, upstream.timeouts().idle, "idle"),
    };
    match timeout_at(deadline, events.next()).await {
        Ok(None) => Ok(None),
        Ok(Some(Ok(event))) => Ok(Some(event)),
        Ok(Some(Err(EventStreamError::Transport(e)))) => {
            upstream.count_error("stream");
            tracing::warn!(upstream = %name, detail = %upstream.scrub(&e.to_string()), "upstream stream failed");
            let cause = match &e {
                BodyError::Transport(e) => client::short_cause(e),
                BodyError::EventTooLarge => e.to_string(),
            };
            Err(Error::Unavailable(format!(
                "upstream `{name}` stream failed: {cause}"
            )))
        }
        Ok(Some(Err(e))) => {
            upstream.count_error("stream");
            tracing::warn!(upstream = %name, detail = %upstream.scrub(&e.to_string()), "upstream sent a malformed event stream");
            Err(Error::Internal(format!(
                "upstream `{name}` sent a malformed event stream"
            )))
        }
        Err(_) => {
            upstream.count_error("timeout");
            Err(Error::Unavailable(format!(
                "upstream `{name}` sent nothing within its {which} timeout of {}",
                humantime::format_duration(limit)
            )))
        }
    }
}
