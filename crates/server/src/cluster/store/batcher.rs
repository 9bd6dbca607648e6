//! The PostgreSQL batch writer thread: check results from the scheduler
//! go through a queue to one thread, which writes them in batches with
//! [`PgStore::write_batch`], fenced by the node's leases as they were when
//! each result was recorded and still are at the commit. The counterpart of the SQLite `Writer` (the same batch
//! window and batch size as `store/writer.rs`; `record` and `flush`).
//!
//! A batch commits within [`PgWriterTiming::batch_window`] (100 ms) of a
//! state change in it, and a batch of plain checks within
//! [`PgWriterTiming::plain_window`] (1 s) of its first check, so every
//! node reads them (the newest check row gives a service's last check and
//! counters). What the thread holds back, as SQLite's writer does, is the
//! service rows' per-check fields and the roll-ups ([`Hold`], SPEC 18's
//! ≤ 200 B of WAL a check): written per service once per
//! [`PgWriterTiming::hold_for`], at a flush and when the thread stops
//! (a clean shutdown); what a crash or a takeover leaves held is
//! recovered from the check rows by whoever owns the bucket next
//! (`writer.rs`, docs/cluster.md "History").
//!
//! # A node cut off from its database (SPEC 19, "Bad input and faults")
//!
//! [`PgWriterHandle::record`] never waits: the scheduler goes on checking
//! from memory (thresholds, transitions) while the database is away. A
//! failed commit is retried with back-off (100 ms doubling to 5 s), and
//! results recorded meanwhile wait in the writer's *backlog*, at most
//! [`PgWriterTiming::backlog`] checks ([`BACKLOG`] = 65,536 by default,
//! about 20 MB; see docs/cluster.md for the sizing). `/health` fails
//! meanwhile (the store's last write error). After reconnection the
//! backlog is written in order, in batches, fenced as usual: the checks of
//! buckets whose lease was lost meanwhile are dropped, logged and counted
//! (`healthchecker_pg_checks_dropped_total{reason="stale"}`). Each result
//! carries the held set of the moment it was recorded (a shared snapshot,
//! new only when the set changes), and is written only under a lease held
//! both then and at the commit, at the same epoch: a bucket lost and
//! claimed again while its old results were queued (another node may have
//! written in between) does not get them written under the new epoch.
//!
//! When the backlog reaches its bound, the node *gives up its leases*
//! ([`PgFence::give_up`], watched by the lease manager and by the node's
//! held set in `node.rs`: that set becomes empty at once, so the
//! scheduler stops checking and drops results in flight; the lease
//! manager releases the leases and leaves the node list as soon as
//! PostgreSQL answers, and claims nothing until the backlog has drained
//! to zero), logs an error naming the reason and counts it
//! (`healthchecker_pg_leases_given_up_total`). What is queued is not
//! thrown away: it is written or, its leases being gone, counted as
//! stale. A result recorded while the backlog is full (one in flight when
//! the node gave up) is refused and counted
//! (`healthchecker_pg_checks_dropped_total{reason="backlog_full"}`).
//! `healthchecker_pg_write_backlog` is the backlog's depth.
//!
//! # Stopping while the database is away
//!
//! A commit is retried until it lands, except at shutdown:
//! [`PgWriterHandle::stop_retrying_after`] (the daemon calls it with its
//! shutdown grace period when it stops) bounds the retries. Past that
//! deadline each batch is tried once more, no longer retried; what is not
//! written then is counted
//! (`healthchecker_pg_checks_dropped_total{reason="shutdown"}`), and when
//! the thread ends an error names how many check results were left
//! unwritten (the check rows are what a
//! bucket's next owner reads, so they are lost, and the log says how
//! many). A flush answers once its results are written or given up.

use super::{Fencing, Hold, PgStore};
use crate::cluster::{FenceError, Held};
use crate::metrics::PgWriterSeries;
use crate::store::CheckWrite;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Default bound of the backlog, in checks: two lease expiries (10 s) of
/// a node checking 100,000 services every 30 s (3,333 checks/s) fit in
/// it, so a node cut off from PostgreSQL normally loses its leases on its
/// own clock before the bound is reached. A queued check takes about
/// 300 bytes with its strings: some 20 MB at the bound.
pub const BACKLOG: usize = 65_536;

