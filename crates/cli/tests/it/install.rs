//! The ways in (SPEC section 20): the binary alone, the systemd unit and its
//! readiness protocol, the Debian package installed into a Debian root
//! file system, the container image, and the packaged config file.
//!
//! The Debian root is made once with debootstrap from the machine's own
//! Debian mirror and kept under `CARGO_TARGET_TMPDIR`; the package is built
//! by cargo-deb from the binary under test (the dev profile: the release
//! build would double the suite's build time, and packaging does not depend
//! on the profile). scripts/test.sh installs debootstrap, cargo-deb, podman
//! and runc. These tests need root (chroot, mounts, podman), as CI has.
//! systemd itself cannot run here (it is not pid 1): the unit is checked by
//! `systemd-analyze` and run as systemd would (its ExecStart= and
//! Environment=, an unprivileged user, a read-only root but the state
//! directory, a notify socket).

use crate::daemon::{bin, block_on};
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub(crate) fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub(crate) fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

/// Reads a child's stderr (JSON logs) until the daemon logs its listening
/// address; returns it, or fails with what the daemon said before exiting.
pub(crate) fn wait_listening(child: &mut Child) -> String {
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        let mut seen = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if v["fields"]["message"] == "listening" {
                        let _ = tx.send(Ok(v["fields"]["addr"].as_str().unwrap_or("").to_string()));
                        sent = true;
                        continue;
                    }
                }
                seen.push(line);
            }
        }
        if !sent {
            let _ = tx.send(Err(seen.join("\n")));
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(addr)) => addr,
        Ok(Err(log)) => panic!("the daemon exited before listening:\n{log}"),
        Err(_) => panic!("the daemon did not announce its address in 30 s"),
    }
}

pub(crate) fn health(addr: &str) -> (u16, serde_json::Value) {
    block_on(async {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let r = http
            .get(format!("http://{addr}/health"))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or_default())
    })
}

