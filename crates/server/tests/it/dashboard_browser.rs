//! The dashboard's forms in a real headless Chromium (SPEC section 17):
//! add a service and see it checked, edit its interval, pause and resume
//! it, silence it, a form error beside its field, a cross-site form post refused, times
//! shown in the viewer's zone, a 360 px wide layout. With
//! `HC_SCREENSHOTS=1` it also writes the screenshots of docs/dashboard/.

use crate::browser::{chromium_session, Driver};
use fantoccini::{Client, Locator};
use healthchecker_testkit::{closed_port, wait_for, HttpTarget, Mode, TestDaemon};
use serde_json::json;
use std::time::Duration;

async fn chromium(extra: &[&str]) -> (Driver, Client) {
    let mut args = vec!["--window-size=1400,1000", "--hide-scrollbars"];
    args.extend_from_slice(extra);
    chromium_session(&args).await
}

async fn text(c: &Client, css: &str) -> Option<String> {
    c.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

async fn wait_text(c: &Client, css: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
    wait_for(what, Duration::from_secs(30), || {
        let c = c.clone();
        let pred = &pred;
        async move { text(&c, css).await.filter(|t| pred(t)) }
    })
    .await
}

async fn fill(c: &Client, name: &str, value: &str) {
    let e = c
        .find(Locator::Css(&format!("form.edit [name=\"{name}\"]")))
        .await
        .unwrap();
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

async fn submit(c: &Client) {
    c.find(Locator::Css("form.edit button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// A page of another origin (another port) whose script posts a form to
/// the daemon as soon as it loads: the attack the cross-site guard stops.
async fn hostile_page(target: String) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", l.local_addr().unwrap());
    let body = format!(
        "<!doctype html><form id=f method=post action=\"{target}\"><input name=x value=1></form>\
         <script>document.getElementById('f').submit()</script>"
    );
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = l.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body.as_bytes()).await;
            });
        }
    });
    url
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let dir = if std::env::var_os("HC_SCREENSHOTS").is_some() {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/dashboard")
    } else {
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).to_path_buf()
    };
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), &png).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_manages_services_from_the_browser() {
    let (_driver, c) = chromium(&[]).await;
    let d = TestDaemon::start_with(|c| c.status_page = true).await;
    let t = HttpTarget::start(Mode::Pass).await;
    let slow = HttpTarget::start(Mode::Pass).await;
    d.register(json!({"name": "router", "url": format!("tcp://127.0.0.1:{}", closed_port()), "interval": 5, "timeout": 2})).await;
    d.register(json!({"name": "nas", "url": slow.url("/"), "interval": 5, "timeout": 2, "healthy_threshold": 2}))
        .await;

    // A form error is shown beside its field, the input kept.
    c.goto(&d.at("/new")).await.unwrap();
    fill(&c, "name", "web").await;
    fill(&c, "url", &t.url("/")).await;
    fill(&c, "interval", "1").await;
    submit(&c).await;
    let err = wait_text(
        &c,
        ".field.invalid[data-field=interval] .error",
        "the interval error",
        |t| !t.is_empty(),
    )
    .await;
    assert!(err.contains("invalid interval"), "{err}");
    let kept = c
        .find(Locator::Css("form.edit [name=url]"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(kept.as_deref(), Some(t.url("/").as_str()));
    shot(&c, "form-error-1400").await;

    // Corrected, it is added and checked.
    fill(&c, "interval", "5").await;
    fill(&c, "timeout", "2").await;
    fill(&c, "healthy_threshold", "2").await;
    submit(&c).await;
    wait_text(&c, "h1", "the service page", |t| t == "web").await;
    assert!(text(&c, "#notice").await.unwrap().contains("added"));
    wait_for("a check in the bar", Duration::from_secs(30), || {
        let c = c.clone();
        async move {
            (c.find_all(Locator::Css("#checkbar span.r-pass"))
                .await
                .ok()?
                .len()
                >= 2)
                .then_some(())
        }
    })
    .await;

    // Times are shown in the viewer's zone with a relative time.
    let t0 = wait_text(
        &c,
        "#checks tbody tr time[data-local]",
        "a localized time",
        |t| !t.is_empty(),
    )
    .await;
    assert!(t0.contains("ago") || t0.contains("just now"), "{t0}");

    // Edit its interval.
    click(&c, "a#edit").await;
    wait_text(&c, "h1", "the edit page", |t| t == "Edit web").await;
    fill(&c, "interval", "10").await;
    submit(&c).await;
    wait_text(&c, "#notice", "saved", |t| t.contains("Saved")).await;
    assert!(text(&c, "table.params")
        .await
        .unwrap()
        .contains("10 s / 2 s"));
    assert_eq!(d.get("/api/v1/services/web").await.1["interval"], 10);

    // Pause and resume.
    click(&c, "button#pause").await;
    wait_text(&c, "span.state.paused", "paused shown", |t| t == "paused").await;
    assert_eq!(d.get("/api/v1/services/web").await.1["paused"], true);
    click(&c, "button#resume").await;
    wait_text(&c, "#notice", "resumed", |t| t.contains("Resumed")).await;
    assert_eq!(d.get("/api/v1/services/web").await.1["paused"], false);

    // Silence it for two hours from its page: marked with the end.
    let f = c.find(Locator::Css("#f-for")).await.unwrap();
    f.clear().await.unwrap();
    f.send_keys("2h").await.unwrap();
    c.find(Locator::Css("#f-comment"))
        .await
        .unwrap()
        .send_keys("upgrade")
        .await
        .unwrap();
    click(&c, "#silence-submit").await;
    wait_text(&c, "#notice", "silenced", |t| t.starts_with("Silenced")).await;
    wait_text(&c, "[data-silenced]", "silenced mark", |t| {
        t.starts_with("silenced until ")
    })
    .await;
    let (_, v) = d.get("/api/v1/silences").await;
    assert_eq!(v["silences"][0]["services"], json!(["web"]), "{v}");
    assert_eq!(v["silences"][0]["comment"], "upgrade");

    // Screenshots of the list and a service page, wide and phone-sized.
    wait_for("a few checks", Duration::from_secs(30), || {
        let c = c.clone();
        async move { (c.find_all(Locator::Css("#checkbar span")).await.ok()?.len() >= 4).then_some(()) }
    })
    .await;
    c.goto(&d.url).await.unwrap();
    wait_text(
        &c,
        "tr.service[data-name=router] span.state",
        "router down",
        |t| t == "unhealthy",
    )
    .await;
    for name in ["nas", "web"] {
        wait_text(
            &c,
            &format!("tr.service[data-name={name}] span.state"),
            "healthy",
            |t| t == "healthy",
        )
        .await;
    }
    shot(&c, "list-1400").await;
    c.goto(&d.at("/services/web")).await.unwrap();
    shot(&c, "service-1400").await;
    c.set_window_size(360, 780).await.unwrap();
    for page in ["/", "/services/web", "/new", "/status", "/cluster"] {
        c.goto(&d.at(page)).await.unwrap();
        let fits = c
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            fits,
            json!(true),
            "{page} fits 360 px without sideways scrolling"
        );
    }
    c.goto(&d.url).await.unwrap();
    shot(&c, "list-360").await;
    c.goto(&d.at("/services/web")).await.unwrap();
    shot(&c, "service-360").await;
    c.set_window_size(1400, 1000).await.unwrap();
    c.goto(&d.at("/status")).await.unwrap();
    shot(&c, "status-1400").await;

    // A page of another origin posting a form to the daemon is refused
    // with 403, and nothing changes.
    let evil = hostile_page(d.at("/services/web/delete")).await;
    c.goto(&evil).await.unwrap();
    let refused = wait_text(&c, "body", "the refusal", |t| t.contains("cross_site")).await;
    assert!(refused.contains("another site"), "{refused}");
    assert_eq!(d.get("/api/v1/services/web").await.0, 200, "not deleted");
    c.close().await.unwrap();
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dark_mode_follows_the_system() {
    let (_driver, c) = chromium(&["--force-dark-mode"]).await;
    let d = TestDaemon::start().await;
    let t = HttpTarget::start(Mode::Pass).await;
    d.register(json!({"name": "web", "url": t.url("/"), "interval": 5, "timeout": 2, "healthy_threshold": 2}))
        .await;
    d.wait_state("web", "healthy", Duration::from_secs(20))
        .await;
    c.goto(&d.at("/services/web")).await.unwrap();
    let bg = c
        .execute(
            "return getComputedStyle(document.body).backgroundColor;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(bg, json!("rgb(13, 17, 23)"), "the dark palette");
    shot(&c, "service-dark-1400").await;
    c.close().await.unwrap();
    d.stop().await;
}
