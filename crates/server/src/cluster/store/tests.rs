//! The PostgreSQL store against a real, throwaway PostgreSQL
//! (healthchecker-testkit's `postgres`): a representative port of the
//! SQLite store's unit tests (store/tests.rs, history_tests.rs, the
//! outbox, channel and silence tests), plus what only a cluster has: the
//! outbox claimed by two nodes, and a fenced batch of a stale lease.
//!
//! The store is blocking (it must not run on a tokio worker): each test
//! starts the server on a runtime of its own, then calls the store from
//! the test's thread. Without PostgreSQL installed a test prints SKIPPED
//! and passes (under CI it fails: the testkit's rule).

use super::checks::slot_retention;
use super::*;
use crate::cluster::fence::FENCE_SHARED;
use crate::cluster::{FenceError, Held, FENCE_LOCK};
use crate::silences::{Silence, Window};
use crate::store::{
    CheckWrite, EventKind, NotificationStatus, NotifyWrite, ServiceFilter, ServiceOrder,
    TransitionWrite, RETAIN_MS,
};
use healthchecker_core::channel::Channel;
use healthchecker_core::cluster::{Bucket, Epoch};
use healthchecker_core::heartbeat::Ping;
use healthchecker_core::{
    CheckResult, HealthState, RegisterRequest, ServiceId, ServiceSpec, UnixMs,
};
use healthchecker_testkit::postgres::Postgres;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A node cut off from PostgreSQL: the writer's backlog and the giving up
/// of leases beyond it.
mod backlog;

/// What the writer holds: rows and roll-ups written once per period, reads
/// current meanwhile, the checks above a mark rolled up exactly once.
mod hold;

/// A store on a fresh database; dropped in field order (the store's
/// connections before the server, the server before its runtime).
struct Db {
    store: PgStore,
    /// A connection of the test's own, for looking behind the store.
    sql: postgres::Client,
    _pg: Postgres,
    _rt: tokio::runtime::Runtime,
}

fn db() -> Option<Db> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pg = rt.block_on(Postgres::start())?;
    let url = PgDb::parse(&pg.url(), None).expect("testkit URL parses");
    let store = PgStore::open(&url).expect("open and migrate");
    let sql = postgres::Config::from(url.config().clone())
        .connect(postgres::NoTls)
        .unwrap();
    Some(Db {
        store,
        sql,
        _pg: pg,
        _rt: rt,
    })
}

impl Db {
    fn count(&mut self, query: &str) -> i64 {
        self.sql.query_one(query, &[]).unwrap().get(0)
    }

    /// Closes the current slot of `checks` as if long ago and makes an
    /// empty one current, so that the next prune empties the closed one
    /// (keeping what the rule keeps), as it does once a retention has
    /// passed (`raw_checks_go_a_slot_at_a_time_keeping_what_the_rule_keeps`
    /// turns them by the clock).
    fn close_slot(&mut self) {
        self.sql
            .batch_execute(
                "UPDATE check_slots SET current = false, closed_at = 0 WHERE current; \
                 UPDATE check_slots SET current = true, opened_at = NULL \
                 WHERE slot = (SELECT min(slot) FROM check_slots \
                               WHERE NOT current AND closed_at IS NULL)",
            )
            .unwrap();
    }
}

fn spec(name: &str) -> ServiceSpec {
    spec_of(&serde_json::json!({
        "name": name, "url": "http://127.0.0.1:9/health", "interval": 30,
        "email": "a@example.com"
    }))
}

fn spec_of(body: &serde_json::Value) -> ServiceSpec {
    ServiceSpec::try_from(RegisterRequest::from_json(body.to_string().as_bytes()).unwrap()).unwrap()
}

fn check(id: ServiceId, at: i64, result: CheckResult, state: HealthState) -> CheckWrite {
    CheckWrite {
        service_id: id,
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

/// `c` as a state change from `from` that mails `a@example.com` (and
/// goes to the service's channels) from `not_before` on.
fn mailing(mut c: CheckWrite, from: HealthState, service: &str, not_before: i64) -> CheckWrite {
    c.transition = Some(TransitionWrite {
        from,
        previous_since: UnixMs::new(1),
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

fn webhook(name: &str, default: bool) -> Channel {
    let body = serde_json::json!({
        "name": name, "kind": "webhook", "url": "http://127.0.0.1:9/hook", "default": default,
        "secret": "s3cret"
    });
    Channel::from_json(body.as_object().unwrap(), None).unwrap()
}

#[test]
fn services_register_update_pause_delete_and_list() {
    let Some(mut db) = db() else { return };
    let s = &db.store;
    let a = s.register(&spec("alpha"), "h1", 1_000, 10).unwrap();
    assert!(a.created);
    assert_eq!(a.record.state, HealthState::Unknown);
    assert_eq!(a.record.created_at, 1_000);
    // An update keeps the id and the creation time, and says so.
    let again = s
        .register(
            &spec_of(&serde_json::json!({
                "name": "alpha", "url": "http://127.0.0.1:9/other", "interval": 60,
                "email": "a@example.com", "tags": ["core"]
            })),
            "h2",
            2_000,
            10,
        )
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.record.id, a.record.id);
    assert_eq!(again.record.created_at, 1_000);
    assert_eq!(again.record.updated_at, 2_000);
    assert_eq!(again.record.spec.interval, 60);
    assert_eq!(again.record.spec.tags, vec!["core".to_string()]);
    assert_eq!(s.token_hash("alpha").unwrap().as_deref(), Some("h2"));
    for n in ["bravo", "Charlie", "delta", "echo"] {
        s.register(&spec(n), "h", 3_000, 10).unwrap();
    }
    // The limit refuses a new name, not an update.
    assert!(matches!(
        s.register(&spec("foxtrot"), "h", 3_000, 5),
        Err(StoreError::Limit(5))
    ));
    s.register(&spec("echo"), "h", 3_000, 5).unwrap();

    // Pages by cursor, in byte order (as SQLite): "Charlie" first.
    let names = |f: &ServiceFilter| -> Vec<String> {
        s.list_services(f)
            .unwrap()
            .into_iter()
            .map(|r| r.spec.name)
            .collect()
    };
    let all = names(&ServiceFilter::default());
    assert_eq!(all, ["Charlie", "alpha", "bravo", "delta", "echo"]);
    let first = names(&ServiceFilter {
        limit: 2,
        ..Default::default()
    });
    assert_eq!(first, ["Charlie", "alpha"]);
    let next = names(&ServiceFilter {
        limit: 2,
        after: Some("alpha".into()),
        ..Default::default()
    });
    assert_eq!(next, ["bravo", "delta"]);
    let offset = names(&ServiceFilter {
        limit: 2,
        offset: 4,
        ..Default::default()
    });
    assert_eq!(offset, ["echo"]);
    // Case-insensitive, with LIKE's wildcards taken literally.
    let found = names(&ServiceFilter {
        name_contains: Some("CHAR".into()),
        ..Default::default()
    });
    assert_eq!(found, ["Charlie"]);
    assert!(names(&ServiceFilter {
        name_contains: Some("%".into()),
        ..Default::default()
    })
    .is_empty());

    // Pause: an event when the flag changes, none when it does not.
    let p = s.set_paused("bravo", true, 4_000).unwrap().unwrap();
    assert!(p.paused);
    s.set_paused("bravo", true, 4_001).unwrap();
    assert!(s.set_paused("nope", true, 4_000).unwrap().is_none());
    let counts = s.count_by_state().unwrap();
    assert_eq!(counts.of(HealthState::Unknown), 5);
    assert_eq!(counts.total(), 5);
    assert_eq!(counts.paused, 1);

    // Delete: the row and its checks go, the events stay; the id is never
    // given again.
    let echo = s.get_service("echo").unwrap().unwrap().id;
    s.write_batch(
        None,
        &[check(echo, 5_000, CheckResult::Pass, HealthState::Unknown)],
    )
    .unwrap();
    assert_eq!(s.delete("echo", 6_000).unwrap(), Some(echo));
    assert!(s.delete("echo", 6_000).unwrap().is_none());
    assert!(s.get_service("echo").unwrap().is_none());
    assert!(s.checks(echo, 10).unwrap().is_empty());
    let kinds: Vec<EventKind> = s
        .events(Some("echo"), 10)
        .unwrap()
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            EventKind::Deleted,
            EventKind::Updated,
            EventKind::Registered
        ]
    );
    let kinds: Vec<EventKind> = s
        .events(Some("bravo"), 10)
        .unwrap()
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, [EventKind::Paused, EventKind::Registered]);
    // The deletion made room under a limit of 5 (the per-bucket counts
    // the limit reads went down), and the counts match the rows.
    let reborn = s.register(&spec("echo"), "h", 7_000, 5).unwrap();
    assert!(reborn.record.id.get() > echo.get());
    assert!(matches!(
        s.register(&spec("foxtrot"), "h", 7_000, 5),
        Err(StoreError::Limit(5))
    ));
    assert_eq!(
        db.count(
            "SELECT count(*) FROM service_counts c \
             WHERE c.n <> (SELECT count(*) FROM services s WHERE s.bucket = c.bucket)"
        ),
        0
    );
    assert_eq!(db.count("SELECT sum(n)::bigint FROM service_counts"), 5);
    // Each service's bucket is stored for the lease split.
    let b: i32 = db
        .sql
        .query_one("SELECT bucket FROM services WHERE name = 'alpha'", &[])
        .unwrap()
        .get(0);
    assert_eq!(i64::from(b), i64::from(Bucket::of("alpha").get()));
    let mine = db
        .store
        .services_in_buckets(&[Bucket::of("alpha")])
        .unwrap();
    assert!(mine.iter().any(|r| r.spec.name == "alpha"));
    assert!(mine
        .iter()
        .all(|r| Bucket::of(&r.spec.name) == Bucket::of("alpha")));
    // Opening again migrates nothing and sees the same rows.
    let again = PgStore::open(db.store.db()).unwrap();
    assert_eq!(again.load_all().unwrap().len(), 5);
}

/// A second API write at once: `Some(())` when it got its connection
/// within `wait`.
fn second_api_write(s: &PgStore, wait: Duration) -> Option<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let s = s.clone();
    std::thread::spawn(move || {
        let _c = s.api_conn().unwrap();
        let _ = tx.send(());
    });
    rx.recv_timeout(wait).ok()
}

