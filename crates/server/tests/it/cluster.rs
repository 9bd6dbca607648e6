//! The cluster's foundation against a real, throwaway PostgreSQL
//! (healthchecker-testkit's `postgres`): migrations, lease managers that
//! split the buckets, take over a crashed node's, rebalance for a joining
//! one, and fencing that refuses a stale write. Short periods (a round
//! every 200 ms, leases of 2 s) keep it to seconds; every wait is a
//! condition with a generous deadline, never a timed assertion.

use healthchecker_core::cluster::{fair_share, Bucket, Epoch, BUCKETS};
use healthchecker_server::cluster::{
    fence, schema, FenceError, Held, LeaseConfig, LeaseHandle, LeaseManager, PgDb, FENCE_LOCK,
};
use healthchecker_testkit::postgres::Postgres;
use healthchecker_testkit::wait_for;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Far more than convergence takes even on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);

struct Cluster {
    pg: Postgres,
    db: PgDb,
    pool: deadpool_postgres::Pool,
}

/// A throwaway server with the schema migrated; `None`: PostgreSQL is not
/// installed and this is not CI (the test is skipped, loudly).
async fn cluster() -> Option<Cluster> {
    let pg = Postgres::start().await?;
    let db = PgDb::parse(&pg.url(), None).expect("testkit URL parses");
    let pool = db.pool(8);
    let mut client = pool.get().await.expect("connection");
    schema::migrate(&mut client).await.expect("migrate");
    Some(Cluster { pg, db, pool })
}

impl Cluster {
    fn node(&self, id: &str) -> LeaseHandle {
        let cfg = LeaseConfig {
            heartbeat: Duration::from_millis(200),
            expiry: Duration::from_secs(2),
            ..LeaseConfig::new(id, format!("{id}.test:8484"))
        };
        LeaseManager::new(self.db.pool(2), cfg).spawn(CancellationToken::new())
    }

    /// Live leases per owner, as the table says now.
    async fn owners(&self) -> BTreeMap<String, BTreeMap<Bucket, Epoch>> {
        let client = self.pool.get().await.unwrap();
        let mut out: BTreeMap<String, BTreeMap<Bucket, Epoch>> = BTreeMap::new();
        for r in client
            .query(
                "SELECT b.bucket, b.owner, b.epoch FROM buckets b JOIN nodes n ON n.id = b.owner
                 WHERE n.lease_until > now()",
                &[],
            )
            .await
            .unwrap()
        {
            let b = Bucket::new(i64::from(r.get::<_, i32>(0))).unwrap();
            out.entry(r.get(1)).or_default().insert(b, Epoch(r.get(2)));
        }
        out
    }
}

fn held(nodes: &[&LeaseHandle]) -> Vec<Held> {
    nodes.iter().map(|n| n.held().borrow().clone()).collect()
}

/// Buckets that two nodes held at one instant: read every node's set
/// twice, one pass after the other; a bucket in both reads of two nodes
/// was held by both at the moment between the passes (a lease is held
/// for an interval, so this has no false positives).
fn double_held(nodes: &[&LeaseHandle]) -> BTreeSet<Bucket> {
    let first = held(nodes);
    let second = held(nodes);
    let steady: Vec<BTreeSet<Bucket>> = first
        .iter()
        .zip(&second)
        .map(|(a, b)| {
            a.leases
                .keys()
                .filter(|k| b.leases.contains_key(k))
                .copied()
                .collect()
        })
        .collect();
    let mut seen = BTreeSet::new();
    let mut twice = BTreeSet::new();
    for s in &steady {
        for b in s {
            if !seen.insert(*b) {
                twice.insert(*b);
            }
        }
    }
    twice
}

/// Whether the nodes' published sets cover every bucket once, each within
/// its fair share, and agree with the table.
fn settled(nodes: &[&LeaseHandle], table: &BTreeMap<String, BTreeMap<Bucket, Epoch>>) -> bool {
    let sets = held(nodes);
    let share = fair_share(usize::from(BUCKETS), nodes.len());
    let total: usize = sets.iter().map(Held::len).sum();
    let union: BTreeSet<Bucket> = sets.iter().flat_map(|h| h.leases.keys().copied()).collect();
    let table_total: usize = table.values().map(BTreeMap::len).sum();
    total == usize::from(BUCKETS)
        && union.len() == usize::from(BUCKETS)
        && sets.iter().all(|h| !h.is_empty() && h.len() <= share)
        && table.len() == nodes.len()
        && table_total == usize::from(BUCKETS)
        && table.values().all(|m| m.len() <= share)
}

