//! Auth modes, target controls and limits against the real daemon.

use healthchecker_testkit::{
    assert_error, closed_unanswered, wait_for, HttpTarget, Mode, TestDaemon,
};
use serde_json::json;
use std::time::Duration;

const ADMIN: &str = "admin-token-0123456789abcdef";

async fn token_daemon(private: bool) -> TestDaemon {
    TestDaemon::start_with(|c| {
        c.auth = healthchecker_server::config::AuthMode::Token;
        c.admin_token = Some(healthchecker_server::config::AdminToken(ADMIN.into()));
        c.private = private;
    })
    .await
}

#[tokio::test]
async fn token_mode_guards_every_change() {
    let d = token_daemon(false).await;
    let t = HttpTarget::start(Mode::Pass).await;
    let body = json!({"name": "a", "url": t.url("/"), "interval": 5, "timeout": 2});
    let post = |tok: Option<&str>, body: serde_json::Value| {
        let mut r = d.http.post(d.at("/api/v1/services")).json(&body);
        if let Some(t) = tok {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let r = post(None, body.clone()).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        post(Some("wrong-token"), body.clone())
            .await
            .unwrap()
            .status(),
        403
    );
    let r = post(Some(ADMIN), body.clone()).await.unwrap();
    assert_eq!(r.status(), 201);
    let a_token = r.json::<serde_json::Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = post(
        Some(ADMIN),
        json!({"name": "b", "url": t.url("/"), "interval": 5, "timeout": 2}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);

    // A service's token works on that service only.
    let call = |m: reqwest::Method, path: &str, tok: Option<&str>| {
        let mut r = d.http.request(m, d.at(path));
        if let Some(t) = tok {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(
        call(
            reqwest::Method::POST,
            "/api/v1/services/a/pause",
            Some(&a_token)
        )
        .await
        .unwrap()
        .status(),
        200
    );
    assert_eq!(
        call(
            reqwest::Method::POST,
            "/api/v1/services/b/pause",
            Some(&a_token)
        )
        .await
        .unwrap()
        .status(),
        403
    );
    assert_eq!(
        call(reqwest::Method::POST, "/api/v1/services/b/pause", None)
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        call(
            reqwest::Method::DELETE,
            "/api/v1/services/b",
            Some(&a_token)
        )
        .await
        .unwrap()
        .status(),
        403
    );
    // Re-registering with its own token works; someone else's does not.
    assert_eq!(
        post(Some(&a_token), body.clone()).await.unwrap().status(),
        200
    );
    assert_eq!(
        post(Some(&a_token), json!({"name": "b", "url": t.url("/")}))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        call(reqwest::Method::DELETE, "/api/v1/services/b", Some(ADMIN))
            .await
            .unwrap()
            .status(),
        204
    );
    // Reads stay open; the legacy API is off with a reason.
    assert_eq!(
        call(reqwest::Method::GET, "/api/v1/services", None)
            .await
            .unwrap()
            .status(),
        200
    );
    let r = d
        .http
        .post(d.at("/healthchecker/monitor"))
        .form(&[("appname", "x"), ("url", "http://h")])
        .send()
        .await
        .unwrap();
    assert_error(r, 403, "--auth token").await;
    // Tokens are stored only as hashes: the raw token is not in the file
    // (SQLite) or in any row (PostgreSQL, where a `bytea` reads as hex).
    d.http.get(d.at("/health")).send().await.unwrap();
    let stored = d.stored_bytes().await;
    assert!(!stored.is_empty());
    let hex: String = a_token.bytes().map(|b| format!("{b:02x}")).collect();
    for raw in [a_token.as_bytes(), hex.as_bytes()] {
        assert!(
            !stored.windows(raw.len()).any(|w| w == raw),
            "raw token stored"
        );
    }
    d.stop().await;
}

#[tokio::test]
async fn private_mode_closes_reads_but_health() {
    let d = token_daemon(true).await;
    for path in ["/api/v1/services", "/metrics", "/", "/api/v1/events"] {
        let r = d.http.get(d.at(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = d
            .http
            .get(d.at(path))
            .bearer_auth("nope")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
        let r = d
            .http
            .get(d.at(path))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = d.http.get(d.at("/")).send().await.unwrap();
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic"),
        "browsers are asked for the token"
    );
    let r = d
        .http
        .get(d.at("/"))
        .basic_auth("admin", Some(ADMIN))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        d.http.get(d.at("/health")).send().await.unwrap().status(),
        200
    );
    d.stop().await;
}

#[tokio::test]
async fn denied_targets_are_refused_at_registration_and_after_dns() {
    let d = TestDaemon::start_with(|c| {
        c.targets.deny = vec![
            "127.0.0.1/32".parse().unwrap(),
            "::1/128".parse().unwrap(),
            "169.254.0.0/16".parse().unwrap(),
        ];
    })
    .await;
    let t = HttpTarget::start(Mode::Pass).await;
    let (st, v) = d
        .register(json!({"name": "meta", "url": "http://169.254.169.254/latest/"}))
        .await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"]["field"], "url");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--deny-targets"));
    let (st, _) = d.register(json!({"name": "lit", "url": t.url("/")})).await;
    assert_eq!(st, 400);
    // A name is accepted, and refused after resolution at every probe.
    let (st, _) = d
        .register(json!({"name": "byname", "url": format!("http://localhost:{}/", t.addr.port()), "interval": 5, "timeout": 2}))
        .await;
    assert_eq!(st, 201);
    let v = wait_for("a check", Duration::from_secs(15), || async {
        let (_, v) = d.get("/api/v1/services/byname").await;
        (!v["last_check"].is_null()).then_some(v)
    })
    .await;
    assert_eq!(v["last_check"]["result"], "fail");
    assert!(
        v["last_check"]["reason"]
            .as_str()
            .unwrap()
            .contains("denied by --deny-targets"),
        "{v}"
    );
    assert_eq!(t.hits(), 0, "the denied target was never contacted");
    d.stop().await;

    let d = TestDaemon::start_with(|c| c.targets.allow = vec!["10.0.0.0/8".parse().unwrap()]).await;
    let (st, v) = d
        .register(json!({"name": "x", "url": "http://127.0.0.3:80/"}))
        .await;
    assert_eq!(st, 400);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--allow-targets"));
    d.stop().await;
}

#[tokio::test]
async fn service_count_and_registration_rate_are_capped() {
    let d = TestDaemon::start_with(|c| {
        c.max_services = 2;
        c.register_rate_limit = 2;
    })
    .await;
    let mut statuses = Vec::new();
    for name in ["a", "b", "c"] {
        statuses.push(
            d.register(json!({"name": name, "url": "tcp://127.0.0.1:9"}))
                .await,
        );
    }
    assert_eq!(statuses[0].0, 201);
    assert_eq!(statuses[1].0, 201);
    assert_eq!(statuses[2].0, 507, "{:?}", statuses[2].1);
    assert_eq!(statuses[2].1["error"]["code"], "service_limit");
    // Updates of existing names are not new services.
    assert_eq!(
        d.register(json!({"name": "a", "url": "tcp://127.0.0.1:9"}))
            .await
            .0,
        200
    );
    // The burst is 5 s worth (10); hammering gets 429 with Retry-After.
    let mut limited = None;
    for _ in 0..20 {
        let r = d
            .http
            .post(d.at("/api/v1/services"))
            .json(&json!({"name": "a", "url": "tcp://127.0.0.1:9"}))
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("rate limited");
    assert!(
        r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    d.stop().await;
}

#[tokio::test]
async fn api_connections_and_slow_headers_are_bounded() {
    let d = TestDaemon::start_with(|c| c.max_connections = 2).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = d.daemon.as_ref().unwrap().addr;
    let mut a = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut b = tokio::net::TcpStream::connect(addr).await.unwrap();
    a.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap(); // never finishes its headers
    b.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Once the daemon has accepted both, a third connection is closed at
    // once, unanswered (one tried before that may still be served).
    wait_for(
        "a third connection to be refused",
        Duration::from_secs(5),
        || async {
            let c = tokio::net::TcpStream::connect(addr).await.unwrap();
            closed_unanswered(c).await.then_some(())
        },
    )
    .await;
    // The slow-loris connections are closed after the header timeout.
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(15), a.read_to_end(&mut rest)).await;
    assert!(
        r.is_ok(),
        "a connection that never finishes its headers is closed"
    );
    drop(b);
    // Slots are freed: soon a request is served again.
    wait_for(
        "a freed connection slot",
        Duration::from_secs(5),
        || async {
            let r = d.http.get(d.at("/health")).send().await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    d.stop().await;
}
