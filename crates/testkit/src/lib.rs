//! Real loopback servers and helpers shared by healthchecker's tests.
//!
//! Nothing here is a mock: targets are real TCP/HTTP/TLS servers on
//! 127.0.0.1, the daemon is the real daemon on port 0 with a real SQLite
//! file in a temporary directory, or, with `HEALTHCHECKER_TEST_DB=postgres`
//! ([`on_postgres`]), on a database of its own on a throwaway PostgreSQL
//! server. Every server stops when its handle drops.
#![allow(clippy::new_without_default)]

pub mod dns;
pub mod mosquitto;
pub mod netns;
pub mod postgres;
pub mod receiver;
pub mod smtp;
pub mod target;
pub mod tls;

pub use receiver::{Answer, Received, Receiver};
pub use smtp::{SmtpMode, SmtpSink};
pub use target::{closed_port, HttpTarget, Mode, TcpTarget};
pub use tls::{TlsCert, TlsTarget};

use std::future::Future;
use std::time::Duration;

/// Polls `f` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends a `GET /health` on `s` and reports whether the server closed the
/// connection without answering (as a connection cap does); panics if it
/// neither answers nor closes within 5 s.
pub async fn closed_unanswered(mut s: tokio::net::TcpStream) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = s
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("the server answers or closes within 5 s");
    read.is_err() || buf.is_empty()
}

/// The environment variable naming the backend [`TestDaemon`] puts its
/// daemons on: `sqlite` (unset: the default) or `postgres`.
pub const TEST_DB_VAR: &str = "HEALTHCHECKER_TEST_DB";

/// Whether this test run puts [`TestDaemon`]s on PostgreSQL
/// (`HEALTHCHECKER_TEST_DB=postgres`); panics on an unknown value, so that
/// a typo never runs the SQLite suite a second time unnoticed.
pub fn on_postgres() -> bool {
    match std::env::var(TEST_DB_VAR).as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => false,
        Ok("postgres") | Ok("postgresql") => true,
        Ok(other) => panic!("{TEST_DB_VAR}={other:?}: expected sqlite or postgres"),
    }
}

/// The guard of a test that is about the SQLite store itself (its files,
/// its WAL, a store opened beside the daemon): on PostgreSQL it prints
/// `SKIPPED on postgresql: <why>` and returns true (the test returns at
/// once); on SQLite false. Written to the process's stderr, not through
/// `eprintln!`, which the test harness captures and drops for a test that
/// passes: the skip shows in the run's output. The list and reasons:
/// docs/cluster.md, "Tests".
pub fn sqlite_only(why: &str) -> bool {
    if on_postgres() {
        use std::io::Write;
        // libtest names a test's thread after the test.
        let thread = std::thread::current();
        let test = thread.name().unwrap_or("a test");
        let line = format!("SKIPPED on postgresql: {test}: {why}\n");
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
        true
    } else {
        false
    }
}

/// The real daemon, in-process, on a loopback port, with its own database.
pub struct TestDaemon {
    /// The daemon.
    pub daemon: Option<healthchecker_server::Daemon>,
    /// Its base URL.
    pub url: String,
    /// Holds the database directory alive.
    pub dir: tempfile::TempDir,
    /// A client for its API.
    pub http: reqwest::Client,
    /// Its PostgreSQL database, when it runs on one (`None`: SQLite).
    pub postgres: Option<healthchecker_server::cluster::PgDb>,
}

impl TestDaemon {
    /// Starts a daemon with default settings and a fresh database.
    pub async fn start() -> TestDaemon {
        Self::start_with(|_| {}).await
    }

