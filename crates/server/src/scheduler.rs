//! The scheduler: one task, one timer heap, every service (SPEC sections 3
//! and 11).
//!
//! It owns each service's schedule and health tracker. Due services are
//! popped from a binary heap keyed by due time (not a task or timer per
//! service); each due check runs as a short-lived task bounded by a
//! semaphore and by the service's own timeout. Results come back on a
//! channel, go through the pure state machine, and leave as one
//! [`CheckWrite`] for the batch writer, which records the check, the event
//! and the outbox row in one transaction.
//!
//! Schedules are fixed-rate with a deterministic per-service phase
//! ([`healthchecker_core::schedule`]), so a burst of registrations does
//! not become a burst of checks, and a restart keeps each service's phase.

use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::probe::{ProbeOutcome, Prober};
use crate::store::{CheckWrite, NotifyWrite, ServiceRecord, TransitionWrite, WriterHandle};
use healthchecker_core::heartbeat::{Heartbeat, Ping, Verdict};
use healthchecker_core::notify::notifies;
use healthchecker_core::schedule::{first_due, jitter_ms, next_due};
use healthchecker_core::{CheckResult, HealthTracker, ServiceSpec, Transition};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for running probes.
pub const SHUTDOWN_PROBES: Duration = Duration::from_secs(4);

/// The longest the loop sleeps without a due check.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// The shortest time between two firing rounds. Waking once per due
/// millisecond costs a context switch per check at 3,333 checks/s; 5 ms
/// rounds cost at most 5 ms of lag (the budget is 50 ms at p99).
const FIRE_TICK: Duration = Duration::from_millis(5);

/// The longest a heartbeat's deadline waits on the monotonic timer before
/// it is judged again by the wall clock (which may have been set meanwhile).
const HEARTBEAT_RECHECK_MS: i64 = 3_600_000;

/// A change to the set of scheduled services.
#[derive(Debug)]
pub enum Command {
    /// A new or re-registered service (state and counters are kept).
    Upsert(Box<ServiceRecord>),
    /// A deleted service.
    Remove {
        /// Row id.
        id: i64,
        /// Name, for the metrics.
        name: String,
    },
    /// A ping of a heartbeat service (SPEC section 15).
    Ping {
        /// Row id.
        id: i64,
        /// Success, start, fail or an exit code.
        ping: Ping,
        /// When it arrived (Unix ms).
        at: i64,
        /// Its body (the job's output), as the check's details.
        output: Option<String>,
    },
    /// Pause (`true`) or resume (`false`).
    SetPaused {
        /// Row id.
        id: i64,
        /// The new flag.
        paused: bool,
    },
}

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Most probes running at once (bounds sockets and memory).
    pub max_concurrent_probes: usize,
    /// Flap damping: at most one mail per service per this many ms.
    pub notify_min_gap_ms: i64,
    /// Why queued mail cannot be sent (e.g. SMTP not configured), noted on the row.
    pub outbox_note: Option<String>,
    /// Silences: a notification of a silenced service is written `held`.
    pub silences: crate::silences::SilenceBook,
}

/// Sends commands to the scheduler.
#[derive(Clone)]
pub struct SchedulerHandle {
    tx: mpsc::Sender<Command>,
    alive: Arc<std::sync::atomic::AtomicI64>,
}

impl SchedulerHandle {
    /// Sends a command; false if the scheduler has stopped.
    pub async fn send(&self, cmd: Command) -> bool {
        self.tx.send(cmd).await.is_ok()
    }

    /// Unix ms of the scheduler loop's latest turn (for `/health`).
    pub fn last_tick_ms(&self) -> i64 {
        self.alive.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// True while the scheduler task runs.
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Completes when the scheduler task has stopped (returned or panicked).
    pub async fn stopped(&self) {
        self.tx.closed().await
    }
}

/// The reason recorded for a check whose probe panicked.
pub const INTERNAL_ERROR: &str = "internal error";

/// Runs one probe. A panic inside it becomes a failed check with reason
/// [`INTERNAL_ERROR`] (the panic is logged) instead of a task that never
/// reports back, which would leave the service's in-flight flag set and the
/// service never checked again.
async fn guarded_probe(prober: &Prober, spec: &ServiceSpec, at: i64) -> ProbeOutcome {
    use futures_util::FutureExt;
    let started = std::time::Instant::now();
    let probe = async {
        #[cfg(any(test, feature = "fault-injection"))]
        crate::fault::before_probe(spec);
        prober.probe(spec, at).await
    };
    match std::panic::AssertUnwindSafe(probe).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(panic) => {
            tracing::error!(
                service = %spec.name,
                panic = %crate::supervisor::panic_message(&*panic),
                "probe panicked; recorded as a failed check"
            );
            let mut outcome = ProbeOutcome::fail(INTERNAL_ERROR);
            outcome.duration = started.elapsed();
            outcome
        }
    }
}

