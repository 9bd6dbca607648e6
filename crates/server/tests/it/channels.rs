//! Named notification channels (SPEC section 13) against real local
//! receivers that check each request against the documented API of the
//! service they stand for.

use healthchecker_testkit::mosquitto::{retained, Mosquitto};
use healthchecker_testkit::{
    closed_port, enc, Answer, Received, Receiver, SmtpMode, SmtpSink, TestDaemon,
};
use hmac::{KeyInit, Mac};
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(40);

async fn post(d: &TestDaemon, path: &str, body: Value) -> (u16, Value) {
    let r = d.http.post(d.at(path)).json(&body).send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn add(d: &TestDaemon, body: Value) {
    let (s, v) = post(d, "/api/v1/channels", body.clone()).await;
    assert_eq!(s, 201, "{body} -> {v}");
}

/// A service whose target refuses connections: unknown -> unhealthy after
/// two checks, one notification.
async fn failing_service(d: &TestDaemon, name: &str, channels: &[&str]) {
    let (s, v) = d
        .register(json!({
            "name": name, "url": format!("tcp://127.0.0.1:{}", closed_port()),
            "interval": 5, "timeout": 2, "unhealthy_threshold": 2, "channels": channels,
        }))
        .await;
    assert_eq!(s, 201, "{v}");
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

fn check_webhook(r: &Received, secret: &str) {
    assert_eq!(r.method, "POST");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let sig = r.header("x-healthchecker-signature").expect("signature");
    assert_eq!(sig, format!("sha256={}", hmac_hex(secret, &r.body)));
    let v = r.json();
    assert_eq!(r.header("idempotency-key"), v["delivery_id"].as_str());
}

#[tokio::test]
async fn channels_are_named_objects_with_write_only_secrets() {
    let d = TestDaemon::start().await;
    let hook = json!({"name": "ops hook", "kind": "webhook", "url": "http://127.0.0.1:9/x", "secret": "s3cret-value"});
    add(&d, hook.clone()).await;
    let (s, v) = post(&d, "/api/v1/channels", json!({"name": "ops hook", "kind": "webhook", "url": "http://127.0.0.1:9/y", "default": true})).await;
    assert_eq!(s, 200, "an update without the secret keeps it: {v}");
    assert_eq!(v["secret_set"], true);
    assert_eq!(v["default"], true);
    add(&d, json!({"name": "team", "kind": "slack", "url": "https://hooks.slack.example/services/T0/B0/XYZSECRET"})).await;
    let (s, list) = d.get("/api/v1/channels").await;
    assert_eq!(s, 200);
    let text = list.to_string();
    assert!(
        !text.contains("s3cret-value") && !text.contains("XYZSECRET"),
        "{text}"
    );
    assert_eq!(list["channels"].as_array().unwrap().len(), 2);
    let (s, one) = d
        .get(&format!("/api/v1/channels/{}", enc("ops hook")))
        .await;
    assert_eq!(
        (s, one["url"].as_str()),
        (200, Some("http://127.0.0.1:9/y"))
    );
    // Bad input names the field.
    for (body, field) in [
        (
            json!({"name": "a", "kind": "webhook", "url": "ftp://h/x", "secret": "s"}),
            "url",
        ),
        (
            json!({"name": "a", "kind": "webhook", "url": "http://h/x"}),
            "secret",
        ),
        (json!({"name": "a", "kind": "carrier-pigeon"}), "kind"),
        (
            json!({"name": "a", "kind": "gotify", "url": "http://h"}),
            "token",
        ),
    ] {
        let (s, v) = post(&d, "/api/v1/channels", body.clone()).await;
        assert_eq!(s, 400, "{body} -> {v}");
        assert_eq!(v["error"]["field"], field, "{v}");
    }
    let r = d
        .http
        .post(d.at("/api/v1/channels"))
        .header("content-type", "text/plain")
        .body(hook.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    // A service may name only existing channels.
    let (s, v) = d
        .register(json!({"name": "svc", "url": "http://127.0.0.1:9/health", "channels": ["nope"]}))
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("channels")),
        "{v}"
    );
    let r = d
        .http
        .delete(d.at("/api/v1/channels/team"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(d.get("/api/v1/channels/team").await.0, 404);
    d.stop().await;
}

#[tokio::test]
async fn the_test_route_sends_now_and_answers_the_result() {
    let rx = Receiver::start(Answer::Ok).await;
    let d = TestDaemon::start().await;
    add(
        &d,
        json!({"name": "hook", "kind": "webhook", "url": rx.url("/hook"), "secret": "k"}),
    )
    .await;
    let (s, v) = post(&d, "/api/v1/channels/hook/test", json!({})).await;
    assert_eq!((s, v["delivered"].as_bool()), (200, Some(true)), "{v}");
    let got = rx.accepted();
    assert_eq!(got.len(), 1);
    check_webhook(&got[0], "k");
    assert_eq!(got[0].json()["type"], "test");
    rx.set(Answer::Status(500));
    let (s, v) = post(&d, "/api/v1/channels/hook/test", json!({})).await;
    assert_eq!((s, v["delivered"].as_bool()), (200, Some(false)), "{v}");
    assert!(v["error"].as_str().unwrap().contains("HTTP 500"), "{v}");
    d.stop().await;
}

#[tokio::test]
async fn a_service_going_down_reaches_every_kind() {
    let sink = SmtpSink::start(SmtpMode::Accept);
    let smtp = format!("smtp://127.0.0.1:{}", sink.port);
    let d = TestDaemon::start_with(|c| {
        c.smtp = Some(healthchecker_server::config::SmtpConfig {
            url: smtp.parse().unwrap(),
            from: "hc <hc@example.com>".into(),
            password: None,
        });
        c.notify_min_gap = Duration::ZERO;
        c.public_url = "http://dash.example:8484".into();
    })
    .await;
    let kinds = [
        "webhook",
        "ntfy",
        "slack",
        "discord",
        "telegram",
        "gotify",
        "matrix",
        "pagerduty",
    ];
    let mut rx = Vec::new();
    for k in kinds {
        rx.push(Receiver::start(Answer::Ok).await);
        let r = rx.last().unwrap();
        let body = match k {
            "webhook" => json!({"url": r.url("/in"), "secret": "whsec"}),
            "ntfy" => json!({"url": r.url("/alerts"), "token": "tk_ntfy"}),
            "slack" | "discord" => json!({"url": r.url("/hook/abc")}),
            "telegram" => json!({"url": r.url(""), "token": "123:ABC", "chat_id": "-1001"}),
            "gotify" => json!({"url": r.url(""), "token": "gotify-app"}),
            "matrix" => json!({"url": r.url(""), "token": "mx-token", "room": "!room:example.org"}),
            _ => json!({"url": r.url("/v2/enqueue"), "routing_key": "R0UT1NG"}),
        };
        let mut body = body.as_object().unwrap().clone();
        body.insert("name".into(), json!(k));
        body.insert("kind".into(), json!(k));
        add(&d, Value::Object(body)).await;
    }
    add(
        &d,
        json!({"name": "mail", "kind": "email", "to": ["oncall@example.com"]}),
    )
    .await;
    let broker = Mosquitto::start();
    add(
        &d,
        json!({"name": "ha", "kind": "mqtt", "url": broker.url()}),
    )
    .await;
    let mut names: Vec<&str> = kinds.to_vec();
    names.extend(["mail", "ha"]);
    failing_service(&d, "nas web", &names).await;
    d.wait_state("nas web", "unhealthy", WAIT).await;
    let got: Vec<Received> = {
        let mut v = Vec::new();
        for r in &rx {
            v.push(r.wait_accepted(1, WAIT).await.remove(0));
        }
        v
    };
    for (k, r) in kinds.iter().zip(&got) {
        match *k {
            "webhook" => {
                check_webhook(r, "whsec");
                let v = r.json();
                assert_eq!(r.path, "/in");
                assert_eq!(
                    (v["service"].as_str(), v["state"].as_str()),
                    (Some("nas web"), Some("unhealthy"))
                );
                assert_eq!(v["link"], "http://dash.example:8484/services/nas%20web");
            }
            "ntfy" => {
                assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/alerts"));
                assert_eq!(r.header("title"), Some("nas web is UNHEALTHY"));
                assert_eq!(r.header("priority"), Some("5"));
                assert!(r.header("tags").is_some());
                assert_eq!(r.header("authorization"), Some("Bearer tk_ntfy"));
                assert!(r.text().contains("refused"), "{}", r.text());
            }
            "slack" => {
                let v = r.json();
                assert!(
                    v["text"].as_str().unwrap().contains("nas web is UNHEALTHY"),
                    "{v}"
                );
                assert!(v["blocks"].as_array().is_some_and(|b| !b.is_empty()), "{v}");
            }
            "discord" => {
                let v = r.json();
                assert!(v["content"].as_str().unwrap().contains("UNHEALTHY"), "{v}");
                assert_eq!(v["embeds"][0]["title"], "nas web is UNHEALTHY");
            }
            "telegram" => {
                assert_eq!(
                    (r.method.as_str(), r.path.as_str()),
                    ("POST", "/bot123:ABC/sendMessage")
                );
                let v = r.json();
                assert_eq!(v["chat_id"], "-1001");
                assert!(v["text"].as_str().unwrap().contains("nas web is UNHEALTHY"));
            }
            "gotify" => {
                assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/message"));
                assert_eq!(r.header("x-gotify-key"), Some("gotify-app"));
                let v = r.json();
                assert_eq!(v["title"], "nas web is UNHEALTHY");
                assert!(v["message"].is_string() && v["priority"].is_number(), "{v}");
            }
            "matrix" => {
                assert_eq!(r.method, "PUT");
                let prefix =
                    "/_matrix/client/v3/rooms/%21room%3Aexample%2Eorg/send/m.room.message/";
                assert!(r.path.starts_with(prefix), "{}", r.path);
                assert!(r.path.len() > prefix.len());
                assert_eq!(r.header("authorization"), Some("Bearer mx-token"));
                assert_eq!(r.json()["msgtype"], "m.text");
            }
            _ => {
                assert_eq!(r.path, "/v2/enqueue");
                let v = r.json();
                assert_eq!(v["routing_key"], "R0UT1NG");
                assert_eq!(v["event_action"], "trigger");
                // The service's id: the same key resolves the incident.
                assert!(
                    v["dedup_key"].as_str().unwrap().parse::<i64>().is_ok(),
                    "{v}"
                );
                assert_eq!(v["payload"]["severity"], "critical");
                assert!(v["payload"]["summary"].is_string() && v["payload"]["source"].is_string());
            }
        }
    }
    let mails = sink.wait_mails(1, WAIT).await;
    assert_eq!(mails[0].subject, "[healthchecker] nas web is UNHEALTHY");
    assert_eq!(mails[0].envelope_to, ["oncall@example.com"]);
    let state = healthchecker_testkit::wait_for("the retained MQTT state", WAIT, || async {
        let msgs = retained(broker.port, "healthchecker/#", Duration::from_millis(500)).await;
        msgs.into_iter().find(|(t, _)| t.ends_with("/state"))
    })
    .await;
    assert_eq!(state.1, "OFF");
    // Every delivery is recorded as sent, one per channel: all ten kinds.
    let rows = healthchecker_testkit::wait_for("deliveries marked sent", WAIT, || async {
        let (_, v) = d.get("/api/v1/notifications?status=sent").await;
        let rows = v["deliveries"].as_array().cloned().unwrap_or_default();
        (rows.len() == 10).then_some(rows)
    })
    .await;
    assert!(
        rows.iter().all(|r| r["delivery_id"].is_string()),
        "{rows:?}"
    );
    d.stop().await;
}

#[tokio::test]
async fn a_hung_receiver_does_not_delay_another_channel() {
    let hung = Receiver::start(Answer::Hang).await;
    let fine = Receiver::start(Answer::Ok).await;
    let d = TestDaemon::start_with(|c| c.notify_min_gap = Duration::ZERO).await;
    add(
        &d,
        json!({"name": "hung", "kind": "slack", "url": hung.url("/h"), "default": true}),
    )
    .await;
    add(
        &d,
        json!({"name": "fine", "kind": "slack", "url": fine.url("/f"), "default": true}),
    )
    .await;
    failing_service(&d, "router", &[]).await;
    d.wait_state("router", "unhealthy", WAIT).await;
    let got = fine.wait_accepted(1, Duration::from_secs(5)).await;
    let hung_at =
        healthchecker_testkit::wait_for("the hung receiver to be asked", WAIT, || async {
            hung.received().first().map(|r| r.at)
        })
        .await;
    assert!(
        got[0].at < hung_at + Duration::from_secs(3),
        "the hang did not hold up the other channel"
    );
    d.stop().await;
}

#[tokio::test]
async fn retry_after_is_honoured_and_each_delivery_id_arrives_once() {
    let rx = Receiver::start(Answer::TooMany(3)).await;
    let d = TestDaemon::start_with(|c| c.notify_min_gap = Duration::ZERO).await;
    add(&d, json!({"name": "hook", "kind": "webhook", "url": rx.url("/in"), "secret": "k", "default": true})).await;
    failing_service(&d, "db", &[]).await;
    let first = healthchecker_testkit::wait_for("the first attempt", WAIT, || async {
        rx.received().first().cloned()
    })
    .await;
    rx.set(Answer::Close);
    let second = healthchecker_testkit::wait_for("a second attempt", WAIT, || async {
        rx.received().get(1).cloned()
    })
    .await;
    assert!(
        second.at >= first.at + Duration::from_millis(2900),
        "Retry-After: 3 honoured"
    );
    rx.set(Answer::Ok);
    let ok = rx.wait_accepted(1, WAIT).await;
    let key = first.header("idempotency-key").unwrap().to_string();
    for r in [&second, &ok[0]] {
        assert_eq!(
            r.header("idempotency-key"),
            Some(key.as_str()),
            "a retry keeps its delivery id"
        );
    }
    // Delivered once: no further request carries it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let accepted = rx.accepted();
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    let (_, v) = d.get("/api/v1/notifications").await;
    let rows = v["deliveries"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!(
        (rows[0]["status"].as_str(), rows[0]["attempts"].as_i64()),
        (Some("sent"), Some(3)),
        "{v}"
    );
    d.stop().await;
}
