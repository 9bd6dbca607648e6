//! The native v1 JSON API under `/api/v1` (SPEC section 5).

use super::dto::{check_json, event_json, notification_json, service_json, ServiceView};
use super::extract::{Body, Query, ServiceName};
use super::{ApiError, AppState};
use crate::clock::now_ms;
use crate::store::ServiceFilter;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use healthchecker_core::{HealthState, RegisterRequest, ServiceSpec};
use serde_json::{json, Value};

/// Most rows one list call returns.
pub const MAX_LIMIT: usize = 1000;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/services", post(register).get(list))
        .route("/api/v1/services/{name}", get(one).delete(remove))
        .route("/api/v1/services/{name}/pause", post(pause))
        .route("/api/v1/services/{name}/resume", post(resume))
        .route("/api/v1/services/{name}/checks", get(checks))
        .route("/api/v1/events", get(events))
        .route("/api/v1/notifications", get(notifications))
}

async fn register(
    State(app): State<AppState>,
    Body(body): Body,
) -> Result<impl IntoResponse, ApiError> {
    let spec = ServiceSpec::try_from(RegisterRequest::from_json(&body)?)?;
    let (reg, token) = app.register(spec).await?;
    let status = if reg.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let view = ServiceView {
        token: Some(&token),
        ..Default::default()
    };
    Ok((status, Json(service_json(&reg.record, view))))
}

async fn list(State(app): State<AppState>, q: Query) -> Result<Json<Value>, ApiError> {
    let state = match q.get("state").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(s.parse::<HealthState>().map_err(|_| {
            ApiError::bad(
                "state",
                format!("invalid state {s:?} (valid: unknown, healthy, degraded, unhealthy)"),
            )
        })?),
    };
    let limit = match q.get("limit") {
        None => 0,
        Some(_) => q.limit("limit", 0, usize::MAX)?,
    };
    let offset = match q.get("offset") {
        None | Some("") => 0,
        Some(v) => v
            .parse()
            .map_err(|_| ApiError::bad("offset", format!("invalid offset {v:?}")))?,
    };
    let filter = ServiceFilter {
        state,
        name_contains: q.get("q").map(str::to_string),
        limit,
        offset,
    };
    let (services, uptimes) = app
        .read(move |s| Ok((s.list_services(&filter)?, s.uptimes(now_ms())?)))
        .await?;
    let items: Vec<Value> = services
        .iter()
        .map(|r| {
            let uptime = Some(uptimes.get(&r.id).copied().unwrap_or_default());
            service_json(
                r,
                ServiceView {
                    uptime,
                    ..Default::default()
                },
            )
        })
        .collect();
    Ok(Json(json!({ "count": items.len(), "services": items })))
}

async fn one(
    State(app): State<AppState>,
    ServiceName(name): ServiceName,
) -> Result<Json<Value>, ApiError> {
    let rec = app.service(&name).await?;
    let id = rec.id;
    let (recent, uptimes) = app
        .read(move |s| Ok((s.checks(id, 20)?, s.uptimes(now_ms())?)))
        .await?;
    let view = ServiceView {
        uptime: Some(uptimes.get(&id).copied().unwrap_or_default()),
        recent_checks: Some(&recent),
        ..Default::default()
    };
    Ok(Json(service_json(&rec, view)))
}

async fn remove(
    State(app): State<AppState>,
    ServiceName(name): ServiceName,
) -> Result<StatusCode, ApiError> {
    app.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn pause(
    State(app): State<AppState>,
    ServiceName(name): ServiceName,
) -> Result<Json<Value>, ApiError> {
    let rec = app.set_paused(&name, true).await?;
    Ok(Json(service_json(&rec, ServiceView::default())))
}

async fn resume(
    State(app): State<AppState>,
    ServiceName(name): ServiceName,
) -> Result<Json<Value>, ApiError> {
    let rec = app.set_paused(&name, false).await?;
    Ok(Json(service_json(&rec, ServiceView::default())))
}

async fn checks(
    State(app): State<AppState>,
    ServiceName(name): ServiceName,
    q: Query,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit("limit", 100, MAX_LIMIT)?;
    let rec = app.service(&name).await?;
    let id = rec.id;
    let rows = app.read(move |s| s.checks(id, limit)).await?;
    Ok(Json(json!({
        "service": rec.spec.name,
        "checks": rows.iter().map(check_json).collect::<Vec<_>>(),
    })))
}

async fn events(State(app): State<AppState>, q: Query) -> Result<Json<Value>, ApiError> {
    let limit = q.limit("limit", 100, MAX_LIMIT)?;
    let service = q
        .get("service")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let rows = app
        .read(move |s| s.events(service.as_deref(), limit))
        .await?;
    Ok(Json(
        json!({ "events": rows.iter().map(event_json).collect::<Vec<_>>() }),
    ))
}

async fn notifications(State(app): State<AppState>, q: Query) -> Result<Json<Value>, ApiError> {
    let limit = q.limit("limit", 100, MAX_LIMIT)?;
    let status = match q.get("status").filter(|s| !s.is_empty()) {
        None => None,
        Some(s @ ("pending" | "sent" | "failed")) => Some(s.to_string()),
        Some(s) => {
            return Err(ApiError::bad(
                "status",
                format!("invalid status {s:?} (valid: pending, sent, failed)"),
            ))
        }
    };
    let service = q
        .get("service")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let rows = app
        .read(move |s| s.notifications(status.as_deref(), service.as_deref(), limit))
        .await?;
    Ok(Json(
        json!({ "notifications": rows.iter().map(notification_json).collect::<Vec<_>>() }),
    ))
}
