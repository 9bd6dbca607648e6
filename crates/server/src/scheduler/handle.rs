//! The scheduler's interface: the commands it takes, its settings, and
//! the handle the API holds.

use crate::clock::Clock;
use crate::store::ServiceRecord;
use healthchecker_core::heartbeat::Ping;
use healthchecker_core::{ServiceId, UnixMs};
use std::sync::Arc;
use tokio::sync::mpsc;

/// A change to the set of scheduled services.
#[derive(Debug)]
pub enum Command {
    /// A new or re-registered service (state and counters are kept).
    Upsert(Box<ServiceRecord>),
    /// A deleted service.
    Remove {
        /// The service.
        id: ServiceId,
        /// Name, for the metrics.
        name: String,
    },
    /// A ping of a heartbeat service (SPEC section 15).
    Ping {
        /// The service.
        id: ServiceId,
        /// Success, start, fail or an exit code.
        ping: Ping,
        /// When it arrived.
        at: UnixMs,
        /// Its body (the job's output), as the check's details.
        output: Option<String>,
    },
    /// Pause (`true`) or resume (`false`).
    SetPaused {
        /// The service.
        id: ServiceId,
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
    /// The wall clock (check times, heartbeat deadlines).
    pub clock: Clock,
}

/// Sends commands to the scheduler.
#[derive(Clone)]
pub struct SchedulerHandle {
    pub(super) tx: mpsc::Sender<Command>,
    pub(super) alive: Arc<std::sync::atomic::AtomicI64>,
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
