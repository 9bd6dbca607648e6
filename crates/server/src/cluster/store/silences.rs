//! Silences and dependencies on PostgreSQL, and the release of held
//! notifications when a silence ends, as `store/silences.rs`.

use super::row::{self, Fields};
use super::{pg, PgStore};
use crate::silences::{Silence, Window};
use crate::store::StoreError;
use healthchecker_core::policy::Weekly;
use postgres::{GenericClient, Row};

const SILENCE_COLUMNS: &str = "id, services, tags, starts_at, ends_at, weekly, tz, comment";

fn decode_silence(r: &Row) -> Result<Silence, StoreError> {
    let f = Fields::new(r, "silences")?;
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
            starts_at: f
                .get::<Option<i64>>("starts_at")?
                .ok_or_else(|| f.corrupt("starts_at", "missing"))?,
            ends_at: f
                .get::<Option<i64>>("ends_at")?
                .ok_or_else(|| f.corrupt("ends_at", "missing"))?,
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

/// Releases or suppresses the due `held` rows of `table`, per service, as
/// the SQLite store's `release_table`. Returns (released, suppressed).
fn release_table(
    tx: &mut impl GenericClient,
    table: &str,
    now: i64,
) -> Result<(usize, usize), StoreError> {
    let services: Vec<(i64, String, Option<String>)> = tx
        .query(
            &format!(
                "SELECT h.service_id, \
                   (SELECT from_state FROM {table} f WHERE f.service_id = h.service_id \
                    AND f.status = 'held' ORDER BY f.id LIMIT 1), \
                   (SELECT state FROM services s WHERE s.id = h.service_id) \
                 FROM (SELECT DISTINCT service_id FROM {table} \
                       WHERE status = 'held' AND next_attempt_at <= $1) h"
            ),
            &[&now],
        )
        .map_err(pg)?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let (mut released, mut suppressed) = (0, 0);
    for (id, before, current) in services {
        let parent = tx
            .query_opt(
                "SELECT p.name, p.state FROM services p \
                 WHERE p.state IN ('degraded', 'unhealthy') \
                 AND p.name IN (SELECT jsonb_array_elements_text( \
                   (SELECT depends_on FROM services WHERE id = $1)::jsonb)) \
                 ORDER BY p.name COLLATE \"C\" LIMIT 1",
                &[&id],
            )
            .map_err(pg)?
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)));
        if let Some((parent, state)) = parent {
            let why = match state.as_str() {
                "unhealthy" => format!("suppressed: parent {parent} is unhealthy"),
                _ => format!("held: parent {parent} is {state}"),
            };
            tx.execute(
                &format!(
                    "UPDATE {table} SET last_error = $1, next_attempt_at = $2 + 1000 * \
                     (SELECT interval FROM services WHERE id = $3) \
                     WHERE service_id = $3 AND status = 'held' AND next_attempt_at <= $2"
                ),
                &[&why, &now, &id],
            )
            .map_err(pg)?;
            continue;
        }
        let ok = |s: &str| if s == "unknown" { "healthy" } else { s }.to_string();
        if current.as_deref().map(ok) == Some(ok(&before)) {
            suppressed += tx
                .execute(
                    &format!(
                        "UPDATE {table} SET status = 'suppressed', \
                         last_error = 'held (silence or dependency): back to ' || $1 || ' at its end' \
                         WHERE service_id = $2 AND status = 'held' AND next_attempt_at <= $3"
                    ),
                    &[&before, &id, &now],
                )
                .map_err(pg)? as usize;
        } else {
            released += tx
                .execute(
                    &format!(
                        "UPDATE {table} SET status = 'pending', next_attempt_at = $1 \
                         WHERE service_id = $2 AND status = 'held' AND next_attempt_at <= $1"
                    ),
                    &[&now, &id],
                )
                .map_err(pg)? as usize;
        }
    }
    Ok((released, suppressed))
}

