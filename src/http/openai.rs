//! OpenAI's Chat Completions wire format: the request as the official SDKs
//! send it, the chunks and completions as OpenAI sends them, and their
//! conversion to and from the core's chat types.
//!
//! Requests are read leniently where OpenAI's own clients are (unknown
//! fields are ignored: the SDKs send many this server has no use for) and
//! strictly where a value would change the answer (an unknown role or a
//! content part that is not text is an error naming its field). Responses
//! carry exactly OpenAI's shapes: `object`, `finish_reason: null` on every
//! chunk but a choice's last, `delta.role` only on a choice's first chunk,
//! and the usage chunk with `choices: []`.

use serde::{Deserialize, Serialize};

use serde_json::Value;

use crate::{
    chat::{
        Chat, ChatChunk, ChatDraft, ChoiceDelta, Completion, CompletionHeader, MessageDraft,
        RoleDraft, ToolCallDraft, ToolChoiceDraft, ToolDraft,
    },
    error::{Error, FieldViolation},
    llm::{FinishReason, Role, ToolCallDelta, ToolChoice, Usage},
};

/// The body of `POST /v1/chat/completions`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ChatCompletionRequest {
    /// The model; absent or empty for the server's default.
    #[serde(default)]
    pub model: Option<String>,
    /// The conversation.
    #[serde(default)]
    pub messages: Vec<RequestMessage>,
    /// Most tokens per choice (the older name).
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Most tokens per choice (the newer name; wins over `max_tokens`).
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    /// Sampling temperature, 0 to 2.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// One stop sequence or several.
    #[serde(default)]
    pub stop: Option<Stop>,
    /// Number of choices.
    #[serde(default)]
    pub n: Option<u32>,
    /// Stream chunks (true) or answer one completion (false, the default).
    #[serde(default)]
    pub stream: Option<bool>,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Functions the model may call.
    #[serde(default)]
    pub tools: Option<Vec<RequestTool>>,
    /// `"auto"`, `"none"`, `"required"` or
    /// `{"type":"function","function":{"name":...}}`; read by hand (see
    /// [`tool_choice`]) so that a wrong value is named precisely.
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// Whether the model may call several tools in one turn.
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// Keep the stream for resuming (agentstream's extension; needs
    /// `stream: true`).
    #[serde(default)]
    pub resumable: Option<bool>,
    // `user`, `seed`, `logprobs` and the rest are ignored, as unknown
    // fields are: OpenAI's clients send them freely.
}

/// One entry of `tools`.
#[derive(Debug, Deserialize)]
pub(crate) struct RequestTool {
    /// `"function"` (the core refuses anything else, naming `tools[i].type`).
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The function; absent reads as a nameless one, which the core names.
    #[serde(default)]
    pub function: Option<RequestFunction>,
}

/// `tools[i].function`. `strict` and other extras are ignored.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RequestFunction {
    /// The function's name.
    #[serde(default)]
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: Option<String>,
    /// The JSON Schema of its arguments.
    #[serde(default)]
    pub parameters: Option<Value>,
}

/// One entry of an assistant message's `tool_calls`.
#[derive(Debug, Deserialize)]
pub(crate) struct RequestToolCall {
    /// The call's id, answered by a tool message's `tool_call_id`.
    #[serde(default)]
    pub id: String,
    /// `"function"`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The function called and its arguments.
    #[serde(default)]
    pub function: Option<RequestFunctionCall>,
}

/// `tool_calls[j].function` of a message.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RequestFunctionCall {
    /// The function's name.
    #[serde(default)]
    pub name: String,
    /// Its arguments, a JSON text (as OpenAI sends them: a string).
    #[serde(default)]
    pub arguments: Option<String>,
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamOptions {
    /// Send a last chunk with the usage.
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// `stop`: a string or an array of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Stop {
    /// One sequence.
    One(String),
    /// Several sequences.
    Many(Vec<String>),
}

