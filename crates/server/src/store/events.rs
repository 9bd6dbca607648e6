//! The `events` table: state changes and changes made through the API.

use super::decode::{self, Fields, Record};
use super::{SqliteStore, StoreError};
use healthchecker_core::{HealthState, ServiceId, UnixMs};
use rusqlite::{params, Connection};

/// Events and sent or failed mails are kept this long (the SPEC is silent;
/// 90 days answers "what happened last quarter" and bounds the file).
pub const RETAIN_EVENTS_MS: i64 = 90 * 24 * 3600 * 1000;
/// ...but at most this many per service, the newest (SPEC section 12): a
/// client that flaps a target or pauses and resumes a service in a loop
/// cannot grow the table without bound. Enforced by [`Store::prune`](super::Store::prune).
pub const MAX_EVENTS_PER_SERVICE: i64 = 1000;

/// What an event records (`events.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A state change, caused by a check.
    State,
    /// A new service.
    Registered,
    /// A registration that changed an existing service.
    Updated,
    /// Monitoring paused.
    Paused,
    /// Monitoring resumed.
    Resumed,
    /// The service deleted.
    Deleted,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 6] = [
        EventKind::State,
        EventKind::Registered,
        EventKind::Updated,
        EventKind::Paused,
        EventKind::Resumed,
        EventKind::Deleted,
    ];

    /// The stored and API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::State => "state",
            EventKind::Registered => "registered",
            EventKind::Updated => "updated",
            EventKind::Paused => "paused",
            EventKind::Resumed => "resumed",
            EventKind::Deleted => "deleted",
        }
    }
}

impl std::str::FromStr for EventKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(())
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stored event: a state change or a change made through the API.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// Row id, increasing.
    pub id: i64,
    /// When.
    pub at: UnixMs,
    /// The service.
    pub service_id: ServiceId,
    /// The service's name at the time.
    pub service: String,
    /// What happened.
    pub kind: EventKind,
    /// Previous state (state events).
    pub from: Option<HealthState>,
    /// New state (state events).
    pub to: Option<HealthState>,
    /// The check that caused it (state events).
    pub check_id: Option<i64>,
    /// The check's reason, or what changed.
    pub reason: Option<String>,
}

const EVENT_COLUMNS: &str =
    "id, at, service_id, service, kind, from_state, to_state, check_id, reason";

impl Record for EventRecord {
    const TABLE: &'static str = "events";

    /// Decodes an `events` row selected with [`EVENT_COLUMNS`].
    fn decode(f: &Fields<'_, '_>) -> rusqlite::Result<EventRecord> {
        Ok(EventRecord {
            id: f.id(),
            at: f.get("at")?,
            service_id: f.get("service_id")?,
            service: f.get("service")?,
            kind: f.parse("kind")?,
            from: f.parse_opt("from_state")?,
            to: f.parse_opt("to_state")?,
            check_id: f.get("check_id")?,
            reason: f.get("reason")?,
        })
    }
}

/// Records an event that is not a state change (those the batch writer
/// records with their check); returns its id.
pub(crate) fn insert_event(
    conn: &Connection,
    at: i64,
    service_id: i64,
    service: &str,
    kind: EventKind,
    reason: Option<&str>,
) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO events (at, service_id, service, kind, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![at, service_id, service, kind.as_str(), reason])?;
    Ok(conn.last_insert_rowid())
}

/// The events part of [`Store::prune`]: events older than
/// [`RETAIN_EVENTS_MS`], and all but the newest [`MAX_EVENTS_PER_SERVICE`]
/// of each service (the index on `(service, id)` answers both statements).
pub(crate) fn prune_events(conn: &Connection, now: i64) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM events WHERE at < ?1", [now - RETAIN_EVENTS_MS])?;
    let crowded: Vec<String> = conn
        .prepare("SELECT service FROM events GROUP BY service HAVING COUNT(*) > ?1")?
        .query_map([MAX_EVENTS_PER_SERVICE], |r| r.get("service"))?
        .collect::<Result<_, _>>()?;
    for service in crowded {
        conn.execute(
            "DELETE FROM events WHERE service = ?1 AND id < \
             (SELECT id FROM events WHERE service = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            params![service, MAX_EVENTS_PER_SERVICE - 1],
        )?;
    }
    Ok(())
}

impl SqliteStore {
    /// The newest `limit` events, newest first, optionally of one service
    /// (then read through the index on `(service, id)`: the cost does not
    /// grow with other services' events).
    pub fn events(
        &self,
        service: Option<&str>,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let conn = self.read_conn();
        let rows = match service {
            Some(s) => {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE service = ?1 ORDER BY id DESC LIMIT ?2"
                ))?;
                decode::all(&mut stmt, params![s, limit as i64])?
            }
            None => {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events ORDER BY id DESC LIMIT ?1"
                ))?;
                decode::all(&mut stmt, params![limit as i64])?
            }
        };
        Ok(rows)
    }
}
