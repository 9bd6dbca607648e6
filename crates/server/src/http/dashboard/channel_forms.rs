//! Notification channels from the browser (SPEC sections 13 and 17):
//! `/channels` lists them (kind, name, default, the public part of the URL;
//! never a secret), `/channels/new?kind=K` is the add form with that kind's
//! fields (secrets as write-only password inputs, never sent back), and
//! each channel has a "send a test" button and a delete behind a confirm
//! page. Every change calls the API's own operations
//! (`http::channels::save`, `send_test`, `delete_named`), so validation,
//! messages and the admin token are the API's.

use super::login::form_caller;
use super::{page_with_status, problem_page};
use crate::http::auth::Caller;
use crate::http::channels;
use crate::http::dto::path_segment;
use crate::http::extract::{form_pairs, Body, Query, ServiceName};
use crate::http::{ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use healthchecker_core::channel::ChannelKind;
use maud::{html, Markup};
use serde_json::{Map, Value};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/channels", get(list))
        .route("/channels/new", get(add_form).post(add))
        .route("/channels/{name}/test", post(test))
        .route("/channels/{name}/delete", get(delete_form).post(delete))
}

/// A field of a kind: API name, label, secret (write-only), hint.
type Field = (&'static str, &'static str, bool, &'static str);

/// Each kind's own fields, named as the API's (its errors name them).
fn fields(kind: ChannelKind) -> &'static [Field] {
    const URL: Field = ("url", "URL", false, "http(s)://… of the receiver.");
    match kind {
        ChannelKind::Email => &[(
            "to",
            "To",
            false,
            "Addresses, comma-separated; sent over --smtp-url.",
        )],
        ChannelKind::Webhook => &[
            URL,
            (
                "secret",
                "Signing secret",
                true,
                "Signs each body (X-Healthchecker-Signature).",
            ),
        ],
        ChannelKind::Ntfy => &[
            ("url", "Topic URL", false, "e.g. https://ntfy.sh/my-alerts."),
            ("token", "Access token", true, "Optional bearer token."),
        ],
        ChannelKind::Slack | ChannelKind::Discord => &[(
            "url",
            "Webhook URL",
            true,
            "The incoming-webhook URL (a credential: it is never shown again).",
        )],
        ChannelKind::Telegram => &[
            (
                "url",
                "API base URL",
                false,
                "Empty for https://api.telegram.org.",
            ),
            ("token", "Bot token", true, ""),
            ("chat_id", "Chat id", false, ""),
        ],
        ChannelKind::Gotify => &[
            ("url", "Server URL", false, ""),
            ("token", "Application token", true, ""),
        ],
        ChannelKind::Matrix => &[
            ("url", "Homeserver URL", false, ""),
            ("token", "Access token", true, ""),
            ("room", "Room id", false, "e.g. !abc:example.org"),
        ],
        ChannelKind::Pagerduty => &[
            (
                "url",
                "Events API URL",
                false,
                "Empty for the Events API v2 endpoint.",
            ),
            ("routing_key", "Routing key", true, ""),
        ],
        ChannelKind::Mqtt => &[
            (
                "url",
                "Broker URL",
                false,
                "mqtt://host:1883 or mqtts://host:8883.",
            ),
            ("username", "Username", false, "Optional."),
            ("password", "Password", true, "Optional."),
            (
                "topic_prefix",
                "Topic prefix",
                false,
                "Empty for healthchecker.",
            ),
            (
                "discovery_prefix",
                "Discovery prefix",
                false,
                "Empty for homeassistant (Home Assistant discovery).",
            ),
        ],
    }
}

fn kind_of(s: Option<&str>) -> Option<ChannelKind> {
    s.and_then(|k| k.parse().ok())
}

/// The fixed notices of `/channels`.
fn notice(q: Option<&str>) -> Option<&'static str> {
    Some(match q? {
        "saved" => "The channel was saved.",
        "tested" => "The test message was delivered.",
        "deleted" => "The channel was deleted.",
        _ => return None,
    })
}

