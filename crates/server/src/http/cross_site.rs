//! Cross-site protection and the browser security headers (SPEC section 12,
//! "Hostile LAN").
//!
//! Any web page a person on the LAN has open can make their browser send
//! requests to the daemon: a form post, an `<img src>` that fetches a GET
//! URL. Browsers say where such a request comes from: `Sec-Fetch-Site`
//! (every current browser) and `Origin` (on every POST, and on every
//! cross-origin request). A state-changing request that says it comes from
//! another site is refused with `403`; scripts, `curl` and the seed's Python
//! client send neither header and keep working. What this module must not
//! do: judge reads (a cross-site `GET /` only shows a page the attacker
//! cannot read) or look at credentials (that is `auth`).
//!
//! HTML pages also get a `Content-Security-Policy` (scripts only from the
//! daemon, no framing), and every response `X-Content-Type-Options: nosniff`.

use super::{ApiError, AppState};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The legacy routes that change state although the seed's client calls
/// them with `GET` (an `<img src>` could call them).
const LEGACY_CHANGES: &[&str] = &[
    "/healthchecker/monitor",
    "/healthchecker/stop",
    "/healthchecker/stopmonitoring",
    "/healthchecker/pause",
    "/healthchecker/resume",
];

/// The policy of every HTML page: scripts and styles from the daemon only
/// (inline `style` attributes are allowed: maud escapes every value, and the
/// sparklines use them), fetches to the daemon only, forms posted to the
/// daemon only, never framed (clickjacking).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
    form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Whether `method` on `path` changes state: every method but GET, HEAD and
/// OPTIONS, and the legacy GET routes that change state. The one
/// definition used by the cross-site guard and the rate limit.
pub fn is_state_changing(method: &Method, path: &str) -> bool {
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => LEGACY_CHANGES.contains(&path),
        _ => true,
    }
}

/// Middleware: refuses state-changing requests a browser sent on behalf of
/// another site.
pub async fn guard(State(app): State<AppState>, req: Request, next: Next) -> Response {
    // Heartbeat pings (`/ping/<id>...`, SPEC section 15) are exempt: the
    // random id in the URL is their only credential, a page that does not
    // know it cannot forge one, and a ping sent from a browser (a status
    // page, a bookmarklet) or by a cron job is legitimate. The by-name form
    // under /api/v1 stays guarded.
    if req.uri().path().starts_with("/ping/") {
        return next.run(req).await;
    }
    if is_state_changing(req.method(), req.uri().path()) {
        if let Err(e) = same_site(req.headers(), Some(&app.config.public_url)) {
            tracing::warn!(path = %req.uri().path(), reason = %e, "refused a cross-site request");
            return e.into_response();
        }
    }
    next.run(req).await
}

/// `Ok` unless the headers show a request sent for another site: a
/// `Sec-Fetch-Site` of `cross-site` or `same-site`, or an `Origin` that is
/// not the daemon's own (its `Host`, or the origin of `--public-url`).
pub fn same_site(headers: &HeaderMap, public_url: Option<&str>) -> Result<(), ApiError> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("").trim().to_ascii_lowercase();
        if site == "cross-site" || site == "same-site" {
            return Err(ApiError::CrossSite(format!(
                "refused: a page of another site asked this browser to change the daemon (Sec-Fetch-Site: {site}); use the daemon's own dashboard, the CLI or the API"
            )));
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("").trim();
    let own = |o: &url::Url| {
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|host| same_authority(o, host))
            || public_url
                .and_then(|p| url::Url::parse(p).ok())
                .is_some_and(|p| p.origin() == o.origin())
    };
    match url::Url::parse(origin) {
        Ok(o) if own(&o) => Ok(()),
        _ => Err(ApiError::CrossSite(format!(
            "refused: this request comes from the page of another origin ({origin:?}); use the daemon's own dashboard, the CLI or the API"
        ))),
    }
}

