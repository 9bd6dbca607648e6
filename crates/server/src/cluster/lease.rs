//! The lease manager: a node's heartbeat and its lease round, every
//! [`LeaseConfig::heartbeat`], and the set of `(bucket, epoch)` it holds,
//! published on a `tokio::sync::watch` channel for the scheduler.
//!
//! One round is one transaction: take this node's fence lock shared
//! ([`super::fence`]), upsert the node's heartbeat with its lease expiry
//! (`nodes.lease_until`: every lease of the node lasts until then, one
//! row a node rather than one a bucket), read PostgreSQL's `now()`, the
//! live nodes and the lease table, let [`plan_round`] decide, then release
//! the excess (after this node's fenced writes in flight: its fence lock
//! exclusive) and claim free or expired buckets with `FOR UPDATE SKIP
//! LOCKED`, each claim bumping the epoch. An expired bucket is claimed
//! only after its owner's fence lock was taken (tried, so an owner that
//! is writing or in its own round is skipped) and its expiry read again
//! in a later statement: an owner's round and a claim of its buckets take
//! turns. Every time is the database's, so nodes need no synchronised
//! clocks.
//!
//! What the channel says is conservative: buckets are removed *before* a
//! release commits, and everything is removed when the last successful
//! round's start plus the expiry passes on the local monotonic clock (that
//! start is earlier than the database's `now()` of the same round, so the
//! node stops before its lease ends in the database); the published set
//! carries that deadline ([`Held::valid_until`]), for a user to check when
//! it acts rather than when the set changes. A node that cannot
//! reach PostgreSQL therefore stops working on its buckets in time for
//! another node to take them; its late writes are refused by
//! [`super::fence()`].
//!
//! A node may also *give up* its leases ([`LeaseManager::give_up_when`]):
//! while the signal is set (the writer's backlog is full, PostgreSQL
//! being unreachable or too slow: `store/batcher.rs`), the published set
//! is empty at once, and each round, once the database answers, releases
//! every lease of the node and marks its node row given up
//! (`nodes.given_up_at`, with a heartbeat: the others count it out of the
//! fair share and claim its buckets at their next round, and the cluster
//! view shows it as `given_up`) instead of renewing and claiming. One such round runs after the
//! signal clears too, even if the database was unreachable throughout, so
//! the node never renews a lease it stopped working on; the round after
//! that claims as usual, each claim at a new epoch.

use super::fence::{END_STUCK_FENCES, FENCE_EXCLUSIVE, FENCE_LOCK, FENCE_SHARED, STUCK_AFTER};
use super::ClusterError;
use deadpool_postgres::Pool;
use healthchecker_core::cluster::{plan_round, Bucket, Epoch, Lease};
use healthchecker_core::UnixMs;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Default heartbeat and round period (SPEC section 19): five rounds per
/// expiry, so one or two lost rounds do not cost a lease.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// Default lease expiry: a dead node's buckets are taken over within this
/// plus one heartbeat, well inside SPEC 19's 15 s.
pub const EXPIRY: Duration = Duration::from_secs(10);

/// Settings of one node's lease manager.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The node's id (`nodes.id`, `buckets.owner`): unique in the cluster.
    pub node: String,
    /// Where its API answers, shown in `GET /api/v1/cluster`.
    pub addr: String,
    /// How often it heartbeats and runs a round ([`HEARTBEAT`]).
    pub heartbeat: Duration,
    /// How long a lease and a heartbeat last ([`EXPIRY`]); must be longer
    /// than `heartbeat`.
    pub expiry: Duration,
}

impl LeaseConfig {
    /// Node `node` at `addr` with the default periods.
    pub fn new(node: impl Into<String>, addr: impl Into<String>) -> LeaseConfig {
        LeaseConfig {
            node: node.into(),
            addr: addr.into(),
            heartbeat: HEARTBEAT,
            expiry: EXPIRY,
        }
    }
}

