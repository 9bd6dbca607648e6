//! The public status page `/status` (SPEC section 17), served only with
//! `--status-page`: every service's name, state (text and colour) and a bar
//! of its daily uptime over 90 days. Read-only, and open even with
//! `--private` (`auth::guard` lets it through): so it must never show a
//! target, an address, a failure reason (reasons quote addresses), a
//! recipient or a link into the private pages. With `--status-page-tags`
//! only the services carrying one of those tags are shown (and counted).

use super::{no_cache, pct};
use crate::clock::{now_ms, rfc3339};
use crate::http::extract::Query;
use crate::http::{ApiError, AppState};
use crate::store::{DayUptime, ServiceFilter, ServiceOrder};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use healthchecker_core::HealthState;
use maud::{html, Markup, DOCTYPE};

/// Days in a service's uptime bar.
const DAYS: i64 = 90;
/// Services per page of the status page.
const PAGE: usize = 100;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/status", get(status))
}

struct Row {
    name: String,
    state: HealthState,
    paused: bool,
    days: Vec<DayUptime>,
}

fn day_bar(days: &[DayUptime], now: i64) -> Markup {
    let n = days.len() as i64;
    html! {
        div class="statusbar" role="img" aria-label={"daily uptime over the last " (n) " days"} {
            @for (i, DayUptime { ok, total }) in days.iter().enumerate() {
                @let day = rfc3339(now - (n - 1 - i as i64) * 86_400_000);
                @let date = day.get(..10).unwrap_or_default().to_string();
                @if *total == 0 {
                    span title={(date) ": no data"} {}
                } @else {
                    @let r = *ok as f64 / *total as f64;
                    span class=(if r >= 0.999 { "d-ok" } else if r >= 0.95 { "d-some" } else { "d-bad" })
                         title={(date) ": " (pct(Some(r))) " up"} {}
                }
            }
        }
    }
}

/// One line on the whole. The counts may be a few seconds old (they are
/// cached); the rows on the page are fresh, so they can only raise them:
/// the line never calls "normal" a page that shows a service down.
fn overall(rows: &[Row], counts: &[(HealthState, i64)]) -> String {
    let count = |state: HealthState| {
        let cached: i64 = counts
            .iter()
            .filter(|(s, _)| *s == state)
            .map(|(_, n)| n)
            .sum();
        let shown = rows
            .iter()
            .filter(|r| r.state == state && !r.paused)
            .count() as i64;
        cached.max(shown)
    };
    match (
        count(HealthState::Unhealthy),
        count(HealthState::Degraded),
        rows.is_empty(),
    ) {
        (_, _, true) => "Nothing is monitored yet.".into(),
        (0, 0, _) => "All services are operating normally.".into(),
        (0, d, _) => format!("{d} service(s) degraded."),
        (b, _, _) => format!("{b} service(s) down."),
    }
}

async fn status(State(app): State<AppState>, q: Query) -> Result<Response, ApiError> {
    if !app.config.status_page {
        return Ok((
            StatusCode::NOT_FOUND,
            "no status page: the daemon runs without --status-page",
        )
            .into_response());
    }
    let page_no: usize = match q.get("page") {
        None | Some("") => 0,
        Some(v) => v
            .parse()
            .ok()
            .filter(|n| *n <= 1_000_000)
            .ok_or_else(|| ApiError::bad("page", format!("invalid page {v:?}")))?,
    };
    let now = now_ms();
    let cache = app.clone();
    let (rows, counts) = app
        .read(move |s| {
            let tags = &cache.config.status_page_tags;
            let (services, counts) = if tags.is_empty() {
                let filter = ServiceFilter {
                    state: None,
                    name_contains: None,
                    limit: PAGE,
                    offset: page_no * PAGE,
                    after: None,
                };
                let services = s.list_services_ordered(&filter, ServiceOrder::Name)?;
                (services, cache.state_counts.get(s, now)?.by_state)
            } else {
                // `--status-page-tags`: only the services carrying one.
                let page = s.services_tagged(tags, PAGE, page_no * PAGE)?;
                (page.services, page.counts)
            };
            let mut rows = Vec::new();
            for r in services {
                rows.push(Row {
                    days: s.daily_uptime(r.id, now, DAYS)?,
                    name: r.spec.name,
                    state: r.state,
                    paused: r.paused,
                });
            }
            Ok((rows, counts))
        })
        .await?;
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            (super::page_head("Status"))
            body {
                header { span { "Status" } }
                main {
                    p class="notice" id="overall" role="status" { (overall(&rows, &counts)) }
                    ul class="status-list" id="status" {
                        @for r in &rows {
                            @let total: (i64, i64) = r.days.iter().fold((0, 0), |a, d| (a.0 + d.ok, a.1 + d.total));
                            li class="status-row" data-name=(r.name) {
                                div class="status-head" {
                                    strong class="name" { (r.name) }
                                    " "
                                    @if r.paused { span class="state paused" { "paused" } }
                                    @else { span class={"state " (r.state.as_str())} data-state=(r.state.as_str()) { (r.state.as_str()) } }
                                    span class="reason" { " 90 d: " (pct((total.1 > 0).then(|| total.0 as f64 / total.1 as f64))) }
                                }
                                (day_bar(&r.days, now))
                            }
                        }
                    }
                    p class="reason" {
                        "Each bar is one day, oldest left; hover for its uptime. Updated " (super::when(now)) "."
                        @if page_no > 0 { " " a href={"/status?page=" (page_no - 1)} { "← previous" } }
                        @if rows.len() == PAGE { " " a href={"/status?page=" (page_no + 1)} { "next →" } }
                    }
                }
                script src=(super::assets::SCRIPT_PATH) {}
            }
        }
    };
    Ok(no_cache(body))
}
