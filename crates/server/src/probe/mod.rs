//! Probes: one check of one target over real sockets (SPEC section 2).
//!
//! A probe never returns an error: every way a target can fail (refused,
//! DNS, timeout, bad TLS, bad status, endless body) is a [`ProbeOutcome`]
//! with a short reason. The whole probe, DNS included, runs under the
//! service's timeout, so a hung target costs one timeout and nothing else.
//!
//! Every check uses a fresh connection (no pooling, no proxy from the
//! environment, no redirects) and closes it with an abortive close (RST,
//! `SO_LINGER` 0) as HAProxy does: a health checker that opens thousands of
//! connections a second to the same few hosts would otherwise fill the
//! machine with `TIME_WAIT` sockets and run out of ephemeral ports.

mod http;
mod tls;

pub use tls::TlsContext;

use healthchecker_core::{CheckResult, ServiceSpec};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};

/// The most body bytes read from a target (SPEC section 2: 64 KiB).
pub const MAX_BODY: usize = 64 * 1024;

/// What one check found.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeOutcome {
    /// Pass, warn or fail.
    pub result: CheckResult,
    /// Why it warned or failed (`connection refused`, `HTTP 503`, ...).
    pub reason: Option<String>,
    /// The HTTP status, when a response arrived.
    pub http_status: Option<u16>,
    /// The body's health+json details, as JSON text.
    pub details: Option<String>,
    /// The certificate's expiry (Unix ms), for TLS targets.
    pub cert_expires_at: Option<i64>,
    /// Wall time of the check.
    pub duration: Duration,
}

impl ProbeOutcome {
    pub(crate) fn fail(reason: impl Into<String>) -> Self {
        ProbeOutcome {
            result: CheckResult::Fail,
            reason: Some(reason.into()),
            http_status: None,
            details: None,
            cert_expires_at: None,
            duration: Duration::ZERO,
        }
    }

    pub(crate) fn pass() -> Self {
        ProbeOutcome {
            result: CheckResult::Pass,
            reason: None,
            ..Self::fail("")
        }
    }
}

/// Which addresses probes may connect to (`--allow-targets`,
/// `--deny-targets`). Checked after DNS resolution at every probe, so a
/// name cannot be re-pointed around it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    /// When not empty, only these.
    pub allow: Vec<ipnet::IpNet>,
    /// Never these.
    pub deny: Vec<ipnet::IpNet>,
}

impl TargetPolicy {
    /// `None` when `ip` may be probed, else why not.
    pub fn refusal(&self, ip: IpAddr) -> Option<String> {
        // IPv4-mapped IPv6 addresses are judged as the IPv4 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if let Some(net) = self.deny.iter().find(|n| n.contains(&ip)) {
            return Some(format!(
                "target address {ip} is denied by --deny-targets ({net})"
            ));
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(&ip)) {
            return Some(format!("target address {ip} is not in --allow-targets"));
        }
        None
    }
}

/// Shared, read-only probe configuration (TLS roots, target policy), built once.
#[derive(Clone)]
pub struct Prober {
    tls: TlsContext,
    policy: std::sync::Arc<TargetPolicy>,
}

impl Prober {
    /// A prober trusting the system's roots plus `extra_roots` when a
    /// service asks for `tls_verify`, connecting only where `policy` allows.
    pub fn new(tls: TlsContext, policy: TargetPolicy) -> Self {
        Prober {
            tls,
            policy: std::sync::Arc::new(policy),
        }
    }

    /// Checks `spec`'s target once, within its timeout.
    pub async fn probe(&self, spec: &ServiceSpec, now_ms: i64) -> ProbeOutcome {
        let started = Instant::now();
        let timeout = Duration::from_secs(spec.timeout as u64);
        let mut out = match tokio::time::timeout(timeout, self.probe_inner(spec, now_ms)).await {
            Ok(o) => o,
            Err(_) => ProbeOutcome::fail(format!("timeout after {}s", spec.timeout)),
        };
        out.duration = started.elapsed();
        out
    }

