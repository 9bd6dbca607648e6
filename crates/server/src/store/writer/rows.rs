//! What one check writes, inside the batch writer's transaction: its row
//! in the service's chain of checks, and with a state change the service
//! row, the event, the notification and the channel deliveries (SPEC
//! section 4: one transaction); and the [`Snapshot`] of per-check fields
//! folded in memory until the writer writes it (`write_snapshot`).

use super::super::writes::CheckWrite;
use super::super::{Head, ServiceRecord};
use healthchecker_core::{CheckResult, HealthState, UnixMs};
use rusqlite::{params, Connection, OptionalExtension};
use std::sync::Arc;

/// The latest per-check fields of one service, folded over every check the
/// writer has received for it (committed or not): what reads overlay on
/// the service row (`Store::overlay`), and what the periodic snapshot
/// writes into it. Compact on purpose (one per service, about 130 bytes):
/// a failing check's reason is shared by `reason` and
/// `last_failure_reason` (`Arc<str>`, one allocation).
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    state: HealthState,
    result: CheckResult,
    /// Folded since the service row was last written (the next snapshot
    /// writes it).
    pub(super) dirty: bool,
    successes: u32,
    failures: u32,
    at: UnixMs,
    duration_us: i64,
    reason: Option<Arc<str>>,
    last_healthy_at: Option<UnixMs>,
    last_failure_reason: Option<Arc<str>>,
    cert_expires_at: Option<i64>,
    /// The service's newest *committed* check and its number in the
    /// history (`None` until one of its checks committed since start).
    pub(crate) head: Option<Head>,
}

impl Snapshot {
    /// Folds `c` into `prev` (the service's fold so far, if any); the head
    /// stays `head`.
    pub(super) fn fold(prev: Option<&Snapshot>, c: &CheckWrite, head: Option<Head>) -> Snapshot {
        let reason: Option<Arc<str>> = c.reason.as_deref().map(Arc::from);
        Snapshot {
            state: c.state,
            result: c.result,
            dirty: true,
            successes: c.successes,
            failures: c.failures,
            at: c.at,
            duration_us: c.duration_us,
            last_healthy_at: if c.state == HealthState::Healthy {
                Some(c.at)
            } else {
                prev.and_then(|p| p.last_healthy_at)
            },
            last_failure_reason: if c.result == CheckResult::Pass {
                prev.and_then(|p| p.last_failure_reason.clone())
            } else {
                reason.clone()
            },
            reason,
            cert_expires_at: c.cert_expires_at.or(prev.and_then(|p| p.cert_expires_at)),
            head,
        }
    }

    /// Shows these fields in `r` (the service's stored row), unless the
    /// row is newer (its last check later than this fold's). Not the state
    /// (nor `state_since`): a state change is shown once it is committed,
    /// so that a state the API showed survives a `kill -9` (SPEC sections
    /// 4 and 7); it commits within the writer's batch window, with its
    /// service row.
    pub(crate) fn overlay(&self, r: &mut ServiceRecord) {
        let at = self.at.get();
        if r.last_check.as_ref().is_some_and(|l| l.at > at) {
            return;
        }
        r.successes = self.successes;
        r.failures = self.failures;
        r.last_check = Some(super::super::LastCheck {
            at,
            result: self.result,
            reason: self.reason.as_deref().map(str::to_string),
            duration_us: self.duration_us,
        });
        if let Some(h) = self.last_healthy_at {
            r.last_healthy_at = Some(h.get());
        }
        if let Some(f) = &self.last_failure_reason {
            r.last_failure_reason = Some(f.to_string());
        }
        if let Some(c) = self.cert_expires_at {
            r.cert_expires_at = Some(c);
        }
    }
}

/// Writes a service's per-check fields (and, with a transition, its state
/// change columns), naming `head` as its newest check. Returns false when
/// the service no longer exists.
pub(super) fn write_snapshot(
    tx: &Connection,
    id: healthchecker_core::ServiceId,
    s: &Snapshot,
    head: Head,
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
            s.reason.as_deref(),
            s.duration_us,
            s.last_healthy_at,
            s.last_failure_reason.as_deref(),
            s.cert_expires_at,
            changed_at.map(|c| c.0),
            changed_at.and_then(|c| c.1),
            head.check_id,
            head.seq,
            id
        ])?;
    Ok(n > 0)
}

/// The insert of a check row, prepared once per batch ([`write_check`]'s
/// `insert`): looking a cached statement up by its text for every row
/// hashed this text each time.
pub(super) const INSERT_CHECK: &str =
    "INSERT INTO checks (id, service_id, at, duration_us, result, reason, http_status, \
     details, prev_id, seq, changed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

/// Inserts one check (row id `id`, chosen by the writer when it received
/// it) after `prev` (the service's newest committed check, when the writer
/// knows it; else its row's); with a transition, also writes the service
/// row (`fold`: the service's fold as of this check) and records the event
/// and the notification. Returns the service's new head, or `None` when
/// the service was deleted meanwhile (nothing is recorded then).
pub(super) fn write_check(
    tx: &Connection,
    insert: &mut rusqlite::Statement<'_>,
    id: i64,
    c: &CheckWrite,
    fold: Option<&Snapshot>,
    prev: Option<Head>,
) -> rusqlite::Result<Option<Head>> {
    let result = c.result.as_str();
    // The service row is read only when the writer does not know the
    // service's newest check, or for a state change (its event names the
    // service). A known head means the row exists: a delete forgets the
    // head under the connection lock this batch holds (`Overlay::forget`),
    // so a deleted service never comes here with one. Skipping the read
    // saves a random look-up in `services` per plain check.
    let (name, prev_id, prev_seq) = match (prev, &c.transition) {
        (Some(p), None) => (None, Some(p.check_id), p.seq),
        _ => {
            let row: Option<(String, Option<i64>, i64)> = tx
                .prepare_cached(
                    "SELECT name, last_check_id, check_seq FROM services WHERE id = ?1",
                )?
                .query_row([c.service_id], |r| {
                    Ok((r.get("name")?, r.get("last_check_id")?, r.get("check_seq")?))
                })
                .optional()?;
            let Some((name, stored_head, stored_seq)) = row else {
                // Deleted while the check ran: nothing to record.
                return Ok(None);
            };
            match prev {
                Some(p) => (Some(name), Some(p.check_id), p.seq),
                None => (Some(name), stored_head, stored_seq),
            }
        }
    };
    insert.execute(params![
        id,
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
    let check_id = id;
    let head = Head {
        check_id,
        seq: prev_seq + 1,
    };
    let (Some(t), Some(name)) = (&c.transition, name) else {
        return Ok(Some(head));
    };
    let not_before = t.notify.as_ref().map(|n| n.not_before);
    let own;
    let fold = match fold {
        Some(f) => f,
        None => {
            own = Snapshot::fold(None, c, None);
            &own
        }
    };
    write_snapshot(tx, c.service_id, fold, head, Some((c.at, not_before)))?;
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
    Ok(Some(head))
}
