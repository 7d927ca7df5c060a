//! Places under a limit: the streams of the server
//! (`--max-active-streams`), of one connection and of one API key.
//!
//! Admission only ever tries: a stream over a limit is refused, never
//! queued. So a count and a compare-and-swap do all a semaphore did here,
//! and a [`Slot`] is one pointer, given back by one atomic subtraction.
//! tokio's `OwnedSemaphorePermit`, which these were, is twice the size, and
//! giving one back takes the semaphore's waiter lock: every stream of the
//! server took the same lock when it ended. An open stream holds up to
//! three slots for as long as it is open.
//!
//! The count is a prometheus gauge, so the server's slots are its
//! `agentstream_active_streams` series: the gauge cannot drift from what
//! admission sees.

use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::metrics::gauge::Gauge;

/// A limit and the places taken under it. Clones share the count.
#[derive(Debug, Clone)]
pub(crate) struct Slots {
    taken: Gauge,
    limit: i64,
}

impl Slots {
    /// `limit` places (at most `i64::MAX`), counted in a gauge of their own.
    pub(crate) fn new(limit: usize) -> Self {
        Self::counted_in(Gauge::default(), limit)
    }

    /// `limit` places, counted in `taken` (a gauge that nothing else
    /// moves).
    pub(crate) fn counted_in(taken: Gauge, limit: usize) -> Self {
        Self {
            taken,
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
        }
    }

    /// A place, unless all `limit` are taken.
    pub(crate) fn try_take(&self) -> Option<Slot> {
        // The count guards no data: relaxed operations keep it exact.
        self.taken
            .inner()
            .fetch_update(Relaxed, Relaxed, |taken| {
                (taken < self.limit).then(|| taken.saturating_add(1))
            })
            .ok()?;
        Some(Slot(self.taken.clone()))
    }

    /// The limit, for the error that refuses a stream.
    pub(crate) fn limit(&self) -> i64 {
        self.limit
    }
}

/// A place taken under a limit, given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot(Gauge);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn places_are_refused_at_the_limit_and_given_back_on_drop() {
        let slots = Slots::new(2);
        let a = slots.try_take().expect("first place");
        let b = slots.try_take().expect("second place");
        assert!(slots.try_take().is_none(), "a third is over the limit");
        drop(a);
        let c = slots.try_take().expect("the place given back");
        assert!(slots.try_take().is_none());
        drop((b, c));
        assert_eq!(slots.taken.get(), 0);
    }

    #[test]
    fn no_limit_is_ever_overshot_by_racing_takers() {
        let slots = Slots::new(3);
        let taken = Arc::new(Gauge::<i64>::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (slots, taken) = (slots.clone(), taken.clone());
                std::thread::spawn(move || {
                    for _ in 0..2_000 {
                        if let Some(slot) = slots.try_take() {
                            let now = taken.inc() + 1;
                            assert!(now <= 3, "{now} places taken of 3");
                            taken.dec();
                            drop(slot);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no taker panicked");
        }
        assert_eq!(slots.taken.get(), 0);
    }

    #[test]
    fn the_count_is_the_gauge_it_was_given() {
        let gauge = Gauge::<i64>::default();
        let slots = Slots::counted_in(gauge.clone(), 10);
        let slot = slots.try_take().expect("a place");
        assert_eq!(gauge.get(), 1);
        drop(slot);
        assert_eq!(gauge.get(), 0);
    }

    #[test]
    fn a_zero_limit_admits_nothing_and_a_huge_one_is_capped() {
        assert!(Slots::new(0).try_take().is_none());
        assert_eq!(Slots::new(usize::MAX).limit(), i64::MAX);
    }
}
