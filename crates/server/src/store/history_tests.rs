//! Retention, roll-ups, uptime windows and the history migration (SPEC
//! section 18), on an injected clock: the store functions take `now`, so
//! days pass in milliseconds.

use super::tests::{beyond_the_snapshot, record_all, spec_of, two_services_at_version, wait_until};
use super::*;
use crate::store::writer::{TransitionWrite, Writer};
use healthchecker_core::{CheckResult, HealthState, ServiceId, ServiceSpec, UnixMs};
use rusqlite::params;

pub(super) const HOUR: i64 = 3_600_000;
pub(super) const DAY: i64 = 24 * HOUR;

/// Services 1 and 2 (the ids of the first two registrations).
pub(super) const S1: ServiceId = ServiceId::new(1);
pub(super) const S2: ServiceId = ServiceId::new(2);

pub(super) fn spec(name: &str) -> ServiceSpec {
    let body =
        serde_json::json!({"name": name, "url": "http://127.0.0.1:9/health", "interval": 30});
    spec_of(&body)
}

pub(super) fn check(
    id: impl Into<ServiceId>,
    at: i64,
    result: CheckResult,
    duration_us: i64,
) -> CheckWrite {
    CheckWrite {
        duration_us,
        http_status: None,
        failures: 0,
        ..super::tests::check(id, at, result, HealthState::Healthy)
    }
}

pub(super) fn changed(mut c: CheckWrite) -> CheckWrite {
    c.transition = Some(TransitionWrite {
        from: HealthState::Unhealthy,
        previous_since: UnixMs::EPOCH,
        notify: None,
    });
    c
}

pub(super) fn register(store: &Store, name: &str) -> ServiceId {
    store
        .register(&spec(name), "h", 0, usize::MAX)
        .unwrap()
        .record
        .id
}

/// `at` of every stored check of a service, oldest first.
pub(super) fn stored(store: &Store, id: ServiceId) -> Vec<i64> {
    store
        .with_reader(|c| {
            c.prepare("SELECT at FROM checks WHERE service_id = ?1 ORDER BY id")?
                .query_map([id], |r| r.get(0))?
                .collect()
        })
        .unwrap()
}

/// Checks counted in `table`'s packed rows (of one service, or all).
pub(super) fn total_in(
    c: &Connection,
    table: &str,
    id: Option<ServiceId>,
) -> rusqlite::Result<i64> {
    let mut stmt = c.prepare(&format!(
        "SELECT roll FROM {table} WHERE ?1 IS NULL OR service_id = ?1"
    ))?;
    let rolls = stmt.query_map([id], |r| r.get::<_, Vec<u8>>(0))?;
    let mut total = 0;
    for b in rolls {
        let r = super::rollup::decode(&b?).expect("a packed roll");
        total += r.rollup(0).count;
    }
    Ok(total)
}

pub(super) fn hour_total(store: &Store, id: ServiceId) -> i64 {
    store
        .with_reader(|c| total_in(c, "uptime", Some(id)))
        .unwrap()
}

#[tokio::test]
async fn retention_keeps_the_last_n_and_a_weeks_failures_and_state_changes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("x.db")).unwrap();
    store.set_keep_checks(10);
    let id = register(&store, "a");
    let few = register(&store, "few");
    let now = 100 * DAY;
    let p = CheckResult::Pass;
    let mut all = Vec::new();
    // Eight days ago: a failure, a state change, passes.
    let old = now - 8 * DAY;
    all.push(check(id, old, CheckResult::Fail, 1));
    all.push(changed(check(id, old + 1, p, 1)));
    all.extend((2..30).map(|i| check(id, old + i, p, 1)));
    // Yesterday: a failure, a warning, a state change, passes.
    let recent = now - DAY;
    all.push(check(id, recent, CheckResult::Fail, 1));
    all.push(check(id, recent + 1, CheckResult::Warn, 1));
    all.push(changed(check(id, recent + 2, p, 1)));
    all.extend((3..30).map(|i| check(id, recent + i, p, 1)));
    // The newest ten.
    all.extend((0..10).map(|i| check(id, now - 100 + i, p, 1)));
    all.extend((0..5).map(|i| check(few, old + i, CheckResult::Fail, 1)));
    record_all(&store, all).await;
    assert_eq!(stored(&store, id).len(), 70);

    let removed = store.prune(now).unwrap();
    assert_eq!(removed, 57);
    let mut expect = vec![recent, recent + 1, recent + 2];
    expect.extend((0..10).map(|i| now - 100 + i));
    assert_eq!(stored(&store, id), expect);
    // The history read is the newest ten, whole.
    let newest: Vec<i64> = store
        .checks(id, 100)
        .unwrap()
        .iter()
        .map(|c| c.at)
        .collect();
    assert_eq!(
        newest,
        (0..10).rev().map(|i| now - 100 + i).collect::<Vec<_>>()
    );
    // Fewer than N: all kept, however old.
    assert_eq!(stored(&store, few).len(), 5);
    // A week later the kept failures and state changes go; the newest ten stay.
    store.prune(now + 7 * DAY).unwrap();
    assert_eq!(stored(&store, id), expect[3..].to_vec());
    // The roll-ups still count every check.
    assert_eq!(hour_total(&store, id), 70);
}

