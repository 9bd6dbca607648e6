//! The seam between the monitor and the writer: a [`Step`] of the pure
//! monitor (healthchecker_core::monitor) and the probe's outcome become
//! the one [`CheckWrite`] that the writer records, with the event and the
//! outbox row, in one transaction. Nothing here decides anything.

use crate::probe::ProbeOutcome;
use crate::store::{CheckWrite, NotifyWrite, TransitionWrite};
use healthchecker_core::monitor::{Change, Step};
use healthchecker_core::{ServiceId, ServiceSpec, UnixMs};

/// The check row of `outcome`, with the state after it and the change it
/// caused (`notify`: its outbox row, when the change notifies).
pub(super) fn check_write(
    service_id: ServiceId,
    at: UnixMs,
    outcome: ProbeOutcome,
    step: &Step,
    notify: Option<NotifyWrite>,
) -> CheckWrite {
    CheckWrite {
        service_id,
        at,
        duration_us: outcome.duration.as_micros() as i64,
        result: outcome.result,
        reason: outcome.reason,
        http_status: outcome.http_status,
        details: outcome.details,
        cert_expires_at: outcome.cert_expires_at,
        state: step.state,
        successes: step.successes,
        failures: step.failures,
        transition: step.change.map(|c: Change| TransitionWrite {
            from: c.transition.from,
            previous_since: UnixMs::new(c.previous_since),
            notify,
        }),
    }
}

/// Whom a notification of `spec` goes to and when. Always a row when the
/// change notifies: besides its addresses, the service may have named or
/// default channels, which the writer resolves in the event's transaction.
pub(super) fn notify_write(
    name: &str,
    spec: &ServiceSpec,
    not_before: UnixMs,
    note: Option<String>,
    held_until: Option<UnixMs>,
) -> NotifyWrite {
    NotifyWrite {
        service: name.to_string(),
        target: spec.target.url(),
        recipients: spec.emails.iter().map(|a| a.to_string()).collect(),
        not_before,
        note,
        held_until,
    }
}
