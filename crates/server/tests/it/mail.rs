//! Mail over SMTP to a real SMTP server process (aiosmtpd).

use healthchecker_testkit::{wait_for, HttpTarget, Mode, SmtpMode, SmtpSink, TestDaemon};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

async fn register(d: &TestDaemon, t: &HttpTarget) {
    let (st, body) = d
        .register(json!({
            "name": "web one", "url": t.url("/health"),
            "email": ["ops@example.com", "dev@example.com"],
            "interval": 5, "timeout": 2, "healthy_threshold": 2, "unhealthy_threshold": 2
        }))
        .await;
    assert_eq!(st, 201, "{body}");
}

#[tokio::test]
async fn a_mail_per_transition_with_subject_recipients_reason_and_message_id() {
    let sink = SmtpSink::start(SmtpMode::Accept);
    let url = format!("smtp://monitor%40example.com@127.0.0.1:{}", sink.port);
    let d = TestDaemon::start_with(|c| {
        c.smtp = Some(healthchecker_server::config::SmtpConfig {
            url: url.parse().unwrap(),
            from: "healthchecker <hc@example.com>".into(),
            password: Some("app-password".into()),
        });
        c.notify_min_gap = Duration::ZERO;
        c.public_url = "http://dash.example:8484".into();
    })
    .await;
    let t = HttpTarget::start(Mode::Pass).await;
    register(&d, &t).await;
    d.wait_state("web one", "healthy", WAIT).await;
    assert!(sink.mails().is_empty(), "unknown -> healthy sends no mail");
    t.set(Mode::Fail("db down".into()));
    d.wait_state("web one", "unhealthy", WAIT).await;
    t.set(Mode::Pass);
    d.wait_state("web one", "healthy", WAIT).await;
    let mails = sink.wait_mails(3, WAIT).await;
    let subjects: Vec<&str> = mails.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "[healthchecker] web one is DEGRADED",
            "[healthchecker] web one is UNHEALTHY",
            "[healthchecker] web one is HEALTHY"
        ]
    );
    for m in &mails {
        assert_eq!(m.envelope_to, ["ops@example.com", "dev@example.com"]);
        assert!(m.text.contains(&t.url("/health")), "{}", m.text);
        assert!(
            m.text
                .contains("http://dash.example:8484/services/web%20one"),
            "{}",
            m.text
        );
        assert!(m.raw.contains("text/html"), "has an HTML part");
        assert_eq!(m.auth_login.as_deref(), Some("monitor@example.com"));
    }
    assert!(
        mails[1].text.contains("Reason:    HTTP 503: db down"),
        "{}",
        mails[1].text
    );
    assert!(mails[1].text.contains("(was degraded)"));
    assert!(mails[2].text.contains("Was unhealthy for"));
    // The outbox shows them sent, with the Message-IDs the server received
    // (the sender marks a mail sent just after the server accepted it).
    let sent = wait_for("3 mails marked sent", Duration::from_secs(10), || async {
        let (_, n) = d.get("/api/v1/notifications?status=sent").await;
        let sent = n["notifications"].as_array().cloned().unwrap_or_default();
        (sent.len() >= 3).then_some(sent)
    })
    .await;
    assert_eq!(sent.len(), 3);
    let mut ids: Vec<String> = mails.iter().map(|m| m.message_id.clone()).collect();
    for s in sent {
        assert!(
            ids.contains(&s["message_id"].as_str().unwrap().to_string()),
            "{s}"
        );
    }
    ids.dedup();
    assert_eq!(ids.len(), 3);
    d.stop().await;
}

