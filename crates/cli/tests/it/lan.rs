//! Finding things to monitor (SPEC section 16), in a private network
//! namespace: python-zeroconf announces a fake printer, NAS and Home
//! Assistant on 127.0.0.1; the daemon lists them (never itself) in
//! `GET /api/v1/discovered` within 10 s, monitors one with one call, and
//! `healthchecker discover --devices` shows the rest.

use crate::daemon::{bin, get_json, mdns_peer, service_names, Proc};
use healthchecker_testkit::netns::in_private_netns;
use healthchecker_testkit::{get_text, wait_for};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::time::Duration;

/// The peer announcing the fake devices, once it says so; and its first line.
fn devices_peer() -> (Child, String) {
    let mut peer = mdns_peer()
        .arg("devices")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(peer.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    (peer, ready)
}

#[test]
fn announced_devices_are_listed_and_one_call_monitors_one() {
    in_private_netns(|| async {
        let dir = tempfile::tempdir().unwrap();
        let p = Proc::start_mdns(
            &dir.path().join("hc.db"),
            &["--mdns-name", "HealthChecker test"],
        );
        let (mut peer, ready) = devices_peer();
        assert_eq!(ready.trim(), "ready");

        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let list = || async {
            let v = get_json(&http, &format!("{}/api/v1/discovered", p.url)).await;
            v["discovered"].as_array().unwrap().clone()
        };
        let by_type =
            |found: &[serde_json::Value], ty: &str| found.iter().find(|d| d["type"] == ty).cloned();
        let types = [
            "_ipp._tcp.local.",
            "_smb._tcp.local.",
            "_http._tcp.local.",
            "_home-assistant._tcp.local.",
        ];
        let found = wait_for(
            "every announced type to be listed",
            Duration::from_secs(10),
            || async {
                let found = list().await;
                types
                    .iter()
                    .all(|t| by_type(&found, t).is_some())
                    .then_some(found)
            },
        )
        .await;
        // Never itself (its dashboard is an _http._tcp record too).
        assert!(
            found
                .iter()
                .all(|d| !d["name"].as_str().unwrap().starts_with("HealthChecker")),
            "{found:?}"
        );
        let printer = by_type(&found, "_ipp._tcp.local.").unwrap();
        assert_eq!(printer["name"], "Office printer");
        assert_eq!(printer["txt"]["ty"], "Fake LaserJet");
        assert_eq!(printer["suggested"]["url"], "tcp://127.0.0.1:631");
        let web = by_type(&found, "_http._tcp.local.").unwrap();
        assert_eq!(
            web["suggested"]["url"], "http://127.0.0.1:5000/webman/",
            "TXT path"
        );
        let ha = by_type(&found, "_home-assistant._tcp.local.").unwrap();
        assert_eq!(ha["suggested"]["url"], "http://127.0.0.1:8123/");

        // One call monitors the printer; it then leaves the list.
        let r = http
            .post(format!(
                "{}{}",
                p.url,
                printer["links"]["monitor"].as_str().unwrap()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            (v["name"].as_str(), v["url"].as_str()),
            (
                Some("Office printer (printer)"),
                Some("tcp://127.0.0.1:631")
            )
        );
        let found = list().await;
        assert!(by_type(&found, "_ipp._tcp.local.").is_none(), "{found:?}");
        let r = http
            .post(format!(
                "{}/api/v1/discovered/0000000000000000/monitor",
                p.url
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);

        // The CLI shows the rest, with the command that would monitor each.
        let out = bin()
            .args(["discover", "--devices"])
            .env("HEALTHCHECKER_SERVER", &p.url)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains("healthchecker monitor 'Home (Home Assistant)' http://127.0.0.1:8123/"),
            "{text}"
        );
        assert!(!text.contains("Office printer"), "{text}");

        // The dashboard lists them too, and its button monitors one (a form
        // post from the daemon's own page; another site's is refused).
        let page = get_text(&http, &format!("{}/found", p.url)).await;
        assert!(
            page.contains("Home") && page.contains("http://127.0.0.1:8123/"),
            "{page}"
        );
        assert!(!page.contains("Office printer"), "{page}");
        let ha_id = ha["id"].as_str().unwrap();
        let button = format!("/found/{ha_id}/monitor");
        assert!(page.contains(&button), "{page}");
        let post = |origin: &str| {
            http.post(format!("{}{button}", p.url))
                .header("origin", origin)
                .header("content-type", "application/x-www-form-urlencoded")
                .send()
        };
        assert_eq!(post("http://evil.example").await.unwrap().status(), 403);
        let r = post(&p.url).await.unwrap();
        assert_eq!(
            r.status(),
            200,
            "followed the redirect to the new service's page"
        );
        assert_eq!(r.url().path(), "/services/Home%20%28Home%20Assistant%29");
        assert_eq!(r.url().query(), Some("notice=added"));
        let found = list().await;
        assert!(
            by_type(&found, "_home-assistant._tcp.local.").is_none(),
            "{found:?}"
        );
        let v = get_json(
            &http,
            &format!("{}/api/v1/services/Home%20(Home%20Assistant)", p.url),
        )
        .await;
        assert_eq!(v["url"], "http://127.0.0.1:8123/", "{v}");
        // A second click does not overwrite it.
        let r = post(&p.url).await.unwrap();
        assert_eq!(r.url().query(), Some("notice=exists"));

        let _ = peer.stdin.take().unwrap().write_all(b"");
        let _ = peer.wait();
        let _ = p.terminate(Duration::from_secs(10));
    });
}

#[test]
fn auto_monitor_registers_only_the_types_it_names() {
    in_private_netns(|| async {
        let dir = tempfile::tempdir().unwrap();
        let p = Proc::start_mdns(&dir.path().join("hc.db"), &["--auto-monitor", "_ipp._tcp"]);
        let (mut peer, _ready) = devices_peer();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let names = wait_for(
            "a service auto-monitored",
            Duration::from_secs(10),
            || async {
                let names = service_names(&http, &p.url).await;
                (!names.is_empty()).then_some(names)
            },
        )
        .await;
        // Give the others the same chance: they stay listed, not monitored.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let v = get_json(&http, &format!("{}/api/v1/services", p.url)).await;
        assert_eq!(names, vec!["Office printer (printer)".to_string()]);
        assert_eq!(v["count"], 1, "{v}");
        drop(peer.stdin.take());
        let _ = peer.wait();
        let _ = p.terminate(Duration::from_secs(10));
    });
}

#[test]
fn auto_monitor_names_only_browsed_types() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args([
            "serve",
            "--no-mdns",
            "--bind",
            "127.0.0.1:0",
            "--auto-monitor",
            "_bogus._tcp",
            "--db",
        ])
        .arg(dir.path().join("hc.db"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auto-monitor") && err.contains("_ipp._tcp"),
        "{err}"
    );
}
