//! Turns the upstream's server-sent events into [`GenerationEvent`]s.
//!
//! This is the pure half of the backend (no I/O, unit-tested alone): it
//! keeps per-choice state and enforces the [`Backend`](crate::llm::Backend)
//! contract whatever the upstream does:
//! - each choice's text goes through a [`StopSequenceFilter`], so a stop
//!   sequence is never sent even when the upstream ignores `stop`;
//! - a choice that sends more content chunks than `max_tokens` is cut with
//!   LENGTH (every non-empty chunk holds at least one token);
//! - each choice ends with exactly one `Finished`, and `Usage` comes last:
//!   the upstream's own when it sent one, else counted with the tokenizer;
//! - an upstream `error` event, malformed JSON or a stream that stops before
//!   every choice has finished ends the generation with an error, after the
//!   events already produced.
//!
//! Text is passed on as the upstream chunked it: strings decoded from JSON
//! are whole characters, and nothing here cuts them except at a stop
//! sequence, which the filter always cuts on a character boundary.
//!
//! Beside `content`, a delta may carry `reasoning_content`/`reasoning`
//! (passed on as reasoning, apart from the text), `refusal`, and
//! `tool_calls` pieces. Tool calls are passed on as they come, with one
//! normalisation: the first piece of each call carries its id and name and
//! later pieces only argument fragments, whatever the server repeats (a
//! call whose first piece has no id gets one). Argument fragments are never
//! joined or parsed here, so a fragment that ends mid-JSON-token reaches the
//! client unchanged. `finish_reason` is mapped faithfully
//! ([`finish_reason`]); an unknown value finishes the choice with STOP (or
//! TOOL_CALLS when it called tools) and is logged as a warning.

use std::collections::HashSet;

use super::{
    redact::Redactor,
    wire::{ChunkDelta, StreamChunk, UpstreamMessage, WireUsage, finish_reason},
};
use crate::{
    error::{Error, Result},
    llm::{
        FinishReason, GenerationEvent, GenerationRequest, ToolCallDelta, Usage, UsageMeter,
        stop::{Filtered, StopSequenceFilter},
    },
    tokenizer::{Tokenizer, saturate},
};

/// Most tool calls one choice may make (as many as a request may define
/// tools); an upstream that sends more ends the generation with an error.
const MAX_CALLS_PER_CHOICE: usize = 128;

/// The payload that ends an OpenAI stream.
const DONE: &str = "[DONE]";

/// Whether to keep reading the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// More events are expected.
    More,
    /// Nothing more is needed: stop reading (closing the connection).
    Done,
}

/// The state of one generation's stream.
#[derive(Debug)]
pub(crate) struct ChunkDecoder {
    /// The upstream's name, and what cleans its words for clients.
    upstream: Redactor,
    max_tokens: u32,
    choices: Vec<ChoiceState>,
    usage: Option<WireUsage>,
    counted_tokens: u32,
    tokenizer: Tokenizer,
    saw_done: bool,
    /// The request's meter: completion tokens as they are counted, the
    /// final usage at the end.
    meter: UsageMeter,
}

#[derive(Debug)]
struct ChoiceState {
    stop: StopSequenceFilter,
    /// Content chunks received (each at least one token).
    chunks: u32,
    /// We sent its `Finished`.
    finished: bool,
    /// The upstream sent its `finish_reason` (it stopped generating it).
    upstream_finished: bool,
    /// Any event at all was received for it.
    seen: bool,
    /// The upstream indexes of the tool calls it has begun.
    calls: HashSet<u32>,
}

impl ChunkDecoder {
    /// A decoder for `request`, served by the upstream of `upstream`.
    pub(crate) fn new(
        upstream: &Redactor,
        request: &GenerationRequest,
        tokenizer: Tokenizer,
    ) -> Self {
        let choices = (0..request.n.max(1))
            .map(|_| ChoiceState {
                stop: StopSequenceFilter::new(&request.stop),
                chunks: 0,
                finished: false,
                upstream_finished: false,
                seen: false,
                calls: HashSet::new(),
            })
            .collect();
        Self {
            upstream: upstream.clone(),
            max_tokens: request.max_tokens,
            choices,
            usage: None,
            counted_tokens: 0,
            tokenizer,
            saw_done: false,
            meter: request.usage.clone(),
        }
    }