#[tokio::test]
async fn rollups_count_failures_warnings_and_latency() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("x.db")).unwrap();
    let id = register(&store, "a");
    let t = 10 * DAY;
    let mut all: Vec<CheckWrite> = (0..95)
        .map(|i| check(id, t + i, CheckResult::Pass, 3_000))
        .collect();
    all.extend((0..3).map(|i| check(id, t + 100 + i, CheckResult::Fail, 40_000)));
    all.extend((0..2).map(|i| check(id, t + 200 + i, CheckResult::Warn, 150_000)));
    all.extend((0..10).map(|i| check(id, t + HOUR + i, CheckResult::Pass, 700_000)));
    record_all(&store, all).await;

    let hours = store
        .rollups(id, false, t / HOUR - 5, t / HOUR + 5)
        .unwrap();
    assert_eq!(
        hours,
        vec![
            Rollup {
                period: t / HOUR,
                count: 100,
                failures: 3,
                warns: 2,
                latency_min_us: Some(3_000),
                latency_mean_us: Some(7_050),
                latency_max_us: Some(150_000),
                // The 95th check is in the 2-5 ms bucket: its upper edge.
                latency_p95_us: Some(5_000),
            },
            Rollup {
                period: t / HOUR + 1,
                count: 10,
                failures: 0,
                warns: 0,
                latency_min_us: Some(700_000),
                latency_mean_us: Some(700_000),
                latency_max_us: Some(700_000),
                // The bucket's edge (1 s) clamped to the maximum.
                latency_p95_us: Some(700_000),
            },
        ]
    );
    let days = store.rollups(id, true, t / DAY - 5, t / DAY + 5).unwrap();
    assert_eq!(
        days,
        vec![Rollup {
            period: t / DAY,
            count: 110,
            failures: 3,
            warns: 2,
            latency_min_us: Some(3_000),
            latency_mean_us: Some((95 * 3_000 + 3 * 40_000 + 2 * 150_000 + 10 * 700_000) / 110),
            latency_max_us: Some(700_000),
            latency_p95_us: Some(700_000),
        }]
    );
    // Roll-ups older than their retention are pruned; younger ones stay.
    store.prune(t + 31 * DAY).unwrap();
    assert!(store
        .rollups(id, false, t / HOUR - 5, t / HOUR + 5)
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .rollups(id, true, t / DAY - 5, t / DAY + 5)
            .unwrap()
            .len(),
        1
    );
    store.prune(t + 401 * DAY).unwrap();
    assert!(store
        .rollups(id, true, t / DAY - 5, t / DAY + 5)
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn uptime_windows_are_read_from_the_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("x.db")).unwrap();
    let id = register(&store, "a");
    let quiet = register(&store, "quiet");
    let now = 200 * DAY + 12 * HOUR;
    let (p, f) = (CheckResult::Pass, CheckResult::Fail);
    let mut all = vec![check(id, now - HOUR, p, 1), check(id, now - HOUR, f, 1)];
    all.extend((0..2).map(|_| check(id, now - 3 * DAY, p, 1)));
    all.extend((0..4).map(|_| check(id, now - 20 * DAY, f, 1)));
    all.extend((0..8).map(|_| check(id, now - 60 * DAY, p, 1)));
    all.extend((0..100).map(|_| check(id, now - 100 * DAY, f, 1)));
    // Out of order on purpose: roll-ups do not care.
    all.reverse();
    record_all(&store, all).await;
    let up = store.uptime_ratios(&[id, quiet], now).unwrap();
    assert_eq!(
        up[&id],
        Uptime {
            day: Some(0.5),
            week: Some(0.75),
            month: Some(3.0 / 8.0),
            quarter: Some(11.0 / 16.0),
        }
    );
    assert_eq!(up[&quiet], Uptime::default());
}