#[test]
fn api_writes_take_turns_on_one_connection_while_the_writer_is_behind() {
    let Some(db) = db() else { return };
    let s = &db.store;
    let depth = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    s.watch_backlog(depth.clone(), 64);
    let first = s.api_conn().unwrap();
    assert_eq!(
        second_api_write(s, Duration::from_secs(10)),
        Some(()),
        "the writer keeping up: a second connection at once"
    );
    drop(first);
    depth.store(17, std::sync::atomic::Ordering::Release);
    assert!(s.writer_behind(4), "17 of 64 is past a quarter");
    let first = s.api_conn().unwrap();
    assert_eq!(
        second_api_write(s, Duration::from_millis(500)),
        None,
        "behind: the second waits for the first"
    );
    drop(first);
    depth.store(33, std::sync::atomic::Ordering::Release);
    let started = std::time::Instant::now();
    let (s2, d2) = (s.clone(), depth.clone());
    let caught_up = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        d2.store(16, std::sync::atomic::Ordering::Release);
        assert!(!s2.writer_behind(4));
    });
    drop(s.api_conn().unwrap());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "past half: an API write waits for the writer to catch up"
    );
    assert!(
        waited < Duration::from_millis(1_900),
        "and goes on once it has, not at the end of its {WAIT_FOR_WRITER:?}: {waited:?}"
    );
    caught_up.join().unwrap();
}

#[test]
fn heartbeats_keep_their_ping_id_and_record_pings() {
    let Some(mut db) = db() else { return };
    let s = &db.store.clone();
    let hb = spec_of(&serde_json::json!({"name": "job", "kind": "heartbeat", "period": 60}));
    let r = s.register(&hb, "h", 1_000, 10).unwrap().record;
    let ping = r.ping_id.clone().expect("a heartbeat gets a ping id");
    assert_eq!(ping.len(), 32);
    let again = s.register(&hb, "h", 2_000, 10).unwrap().record;
    assert_eq!(again.ping_id.as_deref(), Some(ping.as_str()));
    let target = s.service_by_ping_id(&ping).unwrap().unwrap();
    assert_eq!((target.id, target.name.as_str()), (r.id, "job"));
    s.record_ping(r.id, UnixMs::new(5_000), Ping::Fail, None)
        .unwrap();
    s.record_ping(r.id, UnixMs::new(6_000), Ping::Success, Some("done"))
        .unwrap();
    s.record_ping(r.id, UnixMs::new(7_000), Ping::Exit(3), None)
        .unwrap();
    let rec = s.get_service("job").unwrap().unwrap();
    assert_eq!(rec.last_ping_at, Some(7_000));
    assert_eq!(rec.last_success_ping_at, Some(6_000));
    assert!(s.service_by_ping_id("00").unwrap().is_none());
    // The pings are kept for the bucket's next owner, oldest first…
    let kept = |s: &PgStore| {
        s.pings_in_buckets(&[Bucket::of("job")])
            .unwrap()
            .into_iter()
            .map(|p| (p.at.get(), p.ping, p.output))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        kept(s),
        [
            (5_000, Ping::Fail, None),
            (6_000, Ping::Success, Some("done".to_string())),
            (7_000, Ping::Exit(3), None)
        ]
    );
    assert!(s
        .pings_in_buckets(&[Bucket::of("other")])
        .unwrap()
        .is_empty());
    // …for an hour: a ping deletes its service's older ones…
    let later = 6_500 + super::pings::PING_KEEP_MS;
    s.record_ping(r.id, UnixMs::new(later), Ping::Start, None)
        .unwrap();
    assert_eq!(
        kept(s),
        [(7_000, Ping::Exit(3), None), (later, Ping::Start, None)]
    );
    // …and a paused service's pings are not kept (it ignores them).
    s.set_paused("job", true, later).unwrap();
    s.record_ping(r.id, UnixMs::new(later + 1), Ping::Fail, None)
        .unwrap();
    assert_eq!(kept(s).len(), 2);
    assert_eq!(
        s.get_service("job").unwrap().unwrap().last_ping_at,
        Some(later + 1)
    );
    // A deleted service's pings go with it.
    s.delete("job", later + 2).unwrap();
    assert_eq!(db.count("SELECT count(*) FROM heartbeat_pings"), 0);
}

#[test]
fn a_batch_records_checks_state_changes_events_and_outbox_together() {
    let Some(mut db) = db() else { return };
    let s = db.store.clone();
    s.put_channel(&webhook("hook", true), 0).unwrap();
    s.put_channel(&webhook("other", false), 0).unwrap();
    let id = s.register(&spec("web"), "h", 0, 10).unwrap().record.id;
    let gone = s.register(&spec("gone"), "h", 0, 10).unwrap().record.id;
    s.delete("gone", 1).unwrap();
    let mut down = check(id, 3_000, CheckResult::Fail, HealthState::Unhealthy);
    down.cert_expires_at = Some(99);
    let batch = [
        check(id, 1_000, CheckResult::Pass, HealthState::Healthy),
        check(id, 2_000, CheckResult::Fail, HealthState::Healthy),
        mailing(down, HealthState::Healthy, "web", 3_500),
        check(gone, 3_000, CheckResult::Pass, HealthState::Healthy),
    ];
    let w = s.write_batch(None, &batch).unwrap();
    assert_eq!((w.checks, w.transitions, w.gone), (3, 1, 1));
    assert!(w.stale.is_empty());

    let checks = s.checks(id, 10).unwrap();
    let at: Vec<i64> = checks.iter().map(|c| c.at).collect();
    assert_eq!(at, [3_000, 2_000, 1_000]);
    assert_eq!(checks[0].http_status, Some(503));
    let r = s.get_service("web").unwrap().unwrap();
    assert_eq!(r.state, HealthState::Unhealthy);
    assert_eq!(r.state_since, 3_000);
    assert_eq!(r.last_check.as_ref().unwrap().at, 3_000);
    assert_eq!(r.last_healthy_at, Some(2_000));
    assert_eq!(r.last_failure_reason.as_deref(), Some("HTTP 503"));
    assert_eq!(r.cert_expires_at, Some(99));
    assert_eq!(r.last_notified_at, Some(3_500));
    assert_eq!(r.failures, 2);

    let ev = &s.events(Some("web"), 1).unwrap()[0];
    assert_eq!(ev.kind, EventKind::State);
    assert_eq!(
        (ev.from, ev.to),
        (Some(HealthState::Healthy), Some(HealthState::Unhealthy))
    );
    assert_eq!(ev.check_id, Some(checks[0].id));
    let mail = s.notifications(None, Some("web"), 10).unwrap();
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].event_id, ev.id);
    assert_eq!(mail[0].status, NotificationStatus::Pending);
    assert_eq!(mail[0].recipients, ["a@example.com"]);
    assert_eq!(mail[0].next_attempt_at, 3_500);
    assert_eq!(s.pending_mail().unwrap(), 1);
    // The default channel only: the service names none.
    let d = s.deliveries(None, Some("web"), 10).unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].channel.as_str(), d[0].event_id), ("hook", ev.id));
    assert_eq!(s.due_deliveries(3_500, 10).unwrap().len(), 1);
    assert!(s.due_deliveries(3_499, 10).unwrap().is_empty());
    let due = s.due_notifications(3_500, 10).unwrap();
    assert_eq!(due.len(), 1);
    s.mark_sent(&[due[0].id], "<m@x>", 3_600).unwrap();
    let sent = &s.notifications(Some("sent"), None, 10).unwrap()[0];
    assert_eq!(sent.message_id.as_deref(), Some("<m@x>"));
    assert_eq!((sent.attempts, sent.sent_at), (1, Some(3_600)));
    s.mark_delivery_failed(&[d[0].id], "503", 9_000, false)
        .unwrap();
    let d = &s.deliveries(None, None, 10).unwrap()[0];
    assert_eq!(
        (d.attempts, d.next_attempt_at, d.status.as_str()),
        (1, 9_000, "pending")
    );
    s.mark_delivered(&[d.id], 9_001).unwrap();
    assert_eq!(s.deliveries(Some("sent"), None, 10).unwrap().len(), 1);

    // One transaction: a batch whose last statement fails leaves nothing.
    db.sql
        .batch_execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
               $$ BEGIN RAISE EXCEPTION 'refused'; END $$; \
             CREATE TRIGGER refuse BEFORE INSERT ON deliveries \
               FOR EACH ROW EXECUTE FUNCTION refuse();",
        )
        .unwrap();
    let before = db.count("SELECT count(*) FROM checks") + db.count("SELECT count(*) FROM events");
    let up = mailing(
        check(id, 10_000, CheckResult::Pass, HealthState::Healthy),
        HealthState::Unhealthy,
        "web",
        10_000,
    );
    let e = s.write_batch(None, &[up]).unwrap_err();
    assert!(e.to_string().contains("refused"), "{e}");
    assert!(s.write_error().unwrap().contains("refused"));
    let after = db.count("SELECT count(*) FROM checks") + db.count("SELECT count(*) FROM events");
    assert_eq!(after, before);
    assert_eq!(db.count("SELECT count(*) FROM notifications"), 1);
    let r = s.get_service("web").unwrap().unwrap();
    assert_eq!(r.state, HealthState::Unhealthy);
    db.sql
        .batch_execute("DROP TRIGGER refuse ON deliveries")
        .unwrap();
    s.write_batch(
        None,
        &[check(id, 11_000, CheckResult::Pass, HealthState::Unhealthy)],
    )
    .unwrap();
    assert!(s.write_error().is_none());
}

/// Twenty services, each with one failing transition: mail and a delivery.
fn outbox_of_twenty(s: &PgStore) -> Vec<ServiceId> {
    s.put_channel(&webhook("hook", true), 0).unwrap();
    let mut batch = Vec::new();
    let mut ids = Vec::new();
    for i in 0..20 {
        let name = format!("svc-{i:02}");
        let id = s.register(&spec(&name), "h", 0, 100).unwrap().record.id;
        ids.push(id);
        batch.push(mailing(
            check(id, 1_000, CheckResult::Fail, HealthState::Unhealthy),
            HealthState::Healthy,
            &name,
            1_000,
        ));
    }
    let w = s.write_batch(None, &batch).unwrap();
    assert_eq!(w.transitions, 20);
    ids
}

