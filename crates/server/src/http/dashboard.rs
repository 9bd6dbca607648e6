//! The dashboard: server-rendered HTML (maud), read-only.
//!
//! `/` lists services (filter by state and name, 100 a page) with state in
//! colour and text, target, last check, a response-time sparkline (SVG drawn
//! here), uptime over 24 h and 7 d, and the latest events; `/services/{name}`
//! shows one service with a response-time chart, its check history, events
//! and mails. A 20-line script refreshes the `#live` part every 3 s from
//! the same route with `fragment=1`; with JavaScript off the page is
//! complete and a reload shows the news. maud escapes every string, and no
//! token or SMTP setting is ever rendered.

use super::dto::path_segment;
use super::extract::{Query, ServiceName};
use super::{ApiError, AppState};
use crate::clock::{human_duration, now_ms, rfc3339};
use crate::store::{
    CheckRecord, EventRecord, NotificationRecord, ServiceFilter, ServiceRecord, Uptime,
};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use healthchecker_core::{CheckResult, HealthState};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use std::collections::HashMap;

/// Services per page.
pub const PAGE: usize = 100;
/// Checks in a sparkline.
const SPARK: usize = 30;
/// Refresh period of the live part, milliseconds.
const REFRESH_MS: u32 = 3000;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/services/{name}", get(service_page))
}

