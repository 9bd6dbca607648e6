//! The writer's commit policy: plain checks held (and read) before they
//! commit, state changes committed at once, everything at flush and
//! shutdown, and what start-up repairs from a file a `kill -9` left.

use super::super::tests::{check, commit_at_once, mailing, spec, wait_until};
use super::super::Store;
use super::{Writer, WriterTiming};
use healthchecker_core::{CheckResult, HealthState, ServiceId};
use rusqlite::Connection;
use std::time::Duration;

/// Timing where nothing commits by time within a test (plain checks wait
/// an hour), so that only a state change, a flush or a shutdown commits.
fn hold_for_an_hour() -> WriterTiming {
    WriterTiming {
        plain_every: Duration::from_secs(3600),
        snapshot_every: Duration::from_secs(3600),
        rollup_every: Duration::from_secs(3600),
        ..WriterTiming::default()
    }
}

/// A count straight from the file, through a connection of its own.
fn count(path: &std::path::Path, sql: &str) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

fn register(store: &Store, name: &str) -> ServiceId {
    store
        .register(&spec(name, 30), "h", 0, usize::MAX)
        .unwrap()
        .record
        .id
}

#[tokio::test]
async fn a_plain_check_is_read_before_it_commits_and_committed_by_flush() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let store = Store::open(&path).unwrap();
    let id = register(&store, "a");
    let (writer, handle) = Writer::start_with(&store, hold_for_an_hour());
    let mut c = check(id, 5_000, CheckResult::Warn, HealthState::Healthy);
    c.successes = 7;
    c.failures = 0;
    handle.record(c).await;
    wait_until("the held check never showed in the service read", || {
        store
            .get_service("a")
            .unwrap()
            .is_some_and(|r| r.last_check.is_some_and(|l| l.at == 5_000))
    })
    .await;
    let rec = store.get_service("a").unwrap().unwrap();
    assert_eq!(rec.successes, 7);
    assert_eq!(rec.last_check.as_ref().unwrap().result, CheckResult::Warn);
    assert_eq!(rec.last_failure_reason.as_deref(), Some("HTTP 503"));
    assert_eq!(rec.last_healthy_at, Some(5_000));
    // The list and the dashboard's reads show it too.
    let listed = store.load_all().unwrap();
    assert_eq!(listed[0].last_check.as_ref().unwrap().at, 5_000);
    let page = store
        .list_services_ordered(
            &super::super::ServiceFilter::default(),
            super::super::ServiceOrder::State,
        )
        .unwrap();
    assert_eq!(page[0].successes, 7);
    // The recent-checks reads show it, with the id it will have.
    let held = store.checks(id, 10).unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].at, 5_000);
    assert_eq!(held[0].http_status, Some(503));
    let recent = store.recent_checks_of(&[id], 50).unwrap();
    assert_eq!(recent[&id].len(), 1);
    // Its uptime too (a warning counts as up), from the writer's roll-ups.
    assert_eq!(
        store.uptime_ratios(&[id], 5_000).unwrap()[&id].day,
        Some(1.0)
    );
    assert_eq!(store.rollups(id, true, 0, 0).unwrap()[0].warns, 1);
    // Nothing of it is in the file yet.
    assert_eq!(count(&path, "SELECT COUNT(*) FROM checks"), 0);
    assert_eq!(count(&path, "SELECT COUNT(last_check_at) FROM services"), 0);
    handle.flush().await;
    assert_eq!(count(&path, "SELECT COUNT(*) FROM checks"), 1);
    assert_eq!(
        count(&path, "SELECT last_check_at FROM services WHERE name = 'a'"),
        5_000
    );
    assert_eq!(
        count(&path, "SELECT id FROM checks"),
        held[0].id,
        "committed under the id it was shown with"
    );
    let after = store.checks(id, 10).unwrap();
    assert_eq!(after, held);
    assert_eq!(
        count(&path, "SELECT COUNT(*) FROM uptime_day"),
        1,
        "the flush wrote the roll-ups"
    );
    assert_eq!(
        store.rollups(id, true, 0, 0).unwrap()[0].count,
        1,
        "counted once"
    );
    drop(handle);
    writer.join();
}

