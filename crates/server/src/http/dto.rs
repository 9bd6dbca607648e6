//! How stored records look in the API. The response types themselves are
//! [`healthchecker_core::api`]'s, shared with the client and, with the core
//! feature `openapi`, the schemas of the OpenAPI document: the document,
//! the answers and the client cannot drift apart.

use crate::clock::rfc3339;
use crate::store::{CheckRecord, EventRecord, NotificationRecord, ServiceRecord, Uptime};
pub use healthchecker_core::api::{
    path_segment, Check, CheckList, Delivery, ErrorBody, Event, EventList, LastCheck, Monitoring,
    Notification, NotificationList, Service, ServiceKind, ServiceLinks, ServiceList,
};
use serde_json::Value;

/// A channel outbox row as the API shows it.
pub fn delivery_dto(d: &crate::store::DeliveryRecord) -> Delivery {
    Delivery {
        id: d.id,
        delivery_id: d.delivery_id(),
        channel: d.channel.clone(),
        service: d.service.clone(),
        event_id: d.event_id,
        created_at: rfc3339(d.created_at),
        from: d.from,
        to: d.to,
        reason: d.reason.clone(),
        status: d.status.clone(),
        attempts: d.attempts,
        next_attempt_at: rfc3339(d.next_attempt_at),
        last_error: d.last_error.clone(),
        sent_at: d.sent_at.map(rfc3339),
    }
}

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

/// A service as the API shows it.
pub fn service_dto(r: &ServiceRecord, view: ServiceView<'_>) -> Service {
    let s = &r.spec;
    let t = &s.target;
    let seg = path_segment(&s.name);
    Service {
        name: s.name.clone(),
        url: t.url(),
        protocol: t.protocol.as_str().into(),
        host: t.host.clone(),
        port: t.port,
        path: t.protocol.is_http().then(|| t.path.clone()),
        email: s.emails.iter().map(|e| e.to_string()).collect(),
        channels: (!s.channels.is_empty()).then(|| s.channels.clone()),
        tags: (!s.tags.is_empty()).then(|| s.tags.clone()),
        depends_on: (!s.depends_on.is_empty()).then(|| s.depends_on.clone()),
        timeout: s.timeout,
        interval: s.interval,
        unhealthy_threshold: s.unhealthy_threshold,
        healthy_threshold: s.healthy_threshold,
        expected_status: s.expected_status.to_string(),
        tls_verify: s.tls_verify,
        cert_warn_days: s.cert_warn_days,
        state: r.state,
        monitoring: if r.paused {
            Monitoring::Paused
        } else {
            Monitoring::Active
        },
        paused: r.paused,
        state_since: rfc3339(r.state_since),
        consecutive_successes: r.successes,
        consecutive_failures: r.failures,
        last_check: r.last_check.as_ref().map(|c| LastCheck {
            at: rfc3339(c.at),
            result: c.result,
            reason: c.reason.clone(),
            duration_ms: c.duration_us as f64 / 1000.0,
        }),
        last_healthy_at: r.last_healthy_at.map(rfc3339),
        last_failure_reason: r.last_failure_reason.clone(),
        cert_expires_at: r.cert_expires_at.map(rfc3339),
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
        links: ServiceLinks {
            self_: format!("/api/v1/services/{seg}"),
            checks: format!("/api/v1/services/{seg}/checks"),
            dashboard: format!("/services/{seg}"),
        },
        uptime: view.uptime.map(|u| healthchecker_core::api::Uptime {
            day: u.day,
            week: u.week,
            month: u.month,
            quarter: u.quarter,
        }),
        token: view.token.map(str::to_string),
        recent_checks: view
            .recent_checks
            .map(|c| c.iter().map(check_dto).collect()),
        kind: if s.heartbeat.is_some() {
            ServiceKind::Heartbeat
        } else {
            ServiceKind::Check
        },
        period: s.heartbeat.map(|h| h.period),
        grace: s.heartbeat.map(|h| h.grace),
        last_ping_at: r.last_ping_at.map(rfc3339),
        ping_url: view
            .token
            .and(r.ping_id.as_ref())
            .map(|id| format!("/ping/{id}")),
    }
}

/// A service as JSON.
pub fn service_json(r: &ServiceRecord, view: ServiceView<'_>) -> Value {
    serde_json::to_value(service_dto(r, view)).unwrap_or(Value::Null)
}

/// A check as the API shows it.
pub fn check_dto(c: &CheckRecord) -> Check {
    Check {
        id: c.id,
        at: rfc3339(c.at),
        result: c.result,
        reason: c.reason.clone(),
        duration_ms: c.duration_us as f64 / 1000.0,
        http_status: c.http_status,
        details: c
            .details
            .as_deref()
            .and_then(|d| serde_json::from_str::<Value>(d).ok()),
    }
}

/// An event as the API shows it.
pub fn event_dto(e: &EventRecord) -> Event {
    Event {
        id: e.id,
        at: rfc3339(e.at),
        service: e.service.clone(),
        kind: e.kind.as_str().into(),
        from: e.from,
        to: e.to,
        check_id: e.check_id,
        reason: e.reason.clone(),
    }
}

/// An outbox row as the API shows it.
pub fn notification_dto(n: &NotificationRecord) -> Notification {
    Notification {
        id: n.id,
        service: n.service.clone(),
        event_id: n.event_id,
        created_at: rfc3339(n.created_at),
        from: n.from,
        to: n.to,
        reason: n.reason.clone(),
        recipients: n.recipients.clone(),
        status: n.status.as_str().into(),
        attempts: n.attempts,
        next_attempt_at: rfc3339(n.next_attempt_at),
        last_error: n.last_error.clone(),
        sent_at: n.sent_at.map(rfc3339),
        message_id: n.message_id.clone(),
    }
}
