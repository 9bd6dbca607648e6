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
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(cmd: &mut Command) -> Output {
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

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

/// Reads a child's stderr (JSON logs) until the daemon logs its listening
/// address; returns it, or fails with what the daemon said before exiting.
fn wait_listening(child: &mut Child) -> String {
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

fn health(addr: &str) -> (u16, serde_json::Value) {
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

fn terminate(child: &mut Child) -> std::process::ExitStatus {
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
fn spawn_listening(cmd: &mut Command) -> (Reap, String) {
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
struct Reap(Child);

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

fn notify_socket(path: &Path) -> UnixDatagram {
    let sock = UnixDatagram::bind(path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    sock
}

fn recv(sock: &UnixDatagram) -> String {
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
    let keys = healthchecker_server::config::KEYS;
    for (k, _, _) in &settings {
        assert!(
            keys.contains(&k.replace('_', "-").as_str()),
            "unknown key {k} in the config file"
        );
    }
    for k in keys.iter().filter(|k| **k != "config") {
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

// ---------------------------------------------------------------------
// The Debian package, in a Debian root made by debootstrap.

/// The Debian release of this machine (the binary links against its glibc).
fn codename() -> String {
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    os.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|c| c.trim_matches('"').to_string())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "bookworm".into())
}

/// The Debian mirror apt uses here (the only one reachable on CI).
fn mirror() -> String {
    let mut texts = Vec::new();
    if let Ok(d) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for e in d.flatten() {
            if e.path()
                .extension()
                .is_some_and(|x| x == "sources" || x == "list")
            {
                texts.push(std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    texts.push(std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default());
    for t in &texts {
        for l in t.lines().map(str::trim) {
            let url = l
                .strip_prefix("URIs:")
                .map(|u| u.split_whitespace().next().unwrap_or(""))
                .or_else(|| {
                    l.strip_prefix("deb ")
                        .and_then(|r| r.split_whitespace().find(|w| w.starts_with("http")))
                });
            if let Some(u) = url {
                if u.starts_with("http") && !u.contains("security") {
                    return u.to_string();
                }
            }
        }
    }
    "http://deb.debian.org/debian".into()
}

/// A minimal Debian root with systemd (for `systemd-analyze`), made once and
/// kept between runs; tests copy it before changing anything.
fn debian_root() -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let suite = codename();
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("debian-{suite}-root"));
    if root.join("usr/bin/systemd-analyze").exists() {
        return root;
    }
    assert!(
        Path::new("/usr/sbin/debootstrap").exists(),
        "debootstrap is missing: scripts/test.sh installs it (apt-get install debootstrap)"
    );
    let partial = root.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    run(Command::new("/usr/sbin/debootstrap")
        .args(["--variant=minbase", "--include=systemd", &suite])
        .arg(&partial)
        .arg(mirror()));
    std::fs::rename(&partial, &root).unwrap();
    root
}

/// Copies the Debian root to a fresh directory removed on drop.
fn scratch_root() -> (tempfile::TempDir, PathBuf) {
    let src = debian_root();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dst = dir.path().join("root");
    run(Command::new("cp").arg("-a").arg(&src).arg(&dst));
    (dir, dst)
}

/// The .deb built once by cargo-deb from the binary under test.
fn deb_package() -> PathBuf {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deb");
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let probe = Command::new(&cargo).args(["deb", "--version"]).output();
        assert!(
            probe.is_ok_and(|o| o.status.success()),
            "cargo-deb is missing: scripts/test.sh installs it (cargo install cargo-deb)"
        );
        // --no-build: package the binary `cargo test` built (the dev profile).
        run(Command::new(&cargo)
            .current_dir(repo())
            .args([
                "deb",
                "-p",
                "healthchecker",
                "--no-build",
                "--profile",
                "dev",
                "--fast",
                "-q",
                "-o",
            ])
            .arg(&out));
        let deb = std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .expect("cargo deb wrote a .deb");
        deb
    })
    .clone()
}

/// `chroot ROOT …` with a clean environment.
fn chroot(root: &Path) -> Command {
    let mut c = Command::new("/usr/sbin/chroot");
    c.arg(root)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    c
}

#[test]
fn the_debian_package_installs_into_a_debian_root_and_its_service_runs_unprivileged() {
    let deb = deb_package();

    // What is in it.
    let info = stdout(Command::new("dpkg-deb").arg("--info").arg(&deb));
    for needle in [
        "Package: healthchecker",
        "Depends: libc6",
        "Section: net",
        "conffiles",
    ] {
        assert!(info.contains(needle), "{needle} missing from:\n{info}");
    }
    let contents = stdout(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for path in [
        "./usr/bin/healthchecker",
        "./usr/lib/systemd/system/healthchecker.service",
        "./etc/healthchecker/healthchecker.toml",
        "./usr/share/doc/healthchecker/README.md",
        "./usr/share/doc/healthchecker/install.md",
        "./usr/share/doc/healthchecker/copyright",
    ] {
        assert!(
            contents.lines().any(|l| l.ends_with(path)),
            "{path} missing from:\n{contents}"
        );
    }
    let control = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("--control")
        .arg(&deb)
        .arg(control.path()));
    let listed = std::fs::read_to_string(control.path().join("conffiles")).unwrap();
    assert!(
        listed
            .lines()
            .any(|l| l == "/etc/healthchecker/healthchecker.toml"),
        "{listed}"
    );
    // The maintainer scripts start nothing, and enable the unit only where
    // the administrator had enabled it before (debhelper's `was-enabled`).
    for script in ["preinst", "postinst", "prerm", "postrm"] {
        let Ok(text) = std::fs::read_to_string(control.path().join(script)) else {
            continue;
        };
        let code: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .collect();
        for (i, l) in code.iter().enumerate() {
            assert!(
                !l.contains(" start ") && !l.contains("--now"),
                "{script} starts the service: {l}"
            );
            if l.contains(" enable ") {
                assert!(
                    code[..i].iter().any(|p| p.contains("was-enabled")),
                    "{script} enables the service unasked: {l}"
                );
            }
        }
    }

    // Installed with dpkg into a Debian root (its dependencies resolve there).
    let (_keep, root) = scratch_root();
    std::fs::copy(&deb, root.join("tmp/healthchecker.deb")).unwrap();
    run(chroot(&root).args(["dpkg", "-i", "/tmp/healthchecker.deb"]));
    let version = stdout(chroot(&root).args(["/usr/bin/healthchecker", "--version"]));
    assert_eq!(
        version.trim(),
        format!("healthchecker {}", env!("CARGO_PKG_VERSION"))
    );
    assert!(stdout(chroot(&root).args(["healthchecker", "--help"])).contains("serve"));
    // Not enabled by the installation.
    let enabled = chroot(&root)
        .args(["systemctl", "is-enabled", "healthchecker.service"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&enabled.stdout).trim(),
        "disabled",
        "{enabled:?}"
    );

    // The unit as installed passes systemd's own checks, with nothing to say.
    let verify = run(chroot(&root).args(["systemd-analyze", "verify", "healthchecker.service"]));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(said.trim().is_empty(), "systemd-analyze verify:\n{said}");
    // And its sandbox rates "OK" or better (exposure at most 2.0 of 10).
    let sec = chroot(&root)
        .args([
            "systemd-analyze",
            "security",
            "--offline=true",
            "--threshold=20",
            "healthchecker.service",
        ])
        .output()
        .unwrap();
    assert!(
        sec.status.success(),
        "{}",
        String::from_utf8_lossy(&sec.stdout)
    );

    // Run as the unit would: its ExecStart and Environment=, as an
    // unprivileged user, the state directory made as systemd makes it
    // (StateDirectory=, mode 0700), on loopback with mDNS off.
    let unit =
        std::fs::read_to_string(root.join("usr/lib/systemd/system/healthchecker.service")).unwrap();
    let directive = |name: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
            .collect()
    };
    for (name, want) in [
        ("Type", "notify"),
        ("DynamicUser", "yes"),
        ("StateDirectory", "healthchecker"),
        ("Restart", "on-failure"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        (
            "RestrictAddressFamilies",
            "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
        ),
    ] {
        assert_eq!(directive(name), vec![want.to_string()], "{name}=");
    }
    let exec: Vec<String> = directive("ExecStart")[0]
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let state = root.join("var/lib/healthchecker");
    std::fs::create_dir_all(&state).unwrap();
    run(Command::new("chown").arg("65534:65534").arg(&state));
    run(Command::new("chmod").arg("0700").arg(&state));
    // systemd's notify socket, made where the chrooted daemon finds it.
    std::fs::create_dir_all(root.join("run")).unwrap();
    let sock = notify_socket(&root.join("run/notify.sock"));
    // Writable by the service's user, as systemd's own socket is.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        root.join("run/notify.sock"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    // ProtectSystem=strict: the root is read-only but for the state
    // directory (a private mount namespace; each step execs the next, so
    // the daemon keeps the child's pid).
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "sh", "-ec"])
        .arg(concat!(
            "mount --make-rprivate /; mount --bind \"$0\" \"$0\"; ",
            "mount --bind \"$0/var/lib/healthchecker\" \"$0/var/lib/healthchecker\"; ",
            "mount -o remount,bind,ro \"$0\"; ",
            "exec chroot --userspec=65534:65534 \"$0\" \"$@\""
        ))
        .arg(&root)
        .args(&exec)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    cmd.args(["--no-mdns", "--bind", "127.0.0.1:0", "--log-format", "json"]);
    for env in directive("Environment") {
        let (k, v) = env.split_once('=').unwrap();
        cmd.env(k, v);
    }
    cmd.env("NOTIFY_SOCKET", "/run/notify.sock");
    let (mut child, addr) = spawn_listening(&mut cmd);
    assert!(recv(&sock).starts_with("READY=1\n"));
    assert_eq!(health(&addr).0, 200);
    let db = state.join("healthchecker.db");
    let meta = std::fs::metadata(&db).expect("the database is in the state directory");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        meta.uid(),
        65534,
        "the database belongs to the service's user"
    );
    // It ran with the root read-only and only its state directory writable.
    let mounts = std::fs::read_to_string(format!("/proc/{}/mountinfo", child.0.id())).unwrap();
    let options = |point: &str| -> String {
        mounts
            .lines()
            .map(|l| l.split(' ').collect::<Vec<_>>())
            .filter(|f| f.len() > 5 && f[4] == point)
            .map(|f| f[5].to_string())
            .next_back()
            .unwrap_or_else(|| panic!("no mount at {point}:\n{mounts}"))
    };
    assert!(options("/").starts_with("ro"), "{mounts}");
    assert!(
        options("/var/lib/healthchecker").starts_with("rw"),
        "{mounts}"
    );
    assert!(terminate(&mut child.0).success());

    // An upgrade (the package installed over itself) keeps the edited
    // conffile and the administrator's enablement.
    let conf = root.join("etc/healthchecker/healthchecker.toml");
    let edited = "bind = \"127.0.0.1:8484\"\n";
    std::fs::write(&conf, edited).unwrap();
    run(chroot(&root).args(["systemctl", "enable", "healthchecker.service"]));
    run(chroot(&root).args(["dpkg", "-i", "/tmp/healthchecker.deb"]));
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), edited);
    let enabled = stdout(chroot(&root).args(["systemctl", "is-enabled", "healthchecker.service"]));
    assert_eq!(enabled.trim(), "enabled");

    // Removal keeps the edited conffile; purge removes it.
    run(chroot(&root).args(["dpkg", "-r", "healthchecker"]));
    assert!(!root.join("usr/bin/healthchecker").exists());
    assert!(conf.exists(), "dpkg -r keeps the conffile");
    run(chroot(&root).args(["dpkg", "--purge", "healthchecker"]));
    assert!(!conf.exists(), "dpkg --purge removes the conffile");
}

