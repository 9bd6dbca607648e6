//! The wire format of each HTTP channel kind, as each service documents its
//! own API (SPEC section 13), and the one request that sends it.
//!
//! Errors never carry a URL (a Telegram token is part of its path) nor a
//! header: only the status and a bounded snippet of the answer.

use crate::notify::message::Message;
use healthchecker_core::channel::{Channel, ChannelKind};
use healthchecker_core::HealthState;
use hmac::{KeyInit, Mac};
use std::time::Duration;

/// Longest one delivery request may take (a hung receiver).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest `Retry-After` honoured (the back-off's own cap).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Bytes of a refusing receiver's answer kept in `last_error`.
const ERROR_SNIPPET: usize = 200;

/// Why a delivery failed; `retry_after` when the receiver said (429/503).
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryError {
    /// What went wrong, without URL or credentials.
    pub message: String,
    /// The receiver's `Retry-After`, honoured instead of the back-off.
    pub retry_after: Option<Duration>,
}

impl DeliveryError {
    fn plain(message: impl Into<String>) -> Self {
        DeliveryError {
            message: message.into(),
            retry_after: None,
        }
    }
}

/// The HTTP client of every channel: no proxy from the environment, no
/// redirects, a timeout per request.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("healthchecker/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a TLS backend is compiled in")
}

/// `sha256=<hex HMAC-SHA256 of body with secret>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn ntfy_priority(s: HealthState) -> &'static str {
    match s {
        HealthState::Unhealthy => "5",
        HealthState::Degraded => "4",
        _ => "3",
    }
}

fn gotify_priority(s: HealthState) -> u8 {
    match s {
        HealthState::Unhealthy => 8,
        HealthState::Degraded => 5,
        _ => 2,
    }
}

fn color(s: HealthState) -> u32 {
    match s {
        HealthState::Unhealthy => 0xD0_3030,
        HealthState::Degraded => 0xE0_A000,
        _ => 0x30_A050,
    }
}

/// Builds the request for `channel`.
pub fn request(
    http: &reqwest::Client,
    channel: &Channel,
    m: &Message,
) -> Result<reqwest::RequestBuilder, DeliveryError> {
    let url = channel.url.as_deref().unwrap_or_default();
    let secret = channel.secret.as_ref().map(|s| s.expose()).unwrap_or("");
    let json = |v: serde_json::Value| serde_json::to_vec(&v).expect("JSON serializes");
    let post_json = |u: String, body: Vec<u8>| {
        http.post(u)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
    };
    Ok(match channel.kind {
        ChannelKind::Webhook => {
            let body = json(m.event_json());
            post_json(url.to_string(), body.clone())
                .header("X-Healthchecker-Signature", signature(secret, &body))
                .header("Idempotency-Key", &m.delivery_id)
        }
        ChannelKind::Ntfy => {
            let tags = match m.state {
                HealthState::Unhealthy => "rotating_light",
                HealthState::Degraded => "warning",
                _ => "white_check_mark",
            };
            let mut b = http
                .post(url.to_string())
                .header("Title", header_safe(&m.title()))
                .header("Priority", ntfy_priority(m.state))
                .header("Tags", tags)
                .header("Click", header_safe(&m.link))
                .header("X-Healthchecker-Delivery", &m.delivery_id)
                .body(m.short());
            if !secret.is_empty() {
                b = b.bearer_auth(secret);
            }
            b
        }
        ChannelKind::Slack => post_json(
            url.to_string(),
            json(serde_json::json!({
                "text": format!("{}: {}", m.title(), m.short().lines().next().unwrap_or("")),
                "blocks": [
                    {"type": "header", "text": {"type": "plain_text", "text": m.title()}},
                    {"type": "section", "text": {"type": "mrkdwn", "text": m.short()}},
                ],
            })),
        ),
        ChannelKind::Discord => post_json(
            url.to_string(),
            json(serde_json::json!({
                "content": m.title(),
                "embeds": [{
                    "title": m.title(),
                    "description": m.short(),
                    "url": m.link,
                    "color": color(m.state),
                }],
                "allowed_mentions": {"parse": []},
            })),
        ),
        ChannelKind::Telegram => post_json(
            format!("{url}/bot{secret}/sendMessage"),
            json(serde_json::json!({
                "chat_id": channel.chat_id,
                "text": format!("{}\n{}", m.title(), m.short()),
                "disable_web_page_preview": true,
            })),
        ),
        ChannelKind::Gotify => post_json(
            format!("{url}/message"),
            json(serde_json::json!({
                "title": m.title(),
                "message": m.short(),
                "priority": gotify_priority(m.state),
            })),
        )
        .header("X-Gotify-Key", secret),
        ChannelKind::Matrix => {
            let seg = healthchecker_core::api::path_segment;
            let room = channel.room.as_deref().unwrap_or_default();
            http.put(format!(
                "{url}/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
                seg(room),
                seg(&m.delivery_id)
            ))
            .bearer_auth(secret)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(json(serde_json::json!({
                "msgtype": "m.text",
                "body": format!("{}\n{}", m.title(), m.short()),
            })))
        }
        ChannelKind::Pagerduty => {
            let dedup_key = if m.test {
                m.delivery_id.clone()
            } else {
                m.service_id.to_string()
            };
            let body = if m.recovered() && !m.test {
                serde_json::json!({
                    "routing_key": secret,
                    "event_action": "resolve",
                    "dedup_key": dedup_key,
                })
            } else {
                serde_json::json!({
                    "routing_key": secret,
                    "event_action": "trigger",
                    "dedup_key": dedup_key,
                    "payload": {
                        "summary": m.title(),
                        "source": m.target,
                        "severity": match m.state {
                            HealthState::Unhealthy => "critical",
                            HealthState::Degraded => "warning",
                            _ => "info",
                        },
                        "custom_details": {"reason": m.reason, "delivery_id": m.delivery_id},
                    },
                    "links": [{"href": m.link, "text": "healthchecker"}],
                })
            };
            post_json(url.to_string(), json(body))
        }
        ChannelKind::Email | ChannelKind::Mqtt => {
            return Err(DeliveryError::plain("not an HTTP kind"))
        }
    })
}

/// Header values cannot carry line breaks or non-visible ASCII safely.
fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Sends `m` to an HTTP channel: `Ok` on any 2xx.
pub async fn send(
    http: &reqwest::Client,
    channel: &Channel,
    m: &Message,
) -> Result<(), DeliveryError> {
    let req = request(http, channel, m)?;
    let resp = req.send().await.map_err(|e| {
        let e = e.without_url();
        let what = if e.is_timeout() {
            format!("no answer within {}s", REQUEST_TIMEOUT.as_secs())
        } else if e.is_connect() {
            format!("cannot connect: {e}")
        } else {
            e.to_string()
        };
        DeliveryError::plain(what)
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = resp
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
    let body = tokio::time::timeout(Duration::from_secs(5), resp.bytes())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let snippet: String = String::from_utf8_lossy(&body[..body.len().min(ERROR_SNIPPET)])
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let snippet = if secret_in(channel, &snippet) {
        String::new()
    } else {
        snippet
    };
    Err(DeliveryError {
        message: format!("HTTP {}: {}", status.as_u16(), snippet.trim()),
        retry_after,
    })
}

/// A receiver that echoes the credential back must not put it in the outbox.
fn secret_in(channel: &Channel, text: &str) -> bool {
    channel
        .secret
        .as_ref()
        .is_some_and(|s| !s.expose().is_empty() && text.contains(s.expose()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