async fn wait_settled(c: &Cluster, nodes: &[&LeaseHandle], what: &str) {
    wait_for(what, PATIENCE, || async {
        let twice = double_held(nodes);
        assert!(
            twice.is_empty(),
            "buckets held by two nodes at once: {twice:?}"
        );
        let table = c.owners().await;
        settled(nodes, &table).then_some(())
    })
    .await;
}

#[tokio::test]
async fn migrations_are_versioned_and_idempotent() {
    let Some(c) = cluster().await else { return };
    let mut client = c.pool.get().await.unwrap();
    // cluster() migrated once; again is a no-op.
    schema::migrate(&mut client)
        .await
        .expect("second migration");
    assert_eq!(schema::version(&client).await.unwrap(), schema::VERSION);
    let applied: i64 = client
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, schema::VERSION);
    let (rows, min, max): (i64, i32, i32) = {
        let r = client
            .query_one(
                "SELECT count(*), min(bucket), max(bucket) FROM buckets WHERE owner IS NULL AND epoch = 0",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!((rows, min, max), (1024, 0, 1023));

    // A database migrated by a newer build is refused, not changed.
    client
        .execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&(schema::VERSION + 1)],
        )
        .await
        .unwrap();
    let e = schema::migrate(&mut client).await.unwrap_err();
    assert!(e.to_string().contains("newer than this build"), "{e}");
}

