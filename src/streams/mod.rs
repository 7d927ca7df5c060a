//! Resumable chat streams: a completion that outlives its client, kept so
//! that a client that left (a closed laptop lid, a dropped connection) can
//! come back, replay what it missed and follow the rest live.
//!
//! Why it is built this way:
//! - Every other chat stream is pulled by its response and dies with it.
//!   A resumable one cannot be: its generation runs in a tokio task of its
//!   own, owned by the stream's entry in the [`StreamStore`], and stopped by
//!   CancelStream, by `--resumable-ttl` passing with no reader, or by the
//!   server's shutdown. Nothing else spawns on the chat path, so a
//!   non-resumable request keeps today's code and speed.
//! - Readers do not get a queue each: like a task's watchers
//!   (`tasks::registry`), they read one shared, bounded [`log`] through
//!   their own cursor, so a slow or absent reader never holds the
//!   generation back and costs nothing but its cursor.
//! - The buffer is bounded in bytes; past the bound the oldest chunks are
//!   dropped, and a reader that needs one of them gets OUT_OF_RANGE rather
//!   than a text with a hole in it. The newest chunk is always kept: a
//!   resumable stream always ends with its usage chunk (whatever the
//!   request's `include_usage`), so its final usage can be read on resume
//!   until the stream expires.
//! - Stream ids are `stream-` and 32 hex digits from a random (v4) UUID:
//!   122 random bits from the OS generator, so knowing one id tells nothing
//!   about another.
//!
//! - A stream belongs to the API key that started it (its name, the
//!   *owner*; `None` on a server without keys): resuming or cancelling it
//!   with another key answers NOT_FOUND, exactly as for an unknown id, so
//!   a key cannot learn that another key's stream exists.
//!
//! [`StreamStore`] is what an engine implements; [`memory::MemoryStreams`]
//! keeps everything in this process. The trait is object-safe with boxed
//! futures, so an engine that keeps the chunks in a shared store (Redis)
//! can implement it later without touching the edges. [`Streams`] is what
//! the edges call: it applies the rules that do not depend on the engine.

pub(crate) mod log;
pub(crate) mod memory;
pub(crate) mod redis;

use std::{fmt, sync::Arc, time::Duration};

use futures::{StreamExt, future::BoxFuture, stream::BoxStream};
use tracing::Span;

pub(crate) use log::Kept;

use crate::{
    chat::{Chat, ChatChunk, ChatDraft, CompletionHeader},
    error::{Error, FieldViolation, Result},
};

/// Longest stream id accepted, in bytes (the server's ids are 39).
pub(crate) const MAX_STREAM_ID_BYTES: usize = 128;

/// How much the server keeps of resumable streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamLimits {
    /// How long a stream is kept (and generates) after its last reader left.
    pub ttl: Duration,
    /// Most streams kept at once; beyond it, the finished stream with no
    /// reader that ended first is forgotten, and if there is none a new
    /// resumable request gets RESOURCE_EXHAUSTED.
    pub max_streams: usize,
    /// Bytes of chunks kept per stream (text plus a fixed cost per chunk);
    /// older chunks are dropped past it.
    pub max_buffer_bytes: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(600),
            max_streams: 1_000,
            max_buffer_bytes: 1 << 20,
        }
    }
}

/// A completion's chunks, as a backend produces them.
pub(crate) type ChunkStream = BoxStream<'static, Result<ChatChunk>>;

/// A reader of a resumable stream: the chunks after its resume point, then
/// the live ones. It ends when the stream ends: with `None` when the
/// generation finished, or with the error that ended it (CANCELLED for
/// CancelStream, the backend's error for a failure, OUT_OF_RANGE when the
/// reader fell behind the buffer). Dropping it leaves the stream running.
pub(crate) struct Follow {
    /// The stream's id.
    pub stream_id: String,
    /// What every chunk of the completion repeats.
    pub header: CompletionHeader,
    /// The chunks with their sequence.
    pub chunks: BoxStream<'static, Result<Kept>>,
}

impl fmt::Debug for Follow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Follow")
            .field("stream_id", &self.stream_id)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// Where resumable streams are kept, and who runs their generation.
