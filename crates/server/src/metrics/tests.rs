use super::*;

#[test]
fn negotiation_follows_the_accept_header() {
    use Format::*;
    let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let prometheus3 = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
    for (accept, want) in [
        (None, Classic),
        (Some(""), Classic),
        (Some("*/*"), Classic),
        (Some("text/plain;version=0.0.4"), Classic),
        (Some("text/plain;version=0.0.4;q=1,*/*;q=0.1"), Classic),
        (Some("application/json"), Classic),
        (
            Some("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
            Classic,
        ),
        (Some(prometheus), OpenMetrics),
        (Some(prometheus3), OpenMetrics),
        (Some("application/openmetrics-text"), OpenMetrics),
        (
            Some("Application/OpenMetrics-Text; Version=1.0.0"),
            OpenMetrics,
        ),
        (
            Some("application/openmetrics-text;q=0.2,text/plain;q=0.9"),
            Classic,
        ),
        (Some("application/openmetrics-text;q=0,*/*"), Classic),
        (Some("application/openmetrics-text,text/plain"), OpenMetrics),
        (Some("text/plain,application/openmetrics-text"), Classic),
        (Some("application/*,text/*;q=0.5"), OpenMetrics),
        (Some("application/openmetrics-text,*/*"), OpenMetrics),
    ] {
        assert_eq!(Format::negotiate(accept), want, "{accept:?}");
    }
}

fn family_lines<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(prefix)).collect()
}

#[test]
fn counters_are_named_as_each_format_expects() {
    let m = Metrics::new();
    m.record_check(CheckResult::Pass, 0.01);
    let classic = m.encode(Format::Classic);
    assert!(classic.contains("# HELP healthchecker_checks_total Checks run, by result"));
    assert!(classic.contains("# TYPE healthchecker_checks_total counter\n"));
    assert!(classic.contains("healthchecker_checks_total{result=\"pass\"} 1\n"));
    assert!(classic.contains("# TYPE healthchecker_scheduler_missed_slots_total counter\n"));
    assert!(classic.contains("# TYPE healthchecker_check_duration_seconds histogram\n"));
    assert!(!classic.contains("# EOF"));
    let om = m.encode(Format::OpenMetrics);
    assert!(om.contains("# TYPE healthchecker_checks counter\n"));
    assert!(om.contains("healthchecker_checks_total{result=\"pass\"} 1\n"));
    assert!(om.ends_with("# EOF\n"));
    // Same samples in both, only the metadata differs.
    let samples = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(samples(&classic), samples(&om));
}

#[test]
fn service_blocks_follow_states_renames_and_deletes() {
    let m = Metrics::new();
    m.set_service_state("a", None, HealthState::Unknown);
    m.set_service_state("b\"\\x", None, HealthState::Healthy);
    m.set_service_state("a", Some(HealthState::Unknown), HealthState::Unhealthy);
    let t = m.encode(Format::Classic);
    assert_eq!(
        family_lines(&t, "healthchecker_service_up{"),
        [
            "healthchecker_service_up{service=\"a\"} 0",
            "healthchecker_service_up{service=\"b\\\"\\\\x\"} 1"
        ]
    );
    assert_eq!(
        family_lines(&t, "healthchecker_service_state{"),
        [
            "healthchecker_service_state{service=\"a\",state=\"unhealthy\"} 1",
            "healthchecker_service_state{service=\"b\\\"\\\\x\",state=\"healthy\"} 1"
        ]
    );
    assert!(t.contains("healthchecker_services{state=\"unhealthy\"} 1\n"));
    assert!(t.contains("healthchecker_services{state=\"unknown\"} 0\n"));
    // A rename: the old name goes, the new one takes the free slot.
    m.remove_service("a");
    m.remove_service("a");
    m.set_service_state("c", None, HealthState::Degraded);
    let t = m.encode(Format::OpenMetrics);
    assert_eq!(
        family_lines(&t, "healthchecker_service_up{"),
        [
            "healthchecker_service_up{service=\"c\"} 1",
            "healthchecker_service_up{service=\"b\\\"\\\\x\"} 1"
        ]
    );
    assert!(t.contains("healthchecker_services{state=\"unhealthy\"} 0\n"));
    assert!(t.contains("healthchecker_services{state=\"degraded\"} 1\n"));
    let b = m.services.lock();
    let sum: usize = b.slots.iter().flatten().map(|x| x.text.len()).sum();
    assert_eq!(b.bytes, sum);
}

