//! The daemon as a node of a cluster on PostgreSQL (SPEC section 19): the
//! parts of this module put together for `run` (docs/cluster.md,
//! "Plugging in"). [`Node::open`] connects and migrates, opens the store
//! and starts the lease manager; the daemon then loads its services,
//! starts the scheduler with [`Node::ownership`] and the writer with
//! [`Node::fence`], and calls [`Node::listen`] to receive the other nodes'
//! wake-ups. [`Node::stop`] releases the leases after the writer flushed.
//!
//! The writer and the lease manager share a give-up signal: when the
//! writer's backlog is full (PostgreSQL unreachable or too slow), the lease
//! manager publishes nothing held and releases the node's leases until the
//! backlog has drained (`store/batcher.rs`, docs/cluster.md).

use super::lease::{self, LeaseConfig, LeaseHandle, LeaseManager};
use super::store::PgFence;
use super::wake::{Event, Listener, Notifier, Wake};
use super::{FenceError, Held, PgDb, PgStore};
use crate::http::ClusterSource;
use crate::metrics::Metrics;
use crate::scheduler::{BucketsRead, Command, LoadBuckets, Ownership, SchedulerHandle};
use crate::store::Store;
use deadpool_postgres::Pool;
use healthchecker_core::ServiceId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// A running node: its id, store, pool, leases and wake-up listener.
pub struct Node {
    /// The node's id (`--node-id`, or `<hostname>:<port>`).
    pub id: String,
    /// The store on the cluster's database.
    pub store: Store,
    pool: Pool,
    leases: LeaseHandle,
    /// The held leases minus the buckets the writer found stale since the
    /// lease manager last published: what the scheduler and writer use.
    held: watch::Receiver<Held>,
    stale: mpsc::UnboundedSender<FenceError>,
    /// Set by the writer while its backlog is full; the lease manager
    /// gives up the leases meanwhile.
    give_up: Arc<watch::Sender<bool>>,
    listener: Option<Listener>,
}

impl Node {
    /// Connects to `db`, applies the migrations, opens the store, starts
    /// the lease manager and the wake-up listener's connection (so that no
    /// change committed from now on is missed). The error says why
    /// PostgreSQL cannot be used.
    pub async fn open(db: &PgDb, id: String, addr: String) -> Result<Node, String> {
        db.check()
            .await
            .map_err(|e| format!("cannot connect to the PostgreSQL database {db} (--db): {e}"))?;
        let d = db.clone();
        let pg = tokio::task::spawn_blocking(move || PgStore::open(&d))
            .await
            .map_err(|e| format!("opening the PostgreSQL store: {e}"))?
            .map_err(|e| format!("the PostgreSQL database {db} (--db): {e}"))?;
        let listener = Listener::connect(db, id.clone())
            .await
            .map_err(|e| format!("the PostgreSQL database {db} (--db): {e}"))?;
        let pool = db.pool(super::db::POOL_SIZE);
        let (give_up, give_up_rx) = watch::channel(false);
        let leases = LeaseManager::new(pool.clone(), LeaseConfig::new(id.clone(), addr))
            .give_up_when(give_up_rx)
            .spawn(CancellationToken::new());
        let (stale, stale_rx) = mpsc::unbounded_channel();
        let held = without_stale(leases.held(), stale_rx, give_up.subscribe());
        tracing::info!(node = %id, database = %db, "cluster node started");
        Ok(Node {
            store: Store::postgres(pg, &id),
            id,
            pool,
            leases,
            held,
            stale,
            give_up: Arc::new(give_up),
            listener: Some(listener),
        })
    }

