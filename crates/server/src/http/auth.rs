//! Who may do what (SPEC section 5), and the per-client registration rate.
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
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;
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
    fn is_admin(&self, token: &str) -> bool {
        match &self.config.admin_token {
            Some(admin) => same(&digest(token), &digest(&admin.0)),
            None => false,
        }
    }

    /// Authorises a change to service `name` (registration, pause, resume,
    /// delete): the admin token, or that service's own token.
    pub async fn authorize_change(&self, headers: &HeaderMap, name: &str) -> Result<(), ApiError> {
        if self.config.auth == AuthMode::Open {
            return Ok(());
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
    if read && app.config.private && path != "/health" {
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

/// A token bucket per client address for registrations.
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_sec` registrations a second per client, bursts of 5 seconds' worth.
    pub fn new(per_sec: u32) -> Self {
        RateLimiter {
            per_sec: per_sec as f64,
            burst: (per_sec as f64 * 5.0).max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `client`; `Err(seconds to wait)` when empty.
    pub fn take(&self, client: IpAddr) -> Result<(), u64> {
        if self.per_sec <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if b.len() > 10_000 {
            // Forget idle clients (full buckets) so the map stays small.
            let (rate, burst) = (self.per_sec, self.burst);
            b.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = b.entry(client).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_sec).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.per_sec).ceil() as u64)
        }
    }
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

impl Caller {
    /// Applies the registration rate limit to this client.
    pub fn check_rate(&self, app: &AppState) -> Result<(), ApiError> {
        let ip = self
            .peer
            .map(|p| p.0.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        app.limiter.take(ip).map_err(ApiError::RateLimited)
    }
}
