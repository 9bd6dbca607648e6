//! The `mqtt` channel against a real Mosquitto broker, checked by a real
//! subscriber: retained state per service and Home Assistant discovery.

use healthchecker_testkit::mosquitto::{retained, Mosquitto};
use healthchecker_testkit::{closed_port, wait_for, TestDaemon};
use serde_json::{json, Value};
use std::time::Duration;

/// Conditions are waited for up to this long. After a failed attempt the
/// delivery's retry backs off (5 s doubling), so under a loaded suite a
/// second or third failure before the broker is back can push the next
/// try past 40 s (the likely cause of one timeout seen in the full suite).
const WAIT: Duration = Duration::from_secs(90);

async fn setup(d: &TestDaemon, broker_url: &str) {
    d.add_channel(json!({"name": "ha", "kind": "mqtt", "url": broker_url, "default": true}))
        .await;
    let (s, v) = d
        .register(json!({
            "name": "nas/web #1", "url": format!("tcp://127.0.0.1:{}", closed_port()),
            "interval": 5, "timeout": 2, "unhealthy_threshold": 2,
        }))
        .await;
    assert_eq!(s, 201, "{v}");
}

/// Waits until the broker holds the service's retained state `OFF` and its
/// discovery config; returns (config, attributes).
async fn wait_retained(port: u16) -> (Value, Value) {
    wait_for("retained state and discovery config", WAIT, || async {
        let msgs = retained(port, "#", Duration::from_millis(700)).await;
        let get = |suffix: &str| {
            msgs.iter()
                .find(|(t, _)| t.ends_with(suffix))
                .map(|(t, p)| (t.clone(), p.clone()))
        };
        let (ct, config) = get("/config")?;
        let (st, state) = get("/state")?;
        let (_, attrs) = get("/attributes")?;
        assert!(
            ct.starts_with("homeassistant/binary_sensor/healthchecker_"),
            "{ct}"
        );
        (state == "OFF").then_some(())?;
        let config: Value = serde_json::from_str(&config).unwrap();
        assert_eq!(config["state_topic"], st.as_str());
        Some((config, serde_json::from_str(&attrs).unwrap()))
    })
    .await
}

