//! Language-model backends behind one trait.
//!
//! A [`Backend`] turns a [`GenerationRequest`] into a [`GenerationStream`] of
//! events for all of its choices, interleaved as they are produced. The
//! stream is *pulled*: no token is produced until the response stream asks
//! for it, and dropping the stream (a client that goes away) stops the work
//! at once. The built-in models live in [`mock`]; an OpenAI-compatible
//! upstream and the RAG answerer plug in through the same trait.
//!
//! Every backend must:
//! - honour `max_tokens` per choice and never emit a stop sequence;
//! - emit, for each choice, its deltas then exactly one `Finished`;
//! - emit one `Usage` after every choice has finished.

pub(crate) mod mock;
pub mod openai;
pub(crate) mod pace;
pub(crate) mod stop;
pub(crate) mod tool_model;
pub(crate) mod tools;

pub use tools::{Tool, ToolCall, ToolCallDelta, ToolChoice};

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering::Relaxed},
    },
};

use futures::stream::BoxStream;

use crate::{
    error::{Error, Result},
    validation::Violations,
};

/// Longest model name a request may give, in bytes.
pub(crate) const MAX_MODEL_BYTES: usize = 256;

/// Reports a model name longer than [`MAX_MODEL_BYTES`] as a violation of
/// the request's `model` field.
pub(crate) fn check_model_name(model: &str, violations: &mut Violations) {
    violations.require(model.len() <= MAX_MODEL_BYTES, "model", || {
        format!("must be at most {MAX_MODEL_BYTES} bytes")
    });
}

/// The server's `max_tokens` policy, the same for every RPC that generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenBudget {
    /// Tokens per choice when a request asks for 0.
    pub default_max_tokens: u32,
    /// Most tokens per choice a request may ask for.
    pub max_tokens_limit: u32,
}

impl TokenBudget {
    /// The budget of a request asking for `requested` tokens (0: the
    /// default); above the limit, a violation of its `max_tokens` field.
    pub(crate) fn resolve(&self, requested: u32, violations: &mut Violations) -> u32 {
        violations.require(requested <= self.max_tokens_limit, "max_tokens", || {
            format!(
                "{requested} is above the server maximum of {}",
                self.max_tokens_limit
            )
        });
        match requested {
            0 => self
                .default_max_tokens
                .clamp(1, self.max_tokens_limit.max(1)),
            n => n,
        }
    }
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Role {
    /// Instructions to the model.
    System,
    /// The end user.
    #[default]
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
}

impl Role {
    /// The role's name in the chat format.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatMessage {
    /// Author.
    pub role: Role,
    /// Text.
    pub content: String,
    /// Optional author name; empty when unset.
    pub name: String,
    /// The tool calls of an assistant turn; empty otherwise.
    pub tool_calls: Vec<ToolCall>,
    /// On a tool message: the id of the call it answers; empty otherwise.
    pub tool_call_id: String,
}

impl ChatMessage {
    /// A message from the user.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
            ..Self::default()
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
            ..Self::default()
        }
    }
}

/// Why a choice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FinishReason {
    /// Natural end or stop sequence.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The model called tools; the conversation continues with their results.
    ToolCalls,
    /// A content filter withheld (the rest of) the answer.
    ContentFilter,
}

/// Token accounting of one generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Generated tokens over every choice.
    pub completion_tokens: u32,
}

