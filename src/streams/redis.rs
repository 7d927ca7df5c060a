//! Resumable streams on Redis: any replica resumes or cancels a stream
//! that another one generates.
//!
//! Why it is built this way:
//! - The generation stays where it started, in the replica's
//!   [`MemoryStreams`]: the starting call reads it there with no round trip,
//!   and a slow Redis never stalls the backend. A *flusher* task per stream
//!   taps that local log (without counting as a reader) and copies each
//!   chunk to a Redis stream, entry id `0-<sequence>`, so resuming after a
//!   sequence is an exact `XRANGE`; then it writes how the stream ended.
//! - Each replica reads with range reads on its one multiplexed connection
//!   and waits on the task store's pub/sub notices, not with `XREAD BLOCK`,
//!   which would need a connection per reader. A missed notice (Redis
//!   restarting) only delays a reader until its next poll.
//! - The replay buffer is bounded by chunk count (`XADD MAXLEN`), derived
//!   from `--resumable-buffer-bytes`; a reader whose next chunk was trimmed
//!   gets OUT_OF_RANGE, as in memory.
//! - Time to live: readers on any replica stamp `read_at` on the stream's
//!   record about once a second; the flusher holds a local reader
//!   ([`Presence`]) while that stamp is fresh, so the generating replica
//!   keeps generating as long as someone, anywhere, reads. Keys expire
//!   (`PEXPIRE`) `ttl` after the end, or after the last reader's stamp.
//! - Cancel: any replica sets the record's `cancel` flag and publishes a
//!   notice the flusher waits on; the flusher stops the local generation,
//!   and the canceller answers once Redis says the stream has ended.
//! - Faults: a reader whose reads keep failing for [`FAULT_WAIT`] ends
//!   with UNAVAILABLE (never hangs). A stream whose generating replica lost
//!   its lease (killed) is marked failed by the first reader that notices,
//!   after a lease time without a chunk: every reader then ends with
//!   UNAVAILABLE after the chunks that were kept, which stay readable for
//!   `ttl`.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::{FutureExt, StreamExt, future::BoxFuture};
use redis::{AsyncCommands, Script, streams::StreamRangeReply};
use tokio::time::Instant;
use tracing::{Instrument, Span};

use super::{
    ChunkStream, Follow, Kept, KeptStreams, StreamLimits, StreamStore,
    memory::{MemoryStreams, Presence},
};
use crate::{
    chat::{ChatChunk, CompletionHeader},
    error::{Error, ErrorKind, Result},
    tasks::redis::{NOTICE_CHANNEL, Notice, RedisLink, store_error},
};

/// How long a reader or the flusher waits between looks without a notice.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// How long Redis may keep failing before a reader ends with UNAVAILABLE
/// and the flusher gives up (stopping the generation).
pub(crate) const FAULT_WAIT: Duration = Duration::from_secs(3);

/// How often a reader stamps `read_at`.
const TOUCH_EVERY: Duration = Duration::from_secs(1);

/// A `read_at` stamp younger than this keeps the generation alive.
const FRESH_READ: Duration = Duration::from_secs(3);

/// How long CancelStream waits for the generating replica to stop.
const CANCEL_ACK_WAIT: Duration = Duration::from_secs(5);

/// How long a resume point beyond the chunks in Redis is waited for while
/// the stream generates (the generating replica's own reader is ahead of
/// its flusher by a round trip or so).
const FLUSH_LAG: Duration = Duration::from_secs(2);

/// Most chunks a reader reads at once.
const READ_BATCH: usize = 64;

/// Bytes of replay buffer counted per chunk when turning
/// `--resumable-buffer-bytes` into a chunk count.
const BYTES_PER_CHUNK: usize = 128;

/// Extra life of a generating stream's keys beyond `ttl`, refreshed on every
/// chunk (a replica killed mid-stream leaves keys that still expire).
const GENERATING_SLACK: Duration = Duration::from_secs(60);

/// How long "until the keys expire" lasts at most, whatever the TTL.
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// Ends a stream that is still running: KEYS record, chunks; ARGV state,
/// error kind, error message, time to live in ms, notice channel, stream
/// id. Returns 1 when it ended it, 0 when it had ended (or is gone).
const END: &str = r"
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'error_kind', ARGV[2], 'error', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
";

/// Longest pause between two attempts to write a stream's end.
const MAX_END_PAUSE: Duration = Duration::from_secs(5);

