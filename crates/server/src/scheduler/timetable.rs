//! The scheduler's timer heap: one entry per scheduled check, earliest
//! first, on the scheduler's monotonic millisecond scale.
//!
//! Entries are never removed in place: a service that is paused, removed
//! or rescheduled bumps its generation, and entries of an older generation
//! are dropped when they come due (lazy deletion).

use healthchecker_core::ServiceId;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// One scheduled check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Due {
    /// When (ms since the scheduler's epoch). First, so it orders the heap.
    pub at: u64,
    /// The service's row id.
    pub service: ServiceId,
    /// The service's schedule generation when this entry was pushed.
    pub generation: u32,
}

/// Due checks, earliest first.
#[derive(Debug, Default)]
pub(super) struct Timetable {
    heap: BinaryHeap<Reverse<Due>>,
}

impl Timetable {
    /// An empty timetable with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        Timetable {
            heap: BinaryHeap::with_capacity(n),
        }
    }

    /// Schedules one check.
    pub fn push(&mut self, due: Due) {
        self.heap.push(Reverse(due));
    }

    /// When the earliest check is due, if any.
    pub fn next_at(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse(d)| d.at)
    }

    /// Takes the earliest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<Due> {
        match self.heap.peek() {
            Some(Reverse(d)) if d.at <= now => self.heap.pop().map(|Reverse(d)| d),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_due_entries_earliest_first() {
        let mut t = Timetable::with_capacity(3);
        for (at, service) in [(30, 1), (10, 2), (20, 3)] {
            t.push(Due {
                at,
                service: ServiceId::new(service),
                generation: 0,
            });
        }
        assert_eq!(t.next_at(), Some(10));
        let due: Vec<i64> = std::iter::from_fn(|| t.pop_due(20))
            .map(|d| d.service.get())
            .collect();
        assert_eq!(due, [2, 3], "only what is due at 20, in order");
        assert_eq!(t.next_at(), Some(30));
        assert_eq!(t.pop_due(29), None);
    }
}
