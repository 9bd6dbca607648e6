use super::*;
use serde_json::json;

fn parse(v: Value) -> Result<Channel, SpecError> {
    Channel::from_json(v.as_object().unwrap(), None)
}

#[test]
fn each_kind_names_its_missing_or_bad_field() {
    for (body, field) in [
        (
            json!({"kind": "webhook", "url": "http://h", "secret": "s"}),
            "name",
        ),
        (json!({"name": "a", "kind": "sms"}), "kind"),
        (
            json!({"name": "a", "kind": "webhook", "url": "ftp://h", "secret": "s"}),
            "url",
        ),
        (
            json!({"name": "a", "kind": "webhook", "url": "http://h"}),
            "secret",
        ),
        (json!({"name": "a", "kind": "ntfy"}), "url"),
        (
            json!({"name": "a", "kind": "telegram", "token": "t"}),
            "chat_id",
        ),
        (
            json!({"name": "a", "kind": "matrix", "url": "http://h", "token": "t"}),
            "room",
        ),
        (json!({"name": "a", "kind": "pagerduty"}), "routing_key"),
        (
            json!({"name": "a", "kind": "email", "to": ["not an address"]}),
            "to",
        ),
        (
            json!({"name": "a", "kind": "slack", "url": "http://h", "secret": "x"}),
            "secret",
        ),
        (
            json!({"name": "a", "kind": "slack", "url": "http://h", "default": "yes"}),
            "default",
        ),
        (
            json!({"name": "a", "kind": "mqtt", "url": "http://broker"}),
            "url",
        ),
        (
            json!({"name": "a", "kind": "mqtt", "url": "mqtt://b", "topic_prefix": "a/#"}),
            "topic_prefix",
        ),
    ] {
        let e = parse(body.clone()).unwrap_err();
        assert_eq!(e.field, field, "{body}: {e}");
    }
}

#[test]
fn kinds_get_their_default_urls_and_optional_tokens() {
    let t = parse(json!({"name": "t", "kind": "telegram", "token": "1:x", "chat_id": 42})).unwrap();
    assert_eq!(t.url.as_deref(), Some(TELEGRAM_URL));
    assert_eq!(t.chat_id.as_deref(), Some("42"));
    let m = parse(json!({"name": "m", "kind": "mqtt", "url": "mqtt://127.0.0.1:1883"})).unwrap();
    assert_eq!(m.topic_prefix.as_deref(), Some("healthchecker"));
    assert_eq!(m.discovery_prefix.as_deref(), Some("homeassistant"));
    let p = parse(json!({"name": "p", "kind": "pagerduty", "routing_key": "r"})).unwrap();
    assert_eq!(p.url.as_deref(), Some(PAGERDUTY_URL));
    let n = parse(json!({"name": "n", "kind": "ntfy", "url": "https://ntfy.sh/topic/"})).unwrap();
    assert!(n.secret.is_none());
    assert_eq!(n.url.as_deref(), Some("https://ntfy.sh/topic"));
}

#[test]
fn an_update_without_the_secret_keeps_it_and_debug_hides_it() {
    let first =
        parse(json!({"name": "w", "kind": "webhook", "url": "http://h", "secret": "hunter2"}))
            .unwrap();
    let again = Channel::from_json(
        json!({"name": "w", "kind": "webhook", "url": "http://h2", "default": true})
            .as_object()
            .unwrap(),
        Some(&first),
    )
    .unwrap();
    assert_eq!(again.secret.as_ref().unwrap().expose(), "hunter2");
    assert!(again.default);
    assert!(!format!("{again:?}").contains("hunter2"));
}

#[test]
fn service_channel_lists_are_names() {
    assert_eq!(
        parse_channel_names(Some(&json!(["a", "b", "a"]))).unwrap(),
        vec!["a", "b"]
    );
    assert_eq!(
        parse_channel_names(Some(&json!("a"))).unwrap_err().field,
        "channels"
    );
    assert_eq!(
        parse_channel_names(Some(&json!([".."]))).unwrap_err().field,
        "channels"
    );
}
