//! A nameserver that never answers (a dead home router) delays only the
//! checks that need it (SPEC section 12): `/health` and the API keep
//! answering, and a service on a literal address stays healthy.
//!
//! The daemon runs in private network and mount namespaces whose
//! `/etc/resolv.conf` names 127.0.0.53, where a UDP socket swallows every
//! query. Nothing leaves the machine's namespace.

use healthchecker_testkit::netns::{unavailable, with_private_resolv_conf};
use healthchecker_testkit::{HttpTarget, Mode, TestDaemon};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// More hung names than tokio's blocking pool has threads (512): with
/// `getaddrinfo` on that pool, they fill it.
const HUNG: usize = 600;

/// The longest `/health` or a single-service read may take.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// Two check intervals (5 s), and the time for the first checks to start.
const WATCH_FOR: Duration = Duration::from_secs(13);

/// Reads every query sent to 127.0.0.53:53 and answers none; counts them.
async fn swallowing_nameserver() -> Arc<AtomicU64> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.53:53")
        .await
        .expect("bind 127.0.0.53:53 in the private namespace");
    let seen = Arc::new(AtomicU64::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while sock.recv_from(&mut buf).await.is_ok() {
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
    seen
}

/// GETs `path`, failing the test when it takes longer than [`ANSWER_WITHIN`].
async fn get_quickly(
    d: &TestDaemon,
    path: &str,
    slowest: &mut Duration,
) -> (u16, serde_json::Value) {
    let started = Instant::now();
    let r = tokio::time::timeout(ANSWER_WITHIN, d.get(path)).await;
    let took = started.elapsed();
    *slowest = (*slowest).max(took);
    match r {
        Ok(v) => v,
        Err(_) => panic!("GET {path} did not answer within {ANSWER_WITHIN:?} (waited {took:?})"),
    }
}

#[test]
fn a_nameserver_that_never_answers_delays_only_the_checks_that_need_it() {
    let ran = with_private_resolv_conf("nameserver 127.0.0.53\n", || async {
        let queries = swallowing_nameserver().await;
        let target = HttpTarget::start(Mode::Pass).await;
        let d = TestDaemon::start_with(|c| c.register_rate_limit = 0).await;

        let (st, body) = d
            .register(json!({"name": "literal", "url": target.url("/"),
                "interval": 5, "timeout": 4, "healthy_threshold": 2}))
            .await;
        assert_eq!(st, 201, "{body}");
        for i in 0..HUNG {
            let (st, body) = d
                .register(json!({"name": format!("hung-{i}"),
                    "url": format!("http://svc-{i}.hang.test:80/"),
                    "interval": 5, "timeout": 4}))
                .await;
            assert_eq!(st, 201, "hung-{i}: {body}");
        }

        // For two check intervals, /health and the API answer at once.
        let started = Instant::now();
        let mut healthy_since = None;
        let mut polls = 0;
        let mut slowest = Duration::ZERO;
        while started.elapsed() < WATCH_FOR {
            let (st, health) = get_quickly(&d, "/health", &mut slowest).await;
            assert_eq!(st, 200, "{health}");
            let (st, literal) = get_quickly(&d, "/api/v1/services/literal", &mut slowest).await;
            assert_eq!(st, 200, "{literal}");
            let (_, hung) = get_quickly(&d, "/api/v1/services/hung-7", &mut slowest).await;
            assert_eq!(hung["name"], "hung-7");
            match (literal["state"].as_str(), healthy_since) {
                (Some("healthy"), None) => healthy_since = Some(started.elapsed()),
                (Some("healthy"), Some(_)) => {}
                (state, Some(at)) => {
                    panic!("literal left healthy ({state:?}) after {at:?}: {literal}")
                }
                (_, None) => {}
            }
            polls += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let healthy_since = healthy_since.expect("the literal-address service became healthy");
        eprintln!(
            "{polls} polls, slowest answer {slowest:?}; literal healthy after {healthy_since:?}"
        );

        // The hung services fail for DNS, not for anything else.
        let mut checked = 0;
        let mut reasons = std::collections::BTreeMap::<String, usize>::new();
        for i in 0..HUNG {
            let (_, v) = get_quickly(&d, &format!("/api/v1/services/hung-{i}"), &mut slowest).await;
            let Some(last) = v["last_check"].as_object() else {
                continue;
            };
            checked += 1;
            let reason = last["reason"].as_str().unwrap_or("");
            let kind = reason.replace(&format!("svc-{i}."), "svc-N.");
            *reasons.entry(kind).or_default() += 1;
            assert_eq!(last["result"], "fail", "hung-{i}: {v}");
            assert!(
                reason.starts_with(&format!("DNS lookup of svc-{i}.hang.test failed: "))
                    || reason.starts_with("timeout after"),
                "hung-{i} failed for another reason: {reason}"
            );
        }
        eprintln!("last reasons of the hung services: {reasons:?}");
        // The lookup itself gives up first and says so (a bare `timeout
        // after 4s` means the lookup outlived the check: getaddrinfo).
        let named = reasons
            .iter()
            .filter(|(r, _)| r.starts_with("DNS lookup of "))
            .map(|(_, n)| n)
            .sum::<usize>();
        assert!(
            named * 10 >= checked * 9,
            "most hung checks name the DNS lookup: {reasons:?}"
        );
        assert_eq!(
            checked, HUNG,
            "every hung service was checked at least once"
        );
        assert!(
            queries.load(Ordering::Relaxed) >= HUNG as u64,
            "the lookups reached the swallowing nameserver ({} queries)",
            queries.load(Ordering::Relaxed)
        );
        d.stop().await;
    });
    if let Err(why) = ran {
        unavailable(&why);
    }
}
