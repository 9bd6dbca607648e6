//! The `mqtt` channel: retained state per service, and Home Assistant MQTT
//! discovery, so that each service appears in Home Assistant as a
//! connectivity sensor with no configuration there (SPEC section 13).
//!
//! One connection per delivery (QoS 1, retained): the message counts as
//! delivered once the broker acknowledged every publish (PUBACK). A broker
//! that is down or restarts fails the delivery, which the outbox retries.
//!
//! Topics use the service's id, which is never reused, because a name may
//! hold `/`, `+` or `#`:
//! - `{discovery_prefix}/binary_sensor/healthchecker_{id}/config`
//! - `{topic_prefix}/service/{id}/state`: `ON` (healthy, degraded) or `OFF`
//! - `{topic_prefix}/service/{id}/attributes`: state, reason, since, target, link

use super::kinds::DeliveryError;
use super::message::Message;
use healthchecker_core::channel::{Channel, MQTT_DISCOVERY_PREFIX, MQTT_TOPIC_PREFIX};
use healthchecker_core::HealthState;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use std::sync::Arc;
use std::time::Duration;

/// Longest one delivery (connect, publish, acknowledgements) may take.
pub const MQTT_TIMEOUT: Duration = Duration::from_secs(15);

/// The retained publications for `m`: (topic, payload), in order.
pub fn publications(channel: &Channel, m: &Message) -> Vec<(String, String)> {
    let prefix = channel.topic_prefix.as_deref().unwrap_or(MQTT_TOPIC_PREFIX);
    if m.test {
        return vec![(format!("{prefix}/test"), m.short())];
    }
    let discovery = channel
        .discovery_prefix
        .as_deref()
        .unwrap_or(MQTT_DISCOVERY_PREFIX);
    let id = format!("healthchecker_{}", m.service_id);
    let base = format!("{prefix}/service/{}", m.service_id);
    let config = serde_json::json!({
        "name": null,
        "unique_id": id,
        "object_id": id,
        "device_class": "connectivity",
        "state_topic": format!("{base}/state"),
        "payload_on": "ON",
        "payload_off": "OFF",
        "json_attributes_topic": format!("{base}/attributes"),
        "device": {
            "identifiers": [id],
            "name": m.service,
            "manufacturer": "healthchecker",
            "model": "health check",
            "configuration_url": m.link,
        },
        "origin": {"name": "healthchecker", "sw_version": env!("CARGO_PKG_VERSION")},
    });
    let on = matches!(m.state, HealthState::Healthy | HealthState::Degraded);
    let attributes = serde_json::json!({
        "service": m.service,
        "state": m.state.as_str(),
        "reason": m.reason,
        "since": crate::clock::rfc3339(m.at),
        "target": m.target,
        "link": m.link,
        "delivery_id": m.delivery_id,
    });
    vec![
        (
            format!("{discovery}/binary_sensor/{id}/config"),
            config.to_string(),
        ),
        (format!("{base}/attributes"), attributes.to_string()),
        (
            format!("{base}/state"),
            if on { "ON" } else { "OFF" }.to_string(),
        ),
    ]
}

fn options(channel: &Channel, client_id: &str) -> Result<MqttOptions, DeliveryError> {
    let bad = |m: &str| DeliveryError {
        message: m.to_string(),
        retry_after: None,
    };
    let url = channel.url.as_deref().unwrap_or_default();
    let u = url::Url::parse(url).map_err(|_| bad("invalid broker url"))?;
    let host = u
        .host_str()
        .ok_or_else(|| bad("broker url without host"))?
        .trim_matches(['[', ']'])
        .to_string();
    let tls = u.scheme() == "mqtts";
    let port = u.port().unwrap_or(if tls { 8883 } else { 1883 });
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_clean_session(true);
    if let Some(user) = &channel.username {
        let pass = channel
            .secret
            .as_ref()
            .map(|s| s.expose().to_string())
            .unwrap_or_default();
        o.set_credentials(user.clone(), pass);
    }
    if tls {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(c);
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(cfg),
        )));
    }
    Ok(o)
}

/// Publishes `m` to the broker; `Ok` once every publish is acknowledged.
pub async fn send(channel: &Channel, m: &Message) -> Result<(), DeliveryError> {
    let pubs = publications(channel, m);
    let client_id = format!("healthchecker-{}", m.delivery_id);
    let opts = options(channel, &client_id)?;
    let (client, mut events) = AsyncClient::new(opts, pubs.len() + 4);
    let retain = !m.test;
    let n = pubs.len();
    for (topic, payload) in pubs {
        client
            .publish(topic, QoS::AtLeastOnce, retain, payload.into_bytes())
            .await
            .map_err(|e| DeliveryError {
                message: format!("MQTT publish: {e}"),
                retry_after: None,
            })?;
    }
    let acked = async {
        let mut acks = 0;
        while acks < n {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acks += 1,
                Ok(_) => {}
                Err(e) => return Err(format!("MQTT broker: {e}")),
            }
        }
        Ok(())
    };
    let result = match tokio::time::timeout(MQTT_TIMEOUT, acked).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "MQTT broker did not acknowledge within {}s",
            MQTT_TIMEOUT.as_secs()
        )),
    };
    if result.is_ok() {
        // A clean DISCONNECT, bounded: the publications are already acknowledged.
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while events.poll().await.is_ok() {}
        })
        .await;
    }
    result.map_err(|message| DeliveryError {
        message,
        retry_after: None,
    })
}
