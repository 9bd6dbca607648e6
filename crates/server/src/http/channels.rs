//! `/api/v1/channels`: notification channels as named objects (SPEC
//! section 13). Changes need the admin token in token mode; answers never
//! carry a secret (nor a Slack or Discord webhook path, which is one).

use super::extract::{json_object, Body, ServiceName};
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
    pub(crate) delivered: bool,
    pub(crate) delivery_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// A channel's URL as it may be shown: a Slack or Discord webhook URL is
/// its own credential, so only its host.
pub(crate) fn public_url(c: &Channel) -> Option<String> {
    c.url.as_ref().map(|u| match c.kind {
        ChannelKind::Slack | ChannelKind::Discord => match url::Url::parse(u) {
            Ok(p) => format!("{}://{}/…", p.scheme(), p.host_str().unwrap_or("")),
            Err(_) => "…".into(),
        },
        _ => u.clone(),
    })
}

fn dto(c: &Channel) -> ChannelDto {
    let url = public_url(c);
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
    app.authorize_admin_change(&caller.headers, "channels")
        .await
}

async fn put(
    State(app): State<AppState>,
    caller: super::auth::Caller,
    Body(body): Body,
) -> Result<(StatusCode, Json<ChannelDto>), ApiError> {
    super::cross_site::require_json(&caller.headers)?;
    // Who may change channels is settled before the body is looked at.
    authorize(&app, &caller).await?;
    let (created, channel) = save(&app, &caller, &json_object(&body)?).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(dto(&channel))))
}

/// Authorises, validates and stores a channel (`true`: created): the
/// API's `POST`, shared with the dashboard's form.
pub(crate) async fn save(
    app: &AppState,
    caller: &super::auth::Caller,
    map: &serde_json::Map<String, serde_json::Value>,
) -> Result<(bool, Channel), ApiError> {
    authorize(app, caller).await?;
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
    Ok((created, channel))
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
    Ok(if delete_named(&app, &caller, &name).await? {
        StatusCode::NO_CONTENT.into_response()
    } else {
        no_channel(&name)
    })
}

/// Authorises and deletes a channel (`false`: none of that name): the
/// API's `DELETE`, shared with the dashboard.
pub(crate) async fn delete_named(
    app: &AppState,
    caller: &super::auth::Caller,
    name: &str,
) -> Result<bool, ApiError> {
    authorize(app, caller).await?;
    let store = app.store.clone();
    let n = name.to_string();
    tokio::task::spawn_blocking(move || store.delete_channel(&n))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::from)
}

async fn test(
    State(app): State<AppState>,
    caller: super::auth::Caller,
    ServiceName(name): ServiceName,
) -> Result<Response, ApiError> {
    Ok(match send_test(&app, &caller, &name).await? {
        Some(r) => Json(r).into_response(),
        None => no_channel(&name),
    })
}

/// Authorises and sends a test message now (`None`: no channel of that
/// name): the API's test route, shared with the dashboard.
pub(crate) async fn send_test(
    app: &AppState,
    caller: &super::auth::Caller,
    name: &str,
) -> Result<Option<TestResult>, ApiError> {
    authorize(app, caller).await?;
    let n = name.to_string();
    let Some(c) = app.read(move |s| s.channel(&n)).await? else {
        return Ok(None);
    };
    let m = Message::test(now_ms(), app.channels.public_url());
    let result = app.channels.deliver(&c, &m).await;
    Ok(Some(TestResult {
        channel: c.name,
        delivered: result.is_ok(),
        delivery_id: m.delivery_id,
        error: result.err().map(|e| e.message),
    }))
}
