//! The cluster's parts that do not touch the store (SPEC section 19):
//! `GET /api/v1/cluster` and its dashboard page on a lone daemon, the
//! PostgreSQL read of nodes and leases, and the `LISTEN/NOTIFY` wake-ups
//! across nodes, against a real, throwaway PostgreSQL. Every wait is a
//! condition with a generous deadline.

use healthchecker_core::api::{ClusterStatus, NodeState};
use healthchecker_core::heartbeat::Ping;
use healthchecker_core::{ServiceId, UnixMs};
use healthchecker_server::cluster::wake::{self, Event, Listener, OnEvent, Wake};
use healthchecker_server::cluster::{schema, status, LeaseConfig, LeaseManager, PgDb};
use healthchecker_testkit::postgres::Postgres;
use healthchecker_testkit::{wait_for, TestDaemon};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(60);

/// On SQLite the one node is `this`; on PostgreSQL (the suite's second
/// pass, testkit's `HEALTHCHECKER_TEST_DB`) a one-node cluster, `test-node`,
/// which `TestDaemon` waits for to hold every bucket.
#[tokio::test]
async fn a_lone_daemon_is_one_live_node_holding_every_bucket() {
    let d = TestDaemon::start().await;
    let (backend, me) = if healthchecker_testkit::on_postgres() {
        ("postgresql", "test-node")
    } else {
        ("sqlite", "this")
    };
    let (code, body) = d.get("/api/v1/cluster").await;
    assert_eq!(code, 200, "{body}");
    let c: ClusterStatus = serde_json::from_value(body.clone()).expect("a ClusterStatus");
    assert_eq!((c.backend.as_str(), c.node.as_str()), (backend, me));
    assert_eq!(c.buckets, 1024);
    assert_eq!(c.nodes.len(), 1, "{body}");
    let n = &c.nodes[0];
    assert_eq!(n.id, me);
    assert!(n.live);
    assert_eq!(n.state, NodeState::Active);
    assert_eq!(n.leases, 1024);
    assert_eq!(n.held, ["0-1023"]);
    for t in [&n.started_at, &n.heartbeat_at] {
        let t = t.as_deref().expect("a time");
        assert!(
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).is_ok(),
            "{t}"
        );
    }
    // The dashboard's page shows the same row, linked from the navigation.
    let index = d.text("/").await;
    assert!(
        index.contains("href=\"/cluster\""),
        "no link to the cluster page"
    );
    let page = d.text("/cluster").await;
    assert!(page.contains(&format!("data-node=\"{me}\"")), "{page}");
    assert!(page.contains("data-leases=\"1024\""), "{page}");
    assert!(page.contains("data-state=\"active\""), "{page}");
    assert!(page.contains("0-1023"), "{page}");
}

/// A throwaway server with the schema migrated; `None`: skipped.
async fn postgres() -> Option<(Postgres, PgDb)> {
    let pg = Postgres::start().await?;
    let db = PgDb::parse(&pg.url(), None).expect("testkit URL parses");
    let mut client = db.pool(1).get().await.expect("connection");
    schema::migrate(&mut client).await.expect("migrate");
    Some((pg, db))
}

#[tokio::test]
async fn the_postgresql_read_lists_both_nodes_with_their_leases() {
    let Some((_pg, db)) = postgres().await else {
        return;
    };
    let node = |id: &str| {
        let cfg = LeaseConfig {
            heartbeat: Duration::from_millis(200),
            expiry: Duration::from_secs(2),
            ..LeaseConfig::new(id, format!("http://{id}.test:8484"))
        };
        LeaseManager::new(db.pool(2), cfg).spawn(CancellationToken::new())
    };
    let (a, b) = (node("node-a"), node("node-b"));
    let pool = db.pool(2);
    // Wait until the two split the buckets (512 each: the fair share).
    let c = wait_for("a 512/512 split", PATIENCE, || {
        let pool = pool.clone();
        async move {
            let c = status::read(&pool, "node-a", Duration::from_secs(2))
                .await
                .expect("read");
            (c.nodes.len() == 2 && c.nodes.iter().all(|n| n.leases == 512)).then_some(c)
        }
    })
    .await;
    assert_eq!(
        (c.backend.as_str(), c.node.as_str()),
        ("postgresql", "node-a")
    );
    assert_eq!(
        c.nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        ["node-a", "node-b"]
    );
    for n in &c.nodes {
        assert!(
            n.live && n.started_at.is_some() && n.heartbeat_at.is_some(),
            "{n:?}"
        );
        assert_eq!(n.addr, format!("http://{}.test:8484", n.id));
        // The ranges add up to the count.
        let counted: usize = n
            .held
            .iter()
            .map(|r| match r.split_once('-') {
                Some((x, y)) => y.parse::<usize>().unwrap() - x.parse::<usize>().unwrap() + 1,
                None => 1,
            })
            .sum();
        assert_eq!(counted, n.leases, "{n:?}");
    }
    // A clean stop releases node-b's leases and its row: node-a alone.
    b.stop().await;
    wait_for("node-a alone with every bucket", PATIENCE, || {
        let pool = pool.clone();
        async move {
            let c = status::read(&pool, "node-a", Duration::from_secs(2))
                .await
                .expect("read");
            (c.nodes.len() == 1 && c.nodes[0].leases == 1024).then_some(())
        }
    })
    .await;
    a.stop().await;
}

