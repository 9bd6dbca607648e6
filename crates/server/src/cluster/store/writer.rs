//! The batch of check results on PostgreSQL: one transaction writes a
//! batch's checks, and with each state change its service's row, its
//! event, notification and channel deliveries (SPEC section 4: one
//! transaction). Every statement carries the whole batch as arrays
//! (`unnest`), so a batch costs a fixed number of round trips whatever its
//! size.
//!
//! **What the writer thread holds** (SPEC 18, ≤ 200 B of WAL a check;
//! docs/cluster.md "History"): [`PgStore::write_held`] writes a service's
//! row only with a state change, or when its failure reason or
//! certificate expiry changed; the other per-check fields (counters, the
//! last check, `last_healthy_at`) wait in the writer's [`Hold`], and the
//! checks reach the roll-ups later. [`PgStore::flush_held`] writes, once
//! per period (`PgWriterTiming::hold_for`), at a flush and at shutdown,
//! each held service's row and rolls its checks above its mark
//! (`services.rolled_through`) up from the raw rows, moving the mark in
//! the same transaction (compare-and-set on the mark): a node that
//! restarted or took the bucket over rolls those checks up exactly once,
//! and nothing held is lost by a crash that the check rows do not hold
//! (reads take the counters and the last check from the newest check
//! row, `checks.streak`, and add the checks above the mark to the
//! roll-ups). [`PgStore::write_batch`] writes everything at once (rows and
//! roll-ups in the batch's transaction), for callers without a hold.
//!
//! **Fencing** (SPEC section 19): a batch written with [`Fencing`] first
//! takes this node's fence lock shared until commit, then checks, in one
//! statement, that this node holds each of the batch's buckets at the
//! epoch it names (as `cluster::fence` does for one bucket: a claim of
//! them skips them while the lock is held, and a release waits for it, so
//! no lease changes hands before the commit). The checks of a bucket that
//! is not held (taken over, expired, released) are dropped and reported as
//! [`FenceError::Stale`] in [`Written::stale`]: the caller stops working
//! on that bucket; the rest of the batch commits.

