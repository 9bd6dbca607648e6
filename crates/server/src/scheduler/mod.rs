//! The scheduler: one task, one timer heap, every service (SPEC sections 3
//! and 11).
//!
//! It owns each service's schedule and its [`Monitor`] (the pure state
//! machine, state start and flap slot of healthchecker_core::monitor). Due
//! services are popped from one `Timetable` keyed by due time (not a task
//! or timer per service); each due check runs as a short-lived task bounded
//! by a semaphore and by the service's own timeout. Results come back on a
//! channel; the monitor turns each into a step, which leaves as one
//! [`CheckWrite`](crate::store::CheckWrite) (`record.rs`) for the batch
//! writer, which records the check, the event and the outbox row in one
//! transaction. This module decides only *when*; what a result means is the
//! monitor's, how it is stored the writer's.
//!
//! Wall time comes from the injected [`Clock`](crate::clock::Clock) and monotonic time from
//! `tokio::time`, so the tests (`tests.rs`) run the whole loop on tokio's
//! paused clock with scripted checks.
//!
//! Schedules are fixed-rate with a deterministic per-service phase
//! ([`healthchecker_core::schedule`]), so a burst of registrations does
//! not become a burst of checks, and a restart keeps each service's phase.
//!
//! In a cluster (SPEC section 19) the scheduler fires only the services of
//! the buckets its node holds ([`Ownership`], `owned.rs`): each entry keeps
//! its bucket, computed once, and the check before a probe is one bit of a
//! [`BucketSet`]. Without an `Ownership` (SQLite) every bucket is active.

mod beat;
mod handle;
mod owned;
mod probe;
mod record;
#[cfg(test)]
mod tests;
mod timetable;

pub use handle::{BucketsRead, Command, LoadBuckets, Ownership, SchedulerConfig, SchedulerHandle};
pub use probe::INTERNAL_ERROR;

use crate::metrics::Metrics;
use crate::probe::{ProbeOutcome, Prober};
use crate::store::{NotifyWrite, ServiceRecord, WriterHandle};
use beat::{Beat, HEARTBEAT_RECHECK_MS};
use healthchecker_core::cluster::{Bucket, BucketSet};
use healthchecker_core::heartbeat::Verdict;
use healthchecker_core::monitor::{Change, Monitor, Rules};
use healthchecker_core::schedule::{first_due, jitter_ms, next_due};
use healthchecker_core::{HealthState, HealthTracker, ServiceId, ServiceSpec, UnixMs};
use probe::Checker;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use timetable::{Due, Timetable};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for running probes.
pub const SHUTDOWN_PROBES: Duration = Duration::from_secs(4);

/// The longest the loop sleeps without a due check.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// The shortest time between two firing rounds. Waking once per due
/// millisecond costs a context switch per check at 3,333 checks/s; a
/// round every 20 ms starts about 67 checks together, whose connects,
/// answers and closes then reach the runtime in batches (one `epoll_wait`
/// for many sockets, as a saturated client gets them). Measured at
/// 100,000 services: 5 ms rounds cost 84–94 µs a check, 20 ms rounds
/// 69–72 µs, for a lag p99 of 25 ms instead of 10 ms (the budget is
/// 50 ms; docs/performance.md).
const FIRE_TICK: Duration = Duration::from_millis(20);

/// One scheduled service.
struct Entry {
    name: Arc<str>,
    /// The cluster bucket of the name, computed once.
    bucket: Bucket,
    spec: Arc<ServiceSpec>,
    /// State machine, state start, flap slot.
    monitor: Monitor,
    paused: bool,
    /// Bumped on every reschedule: older timetable entries are stale.
    generation: u32,
    in_flight: bool,
    /// A heartbeat service's clock (it is never probed).
    beat: Option<Beat>,
    /// When its latest check started (Unix ms, as stored): where a gained
    /// bucket's service continues its previous owner's cadence.
    last_check: Option<i64>,
}

/// What every check's task shares, behind one reference count: cloning
/// its parts for each check (the prober's TLS configurations, the
/// channel) cost about ten atomic increments and decrements a check, on
/// cache lines both runtime workers write. A probe task touches no metric
/// either: its lag goes back with its result.
struct ProbeCtx {
    checker: Checker,
    done: mpsc::UnboundedSender<Done>,
    clock: crate::clock::Clock,
}