/// Migration 10 turns `checks` into slots: a database as version 9 left it
/// keeps every check, in the current slot (`checks_s0`), read by the same
/// index; ids go on from the same sequence.
#[tokio::test]
async fn the_checks_of_an_older_database_become_its_current_slot() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let db = PgDb::parse(&pg.url(), None).expect("testkit URL parses");
    let pool = db.pool(2);
    let mut client = pool.get().await.unwrap();
    schema::migrate_to(&mut client, 9)
        .await
        .expect("migrate to 9");
    assert_eq!(schema::version(&client).await.unwrap(), 9);
    client
        .batch_execute(
            "INSERT INTO services (name, bucket, protocol, host, port, path, emails, timeout, \
               interval, unhealthy_threshold, healthy_threshold, expected_status, tls_verify, \
               cert_warn_days, token_hash, state_since, created_at, updated_at) \
             VALUES ('old', 1, 'http', 'h', 80, '/', '[]', 5, 30, 2, 2, '200', true, 14, 'x', 0, 0, 0); \
             INSERT INTO checks (service_id, at, duration_us, result, streak) \
               SELECT 1, g, 1000, CASE WHEN g % 3 = 0 THEN 'fail' ELSE 'pass' END, 1 \
               FROM generate_series(1, 50) g;",
        )
        .await
        .unwrap();
    async fn checks_of(client: &tokio_postgres::Client, table: &str) -> Vec<(i64, i64, String)> {
        client
            .query(
                &format!("SELECT id, at, result FROM {table} ORDER BY id"),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }
    let before = checks_of(&client, "checks").await;
    assert_eq!(before.len(), 50);

    schema::migrate(&mut client)
        .await
        .expect("migrate to the newest");
    assert_eq!(schema::version(&client).await.unwrap(), schema::VERSION);
    let after = checks_of(&client, "checks_s0").await;
    assert_eq!(after, before, "every check, in slot 0");
    let current: i32 = client
        .query_one("SELECT slot FROM check_slots WHERE current", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(current, 0);
    // The newest checks of a service by the index of every slot.
    let plan: String = client
        .query(
            "EXPLAIN SELECT id FROM checks WHERE service_id = 1 ORDER BY id DESC LIMIT 5",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(plan.contains("checks_s0_by_service"), "{plan}");
    assert!(!plan.contains("Seq Scan"), "{plan}");
    // A row written without a slot goes to the kept slot, with the next id.
    let id: i64 = client
        .query_one(
            "INSERT INTO checks (service_id, at, duration_us, result) \
             VALUES (1, 51, 1000, 'pass') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(id, before.last().unwrap().0 + 1);
    let kept: i64 = client
        .query_one("SELECT count(*) FROM checks_kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 1);
}

#[tokio::test]
async fn nodes_split_the_buckets_fairly_and_a_joining_node_gets_its_share() {
    let Some(c) = cluster().await else { return };
    let (a, b, cc) = (c.node("node-a"), c.node("node-b"), c.node("node-c"));
    wait_settled(&c, &[&a, &b, &cc], "three nodes to split the buckets").await;
    let table = c.owners().await;
    for (node, h) in ["node-a", "node-b", "node-c"]
        .iter()
        .zip(held(&[&a, &b, &cc]))
    {
        assert_eq!(
            table[*node], h.leases,
            "{node}'s published leases are the table's"
        );
        assert!(
            h.len() <= 342 && h.len() >= 1024 - 2 * 342,
            "{node}: {}",
            h.len()
        );
    }

    // A fourth node joins: the others give up buckets beyond the new share
    // of 256 and it claims them; no bucket is held twice meanwhile.
    let d = c.node("node-d");
    wait_settled(&c, &[&a, &b, &cc, &d], "four nodes to rebalance").await;
    let table = c.owners().await;
    assert!(
        table.values().all(|m| m.len() == 256),
        "1024 / 4 leaves no slack: {:?}",
        table.iter().map(|(n, m)| (n, m.len())).collect::<Vec<_>>()
    );

    // A clean stop gives the leases up at once.
    d.stop().await;
    let table = c.owners().await;
    assert!(!table.contains_key("node-d"), "d's leases are released");
    wait_settled(&c, &[&a, &b, &cc], "three nodes to take d's buckets").await;
    for n in [a, b, cc] {
        n.stop().await;
    }
}

#[tokio::test]
async fn a_crashed_nodes_buckets_are_taken_over_and_its_stale_writes_refused() {
    let Some(c) = cluster().await else { return };
    let (a, b, cc) = (c.node("node-a"), c.node("node-b"), c.node("node-c"));
    wait_settled(&c, &[&a, &b, &cc], "three nodes to split the buckets").await;
    let before = c.owners().await["node-c"].clone();
    let (&bucket, &old_epoch) = before.iter().next().unwrap();

    let client = c.pool.get().await.unwrap();
    client
        .batch_execute("CREATE TABLE fenced_writes (bucket int, node text, epoch bigint)")
        .await
        .unwrap();
    drop(client);
    let write = |node: &'static str, epoch: Epoch| {
        let pool = c.pool.clone();
        async move {
            let mut client = pool.get().await.unwrap();
            let tx = client.transaction().await.unwrap();
            fence(&tx, node, bucket, epoch).await?;
            tx.execute(
                "INSERT INTO fenced_writes VALUES ($1, $2, $3)",
                &[&i32::from(bucket.get()), &node, &epoch.0],
            )
            .await?;
            tx.commit().await?;
            Ok::<(), FenceError>(())
        }
    };
    // Positive control: while c holds the lease, its write goes through.
    write("node-c", old_epoch)
        .await
        .expect("c's write under its lease");

    // c crashes: no release, its leases run out; a and b take them over.
    cc.abort().await;
    wait_settled(&c, &[&a, &b], "a and b to take over c's buckets").await;
    let after = c.owners().await;
    assert!(!after.contains_key("node-c"));
    let now_held: BTreeMap<Bucket, (String, Epoch)> = after
        .iter()
        .flat_map(|(n, m)| m.iter().map(move |(b, e)| (*b, (n.clone(), *e))))
        .collect();
    for (b, e) in &before {
        let (owner, new) = &now_held[b];
        assert!(
            new > e,
            "bucket {b}: epoch {new} after {e} (taken by {owner})"
        );
    }

    // c's write with its old epoch is refused; the new owner's succeeds.
    let stale = write("node-c", old_epoch).await;
    assert!(
        matches!(stale, Err(FenceError::Stale { bucket: sb, epoch, .. }) if sb == bucket && epoch == old_epoch),
        "{stale:?}"
    );
    let (owner, new_epoch) = now_held[&bucket].clone();
    let owner: &'static str = if owner == "node-a" {
        "node-a"
    } else {
        "node-b"
    };
    // Also the new owner with the old epoch is refused: the epoch fences.
    assert!(matches!(
        write(owner, old_epoch).await,
        Err(FenceError::Stale { .. })
    ));
    write(owner, new_epoch)
        .await
        .expect("the new owner's write");
    let client = c.pool.get().await.unwrap();
    let rows: Vec<(String, i64)> = client
        .query("SELECT node, epoch FROM fenced_writes ORDER BY epoch", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("node-c".to_string(), old_epoch.0),
            (owner.to_string(), new_epoch.0)
        ]
    );
    for n in [a, b] {
        n.stop().await;
    }
}

/// A fenced write in flight holds its node's fence lock (an advisory
/// lock, no row lock): while it does, no other node claims that node's
/// buckets even once their leases have run out, so the write commits
/// under the lease it checked; the claims come after it.
#[tokio::test]
async fn no_bucket_changes_hands_while_its_owners_fenced_write_is_in_flight() {
    let Some(c) = cluster().await else { return };
    let cc = c.node("node-c");
    wait_settled(&c, &[&cc], "node c to hold every bucket").await;
    let before = c.owners().await["node-c"].clone();
    let (&bucket, &epoch) = before.iter().next().unwrap();
    let mut client = c.pool.get().await.unwrap();
    client
        .batch_execute("CREATE TABLE fenced_writes (bucket int, node text, epoch bigint)")
        .await
        .unwrap();
    let tx = client.transaction().await.unwrap();
    fence(&tx, "node-c", bucket, epoch)
        .await
        .expect("c's write under its lease");
    // c stops (no release), its leases run out, and b starts.
    cc.abort().await;
    let b = c.node("node-b");
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert!(
        !c.owners().await.contains_key("node-b"),
        "b claimed c's buckets while c's write was in flight"
    );
    tx.execute(
        "INSERT INTO fenced_writes VALUES ($1, 'node-c', $2)",
        &[&i32::from(bucket.get()), &epoch.0],
    )
    .await
    .unwrap();
    tx.commit()
        .await
        .expect("the write commits under its lease");
    wait_settled(&c, &[&b], "b to take c's buckets after the write").await;
    let after = c.owners().await;
    assert!(after["node-b"][&bucket] > epoch);
    // And c's next write is refused.
    let tx = client.transaction().await.unwrap();
    assert!(matches!(
        fence(&tx, "node-c", bucket, epoch).await,
        Err(FenceError::Stale { .. })
    ));
    drop(tx);
    b.stop().await;
}

/// A node stopped inside its writer's `COPY` (`SIGSTOP`, a frozen VM)
/// holds its fence lock in a session PostgreSQL does not time out (not
/// idle in a transaction): once its lease has been out for
/// `STUCK_AFTER`, a claiming node ends that session and takes the
/// buckets; the stopped write is rolled back.
#[tokio::test]
async fn a_node_stopped_inside_a_copy_loses_its_buckets_and_its_write() {
    let Some(c) = cluster().await else { return };
    let cc = c.node("node-c");
    wait_settled(&c, &[&cc], "node c to hold every bucket").await;
    let before = c.owners().await["node-c"].clone();
    let (&bucket, &epoch) = before.iter().next().unwrap();
    let mut client = c.pool.get().await.unwrap();
    client
        .batch_execute("CREATE TABLE copied (bucket int)")
        .await
        .unwrap();
    let tx = client.transaction().await.unwrap();
    fence(&tx, "node-c", bucket, epoch)
        .await
        .expect("c's write under its lease");
    let sink = tx.copy_in("COPY copied FROM STDIN").await.unwrap();
    let mut sink = std::pin::pin!(sink);
    use futures_util::SinkExt;
    sink.send(bytes::Bytes::from_static(b"1\n")).await.unwrap();
    // c stops there: no more data, no release.
    cc.abort().await;
    let b = c.node("node-b");
    wait_settled(&c, &[&b], "b to take c's buckets from inside c's COPY").await;
    assert!(c.owners().await["node-b"][&bucket] > epoch);
    // c's session was ended: its COPY cannot finish, nothing was written.
    assert!(sink.as_mut().finish().await.is_err());
    drop(tx);
    drop(client);
    let other = c.pool.get().await.unwrap();
    let n: i64 = other
        .query_one("SELECT count(*) FROM copied", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    b.stop().await;
}

/// Every bucket's owner and epoch, as the table says (live or not).
async fn table(c: &Cluster) -> BTreeMap<Bucket, (Option<String>, Epoch)> {
    let client = c.pool.get().await.unwrap();
    client
        .query("SELECT bucket, owner, epoch FROM buckets", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                Bucket::new(i64::from(r.get::<_, i32>(0))).unwrap(),
                (r.get(1), Epoch(r.get(2))),
            )
        })
        .collect()
}