#[tokio::test]
async fn transitions_inside_the_gap_are_coalesced_into_one_mail() {
    let sink = SmtpSink::start(SmtpMode::Accept);
    let url = sink.url();
    let d = TestDaemon::start_with(|c| {
        c.smtp = Some(healthchecker_server::config::SmtpConfig {
            url: url.parse().unwrap(),
            from: "hc@example.com".into(),
            password: None,
        });
        c.notify_min_gap = Duration::from_secs(25);
    })
    .await;
    let t = HttpTarget::start(Mode::Pass).await;
    register(&d, &t).await;
    d.wait_state("web one", "healthy", WAIT).await;
    t.set(Mode::Fail("db down".into()));
    // healthy -> degraded mails at once; degraded -> unhealthy falls in the gap.
    let first = sink.wait_mails(1, WAIT).await;
    assert!(first[0].subject.ends_with("is DEGRADED"));
    d.wait_state("web one", "unhealthy", WAIT).await;
    t.set(Mode::Pass);
    d.wait_state("web one", "healthy", WAIT).await;
    let mails = sink.wait_mails(2, Duration::from_secs(40)).await;
    assert_eq!(mails.len(), 2);
    let m = &mails[1];
    assert!(
        m.subject.ends_with("is HEALTHY"),
        "the latest state: {}",
        m.subject
    );
    assert!(
        m.text.contains("degraded -> unhealthy") && m.text.contains("unhealthy -> healthy"),
        "{}",
        m.text
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.mails().len(), 2, "no third mail");
    d.stop().await;
}

#[tokio::test]
async fn a_refusing_server_delays_mail_and_records_its_reply() {
    let sink = SmtpSink::start(SmtpMode::TempFail);
    let url = sink.url();
    let d = TestDaemon::start_with(|c| {
        c.smtp = Some(healthchecker_server::config::SmtpConfig {
            url: url.parse().unwrap(),
            from: "hc@example.com".into(),
            password: None,
        });
        c.notify_min_gap = Duration::ZERO;
    })
    .await;
    let t = HttpTarget::start(Mode::Fail("down".into())).await;
    register(&d, &t).await;
    d.wait_state("web one", "unhealthy", WAIT).await;
    let n = healthchecker_testkit::wait_for("a failed attempt", WAIT, || async {
        let (_, n) = d.get("/api/v1/notifications?status=pending").await;
        let rows = n["notifications"].as_array().cloned().unwrap_or_default();
        rows.into_iter()
            .find(|r| r["attempts"].as_i64().unwrap_or(0) >= 1)
    })
    .await;
    assert!(n["last_error"].as_str().unwrap().contains("451"), "{n}");
    assert!(sink.mails().is_empty());
    d.stop().await;
}

#[tokio::test]
async fn a_hung_smtp_server_delays_mail_without_losing_or_duplicating_it() {
    let port = healthchecker_testkit::closed_port();
    let dir = tempfile::tempdir().unwrap();
    let hung = SmtpSink::start_on(port, &dir.path().join("hung"), SmtpMode::Hang);
    let d = TestDaemon::start_with(|c| {
        c.smtp = Some(healthchecker_server::config::SmtpConfig {
            url: format!("smtp://127.0.0.1:{port}").parse().unwrap(),
            from: "hc@example.com".into(),
            password: None,
        });
        c.notify_min_gap = Duration::ZERO;
    })
    .await;
    let t = HttpTarget::start(Mode::Fail("down".into())).await;
    register(&d, &t).await;
    // The server accepts the envelope and never answers DATA: the attempt
    // times out and is recorded as a failure to retry.
    let n =
        healthchecker_testkit::wait_for("a timed-out attempt", Duration::from_secs(90), || async {
            let (_, n) = d.get("/api/v1/notifications?status=pending").await;
            n["notifications"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .find(|r| r["attempts"].as_i64().unwrap_or(0) >= 1)
        })
        .await;
    assert!(n["last_error"].is_string(), "{n}");
    hung.stop();
    let sink = SmtpSink::start_on(port, &dir.path().join("ok"), SmtpMode::Accept);
    let mails = sink.wait_mails(1, Duration::from_secs(60)).await;
    assert!(mails[0].subject.ends_with("web one is UNHEALTHY"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sink.mails().len(), 1, "delivered once");
    let hung_dir = std::fs::read_dir(dir.path().join("hung"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(hung_dir, 0, "the hung server never accepted it");
    let (_, n) = d.get("/api/v1/notifications?status=sent").await;
    assert_eq!(n["notifications"].as_array().unwrap().len(), 1);
    d.stop().await;
}
