//! The v1 API's response bodies (SPEC section 5): what the daemon answers
//! and the client reads, one definition for both, typed with the domain's
//! enums. With the feature `openapi` each is also an OpenAPI schema, so
//! the document, the answers and the client cannot drift apart.
//!
//! Times are RFC 3339 strings, as on the wire.

use crate::{CheckResult, HealthState};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// A service (or channel) name as one URL path segment, every byte but
/// ASCII letters and digits percent-encoded: the daemon's links, the
/// client's requests and the notification links all encode it this way.
pub fn path_segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Whether a service is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Monitoring {
    /// Checked on schedule.
    Active,
    /// Paused: no checks, the state is frozen.
    Paused,
}

impl Monitoring {
    /// `active` or `paused`.
    pub fn as_str(self) -> &'static str {
        match self {
            Monitoring::Active => "active",
            Monitoring::Paused => "paused",
        }
    }
}

impl std::fmt::Display for Monitoring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a service is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    /// The daemon polls a target.
    Check,
    /// The service pings the daemon (SPEC section 15).
    Heartbeat,
}

impl ServiceKind {
    /// `check` or `heartbeat`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Check => "check",
            ServiceKind::Heartbeat => "heartbeat",
        }
    }
}

impl std::fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The latest check of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LastCheck {
    /// When it ran (RFC 3339).
    pub at: String,
    /// `pass`, `warn` or `fail`.
    pub result: CheckResult,
    /// Why it warned or failed, e.g. `HTTP 503: db down`.
    pub reason: Option<String>,
    /// Duration in milliseconds.
    pub duration_ms: f64,
}

/// Links of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
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
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema), schema(as = UptimeDto))]
pub struct Uptime {
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

/// A monitored service: parameters, state, counters, last check. `Debug`
/// shows no token.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Service {
    /// Unique name (free text).
    pub name: String,
    /// The target as one URL.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "http://192.168.1.20:5000/health")
    )]
    pub url: String,
    /// `TCP`, `SSL`, `HTTP`, `HTTPS`, `DNS`, `ICMP` or `HEARTBEAT`.
    pub protocol: String,
    /// Target host.
    pub host: String,
    /// Target port.
    pub port: u16,
    /// Ping path (HTTP and HTTPS only).
    pub path: Option<String>,
    /// Mail recipients.
    #[serde(default)]
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
    pub state: HealthState,
    /// `active` or `paused`.
    pub monitoring: Monitoring,
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
    pub uptime: Option<Uptime>,
    /// The service's token: only in the answer to a registration. Keep it;
    /// it is not shown again (only its hash is stored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Recent checks, newest first (single service).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent_checks: Option<Vec<Check>>,
    /// `check` (polled) or `heartbeat` (pushed, SPEC section 15).
    pub kind: ServiceKind,
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
    #[cfg_attr(
        feature = "openapi",
        schema(example = "/ping/5f0c6e3a9b1d4c7e8a2f6b0d3e9c1a47")
    )]
    pub ping_url: Option<String>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("state", &self.state)
            .field("monitoring", &self.monitoring)
            .field("state_since", &self.state_since)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("last_check", &self.last_check)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ping_url", &self.ping_url.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// One check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Check {
    /// Id, increasing.
    pub id: i64,
    /// When it ran.
    pub at: String,
    /// `pass`, `warn` or `fail`.
    pub result: CheckResult,
    /// Why it warned or failed.
    pub reason: Option<String>,
    /// Duration in milliseconds.
    pub duration_ms: f64,
    /// HTTP status, when an answer arrived.
    pub http_status: Option<u16>,
    /// The target's health+json `output`/`notes`/`checks`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub details: Option<Value>,
}

/// A state change, or a change made through the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
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
    pub from: Option<HealthState>,
    /// New state (state events).
    pub to: Option<HealthState>,
    /// The check that caused it (state events).
    pub check_id: Option<i64>,
    /// The check's reason, or the target of a registration.
    pub reason: Option<String>,
}

/// An outbox row: a mail to send, sent or given up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
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
    pub from: HealthState,
    /// New state.
    pub to: HealthState,
    /// The reason of the check that caused it.
    pub reason: Option<String>,
    /// Recipients.
    pub recipients: Vec<String>,
    /// `pending`, `held`, `sent`, `failed`, `suppressed` or `digested`.
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

/// A channel outbox row: one notification to one named channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
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
    pub from: HealthState,
    /// New state.
    pub to: HealthState,
    /// The check's reason.
    pub reason: Option<String>,
    /// `pending`, `held`, `sent`, `failed`, `suppressed` or `digested`.
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

