//! Fencing: the check every write of a bucket's data makes inside its own
//! transaction, so that a node whose lease was taken (paused, partitioned,
//! slow) cannot write over its successor. A lease is valid while its
//! owner's node row says so (`nodes.lease_until`, renewed by each of the
//! node's rounds: one row a node, not one a bucket; migration 12).
//!
//! [`fence`] first takes the writing node's *fence lock* shared (a
//! transaction-scoped advisory lock keyed by the node's id,
//! [`FENCE_LOCK`]), then checks, in a later statement (so its snapshot
//! sees every claim committed before the lock was granted: the
//! transaction must be `READ COMMITTED`, as the batch writer starts its
//! own), that the bucket's lease is still this node's, with this epoch,
//! and unexpired on the database's clock. Whoever changes a lease's owner takes that
//! owner's fence lock exclusive in the same transaction: a claim of a
//! bucket whose owner is writing skips it (`pg_try_advisory_xact_lock`,
//! as `SKIP LOCKED`), a release or a give-up by the owner waits for its
//! own write. So the lease cannot change hands between the check and the
//! commit: either the write commits under a valid lease or it fails with
//! [`FenceError::Stale`] and the caller rolls back.
//!
//! Until 2026-11-30 the check locked the bucket's lease row `FOR SHARE`
//! instead: a row lock is a WAL record (≈ 54 B), and a batch of one second
//! locked about a thousand rows, ≈ 21 B of WAL a check at 4,000 checks/s
//! (docs/cluster.md, "Fencing without row locks"). An advisory lock
//! writes nothing, and one covers every bucket of the node.

use healthchecker_core::cluster::{Bucket, Epoch};

/// The class of the fence locks (`pg_advisory_xact_lock(FENCE_LOCK,
/// hashtext(node))`; "HCFC" in ASCII). Two node ids with the same hash
/// share a lock: a claim then waits a round more, never less.
pub const FENCE_LOCK: i32 = 0x4843_4643;

/// Takes `node`'s fence lock shared until the transaction ends (the
/// statement a fenced write runs before its check, see the module docs).
pub const FENCE_SHARED: &str = "SELECT pg_advisory_xact_lock_shared($1, hashtext($2))";

/// Takes `node`'s fence lock exclusive until the transaction ends: a
/// release or give-up of `node`'s own leases runs it first.
pub const FENCE_EXCLUSIVE: &str = "SELECT pg_advisory_xact_lock($1, hashtext($2))";

/// How long after its lease ran out a node may still hold its fence lock
/// before a claiming node ends the sessions that hold it
/// ([`END_STUCK_FENCES`]): PostgreSQL itself ends a session left idle in
/// its transaction after `IDLE_IN_TRANSACTION` (5 s, cluster/db.rs), so
/// what still holds the lock then is a node stopped inside a statement
/// the server does not time out, the writer's `COPY … FROM STDIN`.
pub const STUCK_AFTER: std::time::Duration = super::db::IDLE_IN_TRANSACTION;

/// Ends (`pg_terminate_backend`) the sessions, of this role, holding the
/// fence lock of a node that owns one of the buckets `$1`, is not `$2`,
/// and whose lease ran out more than `$4` ms ago; `$3` is [`FENCE_LOCK`].
/// Returns how many. The ended transaction rolls back (its write was not
/// acknowledged; the node retries it and the fence refuses it), and the
/// next claim gets the lock. Only sessions of the same role: ending
/// another role's needs `pg_signal_backend`, and its refusal would be an
/// error. Only the lock held shared (a fenced write or the owner's round;
/// a claiming node holds it exclusive) by a transaction begun before the
/// lease ran out (a later one cannot pass the fence: a node back from a
/// pause, in its first round, is left alone).
pub const END_STUCK_FENCES: &str = "SELECT count(pg_terminate_backend(l.pid))::bigint
     FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.granted AND l.pid <> pg_backend_pid()
       AND a.usename = current_user
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND l.classid = $3::int4::oid AND l.objsubid = 2 AND l.mode = 'ShareLock'
       AND EXISTS (
         SELECT 1 FROM nodes n
         WHERE hashtext(n.id)::oid = l.objid AND n.id <> $2
           AND n.lease_until <= now() - $4::bigint * interval '1 millisecond'
           AND a.xact_start <= n.lease_until
           AND EXISTS (SELECT 1 FROM buckets b WHERE b.owner = n.id AND b.bucket = ANY($1::int[])))";

/// Why a fenced write cannot go ahead.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// The lease is no longer this node's at this epoch (taken over,
    /// released or expired): the write must be dropped, and the node must
    /// stop working on the bucket.
    #[error("stale lease: bucket {bucket} is no longer held by {node} at epoch {epoch}")]
    Stale {
        /// The bucket written.
        bucket: Bucket,
        /// The node that tried.
        node: String,
        /// The epoch it wrote with.
        epoch: Epoch,
    },
    /// The check itself failed (connection, statement).
    #[error("postgresql: {}", super::with_causes(.0))]
    Db(#[from] tokio_postgres::Error),
}

/// Checks, inside `tx`, that `node` holds `bucket` at `epoch` now, and keeps
/// the lease from changing hands until `tx` ends. On
/// [`FenceError::Stale`] the caller rolls `tx` back (dropping it does).
pub async fn fence(
    tx: &tokio_postgres::Transaction<'_>,
    node: &str,
    bucket: Bucket,
    epoch: Epoch,
) -> Result<(), FenceError> {
    tx.execute(FENCE_SHARED, &[&FENCE_LOCK, &node]).await?;
    let row = tx
        .query_opt(
            "SELECT 1 FROM buckets b JOIN nodes n ON n.id = b.owner
             WHERE b.bucket = $1 AND b.owner = $2 AND b.epoch = $3 AND n.lease_until > now()",
            &[&i32::from(bucket.get()), &node, &epoch.0],
        )
        .await?;
    match row {
        Some(_) => Ok(()),
        None => Err(FenceError::Stale {
            bucket,
            node: node.to_string(),
            epoch,
        }),
    }
}