/// One message of the conversation.
#[derive(Debug, Deserialize)]
pub(crate) struct RequestMessage {
    /// Who wrote it: `system`, `developer`, `user`, `assistant` or `tool`;
    /// anything else is reported by the core's validation, with the other
    /// violations of the request.
    pub role: String,
    /// The text, or an array of content parts; absent or null is empty.
    #[serde(default)]
    pub content: Option<Content>,
    /// The author's name.
    #[serde(default)]
    pub name: Option<String>,
    /// An assistant turn's tool calls.
    #[serde(default)]
    pub tool_calls: Option<Vec<RequestToolCall>>,
    /// A `tool` message: the id of the call it answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

/// A message's content.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Content {
    /// Plain text.
    Text(String),
    /// Content parts; only `{"type":"text","text":...}` is served.
    Parts(Vec<ContentPart>),
}

/// One content part.
#[derive(Debug, Deserialize)]
pub(crate) struct ContentPart {
    /// The part's type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default)]
    pub text: Option<String>,
}

impl ChatCompletionRequest {
    /// Whether the client asked for a stream.
    pub(crate) fn stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether the client asked for a resumable stream.
    pub(crate) fn resumable(&self) -> bool {
        self.resumable.unwrap_or(false)
    }

    /// How the core's field paths read in this request's JSON.
    pub(crate) fn param_names(&self) -> ParamNames {
        ParamNames {
            max_completion_tokens: self.max_completion_tokens.is_some(),
        }
    }

    /// Validates the request and starts its completion on `chat`: the
    /// core's [`ChatDraft`], so every limit and check is the core's; the
    /// fields it blames are then named as OpenAI's JSON names them.
    /// `include_usage` as the response needs it (a non-streaming completion
    /// always reports its usage).
    pub(crate) fn start(self, chat: &Chat, include_usage: bool) -> Result<Completion, Error> {
        let names = self.param_names();
        let draft = self.into_draft(include_usage)?;
        chat.start(draft).map_err(|error| names.rename(error))
    }

    /// The core's draft of this request. What only OpenAI's JSON can get
    /// wrong (a content part that is not text, a `tool_choice` of the wrong
    /// shape) is refused here, naming its field; every other rule is the
    /// core's.
    pub(crate) fn into_draft(self, include_usage: bool) -> Result<ChatDraft, Error> {
        let mut violations = Vec::new();
        let messages = self
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| m.into_draft(i, &mut violations))
            .collect();
        let tool_choice = self
            .tool_choice
            .and_then(|choice| tool_choice(choice, &mut violations));
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        Ok(ChatDraft {
            messages,
            model: self.model.unwrap_or_default(),
            max_tokens: self.max_completion_tokens.or(self.max_tokens).unwrap_or(0),
            temperature: self.temperature,
            stop: match self.stop {
                None => Vec::new(),
                Some(Stop::One(stop)) => vec![stop],
                Some(Stop::Many(stops)) => stops,
            },
            n: self.n.unwrap_or(1),
            include_usage,
            tools: self
                .tools
                .unwrap_or_default()
                .into_iter()
                .map(RequestTool::into_draft)
                .collect(),
            tool_choice,
            parallel_tool_calls: self.parallel_tool_calls,
        })
    }

    /// Whether the client asked for the usage chunk.
    pub(crate) fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }
}