const CSS: &str = r#"
body{font-family:system-ui,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:.6rem 1rem;display:flex;gap:1rem;align-items:baseline}
header a{color:#fff;text-decoration:none;font-weight:600}
main{padding:1rem;max-width:1400px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{padding:.35rem .5rem;border-bottom:1px solid #d0d7de;text-align:left;vertical-align:middle;font-size:.9rem}
th{background:#eaeef2}
.state{display:inline-block;padding:.1rem .5rem;border-radius:1rem;color:#fff;font-weight:600;font-size:.8rem}
.healthy{background:#1a7f37}.degraded{background:#9a6700}.unhealthy{background:#cf222e}.unknown{background:#6e7781}
.paused{background:#fff;color:#57606a;border:1px solid #8c959f}
.counts{display:flex;gap:.5rem;margin:.5rem 0 1rem}
.counts a{text-decoration:none}
.reason{color:#57606a;font-size:.8rem}
.fail{color:#cf222e}.warn{color:#9a6700}.pass{color:#1a7f37}
form.filter{margin:.5rem 0;display:flex;gap:.5rem}
section{margin-top:1.5rem}
code{font-size:.85rem}
"#;

const SCRIPT: &str = r#"
(function () {
  var el = document.getElementById('live');
  if (!el || !window.fetch) return;
  var src = el.getAttribute('data-src');
  var period = parseInt(el.getAttribute('data-refresh'), 10) || 3000;
  function tick() {
    fetch(src, { headers: { 'Accept': 'text/html' }, cache: 'no-store' })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (t) { if (t !== null) { el.innerHTML = t; el.setAttribute('data-refreshed', Date.now()); } })
      .catch(function () {})
      .then(function () { setTimeout(tick, period); });
  }
  setTimeout(tick, period);
})();
"#;

fn page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · healthchecker" }
                style { (PreEscaped(CSS)) }
            }
            body {
                header { a href="/" { "healthchecker" } span { (title) } }
                main { (body) }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
}

fn state_badge(state: HealthState, paused: bool) -> Markup {
    html! {
        span class={"state " (state.as_str())} data-state=(state.as_str()) { (state.as_str()) }
        @if paused { " " span class="state paused" { "paused" } }
    }
}

fn pct(u: Option<f64>) -> String {
    u.map(|v| format!("{:.2}%", v * 100.0))
        .unwrap_or_else(|| "–".into())
}

/// A response-time sparkline: a polyline of durations, failures as red dots.
fn sparkline(checks: &[CheckRecord], w: f64, h: f64) -> Markup {
    if checks.is_empty() {
        return html! { span class="reason" { "no checks yet" } };
    }
    let max = checks
        .iter()
        .map(|c| c.duration_us)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let step = if checks.len() > 1 {
        w / (checks.len() - 1) as f64
    } else {
        0.0
    };
    let pts: Vec<(f64, f64)> = checks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                i as f64 * step,
                h - 2.0 - (c.duration_us as f64 / max) * (h - 4.0),
            )
        })
        .collect();
    let line: String = pts
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect::<Vec<_>>()
        .join(" ");
    let label = format!(
        "response time, last {} checks, max {:.1} ms",
        checks.len(),
        max / 1000.0
    );
    html! {
        svg class="spark" width=(w) height=(h) viewBox={"0 0 " (w) " " (h)} role="img" aria-label=(label) {
            title { (label) }
            polyline points=(line) fill="none" stroke="#0969da" stroke-width="1.5" {}
            @for (c, (x, y)) in checks.iter().zip(&pts) {
                @if c.result == CheckResult::Fail {
                    circle class="fail-dot" cx=(format!("{x:.1}")) cy=(format!("{y:.1}")) r="2.5" fill="#cf222e" {}
                }
            }
        }
    }
}

/// The bigger chart of a service page, with an axis label.
fn chart(checks: &[CheckRecord]) -> Markup {
    let (w, h) = (900.0, 180.0);
    if checks.is_empty() {
        return html! { p { "No checks yet." } };
    }
    let max_ms = checks.iter().map(|c| c.duration_us).max().unwrap_or(1) as f64 / 1000.0;
    html! {
        figure {
            (sparkline(checks, w, h))
            figcaption class="reason" {
                (checks.len()) " checks from " (rfc3339(checks[0].at)) " to " (rfc3339(checks[checks.len() - 1].at))
                "; top of the chart = " (format!("{max_ms:.1}")) " ms; red dots are failures."
            }
        }
    }
}

fn events_table(events: &[EventRecord], with_service: bool) -> Markup {
    html! {
        table class="events" {
            thead { tr { th { "time" } @if with_service { th { "service" } } th { "event" } th { "reason" } } }
            tbody {
                @for e in events {
                    tr {
                        td { (rfc3339(e.at)) }
                        @if with_service { td { a href={"/services/" (path_segment(&e.service))} { (e.service) } } }
                        td {
                            @match (e.from, e.to) {
                                (Some(f), Some(t)) => { (f.as_str()) " → " (state_badge(t, false)) },
                                _ => { (e.kind) },
                            }
                        }
                        td class="reason" { (e.reason.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    }
}

struct IndexData {
    counts: Vec<(HealthState, i64)>,
    paused: i64,
    services: Vec<ServiceRecord>,
    uptimes: HashMap<i64, Uptime>,
    recent: HashMap<i64, Vec<CheckRecord>>,
    events: Vec<EventRecord>,
    total: i64,
}

fn index_live(d: &IndexData, q: &Query, page_no: usize) -> Markup {
    let state_q = q.get("state").unwrap_or("");
    let name_q = q.get("q").unwrap_or("");
    let link = |state: &str, page: usize| {
        let mut s = format!("/?state={}&q={}", path_segment(state), path_segment(name_q));
        if page > 0 {
            s.push_str(&format!("&page={page}"));
        }
        s
    };
    html! {
        div class="counts" {
            a href=(link("", 0)) { span class="state unknown" style="background:#24292f" { "all " (d.total) } }
            @for (st, n) in &d.counts {
                a href=(link(st.as_str(), 0)) { span class={"state " (st.as_str())} data-count=(st.as_str()) { (st.as_str()) " " (n) } }
            }
            @if d.paused > 0 { span class="state paused" { "paused " (d.paused) } }
        }
        table id="services" {
            thead { tr { th { "state" } th { "service" } th { "target" } th { "last check" } th { "response time" } th { "uptime 24 h" } th { "uptime 7 d" } } }
            tbody {
                @if d.services.is_empty() {
                    tr { td colspan="7" { "No services" @if !state_q.is_empty() || !name_q.is_empty() { " match this filter" } "." } }
                }
                @for s in &d.services {
                    @let up = d.uptimes.get(&s.id).copied().unwrap_or_default();
                    tr class="service" data-name=(s.spec.name) {
                        td { (state_badge(s.state, s.paused)) }
                        td { a class="name" href={"/services/" (path_segment(&s.spec.name))} { (s.spec.name) }
                             div class="reason" { "since " (human_duration(now_ms() - s.state_since)) } }
                        td { code { (s.spec.target.url()) } }
                        td {
                            @match &s.last_check {
                                Some(c) => {
                                    span class=(c.result.as_str()) { (c.result.as_str()) } " " (human_duration(now_ms() - c.at)) " ago"
                                    @if let Some(r) = &c.reason { div class="reason" { (r) } }
                                },
                                None => { span class="reason" { "not yet" } },
                            }
                        }
                        td { (sparkline(d.recent.get(&s.id).map(Vec::as_slice).unwrap_or(&[]), 120.0, 24.0)) }
                        td { (pct(up.day)) }
                        td { (pct(up.week)) }
                    }
                }
            }
        }
        p {
            @if page_no > 0 { a href=(link(state_q, page_no - 1)) { "← previous" } " " }
            @if d.services.len() == PAGE { a href=(link(state_q, page_no + 1)) { "next →" } }
        }
        section {
            h2 { "Latest events" }
            (events_table(&d.events, true))
        }
    }
}

async fn index(State(app): State<AppState>, q: Query) -> Result<Response, ApiError> {
    let state = match q.get("state").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            s.parse::<HealthState>()
                .map_err(|_| ApiError::bad("state", format!("invalid state {s:?}")))?,
        ),
    };
    let page_no: usize = match q.get("page") {
        None | Some("") => 0,
        Some(v) => v
            .parse()
            .map_err(|_| ApiError::bad("page", format!("invalid page {v:?}")))?,
    };
    let filter = ServiceFilter {
        state,
        name_contains: q.get("q").map(str::to_string),
        limit: PAGE,
        offset: page_no * PAGE,
    };
    let d = app
        .read(move |s| {
            let (counts, paused) = s.count_by_state()?;
            let services = s.list_services(&filter)?;
            let ids: Vec<i64> = services.iter().map(|r| r.id).collect();
            Ok(IndexData {
                total: counts.iter().map(|c| c.1).sum(),
                counts,
                paused,
                uptimes: s.uptimes(now_ms())?,
                recent: s.recent_checks_of(&ids, SPARK)?,
                services,
                events: s.events(None, 15)?,
            })
        })
        .await?;
    let live = index_live(&d, &q, page_no);
    if q.get("fragment").is_some() {
        return Ok(Html(live.into_string()).into_response());
    }
    let mut src = "/?fragment=1".to_string();
    for (k, v) in q.0.iter().filter(|(k, _)| k != "fragment") {
        src.push_str(&format!("&{}={}", path_segment(k), path_segment(v)));
    }
    let body = html! {
        form class="filter" method="get" action="/" {
            select name="state" aria-label="state" {
                option value="" { "any state" }
                @for st in HealthState::ALL {
                    option value=(st.as_str()) selected[state == Some(st)] { (st.as_str()) }
                }
            }
            input type="search" name="q" placeholder="name contains…" value=(q.get("q").unwrap_or(""));
            button type="submit" { "filter" }
        }
        div id="live" data-src=(src) data-refresh=(REFRESH_MS) { (live) }
    };
    Ok(no_cache(Html(page("services", body).into_string())))
}

fn no_cache(h: Html<String>) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], h).into_response()
}

struct ServiceData {
    rec: ServiceRecord,
    checks: Vec<CheckRecord>,
    events: Vec<EventRecord>,
    notifications: Vec<NotificationRecord>,
    uptime: Uptime,
}

fn service_live(d: &ServiceData) -> Markup {
    let s = &d.rec;
    let spec = &s.spec;
    let mut chrono = d.checks.clone();
    chrono.reverse();
    html! {
        p {
            (state_badge(s.state, s.paused)) " since " (rfc3339(s.state_since))
            " (" (human_duration(now_ms() - s.state_since)) ")"
            @if let Some(r) = &s.last_failure_reason { " · last failure: " span class="reason" { (r) } }
        }
        table class="params" {
            tr { th { "target" } td { code { (spec.target.url()) } } }
            tr { th { "protocol" } td { (spec.target.protocol.as_str()) } }
            tr { th { "interval / timeout" } td { (spec.interval) " s / " (spec.timeout) " s" } }
            tr { th { "thresholds" } td { "healthy " (spec.healthy_threshold) ", unhealthy " (spec.unhealthy_threshold) } }
            @if spec.target.protocol.is_http() { tr { th { "expected status" } td { (spec.expected_status.to_string()) } } }
            @if spec.target.protocol.is_tls() {
                tr { th { "TLS" } td { @if spec.tls_verify { "verified" } @else { "any certificate" }
                    @if let Some(e) = s.cert_expires_at { "; certificate expires " (rfc3339(e)) } } }
            }
            tr { th { "consecutive" } td { (s.successes) " successes, " (s.failures) " failures" } }
            tr { th { "uptime" } td { (pct(d.uptime.day)) " (24 h), " (pct(d.uptime.week)) " (7 d)" } }
            tr { th { "mail" } td { (spec.emails.len()) " recipient(s)" } }
            tr { th { "last healthy" } td { (s.last_healthy_at.map(rfc3339).unwrap_or_else(|| "never".into())) } }
        }
        section { h2 { "Response time" } (chart(&chrono)) }
        section {
            h2 { "Checks" }
            table id="checks" {
                thead { tr { th { "time" } th { "result" } th { "duration" } th { "HTTP" } th { "reason" } } }
                tbody {
                    @for c in &d.checks {
                        tr {
                            td { (rfc3339(c.at)) }
                            td class=(c.result.as_str()) { (c.result.as_str()) }
                            td { (format!("{:.1} ms", c.duration_us as f64 / 1000.0)) }
                            td { (c.http_status.map(|h| h.to_string()).unwrap_or_default()) }
                            td class="reason" { (c.reason.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
        section { h2 { "Events" } (events_table(&d.events, false)) }
        section {
            h2 { "Mails" }
            table class="notifications" {
                thead { tr { th { "time" } th { "change" } th { "status" } th { "attempts" } th { "note" } } }
                tbody {
                    @for n in &d.notifications {
                        tr {
                            td { (rfc3339(n.created_at)) }
                            td { (n.from.as_str()) " → " (n.to.as_str()) }
                            td { (n.status) }
                            td { (n.attempts) }
                            td class="reason" { (n.last_error.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}

async fn service_page(
    State(app): State<AppState>,
    ServiceName(name): ServiceName,
    q: Query,
) -> Result<Response, ApiError> {
    let n = name.clone();
    let d = app
        .read(move |s| {
            let Some(rec) = s.get_service(&n)? else {
                return Ok(None);
            };
            Ok(Some(ServiceData {
                checks: s.checks(rec.id, 500)?,
                events: s.events(Some(&n), 30)?,
                notifications: s.notifications(None, Some(&n), 30)?,
                uptime: s
                    .uptimes(now_ms())?
                    .get(&rec.id)
                    .copied()
                    .unwrap_or_default(),
                rec,
            }))
        })
        .await?;
    let Some(d) = d else {
        let body = html! { p { "No service named " strong { (name) } "." } p { a href="/" { "All services" } } };
        return Ok((
            StatusCode::NOT_FOUND,
            Html(page("not found", body).into_string()),
        )
            .into_response());
    };
    let live = service_live(&d);
    if q.get("fragment").is_some() {
        return Ok(Html(live.into_string()).into_response());
    }
    let body = html! {
        h1 { (d.rec.spec.name) }
        div id="live" data-src={"/services/" (path_segment(&name)) "?fragment=1"} data-refresh=(REFRESH_MS) { (live) }
    };
    Ok(no_cache(Html(page(&name, body).into_string())))
}
