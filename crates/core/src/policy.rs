//! Alert policy decisions (SPEC section 14), pure: silences, dependencies
//! and digests. Time is an argument (Unix ms, or a local weekday and minute
//! that the daemon computes in the silence's time zone).
//!
//! Not wired into the daemon yet: the scheduler, the store and the API do
//! not call this module. It is the decision logic, tested on its own.

use crate::health::HealthState;
use crate::spec::SpecError;
use std::collections::{BTreeMap, BTreeSet};

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Weekday {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Weekday {
    const ALL: [(Weekday, &'static str); 7] = [
        (Weekday::Mon, "mon"),
        (Weekday::Tue, "tue"),
        (Weekday::Wed, "wed"),
        (Weekday::Thu, "thu"),
        (Weekday::Fri, "fri"),
        (Weekday::Sat, "sat"),
        (Weekday::Sun, "sun"),
    ];

    /// Days since Monday.
    pub fn index(self) -> u32 {
        self as u32
    }
}

/// A weekly window in local time: `sun 02:00-04:00`; an end at or before
/// the start runs past midnight into the next day (`sat 23:00-01:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weekly {
    /// The day it starts.
    pub day: Weekday,
    /// Start, minutes after local midnight.
    pub start_min: u32,
    /// End, minutes after local midnight (of the next day when <= start).
    pub end_min: u32,
}

const WEEK_MIN: u32 = 7 * 24 * 60;

impl Weekly {
    /// Parses `"sun 02:00-04:00"`, naming `weekly` on error.
    pub fn parse(s: &str) -> Result<Weekly, SpecError> {
        let bad = || {
            SpecError::invalid(
                "weekly",
                format!("invalid weekly window {s:?} (expected e.g. \"sun 02:00-04:00\")"),
            )
        };
        let (day, times) = s.trim().split_once(' ').ok_or_else(bad)?;
        let day = Weekday::ALL
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(day.get(..3).unwrap_or(day)))
            .map(|(d, _)| *d)
            .ok_or_else(bad)?;
        let (a, b) = times.trim().split_once('-').ok_or_else(bad)?;
        let hm = |t: &str| -> Option<u32> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let (start_min, end_min) = (hm(a).ok_or_else(bad)?, hm(b).ok_or_else(bad)?);
        Ok(Weekly {
            day,
            start_min,
            end_min,
        })
    }

    /// Whether the local time `(day, minute of day)` falls inside.
    pub fn contains(&self, day: Weekday, minute: u32) -> bool {
        self.remaining_minutes(day, minute).is_some()
    }

    /// Inside the window at local `(day, minute of day)`: the minutes left
    /// until its end (counting the current minute).
    pub fn remaining_minutes(&self, day: Weekday, minute: u32) -> Option<u32> {
        let start = self.day.index() * 1440 + self.start_min;
        let len = if self.end_min > self.start_min {
            self.end_min - self.start_min
        } else {
            self.end_min + 1440 - self.start_min
        };
        let now = day.index() * 1440 + minute;
        let offset = (now + WEEK_MIN - start) % WEEK_MIN;
        (offset < len).then(|| len - offset)
    }

    /// The weekday with `i` days since Monday (0 to 6).
    pub fn weekday(i: u32) -> Option<Weekday> {
        Weekday::ALL.get(i as usize).map(|(d, _)| *d)
    }
}

/// Checks a one-off window: it must end after it starts.
pub fn check_one_off(starts_at: i64, ends_at: i64) -> Result<(), SpecError> {
    if ends_at <= starts_at {
        return Err(SpecError::invalid(
            "ends_at",
            "ends_at must be after starts_at (a silence that ends before it starts)",
        ));
    }
    Ok(())
}

/// What to do with a silenced service's held notifications when its
/// silence ends: the state at its start against the current one.
pub fn release_after_silence(at_start: HealthState, now: HealthState) -> bool {
    at_start != now
}

