//! The API over HTTPS (`--tls-cert`, `--tls-key`), against the real daemon.

use healthchecker_server::config::ApiTls;
use healthchecker_testkit::{status, HttpTarget, Mode, TestDaemon, TlsCert};
use serde_json::json;

#[tokio::test]
async fn the_api_is_served_over_https_with_the_given_certificate() {
    let cert = TlsCert::new(time::Duration::days(90));
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&c, &cert.pem).unwrap();
    std::fs::write(&k, &cert.key_pem).unwrap();
    let d = TestDaemon::start_with(|cfg| {
        cfg.api_tls = Some(ApiTls {
            cert: c.clone(),
            key: k.clone(),
        })
    })
    .await;
    assert!(d.url.starts_with("https://"), "{}", d.url);
    let port = d.url.rsplit(':').next().unwrap().to_string();
    let base = format!("https://localhost:{port}");
    let https = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = https.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let t = HttpTarget::start(Mode::Pass).await;
    let r = https
        .post(format!("{base}/api/v1/services"))
        .json(&json!({"name": "over tls", "url": t.url("/")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // A client that does not trust the certificate cannot talk to it, and
    // plain HTTP on the TLS port gets no API answer.
    let untrusting = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(untrusting
        .get(format!("{base}/health"))
        .send()
        .await
        .is_err());
    let plain = untrusting
        .get(format!("http://127.0.0.1:{port}/api/v1/services"))
        .send()
        .await;
    assert!(
        plain.as_ref().map(|r| r.status() != 200).unwrap_or(true),
        "{plain:?}"
    );
    // The daemon keeps serving after those failed handshakes.
    assert_eq!(
        status(https.get(format!("{base}/api/v1/services/over%20tls"))).await,
        200
    );
    d.stop().await;
}

#[tokio::test]
async fn a_certificate_without_its_key_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("cert.pem");
    std::fs::write(&c, "not a certificate").unwrap();
    let mut cfg = healthchecker_server::Config::for_db(dir.path().join("hc.db"));
    cfg.api_tls = Some(ApiTls {
        cert: c.clone(),
        key: c.clone(),
    });
    let mut d = healthchecker_server::Daemon::start(cfg).await.unwrap();
    let e = d.wait().await.unwrap_err().to_string();
    assert!(e.contains("--tls-cert"), "{e}");
}