    /// Starts a daemon after `tweak` adjusts its configuration. On
    /// PostgreSQL ([`on_postgres`]) the configuration `tweak` receives
    /// already names a new database on the shared server
    /// ([`postgres::Postgres::shared`]) as `postgres`, with a node id: the
    /// daemon is a one-node cluster (it holds every bucket from its first
    /// lease round on). `cfg.db` still names a SQLite path in `dir`, unused.
    pub async fn start_with(tweak: impl FnOnce(&mut healthchecker_server::Config)) -> TestDaemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cfg = healthchecker_server::Config::for_db(dir.path().join("hc.db"));
        if on_postgres() {
            let url = postgres::Postgres::shared().create_database().await;
            let db = healthchecker_server::cluster::PgDb::parse(&url, None)
                .expect("the test database's URL");
            cfg.postgres = Some(db);
            cfg.node_id = Some("test-node".into());
        }
        tweak(&mut cfg);
        let node = cfg.postgres.is_some().then(|| cfg.clone());
        let daemon = healthchecker_server::Daemon::start(cfg)
            .await
            .expect("daemon starts");
        if let Some(cfg) = &node {
            let db = cfg.postgres.as_ref().expect("a PostgreSQL node");
            holds_every_bucket(db, &cfg.node_id_for(daemon.addr.port())).await;
        }
        TestDaemon {
            postgres: node.and_then(|c| c.postgres),
            url: daemon.url.clone(),
            daemon: Some(daemon),
            dir,
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client"),
        }
    }

    /// Everything the daemon stored, as bytes to search: the SQLite file
    /// and its WAL, or on PostgreSQL every row of every table of its
    /// database as text (`SELECT t::text FROM <table> t`).
    pub async fn stored_bytes(&self) -> Vec<u8> {
        let Some(db) = &self.postgres else {
            let mut bytes = std::fs::read(self.dir.path().join("hc.db")).expect("the SQLite file");
            bytes.extend(std::fs::read(self.dir.path().join("hc.db-wal")).unwrap_or_default());
            return bytes;
        };
        let (client, conn) = db
            .config()
            .connect(tokio_postgres::NoTls)
            .await
            .expect("connect to the daemon's database");
        let conn = tokio::spawn(conn);
        let tables = client
            .query(
                "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public'",
                &[],
            )
            .await
            .expect("list the tables");
        let mut bytes = Vec::new();
        for t in tables {
            let table: String = t.get(0);
            for row in client
                .query(&format!("SELECT t::text FROM {table} t"), &[])
                .await
                .unwrap_or_else(|e| panic!("read {table}: {e}"))
            {
                bytes.extend(row.get::<_, String>(0).into_bytes());
                bytes.push(b'\n');
            }
        }
        drop(client);
        let _ = conn.await;
        bytes
    }

    /// `url` + `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    /// POSTs a JSON registration; returns status and body.
    pub async fn register(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.post_json("/api/v1/services", &body).await
    }

    /// GETs a JSON document; returns status and body.
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.http.get(self.at(path)).send().await.expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// GETs `path`; returns the body as text (panics on a transport error).
    pub async fn text(&self, path: &str) -> String {
        get_text(&self.http, &self.at(path)).await
    }

    /// POSTs `body` as JSON to `path`; returns status and JSON body
    /// (`null` when the answer is not JSON).
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let r = self
            .http
            .post(self.at(path))
            .json(body)
            .send()
            .await
            .expect("POST");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Creates a notification channel (`POST /api/v1/channels`), asserting
    /// that it is created; returns the channel as answered.
    pub async fn add_channel(&self, body: serde_json::Value) -> serde_json::Value {
        let (status, v) = self.post_json("/api/v1/channels", &body).await;
        assert_eq!(status, 201, "channel not created: {v}");
        v
    }

    /// The `state` of a service.
    pub async fn state(&self, name: &str) -> String {
        let (_, v) = self.get(&format!("/api/v1/services/{}", enc(name))).await;
        v["state"].as_str().unwrap_or("").to_string()
    }

    /// Waits until the service reaches `state`.
    pub async fn wait_state(&self, name: &str, state: &str, timeout: Duration) {
        wait_for(&format!("{name} to become {state}"), timeout, || async {
            (self.state(name).await == state).then_some(())
        })
        .await
    }

    /// Stops the daemon and waits for it.
    pub async fn stop(mut self) {
        if let Some(d) = self.daemon.take() {
            d.stop().await.expect("clean stop");
        }
    }
}

