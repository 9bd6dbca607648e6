//! The batch of check results on PostgreSQL: one transaction writes a
//! batch's checks, its services' per-check fields, and with each state
//! change its event, notification and channel deliveries (SPEC section 4:
//! one transaction), and adds the batch to the roll-ups. Every statement
//! carries the whole batch as arrays (`unnest`), so a batch costs a fixed
//! number of round trips whatever its size.
//!
//! **Fencing** (SPEC section 19): a batch written with [`Fencing`] first
//! checks, in one statement, that this node holds each of the batch's
//! buckets at the epoch it names, and locks those lease rows `FOR SHARE`
//! in bucket order until commit (as `cluster::fence` does for one
//! bucket: a claim skips locked rows, so no lease changes hands before
//! the commit). The checks of a bucket that is not held (taken over,
//! expired, released) are dropped and reported as
//! [`FenceError::Stale`] in [`Written::stale`]: the caller stops working
//! on that bucket; the rest of the batch commits.

use super::rollup::{hour_of, hours_to_days, merge_rolls, Roll};
use super::{pg, PgStore};
use crate::cluster::{FenceError, Held};
use crate::store::{CheckWrite, StoreError};
use healthchecker_core::cluster::{Bucket, Epoch};
use healthchecker_core::{CheckResult, HealthState};
use std::collections::{BTreeMap, BTreeSet, HashMap};

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

/// A service's per-check fields after the batch's checks of it.
#[derive(Default)]
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
    /// Writes `batch` in one transaction (see the module docs); with
    /// `fencing`, only the checks of buckets this node holds. A database
    /// failure rolls everything back and is returned (the caller keeps the
    /// batch and retries); a stale lease is not a failure but a part of
    /// [`Written`].
    pub fn write_batch(
        &self,
        fencing: Option<&Fencing>,
        batch: &[CheckWrite],
    ) -> Result<Written, StoreError> {
        let r = self.write_batch_once(fencing, batch);
        self.note_write(&r);
        r
    }

    fn write_batch_once(
        &self,
        fencing: Option<&Fencing>,
        batch: &[CheckWrite],
    ) -> Result<Written, StoreError> {
        let mut out = Written::default();
        if batch.is_empty() {
            return Ok(out);
        }
        let mut l = self.write_conn()?;
        let (c, cache) = l.conn().parts();
        let mut tx = c.transaction().map_err(pg)?;
        // The batch's services as they are now: name and bucket; a
        // service deleted meanwhile is missing. No row lock here (a lock
        // is a WAL record per row): the `UPDATE services` below locks the
        // rows it finds before any check is inserted, and drops the checks
        // of a service deleted in between (see `fold_services`).
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
                let (bs, es): (Vec<i32>, Vec<i64>) = wanted
                    .iter()
                    .filter_map(|b| f.held.epoch(*b).map(|e| (i32::from(b.get()), e.0)))
                    .unzip();
                let s = cache.get(
                    &mut tx,
                    "SELECT b.bucket FROM buckets b \
                     JOIN unnest($1::int[], $2::bigint[]) h(bucket, epoch) \
                       ON b.bucket = h.bucket AND b.epoch = h.epoch \
                     WHERE b.owner = $3 AND b.expires_at > now() \
                     ORDER BY b.bucket FOR SHARE OF b",
                )?;
                let ok: BTreeSet<Bucket> = tx
                    .query(&s, &[&bs, &es, &f.node])
                    .map_err(pg)?
                    .iter()
                    .filter_map(|r| Bucket::new(i64::from(r.get::<_, i32>(0))))
                    .collect();
                for b in wanted.difference(&ok) {
                    out.stale.push(FenceError::Stale {
                        bucket: *b,
                        node: f.node.clone(),
                        epoch: f.held.epoch(*b).unwrap_or(Epoch(0)),
                    });
                }
                Some(ok)
            }
        };
        let mut kept: Vec<&CheckWrite> = batch
            .iter()
            .filter(|w| match services.get(&w.service_id.get()) {
                None => {
                    out.gone += 1;
                    false
                }
                Some((_, b)) => allowed.as_ref().is_none_or(|ok| ok.contains(b)),
            })
            .collect();
        if kept.is_empty() {
            tx.commit().map_err(pg)?;
            return Ok(out);
        }
        // Check ids in the batch's order (the events name them).
        let s = cache.get(
            &mut tx,
            "SELECT nextval('checks_id_seq') FROM generate_series(1, $1::bigint)",
        )?;
        let mut check_ids: Vec<i64> = tx
            .query(&s, &[&(kept.len() as i64)])
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        // Each service's fields after its last check in the batch, and the
        // batch's roll-ups.
        let mut folded = fold(&kept, &check_ids, &services);
        let s = cache.get(
            &mut tx,
            "UPDATE services s SET state = u.state, successes = u.successes, \
               failures = u.failures, last_check_at = u.at, last_result = u.result, \
               last_reason = u.reason, last_duration_us = u.duration_us, \
               last_healthy_at = COALESCE(u.healthy_at, s.last_healthy_at), \
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
        let fs: Vec<&Fold> = folded.folds.values().collect();
        let updated: BTreeSet<i64> = tx
            .query(
                &s,
                &[
                    &folded.folds.keys().copied().collect::<Vec<_>>(),
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
            .collect();
        // A service deleted since the first SELECT has no row to update:
        // its checks are dropped (the rows updated stay locked until
        // commit, so a delete now waits for this batch and then removes
        // its checks too).
        if updated.len() < folded.folds.len() {
            let (mut k, mut ids) = (Vec::new(), Vec::new());
            for (w, id) in kept.iter().zip(&check_ids) {
                if updated.contains(&w.service_id.get()) {
                    k.push(*w);
                    ids.push(*id);
                } else {
                    out.gone += 1;
                }
            }
            (kept, check_ids) = (k, ids);
            if kept.is_empty() {
                tx.commit().map_err(pg)?;
                return Ok(out);
            }
            folded = fold(&kept, &check_ids, &services);
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
                       http_status, details, changed) FROM STDIN BINARY",
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
                ],
            );
            for (c, id) in kept.iter().zip(&check_ids) {
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
                ])
                .map_err(pg)?;
            }
            w.finish().map_err(pg)?;
        }
        let Folded { hours, tr, .. } = folded;
        out.checks = kept.len();
        out.transitions = tr.at.len();
        if !tr.at.is_empty() {
            self.write_transitions(&mut tx, cache, &kept, tr)?;
        }
        // Each check goes to its hour's roll-up only; the hour reaches its
        // day when folded (`fold_hours`), or now when it already was.
        let late = merge_rolls(&mut tx, "uptime", "hour", &hours)?;
        if !late.is_empty() {
            let late = hours_to_days(hours.iter().filter(|(k, _)| late.contains(k)));
            merge_rolls(&mut tx, "uptime_day", "day", &late)?;
        }
        tx.commit().map_err(pg)?;
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

/// What a batch writes besides its checks, computed from them.
struct Folded {
    /// Each service's fields after its last check in the batch.
    folds: BTreeMap<i64, Fold>,
    /// The batch's hourly roll-ups, by `(hour, service id)`.
    hours: BTreeMap<(i64, i64), Roll>,
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
    let mut hours: BTreeMap<(i64, i64), Roll> = BTreeMap::new();
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
        hours
            .entry((hour_of(at), sid))
            .or_default()
            .add(w.result, w.duration_us);
    }
    Folded { folds, hours, tr }
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