/// Resumable streams shared by every replica on one Redis.
#[derive(Debug)]
pub(crate) struct RedisStreams {
    local: Arc<MemoryStreams>,
    link: RedisLink,
    limits: StreamLimits,
}

impl RedisStreams {
    /// Streams generated in this process, kept in Redis through `link`.
    pub(crate) fn new(link: RedisLink, limits: StreamLimits) -> Self {
        Self {
            local: Arc::new(MemoryStreams::new(limits)),
            link,
            limits,
        }
    }

    fn max_chunks(&self) -> usize {
        (self.limits.max_buffer_bytes / BYTES_PER_CHUNK).max(1)
    }
}

impl StreamStore for RedisStreams {
    fn start<'a>(
        &'a self,
        header: CompletionHeader,
        chunks: ChunkStream,
        owner: Option<&'a str>,
        span: &'a Span,
    ) -> BoxFuture<'a, Result<Follow>> {
        async move {
            let follow = self.local.start(header, chunks, owner, span).await?;
            let id = follow.stream_id.clone();
            let created = create(&self.link, &id, &follow.header, owner, self.limits.ttl).await;
            if let Err(error) = created {
                self.local.stop(&id);
                return Err(redis_error(error));
            }
            let tap = self.local.tap(&id)?;
            let flusher = Flusher {
                local: self.local.clone(),
                link: self.link.clone(),
                id: id.clone(),
                ttl: self.limits.ttl,
                max_chunks: self.max_chunks(),
            };
            let flush_span =
                tracing::info_span!(parent: None, "resumable_stream_flush", stream_id = %id);
            flush_span.follows_from(span);
            tokio::spawn(flusher.run(tap).instrument(flush_span));
            Ok(follow)
        }
        .boxed()
    }

    fn follow<'a>(
        &'a self,
        id: &'a str,
        after: u64,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Follow>> {
        async move {
            let mut notice = self.link.notice(id);
            let deadline = Instant::now() + FLUSH_LAG;
            let record = loop {
                notice.mark_seen();
                let record = record_of(&self.link, id).await.map_err(redis_error)?;
                let record = record
                    .filter(|record| record.key.as_deref() == owner)
                    .ok_or_else(|| not_found(id))?;
                // The generating replica's reader may be a little ahead of
                // what its flusher has written: wait for it a moment.
                let lagging = after > record.last_sequence && record.ending.is_none();
                if !lagging || Instant::now() >= deadline {
                    break record;
                }
                notice.wait(POLL_INTERVAL).await;
            };
            if after > record.last_sequence {
                return Err(Error::OutOfRange(format!(
                    "after_sequence {after} is beyond the last chunk of stream `{id}` ({})",
                    record.last_sequence
                )));
            }
            let reader = Reader {
                link: self.link.clone(),
                notice,
                id: id.to_owned(),
                ttl: self.limits.ttl,
                cursor: after,
                buffer: VecDeque::new(),
                ended: None,
                touched: None,
                failing_since: None,
                progressed: Instant::now(),
            };
            Ok(Follow {
                stream_id: id.to_owned(),
                header: record.header,
                chunks: reader.into_stream(),
            })
        }
        .boxed()
    }

    fn cancel<'a>(&'a self, id: &'a str, owner: Option<&'a str>) -> BoxFuture<'a, Result<()>> {
        async move {
            let mut notice = self.link.notice(id);
            let record = record(&self.link, id).await.map_err(redis_error)?;
            let record = Record::parse(&record)
                .filter(|record| record.key.as_deref() == owner)
                .ok_or_else(|| not_found(id))?;
            if record.ending.is_some() {
                return Ok(());
            }
            let mut redis = self.link.connection();
            redis::pipe()
                .hset(record_key(id), "cancel", 1)
                .ignore()
                .publish(NOTICE_CHANNEL, cancel_notice(id))
                .ignore()
                .query_async::<()>(&mut redis)
                .await
                .map_err(redis_error)?;
            // Answer once the generating replica has stopped (or is gone).
            let deadline = Instant::now() + CANCEL_ACK_WAIT;
            while Instant::now() < deadline {
                notice.mark_seen();
                let record = record_of(&self.link, id).await.map_err(redis_error)?;
                match record {
                    None => return Ok(()),
                    Some(record) if record.ending.is_some() => return Ok(()),
                    Some(record) => {
                        let alive = self.link.replica_alive(&record.owner).await;
                        if !alive.map_err(redis_error)? {
                            return Ok(());
                        }
                    }
                }
                notice.wait(POLL_INTERVAL).await;
            }
            tracing::warn!(stream_id = %id, "resumable stream still stopping after cancellation");
            Ok(())
        }
        .boxed()
    }

    /// The streams this replica generates, and their local copies kept
    /// after they ended (the streams other replicas generate are theirs).
    fn kept(&self) -> KeptStreams {
        self.local.kept()
    }

    fn close(&self) {
        self.local.close();
    }
}

