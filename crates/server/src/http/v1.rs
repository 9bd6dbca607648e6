//! The native v1 JSON API under `/api/v1` (SPEC section 5).

use super::dto::{
    check_dto, event_dto, notification_dto, service_dto, CheckList, ErrorBody, EventList,
    NotificationList, Service, ServiceList, ServiceView,
};
use super::extract::{Body, Query, ServiceName};
use super::{ApiError, AppState};
use crate::clock::now_ms;
use crate::store::ServiceFilter;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use healthchecker_core::{HealthState, RegisterRequest, ServiceId, ServiceSpec};

/// Most rows one list call returns.
pub const MAX_LIMIT: usize = 1000;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/services", post(register).get(list))
        .route("/api/v1/services/{name}", get(one).delete(remove))
        .route("/api/v1/services/{name}/pause", post(pause))
        .route("/api/v1/services/{name}/resume", post(resume))
        .route("/api/v1/services/{name}/checks", get(checks))
        .route("/api/v1/events", get(events))
        .route("/api/v1/notifications", get(notifications))
}

/// Register or update a service.
///
/// A new name answers 201, an existing one 200 (its state and history are
/// kept). The answer carries a fresh token for the service.
#[utoipa::path(post, path = "/api/v1/services", tag = "services",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered", body = Service),
        (status = 200, description = "Updated (state and history kept)", body = Service),
        (status = 400, description = "Invalid field (named in the error)", body = ErrorBody),
        (status = 403, description = "Sent by a page of another site (Sec-Fetch-Site, Origin)", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 415, description = "The body is not application/json", body = ErrorBody),
        (status = 429, description = "Too many changes from this client; see Retry-After (--register-rate-limit)", body = ErrorBody),
        (status = 503, description = "The store cannot write", body = ErrorBody),
    ))]
pub(super) async fn register(
    State(app): State<AppState>,
    caller: super::auth::Caller,
    Body(body): Body,
) -> Result<(StatusCode, Json<Service>), ApiError> {
    super::cross_site::require_json(&caller.headers)?;
    let spec = ServiceSpec::try_from(RegisterRequest::from_json(&body)?)?;
    registered(&app, spec, &caller).await
}

/// Registers `spec` and answers as a registration does: 201 when new, 200
/// when it updated a service, with the service and its new token. Shared
/// by `POST /api/v1/services` and the monitoring of a found device.
pub(super) async fn registered(
    app: &AppState,
    spec: ServiceSpec,
    caller: &super::auth::Caller,
) -> Result<(StatusCode, Json<Service>), ApiError> {
    let (reg, token) = app.register(spec, caller).await?;
    let status = if reg.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let view = ServiceView {
        token: Some(&token),
        ..Default::default()
    };
    Ok((status, Json(service_dto(&reg.record, view))))
}

/// List services with state, last check and uptime, one page at a time.
///
/// At most `limit` (default and most 1000) services by name; when there
/// are more, `next` (and a `Link: <...>; rel="next"` header) gives the
/// next page, which starts after the last name of this one.
#[utoipa::path(get, path = "/api/v1/services", tag = "services",
    params(
        ("state" = Option<String>, Query, description = "Only this state: unknown, healthy, degraded, unhealthy"),
        ("q" = Option<String>, Query, description = "Names containing this text"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "1 to 1000, default 1000"),
        ("after" = Option<String>, Query, description = "Only names after this one (the cursor that `next` carries)"),
        ("offset" = Option<usize>, Query, description = "Skip this many more (ordered by name)"),
    ),
    responses(
        (status = 200, description = "Services by name; `next` when there are more",
            body = ServiceList,
            headers(("Link" = String, description = "`<next page>; rel=\"next\"` when there are more"))),
        (status = 400, description = "Bad parameter", body = ErrorBody),
    ))]
