//! The seed client's form API, spoken here as its `requests` calls do:
//! `monitor` is a form POST, the others are GETs with `appname` in the query.

use healthchecker_testkit::{HttpTarget, Mode, TestDaemon};
use std::time::Duration;

#[tokio::test]
async fn the_seed_client_wire_protocol_works() {
    let d = TestDaemon::start().await;
    let t = HttpTarget::start(Mode::Pass).await;
    let form = [
        ("appname", "Sample HealthChecker App"),
        ("url", &format!("http://{}", t.addr)),
        ("email", "myEmailAddr@gmail.com"),
        ("timeout", "5"),
        ("interval", "10"),
        ("unhealthy_threshold", "2"),
        ("healthy_threshold", "4"),
    ];
    let r = d
        .http
        .post(d.at("/healthchecker/monitor"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["service"]["url"], format!("http://{}/health", t.addr));
    let r = d
        .http
        .post(d.at("/healthchecker/monitor"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "re-registration");

    let get = |path: &str, app: &str| d.http.get(d.at(path)).query(&[("appname", app)]).send();
    let r = get("/healthchecker/info", "Sample HealthChecker App")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["healthy_threshold"], 4);
    assert_eq!(
        get("/healthchecker/pause", "Sample HealthChecker App")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        get("/healthchecker/resume", "Sample HealthChecker App")
            .await
            .unwrap()
            .status(),
        200
    );
    healthchecker_testkit::wait_for(
        "the target to be polled",
        Duration::from_secs(12),
        || async { (t.hits() > 0).then_some(()) },
    )
    .await;
    for path in [
        "/healthchecker/info",
        "/healthchecker/pause",
        "/healthchecker/resume",
        "/healthchecker/stop",
    ] {
        assert_eq!(
            get(path, "unknown app").await.unwrap().status(),
            404,
            "{path}"
        );
        let r = d.http.get(d.at(path)).send().await.unwrap();
        assert_eq!(r.status(), 400, "{path} without appname");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["field"], "appname");
    }
    assert_eq!(
        get("/healthchecker/stop", "Sample HealthChecker App")
            .await
            .unwrap()
            .status(),
        200
    );
    // The seed client also calls stop() from its destructor: a second stop is a clean 404.
    assert_eq!(
        get("/healthchecker/stop", "Sample HealthChecker App")
            .await
            .unwrap()
            .status(),
        404
    );

    // stopmonitoring is the original server's name for stop.
    d.http
        .post(d.at("/healthchecker/monitor"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        get("/healthchecker/stopmonitoring", "Sample HealthChecker App")
            .await
            .unwrap()
            .status(),
        200
    );

    let bad = [("appname", "x"), ("url", "http://h:1"), ("interval", "3")];
    let r = d
        .http
        .post(d.at("/healthchecker/monitor"))
        .form(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["field"], "interval");
    let r = d
        .http
        .post(d.at("/healthchecker/monitor"))
        .form(&[("appname", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    d.stop().await;
}

#[tokio::test]
async fn status_answers_a_summary_counted_by_state() {
    let d = TestDaemon::start().await;
    let t = HttpTarget::start(Mode::Pass).await;
    let (st, _) = d
        .register(serde_json::json!({"name": "a", "url": t.url("/"), "interval": 5, "healthy_threshold": 2}))
        .await;
    assert_eq!(st, 201);
    d.register(serde_json::json!({"name": "b", "url": "tcp://127.0.0.1:9"}))
        .await;
    d.wait_state("a", "healthy", Duration::from_secs(20)).await;
    let (st, v) = d.get("/healthchecker/status").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["services"], 2, "{v}");
    assert_eq!(v["states"]["healthy"], 1, "{v}");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    d.stop().await;
}