impl RequestMessage {
    fn into_draft(self, index: usize, violations: &mut Vec<FieldViolation>) -> MessageDraft {
        let role = match self.role.as_str() {
            "system" | "developer" => RoleDraft::Known(Role::System),
            "user" => RoleDraft::Known(Role::User),
            "assistant" => RoleDraft::Known(Role::Assistant),
            "tool" => RoleDraft::Known(Role::Tool),
            _ => RoleDraft::Unknown(self.role),
        };
        let content = match self.content {
            None => String::new(),
            Some(Content::Text(text)) => text,
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for (j, part) in parts.into_iter().enumerate() {
                    match (part.kind.as_str(), part.text) {
                        ("text", Some(part)) => text.push_str(&part),
                        ("text", None) => violations.push(FieldViolation::new(
                            format!("messages[{index}].content[{j}].text"),
                            "required for a text part",
                        )),
                        (other, _) => violations.push(FieldViolation::new(
                            format!("messages[{index}].content[{j}].type"),
                            format!(
                                "`{}` parts are not served; only `text`",
                                other.escape_debug()
                            ),
                        )),
                    }
                }
                text
            }
        };
        MessageDraft {
            role,
            content,
            name: self.name.unwrap_or_default(),
            tool_calls: self
                .tool_calls
                .unwrap_or_default()
                .into_iter()
                .map(RequestToolCall::into_draft)
                .collect(),
            tool_call_id: self.tool_call_id.unwrap_or_default(),
        }
    }
}

impl RequestTool {
    fn into_draft(self) -> ToolDraft {
        let function = self.function.unwrap_or_default();
        ToolDraft {
            kind: self.kind,
            name: function.name,
            description: function.description.unwrap_or_default(),
            parameters: function.parameters,
        }
    }
}

impl RequestToolCall {
    fn into_draft(self) -> ToolCallDraft {
        let function = self.function.unwrap_or_default();
        ToolCallDraft {
            id: self.id,
            kind: self.kind,
            name: function.name,
            arguments: function.arguments.unwrap_or_default(),
        }
    }
}

/// `tool_choice` as the core's draft: a mode, or a named function. A mode
/// the core does not know goes to it as unknown (it names the field); a
/// value of the wrong shape is a violation here. `null` is unset.
fn tool_choice(value: Value, violations: &mut Vec<FieldViolation>) -> Option<ToolChoiceDraft> {
    match value {
        Value::Null => None,
        Value::String(mode) => Some(match mode.as_str() {
            "auto" => ToolChoiceDraft::Known(ToolChoice::Auto),
            "none" => ToolChoiceDraft::Known(ToolChoice::None),
            "required" => ToolChoiceDraft::Known(ToolChoice::Required),
            _ => ToolChoiceDraft::Unknown(format!("`{}`", mode.escape_debug())),
        }),
        Value::Object(mut object) => {
            let kind = object.remove("type");
            if kind.as_ref().and_then(Value::as_str) != Some("function") {
                violations.push(FieldViolation::new(
                    "tool_choice.type",
                    "must be \"function\" (with `function.name`)",
                ));
                return None;
            }
            match object
                .remove("function")
                .and_then(|mut f| f.get_mut("name").map(Value::take))
            {
                Some(Value::String(name)) => {
                    Some(ToolChoiceDraft::Known(ToolChoice::Function(name)))
                }
                _ => {
                    violations.push(FieldViolation::new(
                        "tool_choice.function.name",
                        "required: the name of one of the request's tools",
                    ));
                    None
                }
            }
        }
        _ => {
            violations.push(FieldViolation::new(
                "tool_choice",
                "must be \"auto\", \"none\", \"required\" or {\"type\":\"function\",\"function\":{\"name\":...}}",
            ));
            None
        }
    }
}

/// How the core's field paths read in OpenAI's JSON, where the two differ.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ParamNames {
    /// The client sent `max_completion_tokens` (so that is the field to
    /// blame for the core's `max_tokens`).
    max_completion_tokens: bool,
}

impl ParamNames {
    /// `error` with its violations' fields renamed to OpenAI's paths.
    pub(crate) fn rename(self, error: Error) -> Error {
        match error {
            Error::InvalidArgument(violations) => Error::InvalidArgument(
                violations
                    .into_iter()
                    .map(|mut v| {
                        if let Some(name) = self.openai_name(&v.field) {
                            v.field = name.to_owned();
                        }
                        v
                    })
                    .collect(),
            ),
            other => other,
        }
    }

