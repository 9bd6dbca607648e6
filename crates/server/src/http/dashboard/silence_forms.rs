//! Silences from the browser (SPEC sections 14 and 17): on a service's page
//! a form that silences it from now for a while (`POST
//! /services/{name}/silence`), the "silenced until …" mark of the list and
//! the service page, and `/silences`: the silences that hold or will, each
//! ended through a confirm page. Every change goes through the API's own
//! operations (`http::silences::add`, `end`), so validation, the admin
//! token and the reload of the scheduler's `SilenceBook` are the API's.

use super::login::form_caller;
use super::{no_cache, page, page_with_status, problem_page, when, Viewer};
use crate::clock::{now_ms, rfc3339};
use crate::http::auth::Caller;
use crate::http::dto::path_segment;
use crate::http::extract::last_value;
use crate::http::extract::{form_pairs, Body, Query, ServiceName};
use crate::http::{silences, ApiError, AppState};
use crate::silences::{Silence, Window};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use serde_json::{json, Map, Value};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/services/{name}/silence", get(silence_form).post(silence))
        .route("/silences", get(list))
        .route("/silences/{id}/delete", get(end_form).post(end))
}

/// The durations offered beside the field (any `90s`, `30m`, `2h`, `1d` works).
const SUGGESTED: [&str; 6] = ["30m", "1h", "2h", "4h", "1d", "7d"];

/// The mark of a silenced service: text, not colour alone.
pub(super) fn badge(until: Option<i64>) -> Markup {
    html! {
        @if let Some(t) = until {
            " " span class="state silenced" data-silenced="true" { "silenced until " (when(t)) }
        }
    }
}

/// `90s`, `30m`, `2h`, `1d` in milliseconds (at most 365 days).
fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = n.parse().ok()?;
    let mult = match unit.trim() {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    (n > 0 && n.saturating_mul(mult) <= 365 * 86_400_000).then(|| n * mult)
}

/// The form's values, and the error beside a field (`for`, `comment`) or
/// above the form.
struct Form<'a> {
    duration: &'a str,
    comment: &'a str,
    field_error: Option<(&'static str, String)>,
    general: Option<String>,
}

fn field_error(f: &Form, key: &str) -> Option<String> {
    f.field_error
        .as_ref()
        .filter(|(k, _)| *k == key)
        .map(|(_, m)| m.clone())
}

/// The silence form of a service (on its page, and alone when it comes back).
pub(super) fn section(name: &str, form: Option<&FormView>) -> Markup {
    let empty = Form {
        duration: "1h",
        comment: "",
        field_error: None,
        general: None,
    };
    let f = form.map(|v| &v.0).unwrap_or(&empty);
    let dur_err = field_error(f, "for");
    let com_err = field_error(f, "comment");
    html! {
        section id="silence" {
            h2 { "Silence" }
            p class="reason" { "Checks go on and are recorded; notifications are held until the silence ends, then one goes out if the state changed. " a href="/silences" { "All silences" } }
            @if let Some(m) = &f.general { p class="problem" role="alert" id="problem" { (m) } }
            form class="edit" method="post" action={"/services/" (path_segment(name)) "/silence"} {
                div class={"field" @if dur_err.is_some() { " invalid" }} data-field="for" {
                    label for="f-for" { "Silence for" }
                    input id="f-for" type="text" name="for" value=(f.duration) list="durations" required aria-invalid=[dur_err.as_ref().map(|_| "true")] aria-describedby="f-for-hint";
                    datalist id="durations" { @for d in SUGGESTED { option value=(d) {} } }
                    @if let Some(m) = &dur_err { p class="error" id="f-for-error" role="alert" { (m) } }
                    p class="hint" id="f-for-hint" { "From now: 30m, 1h, 2h, 1d (at most 365d)." }
                }
                div class={"field" @if com_err.is_some() { " invalid" }} data-field="comment" {
                    label for="f-comment" { "Comment" }
                    input id="f-comment" type="text" name="comment" value=(f.comment) aria-invalid=[com_err.as_ref().map(|_| "true")] aria-describedby="f-comment-hint";
                    @if let Some(m) = &com_err { p class="error" id="f-comment-error" role="alert" { (m) } }
                    p class="hint" id="f-comment-hint" { "Why (optional), e.g. NAS upgrade." }
                }
                div class="actions" { button type="submit" id="silence-submit" { "Silence" } }
            }
        }
    }
}