#[tokio::test]
async fn a_crash_before_the_rollups_commit_neither_loses_nor_double_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let store = Store::open(&path).unwrap();
    // Plain checks commit at once, the roll-ups (and the snapshot) wait.
    let ids = beyond_the_snapshot(&store, spec);
    let n = ids.len() as i64;
    let (writer, handle) = Writer::start_with(&store, super::tests::commit_at_once());
    for round in 0..3 {
        for id in &ids {
            handle
                .record(check(*id, 1_000 * (round + 1), CheckResult::Pass, 1))
                .await;
        }
    }
    // Wait for the checks to commit, without a flush (which would force
    // the snapshot), and copy the committed state: the file a `kill -9`
    // would leave now.
    let count = || {
        store
            .with_reader(|c| c.query_row("SELECT COUNT(*) FROM checks", [], |r| r.get::<_, i64>(0)))
            .unwrap()
    };
    wait_until("checks never committed", || count() >= 3 * n).await;
    let crashed = dir.path().join("crashed.db");
    store
        .with_reader(|c| c.execute("VACUUM INTO ?1", [crashed.to_str().unwrap()]))
        .unwrap();
    handle.flush().await;
    drop(handle);
    writer.join();
    assert_eq!(hour_total(&store, ids[0]), 3);

    // The copy's roll-ups lack checks that its `checks` table holds.
    let rolled = total_in(&Connection::open(&crashed).unwrap(), "uptime", None).unwrap();
    assert!(rolled < 3 * n, "{rolled}");
    // Start-up folds the committed checks into the writer's overlay: reads
    // count them at once, before any roll-up commit.
    let read_total = |store: &Store, id: ServiceId| -> i64 {
        let hours = store.rollups(id, false, 0, 10).unwrap();
        hours.iter().map(|h| h.count).sum()
    };
    let copy = Store::open(&crashed).unwrap();
    assert!(
        ids.iter().all(|id| read_total(&copy, *id) == 3),
        "start-up folded the committed checks"
    );
    let up = copy.uptime_ratios(&ids[..1], 2_000).unwrap();
    assert_eq!(up[&ids[0]].day, Some(1.0));
    // A second crash before the writer wrote them: folded again from the
    // same mark, not twice.
    drop(copy);
    let copy = Store::open(&crashed).unwrap();
    assert!(ids.iter().all(|id| read_total(&copy, *id) == 3));
    // The writer's first roll-up commit writes them and moves the mark.
    let (writer, handle) = Writer::start_with(&copy, super::tests::commit_at_once());
    handle.flush().await;
    drop(handle);
    writer.join();
    assert!(ids.iter().all(|id| hour_total(&copy, *id) == 3));
    drop(copy);
    // Opening again counts nothing twice.
    let copy = Store::open(&crashed).unwrap();
    assert!(ids.iter().all(|id| read_total(&copy, *id) == 3));
    assert!(ids.iter().all(|id| hour_total(&copy, *id) == 3));
    let days = copy
        .with_reader(|c| total_in(c, "uptime_day", None))
        .unwrap();
    assert_eq!(days, 3 * n);
}

