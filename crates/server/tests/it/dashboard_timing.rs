//! Dashboard page timings at 100,000 services (SPEC sections 11 and 17: a
//! dashboard page within 50 ms). A measurement, not a timed test: ignored
//! by default, run by hand and copied into docs/performance.md:
//! `cargo test --release -p healthchecker-server --test it dashboard_timing -- --ignored --nocapture`

use healthchecker_testkit::{seed_services, TestDaemon};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: seeds 100,000 services"]
async fn dashboard_pages_at_100k_services() {
    if healthchecker_testkit::sqlite_only(
        "a measurement of the SQLite store's pages (docs/performance.md), \
         seeded into its file",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hc.db");
    let t = Instant::now();
    seed_services(&db, 100_000);
    println!("seeded 100000 services in {:.1?}", t.elapsed());
    let d = TestDaemon::start_with(|c| {
        c.db = db.clone();
        c.status_page = true;
        c.register_rate_limit = 0;
    })
    .await;
    // Let the scheduler start checking (every service every 300 s).
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!("| page | median | p95 | max |");
    println!("|---|---|---|---|");
    for path in [
        "/",
        "/?sort=state",
        "/?sort=change",
        "/?state=unhealthy&page=10",
        "/?q=svc-0999",
        "/services/svc-50000",
        "/status",
        "/status?page=500",
        "/?fragment=1",
    ] {
        let mut times = Vec::new();
        for _ in 0..30 {
            let t = Instant::now();
            let r = d.http.get(d.at(path)).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            let body = r.bytes().await.unwrap();
            assert!(!body.is_empty());
            times.push(t.elapsed());
        }
        times.sort();
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
        println!(
            "| `{path}` | {} | {} | {} |",
            ms(times[times.len() / 2]),
            ms(times[times.len() * 95 / 100]),
            ms(times[times.len() - 1])
        );
    }
    // Where the time goes: the store's reads one by one.
    let store = healthchecker_server::store::Store::open(&db).unwrap();
    let now = healthchecker_server::clock::now_ms();
    let time = |what: &str, f: &dyn Fn()| {
        let t = Instant::now();
        for _ in 0..10 {
            f();
        }
        println!("{what}: {:.1} ms", t.elapsed().as_secs_f64() * 100.0);
    };
    use healthchecker_server::store::{ServiceFilter, ServiceOrder};
    let filter = ServiceFilter {
        state: None,
        name_contains: None,
        limit: 100,
        offset: 0,
        after: None,
    };
    let ids: Vec<healthchecker_core::ServiceId> = store
        .list_services_ordered(&filter, ServiceOrder::Name)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    time("count_by_state", &|| drop(store.count_by_state().unwrap()));
    time("list by name", &|| {
        drop(
            store
                .list_services_ordered(&filter, ServiceOrder::Name)
                .unwrap(),
        )
    });
    time("list by state", &|| {
        drop(
            store
                .list_services_ordered(&filter, ServiceOrder::State)
                .unwrap(),
        )
    });
    time("list by change", &|| {
        drop(
            store
                .list_services_ordered(&filter, ServiceOrder::LastChange)
                .unwrap(),
        )
    });
    time("uptime_windows x100", &|| {
        drop(store.uptime_windows(&ids, now).unwrap())
    });
    time("recent_checks_of x100", &|| {
        drop(store.recent_checks_of(&ids, 30).unwrap())
    });
    time("events(None, 15)", &|| {
        drop(store.events(None, 15).unwrap())
    });
    time("daily_uptime x100", &|| {
        for id in &ids {
            drop(store.daily_uptime(*id, now, 90).unwrap());
        }
    });
    d.stop().await;
}