#[tokio::test]
async fn home_assistant_sees_each_service_as_a_connectivity_sensor() {
    let broker = Mosquitto::start();
    let d = TestDaemon::start_with(|c| c.notify_min_gap = Duration::ZERO).await;
    // The test route publishes (not retained) and reports the broker's ack.
    d.add_channel(json!({"name": "probe", "kind": "mqtt", "url": broker.url()}))
        .await;
    let r = d
        .http
        .post(d.at("/api/v1/channels/probe/test"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["delivered"], true, "{v}");
    setup(&d, &broker.url()).await;
    d.wait_state("nas/web #1", "unhealthy", WAIT).await;
    let (config, attrs) = wait_retained(broker.port).await;
    assert_eq!(config["device_class"], "connectivity");
    assert_eq!(
        (
            config["payload_on"].as_str(),
            config["payload_off"].as_str()
        ),
        (Some("ON"), Some("OFF"))
    );
    assert!(config["unique_id"]
        .as_str()
        .unwrap()
        .starts_with("healthchecker_"));
    assert_eq!(config["device"]["name"], "nas/web #1");
    assert_eq!(attrs["state"], "unhealthy");
    assert!(
        attrs["reason"].as_str().unwrap().contains("refused"),
        "{attrs}"
    );
    d.stop().await;
}

#[tokio::test]
async fn a_broker_restart_during_delivery_loses_nothing() {
    let mut broker = Mosquitto::start();
    broker.stop();
    let d = TestDaemon::start_with(|c| c.notify_min_gap = Duration::ZERO).await;
    setup(&d, &broker.url()).await;
    // The broker is down: the delivery fails and stays pending.
    let pending = wait_for("a failed MQTT attempt", WAIT, || async {
        let (_, v) = d.get("/api/v1/notifications?status=pending").await;
        let rows = v["deliveries"].as_array()?.clone();
        rows.iter()
            .any(|r| r["attempts"].as_i64() >= Some(1))
            .then_some(rows)
    })
    .await;
    assert!(
        pending[0]["last_error"].as_str().unwrap().contains("MQTT"),
        "{pending:?}"
    );
    broker.restart();
    let (_, attrs) = wait_retained(broker.port).await;
    assert_eq!(attrs["state"], "unhealthy");
    let rows = wait_for("the delivery marked sent", WAIT, || async {
        let (_, v) = d.get("/api/v1/notifications?status=sent").await;
        let rows = v["deliveries"].as_array()?.clone();
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(rows.len(), 1);
    assert!(rows[0]["attempts"].as_i64() >= Some(2), "{rows:?}");
    d.stop().await;
}

/// The retained entity of the service named `name` under the discovery
/// prefix `discovery`: (config topic, config, state, attributes), found
/// through the discovery config's device name.
fn entity(
    msgs: &[(String, String)],
    discovery: &str,
    name: &str,
) -> Option<(String, Value, String, Value)> {
    let (topic, config) = msgs.iter().find_map(|(t, p)| {
        let v: Value = serde_json::from_str(p).ok()?;
        (t.starts_with(&format!("{discovery}/"))
            && t.ends_with("/config")
            && v["device"]["name"] == name)
            .then(|| (t.clone(), v))
    })?;
    let payload = |topic: &Value| {
        msgs.iter()
            .find(|(t, _)| Some(t.as_str()) == topic.as_str())
            .map(|(_, p)| p.clone())
    };
    let state = payload(&config["state_topic"])?;
    let attrs = serde_json::from_str(&payload(&config["json_attributes_topic"])?).ok()?;
    Some((topic, config, state, attrs))
}

/// Waits until the broker holds `name`'s entity under the discovery prefix
/// `discovery` with state `state`; returns (config topic, config, attributes).
async fn wait_entity(
    port: u16,
    discovery: &str,
    name: &str,
    state: &str,
) -> (String, Value, Value) {
    wait_for(
        &format!("{name}'s entity with state {state}"),
        WAIT,
        || async {
            let msgs = retained(port, "#", Duration::from_millis(700)).await;
            let (topic, config, s, attrs) = entity(&msgs, discovery, name)?;
            (s == state).then_some((topic, config, attrs))
        },
    )
    .await
}

async fn add_channel(d: &TestDaemon, body: Value) {
    let (s, v) = d.post_json("/api/v1/channels", &body).await;
    assert_eq!(s, 201, "{v}");
}

#[tokio::test]
async fn every_served_service_appears_follows_its_state_and_goes_when_deleted() {
    let broker = Mosquitto::start();
    let d = TestDaemon::start_with(|c| c.notify_min_gap = Duration::ZERO).await;
    add_channel(
        &d,
        json!({"name": "ha", "kind": "mqtt", "url": broker.url(), "default": true}),
    )
    .await;
    // A second channel on the same broker, not default, with its own prefixes.
    add_channel(
        &d,
        json!({"name": "lab", "kind": "mqtt", "url": broker.url(),
               "topic_prefix": "lab", "discovery_prefix": "lab-ha"}),
    )
    .await;
    let up = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = up.local_addr().unwrap().port();
    let web = json!({"name": "web", "url": format!("tcp://127.0.0.1:{port}"),
                     "interval": 5, "timeout": 2, "healthy_threshold": 2});
    let (s, v) = d.register(web.clone()).await;
    assert_eq!(s, 201, "{v}");
    // unknown → healthy notifies nobody; the sync publishes it anyway.
    let (topic, config, attrs) = wait_entity(broker.port, "homeassistant", "web", "ON").await;
    assert!(
        topic.starts_with("homeassistant/binary_sensor/healthchecker_"),
        "{topic}"
    );
    assert_eq!(config["device_class"], "connectivity");
    assert_eq!(attrs["state"], "healthy");
    assert_eq!(attrs["target"], format!("tcp://127.0.0.1:{port}"));
    let (_, n) = d.get("/api/v1/notifications").await;
    assert_eq!(n["deliveries"].as_array().map(Vec::len), Some(0), "{n}");
    // Not served by `lab`: nothing under its prefixes.
    let lab = retained(broker.port, "lab-ha/#", Duration::from_millis(500)).await;
    assert!(lab.is_empty(), "{lab:?}");

    // The target goes away: the retained state follows.
    drop(up);
    let (_, _, attrs) = wait_entity(broker.port, "homeassistant", "web", "OFF").await;
    assert_eq!(attrs["state"], "unhealthy");
    assert!(
        attrs["reason"].as_str().unwrap_or("").contains("refused"),
        "{attrs}"
    );

    // Routed to `lab` only: gone from `ha`'s prefixes, present under `lab`'s.
    let mut moved = web.clone();
    moved["channels"] = json!(["lab"]);
    let (s, v) = d.register(moved).await;
    assert!(s == 200 || s == 201, "{s} {v}");
    let (lab_topic, lab_config, _) = wait_entity(broker.port, "lab-ha", "web", "OFF").await;
    assert!(
        lab_topic.starts_with("lab-ha/binary_sensor/"),
        "{lab_topic}"
    );
    assert!(lab_config["state_topic"]
        .as_str()
        .unwrap()
        .starts_with("lab/service/"));
    wait_for("web cleared from ha's prefixes", WAIT, || async {
        let msgs = retained(broker.port, "#", Duration::from_millis(700)).await;
        let left: Vec<_> = msgs
            .iter()
            .filter(|(t, _)| t.starts_with("homeassistant/") || t.starts_with("healthchecker/"))
            .collect();
        left.is_empty().then_some(())
    })
    .await;

    // Deleted: its config (and state, attributes) topics are emptied.
    let r = d
        .http
        .delete(d.at("/api/v1/services/web"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    wait_for("web's entity removed", WAIT, || async {
        let msgs = retained(broker.port, "#", Duration::from_millis(700)).await;
        msgs.is_empty().then_some(())
    })
    .await;
    d.stop().await;
}

#[tokio::test]
async fn the_presence_sync_catches_up_after_a_broker_restart() {
    let mut broker = Mosquitto::start();
    broker.stop();
    let d = TestDaemon::start_with(|c| c.notify_min_gap = Duration::ZERO).await;
    add_channel(
        &d,
        json!({"name": "ha", "kind": "mqtt", "url": broker.url(), "default": true}),
    )
    .await;
    let up = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = up.local_addr().unwrap().port();
    let (s, v) = d
        .register(
            json!({"name": "db", "url": format!("tcp://127.0.0.1:{port}"),
                         "interval": 5, "timeout": 2, "healthy_threshold": 2}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    // Registered and healthy while the broker is down.
    d.wait_state("db", "healthy", WAIT).await;
    broker.restart();
    let (_, config, attrs) = wait_entity(broker.port, "homeassistant", "db", "ON").await;
    assert_eq!(config["payload_on"], "ON");
    assert_eq!(attrs["state"], "healthy");
    drop(up);
    d.stop().await;
}
