use super::*;
use crate::store::writer::Writer;
use healthchecker_core::heartbeat::Ping;
use healthchecker_core::{
    CheckResult, HealthState, Protocol, RegisterRequest, ServiceId, ServiceSpec, UnixMs,
};

pub(super) fn spec(name: &str, interval: u32) -> ServiceSpec {
    let body = serde_json::json!({"name": name, "url": "http://127.0.0.1:9/health", "interval": interval, "email": "a@example.com"});
    spec_of(&body)
}

/// The spec a registration with JSON `body` asks for.
pub(super) fn spec_of(body: &serde_json::Value) -> ServiceSpec {
    ServiceSpec::try_from(RegisterRequest::from_json(body.to_string().as_bytes()).unwrap()).unwrap()
}

pub(super) fn check(
    id: impl Into<ServiceId>,
    at: i64,
    result: CheckResult,
    state: HealthState,
) -> CheckWrite {
    CheckWrite {
        service_id: id.into(),
        at: UnixMs::new(at),
        duration_us: 1500,
        result,
        reason: (result != CheckResult::Pass).then(|| "HTTP 503".into()),
        http_status: Some(if result == CheckResult::Pass {
            200
        } else {
            503
        }),
        details: None,
        cert_expires_at: None,
        state,
        successes: 0,
        failures: 2,
        transition: None,
    }
}

/// `c` as a state change from `from` (which began at `previous_since`)
/// that mails `a@example.com` about `service` (target: the one of
/// [`spec`]) from `not_before` on.
pub(super) fn mailing(
    mut c: CheckWrite,
    from: HealthState,
    previous_since: i64,
    service: &str,
    not_before: i64,
) -> CheckWrite {
    c.transition = Some(TransitionWrite {
        from,
        previous_since: UnixMs::new(previous_since),
        notify: Some(NotifyWrite {
            service: service.into(),
            target: "http://127.0.0.1:9/health".into(),
            recipients: vec!["a@example.com".into()],
            not_before: UnixMs::new(not_before),
            note: None,
            held_until: None,
        }),
    });
    c
}

#[test]
fn registration_updates_keep_state_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("x.db")).unwrap();
    let r = store
        .register(&spec("a", 30), "h1", 1_000, usize::MAX)
        .unwrap();
    assert!(r.created);
    store
        .with_writer(|c| {
            c.execute(
                "UPDATE services SET state='healthy', successes=12 WHERE id=?1",
                [r.record.id],
            )
        })
        .unwrap();
    let r2 = store
        .register(&spec("a", 60), "h2", 2_000, usize::MAX)
        .unwrap();
    assert!(!r2.created);
    assert_eq!(r2.record.id, r.record.id);
    assert_eq!(r2.record.state, HealthState::Healthy);
    assert_eq!(r2.record.successes, 12);
    assert_eq!(r2.record.spec.interval, 60);
    assert_eq!(store.token_hash("a").unwrap().as_deref(), Some("h2"));
    let kinds: Vec<EventKind> = store
        .events(Some("a"), 10)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, vec![EventKind::Updated, EventKind::Registered]);
}

