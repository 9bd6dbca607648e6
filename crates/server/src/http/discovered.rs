//! Devices found on the LAN (SPEC section 16): `GET /api/v1/discovered`
//! lists what the browser found and is not monitored yet, each with a
//! suggested name and target; `POST /api/v1/discovered/{id}/monitor`
//! registers one in one call (the body, optional, may override any
//! registration field, e.g. `{"interval": 60, "email": "me@example.com"}`).
//! A registration like any other: same validation, same token rules.

use super::auth::Caller;
use super::dto::Service;
use super::extract::Body;
use super::{ApiError, AppState};
use crate::browse::Device;
use crate::clock::rfc3339;
use crate::store::ServiceFilter;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use healthchecker_core::{RegisterRequest, ServiceSpec, Target};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use utoipa::ToSchema;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/discovered", get(list_discovered))
        .route("/api/v1/discovered/{id}/monitor", post(monitor_discovered))
}

/// A suggested service for a found device.
#[derive(Debug, Serialize, ToSchema)]
pub struct SuggestedDto {
    /// Service name, e.g. `Office printer (printer)`.
    pub name: String,
    /// Target URL, e.g. `tcp://192.168.1.30:631`.
    pub url: String,
}

/// Links of a found device.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceLinks {
    /// `POST` here to monitor it.
    pub monitor: String,
}

/// A device found on the LAN over DNS-SD.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceDto {
    /// Stable id (16 hex digits).
    pub id: String,
    /// DNS-SD type, e.g. `_ipp._tcp.local.`
    #[serde(rename = "type")]
    pub service_type: String,
    /// Instance name, e.g. `Office printer`.
    pub name: String,
    /// Announced host name.
    pub host: String,
    /// Addresses, IPv4 first.
    pub addresses: Vec<String>,
    /// Announced port.
    pub port: u16,
    /// TXT record.
    pub txt: std::collections::BTreeMap<String, String>,
    /// What to monitor (null for a device without a usable address).
    pub suggested: Option<SuggestedDto>,
    /// When it was last announced.
    pub last_seen: String,
    /// Related calls.
    pub links: DeviceLinks,
}

/// Found devices not monitored yet.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceList {
    /// How many.
    pub count: usize,
    /// The devices, by id.
    pub discovered: Vec<DeviceDto>,
}

fn device_dto(d: &Device) -> DeviceDto {
    DeviceDto {
        id: d.id.clone(),
        service_type: d.service_type.clone(),
        name: d.instance.clone(),
        host: d.host.clone(),
        addresses: d.addresses.iter().map(|a| a.to_string()).collect(),
        port: d.port,
        txt: d.txt.iter().cloned().collect(),
        suggested: d.suggested.as_ref().map(|s| SuggestedDto {
            name: s.name.clone(),
            url: s.url.clone(),
        }),
        last_seen: rfc3339(d.last_seen),
        links: DeviceLinks {
            monitor: format!("/api/v1/discovered/{}/monitor", d.id),
        },
    }
}

/// The targets already monitored, as URLs.
async fn monitored(app: &AppState) -> Result<HashSet<String>, ApiError> {
    let services = app
        .read(|s| s.list_services(&ServiceFilter::default()))
        .await?;
    Ok(services.iter().map(|r| r.spec.target.url()).collect())
}

/// The devices found and not monitored yet (no service has their
/// suggested target), by id; for the API and the dashboard.
pub(crate) async fn unmonitored(app: &AppState) -> Result<Vec<Device>, ApiError> {
    let watched = monitored(app).await?;
    Ok(app
        .discovered
        .list()
        .into_iter()
        .filter(|d| {
            d.suggested
                .as_ref()
                .and_then(|s| normalized(&s.url))
                .is_none_or(|u| !watched.contains(&u))
        })
        .collect())
}

/// The registration of found device `id`: its suggested name and target,
/// with `overrides` (any registration fields) applied; separate target
/// fields replace the suggested URL.
pub(crate) fn device_spec(
    app: &AppState,
    id: &str,
    overrides: Map<String, Value>,
) -> Result<ServiceSpec, ApiError> {
    let device = app.discovered.get(id).ok_or_else(|| ApiError::BadRequest {
        code: "not_found",
        field: "id".into(),
        message: format!("no device {id:?} was found on the LAN (see GET /api/v1/discovered)"),
    })?;
    let Some(s) = &device.suggested else {
        return Err(ApiError::bad(
            "id",
            format!(
                "no target to suggest for {} ({}): register it with POST /api/v1/services",
                device.instance, device.service_type
            ),
        ));
    };
    let mut fields = Map::new();
    fields.insert("name".into(), s.name.clone().into());
    fields.insert("url".into(), s.url.clone().into());
    if ["protocol", "host", "port", "path"]
        .iter()
        .any(|k| overrides.contains_key(*k))
    {
        fields.remove("url");
    }
    fields.extend(overrides);
    Ok(ServiceSpec::try_from(RegisterRequest::from_map(fields)?)?)
}

