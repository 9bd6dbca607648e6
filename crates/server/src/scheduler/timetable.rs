//! The scheduler's timetable: one entry per scheduled check, earliest
//! first, on the scheduler's monotonic millisecond scale.
//!
//! Entries are grouped by due millisecond in a `BTreeMap`: a service is
//! due every few seconds and 100,000 services at 30 s share about 30,000
//! due times, so a push finds its group in a few small nodes and a firing
//! round takes whole groups. (A binary heap of 100,000 entries cost a
//! sift through 17 levels of a 2.4 MB array per check: 1.8 % of the
//! daemon's CPU at 3,333 checks/s.) Within a millisecond, entries come out
//! ordered by service and generation, as from a heap of `Due`.
//!
//! Entries are never removed in place: a service that is paused, removed
//! or rescheduled bumps its generation, and entries of an older generation
//! are dropped when they come due (lazy deletion).

use healthchecker_core::ServiceId;
use std::collections::{BTreeMap, VecDeque};

/// One scheduled check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Due {
    /// When (ms since the scheduler's epoch).
    pub at: u64,
    /// The service's row id.
    pub service: ServiceId,
    /// The service's schedule generation when this entry was pushed.
    pub generation: u32,
}

/// Due checks, earliest first.
#[derive(Debug, Default)]
pub(super) struct Timetable {
    /// Entries by due millisecond: (service, generation).
    groups: BTreeMap<u64, Vec<(ServiceId, u32)>>,
    /// The earliest group, taken out and sorted, being handed out.
    ready: VecDeque<Due>,
}

impl Timetable {
    /// An empty timetable (the groups grow as services are pushed).
    pub fn with_capacity(_n: usize) -> Self {
        Timetable::default()
    }

    /// Schedules one check.
    pub fn push(&mut self, due: Due) {
        match self.ready.front() {
            // Due no later than the group being handed out: it joins it,
            // in order.
            Some(first) if due.at <= first.at => {
                let i = self.ready.partition_point(|d| *d < due);
                self.ready.insert(i, due);
            }
            _ => self
                .groups
                .entry(due.at)
                .or_default()
                .push((due.service, due.generation)),
        }
    }

    /// When the earliest check is due, if any.
    pub fn next_at(&self) -> Option<u64> {
        self.ready
            .front()
            .map(|d| d.at)
            .or_else(|| self.groups.first_key_value().map(|(at, _)| *at))
    }

    /// Takes the earliest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<Due> {
        if self.ready.is_empty() {
            let entry = self.groups.first_entry()?;
            if *entry.key() > now {
                return None;
            }
            let at = *entry.key();
            let mut group = entry.remove();
            group.sort_unstable();
            self.ready
                .extend(group.into_iter().map(|(service, generation)| Due {
                    at,
                    service,
                    generation,
                }));
        }
        match self.ready.front() {
            Some(d) if d.at <= now => self.ready.pop_front(),
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

    #[test]
    fn orders_like_a_heap_of_due_entries_with_pushes_between_pops() {
        // Pseudo-random pushes and pops against a sorted model.
        let mut t = Timetable::default();
        let mut model: Vec<Due> = Vec::new();
        let mut x: u64 = 7;
        let mut now = 0;
        for step in 0..5_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if !x.is_multiple_of(3) {
                let due = Due {
                    at: now + (x >> 33) % 50,
                    service: ServiceId::new(((x >> 20) % 40) as i64),
                    generation: (step % 3) as u32,
                };
                t.push(due);
                model.push(due);
            } else {
                now += (x >> 40) % 7;
                model.sort();
                let want: Vec<Due> = model.iter().copied().take_while(|d| d.at <= now).collect();
                model.drain(..want.len());
                let got: Vec<Due> = std::iter::from_fn(|| t.pop_due(now)).collect();
                assert_eq!(got, want, "at {now}");
                model.sort();
                assert_eq!(t.next_at(), model.first().map(|d| d.at));
            }
        }
    }
}
