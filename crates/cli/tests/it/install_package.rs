//! The ways in that need a Debian root (SPEC section 20): the Debian
//! package installed into a root made by debootstrap, and the container
//! image built from it with podman. Helpers shared with the lighter
//! install tests are in `install.rs`; the set-up is described there.

use crate::install::{health, notify_socket, recv, repo, run, spawn_listening, stdout, terminate};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
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
pub(crate) fn debian_root() -> PathBuf {
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
