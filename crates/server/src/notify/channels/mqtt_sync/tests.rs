use super::*;

fn ids(ids: &[i64]) -> Vec<ServiceId> {
    ids.iter().copied().map(ServiceId::new).collect()
}

fn svc(id: i64, state: HealthState, since: i64) -> RoutedService {
    RoutedService {
        id: ServiceId::new(id),
        name: format!("s{id}"),
        state,
        state_since: since,
        paused: false,
        updated_at: 1,
    }
}

#[test]
fn a_round_publishes_what_changed_and_clears_what_went() {
    let mut published = Published::new();
    let wanted = vec![
        svc(1, HealthState::Healthy, 10),
        svc(2, HealthState::Unknown, 10),
    ];
    // Nothing published yet (a start): everything.
    assert_eq!(plan(&published, &wanted).publish, wanted);
    for w in &wanted {
        published.insert(w.id, Some(w.clone()));
    }
    assert_eq!(plan(&published, &wanted), Plan::default());
    // Service 2 turned unhealthy, 1 deleted, 3 is new; 4 was touched
    // by a notification but is not served: cleared.
    published.insert(ServiceId::new(4), None);
    let now = vec![
        svc(2, HealthState::Unhealthy, 20),
        svc(3, HealthState::Healthy, 5),
    ];
    let p = plan(&published, &now);
    assert_eq!(p.publish, now);
    assert_eq!(p.clear, ids(&[1, 4]));
    // Touched and still served: published again although unchanged.
    let mut published: Published = now.iter().map(|w| (w.id, Some(w.clone()))).collect();
    published.insert(ServiceId::new(3), None);
    assert_eq!(plan(&published, &now).publish, vec![now[1].clone()]);
}

#[test]
fn back_off_doubles_up_to_its_cap() {
    assert_eq!(backoff(1), BACKOFF_FIRST);
    assert_eq!(backoff(2), BACKOFF_FIRST * 2);
    assert_eq!(backoff(3), BACKOFF_FIRST * 4);
    assert_eq!(backoff(40), BACKOFF_MAX);
}

#[test]
fn only_the_broker_and_prefixes_move_a_channel() {
    let c = Channel {
        name: "ha".into(),
        kind: ChannelKind::Mqtt,
        default: true,
        url: Some("mqtt://127.0.0.1:1883".into()),
        to: Vec::new(),
        chat_id: None,
        room: None,
        secret: None,
        username: None,
        topic_prefix: None,
        discovery_prefix: None,
    };
    let mut other = c.clone();
    other.username = Some("hc".into());
    other.default = false;
    assert!(same_place(&c, &other));
    other.discovery_prefix = Some("ha2".into());
    assert!(!same_place(&c, &other));
    let mut moved = c.clone();
    moved.url = Some("mqtt://broker:1883".into());
    assert!(!same_place(&c, &moved));
}

#[test]
fn touched_services_are_taken_per_channel() {
    let p = Presence::default();
    p.touched("ha", ServiceId::new(1));
    p.touched("lab", ServiceId::new(2));
    p.touched("ha", ServiceId::new(3));
    let mut ha = p.take_touched("ha");
    ha.sort_unstable();
    assert_eq!(ha, ids(&[1, 3]));
    assert!(p.take_touched("ha").is_empty());
    assert_eq!(p.take_touched("lab"), ids(&[2]));
}
