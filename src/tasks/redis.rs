//! The Redis task store: every replica on one Redis sees every task.
//!
//! Why it is built this way:
//! - The work of a task still runs in the replica that started it, writing
//!   its local [`Journal`]; a *flusher* follows that journal like any
//!   watcher and appends each event to Redis. The work therefore never
//!   waits for Redis, and a slow Redis costs no memory: the flusher skips
//!   progress the local log has compacted, never a state change.
//! - One Redis stream per task, entry id `0-<sequence>`, so resuming after a
//!   sequence is an exact range read (`XRANGE key (0-<after> +`). Watchers
//!   do not block on Redis connections: one pub/sub connection per replica
//!   carries "task X has new events" notices, fanned out to the watchers of
//!   X; a watcher also re-reads every [`POLL_INTERVAL`], so a notice lost
//!   while Redis restarts only delays it.
//! - Each append is one Lua script over the task's two keys (record hash
//!   and stream, same hash tag, so Redis Cluster keeps them on one slot):
//!   it refuses anything after a terminal state and any sequence already
//!   written, compacts progress entries (never a state change) and, at the
//!   end, sets the retention with `PEXPIRE`.
//! - Cancel requests travel on a pub/sub channel that every replica reads;
//!   only the one running the task acts on it.
//! - Each replica holds a lease key it refreshes; a task whose owner's lease
//!   has expired (a replica killed with `kill -9`) is marked FAILED by any
//!   other replica within about one lease time.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::{
    FutureExt, StreamExt,
    future::BoxFuture,
    stream::{self, BoxStream},
};
use redis::{AsyncCommands, Client, Script, aio::ConnectionManager, streams::StreamRangeReply};
use tokio::sync::{mpsc, watch};

use super::{
    TaskState,
    log::{Change, TaskEvent, TaskStatus},
    page_token::SigningKey,
    store::{CancelRequest, TaskLimits, TaskPage, TaskSnapshot, TaskStore, TaskWatch},
    watch::Journal,
};
use crate::error::{Error, Result};

/// How often a watcher re-reads its stream without a notice.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Most events a watcher reads from Redis at once.
const READ_BATCH: usize = 64;

/// Most cancel requests waiting for this replica's runner.
const CANCEL_QUEUE: usize = 256;

/// Channel of "task X has new events" notices (payload: the id).
const EVENTS_CHANNEL: &str = "agentstream:events";

/// Channel of cancel requests (payload: id, newline, reason).
const CANCEL_CHANNEL: &str = "agentstream:cancel";

/// The newest-first list: a sorted set of ids scored by creation time (µs).
const LIST_KEY: &str = "agentstream:tasks";

/// The ids of unfinished tasks, which the lease sweep checks.
const UNFINISHED_KEY: &str = "agentstream:unfinished";

/// The key that signs ListTasks page tokens, shared by every replica
/// (hex; created by the first replica with `SET NX`, never expires).
const PAGE_TOKEN_KEY: &str = "agentstream:page-token-key";

/// Appends one event: KEYS record, stream; ARGV sequence, keep, retention
/// in ms (0 while unfinished), then the entry's field/value pairs.
/// Returns 1 when written, 0 when refused (ended or already written), -1
/// when the task is unknown.
const APPEND: &str = r"
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -1 end
if state == 'SUCCEEDED' or state == 'FAILED' or state == 'CANCELLED' then return 0 end
local seq = tonumber(ARGV[1])
local last = tonumber(redis.call('HGET', KEYS[1], 'last_sequence') or '0')
if seq <= last then return 0 end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], '0-' .. seq, unpack(fields))
redis.call('HSET', KEYS[1], 'last_sequence', seq, unpack(fields))
local keep = tonumber(ARGV[2])
local len = redis.call('XLEN', KEYS[2])
if len > keep then
  local entries = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', len - keep + 3)
  for _, entry in ipairs(entries) do
    if len <= keep then break end
    if entry[2][2] == 'p' then
      redis.call('XDEL', KEYS[2], entry[1])
      len = len - 1
    end
  end
