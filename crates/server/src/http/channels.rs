//! `/api/v1/channels`: notification channels as named objects (SPEC
//! section 13). Changes need the admin token in token mode; answers never
//! carry a secret (nor a Slack or Discord webhook path, which is one).

use super::extract::{json_object, Body, ServiceName};
use super::ops::blocking;
use super::{ApiError, AppState};
use crate::clock::now_ms;
use crate::notify::message::Message;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use healthchecker_core::channel::{Channel, ChannelKind};
use serde::Serialize;
use utoipa::ToSchema;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/channels", post(put).get(list))
        .route("/api/v1/channels/{name}", get(one).delete(remove))
        .route("/api/v1/channels/{name}/test", post(test))
}

/// A channel as the API shows it: public settings, and whether a secret is set.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Channel)]
pub struct ChannelDto {
    /// Unique name.
    name: String,
    /// `email`, `webhook`, `ntfy`, `gotify`, `telegram`, `slack`, `discord`,
    /// `matrix`, `pagerduty` or `mqtt`.
    kind: &'static str,
    /// Used by services that name no channel.
    default: bool,
    /// Where it delivers (a Slack or Discord webhook: only its host).
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    /// Recipients (`email`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    to: Vec<String>,
    /// Telegram chat.
    #[serde(skip_serializing_if = "Option::is_none")]
    chat_id: Option<String>,
    /// Matrix room.
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<String>,
    /// MQTT user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    /// MQTT topic prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    topic_prefix: Option<String>,
    /// MQTT Home Assistant discovery prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    discovery_prefix: Option<String>,
    /// True when a secret (token, password, signing key) is set; it is
    /// never shown.
    secret_set: bool,
}

/// `GET /api/v1/channels`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelList {
    /// Every channel, by name.
    channels: Vec<ChannelDto>,
}

/// The answer of the test route.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestResult {
    /// Channel name.
    channel: String,
    /// True when the channel accepted the test message.
    pub(crate) delivered: bool,
    /// The id the message carried.
    pub(crate) delivery_id: String,
    /// Why it was not delivered.
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
    super::error::not_found(format!("no channel named {name:?}"))
}

/// Channels are the daemon's, not a service's: the admin token changes them.
async fn authorize(app: &AppState, caller: &super::auth::Caller) -> Result<(), ApiError> {
    app.authorize_admin_change(&caller.headers, "channels")
        .await
}

/// Create or replace a channel (admin token in token mode).
#[utoipa::path(post, path = "/api/v1/channels", tag = "channels", operation_id = "put_channel",
    request_body(content = Object, description = "`name`, `kind`, `default` and the kind's settings (SPEC section 13)"),
    responses(
        (status = 201, description = "Created", body = ChannelDto),
        (status = 200, description = "Replaced", body = ChannelDto),
        (status = 400, description = "Invalid field (named in the error)", body = super::dto::ErrorBody),
        (status = 401, description = "No or a wrong token (token mode)", body = super::dto::ErrorBody),
        (status = 403, description = "Not the admin token, or sent by a page of another site", body = super::dto::ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = super::dto::ErrorBody),
        (status = 415, description = "The body is not application/json", body = super::dto::ErrorBody),
        (status = 429, description = "Too many changes from this client", body = super::dto::ErrorBody),
        (status = 503, description = "The store cannot write", body = super::dto::ErrorBody),
    ))]
pub(super) async fn put(
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
    let created = blocking(move || store.put_channel(&c, now_ms())).await?;
    Ok((created, channel))
}

/// List the channels (no secrets).
#[utoipa::path(get, path = "/api/v1/channels", tag = "channels", operation_id = "list_channels",
    responses(
        (status = 200, description = "Every channel", body = ChannelList),
        (status = 401, description = "No or a wrong token (token mode)", body = super::dto::ErrorBody),
        (status = 503, description = "The store cannot read", body = super::dto::ErrorBody),
    ))]
pub(super) async fn list(State(app): State<AppState>) -> Result<Json<ChannelList>, ApiError> {
    let all = app.read(|s| s.channels()).await?;
    Ok(Json(ChannelList {
        channels: all.iter().map(dto).collect(),
    }))
}

/// One channel (no secret).
#[utoipa::path(get, path = "/api/v1/channels/{name}", tag = "channels", operation_id = "get_channel",
    params(("name" = String, Path, description = "Channel name, percent-encoded")),
    responses(
        (status = 200, description = "The channel", body = ChannelDto),
        (status = 400, description = "Bad name encoding", body = super::dto::ErrorBody),
        (status = 401, description = "No or a wrong token (token mode)", body = super::dto::ErrorBody),
        (status = 404, description = "No such channel", body = super::dto::ErrorBody),
        (status = 503, description = "The store cannot read", body = super::dto::ErrorBody),
    ))]
pub(super) async fn one(
    State(app): State<AppState>,
    ServiceName(name): ServiceName,
) -> Result<Response, ApiError> {
    let n = name.clone();
    Ok(match app.read(move |s| s.channel(&n)).await? {
        Some(c) => Json(dto(&c)).into_response(),
        None => no_channel(&name),
    })
}

/// Delete a channel (admin token in token mode).
#[utoipa::path(delete, path = "/api/v1/channels/{name}", tag = "channels", operation_id = "delete_channel",
    params(("name" = String, Path, description = "Channel name, percent-encoded")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Bad name encoding", body = super::dto::ErrorBody),
        (status = 401, description = "No or a wrong token (token mode)", body = super::dto::ErrorBody),
        (status = 403, description = "Not the admin token", body = super::dto::ErrorBody),
        (status = 404, description = "No such channel", body = super::dto::ErrorBody),
        (status = 429, description = "Too many changes from this client", body = super::dto::ErrorBody),
        (status = 503, description = "The store cannot write", body = super::dto::ErrorBody),
    ))]
pub(super) async fn remove(
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
    blocking(move || store.delete_channel(&n)).await
}

/// Send a test message through a channel now (admin token in token mode).
#[utoipa::path(post, path = "/api/v1/channels/{name}/test", tag = "channels", operation_id = "test_channel",
    params(("name" = String, Path, description = "Channel name, percent-encoded")),
    responses(
        (status = 200, description = "Sent or not, and why", body = TestResult),
        (status = 400, description = "Bad name encoding", body = super::dto::ErrorBody),
        (status = 401, description = "No or a wrong token (token mode)", body = super::dto::ErrorBody),
        (status = 403, description = "Not the admin token", body = super::dto::ErrorBody),
        (status = 404, description = "No such channel", body = super::dto::ErrorBody),
        (status = 429, description = "Too many changes from this client", body = super::dto::ErrorBody),
        (status = 503, description = "The store cannot read", body = super::dto::ErrorBody),
    ))]
pub(super) async fn test(
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
