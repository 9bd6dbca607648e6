//! Heartbeat pings (SPEC section 15): `GET`/`POST /ping/<id>` (success),
//! `/ping/<id>/start`, `/ping/<id>/fail`, `/ping/<id>/<exit code>`, and the
//! same by name under `/api/v1/services/{name}/ping` for the CLI.
//!
//! The ping id (128 random bits) is the credential: `/ping/...` needs no
//! token in `--auth token` mode, and the cross-site guard lets browsers and
//! cron jobs send it (see `cross_site::guard`). An unknown id answers 404
//! after the same one indexed lookup as a known one. Pings are limited per
//! id ([`PING_RATE_PER_MIN`]), unknown ids included, so that the limit says
//! nothing about which ids exist. The by-name route is a change like pause
//! or resume: in token mode it needs the admin or the service's token.
//!
//! A ping is recorded in the store (its time; on PostgreSQL the ping too,
//! for a node that gains the service's bucket later) and handed to the
//! scheduler, which judges it and writes the check; this module decides
//! nothing.

use super::auth::Caller;
use super::extract::{Body, ServiceName};
use super::{ApiError, AppState};
use crate::scheduler::Command;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use governor::clock::{Clock, DefaultClock};
use healthchecker_core::heartbeat::{body_tail, Ping};
use healthchecker_core::ServiceId;
use serde_json::json;
use std::num::NonZeroU32;
use std::sync::Arc;

/// Pings a minute one id may send: a job sends two per run (start and
/// end); a minute's worth may come at once (a `run` retried by hand).
pub const PING_RATE_PER_MIN: u32 = 30;

/// Above this many ids tracked, idle ones are forgotten (random ids must
/// not grow the table without bound).
const FORGET_IDLE_ABOVE: usize = 10_000;

type Keyed = governor::DefaultKeyedRateLimiter<String>;

/// The per-id rate of pings.
pub struct PingLimiter(Keyed);

impl PingLimiter {
    fn new() -> Self {
        let rate = NonZeroU32::new(PING_RATE_PER_MIN).expect("non-zero");
        PingLimiter(Keyed::keyed(governor::Quota::per_minute(rate)))
    }

    /// `Err(seconds to wait)` when `id` is over its rate.
    fn take(&self, id: &str) -> Result<(), u64> {
        if self.0.len() > FORGET_IDLE_ABOVE {
            self.0.retain_recent();
        }
        self.0.check_key(&id.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
        })
    }
}

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/ping/{id}", get(by_id).post(by_id))
        .route("/ping/{id}/{what}", get(by_id_what).post(by_id_what))
        .route("/api/v1/services/{name}/ping", post(ping_by_name))
        .route(
            "/api/v1/services/{name}/ping/{what}",
            post(ping_by_name_what),
        )
        .layer(Extension(Arc::new(PingLimiter::new())))
}

fn refused(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

async fn by_id(
    State(app): State<AppState>,
    Extension(limiter): Extension<Arc<PingLimiter>>,
    Path(id): Path<String>,
    Body(body): Body,
) -> Response {
    ping_id(app, &limiter, id, None, body).await
}

async fn by_id_what(
    State(app): State<AppState>,
    Extension(limiter): Extension<Arc<PingLimiter>>,
    Path((id, what)): Path<(String, String)>,
    Body(body): Body,
) -> Response {
    ping_id(app, &limiter, id, Some(what), body).await
}

async fn ping_id(
    app: AppState,
    limiter: &PingLimiter,
    id: String,
    what: Option<String>,
    body: bytes::Bytes,
) -> Response {
    if let Err(secs) = limiter.take(&id) {
        let mut r = refused(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "too many pings for this id (at most {PING_RATE_PER_MIN} a minute); retry in {secs} s"
            ),
        );
        if let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
        }
        return r;
    }
    let ping = match Ping::parse(what.as_deref()) {
        Ok(p) => p,
        Err(why) => return ApiError::bad("ping", why).into_response(),
    };
    // Ids are 32 lowercase hex digits; anything else is looked up anyway
    // (one indexed lookup either way) and not found.
    let found = match app.read(move |s| s.service_by_ping_id(&id)).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let Some(target) = found else {
        return refused(
            StatusCode::NOT_FOUND,
            "not_found",
            "no heartbeat service has this ping id".into(),
        );
    };
    match deliver(&app, target.id, &target.name, ping, &body).await {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    }
}

