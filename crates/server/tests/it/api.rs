use healthchecker_testkit::{enc, HttpTarget, Mode, TestDaemon};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn registration_creates_then_updates_keeping_state() {
    let d = TestDaemon::start().await;
    let t = HttpTarget::start(Mode::Pass).await;
    let (st, body) = d
        .register(json!({"name": "web one", "url": t.url("/"), "interval": 5, "timeout": 2, "healthy_threshold": 2}))
        .await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["url"], t.url("/"), "a URL is checked as written");
    assert_eq!(body["state"], "unknown");
    let token = body["token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 64);
    d.wait_state("web one", "healthy", Duration::from_secs(20))
        .await;

    let (st, body) = d
        .register(json!({"name": "web one", "url": t.url("/"), "interval": 6, "timeout": 2, "healthy_threshold": 2}))
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["interval"], 6);
    assert_eq!(body["state"], "healthy", "re-registration keeps the state");
    assert_ne!(
        body["token"].as_str().unwrap(),
        token,
        "a new token is issued"
    );
    let (_, checks) = d
        .get(&format!("/api/v1/services/{}/checks", enc("web one")))
        .await;
    assert!(
        checks["checks"].as_array().unwrap().len() >= 2,
        "history kept: {checks}"
    );
    let (_, ev) = d.get("/api/v1/events?service=web%20one").await;
    let kinds: Vec<&str> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"updated"));
    assert!(
        kinds.contains(&"registered") && kinds.contains(&"state"),
        "{kinds:?}"
    );
    d.stop().await;
}

#[tokio::test]
async fn invalid_registrations_name_the_field() {
    let d = TestDaemon::start().await;
    let cases = [
        (
            json!({"name": "a", "url": "http://h", "interval": 1}),
            "interval",
        ),
        (
            json!({"name": "a", "url": "http://h", "timeout": 100}),
            "timeout",
        ),
        (
            json!({"name": "a", "url": "http://h", "timeout": 30, "interval": 30}),
            "timeout",
        ),
        (
            json!({"name": "a", "url": "http://h", "unhealthy_threshold": 11}),
            "unhealthy_threshold",
        ),
        (
            json!({"name": "a", "url": "http://h", "healthy_threshold": 1}),
            "healthy_threshold",
        ),
        (json!({"name": "a", "host": "h", "port": 70000}), "port"),
        (
            json!({"name": "a", "host": "h", "protocol": "gopher"}),
            "protocol",
        ),
        (json!({"name": "a", "url": "ftp://h"}), "url"),
        (
            json!({"name": "a", "url": "http://h", "email": "not an address"}),
            "email",
        ),
        (json!({"name": "", "url": "http://h"}), "name"),
        (json!({"url": "http://h"}), "name"),
        (
            json!({"name": "a", "url": "http://h", "intervall": 5}),
            "intervall",
        ),
    ];
    for (body, field) in cases {
        let (st, resp) = d.register(body.clone()).await;
        assert_eq!(st, 400, "{body} -> {resp}");
        assert_eq!(resp["error"]["field"], field, "{body} -> {resp}");
        assert!(resp["error"]["message"].as_str().unwrap().len() > 10);
        assert!(resp["error"]["code"].is_string());
    }
    let (st, resp) = d
        .register(json!({"name": "a", "url": "http://h", "interval": 301}))
        .await;
    assert_eq!(st, 400);
    let msg = resp["error"]["message"].as_str().unwrap();
    assert!(msg.contains("301") && msg.contains("5 to 300"), "{msg}");
    // Nothing was stored by the refusals.
    let (_, list) = d.get("/api/v1/services").await;
    assert_eq!(list["count"], 0);
    d.stop().await;
}

