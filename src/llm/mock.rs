//! The built-in models: deterministic, offline, and cheap.
//!
//! - `echo` answers with a sentence that restates the last user message, in
//!   whatever language it was written.
//! - `synthetic` produces exactly `max_tokens` tokens of pseudo-text and
//!   finishes with LENGTH; it is the model for benchmarks and soak tests, so
//!   each token is a table lookup and no tokenizer work happens per token.
//!
//! Both stream real cl100k_base tokens paced by `--mock-token-delay` on a
//! fixed schedule (token k is due at start + k x delay, so pacing does not
//! drift). Choices are separate pulled streams merged with `select_all`, so
//! `n > 1` really runs concurrently, and every choice holds a live-generation
//! guard that is released the moment its stream is dropped.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering::Relaxed},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use futures::{Stream, StreamExt, stream};
use tokio::time::{Instant, Sleep, sleep_until};

use super::{
    Backend, FinishReason, GenerationEvent, GenerationRequest, GenerationStream, Role, Usage,
    stop::{Filtered, StopSequenceFilter},
};
use crate::{
    metrics::{LiveGuard, Metrics},
    tokenizer::{Piece, Tokenizer},
};

/// Name of the model that restates the question.
pub const ECHO: &str = "echo";
/// Name of the benchmark model.
pub const SYNTHETIC: &str = "synthetic";

/// Serves the `echo` and `synthetic` models.
#[derive(Debug, Clone)]
pub struct MockBackend {
    token_delay: Duration,
    tokenizer: Tokenizer,
    metrics: Arc<Metrics>,
}

impl MockBackend {
    /// Built-in models pacing tokens `token_delay` apart.
    pub fn new(token_delay: Duration, tokenizer: Tokenizer, metrics: Arc<Metrics>) -> Self {
        Self {
            token_delay,
            tokenizer,
            metrics,
        }
    }

    fn run(&self, script: Script, request: GenerationRequest) -> GenerationStream {
        let prompt_tokens = self.tokenizer.prompt_tokens(&request.messages);
        let completion = Arc::new(AtomicU32::new(0));
        let mut choices: Vec<ChoiceStream> = (0..request.n.max(1))
            .map(|choice| {
                let spec = ChoiceSpec {
                    choice,
                    script: script.clone(),
                    max_tokens: request.max_tokens,
                    stop: StopSequenceFilter::new(&request.stop),
                    token_delay: self.token_delay,
                    metrics: self.metrics.clone(),
                    completion: completion.clone(),
                };
                spec.into_stream()
            })
            .collect();
        let usage = stream::once(async move {
            Ok(GenerationEvent::Usage(Usage {
                prompt_tokens,
                completion_tokens: completion.load(Relaxed),
            }))
        });
        // One choice needs no merging: `select_all` re-queues its stream in a
        // `FuturesUnordered` after every item, an allocation per token.
        if choices.len() == 1 {
            let only = choices.pop().expect("one choice");
            return only.chain(usage).boxed();
        }
        stream::select_all(choices).chain(usage).boxed()
    }
}

impl Backend for MockBackend {
    fn models(&self) -> Vec<String> {
        vec![ECHO.to_owned(), SYNTHETIC.to_owned()]
    }

    fn generate(&self, request: GenerationRequest) -> GenerationStream {
        let script = if request.model == SYNTHETIC {
            Script::Synthetic
        } else {
            Script::Text(Arc::new(self.tokenizer.pieces(&echo_reply(&request))))
        };
        self.run(script, request)
    }

    fn can_recite(&self) -> bool {
        true
    }

    /// Streams the given text as tokens, exactly like a model would: the
    /// extractive RAG answer is written through this.
    fn recite(&self, text: &str, request: GenerationRequest) -> GenerationStream {
        let script = Script::Text(Arc::new(self.tokenizer.pieces(text)));
        self.run(script, request)
    }
}

/// The sentence `echo` answers with.
fn echo_reply(request: &GenerationRequest) -> String {
    let question = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .or(request.messages.last())
        .map_or("", |m| m.content.trim());
    format!(
        "You said: \u{201c}{question}\u{201d}. I am agentstream's built-in echo model, so I restate \
         your message token by token instead of answering it."
    )
}

/// What a choice says.
#[derive(Debug, Clone)]
enum Script {
    /// A fixed text, already split into pieces.
    Text(Arc<Vec<Piece>>),
    /// Endless pseudo-text.
    Synthetic,
}

/// Everything one choice needs to generate on its own.
struct ChoiceSpec {
    choice: u32,
    script: Script,
    max_tokens: u32,
    stop: StopSequenceFilter,
    token_delay: Duration,
    metrics: Arc<Metrics>,
    completion: Arc<AtomicU32>,
}

impl ChoiceSpec {
    fn into_stream(self) -> ChoiceStream {
        ChoiceStream {
            spec: self,
            state: ChoiceState::NotStarted,
            live: None,
            due: Instant::now(),
            sleep: None,
            sleeping: false,
            produced: 0,
            index: 0,
        }
    }
}

