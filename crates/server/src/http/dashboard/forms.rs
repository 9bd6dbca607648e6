//! The forms that change services from a browser without JavaScript
//! (SPEC section 17): add (`/new`), edit, pause, resume and delete (with a
//! confirm page). Each posts `application/x-www-form-urlencoded` to a route
//! of its own and calls the operation the API uses (`ops`), so validation,
//! limits and authorisation are the API's: an invalid form comes back with
//! the user's input kept and the API's message beside the field it names;
//! nothing is half-saved (one store transaction). A success redirects
//! (POST-redirect-GET) to a page with a fixed notice. Submitting the add
//! form twice does not make two services: the second shows the first.
//! In token mode a form needs the dashboard login (`login`).

use super::login::form_caller;
use super::{page_with_status, problem_page};
use crate::http::auth::Caller;
use crate::http::dto::path_segment;
use crate::http::extract::{form_pairs, Body, ServiceName};
use crate::http::{ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use healthchecker_core::{RegisterRequest, ServiceSpec};
use maud::{html, Markup};
use std::collections::HashMap;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/new", get(add_form).post(add))
        .route("/services/{name}/edit", get(edit_form).post(edit))
        .route("/services/{name}/pause", post(set_paused::<true>))
        .route("/services/{name}/resume", post(set_paused::<false>))
        .route("/services/{name}/delete", get(delete_form).post(delete))
}

enum Input {
    Text,
    Number,
    Check,
    Kind,
}

/// The fields of the form, named as the API's fields (its errors name them).
const FIELDS: &[(&str, &str, Input, &str)] = &[
    ("name", "Name", Input::Text, "1 to 200 characters; unique."),
    ("kind", "Kind", Input::Kind, "A check polls a target; a heartbeat waits for pings."),
    ("url", "Target URL", Input::Text, "http(s)://host:port/path, tcp://host:port, tls://host:port, icmp://host or dns://server/name?type=A (checks only)."),
    ("interval", "Interval (seconds)", Input::Number, "How often to check; empty for the default (30)."),
    ("timeout", "Timeout (seconds)", Input::Number, "Empty for the default."),
    ("healthy_threshold", "Healthy threshold", Input::Number, "Passes in a row to become healthy; empty for the default (10)."),
    ("unhealthy_threshold", "Unhealthy threshold", Input::Number, "Failures in a row to become unhealthy; empty for the default (2)."),
    ("expected_status", "Expected HTTP status", Input::Text, "e.g. 200-399 or 200,204 (HTTP checks)."),
    ("tls_verify", "Require a trusted certificate", Input::Check, "HTTPS and TLS checks."),
    ("cert_warn_days", "Certificate warning (days)", Input::Number, "Warn this many days before the certificate expires."),
    ("email", "E-mail", Input::Text, "Who is told of state changes; comma-separated."),
    ("period", "Heartbeat period (seconds)", Input::Number, "Heartbeats only: how often pings are expected."),
    ("grace", "Heartbeat grace (seconds)", Input::Number, "Heartbeats only: how late a ping may be."),
];

/// What the user typed (or the service's current values), by field.
type Values = HashMap<String, String>;

/// Why a form came back: beside a field, or above the form.
enum Problem {
    Field(String, String),
    General(String, StatusCode),
}

impl From<ApiError> for Problem {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Invalid(e) if FIELDS.iter().any(|f| f.0 == e.field) => {
                Problem::Field(e.field, e.message)
            }
            ApiError::BadRequest { field, message, .. } if FIELDS.iter().any(|f| f.0 == field) => {
                Problem::Field(field, message)
            }
            other => {
                let message = other.to_string();
                Problem::General(message, other.into_response().status())
            }
        }
    }
}

fn status_of(p: &Problem) -> StatusCode {
    match p {
        Problem::Field(..) => StatusCode::BAD_REQUEST,
        Problem::General(_, status) => *status,
    }
}

