//! Faults: kill -9 during a registration storm, a full disk, SIGTERM with
//! hung probes, hostile targets that must not leak descriptors.

use crate::daemon::{service_names, Proc};
use healthchecker_testkit::netns::with_small_tmpfs;
use healthchecker_testkit::{wait_for, HttpTarget, Mode};
use serde_json::json;
use std::time::{Duration, Instant};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Registers a TCP service called `name`; returns the status code.
async fn register(http: &reqwest::Client, url: &str, name: &str) -> u16 {
    let body = json!({"name": name, "url": "tcp://127.0.0.1:9", "interval": 300, "email": "a@example.com"});
    http.post(format!("{url}/api/v1/services"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// GETs `path`; returns the status code and the JSON body (null when none).
async fn get(http: &reqwest::Client, url: &str, path: &str) -> (u16, serde_json::Value) {
    let r = http.get(format!("{url}{path}")).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_kill_9_during_a_registration_storm_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hc.db");
    let http = client();
    let mut acknowledged: Vec<String> = Vec::new();
    for round in 0..5u64 {
        let p = Proc::start(&db, &["--register-rate-limit", "0"]);
        let url = p.url.clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for w in 0..4 {
            let (http, url, tx) = (http.clone(), url.clone(), tx.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let name = format!("r{round}-w{w}-{i}");
                    let body = json!({"name": name, "url": "tcp://127.0.0.1:9", "interval": 300});
                    match http
                        .post(format!("{url}/api/v1/services"))
                        .json(&body)
                        .send()
                        .await
                    {
                        Ok(r) if r.status() == 201 => {
                            let _ = tx.send(name);
                        }
                        _ => break, // the daemon died under us
                    }
                }
            }));
        }
        drop(tx);
        // Kill at a moment that differs per round.
        tokio::time::sleep(Duration::from_millis(150 + round * 97)).await;
        p.kill9();
        for t in tasks {
            let _ = t.await;
        }
        while let Ok(n) = rx.try_recv() {
            acknowledged.push(n);
        }
    }
    assert!(
        acknowledged.len() > 50,
        "the storm registered {}",
        acknowledged.len()
    );
    let p = Proc::start(&db, &[]);
    let names: std::collections::HashSet<String> =
        service_names(&http, &p.url).await.into_iter().collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|n| !names.contains(*n))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged registrations lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    drop(p);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_within_five_seconds_despite_hung_probes() {
    let dir = tempfile::tempdir().unwrap();
    let t = HttpTarget::start(Mode::Hang).await;
    let p = Proc::start(&dir.path().join("hc.db"), &[]);
    let http = client();
    for i in 0..5 {
        http.post(format!("{}/api/v1/services", p.url))
            .json(&json!({"name": format!("hung {i}"), "url": t.url("/"), "interval": 60, "timeout": 55}))
            .send()
            .await
            .unwrap();
    }
    // Resume makes the first check immediate; wait until probes hang.
    for i in 0..5 {
        http.post(format!("{}/api/v1/services/hung%20{i}/pause", p.url))
            .send()
            .await
            .unwrap();
        http.post(format!("{}/api/v1/services/hung%20{i}/resume", p.url))
            .send()
            .await
            .unwrap();
    }
    wait_for("probes in flight", Duration::from_secs(10), || async {
        (t.hits() >= 5).then_some(())
    })
    .await;
    let started = Instant::now();
    let st = tokio::task::spawn_blocking(move || p.terminate(Duration::from_secs(15)))
        .await
        .unwrap()
        .expect("exited");
    let took = started.elapsed();
    assert!(st.success(), "{st:?}");
    assert!(took < Duration::from_secs(6), "shutdown took {took:?}");
}

