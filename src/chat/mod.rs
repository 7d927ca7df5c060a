//! Chat completions: one conversation in, OpenAI-style chunks out.
//!
//! The layers, outermost first (the protocol edges sit outside, in
//! `grpc::chat` and the HTTP edge):
//! - [`request`] turns a protocol-neutral [`ChatDraft`] into a checked
//!   [`ChatRequest`] before any work starts, naming every offending field;
//! - [`completion`] routes the request to the backend of its model and
//!   hands the edge a pulled stream of chunks;
//! - [`chunks`] shapes a backend's generation events into the chunks the
//!   contract promises (role on the first chunk of a choice, finish reason on
//!   its last, the optional usage chunk at the end).

pub(crate) mod chunks;
pub(crate) mod completion;
pub(crate) mod request;

pub(crate) use chunks::{ChatChunk, ChatChunks, ChoiceDelta, chat_chunks};
pub(crate) use completion::{Chat, Completion, CompletionHeader};
pub(crate) use request::{
    ChatDraft, ChatLimits, ChatRequest, MessageDraft, RoleDraft, ToolCallDraft, ToolChoiceDraft,
    ToolDraft,
};
