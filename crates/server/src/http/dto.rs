//! Response bodies: how stored records look in the API. Each type is also
//! an OpenAPI schema (utoipa), so the document and the answers cannot drift.

use crate::clock::rfc3339;
use crate::store::{CheckRecord, EventRecord, NotificationRecord, ServiceRecord, Uptime};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// The latest check of a service.
#[derive(Debug, Serialize, ToSchema)]
pub struct LastCheck {
    /// When it ran (RFC 3339).
    pub at: String,
    /// `pass`, `warn` or `fail`.
    #[schema(example = "fail")]
    pub result: String,
    /// Why it warned or failed, e.g. `HTTP 503: db down`.
    pub reason: Option<String>,
    /// Duration in milliseconds.
    pub duration_ms: f64,
}

/// Links of a service.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceLinks {
    /// This resource.
    #[serde(rename = "self")]
    pub self_: String,
    /// Its check history.
    pub checks: String,
    /// Its dashboard page.
    pub dashboard: String,
}

/// Uptime ratios (0 to 1), null without checks in the window.
#[derive(Debug, Serialize, ToSchema)]
pub struct UptimeDto {
    /// Over the last 24 hours.
    #[serde(rename = "24h")]
    pub day: Option<f64>,
    /// Over the last 7 days.
    #[serde(rename = "7d")]
    pub week: Option<f64>,
    /// Over the last 30 days.
    #[serde(rename = "30d")]
    pub month: Option<f64>,
    /// Over the last 90 days.
    #[serde(rename = "90d")]
    pub quarter: Option<f64>,
}

/// A monitored service: parameters, state, counters, last check.
#[derive(Debug, Serialize, ToSchema)]
pub struct Service {
    /// Unique name (free text).
    pub name: String,
    /// The target as one URL.
    #[schema(example = "http://192.168.1.20:5000/health")]
    pub url: String,
    /// `TCP`, `SSL`, `HTTP` or `HTTPS`.
    pub protocol: String,
    /// Target host.
    pub host: String,
    /// Target port.
    pub port: u16,
    /// Ping path (HTTP and HTTPS only).
    pub path: Option<String>,
    /// Mail recipients.
    pub email: Vec<String>,
    /// Named notification channels (absent: the default channels).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// Tags (absent: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Parent services (absent: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Vec<String>>,
    /// Response timeout, seconds.
    pub timeout: u32,
    /// Seconds between checks.
    pub interval: u32,
    /// Consecutive failures that make it unhealthy.
    pub unhealthy_threshold: u32,
    /// Consecutive successes that make it healthy.
    pub healthy_threshold: u32,
    /// Acceptable HTTP statuses.
    pub expected_status: String,
    /// Require a trusted certificate.
    pub tls_verify: bool,
    /// Certificate expiry warning, days (0: off).
    pub cert_warn_days: u32,
    /// `unknown`, `healthy`, `degraded` or `unhealthy`.
    #[schema(example = "healthy")]
    pub state: String,
    /// `active` or `paused`.
    pub monitoring: String,
    /// True when paused.
    pub paused: bool,
    /// When the current state began.
    pub state_since: String,
    /// Consecutive successes.
    pub consecutive_successes: u32,
    /// Consecutive failures.
    pub consecutive_failures: u32,
    /// The latest check.
    pub last_check: Option<LastCheck>,
    /// The latest check that found it healthy.
    pub last_healthy_at: Option<String>,
    /// The reason of the latest warn or fail.
    pub last_failure_reason: Option<String>,
    /// The certificate's expiry (TLS targets).
    pub cert_expires_at: Option<String>,
    /// First registration.
    pub created_at: String,
    /// Latest change of parameters.
    pub updated_at: String,
    /// Related resources.
    pub links: ServiceLinks,
    /// Uptime (lists and single service).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime: Option<UptimeDto>,
    /// The service's token: only in the answer to a registration. Keep it;
    /// it is not shown again (only its hash is stored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Recent checks, newest first (single service).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent_checks: Option<Vec<Check>>,
    /// `check` (polled) or `heartbeat` (pushed, SPEC section 15).
    pub kind: String,
    /// Heartbeat: seconds between the job's runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<u32>,
    /// Heartbeat: seconds of lateness tolerated after the period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace: Option<u32>,
    /// Heartbeat: the latest ping of any kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_ping_at: Option<String>,
    /// Heartbeat: where the job pings (`/ping/<id>`, relative to the
    /// daemon). The id is the credential: only in the answer to a
    /// registration, like `token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "/ping/5f0c6e3a9b1d4c7e8a2f6b0d3e9c1a47")]
    pub ping_url: Option<String>,
}

