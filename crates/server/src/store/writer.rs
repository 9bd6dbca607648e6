//! The batch writer: one thread that records check results, state changes
//! and outbox rows, many per transaction, and the in-memory state that
//! reads overlay on the stored rows ([`Overlay`]).
//!
//! What is written when (docs/storage.md, "Batch writer"):
//!
//! - A check that changes its service's state (its event and notification
//!   with it: SPEC section 4, one transaction) is *durable*: everything the
//!   writer holds commits, in order, within [`BATCH_WINDOW`] of it.
//! - A *plain* check (no state change, so no event and no notification) is
//!   held in memory and committed with the next durable one, or after at
//!   most [`PLAIN_EVERY`], or when [`MAX_BATCH`] are held, or at a flush or
//!   shutdown. A `kill -9` can lose up to [`PLAIN_EVERY`] of plain check
//!   rows, never a state change, event or notification.
//! - The service rows' per-check fields (last check, counters, ...) are
//!   folded in memory ([`Snapshot`], one per service) and written as a
//!   *snapshot*, sorted by service id, at most every [`SNAPSHOT_EVERY`]:
//!   one row update per check would dirty one random 4 KiB page of the
//!   services table per check. `meta.heads_through` moves with it;
//!   start-up repairs the rows from the checks above it.
//! - The roll-ups (store/rollup.rs) of committed checks go with their own
//!   mark `meta.rolled_through` at most every [`ROLLUP_EVERY`]; start-up
//!   folds the committed checks above the mark into them, so none is lost
//!   or counted twice.
//!
//! Reads overlay the writer's state ([`Overlay`], shared as `Store`'s
//! `heads`): a service read shows the newest fold even when its row has not
//! been written yet, and a read of recent checks shows the held checks
//! (with the row ids they will get: the writer numbers checks when it
//! receives them) before the committed ones; uptime reads add the rolls of
//! the checks not in the roll-up tables yet.
//!
//! Each check row names its service's previous check (a chain per service,
//! schema migration 2): recording a check appends to the table's tail
//! instead of inserting into a per-service index at a random page.
//!
//! This file decides when to commit and what to flush; the rows one check
//! writes (check, service row, event, notification, deliveries) and the
//! snapshot's row update are in `writer/rows.rs`.

mod rows;

use super::rollup::{hour_of, mark_rolled, write_rolls, Roll};
pub use super::writes::{CheckWrite, NotifyWrite, TransitionWrite};
use super::{lock, mark_heads, CheckRecord, Head, Heads, ServiceRecord, SqliteStore, Store};
use crate::cluster::store::{PgFence, PgWriter, PgWriterHandle, PgWriterTiming};
use healthchecker_core::ServiceId;
use rows::{write_check, write_snapshot, Snapshot};
use rusqlite::Connection;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Most checks held and written per transaction: large enough to amortise
/// the commit, small enough that a registration waiting for the writer
/// lock waits little.
pub const MAX_BATCH: usize = 4096;

/// How long the writer collects after a durable write (a state change, its
/// event and notification) before committing it and everything held before
/// it: state changes reach the file within this.
pub const BATCH_WINDOW: Duration = Duration::from_millis(100);

/// The longest a plain check (no state change, event or notification) is
/// held in memory before it commits: what a `kill -9` can lose of them.
///
/// Chosen for a home lab (50 services at 30 s: 1.7 checks a second) and
/// SPEC section 18's 200 bytes of WAL per check. A commit of plain checks
/// writes about 4 WAL frames of 4,120 bytes (a 24-byte header and a 4 KiB
/// page each) plus one per 100 checks (about 40 bytes a row): the tail
/// page of `checks` it completes, the new one, their parent, and page 1
/// (the file grew). Measured (`a_home_lab_writes_under_200_bytes_of_wal_per_check`,
/// with the snapshot and roll-ups every 5 minutes): 100 checks a commit
/// (60 s) cost 150 bytes a check for the checks alone, 198 in all, at the
/// budget's edge; 200 a commit (120 s) 157 in all.
pub const PLAIN_EVERY: Duration = Duration::from_secs(120);

