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
//! drift). Each choice is a pipeline of small named steps, each tested
//! alone below: the script's pieces, [`Budget`] (`max_tokens`),
//! [`UntilStop`] (stop sequences), [`Pace`] (the schedule), then
//! [`released`] (token accounting in batches, [`Produced`]; empty text
//! dropped) and the closing `Finished` event, all run by one stream
//! ([`Choice`]). The next release's tokens are known before it is made
//! ([`Releases::weight`]), so a choice waits for them with nothing in hand:
//! what an idle paced stream holds is its position, not a release (every
//! open stream's choice is one allocation, and this keeps it at 248 bytes,
//! BENCHMARKS.md). Choices of `n > 1` are separate pulled streams merged with
//! a `StreamMap`, so they really run concurrently, and every choice holds a
//! live-generation guard that is released the moment its stream is
//! dropped.

use std::{
    borrow::Cow,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::{Stream, stream};
use pin_project_lite::pin_project;
use tokio_stream::{StreamExt as _, StreamMap};

use super::{
    Backend, FinishReason, GenerationEvent, GenerationRequest, GenerationStream, Role, UsageMeter,
    pace::Pace,
    stop::{Filtered, StopSequenceFilter},
};
use crate::{
    metrics::{GeneratedCounters, LiveGuard, Metrics},
    telemetry::TRACE_ONLY,
    tokenizer::{Piece, Tokenizer},
};

/// Name of the model that restates the question.
pub(crate) const ECHO: &str = "echo";
/// Name of the benchmark model.
pub(crate) const SYNTHETIC: &str = "synthetic";

/// Serves the `echo` and `synthetic` models.
#[derive(Debug, Clone)]
pub(crate) struct MockBackend {
    token_delay: Duration,
    tokenizer: Tokenizer,
    metrics: Arc<Metrics>,
}

impl MockBackend {
    /// Built-in models pacing tokens `token_delay` apart.
    pub(crate) fn new(token_delay: Duration, tokenizer: Tokenizer, metrics: Arc<Metrics>) -> Self {
        Self {
            token_delay,
            tokenizer,
            metrics,
        }
    }

    fn run(&self, script: Script, request: GenerationRequest) -> GenerationStream {
        let prompt_tokens = request.prompt_tokens_with(&self.tokenizer);
        let tokens = self.metrics.tokens_of(&request.model);
        tokens.prompt(u64::from(prompt_tokens));
        request.usage.set_prompt(prompt_tokens);
        let completion = request.usage.clone();
        // The generation's span, a child of the call's: open until the
        // stream ends or is dropped, never entered per token. Kept (boxed)
        // only when it is recorded: a disabled span would still be 40 bytes
        // of every open stream.
        let span = tracing::info_span!(target: TRACE_ONLY, "generation", model = %request.model, n = request.n);
        let span = (!span.is_disabled()).then(|| Box::new(span));
        let spec = |index| ChoiceSpec {
            choice: index,
            script: script.clone(),
            max_tokens: request.max_tokens,
            stop: StopSequenceFilter::new(&request.stop),
            token_delay: self.token_delay,
            live: self.metrics.generation_of(&request.model),
            tokens: tokens.generated(),
            completion: completion.clone(),
        };
        let tail = UsageTail { span };
        // One choice needs no merging: the usage event follows its own end.
        if request.n <= 1 {
            return Box::pin(choice_stream(spec(0), Some(tail)));
        }
        let choices: StreamMap<u32, Pin<Box<dyn Stream<Item = _> + Send>>> = (0..request.n)
            .map(|i| {
                let choice = choice_stream(spec(i), None);
                (i, Box::pin(choice) as Pin<Box<dyn Stream<Item = _> + Send>>)
            })
            .collect();
        let usage = std::iter::once_with(move || Ok(tail.into_event(&completion)));
        Box::pin(choices.map(|(_, event)| event).chain(stream::iter(usage)))
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
    /// Keeps the generation counted as live.
    live: [LiveGuard; 2],
    tokens: GeneratedCounters,
    completion: UsageMeter,
}

/// One step of a choice before pacing.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// The next piece of the script.
    Piece(Cow<'static, str>, u32),
    /// The choice ends for this reason.
    End(FinishReason),
}

/// Text ready to be released once its tokens are due.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Release {
    /// What the client may see (possibly empty: held back by the stop filter).
    text: String,
    /// Tokens it took to produce.
    tokens: u32,
    /// The choice ends with this release, for this reason.
    end: Option<FinishReason>,
}

/// What follows the last choice of a generation: its usage event, read
/// off the generation's meter, and the end of its span.
struct UsageTail {
    span: Option<Box<tracing::Span>>,
}

impl UsageTail {
    /// The usage event, with the tokens `usage` counted.
    fn into_event(self, usage: &UsageMeter) -> GenerationEvent {
        drop(self.span);
        GenerationEvent::Usage(usage.get())
    }
}

/// One choice's events: the steps of the module doc, in order, then
/// the usage event of `tail`, when the choice is the only one.
fn choice_stream(
    spec: ChoiceSpec,
    tail: Option<UsageTail>,
) -> impl Stream<Item = crate::Result<GenerationEvent>> + Send {
    let ChoiceSpec {
        choice,
        script,
        max_tokens,
        stop,
        token_delay,
        live,
        tokens,
        completion,
    } = spec;
    Choice {
        releases: Releases {
            script,
            index: 0,
            budget: Budget::new(max_tokens),
            stop: UntilStop::new(stop),
        },
        pace: Pace::new(token_delay),
        choice,
        produced: Produced::new(tokens, completion),
        live: Some(live),
        // A script that runs out without saying why (an endless one cut by
        // the budget says LENGTH) ended naturally.
        reason: FinishReason::Stop,
        tail,
        generating: true,
    }
}

pin_project! {
    /// The stream of [`choice_stream`]: each release of `releases` once its
    /// tokens are due, through [`released`], then the choice's `Finished`
    /// event and the usage event of `tail`.
    ///
    /// One hand-written stream rather than a stream adapter per step: every
    /// adapter is a layer that each poll goes through, and a fast stream
    /// polls once a chunk (the steps themselves are plain functions, tested
    /// one by one below).
    struct Choice {
        releases: Releases,
        #[pin]
        pace: Pace,
        choice: u32,
        // Declared (so dropped) before `live`: a cancelled choice's last
        // tokens are counted before it stops counting as live.
        produced: Produced,
        // The generation's live guards, released with the `Finished` event.
        live: Option<[LiveGuard; 2]>,
        // Why the choice ends, once a release said so.
        reason: FinishReason,
        tail: Option<UsageTail>,
        generating: bool,
    }
}

impl Stream for Choice {
    type Item = crate::Result<GenerationEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        while *this.generating {
            let Some(weight) = this.releases.weight() else {
                *this.generating = false;
                break;
            };
            if this.pace.as_mut().poll_due(cx, weight).is_pending() {
                // Waiting: what was produced so far is counted now.
                this.produced.flush();
                return Poll::Pending;
            }
            let Some(release) = this.releases.take() else {
                *this.generating = false;
                break;
            };
            if let Some(why) = release.end {
                *this.reason = why;
            }
            if let Some(event) = released(*this.choice, this.produced, release) {
                return Poll::Ready(Some(event));
            }
        }
        // The end event and the usage after it read the counts.
        this.produced.flush();
        if let Some(live) = this.live.take() {
            // The generation stops counting as live with its last event.
            drop(live);
            return Poll::Ready(Some(Ok(GenerationEvent::Finished {
                choice: *this.choice,
                reason: *this.reason,
            })));
        }
        let completion = &this.produced.completion;
        Poll::Ready(this.tail.take().map(|tail| Ok(tail.into_event(completion))))
    }
}

