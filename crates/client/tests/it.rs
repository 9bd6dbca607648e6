//! The client library against the real daemon.

use axum::routing::get;
use healthchecker_client::{
    CheckResult, ClientError, HealthCheckResponse, HealthChecker, HealthState, Monitoring,
    Registration,
};
use healthchecker_testkit::{closed_port, wait_for, HttpTarget, Mode, TestDaemon};
use std::time::Duration;

#[tokio::test]
async fn monitor_info_pause_resume_list_stop() {
    let d = TestDaemon::start().await;
    let t = HttpTarget::start(Mode::Pass).await;
    let hc = HealthChecker::at(&d.url).unwrap();
    let m = hc
        .monitor(
            Registration::new("my app", t.url("/health"))
                .email("me@example.com")
                .interval(5)
                .timeout(2)
                .healthy(2)
                .unhealthy(3),
        )
        .await
        .unwrap();
    assert!(m.created);
    assert_eq!(m.token().map(str::len), Some(64));
    assert_eq!(m.service.unhealthy_threshold, 3);
    wait_for("healthy", Duration::from_secs(20), || async {
        (m.info().await.unwrap().state == HealthState::Healthy).then_some(())
    })
    .await;
    assert_eq!(m.pause().await.unwrap().monitoring, Monitoring::Paused);
    assert_eq!(m.resume().await.unwrap().monitoring, Monitoring::Active);
    let again = hc
        .monitor(Registration::new("my app", t.url("/health")).interval(6))
        .await
        .unwrap();
    assert!(!again.created);
    let all = hc.list().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].state, HealthState::Healthy);
    m.stop().await.unwrap();
    match m.info().await {
        Err(ClientError::Refused { status: 404, .. }) => {}
        other => panic!("expected 404, got {other:?}"),
    }
    d.stop().await;
}

#[tokio::test]
async fn refusals_keep_the_daemon_s_message_and_field() {
    let d = TestDaemon::start().await;
    let hc = HealthChecker::at(&d.url).unwrap();
    let e = hc
        .monitor(Registration::new("x", "http://h/").interval(1))
        .await
        .unwrap_err();
    match &e {
        ClientError::Refused {
            status,
            field,
            message,
            ..
        } => {
            assert_eq!(*status, 400);
            assert_eq!(field.as_deref(), Some("interval"));
            assert!(message.contains("5 to 300"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.is_refused());
    let down = HealthChecker::at(&format!("http://127.0.0.1:{}", closed_port())).unwrap();
    assert!(matches!(
        down.list().await,
        Err(ClientError::Unreachable { .. })
    ));
    assert!(matches!(
        HealthChecker::at("ftp://x"),
        Err(ClientError::InvalidUrl(_))
    ));
    d.stop().await;
}

#[tokio::test]
async fn the_daemon_judges_what_the_builder_writes() {
    let d = TestDaemon::start().await;
    let app = axum::Router::new()
        .route(
            "/ok",
            get(|| async { HealthCheckResponse::pass().description("ok app") }),
        )
        .route(
            "/warn",
            get(|| async { HealthCheckResponse::warn().output("queue backlog 5000") }),
        )
        .route(
            "/fail",
            get(|| async { HealthCheckResponse::fail().output("db down") }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(l, app).await });
    let r = reqwest::get(format!("http://{addr}/warn")).await.unwrap();
    assert_eq!(r.headers()["content-type"], "application/health+json");
    let hc = HealthChecker::at(&d.url).unwrap();
    for (name, state) in [
        ("ok", "healthy"),
        ("warn", "degraded"),
        ("fail", "unhealthy"),
    ] {
        hc.monitor(
            Registration::new(name, format!("http://{addr}/{name}"))
                .interval(5)
                .timeout(2)
                .healthy(2),
        )
        .await
        .unwrap();
        d.wait_state(name, state, Duration::from_secs(20)).await;
    }
    assert_eq!(
        hc.info("warn")
            .await
            .unwrap()
            .service
            .last_check
            .unwrap()
            .reason
            .as_deref(),
        Some("health+json status warn: queue backlog 5000")
    );
    assert_eq!(
        hc.info("fail")
            .await
            .unwrap()
            .service
            .last_check
            .unwrap()
            .reason
            .as_deref(),
        Some("HTTP 503: db down")
    );
    server.abort();
    d.stop().await;
}

/// The example app registers itself, is judged healthy, and stops its
/// monitoring on Ctrl-C (SIGINT).
#[tokio::test]
async fn the_example_app_registers_and_unregisters_itself() {
    let d = TestDaemon::start().await;
    let target_dir = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let exe = target_dir.join("debug/examples/monitored_app");
    assert!(
        exe.exists(),
        "cargo test builds the examples first: {}",
        exe.display()
    );
    let port = closed_port();
    let mut child = std::process::Command::new(exe)
        .env("HEALTHCHECKER_SERVER", &d.url)
        .env("PORT", port.to_string())
        .env("APP_URL", format!("http://127.0.0.1:{port}"))
        .env("APP_NAME", "example app")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let hc = HealthChecker::at(&d.url).unwrap();
    let info = wait_for(
        "the example to register",
        Duration::from_secs(20),
        || async { hc.info("example app").await.ok() },
    )
    .await;
    assert_eq!(info.url, format!("http://127.0.0.1:{port}/health"));
    assert_eq!((info.interval, info.healthy_threshold), (10, 4));
    wait_for("a passing check", Duration::from_secs(20), || async {
        let i = hc.info("example app").await.ok()?;
        (i.service.last_check?.result == CheckResult::Pass).then_some(())
    })
    .await;
    let _ = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    // Wait off the runtime: the daemon under test runs on this thread.
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(matches!(
        hc.info("example app").await,
        Err(ClientError::Refused { status: 404, .. })
    ));
    d.stop().await;
}

#[tokio::test]
async fn list_follows_the_daemon_s_pages_to_the_end() {
    // More than two pages of 1,000.
    let d = TestDaemon::start_with(|c| healthchecker_testkit::seed_services_in(c, 2_100)).await;
    let all = HealthChecker::at(&d.url).unwrap().list().await.unwrap();
    assert_eq!(all.len(), 2_100);
    assert_eq!(all[0].name, "svc-00000");
    assert_eq!(all[2_099].name, "svc-02099");
    d.stop().await;
}
