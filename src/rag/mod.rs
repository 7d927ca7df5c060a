//! RagService: retrieval-augmented answers over an embedded document index.
//!
//! Why it is built this way:
//! - The index is embedded ([`index`], tantivy with BM25) and lives in the
//!   server's data directory: no search service to run beside agentstream,
//!   and documents survive restarts (an ingestion is one atomic commit).
//! - Retrieval ranks *passages* ([`passages`]): a question is answered by a
//!   few sentences, not by whole documents, and a per-document cap keeps one
//!   long document from crowding out the rest.
//! - Every text goes through one analyzer ([`tokenizer`]) that segments
//!   Chinese with jieba and handles English and mixed text, because the seed
//!   users write Chinese first and Chinese has no spaces between words.
//! - An answer is a stream of events ([`events`]) that is pulled like a chat
//!   generation, so cancellation and deadlines stop it the same way. With the
//!   built-in models the answer is extractive ([`answer`]); any other model
//!   gets the passages as numbered sources and is told to cite them.
//! - Ingestion is a library call ([`DocumentIndex::ingest`]) that reports to
//!   an [`IngestProgress`]; IngestDocuments runs it as a TaskService task.
//! - [`queue`] admits ingestions while those waiting for the one writer
//!   hold few enough bytes, and knows the ids they will write;
//! - [`document`] holds the document type, its limits and its one check;
//!   [`request`] checks every request's draft before work starts;
//!   [`service`] is the protocol-free set of operations both edges call.

pub(crate) mod answer;
pub(crate) mod document;
pub(crate) mod events;
pub(crate) mod index;
pub(crate) mod markdown;
pub(crate) mod passages;
pub(crate) mod question;
pub(crate) mod queue;
pub(crate) mod request;
pub(crate) mod service;
pub(crate) mod tokenizer;

pub use document::NewDocument;
pub(crate) use events::AnswerEvent;
pub use index::{
    DocumentIndex, DocumentInfo, DocumentPage, IngestError, IngestProgress, IngestReport,
    RetrievedPassage, Unwatched,
};
pub use queue::DEFAULT_MAX_QUEUED_INGEST_BYTES;
pub(crate) use service::Rag;
pub use tokenizer::has_cjk;
