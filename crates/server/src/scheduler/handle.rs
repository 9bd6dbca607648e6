//! The scheduler's interface: the commands it takes, its settings, and
//! the handle the API holds.

use crate::clock::Clock;
use crate::store::{ServiceRecord, StoredPing};
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
    /// In a cluster, the buckets this node may check (SPEC section 19);
    /// `None` (SQLite, a single node): every service is checked.
    pub ownership: Option<Ownership>,
}

/// The services of which buckets a clustered node's scheduler runs.
///
/// The scheduler fires only services whose bucket
/// ([`Bucket::of`](healthchecker_core::cluster::Bucket::of) of the name) is
/// in `held`. When a bucket is gained, it first reads the bucket's services
/// through `load` (their state as the previous owner left it: a monitor
/// started from stale state would notify a transition again), then
/// schedules them on their previous owner's cadence (the next slot of
/// `last_check + k·interval`); when a bucket is lost, or the held set's
/// [`valid_until`](crate::cluster::Held::valid_until) passes, its services
/// stop being fired and a result still in flight is dropped.
#[derive(Clone)]
pub struct Ownership {
    /// The held leases: the [`LeaseManager`](crate::cluster::LeaseManager)'s
    /// channel ([`LeaseHandle::held`](crate::cluster::LeaseHandle::held)).
    /// A closed channel means nothing is held.
    pub held: tokio::sync::watch::Receiver<crate::cluster::Held>,
    /// Reads the services of the gained buckets from the store (the
    /// PostgreSQL store's `services_in_buckets`); `None` keeps what the
    /// scheduler has in memory (tests).
    pub load: Option<LoadBuckets>,
}

/// Reads the current records of every service in the given buckets, and
/// the heartbeat pings kept for them (an error is logged and the read
/// retried with back-off).
pub type LoadBuckets = Arc<
    dyn Fn(
            Vec<healthchecker_core::cluster::Bucket>,
        ) -> futures_util::future::BoxFuture<'static, Result<BucketsRead, String>>
        + Send
        + Sync,
>;

/// What [`LoadBuckets`] reads for gained buckets.
#[derive(Debug, Default)]
pub struct BucketsRead {
    /// Every service of the buckets, as stored.
    pub services: Vec<ServiceRecord>,
    /// The heartbeat pings the store kept for them, oldest first
    /// (`Store::pings_in_buckets`): the scheduler judges those after each
    /// service's stored last check, which no owner judged (a ping served
    /// while the bucket had none).
    pub pings: Vec<StoredPing>,
}

impl From<Vec<ServiceRecord>> for BucketsRead {
    /// Services without kept pings.
    fn from(services: Vec<ServiceRecord>) -> Self {
        BucketsRead {
            services,
            pings: Vec::new(),
        }
    }
}

impl std::fmt::Debug for Ownership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ownership")
            .field("held", &self.held.borrow().len())
            .field("load", &self.load.is_some())
            .finish()
    }
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
