//! The `checks` table: each service's raw history as a chain from its
//! newest check (schema migration 2), the reads of it, and the pruning of
//! raw checks (SPEC section 18).

use super::decode::{self, Fields, Record};
use super::{lock, SqliteStore, StoreError};
use healthchecker_core::{CheckResult, ServiceId};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Raw check retention (SPEC section 18): a service keeps its newest this
/// many checks (the default of `--keep-checks`)...
pub const RETAIN_CHECKS: i64 = 100;
/// ...the range `--keep-checks` accepts...
pub const KEEP_CHECKS_RANGE: std::ops::RangeInclusive<i64> = 10..=100_000;
/// ...and its failing and state-changing checks younger than this. Longer
/// history is in the roll-ups (store/rollup.rs).
pub const RETAIN_MS: i64 = 7 * 24 * 3600 * 1000;
/// Most check rows one prune pass looks at (it resumes where the last one
/// stopped, wrapping at the end of the table): the pass's work is bounded
/// whatever the size of the table.
pub const PRUNE_WALK: usize = 5_000_000;
/// Rows per page of the prune walk.
const PRUNE_PAGE: usize = 5_000;

/// One stored check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRecord {
    /// Row id.
    pub id: i64,
    /// When it ran (Unix ms).
    pub at: i64,
    /// How long it took (µs).
    pub duration_us: i64,
    /// Its result.
    pub result: CheckResult,
    /// Why it failed or warned.
    pub reason: Option<String>,
    /// HTTP status, for HTTP(S) checks that got an answer.
    pub http_status: Option<u16>,
    /// The target's health+json `output`/`notes`/`checks`, as JSON text.
    pub details: Option<String>,
}

/// The newest check of a service and its number in the service's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The check's row id.
    pub check_id: i64,
    /// Its number in the service's history (`checks.seq`).
    pub seq: i64,
}

/// The batch writer's in-memory state that reads overlay on the stored
/// rows: each service's folded per-check fields and newest committed check,
/// and the checks it holds but has not committed yet (store/writer.rs,
/// [`super::writer::Overlay`]). Updated by the writer (under the writer
/// connection's lock when a commit lands), read by every read of a service
/// or of its recent checks.
pub(crate) type Heads = Arc<Mutex<super::writer::Overlay>>;

/// The newest `limit` checks of the chain that starts at `?1` (or at the
/// service `?2`'s newest check), newest first, with the columns
/// [`CheckRecord`]'s decoder reads; `details` only when `with_details`.
fn chain_sql(with_details: bool) -> String {
    let details = if with_details { "c.details" } else { "NULL" };
    format!(
        "WITH RECURSIVE h(id, n) AS ( \
           SELECT COALESCE(?1, (SELECT last_check_id FROM services WHERE id = ?2)), 1 \
           UNION ALL \
           SELECT c.prev_id, h.n + 1 FROM h JOIN checks c ON c.id = h.id \
           WHERE h.n < ?3 AND c.prev_id IS NOT NULL) \
         SELECT c.id AS id, c.at AS at, c.duration_us AS duration_us, c.result AS result, \
           c.reason AS reason, c.http_status AS http_status, {details} AS details \
         FROM h JOIN checks c ON c.id = h.id ORDER BY c.id DESC LIMIT ?3"
    )
}

impl Record for CheckRecord {
    const TABLE: &'static str = "checks";

    /// Decodes a `checks` row selected by [`chain_sql`].
    fn decode(f: &Fields<'_, '_>) -> rusqlite::Result<CheckRecord> {
        Ok(CheckRecord {
            id: f.id(),
            at: f.get("at")?,
            duration_us: f.get("duration_us")?,
            result: f.parse("result")?,
            reason: f.get("reason")?,
            http_status: f.get("http_status")?,
            details: f.get("details")?,
        })
    }
}