/// A choice's releases: the script's steps through its [`Budget`] and its
/// [`UntilStop`], one at a time, each one's tokens known before it is made.
struct Releases {
    script: Script,
    /// The next step of the script.
    index: u32,
    budget: Budget,
    stop: UntilStop,
}

impl Releases {
    /// The tokens the next release takes to produce (what the choice waits
    /// for before making it); `None` when there is no next release.
    fn weight(&self) -> Option<u32> {
        if self.budget.ended || self.stop.ended {
            return None;
        }
        let tokens = self.script.tokens_at(self.index)?;
        Some(self.budget.weight(tokens))
    }

    /// The next release.
    fn take(&mut self) -> Option<Release> {
        let step = self.script.step(self.index)?;
        self.index = self.index.saturating_add(1);
        self.budget.step(step).and_then(|step| self.stop.step(step))
    }
}

/// Ends the steps at `max_tokens`: a piece that would exceed it becomes
/// the end (LENGTH), and nothing follows an end.
struct Budget {
    produced: u32,
    max_tokens: u32,
    ended: bool,
}

impl Budget {
    fn new(max_tokens: u32) -> Self {
        Self {
            produced: 0,
            max_tokens,
            ended: false,
        }
    }

    fn exceeded_by(&self, tokens: u32) -> bool {
        self.produced.saturating_add(tokens) > self.max_tokens
    }

