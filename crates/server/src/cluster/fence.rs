//! Fencing: the check every write of a bucket's data makes inside its own
//! transaction, so that a node whose lease was taken (paused, partitioned,
//! slow) cannot write over its successor.
//!
//! [`fence`] locks the bucket's lease row `FOR SHARE` on condition that it
//! is still this node's, with this epoch, and unexpired on the database's
//! clock. The lock lasts until the transaction ends, and a claim takes rows
//! `FOR UPDATE SKIP LOCKED`, so the lease cannot change hands between the
//! check and the commit: either the write commits under a valid lease or it
//! fails with [`FenceError::Stale`] and the caller rolls back.
//!
//! A transaction that writes several buckets fences them in ascending
//! bucket order: the lease round locks its rows in that order too, so the
//! two never wait for each other in a cycle.

use healthchecker_core::cluster::{Bucket, Epoch};

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
    let row = tx
        .query_opt(
            "SELECT 1 FROM buckets
             WHERE bucket = $1 AND owner = $2 AND epoch = $3 AND expires_at > now()
             FOR SHARE",
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
