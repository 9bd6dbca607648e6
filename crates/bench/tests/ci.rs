//! The benchmark, small: 1,000 services for 10 s. It asserts only that the
//! run completes and measured something; budgets are checked by hand on
//! the large run (docs/performance.md), never by a timed assertion here.

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
