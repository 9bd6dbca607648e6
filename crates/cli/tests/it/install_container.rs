//! The container image (SPEC section 20), built from the Debian root of
//! `install_package.rs` and run with podman (runc) as an unprivileged user.

use crate::install::{repo, run, stdout};
use crate::install_package::debian_root;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

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
