//! Resumable streams kept in this process's memory (the default engine).
//!
//! Each stream is an [`Entry`] in one map: its header, its [`ChunkLog`] and
//! how it ended, in a `tokio::sync::watch` channel (the generation writes
//! under a short lock and wakes the readers; readers only read, through
//! their cursor), and a count of its readers in another, which the
//! stream's task watches to know when the last one left.
//!
//! One tokio task per stream, spawned by [`MemoryStreams`] and owning the
//! generation, does everything over the stream's life: it pulls the
//! chunks into the log as fast as the backend makes them; it stops the
//! generation when the stream is cancelled, when `ttl` passes with no
//! reader, or when the store closes; once the stream has ended it keeps
//! the entry until `ttl` passes with no reader, then removes it. Nothing
//! else holds the generation, so no reader can keep it alive or stall it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use futures::{FutureExt, StreamExt, future::BoxFuture};
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};

use super::{
    ChunkStream, Follow, KeptStreams, StreamLimits, StreamStore,
    log::{ChunkLog, Kept, Next},
};
use crate::{
    chat::{ChatChunk, CompletionHeader},
    error::{Error, Result},
};

/// How long CancelStream waits for a generation to stop.
const CANCEL_ACK_WAIT: Duration = Duration::from_secs(5);

/// Resumable streams in this process's memory.
#[derive(Debug)]
pub(crate) struct MemoryStreams {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    limits: StreamLimits,
    /// Cancelled by [`StreamStore::close`]; every stream's tokens are its
    /// children.
    closed: CancellationToken,
    streams: Mutex<HashMap<String, Arc<Entry>>>,
}

/// One stream.
#[derive(Debug)]
struct Entry {
    id: String,
    header: CompletionHeader,
    /// The API key name that started it (`None` on an open server).
    owner: Option<String>,
    journal: watch::Sender<Journal>,
    /// How many readers follow the stream now.
    readers: watch::Sender<usize>,
    /// Stops the generation (CancelStream, close, a failing shared store).
    stop: CancellationToken,
    /// Why the generation was stopped, when it was not a cancel: the error
    /// its readers end with.
    failure: Mutex<Option<Error>>,
    /// Removes the entry at once (eviction at the limit, close).
    forget: CancellationToken,
}

/// The mutable part of a stream.
#[derive(Debug)]
struct Journal {
    log: ChunkLog,
    /// How the stream ended, once it has, and when.
    end: Option<(Ending, Instant)>,
}

/// How a stream's generation ended.
#[derive(Debug, Clone)]
enum Ending {
    /// The backend finished every choice.
    Finished,
    /// The backend failed, or the server shut down.
    Failed(Error),
    /// CancelStream stopped it.
    Cancelled,
}

impl MemoryStreams {
    /// An empty store keeping what `limits` allow.
    pub(crate) fn new(limits: StreamLimits) -> Self {
        Self {
            shared: Arc::new(Shared {
                limits,
                closed: CancellationToken::new(),
                streams: Mutex::default(),
            }),
        }
    }
}

