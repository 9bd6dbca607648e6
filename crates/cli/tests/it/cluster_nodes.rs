//! Three `healthchecker serve --db postgres://…` processes on one
//! throwaway PostgreSQL (SPEC section 19, issue 18): the services split
//! with no service checked by two nodes at once, a `kill -9`'d node's
//! services taken over within 15 s plus one interval, one notification per
//! transition and channel across the kill, a node paused past its leases
//! whose stale writes are refused, and PostgreSQL restarted under load.
//!
//! Scale: [`SERVICES`] services (not SPEC 19's 3,000: three debug-build
//! daemons, PostgreSQL and the target share this machine's two cores with
//! the rest of the suite; the properties tested do not depend on the
//! count), at a 5 s interval, against a target that records each hit's
//! time per service.

use crate::daemon::{get_json, Proc};
use healthchecker_core::cluster::Bucket;
use healthchecker_testkit::postgres::Postgres;
use healthchecker_testkit::{wait_for, Answer, Receiver, SmtpMode, SmtpSink};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Services registered (see the module docs).
const SERVICES: usize = 240;
/// Their interval (s).
const INTERVAL: u64 = 5;

/// A plain HTTP target on its own thread and runtime that records when
/// each path was hit and answers 200, or 503 for the paths set failing.
#[derive(Clone)]
struct Counter {
    port: u16,
    hits: Arc<Mutex<HashMap<String, Vec<Instant>>>>,
    failing: Arc<Mutex<HashSet<String>>>,
}

impl Counter {
    fn start() -> Counter {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let c = Counter {
            port: listener.local_addr().unwrap().port(),
            hits: Arc::default(),
            failing: Arc::default(),
        };
        let me = c.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((s, _)) = l.accept().await {
                    tokio::spawn(me.clone().serve(s));
                }
            });
        });
        c
    }

    async fn serve(self, mut s: tokio::net::TcpStream) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let text = String::from_utf8_lossy(&buf);
        let path = text.split(' ').nth(1).unwrap_or("").to_string();
        self.hits
            .lock()
            .unwrap()
            .entry(path.clone())
            .or_default()
            .push(Instant::now());
        let fail = self.failing.lock().unwrap().contains(&path);
        let answer: &[u8] = if fail {
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndown"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        };
        let _ = s.write_all(answer).await;
    }

    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    fn hits_of(&self, name: &str) -> Vec<Instant> {
        self.hits
            .lock()
            .unwrap()
            .get(&format!("/{name}"))
            .cloned()
            .unwrap_or_default()
    }

    fn set_failing(&self, name: &str) {
        self.failing.lock().unwrap().insert(format!("/{name}"));
    }
}

fn name(i: usize) -> String {
    format!("svc-{i:04}")
}

/// Starts node `id` on `db` (mDNS off), blocking off the runtime.
async fn node(db: &str, id: &str, smtp_port: u16) -> Proc {
    let db = db.to_string();
    let id = id.to_string();
    tokio::task::spawn_blocking(move || {
        Proc::start_raw(
            Path::new(&db),
            &[
                "--no-mdns",
                "--bind",
                "127.0.0.1:0",
                "--node-id",
                &id,
                "--register-rate-limit",
                "0",
                "--notify-min-gap",
                "0",
                // One message per transition (digests are not claimed yet
                // on PostgreSQL: docs/cluster.md).
                "--digest-threshold",
                "0",
                "--smtp-url",
                &format!("smtp://127.0.0.1:{smtp_port}"),
                "--smtp-from",
                "hc@example.com",
            ],
        )
    })
    .await
    .unwrap()
}

/// `GET /api/v1/cluster` of the node at `base`.
async fn cluster(http: &reqwest::Client, base: &str) -> Value {
    get_json(http, &format!("{base}/api/v1/cluster")).await
}

/// The buckets each live node holds, by node id.
fn held_by(status: &Value) -> HashMap<String, BTreeSet<u16>> {
    let mut out = HashMap::new();
    for n in status["nodes"].as_array().unwrap() {
        let mut set = BTreeSet::new();
        for r in n["held"].as_array().unwrap() {
            let r = r.as_str().unwrap();
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            set.extend(a.parse::<u16>().unwrap()..=b.parse::<u16>().unwrap());
        }
        out.insert(n["id"].as_str().unwrap().to_string(), set);
    }
    out
}

