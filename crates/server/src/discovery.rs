//! ZeroConf advertisement (SPEC section 6): the daemon announces itself as
//! `HealthChecker on <host>._healthchecker._tcp.local.` (TXT `txtvers=1`,
//! `version`, `desc`, `api`, `legacy`, `path=/`, and `node=<id>` for a
//! node of a cluster, SPEC section 19), its dashboard as
//! `HealthChecker on <host>._http._tcp.local.` (`path=/`) and, for the seed's
//! Python client, as `_healthchecker._http._tcp.local.` (`version`, `desc`).
//!
//! Interfaces: with `--mdns-interface`, only those; otherwise every up,
//! non-loopback interface. The selection is given to the mDNS daemon at
//! creation (`new_with_interfaces`, our patch of mdns-sd), so no multicast
//! group is joined and no packet is sent on any other interface, not even
//! during start-up. Only addresses the API listens on are advertised: a
//! bind to `0.0.0.0` advertises the IPv4 addresses of the chosen interfaces
//! (so the seed client's "first address" is an IPv4 one), a specific bind
//! address advertises just that address, `[::]` advertises both families.
//!
//! [`Advertiser::withdraw`] sends goodbye packets (TTL 0) before exit.

use crate::config::Config;
use mdns_sd::{DaemonEvent, IfKind, IfPredicate, ServiceDaemon, ServiceInfo, UnregisterStatus};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The native service type (one definition, shared with the client).
pub use healthchecker_core::SERVICE_TYPE;
/// The type the seed's client resolves.
pub const LEGACY_TYPE: &str = "_http._tcp.local.";
/// The instance name the seed's client resolves.
pub const LEGACY_INSTANCE: &str = "_healthchecker";
/// The dashboard's type, listed by Bonjour/Avahi browsers (SPEC section 16).
pub const DASHBOARD_TYPE: &str = "_http._tcp.local.";
/// The `desc` TXT value of our records.
pub const DESCRIPTION: &str = "HealthChecker health-check daemon";

/// The running advertisement; withdraw it on shutdown.
pub struct Advertiser {
    daemon: ServiceDaemon,
    fullnames: Vec<String>,
}

fn host_name() -> String {
    crate::host::short_name().unwrap_or_else(|| "healthchecker".into())
}

/// The interface selection for the mDNS daemon.
fn selection(interfaces: &[String], bind: SocketAddr) -> IfKind {
    let names: Vec<String> = interfaces.to_vec();
    let bind_ip = bind.ip();
    IfKind::Predicate(IfPredicate::new(move |intf| {
        let by_name = if names.is_empty() {
            // Default: every non-loopback interface; but a daemon bound to
            // one address is advertised on the interface that holds it.
            !intf.is_loopback() || !bind_ip.is_unspecified()
        } else {
            names.iter().any(|n| n == &intf.name)
        };
        let by_addr = match bind_ip {
            IpAddr::V4(v4) if v4.is_unspecified() => intf.ip().is_ipv4(),
            IpAddr::V6(v6) if v6.is_unspecified() => true,
            ip => intf.ip() == ip,
        };
        by_name && by_addr
    }))
}

/// The TXT properties of the native record, in order: `txtvers` first
/// (SPEC section 16, RFC 6763 section 6.7), so that a browser can tell the
/// record's layout before reading the rest; `node` last, for a node of a
/// cluster (SPEC section 19).
pub fn native_properties(node: Option<&str>) -> Vec<(&'static str, String)> {
    let mut props = vec![
        ("txtvers", "1".to_string()),
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        ("desc", DESCRIPTION.to_string()),
        ("api", "/api/v1".to_string()),
        ("legacy", "/healthchecker/".to_string()),
        ("path", "/".to_string()),
    ];
    if let Some(id) = node {
        props.push(("node", id.to_string()));
    }
    props
}

impl Advertiser {
    /// Starts advertising the API at `bound` (the listener's address).
    /// Browses the LAN for devices to monitor on the same interfaces,
    /// into `found` (see [`crate::browse`]).
    pub fn start(
        cfg: &Config,
        bound: SocketAddr,
        found: crate::browse::Found,
    ) -> Result<Advertiser, String> {
        Advertiser::start_node(cfg, bound, found, None)
    }

