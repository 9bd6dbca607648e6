//! What the history costs on disk (SPEC section 18): the steady state of
//! an installation measured with SQLite's `dbstat`, and roll-up rows
//! written flush by flush (docs/storage.md, "Disk needed").

use super::history_tests::*;
use super::*;
use healthchecker_core::{CheckResult, ServiceId};

/// Steady state of one installation, measured with SQLite's `dbstat`
/// (docs/storage.md quotes it): every service with its newest 100 checks,
/// 30 days of hourly and 400 of daily roll-ups. Prints bytes per row and
/// per service, as written and after `VACUUM`, with service ids as the
/// first 200 services have them (1 or 2 bytes in a key) and as at 100,000
/// services (3 bytes); fails if a service needs more than SPEC section
/// 18's budget, 50 KB (5 GB for 100,000).
#[test]
fn steady_state_bytes_per_service() {
    for first_id in [1, 100_001] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("x.db")).unwrap();
        let n = 200i64;
        for i in 0..n {
            register(&store, &format!("service-{i:05}"));
        }
        let now = 1_764_000_000_000i64;
        let rest = |from: usize| vec!["0"; super::rollup::BUCKETS - from].join(", ");
        store
            .with_writer(|c| {
                c.execute(
                    "UPDATE services SET id = id - 1 + ?1",
                    [first_id],
                )?;
                // Interleaved as the writer appends them: one check of every
                // service per 30 s round, 4-6 ms, HTTP 200.
                c.execute(
                    "WITH RECURSIVE r(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM r WHERE k < 99) \
                     INSERT INTO checks (service_id, at, duration_us, result, http_status, prev_id, seq) \
                     SELECT s.id, ?1 + r.k * 30000 + s.id, 4000 + (s.id * 7 + r.k * 13) % 2000, 'pass', 200, \
                       NULL, r.k + 1 FROM r, services s ORDER BY r.k, s.id",
                    [now - 100 * 30_000],
                )?;
                // 120 checks an hour, one failing, in two buckets; 2,880 a
                // day, four failing and one warning, in three.
                c.execute(
                    &format!(
                        "WITH RECURSIVE r(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM r WHERE k < 720) \
                         INSERT INTO uptime (hour, service_id, roll) \
                         SELECT ?1 - r.k, s.id, hc_roll_pack(120, 1, 0, 120, 3900 + r.k % 100, \
                           120 * 5012, 9000 + r.k, 0, 118, 2, {}) \
                         FROM r, services s ORDER BY r.k DESC, s.id",
                        rest(3)
                    ),
                    [now / HOUR],
                )?;
                c.execute(
                    &format!(
                        "WITH RECURSIVE r(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM r WHERE k < 400) \
                         INSERT INTO uptime_day (day, service_id, roll) \
                         SELECT ?1 - r.k, s.id, hc_roll_pack(2880, 4, 1, 2880, 3800 + r.k % 100, \
                           2880 * 5012, 41000 + r.k, 0, 2830, 48, 2, {}) \
                         FROM r, services s ORDER BY r.k DESC, s.id",
                        rest(4)
                    ),
                    [now / DAY],
                )
            })
            .unwrap();
        let bytes = |names: &str| -> i64 {
            store
                .with_reader(|c| {
                    c.query_row(
                        &format!("SELECT SUM(pgsize) FROM dbstat WHERE name IN ({names})"),
                        [],
                        |r| r.get(0),
                    )
                })
                .unwrap()
        };
        // As written (in the writer's order: period by period, services in id
        // order within one), then packed by VACUUM.
        let mut totals = Vec::new();
        for packed in [false, true] {
            if packed {
                store.with_writer(|c| c.execute_batch("VACUUM")).unwrap();
            }
            let (raw, hourly, daily, services) = (
                bytes("'checks'"),
                bytes("'uptime'"),
                bytes("'uptime_day'"),
                bytes("'services', 'sqlite_autoindex_services_1'"),
            );
            let per = |b: i64, rows: i64| b as f64 / (n * rows) as f64;
            let total = (raw + hourly + daily + services) / n;
            println!(
                "ids from {first_id}, {}: bytes per row: check {:.1}, hourly {:.1}, daily {:.1}; \
                 per service: {} (services row {:.0})",
                if packed { "vacuumed" } else { "as written" },
                per(raw, 100),
                per(hourly, 720),
                per(daily, 400),
                total,
                per(services, 1)
            );
            totals.push(total);
        }
        assert!(totals[0] <= 50_000, "{} bytes per service", totals[0]);
    }
}