#[test]
fn two_nodes_claim_disjoint_outbox_rows_and_take_over_expired_claims() {
    let Some(db) = db() else { return };
    let s = db.store.clone();
    outbox_of_twenty(&s);
    let hour = Duration::from_secs(3600);
    // Both nodes claim at once, in small pages, until nothing is left.
    let claim_all = |node: &'static str| {
        let s = s.clone();
        std::thread::spawn(move || {
            let mut mail = Vec::new();
            let mut hooks = Vec::new();
            loop {
                // Claimed rows are never claimed again: the loop ends.
                let m = s.claim_notifications(node, 2_000, 3, hour).unwrap();
                let d = s.claim_deliveries(node, 2_000, 3, hour).unwrap();
                if m.is_empty() && d.is_empty() {
                    return (mail, hooks);
                }
                mail.extend(m.into_iter().map(|n| n.id));
                hooks.extend(d.into_iter().map(|d| d.id));
            }
        })
    };
    let (a, b) = (claim_all("a"), claim_all("b"));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    for (x, y, table) in [(&a.0, &b.0, "notifications"), (&a.1, &b.1, "deliveries")] {
        let (x, y): (BTreeSet<i64>, BTreeSet<i64>) =
            (x.iter().copied().collect(), y.iter().copied().collect());
        assert!(x.is_disjoint(&y), "{table}: a row claimed by both");
        assert_eq!(x.len() + y.len(), 20, "{table}: every row claimed once");
    }
    // Nothing is due before its time, claimed or not.
    assert!(s
        .claim_notifications("c", 999, 50, hour)
        .unwrap()
        .is_empty());
    // The node that claimed more (at least half) takes the rest of the test.
    let (n1, rows1, rows2) = if a.0.len() >= b.0.len() {
        ("a", a.0.clone(), b.0.clone())
    } else {
        ("b", b.0.clone(), a.0.clone())
    };
    // Claimed rows are not claimed again while the claim lasts, not even
    // by their node (it is delivering them).
    assert!(s
        .claim_notifications(n1, 2_000, 50, hour)
        .unwrap()
        .is_empty());
    assert!(s
        .claim_notifications("c", 2_000, 50, hour)
        .unwrap()
        .is_empty());
    // A claim that expired is taken over by another node: n1's rows, as
    // if n1 had died while delivering them.
    db_expire(&s, &rows1);
    let taken = s.claim_notifications("c", 2_000, 50, hour).unwrap();
    let taken: BTreeSet<i64> = taken.iter().map(|n| n.id).collect();
    assert_eq!(taken, rows1.iter().copied().collect());
    // Marking sent ends the claim and the row is never claimed again.
    let ids: Vec<i64> = taken.into_iter().collect();
    s.mark_sent(&ids, "<x@y>", 3_000).unwrap();
    s.mark_failed_attempt(&rows2, "421", 5_000, false).unwrap();
    assert!(s
        .claim_notifications("c", 4_000, 50, hour)
        .unwrap()
        .is_empty());
    // A failed attempt ends the claim: any node retries when it is due.
    let retry = s.claim_notifications("d", 5_000, 50, hour).unwrap();
    assert_eq!(retry.len(), rows2.len());
}

/// Ends the claims of `ids` (as time passing would).
fn db_expire(s: &PgStore, ids: &[i64]) {
    let mut l = s.write_conn().unwrap();
    let (c, _) = l.conn().parts();
    c.execute(
        "UPDATE notifications SET claim_until = now() - interval '1 second' WHERE id = ANY($1)",
        &[&ids],
    )
    .unwrap();
}

/// Node `a` holds `b` at `epoch` for an hour, as the lease table says.
fn own_bucket(sql: &mut postgres::Client, b: Bucket, epoch: i64) {
    lease_bucket(sql, b, "a", epoch);
}

/// `node` holds `b` at `epoch`, and its leases last an hour.
fn lease_bucket(sql: &mut postgres::Client, b: Bucket, node: &str, epoch: i64) {
    sql.execute(
        "UPDATE buckets SET owner = $1, epoch = $2 WHERE bucket = $3",
        &[&node, &epoch, &i32::from(b.get())],
    )
    .unwrap();
    sql.execute(
        "INSERT INTO nodes (id, lease_until) VALUES ($1, now() + interval '1 hour') \
         ON CONFLICT (id) DO UPDATE SET lease_until = excluded.lease_until",
        &[&node],
    )
    .unwrap();
}

fn held(leases: &[(Bucket, i64)]) -> Held {
    Held {
        leases: leases
            .iter()
            .map(|(b, e)| (*b, Epoch(*e)))
            .collect::<BTreeMap<_, _>>(),
        valid_until: None,
    }
}

#[test]
fn a_batch_of_a_stale_lease_is_dropped_and_the_rest_commits() {
    let Some(mut db) = db() else { return };
    let s = db.store.clone();
    // Two services in different buckets.
    let (x, y) = ("svc-x", "svc-y");
    assert_ne!(Bucket::of(x), Bucket::of(y));
    let (bx, by) = (Bucket::of(x), Bucket::of(y));
    let ix = s.register(&spec(x), "h", 0, 10).unwrap().record.id;
    let iy = s.register(&spec(y), "h", 0, 10).unwrap().record.id;
    lease_bucket(&mut db.sql, bx, "a", 5);
    lease_bucket(&mut db.sql, by, "a", 3);
    let a = Fencing {
        node: "a".into(),
        held: held(&[(bx, 5), (by, 3)]),
    };
    let down = |id, at| {
        mailing(
            check(id, at, CheckResult::Fail, HealthState::Unhealthy),
            HealthState::Healthy,
            "n",
            at,
        )
    };
    let w = s
        .write_batch(Some(&a), &[down(ix, 1_000), down(iy, 1_000)])
        .unwrap();
    assert_eq!((w.checks, w.transitions), (2, 2));
    assert!(w.stale.is_empty());

    // Node b takes bucket x over (its claim bumps the epoch).
    lease_bucket(&mut db.sql, bx, "b", 6);
    let events = db.count("SELECT count(*) FROM events");
    let mail = db.count("SELECT count(*) FROM notifications");
    let up = |id, at| {
        mailing(
            check(id, at, CheckResult::Pass, HealthState::Healthy),
            HealthState::Unhealthy,
            "n",
            at,
        )
    };
    let w = s
        .write_batch(Some(&a), &[up(ix, 2_000), up(iy, 2_000)])
        .unwrap();
    assert_eq!((w.checks, w.transitions), (1, 1), "only bucket y's");
    match &w.stale[..] {
        [FenceError::Stale {
            bucket,
            node,
            epoch,
        }] => assert_eq!((*bucket, node.as_str(), *epoch), (bx, "a", Epoch(5))),
        other => panic!("expected bucket x stale: {other:?}"),
    }
    assert_eq!(db.count("SELECT count(*) FROM events"), events + 1);
    assert_eq!(db.count("SELECT count(*) FROM notifications"), mail + 1);
    assert_eq!(
        s.get_service(x).unwrap().unwrap().state,
        HealthState::Unhealthy
    );
    assert_eq!(
        s.get_service(y).unwrap().unwrap().state,
        HealthState::Healthy
    );
    assert_eq!(s.checks(ix, 10).unwrap().len(), 1);

    // The new owner's write at its epoch goes through.
    let b = Fencing {
        node: "b".into(),
        held: held(&[(bx, 6)]),
    };
    let w = s.write_batch(Some(&b), &[up(ix, 3_000)]).unwrap();
    assert_eq!((w.checks, w.stale.len()), (1, 0));
    assert_eq!(
        s.get_service(x).unwrap().unwrap().state,
        HealthState::Healthy
    );
    // An expired lease is stale too (its node's expiry passed), and so is
    // a bucket not held at all.
    db.sql
        .execute(
            "UPDATE nodes SET lease_until = now() - interval '1 second' WHERE id = 'b'",
            &[],
        )
        .unwrap();
    let w = s
        .write_batch(Some(&b), &[up(ix, 4_000), up(iy, 4_000)])
        .unwrap();
    assert_eq!(w.checks, 0);
    let stale: BTreeSet<Bucket> = w
        .stale
        .iter()
        .map(|e| match e {
            FenceError::Stale { bucket, .. } => *bucket,
            e => panic!("{e}"),
        })
        .collect();
    assert_eq!(stale, BTreeSet::from([bx, by]));
}

