//! The JSON of the chat-completions protocol, as much of it as we use.
//!
//! Requests are written exactly; responses are read leniently: every field
//! we do not need is ignored and every field we need but may be missing is
//! optional, because vLLM, TGI, Ollama and llama.cpp each omit or add a few.

use serde::{Deserialize, Serialize};

use serde_json::{Value, json};

use crate::llm::{ChatMessage, FinishReason, GenerationRequest, Role, Tool, ToolChoice};

/// Body of `POST {base}/chat/completions`.
#[derive(Debug, Serialize)]
pub struct ChatCompletionRequest<'a> {
    pub model: &'a str,
    pub messages: Vec<WireMessage<'a>>,
    pub stream: bool,
    pub stream_options: StreamOptions,
    pub max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub stop: &'a [String],
    /// Omitted for one choice: some servers reject `n` altogether.
    #[serde(skip_serializing_if = "is_one")]
    pub n: u32,
    /// Omitted when empty, like the two below: servers without tool support
    /// then see the request they always saw.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
}

/// A tool as OpenAI writes it: `{"type":"function","function":{...}}`.
#[derive(Debug, Serialize)]
pub struct WireTool<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: WireFunction<'a>,
}

/// A function definition.
#[derive(Debug, Serialize)]
pub struct WireFunction<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<&'a Value>,
}

impl<'a> From<&'a Tool> for WireTool<'a> {
    fn from(tool: &'a Tool) -> Self {
        Self {
            kind: "function",
            function: WireFunction {
                name: &tool.name,
                description: &tool.description,
                parameters: tool.parameters.as_ref(),
            },
        }
    }
}

/// OpenAI's `tool_choice`: a mode string or the named function.
fn wire_tool_choice(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::None => json!("none"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Function(name) => json!({"type": "function", "function": {"name": name}}),
    }
}

/// One tool call of an assistant message.
#[derive(Debug, Serialize)]
pub struct WireToolCall<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: WireFunctionCall<'a>,
}

/// The function of a tool call.
#[derive(Debug, Serialize)]
pub struct WireFunctionCall<'a> {
    pub name: &'a str,
    pub arguments: &'a str,
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// Asks for the usage chunk at the end of the stream.
#[derive(Debug, Serialize)]
pub struct StreamOptions {
    pub include_usage: bool,
}

/// One message of the conversation.
#[derive(Debug, Serialize)]
pub struct WireMessage<'a> {
    pub role: &'static str,
    /// `null` on an assistant turn that only called tools, as OpenAI writes
    /// it (some servers reject an empty string there).
    pub content: Option<&'a str>,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub name: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<WireToolCall<'a>>,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub tool_call_id: &'a str,
}

impl<'a> ChatCompletionRequest<'a> {
    /// The streaming request for `request`.
    pub fn new(request: &'a GenerationRequest) -> Self {
        Self {
            model: &request.model,
            messages: request.messages.iter().map(WireMessage::from).collect(),
            stream: true,
            stream_options: StreamOptions {
                include_usage: true,
            },
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            stop: &request.stop,
            n: request.n.max(1),
            tools: request.tools.iter().map(WireTool::from).collect(),
            tool_choice: request.tool_choice.as_ref().map(wire_tool_choice),
            parallel_tool_calls: request.parallel_tool_calls,
        }
    }
}

impl<'a> From<&'a ChatMessage> for WireMessage<'a> {
    fn from(message: &'a ChatMessage) -> Self {
        let only_calls = message.role == Role::Assistant
            && message.content.is_empty()
            && !message.tool_calls.is_empty();
        Self {
            role: message.role.as_str(),
            content: (!only_calls).then_some(message.content.as_str()),
            name: &message.name,
            tool_calls: message
                .tool_calls
                .iter()
                .map(|call| WireToolCall {
                    id: &call.id,
                    kind: "function",
                    function: WireFunctionCall {
                        name: &call.name,
                        arguments: &call.arguments,
                    },
                })
                .collect(),
            tool_call_id: &message.tool_call_id,
        }
    }
}

/// One `data:` payload of the stream: a `chat.completion.chunk`, or an error.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct StreamChunk {
    #[serde(deserialize_with = "null_as_empty")]
    pub choices: Vec<ChunkChoice>,
    pub usage: Option<WireUsage>,
    pub error: Option<serde_json::Value>,
}

/// Reads `null` as an empty list (some servers send `"choices": null`).
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// One choice of a chunk.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ChunkChoice {
    pub index: u32,
    pub delta: Option<ChunkDelta>,
    pub finish_reason: Option<String>,
}

/// What a chunk adds to a choice.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ChunkDelta {
    pub content: Option<String>,
    /// DeepSeek's and vLLM's name for the reasoning text.
    pub reasoning_content: Option<String>,
    /// OpenRouter's and newer vLLM's name for it.
    pub reasoning: Option<String>,
    pub refusal: Option<String>,
    #[serde(deserialize_with = "null_as_empty")]
    pub tool_calls: Vec<ToolCallChunk>,
}

/// A piece of a streamed tool call. Servers differ in what they repeat:
/// OpenAI sends `id`, `type` and the name only on a call's first piece,
/// some send empty strings or nulls after, a few repeat them.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ToolCallChunk {
    /// Missing on servers that stream one call at a time (then 0).
    pub index: u32,
    pub id: Option<String>,
    pub function: Option<FunctionChunk>,
}

/// The function part of a tool-call piece.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct FunctionChunk {
    pub name: Option<String>,
    pub arguments: Option<String>,
}

/// Token accounting as the upstream counted it.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(default)]
pub(crate) struct WireUsage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

/// The answer of `GET {base}/models`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ModelList {
    pub data: Vec<ModelEntry>,
}

