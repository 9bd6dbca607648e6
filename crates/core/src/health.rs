//! The health state machine of SPEC section 3, pure and total.
//!
//! It owns the consecutive success/failure counters and the state; it never
//! stores, sends or logs. [`HealthTracker::observe`] returns the transition a
//! check result caused, and the caller decides what to do with it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The verdict on a monitored service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// Newly registered, not enough checks for a verdict yet.
    Unknown,
    /// Up, and the latest check passed.
    Healthy,
    /// Up, but the latest check warned or failed (not yet unhealthy).
    Degraded,
    /// `unhealthy_threshold` consecutive failures, and not yet recovered.
    Unhealthy,
}

impl HealthState {
    /// All states, for tables and metrics.
    pub const ALL: [HealthState; 4] = [
        HealthState::Unknown,
        HealthState::Healthy,
        HealthState::Degraded,
        HealthState::Unhealthy,
    ];

    /// The lowercase name used in the API, the store and mails.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Unknown => "unknown",
            HealthState::Healthy => "healthy",
            HealthState::Degraded => "degraded",
            HealthState::Unhealthy => "unhealthy",
        }
    }

    /// Healthy or degraded: the service answers, well or badly.
    pub fn is_up(self) -> bool {
        matches!(self, HealthState::Healthy | HealthState::Degraded)
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HealthState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HealthState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown health state {s:?}"))
    }
}

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum CheckResult {
    /// The target answered as expected.
    Pass,
    /// The target answered, but reported a warning (or a certificate expires soon).
    Warn,
    /// No acceptable answer.
    Fail,
}

impl CheckResult {
    /// The lowercase name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckResult::Pass => "pass",
            CheckResult::Warn => "warn",
            CheckResult::Fail => "fail",
        }
    }

    /// Pass and warn count as successes for the thresholds.
    pub fn is_success(self) -> bool {
        !matches!(self, CheckResult::Fail)
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CheckResult {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pass" => Ok(CheckResult::Pass),
            "warn" => Ok(CheckResult::Warn),
            "fail" => Ok(CheckResult::Fail),
            _ => Err(format!("unknown check result {s:?}")),
        }
    }
}

/// ELB-style thresholds of one service (already validated: 2 to 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Consecutive successes needed to become healthy from unknown/unhealthy.
    pub healthy: u32,
    /// Consecutive failures that make a service unhealthy.
    pub unhealthy: u32,
}

/// A change of state caused by one check result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before the check.
    pub from: HealthState,
    /// The state after the check.
    pub to: HealthState,
}

/// The state and counters of one service.
///
/// Counters saturate instead of overflowing: a service that passes for years
/// stays healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthTracker {
    state: HealthState,
    successes: u32,
    failures: u32,
}

impl Default for HealthTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthTracker {
    /// A new service: `unknown`, no counts.
    pub fn new() -> Self {
        Self::restore(HealthState::Unknown, 0, 0)
    }

    /// Rebuilds a tracker from stored values (restart, re-registration).
    pub fn restore(state: HealthState, successes: u32, failures: u32) -> Self {
        Self {
            state,
            successes,
            failures,
        }
    }

    /// The current state.
    pub fn state(&self) -> HealthState {
        self.state
    }

    /// Consecutive successes (pass or warn).
    pub fn successes(&self) -> u32 {
        self.successes
    }

    /// Consecutive failures.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Feeds one check result; returns the transition it caused, if any.
    pub fn observe(&mut self, result: CheckResult, th: Thresholds) -> Option<Transition> {
        if result.is_success() {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
        }
        let from = self.state;
        let to = if self.failures >= th.unhealthy {
            HealthState::Unhealthy
        } else {
            match (from, result) {
                (HealthState::Unknown | HealthState::Unhealthy, _) => {
                    if self.successes >= th.healthy {
                        up_state(result)
                    } else {
                        from
                    }
                }
                (HealthState::Healthy | HealthState::Degraded, _) => up_state(result),
            }
        };
        self.state = to;
        (from != to).then_some(Transition { from, to })
    }
}

