//! A service's page lists its notifications, mail and channel alike, with
//! their status and reason: sent, held (by a silence) and digested.

use crate::html::sel;
use healthchecker_testkit::{enc, wait_for, Answer, HttpTarget, Mode, Receiver, TestDaemon};
use scraper::Html;
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// The (via, status, reason) of each row of the page's notifications table.
async fn rows(d: &TestDaemon, name: &str) -> Vec<(String, String, String)> {
    let r = d
        .http
        .get(d.at(&format!("/services/{}", enc(name))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let doc = Html::parse_document(&r.text().await.unwrap());
    doc.select(&sel("table#notifications tbody tr"))
        .map(|tr| {
            let cells: Vec<String> = tr
                .select(&sel("td"))
                .map(|td| td.text().collect::<String>().trim().to_string())
                .collect();
            (cells[2].clone(), cells[3].clone(), cells[5].clone())
        })
        .collect()
}

#[tokio::test]
async fn the_service_page_shows_each_notification_with_its_reason() {
    let rx = Receiver::start(Answer::Ok).await;
    let down = HttpTarget::start(Mode::Fail("disk full".into())).await;
    // A threshold of 1: the second service failing within the window is digested.
    let d = TestDaemon::start_with(|c| {
        c.notify_min_gap = Duration::ZERO;
        c.digest_threshold = 1;
        c.digest_window = Duration::from_secs(20);
    })
    .await;
    d.add_channel(json!({"name": "hook", "kind": "webhook", "url": rx.url("/in"), "secret": "k", "default": true})).await;
    let r = d
        .http
        .post(d.at("/api/v1/silences"))
        .json(
            &json!({"services": ["nas"], "ends_at": "2099-01-01T00:00:00Z", "comment": "upgrade"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    for name in ["nas", "web", "db"] {
        let (s, v) = d
            .register(json!({"name": name, "url": down.url(&format!("/{name}")),
                "email": ["ops@example.com"], "interval": 5, "timeout": 2,
                "healthy_threshold": 2, "unhealthy_threshold": 2}))
            .await;
        assert_eq!(s, 201, "{v}");
    }
    // Every channel row of web and db decided, one of them digested.
    let deliveries: Vec<Value> = wait_for("decided deliveries", WAIT, || async {
        let (_, v) = d.get("/api/v1/notifications?limit=1000").await;
        let rows: Vec<Value> = v["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["service"] != "nas")
            .cloned()
            .collect();
        (rows.len() >= 2
            && rows.iter().all(|r| r["status"] != "pending")
            && rows.iter().any(|r| r["status"] == "digested"))
        .then_some(rows)
    })
    .await;
    let digested = deliveries
        .iter()
        .find(|r| r["status"] == "digested")
        .unwrap();
    let name = digested["service"].as_str().unwrap();
    let page = rows(&d, name).await;
    let row = page
        .iter()
        .find(|(via, status, _)| via == "channel hook" && status == "digested")
        .unwrap_or_else(|| panic!("{page:?}"));
    assert!(row.2.contains("listed in digest hc-digest-"), "{row:?}");
    // Mail is not configured: its rows wait, saying why.
    assert!(
        page.iter()
            .any(|(via, status, reason)| via == "mail to ops@example.com"
                && status == "pending"
                && reason.contains("smtp not configured")),
        "{page:?}"
    );
    let sent = deliveries.iter().find(|r| r["status"] == "sent").unwrap();
    let page = rows(&d, sent["service"].as_str().unwrap()).await;
    assert!(
        page.iter()
            .any(|(via, status, _)| via == "channel hook" && status == "sent"),
        "{page:?}"
    );
    // The silenced service's notifications (mail and channel) are held,
    // with the reason.
    d.wait_state("nas", "unhealthy", WAIT).await;
    let page = wait_for("held rows on the page", WAIT, || async {
        let p = rows(&d, "nas").await;
        (p.iter().filter(|(_, s, _)| s == "held").count() >= 2).then_some(p)
    })
    .await;
    assert!(
        page.iter()
            .filter(|(_, s, _)| s == "held")
            .all(|(_, _, reason)| reason.contains("held by a silence")),
        "{page:?}"
    );
    d.stop().await;
}
