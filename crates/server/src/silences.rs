//! Silences (maintenance windows, SPEC section 14): what a silence is, and
//! the in-memory book the scheduler asks "is this service silenced now, and
//! until when?" when a transition notifies.
//!
//! The decision is small and local: a notification of a silenced service is
//! written `held` until the silence's end; when it ends, the store releases
//! the held rows of a service whose state differs from its state before
//! them (one coalesced message with the transitions) and suppresses the
//! rows of one that came back to where it was (`Store::release_held`).
//! Weekly windows are evaluated in their IANA time zone with jiff.

use healthchecker_core::channel::parse_names;
use healthchecker_core::policy::{check_one_off, Weekly};
use healthchecker_core::SpecError;
use serde_json::{Map, Value};
use std::sync::{Arc, RwLock};

/// When a silence holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Window {
    /// From `starts_at` to `ends_at` (Unix ms).
    OneOff {
        /// Start.
        starts_at: i64,
        /// End.
        ends_at: i64,
    },
    /// Every week, in local time of `tz`.
    Weekly {
        /// As given: `sun 02:00-04:00`.
        text: String,
        /// Parsed.
        weekly: Weekly,
        /// IANA zone name.
        tz: String,
    },
}

/// A validated silence.
#[derive(Debug, Clone, PartialEq)]
pub struct Silence {
    /// Row id (0 before it is stored).
    pub id: i64,
    /// Service names it covers.
    pub services: Vec<String>,
    /// Tags it covers.
    pub tags: Vec<String>,
    /// When.
    pub window: Window,
    /// Why (free text).
    pub comment: Option<String>,
}

fn time_field(map: &Map<String, Value>, f: &str) -> Result<Option<i64>, SpecError> {
    match map.get(f) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map_err(|e| {
                    SpecError::invalid(
                        f,
                        format!("invalid {f} {s:?}: {e} (RFC 3339, e.g. 2026-12-01T02:00:00Z)"),
                    )
                })?;
            Ok(Some((t.unix_timestamp_nanos() / 1_000_000) as i64))
        }
        Some(_) => Err(SpecError::invalid(
            f,
            format!("{f} must be an RFC 3339 time"),
        )),
    }
}

fn text_field(map: &Map<String, Value>, f: &str) -> Result<Option<String>, SpecError> {
    match map.get(f) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= 1000 => Ok(Some(s.clone())),
        Some(_) => Err(SpecError::invalid(
            f,
            format!("{f} must be a string of at most 1000 bytes"),
        )),
    }
}

impl Silence {
    /// Validates a `POST /api/v1/silences` body; `now` is the default start.
    pub fn from_json(map: &Map<String, Value>, now: i64) -> Result<Silence, SpecError> {
        const FIELDS: [&str; 7] = [
            "services",
            "tags",
            "starts_at",
            "ends_at",
            "weekly",
            "tz",
            "comment",
        ];
        if let Some(k) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(SpecError {
                code: "unknown_field",
                field: k.clone(),
                message: format!("unknown field {k:?} (known: {})", FIELDS.join(", ")),
            });
        }
        let services = parse_names("services", map.get("services"))?;
        let tags = parse_names("tags", map.get("tags"))?;
        if services.is_empty() && tags.is_empty() {
            return Err(SpecError::missing(
                "services",
                "a silence names services or tags",
            ));
        }
        let window = match text_field(map, "weekly")? {
            Some(text) => {
                let weekly = Weekly::parse(&text)?;
                let tz = text_field(map, "tz")?.unwrap_or_else(|| "UTC".into());
                jiff::tz::TimeZone::get(&tz).map_err(|_| {
                    SpecError::invalid(
                        "tz",
                        format!("unknown time zone {tz:?} (an IANA name such as Europe/Berlin)"),
                    )
                })?;
                Window::Weekly { text, weekly, tz }
            }
            None => {
                let starts_at = time_field(map, "starts_at")?.unwrap_or(now);
                let ends_at = time_field(map, "ends_at")?.ok_or_else(|| {
                    SpecError::missing("ends_at", "missing ends_at (or give weekly)")
                })?;
                check_one_off(starts_at, ends_at)?;
                Window::OneOff { starts_at, ends_at }
            }
        };
        Ok(Silence {
            id: 0,
            services,
            tags,
            window,
            comment: text_field(map, "comment")?,
        })
    }

    /// Whether it covers a service of this name and tags.
    pub fn matches(&self, name: &str, tags: &[String]) -> bool {
        self.services.iter().any(|s| s == name) || self.tags.iter().any(|t| tags.contains(t))
    }

    /// If it holds at `at` (Unix ms): when it ends.
    pub fn holds_until(&self, at: i64) -> Option<i64> {
        match &self.window {
            Window::OneOff { starts_at, ends_at } => {
                (*starts_at <= at && at < *ends_at).then_some(*ends_at)
            }
            Window::Weekly { weekly, tz, .. } => {
                let tz = jiff::tz::TimeZone::get(tz).ok()?;
                let z = jiff::Timestamp::from_millisecond(at).ok()?.to_zoned(tz);
                let day = Weekly::weekday(z.weekday().to_monday_zero_offset() as u32)?;
                let minute = z.hour() as u32 * 60 + z.minute() as u32;
                let left = weekly.remaining_minutes(day, minute)? as i64;
                let into_minute = z.second() as i64 * 1000 + z.millisecond() as i64;
                Some(at + left * 60_000 - into_minute)
            }
        }
    }
}

