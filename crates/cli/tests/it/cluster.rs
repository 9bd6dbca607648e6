//! `serve --db postgres://…` (SPEC section 19, docs/cluster.md): a
//! database that cannot be reached stops start-up with exit 2 and the
//! reason, never a SQLite file named `postgres:`; a reachable one is served
//! as a node of a cluster (the cluster itself: `cluster_nodes.rs`).

use crate::daemon::bin;
use healthchecker_testkit::closed_port;
use healthchecker_testkit::postgres::Postgres;

/// `serve --db db` that is expected to stop at start: its exit code, its
/// stderr and the directory it ran in.
pub(crate) fn serve(db: &str) -> (Option<i32>, String, tempfile::TempDir) {
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
async fn a_reachable_postgres_serves_as_a_node_of_a_cluster() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "unused-with-trust-auth\n").unwrap();
    let url = pg.url();
    let pw_arg = pw.to_str().unwrap().to_string();
    let proc = tokio::task::spawn_blocking(move || {
        crate::daemon::Proc::start_raw(
            std::path::Path::new(&url),
            &[
                "--no-mdns",
                "--bind",
                "127.0.0.1:0",
                "--node-id",
                "node-a",
                "--db-password-file",
                &pw_arg,
            ],
        )
    })
    .await
    .unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let v = crate::daemon::get_json(&http, &format!("{}/api/v1/cluster", proc.url)).await;
    assert_eq!(v["backend"], "postgresql", "{v}");
    assert_eq!(v["node"], "node-a", "{v}");
    let r = http
        .get(format!("{}/health", proc.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}
