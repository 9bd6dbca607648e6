//! Rows that do not decode are errors naming table, row and column; reads
//! of one service go through an index.

use super::tests::{check, mailing, spec_of};
use super::*;
use healthchecker_core::{CheckResult, HealthState, ServiceId};

/// A store with one registered service `a` that has one state change (an
/// event, a mail and a check); returns the service's id.
fn store_with_history() -> (tempfile::TempDir, Store, ServiceId) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("hc.db")).unwrap();
    let body = serde_json::json!({"name": "a", "url": "http://127.0.0.1:9/health", "interval": 30, "email": "a@example.com"});
    let id = store
        .register(&spec_of(&body), "h", 1_000, usize::MAX)
        .unwrap()
        .record
        .id;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (writer, handle) = Writer::start(&store);
        let c = check(id, 2_000, CheckResult::Fail, HealthState::Unhealthy);
        let c = mailing(c, HealthState::Unknown, 1_000, "a", 2_000);
        handle.record(c).await;
        handle.flush().await;
        drop(handle);
        writer.join();
    });
    (dir, store, id)
}

/// Writes `sql` with raw SQL, as a hand edit of the file would.
fn poke(store: &Store, sql: &str) {
    store.with_writer(|c| c.execute_batch(sql)).unwrap();
}

fn corruption<T: std::fmt::Debug>(r: Result<T, StoreError>) -> Corruption {
    match r {
        Err(StoreError::Corrupt(c)) => c,
        other => panic!("expected a corrupt-row error, got {other:?}"),
    }
}

#[test]
fn an_unknown_state_is_a_corrupt_row_naming_table_row_and_column() {
    let (_dir, store, id) = store_with_history();
    assert_eq!(
        store.get_service("a").unwrap().unwrap().state,
        HealthState::Unhealthy,
        "control: the row decodes before the edit"
    );
    poke(&store, "UPDATE services SET state = 'sideways'");
    let c = corruption(store.get_service("a"));
    assert_eq!(
        (c.table.as_str(), c.row, c.column.as_str()),
        ("services", Some(id.get()), "state")
    );
    assert!(c.detail.contains("sideways"), "{c}");
    let text = StoreError::Corrupt(c).to_string();
    assert!(
        text.contains("services") && text.contains(&format!("row {id}")) && text.contains("state"),
        "{text}"
    );
    // Every read of the row says so; nothing repairs it to `unknown`.
    corruption(store.load_all());
    corruption(store.count_by_state());
}

#[test]
fn a_bad_address_an_unknown_kind_status_or_result_is_corrupt() {
    let (_dir, store, id) = store_with_history();
    assert_eq!(store.events(Some("a"), 10).unwrap().len(), 2);
    let mail = store.notifications(None, Some("a"), 10).unwrap();
    assert_eq!(mail[0].status, NotificationStatus::Pending);
    assert_eq!(store.checks(id, 10).unwrap()[0].result, CheckResult::Fail);

    poke(
        &store,
        "UPDATE services SET emails = '[\"not an address\"]'",
    );
    let c = corruption(store.get_service("a"));
    assert_eq!(
        (c.table.as_str(), c.column.as_str()),
        ("services", "emails")
    );

    poke(
        &store,
        "UPDATE events SET kind = 'exploded' WHERE kind = 'state'",
    );
    let c = corruption(store.events(Some("a"), 10));
    assert_eq!((c.table.as_str(), c.column.as_str()), ("events", "kind"));

    poke(&store, "UPDATE notifications SET status = 'lost'");
    let c = corruption(store.notifications(None, Some("a"), 10));
    assert_eq!(
        (c.table.as_str(), c.row, c.column.as_str()),
        ("notifications", Some(mail[0].id), "status")
    );

    poke(&store, "UPDATE checks SET result = 'maybe'");
    let c = corruption(store.checks(id, 10));
    assert_eq!((c.table.as_str(), c.column.as_str()), ("checks", "result"));
}

