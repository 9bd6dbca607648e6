//! The monitor: what one check outcome does to a service. Pure.
//!
//! [`Monitor::observe`] takes a check's result and its time (Unix ms) and
//! returns a [`Step`]: the state and counters to write with the check, the
//! state change to record as an event, and, when the change deserves a
//! notification ([`crate::notify::notifies`]), the earliest time it may be
//! delivered (flap damping, [`notify_slot`]). It owns the per-service
//! memory that decides this: the [`HealthTracker`], when the current state
//! began and the slot of the latest notification.
//!
//! It does not know who receives a notification (the service's addresses
//! and channels, resolved by the daemon), whether a silence or a dependency
//! holds it, or how anything is stored: those need the daemon's state and
//! stay in the server. It never reads a clock; time is the caller's `at`.

use crate::health::{CheckResult, HealthState, HealthTracker, Thresholds, Transition};
use crate::notify::notifies;

/// The per-service memory of the monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Monitor {
    tracker: HealthTracker,
    state_since: i64,
    notify_slot: Option<i64>,
}

/// How a service is judged: its thresholds and the flap gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// The service's ELB-style thresholds.
    pub thresholds: Thresholds,
    /// At most one notification per service per this many ms
    /// (`--notify-min-gap`); 0 sends every one at once.
    pub min_gap_ms: i64,
}

/// What one check did: the values to write with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The state after the check.
    pub state: HealthState,
    /// Consecutive successes after the check.
    pub successes: u32,
    /// Consecutive failures after the check.
    pub failures: u32,
    /// The state change it caused, if any.
    pub change: Option<Change>,
}

/// A state change: an event to record and maybe a notification to queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// From which state to which.
    pub transition: Transition,
    /// When the previous state began (Unix ms), for "was degraded for 5m".
    pub previous_since: i64,
    /// When it notifies: the earliest delivery time (Unix ms), at the check
    /// time or later inside the flap gap. `None`: not news.
    pub notify_at: Option<i64>,
}

impl Monitor {
    /// A new service, registered at `at`: `unknown`, nothing sent yet.
    pub fn new(at: i64) -> Self {
        Self::restore(HealthTracker::new(), at, None)
    }

    /// Rebuilds the memory from stored values (restart, re-registration):
    /// the tracker, when its state began, the latest notification slot.
    pub fn restore(tracker: HealthTracker, state_since: i64, notify_slot: Option<i64>) -> Self {
        Monitor {
            tracker,
            state_since,
            notify_slot,
        }
    }

    /// The current state.
    pub fn state(&self) -> HealthState {
        self.tracker.state()
    }

    /// When the current state began (Unix ms).
    pub fn state_since(&self) -> i64 {
        self.state_since
    }

    /// The delivery slot of the latest notification (Unix ms).
    pub fn notify_slot(&self) -> Option<i64> {
        self.notify_slot
    }

    /// Feeds the result of a check made at `at` (Unix ms).
    pub fn observe(&mut self, result: CheckResult, at: i64, rules: Rules) -> Step {
        let change = self
            .tracker
            .observe(result, rules.thresholds)
            .map(|transition| {
                let previous_since = std::mem::replace(&mut self.state_since, at);
                let notify_at = notifies(transition).then(|| {
                    let slot = notify_slot(self.notify_slot, at, rules.min_gap_ms);
                    self.notify_slot = Some(slot);
                    slot
                });
                Change {
                    transition,
                    previous_since,
                    notify_at,
                }
            });
        Step {
            state: self.tracker.state(),
            successes: self.tracker.successes(),
            failures: self.tracker.failures(),
            change,
        }
    }
}

