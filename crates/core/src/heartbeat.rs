//! Heartbeat (push) services (SPEC section 15): a job or device that cannot
//! be polled calls its ping URL; the service is judged by the pings that
//! arrive and by the one that does not.
//!
//! Pure: the caller passes the time. Judgement (a decision where the SPEC is
//! silent, see docs/lan.md): a heartbeat has no thresholds to count through,
//! every ping is a verdict. A success ping makes the service healthy, a fail
//! ping (or a non-zero exit code) unhealthy, both at once; no success within
//! `period + grace` of the last one (or of the registration) makes it
//! unhealthy, once per missed deadline.

use crate::health::{CheckResult, Thresholds};
use std::ops::RangeInclusive;

/// Valid periods, in seconds: one minute to 365 days.
pub const PERIOD_RANGE: RangeInclusive<u32> = 60..=365 * 86_400;
/// Valid grace times, in seconds: one minute to 30 days.
pub const GRACE_RANGE: RangeInclusive<u32> = 60..=30 * 86_400;
/// Default period: a daily job (what healthchecks.io assumes too).
pub const DEFAULT_PERIOD: u32 = 86_400;
/// Default grace: an hour, for a job whose run time varies.
pub const DEFAULT_GRACE: u32 = 3_600;
/// Most bytes of a ping's body kept as the check's output (10 KiB).
pub const MAX_PING_BODY: usize = 10 * 1024;
/// Every ping is a verdict (see the module's doc).
pub const THRESHOLDS: Thresholds = Thresholds {
    healthy: 1,
    unhealthy: 1,
};

/// When a heartbeat service expects its pings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Heartbeat {
    /// Seconds between the job's runs.
    pub period: u32,
    /// Seconds of lateness tolerated after `period`.
    pub grace: u32,
}

/// What a heartbeat service is at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// On time; judge again at `until` (Unix ms) unless a ping comes first.
    OnTime {
        /// The deadline (Unix ms).
        until: i64,
    },
    /// No success since `deadline` (Unix ms) passed.
    Overdue {
        /// The deadline that passed (Unix ms).
        deadline: i64,
    },
}

impl Heartbeat {
    /// The deadline of the next success ping after one at `last_success` (Unix ms).
    pub fn deadline(&self, last_success: i64) -> i64 {
        last_success + (self.period as i64 + self.grace as i64) * 1000
    }

    /// On time or overdue at `now`, given the last success (or the
    /// registration, before the first ping).
    pub fn verdict(&self, last_success: i64, now: i64) -> Verdict {
        let deadline = self.deadline(last_success);
        if now >= deadline {
            Verdict::Overdue { deadline }
        } else {
            Verdict::OnTime { until: deadline }
        }
    }

    /// The reason recorded when the deadline passed.
    pub fn overdue_reason(&self) -> String {
        format!(
            "no success ping within period + grace ({} + {})",
            human(self.period),
            human(self.grace)
        )
    }
}

/// `86400` -> `1d`, `5400` -> `90m`, `61` -> `61s`.
fn human(secs: u32) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// One ping: `/ping/<id>`, `/ping/<id>/start`, `/ping/<id>/fail`,
/// `/ping/<id>/<exit code>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ping {
    /// The job succeeded.
    Success,
    /// The job started (recorded; the next ping's duration counts from it).
    Start,
    /// The job failed.
    Fail,
    /// The job exited with this code: 0 succeeded, anything else failed.
    Exit(u8),
}

impl Ping {
    /// Parses the part after the id (`None`: a bare `/ping/<id>`).
    pub fn parse(suffix: Option<&str>) -> Result<Ping, String> {
        match suffix {
            None | Some("") => Ok(Ping::Success),
            Some("start") => Ok(Ping::Start),
            Some("fail") => Ok(Ping::Fail),
            Some(code) => code
                .parse::<u8>()
                .ok()
                .filter(|_| code.bytes().all(|b| b.is_ascii_digit()))
                .map(Ping::Exit)
                .ok_or_else(|| {
                    format!(
                        "invalid ping {code:?} (valid: start, fail or an exit code from 0 to 255)"
                    )
                }),
        }
    }

