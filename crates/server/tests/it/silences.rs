//! Silences (SPEC section 14): notifications of a silenced service are
//! held; when the silence ends, a service back where it was sends nothing
//! and one still failing sends one message with the transitions.

use healthchecker_testkit::{wait_for, Answer, HttpTarget, Mode, Receiver, TestDaemon};
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(40);

fn rfc3339_in(d: Duration) -> String {
    (time::OffsetDateTime::now_utc() + d)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

async fn post(d: &TestDaemon, path: &str, body: Value) -> (u16, Value) {
    let r = d.http.post(d.at(path)).json(&body).send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// A healthy service on a webhook default channel.
async fn setup(d: &TestDaemon, rx: &Receiver, t: &HttpTarget) {
    let (s, v) = post(
        d,
        "/api/v1/channels",
        json!({"name": "hook", "kind": "webhook", "url": rx.url("/in"), "secret": "k", "default": true}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = d
        .register(json!({"name": "nas", "url": t.url("/health"), "tags": ["storage"],
                         "interval": 5, "timeout": 2, "healthy_threshold": 2, "unhealthy_threshold": 2}))
        .await;
    assert_eq!(s, 201, "{v}");
    d.wait_state("nas", "healthy", WAIT).await;
}

#[tokio::test]
async fn a_silence_over_a_failure_and_recovery_sends_nothing() {
    let rx = Receiver::start(Answer::Ok).await;
    let t = HttpTarget::start(Mode::Pass).await;
    let d = TestDaemon::start_with(|c| c.notify_min_gap = Duration::ZERO).await;
    setup(&d, &rx, &t).await;
    let (s, v) = post(
        &d,
        "/api/v1/silences",
        json!({"tags": ["storage"], "ends_at": rfc3339_in(Duration::from_secs(40)), "comment": "NAS upgrade"}),
    )
    .await;
    assert_eq!((s, v["active"].as_bool()), (201, Some(true)), "{v}");
    t.set(Mode::Fail("upgrading".into()));
    d.wait_state("nas", "unhealthy", WAIT).await;
    t.set(Mode::Pass);
    d.wait_state("nas", "healthy", WAIT).await;
    let rows = wait_for(
        "the held rows suppressed at the silence's end",
        Duration::from_secs(60),
        || async {
            let (_, v) = d.get("/api/v1/notifications?status=suppressed").await;
            let rows = v["deliveries"].as_array()?.clone();
            (rows.len() >= 3).then_some(rows)
        },
    )
    .await;
    assert!(
        rows[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("back to healthy"),
        "{rows:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(rx.received().is_empty(), "no message: {:?}", rx.received());
    d.stop().await;
}

#[tokio::test]
async fn a_service_still_failing_when_its_silence_ends_gets_one_message() {
    let rx = Receiver::start(Answer::Ok).await;
    let t = HttpTarget::start(Mode::Pass).await;
    let d = TestDaemon::start_with(|c| c.notify_min_gap = Duration::ZERO).await;
    setup(&d, &rx, &t).await;
    let (s, v) = post(&d, "/api/v1/silences", json!({"services": ["nas"], "starts_at": rfc3339_in(Duration::from_secs(60)), "ends_at": rfc3339_in(Duration::from_secs(1))})).await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("ends_at")),
        "{v}"
    );
    let (s, v) = post(
        &d,
        "/api/v1/silences",
        json!({"services": ["nas"], "ends_at": rfc3339_in(Duration::from_secs(20))}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    t.set(Mode::Fail("disk full".into()));
    d.wait_state("nas", "unhealthy", WAIT).await;
    let (_, held) = d.get("/api/v1/notifications?status=held").await;
    assert_eq!(held["deliveries"].as_array().unwrap().len(), 2, "{held}");
    assert!(rx.received().is_empty());
    let got = rx.wait_accepted(1, WAIT).await;
    let v = got[0].json();
    assert_eq!(v["state"], "unhealthy");
    assert_eq!(v["transitions"].as_array().unwrap().len(), 2, "{v}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        rx.received().len(),
        1,
        "one message, not one per transition"
    );
    let (_, list) = d.get("/api/v1/silences").await;
    let id = list["silences"][0]["id"].as_i64().unwrap();
    let r = d
        .http
        .delete(d.at(&format!("/api/v1/silences/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    d.stop().await;
}
