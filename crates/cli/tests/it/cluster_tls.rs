//! `serve --db postgres://…?sslmode=…&sslrootcert=…` (docs/cluster.md,
//! "TLS"): a node reaches PostgreSQL over TLS as libpq users expect. A
//! throwaway server with `ssl=on` and a testkit certificate (a
//! self-signed one for `localhost` and 127.0.0.1, its own root): a node
//! with `verify-full` registers and checks a service, and PostgreSQL's
//! `pg_stat_ssl` says every connection of the daemon is TLS; a wrong root,
//! or `require` against a server without TLS, stops start-up with exit 2
//! naming the setting and the cause; `verify-ca` accepts a certificate
//! for another name where `verify-full` refuses it.

use crate::daemon::{get_json, Proc};
use healthchecker_server::cluster::PgDb;
use healthchecker_testkit::postgres::Postgres;
use healthchecker_testkit::{wait_for, HttpTarget, Mode, TlsCert};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A certificate valid for a year.
fn cert() -> TlsCert {
    TlsCert::new(time::Duration::days(365))
}

/// Writes `cert`'s PEM into `dir` as `name`; returns its path.
fn pem_file(dir: &Path, name: &str, cert: &TlsCert) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, &cert.pem).unwrap();
    p
}

/// `serve` that is expected to stop at start: its exit code and stderr.
fn serve_fails(db: &str) -> (Option<i32>, String) {
    let (code, err, _dir) = crate::cluster::serve(db);
    (code, err)
}

/// A plain connection of the test itself to `url` (sslmode prefer with
/// no TLS connector: plain).
async fn plain(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the throwaway server");
    tokio::spawn(conn);
    client
}

#[tokio::test]
async fn a_node_with_verify_full_checks_services_over_tls() {
    let server_cert = cert();
    let Some(pg) = Postgres::start_tls(&server_cert).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = pem_file(dir.path(), "pg-ca.pem", &server_cert);
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url(),
        root.display()
    );
    let proc = tokio::task::spawn_blocking(move || {
        Proc::start_raw(
            Path::new(&url),
            &[
                "--no-mdns",
                "--bind",
                "127.0.0.1:0",
                "--node-id",
                "node-tls",
            ],
        )
    })
    .await
    .unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let v = get_json(&http, &format!("{}/api/v1/cluster", proc.url)).await;
    assert_eq!(v["backend"], "postgresql", "{v}");

    // End to end: registered through the API (the store's writer), checked
    // by the node holding its bucket (leases), read back (the readers).
    let target = HttpTarget::start(Mode::Pass).await;
    let r = http
        .post(format!("{}/api/v1/services", proc.url))
        .json(&json!({
            "name": "over-tls", "url": target.url("/health"),
            "interval": 5, "timeout": 2, "healthy_threshold": 2, "unhealthy_threshold": 2,
        }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let base = proc.url.clone();
    wait_for("over-tls healthy", Duration::from_secs(40), || {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let v = get_json(&http, &format!("{base}/api/v1/services/over-tls")).await;
            (v["state"] == "healthy").then_some(())
        }
    })
    .await;
    assert!(target.hits() >= 2, "the target was checked");

    // PostgreSQL's word: every backend of the daemon is a TLS session.
    let client = plain(&pg.url()).await;
    let rows = client
        .query(
            "SELECT s.ssl, s.version FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name = 'healthchecker' AND a.datname = $1",
            &[&healthchecker_testkit::postgres::DATABASE],
        )
        .await
        .unwrap();
    // The pool (lease manager), the wake-up listener, the store's writer
    // and readers: several, all TLS.
    eprintln!("the daemon's connections: {}", rows.len());
    assert!(rows.len() >= 2, "the daemon's connections: {}", rows.len());
    for row in &rows {
        let ssl: bool = row.get(0);
        let version: Option<String> = row.get(1);
        assert!(ssl, "a daemon connection without TLS ({version:?})");
        assert!(version.is_some_and(|v| v.starts_with("TLSv1.")));
    }
    // The negative control: the same view says the test's own plain
    // connection is not TLS.
    let own: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!own, "pg_stat_ssl tells TLS from plain");
    drop(proc);
}