/// The writer's periods and bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgWriterTiming {
    /// How long a batch collects after a state change (100 ms, SQLite's
    /// `BATCH_WINDOW`): state changes, their events and notifications are
    /// committed within it.
    pub batch_window: Duration,
    /// How long a batch of plain checks (no state change) collects after
    /// its first check (1 s): every check is read on every node within
    /// it. Longer than `batch_window` because each batch was a
    /// transaction's fixed costs and, until its fence took an advisory
    /// lock, locked the lease row of every bucket it writes (`FOR SHARE`,
    /// a WAL record each): at 4,000 checks/s one node's batches of 100 ms
    /// wrote ≈ 50 B of lease locks a check.
    pub plain_window: Duration,
    /// Most checks per batch (4,096, SQLite's `MAX_BATCH`).
    pub max_batch: usize,
    /// Most checks recorded and not yet committed or dropped
    /// ([`BACKLOG`]); when reached, the node gives up its leases (see the
    /// module docs).
    pub backlog: usize,
    /// The period of the sweep that writes the services' held per-check
    /// fields and roll-ups ([`PgStore::flush_swept`]): about how long
    /// each is held after its first check not yet in them.
    pub hold_for: Duration,
}

/// Default of [`PgWriterTiming::hold_for`]: 15 minutes (SQLite holds 5,
/// its `SNAPSHOT_EVERY` and `ROLLUP_EVERY`). A flush costs ≈ 320 B of WAL
/// a service, and each page of `services` and `uptime` that the flushes
/// touch between two checkpoints is written whole once: a third of the
/// pages at PostgreSQL's default 5-minute checkpoints, where a 5-minute
/// hold touched them all (docs/cluster.md, "The sweep"). Reads do not
/// depend on it (the newest check row carries the counters and the
/// checks above the mark); it must stay below the slots' shortest
/// retention (`checks.rs`).
pub const HOLD_FOR: Duration = Duration::from_secs(15 * 60);

impl Default for PgWriterTiming {
    fn default() -> Self {
        PgWriterTiming {
            batch_window: Duration::from_millis(100),
            plain_window: Duration::from_secs(1),
            max_batch: 4096,
            backlog: BACKLOG,
            hold_for: HOLD_FOR,
        }
    }
}

enum Op {
    /// A result and the leases held when it was recorded.
    Check(Box<CheckWrite>, Arc<Held>),
    Flush(oneshot::Sender<()>),
    /// Ends the thread after the batch in hand, as if it had died (the
    /// supervision tests' fault hook, [`PgWriterHandle::stop_for_tests`]).
    #[cfg(any(test, feature = "fault-injection"))]
    Stop,
}

/// The held set as the handles last saw it: each recorded result carries
/// the snapshot of its moment (shared until the set changes).
struct Seen {
    rx: Option<watch::Receiver<Held>>,
    now: Arc<Held>,
}

impl Seen {
    /// The held set now.
    fn current(&mut self) -> Arc<Held> {
        if let Some(rx) = &mut self.rx {
            if rx.has_changed().unwrap_or(false) {
                let held = rx.borrow_and_update().clone();
                // A renewal (the same leases, a later deadline) keeps the
                // snapshot, so that it does not split a batch in two
                // transactions (each locks its buckets' lease rows): a
                // result is written under the leases of its moment and the
                // deadline of the commit (`still_held`) either way.
                if held.leases != self.now.leases {
                    self.now = Arc::new(held);
                }
            }
        }
        self.now.clone()
    }
}

/// What fences a node's batches: its id, its lease manager's published
/// set, where the writer reports a bucket whose checks it dropped because
/// the lease was stale (the scheduler stops running it), and what it does
/// when its backlog is full.
pub struct PgFence {
    /// The node's id (`buckets.owner`).
    pub node: String,
    /// The held `(bucket, epoch)` set (`LeaseHandle::held`).
    pub held: watch::Receiver<Held>,
    /// Stale buckets, one report per dropped bucket and batch.
    pub stale: mpsc::UnboundedSender<FenceError>,
    /// Set to `true` when the backlog reaches its bound (the node gives up
    /// its leases: `LeaseManager::give_up_when`), back to `false` once it
    /// has drained to zero.
    pub give_up: Arc<watch::Sender<bool>>,
    /// The node's `/metrics` series of the writer.
    pub metrics: PgWriterSeries,
}

/// What the handles and the thread share: the backlog's depth and bound,
/// the series, and the give-up signal.
struct Shared {
    /// Also the store's ([`PgStore::writer_behind`]).
    depth: Arc<AtomicUsize>,
    bound: usize,
    metrics: PgWriterSeries,
    give_up: Option<Arc<watch::Sender<bool>>>,
    node: String,
    seen: std::sync::Mutex<Seen>,
    /// Past this instant a failed commit is not retried (the daemon is
    /// stopping: [`PgWriterHandle::stop_retrying_after`]).
    stop_by: std::sync::Mutex<Option<Instant>>,
}