#[tokio::test]
async fn a_state_change_commits_at_once_with_the_plain_checks_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let store = Store::open(&path).unwrap();
    let id = register(&store, "a");
    let other = register(&store, "b");
    let (writer, handle) = Writer::start_with(&store, hold_for_an_hour());
    handle
        .record(check(other, 1_000, CheckResult::Pass, HealthState::Healthy))
        .await;
    handle
        .record(check(id, 1_500, CheckResult::Fail, HealthState::Healthy))
        .await;
    let change = check(id, 2_000, CheckResult::Fail, HealthState::Unhealthy);
    handle
        .record(mailing(change, HealthState::Healthy, 0, "a", 2_000))
        .await;
    // No flush: the state change alone makes the writer commit.
    wait_until("the state change never committed", || {
        count(&path, "SELECT COUNT(*) FROM events WHERE kind = 'state'") == 1
    })
    .await;
    assert_eq!(count(&path, "SELECT COUNT(*) FROM notifications"), 1);
    assert_eq!(
        count(&path, "SELECT COUNT(*) FROM checks"),
        3,
        "everything held before it commits with it"
    );
    assert_eq!(
        count(
            &path,
            "SELECT COUNT(*) FROM services WHERE name = 'a' AND state = 'unhealthy' \
             AND state_since = 2000 AND last_check_at = 2000"
        ),
        1
    );
    // Seen by a second store on the same file.
    let second = Store::open(&path).unwrap();
    let ats: Vec<i64> = second
        .checks(id, 10)
        .unwrap()
        .iter()
        .map(|c| c.at)
        .collect();
    assert_eq!(ats, vec![2_000, 1_500]);
    drop(second);
    drop(handle);
    writer.join();
}

#[tokio::test]
async fn shutdown_commits_the_held_plain_checks_and_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let store = Store::open(&path).unwrap();
    let id = register(&store, "a");
    let (writer, handle) = Writer::start_with(&store, hold_for_an_hour());
    for i in 0..20 {
        handle
            .record(check(
                id,
                1_000 * (i + 1),
                CheckResult::Pass,
                HealthState::Healthy,
            ))
            .await;
    }
    // No flush: the last handle goes, the thread commits and exits.
    drop(handle);
    writer.join();
    assert_eq!(count(&path, "SELECT COUNT(*) FROM checks"), 20);
    assert_eq!(
        count(&path, "SELECT last_check_at FROM services WHERE name = 'a'"),
        20_000
    );
    let total: i64 = store
        .rollups(id, false, 0, 1)
        .unwrap()
        .iter()
        .map(|r| r.count)
        .sum();
    assert_eq!(total, 20, "the roll-ups went with them");
}

#[tokio::test]
async fn a_kill_with_an_old_snapshot_neither_loses_nor_double_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let store = Store::open(&path).unwrap();
    let ids: Vec<ServiceId> = (0..5).map(|i| register(&store, &format!("s{i}"))).collect();
    // Checks commit at once; the service rows and roll-ups wait an hour.
    let (writer, handle) = Writer::start_with(&store, commit_at_once());
    for round in 0..4i64 {
        for id in &ids {
            let result = if round == 3 {
                CheckResult::Fail
            } else {
                CheckResult::Pass
            };
            handle
                .record(check(
                    *id,
                    1_000 * (round + 1),
                    result,
                    HealthState::Healthy,
                ))
                .await;
        }
    }
    wait_until("checks never committed", || {
        count(&path, "SELECT COUNT(*) FROM checks") == 20
    })
    .await;
    // The file a `kill -9` would leave now.
    let crashed = dir.path().join("crashed.db");
    store
        .with_reader(|c| c.execute("VACUUM INTO ?1", [crashed.to_str().unwrap()]))
        .unwrap();
    drop(handle);
    writer.join();
    assert_eq!(
        count(&crashed, "SELECT COUNT(last_check_at) FROM services"),
        0,
        "the rows wait for the snapshot"
    );
    assert_eq!(count(&crashed, "SELECT COUNT(*) FROM uptime"), 0);
    for _ in 0..2 {
        let copy = Store::open(&crashed).unwrap();
        for id in &ids {
            let hour: i64 = copy
                .rollups(*id, false, 0, 1)
                .unwrap()
                .iter()
                .map(|r| r.count)
                .sum();
            assert_eq!(hour, 4, "start-up folds each committed check once");
        }
        let rec = copy.get_service("s2").unwrap().unwrap();
        let last = rec.last_check.unwrap();
        assert_eq!((last.at, last.result), (4_000, CheckResult::Fail));
        assert_eq!(rec.last_failure_reason.as_deref(), Some("HTTP 503"));
        let ats: Vec<i64> = copy
            .checks(ids[2], 10)
            .unwrap()
            .iter()
            .map(|c| c.at)
            .collect();
        assert_eq!(ats, vec![4_000, 3_000, 2_000, 1_000]);
    }
}

