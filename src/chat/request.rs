//! Validation of chat requests against the contract's limits.
//!
//! Each edge fills a protocol-neutral [`ChatDraft`] from its wire request
//! (gRPC's `StreamChatRequest`, the HTTP edge's OpenAI JSON) and calls
//! [`ChatRequest::validate`]: one set of limits, one set of field paths,
//! whichever protocol the client speaks. Every rule is checked and every
//! violation reported at once, so a client fixes its request in one round
//! trip.
//!
//! Tools are bounded like everything else a client sends: at most
//! [`MAX_TOOLS`] tools with names of at most [`MAX_FUNCTION_NAME_BYTES`],
//! descriptions and schemas of bounded size, and tool-call arguments counted
//! in the request's content limit.

use std::collections::HashSet;

use serde_json::Value;

use crate::{
    error::Result,
    llm::{
        ChatMessage, GenerationRequest, Role, TokenBudget, Tool, ToolCall, ToolChoice, UsageMeter,
        check_model_name,
    },
    validation::Violations,
};

/// Most messages in one request.
pub(crate) const MAX_MESSAGES: usize = 256;
/// Most stop sequences.
pub(crate) const MAX_STOP: usize = 4;
/// Longest stop sequence, in bytes.
pub(crate) const MAX_STOP_BYTES: usize = 64;
/// Most choices.
pub(crate) const MAX_N: u32 = 8;
/// Longest message `name`, in bytes.
pub(crate) const MAX_NAME_BYTES: usize = 64;
/// Highest temperature.
pub(crate) const MAX_TEMPERATURE: f32 = 2.0;
/// Most tools in one request (OpenAI's limit too).
pub(crate) const MAX_TOOLS: usize = 128;
/// Longest function name, in bytes (OpenAI's limit too).
pub(crate) const MAX_FUNCTION_NAME_BYTES: usize = 64;
/// Longest function description, in bytes.
pub(crate) const MAX_DESCRIPTION_BYTES: usize = 8 * 1024;
/// Largest parameters schema, in bytes of JSON.
pub(crate) const MAX_PARAMETERS_BYTES: usize = 64 * 1024;
/// Most tool calls in one message.
pub(crate) const MAX_TOOL_CALLS: usize = 128;
/// Longest tool-call id, in bytes.
pub(crate) const MAX_TOOL_CALL_ID_BYTES: usize = 256;

/// The server-configured limits of a chat request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChatLimits {
    /// The `max_tokens` policy.
    pub budget: TokenBudget,
    /// Largest total message content, in bytes.
    pub max_request_bytes: usize,
}

/// A chat request as a client sent it, before validation. Zero values mean
/// "the default", as in the contract.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ChatDraft {
    /// The conversation.
    pub messages: Vec<MessageDraft>,
    /// The model; empty for the server's default.
    pub model: String,
    /// Most tokens per choice; 0 for the server's default.
    pub max_tokens: u32,
    /// Sampling temperature, when given.
    pub temperature: Option<f32>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Number of choices; 0 means 1.
    pub n: u32,
    /// Whether to send the usage chunk at the end.
    pub include_usage: bool,
    /// Functions the model may call.
    pub tools: Vec<ToolDraft>,
    /// Whether and which tools the model may call; `None` when unset.
    pub tool_choice: Option<ToolChoiceDraft>,
    /// Whether several tools may be called in one turn, when given.
    pub parallel_tool_calls: Option<bool>,
}

/// A tool of a [`ChatDraft`].
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ToolDraft {
    /// The tool's kind as sent: "function" or empty.
    pub kind: String,
    /// The function's name.
    pub name: String,
    /// What the function does.
    pub description: String,
    /// The JSON Schema of its arguments, when given.
    pub parameters: Option<Value>,
}

/// A `tool_choice` as the wire gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ToolChoiceDraft {
    /// A choice the edge recognised.
    Known(ToolChoice),
    /// A value the edge could not map, as sent (for the error).
    Unknown(String),
}

/// A tool call of an assistant message in a [`ChatDraft`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ToolCallDraft {
    /// The call's id.
    pub id: String,
    /// The call's kind as sent: "function" or empty.
    pub kind: String,
    /// The function called.
    pub name: String,
    /// Its arguments, a JSON text.
    pub arguments: String,
}

/// One message of a [`ChatDraft`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MessageDraft {
    /// The author, as the edge understood it.
    pub role: RoleDraft,
    /// The text.
    pub content: String,
    /// Optional author name; empty when unset.
    pub name: String,
    /// The tool calls of an assistant turn.
    pub tool_calls: Vec<ToolCallDraft>,
    /// On a tool message: the call it answers; empty otherwise.
    pub tool_call_id: String,
}

