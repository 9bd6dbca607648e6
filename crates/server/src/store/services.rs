//! The `services` table: registration, pause, delete, and reads of one
//! service or a filtered list of them.

use super::decode::{self, Corruption, Fields, Record};
use super::events::{insert_event, EventKind};
use super::pings::new_ping_id;
use super::{lock, SqliteStore, StoreError};
use healthchecker_core::heartbeat::{Heartbeat, DEFAULT_GRACE, DEFAULT_PERIOD};
use healthchecker_core::spec::Target;
use healthchecker_core::{CheckResult, HealthState, Protocol, ServiceId, ServiceSpec};
use rusqlite::{params, OptionalExtension};

/// The last check of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct LastCheck {
    /// When it ran (Unix ms).
    pub at: i64,
    /// Its result.
    pub result: CheckResult,
    /// Why it failed or warned.
    pub reason: Option<String>,
    /// How long it took (µs).
    pub duration_us: i64,
}

/// A stored service: its spec, monitoring status and health.
#[derive(Debug, Clone)]
pub struct ServiceRecord {
    /// Row id, stable for the service's life.
    pub id: ServiceId,
    /// The validated parameters.
    pub spec: ServiceSpec,
    /// Monitoring paused.
    pub paused: bool,
    /// Current health.
    pub state: HealthState,
    /// Consecutive successes.
    pub successes: u32,
    /// Consecutive failures.
    pub failures: u32,
    /// When the current state began (Unix ms).
    pub state_since: i64,
    /// The latest check.
    pub last_check: Option<LastCheck>,
    /// The latest check that found it healthy.
    pub last_healthy_at: Option<i64>,
    /// The reason of the latest warn or fail.
    pub last_failure_reason: Option<String>,
    /// Expiry of the target's certificate (TLS targets).
    pub cert_expires_at: Option<i64>,
    /// First registration (Unix ms).
    pub created_at: i64,
    /// Latest registration or parameter change.
    pub updated_at: i64,
    /// The delivery slot of the latest notification (flap damping).
    pub last_notified_at: Option<i64>,
    /// A heartbeat's ping id (the credential in `/ping/<id>`).
    pub ping_id: Option<String>,
    /// A heartbeat's latest ping of any kind (Unix ms).
    pub last_ping_at: Option<i64>,
    /// A heartbeat's latest success ping (Unix ms): its deadline counts from it.
    pub last_success_ping_at: Option<i64>,
}

/// Filter for listing services.
#[derive(Debug, Clone, Default)]
pub struct ServiceFilter {
    /// Only this state.
    pub state: Option<HealthState>,
    /// Names containing this text (case-insensitive).
    pub name_contains: Option<String>,
    /// At most this many (0: no limit).
    pub limit: usize,
    /// Skip this many (ordered by name).
    pub offset: usize,
    /// Only names after this one (the cursor of a paginated list).
    pub after: Option<String>,
}

impl ServiceFilter {
    /// Appends its state and name conditions to `sql` (a query ending in
    /// `WHERE 1=1`), numbering their parameters after those in `args`:
    /// shared by the API's list and the dashboard's.
    pub(crate) fn push_conditions(
        &self,
        sql: &mut String,
        args: &mut Vec<Box<dyn rusqlite::ToSql>>,
    ) {
        if let Some(st) = self.state {
            args.push(Box::new(st.as_str()));
            sql.push_str(&format!(" AND state = ?{}", args.len()));
        }
        if let Some(q) = self.name_contains.as_ref().filter(|q| !q.is_empty()) {
            let escaped = q
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            args.push(Box::new(format!("%{escaped}%")));
            sql.push_str(&format!(" AND name LIKE ?{} ESCAPE '\\'", args.len()));
        }
    }
}

/// What a registration did.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The stored service after the registration.
    pub record: ServiceRecord,
    /// True for a new name, false for an update of an existing one.
    pub created: bool,
}

/// Services by state (every state, in [`HealthState::ALL`]'s order, paused
/// ones included) and how many are paused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// Each state and its number of services.
    pub by_state: Vec<(HealthState, i64)>,
    /// Services whose monitoring is paused (counted in `by_state` too).
    pub paused: i64,
}

impl StateCounts {
    /// Every service.
    pub fn total(&self) -> i64 {
        self.by_state.iter().map(|(_, n)| n).sum()
    }

    /// Services in `state`.
    pub fn of(&self, state: HealthState) -> i64 {
        self.by_state
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| *n)
    }
}

