//! DNS checks (SPEC section 15) against a small nameserver on 127.0.0.1
//! that answers some names, refuses one and never answers another.

use healthchecker_testkit::{enc, TestDaemon};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::rdata::{A, CNAME, MX, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use serde_json::json;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// `nas.lan` A 192.168.1.20 (and CNAME `files.lan` -> `nas.lan`), MX and
/// TXT for `example.lan`, REFUSED for `refused.lan`, silence for
/// `silent.lan`, NXDOMAIN for anything else.
async fn nameserver() -> SocketAddr {
    healthchecker_testkit::dns::nameserver(|name, query, r| {
        let owner = query.name().clone();
        let rr = |d: RData| Record::from_rdata(owner.clone(), 60, d);
        match (name, query.query_type()) {
            ("silent.lan.", _) => return false,
            ("refused.lan.", _) => r.metadata.response_code = ResponseCode::Refused,
            ("nas.lan.", RecordType::A) => {
                r.add_answer(rr(RData::A(A(Ipv4Addr::new(192, 168, 1, 20)))));
            }
            ("nas.lan.", _) => {}
            ("files.lan.", RecordType::CNAME) => {
                let target = Name::from_ascii("nas.lan.").unwrap();
                r.add_answer(rr(RData::CNAME(CNAME(target))));
            }
            ("example.lan.", RecordType::MX) => {
                let ex = Name::from_ascii("mail.example.lan.").unwrap();
                r.add_answer(rr(RData::MX(MX::new(10, ex))));
            }
            ("example.lan.", RecordType::TXT) => {
                r.add_answer(rr(RData::TXT(TXT::new(vec!["v=spf1 -all".into()]))));
            }
            _ => r.metadata.response_code = ResponseCode::NXDomain,
        }
        true
    })
    .await
}

#[tokio::test]
async fn dns_checks_pass_on_answers_and_fail_with_a_reason() {
    let ns = nameserver().await;
    let d = TestDaemon::start().await;
    let cases = [
        (
            "a",
            format!("dns://{ns}/nas.lan?type=A&expect=192.168.1.20"),
            "healthy",
            None,
        ),
        ("any a", format!("dns://{ns}/nas.lan"), "healthy", None),
        (
            "cname",
            format!("dns://{ns}/files.lan?type=CNAME&expect=nas.lan"),
            "healthy",
            None,
        ),
        (
            "mx",
            format!("dns://{ns}/example.lan?type=MX&expect=mail.example.lan"),
            "healthy",
            None,
        ),
        (
            "txt",
            format!("dns://{ns}/example.lan?type=txt&expect=v%3Dspf1%20-all"),
            "healthy",
            None,
        ),
        (
            "wrong",
            format!("dns://{ns}/nas.lan?type=A&expect=10.0.0.1"),
            "unhealthy",
            Some("nas.lan A answered 192.168.1.20 (expected 10.0.0.1)"),
        ),
        (
            "no aaaa",
            format!("dns://{ns}/nas.lan?type=AAAA"),
            "unhealthy",
            Some("no AAAA record for nas.lan"),
        ),
        (
            "nx",
            format!("dns://{ns}/gone.lan"),
            "unhealthy",
            Some("gone.lan not found (NXDOMAIN)"),
        ),
        (
            "refused",
            format!("dns://{ns}/refused.lan"),
            "unhealthy",
            Some("the nameserver answered REFUSED"),
        ),
        (
            "silent",
            format!("dns://{ns}/silent.lan"),
            "unhealthy",
            Some("no answer from the nameserver"),
        ),
    ];
    for (name, url, _, _) in &cases {
        let (st, v) = d
            .register(
                json!({"name": name, "url": url, "interval": 5, "timeout": 2,
                "healthy_threshold": 2, "unhealthy_threshold": 2}),
            )
            .await;
        assert_eq!(st, 201, "{name}: {v}");
        assert_eq!(v["protocol"], "DNS");
    }
    for (name, _, state, reason) in &cases {
        d.wait_state(name, state, Duration::from_secs(20)).await;
        let (_, v) = d.get(&format!("/api/v1/services/{}", enc(name))).await;
        if let Some(reason) = reason {
            let got = v["last_check"]["reason"].as_str().unwrap_or("");
            assert!(
                got.contains(reason),
                "{name}: {got:?} should contain {reason:?}"
            );
        }
    }
    let (_, v) = d.get("/api/v1/services/mx/checks?limit=1").await;
    assert_eq!(
        v["checks"][0]["details"]["answers"],
        json!(["mail.example.lan"])
    );

    // Bad input names the field.
    let (st, v) = d
        .register(json!({"name": "x", "url": format!("dns://{ns}/nas.lan?type=SRV")}))
        .await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (400, Some("url")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown record type"),
        "{v}"
    );
    d.stop().await;
}
