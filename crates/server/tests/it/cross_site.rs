//! Cross-site requests (SPEC section 12, "Hostile LAN"): what a web page on
//! another site can make a visitor's browser send, against the real daemon.
//! A browser-like client sends `Origin` and `Sec-Fetch-*` as browsers do; a
//! script-like client sends neither, as curl and the seed's client do.

use healthchecker_testkit::{assert_error, status, HttpTarget, Mode, TestDaemon};
use reqwest::Method;
use serde_json::json;

const ADMIN: &str = "admin-token-0123456789abcdef";

/// A request as a browser sends it from a page of `site` (`cross-site`,
/// `same-site` or `same-origin`) with the page's `origin`.
fn browser(
    d: &TestDaemon,
    m: Method,
    path: &str,
    site: &str,
    origin: &str,
) -> reqwest::RequestBuilder {
    d.http
        .request(m, d.at(path))
        .header("sec-fetch-site", site)
        .header("sec-fetch-mode", "no-cors")
        .header("origin", origin)
}

async fn target_of(d: &TestDaemon, name: &str) -> serde_json::Value {
    let (st, v) = d.get(&format!("/api/v1/services/{name}")).await;
    assert_eq!(st, 200, "{v}");
    v
}

#[tokio::test]
async fn pages_of_other_sites_cannot_change_the_daemon_but_scripts_can() {
    let d = TestDaemon::start().await;
    let t = HttpTarget::start(Mode::Pass).await;
    let (st, _) = d
        .register(json!({"name": "nas", "url": t.url("/"), "interval": 60}))
        .await;
    assert_eq!(st, 201);
    let before = target_of(&d, "nas").await;
    let evil = "http://evil.example";
    let hijack = json!({"name": "nas", "url": "http://203.0.113.9/", "email": "evil@example.com"})
        .to_string();

    // A cross-site HTML form: text/plain body, Origin and Sec-Fetch-Site set.
    let r = browser(&d, Method::POST, "/api/v1/services", "cross-site", evil)
        .header("content-type", "text/plain")
        .body(hijack.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "cross_site", "{v}");
    // Same from a sibling subdomain, and with only a foreign Origin (older
    // browsers send no Sec-Fetch-Site).
    for (site, origin) in [("same-site", "http://other.lan:8080"), ("", evil)] {
        let mut req = d
            .http
            .post(d.at("/api/v1/services"))
            .header("origin", origin)
            .header("content-type", "application/json")
            .body(hijack.clone());
        if !site.is_empty() {
            req = req.header("sec-fetch-site", site);
        }
        assert_eq!(req.send().await.unwrap().status(), 403, "{site} {origin}");
    }
    // A body that is not JSON is refused even without browser headers
    // (a form can send text/plain without a preflight).
    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        let r = d
            .http
            .post(d.at("/api/v1/services"))
            .header("content-type", ct)
            .body(hijack.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 415, "{ct}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["field"], "Content-Type", "{v}");
    }
    // Pause, delete and the legacy GET routes an <img src> could hit.
    let attempts: &[(Method, &str)] = &[
        (Method::POST, "/api/v1/services/nas/pause"),
        (Method::DELETE, "/api/v1/services/nas"),
        (Method::GET, "/healthchecker/stop?appname=nas"),
        (Method::GET, "/healthchecker/stopmonitoring?appname=nas"),
        (Method::GET, "/healthchecker/pause?appname=nas"),
        (Method::POST, "/healthchecker/monitor"),
    ];
    for (m, path) in attempts {
        assert_eq!(
            status(
                browser(&d, m.clone(), path, "cross-site", evil).header("sec-fetch-dest", "image")
            )
            .await,
            403,
            "{m} {path}"
        );
    }
    // Nothing changed.
    let after = target_of(&d, "nas").await;
    assert_eq!(after["url"], before["url"]);
    assert_eq!(after["email"], before["email"]);
    assert_eq!(after["paused"], false, "{after}");

    // Reads from other sites are not changes: they answer.
    assert_eq!(
        status(browser(
            &d,
            Method::GET,
            "/api/v1/services",
            "cross-site",
            evil
        ))
        .await,
        200
    );
    // The daemon's own pages (same origin) may change it.
    assert_eq!(
        status(browser(
            &d,
            Method::POST,
            "/api/v1/services/nas/pause",
            "same-origin",
            &d.url,
        ))
        .await,
        200
    );
    // Scripts send neither header: the legacy GET and JSON POST work.
    assert_eq!(
        status(d.http.get(d.at("/healthchecker/resume?appname=nas"))).await,
        200
    );
    assert_eq!(target_of(&d, "nas").await["paused"], false);
    assert_eq!(
        status(
            d.http
                .post(d.at("/api/v1/services"))
                .header("content-type", "application/json; charset=utf-8")
                .body(json!({"name": "printer", "url": t.url("/")}).to_string())
        )
        .await,
        201
    );
    d.stop().await;
}

#[tokio::test]
async fn html_pages_forbid_framing_and_inline_scripts() {
    let d = TestDaemon::start().await;
    let r = d.http.get(d.at("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    let csp = h["content-security-policy"].to_str().unwrap();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(!csp.contains("script-src 'self' 'unsafe-inline'"), "{csp}");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    let html = r.text().await.unwrap();
    let doc = scraper::Html::parse_document(&html);
    let scripts: Vec<_> = doc
        .select(&scraper::Selector::parse("script").unwrap())
        .collect();
    assert!(!scripts.is_empty());
    for s in &scripts {
        let src = s.value().attr("src").expect("no inline script");
        assert!(s.inner_html().trim().is_empty());
        let js = d.http.get(d.at(src)).send().await.unwrap();
        assert_eq!(js.status(), 200);
        assert!(js.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript"));
        assert!(js.text().await.unwrap().contains("fetch("));
    }
    // JSON answers are never sniffed as HTML either.
    let r = d.http.get(d.at("/api/v1/services")).send().await.unwrap();
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert!(r.headers().get("content-security-policy").is_none());
    d.stop().await;
}

#[tokio::test]
async fn browser_basic_credentials_are_for_reading_only() {
    let d = TestDaemon::start_with(|c| {
        c.auth = healthchecker_server::config::AuthMode::Token;
        c.admin_token = Some(healthchecker_server::config::AdminToken(ADMIN.into()));
        c.private = true;
    })
    .await;
    let t = HttpTarget::start(Mode::Pass).await;
    let body = json!({"name": "a", "url": t.url("/"), "interval": 60});
    // The browser's cached --private login reads...
    assert_eq!(
        status(
            d.http
                .get(d.at("/api/v1/services"))
                .basic_auth("admin", Some(ADMIN))
        )
        .await,
        200
    );
    // ...but never changes, even same-origin.
    let r = d
        .http
        .post(d.at("/api/v1/services"))
        .basic_auth("admin", Some(ADMIN))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_error(r, 403, "reading only").await;
    let (st, v) = d.get("/api/v1/services").await;
    assert_eq!(st, 401, "{v}");
    assert_eq!(
        status(
            d.http
                .post(d.at("/api/v1/services"))
                .bearer_auth(ADMIN)
                .json(&body)
        )
        .await,
        201
    );
    d.stop().await;
}
