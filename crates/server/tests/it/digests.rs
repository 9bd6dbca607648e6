//! Digests (SPEC section 14): thirty services failing within ten seconds
//! on one channel (or to one mail recipient) give at most `threshold`
//! messages on their own and then one digest listing the rest, every
//! notification accounted for in `GET /api/v1/notifications`; a quiet
//! channel meanwhile gets its messages on their own, without delay.

use healthchecker_testkit::{
    wait_for, Answer, HttpTarget, Mode, Receiver, SmtpMode, SmtpSink, TestDaemon,
};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

/// The default threshold (`--digest-threshold`).
const THRESHOLD: usize = 5;
/// The digest goes out 30 s after the first notification; checks take
/// up to 10 s to fail everything.
const WAIT: Duration = Duration::from_secs(90);

async fn register(d: &TestDaemon, body: Value) {
    let (s, v) = d.register(body).await;
    assert_eq!(s, 201, "{v}");
}

fn failing(name: &str, url: String) -> Value {
    json!({"name": name, "url": url, "interval": 5, "timeout": 2,
           "healthy_threshold": 2, "unhealthy_threshold": 2})
}

/// Every outbox row of `key` (`deliveries` or `notifications`), once none
/// is pending any more.
async fn settled(d: &TestDaemon, key: &str, expected: usize) -> Vec<Value> {
    wait_for("every notification decided and sent", WAIT, || async {
        let (_, v) = d.get("/api/v1/notifications?limit=1000").await;
        let rows = v[key].as_array().cloned().unwrap_or_default();
        (rows.len() >= expected && rows.iter().all(|r| r["status"] != "pending")).then_some(rows)
    })
    .await
}

/// The rows not held, in short (the full list can be cut from a CI log):
/// service, status, created and sent.
fn not_held(rows: &[&Value]) -> String {
    let held = rows.iter().filter(|r| r["status"] == "digested").count();
    let rest: Vec<String> = rows
        .iter()
        .filter(|r| r["status"] != "digested")
        .map(|r| {
            format!(
                "{} {} {} {}",
                r["service"], r["status"], r["created_at"], r["sent_at"]
            )
        })
        .collect();
    format!("{held} held; not held: {rest:?}")
}

