//! ChatService: one chat completion streamed as OpenAI-style chunks.
//!
//! The layers, outermost first:
//! - [`service`] converts the wire request, starts the call's bookkeeping and
//!   converts chunks back to the wire;
//! - [`request`] turns a raw request into a checked [`ChatRequest`] before
//!   any work starts, naming every offending field;
//! - [`chunks`] shapes a backend's generation events into the chunks the
//!   contract promises (role on the first chunk of a choice, finish reason on
//!   its last, the optional usage chunk at the end).

pub mod chunks;
pub mod request;
pub mod service;

pub use chunks::{ChatChunk, chat_chunks};
pub use request::{ChatLimits, ChatRequest};
pub use service::ChatApi;