    /// OpenAI's name of the core's field `field`, when it differs.
    fn openai_name(self, field: &str) -> Option<&'static str> {
        match field {
            // The proto's oneof `{mode | function_name}` is OpenAI's string
            // or `{"type":"function","function":{"name":...}}`.
            "tool_choice.mode" => Some("tool_choice"),
            "tool_choice.function_name" => Some("tool_choice.function.name"),
            "max_tokens" if self.max_completion_tokens => Some("max_completion_tokens"),
            _ => None,
        }
    }
}

/// `chat.completion.chunk`: one chunk of a streamed completion.
#[derive(Debug, Serialize)]
pub(crate) struct ChunkJson<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: Vec<ChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageJson>,
}

#[derive(Debug, Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

/// A chunk's `delta`. `content` is `null` (rather than absent) on a
/// choice's first chunk when that chunk carries something else (a tool
/// call, reasoning, a refusal), as OpenAI sends it, so that SDKs which
/// accumulate the deltas end with `content: null` when no text came.
#[derive(Debug, Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Option<&'a str>>,
    /// Reasoning, under the name vLLM and DeepSeek use.
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<&'a str>,
    #[serde(
        skip_serializing_if = "<[_]>::is_empty",
        serialize_with = "tool_call_deltas"
    )]
    tool_calls: &'a [ToolCallDelta],
}

impl<'a> Delta<'a> {
    fn new(
        first: bool,
        content: &'a str,
        reasoning: &'a str,
        refusal: &'a str,
        tool_calls: &'a [ToolCallDelta],
    ) -> Self {
        let content = if !content.is_empty() {
            Some(Some(content))
        } else if !first {
            None
        } else if tool_calls.is_empty() && reasoning.is_empty() && refusal.is_empty() {
            Some(Some(""))
        } else {
            Some(None)
        };
        Self {
            role: first.then_some("assistant"),
            content,
            reasoning_content: non_empty(reasoning),
            refusal: non_empty(refusal),
            tool_calls,
        }
    }
}

fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

/// `delta.tool_calls` as OpenAI streams them: the first piece of call
/// `index` carries `id`, `type` and `function.name` (with the arguments'
/// first fragment, maybe empty); later pieces carry `index` and
/// `function.arguments` only.
fn tool_call_deltas<S: serde::Serializer>(
    calls: &[ToolCallDelta],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(calls.iter().map(|call| {
        let first = call.is_first();
        ToolCallDeltaJson {
            index: call.index,
            id: first.then_some(call.id.as_str()),
            kind: first.then_some("function"),
            function: FunctionDeltaJson {
                name: first.then_some(call.name.as_str()),
                arguments: &call.arguments,
            },
        }
    }))
}

#[derive(Debug, Serialize)]
struct ToolCallDeltaJson<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDeltaJson<'a>,
}

#[derive(Debug, Serialize)]
struct FunctionDeltaJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

/// Token counts, as OpenAI reports them.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct UsageJson {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

impl From<Usage> for UsageJson {
    fn from(usage: Usage) -> Self {
        Self {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.total_tokens(),
        }
    }
}

/// OpenAI's name of a finish reason.
pub(crate) fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
    }
}

/// The JSON of `chunk` in the completion `header`.
pub(crate) fn chunk_json<'a>(header: &'a CompletionHeader, chunk: &'a ChatChunk) -> ChunkJson<'a> {
    let (choices, usage) = match chunk {
        ChatChunk::Choice {
            index,
            first,
            delta,
        } => {
            let choice = ChunkChoice {
                index: *index,
                delta: Delta::new(
                    *first,
                    delta.content(),
                    delta.reasoning(),
                    delta.refusal(),
                    delta.tool_calls(),
                ),
                logprobs: None,
                finish_reason: delta.finish_reason().map(finish_reason),
            };
            (vec![choice], None)
        }
        ChatChunk::Usage(usage) => (Vec::new(), Some(UsageJson::from(*usage))),
    };
    ChunkJson {
        id: &header.id,
        object: "chat.completion.chunk",
        created: header.created,
        model: &header.model,
        choices,
        usage,
    }
}