/// The current silences, shared by the API (which replaces them after a
/// change) and the scheduler (which asks at each notifying transition).
#[derive(Debug, Clone, Default)]
pub struct SilenceBook(Arc<RwLock<Vec<Silence>>>);

impl SilenceBook {
    /// Replaces the book's contents.
    pub fn set(&self, all: Vec<Silence>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = all;
    }

    /// The latest end of the silences covering this service at `at`.
    pub fn held_until(&self, name: &str, tags: &[String], at: i64) -> Option<i64> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|s| s.matches(name, tags))
            .filter_map(|s| s.holds_until(at))
            .max()
    }

    /// Whether any silence covers this service at `at` (the dashboard's mark).
    pub fn is_silenced(&self, name: &str, tags: &[String], at: i64) -> bool {
        self.held_until(name, tags, at).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Silence, SpecError> {
        Silence::from_json(v.as_object().unwrap(), 1_000)
    }

    #[test]
    fn bad_silences_name_the_field() {
        for (body, field) in [
            (json!({"ends_at": "2026-12-01T00:00:00Z"}), "services"),
            (
                json!({"services": ["a"], "starts_at": "2026-12-01T02:00:00Z", "ends_at": "2026-12-01T01:00:00Z"}),
                "ends_at",
            ),
            (json!({"services": ["a"]}), "ends_at"),
            (
                json!({"tags": ["nas"], "weekly": "sun 02:00-04:00", "tz": "Mars/Olympus"}),
                "tz",
            ),
            (json!({"tags": ["nas"], "weekly": "someday"}), "weekly"),
            (
                json!({"tags": ["nas"], "weekly": "sun 02:00-04:00", "until": 1}),
                "until",
            ),
        ] {
            assert_eq!(parse(body.clone()).unwrap_err().field, field, "{body}");
        }
    }

    #[test]
    fn one_off_and_weekly_windows_hold_until_their_end() {
        let s = parse(json!({"services": ["nas"], "starts_at": "1970-01-01T00:00:02Z", "ends_at": "1970-01-01T00:00:10Z"})).unwrap();
        assert_eq!(s.holds_until(1_000), None);
        assert_eq!(s.holds_until(5_000), Some(10_000));
        assert_eq!(s.holds_until(10_000), None);
        assert!(s.matches("nas", &[]) && !s.matches("web", &[]));
        // 2026-11-29 was a Sunday; 02:30 in Berlin is 01:30 UTC (CET, +1).
        let w =
            parse(json!({"tags": ["media"], "weekly": "sun 02:00-04:00", "tz": "Europe/Berlin"}))
                .unwrap();
        let at = jiff::Timestamp::from_second(1_795_915_800).unwrap(); // 2026-11-29T01:30:00Z
        let end = w.holds_until(at.as_millisecond()).unwrap();
        assert_eq!(end - at.as_millisecond(), 90 * 60_000);
        assert_eq!(w.holds_until(at.as_millisecond() + 2 * 3_600_000), None);
        assert!(w.matches("plex", &["media".into()]));
        let book = SilenceBook::default();
        book.set(vec![s, w]);
        assert_eq!(book.held_until("nas", &[], 5_000), Some(10_000));
        assert!(!book.is_silenced("web", &[], 5_000));
    }
}