use super::rollup::{hour_of, hours_to_days, merge_rolls, Roll, UNROLLED_COUNTS};
use super::{pg, PgStore, StmtCache};
use crate::cluster::fence::FENCE_SHARED;
use crate::cluster::{FenceError, Held, FENCE_LOCK};
use crate::store::{CheckWrite, StoreError};
use healthchecker_core::cluster::{Bucket, Epoch};
use healthchecker_core::{CheckResult, HealthState};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Who writes a batch: the node and the leases it holds (its
/// `LeaseManager`'s published set).
#[derive(Debug, Clone)]
pub struct Fencing {
    /// The node's id (`buckets.owner`).
    pub node: String,
    /// The `(bucket, epoch)` pairs it holds.
    pub held: Held,
}

/// What a batch wrote.
#[derive(Debug, Default)]
pub struct Written {
    /// Checks recorded.
    pub checks: usize,
    /// State changes recorded (each with its event).
    pub transitions: usize,
    /// Checks of services deleted meanwhile (dropped, as in SQLite).
    pub gone: usize,
    /// The buckets whose checks were dropped because this node's lease
    /// was stale, one error each, in bucket order (the epoch is the one
    /// the node held, or 0 when it held none).
    pub stale: Vec<FenceError>,
}

/// A service's per-check fields after some checks of it.
#[derive(Default, Clone)]
struct Fold {
    state: String,
    successes: i64,
    failures: i64,
    at: i64,
    result: String,
    reason: Option<String>,
    duration_us: i64,
    healthy_at: Option<i64>,
    failure_reason: Option<String>,
    cert_expires_at: Option<i64>,
    state_since: Option<i64>,
    notified_at: Option<i64>,
    check_id: i64,
}

impl Fold {
    /// Folds the newer fields `n` into these.
    fn then(&mut self, n: &Fold) {
        let keep = |old: &mut Option<i64>, new: Option<i64>| {
            if new.is_some() {
                *old = new;
            }
        };
        self.state.clone_from(&n.state);
        self.successes = n.successes;
        self.failures = n.failures;
        self.at = n.at;
        self.result.clone_from(&n.result);
        self.reason.clone_from(&n.reason);
        self.duration_us = n.duration_us;
        self.check_id = n.check_id;
        keep(&mut self.healthy_at, n.healthy_at);
        keep(&mut self.cert_expires_at, n.cert_expires_at);
        keep(&mut self.state_since, n.state_since);
        keep(&mut self.notified_at, n.notified_at);
        if n.failure_reason.is_some() {
            self.failure_reason.clone_from(&n.failure_reason);
        }
    }
}

/// What the writer thread holds between its transactions (see the module
/// docs): per service, the per-check fields not yet in its row, since
/// when it has checks not in its row and roll-ups, and the failure reason
/// and certificate expiry it last wrote (those are written at once when
/// they change, so that every node reads them current).
#[derive(Default)]
pub struct Hold {
    /// By service id: the sweep ([`PgStore::flush_swept`]) goes in id
    /// order.
    services: BTreeMap<i64, HeldService>,
    /// The last service id the sweep passed (it wraps round).
    cursor: i64,
    /// When the sweep last moved.
    swept_at: Option<Instant>,
}

struct HeldService {
    bucket: Bucket,
    /// The lease's epoch when this was first held (`Epoch(0)` unfenced): a
    /// bucket lost and claimed again meanwhile drops what was held.
    epoch: Epoch,
    /// The fields not yet written to the row.
    fold: Option<Fold>,
    /// When the first check not yet in the row and the roll-ups committed.
    since: Option<Instant>,
    /// The failure reason last written (outer `None`: not known).
    failure_reason: Option<Option<String>>,
    /// The certificate expiry last written (outer `None`: not known).
    cert_expires_at: Option<Option<i64>>,
    /// Its checks above its mark, and how many failed, as written into
    /// its newest check row (`checks.unrolled`, migration 11; `None`: not
    /// known, read from the database before the next check is written).
    unrolled: Option<(i64, i64)>,
    /// When its last check was written: an entry that holds nothing and
    /// saw no check for two sweep periods (a deleted service, or one now
    /// of another node's bucket) is forgotten ([`PgStore::flush_swept`]).
    checked_at: Instant,
}

impl HeldService {
    /// The row was written with `f`.
    fn wrote(&mut self, f: &Fold) {
        self.fold = None;
        if f.failure_reason.is_some() {
            self.failure_reason = Some(f.failure_reason.clone());
        }
        if f.cert_expires_at.is_some() {
            self.cert_expires_at = Some(f.cert_expires_at);
        }
    }
}

impl Hold {
    /// Services held (fields or checks not yet written).
    pub fn len(&self) -> usize {
        self.services.values().filter(|h| h.since.is_some()).count()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Services known, held or not.
    #[cfg(test)]
    pub(crate) fn known(&self) -> usize {
        self.services.len()
    }

    /// Drops what is held of buckets not held at the same epoch in `held`
    /// (taken over, released, lost): their new owner rolls their checks up
    /// and reads their fields from the check rows.
    pub fn keep_held(&mut self, held: &Held) {
        self.services
            .retain(|_, h| h.epoch == Epoch(0) || held.epoch(h.bucket) == Some(h.epoch));
    }
}

/// What [`PgStore::write_batch_once`] wrote besides [`Written`]: each
/// service's fold of the batch, and the services whose row it wrote with
/// the fold it wrote.
struct Outcome {
    written: Written,
    folds: BTreeMap<i64, (Bucket, Fold)>,
    rows: BTreeMap<i64, Fold>,
    /// Each service's checks above its mark after the batch, and how many
    /// failed (with a hold).
    unrolled: HashMap<i64, (i64, i64)>,
}

/// Parallel arrays, one per column, of the rows of one `unnest`.
#[derive(Default)]
struct Transitions {
    event_id: Vec<i64>,
    at: Vec<i64>,
    service_id: Vec<i64>,
    service: Vec<String>,
    from: Vec<String>,
    to: Vec<String>,
    check_id: Vec<i64>,
    reason: Vec<Option<String>>,
}

impl PgStore {
    /// Writes `batch` in one transaction (see the module docs), with its
    /// services' rows and roll-ups (their checks above the mark, this
    /// batch's included): nothing is held. With `fencing`, only the checks
    /// of buckets this node holds. A database failure rolls everything back
    /// and is returned (the caller keeps the batch and retries); a stale
    /// lease is not a failure but a part of [`Written`].
    pub fn write_batch(
        &self,
        fencing: Option<&Fencing>,
        batch: &[CheckWrite],
    ) -> Result<Written, StoreError> {
        let r = self.write_batch_once(fencing, batch, None);
        self.note_write(&r);
        r.map(|o| o.written)
    }

    /// Writes `batch` as [`PgStore::write_batch`] does, but a service's
    /// row only with a state change or a new failure reason or certificate
    /// expiry, and no roll-ups: the rest waits in `hold` (the writer
    /// thread's) for [`PgStore::flush_held`]. `hold` changes only when
    /// the transaction commits.
    pub fn write_held(
        &self,
        fencing: Option<&Fencing>,
        batch: &[CheckWrite],
        hold: &mut Hold,
    ) -> Result<Written, StoreError> {
        let r = self.write_batch_once(fencing, batch, Some(hold));
        self.note_write(&r);
        let o = r?;
        let now = Instant::now();
        for (sid, (bucket, f)) in o.folds {
            let epoch = fencing
                .and_then(|x| x.held.epoch(bucket))
                .unwrap_or(Epoch(0));
            let h = hold.services.entry(sid).or_insert_with(|| HeldService {
                bucket,
                epoch,
                fold: None,
                since: None,
                failure_reason: None,
                cert_expires_at: None,
                unrolled: None,
                checked_at: now,
            });
            if h.bucket != bucket || h.epoch != epoch {
                // Renamed into another bucket, or its lease changed hands
                // and came back: what was known of its row is not.
                *h = HeldService {
                    bucket,
                    epoch,
                    fold: None,
                    since: h.since,
                    failure_reason: None,
                    cert_expires_at: None,
                    unrolled: None,
                    checked_at: now,
                };
            }
            h.checked_at = now;
            h.unrolled = o.unrolled.get(&sid).copied();
            match o.rows.get(&sid) {
                Some(wrote) => h.wrote(wrote),
                None => match &mut h.fold {
                    Some(held) => held.then(&f),
                    None => h.fold = Some(f),
                },
            }
            h.since.get_or_insert(now);
        }
        Ok(o.written)
    }

    /// Writes what `hold` holds of the services the sweep passes since it
    /// last moved: in service id order, all of them once per `period`
    /// (each service's first check not yet in its row and roll-ups waits
    /// at most about that long). In id order rather than by age, so that
    /// between two checkpoints of PostgreSQL the flushes touch a run of
    /// pages of `services` and `uptime` instead of nearly every page:
    /// each page touched is written whole once after each checkpoint (a
    /// full-page image, 4–8 KB for a few services' updates). Otherwise as
    /// [`PgStore::flush_held`]; the sweep moves on only when its flush
    /// commits.
    pub fn flush_swept(
        &self,
        fencing: Option<&Fencing>,
        hold: &mut Hold,
        period: Duration,
        now: Instant,
    ) -> Result<usize, StoreError> {
        let Some(last) = hold.swept_at else {
            hold.swept_at = Some(now);
            return Ok(0);
        };
        let share = now.saturating_duration_since(last).as_secs_f64() / period.as_secs_f64();
        let n = hold.services.len();
        let k = ((n as f64) * share).floor().min(n as f64) as usize;
        if k == 0 {
            return Ok(0);
        }
        let cursor = hold.cursor;
        let passed: Vec<i64> = hold
            .services
            .range(cursor.saturating_add(1)..)
            .chain(hold.services.range(..=cursor))
            .take(k)
            .map(|(id, _)| *id)
            .collect();
        if let Some(f) = fencing {
            hold.keep_held(&f.held);
        }
        let todo: Vec<(i64, Bucket)> = passed
            .iter()
            .filter_map(|id| {
                let h = hold.services.get(id)?;
                h.since.is_some().then_some((*id, h.bucket))
            })
            .collect();
        let written = self.flush_services(fencing, hold, todo)?;
        hold.cursor = passed.last().copied().unwrap_or(cursor);
        // Forget what the sweep passed that holds nothing and saw no check
        // for two periods: a deleted service's entry would stay for good.
        // Knowing nothing of a row costs one read at its next check.
        let forget = period * 2;
        for id in &passed {
            if hold.services.get(id).is_some_and(|h| {
                h.since.is_none() && now.saturating_duration_since(h.checked_at) > forget
            }) {
                hold.services.remove(id);
            }
        }
        // The time the services passed stand for, so that what a call
        // does not pass (a fraction of a service) carries over.
        hold.swept_at = Some(if k == n {
            now
        } else {
            last + period.mul_f64(k as f64 / n as f64)
        });
        Ok(written)
    }

    /// Writes what `hold` holds of the services held since `due` or
    /// earlier (all of them with `None`): their rows, and their checks
    /// above their marks into the roll-ups with the marks moved, in
    /// transactions of up to 4,096 services, fenced by `fencing` (what is
    /// held of a bucket no longer held is dropped: its new owner rolls the
    /// checks up). Returns the services written.
    pub fn flush_held(
        &self,
        fencing: Option<&Fencing>,
        hold: &mut Hold,
        due: Option<Instant>,
    ) -> Result<usize, StoreError> {
        if let Some(f) = fencing {
            hold.keep_held(&f.held);
        }
        let todo: Vec<(i64, Bucket)> = hold
            .services
            .iter()
            .filter(|(_, h)| h.since.is_some_and(|t| due.is_none_or(|d| t <= d)))
            .map(|(id, h)| (*id, h.bucket))
            .collect();
        self.flush_services(fencing, hold, todo)
    }

    /// Writes what `hold` holds of the services `todo`, in id order, in
    /// transactions of up to 4,096 services; returns the services written.
    fn flush_services(
        &self,
        fencing: Option<&Fencing>,
        hold: &mut Hold,
        mut todo: Vec<(i64, Bucket)>,
    ) -> Result<usize, StoreError> {
        todo.sort_unstable();
        let mut n = 0;
        for chunk in todo.chunks(4096) {
            let r = self.flush_chunk(fencing, hold, chunk);
            self.note_write(&r);
            n += r?;
        }
        Ok(n)
    }

    fn flush_chunk(
        &self,
        fencing: Option<&Fencing>,
        hold: &mut Hold,
        chunk: &[(i64, Bucket)],
    ) -> Result<usize, StoreError> {
        let mut l = self.write_conn()?;
        let (c, cache) = l.conn().parts();
        let mut tx = fenced_transaction(c)?;
        let ok = match fencing {
            None => None,
            Some(f) => Some(fence(
                &mut tx,
                cache,
                f,
                &chunk.iter().map(|(_, b)| *b).collect(),
                &mut Vec::new(),
            )?),
        };
        let ids: Vec<i64> = chunk
            .iter()
            .filter(|(_, b)| ok.as_ref().is_none_or(|ok| ok.contains(b)))
            .map(|(id, _)| *id)
            .collect();
        let folds: BTreeMap<i64, Fold> = ids
            .iter()
            .filter_map(|id| Some((*id, hold.services.get(id)?.fold.clone()?)))
            .collect();
        let rolled = roll_up(&mut tx, cache, &ids, &folds)?;
        tx.commit().map_err(pg)?;
        for (id, b) in chunk {
            if ok.as_ref().is_none_or(|ok| ok.contains(b)) {
                if let Some(h) = hold.services.get_mut(id) {
                    if let Some(f) = folds.get(id) {
                        h.wrote(f);
                    }
                    h.since = None;
                    // Every check this thread wrote is at or below the
                    // mark now, unless another node moved it meanwhile.
                    h.unrolled = rolled.contains(id).then_some((0, 0));
                }
            } else {
                hold.services.remove(id);
            }
        }
        Ok(ids.len())
    }

    fn write_batch_once(
        &self,
        fencing: Option<&Fencing>,
        batch: &[CheckWrite],
        hold: Option<&Hold>,
    ) -> Result<Outcome, StoreError> {
        let mut out = Outcome {
            written: Written::default(),
            folds: BTreeMap::new(),
            rows: BTreeMap::new(),
            unrolled: HashMap::new(),
        };
        if batch.is_empty() {
            return Ok(out);
        }
        let mut l = self.write_conn()?;
        let (c, cache) = l.conn().parts();
        let mut tx = fenced_transaction(c)?;
        // The batch's services as they are now: name and bucket; a
        // service deleted meanwhile is missing. No row lock here (a lock
        // is a WAL record per row).
        let mut ids: Vec<i64> = batch.iter().map(|w| w.service_id.get()).collect();
        ids.sort_unstable();
        ids.dedup();
        let s = cache.get(
            &mut tx,
            "SELECT id, name, bucket FROM services WHERE id = ANY($1)",
        )?;
        let services: HashMap<i64, (String, Bucket)> = tx
            .query(&s, &[&ids])
            .map_err(pg)?
            .iter()
            .map(|r| {
                let (id, b): (i64, i32) = (r.get(0), r.get(2));
                let bucket = Bucket::new(i64::from(b)).ok_or_else(|| {
                    StoreError::Corrupt(crate::store::Corruption {
                        table: "services".into(),
                        row: Some(id),
                        column: "bucket".into(),
                        detail: format!("{b} is not a bucket"),
                    })
                })?;
                Ok((id, (r.get(1), bucket)))
            })
            .collect::<Result<_, StoreError>>()?;
        // Which buckets may be written.
        let allowed: Option<BTreeSet<Bucket>> = match fencing {
            None => None,
            Some(f) => {
                let wanted: BTreeSet<Bucket> = services.values().map(|(_, b)| *b).collect();
                Some(fence(&mut tx, cache, f, &wanted, &mut out.written.stale)?)
            }
        };
        let mut kept: Vec<&CheckWrite> = batch
            .iter()
            .filter(|w| match services.get(&w.service_id.get()) {
                None => {
                    out.written.gone += 1;
                    false
                }
                Some((_, b)) => allowed.as_ref().is_none_or(|ok| ok.contains(b)),
            })
            .collect();
        if hold.is_none() && !kept.is_empty() {
            // Everything written at once: lock the rows before drawing
            // check ids, so that two such writers of one service take
            // turns and a check id drawn is above any mark the other set.
            let mut ids: Vec<i64> = kept.iter().map(|w| w.service_id.get()).collect();
            ids.sort_unstable();
            ids.dedup();
            let s = cache.get(
                &mut tx,
                "SELECT id FROM services WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
            )?;
            let found: BTreeSet<i64> = tx
                .query(&s, &[&ids])
                .map_err(pg)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            kept.retain(|w| {
                let f = found.contains(&w.service_id.get());
                out.written.gone += usize::from(!f);
                f
            });
        }
        if kept.is_empty() {
            tx.commit().map_err(pg)?;
            return Ok(out);
        }
        // Check ids in the batch's order (the events name them), and the
        // current slot of `checks` (schema.rs, migration 10) in the same
        // round trip.
        let s = cache.get(
            &mut tx,
            "SELECT nextval('checks_id_seq'), \
               (SELECT slot FROM check_slots WHERE current) \
             FROM generate_series(1, $1::bigint)",
        )?;
        let drawn = tx.query(&s, &[&(kept.len() as i64)]).map_err(pg)?;
        // No current slot (a database edited by hand): the kept slot.
        let slot: i32 = drawn
            .first()
            .and_then(|r| r.get::<_, Option<i32>>(1))
            .unwrap_or(-1);
        let mut check_ids: Vec<i64> = drawn.iter().map(|r| r.get(0)).collect();
        // Each service's fields after its last check in the batch.
        let mut folded = fold(&kept, &check_ids, &services);
        // The rows to write now, with what they get: all of them without
        // a hold; with one, those with a state change, or a failure reason
        // or certificate expiry not known to be in the row, with what is
        // held of them before the batch.
        let rows_of = |folded: &Folded| -> BTreeMap<i64, Fold> {
            folded
                .folds
                .iter()
                .filter_map(|(sid, f)| {
                    let Some(hold) = hold else {
                        return Some((*sid, f.clone()));
                    };
                    // What is held under another lease (lost and claimed
                    // again meanwhile) is not this row's any more.
                    let epoch = fencing
                        .and_then(|x| x.held.epoch(services[sid].1))
                        .unwrap_or(Epoch(0));
                    let h = hold
                        .services
                        .get(sid)
                        .filter(|h| h.epoch == epoch && h.bucket == services[sid].1);
                    let reason_new = f.failure_reason.is_some()
                        && h.and_then(|h| h.failure_reason.as_ref()) != Some(&f.failure_reason);
                    let cert_new = f.cert_expires_at.is_some()
                        && h.and_then(|h| h.cert_expires_at) != Some(f.cert_expires_at);
                    if f.state_since.is_none() && !reason_new && !cert_new {
                        return None;
                    }
                    let mut merged = h.and_then(|h| h.fold.clone()).unwrap_or_default();
                    merged.then(f);
                    Some((*sid, merged))
                })
                .collect()
        };
        let mut rows = rows_of(&folded);
        let updated = update_rows(&mut tx, cache, &rows)?;
        // A service deleted since the first SELECT has no row to update:
        // its checks are dropped (the rows updated stay locked until
        // commit, so a delete now waits for this batch and then removes
        // its checks too). Checks of a service whose row is not written
        // (held) and that is deleted meanwhile are left to pruning.
        if updated.len() < rows.len() {
            let (mut k, mut ids) = (Vec::new(), Vec::new());
            for (w, id) in kept.iter().zip(&check_ids) {
                let sid = w.service_id.get();
                if !rows.contains_key(&sid) || updated.contains(&sid) {
                    k.push(*w);
                    ids.push(*id);
                } else {
                    out.written.gone += 1;
                }
            }
            (kept, check_ids) = (k, ids);
            if kept.is_empty() {
                tx.commit().map_err(pg)?;
                return Ok(out);
            }
            folded = fold(&kept, &check_ids, &services);
            rows.retain(|sid, _| updated.contains(sid));
        }
        // With a hold, each service's checks above its mark before the
        // batch: as this thread wrote them, or read (a service new to
        // this thread, or its bucket taken over or claimed again).
        let mut unrolled: HashMap<i64, (i64, i64)> = HashMap::new();
        if let Some(hold) = hold {
            let mut unknown: Vec<i64> = Vec::new();
            for sid in folded.folds.keys() {
                let epoch = fencing
                    .and_then(|x| x.held.epoch(services[sid].1))
                    .unwrap_or(Epoch(0));
                match hold
                    .services
                    .get(sid)
                    .filter(|h| h.epoch == epoch && h.bucket == services[sid].1)
                    .and_then(|h| h.unrolled)
                {
                    Some(u) => {
                        unrolled.insert(*sid, u);
                    }
                    None => unknown.push(*sid),
                }
            }
            if !unknown.is_empty() {
                let s = cache.get(&mut tx, UNROLLED_COUNTS)?;
                for r in tx.query(&s, &[&unknown]).map_err(pg)? {
                    unrolled.insert(r.get(0), (r.get(1), r.get(2)));
                }
            }
        }
        // The checks by binary COPY: PostgreSQL writes the rows of a page
        // as one WAL record (a multi-insert), where `INSERT … SELECT`
        // writes a record (with its headers, ≈ 45 B) per row.
        {
            use postgres::binary_copy::BinaryCopyInWriter;
            use postgres::types::Type;
            let sink = tx
                .copy_in(
                    "COPY checks (id, service_id, at, duration_us, result, reason, \
                       http_status, details, changed, streak, slot, unrolled, \
                       unrolled_failed) FROM STDIN BINARY",
                )
                .map_err(pg)?;
            let mut w = BinaryCopyInWriter::new(
                sink,
                &[
                    Type::INT8,
                    Type::INT8,
                    Type::INT8,
                    Type::INT8,
                    Type::TEXT,
                    Type::TEXT,
                    Type::INT4,
                    Type::TEXT,
                    Type::BOOL,
                    Type::INT4,
                    Type::INT4,
                    Type::INT2,
                    Type::INT2,
                ],
            );
            for (c, id) in kept.iter().zip(&check_ids) {
                // Counted through this check (none without a hold: the
                // batch rolls everything up; none beyond `smallint`).
                let (n, failed) = match unrolled.get_mut(&c.service_id.get()) {
                    Some(u) => {
                        u.0 += 1;
                        u.1 += i64::from(c.result == CheckResult::Fail);
                        (i16::try_from(u.0).ok(), i16::try_from(u.1).ok())
                    }
                    None => (None, None),
                };
                let (n, failed) = n.zip(failed).unzip();
                w.write(&[
                    id,
                    &c.service_id.get(),
                    &c.at.get(),
                    &c.duration_us,
                    &c.result.as_str(),
                    &c.reason,
                    &c.http_status.map(i32::from),
                    &c.details,
                    &c.transition.is_some(),
                    &streak(c),
                    &slot,
                    &n,
                    &failed,
                ])
                .map_err(pg)?;
            }
            w.finish().map_err(pg)?;
        }
        let Folded { folds, tr, .. } = folded;
        out.written.checks = kept.len();
        out.written.transitions = tr.at.len();
        if !tr.at.is_empty() {
            self.write_transitions(&mut tx, cache, &kept, tr)?;
        }
        if hold.is_none() {
            // Everything at once: the roll-ups too (the rows are locked).
            let ids: Vec<i64> = folds.keys().copied().collect();
            roll_up(&mut tx, cache, &ids, &BTreeMap::new())?;
        }
        tx.commit().map_err(pg)?;
        out.folds = folds
            .into_iter()
            .map(|(sid, f)| (sid, (services[&sid].1, f)))
            .collect();
        out.rows = rows;
        out.unrolled = unrolled;
        Ok(out)
    }

    /// The events of the batch's state changes, their mail (when it has
    /// recipients) and their channel deliveries (one per channel routed).
    fn write_transitions(
        &self,
        tx: &mut postgres::Transaction<'_>,
        cache: &mut super::StmtCache,
        kept: &[&CheckWrite],
        mut tr: Transitions,
    ) -> Result<(), StoreError> {
        let s = cache.get(
            tx,
            "SELECT nextval('events_id_seq') FROM generate_series(1, $1::bigint)",
        )?;
        tr.event_id = tx
            .query(&s, &[&(tr.at.len() as i64)])
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let s = cache.get(
            tx,
            "INSERT INTO events (id, at, service_id, service, kind, from_state, to_state, \
               check_id, reason) \
             SELECT u.id, u.at, u.sid, u.service, 'state', u.f, u.t, u.c, u.r \
             FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], \
               $6::text[], $7::bigint[], $8::text[]) AS u(id, at, sid, service, f, t, c, r)",
        )?;
        tx.execute(
            &s,
            &[
                &tr.event_id,
                &tr.at,
                &tr.service_id,
                &tr.service,
                &tr.from,
                &tr.to,
                &tr.check_id,
                &tr.reason,
            ],
        )
        .map_err(pg)?;
        // The notifying ones, with their event, in the batch's order.
        let mut mail = Mail::default();
        let mut chan = Mail::default();
        let with_event = kept
            .iter()
            .filter(|w| w.transition.is_some())
            .zip(&tr.event_id);
        for (w, &event) in with_event {
            let Some((t, n)) = w
                .transition
                .as_ref()
                .and_then(|t| Some((t, t.notify.as_ref()?)))
            else {
                continue;
            };
            let row = |m: &mut Mail| {
                m.event_id.push(event);
                m.service_id.push(w.service_id.get());
                m.service.push(n.service.clone());
                m.at.push(w.at.get());
                m.from.push(t.from.as_str().to_string());
                m.to.push(w.state.as_str().to_string());
                m.reason.push(w.reason.clone());
                m.target.push(n.target.clone());
                m.recipients
                    .push(serde_json::to_string(&n.recipients).unwrap_or_else(|_| "[]".into()));
                m.previous_since.push(t.previous_since.get());
                m.status.push(n.status().as_str().to_string());
                m.next_attempt_at.push(n.next_attempt_at().get());
                m.note.push(n.note.clone());
            };
            if !n.recipients.is_empty() {
                row(&mut mail);
            }
            row(&mut chan);
        }
        if !mail.event_id.is_empty() {
            let s = cache.get(
                tx,
                "INSERT INTO notifications (event_id, service_id, service, created_at, \
                   from_state, to_state, reason, target, recipients, previous_since, status, \
                   next_attempt_at, last_error) \
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], \
                   $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[], \
                   $11::text[], $12::bigint[], $13::text[])",
            )?;
            tx.execute(&s, &mail.params()).map_err(pg)?;
        }
        if !chan.event_id.is_empty() {
            let s = cache.get(
                tx,
                concat!(
                    "INSERT INTO deliveries (channel, event_id, service_id, service, created_at, \
                       from_state, to_state, reason, target, previous_since, status, \
                       next_attempt_at) \
                     SELECT c.name, u.e, u.sid, u.service, u.at, u.f, u.t, u.r, u.target, u.ps, \
                       u.status, u.next \
                     FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], \
                       $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[], \
                       $11::text[], $12::bigint[], $13::text[]) \
                       AS u(e, sid, service, at, f, t, r, target, rc, ps, status, next, note) \
                     JOIN services s ON s.id = u.sid CROSS JOIN channels c WHERE ",
                    super::channels::routed!(),
                    " ORDER BY u.e, c.name"
                ),
            )?;
            tx.execute(&s, &chan.params()).map_err(pg)?;
        }
        Ok(())
    }
}

/// The consecutive successes (a pass or warn) or failures (a fail) after
/// a check, as `checks.streak` stores it (the `u32` bit for bit).
fn streak(w: &CheckWrite) -> i32 {
    let n = if w.result == CheckResult::Fail {
        w.failures
    } else {
        w.successes
    };
    n as i32
}

/// A transaction for a fenced write: `READ COMMITTED` whatever the
/// server's default, so that the fence's check sees the claims committed
/// while it waited for its lock.
fn fenced_transaction(c: &mut postgres::Client) -> Result<postgres::Transaction<'_>, StoreError> {
    c.build_transaction()
        .isolation_level(postgres::IsolationLevel::ReadCommitted)
        .start()
        .map_err(pg)
}

/// Takes this node's fence lock shared until commit, then checks that
/// this node holds the buckets `wanted` at the epochs `f` names (a later
/// statement: its snapshot sees every claim committed before the lock
/// was granted); returns the ones held and pushes a
/// [`FenceError::Stale`] per other one onto `stale`.
fn fence(
    tx: &mut postgres::Transaction<'_>,
    cache: &mut StmtCache,
    f: &Fencing,
    wanted: &BTreeSet<Bucket>,
    stale: &mut Vec<FenceError>,
) -> Result<BTreeSet<Bucket>, StoreError> {
    let (bs, es): (Vec<i32>, Vec<i64>) = wanted
        .iter()
        .filter_map(|b| f.held.epoch(*b).map(|e| (i32::from(b.get()), e.0)))
        .unzip();
    let lock = cache.get(tx, FENCE_SHARED)?;
    tx.execute(&lock, &[&FENCE_LOCK, &f.node]).map_err(pg)?;
    let s = cache.get(
        tx,
        "SELECT b.bucket FROM buckets b \
         JOIN unnest($1::int[], $2::bigint[]) h(bucket, epoch) \
           ON b.bucket = h.bucket AND b.epoch = h.epoch \
         JOIN nodes n ON n.id = b.owner \
         WHERE b.owner = $3 AND n.lease_until > now()",
    )?;
    let ok: BTreeSet<Bucket> = tx
        .query(&s, &[&bs, &es, &f.node])
        .map_err(pg)?
        .iter()
        .filter_map(|r| Bucket::new(i64::from(r.get::<_, i32>(0))))
        .collect();
    for b in wanted.difference(&ok) {
        stale.push(FenceError::Stale {
            bucket: *b,
            node: f.node.clone(),
            epoch: f.held.epoch(*b).unwrap_or(Epoch(0)),
        });
    }
    Ok(ok)
}

/// Writes the service rows `rows` (state, `state_since` and
/// `last_notified_at` included); returns the ids of the rows found.
fn update_rows(
    tx: &mut postgres::Transaction<'_>,
    cache: &mut StmtCache,
    rows: &BTreeMap<i64, Fold>,
) -> Result<BTreeSet<i64>, StoreError> {
    if rows.is_empty() {
        return Ok(BTreeSet::new());
    }
    // `last_healthy_at`: a service leaving the healthy state without a
    // healthy check in what this writer held (a node that took it over)
    // was healthy at its newest check before this batch.
    let s = cache.get(
        tx,
        "UPDATE services s SET state = u.state, successes = u.successes, \
           failures = u.failures, last_check_at = u.at, last_result = u.result, \
           last_reason = u.reason, last_duration_us = u.duration_us, \
           last_healthy_at = COALESCE(u.healthy_at, \
             CASE WHEN s.state = 'healthy' AND u.state <> 'healthy' THEN \
               (SELECT max(c.at) FROM checks c WHERE c.service_id = s.id \
                  AND c.id > COALESCE(s.last_check_id, 0)) END, \
             s.last_healthy_at), \
           last_failure_reason = COALESCE(u.failure_reason, s.last_failure_reason), \
           cert_expires_at = COALESCE(u.cert_expires_at, s.cert_expires_at), \
           state_since = COALESCE(u.state_since, s.state_since), \
           last_notified_at = COALESCE(u.notified_at, s.last_notified_at), \
           last_check_id = u.check_id \
         FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], \
           $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::text[], $11::bigint[], \
           $12::bigint[], $13::bigint[], $14::bigint[]) \
           AS u(id, state, successes, failures, at, result, reason, duration_us, healthy_at, \
             failure_reason, cert_expires_at, state_since, notified_at, check_id) \
         WHERE s.id = u.id RETURNING s.id",
    )?;
    let fs: Vec<&Fold> = rows.values().collect();
    Ok(tx
        .query(
            &s,
            &[
                &rows.keys().copied().collect::<Vec<_>>(),
                &fs.iter().map(|f| f.state.as_str()).collect::<Vec<_>>(),
                &fs.iter().map(|f| f.successes).collect::<Vec<_>>(),
                &fs.iter().map(|f| f.failures).collect::<Vec<_>>(),
                &fs.iter().map(|f| f.at).collect::<Vec<_>>(),
                &fs.iter().map(|f| f.result.as_str()).collect::<Vec<_>>(),
                &fs.iter().map(|f| f.reason.as_deref()).collect::<Vec<_>>(),
                &fs.iter().map(|f| f.duration_us).collect::<Vec<_>>(),
                &fs.iter().map(|f| f.healthy_at).collect::<Vec<_>>(),
                &fs.iter()
                    .map(|f| f.failure_reason.as_deref())
                    .collect::<Vec<_>>(),
                &fs.iter().map(|f| f.cert_expires_at).collect::<Vec<_>>(),
                &fs.iter().map(|f| f.state_since).collect::<Vec<_>>(),
                &fs.iter().map(|f| f.notified_at).collect::<Vec<_>>(),
                &fs.iter().map(|f| f.check_id).collect::<Vec<_>>(),
            ],
        )
        .map_err(pg)?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Rolls the checks of the services `ids` above their marks
/// (`services.rolled_through`) up from the raw rows into their hours (and
/// into days already folded), writes the held fields `folds` into their
/// rows, and moves each mark to its newest check read, where the mark is
/// still what was read (compare-and-set): one transaction (the caller's),
/// so each check reaches the roll-ups exactly once, whoever rolls it and
/// whatever crashes. A service whose mark moved meanwhile is left out
/// (its fields too). Returns the services with no check above their
/// mark now.
fn roll_up(
    tx: &mut postgres::Transaction<'_>,
    cache: &mut StmtCache,
    ids: &[i64],
    folds: &BTreeMap<i64, Fold>,
) -> Result<BTreeSet<i64>, StoreError> {
    if ids.is_empty() {
        return Ok(BTreeSet::new());
    }
    let s = cache.get(
        tx,
        "SELECT s.id, s.rolled_through, c.id, c.at, c.result, c.duration_us \
         FROM services s LEFT JOIN checks c \
           ON c.service_id = s.id AND c.id > s.rolled_through \
         WHERE s.id = ANY($1)",
    )?;
    let mut marks: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    let mut hours: BTreeMap<(i64, i64), Roll> = BTreeMap::new();
    for r in tx.query(&s, &[&ids]).map_err(pg)? {
        let (sid, old): (i64, i64) = (r.get(0), r.get(1));
        let m = marks.entry(sid).or_insert((old, old));
        let Some(cid) = r.get::<_, Option<i64>>(2) else {
            continue;
        };
        m.1 = m.1.max(cid);
        let (at, result, d): (i64, String, i64) = (r.get(3), r.get(4), r.get(5));
        let result: CheckResult = result.parse().map_err(|_| {
            StoreError::Corrupt(crate::store::Corruption {
                table: "checks".into(),
                row: Some(cid),
                column: "result".into(),
                detail: format!("{result:?} is not a result"),
            })
        })?;
        hours.entry((hour_of(at), sid)).or_default().add(result, d);
    }
    let todo: Vec<(i64, (i64, i64), Option<&Fold>)> = marks
        .iter()
        .filter(|(sid, (old, new))| new > old || folds.contains_key(sid))
        .map(|(sid, m)| (*sid, *m, folds.get(sid)))
        .collect();
    // A service with no check above its mark and nothing to write.
    let mut rolled: BTreeSet<i64> = marks
        .iter()
        .filter(|(sid, (old, new))| new == old && !folds.contains_key(sid))
        .map(|(sid, _)| *sid)
        .collect();
    if todo.is_empty() {
        return Ok(rolled);
    }
    let s = cache.get(
        tx,
        "UPDATE services s SET successes = COALESCE(u.successes, s.successes), \
           failures = COALESCE(u.failures, s.failures), \
           last_check_at = COALESCE(u.at, s.last_check_at), \
           last_result = COALESCE(u.result, s.last_result), \
           last_reason = CASE WHEN u.at IS NULL THEN s.last_reason ELSE u.reason END, \
           last_duration_us = COALESCE(u.duration_us, s.last_duration_us), \
           last_healthy_at = COALESCE(u.healthy_at, s.last_healthy_at), \
           last_failure_reason = COALESCE(u.failure_reason, s.last_failure_reason), \
           cert_expires_at = COALESCE(u.cert_expires_at, s.cert_expires_at), \
           last_check_id = COALESCE(u.check_id, s.last_check_id), \
           rolled_through = u.mark \
         FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], \
           $6::bigint[], $7::text[], $8::text[], $9::bigint[], $10::bigint[], $11::text[], \
           $12::bigint[], $13::bigint[]) \
           AS u(id, old, mark, successes, failures, at, result, reason, duration_us, \
             healthy_at, failure_reason, cert_expires_at, check_id) \
         WHERE s.id = u.id AND s.rolled_through = u.old RETURNING s.id",
    )?;
    let f = |g: &dyn Fn(&Fold) -> Option<i64>| -> Vec<Option<i64>> {
        todo.iter().map(|(_, _, f)| f.and_then(g)).collect()
    };
    let done: BTreeSet<i64> = tx
        .query(
            &s,
            &[
                &todo.iter().map(|t| t.0).collect::<Vec<_>>(),
                &todo.iter().map(|t| t.1 .0).collect::<Vec<_>>(),
                &todo.iter().map(|t| t.1 .1).collect::<Vec<_>>(),
                &f(&|f| Some(f.successes)),
                &f(&|f| Some(f.failures)),
                &f(&|f| Some(f.at)),
                &todo
                    .iter()
                    .map(|t| t.2.map(|f| f.result.as_str()))
                    .collect::<Vec<_>>(),
                &todo
                    .iter()
                    .map(|t| t.2.and_then(|f| f.reason.as_deref()))
                    .collect::<Vec<_>>(),
                &f(&|f| Some(f.duration_us)),
                &f(&|f| f.healthy_at),
                &todo
                    .iter()
                    .map(|t| t.2.and_then(|f| f.failure_reason.as_deref()))
                    .collect::<Vec<_>>(),
                &f(&|f| f.cert_expires_at),
                &f(&|f| Some(f.check_id)),
            ],
        )
        .map_err(pg)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    hours.retain(|(_, sid), _| done.contains(sid));
    // Each check goes to its hour's roll-up only; the hour reaches its
    // day when folded (`fold_hours`), or now when it already was.
    let late = merge_rolls(tx, "uptime", "hour", &hours)?;
    if !late.is_empty() {
        let late = hours_to_days(hours.iter().filter(|(k, _)| late.contains(k)));
        merge_rolls(tx, "uptime_day", "day", &late)?;
    }
    rolled.extend(done);
    Ok(rolled)
}

/// What a batch writes besides its checks, computed from them.
struct Folded {
    /// Each service's fields after its last check in the batch.
    folds: BTreeMap<i64, Fold>,
    /// The batch's state changes.
    tr: Transitions,
}

/// Folds the checks `kept` (with their ids) into [`Folded`].
fn fold(
    kept: &[&CheckWrite],
    check_ids: &[i64],
    services: &HashMap<i64, (String, Bucket)>,
) -> Folded {
    let mut folds: BTreeMap<i64, Fold> = BTreeMap::new();
    let mut tr = Transitions::default();
    for (w, id) in kept.iter().zip(check_ids) {
        let sid = w.service_id.get();
        let at = w.at.get();
        let f = folds.entry(sid).or_default();
        f.state = w.state.as_str().to_string();
        f.successes = i64::from(w.successes);
        f.failures = i64::from(w.failures);
        f.at = at;
        f.result = w.result.as_str().to_string();
        f.reason.clone_from(&w.reason);
        f.duration_us = w.duration_us;
        if w.state == HealthState::Healthy {
            f.healthy_at = Some(at);
        }
        if w.result != CheckResult::Pass && w.reason.is_some() {
            f.failure_reason.clone_from(&w.reason);
        }
        if w.cert_expires_at.is_some() {
            f.cert_expires_at = w.cert_expires_at;
        }
        f.check_id = *id;
        if let Some(t) = &w.transition {
            f.state_since = Some(at);
            if let Some(n) = &t.notify {
                f.notified_at = Some(n.not_before.get());
            }
            tr.at.push(at);
            tr.service_id.push(sid);
            tr.service.push(services[&sid].0.clone());
            tr.from.push(t.from.as_str().to_string());
            tr.to.push(w.state.as_str().to_string());
            tr.check_id.push(*id);
            tr.reason.push(w.reason.clone());
        }
    }
    Folded { folds, tr }
}

/// Parallel arrays of outbox rows.
#[derive(Default)]
struct Mail {
    event_id: Vec<i64>,
    service_id: Vec<i64>,
    service: Vec<String>,
    at: Vec<i64>,
    from: Vec<String>,
    to: Vec<String>,
    reason: Vec<Option<String>>,
    target: Vec<String>,
    recipients: Vec<String>,
    previous_since: Vec<i64>,
    status: Vec<String>,
    next_attempt_at: Vec<i64>,
    note: Vec<Option<String>>,
}

impl Mail {
    fn params(&self) -> [&(dyn postgres::types::ToSql + Sync); 13] {
        [
            &self.event_id,
            &self.service_id,
            &self.service,
            &self.at,
            &self.from,
            &self.to,
            &self.reason,
            &self.target,
            &self.recipients,
            &self.previous_since,
            &self.status,
            &self.next_attempt_at,
            &self.note,
        ]
    }
}