impl Shared {
    /// The shutdown's deadline for retries, if the daemon is stopping.
    fn stop_by(&self) -> Option<Instant> {
        *self.stop_by.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts `n` checks as no longer waiting; when the backlog is empty
    /// and the node had given up its leases, it may claim again.
    fn done(&self, n: usize) {
        if n == 0 {
            return;
        }
        let before = self.depth.fetch_sub(n, Ordering::AcqRel);
        self.metrics.backlog.dec_by(n as i64);
        if before == n {
            if let Some(g) = &self.give_up {
                if g.send_if_modified(|g| std::mem::replace(g, false)) {
                    tracing::info!(
                        node = %self.node,
                        "postgresql write backlog drained; claiming leases again"
                    );
                }
            }
        }
    }

    /// The backlog reached its bound: give up the leases (once until it
    /// drains).
    fn full(&self) {
        let Some(g) = &self.give_up else { return };
        if g.send_if_modified(|g| !std::mem::replace(g, true)) {
            self.metrics.leases_given_up.inc();
            tracing::error!(
                node = %self.node,
                backlog = self.bound,
                "postgresql write backlog full (the database is unreachable or too slow): \
                 giving up this node's leases until it drains"
            );
        }
    }
}

/// Sends check results to the PostgreSQL writer thread.
#[derive(Clone)]
pub struct PgWriterHandle {
    tx: mpsc::UnboundedSender<Op>,
    shared: Arc<Shared>,
}

impl PgWriterHandle {
    /// Queues a check result; never waits. At the backlog's bound the
    /// node gives up its leases; a result recorded while the backlog is
    /// full is dropped, logged and counted (`reason="backlog_full"`).
    pub async fn record(&self, w: CheckWrite) {
        let s = &self.shared;
        let depth = s.depth.fetch_add(1, Ordering::AcqRel);
        if depth >= s.bound {
            s.depth.fetch_sub(1, Ordering::AcqRel);
            let n = s.metrics.dropped_full.inc() + 1;
            // Logged at the 1st, 2nd, 4th, 8th… drop: never silent, never a flood.
            if n.is_power_of_two() {
                tracing::error!(
                    node = %s.node,
                    service_id = %w.service_id,
                    backlog = s.bound,
                    dropped = n,
                    "postgresql write backlog full: check result dropped"
                );
            }
            s.full();
            return;
        }
        s.metrics.backlog.inc();
        let held = s.seen.lock().unwrap_or_else(|e| e.into_inner()).current();
        if self.tx.send(Op::Check(Box::new(w), held)).is_err() {
            // The thread is gone (the supervisor stops the daemon).
            s.depth.fetch_sub(1, Ordering::AcqRel);
            s.metrics.backlog.dec();
            return;
        }
        if depth + 1 >= s.bound {
            s.full();
        }
    }

    /// Waits until everything queued before this call is committed (or
    /// dropped as stale).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Op::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// The daemon is stopping: failed commits are retried for `grace`
    /// more at most, then each batch is tried once and what fails is left
    /// unwritten (counted and logged when the thread ends), so that a node
    /// whose database is unreachable still exits.
    pub fn stop_retrying_after(&self, grace: Duration) {
        let by = Instant::now() + grace;
        let mut s = self
            .shared
            .stop_by
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if s.is_none_or(|t| by < t) {
            *s = Some(by);
        }
    }

    /// Makes the writer thread exit (fault injection for the supervision
    /// tests: the daemon must notice, fail `/health` and stop), as
    /// SQLite's `WriterHandle::stop_for_tests` does.
    #[cfg(any(test, feature = "fault-injection"))]
    pub(crate) fn stop_for_tests(&self) {
        let _ = self.tx.send(Op::Stop);
    }

