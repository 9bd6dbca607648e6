//! [`Store`]: the daemon's one store handle, over either backend (SPEC
//! section 19): the SQLite file of this module, or the PostgreSQL store of
//! `cluster/store/` (`--db postgres://…`). Every method keeps the SQLite
//! store's signature and dispatches, so the HTTP layer, the senders, the
//! channels and the scheduler's load path do not know which backend they
//! use.
//!
//! Differences by design (docs/cluster.md, "The seam"):
//! - On PostgreSQL, [`Store::due_notifications`],
//!   [`Store::due_deliveries`] and [`Store::due_digests`] *claim* the rows
//!   for this node (`PgStore::claim_notifications`, `claim_deliveries`,
//!   `claim_digests`, for `CLAIM_FOR`): the mail sender and the channel
//!   dispatcher of every node call them, and each row (each digest) then
//!   goes out from one node only.
//! - On PostgreSQL every method runs once more when a connection it used
//!   had been ended by the server (`PgStore::once_more`: a restart), so
//!   that the first read or write after it does not fail.
//! - SQLite-only helpers answer neutrally on PostgreSQL: [`Store::path`]
//!   is `None`, [`Store::wal_bytes`] is 0 (`pg_stat_wal` is cluster-wide).

use super::{
    CheckRecord, DayUptime, DeliveryRecord, DigestItem, DigestRecord, EventRecord,
    NotificationRecord, PingTarget, Registered, Rollup, RoutedService, ServiceFilter, ServiceOrder,
    ServiceRecord, SqliteStore, StateCounts, StoreError, StoredPing, TaggedPage, Uptime,
    UptimeWindows,
};
use crate::cluster::PgStore;
use crate::silences::Silence;
use healthchecker_core::channel::Channel;
use healthchecker_core::cluster::Bucket;
use healthchecker_core::heartbeat::Ping;
use healthchecker_core::policy::DigestRule;
use healthchecker_core::{ServiceId, ServiceSpec, UnixMs};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Shared handle to the database: SQLite (a file) or PostgreSQL (a
/// cluster's shared database). Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqliteStore),
    Pg {
        store: PgStore,
        /// This node's id: the claims of outbox rows are made in its name.
        node: String,
    },
}

