//! The built-in `tools` model: calls tools deterministically, then answers
//! from their results, so the whole agent loop (model calls a tool, client
//! runs it, sends the result, the answer streams) runs and is tested with
//! no network and no GPU.
//!
//! What it does with a conversation, checked in this order:
//! 1. it ends with `tool` messages: it answers from them, naming each
//!    call's function and quoting its result;
//! 2. the request has tools and `tool_choice` is not `none`: it calls the
//!    tools the last user message asks for — a tool is asked for when the
//!    message contains its name, or a word of its name of at least four
//!    letters (`get_weather` is asked for by "weather?") — or the named
//!    function of `tool_choice`, or (with `required`) the first tool when
//!    none is asked for. With `parallel_tool_calls: false` it calls the
//!    first one only. Each string argument the schema requires is the last
//!    user message; numbers are 0, booleans false;
//! 3. otherwise it says how to make it call a tool.
//!
//! Arguments stream in fragments of one cl100k_base token, paced like the
//! other built-in models (`--mock-token-delay`), and the choice finishes
//! with TOOL_CALLS; answers stream through the built-in text path.

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, stream};
use serde_json::{Map, Value};

use super::{
    Backend, ChatMessage, FinishReason, GenerationEvent, GenerationRequest, GenerationStream, Role,
    Tool, ToolCallDelta, ToolChoice, Usage, UsageMeter, mock::MockBackend,
};
use crate::{
    metrics::Metrics,
    tokenizer::{Piece, Tokenizer},
};

/// Name of the model that calls tools.
pub(crate) const TOOLS: &str = "tools";

/// Shortest word of a tool's name that asks for it.
const MIN_WORD: usize = 4;

/// Serves the `tools` model.
#[derive(Debug, Clone)]
pub(crate) struct ToolModel {
    text: MockBackend,
    tokenizer: Tokenizer,
    token_delay: Duration,
    metrics: Arc<Metrics>,
}

impl ToolModel {
    /// The model, pacing tokens `token_delay` apart.
    pub(crate) fn new(token_delay: Duration, tokenizer: Tokenizer, metrics: Arc<Metrics>) -> Self {
        Self {
            text: MockBackend::new(token_delay, tokenizer, metrics.clone()),
            tokenizer,
            token_delay,
            metrics,
        }
    }

    /// Streams `calls` as tool-call pieces for every choice, then the usage.
    fn call(&self, calls: &[PlannedCall], request: GenerationRequest) -> GenerationStream {
        let prompt_tokens = request.prompt_tokens_with(&self.tokenizer);
        request.usage.set_prompt(prompt_tokens);
        let completion = request.usage.clone();
        let pieces: Arc<Vec<_>> = Arc::new(
            calls
                .iter()
                .map(|call| (call.name.clone(), self.tokenizer.pieces(&call.arguments)))
                .collect(),
        );
        let choices: Vec<_> = (0..request.n.max(1))
            .map(|choice| {
                choice_calls(ChoiceCalls {
                    choice,
                    calls: pieces.clone(),
                    max_tokens: request.max_tokens,
                    token_delay: self.token_delay,
                    metrics: self.metrics.clone(),
                    completion: completion.clone(),
                })
                .boxed()
            })
            .collect();
        let usage = stream::once(async move {
            Ok(GenerationEvent::Usage(Usage {
                prompt_tokens,
                completion_tokens: completion.completion_tokens(),
            }))
        });
        stream::select_all(choices).chain(usage).boxed()
    }
}

impl Backend for ToolModel {
    fn models(&self) -> Vec<String> {
        vec![TOOLS.to_owned()]
    }

    fn generate(&self, request: GenerationRequest) -> GenerationStream {
        match plan(&request) {
            Plan::Answer(text) => self.text.recite(&text, request),
            Plan::Call(calls) => self.call(&calls, request),
        }
    }
}

/// Everything one choice needs to stream its calls.
struct ChoiceCalls {
    choice: u32,
    /// Each call's function name and its arguments in token pieces.
    calls: Arc<Vec<(String, Vec<Piece>)>>,
    max_tokens: u32,
    token_delay: Duration,
    metrics: Arc<Metrics>,
    completion: UsageMeter,
}

