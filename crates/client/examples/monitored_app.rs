//! The seed README's Flask example, in Rust: an app that serves `/health`
//! with a health+json answer and registers itself with healthchecker.
//!
//! ```sh
//! HEALTHCHECKER_SERVER=http://nas.local:8484 cargo run -p healthchecker-client --example monitored_app
//! ```
//!
//! Environment: `PORT` (default 9090), `APP_NAME` (default `monitored_app`),
//! `HEALTHCHECKER_SERVER` (default: find the daemon over mDNS), `APP_URL`
//! (the base URL the daemon should check; default `http://<my address>:PORT`),
//! `EMAIL` (who gets the mails). Ctrl-C stops the app and its monitoring.

use axum::routing::get;
use axum::Router;
use healthchecker_client::{HealthCheckResponse, HealthChecker, Registration};
use std::net::{IpAddr, UdpSocket};
use std::time::Duration;

/// The local address that routes to the daemon's host (what the seed's
/// `getMyIpAddr()` did): no packet is sent, the kernel only picks a route.
fn my_ip_towards(daemon: &str) -> IpAddr {
    let host = url::Url::parse(daemon)
        .ok()
        .and_then(|u| u.socket_addrs(|| Some(80)).ok())
        .and_then(|a| a.into_iter().next());
    host.and_then(|addr| {
        let sock = UdpSocket::bind(if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        })
        .ok()?;
        sock.connect(addr).ok()?;
        sock.local_addr().ok().map(|a| a.ip())
    })
    .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(9090);
    let app_name = std::env::var("APP_NAME").unwrap_or_else(|_| "monitored_app".into());

    // The health endpoint: pass, with a description, as the seed's example.
    let description = app_name.clone();
    let app = Router::new().route(
        "/health",
        get(move || {
            let d = description.clone();
            async move {
                HealthCheckResponse::pass()
                    .description(d)
                    .version("1")
                    .release_id(env!("CARGO_PKG_VERSION"))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    let port = listener.local_addr()?.port();

    // Register with healthchecker that we want to be monitored.
    let hc = match std::env::var("HEALTHCHECKER_SERVER") {
        Ok(url) => HealthChecker::at(&url)?,
        Err(_) => HealthChecker::discover(Duration::from_secs(5)).await?,
    };
    let base = std::env::var("APP_URL")
        .unwrap_or_else(|_| format!("http://{}:{port}", my_ip_towards(hc.url())));
    let mut reg = Registration::new(&app_name, format!("{}/health", base.trim_end_matches('/')))
        .interval(10)
        .unhealthy(2)
        .healthy(4);
    if let Ok(email) = std::env::var("EMAIL") {
        reg = reg.email(email);
    }
    let monitored = hc.monitor(reg).await?;
    println!(
        "Registered {:?} with healthchecker at {}",
        monitored.name(),
        hc.url()
    );

    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;

    // Remove ourselves from being monitored.
    monitored.stop().await?;
    println!("Stopped monitoring {:?}", monitored.name());
    Ok(())
}