/// How long start-up takes to repair a file a `kill -9` left one snapshot
/// period after the last snapshot, at 100,000 services: `HC_RECOVER_CHECKS`
/// checks (default 1,000,000: 5 minutes at 3,333 checks/s) above both
/// marks. For choosing `SNAPSHOT_EVERY`; run with
/// `cargo test --release -p healthchecker-server --lib recovery_time -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn recovery_time_after_a_kill() {
    let checks: i64 = std::env::var("HC_RECOVER_CHECKS").map_or(1_000_000, |v| v.parse().unwrap());
    let services: i64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    drop(Store::open(&path).unwrap());
    {
        let mut c = Connection::open(&path).unwrap();
        let tx = c.transaction().unwrap();
        tx.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
             INSERT INTO services (id, name, protocol, host, port, path, emails, timeout, interval, \
               unhealthy_threshold, healthy_threshold, expected_status, tls_verify, cert_warn_days, \
               token_hash, state_since, created_at, updated_at) \
             SELECT i, 's' || i, 'http', 'h', 80, '/', '[]', 5, 30, 2, 2, '200-399', 1, 14, 'x', 0, 0, 0 \
             FROM n",
            [services],
        )
        .unwrap();
        tx.execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?1 - 1) \
             INSERT INTO checks (id, service_id, at, duration_us, result, http_status, prev_id, seq) \
             SELECT i + 1, i % ?2 + 1, 1800000000000 + i * 3 / 10, 4000 + i % 1000, \
               CASE WHEN i % 50 = 0 THEN 'fail' ELSE 'pass' END, 200, \
               CASE WHEN i >= ?2 THEN i + 1 - ?2 END, i / ?2 + 1 FROM n",
            [checks, services],
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let t = std::time::Instant::now();
    let store = Store::open(&path).unwrap();
    let open = t.elapsed();
    let t = std::time::Instant::now();
    let all = store.load_all().unwrap();
    let load = t.elapsed();
    assert_eq!(all.len() as i64, services);
    assert!(all.iter().all(|r| r.last_check.is_some()));
    println!(
        "{checks} checks above the marks, {services} services: open (recovery) {open:?}, load_all {load:?}"
    );
}

/// SPEC section 18's ≤ 200 bytes of WAL per check, for a home lab: 50
/// services at 30 s for two hours of check times, committed as the
/// writer's periods would (at 1.7 checks a second, `PLAIN_EVERY` = 120 s
/// holds 200 checks: here `max_batch` = 200; the snapshot and roll-ups
/// every 5 minutes, 500 checks: here a flush every 500). The WAL bytes are
/// the writer connection's own count (`Store::wal_bytes`). Prints the
/// figure (`--nocapture`): 157 bytes (with 100 checks a commit, i.e. a
/// 60 s period, it was 198, of which 150 the plain commits alone).
#[tokio::test]
async fn a_home_lab_writes_under_200_bytes_of_wal_per_check() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("x.db")).unwrap();
    let ids: Vec<ServiceId> = (0..50)
        .map(|i| register(&store, &format!("service {i}")))
        .collect();
    let timing = WriterTiming {
        max_batch: 200,
        ..hold_for_an_hour()
    };
    let (writer, handle) = Writer::start_with(&store, timing);
    let start = store.wal_bytes();
    let t0 = 1_800_000_000_000i64;
    let rounds = 240;
    for round in 0..rounds {
        for (i, id) in ids.iter().enumerate() {
            let mut c = check(
                *id,
                t0 + round * 30_000 + i as i64 * 600,
                CheckResult::Pass,
                HealthState::Healthy,
            );
            c.duration_us = 2_000 + (round * 37 + i as i64 * 91) % 9_000;
            c.successes = 2;
            c.failures = 0;
            handle.record(c).await;
        }
        if round % 10 == 9 {
            handle.flush().await;
        }
    }
    handle.flush().await;
    let checks = rounds * ids.len() as i64;
    let per_check = (store.wal_bytes() - start) as f64 / checks as f64;
    println!("home lab: {per_check:.0} bytes of WAL per check over {checks} checks");
    assert!(per_check <= 200.0, "{per_check:.0} bytes of WAL per check");
    drop(handle);
    writer.join();
}