/// The columns [`ServiceRecord`]'s decoder reads, in the order it reads them (so
/// that each lookup by name finds its column at once: decode.rs).
pub(crate) const SERVICE_COLUMNS: &str = "id, protocol, period, grace, last_check_at, \
    last_result, last_reason, last_duration_us, name, host, port, path, emails, timeout, \
    interval, unhealthy_threshold, healthy_threshold, expected_status, tls_verify, \
    cert_warn_days, channels, tags, depends_on, paused, state, successes, failures, state_since, \
    last_healthy_at, last_failure_reason, cert_expires_at, created_at, updated_at, \
    last_notified_at, ping_id, last_ping_at, last_success_ping_at";

impl Record for ServiceRecord {
    const TABLE: &'static str = "services";

    /// Decodes a `services` row selected with [`SERVICE_COLUMNS`].
    fn decode(f: &Fields<'_, '_>) -> rusqlite::Result<ServiceRecord> {
        let protocol: Protocol = f.parse("protocol")?;
        // A heartbeat row written before its period and grace existed has the
        // defaults (a NULL is the absence of a value, not a bad one).
        let heartbeat = match protocol {
            Protocol::Heartbeat => Some(Heartbeat {
                period: f.get::<Option<u32>>("period")?.unwrap_or(DEFAULT_PERIOD),
                grace: f.get::<Option<u32>>("grace")?.unwrap_or(DEFAULT_GRACE),
            }),
            _ => None,
        };
        let last_check = match f.get::<Option<i64>>("last_check_at")? {
            Some(at) => Some(LastCheck {
                at,
                result: f.parse("last_result")?,
                reason: f.get("last_reason")?,
                duration_us: f.get::<Option<i64>>("last_duration_us")?.unwrap_or(0),
            }),
            None => None,
        };
        Ok(ServiceRecord {
            id: ServiceId::new(f.id()),
            spec: ServiceSpec {
                name: f.get("name")?,
                target: Target {
                    protocol,
                    host: f.get("host")?,
                    port: f.get("port")?,
                    path: f.get("path")?,
                },
                emails: f.json_list("emails")?,
                timeout: f.get("timeout")?,
                interval: f.get("interval")?,
                unhealthy_threshold: f.get("unhealthy_threshold")?,
                healthy_threshold: f.get("healthy_threshold")?,
                expected_status: f.parse("expected_status")?,
                tls_verify: f.get("tls_verify")?,
                cert_warn_days: f.get("cert_warn_days")?,
                heartbeat,
                channels: f.json("channels")?,
                tags: f.json("tags")?,
                depends_on: f.json("depends_on")?,
            },
            paused: f.get("paused")?,
            state: f.parse("state")?,
            successes: f.get("successes")?,
            failures: f.get("failures")?,
            state_since: f.get("state_since")?,
            last_check,
            last_healthy_at: f.get("last_healthy_at")?,
            last_failure_reason: f.get("last_failure_reason")?,
            cert_expires_at: f.get("cert_expires_at")?,
            created_at: f.get("created_at")?,
            updated_at: f.get("updated_at")?,
            last_notified_at: f.get("last_notified_at")?,
            ping_id: f.get("ping_id")?,
            last_ping_at: f.get("last_ping_at")?,
            last_success_ping_at: f.get("last_success_ping_at")?,
        })
    }
}

/// A JSON list for a text column.
fn json_list<T: ToString>(items: &[T]) -> String {
    let items: Vec<String> = items.iter().map(T::to_string).collect();
    serde_json::to_string(&items).unwrap_or_else(|_| "[]".into())
}

/// One service by row id, on `conn`.
fn service_by_id(conn: &rusqlite::Connection, id: i64) -> rusqlite::Result<ServiceRecord> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {SERVICE_COLUMNS} FROM services WHERE id = ?1"
    ))?;
    decode::one(&mut stmt, [id])?.ok_or(rusqlite::Error::QueryReturnedNoRows)
}