/// A form sent back (opaque outside this module).
pub(super) struct FormView<'a>(Form<'a>);

fn form_page(
    app: &AppState,
    caller: &Caller,
    name: &str,
    f: FormView,
    status: StatusCode,
) -> Response {
    let body = html! {
        h1 { "Silence " (name) }
        (section(name, Some(&f)))
        p { a href={"/services/" (path_segment(name))} { "Back to " (name) } }
    };
    page_with_status(app, caller, &format!("silence {name}"), body, status)
}

async fn silence_form(
    State(app): State<AppState>,
    caller: Caller,
    ServiceName(name): ServiceName,
) -> Result<Response, ApiError> {
    app.service(&name).await?;
    let f = Form {
        duration: "1h",
        comment: "",
        field_error: None,
        general: None,
    };
    Ok(form_page(&app, &caller, &name, FormView(f), StatusCode::OK))
}

async fn silence(
    State(app): State<AppState>,
    caller: Caller,
    ServiceName(name): ServiceName,
    Body(raw): Body,
) -> Result<Response, ApiError> {
    let pairs = form_pairs(&raw, "form")?;
    let get = |k: &str| last_value(&pairs, k).unwrap_or("");
    let (duration, comment) = (get("for"), get("comment"));
    let again = |field_error: Option<(&'static str, String)>, general: Option<String>, status| {
        let f = Form {
            duration,
            comment,
            field_error,
            general,
        };
        Ok(form_page(&app, &caller, &name, FormView(f), status))
    };
    let Some(ms) = parse_duration(duration) else {
        let m = format!("invalid duration {duration:?}: expected e.g. 30m, 2h, 1d (at most 365d)");
        return again(Some(("for", m)), None, StatusCode::BAD_REQUEST);
    };
    let admin = match form_caller(&app, &caller) {
        Ok(c) => c,
        Err(why) => return again(None, Some(why), StatusCode::UNAUTHORIZED),
    };
    // Only an existing service (after the login: with --private, whether a
    // name exists is not for an anonymous caller to learn).
    app.service(&name).await?;
    let now = now_ms();
    let mut map: Map<String, Value> = Map::new();
    map.insert("services".into(), json!([name]));
    map.insert("ends_at".into(), rfc3339(now + ms).into());
    if !comment.trim().is_empty() {
        map.insert("comment".into(), comment.trim().into());
    }
    match silences::add(&app, &admin, &map, now).await {
        Ok(_) => Ok(Redirect::to(&format!(
            "/services/{}?notice=silenced",
            path_segment(&name)
        ))
        .into_response()),
        Err(ApiError::Invalid(e)) if e.field == "comment" => {
            again(Some(("comment", e.message)), None, StatusCode::BAD_REQUEST)
        }
        Err(ApiError::Invalid(e)) if e.field == "ends_at" => {
            again(Some(("for", e.message)), None, StatusCode::BAD_REQUEST)
        }
        Err(e) => {
            let (m, status) = why(e);
            again(None, Some(m), status)
        }
    }
}

/// An error's message and the status the API would answer with.
fn why(e: ApiError) -> (String, StatusCode) {
    (e.to_string(), e.into_response().status())
}

/// When a silence holds, as text.
fn window(s: &Silence) -> Markup {
    match &s.window {
        Window::OneOff { starts_at, ends_at } => {
            html! { (when(*starts_at)) " to " (when(*ends_at)) }
        }
        Window::Weekly { text, tz, .. } => html! { "every " (text) " (" (tz) ")" },
    }
}

fn covers(s: &Silence) -> String {
    let mut parts: Vec<String> = s.services.clone();
    parts.extend(s.tags.iter().map(|t| format!("tag {t}")));
    parts.join(", ")
}

/// The notices of `/silences` (fixed texts, as `super::notice`).
fn notice(q: Option<&str>) -> Option<&'static str> {
    Some(match q? {
        "ended" => "The silence was ended; held notifications are decided now.",
        _ => return None,
    })
}