end
local retention = tonumber(ARGV[3])
if retention > 0 then
  redis.call('PEXPIRE', KEYS[1], retention)
  redis.call('PEXPIRE', KEYS[2], retention)
end
return 1
";

/// How the Redis store runs.
#[derive(Debug, Clone)]
pub(crate) struct RedisOptions {
    /// `redis://host:port/db` (or `rediss://`, `redis+unix://`).
    pub url: String,
    /// How long this replica's lease lasts without renewal (renewed every
    /// third of it); at least 300 ms.
    pub lease: Duration,
}

/// Tasks kept in Redis, shared by every replica on it.
pub(crate) struct RedisStore {
    shared: Arc<Shared>,
}

struct Shared {
    limits: TaskLimits,
    lease: Duration,
    /// This replica's id, the owner of the tasks it runs.
    replica: String,
    redis: ConnectionManager,
    append: Script,
    /// Watchers waiting for notices, by task id.
    notices: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Cancel requests for the runner, until it takes them.
    cancels: Mutex<Option<mpsc::Receiver<CancelRequest>>>,
    /// Signs page tokens; the same on every replica.
    page_token_key: SigningKey,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("replica", &self.shared.replica)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to Redis (failing if it cannot be reached now), takes this
    /// replica's lease and starts the notice listener and the lease sweep.
    pub(crate) async fn connect(
        options: &RedisOptions,
        limits: TaskLimits,
    ) -> Result<Self, redis::RedisError> {
        let client = Client::open(options.url.as_str())?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        let redis = ConnectionManager::new_with_config(client.clone(), config).await?;
        let (cancel_tx, cancel_rx) = mpsc::channel(CANCEL_QUEUE);
        let page_token_key = shared_page_token_key(&mut redis.clone()).await?;
        let shared = Arc::new(Shared {
            limits,
            lease: options.lease.max(Duration::from_millis(300)),
            replica: uuid::Uuid::new_v4().simple().to_string(),
            redis,
            append: Script::new(APPEND),
            notices: Mutex::default(),
            cancels: Mutex::new(Some(cancel_rx)),
            page_token_key,
        });
        shared.renew_lease().await?;
        tokio::spawn(listen(client, Arc::downgrade(&shared), cancel_tx));
        tokio::spawn(keep_lease(Arc::downgrade(&shared)));
        Ok(Self { shared })
    }
}

/// The page-token key every replica on this Redis uses: the one stored,
/// or a new random one stored now (`SET NX`, so that replicas starting
/// together agree on the first one written).
async fn shared_page_token_key(redis: &mut ConnectionManager) -> redis::RedisResult<SigningKey> {
    let _: Option<String> = redis::cmd("SET")
        .arg(PAGE_TOKEN_KEY)
        .arg(SigningKey::random().to_hex())
        .arg("NX")
        .query_async(redis)
        .await?;
    let stored: Option<String> = redis.get(PAGE_TOKEN_KEY).await?;
    match stored.as_deref().and_then(SigningKey::from_hex) {
        Some(key) => Ok(key),
        None => Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "the page-token key in Redis is not 32 bytes of hex",
            PAGE_TOKEN_KEY.to_owned(),
        ))),
    }
}

impl RedisStore {
    /// What another engine on the same Redis (resumable streams) shares
    /// with this store: its connection, this replica's lease and notices.
    pub(crate) fn link(&self) -> RedisLink {
        RedisLink {
            shared: self.shared.clone(),
        }
    }
}

/// The task store's Redis connection, replica lease and notice listener,
/// lent to other engines so that a replica holds one of each.
#[derive(Clone)]
pub(crate) struct RedisLink {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink")
            .field("replica", &self.shared.replica)
            .finish_non_exhaustive()
    }
}

