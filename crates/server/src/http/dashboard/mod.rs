//! The dashboard: server-rendered HTML (maud) to watch and to manage
//! services from a browser (SPEC sections 10 and 17).
//!
//! `pages` renders the service list and a service's page, `charts` the SVG
//! drawn here (sparklines, the response-time chart, the bar of the last
//! checks), `forms` the add / edit / pause / resume / delete forms and the
//! token-mode login, `status` the optional public status page, `assets` the
//! stylesheet and the one script. Every page is complete without
//! JavaScript; the script only refreshes the `#live` part and shows times
//! in the viewer's zone. maud escapes every string, and no token or SMTP
//! setting is ever rendered. What this module must not do: change state
//! other than through the operations the API uses (`ops`).

mod assets;
mod channel_forms;
mod charts;
mod cluster;
mod forms;
mod found;
mod login;
mod notifications;
mod pages;
mod silence_forms;
mod status;

use super::session;
use super::AppState;
use crate::clock::rfc3339;
use crate::config::AuthMode;
use axum::http::{header, HeaderMap};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use healthchecker_core::HealthState;
use maud::{html, Markup, DOCTYPE};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::index))
        .route("/services/{name}", get(pages::service_page))
        .route(assets::SCRIPT_PATH, get(assets::script))
        .route(assets::STYLE_PATH, get(assets::style))
        .merge(forms::router())
        .merge(found::router())
        .merge(login::router())
        .merge(status::router())
        .merge(silence_forms::router())
        .merge(channel_forms::router())
        .merge(cluster::router())
}

/// Who is looking, for the page's header: whether changes need a login and
/// whether this browser has one.
pub(super) struct Viewer {
    token_mode: bool,
    logged_in: bool,
}

impl Viewer {
    pub(super) fn of(app: &AppState, headers: &HeaderMap) -> Viewer {
        let token_mode = app.config.auth == AuthMode::Token;
        let logged_in = token_mode
            && session::cookie_id(headers)
                .is_some_and(|id| app.sessions.valid(&id, crate::clock::now_ms()));
        Viewer {
            token_mode,
            logged_in,
        }
    }
}

/// The `<head>` of every dashboard page (the status page's too): charset,
/// viewport, colour scheme, `title` and the stylesheet.
pub(super) fn page_head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="color-scheme" content="light dark";
            title { (title) }
            link rel="stylesheet" href=(assets::STYLE_PATH);
        }
    }
}

/// The page around a body: header with navigation, stylesheet, script.
pub(super) fn page(viewer: &Viewer, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (page_head(&format!("{title} · healthchecker")))
            body {
                header {
                    a href="/" { "healthchecker" }
                    span { (title) }
                    nav {
                        a href="/new" { "+ add service" }
                        a href="/channels" { "channels" }
                        a href="/silences" { "silences" }
                        a href="/found" { "found on the LAN" }
                        a href="/cluster" { "cluster" }
                        @if viewer.logged_in {
                            form method="post" action="/logout" { button type="submit" { "log out" } }
                        } @else if viewer.token_mode {
                            a href="/login" { "log in" }
                        }
                    }
                }
                main { (body) }
                script src=(assets::SCRIPT_PATH) {}
            }
        }
    }
}

/// A state as colour and text (never colour alone).
pub(super) fn state_badge(state: HealthState, paused: bool) -> Markup {
    html! {
        span class={"state " (state.as_str())} data-state=(state.as_str()) { (state.as_str()) }
        @if paused { " " span class="state paused" { "paused" } }
    }
}

/// A ratio as a percentage, `–` when there is no data.
pub(super) fn pct(u: Option<f64>) -> String {
    u.map(|v| format!("{:.2}%", v * 100.0))
        .unwrap_or_else(|| "–".into())
}

/// A time: machine-readable in `datetime`, UTC text that the script
/// rewrites into the viewer's zone with a relative time.
pub(super) fn when(at: impl Into<healthchecker_core::UnixMs>) -> Markup {
    let iso = rfc3339(at);
    let text = format!("{} UTC", iso.get(..19).unwrap_or(&iso).replace('T', " "));
    html! { time datetime=(iso) { (text) } }
}

/// An HTML page that must not be cached (it shows live state).
pub(super) fn no_cache(markup: Markup) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Html(markup.into_string()),
    )
        .into_response()
}

/// A dashboard page answered with `status`: a form sent back with its
/// errors, a confirm page, a refusal. Never cached.
pub(super) fn page_with_status(
    app: &AppState,
    caller: &crate::http::auth::Caller,
    title: &str,
    body: Markup,
    status: axum::http::StatusCode,
) -> Response {
    let mut r = no_cache(page(&Viewer::of(app, &caller.headers), title, body));
    *r.status_mut() = status;
    r
}

/// A refusal or failure as a page: `heading`, the reason (announced to
/// screen readers) and a link `back` (`(href, text)`).
pub(super) fn problem_page(
    app: &AppState,
    caller: &crate::http::auth::Caller,
    heading: &str,
    why: &str,
    back: (&str, &str),
    status: axum::http::StatusCode,
) -> Response {
    let body = html! {
        h1 { (heading) }
        p class="problem" role="alert" id="problem" { (why) }
        p { a href=(back.0) { (back.1) } }
    };
    page_with_status(app, caller, &heading.to_lowercase(), body, status)
}

/// The fixed notices a redirect may ask for (`?notice=`): never text taken
/// from the URL, so a link cannot make the dashboard say anything else.
pub(super) fn notice(q: Option<&str>) -> Option<&'static str> {
    Some(match q? {
        "added" => "The service was added; its first check runs shortly.",
        "saved" => "Saved.",
        "paused" => "Paused: no checks and no mail until it is resumed.",
        "resumed" => "Resumed: checks run again.",
        "deleted" => "The service was deleted.",
        "exists" => "A service of that name already exists; nothing was changed. This is it.",
        "login" => "Logged in.",
        "logout" => "Logged out.",
        "silenced" => "Silenced: checks go on, notifications are held until the silence ends.",
        _ => return None,
    })
}
