//! Alert policy decisions (SPEC section 14), pure: silences, dependencies
//! and digests. Time is an argument (Unix ms, or a local weekday and minute
//! that the daemon computes in the silence's time zone).
//!
//! The daemon calls these: the silences book and the store for windows,
//! the API for cycles, the outbox loops for digests ([`DigestBook`]).

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

/// The digest rule (SPEC section 14): more than `threshold` notifications
/// falling due for one destination (a channel, or an e-mail recipient)
/// within `window_ms` are summarised in one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestRule {
    /// Notifications a destination receives one by one within a window
    /// (`--digest-threshold`, default 5; 0 disables digests).
    pub threshold: usize,
    /// The window, ms (`--digest-window`, default 30 s).
    pub window_ms: i64,
}

impl DigestRule {
    /// Whether digests are on (a threshold and a window above 0).
    pub fn enabled(&self) -> bool {
        self.threshold > 0 && self.window_ms > 0
    }
}

/// What happens to a notification that falls due for one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestVerdict {
    /// Deliver it on its own, now.
    Send,
    /// Hold it for the digest of the window `[start, end)`, which goes out
    /// at `end` and lists every notification of that window.
    Hold {
        /// The window's start: the due time of its first notification.
        start: i64,
        /// The window's end (`start` + the window): when the digest goes out.
        end: i64,
    },
}

/// One destination's recent notifications, from which the next verdict
/// follows. The daemon rebuilds it from the store at every pass, so the
/// decision survives a restart.
///
/// Decision (docs/alerts.md): no alert is delayed on a quiet destination.
/// While at most `threshold` notifications fell due within the trailing
/// window, each goes out at once; the next one within it is held, and so
/// is every further one until the window, measured from the first of its
/// notifications, ends; then one digest lists them all. A new window never
/// starts before the previous digest's end, so a storm gives one digest
/// per window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DigestBook {
    /// Due times (Unix ms) of the destination's notifications (one per
    /// message, individual and held alike), any order.
    pub recent: Vec<i64>,
    /// The latest digest window (start, end), collecting while `now < end`.
    pub latest: Option<(i64, i64)>,
}

impl DigestBook {
    /// The verdict for a notification falling due at `now`.
    pub fn verdict(&self, now: i64, rule: DigestRule) -> DigestVerdict {
        if !rule.enabled() {
            return DigestVerdict::Send;
        }
        if let Some((start, end)) = self.latest.filter(|&(_, end)| now < end) {
            return DigestVerdict::Hold { start, end };
        }
        let in_window = |t: &&i64| **t > now - rule.window_ms && **t <= now;
        let before = self.recent.iter().filter(in_window).count();
        if before < rule.threshold {
            return DigestVerdict::Send;
        }
        let first = self.recent.iter().filter(in_window).min().copied();
        let start = first
            .unwrap_or(now)
            .max(self.latest.map_or(i64::MIN, |(_, end)| end))
            .min(now);
        DigestVerdict::Hold {
            start,
            end: start + rule.window_ms,
        }
    }

    /// Records the notification decided at `now` (and forgets what left
    /// the window).
    pub fn record(&mut self, now: i64, verdict: DigestVerdict, rule: DigestRule) {
        self.recent.retain(|&t| t > now - rule.window_ms);
        self.recent.push(now);
        if let DigestVerdict::Hold { start, end } = verdict {
            self.latest = Some((start, end));
        }
    }
}

/// The verdict for a notification with several destinations (an e-mail
/// to several recipients): held only when every destination holds it, so
/// that a quiet one is never delayed; the others then list it as already
/// sent. `None` for no destination.
pub fn combined_verdict(verdicts: &[DigestVerdict]) -> Option<DigestVerdict> {
    let first = *verdicts.first()?;
    if verdicts
        .iter()
        .all(|v| matches!(v, DigestVerdict::Hold { .. }))
    {
        Some(first)
    } else {
        Some(DigestVerdict::Send)
    }
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

    const RULE: DigestRule = DigestRule {
        threshold: 5,
        window_ms: 30_000,
    };

    /// Feeds notifications due at `times` to one book; returns the verdicts.
    fn feed(book: &mut DigestBook, times: &[i64], rule: DigestRule) -> Vec<DigestVerdict> {
        times
            .iter()
            .map(|&t| {
                let v = book.verdict(t, rule);
                book.record(t, v, rule);
                v
            })
            .collect()
    }

    #[test]
    fn thirty_in_ten_seconds_send_five_then_hold_the_rest_for_one_digest() {
        let mut book = DigestBook::default();
        let times: Vec<i64> = (0..30).map(|i| 1_000_000 + i * 333).collect();
        let v = feed(&mut book, &times, RULE);
        assert!(v[..5].iter().all(|v| *v == DigestVerdict::Send), "{v:?}");
        let window = DigestVerdict::Hold {
            start: 1_000_000,
            end: 1_030_000,
        };
        assert!(v[5..].iter().all(|v| *v == window), "{v:?}");
    }

    #[test]
    fn a_quiet_destination_is_never_delayed() {
        let mut book = DigestBook::default();
        // Five in a burst, then one every 7 s: at most five in any 30 s.
        let times = [0, 1, 2, 3, 4, 40_000, 47_000, 54_000, 61_000, 68_000];
        let v = feed(&mut book, &times, RULE);
        assert!(v.iter().all(|v| *v == DigestVerdict::Send), "{v:?}");
        let off = DigestRule {
            threshold: 0,
            window_ms: 30_000,
        };
        let mut book = DigestBook::default();
        let v = feed(&mut book, &(0..50).collect::<Vec<_>>(), off);
        assert!(v.iter().all(|v| *v == DigestVerdict::Send), "0 disables");
    }

    #[test]
    fn a_storm_gives_one_digest_per_window_and_then_quiet_again() {
        let mut book = DigestBook::default();
        // One every second for 70 s.
        let times: Vec<i64> = (0..70).map(|i| i * 1_000).collect();
        let v = feed(&mut book, &times, RULE);
        let windows: BTreeSet<(i64, i64)> = v
            .iter()
            .filter_map(|v| match v {
                DigestVerdict::Hold { start, end } => Some((*start, *end)),
                DigestVerdict::Send => None,
            })
            .collect();
        assert_eq!(
            windows.into_iter().collect::<Vec<_>>(),
            vec![(0, 30_000), (30_000, 60_000), (60_000, 90_000)],
            "windows follow each other, never overlap"
        );
        assert_eq!(v.iter().filter(|v| **v == DigestVerdict::Send).count(), 5);
        // Long after: sent at once again.
        assert_eq!(book.verdict(200_000, RULE), DigestVerdict::Send);
    }

    #[test]
    fn a_mail_to_several_recipients_is_held_only_when_all_hold_it() {
        let hold = DigestVerdict::Hold { start: 0, end: 30 };
        assert_eq!(combined_verdict(&[hold, hold]), Some(hold));
        assert_eq!(
            combined_verdict(&[hold, DigestVerdict::Send]),
            Some(DigestVerdict::Send)
        );
        assert_eq!(combined_verdict(&[]), None);
    }
}