impl PgStore {
    /// The dependents of `parent` that are failing now, by name.
    pub fn failing_dependents(&self, parent: &str) -> Result<Vec<String>, StoreError> {
        let mut l = self.read_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(
            c,
            "SELECT name FROM services WHERE state IN ('degraded', 'unhealthy') \
             AND depends_on::jsonb ? $1 ORDER BY name COLLATE \"C\" LIMIT 1000",
        )?;
        Ok(c.query(&s, &[&parent])
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// Every service's parents (`depends_on`), by name.
    pub fn dependency_graph(
        &self,
    ) -> Result<std::collections::BTreeMap<String, Vec<String>>, StoreError> {
        let mut l = self.read_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(c, "SELECT id, name, depends_on FROM services")?;
        c.query(&s, &[])
            .map_err(pg)?
            .iter()
            .map(|r| {
                let f = Fields::new(r, "services")?;
                Ok((f.get("name")?, f.json("depends_on")?))
            })
            .collect()
    }

    /// Stores a new silence; returns its id.
    pub fn put_silence(&self, s: &Silence, now: i64) -> Result<i64, StoreError> {
        let (starts, ends, weekly, tz) = match &s.window {
            Window::OneOff { starts_at, ends_at } => (Some(*starts_at), Some(*ends_at), None, None),
            Window::Weekly { text, tz, .. } => (None, None, Some(text.clone()), Some(tz.clone())),
        };
        let mut l = self.api_conn()?;
        let (c, _) = l.conn().parts();
        Ok(c.query_one(
            "INSERT INTO silences (services, tags, starts_at, ends_at, weekly, tz, comment, \
               created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            &[
                &serde_json::to_string(&s.services).unwrap_or_else(|_| "[]".into()),
                &serde_json::to_string(&s.tags).unwrap_or_else(|_| "[]".into()),
                &starts,
                &ends,
                &weekly,
                &tz,
                &s.comment,
                &now,
            ],
        )
        .map_err(pg)?
        .get(0))
    }

    /// Every silence, by id.
    pub fn silences(&self) -> Result<Vec<Silence>, StoreError> {
        let mut l = self.read_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(
            c,
            &format!("SELECT {SILENCE_COLUMNS} FROM silences ORDER BY id"),
        )?;
        row::all(&c.query(&s, &[]).map_err(pg)?, decode_silence)
    }

    /// Deletes a silence; what it held is released at the next pass.
    pub fn delete_silence(&self, id: i64, now: i64) -> Result<bool, StoreError> {
        let mut l = self.api_conn()?;
        let (c, _) = l.conn().parts();
        let mut tx = c.transaction().map_err(pg)?;
        let n = tx
            .execute("DELETE FROM silences WHERE id = $1", &[&id])
            .map_err(pg)?;
        if n > 0 {
            for table in ["notifications", "deliveries"] {
                tx.execute(
                    &format!(
                        "UPDATE {table} SET next_attempt_at = LEAST(next_attempt_at, $1) \
                         WHERE status = 'held'"
                    ),
                    &[&now],
                )
                .map_err(pg)?;
            }
        }
        tx.commit().map_err(pg)?;
        Ok(n > 0)
    }

    /// Releases or suppresses every held notification whose silence has
    /// ended (mail and channel rows alike). Returns (released, suppressed).
    pub fn release_held(&self, now: i64) -> Result<(usize, usize), StoreError> {
        if !self.any_row_at(
            "SELECT 1 FROM notifications WHERE status = 'held' AND next_attempt_at <= $1 \
             UNION ALL SELECT 1 FROM deliveries WHERE status = 'held' AND next_attempt_at <= $1 \
             LIMIT 1",
            now,
        )? {
            return Ok((0, 0));
        }
        let mut l = self.write_conn()?;
        let (c, _) = l.conn().parts();
        let mut tx = c.transaction().map_err(pg)?;
        let a = release_table(&mut tx, "notifications", now)?;
        let b = release_table(&mut tx, "deliveries", now)?;
        tx.commit().map_err(pg)?;
        Ok((a.0 + b.0, a.1 + b.1))
    }
}
