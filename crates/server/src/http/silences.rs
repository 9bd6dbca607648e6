//! `/api/v1/silences`: maintenance windows (SPEC section 14). Changes need
//! the admin token in token mode; after each one the scheduler's
//! [`crate::silences::SilenceBook`] is reloaded from the store.

use super::extract::{json_object, Body, ServiceName};
use super::ops::blocking;
use super::{ApiError, AppState};
use crate::clock::{now_ms, rfc3339};
use crate::silences::{Silence, Window};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/silences", post(create).get(list))
        .route("/api/v1/silences/{id}", delete(remove))
}

/// A silence as the API shows it: a one-off window (`starts_at`,
/// `ends_at`) or a weekly one (`weekly`, `tz`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Silence)]
pub struct SilenceDto {
    /// Id, to delete it.
    id: i64,
    /// Services it silences by name.
    services: Vec<String>,
    /// Services it silences by tag.
    tags: Vec<String>,
    /// Why.
    comment: Option<String>,
    /// True while it holds notifications.
    active: bool,
    /// One-off: start (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    starts_at: Option<String>,
    /// One-off: end (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    ends_at: Option<String>,
    /// Weekly: the window, e.g. `Sun 02:00-04:00`.
    #[serde(skip_serializing_if = "Option::is_none")]
    weekly: Option<String>,
    /// Weekly: the IANA time zone it is read in.
    #[serde(skip_serializing_if = "Option::is_none")]
    tz: Option<String>,
}

/// `GET /api/v1/silences`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SilenceList {
    /// Every silence.
    silences: Vec<SilenceDto>,
}

fn dto(s: &Silence, now: i64) -> SilenceDto {
    let (mut starts_at, mut ends_at, mut weekly, mut tz) = (None, None, None, None);
    match &s.window {
        Window::OneOff {
            starts_at: from,
            ends_at: to,
        } => {
            starts_at = Some(rfc3339(*from));
            ends_at = Some(rfc3339(*to));
        }
        Window::Weekly { text, tz: zone, .. } => {
            weekly = Some(text.clone());
            tz = Some(zone.clone());
        }
    }
    SilenceDto {
        id: s.id,
        services: s.services.clone(),
        tags: s.tags.clone(),
        comment: s.comment.clone(),
        active: s.holds_until(now).is_some(),
        starts_at,
        ends_at,
        weekly,
        tz,
    }
}

async fn reload(app: &AppState) -> Result<(), ApiError> {
    let all = app.read(|s| s.silences()).await?;
    app.silences.set(all);
    Ok(())
}

/// A silence id from the path (`/api/v1/silences/{id}`,
/// `/silences/{id}/delete`): 400 naming `id` when it is not a number.
pub(crate) fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::bad("id", format!("invalid silence id {id:?}")))
}

async fn authorize(app: &AppState, caller: &super::auth::Caller) -> Result<(), ApiError> {
    app.authorize_admin_change(&caller.headers, "silences")
        .await
}

/// Add a silence (admin token in token mode).
#[utoipa::path(post, path = "/api/v1/silences", tag = "silences", operation_id = "create_silence",
    request_body(content = Object, description = "`services` and/or `tags`, `comment`, and `starts_at`/`ends_at` or `weekly`/`tz` (SPEC section 14)"),
    responses(
        (status = 201, description = "Added", body = SilenceDto),
        (status = 400, description = "Invalid field (named in the error)", body = super::dto::ErrorBody),
        (status = 401, description = "No or a wrong token (token mode)", body = super::dto::ErrorBody),
        (status = 403, description = "Not the admin token, or sent by a page of another site", body = super::dto::ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = super::dto::ErrorBody),
        (status = 415, description = "The body is not application/json", body = super::dto::ErrorBody),
        (status = 429, description = "Too many changes from this client", body = super::dto::ErrorBody),
        (status = 503, description = "The store cannot write", body = super::dto::ErrorBody),
    ))]
pub(super) async fn create(
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
    silence.id = blocking(move || store.put_silence(&s, now)).await?;
    reload(app).await?;
    Ok(silence)
}

/// List the silences, with whether each holds now.
#[utoipa::path(get, path = "/api/v1/silences", tag = "silences", operation_id = "list_silences",
    responses(
        (status = 200, description = "Every silence", body = SilenceList),
        (status = 401, description = "No or a wrong token (token mode)", body = super::dto::ErrorBody),
        (status = 503, description = "The store cannot read", body = super::dto::ErrorBody),
    ))]
pub(super) async fn list(State(app): State<AppState>) -> Result<Json<SilenceList>, ApiError> {
    let now = now_ms();
    let all = app.read(|s| s.silences()).await?;
    Ok(Json(SilenceList {
        silences: all.iter().map(|s| dto(s, now)).collect(),
    }))
}

/// End a silence now (admin token in token mode).
#[utoipa::path(delete, path = "/api/v1/silences/{id}", tag = "silences", operation_id = "delete_silence",
    params(("id" = i64, Path, description = "The silence's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Not an id", body = super::dto::ErrorBody),
        (status = 401, description = "No or a wrong token (token mode)", body = super::dto::ErrorBody),
        (status = 403, description = "Not the admin token", body = super::dto::ErrorBody),
        (status = 404, description = "No such silence", body = super::dto::ErrorBody),
        (status = 429, description = "Too many changes from this client", body = super::dto::ErrorBody),
        (status = 503, description = "The store cannot write", body = super::dto::ErrorBody),
    ))]
pub(super) async fn remove(
    State(app): State<AppState>,
    caller: super::auth::Caller,
    ServiceName(id): ServiceName,
) -> Result<Response, ApiError> {
    authorize(&app, &caller).await?;
    let id = parse_id(&id)?;
    Ok(if end(&app, &caller, id).await? {
        StatusCode::NO_CONTENT.into_response()
    } else {
        super::error::not_found(format!("no silence {id}"))
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
    let gone = blocking(move || store.delete_silence(id, now_ms())).await?;
    reload(app).await?;
    Ok(gone)
}