/// Where a choice's generation is.
#[derive(Debug, Clone, Copy)]
enum ChoiceState {
    /// Not polled yet: nothing has happened.
    NotStarted,
    /// Producing tokens.
    Generating,
    /// Out of tokens: release the text the stop filter holds, then finish.
    Ending(FinishReason),
    /// Send the `Finished` event.
    Finishing(FinishReason),
    /// Over; the live-generation guard is released.
    Done,
}

/// One choice's generation as a hand-written state machine. It sits on the
/// per-token path, where an `async_stream` generator cost about 120
/// instructions a token more (BENCHMARKS.md); the pacing timer is allocated
/// once and reset for each token.
struct ChoiceStream {
    spec: ChoiceSpec,
    state: ChoiceState,
    live: Option<LiveGuard>,
    /// When the next token is due (paced models).
    due: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Whether `sleep` is set for the token in hand.
    sleeping: bool,
    produced: u32,
    index: usize,
}

impl Stream for ChoiceStream {
    type Item = crate::Result<GenerationEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let choice = this.spec.choice;
        loop {
            match this.state {
                ChoiceState::NotStarted => {
                    this.live = Some(this.spec.metrics.generation());
                    this.due = Instant::now();
                    this.state = ChoiceState::Generating;
                }
                ChoiceState::Generating => {
                    let Some((text, tokens)) = this.spec.script.piece(this.index) else {
                        this.state = ChoiceState::Ending(FinishReason::Stop);
                        continue;
                    };
                    if this.produced.saturating_add(tokens) > this.spec.max_tokens {
                        this.state = ChoiceState::Ending(FinishReason::Length);
                        continue;
                    }
                    let delay = this.spec.token_delay;
                    if !delay.is_zero() {
                        if !this.sleeping {
                            this.due += delay * tokens;
                            match this.sleep.as_mut() {
                                Some(sleep) => sleep.as_mut().reset(this.due),
                                None => this.sleep = Some(Box::pin(sleep_until(this.due))),
                            }
                            this.sleeping = true;
                        }
                        if let Some(sleep) = this.sleep.as_mut() {
                            ready!(sleep.as_mut().poll(cx));
                        }
                        this.sleeping = false;
                    }
                    this.index += 1;
                    this.produced += tokens;
                    this.spec.metrics.add_tokens(u64::from(tokens));
                    this.spec.completion.fetch_add(tokens, Relaxed);
                    match this.spec.stop.push(text) {
                        Filtered::Pass(text) if text.is_empty() => {}
                        Filtered::Pass(text) => {
                            return Poll::Ready(Some(Ok(GenerationEvent::Delta { choice, text })));
                        }
                        Filtered::Stopped(text) => {
                            this.state = ChoiceState::Finishing(FinishReason::Stop);
                            if !text.is_empty() {
                                let delta = GenerationEvent::Delta { choice, text };
                                return Poll::Ready(Some(Ok(delta)));
                            }
                        }
                    }
                }
                ChoiceState::Ending(reason) => {
                    this.state = ChoiceState::Finishing(reason);
                    let text = this.spec.stop.finish();
                    if !text.is_empty() {
                        return Poll::Ready(Some(Ok(GenerationEvent::Delta { choice, text })));
                    }
                }
                ChoiceState::Finishing(reason) => {
                    this.state = ChoiceState::Done;
                    return Poll::Ready(Some(Ok(GenerationEvent::Finished { choice, reason })));
                }
                ChoiceState::Done => {
                    this.live = None;
                    return Poll::Ready(None);
                }
            }
        }
    }
}

impl Script {
    /// The `index`-th piece and its token count; `None` at the natural end.
    fn piece(&self, index: usize) -> Option<(&str, u32)> {
        match self {
            Script::Text(pieces) => pieces.get(index).map(|p| (p.text.as_str(), p.tokens)),
            Script::Synthetic => Some((synthetic_token(index), 1)),
        }
    }
}

/// Words that are each exactly one cl100k_base token (checked by a test).
const SYNTHETIC_WORDS: [&str; 32] = [
    " the", " stream", " token", " agent", " model", " answer", " fast", " data", " server",
    " client", " time", " first", " open", " call", " chunk", " flow", " and", " of", " to", " in",
    " is", " a", " for", " with", " we", " it", " on", " that", " each", " new", " over", ".",
];

/// The `index`-th synthetic token: a cheap, deterministic pseudo-random word.
fn synthetic_token(index: usize) -> &'static str {
    // A 64-bit multiplicative hash: one multiply per token.
    let mixed = (index as u64 ^ 0x9e37_79b9).wrapping_mul(0x2545_f491_4f6c_dd1d);
    SYNTHETIC_WORDS[(mixed >> 59) as usize % SYNTHETIC_WORDS.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_synthetic_word_is_one_token() {
        let t = Tokenizer::cl100k();
        for word in SYNTHETIC_WORDS {
            assert_eq!(t.count(word), 1, "{word:?}");
        }
    }

    #[test]
    fn synthetic_text_is_deterministic_and_varied() {
        let a: Vec<_> = (0..64).map(synthetic_token).collect();
        let b: Vec<_> = (0..64).map(synthetic_token).collect();
        assert_eq!(a, b);
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert!(distinct.len() > 8);
    }
}
