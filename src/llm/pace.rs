//! Pacing on a fixed schedule, for the built-in models.
//!
//! tokio-stream's `throttle` waits a fixed time *between* items, so every
//! late wake-up pushes the rest of the stream back. A [`Pace`] makes item k
//! due at `start + (w0 + ... + wk) x delay`, where `wi` is the weight of item
//! i (its tokens), so a late wake-up is caught up on by the next items and
//! the pace never drifts. Items of weight 0 are due at once. The timer lives
//! inside the pace (pinned, no box) and is reset for each item, so pacing
//! allocates nothing per item.
//!
//! It is a part of a stream rather than a stream adapter: the built-in
//! model's choice ([`super::mock`]) asks it whether the item in hand is due,
//! so a paced chunk goes through one poll instead of a layer per step.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

pin_project! {
    /// A fixed schedule of `delay` per unit of weight, with its timer.
    #[derive(Debug)]
    pub(crate) struct Pace {
        // Set at the first item; its deadline is when the last item was
        // (or the item in hand is) due, so the schedule is kept in it and
        // nowhere else (every paced stream holds a pace).
        #[pin]
        timer: Option<Sleep>,
        delay: Duration,
        // The item in hand has its due time and waits for it.
        waiting: bool,
    }
}

impl Pace {
    /// A schedule of `delay` per unit of weight (`0`: every item at once).
    pub(crate) fn new(delay: Duration) -> Self {
        Self {
            timer: None,
            delay,
            waiting: false,
        }
    }

    /// Ready when the item in hand, of `weight`, is due. Poll again with the
    /// same item until it is; the next call is about the next item.
    pub(crate) fn poll_due(self: Pin<&mut Self>, cx: &mut Context<'_>, weight: u32) -> Poll<()> {
        let mut this = self.project();
        if this.delay.is_zero() {
            return Poll::Ready(());
        }
        if !*this.waiting {
            // When the last item was due; none yet: the schedule starts
            // with this item, whatever its weight.
            let last = this.timer.as_ref().get_ref().as_ref().map(Sleep::deadline);
            if weight == 0 {
                if last.is_none() {
                    this.timer.set(Some(sleep_until(Instant::now())));
                }
                return Poll::Ready(());
            }
            let due = last.unwrap_or_else(Instant::now) + this.delay.saturating_mul(weight);
            match this.timer.as_mut().as_pin_mut() {
                Some(timer) => timer.reset(due),
                None => this.timer.set(Some(sleep_until(due))),
            }
            *this.waiting = true;
        }
        if let Some(timer) = this.timer.as_pin_mut() {
            ready!(timer.poll(cx));
        }
        *this.waiting = false;
        Poll::Ready(())
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;

    /// When each item of `weights` was due, in milliseconds from the start,
    /// with the reader sleeping `pause_after[i]` ms after item i.
    async fn due_times(delay: Duration, weights: &[u32], pause_after: &[u64]) -> Vec<u128> {
        let start = Instant::now();
        let mut pace = std::pin::pin!(Pace::new(delay));
        let mut at = Vec::new();
        for (i, &weight) in weights.iter().enumerate() {
            poll_fn(|cx| pace.as_mut().poll_due(cx, weight)).await;
            at.push(start.elapsed().as_millis());
            if let Some(&ms) = pause_after.get(i) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
        at
    }

    #[tokio::test(start_paused = true)]
    async fn items_are_due_on_a_fixed_schedule_by_weight() {
        let at = due_times(Duration::from_millis(10), &[1, 0, 2, 1], &[]).await;
        assert_eq!(at, [10, 10, 30, 40]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_item_of_no_weight_starts_the_schedule() {
        let at = due_times(Duration::from_millis(10), &[0, 1, 1], &[5]).await;
        assert_eq!(at, [0, 10, 20]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_reader_does_not_push_the_schedule_back() {
        // The reader is slow once, after the first item: the second was
        // already due when it came back, the third was due at 30 ms.
        let at = due_times(Duration::from_millis(10), &[1, 1, 1, 1], &[25]).await;
        assert_eq!(at, [10, 35, 35, 40]);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_delay_makes_every_item_due_at_once() {
        let at = due_times(Duration::ZERO, &[1, 5, 1], &[]).await;
        assert_eq!(at, [0, 0, 0]);
    }
}
