//! The `services` table on PostgreSQL: registration, pause, delete, and
//! reads of one service or a filtered list, as `store/services.rs`.

use super::events::insert_event;
use super::pings::new_ping_id;
use super::row::{self, Fields};
use super::{pg, PgStore};
use crate::store::{
    EventKind, LastCheck, Registered, ServiceFilter, ServiceRecord, StateCounts, StoreError,
};
use healthchecker_core::cluster::Bucket;
use healthchecker_core::heartbeat::{Heartbeat, DEFAULT_GRACE, DEFAULT_PERIOD};
use healthchecker_core::spec::Target;
use healthchecker_core::{HealthState, Protocol, ServiceId, ServiceSpec};
use postgres::types::ToSql;
use postgres::Row;

/// The columns of the `services` row that [`SERVICE_COLUMNS`] selects.
macro_rules! service_fields {
    () => {
        "id, protocol, period, grace, last_check_at, \
    last_result, last_reason, last_duration_us, name, host, port, path, emails, timeout, \
    interval, unhealthy_threshold, healthy_threshold, expected_status, tls_verify, \
    cert_warn_days, channels, tags, depends_on, paused, state, successes, failures, state_since, \
    last_healthy_at, last_failure_reason, cert_expires_at, created_at, updated_at, \
    last_notified_at, ping_id, last_ping_at, last_success_ping_at, last_check_id"
    };
}

/// The newest check of `services.id`, as [`SERVICE_COLUMNS`]' `newest`.
macro_rules! newest {
    () => {
        "coalesce((SELECT ARRAY[c.id::text, c.at::text, c.result, c.reason, c.duration_us::text, \
       c.streak::text] FROM checks c WHERE c.service_id = services.id \
       AND c.slot = (SELECT slot FROM check_slots WHERE current) \
     ORDER BY c.id DESC LIMIT 1), \
    (SELECT ARRAY[c.id::text, c.at::text, c.result, c.reason, c.duration_us::text, \
       c.streak::text] FROM checks c WHERE c.service_id = services.id \
     ORDER BY c.id DESC LIMIT 1))"
    };
}

/// The columns [`decode_service`] reads (from `services`, unaliased):
/// the row, and its newest check (`newest`: id, time, result, reason,
/// duration and streak as text), since the writer writes a service's
/// copy of its last check and counters once per period
/// (cluster/store/writer.rs). A scalar subquery rather than a join, so
/// that PostgreSQL evaluates it after `ORDER BY … LIMIT`, for the rows of
/// the page only. It probes the current slot of `checks` first (one
/// index: PostgreSQL skips the other partitions at run time, once the
/// slot is known; they are still locked):
/// a service's checks there are newer than all its others, since the
/// writer takes the slot with the batch's ids and a service's checks are
/// written in order. Only a service with no check in the current slot
/// (a slot just turned, a paused service) is probed in every slot, a
/// merge of nine indexes (`EXPLAIN ANALYZE` of the probe alone, a page of
/// 101 services, five slots holding rows: 4.3 ms merged, 1.3 ms in the
/// current slot).
pub(crate) const SERVICE_COLUMNS: &str = concat!(service_fields!(), ", ", newest!(), " AS newest");

/// A registration as one statement ([`PgStore::register`]): the upsert
/// on the name, its bucket's count when the row is new, its `registered`
/// or `updated` event, and the row as [`decode_service`] reads it.
const REGISTER: &str = concat!(
    "WITH s AS (INSERT INTO services (name, bucket, protocol, host, port, path, emails, \
           timeout, interval, unhealthy_threshold, healthy_threshold, expected_status, \
           tls_verify, cert_warn_days, token_hash, state_since, created_at, updated_at, period, \
           grace, ping_id, channels, tags, depends_on) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16, \
           $16, $17, $18, $19, $20, $21, $22) \
         ON CONFLICT (name) DO UPDATE SET protocol = excluded.protocol, \
           host = excluded.host, port = excluded.port, path = excluded.path, \
           emails = excluded.emails, timeout = excluded.timeout, \
           interval = excluded.interval, \
           unhealthy_threshold = excluded.unhealthy_threshold, \
           healthy_threshold = excluded.healthy_threshold, \
           expected_status = excluded.expected_status, tls_verify = excluded.tls_verify, \
           cert_warn_days = excluded.cert_warn_days, token_hash = excluded.token_hash, \
           updated_at = excluded.updated_at, period = excluded.period, \
           grace = excluded.grace, \
           ping_id = CASE WHEN excluded.ping_id IS NULL THEN NULL \
             ELSE COALESCE(services.ping_id, excluded.ping_id) END, \
           channels = excluded.channels, tags = excluded.tags, \
           depends_on = excluded.depends_on \
         RETURNING ",
    service_fields!(),
    // A new row has no checks: its newest is not looked for.
    ", CASE WHEN xmax = 0 THEN NULL ELSE ",
    newest!(),
    " END AS newest, (xmax = 0) AS created), \
         counted AS (UPDATE service_counts SET n = n + 1 \
           WHERE bucket = $2 AND (SELECT created FROM s)), \
         logged AS (INSERT INTO events (at, service_id, service, kind, reason) \
           SELECT $16, id, $1, CASE WHEN created THEN $23 ELSE $24 END, $25 FROM s) \
         SELECT * FROM s"
);