/// The state of an "up" service after a result: pass is healthy, anything
/// else (warn, or a fail below the threshold) is degraded.
fn up_state(result: CheckResult) -> HealthState {
    match result {
        CheckResult::Pass => HealthState::Healthy,
        CheckResult::Warn | CheckResult::Fail => HealthState::Degraded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use CheckResult::*;
    use HealthState::*;

    const TH: Thresholds = Thresholds {
        healthy: 3,
        unhealthy: 2,
    };

    fn run(start: HealthTracker, results: &[CheckResult]) -> (HealthTracker, Vec<Transition>) {
        let mut t = start;
        let trans = results.iter().filter_map(|r| t.observe(*r, TH)).collect();
        (t, trans)
    }

    #[test]
    fn new_service_is_unknown() {
        assert_eq!(HealthTracker::new().state(), Unknown);
    }

    #[test]
    fn unknown_stays_until_healthy_threshold_passes() {
        let (t, tr) = run(HealthTracker::new(), &[Pass, Pass]);
        assert_eq!(t.state(), Unknown);
        assert!(tr.is_empty());
        let (t, tr) = run(t, &[Pass]);
        assert_eq!(t.state(), Healthy);
        assert_eq!(
            tr,
            vec![Transition {
                from: Unknown,
                to: Healthy
            }]
        );
    }

    #[test]
    fn unknown_becomes_degraded_when_last_success_is_warn() {
        let (t, _) = run(HealthTracker::new(), &[Pass, Pass, Warn]);
        assert_eq!(t.state(), Degraded);
    }

    #[test]
    fn warn_counts_as_success_for_threshold() {
        let (t, _) = run(HealthTracker::new(), &[Warn, Warn, Pass]);
        assert_eq!(t.state(), Healthy);
    }

    #[test]
    fn unhealthy_after_threshold_failures_from_any_state() {
        for start in HealthState::ALL {
            let (t, tr) = run(HealthTracker::restore(start, 0, 0), &[Fail]);
            if start == Healthy || start == Degraded {
                assert_eq!(t.state(), Degraded, "from {start}");
            } else {
                assert_eq!(t.state(), start, "from {start}");
            }
            // The first fail changes the state only of a healthy service.
            let first: Vec<Transition> = (start == Healthy)
                .then_some(Transition {
                    from: Healthy,
                    to: Degraded,
                })
                .into_iter()
                .collect();
            assert_eq!(tr, first, "first fail from {start}");
            let (t, tr) = run(t, &[Fail]);
            assert_eq!(t.state(), Unhealthy, "from {start}");
            let second: Vec<Transition> = (start != Unhealthy)
                .then_some(Transition {
                    from: if start == Unknown { Unknown } else { Degraded },
                    to: Unhealthy,
                })
                .into_iter()
                .collect();
            assert_eq!(tr, second, "second fail from {start}");
        }
    }

    #[test]
    fn up_service_follows_latest_result() {
        let cases = [
            (Healthy, Pass, Healthy),
            (Healthy, Warn, Degraded),
            (Healthy, Fail, Degraded),
            (Degraded, Pass, Healthy),
            (Degraded, Warn, Degraded),
            (Degraded, Fail, Degraded),
        ];
        for (from, result, to) in cases {
            let mut t = HealthTracker::restore(from, 5, 0);
            let tr = t.observe(result, TH);
            assert_eq!(t.state(), to, "{from} + {result}");
            assert_eq!(tr.is_some(), from != to);
        }
    }

    #[test]
    fn unhealthy_recovers_only_after_healthy_threshold() {
        let (t, _) = run(HealthTracker::restore(Unhealthy, 0, 5), &[Pass, Warn]);
        assert_eq!(t.state(), Unhealthy);
        let (t, tr) = run(t, &[Warn]);
        assert_eq!(t.state(), Degraded);
        assert_eq!(
            tr,
            vec![Transition {
                from: Unhealthy,
                to: Degraded
            }]
        );
    }

    #[test]
    fn a_fail_resets_the_success_count() {
        let (t, _) = run(HealthTracker::new(), &[Pass, Pass, Fail, Pass, Pass]);
        assert_eq!(t.state(), Unknown);
        assert_eq!(t.successes(), 2);
        assert_eq!(t.failures(), 0);
    }

    #[test]
    fn counters_saturate() {
        let mut t = HealthTracker::restore(Healthy, u32::MAX, 0);
        assert_eq!(t.observe(Pass, TH), None);
        assert_eq!(t.successes(), u32::MAX);
    }

    fn result() -> impl Strategy<Value = CheckResult> {
        prop_oneof![Just(Pass), Just(Warn), Just(Fail)]
    }

    fn thresholds() -> impl Strategy<Value = Thresholds> {
        (2u32..=10, 2u32..=10).prop_map(|(healthy, unhealthy)| Thresholds { healthy, unhealthy })
    }

    proptest! {
        #[test]
        fn invariants_hold_for_any_sequence(th in thresholds(), results in prop::collection::vec(result(), 0..60)) {
            let mut t = HealthTracker::new();
            let mut left_unknown = false;
            let mut history: Vec<CheckResult> = Vec::new();
            for r in results {
                let before = t.state();
                let tr = t.observe(r, th);
                history.push(r);
                let n = history.len();
                // A transition is reported exactly when the state changes.
                prop_assert_eq!(tr.is_some(), before != t.state());
                if let Some(tr) = tr {
                    prop_assert_eq!(tr.from, before);
                    prop_assert_eq!(tr.to, t.state());
                }
                // The counters match the tail of the history.
                let tail_ok = history.iter().rev().take_while(|r| r.is_success()).count() as u32;
                let tail_fail = history.iter().rev().take_while(|r| !r.is_success()).count() as u32;
                prop_assert_eq!(t.successes(), tail_ok);
                prop_assert_eq!(t.failures(), tail_fail);
                // Unhealthy exactly when the failure threshold is reached, or
                // while recovering from it.
                if tail_fail >= th.unhealthy {
                    prop_assert_eq!(t.state(), Unhealthy);
                }
                if t.state() == Unhealthy && before != Unhealthy {
                    prop_assert!(n as u32 >= th.unhealthy);
                    prop_assert!(history[n - th.unhealthy as usize..].iter().all(|r| *r == Fail));
                }
                // Never leaves unknown before healthy_threshold successes.
                if before == Unknown && t.state() != Unknown {
                    if t.state() != Unhealthy {
                        prop_assert!(tail_ok >= th.healthy);
                    }
                    left_unknown = true;
                }
                if !left_unknown {
                    prop_assert!(t.state() == Unknown);
                }
                // Healthy means the latest result passed; degraded means it did not.
                match t.state() {
                    Healthy => prop_assert_eq!(r, Pass),
                    Degraded => prop_assert_ne!(r, Pass),
                    _ => {}
                }
                // Never back to unknown.
                if before != Unknown {
                    prop_assert_ne!(t.state(), Unknown);
                }
            }
        }
    }
}
