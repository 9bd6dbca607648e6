//! The batch writer: one thread that records check results, state changes
//! and outbox rows, many per transaction.
//!
//! Group commit: the thread blocks for the first write, then takes whatever
//! else is already queued (up to [`MAX_BATCH`]) into the same transaction.
//! Under load a batch holds hundreds of checks; when idle each write commits
//! at once. A state change's event and its notification are in the same
//! transaction as the check that caused them (SPEC section 4).

use super::{lock, Store};
use healthchecker_core::{CheckResult, HealthState};
use rusqlite::{params, Connection};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Most writes per transaction: large enough to amortise the commit, small
/// enough that a registration waiting for the writer lock waits little.
pub const MAX_BATCH: usize = 2048;

/// Queue bound between the scheduler and the writer: about three seconds of
/// checks at 10,000/s. When full, the scheduler waits (back-pressure)
/// rather than dropping results.
pub const QUEUE: usize = 32_768;

/// The record of one check and what it did to the service.
#[derive(Debug, Clone)]
pub struct CheckWrite {
    /// The service.
    pub service_id: i64,
    /// When the check started (Unix ms).
    pub at: i64,
    /// How long it took (µs).
    pub duration_us: i64,
    /// The result.
    pub result: CheckResult,
    /// Why it warned or failed.
    pub reason: Option<String>,
    /// HTTP status, if any.
    pub http_status: Option<u16>,
    /// health+json details, if any.
    pub details: Option<String>,
    /// Certificate expiry seen by this check.
    pub cert_expires_at: Option<i64>,
    /// State after the check.
    pub state: HealthState,
    /// Consecutive successes after the check.
    pub successes: u32,
    /// Consecutive failures after the check.
    pub failures: u32,
    /// The state change this check caused, if any.
    pub transition: Option<TransitionWrite>,
}

/// A state change to record as an event (and maybe a notification).
#[derive(Debug, Clone)]
pub struct TransitionWrite {
    /// Previous state.
    pub from: HealthState,
    /// When the previous state began (Unix ms).
    pub previous_since: i64,
    /// The mail to queue, if this transition notifies.
    pub notify: Option<NotifyWrite>,
}

/// An outbox row to create with the event.
#[derive(Debug, Clone)]
pub struct NotifyWrite {
    /// Service name.
    pub service: String,
    /// Target URL.
    pub target: String,
    /// Recipient addresses.
    pub recipients: Vec<String>,
    /// Earliest delivery (Unix ms): later than `at` inside the flap gap.
    pub not_before: i64,
    /// Why it cannot be sent, if known now (e.g. SMTP not configured).
    pub note: Option<String>,
}

enum Op {
    Check(Box<CheckWrite>),
    Flush(oneshot::Sender<()>),
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
}

impl Writer {
    /// Starts the writer thread on the store's writer connection.
    pub fn start(store: &Store) -> (Writer, WriterHandle) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let conn = store.writer_conn();
        let thread = std::thread::Builder::new()
            .name("hc-store-writer".into())
            .spawn(move || run(conn, rx))
            .expect("spawn store writer thread");
        (
            Writer {
                thread: Some(thread),
            },
            WriterHandle { tx },
        )
    }

    /// Waits for the thread to drain its queue and exit (after every
    /// [`WriterHandle`] is dropped).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(conn: Arc<Mutex<Connection>>, mut rx: mpsc::Receiver<Op>) {
    let mut batch: Vec<Op> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut waiters = Vec::new();
        let checks: Vec<Box<CheckWrite>> = batch
            .drain(..)
            .filter_map(|op| match op {
                Op::Check(c) => Some(c),
                Op::Flush(w) => {
                    waiters.push(w);
                    None
                }
            })
            .collect();
        // A failed batch (disk full, read-only file) is retried with back-off:
        // check results are not acknowledged to anyone, but state changes and
        // notifications must not be lost while the disk recovers.
        let mut delay = std::time::Duration::from_millis(100);
        loop {
            let mut c = lock(&conn);
            match write_batch(&mut c, &checks) {
                Ok(()) => break,
                Err(e) => {
                    drop(c);
                    tracing::error!(error = %e, checks = checks.len(), "store write failed; retrying");
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

fn write_batch(conn: &mut Connection, checks: &[Box<CheckWrite>]) -> rusqlite::Result<()> {
    if checks.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction()?;
    for c in checks {
        write_check(&tx, c)?;
    }
    tx.commit()
}

fn write_check(tx: &Connection, c: &CheckWrite) -> rusqlite::Result<()> {
    let result = c.result.as_str();
    let state = c.state.as_str();
    let changed = tx
        .prepare_cached(
            "UPDATE services SET state = ?1, successes = ?2, failures = ?3, last_check_at = ?4, \
             last_result = ?5, last_reason = ?6, last_duration_us = ?7, \
             last_healthy_at = CASE WHEN ?1 = 'healthy' THEN ?4 ELSE last_healthy_at END, \
             last_failure_reason = CASE WHEN ?5 = 'pass' THEN last_failure_reason ELSE ?6 END, \
             cert_expires_at = COALESCE(?8, cert_expires_at), \
             state_since = CASE WHEN ?9 THEN ?4 ELSE state_since END, \
             last_notified_at = COALESCE(?10, last_notified_at) \
             WHERE id = ?11",
        )?
        .execute(params![
            state,
            c.successes,
            c.failures,
            c.at,
            result,
            c.reason,
            c.duration_us,
            c.cert_expires_at,
            c.transition.is_some(),
            c.transition
                .as_ref()
                .and_then(|t| t.notify.as_ref())
                .map(|n| n.not_before),
            c.service_id
        ])?;
    if changed == 0 {
        // Deleted while the check ran: nothing to record.
        return Ok(());
    }
    tx.prepare_cached(
        "INSERT INTO checks (service_id, at, duration_us, result, reason, http_status, details) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        c.service_id,
        c.at,
        c.duration_us,
        result,
        c.reason,
        c.http_status,
        c.details
    ])?;
    let check_id = tx.last_insert_rowid();
    tx.prepare_cached(
        "INSERT INTO uptime (service_id, hour, ok, total) VALUES (?1, ?2, ?3, 1) \
         ON CONFLICT (service_id, hour) DO UPDATE SET ok = ok + excluded.ok, total = total + 1",
    )?
    .execute(params![
        c.service_id,
        c.at / 3_600_000,
        c.result.is_success() as i64
    ])?;
    let Some(t) = &c.transition else {
        return Ok(());
    };
    let name: String = tx
        .prepare_cached("SELECT name FROM services WHERE id = ?1")?
        .query_row([c.service_id], |r| r.get(0))?;
    tx.prepare_cached(
        "INSERT INTO events (at, service_id, service, kind, from_state, to_state, check_id, reason) \
         VALUES (?1, ?2, ?3, 'state', ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        c.at,
        c.service_id,
        name,
        t.from.as_str(),
        state,
        check_id,
        c.reason
    ])?;
    let event_id = tx.last_insert_rowid();
    if let Some(n) = &t.notify {
        tx.prepare_cached(
            "INSERT INTO notifications (event_id, service_id, service, created_at, from_state, \
             to_state, reason, target, recipients, previous_since, status, next_attempt_at, last_error) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'pending', ?11, ?12)",
        )?
        .execute(params![
            event_id,
            c.service_id,
            n.service,
            c.at,
            t.from.as_str(),
            state,
            c.reason,
            n.target,
            serde_json::to_string(&n.recipients).unwrap_or_else(|_| "[]".into()),
            t.previous_since,
            n.not_before,
            n.note
        ])?;
    }
    Ok(())
}