/// The newest check of a service as [`SERVICE_COLUMNS`]' `newest` has it.
struct Newest {
    id: i64,
    last: LastCheck,
    /// Consecutive successes (a pass or warn) or failures after it.
    streak: Option<u32>,
}

fn newest(f: &Fields<'_>) -> Result<Option<Newest>, StoreError> {
    let Some(v) = f.get::<Option<Vec<Option<String>>>>("newest")? else {
        return Ok(None);
    };
    let bad = || f.corrupt("newest", format!("{v:?} is not a check"));
    let int = |i: usize| -> Result<Option<i64>, StoreError> {
        v.get(i)
            .cloned()
            .flatten()
            .map(|x| x.parse::<i64>().map_err(|_| bad()))
            .transpose()
    };
    let (Some(id), Some(at)) = (int(0)?, int(1)?) else {
        return Err(bad());
    };
    let result = v
        .get(2)
        .cloned()
        .flatten()
        .and_then(|r| r.parse().ok())
        .ok_or_else(bad)?;
    Ok(Some(Newest {
        id,
        last: LastCheck {
            at,
            result,
            reason: v.get(3).cloned().flatten(),
            duration_us: int(4)?.unwrap_or(0),
        },
        // The `u32` stored bit for bit in an `int`.
        streak: int(5)?.map(|k| k as i32 as u32),
    }))
}