/// A message author as the wire gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RoleDraft {
    /// A role the edge recognised.
    Known(Role),
    /// A value the edge could not map to a role, as sent (for the error).
    Unknown(String),
}

impl Default for RoleDraft {
    fn default() -> Self {
        RoleDraft::Known(Role::User)
    }
}

impl MessageDraft {
    /// A user message.
    #[cfg(test)]
    pub(crate) fn user(content: impl Into<String>) -> Self {
        Self {
            role: RoleDraft::Known(Role::User),
            content: content.into(),
            name: String::new(),
            tool_calls: Vec::new(),
            tool_call_id: String::new(),
        }
    }
}

/// A request that passed validation.
#[derive(Debug, Clone)]
pub(crate) struct ChatRequest {
    /// The generation to run; `model` is as the client gave it (maybe empty).
    pub generation: GenerationRequest,
    /// Whether to send the usage chunk.
    pub include_usage: bool,
}

impl ChatRequest {
    /// Checks `raw` against the contract and `limits`.
    pub(crate) fn validate(raw: ChatDraft, limits: &ChatLimits) -> Result<Self> {
        let mut violations = Violations::new();
        let messages = messages(raw.messages, limits, &mut violations);
        check_model_name(&raw.model, &mut violations);
        let max_tokens = limits.budget.resolve(raw.max_tokens, &mut violations);
        if let Some(t) = raw.temperature {
            violations.require((0.0..=MAX_TEMPERATURE).contains(&t), "temperature", || {
                format!("{t} is outside 0 to {MAX_TEMPERATURE}")
            });
        }
        check_stop(&raw.stop, &mut violations);
        violations.require(raw.n <= MAX_N, "n", || {
            format!("{} choices asked; at most {MAX_N}", raw.n)
        });
        let tools = tools(raw.tools, limits, &mut violations);
        let tool_choice = tool_choice(raw.tool_choice, &tools, &mut violations);
        violations.finish()?;
        Ok(Self {
            generation: GenerationRequest {
                model: raw.model,
                messages,
                max_tokens,
                temperature: raw.temperature,
                stop: raw.stop,
                n: raw.n.max(1),
                tools,
                tool_choice,
                parallel_tool_calls: raw.parallel_tool_calls,
                usage: UsageMeter::default(),
                prompt_tokens: None,
            },
            include_usage: raw.include_usage,
        })
    }
}

fn messages(
    raw: Vec<MessageDraft>,
    limits: &ChatLimits,
    violations: &mut Violations,
) -> Vec<ChatMessage> {
    violations.require((1..=MAX_MESSAGES).contains(&raw.len()), "messages", || {
        format!("{} messages given; 1 to {MAX_MESSAGES} required", raw.len())
    });
    let total: usize = raw
        .iter()
        .map(|m| {
            let arguments: usize = m.tool_calls.iter().map(|c| c.arguments.len()).sum();
            m.content.len().saturating_add(arguments)
        })
        .fold(0, usize::saturating_add);
    violations.require(total <= limits.max_request_bytes, "messages", || {
        format!(
            "content totals {total} bytes; at most {} allowed",
            limits.max_request_bytes
        )
    });
    let mut checked = Vec::with_capacity(raw.len());
    for (i, m) in raw.into_iter().enumerate() {
        let role = match m.role {
            RoleDraft::Known(role) => role,
            RoleDraft::Unknown(raw) => {
                violations.add(
                    format!("messages[{i}].role"),
                    format!("{raw} is not a role (system, user, assistant or tool)"),
                );
                Role::User
            }
        };
        violations.require(
            m.name.len() <= MAX_NAME_BYTES,
            format!("messages[{i}].name"),
            || format!("must be at most {MAX_NAME_BYTES} bytes"),
        );
        violations.max_bytes(
            format!("messages[{i}].tool_call_id"),
            m.tool_call_id.len(),
            MAX_TOOL_CALL_ID_BYTES,
        );
        let tool_calls = tool_calls(i, role, m.tool_calls, violations);
        checked.push(ChatMessage {
            role,
            content: m.content,
            name: m.name,
            tool_calls,
            tool_call_id: m.tool_call_id,
        });
    }
    checked
}