#[tokio::test]
async fn writer_records_check_event_and_outbox_together_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let store = Store::open(&path).unwrap();
    let id = store
        .register(&spec("web one", 30), "h", 1_000, usize::MAX)
        .unwrap()
        .record
        .id;
    let (writer, handle) = Writer::start(&store);
    handle
        .record(check(id, 2_000, CheckResult::Fail, HealthState::Unknown))
        .await;
    let c = check(id, 3_000, CheckResult::Fail, HealthState::Unhealthy);
    let c = mailing(c, HealthState::Unknown, 1_000, "web one", 3_000);
    handle.record(c).await;
    // A result for a deleted service is dropped, not an error.
    handle
        .record(check(999, 3_000, CheckResult::Pass, HealthState::Healthy))
        .await;
    handle.flush().await;
    drop(handle);
    writer.join();
    drop(store);

    let store = Store::open(&path).unwrap();
    let rec = store.get_service("web one").unwrap().unwrap();
    assert_eq!(rec.state, HealthState::Unhealthy);
    assert_eq!(rec.state_since, 3_000);
    assert_eq!(rec.last_failure_reason.as_deref(), Some("HTTP 503"));
    assert_eq!(rec.last_notified_at, Some(3_000));
    let checks = store.checks(id, 10).unwrap();
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[0].at, 3_000);
    let ev = &store.events(Some("web one"), 1).unwrap()[0];
    assert_eq!(
        (ev.kind.as_str(), ev.from, ev.to, ev.check_id),
        (
            "state",
            Some(HealthState::Unknown),
            Some(HealthState::Unhealthy),
            Some(checks[0].id)
        )
    );
    let n = store.notifications(Some("pending"), None, 10).unwrap();
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].event_id, ev.id);
    assert_eq!(n[0].recipients, vec!["a@example.com".to_string()]);
    let up = store.uptime_ratios(&[id], 3_000).unwrap()[&id];
    assert_eq!(up.day, Some(0.0));
}

/// Registers 300 services (`s0`, `s1`, ...), each from `spec`; returns
/// their ids.
pub(super) fn beyond_the_snapshot(
    store: &Store,
    spec: impl Fn(&str) -> ServiceSpec,
) -> Vec<ServiceId> {
    let n = 300;
    (0..n)
        .map(|i| {
            let name = format!("s{i}");
            store
                .register(&spec(&name), "h", 0, usize::MAX)
                .unwrap()
                .record
                .id
        })
        .collect()
}

/// A database at `path` left at schema `version`, holding services 1
/// (`a`) and 2 (`b`) as that version stored them.
pub(super) fn two_services_at_version(path: &std::path::Path, version: i64) -> Connection {
    let mut c = Connection::open(path).unwrap();
    super::schema::migrate_to(&mut c, version).unwrap().unwrap();
    c.execute_batch(
        "INSERT INTO services (id, name, protocol, host, port, path, emails, timeout, interval, \
           unhealthy_threshold, healthy_threshold, expected_status, tls_verify, cert_warn_days, \
           token_hash, state_since, created_at, updated_at) VALUES \
           (1, 'a', 'http', 'h', 80, '/', '[]', 5, 30, 2, 2, '200-399', 1, 14, 'x', 0, 0, 0), \
           (2, 'b', 'http', 'h', 80, '/', '[]', 5, 30, 2, 2, '200-399', 1, 14, 'x', 0, 0, 0);",
    )
    .unwrap();
    c
}

/// Polls `done` every 20 ms; fails with `what` after 10 s.
pub(super) async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

pub(super) async fn record_all(store: &Store, checks: impl IntoIterator<Item = CheckWrite>) {
    let (writer, handle) = Writer::start(store);
    for c in checks {
        handle.record(c).await;
    }
    handle.flush().await;
    drop(handle);
    writer.join();
}

fn ats(store: &Store, id: impl Into<ServiceId>, limit: usize) -> Vec<i64> {
    store
        .checks(id.into(), limit)
        .unwrap()
        .into_iter()
        .map(|c| c.at)
        .collect()
}

fn count_checks(store: &Store) -> i64 {
    store
        .with_reader(|c| c.query_row("SELECT COUNT(*) FROM checks", [], |r| r.get(0)))
        .unwrap()
}

