//! The HTTP API: native v1, the seed's legacy form API, the daemon's own
//! health and metrics. Each resource owns its router; handlers stay thin
//! (extract -> domain type -> store/scheduler -> response DTO).

pub mod auth;
mod channels;
pub mod cluster;
pub mod cross_site;
mod dashboard;
mod discovered;
mod dto;
pub mod error;
pub mod extract;
mod legacy;
pub mod limits;
pub mod openapi;
mod ops;
mod ping;
pub mod session;
mod silences;
mod v1;

pub use cluster::ClusterSource;
pub use discovered::auto_monitor;
pub use dto::{service_dto, service_json, ServiceView};
pub use error::ApiError;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::scheduler::SchedulerHandle;
use crate::store::Store;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

/// Everything a handler may use; cloned per request (one `Arc`).
#[derive(Clone)]
pub struct AppState(pub Arc<AppInner>);

/// The shared state behind [`AppState`].
pub struct AppInner {
    /// The store.
    pub store: Store,
    /// The scheduler.
    pub scheduler: SchedulerHandle,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Configuration.
    pub config: Arc<Config>,
    /// Start time (Unix ms).
    pub started_at: i64,
    /// Per-client rate of state-changing requests.
    pub limiter: limits::ChangeLimiter,
    /// The essential tasks, for `/health`.
    pub essentials: crate::supervisor::Essentials,
    /// Dashboard logins (token mode).
    pub sessions: session::Sessions,
    /// The dashboard's counts by state, reused for a few seconds.
    pub state_counts: crate::store::CountsCache,
    /// What the LAN browser found (SPEC section 16), for `/api/v1/discovered`.
    pub discovered: crate::browse::Found,
    /// Delivery to named channels (the test route sends through it).
    pub channels: Arc<crate::notify::channels::Dispatcher>,
    /// The silences the scheduler consults (replaced after each change).
    pub silences: crate::silences::SilenceBook,
    /// Where `GET /api/v1/cluster` reads the nodes and leases from
    /// (PostgreSQL); `None`: a single node on SQLite.
    pub cluster: Option<ClusterSource>,
    /// On a node of a cluster: wakes the owner of a service this node
    /// changed or received a ping for (`LISTEN/NOTIFY`); `None` on SQLite.
    pub notifier: Option<crate::cluster::wake::Notifier>,
}

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// Longest a request may take end to end (a slow client cannot hold a
/// handler forever; reading the headers has its own, shorter limit).
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The whole router.
pub fn router(state: AppState) -> Router {
    let router = Router::new()
        .merge(v1::router())
        .merge(openapi::router())
        .merge(channels::router())
        .merge(silences::router())
        .merge(legacy::router())
        .merge(ping::router())
        .merge(discovered::router())
        .merge(cluster::router())
        .merge(dashboard::router())
        .route("/health", get(own_health))
        .route("/metrics", get(metrics));
    #[cfg(any(test, feature = "fault-injection"))]
    let router = router.route(
        crate::fault::PANIC_ROUTE,
        get(|| async {
            if crate::clock::now_ms() != 0 {
                panic!("injected fault: handler panics");
            }
            StatusCode::OK
        }),
    );
    router
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cross_site::guard,
        ))
        .layer(axum::middleware::from_fn(cross_site::security_headers))
        .layer(DefaultBodyLimit::max(extract::MAX_BODY))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        // Outermost but for the panic catcher: a flood is refused before
        // any other work, unauthenticated requests included.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::rate_limit,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic))
        .with_state(state)
}

/// A handler that panicked answers 500 with the usual error body; the
/// panic is logged, its text is not sent (it may hold internals).
fn on_panic(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!(
        panic = %crate::supervisor::panic_message(&*panic),
        "request handler panicked"
    );
    ApiError::Internal("internal error: the request failed; see the daemon's log".into())
        .into_response()
}

async fn not_found() -> Response {
    error::not_found("no such route")
}

/// The daemon's own health, as health+json: the store answers and the
/// scheduler loop turned recently.
async fn own_health(State(app): State<AppState>) -> Response {
    let store = app.store.clone();
    let started = std::time::Instant::now();
    let store_ok = store.read(|s| s.ping()).await.map_err(|e| e.to_string());
    let store_ms = started.elapsed().as_secs_f64() * 1000.0;
    let now = crate::clock::now_ms();
    let tick_age = now - app.scheduler.last_tick_ms();
    // The loop turns at least every second; ten seconds of silence means stuck.
    let sched_ok = app.scheduler.is_running() && tick_age < 10_000;
    let mut output = Vec::new();
    let write_error = app.store.write_error();
    if let Some(e) = &write_error {
        output.push(format!("store cannot write: {e}"));
    }
    if let Err(e) = &store_ok {
        output.push(format!("store: {e}"));
    }
    if !sched_ok {
        output.push("scheduler: not running".to_string());
    }
    // The essential tasks (SPEC section 12): one that stopped fails the
    // daemon, which exits shortly to be restarted.
    let essentials: Vec<(&str, bool)> = app.essentials.status().collect();
    for (name, up) in &essentials {
        if !up && *name != "scheduler" {
            output.push(format!("{name}: stopped; the daemon is exiting"));
        }
    }
    let status = if output.is_empty() { "pass" } else { "fail" };
    let obs = |ok: bool, value: serde_json::Value, unit: &str| {
        serde_json::json!([{
            "status": if ok { "pass" } else { "fail" },
            "observedValue": value,
            "observedUnit": unit,
            "time": crate::clock::rfc3339(now),
        }])
    };
    let mut body = serde_json::json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "serviceId": "healthchecker",
        "description": "healthchecker daemon",
        "checks": {
            "store:responseTime": obs(store_ok.is_ok() && write_error.is_none(), serde_json::json!(store_ms), "ms"),
            "scheduler:lastTick": obs(sched_ok, serde_json::json!(tick_age), "ms"),
            "uptime": obs(true, serde_json::json!((now - app.started_at) / 1000), "s"),
        }
    });
    for (name, up) in essentials {
        body["checks"][format!("{name}:running")] = serde_json::json!([{
            "status": if up { "pass" } else { "fail" },
            "observedValue": up,
            "time": crate::clock::rfc3339(now),
        }]);
    }
    if !output.is_empty() {
        body["output"] = output.join("; ").into();
    }
    let code = if status == "pass" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(
            header::CONTENT_TYPE,
            healthchecker_core::healthjson::CONTENT_TYPE,
        )],
        body.to_string(),
    )
        .into_response()
}

/// `/metrics`: the services' lines come pre-rendered from
/// [`Metrics`] (no count over the services table, no per-scrape formatting
/// of per-service series); the format follows `Accept`
/// ([`crate::metrics::Format::negotiate`]).
async fn metrics(
    State(app): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let format = crate::metrics::Format::negotiate(
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()),
    );
    let backlog = app.store.read(|store| store.pending_mail()).await?;
    app.metrics.outbox_backlog.set(backlog);
    app.metrics.set_store_wal_bytes(app.store.wal_bytes());
    // Copying megabytes of lines is kept off the async threads the
    // scheduler runs on.
    let m = app.metrics.clone();
    let body = tokio::task::spawn_blocking(move || m.encode(format))
        .await
        .map_err(|e| ApiError::Internal(format!("metrics: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type()),
            (header::VARY, "Accept"),
        ],
        body,
    )
        .into_response())
}
