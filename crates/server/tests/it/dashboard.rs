//! The dashboard: HTML checked with CSS selectors, and a real headless
//! Chromium (chromedriver + fantoccini) watching a state change live.

use crate::browser::chromium_session;
use crate::html::sel;
use fantoccini::Locator;
use healthchecker_testkit::{closed_port, enc, wait_for, HttpTarget, Mode, TestDaemon};
use scraper::Html;
use serde_json::json;
use std::time::Duration;

const EVIL: &str = "<script>alert('x')</script>";

async fn html(d: &TestDaemon, path: &str) -> (u16, Html) {
    let r = d.http.get(d.at(path)).send().await.unwrap();
    let st = r.status().as_u16();
    (st, Html::parse_document(&r.text().await.unwrap()))
}

fn texts(doc: &Html, s: &str) -> Vec<String> {
    doc.select(&sel(s))
        .map(|e| e.text().collect::<String>().trim().to_string())
        .collect()
}

#[tokio::test]
async fn pages_show_state_target_history_and_escape_names() {
    let d = TestDaemon::start().await;
    let ok = HttpTarget::start(Mode::Pass).await;
    for (name, url) in [
        ("web", ok.url("/")),
        (EVIL, ok.url("/")),
        ("router", format!("tcp://127.0.0.1:{}", closed_port())),
    ] {
        let (st, _) = d.register(json!({"name": name, "url": url, "interval": 5, "timeout": 2, "healthy_threshold": 2})).await;
        assert_eq!(st, 201);
    }
    // Each service has its own phase in the interval: "web" healthy does
    // not make the other one healthy at the same moment.
    for name in ["web", EVIL] {
        d.wait_state(name, "healthy", Duration::from_secs(20)).await;
    }
    d.wait_state("router", "unhealthy", Duration::from_secs(20))
        .await;

    let (st, doc) = html(&d, "/").await;
    assert_eq!(st, 200);
    let names = texts(&doc, "#services tr.service a.name");
    assert_eq!(names.len(), 3);
    assert!(names.contains(&EVIL.to_string()), "{names:?}");
    // The evil name is text, never an element: the only scripts are ours.
    assert_eq!(doc.select(&sel("script")).count(), 1);
    let row = doc
        .select(&sel("tr.service[data-name=\"router\"]"))
        .next()
        .expect("router row");
    let badge = row.select(&sel("span.state")).next().unwrap();
    assert_eq!(badge.text().collect::<String>(), "unhealthy");
    assert!(
        badge.value().attr("class").unwrap().contains("unhealthy"),
        "colour class"
    );
    assert!(row
        .text()
        .collect::<String>()
        .contains("connection refused"));
    assert!(row.text().collect::<String>().contains("tcp://127.0.0.1:"));
    let web = doc
        .select(&sel("tr.service[data-name=\"web\"]"))
        .next()
        .unwrap();
    assert!(
        web.select(&sel("svg.spark polyline")).next().is_some(),
        "sparkline"
    );
    assert!(web.text().collect::<String>().contains("100.00%"), "uptime");
    let healthy = texts(&doc, "[data-count=\"healthy\"]");
    assert!(healthy[0].ends_with('2'), "{healthy:?}");
    assert!(
        !texts(&doc, "table.events tbody tr").is_empty(),
        "latest events"
    );

    // Filters.
    let (_, doc) = html(&d, "/?state=unhealthy").await;
    assert_eq!(texts(&doc, "#services tr.service a.name"), ["router"]);
    let (_, doc) = html(&d, "/?q=WE").await;
    assert_eq!(texts(&doc, "#services tr.service a.name"), ["web"]);

    // The live fragment is the same table without the page around it.
    let frag = d.text("/?fragment=1").await;
    assert!(frag.contains("id=\"services\"") && !frag.contains("<html"));

    // A service page: chart, history, events; the evil one escaped there too.
    let (st, doc) = html(&d, "/services/router").await;
    assert_eq!(st, 200);
    assert_eq!(texts(&doc, "h1"), ["router"]);
    assert!(
        doc.select(&sel("figure svg.chart circle.pt.fail")).count() >= 2,
        "failures marked"
    );
    let rows = texts(&doc, "#checks tbody tr");
    assert!(
        rows.len() >= 2 && rows[0].contains("connection refused"),
        "{rows:?}"
    );
    let (st, doc) = html(&d, &format!("/services/{}", enc(EVIL))).await;
    assert_eq!(st, 200);
    assert_eq!(texts(&doc, "h1"), [EVIL]);
    assert_eq!(doc.select(&sel("script")).count(), 1);
    let (st, _) = html(&d, "/services/nope").await;
    assert_eq!(st, 404);
    // No token ever appears.
    let page = d.text("/services/web").await;
    assert!(!page.to_lowercase().contains("token"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_sees_a_state_change_without_reloading() {
    let (_driver, c) = chromium_session(&["--window-size=1300,900"]).await;

    let d = TestDaemon::start().await;
    let t = HttpTarget::start(Mode::Pass).await;
    d.register(json!({"name": "web", "url": t.url("/"), "interval": 5, "timeout": 2, "healthy_threshold": 2})).await;
    d.register(json!({"name": EVIL, "url": t.url("/"), "interval": 5, "timeout": 2}))
        .await;
    c.goto(&d.url).await.unwrap();
    c.execute("window.__loadMark = 'first load';", vec![])
        .await
        .unwrap();
    let badge = "tr.service[data-name=\"web\"] span.state";
    let state = |c: fantoccini::Client| async move {
        c.find(Locator::Css(badge)).await.ok()?.text().await.ok()
    };
    assert_eq!(state(c.clone()).await.as_deref(), Some("unknown"));
    wait_for(
        "the browser to show healthy",
        Duration::from_secs(60),
        || {
            let c = c.clone();
            async move { (state(c).await.as_deref() == Some("healthy")).then_some(()) }
        },
    )
    .await;
    t.set(Mode::Fail("db down".into()));
    wait_for(
        "the browser to show unhealthy",
        Duration::from_secs(60),
        || {
            let c = c.clone();
            async move { (state(c).await.as_deref() == Some("unhealthy")).then_some(()) }
        },
    )
    .await;
    let mark = c
        .execute("return window.__loadMark || null;", vec![])
        .await
        .unwrap();
    assert_eq!(mark, json!("first load"), "the page was not reloaded");
    // The hostile name is shown as text and ran nothing.
    let names = c.find_all(Locator::Css("a.name")).await.unwrap();
    let mut shown = Vec::new();
    for n in names {
        shown.push(n.text().await.unwrap());
    }
    assert!(shown.contains(&EVIL.to_string()), "{shown:?}");
    assert!(c.get_alert_text().await.is_err(), "no alert opened");
    // Open the service page.
    c.find(Locator::Css("tr.service[data-name=\"web\"] a.name"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for("the service page", Duration::from_secs(10), || {
        let c = c.clone();
        async move {
            c.find(Locator::Css("h1"))
                .await
                .ok()?
                .text()
                .await
                .ok()
                .filter(|t| t == "web")
        }
    })
    .await;
    assert_eq!(c.current_url().await.unwrap().path(), "/services/web");
    assert!(
        c.find(Locator::Css("figure svg.chart")).await.is_ok(),
        "response-time chart"
    );
    assert!(
        c.find_all(Locator::Css("#checks tbody tr"))
            .await
            .unwrap()
            .len()
            >= 2
    );
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-service-page.png");
    std::fs::write(&out, &png).unwrap();
    println!("screenshot: {}", out.display());
    c.close().await.unwrap();
    d.stop().await;
}
