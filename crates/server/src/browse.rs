//! Finding things to monitor (SPEC section 16): the daemon browses the
//! DNS-SD types of [`BROWSE_TYPES`] with the mDNS daemon of its own
//! advertisement, so on exactly the interfaces it is allowed
//! (`--mdns-interface`), and keeps what it resolves in memory ([`Found`]).
//!
//! This module only collects; what to suggest is `healthchecker_core::lan`'s,
//! what is already monitored the API's (`GET /api/v1/discovered`), and
//! nothing is ever registered from here.

use healthchecker_core::lan::{suggest, Suggestion, BROWSE_TYPES};
use mdns_sd::{ServiceDaemon, ServiceEvent};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Most devices kept: a LAN full of announcements cannot grow the table
/// without bound (the oldest are forgotten).
pub const MAX_FOUND: usize = 1024;

/// One resolved DNS-SD instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Stable id: 16 hex digits of the SHA-256 of the full name.
    pub id: String,
    /// `_ipp._tcp.local.`
    pub service_type: String,
    /// The instance name (`Office printer`).
    pub instance: String,
    /// The full DNS-SD name.
    pub fullname: String,
    /// The announced host name (`nas.local.`).
    pub host: String,
    /// Its addresses, IPv4 first.
    pub addresses: Vec<IpAddr>,
    /// The announced port.
    pub port: u16,
    /// TXT `key=value` strings.
    pub txt: Vec<(String, String)>,
    /// What to monitor, when the type is known and an address usable.
    pub suggested: Option<Suggestion>,
    /// When it was last (re)announced, Unix ms.
    pub last_seen: i64,
}

/// What the browser has found, shared with the API.
#[derive(Clone, Default)]
pub struct Found(Arc<Mutex<BTreeMap<String, Device>>>);

impl Found {
    /// Every device, by id.
    pub fn list(&self) -> Vec<Device> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// One device.
    pub fn get(&self, id: &str) -> Option<Device> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    fn upsert(&self, d: Device) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_FOUND && !m.contains_key(&d.id) {
            if let Some(oldest) = m.values().min_by_key(|d| d.last_seen).map(|d| d.id.clone()) {
                m.remove(&oldest);
            }
        }
        m.insert(d.id.clone(), d);
    }

    fn remove_fullname(&self, fullname: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&device_id(fullname));
    }
}

/// The id of a full DNS-SD name.
pub fn device_id(fullname: &str) -> String {
    hex::encode(&Sha256::digest(fullname.to_ascii_lowercase().as_bytes())[..8])
}

/// Starts browsing every type of [`BROWSE_TYPES`] on `daemon`; each type's
/// events are read by a task that ends when the daemon shuts down. `own`
/// are the full names this daemon advertises (never listed).
pub fn start(daemon: &ServiceDaemon, found: Found, own: Vec<String>) -> Result<(), String> {
    for ty in BROWSE_TYPES {
        let ty = format!("{ty}.local.");
        let rx = daemon
            .browse(&ty)
            .map_err(|e| format!("mDNS browse {ty}: {e}"))?;
        let found = found.clone();
        let own = own.clone();
        tokio::spawn(async move {
            while let Ok(ev) = rx.recv_async().await {
                match ev {
                    ServiceEvent::ServiceResolved(svc) => {
                        if own.iter().any(|o| o.eq_ignore_ascii_case(&svc.fullname)) {
                            continue;
                        }
                        found.upsert(device(&svc));
                    }
                    ServiceEvent::ServiceRemoved(_, fullname) => found.remove_fullname(&fullname),
                    ServiceEvent::SearchStopped(_) => break,
                    _ => {}
                }
            }
        });
    }
    tracing::info!(types = ?BROWSE_TYPES, "browsing the LAN for devices to monitor");
    Ok(())
}

fn device(svc: &mdns_sd::ResolvedService) -> Device {
    let mut addresses: Vec<IpAddr> = svc.addresses.iter().map(|a| a.to_ip_addr()).collect();
    // IPv4 first; a link-local IPv6 address needs a scope a URL cannot carry.
    addresses.retain(|a| !matches!(a, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80));
    addresses.sort_by_key(|a| (a.is_ipv6(), a.is_loopback(), *a));
    let instance = svc
        .fullname
        .strip_suffix(&format!(".{}", svc.ty_domain))
        .unwrap_or(&svc.fullname)
        .to_string();
    let txt: Vec<(String, String)> = svc
        .txt_properties
        .iter()
        .map(|p| (p.key().to_string(), p.val_str().to_string()))
        .collect();
    let path = txt
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("path"))
        .map(|(_, v)| v.as_str());
    let suggested = addresses
        .first()
        .and_then(|ip| suggest(&svc.ty_domain, &instance, *ip, svc.port, path));
    Device {
        id: device_id(&svc.fullname),
        service_type: svc.ty_domain.clone(),
        instance,
        fullname: svc.fullname.clone(),
        host: svc.host.clone(),
        addresses,
        port: svc.port,
        txt,
        suggested,
        last_seen: crate::clock::now_ms(),
    }
}