/// A dependency cycle in `depends_on` (service -> parents), if any: the
/// names along it, first repeated at the end. Unknown parents are the
/// caller's error (`400` naming `depends_on`).
pub fn find_cycle(graph: &BTreeMap<String, Vec<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, Vec<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for p in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(p, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

/// What happens to a dependent's notification, given its parents' states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DependentVerdict {
    /// No parent is failing: send as usual.
    Send,
    /// A parent is degraded: hold until it recovers or becomes unhealthy.
    Hold,
    /// A parent is unhealthy: record as suppressed; the parent's message
    /// lists this dependent.
    Suppress,
}

/// The verdict for a dependent whose parents are in `parents`.
pub fn dependent_verdict(parents: &[HealthState]) -> DependentVerdict {
    if parents.contains(&HealthState::Unhealthy) {
        DependentVerdict::Suppress
    } else if parents.contains(&HealthState::Degraded) {
        DependentVerdict::Hold
    } else {
        DependentVerdict::Send
    }
}

/// Digests: given the due times (Unix ms, ascending) of one channel's
/// notifications, whether more than `threshold` fall within `window_ms`
/// ending at `now`, in which case one message lists them all.
pub fn digest_due(due: &[i64], now: i64, threshold: usize, window_ms: i64) -> bool {
    due.iter()
        .filter(|&&t| t > now - window_ms && t <= now)
        .count()
        > threshold
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthState::*;

    #[test]
    fn weekly_windows_parse_and_wrap_past_midnight_and_the_week() {
        let w = Weekly::parse("sun 02:00-04:00").unwrap();
        assert!(w.contains(Weekday::Sun, 120));
        assert!(w.contains(Weekday::Sun, 239));
        assert!(!w.contains(Weekday::Sun, 240));
        assert!(!w.contains(Weekday::Sat, 150));
        let late = Weekly::parse("Sunday 23:00-01:00").unwrap();
        assert!(late.contains(Weekday::Sun, 23 * 60 + 30));
        assert!(late.contains(Weekday::Mon, 30), "wraps into Monday");
        assert!(!late.contains(Weekday::Mon, 61));
        assert_eq!(w.remaining_minutes(Weekday::Sun, 200), Some(40));
        for bad in ["sun", "xyz 01:00-02:00", "sun 25:00-26:00", "sun 02:00"] {
            assert_eq!(Weekly::parse(bad).unwrap_err().field, "weekly", "{bad}");
        }
    }

    #[test]
    fn a_silence_that_ends_before_it_starts_is_refused() {
        assert_eq!(check_one_off(2_000, 1_000).unwrap_err().field, "ends_at");
        assert!(check_one_off(1_000, 2_000).is_ok());
    }

    #[test]
    fn a_silence_releases_only_a_changed_state() {
        assert!(
            !release_after_silence(Healthy, Healthy),
            "failed and recovered inside"
        );
        assert!(
            release_after_silence(Healthy, Unhealthy),
            "still failing at its end"
        );
    }

    #[test]
    fn dependency_cycles_are_found() {
        let g = |e: &[(&str, &[&str])]| {
            e.iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(
            find_cycle(&g(&[("nas", &["router"]), ("router", &[])])),
            None
        );
        let c = find_cycle(&g(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])])).unwrap();
        assert_eq!(c.first(), c.last());
        assert_eq!(c.len(), 4);
        assert!(
            find_cycle(&g(&[("a", &["a"])])).is_some(),
            "self-dependency"
        );
    }

    #[test]
    fn dependents_are_held_or_suppressed_by_their_parents() {
        assert_eq!(dependent_verdict(&[Healthy]), DependentVerdict::Send);
        assert_eq!(
            dependent_verdict(&[Healthy, Degraded]),
            DependentVerdict::Hold
        );
        assert_eq!(
            dependent_verdict(&[Degraded, Unhealthy]),
            DependentVerdict::Suppress
        );
    }

    #[test]
    fn more_than_the_threshold_within_the_window_is_a_digest() {
        let due: Vec<i64> = (0..30).map(|i| i * 300).collect(); // 30 in 9 s
        assert!(digest_due(&due, 10_000, 5, 30_000));
        assert!(
            !digest_due(&due[..5], 10_000, 5, 30_000),
            "five is not more than five"
        );
        assert!(!digest_due(&due, 100_000, 5, 30_000), "outside the window");
    }
}