async fn list(State(app): State<AppState>, caller: Caller, q: Query) -> Result<Response, ApiError> {
    let all = app.read(|s| s.channels()).await?;
    let body = html! {
        h1 { "Channels" }
        @if let Some(n) = notice(q.get("notice")) { p class="notice" role="status" id="notice" { (n) } }
        p class="reason" { "Where notifications go. A service that names no channel uses the default ones. Secrets are never shown." }
        div class="scroll" {
            table id="channels" {
                thead { tr { th { "name" } th { "kind" } th { "default" } th { "URL" } th { "secret" } th { "" } } }
                tbody {
                    @if all.is_empty() { tr { td colspan="6" { "No channels yet." } } }
                    @for c in &all {
                        @let base = format!("/channels/{}", path_segment(&c.name));
                        tr class="channel" data-name=(c.name) {
                            td { (c.name) }
                            td { (c.kind.as_str()) }
                            td { @if c.default { "default" } @else { "no" } }
                            td { @if c.kind == ChannelKind::Email {
                                    (c.to.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "))
                                } @else { code { (channels::public_url(c).unwrap_or_default()) } } }
                            td { @if c.secret.is_some() { "set" } @else { "–" } }
                            td class="actions" {
                                form method="post" action={(base) "/test"} { button type="submit" class="test" { "Send a test" } }
                                a class="button" href={(base) "/delete"} { "Delete…" }
                            }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Add a channel" }
            form method="get" action="/channels/new" class="filter" {
                label for="f-new-kind" { "Kind" }
                select id="f-new-kind" name="kind" {
                    @for k in ChannelKind::ALL { option value=(k.as_str()) { (k.as_str()) } }
                }
                button type="submit" id="choose-kind" { "Next" }
            }
        }
    };
    Ok(page_with_status(
        &app,
        &caller,
        "channels",
        body,
        StatusCode::OK,
    ))
}

/// What the user typed, and why the form came back.
struct Sent<'a> {
    values: &'a [(String, String)],
    field: Option<(String, String)>,
    general: Option<String>,
}

impl Sent<'_> {
    fn get(&self, k: &str) -> &str {
        self.values
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
}

fn input(key: &str, label: &str, secret: bool, hint: &str, sent: &Sent) -> Markup {
    let err = sent
        .field
        .as_ref()
        .filter(|(f, _)| f == key)
        .map(|(_, m)| m.as_str());
    let id = format!("f-{key}");
    html! {
        div class={"field" @if err.is_some() { " invalid" }} data-field=(key) {
            label for=(id) { (label) }
            @if secret {
                // Write-only: never sent back, even when the form returns.
                input id=(id) type="password" name=(key) value="" autocomplete="new-password" aria-invalid=[err.map(|_| "true")] aria-describedby={(id) "-hint"};
            } @else {
                input id=(id) type="text" name=(key) value=(sent.get(key)) required[key == "name"] aria-invalid=[err.map(|_| "true")] aria-describedby={(id) "-hint"};
            }
            @if let Some(m) = err { p class="error" id={(id) "-error"} role="alert" { (m) } }
            p class="hint" id={(id) "-hint"} {
                (hint)
                @if secret && (sent.field.is_some() || sent.general.is_some()) { " Enter it again: secrets are not sent back." }
            }
        }
    }
}

fn add_body(kind: ChannelKind, sent: &Sent) -> Markup {
    html! {
        h1 { "Add a " (kind.as_str()) " channel" }
        @if let Some(m) = &sent.general { p class="problem" role="alert" id="problem" { (m) } }
        @if let Some((f, _)) = &sent.field { p class="problem" role="alert" id="problem" { "Not saved: see " (f) " below." } }
        form class="edit" method="post" action="/channels/new" {
            input type="hidden" name="kind" value=(kind.as_str());
            (input("name", "Name", false, "1 to 200 characters; a channel of the same name is replaced.", sent))
            div class="field" data-field="default" {
                label for="f-default" { "Default channel" }
                input id="f-default" type="checkbox" name="default" value="true" checked[sent.get("default") == "true"] aria-describedby="f-default-hint";
                p class="hint" id="f-default-hint" { "Used by every service that names no channel." }
            }
            @for (key, label, secret, hint) in fields(kind) { (input(key, label, *secret, hint, sent)) }
            div class="actions" {
                button class="primary" type="submit" id="save-channel" { "Save" }
                a href="/channels" { "Cancel" }
            }
        }
    }
}

async fn add_form(
    State(app): State<AppState>,
    caller: Caller,
    q: Query,
) -> Result<Response, ApiError> {
    let kind = kind_of(q.get("kind")).ok_or_else(|| {
        let known: Vec<&str> = ChannelKind::ALL.iter().map(|k| k.as_str()).collect();
        ApiError::bad(
            "kind",
            format!("invalid kind (known: {})", known.join(", ")),
        )
    })?;
    let sent = Sent {
        values: &[],
        field: None,
        general: None,
    };
    Ok(page_with_status(
        &app,
        &caller,
        "add a channel",
        add_body(kind, &sent),
        StatusCode::OK,
    ))
}

/// The form as the API's JSON body: the kind's fields, empty ones left out.
fn body_of(kind: ChannelKind, sent: &Sent) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("kind".into(), kind.as_str().into());
    map.insert("name".into(), sent.get("name").trim().into());
    map.insert("default".into(), (sent.get("default") == "true").into());
    for (key, ..) in fields(kind) {
        let v = sent.get(key).trim();
        if !v.is_empty() {
            map.insert(key.to_string(), v.into());
        }
    }
    map
}

async fn add(
    State(app): State<AppState>,
    caller: Caller,
    Body(raw): Body,
) -> Result<Response, ApiError> {
    let values = form_pairs(&raw, "form")?;
    let probe = Sent {
        values: &values,
        field: None,
        general: None,
    };
    let kind =
        kind_of(Some(probe.get("kind"))).ok_or_else(|| ApiError::bad("kind", "invalid kind"))?;
    let again = |field: Option<(String, String)>, general: Option<String>, status: StatusCode| {
        let sent = Sent {
            values: &values,
            field,
            general,
        };
        Ok(page_with_status(
            &app,
            &caller,
            "add a channel",
            add_body(kind, &sent),
            status,
        ))
    };
    let admin = match form_caller(&app, &caller) {
        Ok(c) => c,
        Err(why) => return again(None, Some(why), StatusCode::UNAUTHORIZED),
    };
    let known = |f: &str| f == "name" || fields(kind).iter().any(|x| x.0 == f);
    match channels::save(&app, &admin, &body_of(kind, &probe)).await {
        Ok(_) => Ok(Redirect::to("/channels?notice=saved").into_response()),
        Err(ApiError::Invalid(e)) if known(&e.field) => {
            again(Some((e.field, e.message)), None, StatusCode::BAD_REQUEST)
        }
        Err(e) => {
            let m = e.to_string();
            again(None, Some(m), e.into_response().status())
        }
    }
}

fn message_page(app: &AppState, caller: &Caller, why: String, status: StatusCode) -> Response {
    problem_page(
        app,
        caller,
        "Channels",
        &why,
        ("/channels", "Back to the channels"),
        status,
    )
}

fn no_channel(app: &AppState, caller: &Caller, name: &str) -> Response {
    message_page(
        app,
        caller,
        format!("no channel named {name:?}"),
        StatusCode::NOT_FOUND,
    )
}

fn failed(app: &AppState, caller: &Caller, e: ApiError) -> Response {
    let m = e.to_string();
    message_page(app, caller, m, e.into_response().status())
}

async fn test(
    State(app): State<AppState>,
    caller: Caller,
    ServiceName(name): ServiceName,
) -> Response {
    let admin = match form_caller(&app, &caller) {
        Ok(c) => c,
        Err(why) => return message_page(&app, &caller, why, StatusCode::UNAUTHORIZED),
    };
    match channels::send_test(&app, &admin, &name).await {
        Ok(Some(r)) if r.delivered => Redirect::to("/channels?notice=tested").into_response(),
        Ok(Some(r)) => {
            let why = format!(
                "The test message to {name} was not delivered ({}): {}",
                r.delivery_id,
                r.error.unwrap_or_default()
            );
            message_page(&app, &caller, why, StatusCode::BAD_GATEWAY)
        }
        Ok(None) => no_channel(&app, &caller, &name),
        Err(e) => failed(&app, &caller, e),
    }
}

async fn delete_form(
    State(app): State<AppState>,
    caller: Caller,
    ServiceName(name): ServiceName,
) -> Result<Response, ApiError> {
    let n = name.clone();
    if app.read(move |s| s.channel(&n)).await?.is_none() {
        return Ok(no_channel(&app, &caller, &name));
    }
    let body = html! {
        h1 { "Delete channel " (name) "?" }
        p { "Services that name it stop notifying through it; its pending deliveries are dropped. This cannot be undone." }
        form method="post" action={"/channels/" (path_segment(&name)) "/delete"} class="actions" {
            button class="danger" type="submit" id="confirm-delete" { "Delete " (name) }
            a href="/channels" { "Cancel" }
        }
    };
    Ok(page_with_status(
        &app,
        &caller,
        &format!("delete channel {name}"),
        body,
        StatusCode::OK,
    ))
}

async fn delete(
    State(app): State<AppState>,
    caller: Caller,
    ServiceName(name): ServiceName,
) -> Response {
    let admin = match form_caller(&app, &caller) {
        Ok(c) => c,
        Err(why) => return message_page(&app, &caller, why, StatusCode::UNAUTHORIZED),
    };
    match channels::delete_named(&app, &admin, &name).await {
        Ok(true) => Redirect::to("/channels?notice=deleted").into_response(),
        Ok(false) => no_channel(&app, &caller, &name),
        Err(e) => failed(&app, &caller, e),
    }
}