/// The leases a node holds: bucket and the epoch its writes carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// Every held bucket with its epoch.
    pub leases: BTreeMap<Bucket, Epoch>,
    /// When these leases stop being safe to act on, on the local
    /// monotonic clock: the last successful round's start plus the
    /// expiry. The manager publishes an empty set once it passes, but a
    /// process resumed after a stall (`SIGSTOP`, a frozen VM) may run
    /// other tasks first, so a user checks it at the moment it acts (the
    /// scheduler before each firing round). `None`: no deadline (tests).
    pub valid_until: Option<Instant>,
}

impl Held {
    /// The epoch of `bucket`, if held.
    pub fn epoch(&self, bucket: Bucket) -> Option<Epoch> {
        self.leases.get(&bucket).copied()
    }

    /// How many buckets are held.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }
}

/// One node's lease rounds (see the module docs). Run it with
/// [`LeaseManager::spawn`], or call [`LeaseManager::round`] directly.
pub struct LeaseManager {
    pool: Pool,
    cfg: LeaseConfig,
    held: watch::Sender<Held>,
    /// When what is published stops being safe to act on.
    valid_until: Option<Instant>,
    /// Whether the node has not yet heartbeated (sets `started_at`).
    first: bool,
    /// Set while the node gives up its leases ([`LeaseManager::give_up_when`]).
    give_up: Option<watch::Receiver<bool>>,
    /// Whether a release of everything is still owed (the node gave up
    /// its leases and no release has committed since).
    must_release: bool,
}

impl LeaseManager {
    /// A manager for node `cfg.node` on `pool` (migrated: [`super::schema`]).
    pub fn new(pool: Pool, cfg: LeaseConfig) -> LeaseManager {
        LeaseManager {
            pool,
            cfg,
            held: watch::Sender::new(Held::default()),
            valid_until: None,
            first: true,
            give_up: None,
            must_release: false,
        }
    }

    /// Gives up every lease while `signal` is `true` (see the module docs):
    /// nothing is published as held, the leases are released and the
    /// node row deleted as soon as PostgreSQL answers, and nothing is
    /// claimed until the signal is `false` again.
    pub fn give_up_when(mut self, signal: watch::Receiver<bool>) -> LeaseManager {
        self.give_up = Some(signal);
        self
    }

    /// Whether the node is giving up its leases now.
    fn giving_up(&self) -> bool {
        self.give_up.as_ref().is_some_and(|g| *g.borrow())
    }

    /// Stops acting on any lease at once (published empty) and owes a
    /// release.
    fn stand_down(&mut self) {
        self.must_release = true;
        self.valid_until = None;
        self.publish(Held::default());
    }

    /// The held leases, updated after every round.
    pub fn subscribe(&self) -> watch::Receiver<Held> {
        self.held.subscribe()
    }

    fn publish(&self, held: Held) {
        self.held.send_if_modified(|h| {
            let changed = *h != held;
            *h = held;
            changed
        });
    }

    /// Drops everything once the last round's lease time has passed.
    fn expire_if_due(&mut self) {
        if self.valid_until.is_some_and(|t| Instant::now() >= t) {
            self.valid_until = None;
            self.publish(Held::default());
        }
    }

    /// One heartbeat and lease round, bounded by half the expiry and
    /// by the published leases' deadline (on timeout the round's
    /// transaction is abandoned and its connection discarded).
    pub async fn round(&mut self) -> Result<(), ClusterError> {
        let started = Instant::now();
        let bound = (self.cfg.expiry / 2).max(Duration::from_millis(500));
        let mut client: Option<deadpool_postgres::Client> = None;
        if self.giving_up() {
            self.stand_down();
        }
        let outcome = {
            let deadline = self.valid_until;
            let pool = self.pool.clone();
            let slot = &mut client;
            let work = async {
                let c = slot.insert(pool.get().await?);
                if self.must_release {
                    self.release_on(c).await
                } else {
                    self.round_on(c, started).await
                }
            };
            tokio::select! {
                r = tokio::time::timeout(bound, work) => {
                    r.unwrap_or(Err(ClusterError::Timeout("lease round")))
                }
                _ = sleep_until_opt(deadline) => Err(ClusterError::Timeout("lease round")),
            }
        };
        if let (Err(_), Some(c)) = (&outcome, client) {
            // The connection may be stuck mid-transaction: do not reuse it.
            let _ = deadpool_postgres::Object::take(c);
        }
        self.expire_if_due();
        outcome
    }