#[test]
fn a_version_6_database_turns_its_history_into_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let now = 50 * DAY;
    {
        let mut c = two_services_at_version(&path, 6);
        // Service 1: 300 checks over the last 150 minutes (one a half
        // minute), every tenth failing at 80 ms, the rest 4 ms; the first
        // one changed its state. Service 2: two checks.
        let tx = c.transaction().unwrap();
        for i in 0..300i64 {
            let fail = i % 10 == 0;
            tx.execute(
                "INSERT INTO checks (id, service_id, at, duration_us, result, prev_id, seq) \
                 VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    i + 1,
                    now - 150 * 60_000 + i * 30_000,
                    if fail { 80_000 } else { 4_000 },
                    if fail { "fail" } else { "pass" },
                    (i > 0).then_some(i),
                    i + 1
                ],
            )
            .unwrap();
        }
        tx.execute_batch(
            "INSERT INTO checks (id, service_id, at, duration_us, result, prev_id, seq) VALUES \
               (301, 2, 1000, 10, 'pass', NULL, 1), (302, 2, 2000, 10, 'fail', 301, 2); \
             UPDATE services SET last_check_id = 300, check_seq = 300 WHERE id = 1; \
             UPDATE services SET last_check_id = 302, check_seq = 2 WHERE id = 2; \
             UPDATE meta SET value = 302 WHERE key = 'heads_through';",
        )
        .unwrap();
        // The old buckets: the raw hours as counted, and an hour 20 days
        // ago whose checks are long gone.
        tx.execute(
            "INSERT INTO uptime (service_id, hour, ok, total) \
             SELECT service_id, at / 3600000, SUM(result != 'fail'), COUNT(*) FROM checks \
             GROUP BY service_id, at / 3600000",
            [],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO uptime (service_id, hour, ok, total) VALUES (1, ?1, 90, 120)",
            [(now - 20 * DAY) / HOUR],
        )
        .unwrap();
        tx.execute_batch(
            "INSERT INTO events (id, at, service_id, service, kind, from_state, to_state, check_id) \
               VALUES (1, 0, 1, 'a', 'state', 'unknown', 'unhealthy', 1); \
             INSERT INTO notifications (event_id, service_id, service, created_at, from_state, \
               to_state, target, recipients, status, next_attempt_at) \
               VALUES (1, 1, 'a', 0, 'unknown', 'unhealthy', 'http://h/', '[]', 'pending', 0);",
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let store = Store::open(&path).unwrap();
    // Every service, event and outbox row is kept.
    assert_eq!(store.load_all().unwrap().len(), 2);
    assert_eq!(store.events(Some("a"), 10).unwrap().len(), 1);
    assert_eq!(
        store
            .notifications(Some("pending"), None, 10)
            .unwrap()
            .len(),
        1
    );
    // The raw hours became full roll-ups; the old bucket kept its counts.
    let hours = store
        .rollups(S1, false, (now - 30 * DAY) / HOUR, now / HOUR)
        .unwrap();
    assert_eq!(hours[0].period, (now - 20 * DAY) / HOUR);
    assert_eq!((hours[0].count, hours[0].failures), (120, 30));
    assert_eq!(hours[0].latency_max_us, None);
    let raw: Vec<&Rollup> = hours[1..].iter().collect();
    assert_eq!(raw.iter().map(|h| h.count).sum::<i64>(), 300);
    assert_eq!(raw.iter().map(|h| h.failures).sum::<i64>(), 30);
    assert!(raw.iter().all(|h| h.latency_min_us == Some(4_000)
        && h.latency_max_us == Some(80_000)
        && h.latency_p95_us == Some(80_000)));
    let days = store.rollups(S1, true, 0, now / DAY).unwrap();
    assert_eq!(days.iter().map(|d| d.count).sum::<i64>(), 420);
    let up = store.uptime_ratios(&[S1, S2], now).unwrap();
    assert_eq!(up[&S1].day, Some(270.0 / 300.0));
    assert_eq!(up[&S1].month, Some((270.0 + 90.0) / 420.0));
    assert_eq!(up[&S2].day, None, "its checks are older than 24 h");
    assert_eq!(up[&S2].quarter, Some(0.5));
    // The first background prune keeps the newest 100 checks of a and the
    // failing and state-changing checks of the last week; b keeps both.
    store.prune(now).unwrap();
    let kept: Vec<i64> = store
        .with_reader(|c| {
            c.prepare("SELECT id FROM checks WHERE service_id = 1 ORDER BY id")?
                .query_map([], |r| r.get(0))?
                .collect()
        })
        .unwrap();
    let mut expect: Vec<i64> = (0..200).filter(|i| i % 10 == 0).map(|i| i + 1).collect();
    expect.extend(201..=300);
    assert_eq!(kept, expect);
    assert_eq!(store.checks(S2, 10).unwrap().len(), 2);
    assert_eq!(
        store
            .rollups(S1, false, (now - 30 * DAY) / HOUR, now / HOUR)
            .unwrap(),
        hours
    );
}

