//! `/metrics` parsed by a real OpenMetrics parser, and the OpenAPI
//! document checked by a real validator.

use healthchecker_testkit::smtp::run_py;
use healthchecker_testkit::{checks_total, metric_sample as sample, HttpTarget, Mode, TestDaemon};
use serde_json::{json, Value};
use std::time::Duration;

async fn metrics(d: &TestDaemon) -> Value {
    let r = d
        .http
        .get(d.at("/metrics"))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = r.text().await.unwrap();
    serde_json::from_str(&run_py("parse_metrics.py", text.as_bytes())).unwrap()
}

#[tokio::test]
async fn metrics_follow_prometheus_conventions_and_drop_deleted_services() {
    let d = TestDaemon::start().await;
    let t = HttpTarget::start(Mode::Pass).await;
    for name in ["web", "gone"] {
        d.register(json!({"name": name, "url": t.url("/"), "interval": 5, "timeout": 2, "healthy_threshold": 2})).await;
    }
    d.wait_state("web", "healthy", Duration::from_secs(20))
        .await;
    d.wait_state("gone", "healthy", Duration::from_secs(20))
        .await;
    let m = metrics(&d).await;
    assert_eq!(m["healthchecker_services"]["type"], "gauge");
    assert_eq!(
        sample(
            &m,
            "healthchecker_services",
            "healthchecker_services",
            ("state", "healthy")
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &m,
            "healthchecker_service_up",
            "healthchecker_service_up",
            ("service", "web")
        ),
        Some(1.0)
    );
    let st = m["healthchecker_service_state"]["samples"]
        .as_array()
        .unwrap();
    let web: Vec<&Value> = st.iter().filter(|s| s[1]["service"] == "web").collect();
    assert_eq!(web.len(), 1, "one state series per service");
    assert_eq!(web[0][1]["state"], "healthy");
    assert_eq!(m["healthchecker_checks"]["type"], "counter");
    assert!(checks_total(&m, "pass") >= 4.0);
    assert_eq!(
        m["healthchecker_check_duration_seconds"]["type"],
        "histogram"
    );
    assert_eq!(
        m["healthchecker_scheduler_lag_seconds"]["type"],
        "histogram"
    );
    let lag_count = m["healthchecker_scheduler_lag_seconds"]["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s[0] == "healthchecker_scheduler_lag_seconds_count")
        .unwrap()[2]
        .as_f64()
        .unwrap();
    assert!(lag_count >= 4.0);
    assert_eq!(m["healthchecker_notifications"]["type"], "counter");
    assert_eq!(m["healthchecker_outbox_backlog"]["type"], "gauge");

    let r = d
        .http
        .delete(d.at("/api/v1/services/gone"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let m = metrics(&d).await;
    let all = serde_json::to_string(&m).unwrap();
    assert!(
        !all.contains("\"service\":\"gone\""),
        "series of a deleted service disappear"
    );
    assert!(all.contains("\"service\":\"web\""));
    d.stop().await;
}

#[tokio::test]
async fn the_openapi_document_validates_and_covers_every_v1_route() {
    let d = TestDaemon::start().await;
    let r = d
        .http
        .get(d.at("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert_eq!(
        run_py("validate_openapi.py", text.as_bytes()).trim(),
        "valid"
    );
    let doc: Value = serde_json::from_str(&text).unwrap();
    let paths = &doc["paths"];
    for (path, methods) in [
        ("/api/v1/services", &["get", "post"][..]),
        ("/api/v1/services/{name}", &["get", "delete"]),
        ("/api/v1/services/{name}/pause", &["post"]),
        ("/api/v1/services/{name}/resume", &["post"]),
        ("/api/v1/services/{name}/checks", &["get"]),
        ("/api/v1/events", &["get"]),
        ("/api/v1/notifications", &["get"]),
    ] {
        for m in methods {
            let op = &paths[path][m];
            assert!(op.is_object(), "{m} {path} missing");
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|k| k.starts_with('4')),
                "{m} {path} documents its errors"
            );
        }
    }
    assert!(paths["/api/v1/services"]["post"]["requestBody"].is_object());
    for schema in [
        "Service",
        "ErrorBody",
        "RegisterBody",
        "CheckList",
        "EventList",
        "NotificationList",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    d.stop().await;
}
