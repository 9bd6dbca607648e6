//! SMTP down while a service fails, the daemon killed with SIGKILL, both
//! restarted: the mail arrives after, once per Message-ID.

use crate::daemon::Proc;
use healthchecker_testkit::{closed_port, wait_for, HttpTarget, Mode, SmtpMode, SmtpSink};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn no_mail_is_lost_to_an_smtp_outage_and_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hc.db");
    let maildir = dir.path().join("mail");
    let smtp_port = closed_port();
    let smtp = format!("smtp://127.0.0.1:{smtp_port}");
    let args = [
        "--smtp-url",
        smtp.as_str(),
        "--smtp-from",
        "hc@example.com",
        "--notify-min-gap",
        "0",
    ];
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let t = HttpTarget::start(Mode::Fail("db down".into())).await;

    // The SMTP server is down while the service fails.
    let p = Proc::start(&db, &args);
    let r = http
        .post(format!("{}/api/v1/services", p.url))
        .json(
            &json!({"name": "web", "url": t.url("/"), "email": "ops@example.com",
                      "interval": 5, "timeout": 2, "unhealthy_threshold": 2}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let url = p.url.clone();
    let pending = wait_for("a failed delivery attempt", Duration::from_secs(30), || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let v: Value = http
                .get(format!("{url}/api/v1/notifications?status=pending"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let rows = v["notifications"].as_array()?.clone();
            rows.iter()
                .any(|r| r["attempts"].as_i64() >= Some(1))
                .then_some(rows)
        }
    })
    .await;
    assert!(pending.iter().all(|r| r["to"] == "unhealthy"));
    assert!(
        pending[0]["last_error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("connect"),
        "{:?}",
        pending[0]
    );
    p.kill9();

    // Both come back.
    let sink = SmtpSink::start_on(smtp_port, &maildir, SmtpMode::Accept);
    t.set(Mode::Pass);
    let p = Proc::start(&db, &args);
    let mails = sink.wait_mails(1, Duration::from_secs(40)).await;
    assert!(
        mails[0].subject.ends_with("web is UNHEALTHY"),
        "{}",
        mails[0].subject
    );
    assert!(mails[0].text.contains("HTTP 503: db down"));
    let url = p.url.clone();
    wait_for(
        "the outbox to show it sent",
        Duration::from_secs(10),
        || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let v: Value = http
                    .get(format!("{url}/api/v1/notifications?status=pending"))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                v["notifications"].as_array()?.is_empty().then_some(())
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut ids: Vec<String> = sink.mails().iter().map(|m| m.message_id.clone()).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "each Message-ID arrives once");
    drop(p);
}
