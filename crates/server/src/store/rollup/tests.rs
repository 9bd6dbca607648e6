use super::*;

#[test]
fn p95_is_the_upper_edge_of_its_bucket_clamped_to_the_extremes() {
    let mut r = Roll::default();
    for _ in 0..95 {
        r.add(CheckResult::Pass, 3_000);
    }
    for _ in 0..5 {
        r.add(CheckResult::Fail, 900_000);
    }
    assert_eq!(bucket(1_999), 0);
    assert_eq!(bucket(2_000), 1);
    assert_eq!(bucket(60_000_000), BUCKETS - 1);
    assert_eq!((r.total, r.ok(), r.fails), (100, 95, 5));
    assert_eq!(r.hist[1], 95);
    assert_eq!(r.hist[8], 5);
}

fn sample() -> Roll {
    let mut r = Roll::default();
    r.add(CheckResult::Pass, 3_900);
    r.add(CheckResult::Warn, 4_200);
    r.add(CheckResult::Fail, 9_000);
    r.add(CheckResult::Pass, 7_000_000);
    r
}

#[test]
fn a_packed_roll_round_trips() {
    let r = sample();
    let b = encode(&r);
    assert_eq!(decode(&b), Ok(r));
    assert_eq!(decode_counts(&b), Ok((4, 1)));
    // flags, 3 counts, the sum (4 bytes), min (2), max - min (4), the
    // bitmap (2) and three bucket counts.
    assert_eq!(b.len(), 1 + 3 + 4 + 2 + 4 + 2 + 3, "{b:?}");
    assert_eq!(r.ok(), 3);
    // An empty roll, and a migrated hour without latency.
    assert_eq!(decode(&encode(&Roll::default())), Ok(Roll::default()));
    assert_eq!(encode(&Roll::default()), [0, 0, 0, 0, 0, 0]);
    let old = Roll {
        total: 120,
        fails: 30,
        ..Roll::default()
    };
    assert_eq!(decode(&encode(&old)), Ok(old));
    assert_eq!(old.rollup(7).latency_mean_us, None);
}

#[test]
fn edge_values_round_trip_exactly() {
    let mut hist = [0; BUCKETS];
    hist[0] = i64::MAX;
    hist[BUCKETS - 1] = -1;
    for r in [
        Roll {
            total: i64::MAX,
            fails: i64::MIN,
            warns: -1,
            lat_n: 0,
            lat_min: Some(i64::MAX),
            lat_sum: i64::MIN,
            lat_max: Some(i64::MIN),
            hist,
        },
        Roll {
            lat_min: None,
            lat_max: Some(-5),
            lat_n: 3,
            ..Roll::default()
        },
        Roll {
            lat_min: Some(-5),
            lat_max: None,
            hist: [1; BUCKETS],
            ..Roll::default()
        },
    ] {
        assert_eq!(decode(&encode(&r)), Ok(r), "{r:?}");
    }
}

#[test]
fn merging_packed_rolls_adds_them() {
    let (a, mut b) = (sample(), Roll::default());
    b.add(CheckResult::Fail, 1_000);
    let conn = Connection::open_in_memory().unwrap();
    register_functions(&conn).unwrap();
    let merged: Vec<u8> = conn
        .query_row(
            "SELECT hc_roll_merge(?1, ?2)",
            params![encode(&a), encode(&b)],
            |r| r.get(0),
        )
        .unwrap();
    let m = decode(&merged).unwrap();
    let mut expect = a;
    expect.merge(&b);
    assert_eq!(m, expect);
    assert_eq!((m.total, m.fails, m.warns, m.lat_n), (5, 2, 1, 5));
    assert_eq!((m.lat_min, m.lat_max), (Some(1_000), Some(7_000_000)));
    assert_eq!(m.hist[0], 1);
    // A row migrated without latency keeps its counts and takes the
    // new checks' latency.
    let old = Roll {
        total: 120,
        fails: 30,
        ..Roll::default()
    };
    let mut m = old;
    m.merge(&b);
    let m = decode(&encode(&m)).unwrap();
    assert_eq!(
        (m.total, m.fails, m.lat_n, m.lat_min),
        (121, 31, 1, Some(1_000))
    );
    assert_eq!(m.rollup(0).latency_mean_us, Some(1_000));
}

#[test]
fn a_corrupt_blob_is_an_error_not_a_panic() {
    let good = encode(&sample());
    for cut in 0..good.len() {
        assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
    }
    let mut long = good.clone();
    long.push(0);
    assert_eq!(decode(&long), Err(BadRoll("bytes after the end")));
    assert_eq!(decode(&[8, 0, 0, 0, 0, 0]), Err(BadRoll("unknown format")));
    // A bucket beyond the last.
    assert!(decode(&[0, 0, 0, 0, 0, 0x80, 0x20, 1]).is_err());
    // A number of 11 bytes, and one whose tenth byte overflows.
    assert!(decode(&[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x81, 0]).is_err());
    assert!(decode(&[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0]).is_err());
    // Every byte string up to 3 bytes, and some noise: no panic.
    for a in 0..=255u8 {
        for b in 0..=255u8 {
            let _ = decode(&[a, b]);
            let _ = decode(&[a, b, a ^ b]);
        }
    }
    // Through SQL: the statement fails, naming the problem.
    let conn = Connection::open_in_memory().unwrap();
    register_functions(&conn).unwrap();
    let e = conn
        .query_row("SELECT hc_roll_merge(?1, x'ff')", params![good], |r| {
            r.get::<_, Vec<u8>>(0)
        })
        .unwrap_err();
    assert!(e.to_string().contains("unknown format"), "{e}");
    let e = conn
        .query_row("SELECT hc_roll_merge(?1, 5)", params![good], |r| {
            r.get::<_, Vec<u8>>(0)
        })
        .unwrap_err();
    assert!(!e.to_string().is_empty());
}

#[test]
fn an_old_row_packs_with_every_count() {
    let conn = Connection::open_in_memory().unwrap();
    register_functions(&conn).unwrap();
    let b: Vec<u8> = conn
        .query_row(
            "SELECT hc_roll_pack(120, 1, 3, 120, 3900, 601440, 9000, 0, 118, 2, 0, 0, 0, 0, \
             0, 0, 0, 0, 0)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let r = decode(&b).unwrap();
    assert_eq!(r.ok(), 119);
    assert_eq!(
        r.rollup(9),
        Rollup {
            period: 9,
            count: 120,
            failures: 1,
            warns: 3,
            latency_min_us: Some(3_900),
            latency_mean_us: Some(5_012),
            latency_max_us: Some(9_000),
            latency_p95_us: Some(5_000),
        }
    );
    // An hourly row of 120 checks in two buckets: 14 bytes.
    assert_eq!(b.len(), 14);
    let none: Vec<u8> = conn
        .query_row(
            "SELECT hc_roll_pack(120, 30, 0, 0, NULL, 0, NULL, 0, 0, 0, 0, 0, 0, 0, 0, 0, \
             0, 0, 0)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let r = decode(&none).unwrap();
    assert_eq!(
        (r.total, r.fails, r.lat_n, r.lat_min, r.lat_max),
        (120, 30, 0, None, None)
    );
}