pub(super) async fn list(
    State(app): State<AppState>,
    q: Query,
) -> Result<axum::response::Response, ApiError> {
    let state = match q.get("state").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(s.parse::<HealthState>().map_err(|_| {
            ApiError::bad(
                "state",
                format!("invalid state {s:?} (valid: unknown, healthy, degraded, unhealthy)"),
            )
        })?),
    };
    let limit = q.limit("limit", MAX_LIMIT, MAX_LIMIT)?;
    let after = q.get("after").filter(|s| !s.is_empty()).map(str::to_string);
    let offset = q.count("offset")?;
    let filter = ServiceFilter {
        state,
        name_contains: q.get("q").map(str::to_string),
        // One more than the page: is there a next one?
        limit: limit + 1,
        offset,
        after,
    };
    let (mut services, uptimes) = app
        .read(move |s| {
            let services = s.list_services(&filter)?;
            // Uptime of this page only (one page more than `limit` at most).
            let ids: Vec<ServiceId> = services.iter().map(|r| r.id).collect();
            let uptimes = s.uptime_ratios(&ids, now_ms())?;
            Ok((services, uptimes))
        })
        .await?;
    let next = (services.len() > limit).then(|| {
        services.truncate(limit);
        let last = services.last().map(|r| r.spec.name.as_str()).unwrap_or("");
        let mut qs = url::form_urlencoded::Serializer::new(String::new());
        if let Some(st) = state {
            qs.append_pair("state", st.as_str());
        }
        if let Some(text) = q.get("q").filter(|t| !t.is_empty()) {
            qs.append_pair("q", text);
        }
        qs.append_pair("limit", &limit.to_string());
        qs.append_pair("after", last);
        format!("/api/v1/services?{}", qs.finish())
    });
    let services: Vec<Service> = services
        .iter()
        .map(|r| {
            let uptime = Some(uptimes.get(&r.id).copied().unwrap_or_default());
            service_dto(
                r,
                ServiceView {
                    uptime,
                    ..Default::default()
                },
            )
        })
        .collect();
    let link = next
        .as_ref()
        .and_then(|n| axum::http::HeaderValue::from_str(&format!("<{n}>; rel=\"next\"")).ok());
    let mut response = axum::response::IntoResponse::into_response(Json(ServiceList {
        count: services.len(),
        services,
        next,
    }));
    if let Some(link) = link {
        response
            .headers_mut()
            .insert(axum::http::header::LINK, link);
    }
    Ok(response)
}

/// One service: parameters, state, counters, last check, recent checks.
#[utoipa::path(get, path = "/api/v1/services/{name}", tag = "services",
    params(("name" = String, Path, description = "Service name, percent-encoded")),
    responses(
        (status = 200, description = "The service", body = Service),
        (status = 400, description = "Bad name encoding", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
    ))]
pub(super) async fn one(
    State(app): State<AppState>,
    ServiceName(name): ServiceName,
) -> Result<Json<Service>, ApiError> {
    // One job on one reader thread: under load each hand-off to a reader
    // can wait for a core (docs/performance.md, W5).
    let n = name.clone();
    let (rec, recent, uptimes) = app
        .read(move |s| {
            let Some(rec) = s.get_service(&n)? else {
                return Ok(None);
            };
            let (recent, uptimes) = (s.checks(rec.id, 20)?, s.uptime_ratios(&[rec.id], now_ms())?);
            Ok(Some((rec, recent, uptimes)))
        })
        .await?
        .ok_or(ApiError::NotFound(name))?;
    let id = rec.id;
    let view = ServiceView {
        uptime: Some(uptimes.get(&id).copied().unwrap_or_default()),
        recent_checks: Some(&recent),
        ..Default::default()
    };
    Ok(Json(service_dto(&rec, view)))
}

/// Stop monitoring a service (its events and mails stay).
#[utoipa::path(delete, path = "/api/v1/services/{name}", tag = "services",
    params(("name" = String, Path, description = "Service name, percent-encoded")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Bad name encoding", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 429, description = "Too many changes from this client; see Retry-After (--register-rate-limit)", body = ErrorBody),
    ))]
pub(super) async fn remove(
    State(app): State<AppState>,
    caller: super::auth::Caller,
    ServiceName(name): ServiceName,
) -> Result<StatusCode, ApiError> {
    app.delete(&name, &caller).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pause checks (the state is frozen).
#[utoipa::path(post, path = "/api/v1/services/{name}/pause", tag = "services",
    params(("name" = String, Path, description = "Service name, percent-encoded")),
    responses(
        (status = 200, description = "Paused", body = Service),
        (status = 400, description = "Bad name encoding", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 429, description = "Too many changes from this client; see Retry-After (--register-rate-limit)", body = ErrorBody),
    ))]
pub(super) async fn pause(
    State(app): State<AppState>,
    caller: super::auth::Caller,
    ServiceName(name): ServiceName,
) -> Result<Json<Service>, ApiError> {
    let rec = app.set_paused(&name, true, &caller).await?;
    Ok(Json(service_dto(&rec, ServiceView::default())))
}