/// Points every service row at its newest check after an unclean stop: the
/// checks committed after the last snapshot (ids above
/// `meta.heads_through`, at most one snapshot period of them) are scanned,
/// and each row also gets its newest check's last-check fields (`at`,
/// result, reason, duration; the reason as `last_failure_reason` when it
/// did not pass). What the checks do not hold (the counters, the time last
/// healthy) stays as the last snapshot wrote it; a state change is always
/// in its row already (written with its check). The same scan rolls up
/// the checks above `meta.rolled_through`: returned, for the writer's
/// overlay ([`super::rollup::fold_unmarked`]).
pub(crate) fn recover_heads(
    conn: &mut Connection,
) -> rusqlite::Result<HashMap<(i64, i64), super::rollup::Roll>> {
    let tx = conn.transaction()?;
    let mark: i64 = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'heads_through'",
            [],
            |r| r.get("value"),
        )
        .optional()?
        .unwrap_or(0);
    // One pass over the checks above the marks (in id order, so the last
    // one seen of a service is its newest): the roll-ups, and each
    // service's newest check and newest failure reason.
    let mut newest: HashMap<i64, NewestCheck> = HashMap::new();
    let rolls = super::rollup::fold_unmarked(&tx, mark, |r| {
        let n = newest.entry(r.get(1)?).or_default();
        n.id = r.get(0)?;
        n.at = r.get(2)?;
        n.result = match r.get_ref(3)?.as_str()? {
            "fail" => "fail",
            "warn" => "warn",
            _ => "pass",
        };
        n.duration_us = r.get(4)?;
        n.seq = r.get(5)?;
        n.reason = r.get(6)?;
        if n.result != "pass" && n.reason.is_some() {
            n.failure.clone_from(&n.reason);
        }
        Ok(())
    })?;
    {
        let mut update = tx.prepare(
            "UPDATE services SET last_check_id = ?2, check_seq = ?3, last_check_at = ?4, \
               last_result = ?5, last_reason = ?6, last_duration_us = ?7, \
               last_failure_reason = COALESCE(?8, last_failure_reason) \
             WHERE id = ?1 AND COALESCE(last_check_id, 0) < ?2",
        )?;
        let mut ids: Vec<i64> = newest.keys().copied().collect();
        // In id order: neighbouring rows, each page once.
        ids.sort_unstable();
        for id in ids {
            let n = &newest[&id];
            update.execute(params![
                id,
                n.id,
                n.seq,
                n.at,
                n.result,
                n.reason,
                n.duration_us,
                n.failure
            ])?;
        }
    }
    mark_heads(&tx)?;
    tx.commit()?;
    Ok(rolls)
}

/// A service's newest check seen by [`recover_heads`].
#[derive(Default)]
struct NewestCheck {
    id: i64,
    seq: i64,
    at: i64,
    result: &'static str,
    reason: Option<String>,
    duration_us: i64,
    /// The newest reason of a check that did not pass.
    failure: Option<String>,
}

/// Records that every check written so far is reflected in its service row.
pub(crate) fn mark_heads(tx: &Connection) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO meta (key, value) \
         VALUES ('heads_through', (SELECT COALESCE(MAX(id), 0) FROM checks))",
    )?
    .execute([])?;
    Ok(())
}

impl SqliteStore {
    /// The newest `limit` checks of a service, newest first: those the
    /// batch writer holds but has not committed yet (with the row ids they
    /// will have), then the committed ones.
    pub fn checks(
        &self,
        service_id: ServiceId,
        limit: usize,
    ) -> Result<Vec<CheckRecord>, StoreError> {
        // The overlay is read before the reader's transaction starts: the
        // writer moves a service's head only after its checks committed, so
        // the chain from it plus the held checks misses none.
        let (head, mut out) = self.fresh(service_id, limit, true);
        let conn = self.read_conn();
        let mut stmt = conn.prepare_cached(&chain_sql(true))?;
        let rest = limit.saturating_sub(out.len());
        if rest > 0 {
            let floor = out.last().map_or(i64::MAX, |c| c.id);
            let stored: Vec<CheckRecord> =
                decode::all(&mut stmt, params![head, service_id, limit as i64])?;
            // A held check committed meanwhile (a transition names it in
            // the row) is already in `out`.
            out.extend(stored.into_iter().filter(|c| c.id < floor).take(rest));
        }
        Ok(out)
    }

    /// A service's newest committed check as the writer knows it, and the
    /// checks it holds for the service (newest first, at most `limit`).
    fn fresh(
        &self,
        service_id: ServiceId,
        limit: usize,
        with_details: bool,
    ) -> (Option<i64>, Vec<CheckRecord>) {
        let overlay = self.heads.lock().unwrap_or_else(|e| e.into_inner());
        let head = overlay.head(service_id).map(|h| h.check_id);
        (head, overlay.held_checks(service_id, limit, with_details))
    }

