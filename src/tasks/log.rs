//! A task's append-only event log, bounded by compacting old progress.
//!
//! Watchers do not get a queue each: they read this one log through their
//! own cursor (the last sequence they were sent). A watcher that stops
//! reading therefore costs nothing but its cursor, and the task never waits
//! for it. The price is paid here: when the log is over its limit, the
//! oldest *progress* events are dropped (each progress event carries the
//! whole progress, so a later one supersedes it). A watcher behind the
//! compaction point jumps to the next retained event: its progress events
//! are coalesced. State changes (at most three per task: PENDING, RUNNING
//! and the terminal state) are never dropped, so every watcher sees them.
//! Sequence numbers are never reused or renumbered, which is what makes
//! resuming with `after_sequence` exact.

use std::{collections::VecDeque, time::SystemTime};

use super::TaskState;

/// The fewest events a log keeps: the three state changes and the latest
/// progress.
pub(crate) const MIN_EVENTS: usize = 4;

/// Longest progress message kept, in bytes; longer ones are truncated.
pub(crate) const MAX_MESSAGE_BYTES: usize = 1024;

/// Longest error kept, in bytes; longer ones are truncated.
pub(crate) const MAX_ERROR_BYTES: usize = 8 * 1024;

/// A task's state and latest progress at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskStatus {
    /// Life-cycle state.
    pub state: TaskState,
    /// Steps done.
    pub step: u32,
    /// Steps in all, 0 while unknown.
    pub total_steps: u32,
    /// Progress from 0 to 100.
    pub percent: f64,
    /// Human-readable progress.
    pub message: String,
    /// Why the task failed; empty unless FAILED.
    pub error: String,
    /// When this status was reached.
    pub time: SystemTime,
}

impl TaskStatus {
    /// The status of a task that was just registered.
    pub fn pending(time: SystemTime) -> Self {
        Self {
            state: TaskState::Pending,
            step: 0,
            total_steps: 0,
            percent: 0.0,
            message: String::new(),
            error: String::new(),
            time,
        }
    }

    /// Records progress: `step` of `total_steps` (0: unknown) and a message.
    pub fn set_progress(&mut self, step: u32, total_steps: u32, message: String, time: SystemTime) {
        self.step = step;
        self.total_steps = total_steps;
        self.percent = percent(step, total_steps);
        self.message = truncate(message, MAX_MESSAGE_BYTES);
        self.time = time;
    }

    /// Records an error (truncated to [`MAX_ERROR_BYTES`]).
    pub fn set_error(&mut self, error: String) {
        self.error = truncate(error, MAX_ERROR_BYTES);
    }
}

/// Why an event was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// The state changed; never compacted.
    State,
    /// Progress within RUNNING; may be coalesced into a later one.
    Progress,
}

/// One entry of the log: the task's status right after a change.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TaskEvent {
    /// Position in the log: 1, 2, 3, ...
    pub sequence: u64,
    /// What changed.
    pub change: Change,
    /// The task's status after the change.
    pub status: TaskStatus,
}

/// The retained events of one task, in sequence order.
#[derive(Debug, Clone)]
pub(crate) struct EventLog {
    events: VecDeque<TaskEvent>,
    last_sequence: u64,
    limit: usize,
}

impl EventLog {
    /// An empty log that keeps at most `limit` events (at least
    /// [`MIN_EVENTS`]).
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            events: VecDeque::new(),
            last_sequence: 0,
            limit: limit.max(MIN_EVENTS),
        }
    }

    /// Appends `status` as the next event and returns its sequence,
    /// compacting old progress if the log is over its limit.
    pub(crate) fn record(&mut self, change: Change, status: &TaskStatus) -> u64 {
        self.last_sequence += 1;
        self.events.push_back(TaskEvent {
            sequence: self.last_sequence,
            change,
            status: status.clone(),
        });
        self.compact_to(self.limit);
        self.last_sequence
    }

    /// Drops the oldest progress events until at most `limit` events (at
    /// least [`MIN_EVENTS`]) remain.
    pub(crate) fn compact_to(&mut self, limit: usize) {
        let limit = limit.max(MIN_EVENTS);
        while self.events.len() > limit {
            // State changes come first in a log (PENDING, RUNNING), so the
            // oldest progress event is found within the first few entries.
            match self
                .events
                .iter()
                .position(|e| e.change == Change::Progress)
            {
                Some(oldest) => {
                    self.events.remove(oldest);
                }
                None => break,
            }
        }
        // A log compacted below its former size (a finished task's) gives
        // the memory back.
        if self.events.capacity() > 2 * limit {
            self.events.shrink_to(limit);
        }
    }

    /// The first retained event with a sequence greater than `cursor`.
    pub(crate) fn next_after(&self, cursor: u64) -> Option<&TaskEvent> {
        let index = self.events.partition_point(|e| e.sequence <= cursor);
        self.events.get(index)
    }

    /// The sequence of the last event recorded (0 before the first).
    pub(crate) fn last_sequence(&self) -> u64 {
        self.last_sequence
    }

    /// Number of events retained.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }
}