/// Runs `f` on the store a daemon of `cfg` will open — the SQLite file
/// `cfg.db`, or the PostgreSQL database of `cfg.postgres` (see
/// [`TestDaemon::start_with`]) — on a thread of its own (the PostgreSQL
/// store's blocking client must not run on a tokio worker), and closes it:
/// set-up, before the daemon starts, of rows no API call makes.
pub fn with_store<T: Send>(
    cfg: &healthchecker_server::Config,
    f: impl FnOnce(&healthchecker_server::store::Store) -> T + Send,
) -> T {
    use healthchecker_server::store::Store;
    let run = || {
        let store = match &cfg.postgres {
            Some(db) => Store::postgres(
                healthchecker_server::cluster::PgStore::open(db)
                    .expect("open the PostgreSQL store"),
                "test-setup",
            ),
            None => Store::open(&cfg.db).expect("open store"),
        };
        f(&store)
    };
    std::thread::scope(|s| match s.spawn(run).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// Waits until the node `id` on `db` holds every bucket's lease (it runs
/// every service, as a SQLite daemon does from its start), read from the
/// database as `GET /api/v1/cluster` reads it (no HTTP: a test's daemon
/// may want a token or TLS for reads). Without it, a test's first ping
/// could reach the node before its first lease round and find no owner.
async fn holds_every_bucket(db: &healthchecker_server::cluster::PgDb, id: &str) {
    use healthchecker_server::cluster::{lease::EXPIRY, status};
    let pool = db.pool(1);
    wait_for(
        &format!("node {id:?} to hold every bucket"),
        Duration::from_secs(60),
        || async {
            let s = status::read(&pool, id, EXPIRY).await.ok()?;
            let buckets = usize::from(s.buckets);
            s.nodes
                .iter()
                .any(|n| n.id == id && n.leases == buckets)
                .then_some(())
        },
    )
    .await;
}

/// Writes `n` services named `svc-00000`, `svc-00001`, ... straight into
/// the SQLite store at `db`, before a daemon opens it: fast set-up for
/// tests of long lists. Each checks a closed loopback port every 300 s.
/// [`seed_services_in`] does it on either backend.
pub fn seed_services(db: &std::path::Path, n: usize) {
    let store = healthchecker_server::store::Store::open(db).expect("open store");
    seed(&store, n);
}

/// [`seed_services`] into the store a daemon of `cfg` will open, SQLite
/// or PostgreSQL ([`with_store`]).
pub fn seed_services_in(cfg: &healthchecker_server::Config, n: usize) {
    with_store(cfg, |store| seed(store, n));
}

fn seed(store: &healthchecker_server::store::Store, n: usize) {
    let port = closed_port();
    for i in 0..n {
        let body = serde_json::json!({
            "name": format!("svc-{i:05}"),
            "url": format!("tcp://127.0.0.1:{port}"),
            "interval": 300,
        });
        let req = healthchecker_core::RegisterRequest::from_json(body.to_string().as_bytes())
            .expect("valid request");
        let spec = healthchecker_core::ServiceSpec::try_from(req).expect("valid spec");
        store
            .register(&spec, "", healthchecker_server::clock::now_ms(), usize::MAX)
            .expect("register");
    }
}

/// GETs `url` with `http`; returns the body as text (panics on a
/// transport error).
pub async fn get_text(http: &reqwest::Client, url: &str) -> String {
    http.get(url)
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body")
}

/// The value of the sample `name` of `family` whose label `label.0` is
/// `label.1`, in metrics parsed by the testkit's `parse_metrics.py` or
/// `parse_classic_metrics.py` (`{family: {"samples": [[name, labels,
/// value], …]}}`).
pub fn metric_sample(
    m: &serde_json::Value,
    family: &str,
    name: &str,
    label: (&str, &str),
) -> Option<f64> {
    m[family]["samples"]
        .as_array()?
        .iter()
        .find(|s| s[0] == name && s[1][label.0] == label.1)
        .and_then(|s| s[2].as_f64())
}

/// How many checks had `result` (`pass`, `warn`, `fail`), per parsed
/// metrics (see [`metric_sample`]); panics if there is no such sample.
pub fn checks_total(m: &serde_json::Value, result: &str) -> f64 {
    metric_sample(
        m,
        "healthchecker_checks",
        "healthchecker_checks_total",
        ("result", result),
    )
    .unwrap_or_else(|| panic!("no healthchecker_checks_total{{result={result:?}}} sample"))
}

/// Sends `req`; returns the answer's status code.
pub async fn status(req: reqwest::RequestBuilder) -> u16 {
    req.send().await.unwrap().status().as_u16()
}

/// Asserts that `resp` has `status` and an error message containing
/// `text`; returns the JSON body.
pub async fn assert_error(resp: reqwest::Response, status: u16, text: &str) -> serde_json::Value {
    assert_eq!(resp.status(), status);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains(text),
        "{v}"
    );
    v
}

/// Percent-encodes a path segment.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