/// One check.
#[derive(Debug, Serialize, ToSchema)]
pub struct Check {
    /// Id, increasing.
    pub id: i64,
    /// When it ran.
    pub at: String,
    /// `pass`, `warn` or `fail`.
    pub result: String,
    /// Why it warned or failed.
    pub reason: Option<String>,
    /// Duration in milliseconds.
    pub duration_ms: f64,
    /// HTTP status, when an answer arrived.
    pub http_status: Option<u16>,
    /// The target's health+json `output`/`notes`/`checks`.
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

/// A state change, or a change made through the API.
#[derive(Debug, Serialize, ToSchema)]
pub struct Event {
    /// Id, increasing.
    pub id: i64,
    /// When.
    pub at: String,
    /// Service name.
    pub service: String,
    /// `state`, `registered`, `updated`, `paused`, `resumed` or `deleted`.
    pub kind: String,
    /// Previous state (state events).
    pub from: Option<String>,
    /// New state (state events).
    pub to: Option<String>,
    /// The check that caused it (state events).
    pub check_id: Option<i64>,
    /// The check's reason, or the target of a registration.
    pub reason: Option<String>,
}

/// An outbox row: a mail to send, sent or given up.
#[derive(Debug, Serialize, ToSchema)]
pub struct Notification {
    /// Id.
    pub id: i64,
    /// Service name.
    pub service: String,
    /// The state event it announces.
    pub event_id: i64,
    /// When the event happened.
    pub created_at: String,
    /// Previous state.
    pub from: String,
    /// New state.
    pub to: String,
    /// The reason of the check that caused it.
    pub reason: Option<String>,
    /// Recipients.
    pub recipients: Vec<String>,
    /// `pending`, `sent` or `failed`.
    pub status: String,
    /// Delivery attempts.
    pub attempts: i64,
    /// Earliest next attempt.
    pub next_attempt_at: String,
    /// The last SMTP error, or why it waits.
    pub last_error: Option<String>,
    /// When the SMTP server accepted it.
    pub sent_at: Option<String>,
    /// The mail's Message-ID.
    pub message_id: Option<String>,
}

/// `GET /api/v1/services`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceList {
    /// Number of services returned.
    pub count: usize,
    /// The services, by name.
    pub services: Vec<Service>,
    /// The next page (a path with query, relative to the daemon's base
    /// URL), when there are more services; also sent as `Link: <...>;
    /// rel="next"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `GET /api/v1/services/{name}/checks`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckList {
    /// Service name.
    pub service: String,
    /// Checks, newest first.
    pub checks: Vec<Check>,
}

/// `GET /api/v1/events`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    /// Events, newest first.
    pub events: Vec<Event>,
}

/// `GET /api/v1/notifications`.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationList {
    /// Notifications, newest first.
    pub notifications: Vec<Notification>,
    /// Deliveries to named channels (SPEC section 13), newest first.
    pub deliveries: Vec<Delivery>,
}

/// A channel outbox row: one notification to one named channel.
#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    /// Row id.
    pub id: i64,
    /// The stable id the message carries (Idempotency-Key, Matrix txn id).
    pub delivery_id: String,
    /// Channel name.
    pub channel: String,
    /// Service name.
    pub service: String,
    /// The state event it announces.
    pub event_id: i64,
    /// When the transition happened (RFC 3339).
    pub created_at: String,
    /// Previous state.
    pub from: String,
    /// New state.
    pub to: String,
    /// The check's reason.
    pub reason: Option<String>,
    /// `pending`, `sent` or `failed`.
    pub status: String,
    /// Attempts so far.
    pub attempts: i64,
    /// Earliest next attempt (RFC 3339).
    pub next_attempt_at: String,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// When it was delivered (RFC 3339).
    pub sent_at: Option<String>,
}

/// A channel outbox row as the API shows it.
pub fn delivery_dto(d: &crate::store::DeliveryRecord) -> Delivery {
    Delivery {
        id: d.id,
        delivery_id: d.delivery_id(),
        channel: d.channel.clone(),
        service: d.service.clone(),
        event_id: d.event_id,
        created_at: rfc3339(d.created_at),
        from: d.from.as_str().into(),
        to: d.to.as_str().into(),
        reason: d.reason.clone(),
        status: d.status.clone(),
        attempts: d.attempts,
        next_attempt_at: rfc3339(d.next_attempt_at),
        last_error: d.last_error.clone(),
        sent_at: d.sent_at.map(rfc3339),
    }
}

/// The body of every error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// An error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `invalid_field`, `missing_field`, `unknown_field`, `invalid_body`,
    /// `invalid_parameter`, `not_found`, `body_too_large`, `unavailable`, `internal`.
    pub code: String,
    /// A sentence naming the value and the valid range.
    pub message: String,
    /// The offending field, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
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

/// Percent-encodes a service name for a path segment.
pub fn path_segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string()
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
        state: r.state.as_str().into(),
        monitoring: if r.paused { "paused" } else { "active" }.into(),
        paused: r.paused,
        state_since: rfc3339(r.state_since),
        consecutive_successes: r.successes,
        consecutive_failures: r.failures,
        last_check: r.last_check.as_ref().map(|c| LastCheck {
            at: rfc3339(c.at),
            result: c.result.as_str().into(),
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
        uptime: view.uptime.map(|u| UptimeDto {
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
            "heartbeat"
        } else {
            "check"
        }
        .into(),
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
        result: c.result.as_str().into(),
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
        kind: e.kind.clone(),
        from: e.from.map(|s| s.as_str().into()),
        to: e.to.map(|s| s.as_str().into()),
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
        from: n.from.as_str().into(),
        to: n.to.as_str().into(),
        reason: n.reason.clone(),
        recipients: n.recipients.clone(),
        status: n.status.clone(),
        attempts: n.attempts,
        next_attempt_at: rfc3339(n.next_attempt_at),
        last_error: n.last_error.clone(),
        sent_at: n.sent_at.map(rfc3339),
        message_id: n.message_id.clone(),
    }
}