impl StreamStore for MemoryStreams {
    fn start<'a>(
        &'a self,
        header: CompletionHeader,
        chunks: ChunkStream,
        owner: Option<&'a str>,
        span: &'a Span,
    ) -> BoxFuture<'a, Result<Follow>> {
        let started = self.shared.insert(header, owner).map(|entry| {
            // The first reader counts before the task looks at the readers.
            let follow = follow(entry.clone(), 0, Counted::Yes);
            let task_span = tracing::info_span!(
                parent: None,
                "resumable_stream",
                stream_id = %entry.id,
                model = %entry.header.model,
            );
            task_span.follows_from(span);
            tokio::spawn(run(self.shared.clone(), entry, chunks).instrument(task_span));
            follow
        });
        async move { started }.boxed()
    }

    fn follow<'a>(
        &'a self,
        id: &'a str,
        after: u64,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Follow>> {
        let followed = self.shared.find_owned(id, owner).and_then(|entry| {
            entry.check_resume_point(after)?;
            Ok(follow(entry, after, Counted::Yes))
        });
        async move { followed }.boxed()
    }

    fn cancel<'a>(&'a self, id: &'a str, owner: Option<&'a str>) -> BoxFuture<'a, Result<()>> {
        let found = self.shared.find_owned(id, owner);
        async move {
            let entry = found?;
            entry.stop.cancel();
            // Answer once the generation has stopped (it drops the backend's
            // work as soon as it sees the token), as CancelTask does.
            let mut journal = entry.journal.subscribe();
            let stopped = journal.wait_for(|j| j.end.is_some());
            if tokio::time::timeout(CANCEL_ACK_WAIT, stopped).await.is_err() {
                tracing::warn!(stream_id = %entry.id, "resumable stream still stopping after cancellation");
            }
            Ok(())
        }
        .boxed()
    }

    fn kept(&self) -> KeptStreams {
        let streams = self.shared.lock();
        let ended = streams
            .values()
            .filter(|entry| entry.journal.borrow().end.is_some())
            .count();
        KeptStreams {
            generating: streams.len().saturating_sub(ended),
            ended,
        }
    }

    fn close(&self) {
        self.shared.closed.cancel();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a new stream, making room at the limit by forgetting the
    /// finished, unread stream that ended first.
    fn insert(&self, header: CompletionHeader, owner: Option<&str>) -> Result<Arc<Entry>> {
        if self.closed.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let mut streams = self.lock();
        if streams.len() >= self.limits.max_streams {
            let evictable = streams
                .values()
                .filter_map(|entry| Some((entry.idle_end()?, entry)))
                .min_by_key(|(ended, _)| *ended)
                .map(|(_, entry)| entry.clone());
            let Some(evicted) = evictable else {
                let limit = self.limits.max_streams;
                return Err(Error::ResourceExhausted(format!(
                    "the server keeps at most {limit} resumable streams and all are in use; \
                     retry later"
                )));
            };
            streams.remove(&evicted.id);
            evicted.forget.cancel();
        }
        let entry = Arc::new(Entry::new(
            header,
            owner,
            &self.closed,
            self.limits.max_buffer_bytes,
        ));
        streams.insert(entry.id.clone(), entry.clone());
        Ok(entry)
    }

    /// Stream `id`, whoever owns it.
    fn find(&self, id: &str) -> Result<Arc<Entry>> {
        self.lock().get(id).cloned().ok_or_else(|| not_found(id))
    }

    /// Stream `id` if `owner` owns it: another key's stream is as unknown
    /// as a stream that does not exist.
    fn find_owned(&self, id: &str, owner: Option<&str>) -> Result<Arc<Entry>> {
        let entry = self.find(id)?;
        if entry.owner.as_deref() == owner {
            Ok(entry)
        } else {
            Err(not_found(id))
        }
    }

    fn remove(&self, entry: &Entry) {
        let mut streams = self.lock();
        if streams
            .get(&entry.id)
            .is_some_and(|e| std::ptr::eq(&**e, entry))
        {
            streams.remove(&entry.id);
        }
    }
}

impl Entry {
    fn new(
        header: CompletionHeader,
        owner: Option<&str>,
        closed: &CancellationToken,
        max_bytes: usize,
    ) -> Self {
        Self {
            id: format!("stream-{}", uuid::Uuid::new_v4().simple()),
            header,
            owner: owner.map(str::to_owned),
            journal: watch::Sender::new(Journal {
                log: ChunkLog::new(max_bytes),
                end: None,
            }),
            readers: watch::Sender::new(0),
            stop: closed.child_token(),
            failure: Mutex::new(None),
            forget: closed.child_token(),
        }
    }

    /// When the stream ended, if it has and nobody reads it.
    fn idle_end(&self) -> Option<Instant> {
        if *self.readers.borrow() > 0 {
            return None;
        }
        self.journal.borrow().end.as_ref().map(|(_, at)| *at)
    }