/// `GET /api/v1/services`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CheckList {
    /// Service name.
    pub service: String,
    /// Checks, newest first.
    pub checks: Vec<Check>,
}

/// `GET /api/v1/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EventList {
    /// Events, newest first.
    pub events: Vec<Event>,
}

/// `GET /api/v1/notifications`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct NotificationList {
    /// Notifications, newest first.
    pub notifications: Vec<Notification>,
    /// Deliveries to named channels (SPEC section 13), newest first.
    pub deliveries: Vec<Delivery>,
}

/// `GET /api/v1/cluster` (SPEC section 19): the nodes sharing the work,
/// their bucket leases and last heartbeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ClusterStatus {
    /// `sqlite` (a single node holding every bucket) or `postgresql`.
    pub backend: String,
    /// The id of the node that answered.
    pub node: String,
    /// How many buckets the services are hashed into (1,024).
    pub buckets: u16,
    /// Every node with a row or a live lease, by id.
    pub nodes: Vec<ClusterNode>,
}

/// One node of [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ClusterNode {
    /// The node's id (`--node-id`, by default the host name).
    pub id: String,
    /// Where its API answers, as it advertises it.
    pub addr: String,
    /// When it started (RFC 3339); `null` for a node whose row is gone
    /// while a lease of it has not expired yet.
    pub started_at: Option<String>,
    /// Its latest heartbeat (RFC 3339).
    pub heartbeat_at: Option<String>,
    /// Whether its heartbeat is within the lease expiry.
    pub live: bool,
    /// What it does: `active` (live, takes its share of the buckets),
    /// `given_up` (live, but it gave up its leases because its PostgreSQL
    /// write backlog was full; it claims again once that has drained) or
    /// `down` (no heartbeat within the lease expiry, or its row is gone).
    pub state: NodeState,
    /// How many bucket leases it holds (unexpired).
    pub leases: usize,
    /// The buckets it holds as ranges, `"0-255"` or `"700"`, in order.
    pub held: Vec<String>,
}

/// [`ClusterNode::state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Live and taking its share of the buckets.
    Active,
    /// Live, but it gave up its leases (its write backlog was full) and
    /// claims none until the backlog has drained.
    GivenUp,
    /// No heartbeat within the lease expiry (stopped, dead or cut off).
    Down,
}

impl NodeState {
    /// The word of the API and the dashboard: `active`, `given_up`, `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Active => "active",
            NodeState::GivenUp => "given_up",
            NodeState::Down => "down",
        }
    }
}

impl ClusterNode {
    /// The ranges of [`ClusterNode::held`] for inclusive bucket ranges.
    pub fn ranges_text(ranges: &[(u16, u16)]) -> Vec<String> {
        ranges
            .iter()
            .map(|(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect()
    }
}

/// The body of every error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// An error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_round_trips_and_its_debug_shows_no_token() {
        let v = serde_json::json!({
            "name": "a", "url": "http://h/", "protocol": "HTTP", "host": "h", "port": 80,
            "path": "/", "email": [], "timeout": 5, "interval": 30,
            "unhealthy_threshold": 2, "healthy_threshold": 10, "expected_status": "200",
            "tls_verify": false, "cert_warn_days": 14, "state": "degraded",
            "monitoring": "paused", "paused": true, "state_since": "2026-01-01T00:00:00Z",
            "consecutive_successes": 0, "consecutive_failures": 1,
            "last_check": {"at": "2026-01-01T00:00:00Z", "result": "warn", "reason": "slow", "duration_ms": 1.5},
            "last_healthy_at": null, "last_failure_reason": "slow", "cert_expires_at": null,
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "links": {"self": "/api/v1/services/a", "checks": "/api/v1/services/a/checks", "dashboard": "/services/a"},
            "uptime": {"24h": 0.5, "7d": null, "30d": null, "90d": null},
            "token": "service-token-secret", "kind": "check"
        });
        let s: Service = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(
            (s.state, s.monitoring, s.kind),
            (
                HealthState::Degraded,
                Monitoring::Paused,
                ServiceKind::Check
            )
        );
        assert_eq!(s.last_check.as_ref().unwrap().result, CheckResult::Warn);
        assert_eq!(serde_json::to_value(&s).unwrap(), v);
        let d = format!("{s:?}");
        assert!(
            !d.contains("service-token-secret") && d.contains("<redacted>"),
            "{d}"
        );
    }
}