    async fn round_on(
        &mut self,
        client: &mut deadpool_postgres::Client,
        started: Instant,
    ) -> Result<(), ClusterError> {
        let me = self.cfg.node.clone();
        let expiry_s = self.cfg.expiry.as_secs_f64();
        // A snapshot per statement, whatever the server's default: the
        // lease read after the fence lock must see the claims committed
        // while it waited, and a claim's second statement the renewals
        // committed after its first.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::ReadCommitted)
            .start()
            .await?;
        // This node's fence lock, shared, first: a claim of its buckets
        // tries it exclusive before it reads their expiry, so either the
        // claim commits before this round reads the leases, or it reads
        // the expiry this round renews.
        tx.execute(FENCE_SHARED, &[&FENCE_LOCK, &me]).await?;
        // The heartbeat renews every lease of the node (migration 12).
        tx.execute(
            "INSERT INTO nodes (id, addr, lease_until)
             VALUES ($1, $2, now() + make_interval(secs => $4))
             ON CONFLICT (id) DO UPDATE SET addr = excluded.addr, heartbeat_at = now(),
                 lease_until = excluded.lease_until,
                 started_at = CASE WHEN $3 THEN now() ELSE nodes.started_at END,
                 given_up_at = NULL",
            &[&me, &self.cfg.addr, &self.first, &expiry_s],
        )
        .await?;
        let now: i64 = tx
            .query_one("SELECT (extract(epoch FROM now()) * 1000)::bigint", &[])
            .await?
            .get(0);
        let live: Vec<String> = tx
            .query(
                "SELECT id FROM nodes
                 WHERE heartbeat_at > now() - make_interval(secs => $1) AND given_up_at IS NULL",
                &[&expiry_s],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let leases = tx
            .query(
                "SELECT b.bucket, b.owner, b.epoch,
                        (extract(epoch FROM n.lease_until) * 1000)::bigint
                 FROM buckets b LEFT JOIN nodes n ON n.id = b.owner",
                &[],
            )
            .await?
            .iter()
            .map(|r| {
                let b: i32 = r.get(0);
                Ok(Lease {
                    bucket: Bucket::new(i64::from(b))
                        .ok_or_else(|| ClusterError::Corrupt(format!("bucket {b}")))?,
                    owner: r.get(1),
                    epoch: Epoch(r.get(2)),
                    expires_at: r.get::<_, Option<i64>>(3).map(UnixMs::new),
                })
            })
            .collect::<Result<Vec<_>, ClusterError>>()?;
        let plan = plan_round(
            &me,
            UnixMs::new(now),
            &leases,
            live.iter().map(String::as_str),
        );

        // Renewed with the heartbeat above: what the plan keeps is held
        // (no claim of it can commit before this transaction does, as the
        // fence lock is held).
        let mut kept = Held::default();
        for (b, e) in &plan.renew {
            kept.leases.insert(*b, *e);
        }
        // Stop working on what is given up or was lost before the release
        // commits: nobody may claim it while we still act on it. Only
        // removals here; what is renewed or claimed is added after commit.
        let mut still = self.held.borrow().clone();
        still.leases.retain(|b, e| kept.epoch(*b) == Some(*e));
        self.publish(still);

        if !plan.release.is_empty() {
            // After this node's writes in flight (their fence lock).
            tx.execute(FENCE_EXCLUSIVE, &[&FENCE_LOCK, &me]).await?;
            let release: Vec<i32> = plan.release.iter().map(|b| i32::from(b.get())).collect();
            tx.execute(
                "UPDATE buckets SET owner = NULL WHERE bucket = ANY($1::int[]) AND owner = $2",
                &[&release, &me],
            )
            .await?;
        }
        // Candidates left unclaimed: their owners may be stuck holding
        // their fence locks (after the commit below).
        let mut unclaimed: Vec<i32> = Vec::new();
        if plan.claim_limit > 0 {
            let candidates: Vec<i32> = plan.claim.iter().map(|b| i32::from(b.get())).collect();
            let limit = plan.claim_limit as i64;
            // The owners whose leases have run out, as this statement
            // reads them, that are not renewing nor writing: their fence
            // locks, tried exclusive and held until commit. The claim reads
            // their expiry again after that (a later statement: it sees a
            // round of theirs that committed meanwhile), and none of them
            // can renew before this commits.
            let expired: Vec<String> = tx
                .query(
                    "WITH o AS MATERIALIZED (
                         SELECT DISTINCT b.owner FROM buckets b
                         LEFT JOIN nodes n ON n.id = b.owner
                         WHERE b.bucket = ANY($1::int[]) AND b.owner IS NOT NULL
                           AND b.owner <> $2
                           AND (n.lease_until IS NULL OR n.lease_until <= now()))
                     SELECT owner FROM o WHERE pg_try_advisory_xact_lock($3, hashtext(owner))",
                    &[&candidates, &me, &FENCE_LOCK],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            for r in tx
                .query(
                    "WITH c AS (
                         SELECT b.bucket FROM buckets b
                         LEFT JOIN nodes n ON n.id = b.owner
                         WHERE b.bucket = ANY($1::int[])
                           AND (b.owner IS NULL OR (b.owner = ANY($4::text[])
                             AND (n.lease_until IS NULL OR n.lease_until <= now())))
                         ORDER BY array_position($1::int[], b.bucket)
                         LIMIT $2
                         FOR UPDATE OF b SKIP LOCKED)
                     UPDATE buckets b SET owner = $3, epoch = b.epoch + 1
                     FROM c WHERE b.bucket = c.bucket
                     RETURNING b.bucket, b.epoch",
                    &[&candidates, &limit, &me, &expired],
                )
                .await?
            {
                let b = bucket_of(r.get(0))?;
                kept.leases.insert(b, Epoch(r.get(1)));
            }
            unclaimed = candidates
                .into_iter()
                .filter(|b| bucket_of(*b).is_ok_and(|b| !kept.leases.contains_key(&b)))
                .collect();
        }
        tx.commit().await?;
        self.first = false;
        if !unclaimed.is_empty() {
            // Outside the round's transaction: a refusal must not undo it.
            let stuck = STUCK_AFTER.as_millis() as i64;
            match client
                .query_one(END_STUCK_FENCES, &[&unclaimed, &me, &FENCE_LOCK, &stuck])
                .await
            {
                Ok(r) if r.get::<_, i64>(0) > 0 => tracing::warn!(
                    ended = r.get::<_, i64>(0),
                    "ended database sessions holding the fence lock of a node whose leases ran out (stopped inside a COPY?)"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %ClusterError::from(e), "cannot end the sessions of a node whose leases ran out"),
            }
        }
        if self.giving_up() {
            // Given up during the round: the next one releases.
            self.stand_down();
            return Ok(());
        }
        self.valid_until = Some(started + self.cfg.expiry);
        kept.valid_until = self.valid_until;
        self.publish(kept);
        Ok(())
    }