/// Flap damping: when may a notification created at `at` be delivered,
/// given the slot of the service's previous one? At most one per `gap`; a
/// notification inside the gap joins the next slot, where the sender
/// coalesces everything due for the service into one message.
pub fn notify_slot(previous: Option<i64>, at: i64, gap: i64) -> i64 {
    match previous {
        None => at,
        Some(slot) if slot >= at => slot,
        Some(slot) if at >= slot + gap => at,
        Some(slot) => slot + gap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CheckResult::*;
    use HealthState::*;

    const RULES: Rules = Rules {
        thresholds: Thresholds {
            healthy: 2,
            unhealthy: 3,
        },
        min_gap_ms: 60_000,
    };

    /// Feeds `results`, one every 5 s from t = 0; returns each step.
    fn feed(m: &mut Monitor, results: &[CheckResult]) -> Vec<(i64, Step)> {
        results
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let at = i as i64 * 5_000;
                (at, m.observe(*r, at, RULES))
            })
            .collect()
    }

    #[test]
    fn notifications_are_spaced_by_the_gap() {
        let gap = 60_000;
        assert_eq!(notify_slot(None, 1_000, gap), 1_000);
        // Inside the gap of a sent one: wait for the gap's end.
        assert_eq!(notify_slot(Some(1_000), 5_000, gap), 61_000);
        // A pending future slot is joined (coalesced).
        assert_eq!(notify_slot(Some(61_000), 20_000, gap), 61_000);
        // After the gap: at once.
        assert_eq!(notify_slot(Some(1_000), 70_000, gap), 70_000);
        // Gap 0: every transition at once.
        assert_eq!(notify_slot(Some(1_000), 1_000, 0), 1_000);
        assert_eq!(notify_slot(Some(1_000), 2_000, 0), 2_000);
    }

    #[test]
    fn a_change_records_when_the_previous_state_began() {
        let mut m = Monitor::new(-1_000);
        let steps = feed(&mut m, &[Pass, Pass, Fail, Fail, Fail]);
        let changes: Vec<(i64, Change)> = steps
            .iter()
            .filter_map(|(at, s)| s.change.map(|c| (*at, c)))
            .collect();
        assert_eq!(changes.len(), 3, "{steps:?}");
        // unknown (since registration) -> healthy at the 2nd pass, not news.
        assert_eq!(changes[0].0, 5_000);
        assert_eq!(changes[0].1.previous_since, -1_000);
        assert_eq!(changes[0].1.notify_at, None);
        // healthy -> degraded at the first fail: notifies at once.
        assert_eq!(changes[1].1.transition.to, Degraded);
        assert_eq!(changes[1].1.previous_since, 5_000);
        assert_eq!(changes[1].1.notify_at, Some(10_000));
        // degraded -> unhealthy at the third: joins the slot a gap later.
        assert_eq!(changes[2].0, 20_000);
        assert_eq!(changes[2].1.transition.to, Unhealthy);
        assert_eq!(changes[2].1.previous_since, 10_000);
        assert_eq!(changes[2].1.notify_at, Some(70_000));
        assert_eq!(m.state_since(), 20_000);
        assert_eq!(m.notify_slot(), Some(70_000));
    }

    #[test]
    fn every_step_carries_the_counters_to_write() {
        let mut m = Monitor::new(0);
        let steps = feed(&mut m, &[Pass, Fail, Fail]);
        let counts: Vec<(HealthState, u32, u32)> = steps
            .iter()
            .map(|(_, s)| (s.state, s.successes, s.failures))
            .collect();
        assert_eq!(
            counts,
            [(Unknown, 1, 0), (Unknown, 0, 1), (Unknown, 0, 2)],
            "below both thresholds nothing changes but the counters"
        );
        assert!(steps.iter().all(|(_, s)| s.change.is_none()));
    }

    #[test]
    fn a_restored_monitor_keeps_its_slot() {
        // Restarted while a notification waits in the slot at 50 s.
        let tracker = HealthTracker::restore(Healthy, 5, 0);
        let mut m = Monitor::restore(tracker, 1_000, Some(50_000));
        let s = m.observe(Fail, 30_000, RULES);
        let c = s.change.expect("healthy -> degraded");
        assert_eq!(c.previous_since, 1_000);
        assert_eq!(c.notify_at, Some(50_000), "joins the pending slot");
    }
}
