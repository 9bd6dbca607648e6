//! A headless Chromium driven through chromedriver (fantoccini), for the
//! dashboard tests.

use fantoccini::{Client, ClientBuilder};
use healthchecker_testkit::{closed_port, wait_for};
use serde_json::json;
use std::time::Duration;

/// The chromedriver process; killed when dropped.
pub struct Driver(std::process::Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts chromedriver on a free port and opens a headless Chromium
/// session with the usual quiet flags followed by `extra`.
pub async fn chromium_session(extra: &[&str]) -> (Driver, Client) {
    let port = closed_port();
    let driver = Driver(
        std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver (installed by scripts/test.sh: Debian chromium-driver)"),
    );
    wait_for("chromedriver", Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let mut args = vec![
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ];
    args.extend_from_slice(extra);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": "/usr/bin/chromium", "args": args}),
    );
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a chromium session");
    (driver, c)
}
