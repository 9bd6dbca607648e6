//! The scheduler loop on tokio's paused clock: scripted checks instead of
//! probes, the writes captured instead of stored, wall time following the
//! paused clock ([`Clock::following_tokio`]). Hours of schedule run in
//! milliseconds, and times are asserted exactly.

use super::probe::Script;
use super::*;
use crate::clock::Clock;
use crate::store::CheckWrite;
use healthchecker_core::heartbeat::Ping;
use healthchecker_core::CheckResult::{self, Fail, Pass};
use healthchecker_core::HealthState::{Degraded, Healthy, Unhealthy, Unknown};
use healthchecker_core::{ServiceId, UnixMs};
use std::sync::Mutex;
use tokio::sync::mpsc::UnboundedReceiver;

/// Wall time at the start of every test (Unix ms).
const T0: i64 = 1_800_000_000_000;

/// A scheduler with one service, its writes and its command handle.
struct Harness {
    handle: SchedulerHandle,
    writes: UnboundedReceiver<CheckWrite>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    /// The scheduler's wall clock.
    clock: Clock,
}

impl Harness {
    /// Starts the scheduler with `services`; checks answer with `script`.
    fn start(services: Vec<ServiceRecord>, script: Script, min_gap_ms: i64) -> Harness {
        Harness::start_owning(services, script, min_gap_ms, None)
    }

    /// [`Harness::start`] as a node of a cluster running the buckets of
    /// `ownership`.
    fn start_owning(
        services: Vec<ServiceRecord>,
        script: Script,
        min_gap_ms: i64,
        ownership: Option<Ownership>,
    ) -> Harness {
        Harness::start_slots(services, script, min_gap_ms, ownership, 16)
    }

    /// [`Harness::start_owning`] with `slots` probe slots.
    fn start_slots(
        services: Vec<ServiceRecord>,
        script: Script,
        min_gap_ms: i64,
        ownership: Option<Ownership>,
        slots: usize,
    ) -> Harness {
        let (writer, writes) = WriterHandle::capture();
        let cfg = SchedulerConfig {
            max_concurrent_probes: slots,
            notify_min_gap_ms: min_gap_ms,
            outbox_note: None,
            silences: Default::default(),
            clock: Clock::following_tokio(T0),
            ownership,
        };
        let clock = cfg.clock;
        let parts = Parts {
            cfg,
            checker: Checker::Script(script),
            writer,
            metrics: Arc::new(Metrics::new()),
        };
        let (cancel, tasks) = (CancellationToken::new(), TaskTracker::new());
        let handle = start_with(services, parts, cancel.clone(), &tasks);
        Harness {
            handle,
            writes,
            cancel,
            tasks,
            clock,
        }
    }