/// The longest the snapshot of per-check fields (service rows) waits. Reads
/// overlay the writer's folds, so this only bounds what a `kill -9` loses
/// of counters and last-check fields (start-up repairs the newest check's
/// fields from the committed checks) and how many checks start-up walks
/// (`recover_heads`: at 3,333 checks/s, 5 minutes are 1,000,000 rows).
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(300);

/// The longest the roll-ups of committed checks wait: the current hour's
/// and day's rows are rewritten once per period (store/rollup.rs). The same
/// as [`SNAPSHOT_EVERY`], so that both land in the same commit.
pub const ROLLUP_EVERY: Duration = Duration::from_secs(300);

/// The writer's periods; [`WriterTiming::default`] is the constants above.
/// Tests use tiny periods instead of waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterTiming {
    /// [`BATCH_WINDOW`].
    pub batch_window: Duration,
    /// [`PLAIN_EVERY`].
    pub plain_every: Duration,
    /// [`SNAPSHOT_EVERY`].
    pub snapshot_every: Duration,
    /// [`ROLLUP_EVERY`].
    pub rollup_every: Duration,
    /// [`MAX_BATCH`].
    pub max_batch: usize,
}

impl Default for WriterTiming {
    fn default() -> Self {
        WriterTiming {
            batch_window: BATCH_WINDOW,
            plain_every: PLAIN_EVERY,
            snapshot_every: SNAPSHOT_EVERY,
            rollup_every: ROLLUP_EVERY,
            max_batch: MAX_BATCH,
        }
    }
}

/// Queue bound between the scheduler and the writer: about three seconds of
/// checks at 10,000/s. When full, the scheduler waits (back-pressure)
/// rather than dropping results.
pub const QUEUE: usize = 32_768;

enum Op {
    Check(Box<CheckWrite>),
    Flush(oneshot::Sender<()>),
    /// Commit what is pending and exit, as a crashed writer would stop
    /// (the supervision tests).
    #[cfg(any(test, feature = "fault-injection"))]
    Stop,
}

/// Sends writes to the writer thread: SQLite's (this file) or the
/// PostgreSQL store's (`PgWriter`, cluster/store/batcher.rs).
#[derive(Clone)]
pub struct WriterHandle {
    tx: HandleKind,
}

#[derive(Clone)]
enum HandleKind {
    Sqlite(mpsc::Sender<Op>),
    Pg(PgWriterHandle),
}

impl WriterHandle {
    /// Queues a check result; waits if the queue is full.
    pub async fn record(&self, w: CheckWrite) {
        match &self.tx {
            // The thread only stops after every handle is gone.
            HandleKind::Sqlite(tx) => drop(tx.send(Op::Check(Box::new(w))).await),
            HandleKind::Pg(h) => h.record(w).await,
        }
    }

    /// Makes the writer thread exit (fault injection for the supervision
    /// tests: the daemon must notice and stop), SQLite's or PostgreSQL's.
    #[cfg(any(test, feature = "fault-injection"))]
    pub(crate) async fn stop_for_tests(&self) {
        match &self.tx {
            HandleKind::Sqlite(tx) => drop(tx.send(Op::Stop).await),
            HandleKind::Pg(h) => h.stop_for_tests(),
        }
    }

