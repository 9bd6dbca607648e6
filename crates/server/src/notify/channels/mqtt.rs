//! The `mqtt` channel: retained state per service, and Home Assistant MQTT
//! discovery, so that each service appears in Home Assistant as a
//! connectivity sensor with no configuration there (SPEC section 13).
//!
//! One connection per delivery (QoS 1, retained): the message counts as
//! delivered once the broker acknowledged every publish (PUBACK). A broker
//! that is down or restarts fails the delivery, which the outbox retries.
//! Every served service is also kept on the broker, notified or not, by
//! the presence sync ([`super::mqtt_sync`]), which publishes through
//! [`publish`] too.
//!
//! Topics use the service's id, which is never reused, because a name may
//! hold `/`, `+` or `#`:
//! - `{discovery_prefix}/binary_sensor/healthchecker_{id}/config`
//! - `{topic_prefix}/service/{id}/state`: `ON` (healthy, degraded), `OFF`
//!   (unhealthy) or `None` (unknown)
//! - `{topic_prefix}/service/{id}/attributes`: state, reason, since, target, link

use super::kinds::DeliveryError;
use crate::notify::message::Message;
use healthchecker_core::channel::{Channel, MQTT_DISCOVERY_PREFIX, MQTT_TOPIC_PREFIX};
use healthchecker_core::{HealthState, ServiceId};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use std::sync::Arc;
use std::time::Duration;

/// Longest one delivery (connect, publish, acknowledgements) may take.
pub const MQTT_TIMEOUT: Duration = Duration::from_secs(15);

/// The topics of one service on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// `{discovery_prefix}/binary_sensor/healthchecker_{id}/config`.
    pub config: String,
    /// `{topic_prefix}/service/{id}/state`.
    pub state: String,
    /// `{topic_prefix}/service/{id}/attributes`.
    pub attributes: String,
}

/// The topics of service `service_id` on `channel`.
pub fn topics(channel: &Channel, service_id: ServiceId) -> Topics {
    let prefix = channel.topic_prefix.as_deref().unwrap_or(MQTT_TOPIC_PREFIX);
    let discovery = channel
        .discovery_prefix
        .as_deref()
        .unwrap_or(MQTT_DISCOVERY_PREFIX);
    let base = format!("{prefix}/service/{service_id}");
    Topics {
        config: format!("{discovery}/binary_sensor/healthchecker_{service_id}/config"),
        state: format!("{base}/state"),
        attributes: format!("{base}/attributes"),
    }
}

/// The Home Assistant discovery config of service `service_id` named
/// `service` (the device's name), whose dashboard page is `link`.
pub fn discovery_config(t: &Topics, service_id: ServiceId, service: &str, link: &str) -> String {
    let id = format!("healthchecker_{service_id}");
    serde_json::json!({
        "name": null,
        "unique_id": id,
        "object_id": id,
        "device_class": "connectivity",
        "state_topic": t.state,
        "payload_on": "ON",
        "payload_off": "OFF",
        "json_attributes_topic": t.attributes,
        "device": {
            "identifiers": [id],
            "name": service,
            "manufacturer": "healthchecker",
            "model": "health check",
            "configuration_url": link,
        },
        "origin": {"name": "healthchecker", "sw_version": env!("CARGO_PKG_VERSION")},
    })
    .to_string()
}

/// The state topic's payload: `ON` (healthy, degraded), `OFF` (unhealthy),
/// `None` (unknown: Home Assistant shows the sensor's state as unknown).
pub fn state_payload(state: HealthState) -> &'static str {
    match state {
        HealthState::Healthy | HealthState::Degraded => "ON",
        HealthState::Unhealthy => "OFF",
        HealthState::Unknown => "None",
    }
}

/// The retained publications for `m`: (topic, payload), in order.
pub fn publications(channel: &Channel, m: &Message) -> Vec<(String, String)> {
    if m.test {
        let prefix = channel.topic_prefix.as_deref().unwrap_or(MQTT_TOPIC_PREFIX);
        return vec![(format!("{prefix}/test"), m.short())];
    }
    let t = topics(channel, m.service_id);
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
            t.config.clone(),
            discovery_config(&t, m.service_id, &m.service, &m.link),
        ),
        (t.attributes, attributes.to_string()),
        (t.state, state_payload(m.state).to_string()),
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
    let client_id = format!("healthchecker-{}", m.delivery_id);
    publish(channel, &client_id, publications(channel, m), !m.test).await
}

/// Publishes `pubs` (topic, payload; an empty payload clears a retained
/// message) in order over one connection as `client_id`, QoS 1; `Ok` once
/// the broker acknowledged every one, within [`MQTT_TIMEOUT`].
pub async fn publish(
    channel: &Channel,
    client_id: &str,
    pubs: Vec<(String, String)>,
    retain: bool,
) -> Result<(), DeliveryError> {
    let opts = options(channel, client_id)?;
    let (client, mut events) = AsyncClient::new(opts, pubs.len() + 4);
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
