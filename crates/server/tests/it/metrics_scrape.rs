//! `/metrics` in both exposition formats, each parsed by prometheus_client's
//! own parser (classic text and OpenMetrics), with and without per-service
//! series; the pre-rendered per-service lines follow checks, deletions and
//! re-registrations.

use healthchecker_testkit::smtp::run_py;
use healthchecker_testkit::{
    checks_total, metric_sample as sample, wait_for, HttpTarget, Mode, TestDaemon,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// What Prometheus sends by default: OpenMetrics preferred.
const PROMETHEUS: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
/// What a scraper that wants the classic text format sends.
const CLASSIC: &str = "text/plain;version=0.0.4";

/// Scrapes with `accept`, checks that the answer is in the expected format
/// (OpenMetrics or classic) and parses it with that format's real parser.
/// Every family must come out typed and with its help text: a family whose
/// `# HELP`/`# TYPE` lines do not name it as the format expects would be
/// parsed as an untyped family without help (what `promtool` reports).
async fn scrape(d: &TestDaemon, accept: Option<&str>, openmetrics: bool) -> Value {
    let mut req = d.http.get(d.at("/metrics"));
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    let text = r.text().await.unwrap();
    let (want, script) = if openmetrics {
        (
            "application/openmetrics-text; version=1.0.0",
            "parse_metrics.py",
        )
    } else {
        ("text/plain; version=0.0.4", "parse_classic_metrics.py")
    };
    assert!(ct.starts_with(want), "{accept:?} answered {ct}");
    assert_eq!(text.ends_with("# EOF\n"), openmetrics);
    let m: Value = serde_json::from_str(&run_py(script, text.as_bytes())).unwrap();
    for (name, fam) in m.as_object().unwrap() {
        assert_ne!(fam["type"], "unknown", "{name} untyped");
        assert_ne!(fam["type"], "untyped", "{name} untyped");
        assert_ne!(fam["help"], "", "{name} has no help");
    }
    m
}

/// Each service's `service_up` value and `service_state` label, checking
/// that a service has exactly one series in each family.
fn per_service(m: &Value) -> BTreeMap<String, (f64, String)> {
    let mut out = BTreeMap::new();
    for s in m["healthchecker_service_up"]["samples"].as_array().unwrap() {
        let name = s[1]["service"].as_str().unwrap().to_string();
        let prev = out.insert(name.clone(), (s[2].as_f64().unwrap(), String::new()));
        assert!(prev.is_none(), "{name} twice in service_up");
    }
    for s in m["healthchecker_service_state"]["samples"]
        .as_array()
        .unwrap()
    {
        let name = s[1]["service"].as_str().unwrap();
        assert_eq!(s[2].as_f64(), Some(1.0));
        let e = out.get_mut(name).expect("state series has an up series");
        assert!(e.1.is_empty(), "{name} has two state series");
        e.1 = s[1]["state"].as_str().unwrap().to_string();
    }
    assert!(out.values().all(|(_, s)| !s.is_empty()));
    out
}

fn count(m: &Value, state: &str) -> f64 {
    sample(
        m,
        "healthchecker_services",
        "healthchecker_services",
        ("state", state),
    )
    .unwrap()
}

fn svc(name: &str, up: f64, state: &str) -> (String, (f64, String)) {
    (name.to_string(), (up, state.to_string()))
}

#[tokio::test]
async fn both_formats_parse_and_per_service_lines_follow_checks() {
    let d = TestDaemon::start().await;
    let ok = HttpTarget::start(Mode::Pass).await;
    let flaky = HttpTarget::start(Mode::Fail("down".into())).await;
    let reg = |name: &str, t: &HttpTarget| {
        json!({"name": name, "url": t.url("/"), "interval": 5, "timeout": 2,
               "healthy_threshold": 2, "unhealthy_threshold": 2})
    };
    assert_eq!(d.register(reg("web", &ok)).await.0, 201);
    assert_eq!(d.register(reg("db", &flaky)).await.0, 201);
    d.wait_state("web", "healthy", Duration::from_secs(20))
        .await;
    d.wait_state("db", "unhealthy", Duration::from_secs(20))
        .await;

    // Classic text, asked for explicitly; also the answer without Accept
    // and to */* (curl, a browser).
    let m = scrape(&d, Some(CLASSIC), false).await;
    assert_eq!(m["healthchecker_checks"]["type"], "counter");
    assert_eq!(m["healthchecker_checks"]["help"], "Checks run, by result.");
    assert!(checks_total(&m, "fail") >= 2.0);
    assert_eq!(m["healthchecker_notifications"]["type"], "counter");
    assert_eq!(m["healthchecker_scheduler_missed_slots"]["type"], "counter");
    assert_eq!(
        m["healthchecker_scheduler_lag_seconds"]["type"],
        "histogram"
    );
    assert_eq!(m["healthchecker_services"]["type"], "gauge");
    assert_eq!(m["healthchecker_service_up"]["type"], "gauge");
    assert_eq!((count(&m, "healthy"), count(&m, "unhealthy")), (1.0, 1.0));
    // The store's WAL bytes: registrations and checks were written.
    assert_eq!(m["healthchecker_store_wal_bytes"]["type"], "counter");
    let wal_bytes = |m: &Value| {
        m["healthchecker_store_wal_bytes"]["samples"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s[0] == "healthchecker_store_wal_bytes_total")
            .and_then(|s| s[2].as_f64())
            .expect("a healthchecker_store_wal_bytes_total sample")
    };
    let wal0 = wal_bytes(&m);
    // The SQLite writer's own count; on PostgreSQL the sample is there but
    // 0 (`Store::wal_bytes`: pg_stat_wal is cluster-wide).
    let sqlite = !healthchecker_testkit::on_postgres();
    assert!(wal0 > 0.0 || !sqlite, "{wal0}");
    assert_eq!(
        per_service(&m),
        BTreeMap::from([svc("db", 0.0, "unhealthy"), svc("web", 1.0, "healthy")])
    );
    scrape(&d, None, false).await;
    scrape(&d, Some("*/*"), false).await;

    // The failing target recovers: after checks, the service's lines say so
    // (OpenMetrics, as Prometheus asks by default).
    flaky.set(Mode::Pass);
    d.wait_state("db", "healthy", Duration::from_secs(20)).await;
    let m = scrape(&d, Some(PROMETHEUS), true).await;
    assert_eq!(m["healthchecker_checks"]["type"], "counter");
    assert_eq!(m["healthchecker_checks"]["help"], "Checks run, by result.");
    assert_eq!(
        per_service(&m),
        BTreeMap::from([svc("db", 1.0, "healthy"), svc("web", 1.0, "healthy")])
    );
    assert_eq!((count(&m, "healthy"), count(&m, "unhealthy")), (2.0, 0.0));
    // db's state change was written since: the counter grew.
    assert_eq!(m["healthchecker_store_wal_bytes"]["type"], "counter");
    assert!(
        wal_bytes(&m) > wal0 || !sqlite,
        "{} after {wal0}",
        wal_bytes(&m)
    );

    // Deleted and registered again under the same name: a new service,
    // unknown until its checks say otherwise, then healthy again.
    let del = |name: &str| d.http.delete(d.at(&format!("/api/v1/services/{name}")));
    assert_eq!(del("db").send().await.unwrap().status(), 204);
    assert_eq!(d.register(reg("db", &flaky)).await.0, 201);
    let m = wait_for("db unknown again", Duration::from_secs(10), || async {
        let m = scrape(&d, Some(CLASSIC), false).await;
        (per_service(&m)["db"].1 == "unknown").then_some(m)
    })
    .await;
    assert_eq!(per_service(&m)["db"], (0.0, "unknown".to_string()));
    assert_eq!((count(&m, "healthy"), count(&m, "unknown")), (1.0, 1.0));
    d.wait_state("db", "healthy", Duration::from_secs(20)).await;
    let m = scrape(&d, Some(PROMETHEUS), true).await;
    assert_eq!(per_service(&m)["db"], (1.0, "healthy".to_string()));

    // Renamed (a new name registered, the old one deleted): only the new
    // name has series, and the counts by state match the series.
    assert_eq!(d.register(reg("web-new", &ok)).await.0, 201);
    assert_eq!(del("web").send().await.unwrap().status(), 204);
    let m = wait_for("web gone", Duration::from_secs(10), || async {
        let m = scrape(&d, Some(CLASSIC), false).await;
        (!per_service(&m).contains_key("web")).then_some(m)
    })
    .await;
    let series = per_service(&m);
    assert_eq!(
        series.keys().collect::<Vec<_>>(),
        ["db", "web-new"],
        "{series:?}"
    );
    let total: f64 = ["unknown", "healthy", "degraded", "unhealthy"]
        .iter()
        .map(|s| count(&m, s))
        .sum();
    assert_eq!(total, 2.0);
    d.stop().await;
}

#[tokio::test]
async fn metrics_per_service_false_serves_only_the_aggregates() {
    let d = TestDaemon::start_with(|c| c.metrics_per_service = false).await;
    let ok = HttpTarget::start(Mode::Pass).await;
    let (status, _) = d
        .register(json!({"name": "web", "url": ok.url("/"), "interval": 5, "timeout": 2, "healthy_threshold": 2}))
        .await;
    assert_eq!(status, 201);
    d.wait_state("web", "healthy", Duration::from_secs(20))
        .await;
    for (accept, om) in [(CLASSIC, false), (PROMETHEUS, true)] {
        let m = scrape(&d, Some(accept), om).await;
        assert!(m.get("healthchecker_service_up").is_none());
        assert!(m.get("healthchecker_service_state").is_none());
        let all = serde_json::to_string(&m).unwrap();
        assert!(!all.contains("\"service\":"), "no per-service label: {all}");
        assert_eq!(count(&m, "healthy"), 1.0);
        assert!(checks_total(&m, "pass") >= 2.0);
    }
    d.stop().await;
}
