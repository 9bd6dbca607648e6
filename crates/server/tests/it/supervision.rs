//! Supervision (SPEC section 12): a panicking probe is a failed check, a
//! panicking handler a 500, and a dead essential task fails `/health` and
//! ends the daemon with an error. The faults come from the test-only hooks
//! of the `fault-injection` feature (`healthchecker_server::fault`).

use healthchecker_server::fault::{PANIC_PROBE_HOST, PANIC_ROUTE, STOP_WRITER_HOST};
use healthchecker_server::ServerError;
use healthchecker_testkit::{wait_for, TestDaemon};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn a_panicking_probe_is_a_failed_check_and_the_service_is_checked_again() {
    let d = TestDaemon::start().await;
    let (st, _) = d
        .register(json!({"name": "boom", "url": format!("http://{PANIC_PROBE_HOST}:8080/"), "interval": 5, "timeout": 2}))
        .await;
    assert_eq!(st, 201);
    // Two checks: the first panic did not leave the service stuck in flight.
    let checks = wait_for("two checks of boom", Duration::from_secs(20), || async {
        let (_, v) = d.get("/api/v1/services/boom/checks").await;
        let checks = v["checks"].as_array().cloned().unwrap_or_default();
        (checks.len() >= 2).then_some(checks)
    })
    .await;
    for c in &checks {
        assert_eq!(c["result"], "fail", "{c}");
        assert_eq!(c["reason"], "internal error", "{c}");
    }
    // The daemon as a whole is fine.
    let (st, health) = d.get("/health").await;
    assert_eq!(st, 200, "{health}");
    d.stop().await;
}

#[tokio::test]
async fn a_panicking_handler_answers_500_with_the_error_body() {
    let d = TestDaemon::start().await;
    let (st, v) = d.get(PANIC_ROUTE).await;
    assert_eq!(st, 500, "{v}");
    assert_eq!(v["error"]["code"], "internal", "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
    // The connection's task survived; the daemon answers.
    assert_eq!(d.get("/health").await.0, 200);
    d.stop().await;
}

#[tokio::test]
async fn health_reports_each_essential_task() {
    let d = TestDaemon::start().await;
    let (st, v) = d.get("/health").await;
    assert_eq!(st, 200, "{v}");
    for task in ["scheduler", "writer"] {
        assert_eq!(
            v["checks"][format!("{task}:running")][0]["status"],
            "pass",
            "{v}"
        );
    }
    // No SMTP configured: no sender to watch.
    assert!(v["checks"]["sender:running"].is_null(), "{v}");
    d.stop().await;
    // With SMTP, the sender is watched too.
    let d = TestDaemon::start_with(|c| {
        c.smtp = Some(healthchecker_server::config::SmtpConfig {
            url: format!("smtp://127.0.0.1:{}", healthchecker_testkit::closed_port())
                .parse()
                .unwrap(),
            from: "hc <hc@example.com>".into(),
            password: None,
        })
    })
    .await;
    let (st, v) = d.get("/health").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["checks"]["sender:running"][0]["status"], "pass", "{v}");
    d.stop().await;
}

#[tokio::test]
async fn a_stopped_writer_fails_health_and_ends_the_daemon_with_an_error() {
    // Both writers have the fault hook (WriterHandle::stop_for_tests): the
    // SQLite thread, and PostgreSQL's PgWriter in the suite's second pass.
    let mut d = TestDaemon::start().await;
    let (st, _) = d
        .register(json!({"name": "kill-writer", "url": format!("http://{STOP_WRITER_HOST}:8080/"), "interval": 5, "timeout": 2}))
        .await;
    assert_eq!(st, 201);
    let health: Value = wait_for("/health to fail", Duration::from_secs(20), || async {
        let (st, v) = d.get("/health").await;
        (st == 503).then_some(v)
    })
    .await;
    assert_eq!(health["status"], "fail", "{health}");
    assert_eq!(
        health["checks"]["writer:running"][0]["status"], "fail",
        "{health}"
    );
    assert!(
        health["output"].as_str().unwrap_or("").contains("writer"),
        "{health}"
    );
    // Then `run` returns an error by itself (the binary exits non-zero).
    let daemon = d.daemon.as_mut().expect("running");
    let ended = tokio::time::timeout(Duration::from_secs(20), daemon.wait())
        .await
        .expect("the daemon exits after its grace period");
    match ended {
        Err(ServerError::Stopped(task)) => assert_eq!(task, "writer"),
        other => panic!("expected Stopped(writer), got {other:?}"),
    }
}