#[test]
fn rollups_uptime_and_retention() {
    let Some(mut db) = db() else { return };
    let s = db.store.clone();
    let id = s.register(&spec("r"), "h", 0, 10).unwrap().record.id;
    const H: i64 = 3_600_000;
    const D: i64 = 24 * H;
    let now = 100 * D + 12 * H + H / 2;
    // In time order (ids follow it): 40 days ago (beyond the hourly
    // retention), two days ago, then this hour: a failure and 3 passes
    // (40, 3 and 1 ms).
    let mut batch = vec![
        check(id, now - 40 * D, CheckResult::Pass, HealthState::Healthy),
        check(id, now - 2 * D, CheckResult::Fail, HealthState::Healthy),
        check(id, now - 5_000, CheckResult::Fail, HealthState::Healthy),
    ];
    for (i, us) in [40_000, 3_000, 1_000].into_iter().enumerate() {
        let mut c = check(
            id,
            now - 2_000 + 1_000 * i as i64,
            CheckResult::Pass,
            HealthState::Healthy,
        );
        c.duration_us = us;
        batch.push(c);
    }
    s.write_batch(None, &batch).unwrap();
    // A second batch into the same hour merges with the stored row.
    s.write_batch(
        None,
        &[check(id, now + 10, CheckResult::Warn, HealthState::Healthy)],
    )
    .unwrap();

    let hour = now.div_euclid(H);
    let rows = s.rollups(id, false, hour, hour).unwrap();
    assert_eq!(rows.len(), 1);
    let r = rows[0];
    assert_eq!((r.period, r.count, r.failures, r.warns), (hour, 5, 1, 1));
    assert_eq!(r.latency_min_us, Some(1_000));
    assert_eq!(r.latency_max_us, Some(40_000));
    assert_eq!(r.latency_p95_us, Some(40_000));
    let days = s
        .rollups(id, true, now.div_euclid(D) - 50, now.div_euclid(D))
        .unwrap();
    let counts: Vec<(i64, i64)> = days.iter().map(|d| (d.count, d.failures)).collect();
    assert_eq!(counts, [(1, 0), (1, 1), (5, 1)]);
    let u = s.uptime_ratios(&[id, ServiceId::new(999)], now).unwrap();
    assert_eq!(u[&id].day, Some(4.0 / 5.0));
    assert_eq!(u[&id].week, Some(4.0 / 6.0));
    assert_eq!(u[&id].quarter, Some(5.0 / 7.0));
    assert_eq!(u[&ServiceId::new(999)].day, None);
    let bars = s.daily_uptime(id, now, 3).unwrap();
    let bars: Vec<(i64, i64)> = bars.iter().map(|b| (b.ok, b.total)).collect();
    assert_eq!(bars, [(0, 1), (0, 0), (4, 5)]);
    let w = s.uptime_windows(&[id], now).unwrap();
    assert_eq!(w[&id].day, Some(0.8));
    assert!(w[&id].covered_hours > 2400);

    // Retention: roll-ups beyond theirs, raw checks beyond --keep-checks
    // unless failing or state-changing and recent.
    s.set_keep_checks(3);
    db.close_slot();
    let pruned = s.prune(now).unwrap();
    let hours = db.count("SELECT count(*) FROM uptime");
    assert_eq!(hours, 2, "the 40-day-old hour is gone");
    // The past hours were folded into their days (the 40-day-old one
    // before it went); this hour is not yet, and reads add it to today.
    assert_eq!(db.count("SELECT count(*) FROM uptime_day"), 2);
    assert_eq!(db.count("SELECT count(*) FROM uptime WHERE NOT folded"), 1);
    let days = s
        .rollups(id, true, now.div_euclid(D) - 50, now.div_euclid(D))
        .unwrap();
    let after: Vec<(i64, i64)> = days.iter().map(|d| (d.count, d.failures)).collect();
    assert_eq!(after, counts, "folding changes no read");
    let u = s.uptime_ratios(&[id], now).unwrap();
    assert_eq!(u[&id].week, Some(4.0 / 6.0));
    assert_eq!(u[&id].quarter, Some(5.0 / 7.0));
    // Folding again adds nothing twice.
    assert_eq!(s.fold_hours(now).unwrap(), 0);
    let left: Vec<(i64, String)> = s
        .checks(id, 100)
        .unwrap()
        .iter()
        .map(|c| (now - c.at, c.result.as_str().to_string()))
        .collect();
    // The newest three, and the failures (younger than 7 days); the
    // passes beyond the three go.
    assert_eq!(
        left,
        [
            (-10, "warn".to_string()),
            (0, "pass".to_string()),
            (1_000, "pass".to_string()),
            (5_000, "fail".to_string()),
            (2 * D, "fail".to_string()),
        ]
    );
    assert_eq!(pruned, 2);
    // A check written late into an hour already folded reaches its day.
    s.write_batch(
        None,
        &[check(
            id,
            now - 2 * D + 1,
            CheckResult::Pass,
            HealthState::Healthy,
        )],
    )
    .unwrap();
    let days = s
        .rollups(id, true, now.div_euclid(D) - 50, now.div_euclid(D))
        .unwrap();
    let late: Vec<(i64, i64)> = days.iter().map(|d| (d.count, d.failures)).collect();
    assert_eq!(late, [(1, 0), (2, 1), (5, 1)]);
    assert_eq!(db.count("SELECT count(*) FROM uptime WHERE NOT folded"), 1);
}

#[test]
fn concurrent_writers_and_folds_lose_and_double_no_roll_up_counts() {
    let Some(mut db) = db() else { return };
    let s = db.store.clone();
    let id = s.register(&spec("cas"), "h", 0, 10).unwrap().record.id;
    const H: i64 = 3_600_000;
    let t = 10 * 24 * H + 5 * H;
    // Four stores (four writer connections, as an old and a new owner in
    // a takeover, more often) add checks to the same hour while a third folds that
    // hour into its day (from two hours on, it is a past hour): no
    // merge may lose another's count, and none may reach the day twice.
    let folder = PgStore::open(s.db()).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let folding = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut folded = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                folded += folder.fold_hours(t + 2 * H).unwrap();
            }
            folded
        })
    };
    let writers: Vec<_> = (0..4)
        .map(|_| PgStore::open(s.db()).unwrap())
        .collect::<Vec<_>>()
        .into_iter()
        .enumerate()
        .map(|(w, store)| {
            std::thread::spawn(move || {
                for i in 0..150 {
                    let at = t + (w as i64) * 10 * 60_000 + i;
                    store
                        .write_batch(
                            None,
                            &[check(id, at, CheckResult::Pass, HealthState::Healthy)],
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let folded = folding.join().unwrap();
    assert!(folded <= 1, "the hour is folded at most once: {folded}");
    let hour = s.rollups(id, false, t / H, t / H).unwrap();
    assert_eq!(hour.len(), 1);
    assert_eq!(hour[0].count, 600, "no hour count lost");
    let day = (t / (24 * H), t / (24 * H));
    let days = s.rollups(id, true, day.0, day.1).unwrap();
    assert_eq!(days.len(), 1);
    assert_eq!(days[0].count, 600, "each check in its day once");
    // After a fold (if none ran yet), the same.
    s.fold_hours(t + 2 * H).unwrap();
    assert_eq!(db.count("SELECT count(*) FROM uptime WHERE NOT folded"), 0);
    let days = s.rollups(id, true, day.0, day.1).unwrap();
    assert_eq!(days[0].count, 600);
    let u = s.uptime_ratios(&[id], t + 2 * H).unwrap();
    assert_eq!(u[&id].week, Some(1.0));
}

#[test]
fn a_check_written_while_its_hour_is_being_folded_reaches_its_day_once() {
    let Some(mut db) = db() else { return };
    let s = db.store.clone();
    let id = s.register(&spec("fold"), "h", 0, 10).unwrap().record.id;
    const H: i64 = 3_600_000;
    let t = 20 * 24 * H + 3 * H;
    let (hour, day) = (t / H, t / (24 * H));
    s.write_batch(
        None,
        &[check(id, t, CheckResult::Pass, HealthState::Healthy)],
    )
    .unwrap();
    // Another transaction inserts the day row and keeps it uncommitted:
    // a fold, having marked the hour `folded`, waits on it before its
    // commit...
    let mut hold = postgres::Config::from(s.db().config().clone())
        .connect(postgres::NoTls)
        .unwrap();
    let mut tx = hold.transaction().unwrap();
    tx.execute(
        "INSERT INTO uptime_day (day, service_id, roll) VALUES ($1, $2, $3)",
        &[
            &day,
            &id.get(),
            &crate::store::roll_pack::encode(&Default::default()),
        ],
    )
    .unwrap();
    let waiting = |db: &mut Db| {
        db.count(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = 'healthchecker' AND wait_event_type = 'Lock'",
        )
    };
    let folder = PgStore::open(s.db()).unwrap();
    let folding = std::thread::spawn(move || folder.fold_hours(t + 2 * H).unwrap());
    while waiting(&mut db) < 1 {
        std::thread::sleep(Duration::from_millis(10));
    }
    // ... and a batch of that hour, having read the row unfolded, waits on
    // the fold's lock of the hour row.
    let writer = s.clone();
    let writing = std::thread::spawn(move || {
        writer
            .write_batch(
                None,
                &[check(id, t + 1, CheckResult::Fail, HealthState::Healthy)],
            )
            .unwrap()
    });
    while waiting(&mut db) < 2 {
        std::thread::sleep(Duration::from_millis(10));
    }
    tx.commit().unwrap();
    assert_eq!(folding.join().unwrap(), 1);
    assert_eq!(writing.join().unwrap().checks, 1);
    // The fold took the first check, the batch added the second to the
    // day itself: both in the day once, none left unfolded.
    assert_eq!(db.count("SELECT count(*) FROM uptime WHERE NOT folded"), 0);
    let h = s.rollups(id, false, hour, hour).unwrap();
    assert_eq!((h[0].count, h[0].failures), (2, 1));
    let d = s.rollups(id, true, day, day).unwrap();
    assert_eq!((d[0].count, d[0].failures), (2, 1));
}

#[test]
fn recent_checks_and_dashboard_orders() {
    let Some(db) = db() else { return };
    let s = &db.store;
    let a = s.register(&spec("a"), "h", 0, 10).unwrap().record.id;
    let b = s.register(&spec("b"), "h", 0, 10).unwrap().record.id;
    let mut batch: Vec<CheckWrite> = (0..5)
        .map(|i| check(a, 1_000 + i, CheckResult::Pass, HealthState::Healthy))
        .collect();
    batch.push(mailing(
        check(b, 2_000, CheckResult::Fail, HealthState::Unhealthy),
        HealthState::Healthy,
        "b",
        2_000,
    ));
    s.write_batch(None, &batch).unwrap();
    let recent = s.recent_checks_of(&[a, b], 3).unwrap();
    let at: Vec<i64> = recent[&a].iter().map(|c| c.at).collect();
    assert_eq!(at, [1_002, 1_003, 1_004], "newest three, oldest first");
    assert!(recent[&a].iter().all(|c| c.details.is_none()));
    assert_eq!(recent[&b].len(), 1);
    let order = |o| -> Vec<String> {
        s.list_services_ordered(&ServiceFilter::default(), o)
            .unwrap()
            .into_iter()
            .map(|r| r.spec.name)
            .collect()
    };
    assert_eq!(order(ServiceOrder::Name), ["a", "b"]);
    assert_eq!(order(ServiceOrder::State), ["b", "a"]);
    assert_eq!(order(ServiceOrder::LastChange), ["b", "a"]);
    s.register(
        &spec_of(&serde_json::json!({
            "name": "t", "url": "http://127.0.0.1:9/", "tags": ["edge", "x"],
            "email": "a@example.com"
        })),
        "h",
        0,
        10,
    )
    .unwrap();
    let page = s
        .services_tagged(&["edge".into(), "none".into()], 10, 0)
        .unwrap();
    assert_eq!(page.services.len(), 1);
    assert_eq!(page.counts, [(HealthState::Unknown, 1)]);
}

#[test]
fn channels_silences_and_held_notifications() {
    let Some(db) = db() else { return };
    let s = &db.store;
    assert!(s.put_channel(&webhook("hook", true), 0).unwrap());
    assert!(!s.put_channel(&webhook("hook", false), 1).unwrap());
    assert!(s.put_channel(&webhook("ops", false), 1).unwrap());
    let c = s.channel("hook").unwrap().unwrap();
    assert!(!c.default);
    assert_eq!(c.url.as_deref(), Some("http://127.0.0.1:9/hook"));
    let names: Vec<String> = s.channels().unwrap().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["hook", "ops"]);
    assert!(s.channel("nope").unwrap().is_none());

    let routed = spec_of(&serde_json::json!({
        "name": "api", "url": "http://127.0.0.1:9/", "channels": ["ops"],
        "email": "a@example.com",
        "depends_on": ["db"]
    }));
    let api = s.register(&routed, "h", 0, 10).unwrap().record.id;
    let dbs = s.register(&spec("db"), "h", 0, 10).unwrap().record.id;
    let r = s.routed_services("ops", ServiceId::new(0), 10).unwrap();
    assert_eq!(r.iter().map(|r| r.id).collect::<Vec<_>>(), [api]);
    assert!(s
        .routed_services("hook", ServiceId::new(0), 10)
        .unwrap()
        .is_empty());
    let graph = s.dependency_graph().unwrap();
    assert_eq!(graph["api"], ["db"]);
    assert!(graph["db"].is_empty());

    // A silence holds api's notifications until its end.
    let silence = Silence {
        id: 0,
        services: vec!["api".into()],
        tags: vec![],
        window: Window::OneOff {
            starts_at: 0,
            ends_at: 10_000,
        },
        comment: Some("deploy".into()),
    };
    let sid = s.put_silence(&silence, 0).unwrap();
    let stored = s.silences().unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].id, stored[0].comment.as_deref()),
        (sid, Some("deploy"))
    );
    assert_eq!(stored[0].window, silence.window);
    let mut down = mailing(
        check(api, 1_000, CheckResult::Fail, HealthState::Unhealthy),
        HealthState::Healthy,
        "api",
        1_000,
    );
    if let Some(n) = down.transition.as_mut().and_then(|t| t.notify.as_mut()) {
        n.held_until = Some(UnixMs::new(10_000));
    }
    s.write_batch(None, &[down]).unwrap();
    let held = s.notifications(Some("held"), None, 10).unwrap();
    assert_eq!(held.len(), 1);
    let d = s.deliveries(Some("held"), None, 10).unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].channel, "ops");
    assert_eq!(s.release_held(9_999).unwrap(), (0, 0));
    // Still failing at the end: released (mail and the channel's row).
    assert_eq!(s.release_held(10_000).unwrap(), (2, 0));
    assert_eq!(s.notifications(Some("pending"), None, 10).unwrap().len(), 1);

    // A failing parent keeps a child's held rows held.
    s.write_batch(
        None,
        &[mailing(
            check(dbs, 11_000, CheckResult::Fail, HealthState::Unhealthy),
            HealthState::Healthy,
            "db",
            11_000,
        )],
    )
    .unwrap();
    assert_eq!(s.failing_dependents("db").unwrap(), ["api"]);
    let mut up = mailing(
        check(api, 12_000, CheckResult::Pass, HealthState::Healthy),
        HealthState::Unhealthy,
        "api",
        12_000,
    );
    if let Some(n) = up.transition.as_mut().and_then(|t| t.notify.as_mut()) {
        n.held_until = Some(UnixMs::new(12_000));
    }
    s.write_batch(None, &[up]).unwrap();
    assert_eq!(s.release_held(12_000).unwrap(), (0, 0));
    let held = s.notifications(Some("held"), None, 10).unwrap();
    assert_eq!(
        held[0].last_error.as_deref(),
        Some("suppressed: parent db is unhealthy")
    );

    // Deleting the silence makes what it held due at once.
    assert!(s.delete_silence(sid, 13_000).unwrap());
    assert!(!s.delete_silence(sid, 13_000).unwrap());
    assert!(s.silences().unwrap().is_empty());

    // Deleting a channel fails its pending deliveries.
    assert!(s.delete_channel("ops").unwrap());
    assert!(!s.delete_channel("ops").unwrap());
    let failed = s.deliveries(Some("failed"), None, 10).unwrap();
    assert!(failed
        .iter()
        .all(|d| d.last_error.as_deref() == Some("channel deleted")));
    assert!(!failed.is_empty());
}

