//! The batch writer: one thread that records check results, state changes
//! and outbox rows, many per transaction.
//!
//! Group commit: the thread collects writes for up to [`BATCH_WINDOW`] (or
//! [`MAX_BATCH`] writes) and commits them in one transaction. A state
//! change's event and its notification are in the same transaction as the
//! check that caused it (SPEC section 4), and the service row is updated in
//! it too.
//!
//! What changes with every check but is not a state change (last check,
//! counters, uptime buckets) is folded in memory and written as a
//! *snapshot*, sorted by service id: at once while few services are dirty
//! (a home lab sees every check immediately), at most every
//! [`SNAPSHOT_EVERY`] under load. One row update per check would dirty one
//! random 4 KiB page of the services table per check (100,000 services at a
//! 30 s interval: 3,333 page writes a second); the snapshot writes each
//! page once per period. A `kill -9` can lose the last period's snapshot
//! (last-check fields, counters) but never a check, state change, event or
//! notification that was committed. The roll-ups (store/rollup.rs) go with
//! their own mark `meta.rolled_through` at most every [`ROLLUP_EVERY`];
//! start-up folds the committed checks above the mark into them, so none is
//! lost or counted twice.
//!
//! Each check row names its service's previous check (a chain per service,
//! schema migration 2): recording a check appends to the table's tail
//! instead of inserting into a per-service index at a random page. The
//! newest check of a service not yet in its row is kept in
//! [`Store`]'s shared `heads` map for readers until the snapshot lands.
//!
//! This file decides when to commit and what to flush; the rows one check
//! writes (check, service row, event, notification, deliveries) and the
//! snapshot's row update are in `writer/rows.rs`.

mod rows;

use super::rollup::{hour_of, mark_rolled, write_rolls, Roll};
pub use super::writes::{CheckWrite, NotifyWrite, TransitionWrite};
use super::{lock, mark_heads, Heads, Store};
use healthchecker_core::ServiceId;
use rows::{write_check, write_snapshot, Snapshot};
use rusqlite::Connection;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Most writes per transaction: large enough to amortise the commit, small
/// enough that a registration waiting for the writer lock waits little.
pub const MAX_BATCH: usize = 4096;

/// How long the writer collects before committing: state changes reach the
/// store (and the API) within this, and the thread wakes ten times a second
/// instead of once per check.
pub const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(100);

/// The longest the snapshot of per-check fields waits under load.
pub const SNAPSHOT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The longest the roll-ups of committed checks wait under load: the
/// current hour's and day's rows are rewritten once per period, not once
/// per snapshot (store/rollup.rs).
pub const ROLLUP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Below this many dirty services the snapshot is written with every batch
/// (and below this many dirty roll-up rows, the roll-ups).
pub const SNAPSHOT_EAGER: usize = 256;

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

/// Sends writes to the writer thread.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Op>,
}

impl WriterHandle {
    /// Queues a check result; waits if the queue is full.
    pub async fn record(&self, w: CheckWrite) {
        // The thread only stops after every handle is gone.
        let _ = self.tx.send(Op::Check(Box::new(w))).await;
    }

    /// Makes the writer thread exit (fault injection for the supervision
    /// tests: the daemon must notice and stop).
    #[cfg(any(test, feature = "fault-injection"))]
    pub(crate) async fn stop_for_tests(&self) {
        let _ = self.tx.send(Op::Stop).await;
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
        (WriterHandle { tx }, captured)
    }

    /// Waits until everything queued before this call is committed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Op::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// The writer thread; joins on drop of the last handle.
pub struct Writer {
    thread: Option<std::thread::JoinHandle<()>>,
    stopped: tokio_util::sync::CancellationToken,
}

impl Writer {
    /// Starts the writer thread on the store's writer connection.
    pub fn start(store: &Store) -> (Writer, WriterHandle) {
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
                run(conn, rx, health)
            })
            .expect("spawn store writer thread");
        (
            Writer {
                thread: Some(thread),
                stopped,
            },
            WriterHandle { tx },
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
    }
}

/// What the writer holds between commits.
#[derive(Default)]
struct Pending {
    checks: Vec<CheckWrite>,
    snapshots: std::collections::HashMap<ServiceId, Snapshot>,
    /// Roll-ups (per service and hour) of committed checks, not yet
    /// written: at most every [`ROLLUP_EVERY`], with `meta.rolled_through`
    /// (store/rollup.rs).
    uptime: std::collections::HashMap<(i64, i64), Roll>,
}

