//! Upgrades (SPEC section 20): the previous release's database opens in
//! place with nothing lost; a newer release's database is refused.
//!
//! `tests/fixtures/schema-1.db` was written by the last build with schema
//! version 1 (how: `tests/fixtures/make-schema-1-db.sh`), and the JSON files
//! beside it are what that daemon answered just before it stopped.

use crate::daemon::{bin, Proc};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

fn user_version(db: &Path) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

async fn get(http: &reqwest::Client, url: String) -> Value {
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.json().await.unwrap()
}

/// The fields of a service that an upgrade must keep as they were.
fn kept(s: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for k in [
        "name",
        "url",
        "email",
        "interval",
        "timeout",
        "healthy_threshold",
        "unhealthy_threshold",
        "expected_status",
        "state",
        "state_since",
        "monitoring",
    ] {
        out.insert(k.into(), s[k].clone());
    }
    Value::Object(out)
}

#[tokio::test]
async fn the_previous_releases_database_opens_in_place_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("healthchecker.db");
    std::fs::copy(fixture("schema-1.db"), &db).unwrap();
    assert_eq!(user_version(&db), 1);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();

    let p = Proc::start(&db, &[]);
    let old = json("schema-1.services.json");
    let now = get(&http, format!("{}/api/v1/services", p.url)).await;
    let by_name = |v: &Value| -> Vec<Value> {
        let mut all: Vec<Value> = v["services"].as_array().unwrap().iter().map(kept).collect();
        all.sort_by_key(|s| s["name"].as_str().unwrap().to_string());
        all
    };
    assert_eq!(old["services"].as_array().unwrap().len(), 3);
    // A check may land between start and this read; compare what a check
    // cannot change within the first interval (5 s), plus the paused one's state.
    let strip = |mut v: Vec<Value>| {
        for s in &mut v {
            if s["monitoring"] != "paused" {
                s.as_object_mut().unwrap().remove("state");
                s.as_object_mut().unwrap().remove("state_since");
            }
        }
        v
    };
    assert_eq!(strip(by_name(&now)), strip(by_name(&old)));

    // Every event of the old daemon is still there, with its id.
    let old_events = json("schema-1.events.json");
    let events = get(&http, format!("{}/api/v1/events?limit=1000", p.url)).await;
    for e in old_events["events"].as_array().unwrap() {
        assert!(
            events["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["id"] == e["id"]
                    && n["kind"] == e["kind"]
                    && n["service"] == e["service"]),
            "event lost in the upgrade: {e}"
        );
    }
    // The check history came through the migration that chains it, newest first.
    let old_checks = json("schema-1.web-checks.json");
    let checks = get(
        &http,
        format!("{}/api/v1/services/web/checks?limit=1000", p.url),
    )
    .await;
    let ats = |v: &Value| -> Vec<Value> {
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["at"].clone())
            .collect()
    };
    let (old_ats, new_ats) = (ats(&old_checks), ats(&checks));
    assert!(old_ats.len() >= 2, "the fixture has a history");
    assert!(
        new_ats.ends_with(&old_ats),
        "history after the upgrade {new_ats:?} does not end with the old one {old_ats:?}"
    );
    let st = p
        .terminate(Duration::from_secs(10))
        .expect("exits on SIGTERM");
    assert!(st.success(), "{st:?}");
    assert_eq!(
        user_version(&db),
        healthchecker_server::store::SCHEMA_VERSION,
        "migrated in place"
    );
}

#[test]
fn a_newer_releases_database_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("healthchecker.db");
    std::fs::copy(fixture("schema-1.db"), &db).unwrap();
    let newer = healthchecker_server::store::SCHEMA_VERSION + 1;
    rusqlite::Connection::open(&db)
        .unwrap()
        .pragma_update(None, "user_version", newer)
        .unwrap();
    let before = std::fs::read(&db).unwrap();
    let out = bin()
        .args(["serve", "--no-mdns", "--bind", "127.0.0.1:0", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "database schema version {newer} is newer than this build's"
        )) && err.contains("upgrade healthchecker")
            && err.contains(&db.display().to_string()),
        "{err}"
    );
    assert_eq!(user_version(&db), newer);
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "the newer file is left untouched"
    );
}
