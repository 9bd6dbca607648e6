//! The OpenAPI 3 document of the v1 API (utoipa), served at
//! `/api/v1/openapi.json`. Response schemas are the DTO types themselves.

use axum::Json;
use serde::Deserialize;
use utoipa::{OpenApi, ToSchema};

/// `email`: one address, a comma-separated list, or a list.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum EmailField {
    /// One address or a comma-separated list.
    One(String),
    /// A list of addresses.
    Many(Vec<String>),
}

/// A registration. Give the target as `url`, or as `protocol`, `host`,
/// `port`, `path`. Numbers may also be sent as strings. Unknown fields are
/// refused.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct RegisterBody {
    /// Unique name, 1 to 200 characters (spaces allowed).
    #[schema(min_length = 1, max_length = 200, example = "web one")]
    name: String,
    /// `http://host:port/path`, `https://…`, `tcp://host:port`, `ssl://host:port` or `tls://host:port`,
    /// checked as written (`http://nas:5000` checks `/`).
    #[schema(example = "http://192.168.1.20:8080/health")]
    url: Option<String>,
    /// `TCP`, `HTTP`, `HTTPS`, `SSL` (or `TLS`); default TCP, or HTTP when a path is given.
    protocol: Option<String>,
    /// Host name or IP address.
    host: Option<String>,
    /// 1 to 65535; default 80 (HTTP, TCP) or 443 (HTTPS, SSL).
    #[schema(minimum = 1, maximum = 65535)]
    port: Option<u16>,
    /// Ping path (HTTP/HTTPS), starts with `/`; default `/health` (separate fields only).
    path: Option<String>,
    /// Mail recipients.
    email: Option<EmailField>,
    /// Response timeout, 2 to 60 seconds, below the interval; default 5, or interval − 1 when smaller.
    #[schema(minimum = 2, maximum = 60)]
    timeout: Option<u32>,
    /// Seconds between checks, 5 to 300; default 30.
    #[schema(minimum = 5, maximum = 300)]
    interval: Option<u32>,
    /// 2 to 10; default 2.
    #[schema(minimum = 2, maximum = 10)]
    unhealthy_threshold: Option<u32>,
    /// 2 to 10; default 10.
    #[schema(minimum = 2, maximum = 10)]
    healthy_threshold: Option<u32>,
    /// Acceptable HTTP statuses, e.g. `200-399`; default `200`.
    expected_status: Option<String>,
    /// Require a trusted certificate; default false.
    tls_verify: Option<bool>,
    /// 0 to 365 (0: off); default 14.
    #[schema(minimum = 0, maximum = 365)]
    cert_warn_days: Option<u32>,
    /// `check` (default: a polled target) or `heartbeat` (the service pings
    /// its `ping_url`; no target, timeout, interval or thresholds).
    #[schema(example = "heartbeat")]
    kind: Option<String>,
    /// Heartbeat: seconds between runs, 60 to 31536000 (365 d); default 86400.
    #[schema(minimum = 60, maximum = 31536000)]
    period: Option<u32>,
    /// Heartbeat: seconds of lateness tolerated, 60 to 2592000 (30 d); default 3600.
    #[schema(minimum = 60, maximum = 2592000)]
    grace: Option<u32>,
    /// Names of notification channels (`/api/v1/channels`), each existing;
    /// absent or empty: every channel created with `"default": true`.
    channels: Option<Vec<String>>,
    /// Tags, for silences (`/api/v1/silences`).
    tags: Option<Vec<String>>,
    /// Names of parent services: while one is failing, this service's
    /// notifications are held; a cycle is refused.
    depends_on: Option<Vec<String>>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "healthchecker API", description = "Register services for periodic health checks; read their state, history and mail outbox."),
    paths(
        super::v1::register,
        super::v1::list,
        super::v1::one,
        super::v1::remove,
        super::v1::pause,
        super::v1::resume,
        super::v1::checks,
        super::v1::events,
        super::v1::notifications,
        super::ping::ping_by_name,
        super::ping::ping_by_name_what,
        super::discovered::list_discovered,
        super::discovered::monitor_discovered,
    ),
    tags(
        (name = "services", description = "Registered services"),
        (name = "events", description = "State changes"),
        (name = "notifications", description = "The mail outbox"),
        (name = "discovery", description = "Devices found on the LAN over DNS-SD"),
    )
)]
struct ApiDoc;

/// The document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `GET /api/v1/openapi.json`.
pub(super) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}
