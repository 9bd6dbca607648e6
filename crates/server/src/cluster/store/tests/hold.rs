//! What the writer thread holds (SPEC 18's ≤ 200 B of WAL a check,
//! cluster/store/writer.rs): service rows and roll-ups written once per
//! period, reads current on every node meanwhile, the checks above a
//! service's mark rolled up exactly once by whoever writes next (the same
//! node, a node that took the bucket over, or one restarted after a
//! crash), pruning keeping them, and the thread writing what it holds at
//! a flush and when it stops.

use super::*;

/// A plain check of `id` at `at` after which the service has `n`
/// consecutive successes (a pass) or failures (a fail).
fn plain(id: ServiceId, at: i64, result: CheckResult, n: u32) -> CheckWrite {
    // Failures below the threshold: the state stays healthy.
    let mut c = check(id, at, result, HealthState::Healthy);
    (c.successes, c.failures) = if result == CheckResult::Fail {
        (0, n)
    } else {
        (n, 0)
    };
    c
}

/// The row's own copy: `(successes, last_check_at, rolled_through)`.
fn row(db: &mut Db, id: ServiceId) -> (i64, Option<i64>, i64) {
    let r = db
        .sql
        .query_one(
            "SELECT successes, last_check_at, rolled_through FROM services WHERE id = $1",
            &[&id.get()],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

/// Checks counted in the `uptime` rows of a service (what is rolled up).
fn rolled(db: &mut Db, id: ServiceId) -> i64 {
    db.sql
        .query(
            "SELECT roll FROM uptime WHERE service_id = $1",
            &[&id.get()],
        )
        .unwrap()
        .iter()
        .map(|r| {
            crate::store::roll_pack::decode_counts(&r.get::<_, Vec<u8>>(0))
                .unwrap()
                .0
        })
        .sum()
}

/// Checks the reads count for a service over its hours.
fn counted(s: &PgStore, id: ServiceId, at: i64) -> i64 {
    let h = at / 3_600_000;
    s.rollups(id, false, h - 2, h + 2)
        .unwrap()
        .iter()
        .map(|r| r.count)
        .sum()
}

#[test]
fn held_rows_and_rollups_are_read_current_on_every_node_and_written_once_per_flush() {
    let Some(mut db) = db() else { return };
    let s = db.store.clone();
    // Another node's store on the same database.
    let other = PgStore::open(s.db()).unwrap();
    let id = s.register(&spec("svc"), "h", 0, 10).unwrap().record.id;
    let t = 1_700_000_000_000;
    let mut hold = Hold::default();
    for i in 0..3 {
        let w = s
            .write_held(
                None,
                &[plain(id, t + i * 1_000, CheckResult::Pass, i as u32 + 1)],
                &mut hold,
            )
            .unwrap();
        assert_eq!(w.checks, 1);
    }
    // Nothing of the row nor the roll-ups is written yet…
    assert_eq!(row(&mut db, id), (0, None, 0));
    assert_eq!(rolled(&mut db, id), 0);
    assert_eq!(hold.len(), 1);
    // …and every node reads them current, from the check rows.
    for store in [&s, &other] {
        let r = store.get_service("svc").unwrap().unwrap();
        assert_eq!(r.last_check.as_ref().map(|l| l.at), Some(t + 2_000));
        assert_eq!((r.successes, r.failures), (3, 0));
        let listed = store.list_services(&ServiceFilter::default()).unwrap();
        assert_eq!(listed[0].successes, 3);
        assert_eq!(counted(store, id, t), 3);
        let u = store.uptime_ratios(&[id], t + 3_000).unwrap()[&id];
        assert_eq!(u.day, Some(1.0));
    }
    // A failing check with a new reason writes the row at once (every
    // node reads the last failure reason from it).
    s.write_held(
        None,
        &[plain(id, t + 3_000, CheckResult::Fail, 1)],
        &mut hold,
    )
    .unwrap();
    let r = db
        .sql
        .query_one(
            "SELECT last_failure_reason, failures, rolled_through FROM services WHERE id = $1",
            &[&id.get()],
        )
        .unwrap();
    assert_eq!(
        (
            r.get::<_, Option<String>>(0),
            r.get::<_, i64>(1),
            r.get::<_, i64>(2)
        ),
        (Some("HTTP 503".into()), 1, 0)
    );
    let r = other.get_service("svc").unwrap().unwrap();
    assert_eq!((r.successes, r.failures), (0, 1));
    // The same reason again does not.
    s.write_held(
        None,
        &[plain(id, t + 4_000, CheckResult::Fail, 2)],
        &mut hold,
    )
    .unwrap();
    assert_eq!(
        db.count("SELECT failures FROM services WHERE name = 'svc'"),
        1
    );
    assert_eq!(other.get_service("svc").unwrap().unwrap().failures, 2);
    assert_eq!(counted(&other, id, t), 5);

    // Not due yet: nothing written.
    let long_ago = std::time::Instant::now() - Duration::from_secs(3_600);
    assert_eq!(s.flush_held(None, &mut hold, Some(long_ago)).unwrap(), 0);
    assert_eq!(rolled(&mut db, id), 0);
    // Flushed: the row and the roll-ups, the mark at the newest check.
    assert_eq!(s.flush_held(None, &mut hold, None).unwrap(), 1);
    let newest = db.count("SELECT max(id) FROM checks");
    let r = db
        .sql
        .query_one(
            "SELECT failures, last_check_at, rolled_through, last_check_id FROM services \
             WHERE id = $1",
            &[&id.get()],
        )
        .unwrap();
    assert_eq!(
        (
            r.get::<_, i64>(0),
            r.get::<_, Option<i64>>(1),
            r.get::<_, i64>(2),
            r.get::<_, Option<i64>>(3)
        ),
        (2, Some(t + 4_000), newest, Some(newest))
    );
    assert_eq!(rolled(&mut db, id), 5);
    // Reads count each check once, before and after.
    assert_eq!(counted(&other, id, t), 5);
    assert_eq!(other.get_service("svc").unwrap().unwrap().failures, 2);
    assert!(hold.is_empty());
    assert_eq!(s.flush_held(None, &mut hold, None).unwrap(), 0);
}

#[test]
fn checks_above_the_mark_are_rolled_up_exactly_once_after_a_crash_or_a_takeover() {
    let Some(mut db) = db() else { return };
    let s = db.store.clone();
    let id = s.register(&spec("svc-x"), "h", 0, 10).unwrap().record.id;
    let b = Bucket::of("svc-x");
    let t = 1_700_000_000_000;
    own_bucket(&mut db.sql, b, 1);
    let a = Fencing {
        node: "a".into(),
        held: held(&[(b, 1)]),
    };
    let mut a_hold = Hold::default();
    for i in 0..3 {
        s.write_held(
            Some(&a),
            &[plain(id, t + i * 1_000, CheckResult::Pass, i as u32 + 1)],
            &mut a_hold,
        )
        .unwrap();
    }
    s.flush_held(Some(&a), &mut a_hold, None).unwrap();
    assert_eq!(rolled(&mut db, id), 3);
    // Two more, held when node a dies (or is cut off).
    for i in 3..5 {
        s.write_held(
            Some(&a),
            &[plain(id, t + i * 1_000, CheckResult::Pass, i as u32 + 1)],
            &mut a_hold,
        )
        .unwrap();
    }
    assert_eq!(rolled(&mut db, id), 3);
    // Pruning keeps the checks above the mark, whatever `--keep-checks`.
    s.set_keep_checks(1);
    db.close_slot();
    s.prune(t + 10_000).unwrap();
    assert_eq!(db.count("SELECT count(*) FROM checks"), 2);
    assert_eq!(counted(&s, id, t), 5);

    // Node b takes the bucket over (a new epoch), checks once and flushes:
    // its roll-up takes a's two held checks too, and moves the mark.
    lease_bucket(&mut db.sql, b, "b", 2);
    let bf = Fencing {
        node: "b".into(),
        held: held(&[(b, 2)]),
    };
    let mut b_hold = Hold::default();
    s.write_held(
        Some(&bf),
        &[plain(id, t + 5_000, CheckResult::Pass, 6)],
        &mut b_hold,
    )
    .unwrap();
    // b's reads are right before its flush: the counters of its newest check.
    assert_eq!(s.get_service("svc-x").unwrap().unwrap().successes, 6);
    s.flush_held(Some(&bf), &mut b_hold, None).unwrap();
    assert_eq!(rolled(&mut db, id), 6);
    assert_eq!(counted(&s, id, t), 6);

    // Node a, resumed, tries to write what it held: its lease is stale,
    // so nothing of it is written…
    assert_eq!(s.flush_held(Some(&a), &mut a_hold, None).unwrap(), 0);
    assert!(a_hold.is_empty());
    assert_eq!(rolled(&mut db, id), 6);
    // …and a roll-up without fencing (a node restarted after a crash, or a
    // race the fence missed) finds nothing above the mark to count again.
    let mut again = Hold::default();
    let stale = s.write_held(
        Some(&a),
        &[plain(id, t + 6_000, CheckResult::Pass, 7)],
        &mut again,
    );
    assert_eq!(stale.unwrap().checks, 0, "a's lease is gone");
    s.write_held(
        None,
        &[plain(id, t + 6_000, CheckResult::Pass, 7)],
        &mut again,
    )
    .unwrap();
    s.flush_held(None, &mut again, None).unwrap();
    assert_eq!(rolled(&mut db, id), 7);
    assert_eq!(counted(&s, id, t), 7);
    // Rolled up: now pruning may take them.
    db.close_slot();
    s.prune(t + 10_000).unwrap();
    assert_eq!(db.count("SELECT count(*) FROM checks"), 1);
    assert_eq!(counted(&s, id, t), 7);
}

#[test]
fn the_writer_thread_writes_what_it_holds_at_a_flush_and_when_it_stops() {
    let Some(mut db) = db() else { return };
    let s = db.store.clone();
    let id = s.register(&spec("svc"), "h", 0, 10).unwrap().record.id;
    let t = 1_700_000_000_000;
    let timing = PgWriterTiming {
        hold_for: Duration::from_secs(3_600),
        ..PgWriterTiming::default()
    };
    let (writer, handle) = PgWriter::start(&s, None, timing);
    db._rt.block_on(async {
        handle.record(plain(id, t, CheckResult::Pass, 1)).await;
        handle
            .record(plain(id, t + 1_000, CheckResult::Pass, 2))
            .await;
        handle.flush().await;
    });
    assert_eq!(row(&mut db, id).0, 2);
    assert_eq!(rolled(&mut db, id), 2);
    // Held (an hour to go), then written when the thread stops.
    db._rt.block_on(async {
        handle
            .record(plain(id, t + 2_000, CheckResult::Pass, 3))
            .await;
    });
    wait(|| s.checks(id, 10).unwrap().len() == 3);
    assert_eq!(row(&mut db, id).0, 2, "held");
    assert_eq!(s.get_service("svc").unwrap().unwrap().successes, 3);
    drop(handle);
    writer.join();
    assert_eq!(row(&mut db, id).0, 3);
    assert_eq!(rolled(&mut db, id), 3);
}

/// Waits (polling) until `cond` holds, at most a minute.
fn wait(cond: impl Fn() -> bool) {
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(std::time::Instant::now() < until, "condition not met");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a flush writes to PostgreSQL's WAL per service (the service row's
/// new version and its hour's roll-up), first into a new hour (a roll-up
/// row inserted) and then into an existing one, printed for
/// docs/cluster.md ("Scale on paper"): `cargo test -p healthchecker-server
/// --lib cluster::store::tests::hold::wal_of_a_flush -- --ignored
/// --nocapture`.
#[test]
#[ignore = "a measurement, not a test"]
fn wal_of_a_flush() {
    let Some(mut db) = db() else { return };
    let s = db.store.clone();
    // `HC_FILLFACTOR=70` to compare another fill factor of `services`.
    if let Ok(f) = std::env::var("HC_FILLFACTOR") {
        db.sql
            .batch_execute(&format!("ALTER TABLE services SET (fillfactor = {f})"))
            .unwrap();
    }
    const N: usize = 5_000;
    // Flushed in groups, as due services are at steady state (a few each
    // second, not all at once).
    const GROUP: usize = 100;
    let ids: Vec<ServiceId> = (0..N)
        .map(|i| {
            s.register(&spec(&format!("svc-{i:05}")), "h", 0, N + 1)
                .unwrap()
                .record
                .id
        })
        .collect();
    let t = 1_700_000_000_000;
    let mut holds: Vec<Hold> = (0..N / GROUP).map(|_| Hold::default()).collect();
    let lsn = |db: &mut Db| -> i64 {
        db.sql
            .query_one(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint",
                &[],
            )
            .unwrap()
            .get(0)
    };
    for round in 0..4 {
        let before = lsn(&mut db);
        for k in 0..6 {
            let at = t + round * 60_000 + k * 5_000;
            for (g, hold) in ids.chunks(GROUP).zip(&mut holds) {
                let batch: Vec<CheckWrite> = g
                    .iter()
                    .map(|id| plain(*id, at, CheckResult::Pass, (round * 6 + k) as u32 + 1))
                    .collect();
                s.write_held(None, &batch, hold).unwrap();
            }
        }
        let batches = lsn(&mut db) - before;
        let before = lsn(&mut db);
        for hold in &mut holds {
            assert_eq!(s.flush_held(None, hold, None).unwrap(), GROUP);
        }
        let wrote = lsn(&mut db) - before;
        if round == 3 && std::env::var("HC_WALINSPECT").is_ok() {
            // The flush's records by relation and type (pg_walinspect).
            db.sql
                .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
                .unwrap();
            for r in db
                .sql
                .query(
                    "WITH r AS (SELECT record_type, record_length, \
                       (regexp_match(block_ref, 'rel \\d+/\\d+/(\\d+)'))[1]::oid AS f \
                       FROM pg_get_wal_records_info( \
                         ('0/0'::pg_lsn + $1::text::numeric), ('0/0'::pg_lsn + $2::text::numeric))) \
                     SELECT coalesce(c.relname::text, '-'), r.record_type, count(*), \
                       sum(record_length)::bigint FROM r LEFT JOIN pg_class c \
                       ON c.relfilenode = r.f GROUP BY 1, 2 ORDER BY 4 DESC LIMIT 12",
                    &[&before.to_string(), &(before + wrote).to_string()],
                )
                .unwrap()
            {
                let (rel, ty, n, b): (String, String, i64, i64) =
                    (r.get(0), r.get(1), r.get(2), r.get(3));
                println!("  {rel} {ty}: {n} records, {} B a service", b / N as i64);
            }
        }
        println!(
            "round {round}: checks {} B a check; flush ({}) {} B a service",
            batches / (6 * N) as i64,
            if round == 0 {
                "roll-up rows inserted"
            } else {
                "roll-up rows updated"
            },
            wrote / N as i64
        );
    }
    // Pruning the rolled-up checks (all but the newest of each service):
    // their slot emptied whole, the newest copied into `checks_kept`;
    // then the vacuum.
    s.set_keep_checks(1);
    db.close_slot();
    let before = lsn(&mut db);
    let deleted = s.prune(t + 600_000).unwrap() as i64;
    let pruned = lsn(&mut db) - before;
    let before = lsn(&mut db);
    db.sql.batch_execute("VACUUM checks").unwrap();
    let vacuumed = lsn(&mut db) - before;
    println!(
        "prune: {} checks removed, {} B a check, vacuum {} B a check",
        deleted,
        pruned / deleted.max(1),
        vacuumed / deleted.max(1)
    );
}

/// Writes one plain check of `id` with `hold` (unfenced).
fn write_one(s: &PgStore, hold: &mut Hold, id: ServiceId, at: i64, result: CheckResult, n: u32) {
    s.write_held(None, &[plain(id, at, result, n)], hold)
        .unwrap();
}

/// `(unrolled, unrolled_failed)` of each check of `id`, oldest first.
fn unrolled(db: &mut Db, id: ServiceId) -> Vec<(Option<i16>, Option<i16>)> {
    db.sql
        .query(
            "SELECT unrolled, unrolled_failed FROM checks WHERE service_id = $1 ORDER BY id",
            &[&id.get()],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[test]
fn each_check_row_counts_the_checks_above_the_mark_that_uptime_adds() {
    let Some(mut db) = db() else { return };
    let s = db.store.clone();
    let id = s.register(&spec("svc-u"), "h", 0, 10).unwrap().record.id;
    let t = 1_700_000_000_000;
    let now = t + 60_000;
    let results = [
        CheckResult::Pass,
        CheckResult::Fail,
        CheckResult::Warn,
        CheckResult::Fail,
    ];
    let mut hold = Hold::default();
    // Two in one batch, then one at a time.
    let batch: Vec<CheckWrite> = (0..2)
        .map(|i| plain(id, t + i * 1_000, results[i as usize], 1))
        .collect();
    s.write_held(None, &batch, &mut hold).unwrap();
    for i in 2..4 {
        s.write_held(
            None,
            &[plain(id, t + i * 1_000, results[i as usize], 1)],
            &mut hold,
        )
        .unwrap();
    }
    let some = |n: i16, f: i16| (Some(n), Some(f));
    assert_eq!(
        unrolled(&mut db, id),
        [some(1, 0), some(2, 1), some(3, 1), some(4, 2)]
    );
    // Uptime reads the newest row's counts: the same as counting the rows
    // (what a row without counts gets, e.g. one written before migration 11).
    let from_counts = s.uptime_ratios(&[id], now).unwrap()[&id];
    assert_eq!(from_counts.day, Some(0.5));
    assert_eq!(from_counts.quarter, Some(0.5));
    db.sql
        .execute(
            "UPDATE checks SET unrolled = NULL, unrolled_failed = NULL WHERE service_id = $1",
            &[&id.get()],
        )
        .unwrap();
    assert_eq!(s.uptime_ratios(&[id], now).unwrap()[&id], from_counts);
    // A writer that does not know them (another node took the bucket, or
    // this one restarted) reads them: here by counting the rows…
    let mut fresh = Hold::default();
    write_one(&s, &mut fresh, id, t + 4_000, CheckResult::Pass, 1);
    assert_eq!(unrolled(&mut db, id)[4], some(5, 2));
    // …and here from the newest row.
    let mut fresh = Hold::default();
    write_one(&s, &mut fresh, id, t + 5_000, CheckResult::Fail, 1);
    assert_eq!(unrolled(&mut db, id)[5], some(6, 3));
    assert_eq!(s.uptime_ratios(&[id], now).unwrap()[&id].day, Some(0.5));
    // After a flush the mark is at the newest check: the counts start
    // again, and uptime reads the roll-ups plus the new check's counts.
    assert_eq!(s.flush_held(None, &mut fresh, None).unwrap(), 1);
    write_one(&s, &mut fresh, id, t + 6_000, CheckResult::Fail, 2);
    assert_eq!(unrolled(&mut db, id)[6], some(1, 1));
    assert_eq!(
        s.uptime_ratios(&[id], now).unwrap()[&id].day,
        Some(3.0 / 7.0)
    );
    // The first writer's counts are stale now (the mark moved under it):
    // its flush rolls up from the rows whatever it counted, and its counts
    // start again from the mark it moved.
    assert_eq!(rolled(&mut db, id), 6);
    s.flush_held(None, &mut hold, None).unwrap();
    write_one(&s, &mut hold, id, t + 7_000, CheckResult::Pass, 1);
    assert_eq!(rolled(&mut db, id), 7);
    assert_eq!(unrolled(&mut db, id)[7], some(1, 0));
    assert_eq!(
        s.uptime_ratios(&[id], now).unwrap()[&id].day,
        Some(4.0 / 8.0)
    );
}

#[test]
fn the_sweep_flushes_each_held_service_once_a_period_in_id_order() {
    let Some(mut db) = db() else { return };
    let s = db.store.clone();
    let ids: Vec<ServiceId> = (0..10)
        .map(|i| {
            s.register(&spec(&format!("svc-{i}")), "h", 0, 10)
                .unwrap()
                .record
                .id
        })
        .collect();
    let t = 1_700_000_000_000;
    let mut hold = Hold::default();
    let batch: Vec<CheckWrite> = ids
        .iter()
        .map(|id| plain(*id, t, CheckResult::Pass, 1))
        .collect();
    s.write_held(None, &batch, &mut hold).unwrap();
    // Which services have their row written (the mark moved).
    let flushed = |db: &mut Db| -> Vec<bool> { ids.iter().map(|id| row(db, *id).2 > 0).collect() };
    let period = Duration::from_secs(100);
    let t0 = std::time::Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    // The first call starts the sweep; 9 s later it has not passed one
    // service in ten yet.
    assert_eq!(s.flush_swept(None, &mut hold, period, at(0)).unwrap(), 0);
    assert_eq!(s.flush_swept(None, &mut hold, period, at(9)).unwrap(), 0);
    assert_eq!(flushed(&mut db), [false; 10]);
    // At 10 s, the first in id order; at 50 s, the next four.
    assert_eq!(s.flush_swept(None, &mut hold, period, at(10)).unwrap(), 1);
    let mut want = [false; 10];
    want[0] = true;
    assert_eq!(flushed(&mut db), want);
    assert_eq!(s.flush_swept(None, &mut hold, period, at(50)).unwrap(), 4);
    want[1..5].fill(true);
    assert_eq!(flushed(&mut db), want);
    // A service checked again after its flush waits for the sweep to come
    // round: the rest are flushed first, then it, a period after its own.
    s.write_held(
        None,
        &[plain(ids[0], t + 10_000, CheckResult::Pass, 2)],
        &mut hold,
    )
    .unwrap();
    assert_eq!(s.flush_swept(None, &mut hold, period, at(100)).unwrap(), 5);
    assert_eq!(flushed(&mut db), [true; 10]);
    assert!(row(&mut db, ids[0]).2 < db.count("SELECT max(id) FROM checks"));
    assert_eq!(s.flush_swept(None, &mut hold, period, at(110)).unwrap(), 1);
    assert_eq!(
        row(&mut db, ids[0]).2,
        db.count("SELECT max(id) FROM checks")
    );
    assert!(hold.is_empty());
    // What a call does not pass carries over: 15 s is a service and a
    // half, so the next 15 s make two.
    s.write_held(None, &batch, &mut hold).unwrap();
    assert_eq!(s.flush_swept(None, &mut hold, period, at(125)).unwrap(), 1);
    assert_eq!(s.flush_swept(None, &mut hold, period, at(140)).unwrap(), 2);
    assert_eq!(hold.known(), 10);
    // A service that saw no check for two periods is forgotten once the
    // sweep passes it (a deleted service's entry would stay for good);
    // its next check reads what it needs from the database.
    assert_eq!(s.flush_swept(None, &mut hold, period, at(300)).unwrap(), 7);
    assert_eq!(hold.known(), 0);
    s.write_held(
        None,
        &[plain(ids[3], t + 20_000, CheckResult::Pass, 3)],
        &mut hold,
    )
    .unwrap();
    assert_eq!(hold.known(), 1);
    s.flush_held(None, &mut hold, None).unwrap();
    let (successes, last, rolled) = row(&mut db, ids[3]);
    assert_eq!((successes, last), (3, Some(t + 20_000)));
    assert_eq!(rolled, db.count("SELECT max(id) FROM checks"));
}