impl Usage {
    /// Prompt plus completion tokens.
    pub fn total_tokens(&self) -> u32 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// The token counts of one generation while it runs, shared between the
/// backend that counts and the call that reports them: a call cut short
/// (cancelled, failed, past its deadline) never sees the final [`Usage`]
/// event, yet billing needs what it used. Backends record the prompt when
/// they start and add completion tokens as they produce them (one relaxed
/// atomic add, on counters they keep anyway); an upstream's own usage, when
/// it sends one, replaces the estimate.
#[derive(Debug, Clone, Default)]
pub struct UsageMeter(Arc<UsageCounts>);

/// The counters behind a [`UsageMeter`], in one allocation: the meter is
/// held by every open stream, and one pointer instead of two keeps a
/// gRPC stream's response body inside a smaller allocator size class
/// (BENCHMARKS.md, issue 16).
#[derive(Debug, Default)]
struct UsageCounts {
    prompt: AtomicU32,
    completion: AtomicU32,
}

impl UsageMeter {
    /// Records the prompt's tokens.
    pub(crate) fn set_prompt(&self, tokens: u32) {
        self.0.prompt.store(tokens, Relaxed);
    }

    /// Counts `tokens` more completion tokens.
    pub(crate) fn add_completion(&self, tokens: u32) {
        self.0.completion.fetch_add(tokens, Relaxed);
    }

    /// The completion tokens counted so far.
    pub(crate) fn completion_tokens(&self) -> u32 {
        self.0.completion.load(Relaxed)
    }

    /// Replaces both counts with `usage` (an upstream's exact figures).
    pub fn set(&self, usage: Usage) {
        self.0.prompt.store(usage.prompt_tokens, Relaxed);
        self.0.completion.store(usage.completion_tokens, Relaxed);
    }

    /// The counts so far.
    pub fn get(&self) -> Usage {
        Usage {
            prompt_tokens: self.0.prompt.load(Relaxed),
            completion_tokens: self.0.completion.load(Relaxed),
        }
    }
}

/// A validated request for one generation.
#[derive(Debug, Clone, Default)]
pub struct GenerationRequest {
    /// The resolved model name.
    pub model: String,
    /// The conversation, at least one message.
    pub messages: Vec<ChatMessage>,
    /// Most tokens per choice (at least 1).
    pub max_tokens: u32,
    /// Sampling temperature, when given.
    pub temperature: Option<f32>,
    /// Stop sequences, at most 4, none empty.
    pub stop: Vec<String>,
    /// Number of choices, 1 to 8.
    pub n: u32,
    /// Functions the model may call (at most 128, names unique).
    pub tools: Vec<Tool>,
    /// Whether and which tools it may call; `None`: the model's default.
    pub tool_choice: Option<ToolChoice>,
    /// Whether it may call several tools in one turn; `None`: its default.
    pub parallel_tool_calls: Option<bool>,
    /// Where the backend counts the tokens as it goes.
    pub usage: UsageMeter,
    /// The prompt's tokens when they were counted before the generation
    /// (large prompts are, off the async workers: see [`crate::offload`]);
    /// `None`: the backend counts them when it needs them.
    pub prompt_tokens: Option<u32>,
}

impl GenerationRequest {
    /// The prompt's tokens: as counted before, or counted now with
    /// `tokenizer`.
    pub(crate) fn prompt_tokens_with(&self, tokenizer: &crate::tokenizer::Tokenizer) -> u32 {
        self.prompt_tokens
            .unwrap_or_else(|| tokenizer.prompt_tokens(&self.messages))
    }
}

/// One event of a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GenerationEvent {
    /// More text for a choice (never splits a character).
    Delta {
        /// Choice index.
        choice: u32,
        /// The text.
        text: String,
    },
    /// A piece of a tool call of a choice.
    ToolCall {
        /// Choice index.
        choice: u32,
        /// The piece (boxed: rare, and it would triple the size of every
        /// event, which is moved once a token).
        call: Box<ToolCallDelta>,
    },
    /// More of a choice's reasoning, kept apart from its text.
    Reasoning {
        /// Choice index.
        choice: u32,
        /// The text (never splits a character).
        text: String,
    },
    /// More of a choice's refusal message.
    Refusal {
        /// Choice index.
        choice: u32,
        /// The text (never splits a character).
        text: String,
    },
    /// A choice has ended.
    Finished {
        /// Choice index.
        choice: u32,
        /// Why.
        reason: FinishReason,
    },
    /// Token accounting, after every choice finished.
    Usage(Usage),
}

