//! `/api/v1/channels`: notification channels as named objects (SPEC
//! section 13). Changes need the admin token in token mode; answers never
//! carry a secret (nor a Slack or Discord webhook path, which is one).

use super::extract::{Body, ServiceName};
use super::{ApiError, AppState};
use crate::clock::now_ms;
use crate::notify::channels::message::Message;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use healthchecker_core::channel::{Channel, ChannelKind};
use serde::Serialize;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/channels", post(put).get(list))
        .route("/api/v1/channels/{name}", get(one).delete(remove))
        .route("/api/v1/channels/{name}/test", post(test))
}

/// A channel as the API shows it: public settings, and whether a secret is set.
#[derive(Debug, Serialize)]
pub struct ChannelDto {
    name: String,
    kind: &'static str,
    default: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    to: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chat_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    discovery_prefix: Option<String>,
    secret_set: bool,
}

/// The answer of the test route.
#[derive(Debug, Serialize)]
pub struct TestResult {
    channel: String,
    delivered: bool,
    delivery_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn dto(c: &Channel) -> ChannelDto {
    // A Slack or Discord webhook URL is its own credential: show the host only.
    let url = c.url.as_ref().map(|u| match c.kind {
        ChannelKind::Slack | ChannelKind::Discord => match url::Url::parse(u) {
            Ok(p) => format!("{}://{}/…", p.scheme(), p.host_str().unwrap_or("")),
            Err(_) => "…".into(),
        },
        _ => u.clone(),
    });
    ChannelDto {
        name: c.name.clone(),
        kind: c.kind.as_str(),
        default: c.default,
        url,
        to: c.to.iter().map(|a| a.to_string()).collect(),
        chat_id: c.chat_id.clone(),
        room: c.room.clone(),
        username: c.username.clone(),
        topic_prefix: c.topic_prefix.clone(),
        discovery_prefix: c.discovery_prefix.clone(),
        secret_set: c.secret.is_some(),
    }
}

/// 404 naming the channel (`ApiError::NotFound` speaks of services).
fn no_channel(name: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({"error": {"code": "not_found", "message": format!("no channel named {name:?}")}})),
    )
        .into_response()
}

/// Channels are the daemon's, not a service's: the admin token changes them.
async fn authorize(app: &AppState, caller: &super::auth::Caller) -> Result<(), ApiError> {
    // No service is named "" (names are never blank): only the admin token passes.
    app.authorize_change(&caller.headers, "")
        .await
        .map_err(|e| match e {
            ApiError::Forbidden(_) => {
                ApiError::Forbidden("channels are changed with the admin token".into())
            }
            other => other,
        })
}

async fn put(
    State(app): State<AppState>,
    caller: super::auth::Caller,
    Body(body): Body,
) -> Result<(StatusCode, Json<ChannelDto>), ApiError> {
    super::cross_site::require_json(&caller.headers)?;
    authorize(&app, &caller).await?;
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad("body", format!("malformed JSON body: {e}")))?;
    let Some(map) = value.as_object() else {
        return Err(ApiError::bad("body", "the body must be a JSON object"));
    };
    let name = map.get("name").and_then(|v| v.as_str()).map(str::to_string);
    let existing = match name {
        Some(n) => app.read(move |s| s.channel(&n)).await?,
        None => None,
    };
    let channel = Channel::from_json(map, existing.as_ref())?;
    let store = app.store.clone();
    let c = channel.clone();
    let created = tokio::task::spawn_blocking(move || store.put_channel(&c, now_ms()))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(dto(&channel))))
}

async fn list(State(app): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let all = app.read(|s| s.channels()).await?;
    let list: Vec<ChannelDto> = all.iter().map(dto).collect();
    Ok(Json(serde_json::json!({ "channels": list })))
}

async fn one(
    State(app): State<AppState>,
    ServiceName(name): ServiceName,
) -> Result<Response, ApiError> {
    let n = name.clone();
    Ok(match app.read(move |s| s.channel(&n)).await? {
        Some(c) => Json(dto(&c)).into_response(),
        None => no_channel(&name),
    })
}

async fn remove(
    State(app): State<AppState>,
    caller: super::auth::Caller,
    ServiceName(name): ServiceName,
) -> Result<Response, ApiError> {
    authorize(&app, &caller).await?;
    let store = app.store.clone();
    let n = name.clone();
    let gone = tokio::task::spawn_blocking(move || store.delete_channel(&n))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(if gone {
        StatusCode::NO_CONTENT.into_response()
    } else {
        no_channel(&name)
    })
}

async fn test(
    State(app): State<AppState>,
    caller: super::auth::Caller,
    ServiceName(name): ServiceName,
) -> Result<Response, ApiError> {
    authorize(&app, &caller).await?;
    let n = name.clone();
    let Some(c) = app.read(move |s| s.channel(&n)).await? else {
        return Ok(no_channel(&name));
    };
    let m = Message::test(now_ms(), app.channels.public_url());
    let result = app.channels.deliver(&c, &m).await;
    Ok(Json(TestResult {
        channel: c.name,
        delivered: result.is_ok(),
        delivery_id: m.delivery_id,
        error: result.err().map(|e| e.message),
    })
    .into_response())
}