    /// The URL form [`Ping::parse`] reads back: `""` (a success),
    /// `"start"`, `"fail"` or an exit code. How a ping travels between the
    /// nodes of a cluster and is stored until its owner judges it.
    pub fn suffix(self) -> String {
        match self {
            Ping::Success => String::new(),
            Ping::Start => "start".into(),
            Ping::Fail => "fail".into(),
            Ping::Exit(c) => c.to_string(),
        }
    }

    /// The check result it records; `None` for a start.
    pub fn result(self) -> Option<CheckResult> {
        match self {
            Ping::Start => None,
            Ping::Success | Ping::Exit(0) => Some(CheckResult::Pass),
            Ping::Fail | Ping::Exit(_) => Some(CheckResult::Fail),
        }
    }

    /// The reason recorded with a failure.
    pub fn reason(self) -> Option<String> {
        match self {
            Ping::Fail => Some("fail ping".into()),
            Ping::Exit(c) if c != 0 => Some(format!("exit code {c}")),
            _ => None,
        }
    }
}

/// The last [`MAX_PING_BODY`] bytes of `body` as text (lossy UTF-8, cut at
/// a character boundary): a job's output ends with what went wrong.
pub fn body_tail(body: &[u8]) -> String {
    let start = body.len().saturating_sub(MAX_PING_BODY);
    let text = String::from_utf8_lossy(&body[start..]);
    // A cut inside a character leaves replacement characters at the start.
    text.trim_start_matches('\u{fffd}').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Heartbeat = Heartbeat {
        period: 86_400,
        grace: 3_600,
    };

    #[test]
    fn on_time_until_period_plus_grace_then_overdue() {
        let last = 1_000_000;
        let deadline = last + (86_400 + 3_600) * 1000;
        assert_eq!(
            DAY.verdict(last, last + 1),
            Verdict::OnTime { until: deadline }
        );
        assert_eq!(
            DAY.verdict(last, deadline - 1),
            Verdict::OnTime { until: deadline }
        );
        assert_eq!(DAY.verdict(last, deadline), Verdict::Overdue { deadline });
        // A later success moves the deadline.
        assert_eq!(
            DAY.verdict(deadline + 5, deadline + 10),
            Verdict::OnTime {
                until: DAY.deadline(deadline + 5)
            }
        );
    }

    #[test]
    fn pings_parse_and_judge() {
        use CheckResult::*;
        let cases = [
            (None, Ping::Success, Some(Pass)),
            (Some("start"), Ping::Start, None),
            (Some("fail"), Ping::Fail, Some(Fail)),
            (Some("0"), Ping::Exit(0), Some(Pass)),
            (Some("1"), Ping::Exit(1), Some(Fail)),
            (Some("255"), Ping::Exit(255), Some(Fail)),
        ];
        for (suffix, ping, result) in cases {
            let p = Ping::parse(suffix).unwrap();
            assert_eq!((p, p.result()), (ping, result), "{suffix:?}");
        }
        assert_eq!(Ping::Exit(1).reason().as_deref(), Some("exit code 1"));
        assert_eq!(Ping::Exit(0).reason(), None);
        for bad in ["256", "-1", "+1", "x", "start2"] {
            assert!(Ping::parse(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_body_keeps_its_last_10_kib() {
        assert_eq!(body_tail(b"ok"), "ok");
        let mut big = vec![b'a'; 20_000];
        big.extend_from_slice(b"the end");
        let t = body_tail(&big);
        assert_eq!(t.len(), MAX_PING_BODY);
        assert!(t.ends_with("the end"));
        // A cut inside a multi-byte character.
        let mut s = "é".repeat(MAX_PING_BODY).into_bytes();
        s.push(b'!');
        assert!(body_tail(&s).ends_with('!'));
        assert!(!body_tail(&s).starts_with('\u{fffd}'));
    }

    #[test]
    fn reasons_name_period_and_grace() {
        assert_eq!(
            DAY.overdue_reason(),
            "no success ping within period + grace (1d + 1h)"
        );
    }
}