#[test]
fn events_and_outbox_are_pruned() {
    let Some(mut db) = db() else { return };
    let s = db.store.clone();
    outbox_of_twenty(&s);
    let day = 24 * 3_600_000;
    let mail: Vec<i64> = s
        .notifications(None, None, 100)
        .unwrap()
        .iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(mail.len(), 20);
    s.mark_sent(&mail[..10], "<m@x>", 3_000).unwrap();
    let now = 3_000 + crate::store::RETAIN_EVENTS_MS + day;
    assert_eq!(s.give_up_unsent(now, "no SMTP").unwrap(), 10);
    let failed = s.notifications(Some("failed"), None, 100).unwrap();
    assert!(failed
        .iter()
        .all(|n| n.last_error.as_deref() == Some("no SMTP")));
    // 1,005 recent events of one service, beyond its bound.
    db.sql
        .execute(
            "INSERT INTO events (at, service_id, service, kind) \
             SELECT $1::bigint + g, 1, 'svc-01', 'paused' FROM generate_series(1, 1005) g",
            &[&now],
        )
        .unwrap();
    s.prune(now).unwrap();
    // The old events and finished mail are gone; the recent events are
    // cut to the newest MAX_EVENTS_PER_SERVICE.
    assert_eq!(db.count("SELECT count(*) FROM notifications"), 0);
    assert_eq!(
        db.count("SELECT count(*) FROM events"),
        crate::store::MAX_EVENTS_PER_SERVICE
    );
    let oldest: i64 = db
        .sql
        .query_one("SELECT min(at) FROM events", &[])
        .unwrap()
        .get(0);
    assert_eq!(oldest, now + 6);
}

#[test]
fn a_channel_flood_is_held_for_one_digest() {
    use healthchecker_core::policy::DigestRule;
    const RULE: DigestRule = DigestRule {
        threshold: 5,
        window_ms: 30_000,
    };
    let Some(mut db) = db() else { return };
    let delivery = |c: &mut postgres::Client, channel: &str, service_id: i64, due: i64| {
        c.execute(
            "INSERT INTO deliveries (channel, event_id, service_id, service, created_at, \
               from_state, to_state, reason, target, status, next_attempt_at) \
             VALUES ($1, $2, $2, 'svc-' || $2::bigint::text, $3, 'healthy', 'unhealthy', \
               'refused', 'tcp://x:1', 'pending', $3)",
            &[&channel, &service_id, &due],
        )
        .unwrap();
    };
    for (name, kind) in [("hook", "webhook"), ("pd", "pagerduty")] {
        db.sql
            .execute(
                "INSERT INTO channels (name, kind, is_default, config, created_at, updated_at) \
                 VALUES ($1, $2, true, '{}', 0, 0)",
                &[&name, &kind],
            )
            .unwrap();
    }
    for id in 1..=8 {
        delivery(&mut db.sql, "hook", id, 1_000);
        delivery(&mut db.sql, "pd", id, 1_000);
    }
    let s = db.store.clone();
    // Five of the hook's eight on their own; PagerDuty never digests.
    assert_eq!(s.decide_digests("channel", 1_000, RULE).unwrap(), (13, 3));
    assert!(s.due_digests("channel", 30_999, 10).unwrap().is_empty());
    // Decided rows are not decided again.
    assert_eq!(s.decide_digests("channel", 1_000, RULE).unwrap(), (0, 0));
    // One more within the window joins the same digest.
    delivery(&mut db.sql, "hook", 9, 2_000);
    assert_eq!(s.decide_digests("channel", 2_000, RULE).unwrap(), (0, 1));
    let due = s.due_digests("channel", 31_000, 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].destination, "hook");
    assert_eq!(
        due[0].delivery_id(),
        format!("hc-digest-{}-1000", due[0].id)
    );
    let items = s.digest_items(&due[0]).unwrap();
    assert_eq!(items.len(), 9);
    assert_eq!(items.iter().filter(|i| i.held).count(), 4);
    let held = s.deliveries(Some("digested"), None, 10).unwrap();
    assert!(held[0]
        .last_error
        .as_deref()
        .unwrap()
        .contains("listed in digest hc-digest-"));
    s.mark_digest_failed(due[0].id, "503", 40_000, false)
        .unwrap();
    assert!(s.due_digests("channel", 39_999, 10).unwrap().is_empty());
    s.mark_digest_sent(due[0].id, 40_000).unwrap();
    let all = s.digests(Some("hook"), 10).unwrap();
    assert_eq!((all[0].status.as_str(), all[0].attempts), ("sent", 2));
    assert!(s.digests(Some("nope"), 10).unwrap().is_empty());
}

