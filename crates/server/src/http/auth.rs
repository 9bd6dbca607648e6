//! Who may do what (SPEC section 5). The per-client rate of changes is
//! [`super::limits`]'s.
//!
//! `--auth open`: anyone may register and change, as in the seed.
//! `--auth token`: every mutating call needs `Authorization: Bearer` with the
//! admin token or the service's own token (which works only on that
//! service); no header is 401, a wrong token 403; the legacy form API is
//! off (403: it has no way to carry a token). `--private` also closes every
//! read but `/health` to the admin token (browsers may send it as the
//! password of HTTP Basic auth). Tokens are compared as SHA-256 digests in
//! constant time and never logged.

use super::{ApiError, AppState};
use crate::config::AuthMode;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The credential a request carries.
enum Presented {
    None,
    Token(String),
}

fn presented(headers: &HeaderMap) -> Presented {
    let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Presented::None;
    };
    let v = v.trim();
    if let Some(t) = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
    {
        return Presented::Token(t.trim().to_string());
    }
    if let Some(b) = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))
    {
        use base64::Engine;
        if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b.trim()) {
            if let Ok(s) = String::from_utf8(raw) {
                // user:password — the password is the token.
                return Presented::Token(
                    s.split_once(':').map(|(_, p)| p.to_string()).unwrap_or(s),
                );
            }
        }
    }
    Presented::Token(String::new())
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

impl AppState {
    pub(crate) fn is_admin(&self, token: &str) -> bool {
        match &self.config.admin_token {
            Some(admin) => same(&digest(token), &digest(&admin.0)),
            None => false,
        }
    }

    /// Authorises a change to what is the daemon's, not a service's
    /// (channels, silences): only the admin token passes. A refusal says
    /// that `what` are changed with the admin token.
    pub(crate) async fn authorize_admin_change(
        &self,
        headers: &HeaderMap,
        what: &str,
    ) -> Result<(), ApiError> {
        // No service is named "" (names are never blank): only the admin token passes.
        self.authorize_change(headers, "")
            .await
            .map_err(|e| match e {
                ApiError::Forbidden(_) => {
                    ApiError::Forbidden(format!("{what} are changed with the admin token"))
                }
                other => other,
            })
    }

    /// Authorises a change to service `name` (registration, pause, resume,
    /// delete): the admin token, or that service's own token.
    pub async fn authorize_change(&self, headers: &HeaderMap, name: &str) -> Result<(), ApiError> {
        if self.config.auth == AuthMode::Open {
            return Ok(());
        }
        let basic = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("basic "));
        if basic {
            // A browser resends its cached --private login with every
            // request, including the ones another site's page makes it send.
            return Err(ApiError::Forbidden(
                "HTTP Basic credentials (the browser login of --private) are for reading only; changes need Authorization: Bearer <token>".into(),
            ));
        }
        let token = match presented(headers) {
            Presented::None => {
                return Err(ApiError::Unauthorized(
                    "this daemon runs with --auth token: send Authorization: Bearer <admin or service token>".into(),
                ))
            }
            Presented::Token(t) => t,
        };
        if self.is_admin(&token) {
            return Ok(());
        }
        let n = name.to_string();
        let stored = self.read(move |s| s.token_hash(&n)).await?;
        let presented_hash = hex::encode(digest(&token));
        match stored {
            Some(h) if same(h.as_bytes(), presented_hash.as_bytes()) => Ok(()),
            _ => Err(ApiError::Forbidden(format!(
                "this token may not change {name:?}"
            ))),
        }
    }
}

/// Middleware: legacy routes off in token mode; reads closed with --private.
pub async fn guard(State(app): State<AppState>, req: Request, next: Next) -> Response {
    if app.config.auth == AuthMode::Open {
        return next.run(req).await;
    }
    let path = req.uri().path();
    if path.starts_with("/healthchecker/") {
        return ApiError::Forbidden(
            "the legacy /healthchecker/ API is off because this daemon runs with --auth token (the legacy form API cannot carry a token); use /api/v1 with a token".into(),
        )
        .into_response();
    }
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    // Heartbeat pings carry their own credential (the ping id), also with
    // --private (SPEC section 15: the id works in token mode).
    // The public status page and the dashboard's static assets (a
    // stylesheet and a script, no data) stay open too (SPEC section 17).
    let public = path == "/health"
        || path.starts_with("/ping/")
        || path.starts_with("/assets/")
        || (app.config.status_page && path == "/status");
    if read && app.config.private && !public {
        let html = !path.starts_with("/api/") && path != "/metrics";
        match presented(req.headers()) {
            Presented::Token(t) if app.is_admin(&t) => {}
            Presented::None => {
                let mut r = ApiError::Unauthorized(
                    "this daemon runs with --private: reads need the admin token".into(),
                )
                .into_response();
                if html {
                    r.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        "Basic realm=\"healthchecker\"".parse().unwrap(),
                    );
                }
                return r;
            }
            Presented::Token(_) => {
                return ApiError::Forbidden("reads need the admin token (--private)".into())
                    .into_response()
            }
        }
    }
    next.run(req).await
}

/// The peer address of a connection, put on each request by the server loop.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub std::net::SocketAddr);

/// Who is asking: the request's headers (credentials) and peer address.
pub struct Caller {
    /// The request headers.
    pub headers: HeaderMap,
    /// The connection's peer, when served by the daemon's own loop.
    pub peer: Option<Peer>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Caller {
            headers: parts.headers.clone(),
            peer: parts.extensions.get::<Peer>().copied(),
        })
    }
}