#[tokio::test]
async fn a_certificate_from_another_root_stops_startup_naming_the_failure() {
    let Some(pg) = Postgres::start_tls(&cert()).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let wrong = pem_file(dir.path(), "other-ca.pem", &cert());
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url(),
        wrong.display()
    );
    let (code, err) = tokio::task::spawn_blocking(move || serve_fails(&url))
        .await
        .unwrap();
    eprintln!("{err}");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--db"), "names the option: {err}");
    assert!(
        err.contains(&format!(
            "sslmode=verify-full, sslrootcert={}",
            wrong.display()
        )),
        "names the TLS setting: {err}"
    );
    assert!(
        err.contains("invalid peer certificate"),
        "says the certificate did not verify: {err}"
    );
}

#[tokio::test]
async fn sslmode_require_against_a_server_without_tls_stops_startup() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let url = format!("{}?sslmode=require", pg.url());
    let (code, err) = tokio::task::spawn_blocking(move || serve_fails(&url))
        .await
        .unwrap();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("sslmode=require"), "names the setting: {err}");
    assert!(
        err.contains("server does not support TLS"),
        "says why: {err}"
    );
    // The same server is fine with the default (prefer): plain.
    let db = PgDb::parse(&pg.url(), None).unwrap();
    db.check().await.expect("prefer falls back to plain");
}

#[tokio::test]
async fn verify_ca_checks_the_chain_and_verify_full_the_name_too() {
    let server_cert = cert();
    let Some(pg) = Postgres::start_tls(&server_cert).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = pem_file(dir.path(), "pg-ca.pem", &server_cert);
    // Connect to 127.0.0.1 but expect the name `db.invalid`, which the
    // certificate (localhost, 127.0.0.1) does not carry.
    let url = |mode: &str, root: &Path| {
        format!(
            "postgres://postgres@db.invalid:{}/{}?hostaddr=127.0.0.1&sslmode={mode}&sslrootcert={}",
            pg.port,
            healthchecker_testkit::postgres::DATABASE,
            root.display()
        )
    };
    let ca = PgDb::parse(&url("verify-ca", &root), None).unwrap();
    ca.check().await.expect("verify-ca ignores the name");
    // require with a root file is verify-ca (libpq).
    let req = PgDb::parse(&url("require", &root), None).unwrap();
    req.check()
        .await
        .expect("require with a root verifies the chain");

    let full = PgDb::parse(&url("verify-full", &root), None).unwrap();
    let e = full.check().await.unwrap_err().to_string();
    assert!(e.contains("sslmode=verify-full"), "{e}");
    assert!(
        e.contains("not valid for name \"db.invalid\""),
        "the name: {e}"
    );

    // verify-ca still checks the chain: another root is refused.
    let other = pem_file(dir.path(), "other-ca.pem", &cert());
    let e = PgDb::parse(&url("verify-ca", &other), None)
        .unwrap()
        .check()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid peer certificate"), "{e}");
    // require with that root too (libpq: a root file makes it verify-ca).
    let e = PgDb::parse(&url("require", &other), None)
        .unwrap()
        .check()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid peer certificate"), "{e}");
}

#[test]
fn bad_tls_parameters_are_configuration_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pem");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let cases = [
        (
            "sslmode=verify-everything".to_string(),
            "sslmode=verify-everything",
        ),
        (
            format!("sslmode=verify-full&sslrootcert={}", missing.display()),
            "nope.pem: cannot read it",
        ),
        (
            format!("sslmode=verify-ca&sslrootcert={}", empty.display()),
            "no PEM certificate",
        ),
        (
            "sslmode=require&sslrootcert=system".to_string(),
            "sslrootcert=system",
        ),
    ];
    for (query, why) in cases {
        let (code, err) = serve_fails(&format!("postgres://hc:pw@127.0.0.1:1/hc?{query}"));
        assert_eq!(code, Some(2), "{query}: {err}");
        assert!(err.contains("--db"), "names the option: {err}");
        assert!(err.contains(why), "{query}: says why: {err}");
        assert!(!err.contains("pw@"), "{err}");
    }
}