    /// The round of a node that gave up its leases: releases every lease
    /// of the node and marks its node row given up (`given_up_at`, kept
    /// from the first such round) with a heartbeat, in one transaction:
    /// the others count it out of the fair share, and the cluster view
    /// shows it as `given_up`. Its next claiming round clears the mark.
    async fn release_on(
        &mut self,
        client: &mut deadpool_postgres::Client,
    ) -> Result<(), ClusterError> {
        let tx = client.transaction().await?;
        tx.execute(FENCE_EXCLUSIVE, &[&FENCE_LOCK, &self.cfg.node])
            .await?;
        let released = tx
            .execute(
                "UPDATE buckets SET owner = NULL WHERE owner = $1",
                &[&self.cfg.node],
            )
            .await?;
        tx.execute(
            "INSERT INTO nodes (id, addr, given_up_at) VALUES ($1, $2, now())
             ON CONFLICT (id) DO UPDATE SET addr = excluded.addr, heartbeat_at = now(),
                 lease_until = NULL, given_up_at = coalesce(nodes.given_up_at, now())",
            &[&self.cfg.node, &self.cfg.addr],
        )
        .await?;
        tx.commit().await?;
        if released > 0 {
            tracing::warn!(
                node = %self.cfg.node,
                released,
                "leases released: this node gave them up (its PostgreSQL write backlog was full)"
            );
        }
        self.must_release = self.giving_up();
        self.first = false;
        Ok(())
    }