#[tokio::test]
async fn prune_keeps_the_newest_checks_of_each_service() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("x.db")).unwrap();
    let id = store
        .register(&spec("a", 30), "h", 0, usize::MAX)
        .unwrap()
        .record
        .id;
    let other = store
        .register(&spec("b", 30), "h", 0, usize::MAX)
        .unwrap()
        .record
        .id;
    let now = 100 * 24 * 3600 * 1000i64;
    // 1,500 old checks and 10 recent ones; the other service has 5 old ones.
    let st = HealthState::Healthy;
    let old = (0..1500).map(|i| check(id, i, CheckResult::Pass, st));
    let other_old = (0..5).map(|i| check(other, 100 + i, CheckResult::Pass, st));
    let recent = (0..10).map(|i| check(id, now - 10 + i, CheckResult::Pass, st));
    record_all(&store, old.chain(other_old).chain(recent)).await;
    let removed = store.prune(now).unwrap();
    assert_eq!(removed, 1410);
    let kept = ats(&store, id, 5000);
    assert_eq!(kept.len(), RETAIN_CHECKS as usize);
    assert_eq!(kept[0], now - 1);
    assert_eq!(kept[99], 1410, "the oldest 1,410 went, the rest are whole");
    assert_eq!(ats(&store, other, 10), vec![104, 103, 102, 101, 100]);
    // Young passing checks beyond the newest 100 go too.
    record_all(
        &store,
        (0..2000).map(|i| check(id, now - 5000 + i, CheckResult::Pass, st)),
    )
    .await;
    store.prune(now).unwrap();
    assert_eq!(ats(&store, id, 5000).len(), RETAIN_CHECKS as usize);
    // A deleted service's history goes with it; the other's stays.
    store.delete("a", now).unwrap();
    assert_eq!(count_checks(&store), 5);
}

#[tokio::test]
async fn history_is_readable_before_the_snapshot_and_repaired_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let store = Store::open(&path).unwrap();
    // More dirty services than SNAPSHOT_EAGER: the service rows wait for the
    // snapshot, the checks do not.
    let ids = beyond_the_snapshot(&store, |name| spec(name, 30));
    let (writer, handle) = Writer::start(&store);
    for round in 0..3 {
        for id in &ids {
            let c = check(
                *id,
                1_000 * (round + 1) + id.get(),
                CheckResult::Pass,
                HealthState::Healthy,
            );
            handle.record(c).await;
        }
    }
    // Wait for the batches to commit, without a flush (which would force
    // the snapshot).
    let id = ids[7];
    wait_until("checks never readable", || ats(&store, id, 10).len() >= 3).await;
    let row_head: Option<i64> = store
        .with_reader(|c| {
            c.query_row(
                "SELECT last_check_id FROM services WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
        })
        .unwrap();
    assert_eq!(row_head, None, "the service row waits for the snapshot");
    assert_eq!(
        ats(&store, id, 10),
        vec![3_000 + id.get(), 2_000 + id.get(), 1_000 + id.get()]
    );
    assert_eq!(ats(&store, id, 2), vec![3_000 + id.get(), 2_000 + id.get()]);
    handle.flush().await;
    drop(handle);
    writer.join();
    // An unclean stop before the snapshot: the rows do not name their
    // newest check; opening the store repairs them from the checks.
    store
        .with_writer(|c| {
            c.execute_batch(
                "UPDATE services SET last_check_id = NULL, check_seq = 0; \
                 UPDATE meta SET value = 0 WHERE key = 'heads_through';",
            )
        })
        .unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    for id in &ids {
        assert_eq!(
            ats(&store, *id, 10),
            vec![3_000 + id.get(), 2_000 + id.get(), 1_000 + id.get()]
        );
    }
    // The next check continues the chain.
    record_all(
        &store,
        [check(id, 9_000, CheckResult::Fail, HealthState::Healthy)],
    )
    .await;
    assert_eq!(ats(&store, id, 2), vec![9_000, 3_000 + id.get()]);
}