/// One model of the list.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ModelEntry {
    pub id: String,
}

/// Maps an upstream `finish_reason` faithfully; `None` for a value no
/// known server sends (the caller decides and says so in the log).
/// Beside OpenAI's own values: `function_call` (OpenAI's legacy name),
/// TGI's `eos_token` and `stop_sequence`, and `max_tokens`.
pub(crate) fn finish_reason(reason: &str) -> Option<FinishReason> {
    Some(match reason {
        "stop" | "eos_token" | "eos" | "stop_sequence" | "end_turn" => FinishReason::Stop,
        "length" | "max_tokens" => FinishReason::Length,
        "tool_calls" | "function_call" | "tool_use" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ => return None,
    })
}

/// What an upstream said in an error body or `error` event.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct UpstreamMessage {
    /// Human-readable explanation (may be empty).
    pub message: String,
    /// The request field it blames, when it names one (OpenAI's `param`).
    pub param: Option<String>,
    /// Whether `message` is the upstream's own explanation (a message
    /// field of its JSON) rather than its raw body.
    pub explained: bool,
}

/// Longest upstream explanation passed on, in bytes.
const MAX_MESSAGE_BYTES: usize = 1024;

impl UpstreamMessage {
    /// Reads the explanation out of the shapes servers use:
    /// `{"error": {"message", "param"}}` (OpenAI, vLLM, Ollama, llama.cpp),
    /// `{"error": "..."}` (TGI), `{"message": "..."}` (older vLLM), or text.
    pub(crate) fn parse(body: &str) -> Self {
        let Ok(json) = serde_json::from_str::<serde_json::Value>(body) else {
            return Self::text(body);
        };
        Self::from_json(&json)
    }

    /// Like [`UpstreamMessage::parse`], on JSON already parsed.
    pub(crate) fn from_json(json: &serde_json::Value) -> Self {
        let error = json.get("error").unwrap_or(json);
        let explanation = error
            .get("message")
            .and_then(|m| m.as_str())
            .or_else(|| error.as_str());
        let explained = explanation.is_some();
        let message = explanation
            .map(str::to_owned)
            .unwrap_or_else(|| json.to_string());
        let param = error
            .get("param")
            .and_then(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .map(str::to_owned);
        Self {
            message: truncate(message.trim()),
            param,
            explained,
        }
    }

    fn text(body: &str) -> Self {
        Self {
            message: truncate(body.trim()),
            param: None,
            explained: false,
        }
    }
}

/// `text` cut to [`MAX_MESSAGE_BYTES`] on a character boundary.
fn truncate(text: &str) -> String {
    if text.len() <= MAX_MESSAGE_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::ChatMessage;

    #[test]
    fn the_request_has_the_fields_of_the_protocol() {
        let request = GenerationRequest {
            model: "gpt-4o-mini".into(),
            messages: vec![ChatMessage::system("be brief"), ChatMessage::user("hi")],
            max_tokens: 16,
            temperature: Some(0.5),
            stop: vec!["END".into()],
            n: 2,
            ..GenerationRequest::default()
        };
        let json = serde_json::to_value(ChatCompletionRequest::new(&request)).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "hi"}
                ],
                "stream": true,
                "stream_options": {"include_usage": true},
                "max_tokens": 16,
                "temperature": 0.5,
                "stop": ["END"],
                "n": 2
            })
        );
    }

    #[test]
    fn optional_fields_are_left_out() {
        let request = GenerationRequest {
            model: "m".into(),
            messages: vec![ChatMessage::user("hi")],
            max_tokens: 1,
            temperature: None,
            stop: Vec::new(),
            n: 1,
            ..GenerationRequest::default()
        };
        let json = serde_json::to_value(ChatCompletionRequest::new(&request)).expect("json");
        for absent in ["temperature", "stop", "n"] {
            assert!(json.get(absent).is_none(), "{absent}: {json}");
        }
    }

    #[test]
    fn error_messages_of_every_server_shape() {
        let openai = r#"{"error":{"message":"bad temperature","type":"invalid_request_error","param":"temperature"}}"#;
        assert_eq!(
            UpstreamMessage::parse(openai),
            UpstreamMessage {
                message: "bad temperature".into(),
                param: Some("temperature".into()),
                explained: true,
            }
        );
        let tgi = r#"{"error":"Input validation error","error_type":"validation"}"#;
        assert_eq!(
            UpstreamMessage::parse(tgi).message,
            "Input validation error"
        );
        let vllm_old = r#"{"object":"error","message":"too long"}"#;
        assert_eq!(UpstreamMessage::parse(vllm_old).message, "too long");
        assert_eq!(
            UpstreamMessage::parse("Bad Gateway\n").message,
            "Bad Gateway"
        );
        let long = "é".repeat(2000);
        assert!(UpstreamMessage::parse(&long).message.len() <= MAX_MESSAGE_BYTES + 3);
    }

    #[test]
    fn chunks_parse_leniently() {
        let chunk: StreamChunk = serde_json::from_str(
            r#"{"id":"x","object":"chat.completion.chunk","choices":[{"index":1,"delta":{"role":"assistant","content":"Hi"},"logprobs":null,"finish_reason":null}]}"#,
        )
        .expect("chunk");
        assert_eq!(chunk.choices[0].index, 1);
        assert_eq!(
            chunk.choices[0]
                .delta
                .as_ref()
                .and_then(|d| d.content.as_deref()),
            Some("Hi")
        );
        let usage: StreamChunk = serde_json::from_str(
            r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}"#,
        )
        .expect("usage");
        assert_eq!(usage.usage.map(|u| u.completion_tokens), Some(3));
    }
}
