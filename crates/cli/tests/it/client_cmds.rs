//! The client commands against a real daemon process, as a shell user runs them.

use crate::daemon::{bin, Proc};
use healthchecker_testkit::closed_port;
use std::process::Output;

fn run(args: &[&str], server: &str) -> Output {
    bin()
        .args(args)
        .env("HEALTHCHECKER_SERVER", server)
        .output()
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn an_operator_manages_services_from_the_shell() {
    let dir = tempfile::tempdir().unwrap();
    let p = Proc::start(&dir.path().join("hc.db"), &[]);
    let s = p.url.as_str();

    let o = run(
        &[
            "monitor",
            "nas web",
            "http://127.0.0.1:9/",
            "--email",
            "me@example.com",
            "--interval",
            "10",
            "--healthy",
            "3",
        ],
        s,
    );
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert!(
        text(&o).0.contains("now monitoring \"nas web\""),
        "{:?}",
        text(&o)
    );
    let o = run(
        &[
            "monitor",
            "nas web",
            "http://127.0.0.1:9/",
            "--interval",
            "10",
        ],
        s,
    );
    assert!(text(&o).0.starts_with("updated"), "{:?}", text(&o));
    let o = run(&["monitor", "router", "tcp://127.0.0.1:9", "--json"], s);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["protocol"], "TCP");

    let o = run(&["list"], s);
    let (out, _) = text(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NAME")
            && lines[0].contains("STATE")
            && lines[0].contains("TARGET")
            && lines[0].contains("LAST CHECK")
            && lines[0].contains("UPTIME"),
        "{out}"
    );
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[1].starts_with("nas web") && lines[1].contains("http://127.0.0.1:9/"),
        "{out}"
    );
    let o = run(&["list", "--json"], s);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);

    let o = run(&["info", "nas web", "--json"], s);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["healthy_threshold"].as_u64(), v["interval"].as_u64()),
        (Some(10), Some(10))
    );
    let o = run(&["info", "nas web"], s);
    assert!(text(&o).0.contains("target:      http://127.0.0.1:9/\n"));

    let o = run(&["pause", "nas web"], s);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o).0.contains("monitoring paused"));
    assert!(text(&run(&["list"], s)).0.contains("(paused)"));
    assert_eq!(run(&["resume", "nas web"], s).status.code(), Some(0));
    assert_eq!(run(&["stop", "nas web"], s).status.code(), Some(0));

    // Refused by the daemon: exit 1 with its message.
    let o = run(&["info", "nas web"], s);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).1.contains("no service named \"nas web\""),
        "{:?}",
        text(&o)
    );
    let o = run(&["monitor", "x", "http://h/", "--interval", "1"], s);
    assert_eq!(o.status.code(), Some(1));
    let (_, err) = text(&o);
    assert!(
        err.contains("5 to 300") && err.contains("field: interval"),
        "{err}"
    );
    let o = run(&["monitor", "x", "gopher://h/"], s);
    assert_eq!(o.status.code(), Some(1));

    // Usage errors: exit 2.
    assert_eq!(run(&["monitor", "only-a-name"], s).status.code(), Some(2));
    assert_eq!(run(&["frobnicate"], s).status.code(), Some(2));
    assert_eq!(
        run(&["list", "--server", "not a url"], s).status.code(),
        Some(2)
    );
    // Unreachable daemon: exit 3.
    let o = run(&["list"], &format!("http://127.0.0.1:{}", closed_port()));
    assert_eq!(o.status.code(), Some(3));
    assert!(text(&o).1.contains("cannot reach the daemon"));
    // --server beats the environment.
    let o = bin()
        .args(["list", "--json", "--server", s])
        .env("HEALTHCHECKER_SERVER", "http://127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
}

#[test]
fn a_token_goes_only_to_a_daemon_the_user_named() {
    // No --server and no HEALTHCHECKER_SERVER: the daemon would be found
    // over mDNS, where anyone on the LAN can answer. The command refuses
    // before it looks (no mDNS query leaves this test).
    let o = bin()
        .args(["list", "--token", "admin-token-0123456789abcdef"])
        .env_remove("HEALTHCHECKER_SERVER")
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out} {err}");
    assert!(err.contains("--server"), "{err}");
    assert!(!err.contains("admin-token-0123456789abcdef"), "{err}");
}

#[test]
fn list_shows_every_service_across_pages() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hc.db");
    healthchecker_testkit::seed_services(&db, 1_500);
    let p = Proc::start(&db, &[]);
    let o = run(&["list", "--json"], &p.url);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 1_500);
    assert_eq!(names[1_499], "svc-01499");
}

#[test]
fn monitor_passes_channels_tags_and_parents_in_the_registration() {
    let dir = tempfile::tempdir().unwrap();
    let p = Proc::start(&dir.path().join("hc.db"), &[]);
    let s = p.url.as_str();
    let o = run(
        &[
            "channel",
            "add",
            "phone",
            "--kind",
            "ntfy",
            "--url",
            "http://127.0.0.1:9/alerts",
        ],
        s,
    );
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let o = run(&["monitor", "router", "tcp://127.0.0.1:9"], s);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let o = run(
        &[
            "monitor",
            "nas",
            "tcp://127.0.0.1:9",
            "--channel",
            "phone",
            "--tag",
            "media",
            "--tag",
            "storage",
            "--depends-on",
            "router",
            "--json",
        ],
        s,
    );
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["channels"], serde_json::json!(["phone"]), "{v}");
    assert_eq!(v["tags"], serde_json::json!(["media", "storage"]), "{v}");
    assert_eq!(v["depends_on"], serde_json::json!(["router"]), "{v}");
    // The daemon checks them like any registration: an unknown parent is
    // refused, naming the field.
    let o = run(
        &["monitor", "tv", "tcp://127.0.0.1:9", "--depends-on", "nope"],
        s,
    );
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(text(&o).1.contains("depends_on"), "{:?}", text(&o));
}
