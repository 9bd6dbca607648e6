//! The dashboard's forms without a browser (SPEC section 17): add, edit,
//! pause, resume and delete through form posts, errors beside the field,
//! nothing half-saved, no double add, and the token-mode login.

use crate::html::{form_post, sel, text};
use healthchecker_testkit::{wait_for, HttpTarget, Mode, TestDaemon};
use scraper::Html;
use std::time::Duration;

const ADMIN: &str = "admin-secret-token-0123456789";

/// A form post from the daemon's own page, with the browser's cookie:
/// status, final URL and the page.
async fn post(
    c: &Browser,
    d: &TestDaemon,
    path: &str,
    form: &[(&str, &str)],
) -> (u16, String, Html) {
    let (st, url, body) = form_post(&c.http, d, path, form, c.cookie.as_deref()).await;
    (st, url, Html::parse_document(&body))
}

/// A client that keeps the session cookie, as a browser would.
struct Browser {
    http: reqwest::Client,
    cookie: Option<String>,
}

fn browser() -> Browser {
    Browser {
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        cookie: None,
    }
}

async fn count(d: &TestDaemon) -> usize {
    d.get("/api/v1/services").await.1["services"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0)
}

#[tokio::test]
async fn forms_add_edit_pause_resume_and_delete() {
    let d = TestDaemon::start().await;
    let t = HttpTarget::start(Mode::Pass).await;
    let c = browser();
    let url = t.url("/");
    let add = [
        ("name", "web app"),
        ("kind", "check"),
        ("url", url.as_str()),
        ("interval", "5"),
        ("timeout", "2"),
        ("healthy_threshold", "2"),
        ("expected_status", ""),
        ("email", ""),
    ];

    // Add: redirected to the new service's page with a notice.
    let (st, at, doc) = post(&c, &d, "/new", &add).await;
    assert_eq!(st, 200, "{}", text(&doc, ".problem, .error"));
    assert_eq!(at, "/services/web%20app?notice=added");
    assert_eq!(text(&doc, "h1"), "web app");
    assert!(text(&doc, "#notice").contains("added"));
    d.wait_state("web app", "healthy", Duration::from_secs(20))
        .await;

    // The same form again: no second service; the first is shown.
    let (st, at, doc) = post(&c, &d, "/new", &add).await;
    assert_eq!(
        (st, at.as_str()),
        (200, "/services/web%20app?notice=exists")
    );
    assert!(text(&doc, "#notice").contains("already exists"));
    assert_eq!(count(&d).await, 1);

    // Edit: the form is filled in with the current values.
    let r = c
        .http
        .get(d.at("/services/web%20app/edit"))
        .send()
        .await
        .unwrap();
    let doc = Html::parse_document(&r.text().await.unwrap());
    let value = |doc: &Html, k: &str| {
        doc.select(&sel(&format!("input[name={k}]")))
            .next()
            .and_then(|e| e.value().attr("value").map(str::to_string))
    };
    assert_eq!(value(&doc, "interval").as_deref(), Some("5"));
    assert_eq!(value(&doc, "url").as_deref(), Some(url.as_str()));
    // Every field has a label.
    for input in doc.select(&sel("form.edit input:not([type=hidden]), form.edit select")) {
        let id = input.value().attr("id").expect("an id");
        assert!(
            doc.select(&sel(&format!("label[for={id}]")))
                .next()
                .is_some(),
            "label for {id}"
        );
    }
    let (st, at, _) = post(
        &c,
        &d,
        "/services/web%20app/edit",
        &[
            ("name", "renamed?"),
            ("kind", "check"),
            ("url", url.as_str()),
            ("interval", "60"),
            ("timeout", "2"),
            ("healthy_threshold", "2"),
        ],
    )
    .await;
    assert_eq!((st, at.as_str()), (200, "/services/web%20app?notice=saved"));
    let (_, v) = d.get("/api/v1/services/web%20app").await;
    assert_eq!(v["interval"], 60, "{v}");
    assert_eq!(count(&d).await, 1, "an edit never renames or adds");

    // Pause and resume: the state is shown as text.
    let (st, at, doc) = post(&c, &d, "/services/web%20app/pause", &[]).await;
    assert_eq!(
        (st, at.as_str()),
        (200, "/services/web%20app?notice=paused")
    );
    assert!(text(&doc, "span.state.paused").contains("paused"));
    assert!(doc.select(&sel("button#resume")).next().is_some());
    assert_eq!(d.get("/api/v1/services/web%20app").await.1["paused"], true);
    let (_, at, doc) = post(&c, &d, "/services/web%20app/resume", &[]).await;
    assert_eq!(at, "/services/web%20app?notice=resumed");
    assert!(doc.select(&sel("span.state.paused")).next().is_none());
    assert_eq!(d.get("/api/v1/services/web%20app").await.1["paused"], false);

    // Delete asks first (a page, no script), then deletes.
    let r = c
        .http
        .get(d.at("/services/web%20app/delete"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc = Html::parse_document(&r.text().await.unwrap());
    assert!(doc
        .select(&sel("form[method=post] button#confirm-delete"))
        .next()
        .is_some());
    assert_eq!(count(&d).await, 1, "the confirm page deletes nothing");
    let (st, at, doc) = post(&c, &d, "/services/web%20app/delete", &[]).await;
    assert_eq!((st, at.as_str()), (200, "/?notice=deleted"));
    assert!(text(&doc, ".notice").contains("deleted"));
    assert_eq!(count(&d).await, 0);
    d.stop().await;
}

#[tokio::test]
async fn a_bad_form_comes_back_with_the_error_beside_its_field_and_input_kept() {
    let d = TestDaemon::start().await;
    let c = browser();
    let (st, at, doc) = post(
        &c,
        &d,
        "/new",
        &[
            ("name", "db"),
            ("kind", "check"),
            ("url", "tcp://127.0.0.1:5432"),
            ("interval", "1"),
            ("email", "ops@example.com"),
        ],
    )
    .await;
    assert_eq!((st, at.as_str()), (400, "/new"));
    let err = text(&doc, ".field.invalid[data-field=interval] .error");
    assert!(
        err.contains("invalid interval \"1\"") && err.contains("5 to"),
        "{err}"
    );
    assert_eq!(doc.select(&sel(".field.invalid")).count(), 1);
    let kept = |k: &str| {
        doc.select(&sel(&format!("input[name={k}]")))
            .next()
            .unwrap()
            .value()
            .attr("value")
            .unwrap()
            .to_string()
    };
    assert_eq!(kept("name"), "db");
    assert_eq!(kept("url"), "tcp://127.0.0.1:5432");
    assert_eq!(kept("interval"), "1");
    assert_eq!(kept("email"), "ops@example.com");
    assert_eq!(count(&d).await, 0, "nothing saved");

    // The API's field names and messages: a bad URL is the url field's.
    let (st, _, doc) = post(&c, &d, "/new", &[("name", "x"), ("url", "gopher://h")]).await;
    assert_eq!(st, 400);
    assert!(!text(&doc, ".field.invalid[data-field=url] .error").is_empty());
    // A bad edit changes nothing.
    d.register(serde_json::json!({"name": "db", "url": "tcp://127.0.0.1:5432", "interval": 30}))
        .await;
    let (st, _, doc) = post(
        &c,
        &d,
        "/services/db/edit",
        &[
            ("url", "tcp://127.0.0.1:5432"),
            ("interval", "30"),
            ("timeout", "999"),
        ],
    )
    .await;
    assert_eq!(st, 400);
    assert!(text(&doc, ".field.invalid[data-field=timeout] .error").contains("timeout"));
    assert_eq!(d.get("/api/v1/services/db").await.1["interval"], 30);
    // Unknown services: 404, nothing created.
    let (st, _, _) = post(
        &c,
        &d,
        "/services/nope/edit",
        &[("url", "tcp://127.0.0.1:1")],
    )
    .await;
    assert_eq!(st, 404);
    assert_eq!(count(&d).await, 1);
    d.stop().await;
}

#[tokio::test]
async fn in_token_mode_forms_need_the_dashboard_login() {
    let d = TestDaemon::start_with(|c| {
        c.auth = healthchecker_server::config::AuthMode::Token;
        c.admin_token = Some(healthchecker_server::config::AdminToken(ADMIN.into()));
    })
    .await;
    let mut c = browser();
    let form = [("name", "nas"), ("url", "tcp://127.0.0.1:445")];
    // Without the login: refused with the reason, the input kept.
    let (st, _, doc) = post(&c, &d, "/new", &form).await;
    assert_eq!(st, 401);
    assert!(
        text(&doc, "#problem").contains("admin login"),
        "{}",
        text(&doc, "#problem")
    );
    assert_eq!(count_token(&d).await, 0);
    // A wrong token does not log in.
    let (st, _, doc) = post(&c, &d, "/login", &[("token", "guess"), ("next", "/new")]).await;
    assert_eq!(st, 403);
    assert!(text(&doc, "#f-token-error").contains("wrong token"));
    // HTTP Basic (the --private login) still cannot change anything.
    let r = c
        .http
        .post(d.at("/services/nas/pause"))
        .basic_auth("admin", Some(ADMIN))
        .header("Origin", &d.url)
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 303);
    // The admin token logs in: an HttpOnly, SameSite=Strict cookie.
    let once = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = once
        .post(d.at("/login"))
        .header("Origin", &d.url)
        .form(&[("token", ADMIN), ("next", "/new")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/new");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    c.cookie = Some(set.split(';').next().unwrap().to_string());
    let (st, at, _) = post(&c, &d, "/new", &form).await;
    assert_eq!((st, at.as_str()), (200, "/services/nas?notice=added"));
    assert_eq!(count_token(&d).await, 1);
    // The cookie is not a credential for the JSON API.
    let r = c
        .http
        .delete(d.at("/api/v1/services/nas"))
        .header("Cookie", c.cookie.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Logging out ends it.
    let (_, at, _) = post(&c, &d, "/logout", &[]).await;
    assert_eq!(at, "/login?notice=logout");
    let (st, _, _) = post(&c, &d, "/services/nas/pause", &[]).await;
    assert_eq!(st, 401);
    d.stop().await;
}

async fn count_token(d: &TestDaemon) -> usize {
    let r = d
        .http
        .get(d.at("/api/v1/services"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    v["services"].as_array().map(Vec::len).unwrap_or(0)
}

#[tokio::test]
async fn a_service_page_shows_the_last_checks_chart_and_uptime() {
    let d = TestDaemon::start().await;
    let t = HttpTarget::start(Mode::Pass).await;
    d.register(serde_json::json!({"name": "web", "url": t.url("/"), "interval": 5, "timeout": 2}))
        .await;
    wait_for("three checks", Duration::from_secs(30), || async {
        let r = d.http.get(d.at("/services/web")).send().await.ok()?;
        let doc = Html::parse_document(&r.text().await.ok()?);
        (doc.select(&sel("#checkbar span")).count() >= 2).then_some(())
    })
    .await;
    t.set(Mode::Fail("db down".into()));
    let doc = wait_for("a failed check", Duration::from_secs(30), || async {
        let r = d.http.get(d.at("/services/web")).send().await.ok()?;
        let doc = Html::parse_document(&r.text().await.ok()?);
        (doc.select(&sel("#checkbar span.r-fail")).count() >= 1).then_some(doc)
    })
    .await;
    let fail = doc.select(&sel("#checkbar span.r-fail")).next().unwrap();
    assert!(
        fail.value().attr("title").unwrap().contains("db down"),
        "reason on hover"
    );
    assert!(doc.select(&sel("#checkbar span.r-pass")).next().is_some());
    // The chart: axes with units, a <title> per point.
    let chart = doc.select(&sel("svg.chart")).next().expect("chart");
    let labels: String = chart
        .select(&sel("text"))
        .map(|e| e.text().collect::<String>())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(labels.contains(" ms") && labels.contains("UTC"), "{labels}");
    assert!(chart.select(&sel("circle.pt title")).count() >= 3);
    assert!(chart
        .select(&sel("circle.pt.fail title"))
        .next()
        .unwrap()
        .text()
        .collect::<String>()
        .contains("fail"));
    // Uptime over four windows; times as <time datetime>.
    let up = text(&doc, "#uptimes");
    for w in ["24 h", "7 d", "30 d", "90 d"] {
        assert!(up.contains(w), "{up}");
    }
    assert!(doc.select(&sel("#checks time[datetime]")).count() >= 3);
    d.stop().await;
}

#[tokio::test]
async fn the_list_sorts_by_state_name_and_last_change() {
    let d = TestDaemon::start().await;
    let t = HttpTarget::start(Mode::Pass).await;
    for n in ["b-ok", "a-ok"] {
        d.register(serde_json::json!({"name": n, "url": t.url("/"), "interval": 5, "healthy_threshold": 2})).await;
    }
    d.register(serde_json::json!({"name": "c-down", "url": format!("tcp://127.0.0.1:{}", healthchecker_testkit::closed_port()), "interval": 5, "unhealthy_threshold": 2})).await;
    d.wait_state("c-down", "unhealthy", Duration::from_secs(20))
        .await;
    d.wait_state("a-ok", "healthy", Duration::from_secs(20))
        .await;
    d.wait_state("b-ok", "healthy", Duration::from_secs(20))
        .await;
    let names = |doc: &Html| {
        doc.select(&sel("#services tr.service a.name"))
            .map(|e| e.text().collect::<String>())
            .collect::<Vec<_>>()
    };
    let dd = &d;
    let get = |p: &'static str| async move { Html::parse_document(&dd.text(p).await) };
    assert_eq!(names(&get("/").await), ["a-ok", "b-ok", "c-down"]);
    assert_eq!(names(&get("/?sort=state").await)[0], "c-down");
    let doc = get("/?sort=change").await;
    assert_eq!(names(&doc).len(), 3);
    assert!(doc.select(&sel("th a.sort-state")).next().is_some());
    let st = d
        .http
        .get(d.at("/?sort=bogus"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st, 400);
    d.stop().await;
}