#[tokio::test]
async fn the_postgresql_read_shows_a_node_that_gave_up_its_leases() {
    // Issue 18: a node that gave up its leases (its write backlog full)
    // deleted its row, so `GET /api/v1/cluster` and the dashboard did not
    // list it at all while it was alive and heartbeating.
    let Some((_pg, db)) = postgres().await else {
        return;
    };
    let expiry = Duration::from_secs(2);
    let node = |id: &str, give_up: Option<tokio::sync::watch::Receiver<bool>>| {
        let cfg = LeaseConfig {
            heartbeat: Duration::from_millis(200),
            expiry,
            ..LeaseConfig::new(id, format!("http://{id}.test:8484"))
        };
        let m = LeaseManager::new(db.pool(2), cfg);
        match give_up {
            Some(g) => m.give_up_when(g),
            None => m,
        }
        .spawn(CancellationToken::new())
    };
    let (give_up, give_up_rx) = tokio::sync::watch::channel(false);
    let (a, b) = (node("node-a", Some(give_up_rx)), node("node-b", None));
    let pool = db.pool(2);
    let read = |want: fn(&ClusterStatus) -> bool| {
        let pool = pool.clone();
        async move {
            let c = status::read(&pool, "node-b", expiry).await.expect("read");
            want(&c).then_some(c)
        }
    };
    let c = wait_for("a 512/512 split", PATIENCE, || {
        read(|c| c.nodes.len() == 2 && c.nodes.iter().all(|n| n.leases == 512))
    })
    .await;
    assert!(
        c.nodes.iter().all(|n| n.state == NodeState::Active),
        "{c:?}"
    );
    // node-a's writer gives up: node-a stays listed, live and given up,
    // with no lease, and node-b takes every bucket (node-a is out of the
    // fair share).
    give_up.send(true).unwrap();
    let c = wait_for(
        "node-a given up, node-b holding everything",
        PATIENCE,
        || {
            read(|c| {
                c.nodes.len() == 2
                    && c.nodes[0].state == NodeState::GivenUp
                    && c.nodes[1].leases == 1024
            })
        },
    )
    .await;
    let a_row = &c.nodes[0];
    assert_eq!(a_row.id, "node-a");
    assert!(a_row.live, "it still heartbeats: {a_row:?}");
    assert_eq!((a_row.leases, a_row.held.len()), (0, 0), "{a_row:?}");
    assert!(a_row.started_at.is_some() && a_row.heartbeat_at.is_some());
    // Still heartbeating a few rounds later (not a leftover row).
    let first = a_row.heartbeat_at.clone();
    wait_for("node-a's heartbeat moves on", PATIENCE, || {
        let pool = pool.clone();
        let first = first.clone();
        async move {
            let c = status::read(&pool, "node-b", expiry).await.expect("read");
            (c.nodes[0].state == NodeState::GivenUp && c.nodes[0].heartbeat_at != first)
                .then_some(())
        }
    })
    .await;
    // Drained: node-a is active again and takes its share back.
    give_up.send(false).unwrap();
    wait_for("both active, 512 each again", PATIENCE, || {
        read(|c| {
            c.nodes.len() == 2
                && c.nodes
                    .iter()
                    .all(|n| n.state == NodeState::Active && n.leases == 512)
        })
    })
    .await;
    a.stop().await;
    b.stop().await;
}

/// A listener whose events arrive on a channel.
fn collect() -> (OnEvent, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let on: OnEvent = Arc::new(move |e| {
        let _ = tx.send(e);
        Box::pin(async {})
    });
    (on, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("an event in time")
        .expect("listener running")
}

#[tokio::test]
async fn notifications_reach_other_nodes_and_flow_again_after_a_restart() {
    let Some((mut pg, db)) = postgres().await else {
        return;
    };
    let pool = db.pool(2);
    let listener = Listener::connect(&db, "node-b").await.expect("listen");
    // Sent before the listener delivers: waits in its connection.
    let early = Wake::Service {
        id: ServiceId::new(1),
        name: "early".into(),
    };
    wake::notify(&pool, "node-a", &early).await.expect("notify");
    let (on, mut events) = collect();
    let cancel = CancellationToken::new();
    let task = listener.spawn(on, cancel.clone());
    assert_eq!(next(&mut events).await, Event::Wake(early));

    // Its own notification is skipped; another node's arrives, in order.
    let own = Wake::Service {
        id: ServiceId::new(2),
        name: "own".into(),
    };
    wake::notify(&pool, "node-b", &own).await.expect("notify");
    let ping = Wake::Ping {
        id: ServiceId::new(3),
        name: "backup".into(),
        ping: Ping::Exit(2),
        at: UnixMs::new(1_800_000_000_000),
        output: Some("disk full\n".into()),
    };
    wake::notify(&pool, "node-a", &ping).await.expect("notify");
    assert_eq!(next(&mut events).await, Event::Wake(ping));

    // PostgreSQL restarts: the listener reconnects and asks for a resync.
    pg.restart().await;
    assert_eq!(next(&mut events).await, Event::Resync);
    // Notifications flow again (the pool's old connections are broken:
    // retry until one goes through).
    let after = Wake::Service {
        id: ServiceId::new(4),
        name: "after".into(),
    };
    wait_for("a notification after the restart", PATIENCE, || {
        let (pool, after) = (pool.clone(), after.clone());
        async move { wake::notify(&pool, "node-a", &after).await.ok() }
    })
    .await;
    assert_eq!(next(&mut events).await, Event::Wake(after));
    cancel.cancel();
    task.await.expect("listener task ends cleanly");
}