/// One choice's calls: per call a first piece with id and name, then one
/// piece per argument token; then `Finished` (TOOL_CALLS, or LENGTH when
/// `max_tokens` ran out mid-arguments). Pulled: nothing runs ahead of the
/// reader, and dropping the stream drops the live-generation guard.
fn choice_calls(spec: ChoiceCalls) -> impl futures::Stream<Item = crate::Result<GenerationEvent>> {
    async_stream::stream! {
        let _live = spec.metrics.generation();
        let choice = spec.choice;
        let mut produced = 0u32;
        let mut reason = FinishReason::ToolCalls;
        'calls: for (index, (name, pieces)) in spec.calls.iter().enumerate() {
            let index = crate::tokenizer::saturate(index);
            let call = ToolCallDelta {
                index,
                id: format!("call_{}", uuid::Uuid::new_v4().simple()),
                name: name.clone(),
                arguments: String::new(),
            };
            yield Ok(GenerationEvent::ToolCall { choice, call: Box::new(call) });
            for piece in pieces {
                if produced.saturating_add(piece.tokens) > spec.max_tokens {
                    reason = FinishReason::Length;
                    break 'calls;
                }
                if !spec.token_delay.is_zero() {
                    tokio::time::sleep(spec.token_delay * piece.tokens).await;
                }
                produced = produced.saturating_add(piece.tokens);
                spec.metrics.add_tokens(u64::from(piece.tokens));
                spec.completion.add_completion(piece.tokens);
                let call = ToolCallDelta {
                    index,
                    arguments: piece.text.clone(),
                    ..ToolCallDelta::default()
                };
                yield Ok(GenerationEvent::ToolCall { choice, call: Box::new(call) });
            }
        }
        yield Ok(GenerationEvent::Finished { choice, reason });
    }
}

/// What the model does with a request.
#[derive(Debug, PartialEq)]
enum Plan {
    /// Answer with this text.
    Answer(String),
    /// Call these tools.
    Call(Vec<PlannedCall>),
}

/// A call the model will make.
#[derive(Debug, PartialEq)]
struct PlannedCall {
    name: String,
    arguments: String,
}

fn plan(request: &GenerationRequest) -> Plan {
    let messages = &request.messages;
    let results = messages
        .iter()
        .rev()
        .take_while(|m| m.role == Role::Tool)
        .count();
    if results > 0 {
        let first = messages.len().saturating_sub(results);
        return Plan::Answer(answer_from(&messages[..first], &messages[first..]));
    }
    let question = messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map_or("", |m| m.content.trim());
    let chosen = choose(request, question);
    if chosen.is_empty() {
        return Plan::Answer(format!(
            "I am agentstream's built-in tools model. Give me tools and ask for one by name \
             (you said: \u{201c}{question}\u{201d}), and I will call it."
        ));
    }
    Plan::Call(
        chosen
            .into_iter()
            .map(|tool| PlannedCall {
                name: tool.name.clone(),
                arguments: arguments(tool, question),
            })
            .collect(),
    )
}

/// The tools to call for `question`, in the request's order.
fn choose<'a>(request: &'a GenerationRequest, question: &str) -> Vec<&'a Tool> {
    let tools = &request.tools;
    let mut chosen: Vec<&Tool> = match &request.tool_choice {
        Some(ToolChoice::None) => return Vec::new(),
        Some(ToolChoice::Function(name)) => tools.iter().filter(|t| &t.name == name).collect(),
        _ => tools
            .iter()
            .filter(|t| asks_for(question, &t.name))
            .collect(),
    };
    if chosen.is_empty() && request.tool_choice == Some(ToolChoice::Required) {
        chosen.extend(tools.first());
    }
    if request.parallel_tool_calls == Some(false) {
        chosen.truncate(1);
    }
    chosen
}

/// Whether `question` asks for the tool `name`.
fn asks_for(question: &str, name: &str) -> bool {
    let question = question.to_lowercase();
    let name = name.to_lowercase();
    question.contains(&name)
        || name
            .split(['_', '-'])
            .any(|word| word.len() >= MIN_WORD && question.contains(word))
}

