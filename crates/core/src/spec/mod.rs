//! What a monitored service is: one typed registration ([`RegisterRequest`],
//! the wire contract of SPEC section 2), validated once into a
//! [`ServiceSpec`].
//!
//! Every refusal is a [`SpecError`] naming the field, the value and the valid
//! range. Nothing is clamped: a value out of range is refused, never bent.
//!
//! # Layout
//! - [`register`]: the registration as it arrives (JSON, a form's fields),
//!   `deny_unknown_fields`, with its OpenAPI schema (feature `openapi`).
//! - [`values`]: the newtypes of its numbers ([`Interval`], [`Timeout`],
//!   [`Threshold`], ...), each accepted as a number or a numeric string.
//! - [`validate`]: the rules across fields, registration to [`ServiceSpec`].
//! - [`target`]: protocols, target URLs and DNS queries.
//! - [`status`]: acceptable HTTP statuses.
//! - [`legacy`]: the seed's form (`appname`, `url` + `/health`).

use std::ops::RangeInclusive;

pub mod legacy;
pub mod register;
pub mod status;
pub mod target;
#[cfg(test)]
mod tests;
pub mod validate;
pub mod values;

pub use register::{EmailList, RegisterRequest};
pub use status::ExpectedStatus;
pub use target::{DnsQuery, DnsType, Protocol, Target};
pub use validate::validate_name;
pub use values::{CertWarnDays, Grace, Interval, Period, Port, Threshold, Timeout};

/// Valid response timeouts, in seconds.
pub const TIMEOUT_RANGE: RangeInclusive<u32> = 2..=60;
/// Valid check intervals, in seconds.
pub const INTERVAL_RANGE: RangeInclusive<u32> = 5..=300;
/// Valid healthy/unhealthy thresholds.
pub const THRESHOLD_RANGE: RangeInclusive<u32> = 2..=10;
/// Valid `cert_warn_days` (0 turns certificate expiry checks off).
pub const CERT_WARN_DAYS_RANGE: RangeInclusive<u32> = 0..=365;
/// Valid name lengths, in characters.
pub const NAME_LEN: RangeInclusive<usize> = 1..=200;
/// Most recipients per service: a mailing list, not a spam cannon.
pub const MAX_RECIPIENTS: usize = 20;
/// Longest path (with query) accepted, in bytes.
pub const MAX_PATH_LEN: usize = 2048;

/// Default response timeout (seconds).
pub const DEFAULT_TIMEOUT: u32 = 5;
/// Default interval (seconds).
pub const DEFAULT_INTERVAL: u32 = 30;

/// The timeout of a service that gives none: [`DEFAULT_TIMEOUT`] or
/// `interval − 1`, whichever is smaller, so that `interval: 5` alone is valid
/// (SPEC section 2).
pub fn default_timeout(interval: u32) -> u32 {
    DEFAULT_TIMEOUT.min(interval.saturating_sub(1))
}
/// Default unhealthy threshold.
pub const DEFAULT_UNHEALTHY: u32 = 2;
/// Default healthy threshold.
pub const DEFAULT_HEALTHY: u32 = 10;
/// Default days before certificate expiry that turn a check into a warn.
pub const DEFAULT_CERT_WARN_DAYS: u32 = 14;
/// Default ping path: what the seed's example app serves.
pub const DEFAULT_PATH: &str = "/health";

/// A refused registration: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    /// Machine-readable code: `invalid_field`, `missing_field`, `unknown_field`, `invalid_body`.
    pub code: &'static str,
    /// The offending field (empty for a whole-body problem).
    pub field: String,
    /// A sentence quoting the value and the valid range.
    pub message: String,
}

impl SpecError {
    /// A field whose value is not acceptable.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self {
            code: "invalid_field",
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// A required field that is absent.
    pub fn missing(field: &str, message: impl Into<String>) -> Self {
        Self {
            code: "missing_field",
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// A whole-body problem (malformed JSON, not an object).
    pub fn body(message: impl Into<String>) -> Self {
        Self {
            code: "invalid_body",
            field: String::new(),
            message: message.into(),
        }
    }
}

/// A validated service: everything the daemon needs to check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Unique, 1 to 200 characters, no control characters.
    pub name: String,
    /// What to check.
    pub target: Target,
    /// Recipients of state-change mails (may be empty).
    pub emails: Vec<lettre::Address>,
    /// Response timeout in seconds (2 to 60, below `interval`).
    pub timeout: u32,
    /// Seconds between checks (5 to 300).
    pub interval: u32,
    /// Consecutive failures that make the service unhealthy (2 to 10).
    pub unhealthy_threshold: u32,
    /// Consecutive successes that make it healthy again (2 to 10).
    pub healthy_threshold: u32,
    /// Acceptable HTTP statuses.
    pub expected_status: ExpectedStatus,
    /// Require a certificate trusted by the system's roots.
    pub tls_verify: bool,
    /// Days before expiry that turn a check into a warn (0: no expiry check).
    pub cert_warn_days: u32,
    /// A push service's period and grace (`kind: heartbeat`); its target's
    /// protocol is [`Protocol::Heartbeat`].
    pub heartbeat: Option<crate::heartbeat::Heartbeat>,
    /// Named notification channels (SPEC section 13); empty: the default ones.
    pub channels: Vec<String>,
    /// Tags, for silences (SPEC section 14).
    pub tags: Vec<String>,
    /// Parents: while one is failing, this service's notifications are held.
    pub depends_on: Vec<String>,
}

impl ServiceSpec {
    /// The thresholds of the state machine.
    pub fn thresholds(&self) -> crate::Thresholds {
        crate::Thresholds {
            healthy: self.healthy_threshold,
            unhealthy: self.unhealthy_threshold,
        }
    }
}