#[tokio::test]
async fn a_database_before_packing_keeps_every_rollup_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let now = 50 * DAY + 12 * HOUR;
    let (p, d) = (now / HOUR, now / DAY);
    let previous = super::schema::PACK_MIGRATION as i64 - 1;
    {
        let c = two_services_at_version(&path, previous);
        let cols = "service_id, ok, total, fails, warns, lat_n, lat_min, lat_sum, lat_max, \
                    h0, h1, h2, h3, h4, h5, h6, h7, h8, h9, h10, h11";
        // Hours of service 1: full statistics; a bucket migrated by
        // version 7 without latency; some checks without latency, some with.
        c.execute(
            &format!(
                "INSERT INTO uptime (hour, {cols}) VALUES \
                 (?1 - 1, 1, 119, 120, 1, 3, 120, 3900, 601440, 9000, 0, 118, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0), \
                 (?1 - 30, 1, 90, 120, 30, 0, 0, NULL, 0, NULL, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), \
                 (?1 - 2, 1, 100, 130, 30, 0, 10, 1000, 50000, 9000, 5, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0)"
            ),
            [p],
        )
        .unwrap();
        c.execute(
            &format!(
                "INSERT INTO uptime_day (day, {cols}) VALUES \
                 (?1, 1, 219, 250, 31, 3, 130, 1000, 651440, 9000, 5, 118, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0), \
                 (?1 - 20, 1, 900, 1000, 100, 0, 0, NULL, 0, NULL, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), \
                 (?1 - 60, 1, 50, 50, 0, 2, 50, 6000000, 350000000, 8000000, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 50), \
                 (?1 - 5, 2, 5, 10, 5, 0, 10, 10, 100, 10, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)"
            ),
            [d],
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let version: i64 = store
        .with_reader(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let columns: Vec<String> = store
        .with_reader(|c| {
            c.prepare("SELECT name FROM pragma_table_info('uptime_day')")?
                .query_map([], |r| r.get(0))?
                .collect()
        })
        .unwrap();
    assert_eq!(columns, ["day", "service_id", "roll"]);

    let row = |period, count, failures, warns, lat: Option<(i64, i64, i64, i64)>| Rollup {
        period,
        count,
        failures,
        warns,
        latency_min_us: lat.map(|l| l.0),
        latency_mean_us: lat.map(|l| l.1),
        latency_max_us: lat.map(|l| l.2),
        latency_p95_us: lat.map(|l| l.3),
    };
    assert_eq!(
        store.rollups(S1, false, p - 40, p).unwrap(),
        vec![
            row(p - 30, 120, 30, 0, None),
            // p95: the 10-20 ms bucket's edge, clamped to the maximum.
            row(p - 2, 130, 30, 0, Some((1_000, 5_000, 9_000, 9_000))),
            row(p - 1, 120, 1, 3, Some((3_900, 5_012, 9_000, 5_000))),
        ]
    );
    assert_eq!(
        store.rollups(S1, true, d - 90, d).unwrap(),
        vec![
            row(
                d - 60,
                50,
                0,
                2,
                Some((6_000_000, 7_000_000, 8_000_000, 8_000_000))
            ),
            row(d - 20, 1000, 100, 0, None),
            row(d, 250, 31, 3, Some((1_000, 651_440 / 130, 9_000, 9_000))),
        ]
    );
    assert_eq!(
        store.rollups(S2, true, d - 90, d).unwrap(),
        vec![row(d - 5, 10, 5, 0, Some((10, 10, 10, 10)))]
    );
    let up = store.uptime_ratios(&[S1, S2], now).unwrap();
    assert_eq!(
        up[&S1],
        Uptime {
            day: Some(219.0 / 250.0),
            week: Some(219.0 / 250.0),
            month: Some(1119.0 / 1250.0),
            quarter: Some(1169.0 / 1300.0),
        }
    );
    assert_eq!(
        up[&S2],
        Uptime {
            day: None,
            week: Some(0.5),
            month: Some(0.5),
            quarter: Some(0.5),
        }
    );
    // The writer adds to a packed row.
    let t = (p - 1) * HOUR;
    record_all(&store, vec![check(1, t, CheckResult::Fail, 50_000)]).await;
    let h = store.rollups(S1, false, p - 1, p - 1).unwrap();
    assert_eq!(
        h,
        vec![row(
            p - 1,
            121,
            2,
            3,
            Some((3_900, (601_440 + 50_000) / 121, 50_000, 5_000))
        )]
    );
    assert_eq!(store.rollups(S1, true, d, d).unwrap()[0].count, 251);
}
