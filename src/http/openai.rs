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

use crate::{
    chat::{ChatChunk, ChatDraft, CompletionHeader, MessageDraft, RoleDraft},
    error::{Error, FieldViolation},
    llm::{FinishReason, Role, Usage},
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
    // `user`, `seed`, `logprobs`, `tools` and the rest are ignored, as
    // unknown fields are: OpenAI's clients send them freely.
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

    /// The core's draft of this request; `include_usage` as the response
    /// needs it (a non-streaming completion always reports its usage).
    /// Content parts that are not text are refused here, naming them; every
    /// other rule is the core's.
    pub(crate) fn into_draft(self, include_usage: bool) -> Result<ChatDraft, Error> {
        let mut violations = Vec::new();
        let messages = self
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| m.into_draft(i, &mut violations))
            .collect();
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
            ..ChatDraft::default()
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
            tool_calls: Vec::new(),
            tool_call_id: String::new(),
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

#[derive(Debug, Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
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
            content,
            finish_reason: reason,
            ..
        } => {
            let choice = ChunkChoice {
                index: *index,
                delta: Delta {
                    role: first.then_some("assistant"),
                    content: (*first || !content.is_empty()).then_some(content.as_str()),
                },
                logprobs: None,
                finish_reason: reason.map(finish_reason),
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

#[derive(Debug, Serialize)]
struct CompletionMessage {
    role: &'static str,
    content: String,
    refusal: Option<()>,
}

/// Gathers the chunks of one completion into a [`CompletionJson`].
#[derive(Debug)]
pub(crate) struct CompletionBuilder {
    completion: CompletionJson,
}

impl CompletionBuilder {
    /// An empty completion with `n` choices.
    pub(crate) fn new(header: CompletionHeader, n: u32) -> Self {
        let choices = (0..n)
            .map(|index| CompletionChoice {
                index,
                message: CompletionMessage {
                    role: "assistant",
                    content: String::new(),
                    refusal: None,
                },
                logprobs: None,
                finish_reason: None,
            })
            .collect();
        Self {
            completion: CompletionJson {
                id: header.id,
                object: "chat.completion",
                created: header.created,
                model: header.model,
                choices,
                usage: None,
            },
        }
    }

    /// Adds one chunk.
    pub(crate) fn push(&mut self, chunk: ChatChunk) {
        match chunk {
            ChatChunk::Choice {
                index,
                content,
                finish_reason: reason,
                ..
            } => {
                if let Some(choice) = self.completion.choices.get_mut(index as usize) {
                    choice.message.content.push_str(&content);
                    if let Some(reason) = reason {
                        choice.finish_reason = Some(finish_reason(reason));
                    }
                }
            }
            ChatChunk::Usage(usage) => self.completion.usage = Some(usage.into()),
        }
    }

    /// The completion.
    pub(crate) fn finish(self) -> CompletionJson {
        self.completion
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
            content: "Hi".into(),
            reasoning: String::new(),
            refusal: String::new(),
            tool_calls: Vec::new(),
            finish_reason: None,
        };
        assert_eq!(
            json(&chunk_json(&header, &first)),
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"echo","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"logprobs":null,"finish_reason":null}]}"#
        );
        let last = ChatChunk::Choice {
            index: 1,
            first: false,
            content: String::new(),
            reasoning: String::new(),
            refusal: String::new(),
            tool_calls: Vec::new(),
            finish_reason: Some(FinishReason::Length),
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
                content: "Hel".into(),
                reasoning: String::new(),
                refusal: String::new(),
                tool_calls: Vec::new(),
                finish_reason: None,
            },
            ChatChunk::Choice {
                index: 0,
                first: false,
                content: "lo".into(),
                reasoning: String::new(),
                refusal: String::new(),
                tool_calls: Vec::new(),
                finish_reason: Some(FinishReason::Stop),
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
}
