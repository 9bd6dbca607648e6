//! Every probe kind against real sockets, all in one daemon at once: the
//! slow and hostile targets must not delay the others.

use healthchecker_testkit::{
    closed_port, wait_for, HttpTarget, Mode, TcpTarget, TestDaemon, TlsCert, TlsTarget,
};
use serde_json::{json, Value};
use std::time::Duration;

async fn last(d: &TestDaemon, name: &str) -> Value {
    let (_, v) = d
        .get(&format!(
            "/api/v1/services/{}",
            healthchecker_testkit::enc(name)
        ))
        .await;
    v
}

async fn wait_last(d: &TestDaemon, name: &str) -> Value {
    wait_for(
        &format!("a check of {name}"),
        Duration::from_secs(20),
        || async {
            let v = last(d, name).await;
            (!v["last_check"].is_null()).then_some(v)
        },
    )
    .await
}

#[tokio::test]
async fn probes_judge_real_targets() {
    let valid = TlsCert::new(time::Duration::days(365));
    let expiring = TlsCert::new(time::Duration::hours(30));
    let expired = TlsCert::new(time::Duration::days(-2));
    let d = TestDaemon::start_with(|_| {}).await;
    let tcp = TcpTarget::start().await;
    let fast = HttpTarget::start(Mode::Pass).await;
    let hang = HttpTarget::start(Mode::Hang).await;
    let endless = HttpTarget::start(Mode::EndlessBody).await;
    let big = HttpTarget::start(Mode::BigBody(10 * 1024 * 1024)).await;
    let drip = HttpTarget::start(Mode::Drip).await;
    let redirect = HttpTarget::start(Mode::RedirectLoop).await;
    let plain_text = HttpTarget::start(Mode::Raw(200, "OK".into())).await;
    let spring_down = HttpTarget::start(Mode::Raw(200, r#"{"status":"DOWN"}"#.into())).await;
    let https = TlsTarget::start(&valid, Mode::Pass).await;
    let https_expiring = TlsTarget::start(&expiring, Mode::Pass).await;
    let ssl_expired = TlsTarget::start(&expired, Mode::Pass).await;
    let closed = closed_port();
    let huge = HttpTarget::start(Mode::HugeHeaders).await;
    let garbage = HttpTarget::start(Mode::Garbage).await;

    let services = [
        json!({"name": "tcp open", "url": format!("tcp://{}", tcp.addr)}),
        json!({"name": "tcp closed", "url": format!("tcp://127.0.0.1:{closed}")}),
        json!({"name": "fast", "url": fast.url("/")}),
        json!({"name": "hang", "url": hang.url("/")}),
        json!({"name": "endless", "url": endless.url("/")}),
        json!({"name": "big", "url": big.url("/")}),
        json!({"name": "drip", "url": drip.url("/")}),
        json!({"name": "redirect", "url": redirect.url("/")}),
        json!({"name": "redirect ok", "url": redirect.url("/"), "expected_status": "200-399"}),
        json!({"name": "plain", "url": plain_text.url("/")}),
        json!({"name": "spring", "url": spring_down.url("/")}),
        json!({"name": "dns", "url": "http://no-such-host.invalid:8080/health"}),
        json!({"name": "https", "url": https.url("/")}),
        json!({"name": "ssl", "url": format!("ssl://{}", https.addr)}),
        json!({"name": "https verify", "url": https.url("/"), "tls_verify": true}),
        json!({"name": "https expiring", "url": https_expiring.url("/")}),
        json!({"name": "ssl expired", "url": format!("ssl://{}", ssl_expired.addr)}),
        json!({"name": "https expired", "url": format!("https://{}/", ssl_expired.addr)}),
        json!({"name": "https expired verify", "url": format!("https://{}/", ssl_expired.addr), "tls_verify": true}),
        json!({"name": "huge headers", "url": huge.url("/")}),
        json!({"name": "garbage http", "url": garbage.url("/")}),
        json!({"name": "garbage tls", "url": format!("ssl://{}", garbage.addr)}),
    ];
    for mut s in services {
        s["interval"] = json!(5);
        s["timeout"] = json!(2);
        let (st, body) = d.register(s.clone()).await;
        assert_eq!(st, 201, "{s} -> {body}");
    }
    let expect: &[(&str, &str, Option<&str>)] = &[
        ("tcp open", "pass", None),
        ("tcp closed", "fail", Some("connection refused")),
        ("fast", "pass", None),
        ("hang", "fail", Some("timeout after 2s")),
        ("endless", "pass", None),
        ("big", "pass", None),
        ("drip", "fail", Some("timeout after 2s")),
        ("redirect", "fail", Some("HTTP 302")),
        ("redirect ok", "pass", None),
        ("plain", "pass", None),
        ("spring", "fail", Some("health+json status fail")),
        (
            "dns",
            "fail",
            Some("DNS lookup of no-such-host.invalid failed"),
        ),
        ("https", "pass", None),
        ("ssl", "pass", None),
        ("https verify", "fail", Some("TLS handshake failed")),
        (
            "https expiring",
            "warn",
            Some("certificate expires in 1 day"),
        ),
        // An expired self-signed certificate (a printer, a NAS) is a warn
        // without tls_verify, never a fail (SPEC section 2).
        ("ssl expired", "warn", Some("certificate expired on")),
        ("https expired", "warn", Some("certificate expired on")),
        ("https expired verify", "fail", Some("TLS handshake failed")),
        ("huge headers", "fail", Some("invalid HTTP response")),
        ("garbage http", "fail", Some("invalid HTTP response")),
        ("garbage tls", "fail", Some("TLS handshake failed")),
    ];
    for (name, result, reason) in expect {
        let v = wait_last(&d, name).await;
        let c = &v["last_check"];
        assert_eq!(c["result"], *result, "{name}: {c}");
        match reason {
            Some(r) => assert!(
                c["reason"].as_str().unwrap_or("").starts_with(r),
                "{name}: {c}"
            ),
            None => assert!(c["reason"].is_null(), "{name}: {c}"),
        }
        // Every check ends within its timeout (plus scheduling slack).
        assert!(c["duration_ms"].as_f64().unwrap() < 2_500.0, "{name}: {c}");
    }
    let v = last(&d, "https").await;
    assert!(v["cert_expires_at"]
        .as_str()
        .unwrap()
        .starts_with(&(time::OffsetDateTime::now_utc().year() + 1).to_string()));
    let (_, c) = d.get("/api/v1/services/https/checks").await;
    assert_eq!(c["checks"][0]["http_status"], 200);

    // The hung and dripping targets never delayed the fast one: it is
    // checked again, and no service's slot was skipped for a check still
    // running or waiting (a probe holding up others would show there).
    // That the schedule keeps time exactly is tested on the paused clock
    // (scheduler/tests.rs `checks_every_interval_without_drift`).
    let before = fast.hits();
    wait_for(
        "two more checks of the fast target",
        Duration::from_secs(15),
        || async { (fast.hits() >= before + 2).then_some(()) },
    )
    .await;
    let metrics = d.text("/metrics").await;
    let missed = metrics
        .lines()
        .find(|l| l.starts_with("healthchecker_scheduler_missed_slots"))
        .unwrap_or_else(|| panic!("no missed-slots counter in {metrics}"));
    assert!(missed.ends_with(" 0"), "{missed}");
    d.stop().await;
}

#[tokio::test]
async fn a_trusted_ca_file_makes_tls_verify_pass() {
    let cert = TlsCert::new(time::Duration::days(90));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &cert.pem).unwrap();
    let d = TestDaemon::start_with(|c| c.tls_ca_file = Some(ca.clone())).await;
    let t = TlsTarget::start(&cert, Mode::Pass).await;
    let url = format!("https://localhost:{}/", t.addr.port());
    d.register(json!({"name": "v", "url": url, "tls_verify": true, "interval": 5, "timeout": 2}))
        .await;
    let v = wait_last(&d, "v").await;
    assert_eq!(v["last_check"]["result"], "pass", "{v}");
    d.stop().await;
}