/// The arguments of a call to `tool`: every required property (every
/// property when none is marked required) gets a value of its type; strings
/// get the question.
fn arguments(tool: &Tool, question: &str) -> String {
    let schema = tool.parameters.as_ref();
    let properties = schema
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object);
    let required: Option<Vec<&str>> = schema
        .and_then(|s| s.get("required"))
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect());
    let mut arguments = Map::new();
    for (name, property) in properties.into_iter().flatten() {
        if required
            .as_ref()
            .is_some_and(|r| !r.contains(&name.as_str()))
        {
            continue;
        }
        let value = match property.get("type").and_then(Value::as_str) {
            Some("integer" | "number") => Value::from(0),
            Some("boolean") => Value::Bool(false),
            Some("array") => Value::Array(Vec::new()),
            Some("object") => Value::Object(Map::new()),
            _ => Value::String(question.to_owned()),
        };
        arguments.insert(name.clone(), value);
    }
    Value::Object(arguments).to_string()
}

/// The answer from the tool results that end the conversation.
fn answer_from(earlier: &[ChatMessage], results: &[ChatMessage]) -> String {
    let lines: Vec<String> = results
        .iter()
        .map(|result| {
            let name = earlier
                .iter()
                .rev()
                .flat_map(|m| &m.tool_calls)
                .find(|call| call.id == result.tool_call_id)
                .map_or("the tool", |call| call.name.as_str());
            format!("{name} returned \u{201c}{}\u{201d}", result.content.trim())
        })
        .collect();
    format!("From the tool results: {}.", lines.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::ToolCall;
    use serde_json::json;

    fn weather() -> Tool {
        Tool {
            name: "get_weather".into(),
            description: "Current weather of a city".into(),
            parameters: Some(json!({
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"]
            })),
        }
    }

    fn request(question: &str, tools: Vec<Tool>) -> GenerationRequest {
        GenerationRequest {
            model: TOOLS.into(),
            messages: vec![ChatMessage::user(question)],
            max_tokens: 100,
            n: 1,
            tools,
            ..GenerationRequest::default()
        }
    }

    #[test]
    fn calls_the_tool_the_question_asks_for() {
        let r = request("What is the weather in Paris?", vec![weather()]);
        assert_eq!(
            plan(&r),
            Plan::Call(vec![PlannedCall {
                name: "get_weather".into(),
                arguments: r#"{"city":"What is the weather in Paris?"}"#.into(),
            }])
        );
        let r = request("Hello", vec![weather()]);
        assert!(matches!(plan(&r), Plan::Answer(_)));
    }

    #[test]
    fn tool_choice_and_parallel_calls_are_obeyed() {
        let clock = Tool {
            name: "clock".into(),
            description: String::new(),
            parameters: None,
        };
        let mut r = request("weather and clock", vec![weather(), clock]);
        assert!(matches!(plan(&r), Plan::Call(calls) if calls.len() == 2));
        r.parallel_tool_calls = Some(false);
        assert!(matches!(plan(&r), Plan::Call(calls) if calls.len() == 1));
        r.tool_choice = Some(ToolChoice::None);
        assert!(matches!(plan(&r), Plan::Answer(_)));
        let mut r = request("nothing asked", vec![weather()]);
        r.tool_choice = Some(ToolChoice::Required);
        assert!(matches!(plan(&r), Plan::Call(calls) if calls[0].name == "get_weather"));
    }

    #[test]
    fn answers_from_tool_results() {
        let mut r = request("weather?", vec![weather()]);
        r.messages.push(ChatMessage {
            role: Role::Assistant,
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                name: "get_weather".into(),
                arguments: "{}".into(),
            }],
            ..ChatMessage::default()
        });
        r.messages.push(ChatMessage {
            role: Role::Tool,
            content: "21 °C, sunny".into(),
            tool_call_id: "call_1".into(),
            ..ChatMessage::default()
        });
        assert_eq!(
            plan(&r),
            Plan::Answer(
                "From the tool results: get_weather returned \u{201c}21 °C, sunny\u{201d}.".into()
            )
        );
    }
}