/// Resume checks (the first within a second).
#[utoipa::path(post, path = "/api/v1/services/{name}/resume", tag = "services",
    params(("name" = String, Path, description = "Service name, percent-encoded")),
    responses(
        (status = 200, description = "Resumed", body = Service),
        (status = 400, description = "Bad name encoding", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 429, description = "Too many changes from this client; see Retry-After (--register-rate-limit)", body = ErrorBody),
    ))]
pub(super) async fn resume(
    State(app): State<AppState>,
    caller: super::auth::Caller,
    ServiceName(name): ServiceName,
) -> Result<Json<Service>, ApiError> {
    let rec = app.set_paused(&name, false, &caller).await?;
    Ok(Json(service_dto(&rec, ServiceView::default())))
}

/// Check history, newest first.
#[utoipa::path(get, path = "/api/v1/services/{name}/checks", tag = "services",
    params(
        ("name" = String, Path, description = "Service name, percent-encoded"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "1 to 1000, default 100"),
    ),
    responses(
        (status = 200, description = "Checks", body = CheckList),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
    ))]
pub(super) async fn checks(
    State(app): State<AppState>,
    ServiceName(name): ServiceName,
    q: Query,
) -> Result<Json<CheckList>, ApiError> {
    let limit = q.limit("limit", 100, MAX_LIMIT)?;
    let n = name.clone();
    let (rec, rows) = app
        .read(move |s| {
            let Some(rec) = s.get_service(&n)? else {
                return Ok(None);
            };
            let rows = s.checks(rec.id, limit)?;
            Ok(Some((rec, rows)))
        })
        .await?
        .ok_or(ApiError::NotFound(name))?;
    Ok(Json(CheckList {
        service: rec.spec.name,
        checks: rows.iter().map(check_dto).collect(),
    }))
}

/// State changes and registrations, newest first.
#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    params(
        ("service" = Option<String>, Query, description = "Only this service"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "1 to 1000, default 100"),
    ),
    responses(
        (status = 200, description = "Events", body = EventList),
        (status = 400, description = "Bad parameter", body = ErrorBody),
    ))]
pub(super) async fn events(
    State(app): State<AppState>,
    q: Query,
) -> Result<Json<EventList>, ApiError> {
    let limit = q.limit("limit", 100, MAX_LIMIT)?;
    let service = q
        .get("service")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let rows = app
        .read(move |s| s.events(service.as_deref(), limit))
        .await?;
    Ok(Json(EventList {
        events: rows.iter().map(event_dto).collect(),
    }))
}

/// The mail outbox, and the deliveries to named channels.
#[utoipa::path(get, path = "/api/v1/notifications", tag = "notifications",
    params(
        ("status" = Option<String>, Query, description = "pending, sent, failed, held (under a silence or a failing parent), suppressed or digested (listed in a digest)"),
        ("service" = Option<String>, Query, description = "Only this service"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "1 to 1000, default 100"),
    ),
    responses(
        (status = 200, description = "Notifications", body = NotificationList),
        (status = 400, description = "Bad parameter", body = ErrorBody),
    ))]
pub(super) async fn notifications(
    State(app): State<AppState>,
    q: Query,
) -> Result<Json<NotificationList>, ApiError> {
    let limit = q.limit("limit", 100, MAX_LIMIT)?;
    let status = match q.get("status").filter(|s| !s.is_empty()) {
        None => None,
        Some(s @ ("pending" | "sent" | "failed" | "held" | "suppressed" | "digested")) => {
            Some(s.to_string())
        }
        Some(s) => {
            let valid = "pending, sent, failed, held, suppressed, digested";
            let why = format!("invalid status {s:?} (valid: {valid})");
            return Err(ApiError::bad("status", why));
        }
    };
    let service = q
        .get("service")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let (rows, deliveries) = app
        .read(move |s| {
            Ok((
                s.notifications(status.as_deref(), service.as_deref(), limit)?,
                s.deliveries(status.as_deref(), service.as_deref(), limit)?,
            ))
        })
        .await?;
    Ok(Json(NotificationList {
        notifications: rows.iter().map(notification_dto).collect(),
        deliveries: deliveries.iter().map(super::dto::delivery_dto).collect(),
    }))
}
