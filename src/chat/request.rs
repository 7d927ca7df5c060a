//! Validation of StreamChat requests against the contract's limits.
//!
//! Every rule is checked and every violation reported at once, so a client
//! fixes its request in one round trip.

use crate::{
    error::{Error, FieldViolation, Result},
    llm::{ChatMessage, GenerationRequest, Role, TokenBudget, check_model_name},
    pb,
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
    pub fn validate(raw: pb::StreamChatRequest, limits: &ChatLimits) -> Result<Self> {
        let mut violations = Vec::new();
        let messages = messages(&raw.messages, limits, &mut violations);
        check_model_name(&raw.model, &mut violations);
        let max_tokens = limits.budget.resolve(raw.max_tokens, &mut violations);
        if let Some(t) = raw.temperature
            && !(0.0..=MAX_TEMPERATURE).contains(&t)
        {
            violations.push(FieldViolation::new(
                "temperature",
                format!("{t} is outside 0 to {MAX_TEMPERATURE}"),
            ));
        }
        check_stop(&raw.stop, &mut violations);
        if raw.n > MAX_N {
            violations.push(FieldViolation::new(
                "n",
                format!("{} choices asked; at most {MAX_N}", raw.n),
            ));
        }
        Error::check(violations)?;
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
    raw: &[pb::ChatMessage],
    limits: &ChatLimits,
    violations: &mut Vec<FieldViolation>,
) -> Vec<ChatMessage> {
    if raw.is_empty() || raw.len() > MAX_MESSAGES {
        violations.push(FieldViolation::new(
            "messages",
            format!("{} messages given; 1 to {MAX_MESSAGES} required", raw.len()),
        ));
    }
    let total: usize = raw.iter().map(|m| m.content.len()).sum();
    if total > limits.max_request_bytes {
        violations.push(FieldViolation::new(
            "messages",
            format!(
                "content totals {total} bytes; at most {} allowed",
                limits.max_request_bytes
            ),
        ));
    }
    let mut checked = Vec::with_capacity(raw.len());
    for (i, m) in raw.iter().enumerate() {
        let role = match pb::Role::try_from(m.role) {
            Ok(pb::Role::Unspecified | pb::Role::User) => Role::User,
            Ok(pb::Role::System) => Role::System,
            Ok(pb::Role::Assistant) => Role::Assistant,
            Ok(pb::Role::Tool) => Role::Tool,
            Err(_) => {
                violations.push(FieldViolation::new(
                    format!("messages[{i}].role"),
                    format!("{} is not a Role", m.role),
                ));
                Role::User
            }
        };
        if m.name.len() > MAX_NAME_BYTES {
            violations.push(FieldViolation::new(
                format!("messages[{i}].name"),
                format!("must be at most {MAX_NAME_BYTES} bytes"),
            ));
        }
        checked.push(ChatMessage {
            role,
            content: m.content.clone(),
            name: m.name.clone(),
        });
    }
    checked
}

fn check_stop(stop: &[String], violations: &mut Vec<FieldViolation>) {
    if stop.len() > MAX_STOP {
        violations.push(FieldViolation::new(
            "stop",
            format!("{} stop sequences given; at most {MAX_STOP}", stop.len()),
        ));
    }
    for (i, s) in stop.iter().enumerate() {
        if s.is_empty() || s.len() > MAX_STOP_BYTES {
            violations.push(FieldViolation::new(
                format!("stop[{i}]"),
                format!("is {} bytes; 1 to {MAX_STOP_BYTES} required", s.len()),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ChatLimits = ChatLimits {
        budget: TokenBudget {
            default_max_tokens: 512,
            max_tokens_limit: 1000,
        },
        max_request_bytes: 100,
    };

    fn valid() -> pb::StreamChatRequest {
        pb::StreamChatRequest {
            messages: vec![pb::ChatMessage {
                role: pb::Role::User as i32,
                content: "hi".into(),
                name: String::new(),
            }],
            ..Default::default()
        }
    }

    fn fields(raw: pb::StreamChatRequest) -> Vec<String> {
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
        raw.messages[0].role = 42;
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
