//! An ICMP registration on a daemon that can open no ICMP socket (SPEC
//! section 15): `net.ipv4.ping_group_range` closed in a private network
//! namespace and `CAP_NET_RAW` dropped with setpriv. It is refused with a
//! message that names the sysctl; opening the range makes it acceptable.

use crate::daemon::bin;
use healthchecker_testkit::netns::{in_private_netns, sh};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

async fn register(http: &reqwest::Client, url: &str, name: &str) -> (u16, serde_json::Value) {
    let r = http
        .post(format!("{url}/api/v1/services"))
        .json(&serde_json::json!({"name": name, "url": "icmp://127.0.0.1"}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[test]
fn icmp_is_refused_naming_the_sysctl_when_no_socket_opens() {
    in_private_netns(|| async {
        sh(&["sysctl", "-qw", "net.ipv4.ping_group_range=1 0"]);
        let dir = tempfile::tempdir().unwrap();
        let port = healthchecker_testkit::closed_port();
        let exe = bin().get_program().to_owned();
        let mut child = Command::new("setpriv")
            .args(["--bounding-set=-net_raw", "--inh-caps=-net_raw", "--"])
            .arg(exe)
            .args([
                "serve",
                "--no-mdns",
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--db",
            ])
            .arg(dir.path().join("hc.db"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("setpriv (util-linux)");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let started = Instant::now();
        while http.get(format!("{url}/health")).send().await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "daemon did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (st, v) = register(&http, &url, "printer").await;
        assert_eq!(st, 400, "{v}");
        assert_eq!(v["error"]["field"], "url", "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("net.ipv4.ping_group_range"), "{msg}");
        // Control: with the group range open, the same daemon accepts it.
        sh(&["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"]);
        let (st, v) = register(&http, &url, "printer").await;
        assert_eq!(st, 201, "{v}");
        let _ = child.kill();
        let _ = child.wait();
    });
}