    /// Refuses a resume point past the last chunk or before the kept ones.
    fn check_resume_point(&self, after: u64) -> Result<()> {
        let journal = self.journal.borrow();
        let last = journal.log.last_sequence();
        if after > last {
            return Err(Error::OutOfRange(format!(
                "after_sequence {after} is beyond the last chunk of stream `{}` ({last})",
                self.id
            )));
        }
        if let Next::Dropped { oldest } = journal.log.next_after(after) {
            return Err(dropped(&self.id, after, oldest));
        }
        Ok(())
    }

    fn push(&self, chunk: ChatChunk) {
        self.journal.send_modify(|journal| {
            journal.log.push(chunk);
        });
    }

    fn end(&self, ending: Ending) {
        self.journal.send_modify(|journal| {
            journal.end.get_or_insert((ending, Instant::now()));
        });
    }
}

/// The error of an unknown stream (or one of another key).
fn not_found(id: &str) -> Error {
    Error::NotFound(format!(
        "resumable stream `{}` (unknown, or expired after its time to live)",
        id.escape_debug()
    ))
}

/// The error of a reader whose next chunks were dropped from the buffer.
fn dropped(id: &str, after: u64, oldest: u64) -> Error {
    Error::OutOfRange(format!(
        "the chunks of stream `{id}` after sequence {after} are no longer kept: the \
         replay buffer starts at {oldest}"
    ))
}

/// Counts a reader of an entry while it lives (unless it is a tap).
struct Reader(Arc<Entry>, Counted);

/// Whether a [`Reader`] counts as one (a tap, which copies the stream
/// elsewhere, does not keep it alive).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Counted {
    Yes,
    No,
}

impl Reader {
    fn new(entry: Arc<Entry>, counted: Counted) -> Self {
        if counted == Counted::Yes {
            entry.readers.send_modify(|n| *n = n.saturating_add(1));
        }
        Self(entry, counted)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if self.1 == Counted::Yes {
            self.0.readers.send_modify(|n| *n = n.saturating_sub(1));
        }
    }
}

/// A reader somewhere else (another replica) that keeps a stream alive here
/// while this value lives, as a local reader would.
pub(crate) struct Presence {
    _reader: Reader,
}

impl MemoryStreams {
    /// Every chunk of stream `id` from the first, then how it ends, without
    /// counting as a reader: what copies the stream to a shared store reads.
    pub(crate) fn tap(&self, id: &str) -> Result<Follow> {
        let entry = self.shared.find(id)?;
        Ok(follow(entry, 0, Counted::No))
    }

    /// Counts a reader of stream `id` that is not in this process, while
    /// the returned value lives; `None` for an unknown stream.
    pub(crate) fn presence(&self, id: &str) -> Option<Presence> {
        let entry = self.shared.find(id).ok()?;
        Some(Presence {
            _reader: Reader::new(entry, Counted::Yes),
        })
    }

    /// Stops the generation of stream `id` without waiting (see
    /// [`StreamStore::cancel`]); false for an unknown stream.
    pub(crate) fn stop(&self, id: &str) -> bool {
        self.shared
            .find(id)
            .map(|entry| entry.stop.cancel())
            .is_ok()
    }

    /// Stops the generation of stream `id` because of `error` (the shared
    /// store cannot keep it): its readers end with `error` rather than
    /// CANCELLED. False for an unknown stream.
    pub(crate) fn fail(&self, id: &str, error: Error) -> bool {
        let Ok(entry) = self.shared.find(id) else {
            return false;
        };
        entry
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(error);
        entry.stop.cancel();
        true
    }
}

/// What a reader does next.
enum Step {
    Chunk(Kept),
    Fail(Error),
    End,
    Wait,
}

