//! Wall-clock helpers: the store and the API speak Unix milliseconds (UTC).
//!
//! [`Clock`] is the wall clock the scheduler reads, injectable so that its
//! tests run on tokio's paused time: [`Clock::system`] in the daemon,
//! [`Clock::following_tokio`] in tests, where wall time moves exactly as
//! `tokio::time::advance` moves the monotonic clock. Monotonic time (due
//! times, timeouts) is always `tokio::time::Instant`.

use healthchecker_core::UnixMs;
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall time (Unix ms).
#[derive(Debug, Clone, Copy)]
pub struct Clock(Source);

#[derive(Debug, Clone, Copy)]
enum Source {
    System,
    Tokio {
        wall_at_origin: i64,
        origin: tokio::time::Instant,
    },
}

impl Clock {
    /// The system's wall clock (which an administrator or NTP may set).
    pub fn system() -> Self {
        Clock(Source::System)
    }

    /// A wall clock that reads `wall_ms` now and then advances with tokio's
    /// clock: under `#[tokio::test(start_paused = true)]` it moves only
    /// when the test's timers do, so time-dependent logic is tested in
    /// milliseconds and exactly.
    pub fn following_tokio(wall_ms: i64) -> Self {
        Clock(Source::Tokio {
            wall_at_origin: wall_ms,
            origin: tokio::time::Instant::now(),
        })
    }

    /// The wall time now.
    pub fn now(&self) -> UnixMs {
        UnixMs::new(self.now_ms())
    }

    /// Milliseconds since the Unix epoch, now.
    pub fn now_ms(&self) -> i64 {
        match self.0 {
            Source::System => now_ms(),
            Source::Tokio {
                wall_at_origin,
                origin,
            } => wall_at_origin + origin.elapsed().as_millis() as i64,
        }
    }
}

/// The system's wall time now.
pub fn now() -> UnixMs {
    UnixMs::new(now_ms())
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 text of a wall time (a [`UnixMs`] or its `i64`), e.g.
/// `2026-11-25T17:02:46.123Z`.
pub fn rfc3339(at: impl Into<UnixMs>) -> String {
    let ms = at.into().get();
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A short human duration: `42s`, `5m 3s`, `2h 10m`, `3d 4h`.
pub fn human_duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_and_durations() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_500), "1970-01-01T00:00:01.5Z");
        assert_eq!(rfc3339(UnixMs::new(1_500)), rfc3339(1_500));
        assert_eq!(human_duration(59_999), "59s");
        assert_eq!(human_duration(3_661_000), "1h 1m");
        assert_eq!(human_duration(90_061_000), "1d 1h");
    }
}