fn run(conn: Arc<Mutex<Connection>>, mut rx: mpsc::Receiver<Op>, health: Store) {
    let heads = health.heads();
    let mut pending = Pending::default();
    let mut last_snapshot = std::time::Instant::now();
    let mut last_rollup = std::time::Instant::now();
    let mut open = true;
    while open {
        // Collect for one window (or until the queue has a full batch).
        let mut waiters = Vec::new();
        match rx.blocking_recv() {
            None => open = false,
            Some(op) => {
                let deadline = std::time::Instant::now() + BATCH_WINDOW;
                let mut op = Some(op);
                loop {
                    match op.take() {
                        Some(Op::Check(c)) => pending.checks.push(*c),
                        Some(Op::Flush(w)) => waiters.push(w),
                        #[cfg(any(test, feature = "fault-injection"))]
                        Some(Op::Stop) => open = false,
                        None => {}
                    }
                    if !open || !waiters.is_empty() || pending.checks.len() >= MAX_BATCH {
                        break;
                    }
                    match rx.try_recv() {
                        Ok(next) => op = Some(next),
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            open = false;
                            break;
                        }
                        Err(mpsc::error::TryRecvError::Empty) => {
                            let now = std::time::Instant::now();
                            if now >= deadline {
                                break;
                            }
                            std::thread::sleep(
                                (deadline - now).min(std::time::Duration::from_millis(10)),
                            );
                        }
                    }
                }
            }
        }
        let force = !waiters.is_empty() || !open;
        // A failed batch (disk full, read-only file) is retried with back-off:
        // state changes and notifications must not be lost while the disk
        // recovers. Nothing is dropped from `pending` until it committed.
        let mut delay = std::time::Duration::from_millis(100);
        loop {
            let snapshot_now = force || last_snapshot.elapsed() >= SNAPSHOT_EVERY;
            let rollup_now = force || last_rollup.elapsed() >= ROLLUP_EVERY;
            let mut c = lock(&conn);
            let r = write_batch(&mut c, &mut pending, snapshot_now, rollup_now, &heads);
            health.set_write_error(r.as_ref().err().map(|e| e.to_string()));
            match r {
                Ok((snapshot_written, rollup_written)) => {
                    if snapshot_written {
                        last_snapshot = std::time::Instant::now();
                    }
                    if rollup_written {
                        last_rollup = std::time::Instant::now();
                    }
                    break;
                }
                Err(e) => {
                    drop(c);
                    tracing::error!(error = %e, checks = pending.checks.len(), "store write failed; retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(std::time::Duration::from_secs(5));
                }
            }
        }
        for w in waiters {
            let _ = w.send(());
        }
    }
}

/// Commits the pending checks and, when `snapshot_now` or when at most
/// [`SNAPSHOT_EAGER`] services are dirty, the snapshot; on success the
/// committed parts are folded into or removed from `pending` and the result
/// says whether the snapshot was written. The roll-ups likewise, when
/// `rollup_now` or when at most [`SNAPSHOT_EAGER`] of their rows are dirty
/// (the second flag). On failure `pending` is left as it was, to be
/// retried.
/// `heads` is updated before the caller releases the connection: a
/// service deleted by another thread then walks its whole chain.
fn write_batch(
    conn: &mut Connection,
    pending: &mut Pending,
    snapshot_now: bool,
    rollup_now: bool,
    heads: &Heads,
) -> rusqlite::Result<(bool, bool)> {
    if pending.checks.is_empty()
        && (!snapshot_now || pending.snapshots.is_empty())
        && (!rollup_now || pending.uptime.is_empty())
    {
        return Ok((false, false));
    }
    let tx = conn.transaction()?;
    // This batch's folds, kept apart until the commit succeeds.
    let mut snaps: std::collections::HashMap<ServiceId, Snapshot> =
        std::collections::HashMap::new();
    let mut ups: std::collections::HashMap<(i64, i64), Roll> = std::collections::HashMap::new();
    for c in &pending.checks {
        let prev = snaps
            .get(&c.service_id)
            .or_else(|| pending.snapshots.get(&c.service_id));
        if let Some(snap) = write_check(&tx, c, prev)? {
            ups.entry((c.service_id.get(), hour_of(c.at.get())))
                .or_default()
                .add(c.result, c.duration_us);
            snaps.insert(c.service_id, snap);
        }
    }
    let dirty = pending.snapshots.len()
        + snaps
            .keys()
            .filter(|id| !pending.snapshots.contains_key(id))
            .count();
    let snapshot_due = snapshot_now || dirty <= SNAPSHOT_EAGER;
    if snapshot_due {
        let mut ids: Vec<ServiceId> = pending
            .snapshots
            .keys()
            .chain(snaps.keys())
            .copied()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            let s = snaps
                .get(&id)
                .or_else(|| pending.snapshots.get(&id))
                .expect("id from one of the maps");
            write_snapshot(&tx, id, s, None)?;
        }
        mark_heads(&tx)?;
    }
    let dirty_rolls = pending.uptime.len()
        + ups
            .keys()
            .filter(|k| !pending.uptime.contains_key(k))
            .count();
    let rollup_due = rollup_now || dirty_rolls <= SNAPSHOT_EAGER;
    if rollup_due {
        // The roll-ups of every check up to the mark set here, in its
        // transaction: start-up folds the checks above it (a crash).
        let mut rolls = pending.uptime.clone();
        for (k, r) in &ups {
            rolls.entry(*k).or_default().merge(r);
        }
        write_rolls(&tx, &rolls)?;
        mark_rolled(&tx)?;
    }
    tx.commit()?;
    pending.checks.clear();
    let mut heads = heads.lock().unwrap_or_else(|e| e.into_inner());
    if snapshot_due {
        heads.clear();
        pending.snapshots.clear();
    } else {
        heads.extend(snaps.iter().map(|(id, s)| (*id, s.head)));
        pending.snapshots.extend(snaps);
    }
    if rollup_due {
        pending.uptime.clear();
    } else {
        for (k, r) in ups {
            pending.uptime.entry(k).or_default().merge(&r);
        }
    }
    Ok((snapshot_due, rollup_due))
}
