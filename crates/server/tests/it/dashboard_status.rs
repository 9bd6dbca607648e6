//! The public status page (SPEC section 17): off by default; with
//! `--status-page` it shows names, states and 90-day uptime bars only, no
//! target, address, reason or recipient, and it stays open with
//! `--private` while everything else is closed.

use crate::html::sel;
use healthchecker_testkit::{closed_port, HttpTarget, Mode, TestDaemon};
use scraper::Html;
use serde_json::json;
use std::time::Duration;

const ADMIN: &str = "admin-secret-token-0123456789";

#[tokio::test]
async fn the_status_page_is_off_by_default() {
    let d = TestDaemon::start().await;
    let r = d.http.get(d.at("/status")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    d.stop().await;
}

#[tokio::test]
async fn the_status_page_shows_states_and_uptime_but_no_target_even_when_private() {
    let d = TestDaemon::start_with(|c| {
        c.status_page = true;
        c.auth = healthchecker_server::config::AuthMode::Token;
        c.admin_token = Some(healthchecker_server::config::AdminToken(ADMIN.into()));
        c.private = true;
    })
    .await;
    let t = HttpTarget::start(Mode::Pass).await;
    let down = closed_port();
    for (name, url) in [
        ("web", t.url("/")),
        ("router", format!("tcp://127.0.0.1:{down}")),
    ] {
        let r = d
            .http
            .post(d.at("/api/v1/services"))
            .bearer_auth(ADMIN)
            .json(&json!({"name": name, "url": url, "interval": 5, "timeout": 2, "healthy_threshold": 2, "email": "ops@example.com"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    healthchecker_testkit::wait_for("router down", Duration::from_secs(20), || async {
        let r = d.http.get(d.at("/status")).send().await.ok()?;
        let body = r.text().await.ok()?;
        body.contains("data-state=\"unhealthy\"").then_some(())
    })
    .await;
    // Open without credentials although the daemon is private.
    let r = d.http.get(d.at("/status")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    let body = r.text().await.unwrap();
    let doc = Html::parse_document(&body);
    let names: Vec<String> = doc
        .select(&sel("li.status-row .name"))
        .map(|e| e.text().collect())
        .collect();
    assert_eq!(names, ["router", "web"]);
    let router = doc
        .select(&sel("li.status-row[data-name=router]"))
        .next()
        .unwrap();
    assert_eq!(
        router
            .select(&sel("span.state"))
            .next()
            .unwrap()
            .text()
            .collect::<String>(),
        "unhealthy"
    );
    assert_eq!(router.select(&sel(".statusbar span")).count(), 90);
    assert!(
        router
            .select(&sel(".statusbar span.d-bad"))
            .next()
            .is_some(),
        "today is bad"
    );
    assert!(doc
        .select(&sel("#overall"))
        .next()
        .unwrap()
        .text()
        .collect::<String>()
        .contains("down"));
    // No target, address, port, reason, recipient or private link.
    for secret in [
        "127.0.0.1",
        &down.to_string(),
        &t.url("/"),
        "tcp://",
        "ops@example.com",
        "refused",
        "/services/",
        ADMIN,
    ] {
        assert!(!body.contains(secret), "the status page shows {secret:?}");
    }
    assert_eq!(doc.select(&sel("form")).count(), 0, "read-only");
    // The stylesheet is open too; the dashboard and the API stay closed.
    assert_eq!(
        d.http
            .get(d.at("/assets/dashboard.css"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(d.http.get(d.at("/")).send().await.unwrap().status(), 401);
    assert_eq!(
        d.http
            .get(d.at("/api/v1/services"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // Read-only: a POST is no route.
    let r = d.http.post(d.at("/status")).send().await.unwrap();
    assert!(r.status().is_client_error());
    d.stop().await;
}

#[tokio::test]
async fn with_status_page_tags_only_services_carrying_one_are_shown_and_counted() {
    let d = TestDaemon::start_with(|c| {
        c.status_page = true;
        c.status_page_tags = vec!["public".into(), "media".into()];
    })
    .await;
    let down = closed_port();
    for (name, tags) in [
        ("web", json!(["public"])),
        ("plex", json!(["media", "nas"])),
        ("router", json!(["lan"])),
        ("backup", json!([])),
    ] {
        let (s, v) = d
            .register(json!({"name": name, "url": format!("tcp://127.0.0.1:{down}"), "interval": 5, "timeout": 2, "tags": tags}))
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let r = d.http.get(d.at("/status")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let doc = Html::parse_document(&r.text().await.unwrap());
    let names: Vec<String> = doc
        .select(&sel("li.status-row"))
        .filter_map(|e| e.value().attr("data-name").map(str::to_string))
        .collect();
    assert_eq!(names, ["plex", "web"]);
    // The line on the whole counts the shown services only.
    healthchecker_testkit::wait_for("both down", Duration::from_secs(30), || async {
        let r = d.http.get(d.at("/status")).send().await.ok()?;
        let doc = Html::parse_document(&r.text().await.ok()?);
        let line: String = doc.select(&sel("#overall")).next()?.text().collect();
        (line == "2 service(s) down.").then_some(())
    })
    .await;
    d.stop().await;
}