    /// A handle whose checks arrive on the returned channel instead of in a
    /// store: the scheduler's tests read exactly what it hands the writer.
    #[cfg(test)]
    pub(crate) fn capture() -> (WriterHandle, mpsc::UnboundedReceiver<CheckWrite>) {
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let (out, captured) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(op) = rx.recv().await {
                match op {
                    Op::Check(c) => drop(out.send(*c)),
                    Op::Flush(done) => drop(done.send(())),
                    Op::Stop => break,
                }
            }
        });
        (
            WriterHandle {
                tx: HandleKind::Sqlite(tx),
            },
            captured,
        )
    }

    /// The daemon is stopping: on PostgreSQL, failed commits are retried
    /// for `grace` more at most, then left unwritten, counted and logged
    /// (`PgWriterHandle::stop_retrying_after`), so that a node whose
    /// database is unreachable still exits. SQLite's writer writes a local
    /// file and has nothing to bound.
    pub fn stop_retrying_after(&self, grace: std::time::Duration) {
        if let HandleKind::Pg(h) = &self.tx {
            h.stop_retrying_after(grace);
        }
    }

    /// Waits until everything queued before this call is committed, held
    /// plain checks, snapshot and roll-ups included.
    pub async fn flush(&self) {
        match &self.tx {
            HandleKind::Sqlite(sender) => {
                let (tx, rx) = oneshot::channel();
                if sender.send(Op::Flush(tx)).await.is_ok() {
                    let _ = rx.await;
                }
            }
            HandleKind::Pg(h) => h.flush().await,
        }
    }
}

/// The writer thread; joins on drop of the last handle.
pub struct Writer {
    thread: Option<std::thread::JoinHandle<()>>,
    stopped: tokio_util::sync::CancellationToken,
    /// The PostgreSQL writer, instead of `thread`.
    pg: Option<PgWriter>,
}

impl Writer {
    /// Starts the writer thread on the store's writer connection (on
    /// PostgreSQL: `PgWriter`, unfenced).
    pub fn start(store: &Store) -> (Writer, WriterHandle) {
        Writer::start_with(store, WriterTiming::default())
    }

    /// The writer of a cluster node on PostgreSQL: each batch fenced by
    /// the node's leases as they are at its commit (`fence`). On SQLite,
    /// [`Writer::start`] (there is nothing to fence).
    pub fn start_fenced(store: &Store, fence: Option<PgFence>) -> (Writer, WriterHandle) {
        match store.pg() {
            Some(pg) => Writer::of_pg(PgWriter::start(pg, fence, PgWriterTiming::default())),
            None => Writer::start(store),
        }
    }

    /// The writer and handle over a started PostgreSQL writer.
    fn of_pg((w, h): (PgWriter, PgWriterHandle)) -> (Writer, WriterHandle) {
        let stopped = w.stopped();
        (
            Writer {
                thread: None,
                stopped,
                pg: Some(w),
            },
            WriterHandle {
                tx: HandleKind::Pg(h),
            },
        )
    }

    /// [`Writer::start`] with other periods (tests). On PostgreSQL only
    /// the batch window and size apply.
    pub fn start_with(store: &Store, timing: WriterTiming) -> (Writer, WriterHandle) {
        let Some(store) = store.sqlite() else {
            let pg = store.pg().expect("a store is SQLite or PostgreSQL");
            return Writer::of_pg(PgWriter::start(
                pg,
                None,
                PgWriterTiming {
                    batch_window: timing.batch_window,
                    max_batch: timing.max_batch,
                    ..PgWriterTiming::default()
                },
            ));
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let conn = store.writer_conn();
        let health = store.clone();
        let stopped = tokio_util::sync::CancellationToken::new();
        // Cancelled when the thread ends, by return or by panic (supervision).
        let guard = stopped.clone().drop_guard();
        let thread = std::thread::Builder::new()
            .name("hc-store-writer".into())
            .spawn(move || {
                let _guard = guard;
                run(conn, rx, health, timing)
            })
            .expect("spawn store writer thread");
        (
            Writer {
                thread: Some(thread),
                stopped,
                pg: None,
            },
            WriterHandle {
                tx: HandleKind::Sqlite(tx),
            },
        )
    }

    /// A token cancelled when the writer thread has stopped (for whatever
    /// reason): supervision watches it.
    pub fn stopped(&self) -> tokio_util::sync::CancellationToken {
        self.stopped.clone()
    }

    /// Waits for the thread to drain its queue and exit (after every
    /// [`WriterHandle`] is dropped).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(w) = self.pg.take() {
            w.join();
        }
    }
}