    /// The newest `n` checks of each service in `ids` (durations and
    /// results, oldest first), for sparklines; held checks included as in
    /// [`Store::checks`].
    pub fn recent_checks_of(
        &self,
        ids: &[ServiceId],
        n: usize,
    ) -> Result<HashMap<ServiceId, Vec<CheckRecord>>, StoreError> {
        let fresh: Vec<_> = ids.iter().map(|id| self.fresh(*id, n, false)).collect();
        let conn = self.read_conn();
        let mut stmt = conn.prepare_cached(&chain_sql(false))?;
        let mut out = HashMap::new();
        for (id, (head, mut rows)) in ids.iter().zip(fresh) {
            let rest = n.saturating_sub(rows.len());
            if rest > 0 {
                let floor = rows.last().map_or(i64::MAX, |c| c.id);
                let stored: Vec<CheckRecord> = decode::all(&mut stmt, params![head, id, n as i64])?;
                rows.extend(stored.into_iter().filter(|c| c.id < floor).take(rest));
            }
            rows.reverse();
            out.insert(*id, rows);
        }
        Ok(out)
    }

    /// Sets how many raw checks each service keeps (`--keep-checks`,
    /// within [`KEEP_CHECKS_RANGE`]; the default is [`RETAIN_CHECKS`]).
    pub fn set_keep_checks(&self, n: i64) {
        self.keep_checks
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// The raw-checks part of [`Store::prune`]: returns the checks removed.
    ///
    /// A check goes when its service is gone, or when it is not among its
    /// service's newest `--keep-checks` and is either older than
    /// [`RETAIN_MS`] or a pass that changed nothing. The walk goes over
    /// `checks` in id order in pages on a reader and deletes in small
    /// writer transactions, so that pruning never holds the writer long; it
    /// looks at most [`PRUNE_WALK`] rows per pass and resumes there on the
    /// next. History reads walk a service's chain from its newest check, so
    /// they see the newest `--keep-checks` (never pruned); the failing and
    /// state-changing checks kept beyond them are reached from their events.
    pub(crate) fn prune_checks(&self, now: i64) -> Result<usize, StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        let cutoff = now - RETAIN_MS;
        let keep = self.keep_checks.load(Relaxed);
        let mut removed = 0;
        let mut cursor = self.prune_cursor.load(Relaxed);
        // Only checks already in the roll-ups (a fast service may have more
        // than N checks in one roll-up period).
        let rolled: i64 = self.read_conn().query_row(
            "SELECT COALESCE((SELECT value FROM meta WHERE key = 'rolled_through'), 0) AS mark",
            [],
            |r| r.get("mark"),
        )?;
        let mut walked = 0;
        while walked < PRUNE_WALK {
            // Runs of doomed rows with no kept row between them, as
            // `(first id, last id)`: one range delete each (steady state
            // retires whole stretches of old checks at once).
            let mut doomed: Vec<(i64, i64)> = Vec::new();
            let mut open_run = false;
            let mut seen = 0;
            {
                let conn = self.read_conn();
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT c.id AS id, s.id IS NULL OR (c.seq <= s.check_seq - ?2 \
                       AND (c.at < ?3 OR (c.result = 'pass' AND c.changed IS NULL))) AS beyond \
                     FROM checks c LEFT JOIN services s ON s.id = c.service_id \
                     WHERE c.id > ?1 AND c.id <= ?4 ORDER BY c.id LIMIT {PRUNE_PAGE}"
                ))?;
                let mut rows = stmt.query(params![cursor, keep, cutoff, rolled])?;
                while let Some(r) = rows.next()? {
                    seen += 1;
                    let (id, beyond): (i64, bool) = (r.get("id")?, r.get("beyond")?);
                    cursor = id;
                    match (beyond, doomed.last_mut()) {
                        (true, Some(run)) if open_run => run.1 = id,
                        (true, _) => {
                            doomed.push((id, id));
                            open_run = true;
                        }
                        (false, _) => open_run = false,
                    }
                }
            }
            walked += seen;
            if !doomed.is_empty() {
                let mut conn = lock(&self.writer);
                let tx = conn.transaction()?;
                {
                    // No row can appear inside a run meanwhile: new checks
                    // get ids above every stored one.
                    let mut stmt =
                        tx.prepare_cached("DELETE FROM checks WHERE id BETWEEN ?1 AND ?2")?;
                    for (first, last) in &doomed {
                        removed += stmt.execute([first, last])?;
                    }
                }
                tx.commit()?;
            }
            if seen < PRUNE_PAGE {
                // The end of the table: the next pass starts over.
                cursor = 0;
                break;
            }
        }
        self.prune_cursor.store(cursor, Relaxed);
        Ok(removed)
    }
}
