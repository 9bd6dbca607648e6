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
}

impl Proc {
    /// Starts `serve` on 127.0.0.1:0 with `db` and mDNS off, waits for its address.
    pub fn start(db: &Path, extra: &[&str]) -> Proc {
        let mut args = vec!["--no-mdns", "--bind", "127.0.0.1:0"];
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
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
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
        }
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
