//! Name lookups for probes, asynchronous (SPEC section 12: "name lookups
//! never block a shared thread pool").
//!
//! `getaddrinfo` blocks its thread until the nameserver answers: run on
//! tokio's blocking pool, a nameserver that never answers (a dead home
//! router) fills that pool with hung lookups, and every other user of the
//! pool waits behind them. Here a lookup is a future on the daemon's own
//! runtime (hickory-resolver, configured like the system: `/etc/resolv.conf`
//! and `/etc/hosts`); it holds one UDP socket while it waits, and dropping it
//! (the check's timeout) frees everything. Nothing here spawns blocking
//! work; `/etc/hosts` is a small local file re-read at most every
//! [`HOSTS_REFRESH`].
//!
//! This module resolves; it does not judge addresses (the target policy
//! runs on its answer) or connect.

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::{Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RecordType};
use hickory_resolver::{Hosts, ResolverBuilder, TokioResolver};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How long a lookup waits for the second address family once the first
/// answered with addresses. Some home routers never answer AAAA queries;
/// without this a name with a perfectly good A record would wait out the
/// resolver's timeout (the "resolution delay" of Happy Eyeballs, RFC 8305,
/// is 50 ms; a LAN nameserver on Wi-Fi can take a few times that).
pub const OTHER_FAMILY_GRACE: Duration = Duration::from_millis(250);

/// How old the copy of `/etc/hosts` may get before a lookup re-reads it
/// (`getaddrinfo` re-reads it at every call; once per 30 s is the same for
/// a person editing it, and bounds the file reads).
pub const HOSTS_REFRESH: Duration = Duration::from_secs(30);

/// The probes' resolver: one per daemon, shared by every probe.
pub(crate) struct Resolver {
    dns: TokioResolver,
    hosts: RwLock<(Instant, Arc<Hosts>)>,
}

