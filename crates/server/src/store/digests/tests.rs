use super::*;
use crate::store::Store;

const RULE: DigestRule = DigestRule {
    threshold: 5,
    window_ms: 30_000,
};

fn delivery(c: &Connection, channel: &str, service_id: i64, due: i64) {
    c.execute(
        "INSERT INTO deliveries (channel, event_id, service_id, service, created_at, from_state, \
         to_state, reason, target, status, next_attempt_at) \
         VALUES (?1, ?2, ?2, 'svc-' || ?2, ?3, 'healthy', 'unhealthy', 'refused', 'tcp://x:1', \
         'pending', ?3)",
        params![channel, service_id, due],
    )
    .unwrap();
}

fn mail(c: &Connection, service_id: i64, to: &[&str], due: i64) {
    c.execute(
        "INSERT INTO notifications (event_id, service_id, service, created_at, from_state, \
         to_state, reason, target, recipients, status, next_attempt_at) \
         VALUES (?1, ?1, 'svc-' || ?1, ?2, 'healthy', 'unhealthy', 'refused', 'tcp://x:1', ?3, \
         'pending', ?2)",
        params![service_id, due, serde_json::to_string(to).unwrap()],
    )
    .unwrap();
}

#[test]
fn a_channel_flood_is_held_for_one_digest_that_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.db");
    let store = Store::open(&path).unwrap();
    store
        .with_writer(|c| {
            for (name, kind) in [("hook", "webhook"), ("pd", "pagerduty")] {
                c.execute(
                    "INSERT INTO channels (name, kind, is_default, config, created_at, updated_at) \
                     VALUES (?1, ?2, 1, '{}', 0, 0)",
                    params![name, kind],
                )?;
            }
            for id in 1..=8 {
                delivery(c, "hook", id, 1_000);
                delivery(c, "pd", id, 1_000);
            }
            Ok(())
        })
        .unwrap();
    // Five of the hook's eight on their own; PagerDuty never digests.
    assert_eq!(
        store.decide_digests("channel", 1_000, RULE).unwrap(),
        (13, 3)
    );
    assert!(store.due_digests("channel", 30_999, 10).unwrap().is_empty());
    // One more within the window joins the same digest.
    store
        .with_writer(|c| {
            delivery(c, "hook", 9, 2_000);
            Ok(())
        })
        .unwrap();
    assert_eq!(
        store.decide_digests("channel", 2_000, RULE).unwrap(),
        (0, 1)
    );
    drop(store);

    // After a restart (or a kill -9): the digest is due at the window's end.
    let store = Store::open(&path).unwrap();
    let due = store.due_digests("channel", 31_000, 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        (due[0].destination.as_str(), due[0].delivery_id()),
        ("hook", "hc-digest-1-1000".to_string())
    );
    let items = store.digest_items(&due[0]).unwrap();
    assert_eq!(items.len(), 9);
    assert_eq!(items.iter().filter(|i| i.held).count(), 4);
    let held = store.deliveries(Some("digested"), None, 100).unwrap();
    assert!(held.iter().all(|r| r
        .last_error
        .as_deref()
        .unwrap()
        .contains("hc-digest-1-1000")));
    store.mark_digest_sent(due[0].id, 31_500).unwrap();
    assert!(store.due_digests("channel", 40_000, 10).unwrap().is_empty());
    // A window later the channel is quiet again: sent at once.
    store
        .with_writer(|c| {
            delivery(c, "hook", 10, 70_000);
            Ok(())
        })
        .unwrap();
    assert_eq!(
        store.decide_digests("channel", 70_000, RULE).unwrap(),
        (1, 0)
    );
}

#[test]
fn a_mail_is_held_only_when_every_recipient_is_flooded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("d.db")).unwrap();
    store
        .with_writer(|c| {
            for id in 1..=5 {
                mail(c, id, &["ops@example.com"], 1_000);
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(store.decide_digests("mail", 1_000, RULE).unwrap(), (5, 0));
    store
        .with_writer(|c| {
            mail(c, 6, &["ops@example.com", "quiet@example.com"], 2_000);
            mail(c, 7, &["ops@example.com"], 2_000);
            Ok(())
        })
        .unwrap();
    // The quiet recipient is not delayed; ops's sixth is held.
    assert_eq!(store.decide_digests("mail", 2_000, RULE).unwrap(), (1, 1));
    let due = store.due_digests("mail", 31_000, 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].destination, "ops@example.com");
    let items = store.digest_items(&due[0]).unwrap();
    assert_eq!(items.len(), 7, "the five, the shared one, the held one");
    assert_eq!(
        items
            .iter()
            .filter(|i| i.held)
            .map(|i| i.service_id.get())
            .collect::<Vec<_>>(),
        vec![7]
    );
}

/// The race CI met (`digests::thirty_services_mailing_one_recipient_give_one_digest_mail`):
/// a row that falls due between a decision and the sender's due read
/// must not go out on its own; it waits for the next decision.
#[test]
fn a_row_due_after_the_decision_waits_for_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("d.db")).unwrap();
    let add = |ids: std::ops::RangeInclusive<i64>, due: i64| {
        store
            .with_writer(|c| {
                for id in ids.clone() {
                    mail(c, id, &["ops@example.com"], due);
                    delivery(c, "hook", id, due);
                }
                Ok(())
            })
            .unwrap()
    };
    store
        .with_writer(|c| {
            c.execute(
                "INSERT INTO channels (name, kind, is_default, config, created_at, updated_at) \
                 VALUES ('hook', 'webhook', 1, '{}', 0, 0)",
                [],
            )?;
            Ok(())
        })
        .unwrap();
    // Before any decision (digests off), every due row is read.
    add(1..=5, 1_000);
    assert_eq!(store.due_notifications(1_000, 100).unwrap().len(), 5);
    assert_eq!(store.due_deliveries(1_000, 100).unwrap().len(), 5);
    assert_eq!(store.decide_digests("mail", 1_000, RULE).unwrap(), (5, 0));
    assert_eq!(
        store.decide_digests("channel", 1_000, RULE).unwrap(),
        (5, 0)
    );
    // The sixth falls due after the decision: not read until decided.
    add(6..=6, 1_500);
    let ids: Vec<i64> = store
        .due_notifications(2_000, 100)
        .unwrap()
        .iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    assert_eq!(store.due_deliveries(2_000, 100).unwrap().len(), 5);
    // Decided, it is held for the digest, never sent on its own.
    assert_eq!(store.decide_digests("mail", 2_000, RULE).unwrap(), (0, 1));
    assert_eq!(
        store.decide_digests("channel", 2_000, RULE).unwrap(),
        (0, 1)
    );
    assert!(store
        .due_notifications(2_000, 100)
        .unwrap()
        .iter()
        .all(|n| n.id != 6));
    assert!(store
        .due_deliveries(2_000, 100)
        .unwrap()
        .iter()
        .all(|d| d.id != 6));
}
