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
mod charts;
mod forms;
mod login;
mod pages;
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
        .merge(login::router())
        .merge(status::router())
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

/// The page around a body: header with navigation, stylesheet, script.
pub(super) fn page(viewer: &Viewer, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · healthchecker" }
                link rel="stylesheet" href=(assets::STYLE_PATH);
            }
            body {
                header {
                    a href="/" { "healthchecker" }
                    span { (title) }
                    nav {
                        a href="/new" { "+ add service" }
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
pub(super) fn when(ms: i64) -> Markup {
    let iso = rfc3339(ms);
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
        _ => return None,
    })
}