/// A check the writer has received, with the row id it gets.
#[derive(Debug)]
struct Held {
    id: i64,
    check: CheckWrite,
    /// The service's fold as of this check, for a check with a state change
    /// (which writes the service row in its transaction).
    fold: Option<Snapshot>,
}

/// The writer's in-memory state that reads overlay on the stored rows:
/// each service's fold of the checks received since start (its per-check
/// fields and its newest committed check), and the checks received but not
/// committed yet. Shared with readers as `Store`'s `heads`
/// (`checks::Heads`); a fold is kept for as long as the service exists (a
/// [`Snapshot`] per service, no per-service strings but its reasons), so a
/// read never sees a row older than what the writer knows.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    folds: crate::IdMap<Snapshot>,
    held: crate::IdMap<Vec<Arc<Held>>>,
    /// Roll-ups (hour and roll, per service) of the checks received but
    /// not yet in the roll-up tables: uptime reads add them.
    rolls: crate::IdMap<Vec<(i64, Roll)>>,
    /// Counts the roll-up commits, twice each: odd from just before one
    /// commits until `rolls` is cleared after it. A read of the tables and
    /// `rolls` that spanned one is retried.
    rolled: u64,
}

impl Overlay {
    /// The overlay at start-up: the roll-ups of the checks a crash left
    /// out of the roll-up tables (`rollup::fold_unmarked`), per service
    /// and hour, for the writer's first roll-up commit to write.
    pub(crate) fn recovered(rolls: HashMap<(i64, i64), Roll>) -> Overlay {
        let mut ov = Overlay::default();
        for ((id, hour), roll) in rolls {
            ov.rolls
                .entry(ServiceId::new(id))
                .or_default()
                .push((hour, roll));
        }
        ov
    }

    /// The service's newest committed check, when the writer knows it
    /// better than the service row.
    pub(crate) fn head(&self, id: ServiceId) -> Option<Head> {
        self.folds.get(&id).and_then(|f| f.head)
    }

    /// The checks of `id` the writer holds, not committed yet: newest
    /// first, at most `limit`, `details` only when `with_details`.
    pub(crate) fn held_checks(
        &self,
        id: ServiceId,
        limit: usize,
        with_details: bool,
    ) -> Vec<CheckRecord> {
        let Some(held) = self.held.get(&id) else {
            return Vec::new();
        };
        held.iter()
            .rev()
            .take(limit)
            .map(|h| CheckRecord {
                id: h.id,
                at: h.check.at.get(),
                duration_us: h.check.duration_us,
                result: h.check.result,
                reason: h.check.reason.clone(),
                http_status: h.check.http_status,
                details: h.check.details.clone().filter(|_| with_details),
            })
            .collect()
    }

    /// Shows the writer's newest fields of `r`'s service in `r`.
    pub(crate) fn apply(&self, r: &mut ServiceRecord) {
        if let Some(f) = self.folds.get(&r.id) {
            f.overlay(r);
        }
    }

    /// The roll-ups (hour, roll) of `id`'s checks not yet in the roll-up
    /// tables, and the count of roll-up commits so far.
    pub(crate) fn unrolled(&self, id: ServiceId) -> &[(i64, Roll)] {
        self.rolls.get(&id).map_or(&[], Vec::as_slice)
    }

    /// How many roll-up commits there have been (a read of the tables and
    /// [`Overlay::unrolled`] that spans one is retried).
    pub(crate) fn rolled(&self) -> u64 {
        self.rolled
    }

    /// Forgets a deleted service; returns its newest committed check.
    pub(crate) fn forget(&mut self, id: ServiceId) -> Option<Head> {
        self.held.remove(&id);
        self.rolls.remove(&id);
        self.folds.remove(&id).and_then(|f| f.head)
    }
}