impl RedisLink {
    /// The shared (multiplexed, reconnecting) connection.
    pub(crate) fn connection(&self) -> ConnectionManager {
        self.shared.redis.clone()
    }

    /// This replica's id, whose lease [`RedisLink::replica_alive`] checks.
    pub(crate) fn replica(&self) -> &str {
        &self.shared.replica
    }

    /// How long a replica's lease lasts without renewal.
    pub(crate) fn lease(&self) -> Duration {
        self.shared.lease
    }

    /// Whether replica `replica` still holds its lease.
    pub(crate) async fn replica_alive(&self, replica: &str) -> redis::RedisResult<bool> {
        let mut redis = self.shared.redis.clone();
        redis.exists(lease_key(replica)).await
    }

    /// Wakes on every notice published for `key` on [`NOTICE_CHANNEL`].
    pub(crate) fn notice(&self, key: &str) -> Notice {
        Notice::new(self.shared.clone(), key.to_owned())
    }
}

/// The channel that carries "`key` changed" notices (payload: the key).
pub(crate) const NOTICE_CHANNEL: &str = EVENTS_CHANNEL;

/// A subscription to the notices of one key, dropped from the fan-out map
/// with its last subscriber.
pub(crate) struct Notice {
    shared: Arc<Shared>,
    key: String,
    receiver: watch::Receiver<u64>,
}

impl Notice {
    fn new(shared: Arc<Shared>, key: String) -> Self {
        let receiver = shared
            .notices()
            .entry(key.clone())
            .or_insert_with(|| watch::Sender::new(0))
            .subscribe();
        Self {
            shared,
            key,
            receiver,
        }
    }

    /// Marks every notice so far as seen.
    pub(crate) fn mark_seen(&mut self) {
        self.receiver.borrow_and_update();
    }

    /// Waits for a notice after the last [`Notice::mark_seen`], at most `wait`.
    pub(crate) async fn wait(&mut self, wait: Duration) {
        let _ = tokio::time::timeout(wait, self.receiver.changed()).await;
    }
}

impl Drop for Notice {
    fn drop(&mut self) {
        let mut notices = self.shared.notices();
        // This receiver is still alive: it is the last one when the count
        // is 1.
        if notices
            .get(&self.key)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            notices.remove(&self.key);
        }
    }
}

impl TaskStore for RedisStore {
    fn create(&self, kind: &'static str) -> BoxFuture<'_, Result<Arc<Journal>>> {
        async move {
            let journal = Arc::new(Journal::new(
                micros(SystemTime::now()),
                kind,
                self.shared.limits.max_events,
            ));
            self.shared.create(&journal).await.map_err(redis_error)?;
            tokio::spawn(flush(self.shared.clone(), journal.clone()));
            Ok(journal)
        }
        .boxed()
    }

    fn ended(&self, _journal: &Arc<Journal>) {
        // The flusher writes the terminal event with its retention.
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<TaskSnapshot>> {
        async move {
            let fields = self.shared.record(id).await.map_err(redis_error)?;
            parse_record(&fields).ok_or_else(|| not_found(id))
        }
        .boxed()
    }

    fn last_sequence<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<u64>> {
        async move {
            let mut redis = self.shared.redis.clone();
            let last: Option<u64> = redis
                .hget(record_key(id), "last_sequence")
                .await
                .map_err(redis_error)?;
            last.ok_or_else(|| not_found(id))
        }
        .boxed()
    }

    fn watch<'a>(&'a self, id: &'a str, after: u64) -> BoxFuture<'a, Result<TaskWatch>> {
        async move {
            let mut redis = self.shared.redis.clone();
            let known: bool = redis.exists(record_key(id)).await.map_err(redis_error)?;
            if !known {
                return Err(not_found(id));
            }
            Ok(follow(self.shared.clone(), id.to_owned(), after).boxed())
        }
        .boxed()
    }

    fn list(&self, page_size: usize, before: Option<u64>) -> BoxFuture<'_, Result<TaskPage>> {
        async move {
            self.shared
                .page(page_size, before)
                .await
                .map_err(redis_error)
        }
        .boxed()
    }

    fn request_cancel(&self, request: CancelRequest) -> BoxFuture<'_, Result<()>> {
        async move {
            // A task whose replica is gone has no work to stop: fail it now.
            self.shared.reap(&request.id).await.map_err(redis_error)?;
            let mut redis = self.shared.redis.clone();
            let payload = format!("{}\n{}", request.id, request.reason);
            let _: i64 = redis
                .publish(CANCEL_CHANNEL, payload)
                .await
                .map_err(redis_error)?;
            Ok(())
        }
        .boxed()
    }

