//! Validation of chat requests against the contract's limits.
//!
//! Each edge fills a protocol-neutral [`ChatDraft`] from its wire request
//! (gRPC's `StreamChatRequest`, the HTTP edge's OpenAI JSON) and calls
//! [`ChatRequest::validate`]: one set of limits, one set of field paths,
//! whichever protocol the client speaks. Every rule is checked and every
//! violation reported at once, so a client fixes its request in one round
//! trip.

use crate::{
    error::Result,
    llm::{ChatMessage, GenerationRequest, Role, TokenBudget, check_model_name},
    validation::Violations,
};

/// Most messages in one request.
pub const MAX_MESSAGES: usize = 256;
/// Most stop sequences.
pub const MAX_STOP: usize = 4;
/// Longest stop sequence, in bytes.
pub const MAX_STOP_BYTES: usize = 64;
/// Most choices.
pub const MAX_N: u32 = 8;
/// Longest message `name`, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Highest temperature.
pub const MAX_TEMPERATURE: f32 = 2.0;

/// The server-configured limits of a chat request.
#[derive(Debug, Clone, Copy)]
pub struct ChatLimits {
    /// The `max_tokens` policy.
    pub budget: TokenBudget,
    /// Largest total message content, in bytes.
    pub max_request_bytes: usize,
}

/// A chat request as a client sent it, before validation. Zero values mean
/// "the default", as in the contract.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatDraft {
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
}

/// One message of a [`ChatDraft`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageDraft {
    /// The author, as the edge understood it.
    pub role: RoleDraft,
    /// The text.
    pub content: String,
    /// Optional author name; empty when unset.
    pub name: String,
}

/// A message author as the wire gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleDraft {
    /// A role the edge recognised.
    Known(Role),
    /// A value the edge could not map to a role, as sent (for the error).
    Unknown(String),
}

impl MessageDraft {
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: RoleDraft::Known(Role::User),
            content: content.into(),
            name: String::new(),
        }
    }
}

/// A request that passed validation.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The generation to run; `model` is as the client gave it (maybe empty).
    pub generation: GenerationRequest,
    /// Whether to send the usage chunk.
    pub include_usage: bool,
}

impl ChatRequest {
    /// Checks `raw` against the contract and `limits`.
    pub fn validate(raw: ChatDraft, limits: &ChatLimits) -> Result<Self> {
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
        violations.finish()?;
        Ok(Self {
            generation: GenerationRequest {
                model: raw.model,
                messages,
                max_tokens,
                temperature: raw.temperature,
                stop: raw.stop,
                n: raw.n.max(1),
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
    let total: usize = raw.iter().map(|m| m.content.len()).sum();
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
        checked.push(ChatMessage {
            role,
            content: m.content,
            name: m.name,
        });
    }
    checked
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
}
