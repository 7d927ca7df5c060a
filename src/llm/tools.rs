//! Tools a model may call, and the calls it makes, protocol-free.
//!
//! Agents give the model functions (a name, a description, a JSON Schema of
//! the arguments); the model answers either with text or with calls to some
//! of them, whose JSON arguments it streams in fragments. The client runs
//! the calls and sends their results back as `tool` messages, answering each
//! call by its id. These types carry that through the core: the edges
//! convert their wire forms (protobuf's `Struct`, OpenAI's JSON) into them,
//! backends read them from the [`GenerationRequest`](super::GenerationRequest)
//! and emit [`ToolCallDelta`]s.

use serde_json::Value;

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// The function's name, unique within a request.
    pub name: String,
    /// What it does (may be empty).
    pub description: String,
    /// The JSON Schema of its arguments; `None` when the client gave none.
    pub parameters: Option<Value>,
}

/// Whether and which tools the model may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// The model must not call tools.
    None,
    /// The model must call at least one tool.
    Required,
    /// The model must call this function.
    Function(String),
}

/// One complete tool call of an assistant turn (as a client sends it back
/// in the conversation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolCall {
    /// The call's id, answered by a `tool` message's `tool_call_id`.
    pub id: String,
    /// The function called.
    pub name: String,
    /// Its arguments, a JSON text as the model wrote it.
    pub arguments: String,
}

/// A piece of one streamed tool call: the first piece of call `index`
/// carries its `id` and `name`; later pieces carry argument fragments whose
/// concatenation is the call's JSON arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ToolCallDelta {
    /// Which call of the choice: 0, 1, ... in the order the calls began.
    pub index: u32,
    /// The call's id; empty after the first piece.
    pub id: String,
    /// The function's name; empty after the first piece.
    pub name: String,
    /// The next fragment of the arguments (may be empty).
    pub arguments: String,
}

impl ToolCallDelta {
    /// Whether this is the first piece of its call (it names the call).
    pub fn is_first(&self) -> bool {
        !self.id.is_empty() || !self.name.is_empty()
    }
}