/// One method of both backends, same name, arguments and result.
macro_rules! dispatch {
    ($( $(#[$m:meta])* fn $name:ident(&self $(, $arg:ident : $ty:ty)* $(,)?) -> $ret:ty; )*) => {
        impl Store {
            $(
                $(#[$m])*
                pub fn $name(&self $(, $arg: $ty)*) -> $ret {
                    match &self.backend {
                        Backend::Sqlite(s) => s.$name($($arg),*),
                        Backend::Pg { store, .. } => store.once_more(|s| s.$name($($arg),*)),
                    }
                }
            )*
        }
    };
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and
    /// migrates it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Backend::Sqlite(SqliteStore::open(path)?),
        })
    }

    /// The PostgreSQL store `store` (opened and migrated:
    /// [`PgStore::open`]) as this node's store; `node` names its outbox
    /// claims.
    pub fn postgres(store: PgStore, node: &str) -> Store {
        Store {
            backend: Backend::Pg {
                store,
                node: node.to_string(),
            },
        }
    }

    /// The PostgreSQL store, when this is one.
    pub fn pg(&self) -> Option<&PgStore> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Pg { store, .. } => Some(store),
        }
    }

    /// `sqlite` or `postgresql`.
    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Pg { .. } => "postgresql",
        }
    }

    pub(crate) fn sqlite(&self) -> Option<&SqliteStore> {
        match &self.backend {
            Backend::Sqlite(s) => Some(s),
            Backend::Pg { .. } => None,
        }
    }

    /// Runs `f` on one of the store's reader threads (never on tokio's
    /// shared blocking pool, never on a worker) and waits for it: the way
    /// async code reads.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        let r = match &self.backend {
            Backend::Sqlite(s) => s.readers.run(move || f(&store)).await,
            Backend::Pg { store: pg, .. } => pg.run_on_reader(move || f(&store)).await,
        };
        r.map_err(StoreError::Read)?
    }

    /// The SQLite database file; `None` on PostgreSQL.
    pub fn path(&self) -> Option<&Path> {
        self.sqlite().map(|s| s.path())
    }

    /// Bytes the SQLite writer appended to the WAL since the store was
    /// opened (store/wal.rs); 0 on PostgreSQL.
    pub fn wal_bytes(&self) -> u64 {
        self.sqlite().map_or(0, |s| s.wal_bytes())
    }

    /// Why the last write failed, if it did (cleared by the next success).
    pub fn write_error(&self) -> Option<String> {
        match &self.backend {
            Backend::Sqlite(s) => s.write_error(),
            Backend::Pg { store, .. } => store.write_error(),
        }
    }

    /// `--keep-checks`: raw checks kept per service.
    pub fn set_keep_checks(&self, n: i64) {
        match &self.backend {
            Backend::Sqlite(s) => s.set_keep_checks(n),
            Backend::Pg { store, .. } => store.set_keep_checks(n),
        }
    }

    /// Records the outcome of a write, for `/health`.
    pub fn note_write<T>(&self, r: &Result<T, StoreError>) {
        match &self.backend {
            Backend::Sqlite(s) => s.note_write(r),
            Backend::Pg { store, .. } => store.note_write(r),
        }
    }

    /// Mail due now (at most `limit` rows, with every pending row of
    /// their services). On PostgreSQL the rows are claimed for this node
    /// (`PgStore::claim_notifications`): another node does not get them
    /// until the claim ends (sent, failed) or expires.
    pub fn due_notifications(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<Vec<NotificationRecord>, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.due_notifications(now, limit),
            Backend::Pg { store, node } => store.once_more(|s| {
                s.claim_notifications(node, now, limit, crate::cluster::store::CLAIM_FOR)
            }),
        }
    }

    /// Channel deliveries due now; on PostgreSQL claimed for this node, as
    /// [`Store::due_notifications`].
    pub fn due_deliveries(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.due_deliveries(now, limit),
            Backend::Pg { store, node } => store.once_more(|s| {
                s.claim_deliveries(node, now, limit, crate::cluster::store::CLAIM_FOR)
            }),
        }
    }

    /// Digests of `outbox` due now; on PostgreSQL claimed for this node
    /// (`PgStore::claim_digests`), as [`Store::due_notifications`]: each
    /// digest goes out from one node.
    pub fn due_digests(
        &self,
        outbox: &str,
        now: i64,
        limit: usize,
    ) -> Result<Vec<DigestRecord>, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.due_digests(outbox, now, limit),
            Backend::Pg { store, node } => store.once_more(|s| {
                s.claim_digests(node, outbox, now, limit, crate::cluster::store::CLAIM_FOR)
            }),
        }
    }

    /// The services of `buckets` (a cluster node's scheduler runs those of
    /// the buckets it holds). On SQLite, every service whose name falls in
    /// one of them.
    pub fn services_in_buckets(
        &self,
        buckets: &[Bucket],
    ) -> Result<Vec<ServiceRecord>, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => Ok(s
                .load_all()?
                .into_iter()
                .filter(|r| buckets.contains(&Bucket::of(&r.spec.name)))
                .collect()),
            Backend::Pg { store, .. } => store.once_more(|s| s.services_in_buckets(buckets)),
        }
    }

    /// The heartbeat pings kept for the services of `buckets`, oldest
    /// first: the node that gains a bucket judges those its services' last
    /// checks do not cover yet (docs/cluster.md, "Pings without an
    /// owner"). None on SQLite, where nothing waits for an owner.
    pub fn pings_in_buckets(&self, buckets: &[Bucket]) -> Result<Vec<StoredPing>, StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(Vec::new()),
            Backend::Pg { store, .. } => store.once_more(|s| s.pings_in_buckets(buckets)),
        }
    }

    /// Runs `f` on the SQLite writer connection (tests).
    #[cfg(test)]
    pub(crate) fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        self.sqlite().expect("a SQLite store").with_writer(f)
    }

    /// Runs `f` on a SQLite reader connection (tests).
    #[cfg(test)]
    pub(crate) fn with_reader<T>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        self.sqlite().expect("a SQLite store").with_reader(f)
    }
}