    /// [`Advertiser::start`] for node `node` of a cluster: its id is the
    /// native record's TXT `node`, so that each node of a cluster is told
    /// apart on the LAN (and matched with `GET /api/v1/cluster`).
    pub fn start_node(
        cfg: &Config,
        bound: SocketAddr,
        found: crate::browse::Found,
        node: Option<&str>,
    ) -> Result<Advertiser, String> {
        let daemon = ServiceDaemon::new_with_interfaces(
            mdns_sd::MDNS_PORT,
            vec![selection(&cfg.mdns_interfaces, bound)],
        )
        .map_err(|e| format!("mDNS: {e}"))?;
        let host = host_name();
        let host_local = format!("{host}.local.");
        let instance = cfg
            .mdns_name
            .clone()
            .unwrap_or_else(|| format!("HealthChecker on {host}"));
        let native = native_properties(node);
        let props: Vec<(&str, &str)> = native.iter().map(|(k, v)| (*k, v.as_str())).collect();
        // The original server's record carried its version and description.
        let legacy_props = [
            ("version", env!("CARGO_PKG_VERSION")),
            ("desc", DESCRIPTION),
        ];
        // The dashboard, for Bonjour/Avahi browsers that list `_http._tcp`.
        let dashboard_props = [("path", "/")];
        let port = bound.port();
        let record = |ty: &str, name: &str, props: &[(&str, &str)]| {
            ServiceInfo::new(ty, name, &host_local, (), port, props)
                .map_err(|e| format!("mDNS record: {e}"))
        };
        let mut infos = vec![
            record(SERVICE_TYPE, &instance, &props)?,
            record(DASHBOARD_TYPE, &instance, &dashboard_props)?,
        ];
        if cfg.legacy_mdns {
            infos.push(record(LEGACY_TYPE, LEGACY_INSTANCE, &legacy_props)?);
        }
        // Watch for renames: the legacy name is first-come on the network.
        if let Ok(events) = daemon.monitor() {
            std::thread::Builder::new()
                .name("hc-mdns-monitor".into())
                .spawn(move || {
                    while let Ok(ev) = events.recv() {
                        if let DaemonEvent::NameChange(c) = ev {
                            if c.original.starts_with(LEGACY_INSTANCE) {
                                tracing::warn!(original = %c.original, new = %c.new_name,
                                    "the legacy mDNS name is taken by another daemon on the network: the seed's Python client will find that one");
                            } else {
                                tracing::warn!(original = %c.original, new = %c.new_name, "mDNS name taken; renamed");
                            }
                        }
                    }
                })
                .map_err(|e| e.to_string())?;
        }
        let mut fullnames = Vec::new();
        for info in infos {
            let info = info.enable_addr_auto();
            fullnames.push(info.get_fullname().to_string());
            daemon
                .register(info)
                .map_err(|e| format!("mDNS register: {e}"))?;
        }
        tracing::info!(names = ?fullnames, interfaces = ?cfg.mdns_interfaces, "advertising over mDNS");
        // A failed browse costs the device list, not the advertisement.
        if let Err(e) = crate::browse::start(&daemon, found, fullnames.clone()) {
            tracing::warn!(error = %e, "mDNS browsing failed; GET /api/v1/discovered stays empty");
        }
        Ok(Advertiser { daemon, fullnames })
    }

    /// Withdraws the records (goodbye packets, TTL 0) and stops the mDNS daemon.
    pub async fn withdraw(self) {
        for name in &self.fullnames {
            if let Ok(rx) = self.daemon.unregister(name) {
                match tokio::time::timeout(Duration::from_secs(2), rx.recv_async()).await {
                    Ok(Ok(UnregisterStatus::OK)) => {}
                    other => tracing::warn!(name, ?other, "mDNS goodbye not confirmed"),
                }
            }
        }
        // Let the goodbye's one resend (120 ms later) go out.
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Ok(rx) = self.daemon.shutdown() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx.recv_async()).await;
        }
        tracing::info!("mDNS records withdrawn");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_native_txt_names_the_node_of_a_cluster_last() {
        fn keys(p: &[(&'static str, String)]) -> Vec<&'static str> {
            p.iter().map(|(k, _)| *k).collect()
        }
        let single = native_properties(None);
        assert_eq!(
            keys(&single),
            ["txtvers", "version", "desc", "api", "legacy", "path"]
        );
        let node = native_properties(Some("node-b"));
        assert_eq!(keys(&node[..6]), keys(&single));
        assert_eq!(node[6], ("node", "node-b".to_string()));
    }
}
