//! The dashboard's login in `--auth token` mode: a form that takes the
//! admin token once and sets a session cookie (see `http::session` for why
//! a cookie, and its attributes). The cookie is turned into the admin
//! credential only for the dashboard's own form routes, after the
//! cross-site guard has passed them; the JSON API never reads it.

use super::{no_cache, notice, page, Viewer};
use crate::clock::now_ms;
use crate::config::AuthMode;
use crate::http::auth::Caller;
use crate::http::extract::{form_pairs, last_value, Body, Query};
use crate::http::session;
use crate::http::{ApiError, AppState};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
}

/// The caller a dashboard form acts as: itself in open mode; in token mode
/// the admin when this browser has a live login, else the reason it may not.
pub(super) fn form_caller(app: &AppState, caller: &Caller) -> Result<Caller, String> {
    if app.config.auth == AuthMode::Open {
        return Ok(Caller {
            headers: caller.headers.clone(),
            peer: caller.peer,
        });
    }
    let live =
        session::cookie_id(&caller.headers).is_some_and(|id| app.sessions.valid(&id, now_ms()));
    let admin = app.config.admin_token.as_ref().map(|t| t.0.as_str());
    match (live, admin) {
        (true, Some(token)) => {
            let mut headers = caller.headers.clone();
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "the admin token cannot be sent in a header".to_string())?;
            headers.insert(header::AUTHORIZATION, value);
            Ok(Caller {
                headers,
                peer: caller.peer,
            })
        }
        _ => Err("Not saved: this daemon runs with --auth token, and changes from the dashboard need the admin login. Log in (top right) with the admin token, then send the form again.".into()),
    }
}

/// Where to go after logging in: a path of the daemon's own, never another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".into(),
    }
}

fn login_body(app: &AppState, next: &str, problem: Option<&str>) -> Markup {
    html! {
        h1 { "Log in" }
        @if app.config.auth == AuthMode::Open {
            p class="notice" { "This daemon runs with --auth open: no login is needed to change services." }
        } @else {
            p { "Changes from the dashboard need the admin token (" code { "--admin-token" } "). The login lasts 12 hours in this browser." }
            form class="edit" method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                div class={"field" @if problem.is_some() { " invalid" }} data-field="token" {
                    label for="f-token" { "Admin token" }
                    input id="f-token" type="password" name="token" autocomplete="current-password" required aria-invalid=[problem.map(|_| "true")];
                    @if let Some(m) = problem { p class="error" id="f-token-error" role="alert" { (m) } }
                }
                div class="actions" { button class="primary" type="submit" { "Log in" } }
            }
        }
    }
}

async fn login_form(State(app): State<AppState>, caller: Caller, q: Query) -> Response {
    let next = safe_next(q.get("next"));
    let body = html! {
        @if let Some(n) = notice(q.get("notice")) { p class="notice" role="status" { (n) } }
        (login_body(&app, &next, None))
    };
    no_cache(page(&Viewer::of(&app, &caller.headers), "log in", body))
}

async fn login(
    State(app): State<AppState>,
    caller: Caller,
    Body(raw): Body,
) -> Result<Response, ApiError> {
    let pairs = form_pairs(&raw, "form")?;
    let get = |k: &str| last_value(&pairs, k);
    let next = safe_next(get("next"));
    let token = get("token").unwrap_or("").trim();
    if app.config.auth != AuthMode::Token || !app.is_admin(token) {
        let why = if app.config.auth == AuthMode::Token {
            "wrong token: give the admin token (--admin-token)"
        } else {
            "no login is needed: this daemon runs with --auth open"
        };
        tracing::warn!("refused a dashboard login");
        let mut r = no_cache(page(
            &Viewer::of(&app, &caller.headers),
            "log in",
            login_body(&app, &next, Some(why)),
        ));
        *r.status_mut() = StatusCode::FORBIDDEN;
        return Ok(r);
    }
    let id = session::Sessions::create(&app.sessions, now_ms())
        .map_err(|e| ApiError::Internal(format!("no randomness: {e}")))?;
    let cookie = session::set_cookie(&id, app.config.api_tls.is_some());
    let mut r = Redirect::to(&next).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    Ok(r)
}

async fn logout(State(app): State<AppState>, caller: Caller) -> Response {
    if let Some(id) = session::cookie_id(&caller.headers) {
        app.sessions.remove(&id);
    }
    let mut r = Redirect::to("/login?notice=logout").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie(app.config.api_tls.is_some())) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn login_only_returns_to_the_daemons_own_pages() {
        assert_eq!(safe_next(Some("/services/a")), "/services/a");
        for bad in ["//evil.example/", "https://evil.example/", "/\\evil", ""] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