    /// Checks recorded and not yet committed or dropped.
    pub fn backlog(&self) -> usize {
        self.shared.depth.load(Ordering::Acquire)
    }
}

/// The PostgreSQL writer thread; it drains its queue and exits when every
/// [`PgWriterHandle`] is dropped.
pub struct PgWriter {
    thread: Option<std::thread::JoinHandle<()>>,
    stopped: tokio_util::sync::CancellationToken,
}

impl PgWriter {
    /// Starts the thread: unfenced (a single node) without `fence` (then
    /// nothing is given up at the bound: results beyond it are dropped
    /// and counted on a detached series).
    pub fn start(
        store: &PgStore,
        fence: Option<PgFence>,
        timing: PgWriterTiming,
    ) -> (PgWriter, PgWriterHandle) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut held = fence.as_ref().map(|f| f.held.clone());
        let now = Arc::new(
            held.as_mut()
                .map(|h| h.borrow_and_update().clone())
                .unwrap_or_default(),
        );
        let depth = Arc::new(AtomicUsize::new(0));
        store.watch_backlog(depth.clone(), timing.backlog.max(1));
        let shared = Arc::new(Shared {
            seen: std::sync::Mutex::new(Seen { rx: held, now }),
            depth,
            bound: timing.backlog.max(1),
            metrics: fence
                .as_ref()
                .map(|f| f.metrics.clone())
                .unwrap_or_default(),
            give_up: fence.as_ref().map(|f| f.give_up.clone()),
            node: fence.as_ref().map(|f| f.node.clone()).unwrap_or_default(),
            stop_by: std::sync::Mutex::new(None),
        });
        let store = store.clone();
        let stopped = tokio_util::sync::CancellationToken::new();
        let guard = stopped.clone().drop_guard();
        let on_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("hc-pg-writer".into())
            .spawn(move || {
                let _guard = guard;
                run(&store, rx, fence, timing, &on_thread)
            })
            .expect("spawn the PostgreSQL writer thread");
        (
            PgWriter {
                thread: Some(thread),
                stopped,
            },
            PgWriterHandle { tx, shared },
        )
    }

    /// Cancelled when the thread has stopped, for whatever reason.
    pub fn stopped(&self) -> tokio_util::sync::CancellationToken {
        self.stopped.clone()
    }

    /// Waits for the thread to drain its queue and exit (after every
    /// handle is dropped).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    store: &PgStore,
    mut rx: mpsc::UnboundedReceiver<Op>,
    fence: Option<PgFence>,
    timing: PgWriterTiming,
    shared: &Shared,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("the PostgreSQL writer's timer");
    let mut hold = Hold::default();
    // Check results given up at shutdown (the database did not answer
    // within the grace period).
    let mut unwritten = 0;
    // How often what is held is looked at when no check comes.
    let tick = Duration::from_secs(1).min(timing.hold_for);
    let mut open = true;
    while open {
        // The first write of a batch, then whatever comes within the
        // window (or until a flush, a full batch, the end of the queue).
        let mut batch = Vec::new();
        let mut helds = Vec::new();
        let mut waiters = Vec::new();
        let first = match rt.block_on(async { tokio::time::timeout(tick, rx.recv()).await }) {
            Ok(Some(op)) => op,
            Ok(None) => break,
            Err(_) => {
                flush_hold(store, &mut hold, fence.as_ref(), Some(timing.hold_for));
                continue;
            }
        };
        // A state change shortens the window to `batch_window` after it.
        let mut due = Instant::now() + timing.plain_window.max(timing.batch_window);
        let mut op = Some(first);
        loop {
            match op {
                Some(Op::Check(c, held)) => {
                    if c.transition.is_some() {
                        due = due.min(Instant::now() + timing.batch_window);
                    }
                    batch.push(*c);
                    helds.push(held);
                }
                Some(Op::Flush(w)) => waiters.push(w),
                #[cfg(any(test, feature = "fault-injection"))]
                Some(Op::Stop) => {
                    tracing::error!("the PostgreSQL writer thread stops (fault injection)");
                    open = false;
                }
                None => open = false,
            }
            if !open || !waiters.is_empty() || batch.len() >= timing.max_batch {
                break;
            }
            op = match rt.block_on(async { tokio::time::timeout_at(due.into(), rx.recv()).await }) {
                Ok(next) => next,
                Err(_) => break,
            };
        }
        let given_up = commit(store, &batch, &helds, fence.as_ref(), shared, &mut hold);
        shared.metrics.dropped_shutdown.inc_by(given_up as u64);
        unwritten += given_up;
        shared.done(batch.len());
        // A flush writes everything held; otherwise the sweep moves on.
        let sweep = waiters.is_empty().then_some(timing.hold_for);
        flush_hold(store, &mut hold, fence.as_ref(), sweep);
        for w in waiters {
            let _ = w.send(());
        }
    }
    // Every handle dropped (the daemon stops): write everything held.
    flush_hold(store, &mut hold, fence.as_ref(), None);
    if unwritten > 0 {
        tracing::error!(
            node = %shared.node,
            unwritten,
            "postgresql unreachable at shutdown: check results left unwritten"
        );
    }
}

