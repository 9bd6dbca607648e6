//! Silences and channels from the dashboard without a browser (SPEC
//! sections 13, 14 and 17): form posts that go through the API's own
//! operations, errors beside the field with the input kept (secrets not
//! sent back), confirm pages, and the "silenced until" mark.

use crate::html::{attr, form_post, sel, text};
use healthchecker_testkit::{closed_port, Answer, Receiver, TestDaemon};
use scraper::Html;
use serde_json::json;

const ADMIN: &str = "admin-secret-token-0123456789";

/// A form post from the daemon's own page: status, final URL, the page
/// parsed and as text.
async fn post(d: &TestDaemon, path: &str, form: &[(&str, &str)]) -> (u16, String, Html, String) {
    let (st, url, body) = form_post(&d.http, d, path, form, None).await;
    (st, url, Html::parse_document(&body), body)
}

async fn page(d: &TestDaemon, path: &str) -> (u16, Html) {
    let r = d.http.get(d.at(path)).send().await.unwrap();
    let st = r.status().as_u16();
    (st, Html::parse_document(&r.text().await.unwrap()))
}

/// Every visible input and select of the page's forms has a label.
fn every_field_labelled(doc: &Html) {
    for e in doc.select(&sel("form input:not([type=hidden]), form select")) {
        let id = e.value().attr("id").expect("a field without an id");
        assert!(
            doc.select(&sel(&format!("label[for=\"{id}\"]")))
                .next()
                .is_some(),
            "no label for {id}"
        );
    }
}