    /// The tokens of a piece of `tokens` once through the budget: its own,
    /// or none when it becomes the end.
    fn weight(&self, tokens: u32) -> u32 {
        if self.exceeded_by(tokens) { 0 } else { tokens }
    }

    fn step(&mut self, step: Step) -> Option<Step> {
        if self.ended {
            return None;
        }
        match step {
            Step::Piece(_, tokens) if self.exceeded_by(tokens) => {
                self.ended = true;
                Some(Step::End(FinishReason::Length))
            }
            Step::Piece(text, tokens) => {
                self.produced += tokens;
                Some(Step::Piece(text, tokens))
            }
            Step::End(why) => {
                self.ended = true;
                Some(Step::End(why))
            }
        }
    }
}

/// Runs the pieces through the stop filter: what may be sent of each, the
/// held text when the choice ends, and the end at a stop sequence; the
/// last release says why the choice ends.
struct UntilStop {
    filter: StopSequenceFilter,
    ended: bool,
}

impl UntilStop {
    fn new(filter: StopSequenceFilter) -> Self {
        Self {
            filter,
            ended: false,
        }
    }

    // Always inlined into the choice's loop (the compiler did not by
    // itself), so that the release stays in registers. As a call, it was
    // written to memory and read back at once: a stall the profile showed
    // on every token.
    #[inline(always)]
    fn step(&mut self, step: Step) -> Option<Release> {
        if self.ended {
            return None;
        }
        Some(match step {
            Step::Piece(text, tokens) => match self.filter.push(text) {
                Filtered::Pass(text) => Release {
                    text,
                    tokens,
                    end: None,
                },
                Filtered::Stopped(text) => {
                    self.ended = true;
                    Release {
                        text,
                        tokens,
                        end: Some(FinishReason::Stop),
                    }
                }
            },
            Step::End(why) => {
                self.ended = true;
                Release {
                    text: self.filter.finish(),
                    tokens: 0,
                    end: Some(why),
                }
            }
        })
    }
}

/// Counts a release's tokens as produced and turns its text, unless
/// empty, into a delta.
fn released(
    choice: u32,
    produced: &mut Produced,
    Release { text, tokens, .. }: Release,
) -> Option<crate::Result<GenerationEvent>> {
    produced.add(tokens);
    if text.is_empty() {
        return None;
    }
    Some(Ok(GenerationEvent::Delta { choice, text }))
}

/// The tokens a choice produced, added to the server's counters and the
/// call's usage a batch at a time: each addition is an atomic operation on
/// memory every stream shares, which one fast stream would otherwise pay
/// three times a token. A batch is counted when it reaches [`Self::BATCH`]
/// tokens, when the choice waits for its next token or ends, and when it
/// is dropped, so a paced stream's counts are current after every chunk, a
/// fast one's lag by less than a batch, and a cancelled call's usage is
/// complete before it is read.
struct Produced {
    counters: GeneratedCounters,
    completion: UsageMeter,
    uncounted: u32,
}

impl Produced {
    /// Tokens counted together at most.
    const BATCH: u32 = 64;

    fn new(counters: GeneratedCounters, completion: UsageMeter) -> Self {
        Self {
            counters,
            completion,
            uncounted: 0,
        }
    }

    fn add(&mut self, tokens: u32) {
        self.uncounted = self.uncounted.saturating_add(tokens);
        if self.uncounted >= Self::BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let tokens = std::mem::take(&mut self.uncounted);
        if tokens > 0 {
            self.counters.add(u64::from(tokens));
            self.completion.add_completion(tokens);
        }
    }
}

impl Drop for Produced {
    fn drop(&mut self) {
        self.flush();
    }
}

impl Script {
    /// Step `index` of the script: its piece, then (for a text) its
    /// natural end; `None` past that.
    fn step(&self, index: u32) -> Option<Step> {
        let index = index as usize;
        Some(match self {
            Script::Text(pieces) => match pieces.get(index) {
                Some(p) => Step::Piece(Cow::Owned(p.text.clone()), p.tokens),
                None if index == pieces.len() => Step::End(FinishReason::Stop),
                None => return None,
            },
            Script::Synthetic => Step::Piece(Cow::Borrowed(synthetic_token(index)), 1),
        })
    }

