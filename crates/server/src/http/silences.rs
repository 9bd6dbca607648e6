//! `/api/v1/silences`: maintenance windows (SPEC section 14). Changes need
//! the admin token in token mode; after each one the scheduler's
//! [`crate::silences::SilenceBook`] is reloaded from the store.

use super::extract::{json_object, Body, ServiceName};
use super::{ApiError, AppState};
use crate::clock::{now_ms, rfc3339};
use crate::silences::{Silence, Window};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/silences", post(create).get(list))
        .route("/api/v1/silences/{id}", delete(remove))
}

fn dto(s: &Silence, now: i64) -> serde_json::Value {
    let mut v = serde_json::json!({
        "id": s.id,
        "services": s.services,
        "tags": s.tags,
        "comment": s.comment,
        "active": s.holds_until(now).is_some(),
    });
    match &s.window {
        Window::OneOff { starts_at, ends_at } => {
            v["starts_at"] = rfc3339(*starts_at).into();
            v["ends_at"] = rfc3339(*ends_at).into();
        }
        Window::Weekly { text, tz, .. } => {
            v["weekly"] = text.clone().into();
            v["tz"] = tz.clone().into();
        }
    }
    v
}

async fn reload(app: &AppState) -> Result<(), ApiError> {
    let all = app.read(|s| s.silences()).await?;
    app.silences.set(all);
    Ok(())
}

async fn authorize(app: &AppState, caller: &super::auth::Caller) -> Result<(), ApiError> {
    app.authorize_admin_change(&caller.headers, "silences")
        .await
}

async fn create(
    State(app): State<AppState>,
    caller: super::auth::Caller,
    Body(body): Body,
) -> Result<Response, ApiError> {
    super::cross_site::require_json(&caller.headers)?;
    // Who may add silences is settled before the body is looked at.
    authorize(&app, &caller).await?;
    let now = now_ms();
    let silence = add(&app, &caller, &json_object(&body)?, now).await?;
    Ok((StatusCode::CREATED, Json(dto(&silence, now))).into_response())
}

/// Authorises, validates, stores and applies a silence: the API's `POST`,
/// shared with the dashboard's form.
pub(crate) async fn add(
    app: &AppState,
    caller: &super::auth::Caller,
    map: &serde_json::Map<String, serde_json::Value>,
    now: i64,
) -> Result<Silence, ApiError> {
    authorize(app, caller).await?;
    let mut silence = Silence::from_json(map, now)?;
    let store = app.store.clone();
    let s = silence.clone();
    silence.id = tokio::task::spawn_blocking(move || store.put_silence(&s, now))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    reload(app).await?;
    Ok(silence)
}

async fn list(State(app): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let now = now_ms();
    let all = app.read(|s| s.silences()).await?;
    let list: Vec<serde_json::Value> = all.iter().map(|s| dto(s, now)).collect();
    Ok(Json(serde_json::json!({ "silences": list })))
}

async fn remove(
    State(app): State<AppState>,
    caller: super::auth::Caller,
    ServiceName(id): ServiceName,
) -> Result<Response, ApiError> {
    authorize(&app, &caller).await?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad("id", format!("invalid silence id {id:?}")))?;
    Ok(if end(&app, &caller, id).await? {
        StatusCode::NO_CONTENT.into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": {"code": "not_found", "message": format!("no silence {id}")}})),
        )
            .into_response()
    })
}

/// Authorises and deletes a silence (`false`: no such id), then applies
/// the change: the API's `DELETE`, shared with the dashboard.
pub(crate) async fn end(
    app: &AppState,
    caller: &super::auth::Caller,
    id: i64,
) -> Result<bool, ApiError> {
    authorize(app, caller).await?;
    let store = app.store.clone();
    let gone = tokio::task::spawn_blocking(move || store.delete_silence(id, now_ms()))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    reload(app).await?;
    Ok(gone)
}