#[test]
fn a_full_disk_fails_health_and_registrations_until_space_returns() {
    with_small_tmpfs("3m", |dir| async move {
        let p = Proc::start(&dir.join("hc.db"), &["--register-rate-limit", "0"]);
        let (http, url) = (client(), p.url.clone());
        assert_eq!(register(&http, &url, "before").await, 201);
        // Fill the disk.
        let filler = dir.join("filler");
        let _ = std::process::Command::new("dd")
            .args([
                "if=/dev/zero",
                &format!("of={}", filler.display()),
                "bs=64k",
            ])
            .stderr(std::process::Stdio::null())
            .status();
        let mut statuses = Vec::new();
        for i in 0..200 {
            let st = register(&http, &url, &format!("full {i} {}", "x".repeat(150))).await;
            statuses.push(st);
            if st == 503 {
                break;
            }
        }
        assert_eq!(
            statuses.last(),
            Some(&503),
            "registrations answer 503 on a full disk: {statuses:?}"
        );
        let (st, body) = get(&http, &url, "/health").await;
        assert_eq!(st, 503);
        assert_eq!(body["status"], "fail");
        assert!(
            body["output"].as_str().unwrap().contains("cannot write"),
            "{body}"
        );
        // Space returns: both recover.
        std::fs::remove_file(&filler).unwrap();
        assert_eq!(register(&http, &url, "after").await, 201);
        assert_eq!(get(&http, &url, "/health").await.0, 200);
        let (_, v) = get(&http, &url, "/api/v1/services/before").await;
        assert_eq!(v["name"], "before", "nothing acknowledged was lost");
        let _ = p.terminate(Duration::from_secs(10));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_targets_leak_no_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let p = Proc::start(&dir.path().join("hc.db"), &[]);
    let http = client();
    let targets = [
        HttpTarget::start(Mode::Hang).await,
        HttpTarget::start(Mode::Drip).await,
        HttpTarget::start(Mode::EndlessBody).await,
        HttpTarget::start(Mode::BigBody(10 << 20)).await,
        HttpTarget::start(Mode::HugeHeaders).await,
        HttpTarget::start(Mode::RedirectLoop).await,
        HttpTarget::start(Mode::Garbage).await,
    ];
    for (i, t) in targets.iter().enumerate() {
        for proto in ["http", "ssl"] {
            let url = format!(
                "{proto}://{}{}",
                t.addr,
                if proto == "http" { "/" } else { "" }
            );
            http.post(format!("{}/api/v1/services", p.url))
                .json(&json!({"name": format!("{proto} {i}"), "url": url, "interval": 5, "timeout": 2}))
                .send()
                .await
                .unwrap();
        }
    }
    let pid = p.child.id();
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let rss_kb = || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (fds2, rss2) = (fds(), rss_kb());
    tokio::time::sleep(Duration::from_secs(15)).await;
    let (fds5, rss5) = (fds(), rss_kb());
    assert!(fds5 <= fds2 + 5, "descriptors grew from {fds2} to {fds5}");
    // Three more rounds of 14 hostile checks (10 MB bodies, endless bodies,
    // 100 KB headers among them) may not grow the daemon by more than a
    // few allocator arenas.
    assert!(
        rss5 <= rss2 + 16 * 1024,
        "RSS grew from {rss2} kB to {rss5} kB"
    );
    let v: serde_json::Value = http
        .get(format!("{}/api/v1/services", p.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for s in v["services"].as_array().unwrap() {
        let c = &s["last_check"];
        assert!(!c.is_null(), "{} was checked", s["name"]);
        assert!(
            c["duration_ms"].as_f64().unwrap() < 2_500.0,
            "{}: {c}",
            s["name"]
        );
    }
}

/// Makes files immutable (`chattr +i`: refused even to root and to
/// descriptors already open) and mutable again on drop.
struct Immutable(Vec<std::path::PathBuf>);

impl Immutable {
    fn set(paths: Vec<std::path::PathBuf>) -> Immutable {
        for p in &paths {
            let st = std::process::Command::new("chattr")
                .arg("+i")
                .arg(p)
                .status()
                .expect("chattr (e2fsprogs)");
            assert!(st.success(), "chattr +i {}", p.display());
        }
        Immutable(paths)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(p)
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_fails_health_and_registrations_until_writable() {
    let dir = tempfile::tempdir().unwrap();
    let p = Proc::start(&dir.path().join("hc.db"), &["--register-rate-limit", "0"]);
    let (http, url) = (client(), p.url.clone());
    assert_eq!(register(&http, &url, "before").await, 201);
    // The database and its WAL become read-only. (Not the -shm file: SQLite
    // maps it into memory, and a mapped page that cannot be written raises
    // SIGBUS, which no program survives; docs/storage.md.)
    let files: Vec<std::path::PathBuf> = ["hc.db", "hc.db-wal"]
        .iter()
        .map(|f| dir.path().join(f))
        .filter(|f| f.exists())
        .collect();
    let lock = Immutable::set(files);
    assert_eq!(
        register(&http, &url, "during").await,
        503,
        "registrations answer 503 while the database is read-only"
    );
    assert_eq!(get(&http, &url, "/health").await.0, 503);
    drop(lock);
    wait_for(
        "registrations to work again",
        Duration::from_secs(10),
        || async { (register(&http, &url, "after").await == 201).then_some(()) },
    )
    .await;
    assert_eq!(get(&http, &url, "/health").await.0, 200);
    let (_, v) = get(&http, &url, "/api/v1/services").await;
    let names: Vec<&str> = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"before") && names.contains(&"after") && !names.contains(&"during"),
        "{names:?}"
    );
}