    fn cancel_requests(&self) -> Option<BoxStream<'static, CancelRequest>> {
        let receiver = self
            .shared
            .cancels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        Some(tokio_stream_from(receiver))
    }

    fn page_token_key(&self) -> &[u8] {
        self.shared.page_token_key.as_bytes()
    }
}

/// The stream of an mpsc receiver.
fn tokio_stream_from(receiver: mpsc::Receiver<CancelRequest>) -> BoxStream<'static, CancelRequest> {
    stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|request| (request, receiver))
    })
    .boxed()
}

impl Shared {
    fn notices(&self) -> MutexGuard<'_, HashMap<String, watch::Sender<u64>>> {
        self.notices.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn renew_lease(&self) -> redis::RedisResult<()> {
        let mut redis = self.redis.clone();
        redis::cmd("SET")
            .arg(lease_key(&self.replica))
            .arg(1)
            .arg("PX")
            .arg(millis(self.lease))
            .query_async(&mut redis)
            .await
    }

    /// Writes the record and first event of a new task, then lists it.
    async fn create(&self, journal: &Journal) -> redis::RedisResult<()> {
        let snapshot = journal.snapshot();
        let mut fields = status_fields(Change::State, &snapshot.status);
        fields.extend([
            ("id".into(), snapshot.id.clone()),
            ("kind".into(), snapshot.kind.clone()),
            ("created".into(), micros(snapshot.created).to_string()),
            ("owner".into(), self.replica.clone()),
        ]);
        let mut redis = self.redis.clone();
        redis::pipe()
            .atomic()
            .xadd(
                events_key(&snapshot.id),
                "0-1",
                &status_fields(Change::State, &snapshot.status),
            )
            .ignore()
            .hset_multiple(record_key(&snapshot.id), &fields)
            .ignore()
            .hset(record_key(&snapshot.id), "last_sequence", 1)
            .ignore()
            .query_async::<()>(&mut redis)
            .await?;
        redis::pipe()
            .zadd(LIST_KEY, &snapshot.id, journal.order)
            .ignore()
            .sadd(UNFINISHED_KEY, &snapshot.id)
            .ignore()
            .query_async::<()>(&mut redis)
            .await
    }

    /// Appends `event` of task `id`; true unless Redis refused it for good.
    async fn append(&self, id: &str, event: &TaskEvent) -> redis::RedisResult<bool> {
        let terminal = event.status.state.is_terminal();
        let (keep, retention) = if terminal {
            (
                self.limits.max_finished_events,
                millis(self.limits.retention).max(1),
            )
        } else {
            (self.limits.max_events, 0)
        };
        let mut redis = self.redis.clone();
        let mut invocation = self.append.key(record_key(id));
        invocation
            .key(events_key(id))
            .arg(event.sequence)
            .arg(keep.max(super::log::MIN_EVENTS))
            .arg(retention);
        for (field, value) in status_fields(event.change, &event.status) {
            invocation.arg(field).arg(value);
        }
        let written: i64 = invocation.invoke_async(&mut redis).await?;
        if written == 1 {
            let _: i64 = redis.publish(EVENTS_CHANNEL, id).await?;
        }
        if terminal {
            let _: i64 = redis.srem(UNFINISHED_KEY, id).await?;
        }
        Ok(written == 1)
    }