/// A reader of `entry` from the chunk after `after`.
fn follow(entry: Arc<Entry>, after: u64, counted: Counted) -> Follow {
    let stream_id = entry.id.clone();
    let header = entry.header.clone();
    let journal = entry.journal.subscribe();
    let reader = Reader::new(entry, counted);
    let chunks = futures::stream::unfold(Some((journal, after, reader)), |state| async move {
        let (mut journal, cursor, reader) = state?;
        loop {
            let step = {
                let journal = journal.borrow_and_update();
                match journal.log.next_after(cursor) {
                    Next::Chunk(kept) => Step::Chunk(kept.clone()),
                    Next::Dropped { oldest } => Step::Fail(dropped(&reader.0.id, cursor, oldest)),
                    Next::Waiting => match &journal.end {
                        None => Step::Wait,
                        Some((Ending::Finished, _)) => Step::End,
                        Some((Ending::Failed(error), _)) => Step::Fail(error.clone()),
                        Some((Ending::Cancelled, _)) => Step::Fail(Error::Cancelled(format!(
                            "resumable stream `{}` was cancelled",
                            reader.0.id
                        ))),
                    },
                }
            };
            match step {
                Step::Chunk(kept) => {
                    let cursor = kept.sequence;
                    return Some((Ok(kept), Some((journal, cursor, reader))));
                }
                Step::Fail(error) => return Some((Err(error), None)),
                Step::End => return None,
                // The entry (and so the sender) lives as long as the
                // reader does: `changed` fails only if it is gone.
                Step::Wait => {
                    if journal.changed().await.is_err() {
                        return None;
                    }
                }
            }
        }
    });
    Follow {
        stream_id,
        header,
        chunks: chunks.boxed(),
    }
}

/// The life of one stream: generate, then keep, then forget.
async fn run(shared: Arc<Shared>, entry: Arc<Entry>, mut chunks: ChunkStream) {
    let ttl = shared.limits.ttl;
    let generate = async {
        let mut usage = None;
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(chunk) => {
                    if let ChatChunk::Usage(u) = &chunk {
                        usage = Some(*u);
                    }
                    entry.push(chunk);
                }
                Err(error) => return (Ending::Failed(error), usage),
            }
        }
        (Ending::Finished, usage)
    };
    let ending = tokio::select! {
        biased;
        () = entry.stop.cancelled() => None,
        () = idle_for(&entry.readers, ttl) => {
            shared.remove(&entry);
            entry.end(Ending::Failed(Error::NotFound("the stream expired".into())));
            tracing::info!(
                chunks = entry.journal.borrow().log.last_sequence(),
                "resumable stream expired while generating: nobody resumed it in time"
            );
            return;
        }
        ended = generate => Some(ended),
    };
    // The generation (and the backend's work behind it) is dropped here.
    drop(chunks);
    let chunks_made = entry.journal.borrow().log.last_sequence();
    match ending {
        Some((ending, usage)) => {
            let outcome = match &ending {
                Ending::Finished => "finished",
                _ => "failed",
            };
            if let Ending::Failed(error) = &ending {
                tracing::info!(%error, "resumable stream failed");
            }
            let completion_tokens = usage.map(|u| u.completion_tokens);
            tracing::info!(
                outcome,
                chunks = chunks_made,
                completion_tokens,
                "resumable stream generated"
            );
            entry.end(ending);
        }
        None if shared.closed.is_cancelled() => {
            tracing::info!(chunks = chunks_made, "resumable stream stopped: shutdown");
            entry.end(Ending::Failed(Error::ShuttingDown));
        }
        None => {
            let failure = entry
                .failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(error) = failure {
                tracing::warn!(chunks = chunks_made, %error, "resumable stream stopped: its store failed");
                entry.end(Ending::Failed(error));
            } else {
                tracing::info!(chunks = chunks_made, "resumable stream cancelled");
                entry.end(Ending::Cancelled);
            }
        }
    }
    tokio::select! {
        () = entry.forget.cancelled() => {}
        () = idle_for(&entry.readers, ttl) => {}
    }
    shared.remove(&entry);
}

/// Resolves once nobody has read the stream for `ttl`.
async fn idle_for(readers: &watch::Sender<usize>, ttl: Duration) {
    let mut count = readers.subscribe();
    loop {
        let idle = *count.borrow_and_update() == 0;
        if idle {
            tokio::select! {
                () = tokio::time::sleep(ttl) => return,
                changed = count.changed() => {
                    if changed.is_err() {
                        // The count can no longer change: wait out the TTL.
                        tokio::time::sleep(ttl).await;
                        return;
                    }
                }
            }
        } else if count.changed().await.is_err() {
            // The entry is gone; nothing left to wait for.
            return;
        }
    }
}
