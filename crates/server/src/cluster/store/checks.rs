//! The `checks` table on PostgreSQL: each service's raw history, the reads
//! of it, and the pruning of raw checks (SPEC section 18), as
//! `store/checks.rs`. Rows are written by the batch writer (`writer.rs`).

use super::row::{self, Fields};
use super::{pg, PgStore};
use crate::cluster::schema::CHECK_SLOTS;
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
    /// The writer appends to the current slot of `checks` (schema.rs,
    /// migration 10). [`turn_slots`] empties, whole, each slot closed at
    /// least a retention ago, after copying the checks this rule keeps
    /// into `checks_kept`, and closes the current slot once it is old
    /// enough. `checks_kept` is pruned row by row with the rule, per
    /// service, in slices of [`PRUNE_SLICE`] buckets (a statement each,
    /// so a pass never holds one huge transaction): a service's boundary
    /// is one index probe that steps over its newest `--keep-checks`
    /// entries (in every slot), then only its kept checks below the
    /// boundary are read.
    pub(crate) fn prune_checks(&self, now: i64) -> Result<usize, StoreError> {
        let keep = self.inner.keep_checks.load(Relaxed).max(0);
        let mut l = self.write_conn()?;
        let (c, cache) = l.conn().parts();
        let gone = cache.get(c, PRUNE_GONE)?;
        let mut removed = c.execute(&gone, &[]).map_err(pg)? as usize;
        let beyond = cache.get(c, PRUNE_BEYOND)?;
        let cutoff = now - RETAIN_MS;
        for lo in (0..BUCKETS as i32).step_by(PRUNE_SLICE as usize) {
            let hi = lo + PRUNE_SLICE;
            removed += c
                .execute(&beyond, &[&keep, &cutoff, &lo, &hi])
                .map_err(pg)? as usize;
        }
        // A pass that cannot turn the slots (a long read on the slot to
        // empty, past the lock timeout) still prunes the rest; the next
        // pass tries again.
        match turn_slots(c, keep, now) {
            Ok(n) => removed += n,
            Err(e) => tracing::warn!(error = %e, "raw-check slots not turned this pass"),
        }
        Ok(removed)
    }
}

/// The advisory lock a pass holds while it turns the slots ("hc-slots"
/// in ASCII), so that one node at a time does.
const SLOTS_LOCK: i64 = 0x6863_2d73_6c6f_7473;

/// A slot is emptied this long after it was closed at the least.
const MIN_RETAIN_MS: i64 = 20 * 60_000;

/// A check is rolled up within this long of being written: the writer's
/// hold (the sweep's period, `batcher.rs`'s `HOLD_FOR`), and 5 minutes
/// for a flush late or retried. Not above [`MIN_RETAIN_MS`].
const ROLLED_UP_WITHIN_MS: i64 = super::batcher::HOLD_FOR.as_millis() as i64 + 5 * 60_000;
const _: () = assert!(ROLLED_UP_WITHIN_MS <= MIN_RETAIN_MS);

/// How long the checks of a closed slot are kept whole, and how long a
/// slot stays current, in ms, from `--keep-checks` and the services
/// (`services` of them, `per_s` checks a second in all, their 90th
/// percentile interval `p90_s`): long enough that the newest check of a
/// slot emptied is beyond the newest `keep` of nine services in ten (the
/// rest have theirs copied into `checks_kept`), but no more than twice
/// `keep` checks a service on average (so that a few slow services do not
/// keep every fast one's checks for days), plus the roll-ups' hold and
/// 5 minutes ([`ROLLED_UP_WITHIN_MS`]: what is emptied is rolled up),
/// within 20 minutes and 7 days. A slot is current for a fifth of that: about six slots hold
/// checks, and the ring of eight always has an empty one.
pub(crate) fn slot_retention(keep: i64, p90_s: i64, services: i64, per_s: f64) -> (i64, i64) {
    let mut retain = keep.saturating_mul(p90_s).saturating_mul(1_000);
    if per_s > 0.0 {
        let cap = 2.0 * keep as f64 * services as f64 / per_s * 1_000.0;
        retain = retain.min(cap as i64);
    }
    let retain = retain
        .saturating_add(ROLLED_UP_WITHIN_MS)
        .clamp(MIN_RETAIN_MS, RETAIN_MS);
    (retain, (retain / 5).max(60_000))
}