    async fn record(&self, id: &str) -> redis::RedisResult<HashMap<String, String>> {
        let mut redis = self.redis.clone();
        redis.hgetall(record_key(id)).await
    }

    /// The events of task `id` after `after`, at most [`READ_BATCH`].
    async fn read_after(&self, id: &str, after: u64) -> redis::RedisResult<Vec<TaskEvent>> {
        let mut redis = self.redis.clone();
        let reply: StreamRangeReply = redis
            .xrange_count(events_key(id), format!("(0-{after}"), "+", READ_BATCH)
            .await?;
        Ok(reply.ids.iter().filter_map(parse_entry).collect())
    }

    async fn page(&self, page_size: usize, before: Option<u64>) -> redis::RedisResult<TaskPage> {
        let mut redis = self.redis.clone();
        let max = before.map_or_else(|| "+inf".to_owned(), |before| format!("({before}"));
        let ids: Vec<(String, u64)> = redis
            .zrevrangebyscore_limit_withscores(LIST_KEY, max, "-inf", 0, page_size as isize + 1)
            .await?;
        let more = ids.len() > page_size;
        let ids = &ids[..ids.len().min(page_size)];
        let mut pipe = redis::pipe();
        for (id, _) in ids {
            pipe.hgetall(record_key(id));
        }
        let records: Vec<HashMap<String, String>> = pipe.query_async(&mut redis).await?;
        let mut tasks = Vec::with_capacity(ids.len());
        let mut forgotten = Vec::new();
        for ((id, _), record) in ids.iter().zip(&records) {
            match parse_record(record) {
                Some(task) => tasks.push(task),
                None => forgotten.push(id.clone()),
            }
        }
        if !forgotten.is_empty() {
            let _: i64 = redis.zrem(LIST_KEY, forgotten).await?;
        }
        Ok(TaskPage {
            tasks,
            next_before: if more {
                ids.last().map(|(_, score)| *score)
            } else {
                None
            },
        })
    }

    /// Marks task `id` FAILED if it is unfinished and its owner's lease has
    /// expired.
    async fn reap(&self, id: &str) -> redis::RedisResult<()> {
        let record = self.record(id).await?;
        let mut redis = self.redis.clone();
        let Some(task) = parse_record(&record) else {
            let _: i64 = redis.srem(UNFINISHED_KEY, id).await?;
            return Ok(());
        };
        if task.status.state.is_terminal() {
            let _: i64 = redis.srem(UNFINISHED_KEY, id).await?;
            return Ok(());
        }
        let owner = record.get("owner").map(String::as_str).unwrap_or_default();
        let alive: bool = redis.exists(lease_key(owner)).await?;
        if alive {
            return Ok(());
        }
        let last: u64 = record
            .get("last_sequence")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut status = task.status;
        status.state = TaskState::Failed;
        status.time = SystemTime::now();
        status.set_error("the replica running this task stopped".into());
        let event = TaskEvent {
            sequence: last.saturating_add(1),
            change: Change::State,
            status,
        };
        if self.append(id, &event).await? {
            tracing::warn!(task_id = %id, "task of a stopped replica marked FAILED");
        }
        Ok(())
    }
}

/// Appends the events of a task this replica runs to Redis, until its
/// terminal event is written.
async fn flush(shared: Arc<Shared>, journal: Arc<Journal>) {
    let mut events = std::pin::pin!(journal.follow(1));
    while let Some(event) = events.next().await {
        loop {
            match shared.append(&journal.id, &event).await {
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(task_id = %journal.id, %error, "cannot write a task event to Redis; retrying");
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            }
        }
    }
}