pub(crate) fn terminate(child: &mut Child) -> std::process::ExitStatus {
    run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    for _ in 0..200 {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("the daemon did not exit within 10 s of SIGTERM");
}

/// Spawns `cmd` (stdout discarded, stderr read for the JSON logs) and
/// waits for the address it announces.
pub(crate) fn spawn_listening(cmd: &mut Command) -> (Reap, String) {
    let mut child = Reap(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let addr = wait_listening(&mut child.0);
    (child, addr)
}

/// A child killed when dropped (a failed assertion must not leave it).
pub(crate) struct Reap(pub(crate) Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------
// `cargo install`: a binary that needs no files beside it.

#[test]
fn the_binary_alone_serves_the_api_dashboard_and_spec() {
    // Copy the binary into an empty directory and run it from another, with
    // an empty HOME: anything it would read at run time is missing.
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("bin/healthchecker");
    std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_healthchecker"), &exe).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let (mut child, addr) = spawn_listening(
        Command::new(&exe)
            .args([
                "serve",
                "--no-mdns",
                "--bind",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .env_clear()
            .env("HOME", &home)
            .current_dir(&home),
    );
    assert_eq!(health(&addr).0, 200);
    block_on(async {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        for (path, needle) in [("/", "<html"), ("/api/v1/openapi.json", "openapi")] {
            let r = http
                .get(format!("http://{addr}{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path}");
            let body = r.text().await.unwrap();
            assert!(body.contains(needle), "{path}: {body:.200}");
        }
    });
    // The default database lands under $XDG_DATA_HOME (~/.local/share).
    assert!(home
        .join(".local/share/healthchecker/healthchecker.db")
        .exists());
    assert!(terminate(&mut child.0).success());

    // Shared libraries: the C library's only (no OpenSSL, no SQLite).
    let ldd = stdout(Command::new("ldd").arg(&exe));
    for line in ldd.lines() {
        let lib = line.split_whitespace().next().unwrap_or("");
        let base = lib.rsplit('/').next().unwrap_or(lib);
        assert!(
            [
                "linux-vdso",
                "libc.so",
                "libm.so",
                "libgcc_s.so",
                "ld-linux",
                "libpthread",
                "libdl",
                "librt"
            ]
            .iter()
            .any(|ok| base.starts_with(ok)),
            "unexpected shared library {lib}:\n{ldd}"
        );
    }
}

// ---------------------------------------------------------------------
// systemd readiness: the protocol on a socket the test owns.

pub(crate) fn notify_socket(path: &Path) -> UnixDatagram {
    let sock = UnixDatagram::bind(path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    sock
}

pub(crate) fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a notification within 30 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn ready_is_notified_once_the_api_answers_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = notify_socket(&path);
    let mut child = Reap(
        bin()
            .args(["serve", "--no-mdns", "--bind", "127.0.0.1:0", "--db"])
            .arg(dir.path().join("hc.db"))
            .env("NOTIFY_SOCKET", &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ready = recv(&sock);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    let addr = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS=API answering on "))
        .unwrap_or_else(|| panic!("no address in {ready:?}"));
    // No retry: READY=1 means the API answers now.
    let (status, body) = health(addr);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "pass");
    // `healthchecker health`, the container's HEALTHCHECK, agrees.
    let out = bin()
        .args(["health", "--server", &format!("http://{addr}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    run(Command::new("kill").args(["-TERM", &child.0.id().to_string()]));
    assert_eq!(recv(&sock), "STOPPING=1");
    let st = child.0.wait().unwrap();
    assert!(st.success(), "{st:?}");
    // Stopped: the health command reports the daemon unreachable (3).
    let out = bin()
        .args(["health", "--quiet", "--server", &format!("http://{addr}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}

#[test]
fn ready_reaches_an_abstract_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    use std::os::linux::net::SocketAddrExt;
    let name = format!("healthchecker-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut child = Reap(
        bin()
            .args(["serve", "--no-mdns", "--bind", "127.0.0.1:0", "--db"])
            .arg(dir.path().join("hc.db"))
            .env("NOTIFY_SOCKET", format!("@{name}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(recv(&sock).starts_with("READY=1\n"));
    assert!(terminate(&mut child.0).success());
}

// ---------------------------------------------------------------------
// The packaged config file.

const CONF: &str = include_str!("../../../../packaging/healthchecker.toml");

/// `(key, value, is_example)` for each `# key = value` line.
fn conf_settings() -> Vec<(String, String, bool)> {
    CONF.lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter_map(|l| {
            let (k, v) = l.split_once(" = ")?;
            let k = k.trim();
            if k.is_empty()
                || !k
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '-' || c == '_')
            {
                return None;
            }
            let (v, example) = match v.split_once("  # example") {
                Some((v, _)) => (v, true),
                None => (v, false),
            };
            Some((k.to_string(), v.trim().to_string(), example))
        })
        .collect()
}

#[test]
fn the_config_file_names_every_option_and_its_defaults_are_accepted() {
    let settings = conf_settings();
    let keys = healthchecker_server::config::keys();
    for (k, _, _) in &settings {
        assert!(
            keys.contains(&k.replace('_', "-")),
            "unknown key {k} in the config file"
        );
    }
    for k in keys.iter().filter(|k| k.as_str() != "config") {
        assert!(
            settings.iter().any(|(s, _, _)| s == k),
            "option {k} is not described in packaging/healthchecker.toml"
        );
    }
    // Every default uncommented at once: the daemon accepts the file. The
    // command line still wins (loopback, a temporary database, no mDNS).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("healthchecker.toml");
    let body: String = settings
        .iter()
        .filter(|(_, _, example)| !example)
        .map(|(k, v, _)| format!("{k} = {v}\n"))
        .collect();
    assert!(body.lines().count() >= 10, "{body}");
    std::fs::write(&file, &body).unwrap();
    let (mut child, addr) = spawn_listening(
        bin()
            .args([
                "serve",
                "--log-format",
                "json",
                "--no-mdns",
                "--bind",
                "127.0.0.1:0",
                "--config",
            ])
            .arg(&file)
            .arg("--db")
            .arg(dir.path().join("hc.db")),
    );
    assert_eq!(health(&addr).0, 200);
    assert!(terminate(&mut child.0).success());

    // A mistyped value in the file stops the start, naming option and file (exit 2).
    std::fs::write(
        &file,
        format!(
            "{}max-services = \"lots\"\n",
            body.lines()
                .filter(|l| !l.starts_with("max-services "))
                .map(|l| format!("{l}\n"))
                .collect::<String>()
        ),
    )
    .unwrap();
    let out = bin()
        .args(["serve", "--no-mdns", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--max-services") && err.contains("healthchecker.toml"),
        "{err}"
    );
}