#[test]
fn a_version_1_database_gets_its_history_chained() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    {
        let c = two_services_at_version(&path, 1);
        c.execute_batch(
            "INSERT INTO checks (service_id, at, duration_us, result) VALUES \
               (1, 10, 1, 'pass'), (2, 11, 1, 'fail'), (1, 12, 1, 'pass'), (1, 13, 1, 'fail');",
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(ats(&store, 1, 10), vec![13, 12, 10]);
    assert_eq!(ats(&store, 2, 10), vec![11]);
    let seq: i64 = store
        .with_reader(|c| {
            c.query_row("SELECT check_seq FROM services WHERE id = 1", [], |r| {
                r.get(0)
            })
        })
        .unwrap();
    assert_eq!(seq, 3);
}

#[test]
fn delete_removes_history_but_keeps_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("x.db")).unwrap();
    let id = store
        .register(&spec("a", 30), "h", 0, usize::MAX)
        .unwrap()
        .record
        .id;
    assert_eq!(store.delete("a", 5).unwrap(), Some(id));
    assert_eq!(store.delete("a", 6).unwrap(), None);
    assert!(store.get_service("a").unwrap().is_none());
    assert_eq!(
        store.events(Some("a"), 10).unwrap()[0].kind,
        EventKind::Deleted
    );
}

#[test]
fn a_deleted_services_id_is_never_given_to_a_new_service() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let store = Store::open(&path).unwrap();
    let reg = |s: &Store, name: &str| {
        s.register(&spec(name, 30), "h", 0, usize::MAX)
            .unwrap()
            .record
            .id
    };
    reg(&store, "a");
    let b = reg(&store, "b");
    assert_eq!(store.delete("b", 5).unwrap(), Some(b));
    // SQLite alone would hand the highest id out again.
    let b2 = reg(&store, "b");
    assert!(b2 > b, "{b2} after {b}");
    assert_eq!(store.delete("b", 6).unwrap(), Some(b2));
    drop(store);
    let store = Store::open(&path).unwrap();
    let c = reg(&store, "c");
    assert!(c > b2, "{c} after {b2}, across a restart");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    drop(Store::open(&path).unwrap());
    let c = Connection::open(&path).unwrap();
    c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(c);
    let e = Store::open(&path).err().unwrap().to_string();
    assert!(e.contains("newer"), "{e}");
}

#[tokio::test]
async fn a_due_row_brings_every_pending_row_of_its_service() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("x.db")).unwrap();
    let id = store
        .register(&spec("a", 30), "h", 0, usize::MAX)
        .unwrap()
        .record
        .id;
    let other = store
        .register(&spec("b", 30), "h", 0, usize::MAX)
        .unwrap()
        .record
        .id;
    let (writer, handle) = Writer::start(&store);
    for (sid, at, not_before) in [
        (id, 1_000, 1_000),
        (id, 2_000, 61_000),
        (other, 3_000, 90_000),
    ] {
        let c = check(sid, at, CheckResult::Fail, HealthState::Unhealthy);
        let c = mailing(c, HealthState::Healthy, 0, "x", not_before);
        handle.record(c).await;
    }
    handle.flush().await;
    drop(handle);
    writer.join();
    // At 5 s only service a's first row is due, but its newer row comes along;
    // service b's row waits for its slot.
    let due = store.due_notifications(5_000, 100).unwrap();
    assert_eq!(
        due.iter()
            .map(|n| (n.service_id, n.created_at))
            .collect::<Vec<_>>(),
        vec![(id, 1_000), (id, 2_000)]
    );
    assert!(store.due_notifications(500, 100).unwrap().is_empty());
}

#[test]
fn max_services_refuses_new_names_but_not_updates() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("x.db")).unwrap();
    store.register(&spec("a", 30), "h", 0, 1).unwrap();
    assert!(matches!(
        store.register(&spec("b", 30), "h", 0, 1),
        Err(StoreError::Limit(1))
    ));
    assert!(!store.register(&spec("a", 60), "h", 0, 1).unwrap().created);
}

fn heartbeat_spec(name: &str, period: u32) -> ServiceSpec {
    let body =
        serde_json::json!({"name": name, "kind": "heartbeat", "period": period, "grace": 60});
    ServiceSpec::try_from(RegisterRequest::from_json(body.to_string().as_bytes()).unwrap()).unwrap()
}