dispatch! {
    /// True when the database answers a trivial query (`/health`).
    fn ping(&self) -> Result<(), StoreError>;
    /// Deletes what the retention rules let go (SPEC section 18); returns
    /// the number of checks removed.
    fn prune(&self, now: i64) -> Result<usize, StoreError>;

    /// Creates or updates a channel; true when it was created.
    fn put_channel(&self, c: &Channel, now: i64) -> Result<bool, StoreError>;
    /// One channel by name.
    fn channel(&self, name: &str) -> Result<Option<Channel>, StoreError>;
    /// Every channel, by name.
    fn channels(&self) -> Result<Vec<Channel>, StoreError>;
    /// The services a channel routes, by id after `after_id`.
    fn routed_services(&self, name: &str, after_id: ServiceId, limit: usize) -> Result<Vec<RoutedService>, StoreError>;
    /// Deletes a channel; true when it existed.
    fn delete_channel(&self, name: &str) -> Result<bool, StoreError>;
    /// Channel outbox rows, newest first, optionally of one status or service.
    fn deliveries(&self, status: Option<&str>, service: Option<&str>, limit: usize) -> Result<Vec<DeliveryRecord>, StoreError>;
    /// Marks channel deliveries delivered.
    fn mark_delivered(&self, ids: &[i64], at: i64) -> Result<(), StoreError>;
    /// Records a failed channel delivery attempt.
    fn mark_delivery_failed(&self, ids: &[i64], error: &str, next_attempt_at: i64, give_up: bool) -> Result<(), StoreError>;

    /// A service's newest checks, newest first.
    fn checks(&self, service_id: ServiceId, limit: usize) -> Result<Vec<CheckRecord>, StoreError>;
    /// The newest `n` checks of each of `ids`.
    fn recent_checks_of(&self, ids: &[ServiceId], n: usize) -> Result<HashMap<ServiceId, Vec<CheckRecord>>, StoreError>;

    /// Services matching `filter` in the dashboard's `order`.
    fn list_services_ordered(&self, filter: &ServiceFilter, order: ServiceOrder) -> Result<Vec<ServiceRecord>, StoreError>;
    /// Uptime over the dashboard's windows for `ids`.
    fn uptime_windows(&self, ids: &[ServiceId], now: i64) -> Result<HashMap<ServiceId, UptimeWindows>, StoreError>;
    /// One service's uptime per day, the last `days` days.
    fn daily_uptime(&self, id: ServiceId, now: i64, days: i64) -> Result<Vec<DayUptime>, StoreError>;
    /// A page of the services carrying every one of `tags`.
    fn services_tagged(&self, tags: &[String], limit: usize, offset: usize) -> Result<TaggedPage, StoreError>;

    /// Decides which digests of `outbox` are due (SPEC digests).
    fn decide_digests(&self, outbox: &str, now: i64, rule: DigestRule) -> Result<(usize, usize), StoreError>;
    /// Digests, newest first.
    fn digests(&self, destination: Option<&str>, limit: usize) -> Result<Vec<DigestRecord>, StoreError>;
    /// The items of one digest.
    fn digest_items(&self, d: &DigestRecord) -> Result<Vec<DigestItem>, StoreError>;
    /// Marks a digest sent.
    fn mark_digest_sent(&self, id: i64, at: i64) -> Result<(), StoreError>;
    /// Records a failed digest attempt.
    fn mark_digest_failed(&self, id: i64, error: &str, next_attempt_at: i64, give_up: bool) -> Result<(), StoreError>;

    /// Events, newest first, optionally of one service.
    fn events(&self, service: Option<&str>, limit: usize) -> Result<Vec<EventRecord>, StoreError>;

    /// Mail rows, newest first, optionally of one status or service.
    fn notifications(&self, status: Option<&str>, service: Option<&str>, limit: usize) -> Result<Vec<NotificationRecord>, StoreError>;
    /// Mail not sent yet.
    fn pending_mail(&self) -> Result<i64, StoreError>;
    /// Marks mail sent.
    fn mark_sent(&self, ids: &[i64], message_id: &str, at: i64) -> Result<(), StoreError>;
    /// Records a failed mail attempt.
    fn mark_failed_attempt(&self, ids: &[i64], error: &str, next_attempt_at: i64, give_up: bool) -> Result<(), StoreError>;
    /// Gives up mail unsent for too long.
    fn give_up_unsent(&self, now: i64, why: &str) -> Result<usize, StoreError>;

    /// The service a heartbeat ping id belongs to.
    fn service_by_ping_id(&self, ping_id: &str) -> Result<Option<PingTarget>, StoreError>;
    /// Records a heartbeat ping (on PostgreSQL, kept for its owner too).
    fn record_ping(&self, id: ServiceId, at: UnixMs, ping: Ping, output: Option<&str>) -> Result<(), StoreError>;

    /// Uptime ratios of `ids`.
    fn uptime_ratios(&self, ids: &[ServiceId], now: i64) -> Result<HashMap<ServiceId, Uptime>, StoreError>;
    /// Hourly or daily roll-ups of a service between `from` and `to`.
    fn rollups(&self, service_id: ServiceId, daily: bool, from: i64, to: i64) -> Result<Vec<Rollup>, StoreError>;

    /// Registers or updates a service.
    fn register(&self, spec: &ServiceSpec, token_hash: &str, now: i64, max_services: usize) -> Result<Registered, StoreError>;
    /// Pauses or resumes a service.
    fn set_paused(&self, name: &str, paused: bool, now: i64) -> Result<Option<ServiceRecord>, StoreError>;
    /// Deletes a service; its id when it existed.
    fn delete(&self, name: &str, now: i64) -> Result<Option<ServiceId>, StoreError>;
    /// Every service.
    fn load_all(&self) -> Result<Vec<ServiceRecord>, StoreError>;
    /// Services matching `filter`, ordered by name.
    fn list_services(&self, filter: &ServiceFilter) -> Result<Vec<ServiceRecord>, StoreError>;
    /// How many services are in each state.
    fn count_by_state(&self) -> Result<StateCounts, StoreError>;
    /// One service by name.
    fn get_service(&self, name: &str) -> Result<Option<ServiceRecord>, StoreError>;
    /// A service's token hash.
    fn token_hash(&self, name: &str) -> Result<Option<String>, StoreError>;

    /// The failing services that depend on `parent`.
    fn failing_dependents(&self, parent: &str) -> Result<Vec<String>, StoreError>;
    /// Every service's parents, by name.
    fn dependency_graph(&self) -> Result<BTreeMap<String, Vec<String>>, StoreError>;
    /// Creates or replaces a silence; its id.
    fn put_silence(&self, s: &Silence, now: i64) -> Result<i64, StoreError>;
    /// Every silence.
    fn silences(&self) -> Result<Vec<Silence>, StoreError>;
    /// Deletes a silence; true when it existed.
    fn delete_silence(&self, id: i64, now: i64) -> Result<bool, StoreError>;
    /// Releases held rows whose silence ended.
    fn release_held(&self, now: i64) -> Result<(usize, usize), StoreError>;
}