/// What the writer thread keeps between commits.
struct State {
    timing: WriterTiming,
    /// Received, not committed, in arrival order.
    held: Vec<Arc<Held>>,
    /// When the held durable writes must be committed.
    durable_due: Option<Instant>,
    /// When the oldest held plain check must be committed.
    plain_due: Option<Instant>,
    /// Some fold is not in its service row yet.
    dirty: bool,
    /// Some check is not in the roll-up tables yet (the overlay's `rolls`):
    /// written at most every [`ROLLUP_EVERY`], with `meta.rolled_through`
    /// (store/rollup.rs).
    unrolled: bool,
    /// The row id of the next check received.
    next_id: i64,
    last_snapshot: Instant,
    last_rollup: Instant,
}

impl State {
    /// Folds a received check into the overlay and holds it.
    fn receive(&mut self, c: CheckWrite, overlay: &Heads) {
        let id = self.next_id;
        self.next_id += 1;
        let durable = c.transition.is_some();
        let sid = c.service_id;
        let held = {
            let mut ov = overlay.lock().unwrap_or_else(|e| e.into_inner());
            let prev = ov.folds.get(&sid);
            let fold = Snapshot::fold(prev, &c, prev.and_then(|p| p.head));
            let held = Arc::new(Held {
                id,
                fold: durable.then(|| fold.clone()),
                check: c,
            });
            ov.folds.insert(sid, fold);
            ov.held.entry(sid).or_default().push(held.clone());
            let hour = hour_of(held.check.at.get());
            let rolls = ov.rolls.entry(sid).or_default();
            let roll = match rolls.iter().position(|(h, _)| *h == hour) {
                Some(i) => &mut rolls[i].1,
                None => {
                    rolls.push((hour, Roll::default()));
                    &mut rolls.last_mut().expect("just pushed").1
                }
            };
            roll.add(held.check.result, held.check.duration_us);
            held
        };
        self.held.push(held);
        self.dirty = true;
        self.unrolled = true;
        let now = Instant::now();
        if durable {
            self.durable_due
                .get_or_insert(now + self.timing.batch_window);
        } else {
            self.plain_due.get_or_insert(now + self.timing.plain_every);
        }
    }

    /// The earliest moment something must be committed, if any.
    fn due(&self) -> Option<Instant> {
        let snapshot = self
            .dirty
            .then(|| self.last_snapshot + self.timing.snapshot_every);
        let rollup = self
            .unrolled
            .then(|| self.last_rollup + self.timing.rollup_every);
        [self.durable_due, self.plain_due, snapshot, rollup]
            .into_iter()
            .flatten()
            .min()
    }