    /// The scheduler's ownership: the held buckets, and their services read
    /// again when gained, with the heartbeat pings the store kept for them
    /// (the scheduler judges those no owner judged).
    pub fn ownership(&self) -> Ownership {
        let store = self.store.clone();
        let load: LoadBuckets = Arc::new(move |buckets| {
            let store = store.clone();
            Box::pin(async move {
                store
                    .read(move |s| {
                        // Services first: a ping committed after their
                        // read is newer than their last checks, so it is
                        // judged, whichever read sees it.
                        let services = s.services_in_buckets(&buckets)?;
                        let pings = s.pings_in_buckets(&buckets)?;
                        Ok(BucketsRead { services, pings })
                    })
                    .await
                    .map_err(|e| e.to_string())
            })
        });
        Ownership {
            held: self.held.clone(),
            load: Some(load),
        }
    }

    /// What fences the writer's batches, and what it counts on `metrics`
    /// and signals when its backlog is full.
    pub fn fence(&self, metrics: &Metrics) -> PgFence {
        PgFence {
            node: self.id.clone(),
            held: self.held.clone(),
            stale: self.stale.clone(),
            give_up: self.give_up.clone(),
            metrics: metrics.pg_writer.clone(),
        }
    }

    /// Wakes the owners of services this node changes.
    pub fn notifier(&self) -> Notifier {
        Notifier {
            pool: self.pool.clone(),
            node: self.id.clone(),
        }
    }

    /// `GET /api/v1/cluster` from the tables.
    pub fn cluster_source(&self) -> ClusterSource {
        let pool = self.pool.clone();
        let me = self.id.clone();
        Arc::new(move || {
            let pool = pool.clone();
            let me = me.clone();
            Box::pin(async move {
                super::status::read(&pool, &me, lease::EXPIRY)
                    .await
                    .map_err(|e| e.to_string())
            })
        })
    }

    /// Delivers the other nodes' wake-ups to `scheduler` until `cancel`:
    /// a changed service is read again and upserted (or removed), a ping
    /// handed on, and after a reconnection every service is read again.
    /// `loaded` is what the scheduler started with (ids and names).
    pub fn listen(
        &mut self,
        scheduler: SchedulerHandle,
        loaded: Vec<(ServiceId, String)>,
        cancel: CancellationToken,
    ) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        let known: Arc<Mutex<HashMap<ServiceId, String>>> =
            Arc::new(Mutex::new(loaded.into_iter().collect()));
        let store = self.store.clone();
        let on: super::wake::OnEvent = Arc::new(move |event| {
            let store = store.clone();
            let scheduler = scheduler.clone();
            let known = known.clone();
            Box::pin(async move { on_event(event, &store, &scheduler, &known).await })
        });
        listener.spawn(on, cancel);
    }

    /// Stops the lease rounds and releases the leases (after the writer
    /// flushed: a clean stop hands the buckets over at once).
    pub async fn stop(self) {
        self.leases.stop().await;
    }
}

/// One wake-up or resync, applied to the scheduler.
async fn on_event(
    event: Event,
    store: &Store,
    scheduler: &SchedulerHandle,
    known: &Mutex<HashMap<ServiceId, String>>,
) {
    let lock = || known.lock().unwrap_or_else(|e| e.into_inner());
    match event {
        Event::Wake(Wake::Service { id, name }) => {
            let n = name.clone();
            let found = match store.read(move |s| s.get_service(&n)).await {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(error = %e, service = %name, "cannot read a changed service");
                    return;
                }
            };
            match found {
                Some(rec) if rec.id == id => {
                    lock().insert(rec.id, rec.spec.name.clone());
                    scheduler.send(Command::Upsert(Box::new(rec))).await;
                }
                other => {
                    lock().remove(&id);
                    scheduler.send(Command::Remove { id, name }).await;
                    if let Some(rec) = other {
                        lock().insert(rec.id, rec.spec.name.clone());
                        scheduler.send(Command::Upsert(Box::new(rec))).await;
                    }
                }
            }
        }
        Event::Wake(Wake::Ping {
            id,
            ping,
            at,
            output,
            ..
        }) => {
            scheduler
                .send(Command::Ping {
                    id,
                    ping,
                    at,
                    output,
                })
                .await;
        }
        Event::Resync => {
            let all = match store.read(|s| s.load_all()).await {
                Ok(all) => all,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the services again after a reconnection");
                    return;
                }
            };
            let now: HashMap<ServiceId, String> =
                all.iter().map(|r| (r.id, r.spec.name.clone())).collect();
            let gone: Vec<(ServiceId, String)> = lock()
                .iter()
                .filter(|(id, _)| !now.contains_key(id))
                .map(|(id, n)| (*id, n.clone()))
                .collect();
            for (id, name) in gone {
                scheduler.send(Command::Remove { id, name }).await;
            }
            for rec in all {
                scheduler.send(Command::Upsert(Box::new(rec))).await;
            }
            *lock() = now;
        }
    }
}