struct Entry {
    name: Arc<str>,
    spec: Arc<ServiceSpec>,
    tracker: HealthTracker,
    paused: bool,
    generation: u32,
    in_flight: bool,
    state_since: i64,
    notify_slot: Option<i64>,
    /// A heartbeat service's clock (it is never probed).
    beat: Option<Beat>,
}

/// What the scheduler keeps of a heartbeat service. Its one heap entry is
/// at its deadline (capped at [`HEARTBEAT_RECHECK_MS`]); a success ping
/// moves the deadline later, and the entry, when it fires, finds it on time
/// and waits again.
struct Beat {
    hb: Heartbeat,
    /// The latest success (or the registration), Unix ms.
    last_success: i64,
    /// The deadline already recorded as missed (one failed check per miss).
    reported: Option<i64>,
    /// The latest start ping, for the duration of the run it opened.
    started: Option<i64>,
}

impl Beat {
    fn of(rec: &ServiceRecord, previous: Option<&Beat>) -> Option<Beat> {
        let hb = rec.spec.heartbeat?;
        let last_success = previous
            .map(|b| b.last_success)
            .or(rec.last_success_ping_at)
            .unwrap_or(rec.created_at);
        // A service already unhealthy from a missed deadline is not
        // reported again after a restart.
        let reported = match hb.verdict(last_success, now_ms()) {
            Verdict::Overdue { deadline }
                if rec.state == healthchecker_core::HealthState::Unhealthy =>
            {
                Some(deadline)
            }
            _ => None,
        };
        Some(Beat {
            hb,
            last_success,
            reported: previous.and_then(|b| b.reported).or(reported),
            started: previous.and_then(|b| b.started),
        })
    }
}

struct Done {
    id: i64,
    generation: u32,
    at: i64,
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
    let (tx, rx) = mpsc::channel(4096);
    let alive = Arc::new(std::sync::atomic::AtomicI64::new(now_ms()));
    let s = Scheduler {
        epoch: Instant::now(),
        entries: HashMap::with_capacity(services.len()),
        deps: None,
        heap: BinaryHeap::with_capacity(services.len()),
        sem: Arc::new(Semaphore::new(cfg.max_concurrent_probes.max(1))),
        cfg,
        prober,
        writer,
        metrics,
        probes: TaskTracker::new(),
        alive: alive.clone(),
    };
    tracker.spawn(s.run(services, rx, cancel));
    SchedulerHandle { tx, alive }
}

