//! `serve --db postgres://…` in a version without the PostgreSQL store
//! (SPEC section 19, docs/cluster.md): start-up stops with exit 2, first
//! saying why the database cannot be reached if it cannot, else that the
//! store is not built yet. Never a SQLite file named `postgres:`.

use crate::daemon::bin;
use healthchecker_testkit::closed_port;
use healthchecker_testkit::postgres::Postgres;

fn serve(db: &str) -> (Option<i32>, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["serve", "--no-mdns", "--bind", "127.0.0.1:0", "--db", db])
        .current_dir(dir.path())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        dir,
    )
}

#[test]
fn a_postgres_url_that_cannot_connect_stops_startup_with_the_reason() {
    let port = closed_port();
    let (code, err, dir) = serve(&format!("postgres://hc:s3cret@127.0.0.1:{port}/hc"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--db"), "names the option: {err}");
    assert!(
        err.contains(&format!("postgres://hc@127.0.0.1:{port}/hc")),
        "names the database: {err}"
    );
    assert!(err.contains("refused"), "says why: {err}");
    assert!(!err.contains("s3cret"), "never echoes the password: {err}");
    // Not taken as a SQLite path: nothing was created in the working dir.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_malformed_postgres_url_is_a_configuration_error() {
    let (code, err, _dir) = serve("postgres://:pw@/hc");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--db") && err.contains("host"), "{err}");
    assert!(!err.contains("pw@"), "{err}");

    let out = bin()
        .args(["serve", "--no-mdns", "--db-password-file", "/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--db-password-file") && err.contains("postgres://"),
        "{err}"
    );
}

#[tokio::test]
async fn a_reachable_postgres_stops_startup_saying_the_store_is_not_built() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "unused-with-trust-auth\n").unwrap();
    let out = bin()
        .args([
            "serve",
            "--no-mdns",
            "--bind",
            "127.0.0.1:0",
            "--db",
            &pg.url(),
        ])
        .arg("--db-password-file")
        .arg(&pw)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--db") && err.contains("not built yet") && err.contains("docs/cluster.md"),
        "{err}"
    );
    assert!(!err.contains("cannot connect"), "{err}");
}
