//! agentstream: streams AI-agent output over gRPC as it is produced.
//!
//! - [`server`] wires the services, reflection, health and shutdown;
//! - [`chat`] implements ChatService on top of the [`llm`] backends;
//! - [`rag`] implements RagService over an embedded document index;
//! - [`tasks`] implements TaskService: long-running work and its progress;
//! - [`tokenizer`] gives the built-in models real cl100k_base tokens;
//! - [`error`] is the one error type and its mapping to gRPC codes.

pub mod chat;
pub mod config;
pub mod error;
pub mod http;
pub mod llm;
pub mod metrics;
pub mod pb;
pub mod rag;
pub mod server;
pub mod tasks;
pub mod telemetry;
pub mod tokenizer;

pub use error::{Error, Result};