/// Decodes a `services` row selected with [`SERVICE_COLUMNS`].
pub(crate) fn decode_service(r: &Row) -> Result<ServiceRecord, StoreError> {
    let f = Fields::new(r, "services")?;
    let protocol: Protocol = f.parse("protocol")?;
    let heartbeat = match protocol {
        Protocol::Heartbeat => Some(Heartbeat {
            period: f.int_opt("period")?.unwrap_or(DEFAULT_PERIOD),
            grace: f.int_opt("grace")?.unwrap_or(DEFAULT_GRACE),
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
    let state: HealthState = f.parse("state")?;
    let (mut successes, mut failures): (u32, u32) = (f.int("successes")?, f.int("failures")?);
    let mut last_healthy_at: Option<i64> = f.get("last_healthy_at")?;
    let mut last_check = last_check;
    // The newest check row, when newer than the row's copy: its time,
    // result and counters (the row's state is committed with every state
    // change, so while it is healthy, so was that check).
    let row_check: Option<i64> = f.get("last_check_id")?;
    if let Some(n) = newest(&f)?.filter(|n| row_check.is_none_or(|r| n.id > r)) {
        if let Some(k) = n.streak {
            (successes, failures) = if n.last.result == healthchecker_core::CheckResult::Fail {
                (0, k)
            } else {
                (k, 0)
            };
        }
        if state == HealthState::Healthy {
            last_healthy_at = last_healthy_at.max(Some(n.last.at));
        }
        last_check = Some(n.last);
    }
    Ok(ServiceRecord {
        id: ServiceId::new(f.id()),
        spec: ServiceSpec {
            name: f.get("name")?,
            target: Target {
                protocol,
                host: f.get("host")?,
                port: f.int("port")?,
                path: f.get("path")?,
            },
            emails: f.json_list("emails")?,
            timeout: f.int("timeout")?,
            interval: f.int("interval")?,
            unhealthy_threshold: f.int("unhealthy_threshold")?,
            healthy_threshold: f.int("healthy_threshold")?,
            expected_status: f.parse("expected_status")?,
            tls_verify: f.get("tls_verify")?,
            cert_warn_days: f.int("cert_warn_days")?,
            heartbeat,
            channels: f.json("channels")?,
            tags: f.json("tags")?,
            depends_on: f.json("depends_on")?,
        },
        paused: f.get("paused")?,
        state,
        successes,
        failures,
        state_since: f.get("state_since")?,
        last_check,
        last_healthy_at,
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

/// A JSON list for a text column.
pub(crate) fn json_list<T: ToString>(items: &[T]) -> String {
    let items: Vec<String> = items.iter().map(T::to_string).collect();
    serde_json::to_string(&items).unwrap_or_else(|_| "[]".into())
}

/// Parameters of a dynamically built statement.
pub(crate) type Args = Vec<Box<dyn ToSql + Sync>>;

/// `filter`'s state and name conditions appended to `sql` (a query ending
/// in `WHERE true`), numbered after those in `args`: the API's list and the
/// dashboard's. Names match case-insensitively (`ILIKE`), as SQLite's
/// `LIKE` does.
pub(crate) fn push_conditions(filter: &ServiceFilter, sql: &mut String, args: &mut Args) {
    if let Some(st) = filter.state {
        args.push(Box::new(st.as_str().to_string()));
        sql.push_str(&format!(" AND state = ${}", args.len()));
    }
    if let Some(q) = filter.name_contains.as_ref().filter(|q| !q.is_empty()) {
        let escaped = q
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        args.push(Box::new(format!("%{escaped}%")));
        sql.push_str(&format!(" AND name ILIKE ${} ESCAPE '\\'", args.len()));
    }
}

/// `LIMIT … OFFSET …` of a filter (no limit when 0).
pub(crate) fn page(filter: &ServiceFilter) -> String {
    let mut s = String::new();
    if filter.limit > 0 {
        s.push_str(&format!(" LIMIT {}", filter.limit));
    }
    if filter.offset > 0 {
        s.push_str(&format!(" OFFSET {}", filter.offset));
    }
    s
}

pub(crate) fn refs(args: &Args) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| a.as_ref()).collect()
}

fn service_by_id(
    tx: &mut impl postgres::GenericClient,
    id: i64,
) -> Result<ServiceRecord, StoreError> {
    let r = tx
        .query_one(
            &format!("SELECT {SERVICE_COLUMNS} FROM services WHERE id = $1"),
            &[&id],
        )
        .map_err(pg)?;
    decode_service(&r)
}

impl PgStore {
    /// Registers a new service or updates an existing one of the same name,
    /// keeping its state, counters and history. Records a `registered` or
    /// `updated` event. Committed before it returns. Two nodes registering
    /// the same new name at once both succeed, one as the update (the
    /// statement is an upsert on the name), which is also why it is run
    /// again when the database had ended the connection
    /// ([`PgStore::once_more`]).
    pub fn register(
        &self,
        spec: &ServiceSpec,
        token_hash: &str,
        now: i64,
        max_services: usize,
    ) -> Result<Registered, StoreError> {
        self.once_more(|s| s.register_once(spec, token_hash, now, max_services))
    }

    fn register_once(
        &self,
        spec: &ServiceSpec,
        token_hash: &str,
        now: i64,
        max_services: usize,
    ) -> Result<Registered, StoreError> {
        let mut l = self.api_conn()?;
        let (c, cache) = l.conn().parts();
        // No transaction: one prepared statement does the upsert, its
        // bucket's count, its event and reads the record back. Before it,
        // the limit, from the per-bucket counts (schema migration 5): read
        // at most every `COUNT_FOR` while the services are more than
        // `LIMIT_MARGIN` below it, every time nearer. Near it, it is as
        // loose as it always was across the nodes of a cluster: two
        // registrations at once can both pass it.
        if !self.inner.service_count.far_below(max_services) {
            let limit = cache.get(
                c,
                "SELECT EXISTS (SELECT 1 FROM services WHERE name = $1), \
                   (SELECT coalesce(sum(n), 0)::bigint FROM service_counts)",
            )?;
            let r = c.query_one(&limit, &[&spec.name]).map_err(pg)?;
            let (exists, n): (bool, i64) = (r.get(0), r.get(1));
            self.inner.service_count.set(n);
            if !exists && n as usize >= max_services {
                return Err(StoreError::Limit(max_services));
            }
        }
        let new_ping_id = match spec.heartbeat {
            Some(_) => Some(new_ping_id()?),
            None => None,
        };
        let t = &spec.target;
        let bucket = i32::from(Bucket::of(&spec.name).get());
        let upsert = cache.get(c, REGISTER)?;
        let row = c
            .query_one(
                &upsert,
                &[
                    &spec.name,
                    &bucket,
                    &t.protocol.as_str(),
                    &t.host,
                    &i64::from(t.port),
                    &t.path,
                    &json_list(&spec.emails),
                    &i64::from(spec.timeout),
                    &i64::from(spec.interval),
                    &i64::from(spec.unhealthy_threshold),
                    &i64::from(spec.healthy_threshold),
                    &spec.expected_status.to_string(),
                    &spec.tls_verify,
                    &i64::from(spec.cert_warn_days),
                    &token_hash,
                    &now,
                    &spec.heartbeat.map(|h| i64::from(h.period)),
                    &spec.heartbeat.map(|h| i64::from(h.grace)),
                    &new_ping_id,
                    &json_list(&spec.channels),
                    &json_list(&spec.tags),
                    &json_list(&spec.depends_on),
                    &EventKind::Registered.as_str(),
                    &EventKind::Updated.as_str(),
                    &spec.target.url(),
                ],
            )
            .map_err(pg)?;
        let created: bool = row.get("created");
        if created {
            self.inner.service_count.add_one();
        }
        let record = decode_service(&row)?;
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
        let mut l = self.api_conn()?;
        let (c, _) = l.conn().parts();
        let mut tx = c.transaction().map_err(pg)?;
        let Some(r) = tx
            .query_opt(
                "SELECT id, paused FROM services WHERE name = $1 FOR UPDATE",
                &[&name],
            )
            .map_err(pg)?
        else {
            return Ok(None);
        };
        let (id, was): (i64, bool) = (r.get(0), r.get(1));
        if was != paused {
            tx.execute(
                "UPDATE services SET paused = $1, updated_at = $2 WHERE id = $3",
                &[&paused, &now, &id],
            )
            .map_err(pg)?;
            let kind = if paused {
                EventKind::Paused
            } else {
                EventKind::Resumed
            };
            insert_event(&mut tx, now, id, name, kind, None)?;
        }
        let rec = service_by_id(&mut tx, id)?;
        tx.commit().map_err(pg)?;
        Ok(Some(rec))
    }

    /// Deletes a service and its check history; events and the outbox stay
    /// (its roll-ups age out). Returns its id, or `None` if the name is
    /// unknown.
    pub fn delete(&self, name: &str, now: i64) -> Result<Option<ServiceId>, StoreError> {
        let mut l = self.api_conn()?;
        let (c, _) = l.conn().parts();
        let mut tx = c.transaction().map_err(pg)?;
        let Some(r) = tx
            .query_opt(
                "DELETE FROM services WHERE name = $1 RETURNING id, bucket",
                &[&name],
            )
            .map_err(pg)?
        else {
            return Ok(None);
        };
        let (id, bucket): (i64, i32) = (r.get(0), r.get(1));
        tx.execute(
            "UPDATE service_counts SET n = n - 1 WHERE bucket = $1",
            &[&bucket],
        )
        .map_err(pg)?;
        tx.execute("DELETE FROM checks WHERE service_id = $1", &[&id])
            .map_err(pg)?;
        insert_event(&mut tx, now, id, name, EventKind::Deleted, None)?;
        tx.commit().map_err(pg)?;
        Ok(Some(ServiceId::new(id)))
    }

    /// Every service, for the scheduler at start-up.
    pub fn load_all(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        self.list_services(&ServiceFilter::default())
    }

    /// The services of `buckets`, by name: what a node's scheduler runs
    /// (the buckets it holds, cluster/lease.rs).
    pub fn services_in_buckets(
        &self,
        buckets: &[Bucket],
    ) -> Result<Vec<ServiceRecord>, StoreError> {
        let buckets: Vec<i32> = buckets.iter().map(|b| i32::from(b.get())).collect();
        let mut l = self.read_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(
            c,
            &format!("SELECT {SERVICE_COLUMNS} FROM services WHERE bucket = ANY($1) ORDER BY name"),
        )?;
        row::all(&c.query(&s, &[&buckets]).map_err(pg)?, decode_service)
    }

    /// Services matching `filter`, ordered by name.
    pub fn list_services(&self, filter: &ServiceFilter) -> Result<Vec<ServiceRecord>, StoreError> {
        let mut sql = format!("SELECT {SERVICE_COLUMNS} FROM services WHERE true");
        let mut args: Args = Vec::new();
        push_conditions(filter, &mut sql, &mut args);
        if let Some(after) = &filter.after {
            args.push(Box::new(after.clone()));
            sql.push_str(&format!(" AND name COLLATE \"C\" > ${}", args.len()));
        }
        // Byte order, as SQLite's default collation: the cursor (`after`)
        // and the pages agree whatever the database's locale.
        sql.push_str(" ORDER BY name COLLATE \"C\"");
        sql.push_str(&page(filter));
        let mut l = self.read_conn()?;
        let (c, _) = l.conn().parts();
        row::all(&c.query(&sql, &refs(&args)).map_err(pg)?, decode_service)
    }

    /// Services by state and the number paused, in one pass over the table.
    pub fn count_by_state(&self) -> Result<StateCounts, StoreError> {
        let mut l = self.read_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(
            c,
            "SELECT state, paused, count(*) AS n FROM services GROUP BY state, paused",
        )?;
        let mut out = StateCounts {
            by_state: HealthState::ALL.iter().map(|s| (*s, 0)).collect(),
            paused: 0,
        };
        for r in c.query(&s, &[]).map_err(pg)? {
            let f = Fields::unnamed(&r, "services");
            let (state, paused, n): (HealthState, bool, i64) =
                (f.parse("state")?, f.get("paused")?, f.get("n")?);
            if paused {
                out.paused += n;
            }
            match out.by_state.iter_mut().find(|(s, _)| *s == state) {
                Some(e) => e.1 += n,
                None => return Err(f.corrupt("state", format!("state {state:?} is not counted"))),
            }
        }
        Ok(out)
    }

    /// One service by name.
    pub fn get_service(&self, name: &str) -> Result<Option<ServiceRecord>, StoreError> {
        let mut l = self.read_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(
            c,
            &format!("SELECT {SERVICE_COLUMNS} FROM services WHERE name = $1"),
        )?;
        c.query_opt(&s, &[&name])
            .map_err(pg)?
            .map(|r| decode_service(&r))
            .transpose()
    }

    /// The stored token hash of a service (for the token auth mode).
    pub fn token_hash(&self, name: &str) -> Result<Option<String>, StoreError> {
        let mut l = self.read_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(c, "SELECT token_hash FROM services WHERE name = $1")?;
        Ok(c.query_opt(&s, &[&name]).map_err(pg)?.map(|r| r.get(0)))
    }
}

/// The number of services as the limit of [`PgStore::register`] last read
/// it, and when.
#[derive(Default)]
pub(crate) struct ServiceCount(std::sync::Mutex<Option<(std::time::Instant, i64)>>);

/// Below the limit by more than this, a count up to [`COUNT_FOR`] old is
/// taken as it is.
const LIMIT_MARGIN: i64 = 1_000;
/// How long a count is taken as it is, far from the limit: the nodes of a
/// cluster together would have to create more than [`LIMIT_MARGIN`]
/// services in this time to pass the limit (a node creates about 2,000 a
/// second at most), and reading the count costs about 0.5 ms on the
/// server.
const COUNT_FOR: std::time::Duration = std::time::Duration::from_millis(100);

impl ServiceCount {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(std::time::Instant, i64)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True when a count younger than [`COUNT_FOR`] is more than
    /// [`LIMIT_MARGIN`] below `max`.
    fn far_below(&self, max: usize) -> bool {
        self.far_below_at(max, std::time::Instant::now())
    }

    fn far_below_at(&self, max: usize, now: std::time::Instant) -> bool {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.lock().is_some_and(|(at, n)| {
            now.saturating_duration_since(at) < COUNT_FOR && n.saturating_add(LIMIT_MARGIN) < max
        })
    }

    fn set(&self, n: i64) {
        *self.lock() = Some((std::time::Instant::now(), n));
    }

    /// This node created a service.
    fn add_one(&self) {
        if let Some((_, n)) = self.lock().as_mut() {
            *n += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn the_limit_is_read_again_when_the_count_is_old_or_near_it() {
        let count = ServiceCount::default();
        assert!(
            !count.far_below_at(10_000, Instant::now()),
            "never read: read it"
        );
        count.set(8_000);
        let now = Instant::now();
        assert!(count.far_below_at(10_000, now));
        assert!(
            !count.far_below_at(10_000, now + COUNT_FOR),
            "old: read it again"
        );
        assert!(
            !count.far_below_at(9_000, now),
            "within the margin: read it"
        );
        count.set(8_999);
        assert!(count.far_below_at(10_000, now + Duration::from_millis(1)));
        count.add_one();
        assert!(
            !count.far_below_at(10_000, now + Duration::from_millis(1)),
            "this node's own registration brings it within the margin"
        );
        assert!(count.far_below_at(usize::MAX, now + Duration::from_millis(1)));
    }
}
