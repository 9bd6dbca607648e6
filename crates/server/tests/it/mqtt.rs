//! The `mqtt` channel against a real Mosquitto broker, checked by a real
//! subscriber: retained state per service and Home Assistant discovery.

use healthchecker_testkit::mosquitto::{retained, Mosquitto};
use healthchecker_testkit::{closed_port, wait_for, TestDaemon};
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(40);

async fn setup(d: &TestDaemon, broker_url: &str) {
    let r = d
        .http
        .post(d.at("/api/v1/channels"))
        .json(&json!({"name": "ha", "kind": "mqtt", "url": broker_url, "default": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
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
    let r = d
        .http
        .post(d.at("/api/v1/channels"))
        .json(&json!({"name": "probe", "kind": "mqtt", "url": broker.url()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
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