#[tokio::test]
async fn malformed_and_oversized_bodies_are_refused() {
    let d = TestDaemon::start().await;
    let post = |body: Vec<u8>| {
        d.http
            .post(d.at("/api/v1/services"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for body in [
        b"{".to_vec(),
        b"[1,2]".to_vec(),
        b"\"x\"".to_vec(),
        vec![0xff, 0xfe, 0x7b],
        b"{\"name\": \"\xff\"}".to_vec(),
    ] {
        let r = post(body.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{:?}", String::from_utf8_lossy(&body));
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["error"]["message"].is_string());
    }
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(70 * 1024));
    let r = post(big.into_bytes()).await.unwrap();
    assert_eq!(r.status(), 413);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "body_too_large");
    // Bad UTF-8 in a percent-encoded name.
    let (st, v) = d.get("/api/v1/services/%FF%FE").await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"]["field"], "name");
    let (st, v) = d.get("/api/v1/events?limit=abc").await;
    assert_eq!((st, v["error"]["field"].as_str()), (400, Some("limit")));
    let (st, v) = d.get("/api/v1/notifications?status=lost").await;
    assert_eq!((st, v["error"]["field"].as_str()), (400, Some("status")));
    let (st, _) = d.get("/api/v1/services?state=purple").await;
    assert_eq!(st, 400);
    // The daemon is still fine.
    let r = d.http.get(d.at("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/health+json");
    d.stop().await;
}

#[tokio::test]
async fn names_are_free_text_in_paths_and_delete_stops_monitoring() {
    let d = TestDaemon::start().await;
    let t = HttpTarget::start(Mode::Pass).await;
    let name = "Media centre / living room ✓";
    let (st, _) = d
        .register(json!({"name": name, "url": t.url("/status"), "interval": 5, "timeout": 2}))
        .await;
    assert_eq!(st, 201);
    let (st, v) = d.get(&format!("/api/v1/services/{}", enc(name))).await;
    assert_eq!(st, 200);
    assert_eq!(v["name"], name);
    assert_eq!(v["path"], "/status");
    let (st, v) = d.get("/api/v1/services/nope").await;
    assert_eq!((st, v["error"]["code"].as_str()), (404, Some("not_found")));
    let r = d
        .http
        .delete(d.at(&format!("/api/v1/services/{}", enc(name))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = d
        .http
        .delete(d.at(&format!("/api/v1/services/{}", enc(name))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let hits = t.hits();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(t.hits(), hits, "a deleted service is not checked");
    d.stop().await;
}

#[tokio::test]
async fn pause_freezes_and_resume_restarts_checks_at_once() {
    let d = TestDaemon::start().await;
    let t = HttpTarget::start(Mode::Pass).await;
    d.register(json!({"name": "p", "url": t.url("/"), "interval": 5, "timeout": 2, "healthy_threshold": 2})).await;
    healthchecker_testkit::wait_for("a first check", Duration::from_secs(10), || async {
        (t.hits() > 0).then_some(())
    })
    .await;
    let r = d
        .http
        .post(d.at("/api/v1/services/p/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["monitoring"], "paused");
    let frozen = d.state("p").await;
    // Let any probe already running land, then count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hits = t.hits();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(t.hits(), hits, "no checks while paused");
    assert_eq!(d.state("p").await, frozen);
    let r = d
        .http
        .post(d.at("/api/v1/services/p/resume"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    healthchecker_testkit::wait_for("a check after resume", Duration::from_secs(3), || async {
        (t.hits() > hits).then_some(())
    })
    .await;
    let r = d
        .http
        .post(d.at("/api/v1/services/zzz/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    d.stop().await;
}

#[tokio::test]
async fn a_url_is_checked_as_written_and_interval_alone_is_valid() {
    // The README's example (issue 17): a NAS answers `/`, and 404 on `/health`.
    let d = TestDaemon::start().await;
    let nas = HttpTarget::start(Mode::OnlyAt("/".into())).await;
    let url = format!("http://{}/", nas.addr);
    let (st, body) = d
        .register(json!({"name": "nas", "url": url, "interval": 5, "healthy_threshold": 2}))
        .await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["url"], url);
    assert_eq!(body["timeout"], 4, "min(5, interval - 1)");
    d.wait_state("nas", "healthy", Duration::from_secs(20))
        .await;
    // Without the trailing slash too.
    let (st, body) = d
        .register(json!({"name": "nas2", "url": format!("http://{}", nas.addr)}))
        .await;
    assert_eq!((st, body["url"].as_str()), (201, Some(url.as_str())));
    d.stop().await;
}