/// `chat.completion`: a whole completion, for `stream: false`.
#[derive(Debug, Serialize)]
pub(crate) struct CompletionJson {
    id: String,
    object: &'static str,
    created: i64,
    model: String,
    choices: Vec<CompletionChoice>,
    usage: Option<UsageJson>,
}

#[derive(Debug, Serialize)]
struct CompletionChoice {
    index: u32,
    message: CompletionMessage,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

/// A whole answer: `content` is `null` when the model only called tools
/// or refused, as OpenAI's is; `tool_calls` is absent when it called none.
#[derive(Debug, Serialize)]
struct CompletionMessage {
    role: &'static str,
    content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<String>,
    refusal: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallJson>,
}

/// One whole tool call of a [`CompletionMessage`].
#[derive(Debug, Serialize)]
struct ToolCallJson {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionCallJson,
}

#[derive(Debug, Serialize)]
struct FunctionCallJson {
    name: String,
    arguments: String,
}

/// What one choice has gathered so far.
#[derive(Debug, Default)]
struct ChoiceSoFar {
    content: String,
    reasoning: String,
    refusal: String,
    /// Calls by their `index`, in the order they began. The core bounds
    /// their number per choice; indexes need not be dense (an upstream's
    /// are passed on), hence a list searched rather than indexed.
    calls: Vec<(u32, ToolCallJson)>,
    finish_reason: Option<&'static str>,
}

impl ChoiceSoFar {
    fn push_call(&mut self, delta: ToolCallDelta) {
        match self
            .calls
            .iter_mut()
            .find(|(index, _)| *index == delta.index)
        {
            Some((_, call)) => call.function.arguments.push_str(&delta.arguments),
            None => self.calls.push((
                delta.index,
                ToolCallJson {
                    id: delta.id,
                    kind: "function",
                    function: FunctionCallJson {
                        name: delta.name,
                        arguments: delta.arguments,
                    },
                },
            )),
        }
    }

    fn finish(mut self, index: u32) -> CompletionChoice {
        self.calls.sort_by_key(|(index, _)| *index);
        let tool_calls: Vec<_> = self.calls.into_iter().map(|(_, call)| call).collect();
        let no_text =
            self.content.is_empty() && (!tool_calls.is_empty() || !self.refusal.is_empty());
        CompletionChoice {
            index,
            message: CompletionMessage {
                role: "assistant",
                content: (!no_text).then_some(self.content),
                reasoning_content: (!self.reasoning.is_empty()).then_some(self.reasoning),
                refusal: (!self.refusal.is_empty()).then_some(self.refusal),
                tool_calls,
            },
            logprobs: None,
            finish_reason: self.finish_reason,
        }
    }
}

/// Gathers the chunks of one completion into a [`CompletionJson`]: text,
/// reasoning and refusal concatenated per choice, tool calls assembled
/// from their pieces.
#[derive(Debug)]
pub(crate) struct CompletionBuilder {
    header: CompletionHeader,
    choices: Vec<ChoiceSoFar>,
    usage: Option<UsageJson>,
}

impl CompletionBuilder {
    /// An empty completion with `n` choices.
    pub(crate) fn new(header: CompletionHeader, n: u32) -> Self {
        Self {
            header,
            choices: (0..n).map(|_| ChoiceSoFar::default()).collect(),
            usage: None,
        }
    }

