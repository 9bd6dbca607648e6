//! The mail outbox, `notifications`: rows are inserted by the batch writer
//! with their state event (store/writer.rs); this module reads the due
//! ones, records each delivery attempt, and lists and prunes them. The
//! channel outbox (`deliveries`) is store/channels.rs.

use super::decode::{self, Announced, Attempts, Fields, Record};
use super::events::RETAIN_EVENTS_MS;
use super::{lock, SqliteStore, StoreError};
use healthchecker_core::{HealthState, ServiceId};
use rusqlite::{params, Connection, ToSql};

/// Mails given up on (`failed`) are kept this long, for the operator to see
/// why, then pruned: an SMTP server that refuses for weeks must not fill
/// the file.
pub const RETAIN_FAILED_MAIL_MS: i64 = 7 * 24 * 3600 * 1000;
/// Pending mail this old is given up on when no sender runs (SMTP not
/// configured): the same day the sender itself allows a failing server.
pub const GIVE_UP_UNSENT_MS: i64 = 24 * 3600 * 1000;

/// Where an outbox row stands (`notifications.status`; the channel
/// outbox's rows use the same words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotificationStatus {
    /// Waiting for its next attempt.
    Pending,
    /// Held by a silence or a failing parent until `next_attempt_at`.
    Held,
    /// The server accepted it.
    Sent,
    /// Given up on (see `last_error`).
    Failed,
    /// Dropped at the end of a silence: the service came back to the state
    /// it had before.
    Suppressed,
    /// Folded into a digest message instead of being sent on its own.
    Digested,
}

impl NotificationStatus {
    /// Every status.
    pub const ALL: [NotificationStatus; 6] = [
        NotificationStatus::Pending,
        NotificationStatus::Held,
        NotificationStatus::Sent,
        NotificationStatus::Failed,
        NotificationStatus::Suppressed,
        NotificationStatus::Digested,
    ];

    /// The stored and API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationStatus::Pending => "pending",
            NotificationStatus::Held => "held",
            NotificationStatus::Sent => "sent",
            NotificationStatus::Failed => "failed",
            NotificationStatus::Suppressed => "suppressed",
            NotificationStatus::Digested => "digested",
        }
    }
}

impl std::str::FromStr for NotificationStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        NotificationStatus::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(())
    }
}

impl std::fmt::Display for NotificationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the mail outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationRecord {
    /// Row id.
    pub id: i64,
    /// The state event it announces.
    pub event_id: i64,
    /// The service.
    pub service_id: ServiceId,
    /// The service's name.
    pub service: String,
    /// When the event happened (Unix ms).
    pub created_at: i64,
    /// Previous state.
    pub from: HealthState,
    /// New state.
    pub to: HealthState,
    /// The reason of the check that caused it.
    pub reason: Option<String>,
    /// The target URL, for the mail.
    pub target: String,
    /// Recipient addresses.
    pub recipients: Vec<String>,
    /// When the previous state began (Unix ms).
    pub previous_since: Option<i64>,
    /// Where it stands.
    pub status: NotificationStatus,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// Earliest next attempt (Unix ms).
    pub next_attempt_at: i64,
    /// The last SMTP error, or why it is not sent.
    pub last_error: Option<String>,
    /// When the SMTP server accepted it.
    pub sent_at: Option<i64>,
    /// The mail's Message-ID once built.
    pub message_id: Option<String>,
}

/// The columns [`NotificationRecord`]'s decoder reads.
pub(crate) const NOTIFICATION_COLUMNS: &str =
    "id, event_id, service_id, service, created_at, from_state, \
    to_state, reason, target, recipients, previous_since, status, attempts, next_attempt_at, \
    last_error, sent_at, message_id";

impl Record for NotificationRecord {
    const TABLE: &'static str = "notifications";

    /// Decodes a `notifications` row selected with [`NOTIFICATION_COLUMNS`].
    fn decode(f: &Fields<'_, '_>) -> rusqlite::Result<NotificationRecord> {
        let a = Announced::decode(f)?;
        let t = Attempts::decode(f)?;
        Ok(NotificationRecord {
            id: f.id(),
            event_id: f.get("event_id")?,
            service_id: a.service_id,
            service: a.service,
            created_at: a.created_at,
            from: a.from,
            to: a.to,
            reason: a.reason,
            target: f.get("target")?,
            recipients: f.json("recipients")?,
            previous_since: f.get("previous_since")?,
            status: f.parse("status")?,
            attempts: t.attempts,
            next_attempt_at: t.next_attempt_at,
            last_error: t.last_error,
            sent_at: t.sent_at,
            message_id: f.get("message_id")?,
        })
    }
}