    /// Gives up every lease of this node and removes its node row, so that
    /// the others take its buckets at their next round instead of after
    /// the expiry. Publishes nothing held first.
    pub async fn release_all(&mut self) -> Result<(), ClusterError> {
        self.valid_until = None;
        self.publish(Held::default());
        let work = async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            tx.execute(FENCE_EXCLUSIVE, &[&FENCE_LOCK, &self.cfg.node])
                .await?;
            tx.execute(
                "UPDATE buckets SET owner = NULL WHERE owner = $1",
                &[&self.cfg.node],
            )
            .await?;
            tx.execute("DELETE FROM nodes WHERE id = $1", &[&self.cfg.node])
                .await?;
            tx.commit().await?;
            Ok::<(), ClusterError>(())
        };
        tokio::time::timeout(self.cfg.heartbeat.max(Duration::from_secs(1)), work)
            .await
            .unwrap_or(Err(ClusterError::Timeout("releasing the leases")))
    }

    /// Runs a round every heartbeat until `cancel`, then releases the
    /// leases ([`LeaseManager::release_all`]).
    pub fn spawn(mut self, cancel: CancellationToken) -> LeaseHandle {
        let held = self.subscribe();
        let stop = cancel.clone();
        let mut signal = self.give_up.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(self.cfg.heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let deadline = self.valid_until;
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(e) = self.round().await {
                            tracing::warn!(node = %self.cfg.node, error = %e, "lease round failed");
                        }
                    }
                    _ = sleep_until_opt(deadline) => self.expire_if_due(),
                    changed = signal_changed(&mut signal) => {
                        if changed.is_err() {
                            // The writer is gone: nothing more to give up for.
                            signal = None;
                            continue;
                        }
                        // Act at once, then on the usual period.
                        if self.giving_up() {
                            self.stand_down();
                        }
                        tick.reset_immediately();
                    }
                }
            }
            if let Err(e) = self.release_all().await {
                tracing::warn!(node = %self.cfg.node, error = %e, "cannot release the leases");
            }
        });
        LeaseHandle { held, cancel, task }
    }
}

/// The give-up signal's next change; never completes without one.
async fn signal_changed(
    signal: &mut Option<watch::Receiver<bool>>,
) -> Result<(), watch::error::RecvError> {
    match signal {
        Some(s) => s.changed().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `t`, or forever when there is no deadline.
async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn bucket_of(b: i32) -> Result<Bucket, ClusterError> {
    Bucket::new(i64::from(b)).ok_or_else(|| ClusterError::Corrupt(format!("bucket {b}")))
}

/// A running [`LeaseManager`].
pub struct LeaseHandle {
    held: watch::Receiver<Held>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseHandle {
    /// The held leases. When the manager is gone (the sender closed), the
    /// node holds nothing, whatever the last value said.
    pub fn held(&self) -> watch::Receiver<Held> {
        self.held.clone()
    }

    /// Stops the rounds and releases the leases (a clean shutdown).
    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }

    /// Stops the rounds at once without releasing anything, as a crash
    /// does: the leases stay in the table until they expire.
    pub async fn abort(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