/// Silences that hold now or will (a one-off one not yet over, a weekly one).
fn current(all: Vec<Silence>, now: i64) -> Vec<Silence> {
    all.into_iter()
        .filter(|s| match s.window {
            Window::OneOff { ends_at, .. } => ends_at > now,
            Window::Weekly { .. } => true,
        })
        .collect()
}

async fn list(State(app): State<AppState>, caller: Caller, q: Query) -> Result<Response, ApiError> {
    let now = now_ms();
    let all = current(app.read(|s| s.silences()).await?, now);
    let body = html! {
        h1 { "Silences" }
        @if let Some(n) = notice(q.get("notice")) { p class="notice" role="status" id="notice" { (n) } }
        p class="reason" { "A service is silenced from its own page; silences by tag or weekly windows are made with the API or " code { "healthchecker silence" } "." }
        div class="scroll" {
            table id="silences" {
                thead { tr { th { "id" } th { "covers" } th { "when" } th { "state" } th { "comment" } th { "" } } }
                tbody {
                    @if all.is_empty() { tr { td colspan="6" { "No silence holds or is planned." } } }
                    @for s in &all {
                        tr class="silence" data-id=(s.id) {
                            td { (s.id) }
                            td { (covers(s)) }
                            td { (window(s)) }
                            td { @if s.holds_until(now).is_some() { span class="state paused" { "active" } } @else { "planned" } }
                            td class="reason" { (s.comment.as_deref().unwrap_or("")) }
                            td { a class="button" href={"/silences/" (s.id) "/delete"} { "End…" } }
                        }
                    }
                }
            }
        }
    };
    Ok(no_cache(page(
        &Viewer::of(&app, &caller.headers),
        "silences",
        body,
    )))
}

fn message_page(app: &AppState, caller: &Caller, why: String, status: StatusCode) -> Response {
    problem_page(
        app,
        caller,
        "Silences",
        &why,
        ("/silences", "Back to the silences"),
        status,
    )
}

/// 404 page for a silence id that is not (or no longer) stored.
fn no_silence(app: &AppState, caller: &Caller, id: i64) -> Response {
    message_page(
        app,
        caller,
        format!("no silence {id}"),
        StatusCode::NOT_FOUND,
    )
}

async fn end_form(
    State(app): State<AppState>,
    caller: Caller,
    ServiceName(id): ServiceName,
) -> Result<Response, ApiError> {
    let id = silences::parse_id(&id)?;
    let found = app
        .read(|s| s.silences())
        .await?
        .into_iter()
        .find(|s| s.id == id);
    let Some(s) = found else {
        return Ok(no_silence(&app, &caller, id));
    };
    let body = html! {
        h1 { "End silence " (id) "?" }
        p { "It covers " strong { (covers(&s)) } ", " (window(&s)) "." }
        p { "Notifications it holds are decided at once: sent if the state changed, else dropped." }
        form method="post" action={"/silences/" (id) "/delete"} class="actions" {
            button class="danger" type="submit" id="confirm-end" { "End silence " (id) }
            a href="/silences" { "Cancel" }
        }
    };
    Ok(no_cache(page(
        &Viewer::of(&app, &caller.headers),
        &format!("end silence {id}"),
        body,
    )))
}

async fn end(
    State(app): State<AppState>,
    caller: Caller,
    ServiceName(id): ServiceName,
) -> Result<Response, ApiError> {
    let id = silences::parse_id(&id)?;
    let admin = match form_caller(&app, &caller) {
        Ok(c) => c,
        Err(why) => return Ok(message_page(&app, &caller, why, StatusCode::UNAUTHORIZED)),
    };
    Ok(match silences::end(&app, &admin, id).await {
        Ok(true) => Redirect::to("/silences?notice=ended").into_response(),
        Ok(false) => no_silence(&app, &caller, id),
        Err(e) => {
            let (m, status) = why(e);
            message_page(&app, &caller, m, status)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_as_the_cli_s() {
        assert_eq!(parse_duration("2h"), Some(7_200_000));
        assert_eq!(parse_duration(" 1d "), Some(86_400_000));
        assert_eq!(parse_duration("90s"), Some(90_000));
        for bad in ["", "h", "0h", "2", "2w", "-1h", "366d"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
