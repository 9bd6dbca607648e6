//! Private network namespaces for tests that send multicast (mDNS).
//!
//! mDNS must never run in the machine's own namespace (its joins and
//! announcements would reach the real network). A test moves a fresh
//! thread into a new network namespace with `unshare(CLONE_NEWNET)`, brings
//! `lo` up with multicast on, and runs there; threads and child processes
//! it starts inherit the namespace.

use std::future::Future;
use std::process::Command;

/// Runs a command (e.g. `ip`) in the current thread's namespace; panics on failure.
pub fn sh(args: &[&str]) {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(st.success(), "{args:?} failed: {st}");
}

/// Moves the calling thread into a new network namespace with `lo` up and
/// multicast on. `Err` with the reason when the system does not allow it.
pub fn enter_private_netns() -> Result<(), String> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("unshare(CLONE_NEWNET) not permitted here: {e}"))?;
    // No IPv6 autoconfiguration chatter on test interfaces.
    let _ = Command::new("sysctl")
        .args([
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ])
        .status();
    sh(&["ip", "link", "set", "lo", "up"]);
    sh(&["ip", "link", "set", "lo", "multicast", "on"]);
    Ok(())
}

/// Runs `f` on a new thread inside a private network namespace, on its own
/// tokio runtime. Returns `None` after printing why when namespaces are not
/// permitted on this machine; under CI it fails instead ([`unavailable`]).
pub fn in_private_netns<F, Fut, T>(f: F) -> Option<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let handle = std::thread::spawn(move || {
        if let Err(why) = enter_private_netns() {
            unavailable(&why);
            return None;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Some(rt.block_on(f()))
    });
    match handle.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Runs `f` on a new thread inside a private mount namespace, with a tmpfs
/// of `size` (e.g. "4m") mounted at a new temporary directory passed to `f`.
/// Child processes inherit the namespace. `None` when not permitted (a
/// failure under CI, [`unavailable`]).
pub fn with_small_tmpfs<F, Fut, T>(size: &'static str, f: F) -> Option<T>
where
    F: FnOnce(std::path::PathBuf) -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    use nix::mount::{mount, MsFlags};
    let handle = std::thread::spawn(move || {
        if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS) {
            unavailable(&format!("unshare(CLONE_NEWNS) not permitted here: {e}"));
            return None;
        }
        // Keep our mounts out of the machine's namespace.
        if let Err(e) = mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        ) {
            unavailable(&format!("cannot make / private: {e}"));
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir").keep();
        if let Err(e) = mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            MsFlags::empty(),
            Some(format!("size={size}").as_str()),
        ) {
            unavailable(&format!("cannot mount tmpfs: {e}"));
            return None;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let out = rt.block_on(f(dir.clone()));
        let _ = nix::mount::umount(&dir);
        let _ = std::fs::remove_dir(&dir);
        Some(out)
    });
    match handle.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// What a test does when namespaces are not permitted: under CI (`CI` set)
/// it fails, because a test that cannot run must not pass; elsewhere it
/// prints why and is skipped.
pub fn unavailable(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("this test needs Linux namespaces, and CI must run it: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

/// Runs `f` on a new thread inside private network and mount namespaces,
/// with `lo` up and `/etc/resolv.conf` reading `resolv_conf` (a bind mount
/// seen only there), on a multi-threaded tokio runtime: its workers and
/// blocking threads are started from that thread and so inherit both
/// namespaces. `Err` with the reason when the system does not allow it
/// (see [`unavailable`]).
pub fn with_private_resolv_conf<F, Fut, T>(resolv_conf: &str, f: F) -> Result<T, String>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    use nix::mount::{mount, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    let conf = tempfile::NamedTempFile::new().map_err(|e| format!("temp file: {e}"))?;
    std::fs::write(conf.path(), resolv_conf).map_err(|e| format!("temp file: {e}"))?;
    let handle = std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS)
            .map_err(|e| format!("unshare(CLONE_NEWNET | CLONE_NEWNS) not permitted here: {e}"))?;
        // Keep the bind mount out of the machine's namespace.
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| format!("cannot make / private: {e}"))?;
        mount(
            Some(conf.path()),
            "/etc/resolv.conf",
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("cannot bind-mount /etc/resolv.conf: {e}"))?;
        sh(&["ip", "link", "set", "lo", "up"]);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let out = rt.block_on(f());
        // Hung work (a lookup that never returns) must not hold up the test.
        rt.shutdown_background();
        drop(conf);
        Ok(out)
    });
    match handle.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