/// Makes `node`'s leases lapse (its expiry a second ago).
async fn lapse(client: &tokio_postgres::Client, node: &str) {
    client
        .execute(
            "UPDATE nodes SET lease_until = now() - interval '1 second' WHERE id = $1",
            &[&node],
        )
        .await
        .unwrap();
}

/// One expiry a node (migration 12): a claim of a node's lapsed leases
/// waits while the node's round holds its fence lock, and sees the
/// expiry that round renewed; a node whose lapsed leases nobody claimed
/// keeps them at the same epoch.
#[tokio::test]
async fn a_claim_waits_for_the_owners_round_and_lapsed_leases_nobody_took_keep_their_epoch() {
    let Some(c) = cluster().await else { return };
    let cc = c.node("node-c");
    wait_settled(&c, &[&cc], "node c to hold every bucket").await;
    cc.abort().await;
    let before = table(&c).await;
    assert!(before.values().all(|(o, _)| o.as_deref() == Some("node-c")));
    // c's lease has run out, and c is in a round: its fence lock shared.
    let mut client = c.pool.get().await.unwrap();
    lapse(&client, "node-c").await;
    let round = client.transaction().await.unwrap();
    round
        .execute(
            "SELECT pg_advisory_xact_lock_shared($1, hashtext('node-c'))",
            &[&FENCE_LOCK],
        )
        .await
        .unwrap();
    // b's rounds (every 200 ms) claim none of c's buckets meanwhile…
    let b = c.node("node-b");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(table(&c).await, before, "b claimed during c's round");
    assert!(b.held().borrow().is_empty());
    // …nor after c's round renews its lease and commits.
    round
        .execute(
            "UPDATE nodes SET lease_until = now() + interval '1 hour' WHERE id = 'node-c'",
            &[],
        )
        .await
        .unwrap();
    round.commit().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(table(&c).await, before, "b claimed a renewed lease");
    b.abort().await;
    // c's lease runs out again and nobody claims: c, back, keeps every
    // bucket at the epoch it had.
    lapse(&client, "node-c").await;
    client
        .execute("DELETE FROM nodes WHERE id = 'node-b'", &[])
        .await
        .unwrap();
    let cc = c.node("node-c");
    wait_settled(&c, &[&cc], "node c to hold every bucket again").await;
    let held = cc.held().borrow().clone();
    let epochs: BTreeMap<Bucket, Epoch> = before.iter().map(|(b, (_, e))| (*b, *e)).collect();
    assert_eq!(held.leases, epochs);
    cc.stop().await;
}