impl SqliteStore {
    /// Registers a new service or updates an existing one of the same name,
    /// keeping its state, counters and history. Records a `registered` or
    /// `updated` event. Committed before it returns.
    pub fn register(
        &self,
        spec: &ServiceSpec,
        token_hash: &str,
        now: i64,
        max_services: usize,
    ) -> Result<Registered, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        let existing: Option<i64> = tx
            .query_row(
                "SELECT id FROM services WHERE name = ?1",
                [&spec.name],
                |r| r.get("id"),
            )
            .optional()?;
        if existing.is_none() {
            let n: i64 = tx.query_row("SELECT COUNT(*) AS n FROM services", [], |r| r.get("n"))?;
            if n as usize >= max_services {
                return Err(StoreError::Limit(max_services));
            }
        }
        // A heartbeat keeps its ping id across re-registrations (the job's
        // ping URL stays valid); a new one gets 128 random bits.
        let new_ping_id = match spec.heartbeat {
            Some(_) => Some(new_ping_id()?),
            None => None,
        };
        let t = &spec.target;
        let values = params![
            spec.name,
            t.protocol.as_str(),
            t.host,
            t.port,
            t.path,
            json_list(&spec.emails),
            spec.timeout,
            spec.interval,
            spec.unhealthy_threshold,
            spec.healthy_threshold,
            spec.expected_status.to_string(),
            spec.tls_verify,
            spec.cert_warn_days,
            token_hash,
            now,
            spec.heartbeat.map(|h| h.period),
            spec.heartbeat.map(|h| h.grace),
            new_ping_id,
        ];
        let (id, created) = match existing {
            Some(id) => {
                tx.execute(
                    "UPDATE services SET name=?1, protocol=?2, host=?3, port=?4, path=?5, emails=?6, \
                     timeout=?7, interval=?8, unhealthy_threshold=?9, healthy_threshold=?10, \
                     expected_status=?11, tls_verify=?12, cert_warn_days=?13, token_hash=?14, \
                     updated_at=?15, period=?16, grace=?17, \
                     ping_id = CASE WHEN ?18 IS NULL THEN NULL ELSE COALESCE(ping_id, ?18) END \
                     WHERE id=?19",
                    rusqlite::params_from_iter(values.iter().copied().chain([&id as &dyn rusqlite::ToSql])),
                )?;
                (id, false)
            }
            None => {
                // A new id is above every id ever deleted: a result still
                // queued or in flight for a deleted service, its pending
                // mail or its scheduler entry can never be taken for the
                // new service's (SQLite alone reuses the highest id).
                tx.execute(
                    "INSERT INTO services (id, name, protocol, host, port, path, emails, timeout, \
                     interval, unhealthy_threshold, healthy_threshold, expected_status, tls_verify, \
                     cert_warn_days, token_hash, state_since, created_at, updated_at, period, grace, \
                     ping_id) \
                     VALUES (1 + MAX((SELECT COALESCE(MAX(id), 0) FROM services), \
                       COALESCE((SELECT value FROM meta WHERE key = 'retired_service_id'), 0)), \
                     ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?15, ?15, \
                     ?16, ?17, ?18)",
                    values,
                )?;
                (tx.last_insert_rowid(), true)
            }
        };
        tx.execute(
            "UPDATE services SET channels = ?1, tags = ?2, depends_on = ?3 WHERE id = ?4",
            params![
                json_list(&spec.channels),
                json_list(&spec.tags),
                json_list(&spec.depends_on),
                id
            ],
        )?;
        let kind = if created {
            EventKind::Registered
        } else {
            EventKind::Updated
        };
        insert_event(&tx, now, id, &spec.name, kind, Some(&spec.target.url()))?;
        let mut record = service_by_id(&tx, id)?;
        tx.commit()?;
        self.overlay(std::slice::from_mut(&mut record));
        Ok(Registered { record, created })
    }

    /// Pauses or resumes a service; `None` if the name is unknown. Records a
    /// `paused`/`resumed` event when the flag changes.
    pub fn set_paused(
        &self,
        name: &str,
        paused: bool,
        now: i64,
    ) -> Result<Option<ServiceRecord>, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        let Some((id, was)): Option<(i64, bool)> = tx
            .query_row(
                "SELECT id, paused FROM services WHERE name = ?1",
                [name],
                |r| Ok((r.get("id")?, r.get("paused")?)),
            )
            .optional()?
        else {
            return Ok(None);
        };
        if was != paused {
            tx.execute(
                "UPDATE services SET paused = ?1, updated_at = ?2 WHERE id = ?3",
                params![paused, now, id],
            )?;
            let kind = if paused {
                EventKind::Paused
            } else {
                EventKind::Resumed
            };
            insert_event(&tx, now, id, name, kind, None)?;
        }
        let mut rec = service_by_id(&tx, id)?;
        tx.commit()?;
        self.overlay(std::slice::from_mut(&mut rec));
        Ok(Some(rec))
    }

    /// Deletes a service and its check history; events and the outbox stay.
    /// Returns its id, or `None` if the name is unknown.
    pub fn delete(&self, name: &str, now: i64) -> Result<Option<ServiceId>, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        let Some(id): Option<i64> = tx
            .query_row("SELECT id FROM services WHERE name = ?1", [name], |r| {
                r.get("id")
            })
            .optional()?
        else {
            return Ok(None);
        };
        // The history is the chain from the newest check.
        let fresh = self
            .heads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget(ServiceId::new(id));
        tx.execute(
            "WITH RECURSIVE h(id) AS ( \
               SELECT COALESCE(?1, (SELECT last_check_id FROM services WHERE id = ?2)) \
               UNION ALL \
               SELECT c.prev_id FROM h JOIN checks c ON c.id = h.id WHERE c.prev_id IS NOT NULL) \
             DELETE FROM checks WHERE id IN (SELECT id FROM h)",
            params![fresh.map(|h| h.check_id), id],
        )?;
        tx.execute("DELETE FROM services WHERE id = ?1", [id])?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('retired_service_id', ?1) \
             ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
            [id],
        )?;
        // Its roll-ups age out with their retention (ids are never
        // reused; a delete by service would scan the period-keyed tables).
        insert_event(&tx, now, id, name, EventKind::Deleted, None)?;
        tx.commit()?;
        Ok(Some(ServiceId::new(id)))
    }

    /// Every service, for the scheduler at start-up.
    pub fn load_all(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        self.list_services(&ServiceFilter::default())
    }

    /// Services matching `filter`, ordered by name.
    pub fn list_services(&self, filter: &ServiceFilter) -> Result<Vec<ServiceRecord>, StoreError> {
        let conn = self.read_conn();
        let mut sql = format!("SELECT {SERVICE_COLUMNS} FROM services WHERE 1=1");
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
        filter.push_conditions(&mut sql, &mut args);
        if let Some(after) = &filter.after {
            args.push(Box::new(after.clone()));
            sql.push_str(&format!(" AND name > ?{}", args.len()));
        }
        sql.push_str(" ORDER BY name");
        if filter.limit > 0 || filter.offset > 0 {
            let limit = if filter.limit == 0 {
                -1
            } else {
                filter.limit as i64
            };
            sql.push_str(&format!(" LIMIT {limit} OFFSET {}", filter.offset));
        }
        let mut stmt = conn.prepare(&sql)?;
        let mut out = decode::all(&mut stmt, rusqlite::params_from_iter(args.iter()))?;
        self.overlay(&mut out);
        Ok(out)
    }

    /// Shows in `records` what the batch writer knows of their services
    /// but their rows do not show yet (last check, counters, state: its
    /// in-memory folds, store/writer.rs). Every read of whole service rows
    /// goes through it.
    pub(crate) fn overlay(&self, records: &mut [ServiceRecord]) {
        let overlay = self.heads.lock().unwrap_or_else(|e| e.into_inner());
        for r in records {
            overlay.apply(r);
        }
    }

    /// Services by state and the number paused, in one pass over the table.
    pub fn count_by_state(&self) -> Result<StateCounts, StoreError> {
        let conn = self.read_conn();
        let mut stmt = conn.prepare_cached(
            "SELECT state, paused, COUNT(*) AS n FROM services GROUP BY state, paused",
        )?;
        let mut out = StateCounts {
            by_state: HealthState::ALL.iter().map(|s| (*s, 0)).collect(),
            paused: 0,
        };
        let rows = stmt.query_map([], |r| {
            let f = Fields::unnamed(r, "services");
            Ok((
                f.parse::<HealthState>("state")?,
                f.get::<bool>("paused")?,
                f.get::<i64>("n")?,
            ))
        })?;
        for row in rows {
            let (state, paused, n) = row?;
            if paused {
                out.paused += n;
            }
            match out.by_state.iter_mut().find(|(s, _)| *s == state) {
                Some(e) => e.1 += n,
                None => {
                    return Err(StoreError::Corrupt(Corruption {
                        table: "services".into(),
                        row: None,
                        column: "state".into(),
                        detail: format!("state {state:?} is not counted"),
                    }))
                }
            }
        }
        Ok(out)
    }

    /// One service by name.
    pub fn get_service(&self, name: &str) -> Result<Option<ServiceRecord>, StoreError> {
        let conn = self.read_conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {SERVICE_COLUMNS} FROM services WHERE name = ?1"
        ))?;
        let mut rec = decode::one(&mut stmt, [name])?;
        self.overlay(rec.as_mut_slice());
        Ok(rec)
    }

    /// The stored token hash of a service (for the token auth mode).
    pub fn token_hash(&self, name: &str) -> Result<Option<String>, StoreError> {
        let conn = self.read_conn();
        Ok(conn
            .query_row(
                "SELECT token_hash FROM services WHERE name = ?1",
                [name],
                |r| r.get("token_hash"),
            )
            .optional()?)
    }
}