    /// The next `n` writes; fails if they do not come within a virtual day
    /// (the clock is paused: that costs no real time).
    async fn next(&mut self, n: usize) -> Vec<CheckWrite> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let w = tokio::time::timeout(Duration::from_secs(86_400), self.writes.recv())
                .await
                .expect("a check within a day")
                .expect("scheduler running");
            out.push(w);
        }
        out
    }

    /// Asserts that nothing is written for `span` of virtual time.
    async fn quiet_for(&mut self, span: Duration) {
        let got = tokio::time::timeout(span, self.writes.recv()).await;
        assert!(got.is_err(), "unexpected write: {got:?}");
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// A stored service `id` registered at `T0` from a registration body.
fn service(id: i64, body: serde_json::Value) -> ServiceRecord {
    let req = healthchecker_core::RegisterRequest::from_json(body.to_string().as_bytes())
        .expect("a registration");
    let spec = ServiceSpec::try_from(req).expect("valid registration");
    ServiceRecord {
        id: ServiceId::new(id),
        spec,
        paused: false,
        state: Unknown,
        successes: 0,
        failures: 0,
        state_since: T0,
        last_check: None,
        last_healthy_at: None,
        last_failure_reason: None,
        cert_expires_at: None,
        created_at: T0,
        updated_at: T0,
        last_notified_at: None,
        ping_id: None,
        last_ping_at: None,
        last_success_ping_at: None,
    }
}

/// A polled service checking every `interval` seconds.
fn polled(interval: u32, healthy: u32, unhealthy: u32) -> ServiceRecord {
    service(
        7,
        serde_json::json!({
            "name": "web", "url": "http://127.0.0.1:9/", "email": ["ops@example.com"],
            "interval": interval, "timeout": 2,
            "healthy_threshold": healthy, "unhealthy_threshold": unhealthy,
        }),
    )
}

/// Answers the listed results in order, then the last one forever; each
/// check takes `takes` (of paused time).
fn results(list: &[CheckResult], takes: Duration) -> Script {
    let left = Arc::new(Mutex::new(list.to_vec()));
    Arc::new(move |_| {
        let result = {
            let mut left = left.lock().unwrap();
            if left.len() > 1 {
                left.remove(0)
            } else {
                left[0]
            }
        };
        Box::pin(async move {
            tokio::time::sleep(takes).await;
            let mut o = match result {
                Fail => ProbeOutcome::fail("HTTP 503"),
                _ => ProbeOutcome::pass(),
            };
            o.result = result;
            o.duration = takes;
            o
        })
    })
}

fn times(writes: &[CheckWrite]) -> Vec<i64> {
    writes.iter().map(|w| w.at.get()).collect()
}

#[tokio::test(start_paused = true)]
async fn checks_every_interval_without_drift() {
    // Each check takes 700 ms: a schedule of `finish + interval` would
    // drift by that much per check; fixed rate does not.
    let mut h = Harness::start(
        vec![polled(5, 2, 2)],
        results(&[Pass], Duration::from_millis(700)),
        0,
    );
    let at = times(&h.next(40).await);
    let first = at[0] - T0;
    assert!(
        (0..5_000).contains(&first),
        "first check within one interval of start: {first} ms"
    );
    let gaps: Vec<i64> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|g| *g == 5_000), "{gaps:?}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_result_is_taken_within_a_round_even_with_nothing_else_due() {
    // Results are not woken for one by one but taken once a firing round
    // (`take_done`); with one service at 300 s nothing else is due, and
    // its result must still reach the writer within FIRE_TICK of the
    // probe's end, not at the loop's idle tick (1 s) or the next check.
    let mut h = Harness::start(
        vec![polled(300, 2, 2)],
        results(&[Pass], Duration::from_millis(700)),
        0,
    );
    for _ in 0..3 {
        let w = h.next(1).await;
        let taken = h.clock.now_ms() - w[0].at.get();
        let fire_tick = FIRE_TICK.as_millis() as i64;
        assert!(
            (700..=700 + fire_tick).contains(&taken),
            "written {taken} ms after its start (takes 700 ms)"
        );
    }
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_service_keeps_its_interval() {
    // No back-off: a failing service is checked as often as a healthy one
    // (the SPEC's back-offs are for mail and channel retries).
    let mut h = Harness::start(
        vec![polled(10, 2, 2)],
        results(&[Fail], Duration::from_millis(20)),
        0,
    );
    let w = h.next(12).await;
    assert!(w.iter().all(|c| c.result == Fail));
    assert_eq!(w.last().unwrap().state, Unhealthy);
    let gaps: Vec<i64> = times(&w).windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|g| *g == 10_000), "{gaps:?}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_check_slower_than_the_interval_skips_slots_instead_of_piling_up() {
    // Interval 5 s, a check takes 12 s: the slots at +5 s and +10 s find
    // it in flight and are skipped; the next one starts at +15 s.
    let mut h = Harness::start(
        vec![polled(5, 2, 2)],
        results(&[Pass], Duration::from_secs(12)),
        0,
    );
    let gaps: Vec<i64> = times(&h.next(6).await)
        .windows(2)
        .map(|w| w[1] - w[0])
        .collect();
    assert!(gaps.iter().all(|g| *g == 15_000), "{gaps:?}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn thresholds_decide_healthy_and_unhealthy() {
    // healthy_threshold 3, unhealthy_threshold 2.
    let script = [Pass, Pass, Pass, Fail, Fail, Pass, Pass, Pass];
    let mut h = Harness::start(
        vec![polled(5, 3, 2)],
        results(&script, Duration::from_millis(10)),
        0,
    );
    let w = h.next(script.len()).await;
    let states: Vec<_> = w.iter().map(|c| c.state).collect();
    assert_eq!(
        states,
        [Unknown, Unknown, Healthy, Degraded, Unhealthy, Unhealthy, Unhealthy, Healthy]
    );
    // Each change is recorded with the check that caused it, the state it
    // left and since when; it notifies unless it is the first verdict.
    let changes: Vec<_> = w
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.transition.as_ref().map(|t| (i, c.at, t)))
        .collect();
    let found: Vec<_> = changes
        .iter()
        .map(|(i, _, t)| (*i, t.from, t.notify.is_some()))
        .collect();
    assert_eq!(
        found,
        [
            (2, Unknown, false),
            (3, Healthy, true),
            (4, Degraded, true),
            (7, Unhealthy, true)
        ]
    );
    assert_eq!(
        changes[0].2.previous_since.get(),
        T0,
        "unknown since registration"
    );
    for pair in changes.windows(2) {
        assert_eq!(pair[1].2.previous_since, pair[0].1);
    }
    let n = changes[1].2.notify.as_ref().unwrap();
    assert_eq!(n.recipients, ["ops@example.com"]);
    assert_eq!(n.not_before, changes[1].1, "no gap configured: at once");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_flapping_service_notifies_at_most_once_per_gap() {
    // Healthy, then pass/fail alternating: every check is a change
    // (healthy <-> degraded) and every change notifies.
    let mut script = vec![Pass, Pass];
    script.extend([Fail, Pass].repeat(20));
    let gap = 60_000;
    let mut h = Harness::start(
        vec![polled(5, 2, 10)],
        results(&script, Duration::from_millis(10)),
        gap,
    );
    let w = h.next(script.len()).await;
    let notified: Vec<(i64, i64)> = w
        .iter()
        .filter_map(|c| {
            let n = c.transition.as_ref()?.notify.as_ref()?;
            Some((c.at.get(), n.not_before.get()))
        })
        .collect();
    assert_eq!(notified.len(), 40, "every flap is recorded");
    let first = notified[0];
    assert_eq!(first.1, first.0, "the first goes at once");
    let mut slots: Vec<i64> = notified.iter().map(|n| n.1).collect();
    slots.dedup();
    // 40 flaps, 5 s apart (the last 195 s after the first), share 5
    // slots one gap apart: at once, then +60 s, +120 s, +180 s, +240 s.
    let want: Vec<i64> = (0..5).map(|k| first.0 + k * gap).collect();
    assert_eq!(slots, want);
    for (at, slot) in notified {
        assert!(slot >= at && slot - at < gap, "{at} -> {slot}");
    }
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_overdue_heartbeat_fails_once_per_missed_deadline() {
    let hb = service(
        9,
        serde_json::json!({"name": "backup", "kind": "heartbeat", "period": 60, "grace": 60}),
    );
    let mut h = Harness::start(vec![hb], results(&[Pass], Duration::ZERO), 0);
    let w = h.next(1).await;
    assert_eq!(
        w[0].at.get(),
        T0 + 120_000,
        "judged at period + grace, exactly"
    );
    assert_eq!(w[0].result, Fail);
    assert_eq!(w[0].state, Unhealthy);
    assert_eq!(
        w[0].reason.as_deref(),
        Some("no success ping within period + grace (1m + 1m)")
    );
    // The same missed deadline is not reported again.
    h.quiet_for(Duration::from_secs(3 * 3_600)).await;
    // A success ping: healthy at once, and a new deadline from it.
    let now = h.clock.now_ms();
    assert!(
        h.handle
            .send(Command::Ping {
                id: ServiceId::new(9),
                ping: Ping::Success,
                at: UnixMs::new(now),
                output: None,
            })
            .await
    );
    let w = h.next(2).await;
    assert_eq!((w[0].result, w[0].state), (Pass, Healthy));
    assert_eq!(w[1].at.get(), now + 120_000);
    assert_eq!(w[1].state, Unhealthy);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_paused_service_is_not_checked_and_resumes_within_a_second() {
    let mut h = Harness::start(
        vec![polled(5, 2, 2)],
        results(&[Pass], Duration::from_millis(10)),
        0,
    );
    h.next(1).await;
    assert!(
        h.handle
            .send(Command::SetPaused {
                id: ServiceId::new(7),
                paused: true
            })
            .await
    );
    h.quiet_for(Duration::from_secs(600)).await;
    let resumed_at = h.clock.now_ms();
    assert!(
        h.handle
            .send(Command::SetPaused {
                id: ServiceId::new(7),
                paused: false
            })
            .await
    );
    let w = h.next(2).await;
    let first = w[0].at.get() - resumed_at;
    assert!(
        (0..1_000).contains(&first),
        "first check {first} ms after resume"
    );
    assert_eq!(w[1].at - w[0].at, 5_000, "then its interval again");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_dependent_and_its_parent_failing_together_are_held_one_cycle() {
    let parent = service(
        1,
        serde_json::json!({"name": "router", "url": "http://127.0.0.1:9/",
            "interval": 10, "timeout": 3, "unhealthy_threshold": 2}),
    );
    let dependent = service(
        2,
        serde_json::json!({"name": "nas", "url": "http://127.0.0.1:9/",
            "interval": 5, "timeout": 2, "unhealthy_threshold": 2, "depends_on": ["router"]}),
    );
    let mut h = Harness::start(
        vec![parent, dependent],
        results(&[Fail], Duration::from_millis(10)),
        0,
    );
    // Both reach unhealthy (2 failures each); the dependent checks twice as often.
    let mut held = std::collections::HashMap::new();
    while held.len() < 2 {
        for w in h.next(1).await {
            let Some(n) = w.transition.and_then(|t| t.notify) else {
                continue;
            };
            if w.state == Unhealthy {
                held.insert(w.service_id.get(), (w.at, n.held_until));
            }
        }
    }
    // A dependent waits one parent cycle (interval + timeout + 2 s slack);
    // a parent going down waits one dependent cycle, to list it.
    let (at, until) = held[&2];
    assert_eq!(until, Some(at + (10 + 3) * 1000 + 2_000), "dependent");
    let (at, until) = held[&1];
    assert_eq!(until, Some(at + (5 + 2) * 1000 + 2_000), "parent");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_removed_service_is_never_checked_again() {
    let mut h = Harness::start(
        vec![polled(5, 2, 2)],
        results(&[Pass], Duration::from_millis(10)),
        0,
    );
    h.next(2).await;
    let name = "web".to_string();
    assert!(
        h.handle
            .send(Command::Remove {
                id: ServiceId::new(7),
                name,
            })
            .await
    );
    h.quiet_for(Duration::from_secs(3_600)).await;
    h.stop().await;
}

// The cluster's ownership (SPEC section 19): a node fires only the
// services of the buckets it holds.

/// A held set of the buckets of `names` (epoch 1).
fn holding(names: &[&str]) -> crate::cluster::Held {
    let mut held = crate::cluster::Held::default();
    for n in names {
        held.leases.insert(
            healthchecker_core::cluster::Bucket::of(n),
            healthchecker_core::cluster::Epoch(1),
        );
    }
    held
}

/// Two polled services every 5 s in different buckets: "web" (id 7,
/// bucket 1000) and "a" (id 8, bucket 192).
fn two_services() -> Vec<ServiceRecord> {
    let other = service(
        8,
        serde_json::json!({"name": "a", "url": "http://127.0.0.1:9/", "interval": 5, "timeout": 2}),
    );
    vec![polled(5, 2, 2), other]
}

#[tokio::test(start_paused = true)]
async fn a_node_checks_only_the_services_of_its_buckets() {
    use healthchecker_core::cluster::Bucket;
    assert_ne!(Bucket::of("web"), Bucket::of("a"));
    let (held, rx) = tokio::sync::watch::channel(holding(&["web"]));
    let ownership = Ownership {
        held: rx,
        load: None,
    };
    let mut h = Harness::start_owning(
        two_services(),
        results(&[Pass], Duration::from_millis(10)),
        0,
        Some(ownership),
    );
    // An hour of checks: every one of "web", none of "a".
    let w = h.next(720).await;
    assert!(w.iter().all(|c| c.service_id == ServiceId::new(7)));

    // Gaining the bucket of "a": it starts within one interval, on its
    // phase, and then keeps its interval.
    let gained_at = h.clock.now_ms();
    held.send(holding(&["web", "a"])).unwrap();
    let mut of_a = Vec::new();
    while of_a.len() < 3 {
        of_a.extend(
            h.next(1)
                .await
                .into_iter()
                .filter(|c| c.service_id == ServiceId::new(8))
                .map(|c| c.at.get()),
        );
    }
    assert!(
        (0..5_000).contains(&(of_a[0] - gained_at)),
        "first check {} ms after the gain",
        of_a[0] - gained_at
    );
    assert_eq!([of_a[1] - of_a[0], of_a[2] - of_a[1]], [5_000, 5_000]);

    // Losing the bucket of "web": only "a" is checked from then on.
    held.send(holding(&["a"])).unwrap();
    let lost_at = h.clock.now_ms();
    let w = h.next(720).await;
    let late: Vec<_> = w
        .iter()
        .filter(|c| c.service_id == ServiceId::new(7) && c.at.get() > lost_at)
        .collect();
    assert!(
        late.is_empty(),
        "web checked after its bucket was lost: {late:?}"
    );
    assert!(
        w.iter()
            .filter(|c| c.service_id == ServiceId::new(8))
            .count()
            >= 700
    );

    // The lease manager gone: nothing is held, nothing is checked.
    drop(held);
    // (One check of "a" may already be in flight: it is dropped.)
    h.quiet_for(Duration::from_secs(3_600)).await;
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_result_in_flight_when_its_bucket_is_lost_is_dropped() {
    let (held, rx) = tokio::sync::watch::channel(holding(&["web"]));
    let ownership = Ownership {
        held: rx,
        load: None,
    };
    // Every check takes 3 s of a 5 s interval.
    let mut h = Harness::start_owning(
        vec![polled(5, 2, 2)],
        results(&[Pass], Duration::from_secs(3)),
        0,
        Some(ownership),
    );
    let first = h.next(1).await[0].at.get();
    // The next check starts at first + 5 s and answers at +8 s: lose the
    // bucket at +6 s, while it runs.
    tokio::time::sleep(Duration::from_millis(
        (first + 6_000 - h.clock.now_ms()) as u64,
    ))
    .await;
    held.send(holding(&[])).unwrap();
    h.quiet_for(Duration::from_secs(600)).await;
    h.stop().await;
}

/// "web" healthy as this node last saw it, and unhealthy as its previous
/// owner stored it.
fn stale_and_stored() -> (ServiceRecord, ServiceRecord) {
    let mut stale = polled(5, 2, 2);
    stale.state = Healthy;
    stale.successes = 2;
    let mut stored = stale.clone();
    stored.state = Unhealthy;
    stored.successes = 0;
    stored.failures = 2;
    stored.state_since = T0 + 1_000;
    (stale, stored)
}

/// Every check of `w` unhealthy, none a transition (notified again).
fn unhealthy_without_transition(w: &[CheckWrite]) {
    for c in w {
        assert_eq!(c.state, Unhealthy);
        assert!(c.transition.is_none(), "no transition again: {c:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_gained_bucket_starts_from_the_state_its_previous_owner_stored() {
    // In memory, "web" is healthy (as this node last saw it); meanwhile
    // its previous owner took it to unhealthy and notified. Started from
    // memory, the next failure would notify healthy -> degraded again.
    let (stale, stored) = stale_and_stored();
    let reads = Arc::new(Mutex::new(Vec::new()));
    let seen = reads.clone();
    let load: LoadBuckets = Arc::new(move |buckets| {
        seen.lock().unwrap().push(buckets);
        let rec = stored.clone();
        Box::pin(async move { Ok(vec![rec].into()) })
    });
    let (held, rx) = tokio::sync::watch::channel(holding(&[]));
    let mut h = Harness::start_owning(
        vec![stale],
        results(&[Fail], Duration::from_millis(10)),
        0,
        Some(Ownership {
            held: rx,
            load: Some(load),
        }),
    );
    h.quiet_for(Duration::from_secs(60)).await;
    held.send(holding(&["web"])).unwrap();
    let w = h.next(3).await;
    assert_eq!(
        *reads.lock().unwrap(),
        [vec![healthchecker_core::cluster::Bucket::of("web")]]
    );
    unhealthy_without_transition(&w);
    h.stop().await;
}

/// Gains the bucket of "web" after a quiet minute, its read taking a
/// second and answering `stored`; starts with `known`; checks answer
/// `answers`.
async fn web_gained_with_a_slow_read(
    known: Vec<ServiceRecord>,
    stored: Vec<ServiceRecord>,
    answers: &[CheckResult],
) -> (Harness, tokio::sync::watch::Sender<crate::cluster::Held>) {
    let load: LoadBuckets = Arc::new(move |_| {
        let services = stored.clone();
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(services.into())
        })
    });
    let (held, rx) = tokio::sync::watch::channel(holding(&[]));
    let mut h = Harness::start_owning(
        known,
        results(answers, Duration::from_millis(10)),
        0,
        Some(Ownership {
            held: rx,
            load: Some(load),
        }),
    );
    h.quiet_for(Duration::from_secs(60)).await;
    held.send(holding(&["web"])).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    (h, held)
}

#[tokio::test(start_paused = true)]
async fn a_service_registered_while_its_gained_bucket_is_read_is_checked_after_the_read() {
    // The read's snapshot was taken before the registration committed;
    // the registration's command came while the read ran. It used to be
    // taken for a service deleted meanwhile and never checked.
    let (mut h, _held) = web_gained_with_a_slow_read(vec![], vec![], &[Pass]).await;
    assert!(
        h.handle
            .send(Command::Upsert(Box::new(polled(5, 2, 2))))
            .await
    );
    let w = h.next(2).await;
    assert!(w.iter().all(|c| c.service_id == ServiceId::new(7)));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_service_updated_while_its_gained_bucket_is_read_starts_from_the_stored_state() {
    // As `a_gained_bucket_starts_from_the_state_its_previous_owner_stored`,
    // with an update (a new interval) reaching the scheduler while the read
    // runs: the stored state and counters, the update's interval.
    let (stale, stored) = stale_and_stored();
    let mut updated = stale.clone();
    updated.spec.interval = 10;
    let (mut h, _held) = web_gained_with_a_slow_read(vec![stale], vec![stored], &[Fail]).await;
    assert!(h.handle.send(Command::Upsert(Box::new(updated))).await);
    let w = h.next(3).await;
    unhealthy_without_transition(&w);
    assert_eq!(
        w[2].at.get() - w[1].at.get(),
        10_000,
        "the update's interval"
    );
    h.stop().await;
}

/// Another service (id 8) in the bucket of "web" (id 7): its checks show
/// that the gained bucket's read arrived.
fn sibling_of_web() -> ServiceRecord {
    let web = healthchecker_core::cluster::Bucket::of("web");
    let name = (0..)
        .map(|i| format!("sibling-{i}"))
        .find(|n| healthchecker_core::cluster::Bucket::of(n) == web)
        .unwrap();
    service(
        8,
        serde_json::json!({"name": name, "url": "http://127.0.0.1:9/", "interval": 5}),
    )
}

/// Gains the bucket of "web", stored with its sibling, sends `command`
/// for "web" while the read runs, and asserts that for ten minutes only
/// the sibling is checked.
async fn only_the_sibling_is_checked_after(command: Command) {
    let (mut h, _held) = web_gained_with_a_slow_read(
        vec![polled(5, 2, 2)],
        vec![polled(5, 2, 2), sibling_of_web()],
        &[Pass],
    )
    .await;
    assert!(h.handle.send(command).await);
    let w = h.next(120).await;
    assert!(
        w.iter().all(|c| c.service_id == ServiceId::new(8)),
        "only the sibling: {:?}",
        w.iter().find(|c| c.service_id != ServiceId::new(8))
    );
    assert!(w[119].at.get() - w[0].at.get() >= 590_000, "ten minutes");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_service_removed_while_its_gained_bucket_is_read_does_not_come_back() {
    only_the_sibling_is_checked_after(Command::Remove {
        id: ServiceId::new(7),
        name: "web".into(),
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_service_paused_while_its_gained_bucket_is_read_stays_paused() {
    only_the_sibling_is_checked_after(Command::SetPaused {
        id: ServiceId::new(7),
        paused: true,
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_registration_in_an_unheld_bucket_is_kept_but_not_checked() {
    let (held, rx) = tokio::sync::watch::channel(holding(&["web"]));
    let mut h = Harness::start_owning(
        vec![],
        results(&[Pass], Duration::from_millis(10)),
        0,
        Some(Ownership {
            held: rx,
            load: None,
        }),
    );
    let other = two_services().pop().unwrap();
    assert!(h.handle.send(Command::Upsert(Box::new(other))).await);
    h.quiet_for(Duration::from_secs(600)).await;
    // Resuming or pinging it here does nothing either.
    assert!(
        h.handle
            .send(Command::SetPaused {
                id: ServiceId::new(8),
                paused: true
            })
            .await
    );
    assert!(
        h.handle
            .send(Command::SetPaused {
                id: ServiceId::new(8),
                paused: false
            })
            .await
    );
    h.quiet_for(Duration::from_secs(600)).await;
    // Its bucket gained: checked within one interval.
    let at = h.clock.now_ms();
    held.send(holding(&["web", "a"])).unwrap();
    let w = h.next(1).await;
    assert_eq!(w[0].service_id, ServiceId::new(8));
    assert!((0..5_000).contains(&(w[0].at.get() - at)));
    h.stop().await;
}

/// A polled service "web" every `interval` s whose latest stored check
/// started at `at` (Unix ms).
fn checked_at(interval: u32, at: i64) -> ServiceRecord {
    let mut rec = polled(interval, 2, 2);
    rec.last_check = Some(crate::store::LastCheck {
        at,
        result: Pass,
        reason: None,
        duration_us: 1_000,
    });
    rec
}

/// Gains the bucket of "web" (read back as `stored(now)`, now the wall
/// time of the gain) after a quiet minute; returns the harness, the gain's
/// wall time and the held set's sender (nothing is held once it drops).
async fn gain_web(
    stored: impl Fn(i64) -> ServiceRecord + Send + Sync + 'static,
) -> (
    Harness,
    i64,
    tokio::sync::watch::Sender<crate::cluster::Held>,
) {
    let gain = Arc::new(Mutex::new(0i64));
    let at = gain.clone();
    let load: LoadBuckets = Arc::new(move |_| {
        let rec = stored(*at.lock().unwrap());
        Box::pin(async move { Ok(vec![rec].into()) })
    });
    let (held, rx) = tokio::sync::watch::channel(holding(&[]));
    let mut h = Harness::start_owning(
        vec![polled(30, 2, 2)],
        results(&[Pass], Duration::from_millis(10)),
        0,
        Some(Ownership {
            held: rx,
            load: Some(load),
        }),
    );
    h.quiet_for(Duration::from_secs(60)).await;
    let now = h.clock.now_ms();
    *gain.lock().unwrap() = now;
    held.send(holding(&["web"])).unwrap();
    (h, now, held)
}

#[tokio::test(start_paused = true)]
async fn a_gained_bucket_continues_its_previous_owners_cadence() {
    // Last checked by the previous owner 10 s before the gain, every 30 s:
    // the first check here is 20 s after the gain, not at this node's own
    // phase (which could be within half an interval of that last check).
    let (mut h, gained, _held) = gain_web(|now| checked_at(30, now - 10_000)).await;
    let w = h.next(3).await;
    assert_eq!(
        times(&w),
        [gained + 20_000, gained + 50_000, gained + 80_000],
        "on the previous owner's grid"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_gained_overdue_service_takes_the_next_slot_of_its_previous_cadence() {
    // Last checked 75 s before the gain, every 30 s (the previous owner
    // died, or a result of its last probe was dropped at the move): the
    // grid's next slot is 90 s after that check, 15 s after the gain.
    let (mut h, gained, _held) = gain_web(|now| checked_at(30, now - 75_000)).await;
    let w = h.next(2).await;
    assert_eq!(times(&w), [gained + 15_000, gained + 45_000]);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_gained_service_stored_ahead_of_this_nodes_clock_waits_an_interval() {
    // Clock skew between nodes: a last check 3 s in this node's future.
    let (mut h, gained, _held) = gain_web(|now| checked_at(30, now + 3_000)).await;
    let w = h.next(1).await;
    assert_eq!(w[0].at.get(), gained + 30_000);
    h.stop().await;
}

#[test]
fn continued_due_is_on_the_previous_grid_and_never_within_an_interval_of_the_last_check() {
    let id = ServiceId::new(7);
    for behind in [0i64, 1, 4_999, 5_000, 5_001, 12_345, 3_600_000] {
        let wall = T0;
        let due = owned::continued_due(1_000, wall, Some(wall - behind), id, 5_000);
        let at = wall + (due - 1_000) as i64;
        let since_last = at - (wall - behind);
        assert!(due > 1_000, "{behind}: in the future");
        assert!(due <= 6_000, "{behind}: within one interval");
        assert_eq!(since_last % 5_000, 0, "{behind}: on the grid");
        assert!(since_last >= 5_000, "{behind}: a whole interval after it");
    }
    // Never checked: its phase, within one interval.
    let due = owned::continued_due(1_000, T0, None, id, 5_000);
    assert_eq!(due, first_due(1_000, 7, 5_000));
}

#[tokio::test(start_paused = true)]
async fn nothing_is_fired_past_the_held_sets_deadline_even_before_it_is_withdrawn() {
    // The held set is good for 12 s and nothing publishes after it (a
    // node stalled: its lease manager has not run yet). Checks every 5 s
    // stop at the deadline, at fire time, not when the channel changes.
    let mut held = holding(&["web"]);
    let until = Instant::now() + Duration::from_secs(12);
    held.valid_until = Some(until);
    let (tx, rx) = tokio::sync::watch::channel(held.clone());
    let start = T0;
    let mut h = Harness::start_owning(
        vec![polled(5, 2, 2)],
        results(&[Pass], Duration::from_millis(10)),
        0,
        Some(Ownership {
            held: rx,
            load: None,
        }),
    );
    // Every check until a quiet minute (at most 50: without the deadline
    // it would never stop).
    let mut before = Vec::new();
    while before.len() < 50 {
        let got = tokio::time::timeout(Duration::from_secs(60), h.writes.recv()).await;
        match got {
            Ok(Some(w)) => before.push(w.at.get()),
            _ => break,
        }
    }
    assert!(!before.is_empty(), "checked while held");
    assert!(
        before.iter().all(|at| *at < start + 12_000),
        "checked past the deadline: {before:?}"
    );
    h.quiet_for(Duration::from_secs(600)).await;

    // Renewed (a later round): checked again, on its own cadence.
    held.valid_until = Some(Instant::now() + Duration::from_secs(3_600));
    tx.send(held).unwrap();
    let last = *before.last().unwrap();
    let w = h.next(2).await;
    assert_eq!((w[0].at.get() - last) % 5_000, 0, "on its grid");
    assert_eq!(w[1].at - w[0].at, 5_000);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_held_set_received_past_its_deadline_is_nothing_held() {
    let mut held = holding(&["web"]);
    held.valid_until = Some(Instant::now());
    let (_tx, rx) = tokio::sync::watch::channel(held);
    let mut h = Harness::start_owning(
        vec![polled(5, 2, 2)],
        results(&[Pass], Duration::from_millis(10)),
        0,
        Some(Ownership {
            held: rx,
            load: None,
        }),
    );
    h.quiet_for(Duration::from_secs(600)).await;
    h.stop().await;
}

/// With every probe slot taken, a due check waits for one and starts when
/// a running check ends: never more than `max_concurrent_probes` run at
/// once, and the waiting services are checked in their turn, not starved
/// by the next rounds of the running ones.
#[tokio::test(start_paused = true)]
async fn checks_beyond_the_probe_slots_wait_for_a_slot() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let script: Script = {
        let (running, peak) = (running.clone(), peak.clone());
        Arc::new(move |_| {
            let (running, peak) = (running.clone(), peak.clone());
            Box::pin(async move {
                peak.fetch_max(running.fetch_add(1, SeqCst) + 1, SeqCst);
                // Longer than the interval: every first check is due
                // before the first two end.
                tokio::time::sleep(Duration::from_secs(90)).await;
                running.fetch_sub(1, SeqCst);
                ProbeOutcome::pass()
            })
        })
    };
    let services = (1..=5)
        .map(|i| {
            service(
                i,
                serde_json::json!({"name": format!("s{i}"), "url": "http://127.0.0.1:9/", "interval": 30}),
            )
        })
        .collect();
    let mut h = Harness::start_slots(services, script, 0, None, 2);
    let first = h.next(5).await;
    let checked: std::collections::BTreeSet<i64> =
        first.iter().map(|w| w.service_id.get()).collect();
    assert_eq!(checked, (1..=5).collect(), "each service once, in turn");
    assert_eq!(peak.load(SeqCst), 2, "two slots, both used, never more");
    h.stop().await;
}

/// The heartbeat "backup" (id 9, a period and grace of an hour: no
/// deadline falls within these tests), stored healthy, last checked at
/// `T0 + 10 s`.
fn backup_checked() -> ServiceRecord {
    let mut hb = service(
        9,
        serde_json::json!({"name": "backup", "kind": "heartbeat", "period": 3600, "grace": 3600}),
    );
    hb.state = Healthy;
    hb.last_check = Some(crate::store::LastCheck {
        at: T0 + 10_000,
        result: Pass,
        reason: None,
        duration_us: 0,
    });
    hb
}

fn kept(service: i64, at: i64, ping: Ping) -> crate::store::StoredPing {
    crate::store::StoredPing {
        service: ServiceId::new(service),
        at: UnixMs::new(at),
        ping,
        output: None,
    }
}

#[tokio::test(start_paused = true)]
async fn pings_served_while_a_bucket_had_no_owner_are_judged_by_the_node_that_gains_it() {
    // Stored while nobody held the bucket: a success the previous owner
    // judged (before the last check), then a failure, a start and an exit
    // code 0 that nobody judged, and a ping of a service not known here.
    let read = BucketsRead {
        services: vec![backup_checked()],
        pings: vec![
            kept(9, T0 + 5_000, Ping::Success),
            kept(9, T0 + 20_000, Ping::Fail),
            kept(9, T0 + 30_000, Ping::Start),
            kept(9, T0 + 32_000, Ping::Exit(0)),
            kept(42, T0 + 33_000, Ping::Fail),
        ],
    };
    let read = Arc::new(Mutex::new(Some(read)));
    let load: LoadBuckets = Arc::new(move |_| {
        let r = read.lock().unwrap().take().unwrap_or_default();
        Box::pin(async move { Ok(r) })
    });
    let (_held, mut h) = backup_gained_after_a_minute(load).await;
    let w = h.next(2).await;
    assert_eq!(
        (w[0].at.get(), w[0].result, w[0].state),
        (T0 + 20_000, Fail, Unhealthy),
        "the fail ping becomes a check at its time: {w:?}"
    );
    assert_eq!(w[0].reason.as_deref(), Some("fail ping"));
    assert!(w[0].transition.is_some(), "healthy -> unhealthy");
    assert_eq!(
        (w[1].at.get(), w[1].result, w[1].state, w[1].duration_us),
        (T0 + 32_000, Pass, Healthy, 2_000_000),
        "the run opened by the start ping"
    );
    // Each once: the success before the last check was judged already.
    h.quiet_for(Duration::from_secs(600)).await;
    h.stop().await;
}

/// A node running the backup service that holds no bucket for a minute
/// (nothing is checked), then gains its bucket, read by `load`; the held
/// set's sender is returned to be kept.
async fn backup_gained_after_a_minute(
    load: LoadBuckets,
) -> (tokio::sync::watch::Sender<crate::cluster::Held>, Harness) {
    let (held, rx) = tokio::sync::watch::channel(holding(&[]));
    let mut h = Harness::start_owning(
        vec![backup_checked()],
        results(&[Pass], Duration::ZERO),
        0,
        Some(Ownership {
            held: rx,
            load: Some(load),
        }),
    );
    h.quiet_for(Duration::from_secs(60)).await;
    held.send(holding(&["backup"])).unwrap();
    (held, h)
}

#[tokio::test(start_paused = true)]
async fn a_ping_that_arrives_while_its_gained_bucket_is_read_is_judged_once_after_the_read() {
    // The read takes a second; the fail ping comes meanwhile (its wake-up)
    // and is in the read too (committed before it): one check.
    let load: LoadBuckets = Arc::new(move |_| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(BucketsRead {
                services: vec![backup_checked()],
                pings: vec![kept(9, T0 + 60_000, Ping::Fail)],
            })
        })
    });
    let (_held, mut h) = backup_gained_after_a_minute(load).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for (at, ping) in [(T0 + 60_000, Ping::Fail), (T0 + 60_050, Ping::Exit(2))] {
        assert!(
            h.handle
                .send(Command::Ping {
                    id: ServiceId::new(9),
                    ping,
                    at: UnixMs::new(at),
                    output: None,
                })
                .await
        );
    }
    let w = h.next(2).await;
    assert_eq!(
        (w[0].at.get(), w[0].result, w[0].state),
        (T0 + 60_000, Fail, Unhealthy)
    );
    assert_eq!(
        (w[1].at.get(), w[1].reason.as_deref()),
        (T0 + 60_050, Some("exit code 2")),
        "the ping only the wake-up brought"
    );
    h.quiet_for(Duration::from_secs(600)).await;
    h.stop().await;
}