/// `held` minus the buckets reported stale since it last changed: the
/// writer found this node's lease of them gone, so the node stops working
/// on them until the lease manager's next published set (which no longer
/// has them, or has them at a new epoch). Nothing while `give_up` is set
/// (the writer's backlog is full), at once, even if the lease manager is
/// in the middle of a round. Closed when `held` closes.
fn without_stale(
    mut held: watch::Receiver<Held>,
    mut stale: mpsc::UnboundedReceiver<FenceError>,
    mut give_up: watch::Receiver<bool>,
) -> watch::Receiver<Held> {
    let (tx, rx) = watch::channel(held.borrow_and_update().clone());
    tokio::spawn(async move {
        let current = |held: &mut watch::Receiver<Held>, give_up: &watch::Receiver<bool>| {
            if *give_up.borrow() {
                Held::default()
            } else {
                held.borrow_and_update().clone()
            }
        };
        loop {
            tokio::select! {
                changed = held.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    tx.send_replace(current(&mut held, &give_up));
                }
                Ok(()) = give_up.changed() => {
                    tx.send_replace(current(&mut held, &give_up));
                }
                Some(e) = stale.recv() => {
                    if let FenceError::Stale { bucket, epoch, .. } = e {
                        tx.send_if_modified(|h| {
                            if h.epoch(bucket) == Some(epoch) {
                                h.leases.remove(&bucket);
                                true
                            } else {
                                false
                            }
                        });
                    }
                }
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use healthchecker_core::cluster::{Bucket, Epoch};

    fn holding(b: u16, e: i64) -> Held {
        Held {
            leases: [(Bucket::new(i64::from(b)).unwrap(), Epoch(e))].into(),
            valid_until: None,
        }
    }

    /// The next value of `rx` (a changed set), with a deadline so that a
    /// missing change fails instead of hanging.
    async fn next(rx: &mut watch::Receiver<Held>) -> Held {
        tokio::time::timeout(std::time::Duration::from_secs(10), rx.changed())
            .await
            .expect("a change")
            .expect("open");
        rx.borrow_and_update().clone()
    }

    #[tokio::test]
    async fn while_the_writer_gives_up_nothing_is_held_and_stale_buckets_leave() {
        let (held_tx, held_rx) = watch::channel(holding(7, 1));
        let (stale_tx, stale_rx) = mpsc::unbounded_channel();
        let (give_up, give_up_rx) = watch::channel(false);
        let mut out = without_stale(held_rx, stale_rx, give_up_rx);
        assert_eq!(*out.borrow_and_update(), holding(7, 1));
        // A stale report of the held epoch removes the bucket…
        stale_tx
            .send(FenceError::Stale {
                bucket: Bucket::new(7).unwrap(),
                node: "a".into(),
                epoch: Epoch(1),
            })
            .unwrap();
        assert!(next(&mut out).await.is_empty());
        held_tx.send(holding(8, 2)).unwrap();
        assert_eq!(next(&mut out).await, holding(8, 2));
        // …and giving up empties the set at once, whatever the lease
        // manager publishes meanwhile, until the backlog drained.
        give_up.send(true).unwrap();
        assert!(next(&mut out).await.is_empty());
        held_tx.send(holding(9, 3)).unwrap();
        assert!(next(&mut out).await.is_empty());
        give_up.send(false).unwrap();
        assert_eq!(next(&mut out).await, holding(9, 3));
    }
}
