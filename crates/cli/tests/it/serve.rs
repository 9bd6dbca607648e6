use crate::daemon::{bin, Proc};
use healthchecker_testkit::{wait_for, HttpTarget, Mode};
use serde_json::{json, Value};
use std::time::Duration;

async fn get(http: &reqwest::Client, url: String) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn kill_9_loses_no_registration_state_or_event() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hc.db");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let good = HttpTarget::start(Mode::Pass).await;
    let bad = HttpTarget::start(Mode::Fail("down".into())).await;

    let p = Proc::start(&db, &[]);
    for i in 0..60 {
        let t = if i % 2 == 0 { &good } else { &bad };
        let r = http
            .post(format!("{}/api/v1/services", p.url))
            .json(
                &json!({"name": format!("svc {i}"), "url": t.url("/"), "interval": 5, "timeout": 2,
                          "healthy_threshold": 2, "email": "ops@example.com"}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    // Wait for verdicts on the two probes, then kill -9 at once.
    let url = p.url.clone();
    wait_for(
        "svc 0 healthy and svc 1 unhealthy",
        Duration::from_secs(25),
        || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let a = get(&http, format!("{url}/api/v1/services/svc%200")).await;
                let b = get(&http, format!("{url}/api/v1/services/svc%201")).await;
                (a["state"] == "healthy" && b["state"] == "unhealthy").then_some(())
            }
        },
    )
    .await;
    let before = get(&http, format!("{}/api/v1/events?limit=1000", p.url)).await;
    let pending_before = get(
        &http,
        format!("{}/api/v1/notifications?status=pending", p.url),
    )
    .await;
    p.kill9();

    let p = Proc::start(&db, &[]);
    let list = get(&http, format!("{}/api/v1/services", p.url)).await;
    assert_eq!(
        list["count"], 60,
        "every acknowledged registration survives"
    );
    let a = get(&http, format!("{}/api/v1/services/svc%200", p.url)).await;
    assert_eq!(a["state"], "healthy");
    let b = get(&http, format!("{}/api/v1/services/svc%201", p.url)).await;
    assert_eq!(b["state"], "unhealthy");
    let after = get(&http, format!("{}/api/v1/events?limit=1000", p.url)).await;
    let ids = |v: &Value| -> Vec<i64> {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect()
    };
    for id in ids(&before) {
        assert!(ids(&after).contains(&id), "event {id} lost");
    }
    let pending_after = get(
        &http,
        format!("{}/api/v1/notifications?status=pending", p.url),
    )
    .await;
    assert!(
        pending_after["notifications"].as_array().unwrap().len()
            >= pending_before["notifications"].as_array().unwrap().len()
    );
    // Checking resumes after the restart.
    let hits = good.hits();
    wait_for("checks after restart", Duration::from_secs(10), || async {
        (good.hits() > hits + 5).then_some(())
    })
    .await;
    let st = p
        .terminate(Duration::from_secs(10))
        .expect("exits on SIGTERM");
    assert!(st.success(), "{st:?}");
}

#[test]
fn bad_configuration_stops_startup_naming_option_and_source() {
    let out = bin()
        .args(["serve", "--no-mdns", "--bind", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--bind") && err.contains("command line") && err.contains("nowhere"),
        "{err}"
    );

    let out = bin()
        .args(["serve", "--no-mdns"])
        .env("HEALTHCHECKER_NOTIFY_MIN_GAP", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--notify-min-gap") && err.contains("HEALTHCHECKER_NOTIFY_MIN_GAP"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("hc.toml");
    std::fs::write(&cfg, "log_format = \"yaml\"\n").unwrap();
    let out = bin()
        .args(["serve", "--no-mdns", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--log-format") && err.contains("config file"),
        "{err}"
    );
}

#[test]
fn keep_checks_out_of_range_stops_startup_naming_the_option() {
    for bad in ["9", "100001"] {
        let out = bin()
            .args(["serve", "--no-mdns", "--keep-checks", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--keep-checks") && err.contains(bad), "{err}");
    }
}

#[test]
fn config_file_settings_apply_below_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("hc.toml");
    let db = dir.path().join("from-file.db");
    std::fs::write(
        &cfg,
        format!("db = {:?}\nbind = \"127.0.0.1:1\"\n", db.to_str().unwrap()),
    )
    .unwrap();
    // The command line's --bind wins over the file's; the file's db applies.
    let mut child = bin()
        .args(["serve", "--no-mdns", "--bind", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ok = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        db.exists()
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "the config file's db path was used");
}

/// The seed README's Flask example and its Python client, unchanged but for
/// discovery (no mDNS may leave this namespace; the mDNS test covers it).
#[test]
fn the_seed_python_client_and_flask_example_work() {
    let dir = tempfile::tempdir().unwrap();
    let p = Proc::start(&dir.path().join("hc.db"), &[]);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/seed_example.py");
    let out = std::process::Command::new(healthchecker_testkit::smtp::python())
        .arg(&script)
        .arg(&p.url)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all ok"), "{stdout}");
}

/// The log lines `serve` prints up to and including "listening".
fn lines_until_listening(args: &[&str]) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = bin()
        .args(["serve", "--no-mdns", "--log-format", "json", "--db"])
        .arg(dir.path().join("hc.db"))
        .args(args)
        .env("HEALTHCHECKER_ADMIN_TOKEN", "admin-token-0123456789abcdef")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        let done = line.contains("\"listening\"");
        seen.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.last().is_some_and(|l| l.contains("listening")),
        "{seen:?}"
    );
    seen
}

#[test]
fn token_mode_on_plain_http_beyond_loopback_warns_at_start() {
    let warned = |lines: &[String]| {
        lines
            .iter()
            .any(|l| l.contains("tokens cross the network in clear"))
    };
    // Listening on every interface (no traffic is sent to it).
    let lines = lines_until_listening(&["--auth", "token", "--bind", "0.0.0.0:0"]);
    assert!(warned(&lines), "{lines:?}");
    // Loopback only, or open mode: nothing to warn about.
    let lines = lines_until_listening(&["--auth", "token", "--bind", "127.0.0.1:0"]);
    assert!(!warned(&lines), "{lines:?}");
    let lines = lines_until_listening(&["--bind", "0.0.0.0:0"]);
    assert!(!warned(&lines), "{lines:?}");
}
