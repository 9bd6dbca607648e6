//! `GET /api/v1/cluster` (SPEC section 19): the nodes sharing the work,
//! their bucket leases and last heartbeats. The daemon's wiring says where
//! they are read from ([`ClusterSource`]: PostgreSQL's `nodes` and
//! `buckets` tables, `cluster::status::read`); without one (SQLite) the
//! answer is a single node, `this`, holding every bucket.

use super::{ApiError, AppState};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use futures_util::future::BoxFuture;
use healthchecker_core::api::ClusterStatus;
use std::sync::Arc;

/// Reads the cluster's nodes and leases now; the error is shown as a 503.
pub type ClusterSource =
    Arc<dyn Fn() -> BoxFuture<'static, Result<ClusterStatus, String>> + Send + Sync>;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/api/v1/cluster", get(cluster))
}

/// The cluster as `app` sees it now.
pub(super) async fn status(app: &AppState) -> Result<ClusterStatus, ApiError> {
    match &app.cluster {
        Some(read) => read()
            .await
            .map_err(|e| ApiError::Unavailable(format!("cannot read the cluster: {e}"))),
        None => Ok(crate::cluster::status::single(
            &app.config.public_url,
            app.started_at,
            crate::clock::now_ms(),
        )),
    }
}

/// The nodes of the cluster, their bucket leases and heartbeats (on
/// SQLite: this daemon alone, holding all 1,024 buckets).
#[utoipa::path(get, path = "/api/v1/cluster", tag = "cluster",
    responses(
        (status = 200, description = "The nodes, their leases and heartbeats", body = ClusterStatus),
        (status = 503, description = "The cluster's tables cannot be read", body = super::dto::ErrorBody),
    ))]
pub(super) async fn cluster(State(app): State<AppState>) -> Result<Json<ClusterStatus>, ApiError> {
    Ok(Json(status(&app).await?))
}
