//! Dependencies (SPEC section 14): a parent and its dependents failing
//! together give the parent's message only, listing them; after the parent
//! recovers, a dependent still failing notifies and one that recovered
//! sends nothing; cycles and unknown parents are refused.

use healthchecker_testkit::{wait_for, Answer, HttpTarget, Mode, Receiver, TestDaemon};
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(40);

async fn setup(d: &TestDaemon, rx: &Receiver) {
    d.add_channel(json!({"name": "hook", "kind": "webhook", "url": rx.url("/in"), "secret": "k", "default": true})).await;
}

async fn service(d: &TestDaemon, name: &str, url: String, parents: &[&str]) {
    let (s, v) = d
        .register(json!({"name": name, "url": url, "depends_on": parents,
                         "interval": 5, "timeout": 2, "healthy_threshold": 2, "unhealthy_threshold": 2}))
        .await;
    assert_eq!(s, 201, "{v}");
}

#[tokio::test]
async fn a_parent_and_ten_dependents_failing_together_give_one_message() {
    let rx = Receiver::start(Answer::Ok).await;
    let down = HttpTarget::start(Mode::Fail("no route".into())).await;
    let d = TestDaemon::start_with(|c| c.notify_min_gap = Duration::ZERO).await;
    setup(&d, &rx).await;
    service(&d, "router", down.url("/"), &[]).await;
    for i in 0..10 {
        service(
            &d,
            &format!("dev-{i}"),
            down.url(&format!("/{i}")),
            &["router"],
        )
        .await;
    }
    let got = rx.wait_accepted(1, Duration::from_secs(60)).await;
    let v = got[0].json();
    assert_eq!(
        (v["service"].as_str(), v["state"].as_str()),
        (Some("router"), Some("unhealthy")),
        "{v}"
    );
    let deps: Vec<&str> = v["dependents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x.as_str())
        .collect();
    assert_eq!(deps.len(), 10, "{v}");
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .contains("Affected dependents (10)"),
        "{v}"
    );
    // The dependents stay held, with the reason, and send nothing.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(rx.received().len(), 1, "the parent's message only");
    let (_, n) = d.get("/api/v1/notifications?status=held").await;
    let held = n["deliveries"].as_array().unwrap();
    assert_eq!(held.len(), 10, "{n}");
    assert!(
        held.iter()
            .all(|r| r["last_error"] == "suppressed: parent router is unhealthy"),
        "{n}"
    );
    d.stop().await;
}

#[tokio::test]
async fn after_the_parent_recovers_only_a_dependent_still_failing_notifies() {
    let rx = Receiver::start(Answer::Ok).await;
    let parent = HttpTarget::start(Mode::Fail("no route".into())).await;
    let stays = HttpTarget::start(Mode::Fail("disk".into())).await;
    let heals = HttpTarget::start(Mode::Fail("no route".into())).await;
    let d = TestDaemon::start_with(|c| c.notify_min_gap = Duration::ZERO).await;
    setup(&d, &rx).await;
    service(&d, "router", parent.url("/"), &[]).await;
    service(&d, "nas", stays.url("/"), &["router"]).await;
    service(&d, "printer", heals.url("/"), &["router"]).await;
    for n in ["router", "nas", "printer"] {
        d.wait_state(n, "unhealthy", WAIT).await;
    }
    rx.wait_accepted(1, WAIT).await;
    // The printer comes back while the router is still down; then the router.
    heals.set(Mode::Pass);
    d.wait_state("printer", "healthy", WAIT).await;
    parent.set(Mode::Pass);
    d.wait_state("router", "healthy", WAIT).await;
    let msgs = wait_for(
        "the recovery and the dependent still failing",
        WAIT,
        || async {
            let a = rx.accepted();
            (a.len() >= 3).then_some(a)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let all: Vec<Value> = rx.accepted().iter().map(|r| r.json()).collect();
    let said: Vec<(String, String)> = all
        .iter()
        .map(|v| {
            (
                v["service"].as_str().unwrap().to_string(),
                v["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(msgs.len(), 3, "{said:?}");
    assert_eq!(all.len(), 3, "{said:?}");
    assert!(
        said.contains(&("router".into(), "healthy".into())),
        "{said:?}"
    );
    assert!(
        said.contains(&("nas".into(), "unhealthy".into())),
        "{said:?}"
    );
    assert!(!said.iter().any(|(s, _)| s == "printer"), "{said:?}");
    d.stop().await;
}

#[tokio::test]
async fn cycles_and_unknown_parents_are_refused() {
    let d = TestDaemon::start().await;
    let url = "http://127.0.0.1:9/health";
    let (s, v) = d
        .register(json!({"name": "a", "url": url, "depends_on": ["ghost"]}))
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("depends_on")),
        "{v}"
    );
    assert_eq!(d.register(json!({"name": "a", "url": url})).await.0, 201);
    assert_eq!(
        d.register(json!({"name": "b", "url": url, "depends_on": ["a"]}))
            .await
            .0,
        201
    );
    let (s, v) = d
        .register(json!({"name": "a", "url": url, "depends_on": ["b"]}))
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("depends_on")),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("cycle"),
        "{v}"
    );
    let (s, v) = d
        .register(json!({"name": "c", "url": url, "depends_on": ["c"]}))
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("depends_on")),
        "{v}"
    );
    d.stop().await;
}