    /// Commits everything held, and the snapshot and roll-ups when due (or
    /// `force`). A failed batch (disk full, read-only file) is retried with
    /// back-off: state changes and notifications must not be lost while
    /// the disk recovers. Nothing is dropped until it committed.
    fn commit(
        &mut self,
        conn: &Mutex<Connection>,
        health: &SqliteStore,
        overlay: &Heads,
        force: bool,
    ) {
        let mut delay = Duration::from_millis(100);
        loop {
            let now = Instant::now();
            let snapshot_now = force || now >= self.last_snapshot + self.timing.snapshot_every;
            let rollup_now = force || now >= self.last_rollup + self.timing.rollup_every;
            let mut c = lock(conn);
            let r = write_batch(&mut c, self, snapshot_now, rollup_now, overlay);
            health.set_write_error(r.as_ref().err().map(|e| e.to_string()));
            match r {
                Ok(()) => {
                    if snapshot_now {
                        self.last_snapshot = now;
                    }
                    if rollup_now {
                        self.last_rollup = now;
                    }
                    return;
                }
                Err(e) => {
                    drop(c);
                    tracing::error!(error = %e, checks = self.held.len(), "store write failed; retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

fn run(
    conn: Arc<Mutex<Connection>>,
    mut rx: mpsc::Receiver<Op>,
    health: SqliteStore,
    timing: WriterTiming,
) {
    let overlay = health.heads();
    // Waiting for the queue with a deadline needs a timer: a small runtime
    // of this thread's own.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("store writer's timer");
    // The writer numbers the checks it receives (held checks are shown with
    // their ids); it is the only one inserting into `checks`.
    let next_id = lock(&conn)
        .query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM checks", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap_or(1);
    let now = Instant::now();
    // Roll-ups recovered at start-up wait for the first roll-up commit.
    let recovered = !overlay
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .rolls
        .is_empty();
    let mut st = State {
        timing,
        held: Vec::new(),
        durable_due: None,
        plain_due: None,
        dirty: false,
        unrolled: recovered,
        next_id,
        last_snapshot: now,
        last_rollup: now,
    };
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut open = true;
    loop {
        let due = st.due();
        let force = !open || !waiters.is_empty();
        if force || st.held.len() >= st.timing.max_batch || due.is_some_and(|d| d <= Instant::now())
        {
            st.commit(&conn, &health, &overlay, force);
            for w in waiters.drain(..) {
                let _ = w.send(());
            }
            if !open {
                return;
            }
            continue;
        }
        // Wait for the next write, or until something is due; then take
        // whatever else is queued.
        let first = match due {
            None => rt.block_on(rx.recv()),
            Some(d) => {
                match rt.block_on(async { tokio::time::timeout_at(d.into(), rx.recv()).await }) {
                    Ok(op) => op,
                    Err(_) => continue,
                }
            }
        };
        let mut op = first;
        loop {
            match op {
                None => open = false,
                Some(Op::Check(c)) => st.receive(*c, &overlay),
                Some(Op::Flush(w)) => waiters.push(w),
                #[cfg(any(test, feature = "fault-injection"))]
                Some(Op::Stop) => open = false,
            }
            if !open || !waiters.is_empty() || st.held.len() >= st.timing.max_batch {
                break;
            }
            op = match rx.try_recv() {
                Ok(next) => Some(next),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => break,
            };
        }
        // Busy: let the queue fill for a moment instead of waiting on it
        // again at once. A writer parked on the queue is woken by every
        // send (a futex wake and a context switch per check: about 6 % of
        // the daemon's CPU at 3,333 checks/s); one that sleeps is not, and
        // takes what came in one pass. Idle, the next turn parks as before.
        if open && waiters.is_empty() && st.held.len() < st.timing.max_batch {
            std::thread::sleep(BUSY_NAP);
        }
    }
}

/// How long the writer sleeps after taking writes before it looks at the
/// queue again (see `run`): it adds at most this to when a state change
/// commits (within [`BATCH_WINDOW`] of its arrival either way).
const BUSY_NAP: Duration = Duration::from_millis(20);

/// Writes every held check and, when `snapshot_now`, the dirty folds into
/// their service rows (with `meta.heads_through`), and when `rollup_now`
/// the roll-ups (with `meta.rolled_through`), in one transaction. On
/// success the overlay's heads move to the committed checks and the held
/// checks are released; on failure `st` is left as it was, to be retried.
/// The overlay is updated before the caller releases the connection: a
/// service deleted by another thread then walks its whole chain.
fn write_batch(
    conn: &mut Connection,
    st: &mut State,
    snapshot_now: bool,
    rollup_now: bool,
    overlay: &Heads,
) -> rusqlite::Result<()> {
    let snapshot_now = snapshot_now && st.dirty;
    let rollup_now = rollup_now && st.unrolled;
    if st.held.is_empty() && !snapshot_now && !rollup_now {
        return Ok(());
    }
    // The newest committed check of each service in the batch, as the
    // writer knows it (else its row's).
    let mut heads: crate::IdMap<Option<Head>> = {
        let ov = overlay.lock().unwrap_or_else(|e| e.into_inner());
        st.held
            .iter()
            .map(|h| (h.check.service_id, ov.head(h.check.service_id)))
            .collect()
    };
    let tx = conn.transaction()?;
    // Ids as numbered on receipt; above the table's end in any case.
    let mut last: i64 =
        tx.query_row("SELECT COALESCE(MAX(id), 0) FROM checks", [], |r| r.get(0))?;
    let mut gone = HashSet::new();
    let mut insert = tx.prepare_cached(rows::INSERT_CHECK)?;
    for h in &st.held {
        let c = &h.check;
        let id = h.id.max(last + 1);
        last = id;
        let prev = heads.get(&c.service_id).copied().flatten();
        match write_check(&tx, &mut insert, id, c, h.fold.as_ref(), prev)? {
            Some(head) => {
                heads.insert(c.service_id, Some(head));
            }
            None => {
                gone.insert(c.service_id);
            }
        }
    }
    drop(insert);
    if snapshot_now {
        let mut ids: Vec<ServiceId> = {
            let ov = overlay.lock().unwrap_or_else(|e| e.into_inner());
            ov.folds
                .iter()
                .filter(|(_, f)| f.dirty)
                .map(|(id, _)| *id)
                .collect()
        };
        ids.sort_unstable();
        // A chunk at a time, so that readers never wait for the whole
        // snapshot (the folds change only on this thread).
        for chunk in ids.chunks(1024) {
            let folds: Vec<(ServiceId, Snapshot)> = {
                let ov = overlay.lock().unwrap_or_else(|e| e.into_inner());
                chunk
                    .iter()
                    .filter_map(|id| ov.folds.get(id).map(|f| (*id, f.clone())))
                    .collect()
            };
            for (id, f) in folds {
                let head = heads.get(&id).copied().flatten().or(f.head);
                if let Some(head) = head {
                    write_snapshot(&tx, id, &f, head, None)?;
                }
            }
        }
        mark_heads(&tx)?;
    }
    if rollup_now {
        // The roll-ups of every check up to the mark set here (every check
        // received: all commit in this transaction), in its transaction:
        // start-up folds the checks above it (a crash). A chunk of services
        // at a time, so that readers never wait for the whole write.
        let mut ids: Vec<ServiceId> = {
            let ov = overlay.lock().unwrap_or_else(|e| e.into_inner());
            ov.rolls.keys().copied().collect()
        };
        ids.sort_unstable();
        for chunk in ids.chunks(1024) {
            let part: HashMap<(i64, i64), Roll> = {
                let ov = overlay.lock().unwrap_or_else(|e| e.into_inner());
                chunk
                    .iter()
                    .flat_map(|id| {
                        ov.unrolled(*id)
                            .iter()
                            .map(move |(h, r)| ((id.get(), *h), *r))
                    })
                    .collect()
            };
            write_rolls(&tx, &part)?;
        }
        mark_rolled(&tx)?;
    }
    let bump = |ov: &Heads| ov.lock().unwrap_or_else(|e| e.into_inner()).rolled += 1;
    if rollup_now {
        // Odd while the roll-up tables may change under a reader.
        bump(overlay);
    }
    let committed = tx.commit();
    if rollup_now && committed.is_err() {
        bump(overlay);
    }
    committed?;
    {
        let mut ov = overlay.lock().unwrap_or_else(|e| e.into_inner());
        for (id, head) in heads {
            if let (Some(f), Some(head)) = (ov.folds.get_mut(&id), head) {
                f.head = Some(head);
            }
        }
        for id in gone {
            ov.folds.remove(&id);
            ov.rolls.remove(&id);
        }
        if rollup_now {
            ov.rolls.clear();
            ov.rolled += 1;
        }
        debug_assert!(ov.rolled.is_multiple_of(2));
        ov.held.clear();
        if snapshot_now {
            for f in ov.folds.values_mut() {
                f.dirty = false;
            }
        }
    }
    st.next_id = st.next_id.max(last + 1);
    st.held.clear();
    st.durable_due = None;
    st.plain_due = None;
    if snapshot_now {
        st.dirty = false;
    }
    if rollup_now {
        st.unrolled = false;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
