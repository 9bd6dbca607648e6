//! The binary exits non-zero when an essential task stops (SPEC section
//! 12), so that its supervisor restarts it. The fault comes from the
//! test-only hooks that this crate's dev-dependencies compile in.

use crate::daemon::Proc;
use healthchecker_server::fault::STOP_WRITER_HOST;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn the_daemon_exits_non_zero_when_its_store_writer_stops() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Proc::start(&dir.path().join("hc.db"), &[]);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = http
        .post(format!("{}/api/v1/services", p.url))
        .json(
            &json!({"name": "kill-writer", "url": format!("http://{STOP_WRITER_HOST}:8080/"),
                      "interval": 5, "timeout": 2}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // The first check (within 5 s) stops the writer; the daemon exits
    // after its grace period (5 s).
    let started = Instant::now();
    let status = loop {
        if let Some(st) = p.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the daemon is still running 30 s after its writer stopped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.code(), Some(1), "{status:?}");
}
