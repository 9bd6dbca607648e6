use super::*;
use serde_json::{json, Value};

fn spec(v: Value) -> Result<ServiceSpec, SpecError> {
    RegisterRequest::from_json(v.to_string().as_bytes())?.try_into()
}

#[test]
fn url_targets_parse_with_defaults() {
    let cases = [
        ("http://example.com", Protocol::Http, "example.com", 80, "/"),
        (
            "http://example.com/",
            Protocol::Http,
            "example.com",
            80,
            "/",
        ),
        (
            "http://nas:5000/health",
            Protocol::Http,
            "nas",
            5000,
            "/health",
        ),
        (
            "https://10.0.0.1:8443/status?x=1",
            Protocol::Https,
            "10.0.0.1",
            8443,
            "/status?x=1",
        ),
        ("tcp://nas.local:22", Protocol::Tcp, "nas.local", 22, ""),
        ("tcp://nas.local", Protocol::Tcp, "nas.local", 80, ""),
        ("ssl://[::1]:993", Protocol::Ssl, "::1", 993, ""),
        ("TLS://host", Protocol::Ssl, "host", 443, ""),
        (
            "HTTPS://Host.Example",
            Protocol::Https,
            "host.example",
            443,
            "/",
        ),
    ];
    for (url, proto, host, port, path) in cases {
        let t = Target::parse_url("url", url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(
            (t.protocol, t.host.as_str(), t.port, t.path.as_str()),
            (proto, host, port, path),
            "{url}"
        );
    }
    assert_eq!(
        Target::parse_url("url", "ssl://[::1]:993").unwrap().url(),
        "ssl://[::1]:993"
    );
}

#[test]
fn bad_urls_are_refused_naming_url() {
    for url in [
        "example.com",
        "ftp://x",
        "http://",
        "http://h:99999",
        "tcp://h:22/x",
        "http://u:p@h/",
        "http://h:0/",
        "http://\n/x",
        "http:///x",
        "http://h /x",
        "http://\\/x",
    ] {
        let e = Target::parse_url("url", url).unwrap_err();
        assert_eq!(e.field, "url", "{url}");
        assert!(
            e.message.contains(&format!("{url:?}")),
            "{url}: {}",
            e.message
        );
    }
}

#[test]
fn defaults_follow_the_spec() {
    let s = spec(json!({"name": "a", "host": "h"})).unwrap();
    assert_eq!(s.target.protocol, Protocol::Tcp);
    assert_eq!(s.target.port, 80);
    assert_eq!(
        (
            s.timeout,
            s.interval,
            s.unhealthy_threshold,
            s.healthy_threshold
        ),
        (5, 30, 2, 10)
    );
    assert_eq!(s.cert_warn_days, 14);
    assert!(!s.tls_verify);
    assert!(s.expected_status.matches(200) && !s.expected_status.matches(204));
    let s = spec(json!({"name": "a", "host": "h", "protocol": "https"})).unwrap();
    assert_eq!((s.target.port, s.target.path.as_str()), (443, "/health"));
    let s = spec(json!({"name": "a", "host": "h", "path": "/ping"})).unwrap();
    assert_eq!(s.target.protocol, Protocol::Http);
}

#[test]
fn out_of_range_values_name_field_value_and_range() {
    let cases = [
        (json!({"timeout": 1}), "timeout", "1", "2 to 60"),
        (
            json!({"timeout": 61, "interval": 300}),
            "timeout",
            "61",
            "2 to 60",
        ),
        (json!({"interval": 4}), "interval", "4", "5 to 300"),
        (json!({"interval": 301}), "interval", "301", "5 to 300"),
        (
            json!({"unhealthy_threshold": 1}),
            "unhealthy_threshold",
            "1",
            "2 to 10",
        ),
        (
            json!({"healthy_threshold": 11}),
            "healthy_threshold",
            "11",
            "2 to 10",
        ),
        (
            json!({"healthy_threshold": "x"}),
            "healthy_threshold",
            "\"x\"",
            "2 to 10",
        ),
        (json!({"interval": 5.5}), "interval", "5.5", "5 to 300"),
        (json!({"timeout": -3}), "timeout", "-3", "2 to 60"),
        (
            json!({"cert_warn_days": 400}),
            "cert_warn_days",
            "400",
            "0 to 365",
        ),
    ];
    for (extra, field, value, range) in cases {
        let mut body = json!({"name": "a", "url": "http://h"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let e = spec(body).unwrap_err();
        assert_eq!(e.field, field);
        assert!(
            e.message.contains(value) && e.message.contains(range),
            "{}",
            e.message
        );
    }
}

#[test]
fn a_url_is_checked_as_written() {
    // The README's example: a NAS answers `/`, not `/health`.
    for url in ["http://192.168.1.20:5000/", "http://192.168.1.20:5000"] {
        let s = spec(json!({"name": "nas", "url": url})).unwrap();
        assert_eq!(s.target.url(), "http://192.168.1.20:5000/", "{url}");
    }
    // Separate fields without a path still get the seed's `/health`.
    let s = spec(json!({"name": "a", "host": "h", "protocol": "http"})).unwrap();
    assert_eq!(s.target.path, "/health");
}

#[test]
fn omitted_timeout_is_five_or_interval_minus_one() {
    for (interval, timeout) in [(5, 4), (6, 5), (30, 5), (300, 5)] {
        let s = spec(json!({"name": "a", "url": "http://h", "interval": interval})).unwrap();
        assert_eq!(s.timeout, timeout, "interval {interval}");
    }
    assert_eq!(default_timeout(5), 4);
    // A timeout given explicitly is still checked against the interval.
    let e = spec(json!({"name": "a", "url": "http://h", "interval": 5, "timeout": 5})).unwrap_err();
    assert_eq!(e.field, "timeout");
}

#[test]
fn heartbeats_take_period_and_grace_and_nothing_polled() {
    let s = spec(
        json!({"name": "nightly backup", "kind": "heartbeat", "period": 86400, "grace": 3600}),
    )
    .unwrap();
    let hb = s.heartbeat.unwrap();
    assert_eq!((hb.period, hb.grace), (86_400, 3_600));
    assert_eq!(s.target.protocol, Protocol::Heartbeat);
    assert_eq!(s.target.url(), "heartbeat");
    assert_eq!(s.thresholds(), crate::heartbeat::THRESHOLDS);
    // Bounds: period 60 s to 365 d, grace 60 s to 30 d, named in the error.
    for (extra, field, range) in [
        (json!({"period": 59}), "period", "60 to 31536000 seconds"),
        (json!({"period": 31_536_001}), "period", "60 to 31536000"),
        (json!({"grace": 59}), "grace", "60 to 2592000 seconds"),
        (json!({"grace": 2_592_001}), "grace", "60 to 2592000"),
        (json!({"url": "http://h"}), "url", "does not apply"),
        (json!({"interval": 10}), "interval", "does not apply"),
        (json!({"kind": "push"}), "kind", "check, heartbeat"),
    ] {
        let mut body = json!({"name": "a", "kind": "heartbeat"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let e = spec(body).unwrap_err();
        assert_eq!(e.field, field);
        assert!(e.message.contains(range), "{}", e.message);
    }
    let e = spec(json!({"name": "a", "url": "http://h", "period": 60})).unwrap_err();
    assert_eq!(e.field, "period");
    let e = spec(json!({"name": "a", "host": "h", "protocol": "heartbeat"})).unwrap_err();
    assert_eq!(e.field, "protocol");
    assert_eq!(
        Target::parse_url("url", "heartbeat://h").unwrap_err().field,
        "url"
    );
}

#[test]
fn dns_urls_parse_and_unknown_types_are_refused() {
    let t = Target::parse_url("url", "dns://192.168.1.1/nas.lan?type=AAAA&expect=fd00::5").unwrap();
    assert_eq!(
        (t.protocol, t.host.as_str(), t.port),
        (Protocol::Dns, "192.168.1.1", 53)
    );
    assert_eq!(
        t.url(),
        "dns://192.168.1.1:53/nas.lan?type=AAAA&expect=fd00%3A%3A5"
    );
    let q = t.dns_query().unwrap();
    assert_eq!(
        (q.name.as_str(), q.record_type, q.expect.as_deref()),
        ("nas.lan", DnsType::Aaaa, Some("fd00::5"))
    );
    // The stored form parses back to the same query.
    assert_eq!(Target::parse_url("url", &t.url()).unwrap(), t);
    let t = Target::parse_url("url", "dns://127.0.0.1:5353/Example.COM.").unwrap();
    let q = t.dns_query().unwrap();
    assert_eq!(
        (q.name.as_str(), q.record_type, q.expect),
        ("example.com", DnsType::A, None)
    );
    for (url, why) in [
        ("dns://h/x?type=SRV", "unknown record type \"SRV\""),
        ("dns://h/", "missing the name"),
        ("dns://h/x?tpye=A", "unknown parameter"),
        ("dns://h/a..b", "invalid name"),
    ] {
        let e = spec(json!({"name": "a", "url": url})).unwrap_err();
        assert_eq!(e.field, "url", "{url}");
        assert!(e.message.contains(why), "{url}: {}", e.message);
    }
    let e = spec(json!({"name": "a", "host": "h", "protocol": "dns"})).unwrap_err();
    assert_eq!(e.field, "protocol");
}

#[test]
fn dns_expectations_compare_names_loosely_and_text_exactly() {
    let q =
        |t: &str, e: &str| DnsQuery::parse("/x", Some(&format!("type={t}&expect={e}"))).unwrap();
    let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(q("MX", "Mail.Example.").satisfied_by(&a(&["mail.example"])));
    assert!(q("A", "10.0.0.1").satisfied_by(&a(&["10.0.0.2", "10.0.0.1"])));
    assert!(!q("A", "10.0.0.1").satisfied_by(&a(&["10.0.0.2"])));
    assert!(q("TXT", "v%3Dspf1").satisfied_by(&a(&["v=spf1"])));
    assert!(!q("TXT", "V%3DSPF1").satisfied_by(&a(&["v=spf1"])));
    assert!(DnsQuery::parse("/x", None).unwrap().satisfied_by(&[]));
}

#[test]
fn icmp_targets_have_a_host_only() {
    for body in [
        json!({"name": "printer", "url": "icmp://192.168.1.30"}),
        json!({"name": "printer", "host": "192.168.1.30", "protocol": "icmp"}),
    ] {
        let s = spec(body).unwrap();
        assert_eq!(s.target.protocol, Protocol::Icmp);
        assert_eq!(s.target.url(), "icmp://192.168.1.30");
    }
    assert_eq!(
        Target::parse_url("url", "icmp://[fe80::1]").unwrap().url(),
        "icmp://[fe80::1]"
    );
    for (body, field) in [
        (json!({"name": "a", "url": "icmp://h:7"}), "url"),
        (json!({"name": "a", "url": "icmp://h/x"}), "url"),
        (
            json!({"name": "a", "host": "h", "protocol": "icmp", "port": 7}),
            "port",
        ),
        (
            json!({"name": "a", "host": "h", "protocol": "icmp", "path": "/"}),
            "path",
        ),
    ] {
        assert_eq!(spec(body.clone()).unwrap_err().field, field, "{body}");
    }
}

#[test]
fn timeout_must_be_below_interval() {
    let e =
        spec(json!({"name": "a", "url": "http://h", "timeout": 10, "interval": 10})).unwrap_err();
    assert_eq!(e.field, "timeout");
    assert!(spec(json!({"name": "a", "url": "http://h", "timeout": 9, "interval": 10})).is_ok());
}

#[test]
fn numbers_may_be_strings() {
    let s =
        spec(json!({"name": "a", "url": "http://h", "interval": "10", "timeout": "3"})).unwrap();
    assert_eq!((s.interval, s.timeout), (10, 3));
}

#[test]
fn port_and_protocol_are_checked() {
    for (body, field) in [
        (json!({"name": "a", "host": "h", "port": 0}), "port"),
        (json!({"name": "a", "host": "h", "port": 65536}), "port"),
        (
            json!({"name": "a", "host": "h", "protocol": "udp"}),
            "protocol",
        ),
        (
            json!({"name": "a", "host": "h", "protocol": "tcp", "path": "/x"}),
            "path",
        ),
        (
            json!({"name": "a", "host": "h", "protocol": "http", "path": "x"}),
            "path",
        ),
        (json!({"name": "a", "host": "h h"}), "host"),
        (json!({"name": "a", "host": "h/x"}), "host"),
        (json!({"name": "a", "url": "http://h", "port": 80}), "port"),
        (json!({"name": "a"}), "url"),
    ] {
        assert_eq!(spec(body.clone()).unwrap_err().field, field, "{body}");
    }
    let s = spec(json!({"name": "a", "host": "::1", "port": 8080, "protocol": "http"})).unwrap();
    assert_eq!(s.target.url(), "http://[::1]:8080/health");
}

#[test]
fn names_are_free_text_but_bounded() {
    assert_eq!(
        spec(json!({"name": "web one ✓", "url": "http://h"}))
            .unwrap()
            .name,
        "web one ✓"
    );
    for name in [
        json!(""),
        json!("   "),
        json!("a\nb"),
        json!("x".repeat(201)),
        json!(5),
        json!("."),
        json!(".."),
        json!("paypal\u{202e}lmth.exe"),
        json!("nas\u{200b}"),
        json!("\u{feff}nas"),
    ] {
        assert_eq!(
            spec(json!({"name": name, "url": "http://h"}))
                .unwrap_err()
                .field,
            "name"
        );
    }
    assert!(spec(json!({"name": "é".repeat(200), "url": "http://h"})).is_ok());
    // Dots inside a name and visible non-ASCII are fine.
    assert!(spec(json!({"name": "...", "url": "http://h"})).is_ok());
    assert!(spec(json!({"name": "a.b", "url": "http://h"})).is_ok());
    assert!(spec(json!({"name": "Grüße 日本", "url": "http://h"})).is_ok());
    assert_eq!(
        spec(json!({"url": "http://h"})).unwrap_err().code,
        "missing_field"
    );
}

#[test]
fn emails_are_parsed_by_a_real_parser() {
    let s =
        spec(json!({"name": "a", "url": "http://h", "email": ["a@example.com", "b@example.org"]}))
            .unwrap();
    assert_eq!(s.emails.len(), 2);
    let s = spec(json!({"name": "a", "url": "http://h", "email": "a@example.com, b@example.org"}))
        .unwrap();
    assert_eq!(s.emails.len(), 2);
    for bad in [
        json!("not-an-address"),
        json!(["a@b.c", "@x"]),
        json!(3),
        json!("a@@b"),
    ] {
        let e = spec(json!({"name": "a", "url": "http://h", "email": bad})).unwrap_err();
        assert_eq!(e.field, "email");
    }
}

#[test]
fn expected_status_ranges() {
    let s = spec(json!({"name": "a", "url": "http://h", "expected_status": "200-399"})).unwrap();
    assert!(s.expected_status.matches(302) && !s.expected_status.matches(404));
    assert_eq!(s.expected_status.to_string(), "200-399");
    let s = spec(json!({"name": "a", "url": "http://h", "expected_status": 204})).unwrap();
    assert!(s.expected_status.matches(204));
    for bad in ["99", "200-100", "abc", "", "200,"] {
        let e = spec(json!({"name": "a", "url": "http://h", "expected_status": bad})).unwrap_err();
        assert_eq!(e.field, "expected_status", "{bad}");
    }
}

#[test]
fn unknown_fields_and_bad_bodies_are_refused() {
    let e = RegisterRequest::from_json(br#"{"name":"a","intervall":5}"#).unwrap_err();
    assert_eq!((e.code, e.field.as_str()), ("unknown_field", "intervall"));
    // The message lists the known fields, from the type itself.
    assert!(
        e.message
            .starts_with("unknown field \"intervall\" (expected one of")
            && e.message.contains("`interval`")
            && e.message.contains("`depends_on`"),
        "{}",
        e.message
    );
    assert_eq!(
        RegisterRequest::from_json(b"{").unwrap_err().code,
        "invalid_body"
    );
    assert_eq!(
        RegisterRequest::from_json(b"[1]").unwrap_err().code,
        "invalid_body"
    );
    assert_eq!(
        RegisterRequest::from_json(b"\xff\xfe").unwrap_err().code,
        "invalid_body"
    );
}

#[test]
fn legacy_form_appends_health() {
    let form = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let r = RegisterRequest::from_legacy_form(&form(&[
        ("appname", "Sample App"),
        ("url", "http://10.0.0.5:9090"),
        ("email", "me@example.com"),
        ("timeout", "5"),
        ("interval", "10"),
        ("unhealthy_threshold", "2"),
        ("healthy_threshold", "4"),
    ]))
    .unwrap();
    let s = ServiceSpec::try_from(r).unwrap();
    assert_eq!(s.target.url(), "http://10.0.0.5:9090/health");
    assert_eq!((s.interval, s.healthy_threshold), (10, 4));
    let r = RegisterRequest::from_legacy_form(&form(&[
        ("appname", "x"),
        ("url", "http://h:1/"),
        ("email", ""),
    ]))
    .unwrap();
    let s = ServiceSpec::try_from(r).unwrap();
    assert_eq!(s.target.url(), "http://h:1/health");
    assert!(s.emails.is_empty());
    assert_eq!(
        RegisterRequest::from_legacy_form(&form(&[("appname", "x")]))
            .unwrap_err()
            .field,
        "url"
    );
}

#[test]
fn legacy_health_goes_before_query_and_fragment() {
    // Found by the fuzzer: "/health" landed in the query or the fragment.
    for (url, want) in [
        ("http://h:1/app?x=1", "http://h:1/app/health?x=1"),
        ("http://h:1/#frag", "http://h:1/health"),
        ("h:1/a/", "http://h:1/a/health"),
    ] {
        let pairs = vec![
            ("appname".to_string(), "x".to_string()),
            ("url".to_string(), url.to_string()),
        ];
        let r = RegisterRequest::from_legacy_form(&pairs).unwrap();
        assert_eq!(
            ServiceSpec::try_from(r).unwrap().target.url(),
            want,
            "{url}"
        );
    }
}

#[test]
fn a_registration_round_trips_through_its_own_json() {
    // What a client builds is what the daemon reads: one type both ways.
    let r = RegisterRequest {
        name: Some("web".into()),
        url: Some("https://h:8443/status".into()),
        email: Some(EmailList::Many(vec!["a@example.com".into()])),
        interval: Some(Interval::new(10)),
        timeout: Some(Timeout::new(3)),
        healthy_threshold: Some(Threshold::new(4)),
        expected_status: Some("200-399".into()),
        tls_verify: Some(true),
        tags: Some(vec!["nas".into()]),
        ..Default::default()
    };
    let body = serde_json::to_vec(&r).unwrap();
    let back = RegisterRequest::from_json(&body).unwrap();
    assert_eq!(back, r);
    let s = ServiceSpec::try_from(back).unwrap();
    assert_eq!((s.interval, s.timeout, s.healthy_threshold), (10, 3, 4));
    // Absent fields are not written, so the daemon's defaults apply.
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v.get("port").is_none() && v.get("kind").is_none(), "{v}");
}

#[test]
fn loose_inputs_are_read_and_refusals_name_the_field() {
    let s = spec(json!({"name": "a", "host": "h", "protocol": "http", "port": "8080", "unhealthy_threshold": " 3 ",
        "cert_warn_days": "0", "tls_verify": "yes", "expected_status": 204, "email": null}))
    .unwrap();
    assert_eq!(
        (s.target.port, s.unhealthy_threshold, s.cert_warn_days),
        (8080, 3, 0)
    );
    assert!(s.tls_verify);
    for (body, field, text) in [
        (
            json!({"name": 5, "url": "http://h"}),
            "name",
            "invalid name 5 (expected a string)",
        ),
        (
            json!({"name": "a", "url": ["x"]}),
            "url",
            "expected a string",
        ),
        (
            json!({"name": "a", "url": "http://h", "tls_verify": "maybe"}),
            "tls_verify",
            "true or false",
        ),
        (
            json!({"name": "a", "url": "http://h", "tags": "x"}),
            "tags",
            "list of names",
        ),
        (
            json!({"name": "a", "url": "http://h", "email": {"a": 1}}),
            "email",
            "list of addresses",
        ),
        (
            json!({"name": "a", "url": "http://h", "port": 99999}),
            "port",
            "1 to 65535",
        ),
        (
            json!({"name": "a", "url": "http://h", "interval": 1e20}),
            "interval",
            "5 to 300",
        ),
    ] {
        let e = spec(body.clone()).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_str()),
            ("invalid_field", field),
            "{body}"
        );
        assert!(e.message.contains(text), "{body}: {}", e.message);
    }
    // Values built in-process are checked as strictly as decoded ones.
    let r = RegisterRequest {
        name: Some("a".into()),
        url: Some("http://h".into()),
        interval: Some(Interval::new(301)),
        ..Default::default()
    };
    let e = ServiceSpec::try_from(r).unwrap_err();
    assert_eq!(e.field, "interval");
    assert!(
        e.message.contains("301 (valid: 5 to 300 seconds)"),
        "{}",
        e.message
    );
}