/// Writes what is held of the services the sweep passes (`Some` of its
/// period, [`PgStore::flush_swept`]), or of all of them (`None`), fenced by
/// the leases held now. A failure is logged and
/// left for the next time: the check rows hold what is held, so a node
/// that cannot write it loses nothing its bucket's next owner cannot
/// rebuild.
fn flush_hold(store: &PgStore, hold: &mut Hold, fence: Option<&PgFence>, sweep: Option<Duration>) {
    if hold.is_empty() {
        return;
    }
    let fencing = fence.map(|f| Fencing {
        node: f.node.clone(),
        held: f.held.borrow().clone(),
    });
    let r = match sweep {
        Some(period) => store.flush_swept(fencing.as_ref(), hold, period, Instant::now()),
        None => store.flush_held(fencing.as_ref(), hold, None),
    };
    if let Err(e) = r {
        tracing::warn!(
            error = %e,
            held = hold.len(),
            "postgresql: writing the held service rows and roll-ups failed; retrying later"
        );
    }
}

/// Writes `batch` in runs of results recorded under one held set (one run,
/// but at a change of the leases); returns how many results were given up
/// unwritten (only at shutdown, [`PgWriterHandle::stop_retrying_after`]).
fn commit(
    store: &PgStore,
    batch: &[CheckWrite],
    helds: &[Arc<Held>],
    fence: Option<&PgFence>,
    shared: &Shared,
    hold: &mut Hold,
) -> usize {
    let mut start = 0;
    let mut unwritten = 0;
    while let Some(held) = helds.get(start) {
        let end = helds[start..]
            .iter()
            .position(|h| !Arc::ptr_eq(h, held))
            .map_or(helds.len(), |n| start + n);
        if !commit_run(store, &batch[start..end], held, fence, shared, hold) {
            unwritten += end - start;
        }
        start = end;
    }
    unwritten
}

/// The leases a result recorded under `then` may still be written with:
/// those held then and now at the same epoch (a bucket lost and claimed
/// again meanwhile is not: its new owner's state may lie in between).
fn still_held(then: &Held, now: &Held) -> Held {
    Held {
        leases: then
            .leases
            .iter()
            .filter(|(b, e)| now.epoch(**b) == Some(**e))
            .map(|(b, e)| (*b, *e))
            .collect(),
        valid_until: now.valid_until,
    }
}

/// Writes one run, retrying a failed commit with back-off until it lands,
/// fenced by the leases held both when its results were recorded (`then`)
/// and now; the checks of stale buckets are dropped, reported and counted.
/// At shutdown, past the deadline of [`PgWriterHandle::stop_retrying_after`],
/// a failed commit is not retried: false, the run is left unwritten.
fn commit_run(
    store: &PgStore,
    batch: &[CheckWrite],
    then: &Held,
    fence: Option<&PgFence>,
    shared: &Shared,
    hold: &mut Hold,
) -> bool {
    let mut delay = Duration::from_millis(100);
    loop {
        let fencing = fence.map(|f| Fencing {
            node: f.node.clone(),
            held: still_held(then, &f.held.borrow()),
        });
        match store.write_held(fencing.as_ref(), batch, hold) {
            Ok(w) => {
                let dropped = batch.len().saturating_sub(w.checks + w.gone);
                if let Some(f) = fence {
                    if dropped > 0 {
                        shared.metrics.dropped_stale.inc_by(dropped as u64);
                        tracing::warn!(
                            node = %f.node,
                            checks = dropped,
                            buckets = w.stale.len(),
                            "checks of buckets no longer held dropped (stale leases)"
                        );
                    }
                    for e in w.stale {
                        tracing::warn!(error = %e, "checks of a bucket no longer held dropped");
                        let _ = f.stale.send(e);
                    }
                }
                return true;
            }
            Err(e) => {
                let now = Instant::now();
                let stop_by = shared.stop_by();
                if stop_by.is_some_and(|t| now >= t) {
                    tracing::error!(
                        error = %e,
                        checks = batch.len(),
                        "postgresql write failed while the daemon stops: not retried"
                    );
                    return false;
                }
                tracing::error!(
                    error = %e,
                    checks = batch.len(),
                    backlog = shared.depth.load(Ordering::Acquire),
                    "postgresql write failed; retrying"
                );
                // Never past the shutdown's deadline: one last try then.
                std::thread::sleep(stop_by.map_or(delay, |t| delay.min(t - now)));
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
