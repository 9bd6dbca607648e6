//! Discovery over mDNS, each test in its own network namespace (nothing
//! leaves the machine's namespace): an independent peer (python-zeroconf)
//! and our own client find the daemon; the seed's client resolves it 20
//! times out of 20; SIGTERM withdraws the records; an interface restriction
//! keeps every packet off the other interfaces.

use crate::daemon::{bin, mdns_peer as peer, Proc};
use healthchecker_testkit::netns::{in_private_netns, sh};
use healthchecker_testkit::smtp::python;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn peers_and_our_client_find_the_daemon_and_sigterm_withdraws_it() {
    in_private_netns(|| async {
        let dir = tempfile::tempdir().unwrap();
        let p = Proc::start_mdns(
            &dir.path().join("hc.db"),
            &["--mdns-name", "HealthChecker test"],
        );
        let port = port_of(&p.url);

        // python-zeroconf, as the seed's client: 20 fresh resolutions of the legacy name.
        let out = peer().args(["legacy", "20"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert_eq!(v["resolved"], 20, "{v}");
        assert!(
            v["first"]
                .as_array()
                .unwrap()
                .iter()
                .all(|a| a == "127.0.0.1"),
            "{v}"
        );
        assert!(
            v["ports"].as_array().unwrap().iter().all(|p| p == port),
            "{v}"
        );

        // python-zeroconf on the native type, with its TXT record.
        let out = peer().arg("native").output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let d = &v[0];
        assert_eq!(
            d["name"], "HealthChecker test._healthchecker._tcp.local.",
            "{v}"
        );
        assert_eq!(d["port"], port);
        assert_eq!(d["addresses"][0], "127.0.0.1");
        assert_eq!(d["properties"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(d["properties"]["api"], "/api/v1");
        assert_eq!(d["properties"]["legacy"], "/healthchecker/");

        // SPEC section 16: the TXT strings in wire order, `txtvers=1` first;
        // the legacy record with `version` and `desc`; the dashboard as
        // `_http._tcp` with `path=/`.
        let out = peer()
            .args(["txt", "_healthchecker._tcp.local."])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let version = format!("version={}", env!("CARGO_PKG_VERSION"));
        let desc = format!("desc={}", healthchecker_server::discovery::DESCRIPTION);
        assert_eq!(
            v[0]["txt"],
            serde_json::json!([
                "txtvers=1",
                version,
                desc,
                "api=/api/v1",
                "legacy=/healthchecker/",
                "path=/"
            ]),
            "{v}"
        );
        let out = peer().args(["txt", "_http._tcp.local."]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let records = v.as_array().unwrap();
        let by_name = |n: &str| {
            records
                .iter()
                .find(|r| r["name"] == n)
                .unwrap_or_else(|| panic!("{n} not found: {v}"))
        };
        let legacy = by_name("_healthchecker._http._tcp.local.");
        assert_eq!(legacy["txt"], serde_json::json!([version, desc]), "{v}");
        let dashboard = by_name("HealthChecker test._http._tcp.local.");
        assert_eq!(dashboard["txt"], serde_json::json!(["path=/"]), "{v}");
        assert_eq!(dashboard["port"], port);
        let (st, status) = {
            let http = reqwest::Client::builder().no_proxy().build().unwrap();
            let r = http
                .get(format!("{}/healthchecker/status", p.url))
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        };
        assert_eq!(st, 200, "{status}");
        assert_eq!(status["services"], 0, "{status}");

        // Our client library and CLI.
        let hc = healthchecker_client::HealthChecker::discover(Duration::from_secs(10))
            .await
            .expect("discovered");
        assert_eq!(hc.url(), p.url);
        assert!(hc.list().await.unwrap().is_empty());
        // A token never goes to a daemon that merely answered over mDNS.
        let e = hc
            .clone()
            .with_token("admin-token-0123456789abcdef")
            .list()
            .await;
        assert!(
            matches!(
                e,
                Err(healthchecker_client::ClientError::TokenToUnnamedDaemon(_))
            ),
            "{e:?}"
        );
        let out = bin()
            .args(["discover", "--json", "--timeout", "5"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v[0]["url"], p.url, "{v}");
        let out = bin()
            .args(["monitor", "found by mdns", "tcp://127.0.0.1:9"])
            .env_remove("HEALTHCHECKER_SERVER")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        // The seed README's example, with the client's own discovery.
        let out = Command::new(python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/seed_example.py"))
            .arg("mdns")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        // Goodbye on SIGTERM: a watching peer sees the service removed.
        let mut watch = peer()
            .args(["watch", "30"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
        let added = lines.next().unwrap().unwrap();
        assert!(added.starts_with("added HealthChecker test"), "{added}");
        let started = std::time::Instant::now();
        let st = p
            .terminate(Duration::from_secs(10))
            .expect("exits on SIGTERM");
        assert!(st.success());
        let removed = lines.next().unwrap().unwrap();
        assert!(
            removed.starts_with("removed HealthChecker test"),
            "{removed}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "goodbye took {:?}",
            started.elapsed()
        );
        let _ = watch.kill();
        let _ = watch.wait();
    });
}

/// A second interface in the namespace: veth0 (10.77.0.1/24), with its
/// peer veth1 to listen on.
fn second_interface() {
    sh(&[
        "ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
    ]);
    sh(&["ip", "addr", "add", "10.77.0.1/24", "dev", "veth0"]);
    for l in ["veth0", "veth1"] {
        sh(&["ip", "link", "set", l, "up"]);
        sh(&["ip", "link", "set", l, "multicast", "on"]);
    }
    // The kernel's link watcher brings a new link's carrier and queue up
    // asynchronously (later on a loaded machine): a packet sent before that
    // is dropped, and a capture would miss an IGMP join. Wait for both ends.
    let up = |l: &str| {
        let out = Command::new("ip")
            .args(["-o", "link", "show", "dev", l])
            .output()
            .expect("ip");
        String::from_utf8_lossy(&out.stdout).contains("state UP")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !(up("veth0") && up("veth1")) {
        assert!(
            std::time::Instant::now() < deadline,
            "veth0/veth1 not up after 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The mDNS and IGMP packets seen on `veth1` while `run` runs.
fn capture_on_veth1(run: impl FnOnce()) -> Vec<String> {
    let mut dump = Command::new("tcpdump")
        .args([
            "-i",
            "veth1",
            "-n",
            "-l",
            "--immediate-mode",
            "-p",
            "igmp or udp port 5353",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump (installed by scripts/test.sh)");
    let mut err = BufReader::new(dump.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening on veth1") {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "tcpdump did not start"
        );
    }
    let out = dump.stdout.take().unwrap();
    let counter = std::thread::spawn(move || {
        BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .filter(|l| !l.trim().is_empty())
            .collect::<Vec<_>>()
    });
    run();
    let _ = Command::new("kill")
        .args(["-INT", &dump.id().to_string()])
        .status();
    let _ = dump.wait();
    counter.join().unwrap()
}

#[test]
fn an_interface_restriction_keeps_every_packet_off_other_interfaces() {
    in_private_netns(|| async {
        second_interface();
        let dir = tempfile::tempdir().unwrap();
        let run_daemon = |args: &'static [&'static str], db: &str| {
            let db = dir.path().join(db);
            move || {
                let p = Proc::start_raw(&db, args);
                // Make it work: resolve it over lo, then give announcements time.
                let out = peer().args(["legacy", "2"]).output().unwrap();
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(v["resolved"], 2, "{v}");
                std::thread::sleep(Duration::from_secs(3));
                let _ = p.terminate(Duration::from_secs(10));
                std::thread::sleep(Duration::from_millis(500));
            }
        };
        let confined = capture_on_veth1(run_daemon(
            &["--bind", "0.0.0.0:0", "--mdns-interface", "lo"],
            "a.db",
        ));
        assert!(
            confined.is_empty(),
            "packets left on veth0 although the daemon is confined to lo: {confined:?}"
        );
        // Control: the same capture sees the daemon when veth0 is allowed,
        // so a zero above is not a broken capture.
        let open = capture_on_veth1(run_daemon(
            &[
                "--bind",
                "0.0.0.0:0",
                "--mdns-interface",
                "lo",
                "--mdns-interface",
                "veth0",
            ],
            "b.db",
        ));
        assert!(
            !open.is_empty(),
            "the capture saw nothing even with veth0 allowed"
        );
    });
}

/// Why the daemon uses our `new_with_interfaces` (vendor/mdns-sd): the
/// upstream way, `new()` then `disable_interface(All)` and
/// `enable_interface(lo)`, joins the multicast group on every interface at
/// start-up, and the capture sees IGMP reports leave on veth0; the patched
/// constructor never opens veth0.
#[test]
fn the_upstream_start_up_leaks_joins_and_the_patched_one_does_not() {
    use mdns_sd::{IfKind, ServiceDaemon};
    in_private_netns(|| async {
        second_interface();
        let run = |patched: bool| {
            move || {
                let d = if patched {
                    ServiceDaemon::new_with_interfaces(5353, vec![IfKind::Name("lo".into())])
                        .unwrap()
                } else {
                    let d = ServiceDaemon::new().unwrap();
                    d.disable_interface(IfKind::All).unwrap();
                    d.enable_interface(IfKind::Name("lo".into())).unwrap();
                    d
                };
                std::thread::sleep(Duration::from_secs(2));
                let rx = d.shutdown().unwrap();
                let _ = rx.recv_timeout(Duration::from_secs(2));
                std::thread::sleep(Duration::from_millis(300));
            }
        };
        let upstream = capture_on_veth1(run(false));
        assert!(
            upstream.iter().any(|l| l.contains("igmp")),
            "upstream start-up joined veth0: {upstream:?}"
        );
        let patched = capture_on_veth1(run(true));
        assert!(patched.is_empty(), "{patched:?}");
    });
}