#[tokio::test]
async fn thirty_services_failing_within_ten_seconds_on_one_channel_give_one_digest() {
    let flood = Receiver::start(Answer::Ok).await;
    let quiet = Receiver::start(Answer::Ok).await;
    let down = HttpTarget::start(Mode::Fail("router rebooting".into())).await;
    let d = TestDaemon::start_with(|c| c.notify_min_gap = Duration::ZERO).await;
    for (name, url, default) in [
        ("hook", flood.url("/in"), true),
        ("quiet", quiet.url("/q"), false),
    ] {
        d.add_channel(
            json!({"name": name, "kind": "webhook", "url": url, "secret": "k", "default": default}),
        )
        .await;
    }
    let mut lonely = failing("lonely", down.url("/lonely"));
    lonely["channels"] = json!(["quiet"]);
    register(&d, lonely).await;
    let names: BTreeSet<String> = (0..30).map(|i| format!("svc-{i:02}")).collect();
    for n in &names {
        register(&d, failing(n, down.url(&format!("/{n}")))).await;
    }
    // Each service notifies once (unknown -> unhealthy).
    let rows = settled(&d, "deliveries", 31).await;
    let flood_rows: Vec<&Value> = rows.iter().filter(|r| r["channel"] == "hook").collect();
    assert_eq!(flood_rows.len(), 30, "{rows:?}");
    assert!(
        flood_rows
            .iter()
            .all(|r| r["status"] == "sent" || r["status"] == "digested"),
        "{flood_rows:?}"
    );
    let accounted: BTreeSet<String> = flood_rows
        .iter()
        .map(|r| r["service"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(accounted, names, "every one of the 30 is accounted for");
    let digested: Vec<&&Value> = flood_rows
        .iter()
        .filter(|r| r["status"] == "digested")
        .collect();
    assert!(
        digested.len() >= 30 - THRESHOLD,
        "{}",
        not_held(&flood_rows)
    );

    // The receiver: at most `threshold` messages on their own, then one digest.
    let got = wait_for("the digest", WAIT, || async {
        let a = flood.accepted();
        a.iter().any(|r| r.json()["type"] == "digest").then_some(a)
    })
    .await;
    let bodies: Vec<Value> = got.iter().map(|r| r.json()).collect();
    let digests: Vec<&Value> = bodies.iter().filter(|v| v["type"] == "digest").collect();
    assert_eq!(digests.len(), 1, "{bodies:?}");
    let digest = digests[0];
    let position = bodies.iter().position(|v| v["type"] == "digest").unwrap();
    assert!(
        position <= THRESHOLD,
        "{position} messages before the digest"
    );
    let key = got[position].header("idempotency-key").unwrap();
    assert_eq!(digest["delivery_id"], key);
    assert!(key.starts_with("hc-digest-"), "{key}");
    assert!(
        digested
            .iter()
            .all(|r| r["last_error"].as_str().unwrap().contains(key)),
        "held rows name the digest: {digested:?}"
    );
    // It lists every held notification in full, and the ones already sent.
    let entries = digest["notifications"].as_array().unwrap();
    let held: BTreeSet<&str> = entries
        .iter()
        .filter(|e| e["status"] == "digested")
        .map(|e| e["service"].as_str().unwrap())
        .collect();
    let held_rows: BTreeSet<&str> = digested
        .iter()
        .map(|r| r["service"].as_str().unwrap())
        .collect();
    assert_eq!(held, held_rows, "{digest}");
    for e in entries.iter().filter(|e| e["status"] == "digested") {
        assert!(
            e["reason"].as_str().unwrap().contains("router rebooting"),
            "{e}"
        );
        assert!(e["since"].is_string() && e["state"].is_string(), "{e}");
    }
    let text = digest["text"].as_str().unwrap();
    assert!(
        text.contains("svc-") && text.contains("router rebooting"),
        "{text}"
    );
    let sent_alone: BTreeSet<&str> = bodies[..position]
        .iter()
        .map(|v| v["service"].as_str().unwrap())
        .collect();
    let all: BTreeSet<&str> = held.union(&sent_alone).copied().collect();
    assert_eq!(
        all.len(),
        30,
        "individual messages and the digest cover all 30"
    );
    // Nothing else follows: every row is decided and the digest was sent.
    assert_eq!(flood.accepted().len(), position + 1);

    // The quiet channel got its message on its own, before the flood's
    // digest, and no digest.
    let q: Vec<Value> = quiet.accepted().iter().map(|r| r.json()).collect();
    assert_eq!(q.len(), 1, "{q:?}");
    assert!(
        q.iter()
            .all(|v| v["type"] == "state_change" && v["service"] == "lonely"),
        "{q:?}"
    );
    let last_quiet = quiet.accepted().last().unwrap().at;
    assert!(
        last_quiet < got[position].at,
        "a quiet channel is not delayed"
    );
    assert!(rows
        .iter()
        .filter(|r| r["channel"] == "quiet")
        .all(|r| r["status"] == "sent"));
    let (s, v) = d
        .get("/api/v1/notifications?status=digested&limit=1000")
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        v["deliveries"].as_array().unwrap().len(),
        digested.len(),
        "{v}"
    );
    d.stop().await;
}

#[tokio::test]
async fn thirty_services_mailing_one_recipient_give_one_digest_mail() {
    let sink = SmtpSink::start(SmtpMode::Accept);
    let url = format!("smtp://127.0.0.1:{}", sink.port);
    let down = HttpTarget::start(Mode::Fail("switch down".into())).await;
    let d = TestDaemon::start_with(|c| {
        c.smtp = Some(healthchecker_server::config::SmtpConfig {
            url: url.parse().unwrap(),
            from: "healthchecker <hc@example.com>".into(),
            password: None,
        });
        c.notify_min_gap = Duration::ZERO;
    })
    .await;
    let names: BTreeSet<String> = (0..30).map(|i| format!("host-{i:02}")).collect();
    for n in &names {
        let mut b = failing(n, down.url(&format!("/{n}")));
        b["email"] = json!(["ops@example.com"]);
        register(&d, b).await;
    }
    let rows = settled(&d, "notifications", 30).await;
    assert_eq!(rows.len(), 30);
    assert!(
        rows.iter()
            .all(|r| r["status"] == "sent" || r["status"] == "digested"),
        "{rows:?}"
    );
    let accounted: BTreeSet<String> = rows
        .iter()
        .map(|r| r["service"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(accounted, names);
    let digested: Vec<&Value> = rows.iter().filter(|r| r["status"] == "digested").collect();
    assert!(
        digested.len() >= 30 - THRESHOLD,
        "{}",
        not_held(&rows.iter().collect::<Vec<_>>())
    );

    let mails = wait_for("the digest mail", WAIT, || async {
        let m = sink.mails();
        m.iter()
            .any(|m| m.subject.starts_with("[healthchecker] Digest:"))
            .then_some(m)
    })
    .await;
    let position = mails
        .iter()
        .position(|m| m.subject.starts_with("[healthchecker] Digest:"))
        .unwrap();
    assert!(position <= THRESHOLD, "{position} mails before the digest");
    let digest = &mails[position];
    assert_eq!(digest.envelope_to, ["ops@example.com"]);
    assert!(
        digest.message_id.contains("healthchecker.digest."),
        "{}",
        digest.message_id
    );
    for r in &digested {
        let name = r["service"].as_str().unwrap();
        assert!(
            digest.text.contains(&format!("- {name} ")),
            "{name} in {}",
            digest.text
        );
    }
    assert!(digest.text.contains("switch down"), "{}", digest.text);
    assert_eq!(sink.mails().len(), position + 1, "nothing after the digest");
    d.stop().await;
}
