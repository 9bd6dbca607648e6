//! The one error type of the HTTP API and its mapping to status codes.
//!
//! Every error body is `{"error": {"code", "message", "field"}}` (SPEC
//! section 5).

use crate::store::StoreError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use healthchecker_core::SpecError;

/// An API failure.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is not valid (field named).
    #[error("{0}")]
    Invalid(#[from] SpecError),
    /// 400: a malformed query, form or path.
    #[error("{message}")]
    BadRequest {
        /// Machine-readable code.
        code: &'static str,
        /// The field or parameter.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// 404: no service of that name.
    #[error("no service named {0:?}")]
    NotFound(String),
    /// 401: a credential is needed (`--auth token`, `--private`).
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the credential does not allow this, or the legacy API is off.
    #[error("{0}")]
    Forbidden(String),
    /// 403: a state-changing request sent by a browser on behalf of another
    /// site (`Sec-Fetch-Site`, a foreign `Origin`), or with browser Basic
    /// credentials (SPEC section 12).
    #[error("{0}")]
    CrossSite(String),
    /// 415: a v1 body that is not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429: too many state-changing requests from this client (IPv6: its
    /// /64); retry after the seconds given.
    #[error("too many changes from this address; retry in {0} s (--register-rate-limit)")]
    RateLimited(u64),
    /// 507: `--max-services` services are registered already.
    #[error("the daemon already monitors its maximum of {0} services (--max-services)")]
    ServiceLimit(usize),
    /// 413: the body is over the limit.
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    /// 503: the store cannot write (disk full, read-only) or the daemon is stopping.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or an unexpected store failure.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 for a bad parameter.
    pub fn bad(field: &str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code: "invalid_parameter",
            field: field.into(),
            message: message.into(),
        }
    }

    fn parts(&self) -> (StatusCode, &str, &str) {
        match self {
            ApiError::Invalid(e) => (StatusCode::BAD_REQUEST, e.code, e.field.as_str()),
            ApiError::BadRequest { code, field, .. } => {
                (StatusCode::BAD_REQUEST, code, field.as_str())
            }
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", "name"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", ""),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", ""),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", ""),
            ApiError::CrossSite(_) => (StatusCode::FORBIDDEN, "cross_site", ""),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Content-Type",
            ),
            ApiError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", ""),
            ApiError::ServiceLimit(_) => (StatusCode::INSUFFICIENT_STORAGE, "service_limit", ""),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", ""),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", ""),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if let StoreError::Limit(n) = e {
            return ApiError::ServiceLimit(n);
        }
        use rusqlite::ErrorCode::*;
        if let StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) = &e {
            if matches!(
                f.code,
                DiskFull | ReadOnly | SystemIoFailure | CannotOpen | DatabaseBusy | DatabaseLocked
            ) {
                tracing::error!(error = %e, "store unavailable");
                return ApiError::Unavailable(format!("the store cannot write right now: {e}"));
            }
        }
        tracing::error!(error = %e, "store failure");
        ApiError::Internal(e.to_string())
    }
}

/// A 404 whose message names what is missing (`ApiError::NotFound` speaks
/// of services): `{"error": {"code": "not_found", "message"}}`.
pub fn not_found(message: impl Into<String>) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({"error": {"code": "not_found", "message": message.into()}})),
    )
        .into_response()
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::Internal(format!("task failed: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, field) = self.parts();
        let mut err = serde_json::json!({"code": code, "message": self.to_string()});
        if !field.is_empty() {
            err["field"] = field.into();
        }
        let mut r = (status, Json(serde_json::json!({ "error": err }))).into_response();
        match &self {
            ApiError::Unauthorized(_) => {
                r.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer"),
                );
            }
            ApiError::RateLimited(secs) => {
                if let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string()) {
                    r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
                }
            }
            _ => {}
        }
        r
    }
}