struct Scheduler {
    epoch: Instant,
    entries: HashMap<i64, Entry>,
    /// Dependency waits, rebuilt on demand after services change.
    deps: Option<crate::dependencies::DepIndex>,
    heap: BinaryHeap<Reverse<(u64, i64, u32)>>,
    sem: Arc<Semaphore>,
    cfg: SchedulerConfig,
    prober: Prober,
    writer: WriterHandle,
    metrics: Arc<Metrics>,
    probes: TaskTracker,
    alive: Arc<std::sync::atomic::AtomicI64>,
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
        let (done_tx, mut done_rx) = mpsc::channel::<Done>(16_384);
        let now = self.mono_ms();
        for rec in services {
            self.insert(rec, now);
        }
        tracing::info!(services = self.entries.len(), "scheduler started");
        let mut last_fire = Instant::now();
        loop {
            let next = self
                .heap
                .peek()
                .map(|Reverse((due, _, _))| self.epoch + Duration::from_millis(*due))
                .unwrap_or_else(|| Instant::now() + IDLE_TICK)
                // Turn at least once a second, so `/health` can tell a
                // stuck loop from an idle one.
                .min(Instant::now() + IDLE_TICK)
                // Fire at most every FIRE_TICK: checks due within the same
                // few milliseconds start together, one wake-up for many.
                .max(last_fire + FIRE_TICK);
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(done) = done_rx.recv() => self.on_done(done).await,
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd).await,
                    None => break,
                },
                _ = tokio::time::sleep_until(next) => {
                    last_fire = Instant::now();
                    for (id, outcome) in self.fire(&done_tx) {
                        self.apply(id, now_ms(), outcome).await;
                    }
                }
            }
            self.alive
                .store(now_ms(), std::sync::atomic::Ordering::Relaxed);
        }
        // Let running probes finish and record their results, for at most
        // SHUTDOWN_PROBES: a probe with a 60 s timeout against a hung target
        // must not hold up the exit. Probes still running then are dropped
        // with the runtime (they record nothing).
        self.probes.close();
        drop(done_tx);
        let deadline = Instant::now() + SHUTDOWN_PROBES;
        loop {
            tokio::select! {
                d = done_rx.recv() => match d {
                    Some(done) => self.on_done(done).await,
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(running = self.probes.len(), "probes still running at shutdown; abandoning them");
                    break;
                }
            }
        }
        tracing::info!("scheduler stopped");
    }

    fn insert(&mut self, rec: ServiceRecord, now: u64) {
        let id = rec.id;
        self.metrics
            .set_service_state(&rec.spec.name, None, rec.state);
        let beat = Beat::of(&rec, None);
        let entry = Entry {
            name: Arc::from(rec.spec.name.as_str()),
            tracker: HealthTracker::restore(rec.state, rec.successes, rec.failures),
            spec: Arc::new(rec.spec),
            paused: rec.paused,
            generation: 0,
            in_flight: false,
            state_since: rec.state_since,
            notify_slot: rec.last_notified_at,
            beat,
        };
        let paused = entry.paused;
        self.entries.insert(id, entry);
        if !paused {
            self.schedule_first(id, now);
        }
    }

    /// Pushes a service's first heap entry under its current generation:
    /// a polled service at its phase, a heartbeat at its deadline.
    fn schedule_first(&mut self, id: i64, now: u64) {
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
                self.heap
                    .push(Reverse((first_due(now, id as u64, iv), id, generation)));
            }
        }
    }

    /// Pushes an entry due at the wall-clock time `at` (Unix ms), judged
    /// again after at most [`HEARTBEAT_RECHECK_MS`].
    fn push_at_wall(&mut self, id: i64, generation: u32, at: i64, now: u64) {
        let wait = (at - now_ms()).clamp(0, HEARTBEAT_RECHECK_MS) as u64;
        self.heap.push(Reverse((now + wait, id, generation)));
    }

    async fn on_command(&mut self, cmd: Command) {
        let now = self.mono_ms();
        if matches!(cmd, Command::Upsert(_) | Command::Remove { .. }) {
            self.deps = None;
        }
        match cmd {
            Command::Upsert(rec) => {
                let id = rec.id;
                let Some(e) = self.entries.get_mut(&id) else {
                    self.insert(*rec, now);
                    return;
                };
                // Re-registration: new parameters, same state and history.
                let beat = Beat::of(&rec, e.beat.as_ref());
                let reschedule = e.spec.interval != rec.spec.interval
                    || e.paused != rec.paused
                    || e.spec.heartbeat != rec.spec.heartbeat;
                e.beat = beat;
                if e.name.as_ref() != rec.spec.name {
                    self.metrics.remove_service(&e.name);
                    e.name = Arc::from(rec.spec.name.as_str());
                }
                e.spec = Arc::new(rec.spec);
                e.paused = rec.paused;
                if reschedule {
                    e.generation = e.generation.wrapping_add(1);
                    if !e.paused {
                        self.schedule_first(id, now);
                    }
                }
            }
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
            Command::SetPaused { id, paused } => {
                let Some(e) = self.entries.get_mut(&id) else {
                    return;
                };
                if e.paused == paused {
                    return;
                }
                e.paused = paused;
                e.generation = e.generation.wrapping_add(1);
                if let (false, Some(b)) = (paused, e.beat.as_mut()) {
                    // A resumed heartbeat gets a whole period and grace:
                    // the job could not know it was being watched again.
                    b.last_success = b.last_success.max(now_ms());
                    b.reported = None;
                    self.schedule_first(id, now);
                } else if !paused {
                    // Resume at once: the first check within a second.
                    let due = now + jitter_ms(id as u64, 1000);
                    self.heap.push(Reverse((due, id, e.generation)));
                }
            }
        }
    }

    /// Starts the due probes; returns the heartbeats found overdue, to be
    /// recorded as failed checks.
    fn fire(&mut self, done_tx: &mpsc::Sender<Done>) -> Vec<(i64, ProbeOutcome)> {
        let now = self.mono_ms();
        let mut overdue = Vec::new();
        while let Some(Reverse((due, id, generation))) = self.heap.peek().copied() {
            if due > now {
                break;
            }
            self.heap.pop();
            let Some(e) = self.entries.get_mut(&id) else {
                continue;
            };
            if e.generation != generation || e.paused {
                continue;
            }
            if let Some(b) = e.beat.as_mut() {
                let next = match b.hb.verdict(b.last_success, now_ms()) {
                    Verdict::OnTime { until } => until,
                    Verdict::Overdue { deadline } => {
                        if b.reported != Some(deadline) {
                            b.reported = Some(deadline);
                            overdue.push((id, ProbeOutcome::fail(b.hb.overdue_reason())));
                        }
                        // Nothing to judge until a ping: look again later.
                        now_ms() + HEARTBEAT_RECHECK_MS
                    }
                };
                self.push_at_wall(id, generation, next, now);
                continue;
            }
            let interval = e.spec.interval as u64 * 1000;
            let (next, missed) = next_due(due, interval, now);
            if missed > 0 {
                self.metrics.missed_slots.inc_by(missed);
            }
            self.heap.push(Reverse((next, id, generation)));
            if e.in_flight {
                // The previous check of this service still waits for a
                // probe slot: skip this one rather than pile up.
                self.metrics.missed_slots.inc();
                continue;
            }
            e.in_flight = true;
            let spec = e.spec.clone();
            let prober = self.prober.clone();
            let sem = self.sem.clone();
            let tx = done_tx.clone();
            let metrics = self.metrics.clone();
            let due_at = self.epoch + Duration::from_millis(due);
            self.probes.spawn(async move {
                let Ok(_permit) = sem.acquire_owned().await else {
                    return;
                };
                metrics.scheduler_lag.observe(
                    Instant::now()
                        .saturating_duration_since(due_at)
                        .as_secs_f64(),
                );
                metrics.probes_in_flight.inc();
                let at = now_ms();
                let outcome = guarded_probe(&prober, &spec, at).await;
                metrics.probes_in_flight.dec();
                let _ = tx
                    .send(Done {
                        id,
                        generation,
                        at,
                        outcome,
                    })
                    .await;
            });
        }
        overdue
    }

    /// A heartbeat's ping: a start is remembered, a success or failure is
    /// judged at once (thresholds of 1) and recorded as a check whose
    /// duration is the run since the start ping, if one came.
    async fn on_ping(&mut self, id: i64, ping: Ping, at: i64, output: Option<String>, now: u64) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        if e.paused {
            // Paused: the state is frozen, pings included.
            return;
        }
        let generation = e.generation;
        let Some(b) = e.beat.as_mut() else {
            return;
        };
        let Some(result) = ping.result() else {
            b.started = Some(at);
            return;
        };
        let duration = b
            .started
            .take()
            .map(|s| Duration::from_millis((at - s).max(0) as u64))
            .unwrap_or_default();
        let mut recheck = None;
        if result == CheckResult::Pass {
            b.last_success = b.last_success.max(at);
            if b.reported.take().is_some() {
                // The live heap entry is a late re-check: replace it with
                // one at the new deadline.
                recheck = Some(b.hb.deadline(b.last_success));
            }
        }
        if let Some(deadline) = recheck {
            let e = self.entries.get_mut(&id).expect("entry exists");
            e.generation = generation.wrapping_add(1);
            let g = e.generation;
            self.push_at_wall(id, g, deadline, now);
        }
        let outcome = ProbeOutcome {
            result,
            reason: ping.reason(),
            http_status: None,
            details: output.map(|o| serde_json::json!({ "output": o }).to_string()),
            cert_expires_at: None,
            duration,
        };
        self.apply(id, at, outcome).await;
    }

    async fn on_done(&mut self, d: Done) {
        let Some(e) = self.entries.get_mut(&d.id) else {
            return;
        };
        e.in_flight = false;
        if e.paused || e.generation != d.generation {
            // Paused (state frozen) or rescheduled while the probe ran.
            return;
        }
        self.apply(d.id, d.at, d.outcome).await;
    }

    /// Feeds one outcome to the service's state machine and queues the
    /// check (with the state change it caused) for the writer.
    async fn apply(&mut self, id: i64, at: i64, o: ProbeOutcome) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        self.metrics
            .record_check(o.result, o.duration.as_secs_f64());
        let before = e.tracker.state();
        let transition = e
            .tracker
            .observe(o.result, e.spec.thresholds())
            .map(|t| self.on_transition(id, t, at));
        if transition.is_some() {
            let e = &self.entries[&id];
            self.metrics
                .set_service_state(&e.name, Some(before), e.tracker.state());
        }
        let e = &self.entries[&id];
        #[cfg(any(test, feature = "fault-injection"))]
        if crate::fault::stops_writer(&e.spec) {
            self.writer.stop_for_tests().await;
        }
        self.writer
            .record(CheckWrite {
                service_id: id,
                at,
                duration_us: o.duration.as_micros() as i64,
                result: o.result,
                reason: o.reason,
                http_status: o.http_status,
                details: o.details,
                cert_expires_at: o.cert_expires_at,
                state: e.tracker.state(),
                successes: e.tracker.successes(),
                failures: e.tracker.failures(),
                transition,
            })
            .await;
    }

    fn on_transition(&mut self, id: i64, t: Transition, at: i64) -> TransitionWrite {
        let dep_hold = if notifies(t) {
            let entries = &self.entries;
            let ix = self.deps.get_or_insert_with(|| {
                crate::dependencies::DepIndex::build(entries.values().map(|e| (&e.name, &*e.spec)))
            });
            let failing = matches!(
                t.to,
                healthchecker_core::HealthState::Degraded
                    | healthchecker_core::HealthState::Unhealthy
            );
            entries
                .get(&id)
                .and_then(|e| ix.hold_until(&e.name, failing, at))
        } else {
            None
        };
        let gap = self.cfg.notify_min_gap_ms;
        let note = self.cfg.outbox_note.clone();
        let e = self.entries.get_mut(&id).expect("entry exists");
        let previous_since = std::mem::replace(&mut e.state_since, at);
        tracing::info!(service = %e.name, from = %t.from, to = %t.to, "state change");
        // Always a row to write when the transition notifies: besides its
        // recipients, the service may have named or default channels, which
        // the writer resolves in the event's transaction.
        let notify = notifies(t).then(|| {
            let not_before = notify_slot(e.notify_slot, at, gap);
            e.notify_slot = Some(not_before);
            NotifyWrite {
                service: e.name.to_string(),
                target: e.spec.target.url(),
                recipients: e.spec.emails.iter().map(|a| a.to_string()).collect(),
                not_before,
                note,
                held_until: self
                    .cfg
                    .silences
                    .held_until(&e.name, &e.spec.tags, at)
                    .into_iter()
                    .chain(dep_hold)
                    .max(),
            }
        });
        TransitionWrite {
            from: t.from,
            previous_since,
            notify,
        }
    }
}

