//! Which services a clustered node's scheduler runs (SPEC section 19): the
//! services of the buckets its node holds ([`Ownership`](super::Ownership)).
//!
//! The held set comes from the lease manager's `watch` channel. On a
//! change, the services of lost buckets get a new generation (their
//! timetable entries and any result in flight are dropped) and leave the
//! *active* set at once; gained buckets are first read again through
//! [`Ownership::load`](super::Ownership::load) (the state the previous owner left), then their
//! services join the active set, each first due on the previous owner's
//! cadence ([`continued_due`]): the next slot of `last_check + k·interval`,
//! never within an interval of the last check the store has.
//! Each change walks the entries once: changes of the held set are rare
//! (a node joining, leaving or dying), checks are not.
//!
//! A heartbeat ping served while no node held the service's bucket (a
//! takeover's gap, start-up) reached no scheduler; the store keeps it
//! (`heartbeat_pings`), and the read of a gained bucket brings the kept
//! pings: those after the service's stored last check were judged by no
//! owner, and are judged here once the bucket is active, in the order
//! received ([`Scheduler::on_loaded`]). A ping that arrives while the read
//! runs waits for it. docs/cluster.md, "Pings without an owner".
//!
//! The held set also carries its deadline on the local monotonic clock
//! ([`Held::valid_until`]); the loop checks it before each firing round
//! and before applying a result ([`Scheduler::expire_held_if_due`]), not
//! only when the channel changes: a node resumed after a pause longer than
//! its leases must not start the probes that came due while it was
//! stopped, whichever of its tasks the runtime wakes first.

use super::timetable::Due;
use super::{BucketsRead, LoadBuckets, Scheduler};
use crate::cluster::Held;
use crate::store::{ServiceRecord, StoredPing};
use healthchecker_core::cluster::{Bucket, BucketSet};
use healthchecker_core::heartbeat::Ping;
use healthchecker_core::schedule::first_due;
use healthchecker_core::{ServiceId, UnixMs};
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The first wait before a failed read of gained buckets is tried again;
/// it doubles up to [`LOAD_RETRY_MAX`].
const LOAD_RETRY: Duration = Duration::from_millis(250);
const LOAD_RETRY_MAX: Duration = Duration::from_secs(5);

/// Pings that may wait for the read of their gained bucket: a read takes
/// milliseconds, and a service sends at most 30 pings a minute; beyond
/// this many (a read retried for long) a ping is dropped with a warning.
pub(super) const MAX_AWAITING_PINGS: usize = 4_096;

/// What a command changed in a service while its gained bucket was being
/// read ([`Scheduler::on_loaded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Change {
    /// Paused or resumed: the read's record, with the command's flag.
    Paused,
    /// Registered, updated or removed: the read's state and counters with
    /// the command's parameters and flag; removed, or registered after the
    /// read's snapshot, the command's version.
    Whole,
}

/// The services read for gained buckets, and their kept pings.
pub(super) struct Loaded {
    seq: u64,
    buckets: Vec<Bucket>,
    records: Vec<ServiceRecord>,
    pings: Vec<StoredPing>,
}

/// The buckets of a held set.
pub(super) fn bucket_set(held: &Held) -> BucketSet {
    held.leases.keys().copied().collect()
}

