//! Heartbeat (push) services over HTTP (SPEC section 15): the ping URL,
//! success, start, fail and exit-code pings, the per-id limit, token mode,
//! and a missed deadline on a daemon started after it passed.

use healthchecker_testkit::{enc, status, wait_for, with_store, TestDaemon};
use serde_json::{json, Value};
use std::time::Duration;

const ADMIN: &str = "admin-token-0123456789abcdef";

async fn register_backup(d: &TestDaemon) -> String {
    let (st, v) = d
        .register(
            json!({"name": "nightly backup", "kind": "heartbeat", "period": 86400, "grace": 3600}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["kind"], "heartbeat");
    assert_eq!(
        (v["period"].as_u64(), v["grace"].as_u64()),
        (Some(86400), Some(3600))
    );
    let url = v["ping_url"].as_str().expect("ping_url").to_string();
    let id = url.strip_prefix("/ping/").expect("/ping/<id>");
    assert_eq!(id.len(), 32, "128 bits as hex: {id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    url
}

async fn ping(d: &TestDaemon, path: &str, body: &str) -> (u16, Value) {
    let r = d
        .http
        .post(d.at(path))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

async fn last_check(d: &TestDaemon) -> Value {
    let (_, v) = d
        .get(&format!(
            "/api/v1/services/{}/checks?limit=1",
            enc("nightly backup")
        ))
        .await;
    v["checks"][0].clone()
}

#[tokio::test]
async fn pings_judge_at_once_and_keep_their_output() {
    let d = TestDaemon::start().await;
    let url = register_backup(&d).await;
    assert_eq!(d.state("nightly backup").await, "unknown");
    // The id is the credential: reads never show it.
    let (_, v) = d
        .get(&format!("/api/v1/services/{}", enc("nightly backup")))
        .await;
    assert!(v.get("ping_url").is_none(), "{v}");

    // GET is a success too.
    let r = d.http.get(d.at(&url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    d.wait_state("nightly backup", "healthy", Duration::from_secs(3))
        .await;

    // A fail ping: unhealthy at once, its body kept as the check's output.
    let (st, v) = ping(&d, &format!("{url}/fail"), "disk full\n").await;
    assert_eq!(st, 200, "{v}");
    d.wait_state("nightly backup", "unhealthy", Duration::from_secs(3))
        .await;
    let c = last_check(&d).await;
    assert_eq!(
        (c["result"].as_str(), c["reason"].as_str()),
        (Some("fail"), Some("fail ping")),
        "{c}"
    );
    assert_eq!(c["details"]["output"], "disk full\n");

    // A success after it recovers; exit codes judge as 0 / non-zero.
    ping(&d, &format!("{url}/0"), "").await;
    d.wait_state("nightly backup", "healthy", Duration::from_secs(3))
        .await;
    ping(&d, &format!("{url}/3"), "").await;
    d.wait_state("nightly backup", "unhealthy", Duration::from_secs(3))
        .await;
    assert_eq!(last_check(&d).await["reason"], "exit code 3");

    // start then success: the check's duration is the run's.
    let (st, _) = ping(&d, &format!("{url}/start"), "").await;
    assert_eq!(st, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    ping(&d, &url, "ok").await;
    d.wait_state("nightly backup", "healthy", Duration::from_secs(3))
        .await;
    let c = last_check(&d).await;
    assert!(c["duration_ms"].as_f64().unwrap() >= 250.0, "{c}");

    // Re-registration keeps the ping URL (the job keeps working).
    let (st, v) = d
        .register(
            json!({"name": "nightly backup", "kind": "heartbeat", "period": 3600, "grace": 600}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["ping_url"], url);
    let (_, v) = d
        .get(&format!("/api/v1/services/{}", enc("nightly backup")))
        .await;
    assert!(v["last_ping_at"].is_string(), "{v}");
    d.stop().await;
}

#[tokio::test]
async fn unknown_ids_bad_pings_and_floods_are_refused() {
    let d = TestDaemon::start().await;
    let url = register_backup(&d).await;
    let (st, v) = ping(&d, "/ping/0123456789abcdef0123456789abcdef", "").await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    let (st, v) = ping(&d, "/ping/not-even-hex", "").await;
    assert_eq!(st, 404, "{v}");
    let (st, v) = ping(&d, &format!("{url}/restart"), "").await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (400, Some("ping")),
        "{v}"
    );
    let (st, v) = ping(&d, &format!("{url}/256"), "").await;
    assert_eq!(st, 400, "{v}");

    // Per-id limit: a flood of one id is refused with Retry-After...
    let mut limited = None;
    for _ in 0..40 {
        let r = d.http.post(d.at(&url)).send().await.unwrap();
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("429 within 40 pings");
    assert!(r.headers().get("retry-after").is_some());
    // ...and another id is not affected.
    let (st, v) = d
        .register(json!({"name": "other job", "kind": "heartbeat", "period": 60, "grace": 60}))
        .await;
    assert_eq!(st, 201);
    let (st, _) = ping(&d, v["ping_url"].as_str().unwrap(), "").await;
    assert_eq!(st, 200);

    // Bad registrations name the field.
    for (body, field) in [
        (
            json!({"name": "x", "kind": "heartbeat", "period": 59}),
            "period",
        ),
        (
            json!({"name": "x", "kind": "heartbeat", "period": 31_536_001}),
            "period",
        ),
        (
            json!({"name": "x", "kind": "heartbeat", "grace": 2_592_001}),
            "grace",
        ),
        (
            json!({"name": "x", "kind": "heartbeat", "url": "http://h"}),
            "url",
        ),
        (json!({"name": "x", "kind": "cron"}), "kind"),
    ] {
        let (st, v) = d.register(body.clone()).await;
        assert_eq!(
            (st, v["error"]["field"].as_str()),
            (400, Some(field)),
            "{body}: {v}"
        );
    }
    d.stop().await;
}

#[tokio::test]
async fn the_ping_id_is_the_credential_in_token_mode() {
    let d = TestDaemon::start_with(|c| {
        c.auth = healthchecker_server::config::AuthMode::Token;
        c.admin_token = Some(healthchecker_server::config::AdminToken(ADMIN.into()));
        c.private = true;
    })
    .await;
    let r = d
        .http
        .post(d.at("/api/v1/services"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "nightly backup", "kind": "heartbeat"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    let url = v["ping_url"].as_str().unwrap().to_string();
    // No token, even with --private; and a browser on another site may
    // send it (cron dashboards, bookmarklets): the cross-site guard
    // exempts /ping/.
    let r = d.http.get(d.at(&url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        status(
            d.http
                .post(d.at(&format!("{url}/fail")))
                .header("sec-fetch-site", "cross-site")
                .header("origin", "https://evil.example")
        )
        .await,
        200
    );
    // By name it is a change like pause: the token is needed.
    let by_name = d.at(&format!("/api/v1/services/{}/ping", enc("nightly backup")));
    let r = d.http.post(&by_name).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(status(d.http.post(&by_name).bearer_auth(ADMIN)).await, 200);
    d.stop().await;
}

#[tokio::test]
async fn a_missed_deadline_makes_it_unhealthy_and_a_ping_recovers_it() {
    // The job registered with period 60 s + grace 60 s, two minutes and a
    // bit ago, and never pinged: a daemon started now finds it overdue.
    let body = json!({"name": "nightly backup", "kind": "heartbeat", "period": 60, "grace": 60});
    let spec = healthchecker_core::ServiceSpec::try_from(
        healthchecker_core::RegisterRequest::from_json(body.to_string().as_bytes()).unwrap(),
    )
    .unwrap();
    let mut ping_id = String::new();
    let d = TestDaemon::start_with(|c| {
        let reg = with_store(c, |store| {
            store
                .register(
                    &spec,
                    "",
                    healthchecker_server::clock::now_ms() - 125_000,
                    usize::MAX,
                )
                .unwrap()
        });
        ping_id = reg.record.ping_id.clone().unwrap();
    })
    .await;
    d.wait_state("nightly backup", "unhealthy", Duration::from_secs(5))
        .await;
    let c = last_check(&d).await;
    assert_eq!(
        c["reason"], "no success ping within period + grace (1m + 1m)",
        "{c}"
    );
    // One failed check for the missed deadline. That it is judged once per
    // deadline, not once per turn of the scheduler, is tested over hours of
    // paused time (scheduler/tests.rs
    // `an_overdue_heartbeat_fails_once_per_missed_deadline`).
    let (_, v) = d
        .get(&format!(
            "/api/v1/services/{}/checks",
            enc("nightly backup")
        ))
        .await;
    assert_eq!(v["checks"].as_array().unwrap().len(), 1, "{v}");
    let (st, _) = ping(&d, &format!("/ping/{ping_id}"), "").await;
    assert_eq!(st, 200);
    d.wait_state("nightly backup", "healthy", Duration::from_secs(3))
        .await;
    wait_for("the event log", Duration::from_secs(3), || async {
        let (_, ev) = d.get("/api/v1/events?service=nightly%20backup").await;
        let n = ev["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "state")
            .count();
        (n == 2).then_some(())
    })
    .await;
    d.stop().await;
}
