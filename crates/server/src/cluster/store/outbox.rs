//! The mail outbox, `notifications`, on PostgreSQL, as `store/outbox.rs`,
//! and its claim: in a cluster each due row is claimed by one node before
//! it is delivered ([`PgStore::claim_notifications`]), so that a mail goes
//! out from one node in normal operation and, when that node dies, from
//! another once the claim expires (at least once across a crash).

use super::row::{self, Fields};
use super::services::{refs, Args};
use super::{pg, PgStore};
use crate::store::{
    NotificationRecord, StoreError, GIVE_UP_UNSENT_MS, RETAIN_EVENTS_MS, RETAIN_FAILED_MAIL_MS,
};
use healthchecker_core::ServiceId;
use postgres::Row;
use std::time::Duration;

/// How long a claim on an outbox row lasts: longer than any delivery
/// attempt (the SMTP and channel timeouts are tens of seconds), short
/// enough that a dead node's claimed rows go out again within a minute.
pub const CLAIM_FOR: Duration = Duration::from_secs(60);

pub(crate) const NOTIFICATION_COLUMNS: &str =
    "id, event_id, service_id, service, created_at, from_state, \
    to_state, reason, target, recipients, previous_since, status, attempts, next_attempt_at, \
    last_error, sent_at, message_id";

pub(crate) fn decode_notification(r: &Row) -> Result<NotificationRecord, StoreError> {
    let f = Fields::new(r, "notifications")?;
    Ok(NotificationRecord {
        id: f.id(),
        event_id: f.get("event_id")?,
        service_id: ServiceId::new(f.get("service_id")?),
        service: f.get("service")?,
        created_at: f.get("created_at")?,
        from: f.parse("from_state")?,
        to: f.parse("to_state")?,
        reason: f.get("reason")?,
        target: f.get("target")?,
        recipients: f.json("recipients")?,
        previous_since: f.get("previous_since")?,
        status: f.parse("status")?,
        attempts: f.get("attempts")?,
        next_attempt_at: f.get("next_attempt_at")?,
        last_error: f.get("last_error")?,
        sent_at: f.get("sent_at")?,
        message_id: f.get("message_id")?,
    })
}

/// The claim statement of `table` (`notifications` or `deliveries`):
/// pending rows of the groups that have one due at `$1` (a service's rows,
/// or a service and channel's, travel together), not under an unexpired
/// claim (not even this node's own: it is delivering them), oldest first, at most `$3`, locked `FOR UPDATE SKIP
/// LOCKED` so that two nodes claiming at once take different rows, and
/// when `$5` (the node decides digests) only rows the digest decision
/// already reached (`due_at` set: a row is never sent on its own while its
/// destination's digest would hold it); each
/// gets `claimed_by = $2` and `claim_until = now() + $4 ms` (the
/// database's clock). Returns the claimed rows with `columns`.
pub(crate) fn claim_sql(table: &str, group: &str, columns: &str) -> String {
    format!(
        "UPDATE {table} SET claimed_by = $2, \
           claim_until = now() + $4::bigint * interval '1 millisecond' \
         WHERE id IN ( \
           SELECT d.id FROM {table} d WHERE d.status = 'pending' \
             AND (d.claim_until IS NULL OR d.claim_until < now()) \
             AND (d.due_at IS NOT NULL OR NOT $5::bool) \
             AND ({group}) IN (SELECT {group} FROM {table} e \
               WHERE e.status = 'pending' AND e.next_attempt_at <= $1) \
           ORDER BY d.id LIMIT $3 FOR UPDATE SKIP LOCKED) \
         RETURNING {columns}"
    )
}

impl PgStore {
    /// Outbox rows, newest first, optionally of one status and one service.
    pub fn notifications(
        &self,
        status: Option<&str>,
        service: Option<&str>,
        limit: usize,
    ) -> Result<Vec<NotificationRecord>, StoreError> {
        let mut sql = format!("SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE true");
        let mut args: Args = Vec::new();
        if let Some(service) = service {
            args.push(Box::new(service.to_string()));
            sql.push_str(&format!(" AND service = ${}", args.len()));
        }
        if let Some(status) = status {
            args.push(Box::new(status.to_string()));
            sql.push_str(&format!(" AND status = ${}", args.len()));
        }
        args.push(Box::new(limit as i64));
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", args.len()));
        let mut l = self.read_conn()?;
        let (c, _) = l.conn().parts();
        row::all(
            &c.query(&sql, &refs(&args)).map_err(pg)?,
            decode_notification,
        )
    }

    /// Mails waiting to be sent (`/metrics`).
    pub fn pending_mail(&self) -> Result<i64, StoreError> {
        let mut l = self.read_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(
            c,
            "SELECT count(*) FROM notifications WHERE status = 'pending'",
        )?;
        Ok(c.query_one(&s, &[]).map_err(pg)?.get(0))
    }

