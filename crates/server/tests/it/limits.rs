//! The hostile-LAN limits (SPEC section 12): every state-changing route is
//! rate-limited, connections are capped per client, a response nobody reads
//! is dropped, the service list comes in pages, events per service and
//! given-up mail are bounded.

use healthchecker_core::{CheckResult, HealthState, ServiceId, UnixMs};
use healthchecker_server::store::{
    CheckWrite, NotifyWrite, Store, TransitionWrite, Writer, GIVE_UP_UNSENT_MS,
    MAX_EVENTS_PER_SERVICE, RETAIN_FAILED_MAIL_MS,
};
use healthchecker_testkit::{closed_unanswered, seed_services_in, wait_for, TestDaemon};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn every_state_changing_route_is_rate_limited() {
    if healthchecker_testkit::sqlite_only(
        "six changes must reach the limiter within its one-second refill; on \
         PostgreSQL under the suite's load the five before it take longer (each \
         a committed transaction); the limiter is in front of the store, the \
         same code on both",
    ) {
        return;
    }
    // 1 change a second, bursts of 5.
    let d = TestDaemon::start_with(|c| c.register_rate_limit = 1).await;
    let call = |m: reqwest::Method, path: &str| d.http.request(m, d.at(path)).send();
    let (st, _) = d
        .register(json!({"name": "a", "url": "tcp://127.0.0.1:9", "interval": 300}))
        .await;
    assert_eq!(st, 201);
    use reqwest::Method;
    let sequence = [
        (Method::POST, "/api/v1/services/a/pause"),
        (Method::POST, "/api/v1/services/a/resume"),
        (Method::GET, "/healthchecker/pause?appname=a"),
        (Method::GET, "/healthchecker/resume?appname=a"),
    ];
    for (m, path) in sequence {
        let r = call(m, path).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // The sixth change in the burst: refused, whatever the route.
    let r = call(Method::DELETE, "/api/v1/services/a").await.unwrap();
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limited", "{v}");
    assert_eq!(
        call(Method::GET, "/healthchecker/stop?appname=a")
            .await
            .unwrap()
            .status(),
        429
    );
    // Reads are not counted.
    assert_eq!(d.get("/api/v1/services/a").await.0, 200);
    // The rate refills: soon a change is accepted again (a refused one
    // costs nothing).
    let st = wait_for(
        "the rate limit to refill",
        Duration::from_secs(5),
        || async {
            let r = call(Method::DELETE, "/api/v1/services/a").await.unwrap();
            (r.status() != 429).then_some(r.status())
        },
    )
    .await;
    assert_eq!(st, 204);
    d.stop().await;
}

#[tokio::test]
async fn the_service_list_comes_in_pages_with_a_next_link() {
    let d = TestDaemon::start_with(|c| seed_services_in(c, 2_345)).await;
    let (st, first) = d.get("/api/v1/services").await;
    assert_eq!(st, 200);
    assert_eq!(first["count"], 1000);
    assert_eq!(first["services"].as_array().unwrap().len(), 1000);
    let r = d.http.get(d.at("/api/v1/services")).send().await.unwrap();
    let link = r.headers()["link"].to_str().unwrap().to_string();
    assert_eq!(
        link,
        format!("<{}>; rel=\"next\"", first["next"].as_str().unwrap())
    );
    // Following `next` lists every service once, in name order.
    let mut names = Vec::new();
    let mut page = first;
    loop {
        for s in page["services"].as_array().unwrap() {
            names.push(s["name"].as_str().unwrap().to_string());
        }
        let Some(next) = page["next"].as_str() else {
            break;
        };
        let (st, v) = d.get(next).await;
        assert_eq!(st, 200, "{next}");
        page = v;
    }
    let expected: Vec<String> = (0..2_345).map(|i| format!("svc-{i:05}")).collect();
    assert_eq!(names, expected);
    // Smaller pages keep the filter in the link.
    let (_, v) = d.get("/api/v1/services?q=svc-0001&limit=4").await;
    assert_eq!(v["count"], 4);
    let next = v["next"].as_str().unwrap();
    assert!(
        next.contains("q=svc-0001") && next.contains("after=svc-00013"),
        "{next}"
    );
    let (_, v) = d.get(next).await;
    assert_eq!(v["services"][0]["name"], "svc-00014");
    // More than the maximum is refused, as for the other lists.
    let (st, v) = d.get("/api/v1/services?limit=1001").await;
    assert_eq!((st, v["error"]["field"].as_str()), (400, Some("limit")));
    d.stop().await;
}

/// Opens a connection to `addr` from the loopback address `from`.
async fn connect_from(from: &str, addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(format!("{from}:0").parse().unwrap()).unwrap();
    s.connect(addr).await.unwrap()
}

#[tokio::test]
async fn connections_are_capped_per_client_address() {
    let d = TestDaemon::start_with(|c| c.max_connections_per_client = 2).await;
    let addr = d.daemon.as_ref().unwrap().addr;
    let _a = connect_from("127.0.0.1", addr).await;
    let _b = connect_from("127.0.0.1", addr).await;
    // Once both are accepted, a third from the same address is closed at
    // once, unanswered...
    wait_for(
        "a third connection to be refused",
        Duration::from_secs(5),
        || async {
            closed_unanswered(connect_from("127.0.0.1", addr).await)
                .await
                .then_some(())
        },
    )
    .await;
    // ...while another client is served.
    let mut other = connect_from("127.0.0.2", addr).await;
    other
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), other.read_to_end(&mut buf))
        .await
        .expect("answered")
        .unwrap();
    assert!(
        buf.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    d.stop().await;
}

