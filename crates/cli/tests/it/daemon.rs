//! A `healthchecker serve` child process on a loopback port.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_healthchecker"));
    for (k, _) in std::env::vars() {
        if k.starts_with("HEALTHCHECKER_") {
            c.env_remove(k);
        }
    }
    c
}

/// A running daemon process; killed (SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub url: String,
    /// Its latest warnings and errors (JSON log lines), for a failing
    /// test to print ([`Proc::warnings`]).
    warnings: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
}

/// Warnings and errors a [`Proc`] keeps.
const KEPT_WARNINGS: usize = 40;

impl Proc {
    /// Starts `serve` on 127.0.0.1:0 with `db` and mDNS off, waits for its address.
    pub fn start(db: &Path, extra: &[&str]) -> Proc {
        let mut args = vec!["--no-mdns", "--bind", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        Self::start_raw(db, &args)
    }

    /// Starts `serve` on 127.0.0.1:0 with mDNS on `lo` and `extra`; only
    /// inside a private network namespace.
    pub fn start_mdns(db: &Path, extra: &[&str]) -> Proc {
        let mut args = vec!["--bind", "127.0.0.1:0", "--mdns-interface", "lo"];
        args.extend_from_slice(extra);
        Self::start_raw(db, &args)
    }

    /// Starts `serve` with exactly `args` (plus JSON logs and `db`); the
    /// caller chooses `--bind` and the mDNS options. Only inside a private
    /// network namespace may mDNS be on.
    pub fn start_raw(db: &Path, args: &[&str]) -> Proc {
        let mut child = bin()
            .args(["serve", "--log-format", "json", "--db"])
            .arg(db)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn healthchecker");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let warnings =
            std::sync::Arc::<std::sync::Mutex<std::collections::VecDeque<String>>>::default();
        let kept = warnings.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("\"level\":\"WARN\"") || line.contains("\"level\":\"ERROR\"") {
                    let mut k = kept.lock().unwrap_or_else(|e| e.into_inner());
                    if k.len() == KEPT_WARNINGS {
                        k.pop_front();
                    }
                    k.push_back(line.clone());
                }
                if !sent {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                        if v["fields"]["message"] == "listening" {
                            let _ = tx.send(v["fields"]["addr"].as_str().unwrap_or("").to_string());
                            sent = true;
                        }
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("daemon announces its address");
        Proc {
            child,
            url: format!("http://{addr}"),
            warnings,
        }
    }

    /// Its latest warnings and errors, oldest first.
    pub fn warnings(&self) -> Vec<String> {
        let k = self.warnings.lock().unwrap_or_else(|e| e.into_inner());
        k.iter().cloned().collect()
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub fn terminate(mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The python-zeroconf peer script (tests/py/mdns_peer.py), without arguments.
pub fn mdns_peer() -> Command {
    let mut c = Command::new(healthchecker_testkit::smtp::python());
    c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/mdns_peer.py"));
    c
}

/// Runs `f` to completion on a fresh current-thread runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// `GET url`, its body as JSON.
pub async fn get_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// The `name` of every service of the daemon at `base`, following the
/// list's `next` link page by page (at most 1,000 a page).
pub async fn service_names(http: &reqwest::Client, base: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut path = "/api/v1/services".to_string();
    loop {
        let list = get_json(http, &format!("{base}{path}")).await;
        names.extend(
            list["services"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["name"].as_str().unwrap().to_string()),
        );
        match list["next"].as_str() {
            Some(next) => path = next.to_string(),
            None => return names,
        }
    }
}
