//! Silences in SQLite, and the release of held notifications when a
//! silence ends (SPEC section 14).

use super::decode::{self, Fields, Record};
use super::{lock, SqliteStore, StoreError};
use crate::silences::{Silence, Window};
use healthchecker_core::policy::Weekly;
use rusqlite::{params, Connection, OptionalExtension};

impl Record for Silence {
    const TABLE: &'static str = "silences";

    /// Decodes a `silences` row selected with `SILENCE_COLUMNS`: a list
    /// that is not JSON or a weekly window that does not parse is corrupt.
    fn decode(f: &Fields<'_, '_>) -> rusqlite::Result<Silence> {
        let window = match f.get::<Option<String>>("weekly")? {
            Some(text) => Window::Weekly {
                weekly: Weekly::parse(&text)
                    .map_err(|_| f.corrupt("weekly", format!("bad window {text:?}")))?,
                text,
                tz: f
                    .get::<Option<String>>("tz")?
                    .unwrap_or_else(|| "UTC".into()),
            },
            None => Window::OneOff {
                starts_at: f.get("starts_at")?,
                ends_at: f.get("ends_at")?,
            },
        };
        Ok(Silence {
            id: f.id(),
            services: f.json("services")?,
            tags: f.json("tags")?,
            window,
            comment: f.get("comment")?,
        })
    }
}

/// The columns [`Silence`]'s decoder reads.
const SILENCE_COLUMNS: &str = "id, services, tags, starts_at, ends_at, weekly, tz, comment";

