//! The `checks` table on PostgreSQL: each service's raw history, the reads
//! of it, and the pruning of raw checks (SPEC section 18), as
//! `store/checks.rs`. Rows are written by the batch writer (`writer.rs`).

use super::row::{self, Fields};
use super::{pg, PgStore};
use crate::store::{CheckRecord, StoreError, RETAIN_MS};
use healthchecker_core::cluster::BUCKETS;
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
    /// raw rows, cluster/store/writer.rs).
    ///
    /// Per service, in slices of [`PRUNE_SLICE`] buckets (a statement
    /// each, so a pass never holds one huge transaction): a service's
    /// boundary is one index probe that steps over its newest
    /// `--keep-checks` entries, then only its checks below the boundary
    /// are read (those removed, and the failing or state-changing ones kept
    /// for 7 days). Until 2026-11-30 one statement ranked every check row
    /// of every service with a window (`row_number() OVER (PARTITION BY
    /// service_id …)`): 10 M rows a pass at 100,000 services.
    pub(crate) fn prune_checks(&self, now: i64) -> Result<usize, StoreError> {
        let keep = self.inner.keep_checks.load(Relaxed).max(0);
        let mut l = self.write_conn()?;
        let (c, cache) = l.conn().parts();
        let gone = cache.get(c, PRUNE_GONE)?;
        let mut removed = c.execute(&gone, &[]).map_err(pg)?;
        let beyond = cache.get(c, PRUNE_BEYOND)?;
        let cutoff = now - RETAIN_MS;
        for lo in (0..BUCKETS as i32).step_by(PRUNE_SLICE as usize) {
            let hi = lo + PRUNE_SLICE;
            removed += c
                .execute(&beyond, &[&keep, &cutoff, &lo, &hi])
                .map_err(pg)?;
        }
        Ok(removed as usize)
    }
}

/// Buckets pruned per statement: 64 statements a pass over the 1,024
/// buckets, ≈ 1,600 services each at 100,000 (a transaction that deletes
/// their checks of the last 10 minutes, ≈ 190,000 rows at 5 s).
const PRUNE_SLICE: i32 = 16;

/// The checks of services that are gone. Deleting a service deletes its
/// checks and the writer drops those of a service deleted meanwhile, so
/// this finds none in normal operation; it walks the distinct service ids
/// of `checks` (a loose index scan: one probe of `(service_id, id)` per
/// service, not a row per check) and deletes the checks of those missing
/// from `services`.
const PRUNE_GONE: &str = "WITH RECURSIVE ids(id) AS ( \
       SELECT min(service_id) FROM checks \
       UNION ALL \
       SELECT (SELECT min(service_id) FROM checks WHERE service_id > ids.id) \
       FROM ids WHERE ids.id IS NOT NULL) \
     DELETE FROM checks c USING ids \
     WHERE c.service_id = ids.id \
       AND NOT EXISTS (SELECT 1 FROM services s WHERE s.id = ids.id)";

/// The checks of the services of buckets `$3..$4` beyond their newest
/// `$1`, rolled up, and older than `$2` or passes that changed nothing.
/// `b` is a service's newest check not among its newest `$1` (`OFFSET`
/// over the index, newest first): its checks at or below it are the ones
/// the window's `row_number() > $1` named. Each service is a nested index
/// range scan (`LATERAL`), and the rows go by their `ctid`s (a TID scan),
/// so the plan cannot become a scan of the whole table.
const PRUNE_BEYOND: &str = "DELETE FROM checks WHERE ctid = ANY(ARRAY( \
       SELECT x.ctid FROM services s \
       CROSS JOIN LATERAL (SELECT k.id FROM checks k WHERE k.service_id = s.id \
         ORDER BY k.id DESC OFFSET $1 LIMIT 1) b \
       CROSS JOIN LATERAL (SELECT k.ctid FROM checks k \
         WHERE k.service_id = s.id AND k.id <= b.id AND k.id <= s.rolled_through \
           AND (k.at < $2 OR (k.result = 'pass' AND NOT k.changed))) x \
       WHERE s.bucket >= $3 AND s.bucket < $4))";
