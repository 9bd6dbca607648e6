//! The benchmark, small: 1,000 services for 10 s on SQLite, and 300
//! services for 5 s on a throwaway PostgreSQL. It asserts only that the
//! runs complete and measured something; budgets are checked by hand on
//! the large runs (docs/performance.md), never by a timed assertion here.

#[test]
fn a_small_benchmark_run_completes() {
    let bench = std::path::PathBuf::from(env!("CARGO_BIN_EXE_healthchecker-bench"));
    let daemon = bench.with_file_name("healthchecker");
    assert!(
        daemon.exists(),
        "build the daemon first: cargo build -p healthchecker ({})",
        daemon.display()
    );
    let opts = healthchecker_bench::Options {
        services: 1000,
        interval: 5,
        duration: 10,
        daemon,
        bench,
        baseline_secs: if std::process::Command::new("wrk")
            .arg("--version")
            .output()
            .is_ok()
        {
            2
        } else {
            0
        },
        restart: true,
        db: healthchecker_bench::Db::Sqlite,
        nodes: 1,
        ..Default::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt
        .block_on(healthchecker_bench::run(&opts))
        .expect("the benchmark runs");
    println!("{}\n{}", report.table(), report.json());
    assert!(report.achieved_per_s > 0.0);
    assert!(report.registrations_per_s > 0.0);
    assert!(report.restart_s.is_some());
    assert_eq!(report.reads.len(), 4, "the four reads were timed");
    assert!(report.reads.iter().all(|r| r.n > 0 && r.p50_ms > 0.0));
    assert!(
        report.wchar_per_check > 0.0,
        "the daemon's writes were counted"
    );
    // The counter was read at both ends of the window. Its value may be 0
    // here: the writer holds plain checks for up to 2 minutes (or 4,096 of
    // them), longer than this 10 s window at 200 checks/s; the large run
    // measures it (docs/performance.md).
    assert!(
        report.wal_bytes_per_check.is_some_and(|b| b >= 0.0),
        "the daemon's WAL bytes were read: {:?}",
        report.wal_bytes_per_check
    );
}

/// One node on a throwaway PostgreSQL (SPEC 19): the figures read from the
/// server are there. Skipped (passing) without PostgreSQL unless `CI` is
/// set: under CI the testkit panics, so a missing server fails the test.
#[test]
fn a_small_postgres_run_reads_the_servers_figures() {
    if healthchecker_testkit::postgres::bin_dir().is_none() && std::env::var_os("CI").is_none() {
        eprintln!("SKIPPED: PostgreSQL is not installed");
        return;
    }
    let bench = std::path::PathBuf::from(env!("CARGO_BIN_EXE_healthchecker-bench"));
    let daemon = bench.with_file_name("healthchecker");
    assert!(
        daemon.exists(),
        "build the daemon first: cargo build -p healthchecker ({})",
        daemon.display()
    );
    let opts = healthchecker_bench::Options {
        services: 300,
        interval: 5,
        duration: 5,
        daemon,
        bench,
        baseline_secs: 0,
        restart: false,
        db: healthchecker_bench::Db::Postgres,
        nodes: 1,
        // Passed through to the daemon (which exits on an argument it
        // does not take, failing the run).
        daemon_args: vec!["--keep-checks".into(), "20".into()],
        ..Default::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt
        .block_on(healthchecker_bench::run(&opts))
        .expect("the benchmark runs on PostgreSQL");
    println!("{}\n{}", report.table(), report.json());
    assert_eq!(report.backend, "postgresql");
    assert!(report.achieved_per_s > 0.0);
    assert_eq!(report.reads.len(), 4, "the four reads were timed");
    let pg = report.postgres.as_ref().expect("PostgreSQL's figures");
    // The writer commits every batch within 100 ms: a 5 s window of
    // checks writes WAL and rows.
    assert!(
        pg.wal_bytes_per_check > 0.0,
        "WAL bytes per check: {}",
        pg.wal_bytes_per_check
    );
    assert!(
        pg.rows_inserted_per_check > 0.0,
        "rows inserted per check: {}",
        pg.rows_inserted_per_check
    );
    assert!(pg.cpu_us_per_check > 0.0, "PostgreSQL's CPU was read");
    // The full-page images' bytes come from pg_walinspect (in Debian's
    // postgresql); none with the throwaway server's full_page_writes=off.
    assert_eq!(pg.fpi_bytes_per_check, Some(0.0), "read by pg_walinspect");
    assert!(report.cpu_us_per_check > 0.0, "the node's CPU was read");
}