/// Digests in a cluster (docs/cluster.md, "Digests in a cluster"): a row
/// a node claimed before the decision goes out on its own and still counts;
/// a node that decides claims decided rows only; the due digest is claimed by one node, taken over when that node's claim
/// expires, and retried by any node after a failure.
#[test]
fn a_digest_is_claimed_by_one_node_and_a_claimed_row_is_not_digested() {
    use healthchecker_core::policy::DigestRule;
    const RULE: DigestRule = DigestRule {
        threshold: 5,
        window_ms: 30_000,
    };
    let Some(mut db) = db() else { return };
    db.sql
        .execute(
            "INSERT INTO channels (name, kind, is_default, config, created_at, updated_at) \
             VALUES ('hook', 'webhook', true, '{}', 0, 0)",
            &[],
        )
        .unwrap();
    let insert = |c: &mut postgres::Client, id: i64, due: i64| {
        c.execute(
            "INSERT INTO deliveries (channel, event_id, service_id, service, created_at, \
               from_state, to_state, reason, target, status, next_attempt_at) \
             VALUES ('hook', $1, $1, 'svc-' || $1::bigint::text, $2, 'healthy', \
               'unhealthy', 'refused', 'tcp://x:1', 'pending', $2)",
            &[&id, &due],
        )
        .unwrap();
    };
    for id in 1..=8i64 {
        insert(&mut db.sql, id, 1_000);
    }
    let s = db.store.clone();
    let hour = Duration::from_secs(3600);
    // Node x claims the first row before any node decided it.
    let early = s.claim_deliveries("x", 1_000, 1, hour).unwrap();
    assert_eq!(early.len(), 1);
    // The decision leaves it alone: five of the other seven on their own,
    // two held.
    assert_eq!(s.decide_digests("channel", 1_000, RULE).unwrap(), (5, 2));
    // A node that decides digests claims decided rows only: the five on
    // their own, not a row that fell due since (the next decision holds
    // it for the digest).
    insert(&mut db.sql, 9, 1_200);
    let claimed = s.claim_deliveries("y", 1_200, 50, hour).unwrap();
    assert_eq!(claimed.len(), 5, "{claimed:?}");
    assert!(claimed.iter().all(|r| r.service != "svc-9"));
    assert_eq!(s.decide_digests("channel", 1_200, RULE).unwrap(), (0, 1));
    let due_at = |db: &mut Db, id: i64| -> (Option<i64>, String) {
        let r = db
            .sql
            .query_one(
                "SELECT due_at, status FROM deliveries WHERE id = $1",
                &[&id],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(due_at(&mut db, early[0].id), (None, "pending".into()));
    // Delivered, it counts from then on.
    s.mark_delivered(&[early[0].id], 1_500).unwrap();
    assert_eq!(due_at(&mut db, early[0].id), (Some(1_500), "sent".into()));
    // Two nodes ask for the due digest at once: one gets it.
    let ask = |node: &'static str| {
        let s = s.clone();
        std::thread::spawn(move || s.claim_digests(node, "channel", 31_000, 10, hour).unwrap())
    };
    let (a, b) = (ask("a"), ask("b"));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert_eq!(a.len() + b.len(), 1, "one claim: {a:?} {b:?}");
    let (owner, d) = if a.is_empty() {
        ("b", &b[0])
    } else {
        ("a", &a[0])
    };
    let items = s.digest_items(d).unwrap();
    assert_eq!(items.len(), 9);
    assert_eq!(items.iter().filter(|i| i.held).count(), 3);
    // Not again while the claim lasts, not even to its node.
    for node in [owner, "c"] {
        assert!(s
            .claim_digests(node, "channel", 31_000, 10, hour)
            .unwrap()
            .is_empty());
    }
    // Its node died: the claim expires and another node delivers it, with
    // the same delivery id.
    db.sql
        .execute(
            "UPDATE digests SET claim_until = now() - interval '1 second' WHERE id = $1",
            &[&d.id],
        )
        .unwrap();
    let again = s.claim_digests("c", "channel", 31_000, 10, hour).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery_id(), d.delivery_id());
    // A failure ends the claim: any node retries when it is due.
    s.mark_digest_failed(d.id, "503", 40_000, false).unwrap();
    assert!(s
        .claim_digests("d", "channel", 39_999, 10, hour)
        .unwrap()
        .is_empty());
    assert_eq!(
        s.claim_digests("d", "channel", 40_000, 10, hour)
            .unwrap()
            .len(),
        1
    );
    // Sent, it is never claimed again.
    s.mark_digest_sent(d.id, 41_000).unwrap();
    db.sql
        .execute("UPDATE digests SET claim_until = NULL", &[])
        .unwrap();
    assert!(s
        .claim_digests("e", "channel", 100_000, 10, hour)
        .unwrap()
        .is_empty());
    assert_eq!(s.digests(Some("hook"), 10).unwrap()[0].status, "sent");
}