// ---------------------------------------------------------------------
// The container image, built from the Debian root and run with podman.

/// Runs podman with the options this machine needs: runc (crun refuses a
/// hybrid cgroup hierarchy) and limits at or below our own (podman's
/// defaults raise them, which needs CAP_SYS_RESOURCE).
fn podman() -> Command {
    Command::new("podman")
}

fn hard_limit(resource: &str) -> u64 {
    let out = stdout(Command::new("sh").args(["-c", &format!("ulimit -H{resource}")]));
    out.trim().parse().unwrap_or(4096)
}

/// Removes what the test made in podman's storage, whatever happens.
struct PodmanCleanup {
    container: String,
    volume: String,
    images: Vec<String>,
}

impl Drop for PodmanCleanup {
    fn drop(&mut self) {
        let _ = podman()
            .args(["rm", "-f", "-t", "0", &self.container])
            .output();
        let _ = podman().args(["volume", "rm", "-f", &self.volume]).output();
        for i in &self.images {
            let _ = podman().args(["rmi", "-f", i]).output();
        }
    }
}

#[test]
fn the_container_image_runs_unprivileged_with_its_database_on_a_volume_and_reports_healthy() {
    let have_podman = Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        have_podman,
        "podman is missing: scripts/test.sh installs it (apt-get install podman runc)"
    );
    let id = std::process::id();
    let guard = PodmanCleanup {
        container: format!("healthchecker-test-{id}"),
        volume: format!("healthchecker-test-{id}"),
        images: vec![
            format!("localhost/healthchecker-test:{id}"),
            format!("localhost/healthchecker-test-base:{id}"),
        ],
    };
    let (image, base) = (&guard.images[0], &guard.images[1]);

    // The base: the Debian root as an image (base images cannot be pulled here).
    let root = debian_root();
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let tar = work.path().join("base.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    run(podman().args(["import", "-q"]).arg(&tar).arg(base));

    // The build context as .dockerignore leaves it: the Containerfile and
    // the binary (stripped, as a release build would be small).
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(ctx.join("target/release")).unwrap();
    std::fs::copy(
        repo().join("packaging/Containerfile"),
        ctx.join("Containerfile"),
    )
    .unwrap();
    run(Command::new("strip")
        .arg("-o")
        .arg(ctx.join("target/release/healthchecker"))
        .arg(env!("CARGO_BIN_EXE_healthchecker")));
    // chroot isolation for RUN: no OCI runtime (and so no cgroups) needed.
    run(podman()
        .args([
            "build",
            "-q",
            "--isolation",
            "chroot",
            "--format",
            "docker",
            "--build-arg",
        ])
        .arg(format!("BASE={base}"))
        .args(["-t", image, "-f"])
        .arg(ctx.join("Containerfile"))
        .arg(&ctx));
    let cfg = stdout(podman().args([
        "image",
        "inspect",
        "--format",
        "{{.Config.User}} {{json .Config.Volumes}} {{json .Config.Healthcheck.Test}}",
        image,
    ]));
    assert!(cfg.starts_with("healthchecker:healthchecker "), "{cfg}");
    assert!(cfg.contains("/var/lib/healthchecker"), "{cfg}");
    assert!(cfg.contains("health"), "{cfg}");

    // Started in its own network namespace (loopback only), mDNS off.
    let nofile = hard_limit("n");
    run(podman().args(["volume", "create", &guard.volume]));
    run(podman()
        .args([
            "run",
            "-d",
            "--name",
            &guard.container,
            "--runtime",
            "runc",
            "--network",
            "none",
        ])
        .arg(format!("--ulimit=nofile={nofile}:{nofile}"))
        .arg("--ulimit=nproc=4096:4096")
        .args(["-e", "HEALTHCHECKER_NO_MDNS=true", "-v"])
        .arg(format!("{}:/var/lib/healthchecker", guard.volume))
        .arg(image));
    // The image's HEALTHCHECK, run by podman inside the container, passes.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let hc = podman()
            .args(["healthcheck", "run", &guard.container])
            .output()
            .unwrap();
        if hc.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "HEALTHCHECK never passed: {hc:?}\n{}",
            String::from_utf8_lossy(
                &podman()
                    .args(["logs", &guard.container])
                    .output()
                    .unwrap()
                    .stderr
            )
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let health = stdout(podman().args([
        "inspect",
        "--format",
        "{{.State.Health.Status}}",
        &guard.container,
    ]));
    assert_eq!(health.trim(), "healthy");
    // /health answered from inside the container.
    let body = stdout(podman().args(["exec", &guard.container, "healthchecker", "health"]));
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(v["status"], "pass", "{body}");
    // The daemon (pid 1) is not root.
    let status = stdout(podman().args(["exec", &guard.container, "cat", "/proc/1/status"]));
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid.split_whitespace().skip(1).all(|u| u == "8484"), "{uid}");
    // The database is on the volume.
    let mount = stdout(podman().args([
        "volume",
        "inspect",
        "--format",
        "{{.Mountpoint}}",
        &guard.volume,
    ]));
    assert!(
        Path::new(mount.trim()).join("healthchecker.db").exists(),
        "no database in {mount}"
    );
    // SIGTERM (podman stop) ends it cleanly.
    run(podman().args(["stop", "-t", "15", &guard.container]));
    let code = stdout(podman().args([
        "inspect",
        "--format",
        "{{.State.ExitCode}}",
        &guard.container,
    ]));
    assert_eq!(code.trim(), "0");
    drop(guard);
}