pub(crate) trait StreamStore: Send + Sync + fmt::Debug + 'static {
    /// Keeps a new stream of `chunks`, owned by `owner`, under a fresh id,
    /// starts generating it whether or not anyone reads, and returns its
    /// first reader (from sequence 1). Refuses with RESOURCE_EXHAUSTED at
    /// the limit of streams. `span` is the starting call's: the
    /// generation's own span follows it.
    fn start<'a>(
        &'a self,
        header: CompletionHeader,
        chunks: ChunkStream,
        owner: Option<&'a str>,
        span: &'a Span,
    ) -> BoxFuture<'a, Result<Follow>>;

    /// A new reader of stream `id` from the chunk after `after`; NOT_FOUND
    /// for an unknown or expired id or one `owner` does not own,
    /// OUT_OF_RANGE when `after` is beyond the last chunk or the chunks
    /// after it are no longer kept.
    fn follow<'a>(
        &'a self,
        id: &'a str,
        after: u64,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Follow>>;

    /// Stops the generation of stream `id` (idempotent: a stream that has
    /// ended is left as it is); its readers end with CANCELLED after the
    /// chunks made so far, which stay kept. NOT_FOUND for an unknown id or
    /// one `owner` does not own.
    fn cancel<'a>(&'a self, id: &'a str, owner: Option<&'a str>) -> BoxFuture<'a, Result<()>>;

    /// How many streams this process keeps now (for the metrics gauge).
    fn kept(&self) -> KeptStreams;

    /// Stops every generation and forgets every stream (server shutdown).
    fn close(&self);
}

/// How many resumable streams a process keeps, by whether they generate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct KeptStreams {
    /// Streams still generating.
    pub generating: usize,
    /// Streams that ended and are kept for their time to live.
    pub ended: usize,
}

/// The resumable streams of the server, as the edges use them.
#[derive(Clone, Debug)]
pub(crate) struct Streams {
    store: Arc<dyn StreamStore>,
}

impl Streams {
    /// Streams kept by `store`.
    pub(crate) fn new(store: Arc<dyn StreamStore>) -> Self {
        Self { store }
    }

    /// Streams kept in this process's memory within `limits`.
    pub(crate) fn in_memory(limits: StreamLimits) -> Self {
        Self::new(Arc::new(memory::MemoryStreams::new(limits)))
    }

    /// Checks `draft` and starts it as a resumable stream owned by `owner`
    /// (the caller's API key name); the returned reader is the starting
    /// call's. The usage chunk is always included, so that whoever resumes
    /// the stream learns its final usage.
    pub(crate) async fn start(
        &self,
        chat: &Chat,
        mut draft: ChatDraft,
        owner: Option<&str>,
        span: &Span,
    ) -> Result<Follow> {
        draft.include_usage = true;
        let completion = span.in_scope(|| chat.start(draft))?;
        let (header, chunks) = span.in_scope(|| completion.into_chunks());
        self.store.start(header, chunks.boxed(), owner, span).await
    }

    /// Resumes stream `id` after sequence `after` (0: from its first kept
    /// chunk) for `owner`.
    pub(crate) async fn resume(&self, id: &str, after: u64, owner: Option<&str>) -> Result<Follow> {
        check_id(id)?;
        self.store.follow(id, after, owner).await
    }

    /// Stops stream `id` for `owner`; idempotent.
    pub(crate) async fn cancel(&self, id: &str, owner: Option<&str>) -> Result<()> {
        check_id(id)?;
        self.store.cancel(id, owner).await
    }

    /// How many streams this process keeps now.
    pub(crate) fn kept(&self) -> KeptStreams {
        self.store.kept()
    }

    /// Stops every generation and forgets every stream (server shutdown).
    pub(crate) fn close(&self) {
        self.store.close();
    }
}

impl Default for Streams {
    fn default() -> Self {
        Self::in_memory(StreamLimits::default())
    }
}

/// A stream id as a client sent it: present and of a sane length.
fn check_id(id: &str) -> Result<()> {
    let problem = if id.is_empty() {
        "required: the `stream_id` of a resumable stream's chunks"
    } else if id.len() > MAX_STREAM_ID_BYTES {
        "too long to be a stream id"
    } else {
        return Ok(());
    };
    Err(Error::InvalidArgument(vec![FieldViolation::new(
        "stream_id",
        problem,
    )]))
}