/// Empties the oldest slot closed at least a retention ago, keeping the
/// checks the rule keeps (copied into `checks_kept` first, same
/// transaction), then closes the current slot when it has been current
/// long enough and makes an empty one current. Returns the checks
/// removed. One slot a pass (a pass closes at most one), so that the
/// `TRUNCATE`'s exclusive lock is held from the `TRUNCATE` to the commit
/// only. The slot is locked `SHARE` first: a write still in flight into
/// it (a node stalled for a retention) is waited for, and none can start,
/// so nothing committed after the copy is truncated; reads go on. A node
/// that finds another turning them (the advisory lock) skips this pass;
/// a lock not granted within 5 s fails the pass, and a later one empties
/// the slot.
fn turn_slots(c: &mut postgres::Client, keep: i64, now: i64) -> Result<usize, StoreError> {
    let mut tx = c.transaction().map_err(pg)?;
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&SLOTS_LOCK])
        .map_err(pg)?
        .get(0);
    if !locked {
        return Ok(0);
    }
    tx.batch_execute("SET LOCAL lock_timeout = '5s'")
        .map_err(pg)?;
    let r = tx
        .query_one(
            "SELECT coalesce(percentile_disc(0.9) WITHIN GROUP (ORDER BY i), 0)::bigint, \
               count(*), coalesce(sum(1.0 / i), 0)::float8 \
             FROM (SELECT greatest(interval, coalesce(period, 0), 1) AS i \
                   FROM services WHERE NOT paused) s",
            &[],
        )
        .map_err(pg)?;
    let (retain, period) = slot_retention(keep, r.get(0), r.get(1), r.get(2));
    let slots: Vec<(i32, bool, Option<i64>, Option<i64>)> = tx
        .query(
            "SELECT slot, current, opened_at, closed_at FROM check_slots ORDER BY slot FOR UPDATE",
            &[],
        )
        .map_err(pg)?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let oldest = slots
        .iter()
        .filter(|s| !s.1 && s.3.is_some_and(|at| now - at >= retain))
        .min_by_key(|s| s.3)
        .map(|s| s.0);
    let removed = match oldest {
        Some(slot) => empty_slot(&mut tx, slot, keep, now - RETAIN_MS)?,
        None => 0,
    };
    // Empty: neither current nor dated, or just emptied.
    let empty: Vec<i32> = slots
        .iter()
        .filter(|s| (!s.1 && s.2.is_none() && s.3.is_none()) || Some(s.0) == oldest)
        .map(|s| s.0)
        .collect();
    if let Some(&(cur, _, opened, _)) = slots.iter().find(|s| s.1) {
        match opened {
            None => {
                tx.execute(
                    "UPDATE check_slots SET opened_at = $2 WHERE slot = $1",
                    &[&cur, &now],
                )
                .map_err(pg)?;
            }
            Some(at) if now - at >= period => {
                // The next empty slot after the current one, round the ring.
                let next = empty
                    .iter()
                    .copied()
                    .min_by_key(|s| (s - cur).rem_euclid(CHECK_SLOTS));
                if let Some(next) = next {
                    tx.execute(
                        "UPDATE check_slots SET current = false, closed_at = $2 WHERE slot = $1",
                        &[&cur, &now],
                    )
                    .map_err(pg)?;
                    tx.execute(
                        "UPDATE check_slots SET current = true, opened_at = $2, closed_at = NULL \
                         WHERE slot = $1",
                        &[&next, &now],
                    )
                    .map_err(pg)?;
                }
            }
            Some(_) => {}
        }
    }
    tx.commit().map_err(pg)?;
    Ok(removed)
}

/// Empties `slot` in `tx`: locks it `SHARE` (a write in flight into it
/// is waited for, none can start), copies what the rule keeps into
/// `checks_kept` ([`KEEP_OF_SLOT`], failing or state-changing checks from
/// `cutoff` on), truncates it and marks it empty. Returns the checks
/// removed.
fn empty_slot(
    tx: &mut postgres::Transaction<'_>,
    slot: i32,
    keep: i64,
    cutoff: i64,
) -> Result<usize, StoreError> {
    tx.batch_execute(&format!("LOCK TABLE checks_s{slot} IN SHARE MODE"))
        .map_err(pg)?;
    let n: i64 = tx
        .query_one(&format!("SELECT count(*) FROM checks_s{slot}"), &[])
        .map_err(pg)?
        .get(0);
    let kept = tx
        .execute(
            &KEEP_OF_SLOT.replace("{slot}", &slot.to_string()),
            &[&keep, &cutoff],
        )
        .map_err(pg)?;
    tx.batch_execute(&format!("TRUNCATE checks_s{slot}"))
        .map_err(pg)?;
    tx.execute(
        "UPDATE check_slots SET opened_at = NULL, closed_at = NULL WHERE slot = $1",
        &[&slot],
    )
    .map_err(pg)?;
    Ok((n - kept as i64).max(0) as usize)
}