#[tokio::test]
async fn a_service_is_silenced_from_its_page_marked_and_the_silence_ended() {
    let d = TestDaemon::start().await;
    let port = closed_port();
    let (s, _) = d
        .register(json!({"name": "nas", "url": format!("tcp://127.0.0.1:{port}"), "interval": 5}))
        .await;
    assert_eq!(s, 201);
    let (st, doc) = page(&d, "/services/nas").await;
    assert_eq!(st, 200);
    assert_eq!(
        attr(&doc, "#silence form", "action").as_deref(),
        Some("/services/nas/silence")
    );
    every_field_labelled(&doc);
    assert!(text(&doc, "nav").contains("silences") && text(&doc, "nav").contains("channels"));

    // A bad duration comes back beside its field, the input kept, nothing saved.
    let (st, _, doc, _) = post(
        &d,
        "/services/nas/silence",
        &[("for", "2 weeks"), ("comment", "NAS upgrade")],
    )
    .await;
    assert_eq!(st, 400);
    assert!(text(&doc, "[data-field=for] .error").contains("invalid duration \"2 weeks\""));
    assert_eq!(
        attr(&doc, "#f-for", "aria-invalid").as_deref(),
        Some("true")
    );
    assert_eq!(attr(&doc, "#f-for", "value").as_deref(), Some("2 weeks"));
    assert_eq!(
        attr(&doc, "#f-comment", "value").as_deref(),
        Some("NAS upgrade")
    );
    let (_, v) = d.get("/api/v1/silences").await;
    assert_eq!(v["silences"].as_array().unwrap().len(), 0, "{v}");

    // Posted by another site's page: refused by the cross-site guard.
    let r = d
        .http
        .post(d.at("/services/nas/silence"))
        .header("Origin", "http://evil.example")
        .header("Sec-Fetch-Site", "cross-site")
        .form(&[("for", "2h")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let (_, v) = d.get("/api/v1/silences").await;
    assert_eq!(v["silences"].as_array().unwrap().len(), 0, "{v}");

    // A good one: redirected to the service, marked with its end.
    let (st, url, doc, _) = post(
        &d,
        "/services/nas/silence",
        &[("for", "2h"), ("comment", "NAS upgrade")],
    )
    .await;
    assert_eq!((st, url.as_str()), (200, "/services/nas?notice=silenced"));
    assert!(text(&doc, "#notice").starts_with("Silenced"));
    assert!(
        text(&doc, "[data-silenced]").starts_with("silenced until "),
        "{}",
        text(&doc, "#live")
    );
    let (_, v) = d.get("/api/v1/silences").await;
    let list = v["silences"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{v}");
    assert_eq!(list[0]["services"], json!(["nas"]));
    assert_eq!(list[0]["comment"], "NAS upgrade");
    assert_eq!(list[0]["active"], true);
    let id = list[0]["id"].as_i64().unwrap();
    // The list marks it too (as text, not colour alone).
    let (_, doc) = page(&d, "/").await;
    assert!(text(&doc, "tr[data-name=nas] [data-silenced]").starts_with("silenced until "));

    // /silences lists it; ending it asks first, and the question changes nothing.
    let (_, doc) = page(&d, "/silences").await;
    assert!(text(&doc, &format!("tr[data-id=\"{id}\"]")).contains("NAS upgrade"));
    let (st, doc) = page(&d, &format!("/silences/{id}/delete")).await;
    assert_eq!(st, 200);
    assert!(doc.select(&sel("#confirm-end")).next().is_some());
    assert_eq!(
        d.get("/api/v1/silences").await.1["silences"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (st, url, doc, _) = post(&d, &format!("/silences/{id}/delete"), &[]).await;
    assert_eq!((st, url.as_str()), (200, "/silences?notice=ended"));
    assert!(text(&doc, "#silences").contains("No silence"));
    assert_eq!(
        d.get("/api/v1/silences").await.1["silences"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let (_, doc) = page(&d, "/services/nas").await;
    assert!(doc.select(&sel("[data-silenced]")).next().is_none());
    d.stop().await;
}

#[tokio::test]
async fn a_webhook_channel_is_added_tested_and_deleted_from_the_dashboard() {
    let rx = Receiver::start(Answer::Ok).await;
    let d = TestDaemon::start().await;
    let (st, doc) = page(&d, "/channels").await;
    assert_eq!(st, 200);
    every_field_labelled(&doc);
    let (st, doc) = page(&d, "/channels/new?kind=webhook").await;
    assert_eq!(st, 200);
    every_field_labelled(&doc);
    assert_eq!(attr(&doc, "#f-secret", "type").as_deref(), Some("password"));

    // A bad URL: the API's message beside it, input kept, the secret not sent back.
    let secret = "whsec-do-not-echo-4711";
    let form = [
        ("kind", "webhook"),
        ("name", "ops hook"),
        ("url", "ftp://h/x"),
        ("secret", secret),
        ("default", "true"),
    ];
    let (st, _, doc, body) = post(&d, "/channels/new", &form).await;
    assert_eq!(st, 400);
    assert!(!text(&doc, "[data-field=url] .error").is_empty());
    assert_eq!(
        attr(&doc, "#f-url", "aria-invalid").as_deref(),
        Some("true")
    );
    assert_eq!(attr(&doc, "#f-url", "value").as_deref(), Some("ftp://h/x"));
    assert_eq!(attr(&doc, "#f-name", "value").as_deref(), Some("ops hook"));
    assert!(doc.select(&sel("#f-default[checked]")).next().is_some());
    assert!(!body.contains(secret), "the secret was sent back");
    assert_eq!(
        d.get("/api/v1/channels").await.1["channels"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // The API's own message for a missing secret, beside the secret.
    let (st, _, doc, _) = post(
        &d,
        "/channels/new",
        &[
            ("kind", "webhook"),
            ("name", "ops hook"),
            ("url", &rx.url("/hook")),
        ],
    )
    .await;
    assert_eq!(st, 400);
    assert!(text(&doc, "[data-field=secret] .error").contains("missing secret"));

    let url = rx.url("/hook");
    let form = [
        ("kind", "webhook"),
        ("name", "ops hook"),
        ("url", url.as_str()),
        ("secret", secret),
        ("default", "true"),
    ];
    let (st, to, doc, body) = post(&d, "/channels/new", &form).await;
    assert_eq!((st, to.as_str()), (200, "/channels?notice=saved"));
    let row = text(&doc, "tr[data-name=\"ops hook\"]");
    assert!(
        row.contains("webhook") && row.contains("default") && row.contains("set"),
        "{row}"
    );
    assert!(!body.contains(secret), "the list shows the secret");
    let (_, v) = d.get("/api/v1/channels/ops%20hook").await;
    assert_eq!(
        (v["kind"].as_str(), v["default"].as_bool()),
        (Some("webhook"), Some(true)),
        "{v}"
    );

    // Send a test: delivered, signed with the secret given in the form.
    let (st, to, _, _) = post(&d, "/channels/ops%20hook/test", &[]).await;
    assert_eq!((st, to.as_str()), (200, "/channels?notice=tested"));
    let got = rx.accepted();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["type"], "test");
    assert!(got[0].header("X-Healthchecker-Signature").is_some());

    // Delete: a confirm page that changes nothing, then the delete.
    let (st, doc) = page(&d, "/channels/ops%20hook/delete").await;
    assert_eq!(st, 200);
    assert!(doc.select(&sel("#confirm-delete")).next().is_some());
    assert_eq!(
        d.get("/api/v1/channels").await.1["channels"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (st, to, doc, _) = post(&d, "/channels/ops%20hook/delete", &[]).await;
    assert_eq!((st, to.as_str()), (200, "/channels?notice=deleted"));
    assert!(text(&doc, "#channels").contains("No channels"));
    assert_eq!(d.get("/api/v1/channels/ops%20hook").await.0, 404);
    d.stop().await;
}

#[tokio::test]
async fn in_token_mode_silence_and_channel_forms_need_the_login() {
    let d = TestDaemon::start_with(|c| {
        c.auth = healthchecker_server::config::AuthMode::Token;
        c.admin_token = Some(healthchecker_server::config::AdminToken(ADMIN.into()));
    })
    .await;
    let port = closed_port();
    let r = d
        .http
        .post(d.at("/api/v1/services"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "nas", "url": format!("tcp://127.0.0.1:{port}")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (st, _, doc, _) = post(&d, "/services/nas/silence", &[("for", "1h")]).await;
    assert_eq!(st, 401);
    assert!(text(&doc, "#problem").contains("admin login"));
    let form = [
        ("kind", "ntfy"),
        ("name", "phone"),
        ("url", "https://ntfy.example/t"),
    ];
    let (st, _, doc, _) = post(&d, "/channels/new", &form).await;
    assert_eq!(st, 401);
    assert!(text(&doc, "#problem").contains("admin login"));
    assert_eq!(attr(&doc, "#f-name", "value").as_deref(), Some("phone"));
    let (st, ..) = post(&d, "/silences/1/delete", &[]).await;
    assert_eq!(st, 401);
    let (_, v) = d.get("/api/v1/silences").await;
    assert_eq!(v["silences"].as_array().unwrap().len(), 0, "{v}");

    // With the login they pass.
    let r = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(d.at("/login"))
        .header("Origin", &d.url)
        .form(&[("token", ADMIN), ("next", "/")])
        .send()
        .await
        .unwrap();
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let r = d
        .http
        .post(d.at("/services/nas/silence"))
        .header("Origin", &d.url)
        .header("Cookie", &cookie)
        .form(&[("for", "1h")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.url().path(), "/services/nas");
    let r = d
        .http
        .get(d.at("/api/v1/silences"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["silences"].as_array().unwrap().len(), 1, "{v}");
    d.stop().await;
}
