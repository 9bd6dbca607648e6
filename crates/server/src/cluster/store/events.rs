//! The `events` table on PostgreSQL, as `store/events.rs`.

use super::row::{self, Fields};
use super::{pg, PgStore};
use crate::store::{EventKind, EventRecord, StoreError, MAX_EVENTS_PER_SERVICE, RETAIN_EVENTS_MS};
use healthchecker_core::ServiceId;
use postgres::{GenericClient, Row};

const EVENT_COLUMNS: &str =
    "id, at, service_id, service, kind, from_state, to_state, check_id, reason";

fn decode_event(r: &Row) -> Result<EventRecord, StoreError> {
    let f = Fields::new(r, "events")?;
    Ok(EventRecord {
        id: f.id(),
        at: f.get::<i64>("at")?.into(),
        service_id: ServiceId::new(f.get("service_id")?),
        service: f.get("service")?,
        kind: f.parse("kind")?,
        from: f.parse_opt("from_state")?,
        to: f.parse_opt("to_state")?,
        check_id: f.get("check_id")?,
        reason: f.get("reason")?,
    })
}

/// Records an event that is not a state change (those the batch writer
/// records with their check); returns its id.
pub(crate) fn insert_event(
    tx: &mut impl GenericClient,
    at: i64,
    service_id: i64,
    service: &str,
    kind: EventKind,
    reason: Option<&str>,
) -> Result<i64, StoreError> {
    Ok(tx
        .query_one(
            "INSERT INTO events (at, service_id, service, kind, reason) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[&at, &service_id, &service, &kind.as_str(), &reason],
        )
        .map_err(pg)?
        .get(0))
}

impl PgStore {
    /// The newest `limit` events, newest first, optionally of one service.
    pub fn events(
        &self,
        service: Option<&str>,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let mut l = self.read_conn()?;
        let (c, cache) = l.conn().parts();
        let limit = limit as i64;
        let rows = match service {
            Some(name) => {
                let s = cache.get(
                    c,
                    &format!(
                        "SELECT {EVENT_COLUMNS} FROM events WHERE service = $1 \
                         ORDER BY id DESC LIMIT $2"
                    ),
                )?;
                c.query(&s, &[&name, &limit])
            }
            None => {
                let s = cache.get(
                    c,
                    &format!("SELECT {EVENT_COLUMNS} FROM events ORDER BY id DESC LIMIT $1"),
                )?;
                c.query(&s, &[&limit])
            }
        }
        .map_err(pg)?;
        row::all(&rows, decode_event)
    }

    /// The events part of [`PgStore::prune`]: events older than
    /// `RETAIN_EVENTS_MS`, and all but the newest `MAX_EVENTS_PER_SERVICE`
    /// of each service.
    pub(crate) fn prune_events(&self, now: i64) -> Result<(), StoreError> {
        let mut l = self.write_conn()?;
        let (c, _) = l.conn().parts();
        c.execute(
            "DELETE FROM events WHERE at < $1",
            &[&(now - RETAIN_EVENTS_MS)],
        )
        .map_err(pg)?;
        c.execute(
            "DELETE FROM events e USING ( \
               SELECT service, (SELECT id FROM events x WHERE x.service = g.service \
                 ORDER BY id DESC LIMIT 1 OFFSET $1) AS floor \
               FROM (SELECT service FROM events GROUP BY service HAVING count(*) > $2) g \
             ) c WHERE e.service = c.service AND e.id < c.floor",
            &[&(MAX_EVENTS_PER_SERVICE - 1), &MAX_EVENTS_PER_SERVICE],
        )
        .map_err(pg)?;
        Ok(())
    }
}