/// Copies the checks of slot `{slot}` that the rule keeps into
/// `checks_kept`: those of services that still exist and are among their
/// newest `$1` (over every slot), or above their service's roll-up mark,
/// or failing or state-changing and at or after `$2`. A service's boundary
/// (its newest check not among its newest `$1`) is probed once, not per
/// row.
const KEEP_OF_SLOT: &str = "WITH b AS MATERIALIZED ( \
       SELECT s.id, s.rolled_through, \
         (SELECT x.id FROM checks x WHERE x.service_id = s.id \
          ORDER BY x.id DESC OFFSET $1 LIMIT 1) AS bound \
       FROM services s WHERE s.id IN (SELECT DISTINCT service_id FROM checks_s{slot})) \
     INSERT INTO checks (id, service_id, at, duration_us, result, reason, http_status, \
       details, changed, streak, unrolled, unrolled_failed, slot) \
     SELECT k.id, k.service_id, k.at, k.duration_us, k.result, k.reason, k.http_status, \
       k.details, k.changed, k.streak, k.unrolled, k.unrolled_failed, -1 \
     FROM checks_s{slot} k JOIN b ON b.id = k.service_id \
     WHERE b.bound IS NULL OR k.id > b.bound OR k.id > b.rolled_through \
       OR (k.at >= $2 AND NOT (k.result = 'pass' AND NOT k.changed))";

/// Buckets pruned per statement: 64 statements a pass over the 1,024
/// buckets.
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

/// The kept checks (`checks_kept`) of the services of buckets `$3..$4`
/// beyond their newest `$1`, rolled up, and older than `$2` or passes that
/// changed nothing. `b` is a service's newest check, in any slot, not
/// among its newest `$1` (`OFFSET` over the index, newest first): its
/// checks at or below it are the ones a window's `row_number() > $1`
/// names. Each service is a nested index range scan (`LATERAL`), and the
/// rows go by their `ctid`s (a TID scan of `checks_kept` alone: a `ctid`
/// names a row within one partition), so the plan cannot become a scan of
/// the whole table.
const PRUNE_BEYOND: &str = "DELETE FROM checks_kept WHERE ctid = ANY(ARRAY( \
       SELECT x.ctid FROM services s \
       CROSS JOIN LATERAL (SELECT k.id FROM checks k WHERE k.service_id = s.id \
         ORDER BY k.id DESC OFFSET $1 LIMIT 1) b \
       CROSS JOIN LATERAL (SELECT k.ctid FROM checks_kept k \
         WHERE k.service_id = s.id AND k.id <= b.id AND k.id <= s.rolled_through \
           AND (k.at < $2 OR (k.result = 'pass' AND NOT k.changed))) x \
       WHERE s.bucket >= $3 AND s.bucket < $4))";

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn the_retention_follows_keep_checks_and_the_intervals_within_bounds() {
        // 100,000 services at 30 s: the newest 100 checks span 50 minutes.
        assert_eq!(
            slot_retention(100, 30, 100_000, 100_000.0 / 30.0),
            (70 * MIN, 14 * MIN)
        );
        // A home lab at 60 s: 120 minutes.
        assert_eq!(
            slot_retention(100, 60, 1_000, 1_000.0 / 60.0),
            (120 * MIN, 24 * MIN)
        );
        // One service in ten hourly: its checks are copied to the kept
        // slot rather than every service's kept for 100 hours; twice 100
        // checks a service at the average rate instead.
        let per_s = 90_000.0 / 30.0 + 10_000.0 / 3_600.0;
        let (retain, _) = slot_retention(100, 3_600, 100_000, per_s);
        let cap = (2.0 * 100.0 * 100_000.0 / per_s * 1_000.0) as i64;
        assert_eq!(retain, cap + 20 * MIN);
        assert!(retain < 3 * 60 * MIN, "{retain}");
        // Bounds: 20 minutes at the least, 7 days at the most.
        assert_eq!(slot_retention(0, 30, 10, 1.0 / 3.0), (20 * MIN, 4 * MIN));
        assert_eq!(
            slot_retention(3, 10, 1, 0.1),
            (20 * MIN + 30_000, (20 * MIN + 30_000) / 5)
        );
        assert_eq!(
            slot_retention(100_000, 86_400, 1, 0.0),
            (RETAIN_MS, RETAIN_MS / 5)
        );
    }
}
