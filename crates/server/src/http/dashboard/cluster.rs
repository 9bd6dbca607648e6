//! The dashboard's cluster page (SPEC section 19): the table of
//! `GET /api/v1/cluster`, one row per node. Always reachable from the
//! navigation: on SQLite it shows the one node holding every bucket, which
//! tells an operator which backend the daemon runs on. On a narrow screen
//! the address, start time and bucket ranges are hidden.

use super::{no_cache, page, Viewer};
use crate::http::auth::Caller;
use crate::http::{ApiError, AppState};
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use healthchecker_core::api::NodeState;
use maud::html;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/cluster", get(cluster_page))
}

/// An RFC 3339 time as the dashboard shows times ([`super::when`]), `–`
/// without one.
fn at(t: &Option<String>) -> maud::Markup {
    let parsed = t.as_deref().and_then(|iso| {
        time::OffsetDateTime::parse(iso, &time::format_description::well_known::Rfc3339).ok()
    });
    match parsed {
        Some(t) => super::when(healthchecker_core::UnixMs::new(
            (t.unix_timestamp_nanos() / 1_000_000) as i64,
        )),
        None => html! { "–" },
    }
}

async fn cluster_page(State(app): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let c = crate::http::cluster::status(&app).await?;
    let live = c.nodes.iter().filter(|n| n.live).count();
    let body = html! {
        h1 { "Cluster" }
        p class="reason" {
            @if c.backend == crate::cluster::status::SQLITE {
                "This daemon keeps its data in SQLite: it is the only node and checks every service. "
                "Several daemons on one PostgreSQL database (--db postgres://…) share the services by bucket leases."
            } @else {
                (live) " live node(s) on PostgreSQL share " (c.buckets) " buckets of services; this is node "
                code { (c.node) } "."
            }
        }
        table class="cluster" {
            thead { tr {
                th { "node" } th class="hide-narrow" { "address" } th class="hide-narrow" { "started" } th { "last heartbeat" }
                th { "live" } th { "state" } th { "leases" } th class="hide-narrow" { "buckets" }
            } }
            tbody {
                @for n in &c.nodes {
                    tr data-node=(n.id) {
                        td { code { (n.id) } @if n.id == c.node { " (this node)" } }
                        td class="hide-narrow" { (n.addr) }
                        td class="hide-narrow" { (at(&n.started_at)) }
                        td { (at(&n.heartbeat_at)) }
                        td { @if n.live { "yes" } @else { strong { "no" } } }
                        td data-state=(n.state.as_str()) {
                            @if n.state == NodeState::Active { (n.state.as_str()) }
                            @else { strong { (n.state.as_str()) } }
                        }
                        td data-leases=(n.leases) { (n.leases) }
                        td class="hide-narrow" { (n.held.join(", ")) }
                    }
                }
            }
        }
    };
    Ok(no_cache(page(
        &Viewer::of(&app, &caller.headers),
        "cluster",
        body,
    )))
}