/// The next held set and its deadline; `None` when the sender is gone.
/// Never completes without a channel.
pub(super) async fn held_changed(
    rx: &mut Option<watch::Receiver<Held>>,
) -> Option<(BucketSet, Option<Instant>)> {
    match rx {
        Some(rx) => match rx.changed().await {
            Ok(()) => {
                let held = rx.borrow_and_update();
                Some((bucket_set(&held), held.valid_until))
            }
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

/// When a gained polled service is first due, on the scheduler's
/// monotonic scale (`now` there is wall time `wall`, Unix ms): the first
/// slot after `wall` of the previous owner's fixed-rate grid
/// `last + k·interval` (`last`: its latest stored check), so the handover
/// keeps the cadence. A probe of the old owner whose result was dropped
/// at the move was on that grid too, so the first check here comes a whole
/// interval after it. A `last` ahead of this node's clock (clock skew
/// between nodes) waits one interval. Never checked: at the service's
/// phase ([`first_due`]).
pub(super) fn continued_due(
    now: u64,
    wall: i64,
    last: Option<i64>,
    id: ServiceId,
    interval_ms: u64,
) -> u64 {
    let Some(last) = last else {
        return first_due(now, id.get() as u64, interval_ms);
    };
    let iv = interval_ms.max(1) as i64;
    let behind = wall - last;
    let wait = if behind < 0 { iv } else { iv - behind % iv };
    now + wait as u64
}

impl Scheduler {
    /// The node now holds `new`, safe to act on until `until` (local
    /// monotonic time; `None`: no deadline). A set already past its
    /// deadline is nothing held.
    pub(super) fn on_held(
        &mut self,
        new: BucketSet,
        until: Option<Instant>,
        loaded_tx: &mpsc::Sender<Loaded>,
        cancel: &CancellationToken,
    ) {
        let expired = until.is_some_and(|t| Instant::now() >= t);
        let new = if expired { BucketSet::EMPTY } else { new };
        self.held_until = if expired { None } else { until };
        let lost = self.held.minus(&new);
        let gained = new.minus(&self.held);
        self.held = new;
        self.lose(lost);
        if gained.is_empty() {
            return;
        }
        tracing::info!(buckets = gained.len(), "buckets gained");
        let Some(load) = self.load.clone() else {
            self.activate(gained);
            return;
        };
        self.load_seq += 1;
        let seq = self.load_seq;
        for b in gained.iter() {
            self.loading[usize::from(b.get())] = seq;
        }
        let buckets: Vec<Bucket> = gained.iter().collect();
        tokio::spawn(load_until_read(
            load,
            seq,
            buckets,
            loaded_tx.clone(),
            cancel.clone(),
        ));
    }

    /// Drops everything held once the held set's deadline has passed on
    /// the local monotonic clock, without waiting for the lease manager to
    /// publish it: after a stall, this task may run before that one.
    pub(super) fn expire_held_if_due(&mut self) {
        if self.held_until.is_some_and(|t| Instant::now() >= t) {
            self.held_until = None;
            let lost = self.held;
            self.held = BucketSet::EMPTY;
            tracing::warn!("the held leases' deadline has passed: stopping their services");
            self.lose(lost);
        }
    }

    /// Keeps a ping of a service whose gained bucket is still being read,
    /// for [`Scheduler::on_loaded`].
    pub(super) fn await_ping(
        &mut self,
        bucket: Bucket,
        id: ServiceId,
        ping: Ping,
        at: UnixMs,
        output: Option<String>,
    ) {
        if self.awaiting_pings.len() >= MAX_AWAITING_PINGS {
            tracing::warn!(
                service = id.get(),
                "too many pings wait for their buckets' reads: one dropped"
            );
            return;
        }
        self.awaiting_pings.push((
            bucket,
            StoredPing {
                service: id,
                at,
                ping,
                output,
            },
        ));
    }

    /// `lost` leaves the active set; its services get a new generation
    /// (their timetable entries and results in flight are dropped).
    fn lose(&mut self, lost: BucketSet) {
        if lost.is_empty() {
            return;
        }
        // The next owner judges them from the store.
        self.awaiting_pings.retain(|(b, _)| !lost.contains(*b));
        self.changed_while_loading
            .retain(|_, (_, b, _)| !lost.contains(*b));
        self.active = self.active.minus(&lost);
        for b in lost.iter() {
            self.loading[usize::from(b.get())] = 0;
        }
        for e in self.entries.values_mut() {
            if lost.contains(e.bucket) {
                e.generation = e.generation.wrapping_add(1);
            }
        }
        tracing::info!(
            buckets = lost.len(),
            "buckets lost: their services stop here"
        );
    }

    /// The services of gained buckets as stored: the entries of the
    /// buckets still awaited are replaced (state, counters, heartbeat
    /// clock), those deleted meanwhile removed, and the buckets activated;
    /// then the pings no owner judged are judged ([`unjudged`]).
    pub(super) async fn on_loaded(&mut self, loaded: Loaded) {
        let mut fresh = BucketSet::EMPTY;
        for b in loaded.buckets {
            let slot = &mut self.loading[usize::from(b.get())];
            if *slot == loaded.seq && self.held.contains(b) {
                *slot = 0;
                fresh.insert(b);
            }
        }
        if fresh.is_empty() {
            return;
        }
        // Changed by a command since the read began: a service registered
        // meanwhile is not taken for one deleted, one removed meanwhile
        // does not come back, and the command's parameters and flag stand
        // over the read's (below).
        let changed: std::collections::HashMap<ServiceId, Change> = self
            .changed_while_loading
            .iter()
            .filter(|(_, (seq, _, _))| *seq == loaded.seq)
            .map(|(id, (_, _, c))| (*id, *c))
            .collect();
        self.changed_while_loading
            .retain(|_, (seq, _, _)| *seq != loaded.seq);
        let records: Vec<ServiceRecord> = loaded
            .records
            .into_iter()
            .filter(|r| fresh.contains(Bucket::of(&r.spec.name)))
            .collect();
        let ids: HashSet<ServiceId> = records.iter().map(|r| r.id).collect();
        let gone: Vec<ServiceId> = self
            .entries
            .iter()
            .filter(|(id, e)| {
                fresh.contains(e.bucket) && !ids.contains(id) && !changed.contains_key(id)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(e) = self.entries.remove(&id) {
                self.metrics.remove_service(&e.name);
            }
        }
        for mut rec in records {
            let id = rec.id;
            if let Some(change) = changed.get(&id) {
                // Changed by a command since the read began: the stored
                // state and counters, the command's flag (and, for a
                // registration or update, its parameters); removed: gone.
                let Some(e) = self.entries.get(&id) else {
                    continue;
                };
                rec.paused = e.paused;
                if *change == Change::Whole {
                    rec.spec = (*e.spec).clone();
                }
            }
            let mut entry = self.entry_of(rec);
            if let Some(old) = self.entries.get(&id) {
                // A probe of the old generation may still run: keep its
                // flag, and the generation count, so its result is dropped.
                entry.generation = old.generation;
                entry.in_flight = old.in_flight;
            }
            self.entries.insert(id, entry);
        }
        self.deps = None;
        let mut pings = loaded.pings;
        let mut waited = Vec::new();
        for (b, p) in std::mem::take(&mut self.awaiting_pings) {
            if fresh.contains(b) {
                pings.push(p);
            } else if self.loading[usize::from(b.get())] != 0 {
                waited.push((b, p));
            }
        }
        self.awaiting_pings = waited;
        let pings = unjudged(pings, |id| {
            self.entries
                .get(&id)
                .filter(|e| fresh.contains(e.bucket) && e.beat.is_some() && !e.paused)
                .map(|e| e.last_check)
        });
        self.activate(fresh);
        if !pings.is_empty() {
            tracing::info!(
                pings = pings.len(),
                "judging heartbeat pings received while their buckets had no owner"
            );
        }
        let now = self.mono_ms();
        for p in pings {
            self.on_ping(p.service, p.ping, p.at, p.output, now).await;
        }
    }

    /// Starts the services of `buckets`: a polled one on its previous
    /// owner's cadence ([`continued_due`]), a heartbeat at its deadline.
    fn activate(&mut self, buckets: BucketSet) {
        let now = self.mono_ms();
        let wall = self.cfg.clock.now_ms();
        let mut start = Vec::new();
        for (id, e) in self.entries.iter_mut() {
            if buckets.contains(e.bucket) {
                e.generation = e.generation.wrapping_add(1);
                if !e.paused {
                    start.push(*id);
                }
            }
        }
        for b in buckets.iter() {
            self.active.insert(b);
        }
        for id in start {
            let Some(e) = self.entries.get(&id) else {
                continue;
            };
            if e.beat.is_some() {
                self.schedule_first(id, now);
                continue;
            }
            let at = continued_due(now, wall, e.last_check, id, e.spec.interval as u64 * 1000);
            let generation = e.generation;
            self.timetable.push(Due {
                at,
                service: id,
                generation,
            });
        }
    }
}

/// The pings of `pings` (kept by the store, or waiting for a read) that
/// no owner judged, in the order received: each once (the store's copy
/// and the wake-up's of one ping are the same ping), of a service
/// `last_check` knows (`Some(its stored last check)`: a heartbeat of a
/// fresh bucket, not paused), and after that last check (a judged ping's
/// check is stored at the ping's time; the old owner's writes are
/// fenced, so once this node holds the bucket the stored last check is
/// final).
pub(super) fn unjudged(
    mut pings: Vec<StoredPing>,
    last_check: impl Fn(ServiceId) -> Option<Option<i64>>,
) -> Vec<StoredPing> {
    pings.sort_by_key(|p| (p.at, p.service, p.ping.suffix()));
    pings.dedup_by(|a, b| (a.at, a.service, a.ping) == (b.at, b.service, b.ping));
    pings.retain(|p| match last_check(p.service) {
        Some(last) => last.is_none_or(|l| p.at.get() > l),
        None => false,
    });
    pings
}

/// Reads the services of `buckets` until it works (or the scheduler
/// stops), then hands them to the loop.
async fn load_until_read(
    load: LoadBuckets,
    seq: u64,
    buckets: Vec<Bucket>,
    tx: mpsc::Sender<Loaded>,
    cancel: CancellationToken,
) {
    let mut wait = LOAD_RETRY;
    loop {
        let read = tokio::select! {
            _ = cancel.cancelled() => return,
            r = load(buckets.clone()) => r,
        };
        match read {
            Ok(BucketsRead { services, pings }) => {
                let _ = tx
                    .send(Loaded {
                        seq,
                        buckets,
                        records: services,
                        pings,
                    })
                    .await;
                return;
            }
            Err(e) => {
                tracing::warn!(buckets = buckets.len(), error = %e,
                    "cannot read the services of gained buckets; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(LOAD_RETRY_MAX);
            }
        }
    }
}