    /// Adds one chunk.
    pub(crate) fn push(&mut self, chunk: ChatChunk) {
        match chunk {
            ChatChunk::Choice { index, delta, .. } => {
                if let Some(choice) = self.choices.get_mut(index as usize) {
                    match delta {
                        ChoiceDelta::Content(text) => choice.content.push_str(&text),
                        ChoiceDelta::Reasoning(text) => choice.reasoning.push_str(&text),
                        ChoiceDelta::Refusal(text) => choice.refusal.push_str(&text),
                        ChoiceDelta::ToolCall(call) => choice.push_call(*call),
                        ChoiceDelta::Finished(reason) => {
                            choice.finish_reason = Some(finish_reason(reason));
                        }
                    }
                }
            }
            ChatChunk::Usage(usage) => self.usage = Some(usage.into()),
        }
    }

    /// The completion.
    pub(crate) fn finish(self) -> CompletionJson {
        CompletionJson {
            id: self.header.id,
            object: "chat.completion",
            created: self.header.created,
            model: self.header.model,
            choices: (0..)
                .zip(self.choices)
                .map(|(index, choice)| choice.finish(index))
                .collect(),
            usage: self.usage,
        }
    }
}

/// `GET /v1/models`.
#[derive(Debug, Serialize)]
pub(crate) struct ModelList {
    object: &'static str,
    data: Vec<ModelJson>,
}

#[derive(Debug, Serialize)]
struct ModelJson {
    id: String,
    object: &'static str,
    created: i64,
    owned_by: String,
}

impl ModelList {
    /// The list of `models`.
    pub(crate) fn new(models: Vec<crate::llm::ModelInfo>) -> Self {
        Self {
            object: "list",
            data: models
                .into_iter()
                .map(|m| ModelJson {
                    id: m.id,
                    object: "model",
                    created: m.created,
                    owned_by: m.owned_by,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::json::parse;

    fn header() -> CompletionHeader {
        CompletionHeader {
            id: "chatcmpl-1".into(),
            created: 1_700_000_000,
            model: "echo".into(),
        }
    }

    fn json(value: &impl Serialize) -> String {
        serde_json::to_string(value).expect("json")
    }

    #[test]
    fn chunks_have_openai_shapes() {
        let header = header();
        let first = ChatChunk::Choice {
            index: 0,
            first: true,
            delta: ChoiceDelta::Content("Hi".into()),
        };
        assert_eq!(
            json(&chunk_json(&header, &first)),
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"echo","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"logprobs":null,"finish_reason":null}]}"#
        );
        let last = ChatChunk::Choice {
            index: 1,
            first: false,
            delta: ChoiceDelta::Finished(FinishReason::Length),
        };
        assert_eq!(
            json(&chunk_json(&header, &last)),
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"echo","choices":[{"index":1,"delta":{},"logprobs":null,"finish_reason":"length"}]}"#
        );
        let usage = ChatChunk::Usage(Usage {
            prompt_tokens: 3,
            completion_tokens: 4,
        });
        assert_eq!(
            json(&chunk_json(&header, &usage)),
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"echo","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#
        );
    }

    #[test]
    fn requests_become_drafts() {
        let request: ChatCompletionRequest = parse(
            br#"{"model":"echo","messages":[{"role":"developer","content":"be brief"},
                {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
                "max_tokens":5,"max_completion_tokens":7,"stop":"x","n":2,"stream":true,
                "stream_options":{"include_usage":true},"user":"u1","seed":4,"logprobs":false}"#,
        )
        .expect("valid");
        assert!(request.stream());
        assert!(request.include_usage());
        let draft = request.into_draft(true).expect("draft");
        assert_eq!(draft.model, "echo");
        assert_eq!(draft.max_tokens, 7);
        assert_eq!(draft.stop, ["x"]);
        assert_eq!(draft.n, 2);
        assert_eq!(draft.messages[0].role, RoleDraft::Known(Role::System));
        assert_eq!(draft.messages[1].content, "ab");
    }

    #[test]
    fn bad_fields_are_named() {
        let error =
            parse::<ChatCompletionRequest>(br#"{"messages":[],"n":-1}"#).expect_err("negative n");
        assert_eq!(error.object().param.as_deref(), Some("n"));
        let request: ChatCompletionRequest = parse(
            br#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]}"#,
        )
        .expect("parses");
        match request.into_draft(false) {
            Err(Error::InvalidArgument(v)) => assert_eq!(v[0].field, "messages[0].content[0].type"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn completions_gather_their_chunks() {
        let mut builder = CompletionBuilder::new(header(), 1);
        for chunk in [
            ChatChunk::Choice {
                index: 0,
                first: true,
                delta: ChoiceDelta::Content("Hel".into()),
            },
            ChatChunk::Choice {
                index: 0,
                first: false,
                delta: ChoiceDelta::Content("lo".into()),
            },
            ChatChunk::Choice {
                index: 0,
                first: false,
                delta: ChoiceDelta::Finished(FinishReason::Stop),
            },
            ChatChunk::Usage(Usage {
                prompt_tokens: 1,
                completion_tokens: 2,
            }),
        ] {
            builder.push(chunk);
        }
        assert_eq!(
            json(&builder.finish()),
            r#"{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"echo","choices":[{"index":0,"message":{"role":"assistant","content":"Hello","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#
        );
    }

    fn piece(index: u32, id: &str, name: &str, arguments: &str) -> ToolCallDelta {
        ToolCallDelta {
            index,
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    fn choice(first: bool, call: ToolCallDelta) -> ChatChunk {
        ChatChunk::Choice {
            index: 0,
            first,
            delta: ChoiceDelta::ToolCall(Box::new(call)),
        }
    }

    #[test]
    fn tool_call_pieces_stream_as_openai_s() {
        let header = header();
        let delta = |chunk: &ChatChunk| {
            let value: Value =
                serde_json::from_str(&json(&chunk_json(&header, chunk))).expect("json");
            value["choices"][0]["delta"].to_string()
        };
        assert_eq!(
            delta(&choice(true, piece(0, "call_1", "get_weather", ""))),
            r#"{"content":null,"role":"assistant","tool_calls":[{"function":{"arguments":"","name":"get_weather"},"id":"call_1","index":0,"type":"function"}]}"#
        );
        assert_eq!(
            delta(&choice(false, piece(1, "", "", "{\"ci"))),
            r#"{"tool_calls":[{"function":{"arguments":"{\"ci"},"index":1}]}"#
        );
        let reasoning = ChatChunk::Choice {
            index: 0,
            first: true,
            delta: ChoiceDelta::Reasoning("hmm".into()),
        };
        assert_eq!(
            delta(&reasoning),
            r#"{"content":null,"reasoning_content":"hmm","role":"assistant"}"#
        );
        let refusal = ChatChunk::Choice {
            index: 0,
            first: false,
            delta: ChoiceDelta::Refusal("no".into()),
        };
        assert_eq!(delta(&refusal), r#"{"refusal":"no"}"#);
    }

    #[test]
    fn tools_tool_choice_and_tool_messages_become_drafts() {
        let request: ChatCompletionRequest = parse(
            br#"{"model":"tools","messages":[
                {"role":"user","content":"weather?"},
                {"role":"assistant","content":null,"refusal":null,"tool_calls":[
                    {"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Bern\"}"}}]},
                {"role":"tool","tool_call_id":"call_1","content":[{"type":"text","text":"12 C"}]}],
                "tools":[{"type":"function","function":{"name":"get_weather","description":"d",
                    "parameters":{"type":"object"},"strict":true}}],
                "tool_choice":{"type":"function","function":{"name":"get_weather"}},
                "parallel_tool_calls":false}"#,
        )
        .expect("valid");
        let draft = request.into_draft(false).expect("draft");
        assert_eq!(
            draft.tools,
            [ToolDraft {
                kind: "function".into(),
                name: "get_weather".into(),
                description: "d".into(),
                parameters: Some(serde_json::json!({"type": "object"})),
            }]
        );
        assert_eq!(
            draft.tool_choice,
            Some(ToolChoiceDraft::Known(ToolChoice::Function(
                "get_weather".into()
            )))
        );
        assert_eq!(draft.parallel_tool_calls, Some(false));
        assert_eq!(
            draft.messages[1].tool_calls,
            [ToolCallDraft {
                id: "call_1".into(),
                kind: "function".into(),
                name: "get_weather".into(),
                arguments: r#"{"city":"Bern"}"#.into(),
            }]
        );
        assert_eq!(draft.messages[1].content, "");
        assert_eq!(draft.messages[2].tool_call_id, "call_1");
        assert_eq!(draft.messages[2].content, "12 C");

        for (choice, expected) in [
            (r#""auto""#, Some(ToolChoiceDraft::Known(ToolChoice::Auto))),
            (r#""none""#, Some(ToolChoiceDraft::Known(ToolChoice::None))),
            (
                r#""required""#,
                Some(ToolChoiceDraft::Known(ToolChoice::Required)),
            ),
            (
                r#""sometimes""#,
                Some(ToolChoiceDraft::Unknown("`sometimes`".into())),
            ),
            ("null", None),
        ] {
            let body = format!(r#"{{"messages":[],"tool_choice":{choice}}}"#);
            let request: ChatCompletionRequest = parse(body.as_bytes()).expect("valid");
            assert_eq!(
                request.into_draft(false).expect("draft").tool_choice,
                expected
            );
        }
    }

    #[test]
    fn misshapen_tool_choices_are_named_by_openai_s_path() {
        for (choice, field) in [
            ("3", "tool_choice"),
            (r#"{"type":"allowed_tools"}"#, "tool_choice.type"),
            (
                r#"{"type":"function","function":{}}"#,
                "tool_choice.function.name",
            ),
        ] {
            let body = format!(r#"{{"messages":[],"tool_choice":{choice}}}"#);
            let request: ChatCompletionRequest = parse(body.as_bytes()).expect("valid");
            match request.into_draft(false) {
                Err(Error::InvalidArgument(v)) => assert_eq!(v[0].field, field, "{choice}"),
                other => panic!("{choice}: {other:?}"),
            }
        }
        let names = ParamNames {
            max_completion_tokens: true,
        };
        let renamed = names.rename(Error::InvalidArgument(vec![
            FieldViolation::new("tool_choice.mode", "x"),
            FieldViolation::new("tool_choice.function_name", "x"),
            FieldViolation::new("max_tokens", "x"),
            FieldViolation::new("tools[0].function.name", "x"),
        ]));
        match renamed {
            Error::InvalidArgument(v) => assert_eq!(
                v.iter().map(|v| v.field.as_str()).collect::<Vec<_>>(),
                [
                    "tool_choice",
                    "tool_choice.function.name",
                    "max_completion_tokens",
                    "tools[0].function.name"
                ]
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn completions_assemble_tool_calls_and_leave_content_null() {
        let mut builder = CompletionBuilder::new(header(), 1);
        let chunks = [
            choice(true, piece(1, "call_b", "g", "{")),
            choice(false, piece(0, "call_a", "f", "")),
            choice(false, piece(0, "", "", "{\"x\":")),
            choice(false, piece(1, "", "", "}")),
            choice(false, piece(0, "", "", "1}")),
            ChatChunk::Choice {
                index: 0,
                first: false,
                delta: ChoiceDelta::Reasoning("thought".into()),
            },
            ChatChunk::Choice {
                index: 0,
                first: false,
                delta: ChoiceDelta::Finished(FinishReason::ToolCalls),
            },
        ];
        for chunk in chunks {
            builder.push(chunk);
        }
        let value: Value = serde_json::from_str(&json(&builder.finish())).expect("json");
        assert_eq!(
            value["choices"][0],
            serde_json::json!({"index": 0, "logprobs": null, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": null, "refusal": null,
                "reasoning_content": "thought",
                "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}},
                    {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{}"}}
                ]}})
        );
    }
}