/// Waits until `n` live nodes hold every bucket between them, each at
/// least a fair share minus a margin.
async fn wait_split(
    http: &reqwest::Client,
    base: &str,
    n: usize,
) -> HashMap<String, BTreeSet<u16>> {
    wait_for(
        &format!("{n} nodes sharing the buckets"),
        Duration::from_secs(60),
        || async {
            let st = cluster(http, base).await;
            let live: Vec<&Value> = st["nodes"]
                .as_array()?
                .iter()
                .filter(|x| x["live"] == true)
                .collect();
            let leases: Vec<u64> = live
                .iter()
                .map(|x| x["leases"].as_u64().unwrap_or(0))
                .collect();
            let fair = 1024 / n as u64;
            (live.len() == n
                && leases.iter().sum::<u64>() == 1024
                && leases.iter().all(|l| *l + 8 >= fair))
            .then(|| held_by(&st))
        },
    )
    .await
}

async fn register(http: &reqwest::Client, base: &str, body: Value) {
    let r = http
        .post(format!("{base}/api/v1/services"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(st == 201 || st == 200, "{body} -> {st} {v}");
}

async fn state(http: &reqwest::Client, base: &str, name: &str) -> String {
    let v = get_json(http, &format!("{base}/api/v1/services/{name}")).await;
    v["state"].as_str().unwrap_or("").to_string()
}

/// How many gaps between consecutive hits of `hits` are shorter than `min`.
fn short_gaps(hits: &[Instant], min: Duration) -> usize {
    hits.windows(2).filter(|w| w[1] - w[0] < min).count()
}

/// The shortest gap between consecutive hits of any of the first `n`
/// services (reported by the tests: a figure, not a bound).
fn shortest_gap(target: &Counter, n: usize) -> Option<Duration> {
    (0..n)
        .flat_map(|i| {
            let hits = target.hits_of(&name(i));
            hits.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>()
        })
        .min()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_split_the_work_take_over_a_killed_node_and_notify_once() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let db = pg.url();
    let target = Counter::start();
    let hook = Receiver::start(Answer::Ok).await;
    let sink = SmtpSink::start(SmtpMode::Accept);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let n1 = node(&db, "n1", sink.port).await;
    let n2 = node(&db, "n2", sink.port).await;
    let n3 = node(&db, "n3", sink.port).await;
    let bases = [n1.url.clone(), n2.url.clone(), n3.url.clone()];
    wait_split(&http, &bases[0], 3).await;

    let r = http
        .post(format!("{}/api/v1/channels", bases[0]))
        .json(&json!({"name": "hook", "kind": "webhook", "url": hook.url("/in"), "secret": "k"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    // Registered on every node in turn: the owner learns of a service
    // registered elsewhere through LISTEN/NOTIFY.
    for i in 0..SERVICES {
        let mut body = json!({
            "name": name(i), "url": target.url(&name(i)),
            "interval": INTERVAL, "timeout": 2, "healthy_threshold": 2, "unhealthy_threshold": 2,
        });
        if i % 20 == 0 {
            body["channels"] = json!(["hook"]);
            body["email"] = json!([format!("{}@example.com", name(i))]);
        }
        register(&http, &bases[i % 3], body).await;
    }
    let flaky: Vec<String> = (0..SERVICES).step_by(20).map(name).collect();
    // Every service checked (each by its owner, whichever node took it).
    wait_for(
        "every service checked twice",
        Duration::from_secs(40),
        || async {
            (0..SERVICES)
                .all(|i| target.hits_of(&name(i)).len() >= 2)
                .then_some(())
        },
    )
    .await;
    for f in &flaky {
        let f = f.clone();
        let (http, base) = (&http, &bases[1]);
        wait_for(&format!("{f} healthy"), Duration::from_secs(30), || {
            let f = f.clone();
            async move { (state(http, base, &f).await == "healthy").then_some(()) }
        })
        .await;
    }
    let owners = held_by(&cluster(&http, &bases[0]).await);
    let of_n3: Vec<usize> = (0..SERVICES)
        .filter(|i| owners["n3"].contains(&Bucket::of(&name(*i)).get()))
        .collect();
    assert!(!of_n3.is_empty(), "n3 runs some of the services");

    // The flaky services fail from now on; n3 dies before their
    // transitions (two failed checks, at least one interval away).
    for f in &flaky {
        target.set_failing(f);
    }
    let killed = Instant::now();
    n3.kill9();

    // (b) n3's services are checked again by the others within 15 s plus
    // one interval of the kill.
    let bound = Duration::from_secs(15 + INTERVAL);
    let takeover = wait_for(
        "n3's services checked again",
        bound + Duration::from_secs(10),
        || async {
            let firsts: Option<Vec<Duration>> = of_n3
                .iter()
                .map(|i| {
                    target
                        .hits_of(&name(*i))
                        .into_iter()
                        .find(|t| *t > killed)
                        .map(|t| t - killed)
                })
                .collect();
            firsts.map(|f| f.into_iter().max().unwrap())
        },
    )
    .await;
    eprintln!("takeover: every service of the killed node checked again within {takeover:?}");
    assert!(
        takeover <= bound,
        "taken over in {takeover:?}, over {bound:?}"
    );
    wait_split(&http, &bases[0], 2).await;

    // (d) Every flaky service becomes unhealthy; each transition's
    // notification arrives once per channel: the webhook by idempotency
    // key, the mail by Message-ID.
    for f in &flaky {
        let f = f.clone();
        let (http, base) = (&http, &bases[0]);
        wait_for(&format!("{f} unhealthy"), Duration::from_secs(40), || {
            let f = f.clone();
            async move { (state(http, base, &f).await == "unhealthy").then_some(()) }
        })
        .await;
    }
    let got = wait_for(
        "a webhook per failing service",
        Duration::from_secs(40),
        || async {
            let got = hook.accepted();
            let unhealthy: HashSet<String> = got
                .iter()
                .map(|r| r.json())
                .filter(|v| v["state"] == "unhealthy")
                .filter_map(|v| v["service"].as_str().map(str::to_string))
                .collect();
            (unhealthy.len() == flaky.len()).then_some(got)
        },
    )
    .await;
    let mails = wait_for(
        "an UNHEALTHY mail per failing service",
        Duration::from_secs(40),
        || async {
            let mails = sink.mails();
            let n = mails
                .iter()
                .filter(|m| m.subject.contains("UNHEALTHY"))
                .count();
            (n >= flaky.len()).then_some(mails)
        },
    )
    .await;
    // Anything sent twice would have arrived by now (a claim of a dead
    // node expires after 60 s; n3 died before these transitions).
    let mut keys = HashSet::new();
    for r in &got {
        let key = r.header("idempotency-key").unwrap().to_string();
        assert!(keys.insert(key.clone()), "webhook {key} delivered twice");
    }
    let mut per_service: HashMap<String, usize> = HashMap::new();
    for r in &got {
        let v = r.json();
        if v["state"] == "unhealthy" {
            *per_service
                .entry(v["service"].as_str().unwrap().into())
                .or_default() += 1;
        }
    }
    assert!(per_service.values().all(|n| *n == 1), "{per_service:?}");
    let mut ids = HashSet::new();
    for m in &mails {
        assert!(
            ids.insert(m.message_id.clone()),
            "mail {} sent twice",
            m.message_id
        );
    }
    for f in &flaky {
        let n = mails
            .iter()
            .filter(|m| m.subject.contains(f.as_str()) && m.subject.contains("UNHEALTHY"))
            .count();
        assert_eq!(n, 1, "{f}: one UNHEALTHY mail");
        // The events agree: one transition to unhealthy.
        let ev = get_json(&http, &format!("{}/api/v1/events?service={f}", bases[1])).await;
        let to_unhealthy = ev["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["to"] == "unhealthy")
            .count();
        assert_eq!(to_unhealthy, 1, "{f}: {ev}");
    }

    // (a) No service was checked by two nodes at once: consecutive hits
    // are at least half an interval apart, across the takeover too (the
    // new owner continues the old owner's cadence from the stored last
    // check: docs/cluster.md).
    let half = Duration::from_millis(INTERVAL * 500);
    eprintln!(
        "shortest gap between two hits of a service: {:?}",
        shortest_gap(&target, SERVICES)
    );
    for i in 0..SERVICES {
        let hits = target.hits_of(&name(i));
        let short = short_gaps(&hits, half);
        assert!(
            short == 0,
            "{}: {short} hits closer than {half:?} ({} hits, taken over: {})",
            name(i),
            hits.len(),
            of_n3.contains(&i)
        );
    }
    drop((n1, n2));
}

/// Sends `signal` (`-STOP`, `-CONT`) to `pid`.
fn signal(pid: u32, signal: &str) {
    let st = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill {signal} {pid}");
}

/// Every service of the node at `base`, name to JSON, one page.
async fn services(http: &reqwest::Client, base: &str) -> HashMap<String, Value> {
    let v = get_json(http, &format!("{base}/api/v1/services?limit=1000")).await;
    v["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s.clone()))
        .collect()
}

/// The state changes of `name` (newest first), read on `base`.
async fn events(http: &reqwest::Client, base: &str, name: &str) -> Vec<Value> {
    let v = get_json(http, &format!("{base}/api/v1/events?service={name}")).await;
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "state")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_is_fenced_and_rejoins_and_a_database_restart_loses_nothing() {
    let Some(mut pg) = Postgres::start().await else {
        return;
    };
    let db = pg.url();
    let target = Counter::start();
    let sink = SmtpSink::start(SmtpMode::Accept);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let n1 = node(&db, "n1", sink.port).await;
    let n2 = node(&db, "n2", sink.port).await;
    let n3 = node(&db, "n3", sink.port).await;
    let bases = [n1.url.clone(), n2.url.clone(), n3.url.clone()];
    let before = wait_split(&http, &bases[0], 3).await;
    let count = SERVICES / 2;
    for i in 0..count {
        let body = json!({
            "name": name(i), "url": target.url(&name(i)),
            "interval": INTERVAL, "timeout": 2, "healthy_threshold": 2, "unhealthy_threshold": 2,
        });
        register(&http, &bases[i % 3], body).await;
    }
    wait_for("every service healthy", Duration::from_secs(40), || async {
        let all = services(&http, &bases[0]).await;
        (all.len() == count && all.values().all(|s| s["state"] == "healthy")).then_some(())
    })
    .await;
    let of_n2: Vec<usize> = (0..count)
        .filter(|i| before["n2"].contains(&Bucket::of(&name(*i)).get()))
        .collect();
    assert!(!of_n2.is_empty(), "n2 runs some of the services");

    // (c) n2 is paused past its leases: the others take its services over.
    let pid = n2.child.id();
    signal(pid, "-STOP");
    let paused = Instant::now();
    wait_for(
        "n2's services checked by the others",
        Duration::from_secs(40),
        || async {
            of_n2
                .iter()
                .all(|i| {
                    target
                        .hits_of(&name(*i))
                        .iter()
                        .any(|t| *t > paused + Duration::from_secs(1))
                })
                .then_some(())
        },
    )
    .await;
    wait_split(&http, &bases[0], 2).await;
    assert!(
        paused.elapsed() > Duration::from_secs(10),
        "paused longer than a lease"
    );
    signal(pid, "-CONT");
    // It rejoins: three nodes share the buckets again.
    let after = wait_split(&http, &bases[0], 3).await;
    // Whatever it tried to write with its stale leases was refused: every
    // service still has its one transition (unknown -> healthy), no second
    // one from a node that resumed from an older state.
    for i in 0..count {
        let ev = events(&http, &bases[0], &name(i)).await;
        assert_eq!(ev.len(), 1, "{}: {ev:?}", name(i));
    }
    // And it serves again (its API, the cluster view from the tables).
    let st = cluster(&http, &bases[1]).await;
    assert_eq!(st["node"], "n2");

    // (e) PostgreSQL restarted under load: acknowledged registrations
    // stay, the nodes reconnect (health, checks, wake-ups).
    for i in count..count + 6 {
        let body = json!({
            "name": name(i), "url": target.url(&name(i)),
            "interval": INTERVAL, "timeout": 2, "healthy_threshold": 2, "unhealthy_threshold": 2,
        });
        register(&http, &bases[i % 3], body).await;
    }
    pg.restart().await;
    let restarted = Instant::now();
    for base in &bases {
        wait_for(
            &format!("{base}/health after the restart"),
            Duration::from_secs(60),
            || async {
                let r = http.get(format!("{base}/health")).send().await.ok()?;
                (r.status().as_u16() == 200).then_some(())
            },
        )
        .await;
    }
    let all = services(&http, &bases[2]).await;
    assert_eq!(all.len(), count + 6, "no acknowledged registration lost");
    let late = name(count + 6);
    register(
        &http,
        &bases[0],
        json!({"name": late, "url": target.url(&late), "interval": INTERVAL, "timeout": 2}),
    )
    .await;
    wait_for(
        "every service checked after the restart",
        Duration::from_secs(40),
        || async {
            (0..=count + 6)
                .all(|i| target.hits_of(&name(i)).iter().any(|t| *t > restarted))
                .then_some(())
        },
    )
    .await;
    for i in 0..count {
        let ev = events(&http, &bases[1], &name(i)).await;
        assert_eq!(ev.len(), 1, "{}: {ev:?}", name(i));
    }

    // (a) Never two nodes at once, across every move of a service (the
    // takeover of n2's buckets, the rebalance when it rejoined, whatever
    // the database restart moved): a bucket's new owner continues the old
    // owner's cadence from the stored last check, and n2, resumed past its
    // leases' deadline, fired none of the probes that came due while it
    // was stopped (docs/cluster.md).
    let half = Duration::from_millis(INTERVAL * 500);
    eprintln!(
        "shortest gap between two hits of a service: {:?}",
        shortest_gap(&target, count + 7)
    );
    for i in 0..=count + 6 {
        let b = Bucket::of(&name(i)).get();
        let moved = before
            .iter()
            .any(|(n, s)| s.contains(&b) && !after[n].contains(&b));
        let hits = target.hits_of(&name(i));
        let short = short_gaps(&hits, half);
        assert!(
            short == 0,
            "{}: {short} hits closer than {half:?} (of n2: {}, moved at the rebalance: {moved})",
            name(i),
            before["n2"].contains(&b)
        );
    }
    drop((n1, n2, n3));
}
