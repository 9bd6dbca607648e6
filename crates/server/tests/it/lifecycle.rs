use healthchecker_testkit::{HttpTarget, Mode, TestDaemon};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(25);

#[tokio::test]
async fn a_service_goes_unknown_healthy_degraded_unhealthy_healthy() {
    let d = TestDaemon::start().await;
    let t = HttpTarget::start(Mode::Pass).await;
    let (st, _) = d
        .register(json!({
            "name": "web", "url": t.url("/health"), "email": ["ops@example.com"],
            "interval": 5, "timeout": 2, "healthy_threshold": 2, "unhealthy_threshold": 2
        }))
        .await;
    assert_eq!(st, 201);
    d.wait_state("web", "healthy", WAIT).await;
    t.set(Mode::Warn("disk 91% full".into()));
    d.wait_state("web", "degraded", WAIT).await;
    let (_, v) = d.get("/api/v1/services/web").await;
    assert_eq!(v["last_check"]["result"], "warn");
    assert_eq!(
        v["last_check"]["reason"],
        "health+json status warn: disk 91% full"
    );
    t.set(Mode::Fail("db down".into()));
    d.wait_state("web", "unhealthy", WAIT).await;
    let (_, v) = d.get("/api/v1/services/web").await;
    assert_eq!(v["last_check"]["reason"], "HTTP 503: db down");
    assert!(v["consecutive_failures"].as_u64().unwrap() >= 2);
    t.set(Mode::Pass);
    d.wait_state("web", "healthy", WAIT).await;

    let (_, ev) = d.get("/api/v1/events?service=web").await;
    let mut changes: Vec<(String, String)> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "state")
        .map(|e| {
            (
                e["from"].as_str().unwrap().into(),
                e["to"].as_str().unwrap().into(),
            )
        })
        .collect();
    changes.reverse();
    let want = [
        ("unknown", "healthy"),
        ("healthy", "degraded"),
        ("degraded", "unhealthy"),
        ("unhealthy", "healthy"),
    ];
    assert_eq!(changes, want.map(|(a, b)| (a.to_string(), b.to_string())));
    for e in ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "state")
    {
        assert!(
            e["check_id"].is_i64(),
            "each state event names its check: {e}"
        );
    }
    // Entering degraded, entering unhealthy and recovering are queued for
    // mail (unknown -> healthy is not); without SMTP they wait, recorded.
    let (_, n) = d.get("/api/v1/notifications?status=pending").await;
    let n = n["notifications"].as_array().unwrap();
    assert!(!n.is_empty());
    assert!(n.iter().all(|x| x["from"] != "unknown"));
    assert!(
        n.iter().all(|x| x["last_error"] == "smtp not configured"),
        "{n:?}"
    );
    assert_eq!(n[0]["recipients"], json!(["ops@example.com"]));
    d.stop().await;
}

#[tokio::test]
async fn uptime_and_counts_are_reported() {
    let d = TestDaemon::start().await;
    let t = HttpTarget::start(Mode::Pass).await;
    d.register(json!({"name": "u", "url": t.url("/"), "interval": 5, "timeout": 2, "healthy_threshold": 2})).await;
    d.wait_state("u", "healthy", WAIT).await;
    let (_, v) = d.get("/api/v1/services").await;
    assert_eq!(v["count"], 1);
    assert_eq!(v["services"][0]["uptime"]["24h"], 1.0);
    let (_, v) = d.get("/api/v1/services?state=unhealthy").await;
    assert_eq!(v["count"], 0);
    let (_, v) = d.get("/api/v1/services?q=U").await;
    assert_eq!(v["count"], 1);
    d.stop().await;
}