/// The events of one generation, pulled by the response stream.
pub(crate) type GenerationStream = BoxStream<'static, Result<GenerationEvent>>;

/// Who serves the built-in models, in model listings.
pub(crate) const BUILTIN_OWNER: &str = "agentstream";

/// A source of generated text.
pub trait Backend: Send + Sync + 'static {
    /// The model names this backend serves.
    fn models(&self) -> Vec<String>;

    /// Who serves them, for model listings: [`BUILTIN_OWNER`] for the
    /// built-in models, an upstream's name otherwise.
    fn owner(&self) -> String {
        BUILTIN_OWNER.to_owned()
    }

    /// Starts a generation. Nothing happens until the stream is polled.
    fn generate(&self, request: GenerationRequest) -> GenerationStream;

    /// Whether the backend can stream a text written by its caller (see
    /// [`Backend::recite`]): the built-in models can, so the extractive RAG
    /// answer streams through them; a real model writes its own answer.
    fn can_recite(&self) -> bool {
        false
    }

    /// Streams `text`, written by the caller, as if the backend had
    /// generated it for `request`: the same pacing, `max_tokens`, events and
    /// usage. A backend that cannot recite generates from `request` instead.
    fn recite(&self, text: &str, request: GenerationRequest) -> GenerationStream {
        let _ = text;
        self.generate(request)
    }
}

/// Routes a model name to the backend that serves it.
#[derive(Clone)]
pub(crate) struct Models {
    backends: BTreeMap<String, Arc<dyn Backend>>,
    default_model: String,
    /// Whether an unknown model's error lists the models served (not
    /// when API keys are configured: the list is for ListModels).
    list_in_errors: bool,
    /// When the registry was built (the server started serving), Unix
    /// seconds: every model's `created` in listings.
    created: i64,
}

/// One model as listings show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModelInfo {
    /// The model's name.
    pub id: String,
    /// Who serves it ([`Backend::owner`]).
    pub owned_by: String,
    /// When the server started serving it, Unix seconds.
    pub created: i64,
}

impl Models {
    /// An empty registry whose default model is `default_model`.
    pub(crate) fn new(default_model: impl Into<String>) -> Self {
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Self {
            backends: BTreeMap::new(),
            default_model: default_model.into(),
            list_in_errors: true,
            created,
        }
    }

    /// Whether the error for an unknown model lists the models served
    /// (the default); a server with API keys turns it off, so that model
    /// names (an upstream's, too) reach callers through ListModels only.
    pub(crate) fn list_models_in_errors(&mut self, list: bool) {
        self.list_in_errors = list;
    }

    /// Serves every model of `backend` (later registrations win).
    pub(crate) fn register(&mut self, backend: Arc<dyn Backend>) {
        for model in backend.models() {
            self.backends.insert(model, backend.clone());
        }
    }

    /// The backend for `model` (empty: the default model) and the model's
    /// resolved name.
    pub(crate) fn resolve(&self, model: &str) -> Result<(String, Arc<dyn Backend>)> {
        let name = if model.is_empty() {
            self.default_model.as_str()
        } else {
            model
        };
        match self.backends.get(name) {
            Some(backend) => Ok((name.to_owned(), backend.clone())),
            None => Err(Error::ModelNotFound {
                model: name.to_owned(),
                available: if self.list_in_errors {
                    self.names().join(", ")
                } else {
                    String::new()
                },
            }),
        }
    }

    /// Every model served, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        self.backends.keys().cloned().collect()
    }

    /// Every model served with its owner, sorted by name.
    pub(crate) fn list(&self) -> Vec<ModelInfo> {
        self.backends
            .iter()
            .map(|(id, backend)| ModelInfo {
                id: id.clone(),
                owned_by: backend.owner(),
                created: self.created,
            })
            .collect()
    }
}
