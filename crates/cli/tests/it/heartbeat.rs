//! `healthchecker ping` and `healthchecker run` against a real daemon
//! process (SPEC section 15): a wrapped job that exits 1 makes its
//! heartbeat service unhealthy within a second.

use crate::daemon::{bin, block_on, Proc};
use std::process::Output;
use std::time::{Duration, Instant};

fn hc(args: &[&str], server: &str) -> Output {
    bin()
        .args(args)
        .env("HEALTHCHECKER_SERVER", server)
        .output()
        .unwrap()
}

fn service(server: &str, name: &str) -> serde_json::Value {
    let o = hc(&["info", name, "--json"], server);
    serde_json::from_slice(&o.stdout).unwrap()
}

fn wait_state(server: &str, name: &str, state: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let v = service(server, name);
        if v["state"] == state {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "not {state} within {within:?}: {v}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn run_reports_a_failing_job_and_ping_a_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let p = Proc::start(&dir.path().join("hc.db"), &[]);
    let s = p.url.as_str();
    let (st, v) = api(
        s,
        "/api/v1/services",
        Some(
            serde_json::json!({"name": "nightly backup", "kind": "heartbeat", "period": 86400, "grace": 3600}),
        ),
    );
    assert_eq!(st, 201, "{v}");

    // `ping NAME`: a success.
    let o = hc(&["ping", "nightly backup"], s);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    wait_state(s, "nightly backup", "healthy", Duration::from_secs(2));

    // `run NAME -- CMD`: the job's output passes through, its exit code is
    // run's own, and the service is unhealthy within a second of the end.
    let o = hc(
        &[
            "run",
            "nightly backup",
            "--",
            "sh",
            "-c",
            "echo copying; echo disk full >&2; exit 1",
        ],
        s,
    );
    let ended = Instant::now();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "copying\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "disk full\n");
    wait_state(s, "nightly backup", "unhealthy", Duration::from_secs(1));
    assert!(ended.elapsed() < Duration::from_secs(1));
    let v = service(s, "nightly backup");
    assert_eq!(v["last_check"]["reason"], "exit code 1", "{v}");

    // The output's tail is the check's output.
    let checks = checks(s);
    let out = checks[0]["details"]["output"].as_str().unwrap();
    assert!(
        out.contains("copying") && out.contains("disk full"),
        "{out}"
    );

    // A job that succeeds recovers it; a command that cannot start fails it.
    let o = hc(&["run", "nightly backup", "--", "true"], s);
    assert_eq!(o.status.code(), Some(0));
    wait_state(s, "nightly backup", "healthy", Duration::from_secs(1));
    let o = hc(&["run", "nightly backup", "--", "/nonexistent/job"], s);
    assert_eq!(o.status.code(), Some(1));
    wait_state(s, "nightly backup", "unhealthy", Duration::from_secs(1));

    let o = hc(&["info", "nightly backup"], s);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("heartbeat:   every 86400s, grace 3600s"),
        "{out}"
    );

    // `ping --exit-code` and a name that is not a heartbeat.
    let o = hc(&["ping", "nightly backup", "--exit-code", "0"], s);
    assert_eq!(o.status.code(), Some(0));
    let o = hc(&["monitor", "web", "tcp://127.0.0.1:9"], s);
    assert_eq!(o.status.code(), Some(0));
    let o = hc(&["ping", "web"], s);
    assert_eq!(o.status.code(), Some(1), "refused: not a heartbeat");
}

/// `GET` or `POST` (with a JSON body) on the daemon's API.
fn api(server: &str, path: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
    block_on(async {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let url = format!("{server}{path}");
        let req = match body {
            Some(b) => http.post(url).json(&b),
            None => http.get(url),
        };
        let r = req.send().await.unwrap();
        let st = r.status().as_u16();
        (st, r.json().await.unwrap_or_default())
    })
}

fn checks(server: &str) -> Vec<serde_json::Value> {
    let (_, v) = api(
        server,
        "/api/v1/services/nightly%20backup/checks?limit=1",
        None,
    );
    v["checks"].as_array().unwrap().clone()
}
