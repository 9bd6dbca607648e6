//! The service list (`/`) and a service's page (`/services/{name}`), each
//! with a `fragment=1` form that returns only the live part for the script.

use super::charts::{chart, check_bar, sparkline, BAR, CHART};
use super::{no_cache, notice, page, pct, silence_forms, state_badge, when, Viewer};
use crate::clock::{human_duration, now_ms};
use crate::http::dto::path_segment;
use crate::http::extract::{Query, ServiceName};
use crate::http::{ApiError, AppState};
use crate::store::{
    CheckRecord, DeliveryRecord, EventRecord, NotificationRecord, ServiceFilter, ServiceOrder,
    ServiceRecord, StateCounts, UptimeWindows,
};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use healthchecker_core::{HealthState, ServiceId};
use maud::{html, Markup};
use std::collections::HashMap;

/// Services per page.
pub const PAGE: usize = 100;
/// Checks in a sparkline.
const SPARK: usize = 30;
/// Refresh period of the live part, milliseconds.
const REFRESH_MS: u32 = 3000;

pub(super) fn events_table(events: &[EventRecord], with_service: bool) -> Markup {
    html! {
        div class="scroll" {
            table class="events" {
                thead { tr { th { "time" } @if with_service { th { "service" } } th { "event" } th { "reason" } } }
                tbody {
                    @for e in events {
                        tr {
                            td { (when(e.at)) }
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
}

struct IndexData {
    counts: Vec<(HealthState, i64)>,
    paused: i64,
    services: Vec<ServiceRecord>,
    uptimes: HashMap<ServiceId, UptimeWindows>,
    recent: HashMap<ServiceId, Vec<CheckRecord>>,
    events: Vec<EventRecord>,
    total: i64,
    /// Services silenced now: id -> when the silence ends.
    silenced: HashMap<ServiceId, i64>,
}

struct ListQuery<'a> {
    state: &'a str,
    name: &'a str,
    order: ServiceOrder,
}

impl ListQuery<'_> {
    fn link(&self, state: &str, order: ServiceOrder, page: usize) -> String {
        let mut s = format!(
            "/?state={}&q={}",
            path_segment(state),
            path_segment(self.name)
        );
        if order != ServiceOrder::Name {
            s.push_str(&format!("&sort={}", order.as_str()));
        }
        if page > 0 {
            s.push_str(&format!("&page={page}"));
        }
        s
    }
}

fn sort_header(lq: &ListQuery, order: ServiceOrder, label: &str) -> Markup {
    html! {
        th aria-sort=[(lq.order == order).then_some("ascending")] {
            a class={"sort sort-" (order.as_str())} href=(lq.link(lq.state, order, 0)) { (label) @if lq.order == order { " ▾" } }
        }
    }
}

fn index_live(d: &IndexData, lq: &ListQuery, page_no: usize) -> Markup {
    html! {
        div class="counts" {
            a href=(lq.link("", lq.order, 0)) { span class="state unknown" style="background:#24292f" { "all " (d.total) } }
            @for (st, n) in &d.counts {
                a href=(lq.link(st.as_str(), lq.order, 0)) { span class={"state " (st.as_str())} data-count=(st.as_str()) { (st.as_str()) " " (n) } }
            }
            @if d.paused > 0 { span class="state paused" { "paused " (d.paused) } }
        }
        div class="scroll" {
            table id="services" {
                thead { tr {
                    (sort_header(lq, ServiceOrder::State, "state"))
                    (sort_header(lq, ServiceOrder::Name, "service"))
                    th class="hide-narrow" { "target" }
                    (sort_header(lq, ServiceOrder::LastChange, "last change"))
                    th { "last check" }
                    th class="hide-narrow" { "response time" }
                    th { "uptime 24 h" }
                    th class="hide-narrow" { "uptime 7 d" }
                } }
                tbody {
                    @if d.services.is_empty() {
                        tr { td colspan="8" { "No services" @if !lq.state.is_empty() || !lq.name.is_empty() { " match this filter" } ". " a href="/new" { "Add one" } "." } }
                    }
                    @for s in &d.services {
                        @let up = d.uptimes.get(&s.id).copied().unwrap_or_default();
                        tr class="service" data-name=(s.spec.name) {
                            td { (state_badge(s.state, s.paused)) (silence_forms::badge(d.silenced.get(&s.id).copied())) }
                            td { a class="name" href={"/services/" (path_segment(&s.spec.name))} { (s.spec.name) } }
                            td class="hide-narrow" { code { (s.spec.target.url()) } }
                            td { (when(s.state_since)) }
                            td {
                                @match &s.last_check {
                                    Some(c) => {
                                        span class=(c.result.as_str()) { (c.result.as_str()) } " " (when(c.at))
                                        @if let Some(r) = &c.reason { div class="reason" { (r) } }
                                    },
                                    None => { span class="reason" { "not yet" } },
                                }
                            }
                            td class="hide-narrow" { (sparkline(d.recent.get(&s.id).map(Vec::as_slice).unwrap_or(&[]), 120.0, 24.0)) }
                            td { (pct(up.day)) }
                            td class="hide-narrow" { (pct(up.week)) }
                        }
                    }
                }
            }
        }
        p {
            @if page_no > 0 { a href=(lq.link(lq.state, lq.order, page_no - 1)) { "← previous" } " " }
            @if d.services.len() == PAGE { a href=(lq.link(lq.state, lq.order, page_no + 1)) { "next →" } }
        }
        section {
            h2 { "Latest events" }
            (events_table(&d.events, true))
        }
    }
}

pub(super) async fn index(
    State(app): State<AppState>,
    headers: HeaderMap,
    q: Query,
) -> Result<Response, ApiError> {
    let state = match q.get("state").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            s.parse::<HealthState>()
                .map_err(|_| ApiError::bad("state", format!("invalid state {s:?}")))?,
        ),
    };
    let order = ServiceOrder::parse(q.get("sort").unwrap_or("")).ok_or_else(|| {
        ApiError::bad(
            "sort",
            format!(
                "invalid sort {:?} (valid: name, state, change)",
                q.get("sort").unwrap_or("")
            ),
        )
    })?;
    let page_no = q.count("page")?;
    let filter = ServiceFilter {
        state,
        name_contains: q.get("q").map(str::to_string),
        limit: PAGE,
        offset: page_no.saturating_mul(PAGE),
        after: None,
    };
    let cache = app.clone();
    let d = app
        .read(move |s| {
            let StateCounts {
                by_state: counts,
                paused,
            } = cache.state_counts.get(s, now_ms())?;
            let services = s.list_services_ordered(&filter, order)?;
            let ids: Vec<ServiceId> = services.iter().map(|r| r.id).collect();
            Ok(IndexData {
                total: counts.iter().map(|c| c.1).sum(),
                counts,
                paused,
                uptimes: s.uptime_windows(&ids, now_ms())?,
                recent: s.recent_checks_of(&ids, SPARK)?,
                silenced: services
                    .iter()
                    .filter_map(|r| {
                        let until = cache
                            .silences
                            .held_until(&r.spec.name, &r.spec.tags, now_ms());
                        until.map(|t| (r.id, t))
                    })
                    .collect(),
                services,
                events: s.events(None, 15)?,
            })
        })
        .await?;
    let lq = ListQuery {
        state: q.get("state").unwrap_or(""),
        name: q.get("q").unwrap_or(""),
        order,
    };
    let live = index_live(&d, &lq, page_no);
    if q.get("fragment").is_some() {
        return Ok(Html(live.into_string()).into_response());
    }
    let mut src = "/?fragment=1".to_string();
    for (k, v) in q.0.iter().filter(|(k, _)| k != "fragment" && k != "notice") {
        src.push_str(&format!("&{}={}", path_segment(k), path_segment(v)));
    }
    let body = html! {
        @if let Some(n) = notice(q.get("notice")) { p class="notice" role="status" { (n) } }
        form class="filter" method="get" action="/" {
            label for="filter-state" { "state" }
            select id="filter-state" name="state" {
                option value="" { "any state" }
                @for st in HealthState::ALL {
                    option value=(st.as_str()) selected[state == Some(st)] { (st.as_str()) }
                }
            }
            label for="filter-q" { "name" }
            input id="filter-q" type="search" name="q" placeholder="name contains…" value=(lq.name);
            @if order != ServiceOrder::Name { input type="hidden" name="sort" value=(order.as_str()); }
            button type="submit" { "filter" }
        }
        div id="live" data-src=(src) data-refresh=(REFRESH_MS) { (live) }
    };
    Ok(no_cache(page(
        &Viewer::of(&app, &headers),
        "services",
        body,
    )))
}

struct ServiceData {
    rec: ServiceRecord,
    checks: Vec<CheckRecord>,
    events: Vec<EventRecord>,
    notifications: Vec<NotificationRecord>,
    deliveries: Vec<DeliveryRecord>,
    uptime: UptimeWindows,
    silenced_until: Option<i64>,
}

fn uptime_box(label: &str, v: Option<f64>) -> Markup {
    html! { div { span class="reason" { "uptime " (label) } strong { (pct(v)) } } }
}

fn service_live(d: &ServiceData) -> Markup {
    let s = &d.rec;
    let spec = &s.spec;
    let mut chrono: Vec<CheckRecord> = d.checks.iter().take(CHART).cloned().collect();
    chrono.reverse();
    let bar = &chrono[chrono.len().saturating_sub(BAR)..];
    let up = &d.uptime;
    html! {
        p {
            (state_badge(s.state, s.paused)) " since " (when(s.state_since))
            " (" (human_duration(now_ms() - s.state_since)) ")"
            (silence_forms::badge(d.silenced_until))
            @if let Some(r) = &s.last_failure_reason { " · last failure: " span class="reason" { (r) } }
        }
        section {
            h2 { "Last " (BAR) " checks" }
            (check_bar(bar))
        }
        div class="uptimes" id="uptimes" {
            (uptime_box("24 h", up.day)) (uptime_box("7 d", up.week))
            (uptime_box("30 d", up.month)) (uptime_box("90 d", up.quarter))
        }
        @if up.covered_hours > 0 && up.covered_hours < 90 * 24 {
            p class="reason" { "Uptime history reaches back " (human_duration(up.covered_hours * 3_600_000)) "; longer windows cover only that." }
        }
        section { h2 { "Response time" } (chart(&chrono)) }
        div class="scroll" {
            table class="params" {
                tr { th { "target" } td { code { (spec.target.url()) } } }
                tr { th { "protocol" } td { (spec.target.protocol.as_str()) } }
                tr { th { "interval / timeout" } td { (spec.interval) " s / " (spec.timeout) " s" } }
                tr { th { "thresholds" } td { "healthy " (spec.healthy_threshold) ", unhealthy " (spec.unhealthy_threshold) } }
                @if spec.target.protocol.is_http() { tr { th { "expected status" } td { (spec.expected_status.to_string()) } } }
                @if spec.target.protocol.is_tls() {
                    tr { th { "TLS" } td { @if spec.tls_verify { "verified" } @else { "any certificate" }
                        @if let Some(e) = s.cert_expires_at { "; certificate expires " (when(e)) } } }
                }
                tr { th { "consecutive" } td { (s.successes) " successes, " (s.failures) " failures" } }
                tr { th { "mail" } td { (spec.emails.len()) " recipient(s)" } }
                tr { th { "last healthy" } td { @match s.last_healthy_at { Some(t) => (when(t)), None => "never" } } }
            }
        }
        section {
            h2 { "Checks" }
            div class="scroll" {
                table id="checks" {
                    thead { tr { th { "time" } th { "result" } th { "duration" } th { "HTTP" } th { "reason" } } }
                    tbody {
                        @for c in &d.checks {
                            tr {
                                td { (when(c.at)) }
                                td class=(c.result.as_str()) { (c.result.as_str()) }
                                td { (format!("{:.1} ms", c.duration_us as f64 / 1000.0)) }
                                td { (c.http_status.map(|h| h.to_string()).unwrap_or_default()) }
                                td class="reason" { (c.reason.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
        section { h2 { "Events" } (events_table(&d.events, false)) }
        (super::notifications::section(&d.notifications, &d.deliveries))
    }
}

/// The buttons of a service page; each is a plain form (no script).
fn actions(rec: &ServiceRecord) -> Markup {
    let base = format!("/services/{}", path_segment(&rec.spec.name));
    html! {
        div class="actions" {
            a class="button" id="edit" href={(base) "/edit"} { "Edit" }
            @if rec.paused {
                form method="post" action={(base) "/resume"} { button type="submit" id="resume" { "Resume" } }
            } @else {
                form method="post" action={(base) "/pause"} { button type="submit" id="pause" { "Pause" } }
            }
            a class="button" id="delete" href={(base) "/delete"} { "Delete…" }
        }
    }
}

pub(super) async fn service_page(
    State(app): State<AppState>,
    ServiceName(name): ServiceName,
    headers: HeaderMap,
    q: Query,
) -> Result<Response, ApiError> {
    let n = name.clone();
    let book = app.silences.clone();
    let d = app
        .read(move |s| {
            let Some(rec) = s.get_service(&n)? else {
                return Ok(None);
            };
            Ok(Some(ServiceData {
                checks: s.checks(rec.id, 200)?,
                events: s.events(Some(&n), 30)?,
                notifications: s.notifications(None, Some(&n), super::notifications::ROWS)?,
                deliveries: s.deliveries(None, Some(&n), super::notifications::ROWS)?,
                uptime: s
                    .uptime_windows(&[rec.id], now_ms())?
                    .remove(&rec.id)
                    .unwrap_or_default(),
                silenced_until: book.held_until(&rec.spec.name, &rec.spec.tags, now_ms()),
                rec,
            }))
        })
        .await?;
    let viewer = Viewer::of(&app, &headers);
    let Some(d) = d else {
        let body = html! { p { "No service named " strong { (name) } "." } p { a href="/" { "All services" } } };
        let mut r = no_cache(page(&viewer, "not found", body));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return Ok(r);
    };
    let live = service_live(&d);
    if q.get("fragment").is_some() {
        return Ok(Html(live.into_string()).into_response());
    }
    let body = html! {
        h1 { (d.rec.spec.name) }
        @if let Some(n) = notice(q.get("notice")) { p class="notice" role="status" id="notice" { (n) } }
        (actions(&d.rec))
        div id="live" data-src={"/services/" (path_segment(&name)) "?fragment=1"} data-refresh=(REFRESH_MS) { (live) }
        (silence_forms::section(&name, None))
    };
    Ok(no_cache(page(&viewer, &name, body)))
}