#[tokio::test]
async fn a_response_the_client_does_not_read_is_dropped_after_30_s() {
    let d = TestDaemon::start().await;
    let addr = d.daemon.as_ref().unwrap().addr;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(addr).await.unwrap();
    // Pipelined requests for a large document, and never a byte read:
    // the daemon's writes stall once the socket buffers are full.
    let (_unread, mut w) = stream.into_split();
    let started = tokio::time::Instant::now();
    let writer = tokio::spawn(async move {
        let req = b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n";
        loop {
            w.write_all(req).await?;
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    });
    // Dropped by the daemon: our writes fail (reset) instead of blocking.
    let ended = tokio::time::timeout(Duration::from_secs(50), writer)
        .await
        .expect("the daemon dropped the connection within 50 s")
        .unwrap();
    assert!(ended.is_err());
    let after = started.elapsed();
    assert!(
        after >= Duration::from_secs(25),
        "dropped after {after:?}, before the 30 s of the rule"
    );
    // Other clients are served meanwhile and after.
    assert_eq!(d.get("/health").await.0, 200);
    d.stop().await;
}

fn write_check(id: ServiceId, at: i64, notify: bool) -> CheckWrite {
    CheckWrite {
        service_id: id,
        at: UnixMs::new(at),
        duration_us: 1000,
        result: CheckResult::Fail,
        reason: Some("connection refused".into()),
        http_status: None,
        details: None,
        cert_expires_at: None,
        state: HealthState::Unhealthy,
        successes: 0,
        failures: 2,
        transition: Some(TransitionWrite {
            from: HealthState::Healthy,
            previous_since: UnixMs::new(at - 1000),
            notify: notify.then(|| NotifyWrite {
                service: "mail".into(),
                target: "tcp://127.0.0.1:9".into(),
                recipients: vec!["ops@example.com".into()],
                not_before: UnixMs::new(at),
                note: Some("smtp not configured".into()),
                held_until: None,
            }),
        }),
    }
}

fn registered(store: &Store, name: &str) -> healthchecker_core::ServiceId {
    let req = healthchecker_core::RegisterRequest::from_json(
        json!({"name": name, "url": "tcp://127.0.0.1:9", "email": "ops@example.com"})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let spec = healthchecker_core::ServiceSpec::try_from(req).unwrap();
    store.register(&spec, "", 1_000, 10).unwrap().record.id
}

#[test]
fn events_are_capped_per_service() {
    if healthchecker_testkit::sqlite_only(
        "a unit test of the SQLite Store, no daemon; its PostgreSQL twin is \
         cluster/store/tests.rs events_and_outbox_are_pruned",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("hc.db")).unwrap();
    registered(&store, "flappy");
    registered(&store, "calm");
    let n = MAX_EVENTS_PER_SERVICE as usize + 150;
    for i in 0..n {
        store
            .set_paused("flappy", i % 2 == 0, 2_000 + i as i64)
            .unwrap();
    }
    let before = store.events(Some("flappy"), 10_000).unwrap();
    assert!(before.len() > MAX_EVENTS_PER_SERVICE as usize);
    let newest = before.iter().map(|e| e.id).max().unwrap();
    store.prune(10_000).unwrap();
    let after = store.events(Some("flappy"), 10_000).unwrap();
    assert_eq!(after.len(), MAX_EVENTS_PER_SERVICE as usize);
    assert_eq!(
        after.iter().map(|e| e.id).max().unwrap(),
        newest,
        "the newest are kept"
    );
    // Another service's events are untouched.
    assert_eq!(store.events(Some("calm"), 10_000).unwrap().len(), 1);
}

#[test]
fn unsendable_mail_is_given_up_and_then_pruned() {
    if healthchecker_testkit::sqlite_only(
        "a unit test of the SQLite Store, no daemon; its PostgreSQL twin is \
         cluster/store/tests.rs events_and_outbox_are_pruned",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("hc.db")).unwrap();
    let id = registered(&store, "mail");
    let (writer, handle) = Writer::start(&store);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let t0 = 10_000_000;
    rt.block_on(async {
        handle.record(write_check(id, t0, true)).await;
        handle.flush().await;
    });
    drop(handle);
    writer.join();
    let pending = |s: &str| store.notifications(Some(s), None, 100).unwrap().len();
    assert_eq!(pending("pending"), 1);
    // Younger than a day: kept pending.
    assert_eq!(
        store
            .give_up_unsent(t0 + GIVE_UP_UNSENT_MS - 1, "no smtp")
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .give_up_unsent(t0 + GIVE_UP_UNSENT_MS + 1, "no smtp")
            .unwrap(),
        1
    );
    let failed = store.notifications(Some("failed"), None, 100).unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].last_error.as_deref(), Some("no smtp"));
    store.prune(t0 + RETAIN_FAILED_MAIL_MS - 1).unwrap();
    assert_eq!(pending("failed"), 1, "kept a while for the operator");
    store.prune(t0 + RETAIN_FAILED_MAIL_MS + 1).unwrap();
    assert_eq!(pending("failed"), 0, "then pruned");
}