/// A check that is due while every probe slot is taken: started, in due
/// order, as running ones finish.
struct Waiting {
    id: ServiceId,
    generation: u32,
    due_at: Instant,
}

/// A finished check, from its probe task back to the loop.
struct Done {
    id: ServiceId,
    generation: u32,
    at: UnixMs,
    /// From the check's due time to its start (when it got its slot),
    /// observed by the loop (one writer of the histogram, not every
    /// probe task).
    lag: Duration,
    outcome: ProbeOutcome,
}

/// Starts the scheduler task with the stored services. It stops when
/// `cancel` fires, after in-flight probes finish or time out.
pub fn start(
    services: Vec<ServiceRecord>,
    cfg: SchedulerConfig,
    prober: Prober,
    writer: WriterHandle,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> SchedulerHandle {
    let parts = Parts {
        cfg,
        checker: Checker::Real(prober),
        writer,
        metrics,
    };
    start_with(services, parts, cancel, tracker)
}

/// What the loop works with besides its services.
struct Parts {
    cfg: SchedulerConfig,
    checker: Checker,
    writer: WriterHandle,
    metrics: Arc<Metrics>,
}

fn start_with(
    services: Vec<ServiceRecord>,
    parts: Parts,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> SchedulerHandle {
    let (tx, rx) = mpsc::channel(4096);
    let alive = Arc::new(std::sync::atomic::AtomicI64::new(parts.cfg.clock.now_ms()));
    let s = Scheduler {
        epoch: Instant::now(),
        entries: crate::IdMap::with_capacity_and_hasher(services.len(), Default::default()),
        deps: None,
        timetable: Timetable::with_capacity(services.len()),
        slots: parts.cfg.max_concurrent_probes.max(1),
        running: 0,
        waiting: VecDeque::new(),
        cfg: parts.cfg,
        checker: parts.checker,
        writer: parts.writer,
        metrics: parts.metrics,
        alive: alive.clone(),
        held: BucketSet::ALL,
        active: BucketSet::ALL,
        loading: vec![0; usize::from(healthchecker_core::cluster::BUCKETS)],
        load_seq: 0,
        load: None,
        held_until: None,
        awaiting_pings: Vec::new(),
        changed_while_loading: Default::default(),
    };
    tracker.spawn(s.run(services, rx, cancel));
    SchedulerHandle { tx, alive }
}

struct Scheduler {
    /// Zero of the monotonic millisecond scale of the timetable.
    epoch: Instant,
    entries: crate::IdMap<Entry>,
    /// Dependency waits, rebuilt on demand after services change.
    deps: Option<crate::dependencies::DepIndex>,
    timetable: Timetable,
    /// At most this many probes run at once (`max_concurrent_probes`).
    /// The loop counts them itself: a semaphore's permit cost a lock of
    /// its waiter list on every release, and a task tracker two more
    /// atomic updates, per check.
    slots: usize,
    /// Probe tasks spawned whose result has not come back yet.
    running: usize,
    /// Due checks waiting for a slot, oldest first.
    waiting: VecDeque<Waiting>,
    cfg: SchedulerConfig,
    checker: Checker,
    writer: WriterHandle,
    metrics: Arc<Metrics>,
    alive: Arc<std::sync::atomic::AtomicI64>,
    /// The buckets the node holds ([`BucketSet::ALL`] without a cluster).
    held: BucketSet,
    /// The held buckets whose services are fired: held, and (in a
    /// cluster) their services read again since they were gained.
    active: BucketSet,
    /// Per bucket, the read of its services awaited since it was gained
    /// (a `load_seq`; 0: none).
    loading: Vec<u64>,
    load_seq: u64,
    load: Option<LoadBuckets>,
    /// The held set's deadline on the local monotonic clock
    /// ([`Held::valid_until`](crate::cluster::Held::valid_until)): past
    /// it, nothing is fired or applied, whatever the channel says yet.
    held_until: Option<Instant>,
    /// Pings of services whose bucket is held but still being read (a
    /// wake-up that came after the read): judged with the read's kept
    /// pings once it arrives (`owned.rs`), at most
    /// [`owned::MAX_AWAITING_PINGS`].
    awaiting_pings: Vec<(Bucket, crate::store::StoredPing)>,
    /// Services registered, updated, paused, resumed or removed by a
    /// command while their bucket's read was awaited, with that read's
    /// `load_seq`: the command is at least as new as the read (it was sent
    /// after its change committed, and the read began before it came), so
    /// the read neither undoes nor removes it ([`Scheduler::on_loaded`]).
    changed_while_loading: crate::IdMap<(u64, Bucket, owned::Change)>,
}

impl Scheduler {
    fn mono_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    async fn run(
        mut self,
        services: Vec<ServiceRecord>,
        mut rx: mpsc::Receiver<Command>,
        cancel: CancellationToken,
    ) {
        // Unbounded: a probe holds its slot until it has sent its result,
        // so at most `max_concurrent_probes` results wait here (and a
        // bounded channel's permit is two more atomic updates a check).
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let ctx = Arc::new(ProbeCtx {
            checker: self.checker.clone(),
            done: done_tx,
            clock: self.cfg.clock,
        });
        let (loaded_tx, mut loaded_rx) = mpsc::channel::<owned::Loaded>(64);
        let mut held_rx = self.cfg.ownership.take().map(|o| {
            self.load = o.load;
            self.held = BucketSet::EMPTY;
            self.active = BucketSet::EMPTY;
            o.held
        });
        let now = self.mono_ms();
        for rec in services {
            self.insert(rec, now);
        }
        if let Some(rx) = held_rx.as_mut() {
            let (first, until) = {
                let held = rx.borrow_and_update();
                (owned::bucket_set(&held), held.valid_until)
            };
            self.on_held(first, until, &loaded_tx, &cancel);
        }
        tracing::info!(services = self.entries.len(), "scheduler started");
        let mut last_fire = Instant::now();
        loop {
            let next = self
                .timetable
                .next_at()
                .map(|due| self.epoch + Duration::from_millis(due))
                .unwrap_or_else(|| Instant::now() + IDLE_TICK)
                // Turn at least once a second, so `/health` can tell a
                // stuck loop from an idle one.
                .min(Instant::now() + IDLE_TICK)
                // Fire at most every FIRE_TICK: checks due within the same
                // few milliseconds start together, one wake-up for many.
                .max(last_fire + FIRE_TICK);
            // Results of running probes are taken once a round (below), so
            // wake for them within one.
            let next = if self.running > 0 {
                next.min(last_fire + FIRE_TICK)
            } else {
                next
            };
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                // A result wakes the loop only while checks wait for its
                // slot; otherwise it waits for the round (see `take_done`).
                Some(done) = done_rx.recv(), if !self.waiting.is_empty() => {
                    self.on_done(done, Some(&ctx)).await
                }
                cmd = rx.recv() => match cmd {
                    Some(cmd) => {
                        // Results that came before it first, in order.
                        self.take_done(&mut done_rx, &ctx).await;
                        self.on_command(cmd).await
                    }
                    None => break,
                },
                held = owned::held_changed(&mut held_rx) => {
                    if held.is_none() {
                        // The lease manager is gone: nothing is held.
                        held_rx = None;
                    }
                    let (set, until) = held.unwrap_or((BucketSet::EMPTY, None));
                    self.on_held(set, until, &loaded_tx, &cancel);
                }
                Some(loaded) = loaded_rx.recv() => self.on_loaded(loaded).await,
                _ = tokio::time::sleep_until(next) => {
                    last_fire = Instant::now();
                    self.take_done(&mut done_rx, &ctx).await;
                    for (id, outcome) in self.fire(&ctx) {
                        let at = self.cfg.clock.now();
                        self.apply(id, at, outcome).await;
                    }
                }
            }
            self.alive.store(
                self.cfg.clock.now_ms(),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        // Let running probes finish and record their results, for at most
        // SHUTDOWN_PROBES: a probe with a 60 s timeout against a hung target
        // must not hold up the exit. Probes still running then are dropped
        // with the runtime (they record nothing).
        self.waiting.clear();
        drop(ctx);
        let deadline = Instant::now() + SHUTDOWN_PROBES;
        loop {
            tokio::select! {
                d = done_rx.recv() => match d {
                    Some(done) => self.on_done(done, None).await,
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(running = self.running, "probes still running at shutdown; abandoning them");
                    break;
                }
            }
        }
        tracing::info!("scheduler stopped");
    }

    /// A service's entry as stored: state, counters and heartbeat clock
    /// from its record.
    fn entry_of(&self, rec: ServiceRecord) -> Entry {
        self.metrics
            .set_service_state(&rec.spec.name, None, rec.state);
        let beat = Beat::of(&rec, None, self.cfg.clock.now_ms());
        let tracker = HealthTracker::restore(rec.state, rec.successes, rec.failures);
        Entry {
            name: Arc::from(rec.spec.name.as_str()),
            bucket: Bucket::of(&rec.spec.name),
            spec: Arc::new(rec.spec),
            monitor: Monitor::restore(tracker, rec.state_since, rec.last_notified_at),
            paused: rec.paused,
            generation: 0,
            in_flight: false,
            beat,
            last_check: rec.last_check.as_ref().map(|c| c.at),
        }
    }

    fn insert(&mut self, rec: ServiceRecord, now: u64) {
        let id = rec.id;
        let entry = self.entry_of(rec);
        let run = !entry.paused && self.active.contains(entry.bucket);
        self.entries.insert(id, entry);
        if run {
            self.schedule_first(id, now);
        }
    }

    /// Pushes a service's first timetable entry under its current
    /// generation: a polled service at its phase, a heartbeat at its
    /// deadline.
    fn schedule_first(&mut self, id: ServiceId, now: u64) {
        let Some(e) = self.entries.get(&id) else {
            return;
        };
        let generation = e.generation;
        match &e.beat {
            Some(b) => {
                let deadline = b.hb.deadline(b.last_success);
                self.push_at_wall(id, generation, deadline, now);
            }
            None => {
                let iv = e.spec.interval as u64 * 1000;
                self.timetable.push(Due {
                    at: first_due(now, id.get() as u64, iv),
                    service: id,
                    generation,
                });
            }
        }
    }

    /// Pushes an entry due at the wall-clock time `at` (Unix ms), judged
    /// again after at most [`HEARTBEAT_RECHECK_MS`].
    fn push_at_wall(&mut self, id: ServiceId, generation: u32, at: i64, now: u64) {
        let wait = (at - self.cfg.clock.now_ms()).clamp(0, HEARTBEAT_RECHECK_MS) as u64;
        self.timetable.push(Due {
            at: now + wait,
            service: id,
            generation,
        });
    }

    async fn on_command(&mut self, cmd: Command) {
        let now = self.mono_ms();
        if matches!(cmd, Command::Upsert(_) | Command::Remove { .. }) {
            self.deps = None;
        }
        let changed = match &cmd {
            Command::Upsert(rec) => {
                Some((rec.id, Bucket::of(&rec.spec.name), owned::Change::Whole))
            }
            Command::Remove { id, name } => Some((*id, Bucket::of(name), owned::Change::Whole)),
            Command::SetPaused { id, .. } => self
                .entries
                .get(id)
                .map(|e| (*id, e.bucket, owned::Change::Paused)),
            Command::Ping { .. } => None,
        };
        if let Some((id, b, change)) = changed {
            let seq = self.loading[usize::from(b.get())];
            if seq != 0 {
                let c = self
                    .changed_while_loading
                    .entry(id)
                    .or_insert((seq, b, change));
                if (c.0, c.1) != (seq, b) {
                    *c = (seq, b, change);
                }
                c.2 = c.2.max(change);
            }
        }
        match cmd {
            Command::Upsert(rec) => self.on_upsert(*rec, now),
            Command::Ping {
                id,
                ping,
                at,
                output,
            } => self.on_ping(id, ping, at, output, now).await,
            Command::Remove { id, name } => {
                self.entries.remove(&id);
                self.metrics.remove_service(&name);
            }
            Command::SetPaused { id, paused } => self.on_set_paused(id, paused, now),
        }
    }

    /// A new service, or a re-registration: new parameters, same state and
    /// history.
    fn on_upsert(&mut self, rec: ServiceRecord, now: u64) {
        let id = rec.id;
        let wall = self.cfg.clock.now_ms();
        let Some(e) = self.entries.get_mut(&id) else {
            self.insert(rec, now);
            return;
        };
        let beat = Beat::of(&rec, e.beat.as_ref(), wall);
        let mut reschedule = e.spec.interval != rec.spec.interval
            || e.paused != rec.paused
            || e.spec.heartbeat != rec.spec.heartbeat;
        e.beat = beat;
        if e.name.as_ref() != rec.spec.name {
            self.metrics.remove_service(&e.name);
            e.name = Arc::from(rec.spec.name.as_str());
            let bucket = Bucket::of(&rec.spec.name);
            reschedule |= bucket != e.bucket;
            e.bucket = bucket;
        }
        e.spec = Arc::new(rec.spec);
        e.paused = rec.paused;
        if reschedule {
            e.generation = e.generation.wrapping_add(1);
            if !e.paused && self.active.contains(e.bucket) {
                self.schedule_first(id, now);
            }
        }
    }

    fn on_set_paused(&mut self, id: ServiceId, paused: bool, now: u64) {
        let wall = self.cfg.clock.now_ms();
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        if e.paused == paused {
            return;
        }
        e.paused = paused;
        e.generation = e.generation.wrapping_add(1);
        let active = self.active.contains(e.bucket);
        if let (false, true, Some(b)) = (paused, active, e.beat.as_mut()) {
            // A resumed heartbeat gets a whole period and grace: the job
            // could not know it was being watched again.
            b.last_success = b.last_success.max(wall);
            b.reported = None;
            self.schedule_first(id, now);
        } else if !paused && self.active.contains(e.bucket) {
            // Resume at once: the first check within a second.
            self.timetable.push(Due {
                at: now + jitter_ms(id.get() as u64, 1000),
                service: id,
                generation: e.generation,
            });
        }
    }

    /// Starts the due probes; returns the heartbeats found overdue, to be
    /// recorded as failed checks.
    fn fire(&mut self, ctx: &Arc<ProbeCtx>) -> Vec<(ServiceId, ProbeOutcome)> {
        self.expire_held_if_due();
        let now = self.mono_ms();
        let wall = self.cfg.clock.now_ms();
        let mut overdue = Vec::new();
        while let Some(due) = self.timetable.pop_due(now) {
            let (id, generation) = (due.service, due.generation);
            let Some(e) = self.entries.get_mut(&id) else {
                continue;
            };
            if e.generation != generation || e.paused || !self.active.contains(e.bucket) {
                // Stale, paused, or of a bucket this node does not run
                // (lost meanwhile): not fired, and not scheduled again.
                continue;
            }
            if let Some(b) = e.beat.as_mut() {
                let next = match b.hb.verdict(b.last_success, wall) {
                    Verdict::OnTime { until } => until,
                    Verdict::Overdue { deadline } => {
                        if b.reported != Some(deadline) {
                            b.reported = Some(deadline);
                            overdue.push((id, ProbeOutcome::fail(b.hb.overdue_reason())));
                        }
                        // Nothing to judge until a ping: look again later.
                        wall + HEARTBEAT_RECHECK_MS
                    }
                };
                self.push_at_wall(id, generation, next, now);
                continue;
            }
            let interval = e.spec.interval as u64 * 1000;
            let (next, missed) = next_due(due.at, interval, now);
            if missed > 0 {
                self.metrics.missed_slots.inc_by(missed);
            }
            self.timetable.push(Due {
                at: next,
                service: id,
                generation,
            });
            if e.in_flight {
                // The previous check of this service still waits for a
                // probe slot: skip this one rather than pile up.
                self.metrics.missed_slots.inc();
                continue;
            }
            e.in_flight = true;
            let due_at = self.epoch + Duration::from_millis(due.at);
            if self.running < self.slots {
                let spec = e.spec.clone();
                self.spawn_probe(ctx, id, generation, due_at, spec);
            } else {
                self.waiting.push_back(Waiting {
                    id,
                    generation,
                    due_at,
                });
            }
        }
        self.metrics.probes_in_flight.set(self.running as i64);
        overdue
    }

    /// Runs one check in its own task; its result comes back as a [`Done`].
    fn spawn_probe(
        &mut self,
        ctx: &Arc<ProbeCtx>,
        id: ServiceId,
        generation: u32,
        due_at: Instant,
        spec: Arc<ServiceSpec>,
    ) {
        self.running += 1;
        let ctx = ctx.clone();
        // Not tracked: shutdown waits for the results (`running`), and
        // abandons the rest with the runtime.
        tokio::spawn(async move {
            let lag = Instant::now().saturating_duration_since(due_at);
            let at = ctx.clock.now();
            let outcome = ctx.checker.check(&spec, at.get()).await;
            let _ = ctx.done.send(Done {
                id,
                generation,
                at,
                lag,
                outcome,
            });
        });
    }

    /// Applies every result that came back since the last round. Probe
    /// tasks do not wake the loop for their results (unless checks wait
    /// for a slot): waking it once a check, on whichever runtime worker
    /// was parked, cost a futex wake and a context switch (`perf`
    /// estimated about 3 % of the daemon's CPU at 3,333 checks/s); a round
    /// takes dozens at once.
    /// A result waits at most [`FIRE_TICK`]; its check's time is its start.
    async fn take_done(
        &mut self,
        done_rx: &mut mpsc::UnboundedReceiver<Done>,
        ctx: &Arc<ProbeCtx>,
    ) {
        while let Ok(done) = done_rx.try_recv() {
            self.on_done(done, Some(ctx)).await;
        }
    }

    /// Starts waiting checks while slots are free. One whose service was
    /// rescheduled, paused or deleted meanwhile is dropped (the new
    /// schedule has its own check).
    fn start_waiting(&mut self, ctx: &Arc<ProbeCtx>) {
        while self.running < self.slots {
            let Some(w) = self.waiting.pop_front() else {
                break;
            };
            let Some(e) = self.entries.get_mut(&w.id) else {
                continue;
            };
            e.in_flight = false;
            if e.generation != w.generation || e.paused || !self.active.contains(e.bucket) {
                continue;
            }
            e.in_flight = true;
            let spec = e.spec.clone();
            self.spawn_probe(ctx, w.id, w.generation, w.due_at, spec);
        }
        self.metrics.probes_in_flight.set(self.running as i64);
    }

    /// A probe's result; `ctx` (none at shutdown) starts the checks that
    /// waited for its slot.
    async fn on_done(&mut self, d: Done, ctx: Option<&Arc<ProbeCtx>>) {
        self.running -= 1;
        if let Some(ctx) = ctx {
            self.start_waiting(ctx);
        }
        self.metrics.scheduler_lag.observe(d.lag.as_secs_f64());
        self.expire_held_if_due();
        let Some(e) = self.entries.get_mut(&d.id) else {
            return;
        };
        e.in_flight = false;
        if e.paused || e.generation != d.generation || !self.active.contains(e.bucket) {
            // Paused (state frozen), rescheduled while the probe ran, or of
            // a bucket lost meanwhile (its new owner checks it; the
            // writer's fencing would refuse the write anyway).
            return;
        }
        self.apply(d.id, d.at, d.outcome).await;
    }

    /// Feeds one outcome to the service's monitor and queues what it
    /// decided (the check, the state change, the outbox row) for the writer.
    async fn apply(&mut self, id: ServiceId, at: UnixMs, o: ProbeOutcome) {
        let min_gap_ms = self.cfg.notify_min_gap_ms;
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        e.last_check = Some(at.get());
        self.metrics
            .record_check(o.result, o.duration.as_secs_f64());
        let rules = Rules {
            thresholds: e.spec.thresholds(),
            min_gap_ms,
        };
        let step = e.monitor.observe(o.result, at.get(), rules);
        let notify = step.change.and_then(|c| self.on_change(id, c, at));
        #[cfg(any(test, feature = "fault-injection"))]
        if crate::fault::stops_writer(&self.entries[&id].spec) {
            self.writer.stop_for_tests().await;
        }
        self.writer
            .record(record::check_write(id, at, o, &step, notify))
            .await;
    }

    /// Reports a state change (log, metrics) and builds its outbox row when
    /// it notifies, held by a silence or a dependency if one applies.
    fn on_change(&mut self, id: ServiceId, c: Change, at: UnixMs) -> Option<NotifyWrite> {
        let t = c.transition;
        let e = &self.entries[&id];
        tracing::info!(service = %e.name, from = %t.from, to = %t.to, "state change");
        self.metrics.set_service_state(&e.name, Some(t.from), t.to);
        let not_before = c.notify_at?;
        let entries = &self.entries;
        let deps = self.deps.get_or_insert_with(|| {
            crate::dependencies::DepIndex::build(entries.values().map(|e| (&e.name, &*e.spec)))
        });
        let failing = matches!(t.to, HealthState::Degraded | HealthState::Unhealthy);
        let held_until = self
            .cfg
            .silences
            .held_until(&e.name, &e.spec.tags, at.get())
            .into_iter()
            .chain(deps.hold_until(&e.name, failing, at.get()))
            .max();
        Some(record::notify_write(
            &e.name,
            &e.spec,
            UnixMs::new(not_before),
            self.cfg.outbox_note.clone(),
            held_until.map(UnixMs::new),
        ))
    }
}