/// Follows the stream of task `id` from `after`, ending after its terminal
/// event (or when the task is forgotten).
fn follow(
    shared: Arc<Shared>,
    id: String,
    after: u64,
) -> impl futures::Stream<Item = TaskEvent> + Send + 'static {
    let notice = Notice::new(shared.clone(), id.clone());
    let state = Follow {
        shared,
        id,
        cursor: after,
        buffer: VecDeque::new(),
        notice,
        ended: false,
    };
    stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        loop {
            if let Some(event) = state.buffer.pop_front() {
                state.cursor = event.sequence;
                let more = !event.status.state.is_terminal();
                return Some((event, more.then_some(state)));
            }
            state.notice.mark_seen();
            match state.shared.read_after(&state.id, state.cursor).await {
                Ok(events) if !events.is_empty() => {
                    state.buffer.extend(events);
                    continue;
                }
                Ok(_) if state.ended => return None,
                Ok(_) => match state.shared.record(&state.id).await {
                    // Nothing after the cursor and the task has ended (or
                    // was forgotten): one more read takes what was appended
                    // with its end, then the stream is complete.
                    Ok(record) => match parse_record(&record) {
                        Some(task) if !task.status.state.is_terminal() => {}
                        _ => {
                            state.ended = true;
                            continue;
                        }
                    },
                    Err(error) => {
                        tracing::warn!(task_id = %state.id, %error, "cannot read a task from Redis")
                    }
                },
                Err(error) => {
                    tracing::warn!(task_id = %state.id, %error, "cannot read task events from Redis")
                }
            }
            state.notice.wait(POLL_INTERVAL).await;
        }
    })
}

/// A watcher's place in a task's stream.
struct Follow {
    shared: Arc<Shared>,
    id: String,
    cursor: u64,
    buffer: VecDeque<TaskEvent>,
    notice: Notice,
    /// The task had ended at the last look: the next empty read is the end.
    ended: bool,
}

