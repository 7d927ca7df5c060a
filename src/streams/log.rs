//! The replay buffer of one resumable stream: its chunks in sequence order,
//! bounded in bytes.
//!
//! The idea is the task event log's (`tasks::log`): one append-only log per
//! stream, readers keep only a cursor, sequence numbers are never reused,
//! so resuming after a sequence is exact. What differs is what the bound
//! drops: a task's progress event supersedes the previous one and can be
//! coalesced, but a chat chunk carries text no later chunk repeats. So
//! when the buffer is over its bound the *oldest* chunks are dropped, and a
//! reader whose next chunk was dropped is told so ([`Next::Dropped`])
//! instead of silently skipping text. The newest chunk is always kept, so
//! the final usage chunk of a finished stream is never lost.

use std::collections::VecDeque;

use crate::chat::{ChatChunk, ChoiceDelta};

/// Bytes counted for each kept chunk besides its text: the slot itself,
/// roughly, so that a stream of empty chunks is bounded too.
const CHUNK_OVERHEAD: usize = 128;

/// One chunk of a resumable stream with its place in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Kept {
    /// Position in the stream: 1, 2, 3, ...
    pub sequence: u64,
    /// The chunk.
    pub chunk: ChatChunk,
}

/// What a reader at a cursor gets next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next<'a> {
    /// The chunk right after the cursor.
    Chunk(&'a Kept),
    /// Nothing after the cursor yet.
    Waiting,
    /// The chunks right after the cursor are no longer kept; the oldest
    /// kept one has this sequence.
    Dropped {
        /// The oldest sequence still kept.
        oldest: u64,
    },
}

/// The kept chunks of one stream.
#[derive(Debug)]
pub(crate) struct ChunkLog {
    chunks: VecDeque<Kept>,
    bytes: usize,
    last_sequence: u64,
    max_bytes: usize,
}

impl ChunkLog {
    /// An empty log keeping about `max_bytes` of chunks (always the newest
    /// one, whatever its size).
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            chunks: VecDeque::new(),
            bytes: 0,
            last_sequence: 0,
            max_bytes,
        }
    }

    /// Appends `chunk` as the next sequence and returns it, dropping the
    /// oldest chunks while the log is over its bound.
    pub(crate) fn push(&mut self, chunk: ChatChunk) -> u64 {
        self.last_sequence = self.last_sequence.saturating_add(1);
        self.bytes = self.bytes.saturating_add(chunk_bytes(&chunk));
        self.chunks.push_back(Kept {
            sequence: self.last_sequence,
            chunk,
        });
        while self.bytes > self.max_bytes && self.chunks.len() > 1 {
            if let Some(oldest) = self.chunks.pop_front() {
                self.bytes = self.bytes.saturating_sub(chunk_bytes(&oldest.chunk));
            }
        }
        self.last_sequence
    }

    /// What a reader that has seen every chunk up to `cursor` gets next.
    pub(crate) fn next_after(&self, cursor: u64) -> Next<'_> {
        let Some(oldest) = self.chunks.front().map(|k| k.sequence) else {
            return Next::Waiting;
        };
        if cursor < oldest.saturating_sub(1) {
            return Next::Dropped { oldest };
        }
        let index = self.chunks.partition_point(|k| k.sequence <= cursor);
        self.chunks.get(index).map_or(Next::Waiting, Next::Chunk)
    }

    /// The sequence of the last chunk pushed (0 before the first).
    pub(crate) fn last_sequence(&self) -> u64 {
        self.last_sequence
    }

    /// Bytes counted for the kept chunks.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

/// What a chunk costs the buffer: its text and a fixed overhead.
fn chunk_bytes(chunk: &ChatChunk) -> usize {
    let text = match chunk {
        ChatChunk::Choice { delta, .. } => match delta {
            ChoiceDelta::Content(text)
            | ChoiceDelta::Reasoning(text)
            | ChoiceDelta::Refusal(text) => text.len(),
            ChoiceDelta::ToolCall(c) => {
                c.id.len() + c.name.len() + c.arguments.len() + CHUNK_OVERHEAD / 2
            }
            ChoiceDelta::Finished(_) => 0,
        },
        ChatChunk::Usage(_) => 0,
    };
    text + CHUNK_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Usage;

    fn text(s: &str) -> ChatChunk {
        ChatChunk::Choice {
            index: 0,
            first: false,
            delta: ChoiceDelta::Content(s.into()),
        }
    }

    fn replay(log: &ChunkLog, mut cursor: u64) -> Vec<u64> {
        let mut seen = Vec::new();
        while let Next::Chunk(kept) = log.next_after(cursor) {
            cursor = kept.sequence;
            seen.push(kept.sequence);
        }
        seen
    }

    #[test]
    fn sequences_start_at_one_and_replay_starts_after_the_cursor() {
        let mut log = ChunkLog::new(1 << 20);
        assert_eq!(log.next_after(0), Next::Waiting);
        for word in ["a", "b", "c"] {
            log.push(text(word));
        }
        assert_eq!(replay(&log, 0), [1, 2, 3]);
        assert_eq!(replay(&log, 2), [3]);
        assert_eq!(log.next_after(3), Next::Waiting);
        assert_eq!(log.last_sequence(), 3);
    }

    #[test]
    fn over_the_bound_the_oldest_chunks_go_and_a_reader_behind_them_is_told() {
        let mut log = ChunkLog::new(3 * (CHUNK_OVERHEAD + 1));
        for _ in 0..10 {
            log.push(text("x"));
        }
        assert_eq!(replay(&log, 7), [8, 9, 10]);
        assert!(log.bytes() <= 3 * (CHUNK_OVERHEAD + 1));
        // A reader at 7 has seen everything before the oldest kept chunk.
        assert_eq!(log.next_after(6), Next::Dropped { oldest: 8 });
        assert_eq!(log.next_after(0), Next::Dropped { oldest: 8 });
    }

    #[test]
    fn the_newest_chunk_is_kept_whatever_its_size() {
        let mut log = ChunkLog::new(10);
        log.push(text(&"y".repeat(1000)));
        log.push(ChatChunk::Usage(Usage::default()));
        assert_eq!(replay(&log, 1), [2]);
        assert_eq!(log.next_after(0), Next::Dropped { oldest: 2 });
    }
}
