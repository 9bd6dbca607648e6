//! The HTTP API: native v1, the seed's legacy form API, the daemon's own
//! health and metrics. Each resource owns its router; handlers stay thin
//! (extract -> domain type -> store/scheduler -> response DTO).

pub mod auth;
mod dashboard;
mod dto;
pub mod error;
pub mod extract;
mod legacy;
pub mod openapi;
mod ops;
mod v1;

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
use axum::{Json, Router};
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
    /// Per-client registration rate.
    pub limiter: auth::RateLimiter,
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
    Router::new()
        .merge(v1::router())
        .merge(legacy::router())
        .merge(dashboard::router())
        .route("/health", get(own_health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .layer(DefaultBodyLimit::max(extract::MAX_BODY))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(state)
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({"error": {"code": "not_found", "message": "no such route"}})),
    )
        .into_response()
}

/// The daemon's own health, as health+json: the store answers and the
/// scheduler loop turned recently.
async fn own_health(State(app): State<AppState>) -> Response {
    let store = app.store.clone();
    let started = std::time::Instant::now();
    let store_ok = tokio::task::spawn_blocking(move || store.ping())
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
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

async fn metrics(State(app): State<AppState>) -> Result<Response, ApiError> {
    let store = app.store.clone();
    let (counts, backlog) = tokio::task::spawn_blocking(move || {
        let counts = store.count_by_state()?;
        let backlog = store.with_reader(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM notifications WHERE status = 'pending'",
                [],
                |r| r.get::<_, i64>(0),
            )
        })?;
        Ok::<_, crate::store::StoreError>((counts, backlog))
    })
    .await??;
    for (state, n) in counts.0 {
        app.metrics
            .services
            .get_or_create(&crate::metrics::StateLabel {
                state: state.as_str().into(),
            })
            .set(n);
    }
    app.metrics.outbox_backlog.set(backlog);
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
        .into_response())
}
