//! ICMP checks (SPEC section 15) in a private network namespace with a veth
//! pair: an address that answers, one with nothing behind it, one that
//! loses every third echo request (nftables) and one that stops answering;
//! with `net.ipv4.ping_group_range` open (unprivileged sockets) and closed
//! (raw sockets: the tests run as root). Nothing leaves the namespace.

use healthchecker_testkit::netns::{in_private_netns, sh};
use healthchecker_testkit::{enc, TestDaemon};
use serde_json::json;
use std::time::Duration;

fn veth_pair() {
    sh(&[
        "ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
    ]);
    sh(&["ip", "addr", "add", "10.77.1.1/24", "dev", "veth0"]);
    for a in ["10.77.1.2/24", "10.77.1.3/24", "10.77.1.4/24"] {
        sh(&["ip", "addr", "add", a, "dev", "veth1"]);
    }
    for l in ["veth0", "veth1"] {
        sh(&["ip", "link", "set", l, "up"]);
    }
    sh(&["nft", "add", "table", "ip", "hc"]);
    sh(&[
        "nft",
        "add chain ip hc input { type filter hook input priority 0 ; }",
    ]);
    // 10.77.1.3 loses every third echo request: one of each check's three.
    sh(&[
        "nft",
        "add rule ip hc input ip daddr 10.77.1.3 icmp type echo-request numgen inc mod 3 == 0 drop",
    ]);
}

fn ping_group_range(v: &str) {
    sh(&["sysctl", "-qw", &format!("net.ipv4.ping_group_range={v}")]);
}

async fn last_details(d: &TestDaemon, name: &str) -> serde_json::Value {
    let (_, v) = d
        .get(&format!("/api/v1/services/{}/checks?limit=1", enc(name)))
        .await;
    v["checks"][0]["details"].clone()
}

#[test]
fn echo_replies_judge_icmp_services() {
    in_private_netns(|| async {
        veth_pair();
        ping_group_range("0 2147483647");
        let d = TestDaemon::start().await;
        let reg = |name: &str, host: &str| {
            json!({"name": name, "url": format!("icmp://{host}"), "interval": 5, "timeout": 2,
                "healthy_threshold": 2, "unhealthy_threshold": 2})
        };
        for (name, host) in [
            ("switch", "10.77.1.2"),
            ("nothing", "10.77.1.9"),
            ("flaky ap", "10.77.1.3"),
            ("camera", "10.77.1.4"),
        ] {
            let (st, v) = d.register(reg(name, host)).await;
            assert_eq!(st, 201, "{v}");
            assert_eq!(v["protocol"], "ICMP");
        }
        let within = Duration::from_secs(20);
        d.wait_state("switch", "healthy", within).await;
        d.wait_state("camera", "healthy", within).await;
        d.wait_state("nothing", "unhealthy", within).await;
        d.wait_state("flaky ap", "degraded", within).await;
        let det = last_details(&d, "switch").await;
        assert_eq!(
            (det["sent"].as_u64(), det["received"].as_u64()),
            (Some(3), Some(3)),
            "{det}"
        );
        assert_eq!(det["rtt_ms"].as_array().unwrap().len(), 3);
        assert_eq!(det["socket"], "unprivileged", "{det}");
        let (_, v) = d
            .get(&format!("/api/v1/services/{}", enc("flaky ap")))
            .await;
        assert_eq!(
            v["last_check"]["reason"], "1 of 3 echo requests lost",
            "{v}"
        );
        let (_, v) = d.get("/api/v1/services/nothing").await;
        assert_eq!(
            v["last_check"]["reason"], "no echo reply (3 requests sent)",
            "{v}"
        );

        // The camera stops answering: unhealthy after the threshold.
        sh(&[
            "nft",
            "add rule ip hc input ip daddr 10.77.1.4 icmp type echo-request drop",
        ]);
        d.wait_state("camera", "unhealthy", within).await;

        // ping_group_range closed: raw sockets (CAP_NET_RAW, root here).
        ping_group_range("1 0");
        let (st, v) = d.register(reg("router", "10.77.1.2")).await;
        assert_eq!(st, 201, "{v}");
        d.wait_state("router", "healthy", within).await;
        assert_eq!(last_details(&d, "router").await["socket"], "raw");

        // A name that does not resolve fails the check, naming the lookup.
        let (st, _) = d.register(reg("ghost", "ghost.invalid")).await;
        assert_eq!(st, 201);
        d.wait_state("ghost", "unhealthy", within).await;
        let (_, v) = d.get("/api/v1/services/ghost").await;
        let reason = v["last_check"]["reason"].as_str().unwrap_or("");
        assert!(
            reason.contains("DNS lookup of ghost.invalid failed"),
            "{reason}"
        );
        d.stop().await;
    });
}