/// The tool calls of message `i`: only an assistant's, each with an id.
fn tool_calls(
    i: usize,
    role: Role,
    raw: Vec<ToolCallDraft>,
    violations: &mut Violations,
) -> Vec<ToolCall> {
    if raw.is_empty() {
        return Vec::new();
    }
    let field = format!("messages[{i}].tool_calls");
    violations.require(role == Role::Assistant, field.as_str(), || {
        "only assistant messages carry tool calls".into()
    });
    violations.require(raw.len() <= MAX_TOOL_CALLS, field.as_str(), || {
        format!("{} tool calls given; at most {MAX_TOOL_CALLS}", raw.len())
    });
    raw.into_iter()
        .enumerate()
        .map(|(j, call)| {
            let field = format!("{field}[{j}]");
            violations.require(
                (1..=MAX_TOOL_CALL_ID_BYTES).contains(&call.id.len()),
                format!("{field}.id"),
                || {
                    format!(
                        "is {} bytes; 1 to {MAX_TOOL_CALL_ID_BYTES} required",
                        call.id.len()
                    )
                },
            );
            check_kind(&call.kind, format!("{field}.type"), violations);
            violations.max_bytes(
                format!("{field}.function.name"),
                call.name.len(),
                MAX_FUNCTION_NAME_BYTES,
            );
            ToolCall {
                id: call.id,
                name: call.name,
                arguments: call.arguments,
            }
        })
        .collect()
}

/// The request's tools: bounded in number and size, names valid and unique.
fn tools(raw: Vec<ToolDraft>, limits: &ChatLimits, violations: &mut Violations) -> Vec<Tool> {
    violations.require(raw.len() <= MAX_TOOLS, "tools", || {
        format!("{} tools given; at most {MAX_TOOLS}", raw.len())
    });
    let mut names = HashSet::with_capacity(raw.len());
    let mut total = 0usize;
    let mut checked = Vec::with_capacity(raw.len().min(MAX_TOOLS));
    for (i, tool) in raw.into_iter().enumerate() {
        check_kind(&tool.kind, format!("tools[{i}].type"), violations);
        let field = format!("tools[{i}].function");
        check_function_name(&tool.name, format!("{field}.name"), violations);
        violations.require(
            names.insert(tool.name.clone()),
            format!("{field}.name"),
            || format!("`{}` is given twice", tool.name),
        );
        violations.max_bytes(
            format!("{field}.description"),
            tool.description.len(),
            MAX_DESCRIPTION_BYTES,
        );
        if let Some(parameters) = &tool.parameters {
            let size = serde_json::to_vec(parameters).map_or(usize::MAX, |json| json.len());
            violations.require(
                parameters.is_object() && size <= MAX_PARAMETERS_BYTES,
                format!("{field}.parameters"),
                || format!("must be a JSON Schema object of at most {MAX_PARAMETERS_BYTES} bytes"),
            );
            total = total.saturating_add(size);
        }
        total = total.saturating_add(tool.description.len());
        checked.push(Tool {
            name: tool.name,
            description: tool.description,
            parameters: tool.parameters,
        });
    }
    violations.require(total <= limits.max_request_bytes, "tools", || {
        format!(
            "descriptions and schemas total {total} bytes; at most {}",
            limits.max_request_bytes
        )
    });
    checked
}

/// A function name as OpenAI allows them: 1 to 64 of `a-zA-Z0-9_-`.
fn check_function_name(name: &str, field: String, violations: &mut Violations) {
    let valid = (1..=MAX_FUNCTION_NAME_BYTES).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    violations.require(valid, field, || {
        format!("must be 1 to {MAX_FUNCTION_NAME_BYTES} of a-z, A-Z, 0-9, `_` and `-`")
    });
}

/// A tool or call kind: "function" (or empty, meaning it).
fn check_kind(kind: &str, field: String, violations: &mut Violations) {
    violations.require(kind.is_empty() || kind == "function", field, || {
        "must be \"function\"".into()
    });
}

/// The tool choice, which must fit the tools given.
fn tool_choice(
    raw: Option<ToolChoiceDraft>,
    tools: &[Tool],
    violations: &mut Violations,
) -> Option<ToolChoice> {
    match raw? {
        ToolChoiceDraft::Unknown(raw) => {
            violations.add(
                "tool_choice.mode",
                format!("{raw} is not a tool choice (auto, none or required)"),
            );
            None
        }
        ToolChoiceDraft::Known(ToolChoice::Function(name)) => {
            violations.require(
                tools.iter().any(|t| t.name == name),
                "tool_choice.function_name",
                || "must name one of the request's tools".into(),
            );
            Some(ToolChoice::Function(name))
        }
        ToolChoiceDraft::Known(ToolChoice::Required) => {
            violations.require(!tools.is_empty(), "tool_choice.mode", || {
                "required needs tools".into()
            });
            Some(ToolChoice::Required)
        }
        ToolChoiceDraft::Known(choice) => Some(choice),
    }
}