/// The writer's roll-up flush (`rollup::write_rolls`) for 20,000 services:
/// one hourly and one daily row each, first inserted, then added to (the
/// upsert's merge). Prints the cost per row (compare builds with
/// `--nocapture`; not a timed assertion); checks the rows add up.
#[test]
fn rollup_flush_adds_to_the_stored_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("x.db")).unwrap();
    let n = 20_000i64;
    let at = 1_764_000_000_000i64;
    store
        .with_writer(|c| {
            c.execute(
                "WITH RECURSIVE r(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM r WHERE k < ?1) \
                 INSERT INTO services (id, name, protocol, host, port, path, emails, timeout, \
                   interval, unhealthy_threshold, healthy_threshold, expected_status, tls_verify, \
                   cert_warn_days, token_hash, state_since, created_at, updated_at) \
                 SELECT k, 's' || k, 'http', 'h', 80, '/', '[]', 5, 30, 2, 2, '200-399', 1, 14, \
                   'x', 0, 0, 0 FROM r",
                [n],
            )
            .map(|_| ())
        })
        .unwrap();
    let mut rolls = std::collections::HashMap::new();
    for id in 1..=n {
        let r: &mut super::rollup::Roll = rolls.entry((id, at / HOUR)).or_default();
        r.add(CheckResult::Pass, 4_000 + id % 2_000);
        r.add(CheckResult::Fail, 30_000);
    }
    for round in ["insert", "merge"] {
        let t = std::time::Instant::now();
        store
            .with_writer(|c| {
                let tx = c.transaction()?;
                super::rollup::write_rolls(&tx, &rolls)?;
                tx.commit()
            })
            .unwrap();
        let per_row = t.elapsed().as_secs_f64() * 1e6 / (2 * n) as f64;
        println!(
            "rollup flush, {round}: {per_row:.2} µs per row ({} rows)",
            2 * n
        );
    }
    for id in [1, n / 2, n] {
        let h = store
            .rollups(ServiceId::new(id), false, at / HOUR, at / HOUR)
            .unwrap();
        let d = store
            .rollups(ServiceId::new(id), true, at / DAY, at / DAY)
            .unwrap();
        assert_eq!((h[0].count, h[0].failures), (4, 2), "{id}");
        assert_eq!((d[0].count, d[0].failures), (4, 2), "{id}");
        assert_eq!(h[0].latency_max_us, Some(30_000));
    }
}

/// Roll-up rows as the writer leaves them: 200 services, each flush adding
/// 10 checks of every service to the current hour's and day's rows, 12
/// flushes an hour for 50 hours, so rows grow in place (their varints get
/// longer) and pages split as they would. Prints the bytes per row of the
/// finished hours and days (compare `steady_state_bytes_per_service`, which
/// inserts the finished rows at once); fails above 40 bytes per hourly row.
/// A larger run for docs/storage.md: `HC_ROLLUP_SERVICES=2000
/// HC_ROLLUP_HOURS=96 cargo test --release -p healthchecker-server --lib
/// flush_by_flush -- --nocapture`.
#[test]
fn rollups_written_flush_by_flush_stay_small() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("x.db")).unwrap();
    let n: i64 = std::env::var("HC_ROLLUP_SERVICES").map_or(200, |v| v.parse().unwrap());
    for i in 0..n {
        register(&store, &format!("service-{i:05}"));
    }
    let start = 1_764_000_000_000i64 / DAY * DAY;
    let hours: i64 = std::env::var("HC_ROLLUP_HOURS").map_or(50, |v| v.parse().unwrap());
    for flush in 0..hours * 12 {
        let at = start + flush * 5 * 60_000;
        let mut rolls = std::collections::HashMap::new();
        for id in 1..=n {
            let r: &mut super::rollup::Roll = rolls.entry((id, at / HOUR)).or_default();
            for k in 0..10 {
                let result = if (flush + k + id) % 97 == 0 {
                    CheckResult::Fail
                } else {
                    CheckResult::Pass
                };
                r.add(result, 4_000 + (id * 7 + flush * 13 + k) % 2_000);
            }
        }
        store
            .with_writer(|c| {
                let tx = c.transaction()?;
                super::rollup::write_rolls(&tx, &rolls)?;
                tx.commit()
            })
            .unwrap();
    }
    let per_row = |table: &str| -> f64 {
        store
            .with_reader(|c| {
                c.query_row(
                    &format!(
                        "SELECT (SELECT SUM(pgsize) FROM dbstat WHERE name = '{table}') * 1.0 / \
                         (SELECT COUNT(*) FROM {table})"
                    ),
                    [],
                    |r| r.get(0),
                )
            })
            .unwrap()
    };
    let (hourly, daily) = (per_row("uptime"), per_row("uptime_day"));
    println!("written flush by flush: bytes per row: hourly {hourly:.1}, daily {daily:.1}");
    assert_eq!(
        store
            .rollups(S1, false, start / HOUR, start / HOUR)
            .unwrap()[0]
            .count,
        12 * 10
    );
    assert_eq!(
        store.rollups(S1, true, start / DAY, start / DAY).unwrap()[0].count,
        24 * 12 * 10
    );
    assert!(hourly <= 40.0, "{hourly} bytes per hourly row");
}