/// Whether `origin` names the same host and port as the `Host` header.
fn same_authority(origin: &url::Url, host: &str) -> bool {
    let Ok(auth) = host.parse::<axum::http::uri::Authority>() else {
        return false;
    };
    let Some(o_host) = origin.host_str() else {
        return false;
    };
    let o_port = origin.port_or_known_default();
    // A Host without a port names the scheme's default port.
    let h_port = auth.port_u16().or(match origin.scheme() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    });
    o_host.eq_ignore_ascii_case(auth.host()) && o_port.is_some() && o_port == h_port
}

/// Middleware: `nosniff` on every response; on HTML pages the CSP, no
/// framing and no referrer to other sites.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if html {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
    }
    r
}

/// Refuses a v1 body that is not JSON (`415`): an HTML form can send
/// `text/plain` or a form encoding across sites without a preflight, but
/// never `application/json`.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" {
        Ok(())
    } else {
        let got = if ct.is_empty() {
            "none".to_string()
        } else {
            format!("{ct:?}")
        };
        Err(ApiError::UnsupportedMediaType(format!(
            "the body must be JSON sent with Content-Type: application/json (got {got})"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_foreign_sites_are_refused() {
        let ok: &[&[(&str, &str)]] = &[
            &[],
            &[("host", "nas.local:8484")],
            &[("sec-fetch-site", "same-origin")],
            &[("sec-fetch-site", "none")],
            &[
                ("host", "nas.local:8484"),
                ("origin", "http://nas.local:8484"),
            ],
            &[
                ("host", "NAS.local:8484"),
                ("origin", "http://nas.local:8484"),
            ],
            &[("host", "[::1]:8484"), ("origin", "http://[::1]:8484")],
            &[("host", "nas.local"), ("origin", "http://nas.local")],
            &[("host", "127.0.0.1:1"), ("origin", "https://hc.example")],
        ];
        for h in ok {
            assert!(
                same_site(&headers(h), Some("https://hc.example/")).is_ok(),
                "{h:?}"
            );
        }
        let refused: &[&[(&str, &str)]] = &[
            &[("sec-fetch-site", "cross-site")],
            &[("sec-fetch-site", "same-site")],
            &[
                ("host", "nas.local:8484"),
                ("origin", "http://evil.example"),
            ],
            &[
                ("host", "nas.local:8484"),
                ("origin", "http://nas.local:8485"),
            ],
            &[("host", "nas.local:8484"), ("origin", "null")],
            &[("origin", "http://nas.local:8484")],
            &[("host", "nas.local"), ("origin", "http://nas.local:8484")],
        ];
        for h in refused {
            assert!(same_site(&headers(h), None).is_err(), "{h:?}");
        }
    }

    #[test]
    fn legacy_gets_that_change_state_are_state_changing() {
        assert!(is_state_changing(&Method::GET, "/healthchecker/stop"));
        assert!(is_state_changing(&Method::POST, "/api/v1/services"));
        assert!(is_state_changing(&Method::DELETE, "/api/v1/services/x"));
        assert!(is_state_changing(&Method::GET, "/healthchecker/pause"));
        assert!(!is_state_changing(&Method::GET, "/healthchecker/info"));
        assert!(!is_state_changing(&Method::GET, "/healthchecker/status"));
        assert!(!is_state_changing(&Method::HEAD, "/"));
        assert!(!is_state_changing(&Method::GET, "/api/v1/services"));
    }

    #[test]
    fn json_bodies_need_the_json_content_type() {
        assert!(require_json(&headers(&[("content-type", "application/json")])).is_ok());
        assert!(require_json(&headers(&[(
            "content-type",
            "Application/JSON; charset=utf-8"
        )]))
        .is_ok());
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            assert!(require_json(&headers(&[("content-type", bad)])).is_err());
        }
        assert!(require_json(&HeaderMap::new()).is_err());
    }
}