    async fn probe_inner(&self, spec: &ServiceSpec, now_ms: i64) -> ProbeOutcome {
        let t = &spec.target;
        let stream = match connect(&t.host, t.port, &self.policy, t.protocol.is_tls()).await {
            Ok(s) => s,
            Err(reason) => return ProbeOutcome::fail(reason),
        };
        if !t.protocol.is_tls() {
            return match t.protocol {
                healthchecker_core::Protocol::Http => http::get(stream, spec).await,
                _ => ProbeOutcome::pass(),
            };
        }
        let (tls_stream, expires) = match self.tls.handshake(stream, &t.host, spec).await {
            Ok(s) => s,
            Err(reason) => return ProbeOutcome::fail(reason),
        };
        let mut out = if t.protocol.is_http() {
            http::get(tls_stream, spec).await
        } else {
            ProbeOutcome::pass()
        };
        out.cert_expires_at = expires;
        if let Some(exp) = expires {
            apply_cert_expiry(&mut out, exp, now_ms, spec.cert_warn_days);
        }
        out
    }
}

/// Turns a soon-expiring certificate into a warn, an expired one into a
/// fail; `cert_warn_days = 0` turns the check off.
fn apply_cert_expiry(out: &mut ProbeOutcome, expires_ms: i64, now_ms: i64, warn_days: u32) {
    if warn_days == 0 || out.result == CheckResult::Fail {
        return;
    }
    let day = 86_400_000;
    let date = crate::clock::rfc3339(expires_ms);
    let date = date.get(..10).unwrap_or(&date);
    if expires_ms <= now_ms {
        out.result = CheckResult::Fail;
        out.reason = Some(format!("certificate expired on {date}"));
    } else if expires_ms - now_ms < warn_days as i64 * day {
        let days = (expires_ms - now_ms) / day;
        out.result = CheckResult::Warn;
        let unit = if days == 1 { "day" } else { "days" };
        let why = format!("certificate expires in {days} {unit} ({date})");
        out.reason = Some(match out.reason.take() {
            Some(r) => format!("{r}; {why}"),
            None => why,
        });
    }
}

/// Resolves `host` (IP literals skip DNS) and connects to the first
/// address that accepts, with an abortive close on drop. `nodelay` for TLS,
/// whose handshake writes again before the previous write is acknowledged;
/// a plain HTTP check writes its request once, which Nagle never delays.
async fn connect(
    host: &str,
    port: u16,
    policy: &TargetPolicy,
    nodelay: bool,
) -> Result<TcpStream, String> {
    let mut addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => match tokio::net::lookup_host((host, port)).await {
            Ok(a) => a.collect(),
            Err(e) => return Err(format!("DNS lookup of {host} failed: {}", dns_reason(&e))),
        },
    };
    if addrs.is_empty() {
        return Err(format!("DNS lookup of {host} returned no address"));
    }
    if !policy.allow.is_empty() || !policy.deny.is_empty() {
        let first_refusal = policy.refusal(addrs[0].ip());
        addrs.retain(|a| policy.refusal(a.ip()).is_none());
        if addrs.is_empty() {
            return Err(first_refusal.unwrap_or_else(|| "target address refused".into()));
        }
    }
    let mut last = String::new();
    for addr in addrs {
        match connect_addr(addr, nodelay).await {
            Ok(s) => return Ok(s),
            Err(e) => last = connect_reason(&e),
        }
    }
    Err(last)
}

async fn connect_addr(addr: SocketAddr, nodelay: bool) -> std::io::Result<TcpStream> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_zero_linger()?;
    if nodelay {
        sock.set_nodelay(true)?;
    }
    sock.connect(addr).await
}

fn connect_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset".into(),
        HostUnreachable => "host unreachable".into(),
        NetworkUnreachable => "network unreachable".into(),
        AddrNotAvailable => "no local address available (ephemeral ports exhausted?)".into(),
        _ => format!("connect failed: {e}"),
    }
}

fn dns_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    // getaddrinfo's message is already human ("Name or service not known").
    s.strip_prefix("failed to lookup address information: ")
        .unwrap_or(&s)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_expiry_turns_pass_into_warn_or_fail() {
        let day = 86_400_000;
        let now = 1_800_000_000_000;
        let mut o = ProbeOutcome::pass();
        apply_cert_expiry(&mut o, now + day, now, 14);
        assert_eq!(o.result, CheckResult::Warn);
        assert!(o
            .reason
            .unwrap()
            .starts_with("certificate expires in 1 day ("));
        let mut o = ProbeOutcome::pass();
        apply_cert_expiry(&mut o, now + 30 * day, now, 14);
        assert_eq!(o.result, CheckResult::Pass);
        let mut o = ProbeOutcome::pass();
        apply_cert_expiry(&mut o, now - day, now, 14);
        assert_eq!(o.result, CheckResult::Fail);
        let mut o = ProbeOutcome::pass();
        apply_cert_expiry(&mut o, now - day, now, 0);
        assert_eq!(o.result, CheckResult::Pass);
    }
}
