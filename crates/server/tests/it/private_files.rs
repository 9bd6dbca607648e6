//! What the daemon leaves on disk and refuses as names (SPEC section 12).

use healthchecker_testkit::{sqlite_only, TestDaemon};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn the_database_directory_is_0700_and_its_files_0600() {
    if sqlite_only("the modes of the SQLite file, its WAL and directory") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("state").join("healthchecker");
    let db = dir.join("hc.db");
    let d = TestDaemon::start_with(|c| c.db = db.clone()).await;
    let (st, _) = d
        .register(json!({"name": "a", "url": "http://127.0.0.1:9/"}))
        .await;
    assert_eq!(st, 201);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&root.path().join("state")), 0o700);
    for f in ["hc.db", "hc.db-wal", "hc.db-shm"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    d.stop().await;

    // A database left readable by an older version is narrowed at start.
    for f in ["hc.db", "hc.db-wal"] {
        let p = dir.join(f);
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let d = TestDaemon::start_with(|c| c.db = db.clone()).await;
    let (st, _) = d.get("/api/v1/services/a").await;
    assert_eq!(st, 200, "nothing lost");
    assert_eq!(mode(&db), 0o600);
    d.stop().await;
}

#[tokio::test]
async fn dot_names_and_invisible_characters_are_refused_naming_the_field() {
    let d = TestDaemon::start().await;
    for name in [".", "..", "nas\u{200b}", "evil\u{202e}txt.exe", "\u{2060}x"] {
        let (st, v) = d
            .register(json!({"name": name, "url": "http://127.0.0.1:9/"}))
            .await;
        assert_eq!(st, 400, "{name:?}: {v}");
        assert_eq!(v["error"]["field"], "name", "{v}");
    }
    // The seed's form API refuses them too.
    let r = d
        .http
        .post(d.at("/healthchecker/monitor"))
        .form(&[("appname", ".."), ("url", "http://127.0.0.1:9")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["error"]["field"] == "appname" || v["error"]["field"] == "name",
        "{v}"
    );
    let (_, v) = d.get("/api/v1/services").await;
    assert_eq!(v["services"].as_array().unwrap().len(), 0, "{v}");
    d.stop().await;
}
