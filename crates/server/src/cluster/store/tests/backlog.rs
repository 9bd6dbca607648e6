//! A node cut off from PostgreSQL (SPEC 19, "Bad input and faults"),
//! against the testkit's throwaway server, stopped and started again: the
//! writer keeps accepting results into its bounded backlog and writes them
//! after reconnection; beyond the bound the node gives up its leases and
//! counts what it could not write. (That a lease manager cut off longer
//! than its expiry publishes nothing held is `tests/it/cluster.rs`,
//! `a_lease_manager_reconnects_after_postgresql_restarts_and_outages`.)

use super::*;
use crate::cluster::{LeaseConfig, LeaseManager};
use crate::metrics::PgWriterSeries;
use healthchecker_testkit::wait_for;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Far more than any wait here takes on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// How long recording a few thousand results may take: a writer that
/// waited on the dead database would never finish.
const PROMPTLY: Duration = Duration::from_secs(20);

/// A fresh connection of the test's own (the server was restarted).
fn connect(s: &PgStore) -> postgres::Client {
    postgres::Config::from(s.db().config().clone())
        .connect(postgres::NoTls)
        .expect("connect to the restarted server")
}

/// `(count, distinct times, first, last)` of a service's stored checks.
fn stored(s: &PgStore, id: ServiceId) -> (i64, i64, Option<i64>, Option<i64>) {
    let r = connect(s)
        .query_one(
            "SELECT count(*), count(DISTINCT at), min(at), max(at) FROM checks \
             WHERE service_id = $1",
            &[&id.get()],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

#[test]
fn a_queued_check_costs_a_bounded_amount_of_memory() {
    // docs/cluster.md sizes the default backlog (65,536 checks) at about
    // 20 MB: the boxed record plus its short strings.
    let size = std::mem::size_of::<CheckWrite>();
    assert!(size <= 256, "CheckWrite is {size} bytes");
    assert_eq!(PgWriterTiming::default().backlog, 65_536);
}

#[test]
fn a_cut_off_writer_keeps_accepting_results_and_writes_them_after_reconnection() {
    let Some(mut db) = db() else { return };
    let s = db.store.clone();
    let id = s.register(&spec("svc-x"), "h", 0, 10).unwrap().record.id;
    let b = Bucket::of("svc-x");
    own_bucket(&mut db.sql, b, 1);
    let (_held, held_rx) = watch::channel(held(&[(b, 1)]));
    let (stale_tx, mut stale_rx) = mpsc::unbounded_channel();
    let (give_up, give_up_rx) = watch::channel(false);
    let metrics = PgWriterSeries::default();
    let fence = PgFence {
        node: "a".into(),
        held: held_rx,
        stale: stale_tx,
        give_up: Arc::new(give_up),
        metrics: metrics.clone(),
    };
    let timing = PgWriterTiming {
        backlog: 50_000,
        ..PgWriterTiming::default()
    };
    let (writer, handle) = PgWriter::start(&s, Some(fence), timing);
    db._pg.stop();
    // More than the old bounded queue (32,768) held before `record`
    // waited, fewer than this backlog's bound.
    const N: i64 = 40_000;
    db._rt.block_on(async {
        tokio::time::timeout(PROMPTLY, async {
            for i in 0..N {
                handle
                    .record(check(
                        id,
                        1_000 + i,
                        CheckResult::Pass,
                        HealthState::Healthy,
                    ))
                    .await;
            }
        })
        .await
        .expect("record returns while PostgreSQL is down");
    });
    assert_eq!(handle.backlog(), N as usize);
    assert_eq!(metrics.backlog.get(), N);
    // The writer tried and failed: what `/health` reports.
    db._rt
        .block_on(wait_for("a failed commit", PATIENCE, || async {
            s.write_error().map(|_| ())
        }));
    assert!(!*give_up_rx.borrow(), "below the bound nothing is given up");

    db._rt.block_on(db._pg.restart());
    db._rt.block_on(async {
        tokio::time::timeout(PATIENCE, handle.flush())
            .await
            .expect("the backlog is written after reconnection")
    });
    assert_eq!(
        stored(&s, id),
        (N, N, Some(1_000), Some(1_000 + N - 1)),
        "every queued check is in the database"
    );
    assert_eq!(handle.backlog(), 0);
    assert_eq!(metrics.backlog.get(), 0);
    assert_eq!(metrics.dropped_stale.get(), 0);
    assert_eq!(metrics.dropped_full.get(), 0);
    assert!(stale_rx.try_recv().is_err(), "nothing was stale");
    assert!(s.write_error().is_none(), "the last write succeeded");
    drop(handle);
    writer.join();
}

#[test]
fn a_result_recorded_under_a_lease_since_lost_is_not_written_under_the_next_one() {
    let Some(mut db) = db() else { return };
    let s = db.store.clone();
    let id = s.register(&spec("svc-x"), "h", 0, 10).unwrap().record.id;
    let b = Bucket::of("svc-x");
    // The table as it is after the node lost the bucket and claimed it
    // again: epoch 2.
    own_bucket(&mut db.sql, b, 2);
    let (held_tx, held_rx) = watch::channel(held(&[(b, 1)]));
    let (stale_tx, mut stale_rx) = mpsc::unbounded_channel();
    let metrics = PgWriterSeries::default();
    let fence = PgFence {
        node: "a".into(),
        held: held_rx,
        stale: stale_tx,
        give_up: Arc::new(watch::channel(false).0),
        metrics: metrics.clone(),
    };
    let (writer, handle) = PgWriter::start(&s, Some(fence), PgWriterTiming::default());
    db._pg.stop();
    db._rt.block_on(async {
        // Checked under epoch 1, queued while the database is away…
        handle
            .record(check(id, 1_000, CheckResult::Fail, HealthState::Unhealthy))
            .await;
        // …the lease lost and claimed again (another node may have
        // written in between), then checked under epoch 2.
        held_tx.send(held(&[(b, 2)])).unwrap();
        handle
            .record(check(id, 2_000, CheckResult::Pass, HealthState::Healthy))
            .await;
    });
    db._rt.block_on(db._pg.restart());
    db._rt.block_on(async {
        tokio::time::timeout(PATIENCE, handle.flush())
            .await
            .expect("the backlog is written after reconnection")
    });
    assert_eq!(
        stored(&s, id),
        (1, 1, Some(2_000), Some(2_000)),
        "only the check of the current lease is written"
    );
    assert_eq!(metrics.dropped_stale.get(), 1);
    match stale_rx.try_recv() {
        Ok(FenceError::Stale { bucket, .. }) => assert_eq!(bucket, b),
        other => panic!("expected x's bucket reported stale: {other:?}"),
    }
    drop(handle);
    writer.join();
}

#[test]
fn beyond_its_backlog_a_node_gives_up_its_leases_and_counts_what_it_could_not_write() {
    let Some(mut db) = db() else { return };
    let s = db.store.clone();
    let id = s.register(&spec("svc-x"), "h", 0, 10).unwrap().record.id;
    let b = Bucket::of("svc-x");
    let (give_up, give_up_rx) = watch::channel(false);
    // A lease far longer than the test: a set emptied, or an epoch bumped,
    // within it is the giving up, not an expiry.
    let cfg = LeaseConfig {
        heartbeat: Duration::from_millis(200),
        expiry: Duration::from_secs(60),
        ..LeaseConfig::new("node-a", "node-a.test:8484")
    };
    let leases = db._rt.block_on(async {
        LeaseManager::new(s.db().pool(2), cfg)
            .give_up_when(give_up_rx.clone())
            .spawn(CancellationToken::new())
    });
    let held = leases.held();
    let first = db._rt.block_on(wait_for(
        "the lone node to hold x's bucket",
        PATIENCE,
        || {
            let h = held.borrow().epoch(b);
            async move { h }
        },
    ));
    let (stale_tx, _stale_rx) = mpsc::unbounded_channel();
    let metrics = PgWriterSeries::default();
    let fence = PgFence {
        node: "node-a".into(),
        held: held.clone(),
        stale: stale_tx,
        give_up: Arc::new(give_up),
        metrics: metrics.clone(),
    };
    let timing = PgWriterTiming {
        backlog: 8,
        ..PgWriterTiming::default()
    };
    let (writer, handle) = PgWriter::start(&s, Some(fence), timing);
    let record = |from: i64, n: i64| {
        db._rt.block_on(async {
            tokio::time::timeout(PROMPTLY, async {
                for i in from..from + n {
                    handle
                        .record(check(id, i, CheckResult::Pass, HealthState::Healthy))
                        .await;
                }
            })
            .await
            .expect("record never waits")
        })
    };
    record(1_000, 3);
    db._rt.block_on(handle.flush());
    assert_eq!(stored(&s, id).0, 3);

    db._pg.stop();
    // The backlog fills: the node gives up its leases at once.
    record(2_000, 8);
    assert!(*give_up_rx.borrow());
    assert_eq!(metrics.leases_given_up.get(), 1);
    db._rt.block_on(wait_for("nothing held", PATIENCE, || {
        let empty = held.borrow().is_empty();
        async move { empty.then_some(()) }
    }));
    // A result beyond the bound is refused and counted, not waited for.
    record(3_000, 2);
    assert_eq!(metrics.dropped_full.get(), 2);
    assert_eq!(handle.backlog(), 8);
    assert_eq!(metrics.backlog.get(), 8);

    db._rt.block_on(db._pg.restart());
    db._rt.block_on(async {
        tokio::time::timeout(PATIENCE, handle.flush())
            .await
            .expect("the backlog drains after reconnection")
    });
    // The queued checks are not lost silently: their leases were given up,
    // so the fencing dropped them as stale, and they are counted.
    assert_eq!(metrics.dropped_stale.get(), 8);
    assert_eq!(handle.backlog(), 0);
    assert_eq!(stored(&s, id).0, 3);
    // Drained: the node claims again, at a new epoch (the lease was
    // released, not renewed), and rejoins the node list.
    let again = db
        ._rt
        .block_on(wait_for("x's bucket claimed again", PATIENCE, || {
            let h = held.borrow().epoch(b);
            async move { h.filter(|e| *e > first) }
        }));
    assert!(again > first);
    assert!(!*give_up_rx.borrow());
    assert_eq!(metrics.leases_given_up.get(), 1);
    let mut sql = connect(&s);
    let row = sql
        .query_one(
            "SELECT owner, epoch FROM buckets WHERE bucket = $1",
            &[&i32::from(b.get())],
        )
        .unwrap();
    assert_eq!(
        (row.get::<_, Option<String>>(0), Epoch(row.get(1))),
        (Some("node-a".to_string()), again)
    );
    let nodes: i64 = sql
        .query_one(
            "SELECT count(*) FROM nodes WHERE id = 'node-a' AND given_up_at IS NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(nodes, 1, "listed, and no longer given up");
    // And its checks are written again.
    record(4_000, 1);
    db._rt.block_on(handle.flush());
    assert_eq!(stored(&s, id).0, 4);

    db._rt.block_on(leases.stop());
    drop(handle);
    writer.join();
}

#[test]
fn a_stopping_writer_gives_up_after_its_grace_period_while_postgresql_is_down() {
    // Issue 18: at shutdown the writer retried forever when PostgreSQL
    // was unreachable, so the daemon never exited.
    let Some(mut db) = db() else { return };
    let s = db.store.clone();
    let id = s.register(&spec("svc-x"), "h", 0, 10).unwrap().record.id;
    let b = Bucket::of("svc-x");
    own_bucket(&mut db.sql, b, 1);
    let (_held, held_rx) = watch::channel(held(&[(b, 1)]));
    let (stale_tx, _stale_rx) = mpsc::unbounded_channel();
    let metrics = PgWriterSeries::default();
    let fence = PgFence {
        node: "a".into(),
        held: held_rx,
        stale: stale_tx,
        give_up: Arc::new(watch::channel(false).0),
        metrics: metrics.clone(),
    };
    let (writer, handle) = PgWriter::start(&s, Some(fence), PgWriterTiming::default());
    db._pg.stop();
    const N: i64 = 300;
    db._rt.block_on(async {
        for i in 0..N {
            handle
                .record(check(
                    id,
                    1_000 + i,
                    CheckResult::Pass,
                    HealthState::Healthy,
                ))
                .await;
        }
    });
    db._rt
        .block_on(wait_for("a failed commit", PATIENCE, || async {
            s.write_error().map(|_| ())
        }));
    // The daemon stops: a grace period of 1 s, then nothing is retried.
    let grace = Duration::from_secs(1);
    let stopping = Instant::now();
    handle.stop_retrying_after(grace);
    db._rt.block_on(async {
        tokio::time::timeout(PROMPTLY, handle.flush())
            .await
            .expect("a flush answers once the grace period is over")
    });
    // A result recorded after the deadline is tried once, not retried.
    db._rt.block_on(handle.record(check(
        id,
        1_000 + N,
        CheckResult::Pass,
        HealthState::Healthy,
    )));
    drop(handle);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        writer.join();
        let _ = done_tx.send(());
    });
    done_rx
        .recv_timeout(PROMPTLY)
        .expect("the writer thread ends although PostgreSQL is down");
    let took = stopping.elapsed();
    assert!(took >= grace, "retried for the grace period: {took:?}");
    assert!(took < PROMPTLY, "{took:?}");
    assert_eq!(
        metrics.dropped_shutdown.get(),
        N as u64 + 1,
        "every result left unwritten is counted"
    );
    assert_eq!(metrics.backlog.get(), 0);
}
