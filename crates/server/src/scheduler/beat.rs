//! What the scheduler keeps of a heartbeat service (SPEC section 15): it is
//! never probed; its one timetable entry is at its deadline (capped at
//! [`HEARTBEAT_RECHECK_MS`]), a success ping moves the deadline later, and
//! the entry, when it fires, finds it on time and waits again.

use super::Scheduler;
use crate::probe::ProbeOutcome;
use crate::store::ServiceRecord;
use healthchecker_core::heartbeat::{Heartbeat, Ping, Verdict};
use healthchecker_core::{CheckResult, HealthState, ServiceId, UnixMs};
use std::time::Duration;

/// The longest a heartbeat's deadline waits on the monotonic timer before
/// it is judged again by the wall clock (which may have been set meanwhile).
pub(super) const HEARTBEAT_RECHECK_MS: i64 = 3_600_000;

/// A heartbeat service's clock.
pub(super) struct Beat {
    pub hb: Heartbeat,
    /// The latest success (or the registration), Unix ms.
    pub last_success: i64,
    /// The deadline already recorded as missed (one failed check per miss).
    pub reported: Option<i64>,
    /// The latest start ping, for the duration of the run it opened.
    pub started: Option<i64>,
}

impl Beat {
    /// The beat of `rec` at wall time `now`, keeping what `previous` (a
    /// re-registration) knew; `None` for a polled service.
    pub fn of(rec: &ServiceRecord, previous: Option<&Beat>, now: i64) -> Option<Beat> {
        let hb = rec.spec.heartbeat?;
        let last_success = previous
            .map(|b| b.last_success)
            .or(rec.last_success_ping_at)
            .unwrap_or(rec.created_at);
        // A service already unhealthy from a missed deadline is not
        // reported again after a restart.
        let reported = match hb.verdict(last_success, now) {
            Verdict::Overdue { deadline } if rec.state == HealthState::Unhealthy => Some(deadline),
            _ => None,
        };
        Some(Beat {
            hb,
            last_success,
            reported: previous.and_then(|b| b.reported).or(reported),
            started: previous.and_then(|b| b.started),
        })
    }
}

impl Scheduler {
    /// A heartbeat's ping: a start is remembered, a success or failure is
    /// judged at once (thresholds of 1) and recorded as a check whose
    /// duration is the run since the start ping, if one came.
    pub(super) async fn on_ping(
        &mut self,
        id: ServiceId,
        ping: Ping,
        when: UnixMs,
        output: Option<String>,
        now: u64,
    ) {
        // The heartbeat's clock (healthchecker_core::heartbeat) counts in ms.
        let at = when.get();
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        if e.paused {
            // Paused: the state is frozen, pings included.
            return;
        }
        if !self.active.contains(e.bucket) {
            let bucket = e.bucket;
            if self.held.contains(bucket) && self.loading[usize::from(bucket.get())] != 0 {
                // Gained, its services still being read: the read may
                // have missed this ping, so it waits for the read.
                self.await_ping(bucket, id, ping, when, output);
            }
            // Otherwise another node runs this service (SPEC section 19):
            // the ping reaches it through the cluster's wake-ups, or the
            // node that gains its bucket judges it from the store.
            return;
        }
        let generation = e.generation;
        let Some(b) = e.beat.as_mut() else {
            return;
        };
        let Some(result) = ping.result() else {
            b.started = Some(at);
            return;
        };
        let duration = b
            .started
            .take()
            .map(|s| Duration::from_millis((at - s).max(0) as u64))
            .unwrap_or_default();
        if result == CheckResult::Pass {
            b.last_success = b.last_success.max(at);
            if b.reported.take().is_some() {
                // The live timetable entry is a late re-check: replace it
                // with one at the new deadline.
                let deadline = b.hb.deadline(b.last_success);
                e.generation = generation.wrapping_add(1);
                let g = e.generation;
                self.push_at_wall(id, g, deadline, now);
            }
        }
        let outcome = ProbeOutcome {
            result,
            reason: ping.reason(),
            http_status: None,
            details: output.map(|o| serde_json::json!({ "output": o }).to_string()),
            cert_expires_at: None,
            duration,
        };
        self.apply(id, when, outcome).await;
    }
}
