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
use healthchecker_core::notify::notifies;
use healthchecker_core::schedule::{first_due, jitter_ms, next_due};
use healthchecker_core::{HealthTracker, ServiceSpec, Transition};
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
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                _ = tokio::time::sleep_until(next) => {
                    last_fire = Instant::now();
                    self.fire(&done_tx);
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
        let entry = Entry {
            name: Arc::from(rec.spec.name.as_str()),
            tracker: HealthTracker::restore(rec.state, rec.successes, rec.failures),
            spec: Arc::new(rec.spec),
            paused: rec.paused,
            generation: 0,
            in_flight: false,
            state_since: rec.state_since,
            notify_slot: rec.last_notified_at,
        };
        let interval = entry.spec.interval as u64 * 1000;
        let paused = entry.paused;
        self.entries.insert(id, entry);
        if !paused {
            self.heap
                .push(Reverse((first_due(now, id as u64, interval), id, 0)));
        }
    }

    fn on_command(&mut self, cmd: Command) {
        let now = self.mono_ms();
        match cmd {
            Command::Upsert(rec) => {
                let id = rec.id;
                let Some(e) = self.entries.get_mut(&id) else {
                    self.insert(*rec, now);
                    return;
                };
                // Re-registration: new parameters, same state and history.
                let reschedule = e.spec.interval != rec.spec.interval || e.paused != rec.paused;
                if e.name.as_ref() != rec.spec.name {
                    self.metrics.remove_service(&e.name);
                    e.name = Arc::from(rec.spec.name.as_str());
                }
                e.spec = Arc::new(rec.spec);
                e.paused = rec.paused;
                if reschedule {
                    e.generation = e.generation.wrapping_add(1);
                    if !e.paused {
                        let iv = e.spec.interval as u64 * 1000;
                        self.heap
                            .push(Reverse((first_due(now, id as u64, iv), id, e.generation)));
                    }
                }
            }
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
                if !paused {
                    // Resume at once: the first check within a second.
                    let due = now + jitter_ms(id as u64, 1000);
                    self.heap.push(Reverse((due, id, e.generation)));
                }
            }
        }
    }

    fn fire(&mut self, done_tx: &mpsc::Sender<Done>) {
        let now = self.mono_ms();
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
                let outcome = prober.probe(&spec, at).await;
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
        let o = d.outcome;
        self.metrics
            .record_check(o.result, o.duration.as_secs_f64());
        let before = e.tracker.state();
        let transition = e
            .tracker
            .observe(o.result, e.spec.thresholds())
            .map(|t| self.on_transition(d.id, t, d.at));
        if transition.is_some() {
            let e = &self.entries[&d.id];
            self.metrics
                .set_service_state(&e.name, Some(before), e.tracker.state());
        }
        let e = &self.entries[&d.id];
        self.writer
            .record(CheckWrite {
                service_id: d.id,
                at: d.at,
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
        let gap = self.cfg.notify_min_gap_ms;
        let note = self.cfg.outbox_note.clone();
        let e = self.entries.get_mut(&id).expect("entry exists");
        let previous_since = std::mem::replace(&mut e.state_since, at);
        tracing::info!(service = %e.name, from = %t.from, to = %t.to, "state change");
        let notify = (notifies(t) && !e.spec.emails.is_empty()).then(|| {
            let not_before = notify_slot(e.notify_slot, at, gap);
            e.notify_slot = Some(not_before);
            NotifyWrite {
                service: e.name.to_string(),
                target: e.spec.target.url(),
                recipients: e.spec.emails.iter().map(|a| a.to_string()).collect(),
                not_before,
                note,
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