/// What a ping did.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PingAnswer {
    /// `ok`.
    pub status: String,
    /// The heartbeat service's name.
    pub service: String,
    /// `success`, `start`, `fail` or `exit code N`.
    pub ping: String,
}

/// Ping a heartbeat service by name: a success (what `healthchecker ping`
/// sends); the body, at most its last 10 KiB, is kept as the check's output.
#[utoipa::path(post, path = "/api/v1/services/{name}/ping", tag = "services",
    params(("name" = String, Path, description = "Service name, percent-encoded")),
    responses(
        (status = 200, description = "Recorded", body = PingAnswer),
        (status = 400, description = "Not a heartbeat service", body = super::dto::ErrorBody),
        (status = 404, description = "No such service", body = super::dto::ErrorBody),
        (status = 503, description = "The store cannot write", body = super::dto::ErrorBody),
    ))]
pub(super) async fn ping_by_name(
    State(app): State<AppState>,
    caller: Caller,
    ServiceName(name): ServiceName,
    Body(body): Body,
) -> Result<Json<PingAnswer>, ApiError> {
    ping_name(app, caller, name, None, body).await
}

/// Ping a heartbeat service by name: `start`, `fail` or an exit code
/// (0 is a success).
#[utoipa::path(post, path = "/api/v1/services/{name}/ping/{what}", tag = "services",
    params(
        ("name" = String, Path, description = "Service name, percent-encoded"),
        ("what" = String, Path, description = "start, fail, or an exit code 0 to 255"),
    ),
    responses(
        (status = 200, description = "Recorded", body = PingAnswer),
        (status = 400, description = "Not a heartbeat service, or an invalid ping", body = super::dto::ErrorBody),
        (status = 404, description = "No such service", body = super::dto::ErrorBody),
        (status = 503, description = "The store cannot write", body = super::dto::ErrorBody),
    ))]
pub(super) async fn ping_by_name_what(
    State(app): State<AppState>,
    caller: Caller,
    Path((name, what)): Path<(String, String)>,
    Body(body): Body,
) -> Result<Json<PingAnswer>, ApiError> {
    ping_name(app, caller, name, Some(what), body).await
}

async fn ping_name(
    app: AppState,
    caller: Caller,
    name: String,
    what: Option<String>,
    body: bytes::Bytes,
) -> Result<Json<PingAnswer>, ApiError> {
    let ping = Ping::parse(what.as_deref()).map_err(|why| ApiError::bad("ping", why))?;
    app.authorize_change(&caller.headers, &name).await?;
    let rec = app.service(&name).await?;
    if rec.spec.heartbeat.is_none() {
        return Err(ApiError::bad(
            "name",
            format!(
                "{name:?} is not a heartbeat service (register it with \"kind\": \"heartbeat\")"
            ),
        ));
    }
    deliver(&app, rec.id, &rec.spec.name, ping, &body).await
}

/// Records the ping's time and hands it to the scheduler.
async fn deliver(
    app: &AppState,
    id: ServiceId,
    name: &str,
    ping: Ping,
    body: &[u8],
) -> Result<Json<PingAnswer>, ApiError> {
    let at = crate::clock::now();
    let output = (!body.is_empty()).then(|| body_tail(body));
    let store = app.store.clone();
    let kept = output.clone();
    let r = tokio::task::spawn_blocking(move || store.record_ping(id, at, ping, kept.as_deref()))
        .await?;
    app.store.note_write(&r);
    r?;
    if !app
        .scheduler
        .send(Command::Ping {
            id,
            ping,
            at,
            output: output.clone(),
        })
        .await
    {
        return Err(ApiError::Unavailable("the daemon is shutting down".into()));
    }
    if let Some(n) = &app.notifier {
        // The service's owner may be another node of the cluster.
        n.send(crate::cluster::wake::Wake::Ping {
            id,
            name: name.to_string(),
            ping,
            at,
            output,
        })
        .await;
    }
    let what = match ping {
        Ping::Success => "success".to_string(),
        Ping::Start => "start".to_string(),
        Ping::Fail => "fail".to_string(),
        Ping::Exit(c) => format!("exit code {c}"),
    };
    Ok(Json(PingAnswer {
        status: "ok".into(),
        service: name.to_string(),
        ping: what,
    }))
}