fn check_stop(stop: &[String], violations: &mut Violations) {
    violations.require(stop.len() <= MAX_STOP, "stop", || {
        format!("{} stop sequences given; at most {MAX_STOP}", stop.len())
    });
    for (i, s) in stop.iter().enumerate() {
        violations.require(
            (1..=MAX_STOP_BYTES).contains(&s.len()),
            format!("stop[{i}]"),
            || format!("is {} bytes; 1 to {MAX_STOP_BYTES} required", s.len()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    const LIMITS: ChatLimits = ChatLimits {
        budget: TokenBudget {
            default_max_tokens: 512,
            max_tokens_limit: 1000,
        },
        max_request_bytes: 100,
    };

    fn valid() -> ChatDraft {
        ChatDraft {
            messages: vec![MessageDraft::user("hi")],
            ..Default::default()
        }
    }

    fn fields(raw: ChatDraft) -> Vec<String> {
        match ChatRequest::validate(raw, &LIMITS) {
            Err(Error::InvalidArgument(v)) => v.into_iter().map(|v| v.field).collect(),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn defaults_fill_in_zero_values() {
        let req = ChatRequest::validate(valid(), &LIMITS).expect("valid");
        assert_eq!(req.generation.max_tokens, 512);
        assert_eq!(req.generation.n, 1);
        assert_eq!(req.generation.messages, [ChatMessage::user("hi")]);
    }

    #[test]
    fn every_violation_is_reported_at_once() {
        let mut raw = valid();
        raw.n = 9;
        raw.max_tokens = 1001;
        raw.temperature = Some(f32::NAN);
        raw.stop = vec![String::new(), "x".repeat(65)];
        raw.messages[0].role = RoleDraft::Unknown("42".into());
        assert_eq!(
            fields(raw),
            [
                "messages[0].role",
                "max_tokens",
                "temperature",
                "stop[0]",
                "stop[1]",
                "n"
            ]
        );
    }

    fn tool(name: &str) -> ToolDraft {
        ToolDraft {
            name: name.into(),
            parameters: Some(serde_json::json!({"type": "object"})),
            ..Default::default()
        }
    }

    #[test]
    fn tools_are_bounded_and_named_well() {
        let mut raw = valid();
        raw.tools = vec![tool("ok"), tool("ok"), tool("bad name"), tool("")];
        raw.tools[0].parameters = Some(Value::String("not a schema".into()));
        raw.tools[0].kind = "retrieval".into();
        raw.tool_choice = Some(ToolChoiceDraft::Known(ToolChoice::Function("nope".into())));
        assert_eq!(
            fields(raw),
            [
                "tools[0].type",
                "tools[0].function.parameters",
                "tools[1].function.name",
                "tools[2].function.name",
                "tools[3].function.name",
                "tool_choice.function_name"
            ]
        );
        let mut raw = valid();
        raw.tools = (0..=MAX_TOOLS)
            .map(|i| ToolDraft {
                parameters: None,
                ..tool(&format!("f{i}"))
            })
            .collect();
        assert_eq!(fields(raw), ["tools"]);
        let mut raw = valid();
        raw.tool_choice = Some(ToolChoiceDraft::Known(ToolChoice::Required));
        assert_eq!(fields(raw), ["tool_choice.mode"]);
    }

    #[test]
    fn tool_calls_belong_to_assistants_and_count_in_the_content_limit() {
        let call = |arguments: &str| ToolCallDraft {
            id: "call_1".into(),
            name: "f".into(),
            arguments: arguments.into(),
            ..Default::default()
        };
        let mut raw = valid();
        raw.messages[0].tool_calls = vec![call("{}")];
        raw.messages.push(MessageDraft {
            role: RoleDraft::Known(Role::Assistant),
            tool_calls: vec![call(&"x".repeat(200))],
            ..Default::default()
        });
        assert_eq!(fields(raw), ["messages", "messages[0].tool_calls"]);

        let mut raw = valid();
        raw.tools = vec![tool("f")];
        raw.messages.push(MessageDraft {
            role: RoleDraft::Known(Role::Assistant),
            tool_calls: vec![call("{}")],
            ..Default::default()
        });
        raw.messages.push(MessageDraft {
            role: RoleDraft::Known(Role::Tool),
            content: "42".into(),
            tool_call_id: "call_1".into(),
            ..Default::default()
        });
        let req = ChatRequest::validate(raw, &LIMITS).expect("valid");
        assert_eq!(req.generation.messages[1].tool_calls[0].name, "f");
        assert_eq!(req.generation.messages[2].tool_call_id, "call_1");
        assert_eq!(req.generation.tools[0].name, "f");
    }
}