/// The listing query of [`Store::notifications`] and its parameters: with
/// a service, read through the index on `(service, id)` (schema migration
/// 9), so one service's rows cost the same however many others there are.
pub(crate) fn list_sql<'a>(
    status: Option<&'a str>,
    service: Option<&'a str>,
    limit: i64,
) -> (String, Vec<Box<dyn ToSql + 'a>>) {
    let mut sql = format!("SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE 1=1");
    let mut args: Vec<Box<dyn ToSql + 'a>> = Vec::new();
    if let Some(service) = service {
        args.push(Box::new(service));
        sql.push_str(&format!(" AND service = ?{}", args.len()));
    }
    if let Some(status) = status {
        args.push(Box::new(status));
        sql.push_str(&format!(" AND status = ?{}", args.len()));
    }
    args.push(Box::new(limit));
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ?{}", args.len()));
    (sql, args)
}

/// The outbox part of [`Store::prune`]: finished mails older than
/// [`RETAIN_EVENTS_MS`], given-up ones older than [`RETAIN_FAILED_MAIL_MS`];
/// the channel outbox's rows alike.
pub(crate) fn prune_outbox(conn: &Connection, now: i64) -> rusqlite::Result<()> {
    let (done, failed) = (now - RETAIN_EVENTS_MS, now - RETAIN_FAILED_MAIL_MS);
    for table in ["notifications", "deliveries"] {
        conn.execute(
            &format!(
                "DELETE FROM {table} WHERE (status != 'pending' AND created_at < ?1) \
                 OR (status = 'failed' AND created_at < ?2)"
            ),
            [done, failed],
        )?;
    }
    Ok(())
}

impl SqliteStore {
    /// Outbox rows, newest first, optionally of one status (`pending`,
    /// `sent`, ...: see [`NotificationStatus`]) and one service.
    pub fn notifications(
        &self,
        status: Option<&str>,
        service: Option<&str>,
        limit: usize,
    ) -> Result<Vec<NotificationRecord>, StoreError> {
        let (sql, args) = list_sql(status, service, limit as i64);
        let conn = self.read_conn();
        let mut stmt = conn.prepare_cached(&sql)?;
        Ok(decode::all(&mut stmt, rusqlite::params_from_iter(args))?)
    }

    /// Mails waiting to be sent (`/metrics`).
    pub fn pending_mail(&self) -> Result<i64, StoreError> {
        let conn = self.read_conn();
        let n = conn
            .prepare_cached("SELECT COUNT(*) AS n FROM notifications WHERE status = 'pending'")?
            .query_row([], |r| r.get("n"))?;
        Ok(n)
    }

    /// Every pending notification of each service that has one due at
    /// `now`, oldest first. A service's pending rows always travel together
    /// (one mail), so a retried older row can never overtake a newer state.
    /// Once the store decides digests, only decided rows are read
    /// ([`SqliteStore::decides_digests`]).
    pub fn due_notifications(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<Vec<NotificationRecord>, StoreError> {
        let conn = self.read_conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications \
             WHERE status = 'pending' AND (due_at IS NOT NULL OR NOT ?3) AND service_id IN \
               (SELECT service_id FROM notifications WHERE status = 'pending' AND next_attempt_at <= ?1) \
             ORDER BY id LIMIT ?2"
        ))?;
        let decided = self.decides_digests();
        Ok(decode::all(&mut stmt, params![now, limit as i64, decided])?)
    }

    /// Marks notifications sent (the SMTP server accepted the mail).
    pub fn mark_sent(&self, ids: &[i64], message_id: &str, at: i64) -> Result<(), StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE notifications SET status = 'sent', sent_at = ?1, message_id = ?2, \
                 attempts = attempts + 1, last_error = NULL, batch_id = ?3 WHERE id = ?4",
            )?;
            let batch = ids.iter().max().copied();
            for id in ids {
                stmt.execute(params![at, message_id, batch, id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a failed delivery: retry at `next_attempt_at`, or give up.
    pub fn mark_failed_attempt(
        &self,
        ids: &[i64],
        error: &str,
        next_attempt_at: i64,
        give_up: bool,
    ) -> Result<(), StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE notifications SET attempts = attempts + 1, last_error = ?1, \
                 next_attempt_at = ?2, status = CASE WHEN ?3 THEN 'failed' ELSE status END WHERE id = ?4",
            )?;
            for id in ids {
                stmt.execute(params![error, next_attempt_at, give_up, id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Marks pending mail older than [`GIVE_UP_UNSENT_MS`] `failed` with
    /// `why` as its error: for a daemon without a sender (SMTP not
    /// configured), whose outbox would otherwise only grow. [`Store::prune`]
    /// removes it after [`RETAIN_FAILED_MAIL_MS`]. Returns the rows given up.
    pub fn give_up_unsent(&self, now: i64, why: &str) -> Result<usize, StoreError> {
        let conn = lock(&self.writer);
        Ok(conn.execute(
            "UPDATE notifications SET status = 'failed', last_error = ?1 \
             WHERE status = 'pending' AND created_at < ?2",
            params![why, now - GIVE_UP_UNSENT_MS],
        )?)
    }
}