#[tokio::test]
async fn a_lease_manager_reconnects_after_postgresql_restarts_and_outages() {
    let Some(mut c) = cluster().await else { return };
    let a = c.node("node-a");
    wait_settled(&c, &[&a], "a lone node to claim every bucket").await;
    let before = c.owners().await["node-a"].clone();
    c.pg.restart().await;
    assert!(c.pg.running());
    // Its connections died with the server; a new one heartbeats again…
    wait_for("a heartbeat after the restart", PATIENCE, || async {
        let client = c.pool.get().await.ok()?;
        let r = client
            .query_opt(
                "SELECT 1 FROM nodes WHERE id = 'node-a' AND heartbeat_at > pg_postmaster_start_time()",
                &[],
            )
            .await
            .ok()?;
        r.map(|_| ())
    })
    .await;
    // …and renews (or, if the lease ran out meanwhile, reclaims with new
    // epochs) every bucket.
    wait_settled(&c, &[&a], "the node to hold every bucket again").await;
    let after = c.owners().await["node-a"].clone();
    assert_eq!(after.len(), 1024);
    assert!(before.iter().all(|(b, e)| after[b] >= *e));

    // Cut off for longer than a lease, the node stops claiming to hold
    // anything (on its own clock: the database is down), and takes its
    // buckets again when PostgreSQL is back.
    c.pg.stop();
    wait_for("the cut-off node to drop its leases", PATIENCE, || async {
        a.held().borrow().is_empty().then_some(())
    })
    .await;
    c.pg.restart().await;
    wait_settled(&c, &[&a], "the node to hold every bucket after the outage").await;

    a.stop().await;
    assert!(
        c.owners().await.is_empty(),
        "a clean stop releases everything"
    );
}