/// The suggested target as the store would show it once registered.
fn normalized(url: &str) -> Option<String> {
    Target::parse_url("url", url).ok().map(|t| t.url())
}

/// Devices found on the LAN (DNS-SD) and not monitored yet, each with a
/// suggested name and target.
#[utoipa::path(get, path = "/api/v1/discovered", tag = "discovery",
    responses(
        (status = 200, description = "Found devices not monitored yet", body = DeviceList),
    ))]
pub(super) async fn list_discovered(
    State(app): State<AppState>,
) -> Result<Json<DeviceList>, ApiError> {
    let devices: Vec<DeviceDto> = unmonitored(&app).await?.iter().map(device_dto).collect();
    Ok(Json(DeviceList {
        count: devices.len(),
        discovered: devices,
    }))
}

/// Monitor a found device with its suggested name and target (an optional
/// JSON body overrides any registration field).
#[utoipa::path(post, path = "/api/v1/discovered/{id}/monitor", tag = "discovery",
    params(("id" = String, Path, description = "The device's id from GET /api/v1/discovered")),
    responses(
        (status = 201, description = "Registered", body = Service),
        (status = 200, description = "Updated (a service of that name existed)", body = Service),
        (status = 400, description = "Unknown device, no suggestion, or an invalid field", body = super::dto::ErrorBody),
        (status = 415, description = "A body that is not application/json", body = super::dto::ErrorBody),
        (status = 503, description = "The store cannot write", body = super::dto::ErrorBody),
    ))]
pub(super) async fn monitor_discovered(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<(StatusCode, Json<Service>), ApiError> {
    let mut overrides = Map::new();
    if !body.iter().all(u8::is_ascii_whitespace) {
        super::cross_site::require_json(&caller.headers)?;
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(over)) => overrides = over,
            _ => {
                return Err(ApiError::bad(
                    "body",
                    "the body, when given, must be a JSON object of registration fields",
                ))
            }
        }
    }
    let spec = device_spec(&app, &id, overrides)?;
    super::v1::registered(&app, spec, &caller).await
}

/// How often the auto-monitor looks at what was found.
const AUTO_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// `--auto-monitor TYPE` (SPEC section 16): registers, with its suggested
/// name and target, each found device of those types that is not monitored
/// yet and whose suggested name is free (a user's service of that name is
/// never overwritten). Each device is tried once per run of the daemon.
/// Stops with `cancel`.
pub async fn auto_monitor(app: AppState, cancel: tokio_util::sync::CancellationToken) {
    let types = app.config.auto_monitor.clone();
    // In token mode the daemon acts with its own admin token.
    let mut headers = axum::http::HeaderMap::new();
    if let Some(admin) = &app.config.admin_token {
        if let Ok(v) = axum::http::HeaderValue::from_str(&format!("Bearer {}", admin.0)) {
            headers.insert(axum::http::header::AUTHORIZATION, v);
        }
    }
    let caller = Caller {
        headers,
        peer: None,
    };
    let mut tried: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(AUTO_EVERY);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let wanted: Vec<Device> = app
            .discovered
            .list()
            .into_iter()
            .filter(|d| !tried.contains(&d.id) && d.suggested.is_some())
            .filter(|d| {
                let ty = d
                    .service_type
                    .trim_end_matches('.')
                    .trim_end_matches(".local");
                types.iter().any(|t| t == ty)
            })
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let Ok(services) = app
            .read(|s| s.list_services(&ServiceFilter::default()))
            .await
        else {
            continue;
        };
        for d in wanted {
            tried.insert(d.id.clone());
            let s = d.suggested.as_ref().expect("filtered");
            let taken = services
                .iter()
                .any(|r| r.spec.name == s.name || Some(r.spec.target.url()) == normalized(&s.url));
            if taken {
                continue;
            }
            let body = json!({"name": s.name, "url": s.url});
            let spec = match RegisterRequest::from_json(body.to_string().as_bytes())
                .and_then(ServiceSpec::try_from)
            {
                Ok(spec) => spec,
                Err(e) => {
                    tracing::warn!(device = %d.fullname, error = %e, "auto-monitor: suggestion refused");
                    continue;
                }
            };
            match app.register(spec, &caller).await {
                Ok(_) => tracing::info!(device = %d.fullname, name = %s.name, url = %s.url,
                    "auto-monitor: monitoring a device found on the LAN"),
                Err(e) => {
                    tracing::warn!(device = %d.fullname, error = %e, "auto-monitor: registration failed")
                }
            }
        }
    }
}