/// How a stream ended, as Redis keeps it.
#[derive(Debug, Clone)]
enum Ending {
    Finished,
    Cancelled,
    Failed(Error),
}

/// A stream's record (hash `agentstream:stream:{id}`).
#[derive(Debug)]
struct Record {
    header: CompletionHeader,
    /// The replica that generates it.
    owner: String,
    /// The API key name that started it (`None` on an open server).
    key: Option<String>,
    last_sequence: u64,
    ending: Option<Ending>,
}

impl Record {
    fn parse(fields: &HashMap<String, String>) -> Option<Self> {
        let get = |name: &str| fields.get(name).cloned();
        let ending = match get("state")?.as_str() {
            "running" => None,
            "finished" => Some(Ending::Finished),
            "cancelled" => Some(Ending::Cancelled),
            "failed" => Some(Ending::Failed(rebuild_error(
                &get("error_kind").unwrap_or_default(),
                get("error").unwrap_or_default(),
            ))),
            _ => return None,
        };
        Some(Self {
            header: CompletionHeader {
                id: get("completion_id")?,
                created: get("created")?.parse().ok()?,
                model: get("model")?,
            },
            owner: get("owner")?,
            key: get("key"),
            last_sequence: get("last_sequence")?.parse().ok()?,
            ending,
        })
    }
}

/// Writes the record of a new stream this replica generates.
async fn create(
    link: &RedisLink,
    id: &str,
    header: &CompletionHeader,
    key: Option<&str>,
    ttl: Duration,
) -> redis::RedisResult<()> {
    let mut redis = link.connection();
    let mut fields = vec![
        ("completion_id", header.id.clone()),
        ("created", header.created.to_string()),
        ("model", header.model.clone()),
        ("owner", link.replica().to_owned()),
        ("state", "running".to_owned()),
        ("last_sequence", "0".to_owned()),
        ("read_at", now_ms().to_string()),
    ];
    if let Some(key) = key {
        fields.push(("key", key.to_owned()));
    }
    redis::pipe()
        .atomic()
        .hset_multiple(record_key(id), &fields)
        .ignore()
        .pexpire(record_key(id), expiry(ttl + GENERATING_SLACK))
        .ignore()
        .query_async(&mut redis)
        .await
}

async fn record(link: &RedisLink, id: &str) -> redis::RedisResult<HashMap<String, String>> {
    let mut redis = link.connection();
    redis.hgetall(record_key(id)).await
}

async fn record_of(link: &RedisLink, id: &str) -> redis::RedisResult<Option<Record>> {
    Ok(Record::parse(&record(link, id).await?))
}

/// Copies one locally generated stream to Redis and carries cancel
/// requests and remote readers' presence back to the generation.
struct Flusher {
    local: Arc<MemoryStreams>,
    link: RedisLink,
    id: String,
    ttl: Duration,
    max_chunks: usize,
}

impl Flusher {
    async fn run(self, tap: Follow) {
        let mut chunks = tap.chunks;
        let mut cancel = self.link.notice(&cancel_notice(&self.id));
        let mut presence: Option<Presence> = None;
        let mut looked = Instant::now();
        loop {
            cancel.mark_seen();
            let next = tokio::select! {
                next = chunks.next() => Some(next),
                () = cancel.wait(POLL_INTERVAL) => None,
            };
            let waited = next.is_none();
            let ending = match next {
                Some(Some(Ok(kept))) => match self.write_chunk(&kept).await {
                    Ok(()) => None,
                    Err(error) => {
                        // The chunks can no longer be shared: stop making
                        // them, and tell every reader why.
                        self.local.fail(&self.id, error.clone());
                        Some(Ending::Failed(error))
                    }
                },
                Some(Some(Err(Error::Cancelled(_)))) => Some(Ending::Cancelled),
                Some(Some(Err(error))) => Some(Ending::Failed(error)),
                Some(None) => Some(Ending::Finished),
                None => None,
            };
            if let Some(ending) = ending {
                self.write_end(ending).await;
                return;
            }
            if looked.elapsed() >= POLL_INTERVAL || waited {
                looked = Instant::now();
                presence = self.look(presence).await;
            }
        }
    }

