//! agentstream: streams AI-agent output (chat chunks, RAG answer events,
//! task progress) as it is produced.
//!
//! One protocol-free core, and edges that speak the protocols:
//!
//! ```text
//!            gRPC clients                 (HTTP clients: the HTTP edge)
//!                 |                                   |
//!   +-------------v-------------+                     |
//!   | grpc/  tonic services:    |   pb <-> drafts,    |
//!   | chat, rag, tasks, call,   |   domain -> pb,     |
//!   | status (Error -> Status)  |   Error -> Status   |
//!   +-------------+-------------+                     |
//!                 |  drafts in, domain types and pulled streams out
//!   +-------------v-----------------------------------v-----------+
//!   | core: chat (validation, chunks), rag (index, answers),      |
//!   |       tasks (registry, logs), llm (Backend: mock, openai),  |
//!   |       tokenizer, validation (Violations), error (Error)     |
//!   +-------------------------------------------------------------+
//!   server/: builds the core once, runs the edges, the per-call
//!   bookkeeping (call.rs: span, deadline, drain, admission) and shutdown
//! ```
//!
//! - [`chat`], [`rag`], [`tasks`], [`llm`] and [`tokenizer`] know nothing of
//!   protobuf or HTTP: each service validates a protocol-neutral draft in its
//!   `request` module (reporting every violation with its field path through
//!   [`validation::Violations`]) and returns domain types and pulled streams;
//! - [`error`] is the core's one error type; each edge converts it once;
//! - [`grpc`] is the gRPC edge, the only user of [`pb`] in the server;
//! - [`server`] wires the core and the edges, owns the per-call bookkeeping
//!   both edges share, health and the shutdown sequence;
//! - the `agentstream` command line is the binary's (`src/bin/agentstream/`):
//!   clap, progress bars and terminal output stay out of the library; being a
//!   gRPC client, it uses [`pb`] too.

pub mod chat;
pub mod config;
pub mod error;
pub mod grpc;
pub mod http;
pub mod llm;
pub mod metrics;
pub mod pb;
pub mod rag;
pub mod server;
pub mod tasks;
pub mod telemetry;
pub mod tokenizer;
pub mod validation;

pub use error::{Error, Result};