/// The encoder alone at 100,000 services, against what the per-service
/// series cost before (`prometheus-client` families encoded at every
/// scrape); prints, asserts nothing (docs/performance.md):
/// `cargo test --release -p healthchecker-server --lib
/// metrics::tests::encode_at_100k -- --ignored --nocapture`
#[test]
#[ignore = "a measurement for docs/performance.md, not a test"]
fn encode_at_100k() {
    use std::time::Instant;
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Svc {
        service: String,
    }
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct SvcState {
        service: String,
        state: String,
    }
    let n = 100_000;
    let names: Vec<String> = (0..n).map(|i| format!("svc-{i:06}")).collect();
    let t = Instant::now();
    let m = Metrics::new();
    for name in &names {
        m.set_service_state(name, None, HealthState::Healthy);
    }
    println!("render {n} blocks: {:?}", t.elapsed());
    let mut old = Registry::with_prefix(PREFIX);
    let up = Family::<Svc, Gauge>::default();
    let st = Family::<SvcState, Gauge>::default();
    old.register("service_up", "up", up.clone());
    old.register("service_state", "state", st.clone());
    for name in &names {
        up.get_or_create(&Svc {
            service: name.clone(),
        })
        .set(1);
        st.get_or_create(&SvcState {
            service: name.clone(),
            state: "healthy".into(),
        })
        .set(1);
    }
    let time = |what: &str, f: &dyn Fn() -> usize| {
        let mut best = std::time::Duration::MAX;
        let mut size = 0;
        for _ in 0..10 {
            let t = Instant::now();
            size = std::hint::black_box(f());
            best = best.min(t.elapsed());
        }
        println!("{what}: best of 10 {best:?}, {size} bytes");
    };
    time("before: prometheus-client families", &|| {
        let mut s = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut s, &old);
        s.len()
    });
    time("after: classic", &|| m.encode(Format::Classic).len());
    time("after: openmetrics", &|| {
        m.encode(Format::OpenMetrics).len()
    });
}

#[test]
fn without_per_service_series_only_the_counts_remain() {
    let m = Metrics::with_per_service(false);
    assert!(!m.per_service());
    m.set_service_state("a", None, HealthState::Healthy);
    m.set_service_state("b", None, HealthState::Healthy);
    m.remove_service("b");
    let t = m.encode(Format::Classic);
    assert!(!t.contains("service="), "{t}");
    assert!(!t.contains("healthchecker_service_up"));
    assert!(t.contains("healthchecker_services{state=\"healthy\"} 1\n"));
}

#[test]
fn the_postgresql_writer_series_are_exported_from_the_start_and_count() {
    let m = Metrics::new();
    let text = m.encode(Format::Classic);
    for line in [
        "healthchecker_pg_write_backlog 0",
        "healthchecker_pg_checks_dropped_total{reason=\"stale\"} 0",
        "healthchecker_pg_checks_dropped_total{reason=\"backlog_full\"} 0",
        "healthchecker_pg_checks_dropped_total{reason=\"shutdown\"} 0",
        "healthchecker_pg_leases_given_up_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    // The writer counts on clones of the registered series.
    let w = m.pg_writer.clone();
    w.backlog.set(7);
    w.dropped_stale.inc_by(3);
    w.leases_given_up.inc();
    let text = m.encode(Format::Classic);
    for line in [
        "healthchecker_pg_write_backlog 7",
        "healthchecker_pg_checks_dropped_total{reason=\"stale\"} 3",
        "healthchecker_pg_leases_given_up_total 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
}
