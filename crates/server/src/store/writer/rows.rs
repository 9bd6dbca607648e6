//! What one check writes, inside the batch writer's transaction: its row
//! in the service's chain of checks, and with a state change the service
//! row, the event, the notification and the channel deliveries (SPEC
//! section 4: one transaction); and the [`Snapshot`] of per-check fields
//! folded in memory until the writer writes it (`write_snapshot`).

use super::super::writes::CheckWrite;
use super::super::Head;
use healthchecker_core::{CheckResult, HealthState, ServiceId, UnixMs};
use rusqlite::{params, Connection, OptionalExtension};

/// The latest per-check fields of one service, folded over its checks.
#[derive(Debug, Clone)]
pub(super) struct Snapshot {
    state: HealthState,
    successes: u32,
    failures: u32,
    at: UnixMs,
    result: CheckResult,
    reason: Option<String>,
    duration_us: i64,
    last_healthy_at: Option<UnixMs>,
    last_failure_reason: Option<String>,
    cert_expires_at: Option<i64>,
    /// The service's newest check row and its number in the history.
    pub(super) head: Head,
}

impl Snapshot {
    pub(super) fn fold(prev: Option<&Snapshot>, c: &CheckWrite, head: Head) -> Snapshot {
        let prev_healthy = prev.and_then(|p| p.last_healthy_at);
        let prev_failure = prev.and_then(|p| p.last_failure_reason.clone());
        let prev_cert = prev.and_then(|p| p.cert_expires_at);
        Snapshot {
            state: c.state,
            successes: c.successes,
            failures: c.failures,
            at: c.at,
            result: c.result,
            reason: c.reason.clone(),
            duration_us: c.duration_us,
            last_healthy_at: if c.state == HealthState::Healthy {
                Some(c.at)
            } else {
                prev_healthy
            },
            last_failure_reason: if c.result == CheckResult::Pass {
                prev_failure
            } else {
                c.reason.clone()
            },
            cert_expires_at: c.cert_expires_at.or(prev_cert),
            head,
        }
    }
}

/// Writes a service's per-check fields (and, with a transition, its state
/// change columns). Returns false when the service no longer exists.
pub(super) fn write_snapshot(
    tx: &Connection,
    id: ServiceId,
    s: &Snapshot,
    changed_at: Option<(UnixMs, Option<UnixMs>)>,
) -> rusqlite::Result<bool> {
    let n = tx
        .prepare_cached(
            "UPDATE services SET state = ?1, successes = ?2, failures = ?3, last_check_at = ?4, \
             last_result = ?5, last_reason = ?6, last_duration_us = ?7, \
             last_healthy_at = COALESCE(?8, last_healthy_at), \
             last_failure_reason = COALESCE(?9, last_failure_reason), \
             cert_expires_at = COALESCE(?10, cert_expires_at), \
             state_since = COALESCE(?11, state_since), \
             last_notified_at = COALESCE(?12, last_notified_at), \
             last_check_id = ?13, check_seq = ?14 \
             WHERE id = ?15",
        )?
        .execute(params![
            s.state.as_str(),
            s.successes,
            s.failures,
            s.at,
            s.result.as_str(),
            s.reason,
            s.duration_us,
            s.last_healthy_at,
            s.last_failure_reason,
            s.cert_expires_at,
            changed_at.map(|c| c.0),
            changed_at.and_then(|c| c.1),
            s.head.check_id,
            s.head.seq,
            id
        ])?;
    Ok(n > 0)
}

/// Inserts one check after `prev` (the service's fold not yet in its row,
/// if any); with a transition, also updates the service row and records the
/// event and the notification. Returns the service's new fold, or `None`
/// when the service was deleted meanwhile (nothing is recorded then).
pub(super) fn write_check(
    tx: &Connection,
    c: &CheckWrite,
    prev: Option<&Snapshot>,
) -> rusqlite::Result<Option<Snapshot>> {
    let result = c.result.as_str();
    let row: Option<(String, Option<i64>, i64)> = tx
        .prepare_cached("SELECT name, last_check_id, check_seq FROM services WHERE id = ?1")?
        .query_row([c.service_id], |r| {
            Ok((r.get("name")?, r.get("last_check_id")?, r.get("check_seq")?))
        })
        .optional()?;
    let Some((name, stored_head, stored_seq)) = row else {
        // Deleted while the check ran: nothing to record.
        return Ok(None);
    };
    let (prev_id, prev_seq) = match prev {
        Some(p) => (Some(p.head.check_id), p.head.seq),
        None => (stored_head, stored_seq),
    };
    tx.prepare_cached(
        "INSERT INTO checks (service_id, at, duration_us, result, reason, http_status, details, \
         prev_id, seq, changed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        c.service_id,
        c.at,
        c.duration_us,
        result,
        c.reason,
        c.http_status,
        c.details,
        prev_id,
        prev_seq + 1,
        c.transition.as_ref().map(|_| 1)
    ])?;
    let check_id = tx.last_insert_rowid();
    let head = Head {
        check_id,
        seq: prev_seq + 1,
    };
    let snap = Snapshot::fold(prev, c, head);
    let Some(t) = &c.transition else {
        return Ok(Some(snap));
    };
    let not_before = t.notify.as_ref().map(|n| n.not_before);
    write_snapshot(tx, c.service_id, &snap, Some((c.at, not_before)))?;
    tx.prepare_cached(
        "INSERT INTO events (at, service_id, service, kind, from_state, to_state, check_id, reason) \
         VALUES (?1, ?2, ?3, 'state', ?4, ?5, ?6, ?7)",
    )?
    .execute(params![c.at, c.service_id, name, t.from.as_str(), c.state.as_str(), check_id, c.reason])?;
    let event_id = tx.last_insert_rowid();
    if let Some(n) = t.notify.as_ref().filter(|n| !n.recipients.is_empty()) {
        tx.prepare_cached(
            "INSERT INTO notifications (event_id, service_id, service, created_at, from_state, \
             to_state, reason, target, recipients, previous_since, status, next_attempt_at, last_error) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?13, ?11, ?12)",
        )?
        .execute(params![
            event_id,
            c.service_id,
            n.service,
            c.at,
            t.from.as_str(),
            c.state.as_str(),
            c.reason,
            n.target,
            serde_json::to_string(&n.recipients).unwrap_or_else(|_| "[]".into()),
            t.previous_since,
            n.next_attempt_at(),
            n.note,
            n.status().as_str()
        ])?;
    }
    if let Some(n) = &t.notify {
        super::super::channels::insert_deliveries(
            tx,
            event_id,
            c.service_id,
            &n.service,
            c.at,
            t.from,
            c.state,
            c.reason.as_deref(),
            &n.target,
            t.previous_since,
            n.next_attempt_at(),
            n.status().as_str(),
        )?;
    }
    Ok(Some(snap))
}