/// `step` of `total` as a percentage in 0..=100 (0 while the total is unknown).
fn percent(step: u32, total: u32) -> f64 {
    if total == 0 {
        0.0
    } else {
        (f64::from(step) * 100.0 / f64::from(total)).clamp(0.0, 100.0)
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: TaskState, step: u32) -> TaskStatus {
        let mut status = TaskStatus::pending(SystemTime::UNIX_EPOCH);
        status.state = state;
        status.set_progress(step, 100, format!("step {step}"), SystemTime::UNIX_EPOCH);
        status
    }

    /// PENDING, RUNNING, `progress` progress events, then SUCCEEDED.
    fn full_log(limit: usize, progress: u32) -> EventLog {
        let mut log = EventLog::new(limit);
        log.record(Change::State, &status(TaskState::Pending, 0));
        log.record(Change::State, &status(TaskState::Running, 0));
        for step in 1..=progress {
            log.record(Change::Progress, &status(TaskState::Running, step));
        }
        log.record(Change::State, &status(TaskState::Succeeded, progress));
        log
    }

    fn replay(log: &EventLog, mut cursor: u64) -> Vec<&TaskEvent> {
        let mut events = Vec::new();
        while let Some(event) = log.next_after(cursor) {
            cursor = event.sequence;
            events.push(event);
        }
        events
    }

    #[test]
    fn sequences_start_at_one_and_have_no_gaps_below_the_limit() {
        let log = full_log(100, 10);
        let sequences: Vec<_> = replay(&log, 0).iter().map(|e| e.sequence).collect();
        assert_eq!(sequences, (1..=13).collect::<Vec<_>>());
        assert_eq!(log.last_sequence(), 13);
    }

    #[test]
    fn replay_starts_after_the_cursor() {
        let log = full_log(100, 10);
        let events = replay(&log, 7);
        assert_eq!(events.first().map(|e| e.sequence), Some(8));
        assert!(replay(&log, 13).is_empty());
    }

    #[test]
    fn compaction_drops_the_oldest_progress_and_keeps_every_state_change() {
        let log = full_log(10, 100);
        assert_eq!(log.len(), 10);
        let events = replay(&log, 0);
        let states: Vec<_> = events
            .iter()
            .filter(|e| e.change == Change::State)
            .map(|e| e.status.state)
            .collect();
        assert_eq!(
            states,
            [TaskState::Pending, TaskState::Running, TaskState::Succeeded]
        );
        // The retained progress is the newest, in order.
        let steps: Vec<_> = events
            .iter()
            .filter(|e| e.change == Change::Progress)
            .map(|e| e.status.step)
            .collect();
        assert_eq!(steps, (94..=100).collect::<Vec<_>>());
        assert_eq!(log.last_sequence(), 103);
    }

    #[test]
    fn a_lagging_cursor_skips_to_the_next_retained_event() {
        let log = full_log(10, 100);
        // Sequence 5 (step 3) was compacted away: the watcher resumes at the
        // oldest retained progress (step 94, sequence 96).
        let next = log.next_after(5).expect("an event");
        assert_eq!((next.sequence, next.status.step), (96, 94));
    }

    #[test]
    fn compacting_further_still_keeps_state_changes_and_latest_progress() {
        let mut log = full_log(1000, 100);
        log.compact_to(0);
        assert_eq!(log.len(), MIN_EVENTS);
        let steps: Vec<_> = replay(&log, 0)
            .iter()
            .map(|e| (e.status.state, e.status.step))
            .collect();
        assert_eq!(
            steps,
            [
                (TaskState::Pending, 0),
                (TaskState::Running, 0),
                (TaskState::Running, 100),
                (TaskState::Succeeded, 100)
            ]
        );
    }

    #[test]
    fn percent_is_bounded_and_zero_while_the_total_is_unknown() {
        assert_eq!(percent(5, 0), 0.0);
        assert_eq!(percent(1, 4), 25.0);
        assert_eq!(percent(9, 4), 100.0);
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let cut = truncate("é".repeat(MAX_MESSAGE_BYTES), MAX_MESSAGE_BYTES + 1);
        assert_eq!(cut.len(), MAX_MESSAGE_BYTES);
        assert_eq!(truncate("short".into(), 10), "short");
    }
}
