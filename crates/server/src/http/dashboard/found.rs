//! "Found on the LAN" (SPEC section 16): the devices the daemon's DNS-SD
//! browser found and that nothing monitors yet, each with its suggested
//! target and a one-click "monitor" button (a plain form, no JavaScript).
//! The button registers exactly what `POST /api/v1/discovered/{id}/monitor`
//! registers (`discovered::device_spec`), behind the same login as the
//! other forms, and never overwrites a service of the suggested name.

use super::login::form_caller;
use super::{no_cache, page, problem_page, Viewer};
use crate::http::auth::Caller;
use crate::http::discovered::{device_spec, unmonitored};
use crate::http::dto::path_segment;
use crate::http::{ApiError, AppState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::html;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/found", get(found_page))
        .route("/found/{id}/monitor", post(monitor))
}

async fn found_page(State(app): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let devices = unmonitored(&app).await?;
    let body = html! {
        h1 { "Found on the LAN" }
        p class="reason" {
            "Devices announcing themselves over ZeroConf (DNS-SD) on this daemon's mDNS interfaces "
            "that no service monitors yet. Nothing is monitored without your click."
        }
        @if !app.config.mdns {
            p class="problem" role="status" { "mDNS is off (--no-mdns): the daemon does not look for devices." }
        }
        @if devices.is_empty() {
            p { "Nothing new found." }
        } @else {
            table class="found" {
                thead { tr { th { "device" } th { "type" } th { "address" } th { "suggested check" } th { span class="visually-hidden" { "action" } } } }
                tbody {
                    @for d in &devices {
                        tr data-device=(d.id) {
                            td { (d.instance) }
                            td { code { (d.service_type.trim_end_matches('.')) } }
                            td { @for a in &d.addresses { (a) " " } ":" (d.port) }
                            @if let Some(s) = &d.suggested {
                                td { code { (s.url) } }
                                td {
                                    form method="post" action={"/found/" (path_segment(&d.id)) "/monitor"} {
                                        button type="submit" aria-label={"monitor " (s.name)} { "monitor" }
                                    }
                                }
                            } @else {
                                td class="reason" { "no usable address" }
                                td {}
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(no_cache(page(
        &Viewer::of(&app, &caller.headers),
        "found on the LAN",
        body,
    )))
}

async fn monitor(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> Response {
    let refused = |why: String, status: StatusCode| {
        let back = ("/found", "Back to the devices found");
        problem_page(&app, &caller, "Found on the LAN", &why, back, status)
    };
    let admin = match form_caller(&app, &caller) {
        Ok(c) => c,
        Err(why) => return refused(why, StatusCode::UNAUTHORIZED),
    };
    let to = |name: &str, notice: &str| {
        Redirect::to(&format!("/services/{}?notice={notice}", path_segment(name))).into_response()
    };
    // A service of the suggested name is never overwritten from here (a
    // second click, or a name the user chose for something else).
    if let Some(name) = app
        .discovered
        .get(&id)
        .and_then(|d| d.suggested.map(|s| s.name))
    {
        let n = name.clone();
        match app.read(move |s| s.get_service(&n)).await {
            Ok(Some(_)) => return to(&name, "exists"),
            Ok(None) => {}
            Err(e) => return refused(e.to_string(), StatusCode::SERVICE_UNAVAILABLE),
        }
    }
    let spec = match device_spec(&app, &id, serde_json::Map::new()) {
        Ok(s) => s,
        Err(e) => {
            let why = e.to_string();
            return refused(why, e.into_response().status());
        }
    };
    match app.register(spec, &admin).await {
        Ok((reg, _token)) => {
            app.state_counts.clear();
            to(&reg.record.spec.name, "added")
        }
        Err(e) => {
            let why = e.to_string();
            refused(why, e.into_response().status())
        }
    }
}
