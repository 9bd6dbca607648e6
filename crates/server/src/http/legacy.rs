//! The legacy form API under `/healthchecker/`, wire-compatible with the
//! seed's Python `HealthCheckerServer` client (SPEC section 5).
//!
//! The client sends `monitor` as a form POST and the others as GET with
//! `appname` in the query, and looks only at the status code. The original
//! server polled `url + "/health"`; so do we. Unlike the original (which
//! answered 302 to a re-registration and only knew `stopmonitoring`),
//! re-registering answers 200 and both `stop` and `stopmonitoring` work.

use super::dto::{service_json, ServiceView};
use super::extract::{form_pairs, Body, Query};
use super::{ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use healthchecker_core::{RegisterRequest, ServiceSpec};
use serde_json::json;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthchecker/monitor", post(monitor))
        .route("/healthchecker/stop", get(stop).post(stop))
        .route("/healthchecker/stopmonitoring", get(stop).post(stop))
        .route(
            "/healthchecker/pause",
            get(set_paused::<true>).post(set_paused::<true>),
        )
        .route(
            "/healthchecker/resume",
            get(set_paused::<false>).post(set_paused::<false>),
        )
        .route("/healthchecker/info", get(info).post(info))
        .route("/healthchecker/status", get(status))
}

async fn monitor(
    State(app): State<AppState>,
    caller: super::auth::Caller,
    q: Query,
    Body(body): Body,
) -> Result<impl IntoResponse, ApiError> {
    // Fields may come in the form body or (older clients) the query.
    let mut pairs = q.0;
    pairs.extend(form_pairs(&body, "form")?);
    let spec = ServiceSpec::try_from(RegisterRequest::from_legacy_form(&pairs)?)?;
    let (reg, token) = app.register(spec, &caller).await?;
    let name = reg.record.spec.name.clone();
    let (status, message) = if reg.created {
        (
            StatusCode::CREATED,
            format!("App `{name}` is scheduled for health check monitoring."),
        )
    } else {
        (
            StatusCode::OK,
            format!("App `{name}` was already monitored; its parameters are updated."),
        )
    };
    let view = ServiceView {
        token: Some(&token),
        ..Default::default()
    };
    Ok((
        status,
        Json(json!({ "message": message, "service": service_json(&reg.record, view) })),
    ))
}

/// `appname` from the query or a form body; 400 when missing.
fn appname(q: &Query, body: &[u8]) -> Result<String, ApiError> {
    let from_body = form_pairs(body, "form")?;
    q.get("appname")
        .map(str::to_string)
        .or_else(|| {
            from_body
                .into_iter()
                .rev()
                .find(|(k, _)| k == "appname")
                .map(|(_, v)| v)
        })
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::BadRequest {
            code: "missing_field",
            field: "appname".into(),
            message: "missing appname parameter".into(),
        })
}

async fn stop(
    State(app): State<AppState>,
    caller: super::auth::Caller,
    q: Query,
    Body(body): Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = appname(&q, &body)?;
    app.delete(&name, &caller).await?;
    Ok(Json(
        json!({ "message": format!("App `{name}` is no longer monitored.") }),
    ))
}

/// `pause` (`PAUSED = true`) and `resume`.
async fn set_paused<const PAUSED: bool>(
    State(app): State<AppState>,
    caller: super::auth::Caller,
    q: Query,
    Body(body): Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = appname(&q, &body)?;
    let rec = app.set_paused(&name, PAUSED, &caller).await?;
    Ok(Json(
        json!({ "message": "OK", "service": service_json(&rec, ServiceView::default()) }),
    ))
}

async fn info(
    State(app): State<AppState>,
    q: Query,
    Body(body): Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = appname(&q, &body)?;
    let rec = app.service(&name).await?;
    Ok(Json(service_json(&rec, ServiceView::default())))
}

/// `GET /healthchecker/status` (the original's route, SPEC section 16): a
/// summary of what is monitored, counted by state. A read: it changes
/// nothing and carries no service details.
async fn status(State(app): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let crate::store::StateCounts {
        by_state: counts,
        paused,
    } = app.store.read(|s| s.count_by_state()).await?;
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    let states: serde_json::Map<String, serde_json::Value> = counts
        .iter()
        .map(|(st, n)| (st.as_str().to_string(), json!(n)))
        .collect();
    Ok(Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "services": total,
        "paused": paused,
        "states": states,
    })))
}