    /// The tokens of step `index` (none for the end), without making it.
    fn tokens_at(&self, index: u32) -> Option<u32> {
        let index = index as usize;
        match self {
            Script::Text(pieces) => match pieces.get(index) {
                Some(p) => Some(p.tokens),
                None if index == pieces.len() => Some(0),
                None => None,
            },
            Script::Synthetic => Some(1),
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
    use tokio_stream::StreamExt;

    use super::*;

    #[test]
    fn every_synthetic_word_is_one_token() {
        let t = Tokenizer::cl100k();
        for word in SYNTHETIC_WORDS {
            assert_eq!(t.count(word), 1, "{word:?}");
        }
    }

    fn piece(text: &'static str, tokens: u32) -> Step {
        Step::Piece(Cow::Borrowed(text), tokens)
    }

    fn release(text: &str, tokens: u32, end: Option<FinishReason>) -> Option<Release> {
        Some(Release {
            text: text.into(),
            tokens,
            end,
        })
    }

    #[test]
    fn within_budget_ends_with_length_before_the_piece_that_overflows() {
        let mut budget = Budget::new(3);
        assert_eq!(budget.step(piece("a", 1)), Some(piece("a", 1)));
        assert_eq!(budget.step(piece("bc", 2)), Some(piece("bc", 2)));
        assert_eq!(
            budget.step(piece("d", 1)),
            Some(Step::End(FinishReason::Length))
        );
        assert_eq!(budget.step(piece("e", 1)), None);
    }

    #[test]
    fn within_budget_passes_the_natural_end_and_stops_there() {
        let mut budget = Budget::new(10);
        assert_eq!(budget.step(piece("a", 1)), Some(piece("a", 1)));
        assert_eq!(
            budget.step(Step::End(FinishReason::Stop)),
            Some(Step::End(FinishReason::Stop))
        );
        assert_eq!(budget.step(piece("b", 1)), None);
    }

    #[test]
    fn until_stop_holds_back_a_partial_stop_and_ends_at_a_whole_one() {
        let mut stop = UntilStop::new(StopSequenceFilter::new(&["END".into()]));
        assert_eq!(stop.step(piece("one E", 2)), release("one ", 2, None));
        assert_eq!(
            stop.step(piece("ND two", 2)),
            release("", 2, Some(FinishReason::Stop))
        );
        assert_eq!(stop.step(piece("three", 1)), None);
    }

    #[test]
    fn until_stop_releases_held_text_at_the_end_with_its_reason() {
        let mut stop = UntilStop::new(StopSequenceFilter::new(&["END".into()]));
        assert_eq!(stop.step(piece("almost E", 2)), release("almost ", 2, None));
        assert_eq!(
            stop.step(Step::End(FinishReason::Length)),
            release("E", 0, Some(FinishReason::Length))
        );
        assert_eq!(stop.step(piece("more", 1)), None);
    }

    /// Every release of `releases`, each with the weight announced for it.
    fn weighed(mut releases: Releases) -> Vec<(u32, Release)> {
        let mut all = Vec::new();
        while let Some(weight) = releases.weight() {
            let release = releases.take().expect("a weight announces a release");
            all.push((weight, release));
        }
        assert!(releases.take().is_none(), "no weight, no release");
        all
    }

    #[test]
    fn each_release_takes_the_tokens_announced_for_it() {
        let pieces = [("a", 1), ("bc E", 2), ("ND", 1), ("e", 1)].map(|(text, tokens)| Piece {
            text: text.into(),
            tokens,
        });
        let text = Script::Text(Arc::new(pieces.to_vec()));
        let releases = |max_tokens, stops: &[String]| Releases {
            script: text.clone(),
            index: 0,
            budget: Budget::new(max_tokens),
            stop: UntilStop::new(StopSequenceFilter::new(stops)),
        };
        let ends = |weighed: &[(u32, Release)]| -> Vec<_> {
            weighed.iter().map(|(w, r)| (*w, r.tokens, r.end)).collect()
        };
        // The whole text, then its natural end (no tokens).
        let all = weighed(releases(10, &[]));
        assert!(all.iter().all(|(weight, r)| *weight == r.tokens));
        assert_eq!(
            all.last().map(|(_, r)| r.end),
            Some(Some(FinishReason::Stop))
        );
        assert_eq!(all.len(), 5);
        // Cut by the budget: the piece that would exceed it is the end.
        assert_eq!(
            ends(&weighed(releases(2, &[]))),
            [(1, 1, None), (0, 0, Some(FinishReason::Length))]
        );
        // Cut by a stop sequence across two pieces: nothing after it.
        assert_eq!(
            ends(&weighed(releases(10, &["END".into()]))),
            [(1, 1, None), (2, 2, None), (1, 1, Some(FinishReason::Stop))]
        );
        // The endless script, cut by the budget.
        let synthetic = Releases {
            script: Script::Synthetic,
            index: 0,
            budget: Budget::new(3),
            stop: UntilStop::new(StopSequenceFilter::new(&[])),
        };
        assert_eq!(
            ends(&weighed(synthetic)),
            [
                (1, 1, None),
                (1, 1, None),
                (1, 1, None),
                (0, 0, Some(FinishReason::Length))
            ]
        );
    }

    #[test]
    fn released_counts_tokens_and_drops_empty_text() {
        let metrics = Metrics::new();
        let completion = UsageMeter::default();
        let mut produced = Produced::new(metrics.tokens_of("echo").generated(), completion.clone());
        let delta = released(
            1,
            &mut produced,
            Release {
                text: "hi".into(),
                tokens: 2,
                end: None,
            },
        );
        assert!(matches!(
            delta,
            Some(Ok(GenerationEvent::Delta { choice: 1, ref text })) if text == "hi"
        ));
        let held = released(
            1,
            &mut produced,
            Release {
                text: String::new(),
                tokens: 1,
                end: None,
            },
        );
        assert!(held.is_none());
        produced.flush();
        assert_eq!(completion.completion_tokens(), 3);
        assert_eq!(metrics.snapshot().tokens_generated, 3);
    }

    #[test]
    fn produced_tokens_are_counted_a_batch_at_a_time_and_all_on_drop() {
        let metrics = Metrics::new();
        let completion = UsageMeter::default();
        let mut produced = Produced::new(metrics.tokens_of("echo").generated(), completion.clone());
        for _ in 0..Produced::BATCH - 1 {
            produced.add(1);
        }
        assert_eq!(completion.completion_tokens(), 0, "less than a batch waits");
        produced.add(1);
        assert_eq!(completion.completion_tokens(), Produced::BATCH);
        assert_eq!(
            metrics.snapshot().tokens_generated,
            u64::from(Produced::BATCH)
        );
        produced.add(5);
        drop(produced);
        assert_eq!(completion.completion_tokens(), Produced::BATCH + 5);
        assert_eq!(
            metrics.snapshot().tokens_generated,
            u64::from(Produced::BATCH + 5)
        );
    }

    #[tokio::test]
    async fn a_choice_streams_its_deltas_then_finishes_once() {
        let metrics = Metrics::new();
        let pieces = ["Hello", " wor", "ld", "!"].map(|t| Piece {
            text: t.into(),
            tokens: 1,
        });
        let spec = ChoiceSpec {
            choice: 0,
            script: Script::Text(Arc::new(pieces.to_vec())),
            max_tokens: 3,
            stop: StopSequenceFilter::new(&[]),
            token_delay: Duration::ZERO,
            live: metrics.generation_of("echo"),
            tokens: metrics.tokens_of("echo").generated(),
            completion: UsageMeter::default(),
        };
        let events: Vec<_> = choice_stream(spec, None)
            .map(|e| e.expect("event"))
            .collect()
            .await;
        let delta = |text: &str| GenerationEvent::Delta {
            choice: 0,
            text: text.into(),
        };
        assert_eq!(
            events,
            [
                delta("Hello"),
                delta(" wor"),
                delta("ld"),
                GenerationEvent::Finished {
                    choice: 0,
                    reason: FinishReason::Length
                }
            ]
        );
        assert_eq!(metrics.snapshot().live_generations, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_paced_choice_releases_each_piece_when_its_tokens_are_due() {
        let metrics = Metrics::new();
        let pieces = [("a", 1), ("bc", 2), ("d", 1)].map(|(text, tokens)| Piece {
            text: text.into(),
            tokens,
        });
        let spec = ChoiceSpec {
            choice: 0,
            script: Script::Text(Arc::new(pieces.to_vec())),
            max_tokens: 100,
            stop: StopSequenceFilter::new(&[]),
            token_delay: Duration::from_millis(10),
            live: metrics.generation_of("echo"),
            tokens: metrics.tokens_of("echo").generated(),
            completion: UsageMeter::default(),
        };
        let start = tokio::time::Instant::now();
        let mut events = std::pin::pin!(choice_stream(spec, None));
        let mut at = Vec::new();
        while let Some(event) = events.next().await {
            let text = match event.expect("event") {
                GenerationEvent::Delta { text, .. } => text,
                other => format!("{other:?}"),
            };
            at.push((text, start.elapsed().as_millis()));
        }
        let at: Vec<_> = at.iter().map(|(t, ms)| (t.as_str(), *ms)).collect();
        assert_eq!(
            at,
            [
                ("a", 10),
                ("bc", 30),
                ("d", 40),
                ("Finished { choice: 0, reason: Stop }", 40)
            ]
        );
        assert_eq!(metrics.snapshot().tokens_generated, 4);
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
