//! `healthchecker channel add|list|test|rm` as a shell user runs them, and
//! a channel delivery that survives a receiver outage and `kill -9`.

use crate::daemon::{bin, Proc};
use healthchecker_testkit::{closed_port, wait_for, Answer, Receiver};
use serde_json::{json, Value};
use std::process::Output;
use std::time::Duration;

fn run(args: &[&str], server: &str) -> Output {
    bin()
        .args(args)
        .env("HEALTHCHECKER_SERVER", server)
        .env_remove("HEALTHCHECKER_CHANNEL_SECRET")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_manages_channels_from_the_shell() {
    let rx = Receiver::start(Answer::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "shh-its-a-secret\n").unwrap();
    let p = Proc::start(&dir.path().join("hc.db"), &[]);
    let s = p.url.clone();
    let url = rx.url("/hook");
    let secret_path = secret.to_str().unwrap().to_string();
    let o = tokio::task::spawn_blocking({
        let s = s.clone();
        move || {
            let args = [
                "channel",
                "add",
                "ops",
                "--kind",
                "webhook",
                "--url",
                &url,
                "--secret-file",
                &secret_path,
                "--default",
            ];
            run(&args, &s)
        }
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("channel ops created"), "{}", text(&o));
    let (o_list, o_test, o_bad) = tokio::task::spawn_blocking({
        let s = s.clone();
        move || {
            (
                run(&["channel", "list"], &s),
                run(&["channel", "test", "ops"], &s),
                run(
                    &[
                        "channel", "add", "x", "--kind", "webhook", "--url", "ftp://h",
                    ],
                    &s,
                ),
            )
        }
    })
    .await
    .unwrap();
    let listed = text(&o_list);
    assert!(
        listed.contains("ops  webhook") && listed.contains("default"),
        "{listed}"
    );
    assert!(!listed.contains("shh-its-a-secret"));
    assert_eq!(o_test.status.code(), Some(0), "{}", text(&o_test));
    assert!(text(&o_test).contains("delivered"));
    let got = rx.accepted();
    assert_eq!(got.len(), 1);
    assert!(got[0]
        .header("x-healthchecker-signature")
        .is_some_and(|s| s.starts_with("sha256=")));
    assert_eq!(o_bad.status.code(), Some(1), "{}", text(&o_bad));
    assert!(text(&o_bad).contains("url"), "{}", text(&o_bad));
    rx.set(Answer::Status(500));
    let (o_fail, o_rm, o_list) = tokio::task::spawn_blocking(move || {
        (
            run(&["channel", "test", "ops"], &s),
            run(&["channel", "rm", "ops"], &s),
            run(&["channel", "list", "--json"], &s),
        )
    })
    .await
    .unwrap();
    assert_eq!(o_fail.status.code(), Some(1));
    assert!(text(&o_fail).contains("HTTP 500"), "{}", text(&o_fail));
    assert_eq!(o_rm.status.code(), Some(0), "{}", text(&o_rm));
    let v: Value = serde_json::from_slice(&o_list.stdout).unwrap();
    assert_eq!(v, json!([]));
    drop(p);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_delivery_is_lost_to_a_receiver_outage_and_a_crash() {
    let rx = Receiver::start(Answer::Status(503)).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hc.db");
    let args = ["--notify-min-gap", "0"];
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let p = Proc::start(&db, &args);
    let r = http
        .post(format!("{}/api/v1/channels", p.url))
        .json(&json!({"name": "hook", "kind": "webhook", "url": rx.url("/in"), "secret": "k", "default": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .post(format!("{}/api/v1/services", p.url))
        .json(
            &json!({"name": "web", "url": format!("tcp://127.0.0.1:{}", closed_port()),
                      "interval": 5, "timeout": 2, "unhealthy_threshold": 2}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Two checks 5 s apart, then the delivery: ~10 s alone, but three
    // times that with the suite's cluster and install tests on two cores.
    wait_for("a refused attempt", Duration::from_secs(60), || async {
        (!rx.received().is_empty()).then_some(())
    })
    .await;
    p.kill9();
    rx.set(Answer::Ok);
    let p = Proc::start(&db, &args);
    let got = rx.wait_accepted(1, Duration::from_secs(40)).await;
    let v = got[0].json();
    assert_eq!(
        (v["service"].as_str(), v["state"].as_str()),
        (Some("web"), Some("unhealthy"))
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut keys: Vec<String> = rx
        .accepted()
        .iter()
        .filter_map(|r| r.header("idempotency-key").map(str::to_string))
        .collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "each delivery id is accepted once");
    drop(p);
}

#[test]
fn an_operator_silences_a_service_from_the_shell() {
    let dir = tempfile::tempdir().unwrap();
    let p = Proc::start(&dir.path().join("hc.db"), &[]);
    let s = p.url.as_str();
    let o = run(&["monitor", "nas", "tcp://127.0.0.1:9"], s);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = run(
        &["silence", "nas", "--for", "2h", "--comment", "upgrade"],
        s,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).starts_with("silence 1 until "), "{}", text(&o));
    let o = run(&["silence", "--list"], s);
    assert!(
        text(&o).contains("[\"nas\"]") && text(&o).contains("active"),
        "{}",
        text(&o)
    );
    let o = run(&["silence", "--for", "2h"], s);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = run(&["silence", "nas", "--for", "soon"], s);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = run(&["silence", "--delete", "1"], s);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = run(&["silence", "--list"], s);
    assert!(!text(&o).contains("nas"), "{}", text(&o));
}