impl Resolver {
    /// A resolver configured from `/etc/resolv.conf`; when that cannot be
    /// read, the C library's own default (a nameserver on this machine),
    /// with a warning.
    pub(crate) fn from_system() -> Resolver {
        let builder = match TokioResolver::builder_tokio() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e,
                    "cannot read /etc/resolv.conf; probes ask a nameserver on this machine (127.0.0.1, ::1)");
                let local = [
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(Ipv6Addr::LOCALHOST),
                ];
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(
                        local
                            .into_iter()
                            .map(NameServerConfig::udp_and_tcp)
                            .collect(),
                    ),
                    TokioRuntimeProvider::default(),
                )
                .with_options(ResolverOpts::default())
            }
        };
        Self::build(builder, read_hosts())
    }

    fn build(mut builder: ResolverBuilder<TokioRuntimeProvider>, hosts: Hosts) -> Resolver {
        // `/etc/hosts` is consulted here, before DNS and for both families
        // at once, as the C library's `files` source is.
        builder.options_mut().use_hosts_file = ResolveHosts::Never;
        let dns = builder
            .build()
            .expect("a resolver without TLS transports always builds");
        Resolver {
            dns,
            hosts: RwLock::new((Instant::now(), Arc::new(hosts))),
        }
    }

    /// The addresses of `host`, IPv4 first; an empty list when the name
    /// exists without addresses. `Err` is a reason for people
    /// (`name not found`, `no answer from the nameserver`).
    pub(crate) async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        let name = Name::from_utf8(host).map_err(|e| format!("invalid name: {e}"))?;
        let from_file = self.in_hosts_file(&name);
        if !from_file.is_empty() {
            return Ok(from_file);
        }
        let a = self.dns.lookup(name.clone(), RecordType::A);
        let aaaa = self.dns.lookup(name, RecordType::AAAA);
        tokio::pin!(a, aaaa);
        let (first, a_first) = tokio::select! {
            r = &mut a => (addresses(r), true),
            r = &mut aaaa => (addresses(r), false),
        };
        let other = async {
            if a_first {
                addresses((&mut aaaa).await)
            } else {
                addresses((&mut a).await)
            }
        };
        let second = match &first {
            Ok(ips) if !ips.is_empty() => tokio::time::timeout(OTHER_FAMILY_GRACE, other)
                .await
                .unwrap_or(Ok(Vec::new())),
            _ => other.await,
        };
        let (v4, v6) = if a_first {
            (first, second)
        } else {
            (second, first)
        };
        match (v4, v6) {
            (Ok(mut v4), Ok(v6)) => {
                v4.extend(v6);
                Ok(v4)
            }
            (Ok(ips), Err(e)) | (Err(e), Ok(ips)) if !ips.is_empty() => {
                tracing::debug!(host, error = %e, "one address family failed");
                Ok(ips)
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    }

    /// `name`'s addresses in `/etc/hosts` (IPv4 first), re-reading the
    /// file when the copy is older than [`HOSTS_REFRESH`].
    fn in_hosts_file(&self, name: &Name) -> Vec<IpAddr> {
        let hosts = {
            let guard = self.hosts.read().unwrap_or_else(|e| e.into_inner());
            (guard.0.elapsed() < HOSTS_REFRESH).then(|| guard.1.clone())
        };
        let hosts = hosts.unwrap_or_else(|| {
            // One probe re-reads; the others that found it stale meanwhile
            // take its copy.
            let mut guard = self.hosts.write().unwrap_or_else(|e| e.into_inner());
            if guard.0.elapsed() >= HOSTS_REFRESH {
                *guard = (Instant::now(), Arc::new(read_hosts()));
            }
            guard.1.clone()
        });
        [RecordType::A, RecordType::AAAA]
            .into_iter()
            .filter_map(|t| hosts.lookup_static_host(&Query::query(name.clone(), t)))
            .flat_map(|l| {
                l.answers()
                    .iter()
                    .filter_map(|r| r.data.ip_addr())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

fn read_hosts() -> Hosts {
    Hosts::from_system().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read /etc/hosts; probes resolve names by DNS only");
        Hosts::default()
    })
}

/// One family's answer: its addresses, none for "no such record" (the
/// other family may have some), or why it failed.
fn addresses(r: Result<hickory_resolver::lookup::Lookup, NetError>) -> Result<Vec<IpAddr>, String> {
    match r {
        Ok(l) => Ok(l
            .answers()
            .iter()
            .filter_map(|r| r.data.ip_addr())
            .collect()),
        Err(NetError::Dns(DnsError::NoRecordsFound(nr)))
            if nr.response_code == ResponseCode::NXDomain =>
        {
            Err("name not found (NXDOMAIN)".into())
        }
        Err(NetError::Dns(DnsError::NoRecordsFound(_))) => Ok(Vec::new()),
        Err(e) => Err(reason(&e)),
    }
}

/// A resolver failure in words.
fn reason(e: &NetError) -> String {
    match e {
        NetError::Timeout => "no answer from the nameserver".into(),
        NetError::NoConnections => "no nameserver reachable".into(),
        NetError::Dns(DnsError::ResponseCode(code)) => format!("the nameserver answered {code}"),
        NetError::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::config::ConnectionConfig;
    use hickory_resolver::proto::rr::rdata::A;
    use hickory_resolver::proto::rr::{RData, Record};
    use std::net::SocketAddr;

    /// A resolver asking only the nameserver at `addr`, with an empty hosts file.
    fn asking(addr: SocketAddr, timeout: Duration) -> Resolver {
        let mut udp = ConnectionConfig::udp();
        udp.port = addr.port();
        let ns = NameServerConfig::new(addr.ip(), true, vec![udp]);
        let mut b = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(vec![ns]),
            TokioRuntimeProvider::default(),
        );
        b.options_mut().timeout = timeout;
        b.options_mut().attempts = 1;
        Resolver::build(b, Hosts::default())
    }

    /// A nameserver on 127.0.0.1 like a poor home router: `ok.test` has an
    /// A record (127.0.0.9) but AAAA queries get no answer at all,
    /// `nx.test` does not exist, and nothing else is ever answered.
    async fn partial_nameserver() -> SocketAddr {
        healthchecker_testkit::dns::nameserver(|name, query, r| {
            if name == "ok.test." && query.query_type() == RecordType::A {
                let a = RData::A(A(Ipv4Addr::new(127, 0, 0, 9)));
                r.add_answer(Record::from_rdata(query.name().clone(), 60, a));
            } else if name == "nx.test." {
                r.metadata.response_code = ResponseCode::NXDomain;
            } else {
                return false;
            }
            true
        })
        .await
    }

    #[tokio::test]
    async fn localhost_and_invalid_names_need_no_nameserver() {
        let r = Resolver::from_system();
        let ips = r.lookup("localhost").await.unwrap();
        assert!(ips.iter().any(|ip| ip.is_loopback()), "{ips:?}");
        // RFC 6761: `.invalid` never reaches a nameserver.
        let e = r.lookup("no-such-host.invalid").await.unwrap_err();
        assert_eq!(e, "name not found (NXDOMAIN)");
    }

    #[tokio::test]
    async fn answers_come_from_the_nameserver_without_waiting_for_a_silent_family() {
        let r = asking(partial_nameserver().await, Duration::from_secs(5));
        let started = Instant::now();
        let ips = r.lookup("ok.test").await.unwrap();
        assert_eq!(ips, vec![IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9))]);
        // The unanswered AAAA costs the grace period, not the 5 s timeout.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            r.lookup("nx.test").await.unwrap_err(),
            "name not found (NXDOMAIN)"
        );
        let started = Instant::now();
        let e = asking(partial_nameserver().await, Duration::from_millis(500))
            .lookup("silent.test")
            .await
            .unwrap_err();
        assert_eq!(e, "no answer from the nameserver");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
}
