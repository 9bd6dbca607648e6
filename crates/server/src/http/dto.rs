//! Response bodies: how stored records look in the API.

use crate::clock::rfc3339;
use crate::store::{CheckRecord, EventRecord, NotificationRecord, ServiceRecord, Uptime};
use serde_json::{json, Value};

/// Options for rendering a service.
#[derive(Default)]
pub struct ServiceView<'a> {
    /// Uptime ratios, if computed.
    pub uptime: Option<Uptime>,
    /// The token just issued (registration responses only).
    pub token: Option<&'a str>,
    /// Recent checks to embed.
    pub recent_checks: Option<&'a [CheckRecord]>,
}

fn path_segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A service as JSON: parameters, state, counters, last check, uptime.
pub fn service_json(r: &ServiceRecord, view: ServiceView<'_>) -> Value {
    let s = &r.spec;
    let t = &s.target;
    let seg = path_segment(&s.name);
    let mut v = json!({
        "name": s.name,
        "url": t.url(),
        "protocol": t.protocol.as_str(),
        "host": t.host,
        "port": t.port,
        "path": if t.protocol.is_http() { Value::from(t.path.as_str()) } else { Value::Null },
        "email": s.emails.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        "timeout": s.timeout,
        "interval": s.interval,
        "unhealthy_threshold": s.unhealthy_threshold,
        "healthy_threshold": s.healthy_threshold,
        "expected_status": s.expected_status.to_string(),
        "tls_verify": s.tls_verify,
        "cert_warn_days": s.cert_warn_days,
        "state": r.state.as_str(),
        "monitoring": if r.paused { "paused" } else { "active" },
        "paused": r.paused,
        "state_since": rfc3339(r.state_since),
        "consecutive_successes": r.successes,
        "consecutive_failures": r.failures,
        "last_check": r.last_check.as_ref().map(|c| json!({
            "at": rfc3339(c.at),
            "result": c.result.as_str(),
            "reason": c.reason,
            "duration_ms": c.duration_us as f64 / 1000.0,
        })),
        "last_healthy_at": r.last_healthy_at.map(rfc3339),
        "last_failure_reason": r.last_failure_reason,
        "cert_expires_at": r.cert_expires_at.map(rfc3339),
        "created_at": rfc3339(r.created_at),
        "updated_at": rfc3339(r.updated_at),
        "links": {
            "self": format!("/api/v1/services/{seg}"),
            "checks": format!("/api/v1/services/{seg}/checks"),
            "dashboard": format!("/services/{seg}"),
        },
    });
    if let Some(u) = view.uptime {
        v["uptime"] = json!({"24h": u.day, "7d": u.week});
    }
    if let Some(tok) = view.token {
        v["token"] = tok.into();
    }
    if let Some(checks) = view.recent_checks {
        v["recent_checks"] = checks.iter().map(check_json).collect();
    }
    v
}

/// A check as JSON.
pub fn check_json(c: &CheckRecord) -> Value {
    json!({
        "id": c.id,
        "at": rfc3339(c.at),
        "result": c.result.as_str(),
        "reason": c.reason,
        "duration_ms": c.duration_us as f64 / 1000.0,
        "http_status": c.http_status,
        "details": c.details.as_deref().and_then(|d| serde_json::from_str::<Value>(d).ok()),
    })
}

/// An event as JSON.
pub fn event_json(e: &EventRecord) -> Value {
    json!({
        "id": e.id,
        "at": rfc3339(e.at),
        "service": e.service,
        "kind": e.kind,
        "from": e.from.map(|s| s.as_str()),
        "to": e.to.map(|s| s.as_str()),
        "check_id": e.check_id,
        "reason": e.reason,
    })
}

/// An outbox row as JSON.
pub fn notification_json(n: &NotificationRecord) -> Value {
    json!({
        "id": n.id,
        "service": n.service,
        "event_id": n.event_id,
        "created_at": rfc3339(n.created_at),
        "from": n.from.as_str(),
        "to": n.to.as_str(),
        "reason": n.reason,
        "recipients": n.recipients,
        "status": n.status,
        "attempts": n.attempts,
        "next_attempt_at": rfc3339(n.next_attempt_at),
        "last_error": n.last_error,
        "sent_at": n.sent_at.map(rfc3339),
        "message_id": n.message_id,
    })
}