    /// Reads the cancel flag and the readers' stamp: stops the generation
    /// when asked, and keeps a local reader while a remote one is fresh.
    async fn look(&self, presence: Option<Presence>) -> Option<Presence> {
        let mut redis = self.link.connection();
        let looked: redis::RedisResult<(Option<String>, Option<u64>)> = redis::cmd("HMGET")
            .arg(record_key(&self.id))
            .arg("cancel")
            .arg("read_at")
            .query_async(&mut redis)
            .await;
        match looked {
            Ok((cancel, read_at)) => {
                if cancel.is_some() {
                    self.local.stop(&self.id);
                }
                let fresh =
                    read_at.is_some_and(|at| now_ms().saturating_sub(at) < millis(FRESH_READ));
                match (fresh, presence) {
                    (true, Some(presence)) => Some(presence),
                    (true, None) => self.local.presence(&self.id),
                    (false, _) => None,
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read a resumable stream's record from Redis");
                presence
            }
        }
    }

    /// Appends one chunk, retrying for [`FAULT_WAIT`]; the error if Redis
    /// kept failing (RESOURCE_EXHAUSTED when it is full).
    async fn write_chunk(&self, kept: &Kept) -> Result<()> {
        let encoded = serde_json::to_string(&kept.chunk)
            .map_err(|error| Error::Internal(format!("cannot encode a chunk: {error}")))?;
        let deadline = Instant::now() + FAULT_WAIT;
        loop {
            let mut redis = self.link.connection();
            let written: redis::RedisResult<()> = redis::pipe()
                .atomic()
                .cmd("XADD")
                .arg(chunks_key(&self.id))
                .arg("MAXLEN")
                .arg(self.max_chunks)
                .arg(format!("0-{}", kept.sequence))
                .arg("c")
                .arg(&encoded)
                .ignore()
                .hset(record_key(&self.id), "last_sequence", kept.sequence)
                .ignore()
                .pexpire(
                    record_key(&self.id),
                    expiry(self.ttl.saturating_add(GENERATING_SLACK)),
                )
                .ignore()
                .pexpire(
                    chunks_key(&self.id),
                    expiry(self.ttl.saturating_add(GENERATING_SLACK)),
                )
                .ignore()
                .publish(NOTICE_CHANNEL, &self.id)
                .ignore()
                .query_async(&mut redis)
                .await;
            match written {
                Ok(()) => return Ok(()),
                Err(error) if Instant::now() >= deadline => {
                    tracing::warn!(%error, "cannot write a resumable stream's chunk to Redis; stopping it");
                    return Err(redis_error(error));
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot write a resumable stream's chunk to Redis; retrying");
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            }
        }
    }

    /// Records how the stream ended (an expired stream is deleted). Redis
    /// may be failing (that may be why the stream ended): the end is retried
    /// until it is written or the stream's keys would have expired, so that
    /// no reader anywhere waits for a stream that has stopped.
    async fn write_end(&self, ending: Ending) {
        // `--resumable-ttl` is the operator's: a huge one means "retry for
        // as long as the process lives", not an overflowing Instant.
        let now = Instant::now();
        let deadline = now
            .checked_add(self.ttl.saturating_add(GENERATING_SLACK))
            .unwrap_or(now + YEAR);
        let mut pause = POLL_INTERVAL;
        let mut warned = false;
        loop {
            let written = match &ending {
                // Expired: nobody read it within the time to live.
                Ending::Failed(Error::NotFound(_)) => {
                    let mut redis = self.link.connection();
                    redis::pipe()
                        .del(record_key(&self.id))
                        .ignore()
                        .del(chunks_key(&self.id))
                        .ignore()
                        .publish(NOTICE_CHANNEL, &self.id)
                        .ignore()
                        .query_async::<()>(&mut redis)
                        .await
                }
                ending => end(&self.link, &self.id, ending, self.ttl).await.map(drop),
            };
            match written {
                Ok(()) => return,
                Err(error) if Instant::now() >= deadline => {
                    tracing::warn!(%error, "cannot write a resumable stream's end to Redis; giving up");
                    return;
                }
                Err(error) => {
                    if !warned {
                        tracing::warn!(%error, "cannot write a resumable stream's end to Redis; retrying");
                        warned = true;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_END_PAUSE);
                }
            }
        }
    }
}

/// Records that stream `id` ended with `ending` unless it already ended
/// (or is gone), keeps its keys `ttl` and wakes its readers; true when
/// written.
async fn end(
    link: &RedisLink,
    id: &str,
    ending: &Ending,
    ttl: Duration,
) -> redis::RedisResult<bool> {
    let (state, kind, message) = match ending {
        Ending::Finished => ("finished", "", String::new()),
        Ending::Cancelled => ("cancelled", "", String::new()),
        Ending::Failed(error) => ("failed", error.kind().as_str(), error.to_string()),
    };
    let mut redis = link.connection();
    let written: i64 = Script::new(END)
        .key(record_key(id))
        .key(chunks_key(id))
        .arg(state)
        .arg(kind)
        .arg(message)
        .arg(expiry(ttl))
        .arg(NOTICE_CHANNEL)
        .arg(id)
        .invoke_async(&mut redis)
        .await?;
    Ok(written == 1)
}

/// A reader of a stream in Redis, on any replica.
struct Reader {
    link: RedisLink,
    notice: Notice,
    id: String,
    ttl: Duration,
    cursor: u64,
    buffer: VecDeque<Kept>,
    /// How the stream ended, once a look at the record said so; the next
    /// empty read then ends the reader.
    ended: Option<Ending>,
    touched: Option<Instant>,
    failing_since: Option<Instant>,
    /// When the reader last got a chunk: a stream is only declared orphaned
    /// (its replica's lease gone) after a lease time without one, so that
    /// a lease not yet renewed after a Redis restart is not mistaken for a
    /// dead replica.
    progressed: Instant,
}

/// What a reader does after one look at Redis.
enum Step {
    Yield(Kept),
    End(Option<Error>),
    Wait,
    Again,
}

impl Reader {
    fn into_stream(self) -> futures::stream::BoxStream<'static, Result<Kept>> {
        futures::stream::unfold(Some(self), |reader| async move {
            let mut reader = reader?;
            loop {
                match reader.step().await {
                    Step::Yield(kept) => {
                        reader.cursor = kept.sequence;
                        reader.progressed = Instant::now();
                        return Some((Ok(kept), Some(reader)));
                    }
                    Step::End(None) => return None,
                    Step::End(Some(error)) => return Some((Err(error), None)),
                    Step::Again => {}
                    Step::Wait => reader.notice.wait(POLL_INTERVAL).await,
                }
            }
        })
        .boxed()
    }

    async fn step(&mut self) -> Step {
        if let Some(kept) = self.buffer.pop_front() {
            if kept.sequence != self.cursor.saturating_add(1) {
                return Step::End(Some(dropped(&self.id, self.cursor, kept.sequence)));
            }
            return Step::Yield(kept);
        }
        self.notice.mark_seen();
        match self.look().await {
            Ok(step) => {
                self.failing_since = None;
                step
            }
            Err(error) => {
                let since = *self.failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= FAULT_WAIT {
                    return Step::End(Some(redis_error(error)));
                }
                tracing::warn!(stream_id = %self.id, %error, "cannot read a resumable stream from Redis; retrying");
                Step::Wait
            }
        }
    }

    async fn look(&mut self) -> redis::RedisResult<Step> {
        self.touch().await?;
        let mut redis = self.link.connection();
        let reply: StreamRangeReply = redis
            .xrange_count(
                chunks_key(&self.id),
                format!("(0-{}", self.cursor),
                "+",
                READ_BATCH,
            )
            .await?;
        let mut read = Vec::with_capacity(reply.ids.len());
        for entry in &reply.ids {
            match parse_entry(entry) {
                Some(kept) => read.push(kept),
                None => {
                    return Ok(Step::End(Some(Error::Internal(format!(
                        "stream `{}` holds a chunk this server cannot read",
                        self.id
                    )))));
                }
            }
        }
        if !read.is_empty() {
            self.buffer.extend(read);
            return Ok(Step::Again);
        }
        if let Some(ending) = self.ended.take() {
            return Ok(Step::End(match ending {
                Ending::Finished => None,
                Ending::Cancelled => Some(Error::Cancelled(format!(
                    "resumable stream `{}` was cancelled",
                    self.id
                ))),
                Ending::Failed(error) => Some(error),
            }));
        }
        let Some(record) = record_of(&self.link, &self.id).await? else {
            return Ok(Step::End(Some(not_found(&self.id))));
        };
        if record.last_sequence > self.cursor {
            // Written after the range read: read again. (The chunks are
            // trimmed only from the front, which the next read detects.)
            return Ok(Step::Again);
        }
        if let Some(ending) = record.ending {
            // The end is written after the last chunk: one more read
            // takes anything written meanwhile.
            self.ended = Some(ending);
            return Ok(Step::Again);
        }
        let stalled = self.progressed.elapsed() >= self.link.lease();
        if stalled && !self.link.replica_alive(&record.owner).await? {
            // Ended for every reader, here and on other replicas: the next
            // look (of anyone) reads how it ended from the record.
            self.orphaned().await?;
            return Ok(Step::Again);
        }
        Ok(Step::Wait)
    }

    /// Records that the stream's generating replica is gone (unless the
    /// stream ended meanwhile): it ends with UNAVAILABLE for every reader,
    /// its kept chunks stay readable, and its keys expire `ttl` later.
    async fn orphaned(&self) -> redis::RedisResult<()> {
        let error = Error::Unavailable(format!(
            "the replica generating resumable stream `{}` is gone; the chunks it made are kept",
            self.id
        ));
        if end(&self.link, &self.id, &Ending::Failed(error), self.ttl).await? {
            tracing::warn!(stream_id = %self.id, "resumable stream of a stopped replica marked failed");
        }
        Ok(())
    }

    /// Stamps `read_at` about once a second, and keeps an ended stream's
    /// keys for `ttl` after its last reader.
    async fn touch(&mut self) -> redis::RedisResult<()> {
        if self.touched.is_some_and(|at| at.elapsed() < TOUCH_EVERY) {
            return Ok(());
        }
        let mut redis = self.link.connection();
        let mut pipe = redis::pipe();
        pipe.hset(record_key(&self.id), "read_at", now_ms())
            .ignore();
        if self.ended.is_some() {
            pipe.pexpire(record_key(&self.id), expiry(self.ttl))
                .ignore();
            pipe.pexpire(chunks_key(&self.id), expiry(self.ttl))
                .ignore();
        }
        pipe.query_async::<()>(&mut redis).await?;
        self.touched = Some(Instant::now());
        Ok(())
    }
}

fn parse_entry(entry: &redis::streams::StreamId) -> Option<Kept> {
    let sequence = entry.id.strip_prefix("0-")?.parse().ok()?;
    let encoded: String = entry.get("c")?;
    let chunk: ChatChunk = serde_json::from_str(&encoded).ok()?;
    Some(Kept { sequence, chunk })
}

/// The error a failed stream ended with, from its kind and message.
fn rebuild_error(kind: &str, message: String) -> Error {
    let kinds = [
        ErrorKind::InvalidArgument,
        ErrorKind::NotFound,
        ErrorKind::DeadlineExceeded,
        ErrorKind::Unavailable,
        ErrorKind::ResourceExhausted,
        ErrorKind::FailedPrecondition,
        ErrorKind::OutOfRange,
        ErrorKind::Cancelled,
    ];
    match kinds.into_iter().find(|k| k.as_str() == kind) {
        Some(ErrorKind::NotFound) => Error::NotFound(message),
        Some(ErrorKind::Unavailable | ErrorKind::DeadlineExceeded) => Error::Unavailable(message),
        Some(ErrorKind::ResourceExhausted) => Error::ResourceExhausted(message),
        Some(ErrorKind::FailedPrecondition | ErrorKind::InvalidArgument) => {
            Error::FailedPrecondition(message)
        }
        Some(ErrorKind::OutOfRange) => Error::OutOfRange(message),
        Some(ErrorKind::Cancelled) => Error::Cancelled(message),
        _ => Error::Internal(message),
    }
}

/// The error of a reader whose next chunks were trimmed.
fn dropped(id: &str, after: u64, oldest: u64) -> Error {
    Error::OutOfRange(format!(
        "the chunks of stream `{id}` after sequence {after} are no longer kept: the \
         replay buffer starts at {oldest}"
    ))
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!(
        "resumable stream `{}` (unknown, or expired after its time to live)",
        id.escape_debug()
    ))
}

/// Redis out of memory is RESOURCE_EXHAUSTED; anything else UNAVAILABLE.
fn redis_error(error: redis::RedisError) -> Error {
    store_error("stream store", &error)
}

fn record_key(id: &str) -> String {
    format!("agentstream:stream:{{{id}}}")
}

fn chunks_key(id: &str) -> String {
    format!("agentstream:stream:{{{id}}}:chunks")
}

/// The notice key a stream's flusher waits on for cancel requests.
fn cancel_notice(id: &str) -> String {
    format!("{id}:cancel")
}

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    millis(since)
}

/// A `PEXPIRE` time in milliseconds.
fn expiry(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