#[test]
fn a_heartbeat_keeps_its_ping_id_and_records_its_pings() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("x.db")).unwrap();
    let reg = store
        .register(&heartbeat_spec("job", 3600), "t", 1_000, usize::MAX)
        .unwrap();
    let id = reg.record.ping_id.clone().expect("a ping id");
    assert_eq!(id.len(), 32);
    let hb = reg.record.spec.heartbeat.unwrap();
    assert_eq!((hb.period, hb.grace), (3600, 60));
    assert_eq!(reg.record.spec.target.protocol, Protocol::Heartbeat);
    // Another heartbeat gets another id; an update keeps it.
    let other = store
        .register(&heartbeat_spec("other", 60), "t", 1_000, usize::MAX)
        .unwrap();
    assert_ne!(other.record.ping_id.as_deref(), Some(id.as_str()));
    let again = store
        .register(&heartbeat_spec("job", 7200), "t", 2_000, usize::MAX)
        .unwrap();
    assert_eq!(again.record.ping_id.as_deref(), Some(id.as_str()));
    assert_eq!(again.record.spec.heartbeat.unwrap().period, 7200);
    // Lookup by id, and the ping times the deadline counts from.
    let found = store.service_by_ping_id(&id).unwrap().unwrap();
    assert_eq!((found.id, found.name.as_str()), (reg.record.id, "job"));
    assert!(store.service_by_ping_id("nope").unwrap().is_none());
    store
        .record_ping(found.id, UnixMs::new(5_000), Ping::Success, None)
        .unwrap();
    store
        .record_ping(found.id, UnixMs::new(6_000), Ping::Fail, Some("out"))
        .unwrap();
    let rec = store.get_service("job").unwrap().unwrap();
    assert_eq!(
        (rec.last_ping_at, rec.last_success_ping_at),
        (Some(6_000), Some(5_000))
    );
    // Turned into a polled service, it loses the id (the URL stops working).
    store
        .register(&spec("job", 30), "t", 7_000, usize::MAX)
        .unwrap();
    assert!(store.service_by_ping_id(&id).unwrap().is_none());
    let rec = store.get_service("job").unwrap().unwrap();
    assert!(rec.spec.heartbeat.is_none() && rec.ping_id.is_none());
}

#[test]
fn a_version_2_database_keeps_its_targets_and_gains_heartbeat_columns() {
    // SPEC section 2: services stored before the URL rule keep their target.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    {
        let mut c = Connection::open(&path).unwrap();
        super::schema::migrate_to(&mut c, 2).unwrap().unwrap();
        c.execute_batch(
            "INSERT INTO services (id, name, protocol, host, port, path, emails, timeout, interval, \
               unhealthy_threshold, healthy_threshold, expected_status, tls_verify, cert_warn_days, \
               token_hash, state_since, created_at, updated_at) VALUES \
               (1, 'nas', 'HTTP', '192.168.1.20', 5000, '/health', '[]', 5, 30, 2, 10, '200', 0, 14, 'x', 0, 0, 0);",
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let rec = store.get_service("nas").unwrap().unwrap();
    assert_eq!(rec.spec.target.url(), "http://192.168.1.20:5000/health");
    assert!(rec.spec.heartbeat.is_none() && rec.ping_id.is_none());
}

/// Writer periods for tests that watch checks commit without a flush:
/// plain checks commit at once, the snapshot and the roll-ups wait an hour.
pub(super) fn commit_at_once() -> super::writer::WriterTiming {
    super::writer::WriterTiming {
        batch_window: std::time::Duration::from_millis(1),
        plain_every: std::time::Duration::from_millis(1),
        snapshot_every: std::time::Duration::from_secs(3600),
        rollup_every: std::time::Duration::from_secs(3600),
        max_batch: super::writer::MAX_BATCH,
    }
}