#[test]
fn every_outbox_status_round_trips_including_digested() {
    let (_dir, store, _) = store_with_history();
    for status in NotificationStatus::ALL {
        poke(
            &store,
            &format!("UPDATE notifications SET status = '{}'", status.as_str()),
        );
        let rows = store.notifications(Some(status.as_str()), Some("a"), 10);
        assert_eq!(rows.unwrap()[0].status, status);
        assert_eq!(status.as_str().parse::<NotificationStatus>(), Ok(status));
    }
    for kind in EventKind::ALL {
        assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
    }
}

/// The query plan of `sql` (with `?` parameters bound to NULL), one line
/// per step.
fn plan(store: &Store, sql: &str, params: usize) -> String {
    store
        .with_reader(|c| {
            let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
            let nulls = vec![rusqlite::types::Null; params];
            let rows = stmt.query_map(rusqlite::params_from_iter(nulls), |r| {
                r.get::<_, String>("detail")
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })
        .unwrap()
        .join("\n")
}

#[test]
fn one_services_outbox_is_read_through_an_index() {
    let (_dir, store, _) = store_with_history();
    let limit = 30;
    for status in [None, Some("pending")] {
        let (sql, args) = outbox::list_sql(status, Some("a"), limit);
        let p = plan(&store, &sql, args.len());
        assert!(p.contains("notifications_by_name"), "{p}");
        assert!(!p.contains("SCAN notifications"), "{p}");
    }
    // Negative control: the list of every service's rows walks the table.
    let (sql, args) = outbox::list_sql(None, None, limit);
    assert!(plan(&store, &sql, args.len()).contains("SCAN notifications"));
}

#[test]
fn channel_silence_and_delivery_rows_decode_strictly_too() {
    let (_dir, store, id) = store_with_history();
    poke(
        &store,
        &format!(
            "INSERT INTO channels (name, kind, is_default, config, secret, created_at, updated_at) \
             VALUES ('ops', 'webhook', 1, '{{\"url\": \"http://127.0.0.1:9/\", \"to\": []}}', NULL, 1, 1); \
             INSERT INTO silences (services, tags, starts_at, ends_at, comment, created_at) \
             VALUES ('[\"a\"]', '[]', 1, 2, NULL, 1); \
             INSERT INTO deliveries (channel, event_id, service_id, service, created_at, from_state, \
             to_state, target, status, next_attempt_at) \
             VALUES ('ops', 1, {id}, 'a', 2000, 'unknown', 'unhealthy', 'http://x', 'pending', 0);"
        ),
    );
    // Controls: every row decodes before the edits.
    assert_eq!(store.channels().unwrap()[0].name, "ops");
    assert_eq!(store.silences().unwrap()[0].services, vec!["a".to_string()]);
    let d = store.deliveries(None, None, 10).unwrap();
    assert_eq!(d[0].to, HealthState::Unhealthy);
    assert_eq!(
        store
            .routed_services("ops", ServiceId::new(0), 10)
            .unwrap()
            .len(),
        1
    );

    poke(&store, "UPDATE deliveries SET to_state = 'sideways'");
    let c = corruption(store.deliveries(None, None, 10));
    assert_eq!(
        (c.table.as_str(), c.row, c.column.as_str()),
        ("deliveries", Some(d[0].id), "to_state")
    );
    corruption(store.due_deliveries(1, 10));

    poke(&store, "UPDATE channels SET kind = 'carrier-pigeon'");
    let c = corruption(store.channels());
    assert_eq!((c.table.as_str(), c.column.as_str()), ("channels", "kind"));
    corruption(store.channel("ops"));
    poke(
        &store,
        "UPDATE channels SET kind = 'email', config = '{\"to\": [\"not an address\"]}'",
    );
    let c = corruption(store.channels());
    assert_eq!(
        (c.table.as_str(), c.column.as_str()),
        ("channels", "config")
    );

    poke(&store, "UPDATE silences SET tags = 'not json'");
    let c = corruption(store.silences());
    assert_eq!((c.table.as_str(), c.column.as_str()), ("silences", "tags"));

    poke(&store, "UPDATE services SET state = 'sideways'");
    let c = corruption(store.routed_services("ops", ServiceId::new(0), 10));
    assert_eq!(
        (c.table.as_str(), c.row, c.column.as_str()),
        ("services", Some(id.get()), "state")
    );
}