    /// Every pending notification of each service that has one due at
    /// `now`, oldest first (unclaimed: a single node's view; a cluster
    /// node uses [`PgStore::claim_notifications`]).
    pub fn due_notifications(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<Vec<NotificationRecord>, StoreError> {
        let mut l = self.read_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(
            c,
            &format!(
                "SELECT {NOTIFICATION_COLUMNS} FROM notifications \
                 WHERE status = 'pending' AND service_id IN \
                   (SELECT service_id FROM notifications \
                    WHERE status = 'pending' AND next_attempt_at <= $1) \
                 ORDER BY id LIMIT $2"
            ),
        )?;
        row::all(
            &c.query(&s, &[&now, &(limit as i64)]).map_err(pg)?,
            decode_notification,
        )
    }

    /// [`PgStore::due_notifications`] claimed by `node` for [`CLAIM_FOR`]
    /// (`claim_for`): rows claimed by another node and unexpired are left
    /// out, and two nodes claiming at once never get the same row. Once
    /// this node decides digests ([`PgStore::decide_digests`]), only rows
    /// the decision reached are claimed. The
    /// node then delivers them and marks them sent or failed, which ends
    /// the claim.
    pub fn claim_notifications(
        &self,
        node: &str,
        now: i64,
        limit: usize,
        claim_for: Duration,
    ) -> Result<Vec<NotificationRecord>, StoreError> {
        let mut l = self.write_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(
            c,
            &claim_sql("notifications", "service_id", NOTIFICATION_COLUMNS),
        )?;
        let ms = claim_for.as_millis() as i64;
        let decided = self.decides_digests();
        let mut out = row::all(
            &c.query(&s, &[&now, &node, &(limit as i64), &ms, &decided])
                .map_err(pg)?,
            decode_notification,
        )?;
        out.sort_by_key(|n| n.id);
        Ok(out)
    }

    /// Marks notifications sent (the SMTP server accepted the mail); the
    /// claim ends. A row claimed before any digest decision reached it
    /// gets `due_at` = `at`, so its recipients' digest books count it.
    pub fn mark_sent(&self, ids: &[i64], message_id: &str, at: i64) -> Result<(), StoreError> {
        let batch = ids.iter().max().copied();
        let mut l = self.write_conn()?;
        let (c, _) = l.conn().parts();
        c.execute(
            "UPDATE notifications SET status = 'sent', sent_at = $1, message_id = $2, \
             attempts = attempts + 1, last_error = NULL, batch_id = $3, \
             due_at = COALESCE(due_at, $1), \
             claimed_by = NULL, claim_until = NULL WHERE id = ANY($4)",
            &[&at, &message_id, &batch, &ids],
        )
        .map_err(pg)?;
        Ok(())
    }

    /// Records a failed delivery: retry at `next_attempt_at`, or give up;
    /// the claim ends (any node may retry).
    pub fn mark_failed_attempt(
        &self,
        ids: &[i64],
        error: &str,
        next_attempt_at: i64,
        give_up: bool,
    ) -> Result<(), StoreError> {
        let mut l = self.write_conn()?;
        let (c, _) = l.conn().parts();
        c.execute(
            "UPDATE notifications SET attempts = attempts + 1, last_error = $1, \
             next_attempt_at = $2, status = CASE WHEN $3 THEN 'failed' ELSE status END, \
             claimed_by = NULL, claim_until = NULL WHERE id = ANY($4)",
            &[&error, &next_attempt_at, &give_up, &ids],
        )
        .map_err(pg)?;
        Ok(())
    }

    /// Marks pending mail older than `GIVE_UP_UNSENT_MS` `failed` with
    /// `why` as its error. Returns the rows given up.
    pub fn give_up_unsent(&self, now: i64, why: &str) -> Result<usize, StoreError> {
        let mut l = self.write_conn()?;
        let (c, _) = l.conn().parts();
        Ok(c.execute(
            "UPDATE notifications SET status = 'failed', last_error = $1 \
             WHERE status = 'pending' AND created_at < $2",
            &[&why, &(now - GIVE_UP_UNSENT_MS)],
        )
        .map_err(pg)? as usize)
    }

    /// The outbox part of [`PgStore::prune`], mail and channel rows alike.
    pub(crate) fn prune_outbox(&self, now: i64) -> Result<(), StoreError> {
        let (done, failed) = (now - RETAIN_EVENTS_MS, now - RETAIN_FAILED_MAIL_MS);
        let mut l = self.write_conn()?;
        let (c, _) = l.conn().parts();
        for table in ["notifications", "deliveries"] {
            c.execute(
                &format!(
                    "DELETE FROM {table} WHERE (status != 'pending' AND created_at < $1) \
                     OR (status = 'failed' AND created_at < $2)"
                ),
                &[&done, &failed],
            )
            .map_err(pg)?;
        }
        Ok(())
    }
}
