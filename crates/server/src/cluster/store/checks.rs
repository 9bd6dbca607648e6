//! The `checks` table on PostgreSQL: each service's raw history, the reads
//! of it, and the pruning of raw checks (SPEC section 18), as
//! `store/checks.rs`. Rows are written by the batch writer (`writer.rs`).

use super::row::{self, Fields};
use super::{pg, PgStore};
use crate::store::{CheckRecord, StoreError, RETAIN_MS};
use healthchecker_core::ServiceId;
use postgres::Row;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;

fn decode_check(r: &Row) -> Result<CheckRecord, StoreError> {
    let f = Fields::new(r, "checks")?;
    Ok(CheckRecord {
        id: f.id(),
        at: f.get("at")?,
        duration_us: f.get("duration_us")?,
        result: f.parse("result")?,
        reason: f.get("reason")?,
        http_status: f
            .get::<Option<i32>>("http_status")?
            .map(|s| u16::try_from(s).map_err(|_| f.corrupt("http_status", format!("{s}"))))
            .transpose()?,
        details: f.get("details")?,
    })
}

impl PgStore {
    /// The newest `limit` checks of a service, newest first.
    pub fn checks(
        &self,
        service_id: ServiceId,
        limit: usize,
    ) -> Result<Vec<CheckRecord>, StoreError> {
        let mut l = self.read_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(
            c,
            "SELECT id, at, duration_us, result, reason, http_status, details FROM checks \
             WHERE service_id = $1 ORDER BY id DESC LIMIT $2",
        )?;
        row::all(
            &c.query(&s, &[&service_id.get(), &(limit as i64)])
                .map_err(pg)?,
            decode_check,
        )
    }

    /// The newest `n` checks of each service in `ids` (without details,
    /// oldest first), for sparklines: one statement.
    pub fn recent_checks_of(
        &self,
        ids: &[ServiceId],
        n: usize,
    ) -> Result<HashMap<ServiceId, Vec<CheckRecord>>, StoreError> {
        let raw: Vec<i64> = ids.iter().map(|i| i.get()).collect();
        let mut l = self.read_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(
            c,
            "SELECT s.id AS service_id, k.id, k.at, k.duration_us, k.result, k.reason, \
               k.http_status, NULL::text AS details \
             FROM unnest($1::bigint[]) s(id) CROSS JOIN LATERAL ( \
               SELECT id, at, duration_us, result, reason, http_status FROM checks \
               WHERE service_id = s.id ORDER BY id DESC LIMIT $2) k \
             ORDER BY s.id, k.id",
        )?;
        let mut out: HashMap<ServiceId, Vec<CheckRecord>> =
            ids.iter().map(|id| (*id, Vec::new())).collect();
        for r in c.query(&s, &[&raw, &(n as i64)]).map_err(pg)? {
            let sid = ServiceId::new(r.get("service_id"));
            let check = decode_check(&r)?;
            out.entry(sid).or_default().push(check);
        }
        Ok(out)
    }

    /// Sets how many raw checks each service keeps (`--keep-checks`).
    pub fn set_keep_checks(&self, n: i64) {
        self.inner.keep_checks.store(n, Relaxed);
    }

    /// The raw-checks part of [`PgStore::prune`]: returns the checks
    /// removed. A check goes when its service is gone, or when it is not
    /// among its service's newest `--keep-checks` and is either older than
    /// `RETAIN_MS` or a pass that changed nothing (the SQLite store's
    /// rule), and is in the roll-ups (at or below its service's
    /// `rolled_through`: the checks above it are rolled up later, from the
    /// raw rows, cluster/store/writer.rs). One pass over the table per prune (a window over the
    /// `(service_id, id)` index); at millions of services the pass is to be
    /// split by bucket (docs/cluster.md).
    pub(crate) fn prune_checks(&self, now: i64) -> Result<usize, StoreError> {
        let keep = self.inner.keep_checks.load(Relaxed);
        let mut l = self.write_conn()?;
        let (c, _) = l.conn().parts();
        let gone = c
            .execute(
                "DELETE FROM checks c WHERE NOT EXISTS \
                 (SELECT 1 FROM services s WHERE s.id = c.service_id)",
                &[],
            )
            .map_err(pg)?;
        let beyond = c
            .execute(
                "DELETE FROM checks WHERE ctid IN ( \
                   SELECT x.ctid FROM ( \
                     SELECT ctid, id, service_id, at, result, changed, \
                       row_number() OVER (PARTITION BY service_id ORDER BY id DESC) AS n \
                     FROM checks) x JOIN services s ON s.id = x.service_id \
                   WHERE x.n > $1 AND x.id <= s.rolled_through \
                     AND (x.at < $2 OR (x.result = 'pass' AND NOT x.changed)))",
                &[&keep, &(now - RETAIN_MS)],
            )
            .map_err(pg)?;
        Ok((gone + beyond) as usize)
    }
}