/// A node paused inside a transaction (`SIGSTOP` in the middle of a
/// fenced batch) must not keep its fence lock: PostgreSQL ends the idle
/// transaction after `IDLE_IN_TRANSACTION` (cluster/db.rs), and the other
/// nodes' claims, which try that lock, get its buckets.
#[test]
fn a_transaction_left_idle_is_ended_and_its_locks_released() {
    let Some(mut db) = db() else { return };
    let s = db.store.clone();
    let mut l = s.write_conn().unwrap();
    let (c, _) = l.conn().parts();
    let shown: String = c
        .query_one("SHOW idle_in_transaction_session_timeout", &[])
        .unwrap()
        .get(0);
    assert_eq!(shown, "5s");
    let mut tx = c.transaction().unwrap();
    // The fence's lock (node a's), then nothing: the node is stopped.
    tx.execute(FENCE_SHARED, &[&FENCE_LOCK, &"a"]).unwrap();
    // What a claim of one of a's buckets tries.
    let claim = "SELECT pg_try_advisory_xact_lock($1, hashtext('a'))";
    let mut other = db.sql.transaction().unwrap();
    let got: bool = other.query_one(claim, &[&FENCE_LOCK]).unwrap().get(0);
    assert!(!got, "locked");
    other.rollback().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut other = db.sql.transaction().unwrap();
        let got: bool = other.query_one(claim, &[&FENCE_LOCK]).unwrap().get(0);
        other.rollback().unwrap();
        if got {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the idle transaction still holds its lock"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The stopped node's next statement fails; the store opens the
    // connection again afterwards.
    assert!(tx.query("SELECT 1", &[]).is_err());
    drop(tx);
    drop(l);
    let _ = s.give_up_unsent(0, "x");
    assert_eq!(s.give_up_unsent(0, "x").unwrap(), 0);
}

/// Ends every connection of the store (as a PostgreSQL restart or a
/// failover does) and waits until the ended backends are gone (their
/// sockets closed); returns how many there were.
fn end_store_connections(db: &mut Db) -> i64 {
    let killed: i64 = db
        .sql
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'healthchecker' AND pid != pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    while db.count(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE application_name = 'healthchecker' AND pid != pg_backend_pid()",
    ) > 0
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    killed
}

#[test]
fn reads_run_on_the_reader_threads_and_broken_connections_are_opened_again() {
    let Some(mut db) = db() else { return };
    let s = db.store.clone();
    s.register(&spec("a"), "h", 0, 10).unwrap();
    let (thread, names) = db
        ._rt
        .block_on(s.read(|s| {
            let names: Vec<String> = s.load_all()?.into_iter().map(|r| r.spec.name).collect();
            Ok((std::thread::current().name().map(str::to_string), names))
        }))
        .unwrap();
    assert!(thread.unwrap().starts_with("pg-reader-"));
    assert_eq!(names, ["a"]);
    // PostgreSQL drops every connection of the store (a restart, a
    // failover): the next use of each opens it again, and no statement
    // fails on a connection that sat idle meanwhile (it is asked first).
    let killed = end_store_connections(&mut db);
    assert!(
        killed >= 2,
        "the writer's and a reader's connection: {killed}"
    );
    // Idle for longer than the store waits before it asks a connection
    // whether it still works.
    std::thread::sleep(IDLE_CHECK + Duration::from_millis(100));
    s.ping()
        .expect("a reader works at once on a new connection");
    s.register(&spec("b"), "h", 1, 10)
        .expect("the writer's connection works at once");
    assert_eq!(s.load_all().unwrap().len(), 2);
    // Ended again right after a use (within IDLE_CHECK: not asked first):
    // the registration's first try fails on the dead connection, and it
    // runs once more on a new one.
    let killed = end_store_connections(&mut db);
    assert!(killed >= 1, "the writer's connection: {killed}");
    s.register(&spec("c"), "h", 2, 10)
        .expect("a registration right after the connection ended");
    assert_eq!(db.count("SELECT count(*) FROM services"), 3);
}

#[test]
fn every_read_and_write_runs_once_more_after_the_server_ended_its_connection() {
    // Issue 18: after a PostgreSQL restart, a connection used within the
    // last second (not asked first) fails its next statement; only the
    // registration ran again, so the first read or other write answered
    // a 500. Through the `Store` seam every one runs once more.
    let Some(mut db) = db() else { return };
    let store = crate::store::Store::postgres(db.store.clone(), "n");
    let hb = spec_of(&serde_json::json!({"name": "job", "kind": "heartbeat", "period": 60}));
    let id = store.register(&hb, "h", 0, 10).unwrap().record.id;
    let mut round = |what: &str, f: &dyn Fn(&crate::store::Store) -> Result<(), StoreError>| {
        // Used just now (within IDLE_CHECK), then ended by the server.
        f(&store).unwrap_or_else(|e| panic!("{what} before: {e}"));
        assert!(end_store_connections(&mut db) >= 1);
        f(&store).unwrap_or_else(|e| panic!("{what} right after its connection ended: {e}"));
    };
    round("a read", &|s| {
        s.get_service("job").map(|r| assert!(r.is_some()))
    });
    round("a list", &|s| s.load_all().map(|r| assert_eq!(r.len(), 1)));
    round("a pause", &|s| s.set_paused("job", false, 1).map(drop));
    round("a ping", &|s| {
        s.record_ping(id, UnixMs::new(2), Ping::Fail, None)
    });
    round("a claim", &|s| s.due_notifications(3, 10).map(drop));
    round("a bucket's read", &|s| {
        s.services_in_buckets(&[Bucket::of("job")]).map(drop)
    });
    // Inside a reader closure (the API's reads), on a reader thread.
    let reader = store.clone();
    round("a read on a reader thread", &move |_| {
        db_rt_block_on(reader.read(|s| s.get_service("job").map(drop)))
    });
}

/// Runs `f` to completion on a runtime of its own (the test's thread is
/// not a tokio worker).
fn db_rt_block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn the_writer_thread_batches_fences_and_reports_stale_buckets() {
    let Some(db) = db() else { return };
    let s = db.store.clone();
    let (x, y) = ("svc-x", "svc-y");
    let ix = s.register(&spec(x), "h", 0, 10).unwrap().record.id;
    let iy = s.register(&spec(y), "h", 0, 10).unwrap().record.id;
    let mut sql = postgres::Config::from(s.db().config().clone())
        .connect(postgres::NoTls)
        .unwrap();
    own_bucket(&mut sql, Bucket::of(x), 1);
    let (held_tx, held_rx) = tokio::sync::watch::channel(held(&[(Bucket::of(x), 1)]));
    let (stale_tx, mut stale_rx) = tokio::sync::mpsc::unbounded_channel();
    let fence = PgFence {
        node: "a".into(),
        held: held_rx,
        stale: stale_tx,
        give_up: std::sync::Arc::new(tokio::sync::watch::channel(false).0),
        metrics: Default::default(),
    };
    let (writer, handle) = PgWriter::start(&s, Some(fence), PgWriterTiming::default());
    db._rt.block_on(async {
        for i in 0..10 {
            handle
                .record(check(
                    ix,
                    1_000 + i,
                    CheckResult::Pass,
                    HealthState::Healthy,
                ))
                .await;
        }
        handle
            .record(check(iy, 1_000, CheckResult::Pass, HealthState::Healthy))
            .await;
        handle.flush().await;
    });
    assert_eq!(s.checks(ix, 100).unwrap().len(), 10);
    assert!(
        s.checks(iy, 100).unwrap().is_empty(),
        "y's bucket is not held"
    );
    match stale_rx.try_recv() {
        Ok(FenceError::Stale { bucket, .. }) => assert_eq!(bucket, Bucket::of(y)),
        other => panic!("expected y's bucket reported stale: {other:?}"),
    }
    // The lease set changes (x released): x's checks are now refused.
    held_tx.send(Held::default()).unwrap();
    db._rt.block_on(async {
        handle
            .record(check(ix, 2_000, CheckResult::Pass, HealthState::Healthy))
            .await;
        handle.flush().await;
    });
    assert_eq!(s.checks(ix, 100).unwrap().len(), 10);
    assert!(matches!(stale_rx.try_recv(), Ok(FenceError::Stale { .. })));
    drop(handle);
    let stopped = writer.stopped();
    writer.join();
    assert!(stopped.is_cancelled());
}

#[test]
fn a_corrupt_row_is_reported_with_its_table_row_and_column() {
    let Some(mut db) = db() else { return };
    let s = db.store.clone();
    let id = s.register(&spec("a"), "h", 0, 10).unwrap().record.id;
    s.write_batch(
        None,
        &[check(id, 1_000, CheckResult::Pass, HealthState::Healthy)],
    )
    .unwrap();
    let corrupt = |r: Result<_, StoreError>| match r {
        Err(StoreError::Corrupt(c)) => (c.table, c.row, c.column),
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("expected Corrupt, got a value"),
    };
    // Each case: a value no build writes, then the read that must refuse it.
    db.sql
        .execute(
            "UPDATE services SET state = 'bogus' WHERE id = $1",
            &[&id.get()],
        )
        .unwrap();
    assert_eq!(
        corrupt(s.get_service("a").map(|_| ())),
        ("services".into(), Some(id.get()), "state".into())
    );
    assert!(matches!(s.count_by_state(), Err(StoreError::Corrupt(_))));
    db.sql
        .execute(
            "UPDATE services SET state = 'healthy', port = 70000 WHERE id = $1",
            &[&id.get()],
        )
        .unwrap();
    assert_eq!(
        corrupt(s.list_services(&ServiceFilter::default()).map(|_| ())),
        ("services".into(), Some(id.get()), "port".into())
    );
    db.sql
        .execute(
            "UPDATE services SET port = 80, tags = 'not json' WHERE id = $1",
            &[&id.get()],
        )
        .unwrap();
    assert_eq!(
        corrupt(s.get_service("a").map(|_| ())),
        ("services".into(), Some(id.get()), "tags".into())
    );
    db.sql
        .batch_execute("UPDATE checks SET result = 'maybe'; UPDATE uptime SET roll = '\\x07'")
        .unwrap();
    assert_eq!(corrupt(s.checks(id, 10).map(|_| ())).2, "result");
    let hour = 1_000 / 3_600_000;
    assert_eq!(
        corrupt(s.rollups(id, false, hour, hour).map(|_| ())),
        ("uptime".into(), None, "roll".into())
    );
}

/// The prune by bucket slices (`checks.rs`, `PRUNE_BEYOND`) removes exactly
/// the rows the former single statement named (a window ranking every
/// check of every service): same rule, checked row by row on services of
/// many buckets with every edge of it, the former statement as the oracle.
/// What the retention rule removes at `now`, as the former single
/// statement named it (a window ranking every check of every service):
/// the oracle of the prune's tests.
fn named_by_the_ranking(sql: &mut postgres::Client, keep: i64, now: i64) -> BTreeSet<i64> {
    sql.query(
        "SELECT c.id FROM checks c WHERE NOT EXISTS \
           (SELECT 1 FROM services s WHERE s.id = c.service_id) \
         UNION ALL \
         SELECT x.id FROM ( \
           SELECT id, service_id, at, result, changed, \
             row_number() OVER (PARTITION BY service_id ORDER BY id DESC) AS n \
           FROM checks) x JOIN services s ON s.id = x.service_id \
         WHERE x.n > $1 AND x.id <= s.rolled_through \
           AND (x.at < $2 OR (x.result = 'pass' AND NOT x.changed))",
        &[&keep, &(now - RETAIN_MS)],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Every check row's id.
fn check_ids(sql: &mut postgres::Client) -> BTreeSet<i64> {
    sql.query("SELECT id FROM checks", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn pruning_by_slices_removes_exactly_what_the_ranking_named() {
    let Some(mut db) = db() else { return };
    let s = db.store.clone();
    const D: i64 = 24 * 3_600_000;
    let now = 100 * D;
    let keep: i64 = 5;
    s.set_keep_checks(keep);
    // Ages at the edges of the 7 days (the rule keeps `at >= now -
    // RETAIN_MS`), and results and `changed` flags of every kind.
    let ages = [
        30 * D,
        8 * D,
        RETAIN_MS + 1,
        RETAIN_MS,
        RETAIN_MS - 1,
        D,
        60_000,
        1_000,
        0,
    ];
    let kinds = [
        ("pass", false),
        ("pass", true),
        ("warn", false),
        ("fail", false),
        ("fail", true),
    ];
    // Services spread over many buckets, with 0, 1, keep, keep + 1 and
    // more checks; their checks written round robin (ids interleave as a
    // batch's do), oldest first.
    let mut ids = Vec::new();
    let mut rows: Vec<Vec<(i64, &str, bool)>> = Vec::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) % n
    };
    for i in 0..40 {
        let id = s
            .register(&spec(&format!("p{i}")), "h", 0, 1_000)
            .unwrap()
            .record
            .id;
        ids.push(id.get());
        let n = [0, 1, keep as u64, keep as u64 + 1, 12, 30][i % 6] as usize;
        let mut own: Vec<(i64, &str, bool)> = (0..n)
            .map(|_| {
                let (r, c) = kinds[next(kinds.len() as u64) as usize];
                (now - ages[next(ages.len() as u64) as usize], r, c)
            })
            .collect();
        own.sort_by_key(|c| c.0);
        rows.push(own);
    }
    // And checks of a service that is gone.
    ids.push(1_000_000);
    rows.push(vec![(now - 30 * D, "pass", false), (now, "fail", true)]);
    let longest = rows.iter().map(Vec::len).max().unwrap();
    for k in 0..longest {
        for (id, own) in ids.iter().zip(&rows) {
            if let Some((at, result, changed)) = own.get(k) {
                db.sql
                    .execute(
                        "INSERT INTO checks (service_id, at, duration_us, result, changed) \
                         VALUES ($1, $2, 1000, $3, $4)",
                        &[id, at, result, changed],
                    )
                    .unwrap();
            }
        }
    }
    // Rolled up: none, some (a mark inside the checks: the check at the
    // mark may go, the ones above may not), all.
    for (i, id) in ids.iter().enumerate() {
        let mark = match (i / 6) % 3 {
            0 => "0",
            1 => {
                "(SELECT coalesce(min(id) + (max(id) - min(id)) / 2, 0) \
                  FROM checks WHERE service_id = $1)"
            }
            _ => "(SELECT coalesce(max(id), 0) FROM checks WHERE service_id = $1)",
        };
        db.sql
            .execute(
                &format!("UPDATE services SET rolled_through = {mark} WHERE id = $1"),
                &[id],
            )
            .unwrap();
    }
    let buckets = db.count("SELECT count(DISTINCT bucket) FROM services");
    assert!(buckets > 30, "services in {buckets} buckets");
    let named = named_by_the_ranking(&mut db.sql, keep, now);
    let before = check_ids(&mut db.sql);
    // The data names enough, and keeps enough, to tell rules apart.
    assert!(named.len() > 20, "{} named", named.len());
    assert!(
        before.len() - named.len() > 100,
        "{} kept",
        before.len() - named.len()
    );

    assert_eq!(s.prune_checks(now).unwrap(), named.len());
    let after = check_ids(&mut db.sql);
    assert_eq!(after, &before - &named);
    // A second pass finds nothing more.
    assert_eq!(s.prune_checks(now).unwrap(), 0);
}

/// Raw checks go a slot at a time (`checks.rs`, `turn_slots`), by the
/// clock: the current slot is closed once it has been current for a
/// period, and emptied a retention later, after what the rule keeps of it
/// was copied into `checks_kept`. What is left is what the ranking keeps
/// of the emptied slot, and the newer slot untouched.
#[test]
fn raw_checks_go_a_slot_at_a_time_keeping_what_the_rule_keeps() {
    let Some(mut db) = db() else { return };
    let s = db.store.clone();
    let keep = 3;
    s.set_keep_checks(keep);
    let t0 = 1_700_000_000_000;
    let fast = s.register(&spec("fast"), "h", t0, 10).unwrap().record.id;
    let slow_spec = spec_of(&serde_json::json!({
        "name": "slow", "url": "http://127.0.0.1:9/health", "interval": 300,
        "email": "a@example.com"
    }));
    let slow = s.register(&slow_spec, "h", t0, 10).unwrap().record.id;
    let (retain, period) = slot_retention(keep, 300, 2, 1.0 / 30.0 + 1.0 / 300.0);
    assert!(
        retain < 30 * 60_000 && period == retain / 5,
        "the slow service does not hold the fast one's checks for hours: {retain} ms"
    );
    let current = |db: &mut Db| {
        db.sql
            .query_one("SELECT slot, opened_at FROM check_slots WHERE current", &[])
            .map(|r| (r.get::<_, i32>(0), r.get::<_, Option<i64>>(1)))
            .unwrap()
    };
    assert_eq!(current(&mut db), (0, None));
    s.prune(t0).unwrap();
    assert_eq!(current(&mut db), (0, Some(t0)), "the first pass dates it");

    let results = [
        CheckResult::Pass,
        CheckResult::Fail,
        CheckResult::Pass,
        CheckResult::Pass,
        CheckResult::Pass,
    ];
    let mut batch: Vec<CheckWrite> = results
        .iter()
        .enumerate()
        .map(|(i, r)| check(fast, t0 + 1_000 * i as i64, *r, HealthState::Healthy))
        .collect();
    batch.push(check(slow, t0, CheckResult::Pass, HealthState::Healthy));
    batch.push(check(slow, t0 + 1, CheckResult::Pass, HealthState::Healthy));
    s.write_batch(None, &batch).unwrap();
    let first = db.count("SELECT count(*) FROM checks_s0");
    assert_eq!(first, 7);

    s.prune(t0 + period - 1).unwrap();
    assert_eq!(current(&mut db), (0, Some(t0)));
    s.prune(t0 + period).unwrap();
    assert_eq!(
        current(&mut db),
        (1, Some(t0 + period)),
        "closed after a period"
    );
    // The fast service's newest three now in slot 1.
    let newer: Vec<CheckWrite> = (0..3)
        .map(|i| {
            check(
                fast,
                t0 + period + i,
                CheckResult::Pass,
                HealthState::Healthy,
            )
        })
        .collect();
    s.write_batch(None, &newer).unwrap();
    assert_eq!(db.count("SELECT count(*) FROM checks_s1"), 3);
    // A service's newest check: from the current slot when it has one
    // there, from the others when not (`SERVICE_COLUMNS`).
    let last_at = |name: &str| {
        s.get_service(name)
            .unwrap()
            .unwrap()
            .last_check
            .map(|c| c.at)
    };
    assert_eq!(last_at("fast"), Some(t0 + period + 2));
    assert_eq!(last_at("slow"), Some(t0 + 1));

    let emptied_at = t0 + period + retain;
    s.prune(emptied_at - 1).unwrap();
    assert_eq!(db.count("SELECT count(*) FROM checks_s0"), first, "not yet");
    let before = check_ids(&mut db.sql);
    let in_first: BTreeSet<i64> = db
        .sql
        .query("SELECT id FROM checks_s0", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let named = &named_by_the_ranking(&mut db.sql, keep, emptied_at) & &in_first;
    // The fast service's four passes go; its failure (younger than 7
    // days) and the slow service's two (among its newest three) stay.
    assert_eq!(named.len(), 4);
    assert_eq!(s.prune(emptied_at).unwrap(), named.len());
    assert_eq!(check_ids(&mut db.sql), &before - &named);
    assert_eq!(
        db.count("SELECT count(*) FROM checks_s0"),
        0,
        "emptied whole"
    );
    assert_eq!(db.count("SELECT count(*) FROM checks_kept"), 3);
    assert_eq!(
        db.count("SELECT count(*) FROM check_slots WHERE slot = 0 AND opened_at IS NULL AND closed_at IS NULL AND NOT current"),
        1
    );
    // And slot 1, current for more than a period by the pass before,
    // was closed then for slot 2.
    assert_eq!(current(&mut db), (2, Some(emptied_at - 1)));
    let fast_left: Vec<&str> = s
        .checks(fast, 100)
        .unwrap()
        .iter()
        .map(|c| c.result.as_str())
        .collect();
    assert_eq!(fast_left, ["pass", "pass", "pass", "fail"]);
    assert_eq!(s.checks(slow, 100).unwrap().len(), 2);
    assert_eq!(last_at("slow"), Some(t0 + 1), "from checks_kept");
    // Nothing more to remove, and a pass changes nothing.
    assert_eq!(s.prune(emptied_at + 1).unwrap(), 0);
    assert_eq!(check_ids(&mut db.sql), &before - &named);
}

/// A write still in flight into the slot being emptied (a node stalled
/// for a whole retention) is waited for, and what it committed is judged
/// by the rule like the rest: its failing check is kept, not truncated.
#[test]
fn a_write_in_flight_into_the_slot_being_emptied_is_waited_for() {
    let Some(mut db) = db() else { return };
    let s = db.store.clone();
    s.set_keep_checks(1);
    let t0 = 1_700_000_000_000;
    let id = s.register(&spec("late"), "h", t0, 10).unwrap().record.id;
    s.write_batch(
        None,
        &[
            check(id, t0, CheckResult::Pass, HealthState::Healthy),
            check(id, t0 + 1, CheckResult::Pass, HealthState::Healthy),
        ],
    )
    .unwrap();
    db.close_slot();
    // The stalled writer: a failing check into slot 0, not committed yet.
    let url = PgDb::parse(&db._pg.url(), None).unwrap();
    let mut late = postgres::Config::from(url.config().clone())
        .connect(postgres::NoTls)
        .unwrap();
    let mut tx = late.transaction().unwrap();
    tx.execute(
        "INSERT INTO checks (service_id, at, duration_us, result, slot) VALUES ($1, $2, 1, 'fail', 0)",
        &[&id.get(), &(t0 + 2)],
    )
    .unwrap();
    let pass = std::thread::spawn(move || s.prune(t0 + 10_000).unwrap());
    std::thread::sleep(Duration::from_millis(1_000));
    assert!(!pass.is_finished(), "the pass waits for the write");
    tx.commit().unwrap();
    pass.join().unwrap();
    assert_eq!(db.count("SELECT count(*) FROM checks_s0"), 0, "emptied");
    let kept: Vec<String> = db
        .sql
        .query("SELECT result FROM checks_kept ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // The late failure is kept (7 days), and is its service's newest;
    // the two passes beyond the newest one go.
    assert_eq!(kept, ["fail"]);
}

/// Uptime counts the checks not rolled up yet (above the service's mark)
/// in their hours and days, at the windows' edges: the last 24 hours are
/// the current hour and the 23 before it, the 7/30/90 days end today.
#[test]
fn uptime_counts_checks_not_rolled_up_at_the_windows_edges() {
    let Some(mut db) = db() else { return };
    let s = db.store.clone();
    const H: i64 = 3_600_000;
    const D: i64 = 24 * H;
    let id = s.register(&spec("u"), "h", 0, 10).unwrap().record.id;
    let none = s.register(&spec("v"), "h", 0, 10).unwrap().record.id;
    let now = 100 * D + 12 * H + H / 2;
    // Nothing rolled up (the mark at 0): every check is read raw.
    for (ago, result) in [
        (95 * D, "pass"),         // beyond 90 days: nowhere
        (60 * D, "fail"),         // the quarter
        (20 * D, "pass"),         // the month
        (3 * D, "fail"),          // the week
        (24 * H + H / 2, "fail"), // 24 hours before this hour: the week, not the day
        (23 * H + H / 2, "pass"), // the 23rd hour before this one: the day
        (2 * H, "fail"),
        (1_000, "pass"),
    ] {
        db.sql
            .execute(
                "INSERT INTO checks (service_id, at, duration_us, result) VALUES ($1, $2, 1, $3)",
                &[&id.get(), &(now - ago), &result],
            )
            .unwrap();
    }
    let u = s.uptime_ratios(&[id, none], now).unwrap();
    assert_eq!(u[&id].day, Some(2.0 / 3.0));
    assert_eq!(u[&id].week, Some(2.0 / 5.0));
    assert_eq!(u[&id].month, Some(3.0 / 6.0));
    assert_eq!(u[&id].quarter, Some(3.0 / 7.0));
    assert_eq!(u[&none].day, None);
    assert_eq!(u[&none].quarter, None);
}

/// Every order a page of services asks for is read by an index that stops
/// at the page's `LIMIT` (migration 9), with or without a state filter:
/// the plan has no sort. Fails when `dashboard.rs`'s `order_sql` and the
/// index's expression drift apart (the planner matches them expression
/// for expression), or when a page sorts by a collation no index has.
#[test]
fn every_order_of_a_page_is_read_by_index_without_a_sort() {
    let Some(mut db) = db() else { return };
    for i in 0..50 {
        db.store
            .register(&spec(&format!("o{i}")), "h", 0, 1_000)
            .unwrap();
    }
    // A handful of rows: without this the planner reads the table (or a
    // bitmap of it) and sorts it, as it should at this size; what is
    // asked here is whether an ordered index path exists.
    db.sql
        .batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
        .unwrap();
    let orders = [
        ServiceOrder::Name,
        ServiceOrder::State,
        ServiceOrder::LastChange,
    ];
    let mut pages: Vec<String> = orders
        .iter()
        .map(|o| format!("WHERE true{} LIMIT 100", super::dashboard::order_sql(*o)))
        .collect();
    // The list API's cursor, and a state filter.
    pages.push("WHERE name COLLATE \"C\" > 'o1' ORDER BY name COLLATE \"C\" LIMIT 101".into());
    pages.push("WHERE state = 'healthy' ORDER BY name COLLATE \"C\" LIMIT 101".into());
    for page in pages {
        let plan: Vec<String> = db
            .sql
            .query(&format!("EXPLAIN SELECT id FROM services {page}"), &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(
            !plan.contains("Sort") && plan.contains("Index"),
            "{page}:\n{plan}"
        );
    }
}
