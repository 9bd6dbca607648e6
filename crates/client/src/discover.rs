//! Finding daemons on the local network: DNS-SD browse of
//! `_healthchecker._tcp.local.` over mDNS (mdns-sd).

use crate::error::ClientError;
use healthchecker_core::SERVICE_TYPE;
use mdns_sd::{ServiceDaemon, ServiceEvent};
use std::time::Duration;

/// A daemon found on the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovered {
    /// Its instance name, e.g. `HealthChecker on nas`.
    pub name: String,
    /// Its API base URL, e.g. `http://192.168.1.20:8484`.
    pub url: String,
    /// Its version (TXT `version`).
    pub version: Option<String>,
}

/// Browses for daemons for up to `timeout`; with `first_only`, returns as
/// soon as one answers. IPv4 addresses are preferred (a link-local IPv6
/// address needs a scope that a URL cannot carry portably).
pub async fn discover_all(
    timeout: Duration,
    first_only: bool,
) -> Result<Vec<Discovered>, ClientError> {
    let unreachable = |e: mdns_sd::Error| ClientError::Unreachable {
        url: "mDNS".into(),
        reason: e.to_string(),
    };
    let mdns = ServiceDaemon::new().map_err(unreachable)?;
    let rx = mdns.browse(SERVICE_TYPE).map_err(unreachable)?;
    let mut found: Vec<Discovered> = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let ev = match tokio::time::timeout_at(deadline, rx.recv_async()).await {
            Ok(Ok(ev)) => ev,
            _ => break,
        };
        let ServiceEvent::ServiceResolved(svc) = ev else {
            continue;
        };
        let mut addrs: Vec<std::net::IpAddr> =
            svc.get_addresses().iter().map(|a| a.to_ip_addr()).collect();
        addrs.sort_by_key(|a| (a.is_ipv6(), a.is_loopback()));
        let Some(ip) = addrs.into_iter().find(
            |a| !matches!(a, std::net::IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80),
        ) else {
            continue;
        };
        let host = match ip {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        };
        let name = svc
            .get_fullname()
            .strip_suffix(&format!(".{SERVICE_TYPE}"))
            .unwrap_or(svc.get_fullname())
            .to_string();
        let d = Discovered {
            url: format!("http://{host}:{}", svc.get_port()),
            version: svc.get_property_val_str("version").map(str::to_string),
            name,
        };
        if !found.iter().any(|f| f.name == d.name) {
            found.push(d);
        }
        if first_only {
            break;
        }
    }
    let _ = mdns.stop_browse(SERVICE_TYPE);
    if let Ok(rx) = mdns.shutdown() {
        let _ = tokio::time::timeout(Duration::from_secs(1), rx.recv_async()).await;
    }
    Ok(found)
}