fn field(
    key: &str,
    label: &str,
    input: &Input,
    hint: &str,
    v: &Values,
    p: Option<&Problem>,
    edit: bool,
) -> Markup {
    let err = match p {
        Some(Problem::Field(f, m)) if f == key => Some(m.as_str()),
        _ => None,
    };
    let value = v.get(key).map(String::as_str).unwrap_or("");
    let id = format!("f-{key}");
    let described = format!(
        "{id}-hint{}",
        if err.is_some() {
            format!(" {id}-error")
        } else {
            String::new()
        }
    );
    html! {
        div class={"field" @if err.is_some() { " invalid" }} data-field=(key) {
            label for=(id) { (label) }
            @match input {
                Input::Text => {
                    @if key == "name" && edit {
                        input id=(id) type="text" name=(key) value=(value) readonly aria-describedby=(described);
                    } @else {
                        input id=(id) type="text" name=(key) value=(value) required[key == "name"] aria-invalid=[err.map(|_| "true")] aria-describedby=(described);
                    }
                },
                Input::Number => input id=(id) type="number" name=(key) value=(value) aria-invalid=[err.map(|_| "true")] aria-describedby=(described);,
                Input::Check => input id=(id) type="checkbox" name=(key) value="true" checked[matches!(value, "true" | "on" | "1" | "yes")] aria-describedby=(described);,
                Input::Kind => select id=(id) name=(key) aria-describedby=(described) {
                    option value="check" selected[value != "heartbeat"] { "check" }
                    option value="heartbeat" selected[value == "heartbeat"] { "heartbeat" }
                },
            }
            @if let Some(m) = err { p class="error" id={(id) "-error"} role="alert" { (m) } }
            p class="hint" id={(id) "-hint"} { (hint) }
        }
    }
}

fn service_form(action: &str, submit: &str, v: &Values, p: Option<&Problem>, edit: bool) -> Markup {
    html! {
        @if let Some(Problem::General(m, _)) = p { p class="problem" role="alert" id="problem" { (m) } }
        @if let Some(Problem::Field(f, _)) = p { p class="problem" role="alert" id="problem" { "Not saved: see " (f) " below." } }
        form class="edit" method="post" action=(action) {
            @for (key, label, input, hint) in FIELDS {
                (field(key, label, input, hint, v, p, edit))
            }
            div class="actions" {
                button class="primary" type="submit" { (submit) }
                a href="/" { "Cancel" }
            }
        }
    }
}

fn values_of(pairs: Vec<(String, String)>) -> Values {
    pairs.into_iter().collect()
}

/// The form's values as the API's registration, validated by core.
fn spec_of(v: &Values) -> Result<ServiceSpec, ApiError> {
    let mut map = serde_json::Map::new();
    for (key, ..) in FIELDS {
        if let Some(val) = v.get(*key).map(|s| s.trim()).filter(|s| !s.is_empty()) {
            map.insert(key.to_string(), serde_json::Value::String(val.to_string()));
        }
    }
    let req = RegisterRequest::from_map(map)?;
    Ok(ServiceSpec::try_from(req)?)
}

fn to(name: &str, notice: &str) -> Response {
    Redirect::to(&format!("/services/{}?notice={notice}", path_segment(name))).into_response()
}

async fn add_form(State(app): State<AppState>, caller: Caller) -> Response {
    let body =
        html! { h1 { "Add a service" } (service_form("/new", "Add", &Values::new(), None, false)) };
    page_with_status(&app, &caller, "add a service", body, StatusCode::OK)
}

async fn add(
    State(app): State<AppState>,
    caller: Caller,
    Body(raw): Body,
) -> Result<Response, ApiError> {
    let v = values_of(form_pairs(&raw, "form")?);
    let again = |p: Problem| {
        let status = status_of(&p);
        let body =
            html! { h1 { "Add a service" } (service_form("/new", "Add", &v, Some(&p), false)) };
        Ok(page_with_status(
            &app,
            &caller,
            "add a service",
            body,
            status,
        ))
    };
    let spec = match spec_of(&v) {
        Ok(s) => s,
        Err(e) => return again(e.into()),
    };
    // The login is checked before the name is looked up: with --private,
    // whether a name exists is not for an anonymous caller to learn.
    let admin = match form_caller(&app, &caller) {
        Ok(c) => c,
        Err(why) => return again(Problem::General(why, StatusCode::UNAUTHORIZED)),
    };
    let n = spec.name.clone();
    if app.read(move |s| s.get_service(&n)).await?.is_some() {
        // A second submit (a reload, a double click) shows the first.
        return Ok(to(&spec.name, "exists"));
    }
    let name = spec.name.clone();
    match app.register(spec, &admin).await {
        Ok(_) => {
            app.state_counts.clear();
            Ok(to(&name, "added"))
        }
        Err(e) => again(e.into()),
    }
}

fn values_of_spec(rec: &crate::store::ServiceRecord) -> Values {
    let s = &rec.spec;
    let mut v = Values::new();
    v.insert("name".into(), s.name.clone());
    let emails: Vec<String> = s.emails.iter().map(|e| e.to_string()).collect();
    v.insert("email".into(), emails.join(", "));
    match &s.heartbeat {
        Some(h) => {
            v.insert("kind".into(), "heartbeat".into());
            v.insert("period".into(), h.period.to_string());
            v.insert("grace".into(), h.grace.to_string());
        }
        None => {
            v.insert("kind".into(), "check".into());
            v.insert("url".into(), s.target.url());
            v.insert("interval".into(), s.interval.to_string());
            v.insert("timeout".into(), s.timeout.to_string());
            v.insert("healthy_threshold".into(), s.healthy_threshold.to_string());
            v.insert(
                "unhealthy_threshold".into(),
                s.unhealthy_threshold.to_string(),
            );
            if s.target.protocol.is_http() {
                v.insert("expected_status".into(), s.expected_status.to_string());
            }
            if s.target.protocol.is_tls() {
                v.insert("tls_verify".into(), s.tls_verify.to_string());
                v.insert("cert_warn_days".into(), s.cert_warn_days.to_string());
            }
        }
    }
    v
}