/// Releases or suppresses the due `held` rows of `table`, per service:
/// released (pending now, coalesced into one message) when the service's
/// state differs from the state before its first held row; suppressed when
/// it came back to it. Returns (released, suppressed) row counts.
fn release_table(tx: &Connection, table: &str, now: i64) -> rusqlite::Result<(usize, usize)> {
    let services: Vec<(i64, String, Option<String>)> = tx
        .prepare(&format!(
            "SELECT h.service_id, \
               (SELECT from_state FROM {table} f WHERE f.service_id = h.service_id \
                AND f.status = 'held' ORDER BY f.id LIMIT 1), \
               (SELECT state FROM services s WHERE s.id = h.service_id) \
             FROM (SELECT DISTINCT service_id FROM {table} \
                   WHERE status = 'held' AND next_attempt_at <= ?1) h"
        ))?
        .query_map([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let (mut released, mut suppressed) = (0, 0);
    for (id, before, current) in services {
        // A parent still failing: keep holding, one own check at a time.
        let parent: Option<(String, String)> = tx
            .query_row(
                "SELECT p.name, p.state FROM services p WHERE p.state IN ('degraded', 'unhealthy') \
                 AND p.name IN (SELECT value FROM json_each( \
                   (SELECT depends_on FROM services WHERE id = ?1))) ORDER BY p.name LIMIT 1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((parent, state)) = parent {
            let why = match state.as_str() {
                "unhealthy" => format!("suppressed: parent {parent} is unhealthy"),
                _ => format!("held: parent {parent} is {state}"),
            };
            tx.execute(
                &format!(
                    "UPDATE {table} SET last_error = ?1, next_attempt_at = ?2 + 1000 * \
                     (SELECT interval FROM services WHERE id = ?3) \
                     WHERE service_id = ?3 AND status = 'held' AND next_attempt_at <= ?2"
                ),
                params![why, now, id],
            )?;
            continue;
        }
        // Unknown and healthy are both "not failing": a service that
        // failed and came back to either has nothing to announce.
        let ok = |s: &str| if s == "unknown" { "healthy" } else { s }.to_string();
        if current.as_deref().map(ok) == Some(ok(&before)) {
            suppressed += tx.execute(
                &format!(
                    "UPDATE {table} SET status = 'suppressed', \
                     last_error = 'held (silence or dependency): back to ' || ?1 || ' at its end' \
                     WHERE service_id = ?2 AND status = 'held' AND next_attempt_at <= ?3"
                ),
                params![before, id, now],
            )?;
        } else {
            released += tx.execute(
                &format!(
                    "UPDATE {table} SET status = 'pending', next_attempt_at = ?1 \
                     WHERE service_id = ?2 AND status = 'held' AND next_attempt_at <= ?1"
                ),
                params![now, id],
            )?;
        }
    }
    Ok((released, suppressed))
}

impl SqliteStore {
    /// The dependents of `parent` that are failing now, by name: its
    /// message lists them (SPEC section 14).
    pub fn failing_dependents(&self, parent: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.read_conn();
        let mut stmt = conn.prepare_cached(
            "SELECT name FROM services WHERE state IN ('degraded', 'unhealthy') \
             AND EXISTS (SELECT 1 FROM json_each(services.depends_on) WHERE value = ?1) \
             ORDER BY name LIMIT 1000",
        )?;
        let rows = stmt.query_map([parent], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every service's parents (`depends_on`), by name.
    pub fn dependency_graph(
        &self,
    ) -> Result<std::collections::BTreeMap<String, Vec<String>>, StoreError> {
        let conn = self.read_conn();
        let mut stmt = conn.prepare_cached("SELECT id, name, depends_on FROM services")?;
        let rows = stmt.query_map([], |r| {
            let f = Fields::new(r, None, "services")?;
            Ok((f.get("name")?, f.json("depends_on")?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stores a new silence; returns its id.
    pub fn put_silence(&self, s: &Silence, now: i64) -> Result<i64, StoreError> {
        let (starts, ends, weekly, tz) = match &s.window {
            Window::OneOff { starts_at, ends_at } => (Some(*starts_at), Some(*ends_at), None, None),
            Window::Weekly { text, tz, .. } => (None, None, Some(text.clone()), Some(tz.clone())),
        };
        let conn = lock(&self.writer);
        conn.execute(
            "INSERT INTO silences (services, tags, starts_at, ends_at, weekly, tz, comment, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                serde_json::to_string(&s.services).unwrap_or_else(|_| "[]".into()),
                serde_json::to_string(&s.tags).unwrap_or_else(|_| "[]".into()),
                starts,
                ends,
                weekly,
                tz,
                s.comment,
                now
            ],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Every silence, by id.
    pub fn silences(&self) -> Result<Vec<Silence>, StoreError> {
        let conn = self.read_conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {SILENCE_COLUMNS} FROM silences ORDER BY id"
        ))?;
        Ok(decode::all(&mut stmt, [])?)
    }

    /// Deletes a silence; what it held is released at the next pass
    /// (`next_attempt_at` set to `now`).
    pub fn delete_silence(&self, id: i64, now: i64) -> Result<bool, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        let n = tx.execute("DELETE FROM silences WHERE id = ?1", [id])?;
        if n > 0 {
            for table in ["notifications", "deliveries"] {
                tx.execute(
                    &format!(
                        "UPDATE {table} SET next_attempt_at = MIN(next_attempt_at, ?1) WHERE status = 'held'"
                    ),
                    [now],
                )?;
            }
        }
        tx.commit()?;
        Ok(n > 0)
    }

    /// Releases or suppresses every held notification whose silence has
    /// ended (mail and channel rows alike). Returns (released, suppressed).
    pub fn release_held(&self, now: i64) -> Result<(usize, usize), StoreError> {
        if !self.any_row_at(
            "SELECT 1 FROM notifications WHERE status = 'held' AND next_attempt_at <= ?1 \
             UNION ALL SELECT 1 FROM deliveries WHERE status = 'held' AND next_attempt_at <= ?1 \
             LIMIT 1",
            now,
        )? {
            return Ok((0, 0));
        }
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        let a = release_table(&tx, "notifications", now)?;
        let b = release_table(&tx, "deliveries", now)?;
        tx.commit()?;
        Ok((a.0 + b.0, a.1 + b.1))
    }
}