    /// Tokens counted in the text received so far (for metrics and for the
    /// fallback usage).
    pub(crate) fn counted_tokens(&self) -> u32 {
        self.counted_tokens
    }

    /// Handles one server-sent event (`name` is its `event:` field, usually
    /// empty), appending what it produces to `out`.
    pub(crate) fn on_event(
        &mut self,
        name: &str,
        data: &str,
        out: &mut Vec<GenerationEvent>,
    ) -> Result<Step> {
        let data = data.trim();
        if name == "error" {
            return Err(self.upstream_error(&UpstreamMessage::parse(data)));
        }
        if data == DONE {
            self.saw_done = true;
            return Ok(Step::Done);
        }
        if data.is_empty() {
            return Ok(Step::More);
        }
        let chunk: StreamChunk = serde_json::from_str(data).map_err(|e| {
            tracing::warn!(upstream = %self.upstream.name(), detail = %e, "upstream sent malformed data mid-stream");
            Error::Internal(format!(
                "upstream `{}` sent malformed data mid-stream",
                self.upstream.name()
            ))
        })?;
        if let Some(error) = &chunk.error {
            return Err(self.upstream_error(&UpstreamMessage::from_json(error)));
        }
        for choice in chunk.choices {
            let reason = choice
                .finish_reason
                .as_deref()
                .map(|r| self.finish_reason(choice.index, r));
            let delta = choice.delta.unwrap_or_default();
            self.on_choice(choice.index, delta, reason, out)?;
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        Ok(self.step())
    }

    /// The upstream's stream is over (`[DONE]`, end of body, or [`Step::Done`]):
    /// finishes what can be finished and appends the usage.
    pub(crate) fn finish(
        &mut self,
        request: &GenerationRequest,
        out: &mut Vec<GenerationEvent>,
    ) -> Result<()> {
        // With one choice, `[DONE]` alone is merely an empty answer.
        let missing = self.choices.iter().filter(|c| !c.seen).count();
        if missing > 0 && self.saw_done && self.choices.len() > 1 {
            return Err(Error::Internal(format!(
                "upstream `{}` answered {} of {} choices; does it support n > 1?",
                self.upstream.name(),
                self.choices.len() - missing,
                self.choices.len()
            )));
        }
        let unfinished = self.choices.iter().any(|c| !c.finished);
        if unfinished && !self.saw_done {
            return Err(Error::Unavailable(format!(
                "upstream `{}` closed the stream before the generation finished",
                self.upstream.name()
            )));
        }
        // `[DONE]` without a finish_reason: tolerated (some servers omit it).
        for index in 0..self.choices.len() {
            let called = self.choices[index].calls.is_empty();
            let reason = if called {
                FinishReason::Stop
            } else {
                FinishReason::ToolCalls
            };
            self.end_choice(index, reason, out);
        }
        out.push(GenerationEvent::Usage(self.usage(request)));
        Ok(())
    }

    /// The finish reason of an upstream value; an unknown one is logged
    /// and read as the end it most likely is.
    fn finish_reason(&self, index: u32, raw: &str) -> FinishReason {
        if let Some(reason) = finish_reason(raw) {
            return reason;
        }
        let called = self
            .choices
            .get(index as usize)
            .is_some_and(|c| !c.calls.is_empty());
        let reason = if called {
            FinishReason::ToolCalls
        } else {
            FinishReason::Stop
        };
        tracing::warn!(
            upstream = %self.upstream.name(),
            finish_reason = %raw.escape_debug(),
            mapped = ?reason,
            "upstream sent an unknown finish_reason"
        );
        reason
    }

    /// Counts `text` as generated tokens; false when the choice has gone
    /// past `max_tokens` (every non-empty piece holds at least one token).
    fn count(&mut self, i: usize, text: &str) -> bool {
        let tokens = saturate(self.tokenizer.count(text)).max(1);
        self.counted_tokens = self.counted_tokens.saturating_add(tokens);
        self.meter.add_completion(tokens);
        let Some(state) = self.choices.get_mut(i) else {
            return false;
        };
        state.chunks += 1;
        state.chunks <= self.max_tokens
    }

    /// Passes on what a delta carries beside its content: reasoning,
    /// refusal and tool-call pieces. False when `max_tokens` cut the choice.
    fn on_extras(
        &mut self,
        index: u32,
        delta: &mut ChunkDelta,
        out: &mut Vec<GenerationEvent>,
    ) -> Result<bool> {
        let i = index as usize;
        let reasoning = delta
            .reasoning_content
            .take()
            .into_iter()
            .chain(delta.reasoning.take())
            .filter(|t| !t.is_empty());
        for text in reasoning {
            if !self.count(i, &text) {
                return Ok(false);
            }
            out.push(GenerationEvent::Reasoning {
                choice: index,
                text,
            });
        }
        if let Some(text) = delta.refusal.take().filter(|t| !t.is_empty()) {
            if !self.count(i, &text) {
                return Ok(false);
            }
            out.push(GenerationEvent::Refusal {
                choice: index,
                text,
            });
        }
        for piece in std::mem::take(&mut delta.tool_calls) {
            let function = piece.function.unwrap_or_default();
            let arguments = function.arguments.unwrap_or_default();
            let Some(state) = self.choices.get_mut(i) else {
                break;
            };
            let first = !state.calls.contains(&piece.index);
            if first && state.calls.len() >= MAX_CALLS_PER_CHOICE {
                return Err(Error::Internal(format!(
                    "upstream `{}` made more than {MAX_CALLS_PER_CHOICE} tool calls in one choice",
                    self.upstream.name()
                )));
            }
            state.calls.insert(piece.index);
            let call = if first {
                ToolCallDelta {
                    index: piece.index,
                    id: piece
                        .id
                        .filter(|id| !id.is_empty())
                        .unwrap_or_else(|| format!("call_{}", uuid::Uuid::new_v4().simple())),
                    name: function.name.unwrap_or_default(),
                    arguments,
                }
            } else if arguments.is_empty() {
                continue;
            } else {
                ToolCallDelta {
                    index: piece.index,
                    arguments,
                    ..ToolCallDelta::default()
                }
            };
            if !call.arguments.is_empty() && !self.count(i, &call.arguments) {
                return Ok(false);
            }
            out.push(GenerationEvent::ToolCall {
                choice: index,
                call: Box::new(call),
            });
        }
        Ok(true)
    }

    fn on_choice(
        &mut self,
        index: u32,
        mut delta: ChunkDelta,
        reason: Option<FinishReason>,
        out: &mut Vec<GenerationEvent>,
    ) -> Result<()> {
        let i = index as usize;
        let Some(state) = self.choices.get_mut(i) else {
            return Err(Error::Internal(format!(
                "upstream `{}` sent choice {index}, but only {} were asked for",
                self.upstream.name(),
                self.choices.len()
            )));
        };
        state.seen = true;
        state.upstream_finished |= reason.is_some();
        if state.finished {
            return Ok(());
        }
        if !self.on_extras(index, &mut delta, out)? {
            self.end_choice(i, FinishReason::Length, out);
            return Ok(());
        }
        let content = delta.content.unwrap_or_default();
        if !content.is_empty() {
            if !self.count(i, &content) {
                self.end_choice(i, FinishReason::Length, out);
                return Ok(());
            }
            let Some(state) = self.choices.get_mut(i) else {
                return Ok(());
            };
            match state.stop.push(&content) {
                Filtered::Pass(text) => push_delta(out, index, text),
                Filtered::Stopped(text) => {
                    push_delta(out, index, text);
                    state.finished = true;
                    out.push(GenerationEvent::Finished {
                        choice: index,
                        reason: FinishReason::Stop,
                    });
                    return Ok(());
                }
            }
        }
        if let Some(reason) = reason {
            self.end_choice(i, reason, out);
        }
        Ok(())
    }

    /// Ends choice `i` with `reason` unless it has ended: releases the text
    /// its stop filter held back, then sends `Finished`.
    fn end_choice(&mut self, i: usize, reason: FinishReason, out: &mut Vec<GenerationEvent>) {
        let Some(state) = self.choices.get_mut(i) else {
            return;
        };
        if state.finished {
            return;
        }
        state.finished = true;
        let choice = saturate(i);
        push_delta(out, choice, state.stop.finish());
        out.push(GenerationEvent::Finished { choice, reason });
    }

    /// Done when every choice has ended and nothing more is worth waiting
    /// for: the usage has come, or some choice was cut here while the
    /// upstream was still generating it (then closing the connection at once
    /// stops that waste, and the usage is counted here instead).
    fn step(&self) -> Step {
        let all_finished = self.choices.iter().all(|c| c.finished);
        let cut_here = self.choices.iter().any(|c| !c.upstream_finished);
        if all_finished && (self.usage.is_some() || cut_here) {
            Step::Done
        } else {
            Step::More
        }
    }

    /// The upstream's usage when it sent one, else our own count; the
    /// meter keeps it.
    fn usage(&self, request: &GenerationRequest) -> Usage {
        let usage = match self.usage {
            Some(usage) => Usage {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
            },
            None => Usage {
                prompt_tokens: request.prompt_tokens_with(&self.tokenizer),
                completion_tokens: self.counted_tokens,
            },
        };
        self.meter.set(usage);
        usage
    }

    /// An upstream's error event: its explanation, redacted, for the
    /// client; the whole of it in the log.
    fn upstream_error(&self, said: &UpstreamMessage) -> Error {
        let name = self.upstream.name();
        tracing::warn!(upstream = %name, detail = %self.upstream.scrub(&said.message), "upstream failed mid-stream");
        let reason = said
            .explained
            .then(|| self.upstream.reason(&said.message))
            .flatten()
            .unwrap_or_else(|| "an error event".to_owned());
        Error::Unavailable(format!("upstream `{name}` failed mid-stream: {reason}"))
    }
}

fn push_delta(out: &mut Vec<GenerationEvent>, choice: u32, text: String) {
    if !text.is_empty() {
        out.push(GenerationEvent::Delta { choice, text });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::llm::ChatMessage;

    fn request(n: u32, max_tokens: u32, stop: &[&str]) -> GenerationRequest {
        GenerationRequest {
            model: "m".into(),
            messages: vec![ChatMessage::user("hello")],
            max_tokens,
            temperature: None,
            stop: stop.iter().map(|s| s.to_string()).collect(),
            n,
            ..GenerationRequest::default()
        }
    }

    fn chunk(index: u32, content: &str, finish: Option<&str>) -> String {
        serde_json::json!({
            "choices": [{"index": index, "delta": {"content": content}, "finish_reason": finish}]
        })
        .to_string()
    }

    /// Feeds `events`, then finishes; returns the events and the outcome.
    fn run(request: &GenerationRequest, events: &[String]) -> (Vec<GenerationEvent>, Result<Step>) {
        let mut decoder =
            ChunkDecoder::new(&Redactor::new("up", "", None), request, Tokenizer::cl100k());
        let mut out = Vec::new();
        for data in events {
            match decoder.on_event("", data, &mut out) {
                Ok(Step::More) => {}
                Ok(Step::Done) => break,
                Err(e) => return (out, Err(e)),
            }
        }
        let end = decoder.finish(request, &mut out).map(|()| Step::Done);
        (out, end)
    }

    fn delta(choice: u32, text: &str) -> GenerationEvent {
        GenerationEvent::Delta {
            choice,
            text: text.into(),
        }
    }

    fn finished(choice: u32, reason: FinishReason) -> GenerationEvent {
        GenerationEvent::Finished { choice, reason }
    }

    #[test]
    fn passes_chunks_through_and_uses_upstream_usage() {
        let r = request(1, 100, &[]);
        let (out, end) = run(
            &r,
            &[
                chunk(0, "", None),
                chunk(0, "Hel", None),
                chunk(0, "lo 世界", Some("stop")),
                r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}"#.into(),
            ],
        );
        assert!(end.is_ok());
        assert_eq!(
            out,
            [
                delta(0, "Hel"),
                delta(0, "lo 世界"),
                finished(0, FinishReason::Stop),
                GenerationEvent::Usage(Usage {
                    prompt_tokens: 7,
                    completion_tokens: 3
                })
            ]
        );
    }

    #[test]
    fn counts_usage_when_the_upstream_sends_none() {
        let r = request(1, 100, &[]);
        let (out, end) = run(&r, &[chunk(0, "Hello world", Some("length")), DONE.into()]);
        assert!(end.is_ok());
        let tokenizer = Tokenizer::cl100k();
        assert_eq!(
            out.last(),
            Some(&GenerationEvent::Usage(Usage {
                prompt_tokens: tokenizer.prompt_tokens(&r.messages),
                completion_tokens: 2,
            }))
        );
        assert!(out.contains(&finished(0, FinishReason::Length)));
    }

    #[test]
    fn a_stop_sequence_spanning_chunks_is_cut_and_reading_stops() {
        let r = request(1, 100, &["END"]);
        let (out, end) = run(
            &r,
            &[
                chunk(0, "abc E", None),
                chunk(0, "N", None),
                chunk(0, "D more", None),
                chunk(0, "never read", None),
            ],
        );
        assert!(end.is_ok());
        let text: String = out
            .iter()
            .filter_map(|e| match e {
                GenerationEvent::Delta { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, "abc ");
        assert!(out.contains(&finished(0, FinishReason::Stop)));
        assert!(matches!(out.last(), Some(GenerationEvent::Usage(_))));
    }

    #[test]
    fn interleaved_choices_each_finish_once() {
        let r = request(2, 100, &[]);
        let (out, end) = run(
            &r,
            &[
                chunk(1, "b", None),
                chunk(0, "a", None),
                chunk(0, "", Some("stop")),
                chunk(1, "", Some("length")),
                DONE.into(),
            ],
        );
        assert!(end.is_ok());
        assert_eq!(
            out[..4],
            [
                delta(1, "b"),
                delta(0, "a"),
                finished(0, FinishReason::Stop),
                finished(1, FinishReason::Length)
            ]
        );
    }

    #[test]
    fn an_upstream_that_overruns_max_tokens_is_cut() {
        let r = request(1, 2, &[]);
        let (out, end) = run(
            &r,
            &[
                chunk(0, "a", None),
                chunk(0, "b", None),
                chunk(0, "c", None),
            ],
        );
        assert!(end.is_ok());
        assert_eq!(
            out[..3],
            [
                delta(0, "a"),
                delta(0, "b"),
                finished(0, FinishReason::Length)
            ]
        );
    }

    #[test]
    fn error_events_and_malformed_data_end_with_an_error_after_the_text() {
        let r = request(1, 100, &[]);
        let (out, end) = run(
            &r,
            &[
                chunk(0, "partial", None),
                r#"{"error":{"message":"GPU fell over"}}"#.into(),
            ],
        );
        assert_eq!(out, [delta(0, "partial")]);
        let error = end.expect_err("error");
        assert_eq!(error.kind(), ErrorKind::Unavailable);
        assert!(error.to_string().contains("GPU fell over"), "{error}");

        let (_, end) = run(&r, &[chunk(0, "x", None), "{not json".into()]);
        assert_eq!(end.expect_err("malformed").kind(), ErrorKind::Internal);

        let mut decoder =
            ChunkDecoder::new(&Redactor::new("up", "", None), &r, Tokenizer::cl100k());
        let error = decoder
            .on_event("error", r#"{"message":"overloaded"}"#, &mut Vec::new())
            .expect_err("error event");
        assert!(error.to_string().contains("overloaded"), "{error}");
    }

    #[test]
    fn a_stream_that_breaks_off_is_unavailable() {
        let r = request(1, 100, &[]);
        let (_, end) = run(&r, &[chunk(0, "half", None)]);
        assert_eq!(end.expect_err("cut").kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn missing_choices_and_unknown_indexes_are_errors() {
        let r = request(2, 100, &[]);
        let (_, end) = run(&r, &[chunk(0, "only one", Some("stop")), DONE.into()]);
        let error = end.expect_err("missing");
        assert!(error.to_string().contains("n > 1"), "{error}");
        let (_, end) = run(&r, &[chunk(5, "x", None)]);
        assert_eq!(end.expect_err("index").kind(), ErrorKind::Internal);
    }

    #[test]
    fn done_alone_is_an_empty_answer() {
        let r = request(1, 100, &[]);
        let (out, end) = run(&r, &[DONE.into()]);
        assert!(end.is_ok());
        assert_eq!(out[0], finished(0, FinishReason::Stop));
    }

    #[test]
    fn done_without_finish_reason_finishes_with_stop() {
        let r = request(1, 100, &["ZZZ"]);
        let (out, end) = run(&r, &[chunk(0, "ab Z", None), DONE.into()]);
        assert!(end.is_ok());
        assert_eq!(
            out[..3],
            [
                delta(0, "ab "),
                delta(0, "Z"),
                finished(0, FinishReason::Stop)
            ]
        );
    }
}