fn edit_body(name: &str, v: &Values, p: Option<&Problem>) -> Markup {
    let action = format!("/services/{}/edit", path_segment(name));
    html! {
        h1 { "Edit " (name) }
        p class="reason" { "The name cannot change; the service keeps its history and its token." }
        (service_form(&action, "Save", v, p, true))
    }
}

async fn edit_form(
    State(app): State<AppState>,
    caller: Caller,
    ServiceName(name): ServiceName,
) -> Result<Response, ApiError> {
    let rec = app.service(&name).await?;
    let body = edit_body(&name, &values_of_spec(&rec), None);
    Ok(page_with_status(
        &app,
        &caller,
        &format!("edit {name}"),
        body,
        StatusCode::OK,
    ))
}

async fn edit(
    State(app): State<AppState>,
    caller: Caller,
    ServiceName(name): ServiceName,
    Body(raw): Body,
) -> Result<Response, ApiError> {
    let mut v = values_of(form_pairs(&raw, "form")?);
    // The name is the page's, whatever the body says: an edit never
    // creates or renames a service.
    v.insert("name".into(), name.clone());
    let again = |p: Problem| {
        let status = status_of(&p);
        Ok(page_with_status(
            &app,
            &caller,
            &format!("edit {name}"),
            edit_body(&name, &v, Some(&p)),
            status,
        ))
    };
    let spec = match spec_of(&v) {
        Ok(s) => s,
        Err(e) => return again(e.into()),
    };
    let admin = match form_caller(&app, &caller) {
        Ok(c) => c,
        Err(why) => return again(Problem::General(why, StatusCode::UNAUTHORIZED)),
    };
    // An edit never creates: an unknown name is 404 (after the login).
    app.service(&name).await?;
    match app.update_keeping_token(spec, &admin).await {
        Ok(_) => Ok(to(&name, "saved")),
        Err(e) => again(e.into()),
    }
}

/// A refusal or failure of a button (pause, resume, delete), as a page.
fn refused(
    app: &AppState,
    caller: &Caller,
    name: &str,
    why: String,
    status: StatusCode,
) -> Response {
    let back = format!("/services/{}", path_segment(name));
    problem_page(
        app,
        caller,
        name,
        &why,
        (&back, &format!("Back to {name}")),
        status,
    )
}

/// A failed change of a button, as a page with the error's status.
fn failed(app: &AppState, caller: &Caller, name: &str, e: ApiError) -> Response {
    let why = e.to_string();
    refused(app, caller, name, why, e.into_response().status())
}

/// The pause (`PAUSED`) and resume buttons.
async fn set_paused<const PAUSED: bool>(
    State(app): State<AppState>,
    caller: Caller,
    ServiceName(name): ServiceName,
) -> Response {
    let admin = match form_caller(&app, &caller) {
        Ok(c) => c,
        Err(why) => return refused(&app, &caller, &name, why, StatusCode::UNAUTHORIZED),
    };
    match app.set_paused(&name, PAUSED, &admin).await {
        Ok(_) => {
            app.state_counts.clear();
            to(&name, if PAUSED { "paused" } else { "resumed" })
        }
        Err(e) => failed(&app, &caller, &name, e),
    }
}

async fn delete_form(
    State(app): State<AppState>,
    caller: Caller,
    ServiceName(name): ServiceName,
) -> Result<Response, ApiError> {
    app.service(&name).await?;
    let body = html! {
        h1 { "Delete " (name) "?" }
        p { "Checks stop and its history, events and pending mail are deleted. This cannot be undone." }
        form method="post" action={"/services/" (path_segment(&name)) "/delete"} class="actions" {
            button class="danger" type="submit" id="confirm-delete" { "Delete " (name) }
            a href={"/services/" (path_segment(&name))} { "Cancel" }
        }
    };
    Ok(page_with_status(
        &app,
        &caller,
        &format!("delete {name}"),
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
        Err(why) => return refused(&app, &caller, &name, why, StatusCode::UNAUTHORIZED),
    };
    match app.delete(&name, &admin).await {
        Ok(()) => {
            app.state_counts.clear();
            Redirect::to("/?notice=deleted").into_response()
        }
        Err(e) => failed(&app, &caller, &name, e),
    }
}
