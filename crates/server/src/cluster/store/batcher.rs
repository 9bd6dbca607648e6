//! The PostgreSQL batch writer thread: check results from the scheduler
//! go through a bounded queue to one thread, which writes them in batches
//! with [`PgStore::write_batch`], fenced by the node's leases as they are
//! at each commit. The counterpart of the SQLite `Writer` (the same queue
//! bound, batch window and batch size as `store/writer.rs`, whose
//! constants are private to `store/`; `record` and `flush`), for the
//! dispatching `Store` of the next step to wrap.
//!
//! Unlike SQLite's writer it holds nothing back for minutes: every batch
//! (state changes and plain checks alike) commits within
//! [`PgWriterTiming::batch_window`] of its first check,
//! since there is no in-memory overlay for reads to see held checks
//! through. A failed commit (database unreachable) is retried with
//! back-off (100 ms doubling to 5 s) while the queue fills; the scheduler
//! then waits (back-pressure). The bounded queue and the giving up of
//! leases beyond it (SPEC 19, "Bad input and faults") are still to come.

use super::{Fencing, PgStore};
use crate::cluster::{FenceError, Held};
use crate::store::CheckWrite;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Queue bound between the scheduler and the writer (SQLite's too).
pub const QUEUE: usize = 32_768;

/// The writer's periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgWriterTiming {
    /// How long a batch collects after its first check (100 ms, SQLite's
    /// `BATCH_WINDOW`): state changes are committed within it.
    pub batch_window: Duration,
    /// Most checks per batch (4,096, SQLite's `MAX_BATCH`).
    pub max_batch: usize,
}

impl Default for PgWriterTiming {
    fn default() -> Self {
        PgWriterTiming {
            batch_window: Duration::from_millis(100),
            max_batch: 4096,
        }
    }
}

enum Op {
    Check(Box<CheckWrite>),
    Flush(oneshot::Sender<()>),
}

/// What fences a node's batches: its id, its lease manager's published
/// set, and where the writer reports a bucket whose checks it dropped
/// because the lease was stale (the scheduler stops running it).
pub struct PgFence {
    /// The node's id (`buckets.owner`).
    pub node: String,
    /// The held `(bucket, epoch)` set (`LeaseHandle::held`).
    pub held: watch::Receiver<Held>,
    /// Stale buckets, one report per dropped bucket and batch.
    pub stale: mpsc::UnboundedSender<FenceError>,
}

/// Sends check results to the PostgreSQL writer thread.
#[derive(Clone)]
pub struct PgWriterHandle {
    tx: mpsc::Sender<Op>,
}

impl PgWriterHandle {
    /// Queues a check result; waits if the queue is full.
    pub async fn record(&self, w: CheckWrite) {
        let _ = self.tx.send(Op::Check(Box::new(w))).await;
    }

    /// Waits until everything queued before this call is committed (or
    /// dropped as stale).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Op::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// The PostgreSQL writer thread; it drains its queue and exits when every
/// [`PgWriterHandle`] is dropped.
pub struct PgWriter {
    thread: Option<std::thread::JoinHandle<()>>,
    stopped: tokio_util::sync::CancellationToken,
}

impl PgWriter {
    /// Starts the thread: unfenced (a single node) without `fence`.
    pub fn start(
        store: &PgStore,
        fence: Option<PgFence>,
        timing: PgWriterTiming,
    ) -> (PgWriter, PgWriterHandle) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let store = store.clone();
        let stopped = tokio_util::sync::CancellationToken::new();
        let guard = stopped.clone().drop_guard();
        let thread = std::thread::Builder::new()
            .name("hc-pg-writer".into())
            .spawn(move || {
                let _guard = guard;
                run(&store, rx, fence, timing)
            })
            .expect("spawn the PostgreSQL writer thread");
        (
            PgWriter {
                thread: Some(thread),
                stopped,
            },
            PgWriterHandle { tx },
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
    mut rx: mpsc::Receiver<Op>,
    fence: Option<PgFence>,
    timing: PgWriterTiming,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("the PostgreSQL writer's timer");
    let mut open = true;
    while open {
        // The first write of a batch, then whatever comes within the
        // window (or until a flush, a full batch, the end of the queue).
        let mut batch = Vec::new();
        let mut waiters = Vec::new();
        let Some(first) = rt.block_on(rx.recv()) else {
            break;
        };
        let due = Instant::now() + timing.batch_window;
        let mut op = Some(first);
        loop {
            match op {
                Some(Op::Check(c)) => batch.push(*c),
                Some(Op::Flush(w)) => waiters.push(w),
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
        commit(store, &batch, fence.as_ref());
        for w in waiters {
            let _ = w.send(());
        }
    }
}

/// Writes `batch`, retrying a failed commit with back-off until it lands.
fn commit(store: &PgStore, batch: &[CheckWrite], fence: Option<&PgFence>) {
    let mut delay = Duration::from_millis(100);
    loop {
        let fencing = fence.map(|f| Fencing {
            node: f.node.clone(),
            held: f.held.borrow().clone(),
        });
        match store.write_batch(fencing.as_ref(), batch) {
            Ok(w) => {
                if let Some(f) = fence {
                    for e in w.stale {
                        tracing::warn!(error = %e, "checks of a bucket no longer held dropped");
                        let _ = f.stale.send(e);
                    }
                }
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, checks = batch.len(), "postgresql write failed; retrying");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