/// Flap damping: when may a notification created at `at` be delivered,
/// given the slot of the service's previous one? At most one mail per
/// `gap`; a notification inside the gap joins the next slot, where the
/// sender coalesces everything due for the service into one mail.
pub fn notify_slot(previous: Option<i64>, at: i64, gap: i64) -> i64 {
    match previous {
        None => at,
        Some(slot) if slot >= at => slot,
        Some(slot) if at >= slot + gap => at,
        Some(slot) => slot + gap,
    }
}

#[cfg(test)]
mod tests {
    use super::notify_slot;

    #[test]
    fn notifications_are_spaced_by_the_gap() {
        let gap = 60_000;
        assert_eq!(notify_slot(None, 1_000, gap), 1_000);
        // Inside the gap of a sent one: wait for the gap's end.
        assert_eq!(notify_slot(Some(1_000), 5_000, gap), 61_000);
        // A pending future slot is joined (coalesced).
        assert_eq!(notify_slot(Some(61_000), 20_000, gap), 61_000);
        // After the gap: at once.
        assert_eq!(notify_slot(Some(1_000), 70_000, gap), 70_000);
        // Gap 0: every transition at once.
        assert_eq!(notify_slot(Some(1_000), 1_000, 0), 1_000);
        assert_eq!(notify_slot(Some(1_000), 2_000, 0), 2_000);
    }
}
