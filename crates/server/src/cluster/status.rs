//! What `GET /api/v1/cluster` and the dashboard's cluster page show (SPEC
//! section 19), read from PostgreSQL's `nodes` and `buckets` tables, or
//! made up for a single node on SQLite.

use super::ClusterError;
use deadpool_postgres::Pool;
use healthchecker_core::api::{ClusterNode, ClusterStatus, NodeState};
use healthchecker_core::cluster::{Bucket, BucketSet, BUCKETS};
use std::collections::BTreeMap;
use std::time::Duration;

/// `backend` of a daemon on PostgreSQL.
pub const POSTGRESQL: &str = "postgresql";
/// `backend` of a daemon on SQLite.
pub const SQLITE: &str = "sqlite";

/// The cluster as the tables say now: every node with a row, or with a
/// lease that has not expired, by id; a node is live while its heartbeat
/// is younger than `expiry` (the lease expiry), and `given_up` while live
/// with its leases given up (`nodes.given_up_at`, `lease.rs`). `me` is the answering
/// node. Times are PostgreSQL's.
pub async fn read(pool: &Pool, me: &str, expiry: Duration) -> Result<ClusterStatus, ClusterError> {
    let mut client = pool.get().await?;
    let expiry_s = expiry.as_secs_f64();
    let tx_rows = async {
        // One snapshot for both tables.
        let client = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let nodes = client
            .query(
                "SELECT id, addr,
                        (extract(epoch FROM started_at) * 1000)::bigint,
                        (extract(epoch FROM heartbeat_at) * 1000)::bigint,
                        heartbeat_at > now() - make_interval(secs => $1),
                        given_up_at IS NOT NULL
                 FROM nodes ORDER BY id",
                &[&expiry_s],
            )
            .await?;
        let leases = client
            .query(
                "SELECT b.owner, b.bucket FROM buckets b JOIN nodes n ON n.id = b.owner
                 WHERE n.lease_until > now() ORDER BY b.owner, b.bucket",
                &[],
            )
            .await?;
        client.commit().await?;
        Ok::<_, ClusterError>((nodes, leases))
    };
    let (nodes, leases) = tokio::time::timeout(super::db::CONNECT_TIMEOUT, tx_rows)
        .await
        .unwrap_or(Err(ClusterError::Timeout("reading the cluster")))?;
    let mut held: BTreeMap<String, BucketSet> = BTreeMap::new();
    for r in &leases {
        let b: i32 = r.get(1);
        let bucket = Bucket::new(i64::from(b))
            .ok_or_else(|| ClusterError::Corrupt(format!("buckets.bucket {b}")))?;
        held.entry(r.get(0)).or_default().insert(bucket);
    }
    let mut out: BTreeMap<String, ClusterNode> = BTreeMap::new();
    for r in &nodes {
        let id: String = r.get(0);
        let live = r.get::<_, Option<bool>>(4).unwrap_or(false);
        let state = match (live, r.get::<_, bool>(5)) {
            (false, _) => NodeState::Down,
            (true, true) => NodeState::GivenUp,
            (true, false) => NodeState::Active,
        };
        out.insert(
            id.clone(),
            ClusterNode {
                id,
                addr: r.get(1),
                started_at: r.get::<_, Option<i64>>(2).map(crate::clock::rfc3339),
                heartbeat_at: r.get::<_, Option<i64>>(3).map(crate::clock::rfc3339),
                live,
                state,
                leases: 0,
                held: Vec::new(),
            },
        );
    }
    for (owner, set) in held {
        let node = out.entry(owner.clone()).or_insert_with(|| ClusterNode {
            id: owner,
            addr: String::new(),
            started_at: None,
            heartbeat_at: None,
            live: false,
            state: NodeState::Down,
            leases: 0,
            held: Vec::new(),
        });
        node.leases = set.len();
        node.held = ClusterNode::ranges_text(&set.ranges());
    }
    Ok(ClusterStatus {
        backend: POSTGRESQL.into(),
        node: me.to_string(),
        buckets: BUCKETS,
        nodes: out.into_values().collect(),
    })
}

/// A daemon on SQLite: one node, `this`, holding every bucket, started at
/// `started_at` and heartbeating `now` (Unix ms).
pub fn single(addr: &str, started_at: i64, now: i64) -> ClusterStatus {
    ClusterStatus {
        backend: SQLITE.into(),
        node: "this".into(),
        buckets: BUCKETS,
        nodes: vec![ClusterNode {
            id: "this".into(),
            addr: addr.to_string(),
            started_at: Some(crate::clock::rfc3339(started_at)),
            heartbeat_at: Some(crate::clock::rfc3339(now)),
            live: true,
            state: NodeState::Active,
            leases: usize::from(BUCKETS),
            held: ClusterNode::ranges_text(&BucketSet::ALL.ranges()),
        }],
    }
}
