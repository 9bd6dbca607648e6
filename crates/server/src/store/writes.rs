//! What the scheduler hands the batch writer (store/writer.rs): one
//! check's record, the state change it caused, and the outbox row to
//! create with it.

use super::NotificationStatus;
use healthchecker_core::{CheckResult, HealthState, ServiceId, UnixMs};

/// The record of one check and what it did to the service.
#[derive(Debug, Clone)]
pub struct CheckWrite {
    /// The service.
    pub service_id: ServiceId,
    /// When the check started.
    pub at: UnixMs,
    /// How long it took (µs).
    pub duration_us: i64,
    /// The result.
    pub result: CheckResult,
    /// Why it warned or failed.
    pub reason: Option<String>,
    /// HTTP status, if any.
    pub http_status: Option<u16>,
    /// health+json details, if any.
    pub details: Option<String>,
    /// Certificate expiry seen by this check.
    pub cert_expires_at: Option<i64>,
    /// State after the check.
    pub state: HealthState,
    /// Consecutive successes after the check.
    pub successes: u32,
    /// Consecutive failures after the check.
    pub failures: u32,
    /// The state change this check caused, if any.
    pub transition: Option<TransitionWrite>,
}

/// A state change to record as an event (and maybe a notification).
#[derive(Debug, Clone)]
pub struct TransitionWrite {
    /// Previous state.
    pub from: HealthState,
    /// When the previous state began.
    pub previous_since: UnixMs,
    /// The mail to queue, if this transition notifies.
    pub notify: Option<NotifyWrite>,
}

/// An outbox row to create with the event.
#[derive(Debug, Clone)]
pub struct NotifyWrite {
    /// Service name.
    pub service: String,
    /// Target URL.
    pub target: String,
    /// Recipient addresses (none: no mail, only the service's channels).
    pub recipients: Vec<String>,
    /// Earliest delivery: later than `at` inside the flap gap.
    pub not_before: UnixMs,
    /// Why it cannot be sent, if known now (e.g. SMTP not configured).
    pub note: Option<String>,
    /// A silence holds it until then: written `held`.
    pub held_until: Option<UnixMs>,
}

impl NotifyWrite {
    /// `held` under a silence, else `pending`.
    pub fn status(&self) -> NotificationStatus {
        if self.held_until.is_some() {
            NotificationStatus::Held
        } else {
            NotificationStatus::Pending
        }
    }

    /// When the row is next looked at: the silence's end, or `not_before`.
    pub fn next_attempt_at(&self) -> UnixMs {
        self.held_until
            .map_or(self.not_before, |h| h.max(self.not_before))
    }
}
