//! Pacing on a fixed schedule: the one stream combinator the built-in
//! models need that neither tokio-stream nor futures offers.
//!
//! tokio-stream's `throttle` waits a fixed time *between* items, so every
//! late wake-up pushes the rest of the stream back. [`Paced`] releases item
//! k at `start + (w0 + ... + wk) x delay`, where `wi` is the weight of item i
//! (its tokens), so a late wake-up is caught up on by the next items and the
//! pace never drifts. Items of weight 0 pass at once. The timer lives inside
//! the stream (pinned, no box) and is reset for each item, so a paced stream
//! allocates nothing per item.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use futures::Stream;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

pin_project! {
    /// The stream of [`paced`].
    pub struct Paced<S: Stream, F> {
        #[pin]
        items: S,
        #[pin]
        timer: Option<Sleep>,
        delay: Duration,
        weight: F,
        // When the item in hand is due; the schedule starts at the first
        // poll.
        due: Option<Instant>,
        // The item waiting for its time.
        held: Option<S::Item>,
    }
}

/// Releases the items of `items` on a fixed schedule, `delay` per unit of
/// `weight`; with a zero `delay`, as fast as they come.
pub(crate) fn paced<S, F>(items: S, delay: Duration, weight: F) -> Paced<S, F>
where
    S: Stream,
    F: FnMut(&S::Item) -> u32,
{
    Paced {
        items,
        timer: None,
        delay,
        weight,
        due: None,
        held: None,
    }
}

impl<S, F> Stream for Paced<S, F>
where
    S: Stream,
    F: FnMut(&S::Item) -> u32,
{
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let mut this = self.project();
        if this.delay.is_zero() {
            return this.items.poll_next(cx);
        }
        if this.held.is_none() {
            let previous = *this.due.get_or_insert_with(Instant::now);
            let Some(item) = ready!(this.items.as_mut().poll_next(cx)) else {
                return Poll::Ready(None);
            };
            let weight = (this.weight)(&item);
            if weight == 0 {
                return Poll::Ready(Some(item));
            }
            let due = previous + this.delay.saturating_mul(weight);
            *this.due = Some(due);
            match this.timer.as_mut().as_pin_mut() {
                Some(timer) => timer.reset(due),
                None => this.timer.set(Some(sleep_until(due))),
            }
            *this.held = Some(item);
        }
        if let Some(timer) = this.timer.as_pin_mut() {
            ready!(timer.poll(cx));
        }
        Poll::Ready(this.held.take())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let (low, high) = self.items.size_hint();
        let held = usize::from(self.held.is_some());
        (
            low.saturating_add(held),
            high.and_then(|h| h.checked_add(held)),
        )
    }
}

#[cfg(test)]
mod tests {
    use futures::{StreamExt, stream};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn items_are_due_on_a_fixed_schedule_by_weight() {
        let start = Instant::now();
        let delay = Duration::from_millis(10);
        let mut items = std::pin::pin!(paced(stream::iter([1u32, 0, 2, 1]), delay, |w| *w));
        let mut at = Vec::new();
        while let Some(w) = items.next().await {
            at.push((w, start.elapsed().as_millis()));
        }
        assert_eq!(at, [(1, 10), (0, 10), (2, 30), (1, 40)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_consumer_does_not_push_the_schedule_back() {
        let start = Instant::now();
        let delay = Duration::from_millis(10);
        let mut items = std::pin::pin!(paced(stream::iter([1u32, 1, 1]), delay, |w| *w));
        items.next().await;
        tokio::time::sleep(Duration::from_millis(25)).await; // the reader is slow once
        items.next().await;
        assert_eq!(start.elapsed().as_millis(), 35, "item 2 was already due");
        items.next().await;
        assert_eq!(start.elapsed().as_millis(), 35, "item 3 was due at 30 ms");
    }

    #[tokio::test]
    async fn zero_delay_passes_items_through() {
        let items = paced(stream::iter(0..5u32), Duration::ZERO, |_| 1);
        assert_eq!(items.collect::<Vec<_>>().await, [0, 1, 2, 3, 4]);
    }
}