/// Listens for notices and cancel requests, reconnecting while the store
/// lives.
async fn listen(client: Client, shared: Weak<Shared>, cancels: mpsc::Sender<CancelRequest>) {
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => {
                let subscribed = async {
                    pubsub.subscribe(EVENTS_CHANNEL).await?;
                    pubsub.subscribe(CANCEL_CHANNEL).await
                };
                if let Err(error) = subscribed.await {
                    tracing::warn!(%error, "cannot subscribe to Redis channels");
                } else {
                    let mut messages = pubsub.into_on_message();
                    while let Some(message) = messages.next().await {
                        let Some(shared) = shared.upgrade() else {
                            return;
                        };
                        let Ok(payload) = message.get_payload::<String>() else {
                            continue;
                        };
                        if message.get_channel_name() == CANCEL_CHANNEL {
                            if let Some((id, reason)) = payload.split_once('\n') {
                                let request = CancelRequest {
                                    id: id.to_owned(),
                                    reason: reason.to_owned(),
                                };
                                if cancels.try_send(request).is_err() {
                                    tracing::warn!("cancel request queue full; request dropped");
                                }
                            }
                        } else if let Some(sender) = shared.notices().get(&payload) {
                            sender.send_modify(|n| *n = n.wrapping_add(1));
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot open a Redis pub/sub connection"),
        }
        if shared.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Renews this replica's lease and fails the tasks of replicas whose lease
/// expired, while the store lives.
async fn keep_lease(shared: Weak<Shared>) {
    loop {
        let Some(store) = shared.upgrade() else {
            return;
        };
        let period = store.lease / 3;
        if let Err(error) = store.renew_lease().await {
            tracing::warn!(%error, "cannot renew this replica's Redis lease");
        }
        let mut redis = store.redis.clone();
        match redis.smembers::<_, Vec<String>>(UNFINISHED_KEY).await {
            Ok(ids) => {
                for id in ids {
                    if let Err(error) = store.reap(&id).await {
                        tracing::warn!(task_id = %id, %error, "cannot check a task's replica");
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot list unfinished tasks"),
        }
        drop(store);
        tokio::time::sleep(period).await;
    }
}

fn record_key(id: &str) -> String {
    format!("agentstream:task:{{{id}}}")
}

fn events_key(id: &str) -> String {
    format!("agentstream:task:{{{id}}}:events")
}

fn lease_key(replica: &str) -> String {
    format!("agentstream:replica:{replica}")
}

/// The fields of an event (and of the record's status), as stored.
fn status_fields(change: Change, status: &TaskStatus) -> Vec<(String, String)> {
    let change = match change {
        Change::State => "s",
        Change::Progress => "p",
    };
    vec![
        ("c".into(), change.into()),
        ("state".into(), status.state.as_str().into()),
        ("step".into(), status.step.to_string()),
        ("total".into(), status.total_steps.to_string()),
        ("percent".into(), status.percent.to_string()),
        ("message".into(), status.message.clone()),
        ("error".into(), status.error.clone()),
        ("time".into(), micros(status.time).to_string()),
    ]
}

fn parse_status(get: impl Fn(&str) -> Option<String>) -> Option<(Change, TaskStatus)> {
    let change = match get("c")?.as_str() {
        "s" => Change::State,
        "p" => Change::Progress,
        _ => return None,
    };
    let state = match get("state")?.as_str() {
        "PENDING" => TaskState::Pending,
        "RUNNING" => TaskState::Running,
        "SUCCEEDED" => TaskState::Succeeded,
        "FAILED" => TaskState::Failed,
        "CANCELLED" => TaskState::Cancelled,
        _ => return None,
    };
    Some((
        change,
        TaskStatus {
            state,
            step: get("step")?.parse().ok()?,
            total_steps: get("total")?.parse().ok()?,
            percent: get("percent")?.parse().ok()?,
            message: get("message")?,
            error: get("error")?,
            time: time(get("time")?.parse().ok()?),
        },
    ))
}

fn parse_record(record: &HashMap<String, String>) -> Option<TaskSnapshot> {
    let (_, status) = parse_status(|field| record.get(field).cloned())?;
    Some(TaskSnapshot {
        id: record.get("id")?.clone(),
        kind: record.get("kind")?.clone(),
        created: time(record.get("created")?.parse().ok()?),
        status,
    })
}

fn parse_entry(entry: &redis::streams::StreamId) -> Option<TaskEvent> {
    let sequence = entry.id.strip_prefix("0-")?.parse().ok()?;
    let (change, status) = parse_status(|field| entry.get(field))?;
    Some(TaskEvent {
        sequence,
        change,
        status,
    })
}

/// Microseconds since the Unix epoch (0 before it).
fn micros(time: SystemTime) -> u64 {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
}

fn time(micros: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(micros)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("task `{id}`"))
}

/// A Redis failure as the error a client gets: `what` (the task store,
/// the stream store) is full (RESOURCE_EXHAUSTED) when Redis is out of
/// memory under `maxmemory` with `noeviction`, else unavailable (down,
/// unreachable, or slower than the response timeout).
pub(crate) fn store_error(what: &str, error: &redis::RedisError) -> Error {
    if is_full(error) {
        Error::ResourceExhausted(format!(
            "the {what} (Redis) is full (maxmemory); retry later: {error}"
        ))
    } else if error.is_timeout() {
        Error::Unavailable(format!(
            "the {what} (Redis) did not answer in time: {error}"
        ))
    } else {
        Error::Unavailable(format!("the {what} (Redis) failed: {error}"))
    }
}

/// Whether Redis refused a write for want of memory: an `OOM` reply, also
/// inside a pipeline or an aborted transaction (`EXECABORT`).
fn is_full(error: &redis::RedisError) -> bool {
    error.code() == Some("OOM")
        || error
            .clone()
            .into_server_errors()
            .is_some_and(|errors| errors.iter().any(|(_, e)| e.code() == "OOM"))
}

fn redis_error(error: redis::RedisError) -> Error {
    store_error("task store", &error)
}
