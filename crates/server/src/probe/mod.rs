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

mod dns;
mod http;
pub mod icmp;
mod resolve;
mod tls;
pub(crate) use tls::AcceptAnyCert;

pub use tls::TlsContext;

use healthchecker_core::{CheckResult, ServiceSpec};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

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

/// Targets denied unless `--deny-targets none` (SPEC section 12):
/// `0.0.0.0/8` and `::` (a connect to them reaches this host's own
/// services), and the cloud metadata endpoints (`169.254.169.254`, and AWS's
/// IPv6 `fd00:ec2::254`), which hand out credentials to whoever asks from the
/// machine. Not the rest of `169.254.0.0/16`: ZeroConf devices use IPv4
/// link-local addresses.
pub const DEFAULT_DENY: &[&str] = &[
    "0.0.0.0/8",
    "::/128",
    "169.254.169.254/32",
    "fd00:ec2::254/128",
];

/// The well-known NAT64 prefix (RFC 6052): `64:ff9b::a.b.c.d` reaches the
/// IPv4 address `a.b.c.d` through a NAT64 gateway.
const NAT64: ipnet::Ipv6Net =
    match ipnet::Ipv6Net::new(std::net::Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        Ok(n) => n,
        Err(_) => panic!("NAT64 prefix"),
    };

/// Which addresses probes may connect to (`--allow-targets`,
/// `--deny-targets`). Checked after DNS resolution at every probe, so a
/// name cannot be re-pointed around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetPolicy {
    /// When not empty, only these.
    pub allow: Vec<ipnet::IpNet>,
    /// Never these.
    pub deny: Vec<ipnet::IpNet>,
}

impl Default for TargetPolicy {
    /// Allow everything but [`DEFAULT_DENY`].
    fn default() -> Self {
        TargetPolicy {
            allow: Vec::new(),
            deny: Self::default_deny(),
        }
    }
}

impl TargetPolicy {
    /// [`DEFAULT_DENY`] as networks.
    pub fn default_deny() -> Vec<ipnet::IpNet> {
        DEFAULT_DENY
            .iter()
            .map(|n| n.parse().expect("DEFAULT_DENY holds valid CIDR blocks"))
            .collect()
    }

    /// `None` when `ip` may be probed, else why not.
    pub fn refusal(&self, ip: IpAddr) -> Option<String> {
        // An IPv4 address embedded in IPv6 (IPv4-mapped `::ffff:a.b.c.d`,
        // NAT64 `64:ff9b::a.b.c.d`) is judged as that IPv4 address too.
        let embedded = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().or_else(|| {
                NAT64.contains(&v6).then(|| {
                    let o = v6.octets();
                    std::net::Ipv4Addr::new(o[12], o[13], o[14], o[15])
                })
            }),
            IpAddr::V4(_) => None,
        };
        for candidate in std::iter::once(ip).chain(embedded.map(IpAddr::V4)) {
            if let Some(net) = self.deny.iter().find(|n| n.contains(&candidate)) {
                return Some(format!(
                    "target address {ip} is denied by --deny-targets ({net})"
                ));
            }
        }
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if !self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(&ip)) {
            return Some(format!("target address {ip} is not in --allow-targets"));
        }
        None
    }
}

/// Shared, read-only probe configuration (TLS roots, target policy, the
/// name resolver), built once.
#[derive(Clone)]
pub struct Prober {
    tls: TlsContext,
    policy: std::sync::Arc<TargetPolicy>,
    resolver: std::sync::Arc<resolve::Resolver>,
}

impl Prober {
    /// A prober trusting the system's roots plus `extra_roots` when a
    /// service asks for `tls_verify`, connecting only where `policy` allows,
    /// resolving names as the system does (`/etc/resolv.conf`, `/etc/hosts`)
    /// but asynchronously (see `resolve`).
    pub fn new(tls: TlsContext, policy: TargetPolicy) -> Self {
        Prober {
            tls,
            policy: std::sync::Arc::new(policy),
            resolver: std::sync::Arc::new(resolve::Resolver::from_system()),
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
        // The rarer kinds run boxed: the probe's future is as large as its
        // largest state, and every check moves it into its task.
        match t.protocol {
            healthchecker_core::Protocol::Dns => return Box::pin(dns::check(self, spec)).await,
            healthchecker_core::Protocol::Icmp => return Box::pin(icmp::check(self, spec)).await,
            // Pushed, never polled (the scheduler judges its pings).
            healthchecker_core::Protocol::Heartbeat => {
                return ProbeOutcome::fail("a heartbeat service is not probed")
            }
            _ => {}
        }
        let timeout = Duration::from_secs(spec.timeout as u64);
        // A plain HTTP check's request is ready before the connection, so
        // that `connect` can send it as soon as the connection stands.
        let request = match t.protocol {
            healthchecker_core::Protocol::Http => match http::request(spec) {
                Ok(r) => Some(r),
                Err(reason) => return ProbeOutcome::fail(reason),
            },
            _ => None,
        };
        let early = request.as_deref();
        let (stream, sent) =
            match connect(&t.host, t.port, self, timeout, t.protocol.is_tls(), early).await {
                Ok(s) => s,
                Err(reason) => return ProbeOutcome::fail(reason),
            };
        if !t.protocol.is_tls() {
            return match request {
                Some(r) => http::finish(stream, spec, &r[sent..]).await,
                None => ProbeOutcome::pass(),
            };
        }
        Box::pin(self.over_tls(stream, spec, now_ms)).await
    }

    /// The TLS handshake and, for HTTPS, the request over it.
    async fn over_tls(&self, stream: TcpStream, spec: &ServiceSpec, now_ms: i64) -> ProbeOutcome {
        let t = &spec.target;
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
            apply_cert_expiry(&mut out, exp, now_ms, spec.cert_warn_days, spec.tls_verify);
        }
        out
    }
}

/// Turns a soon-expiring certificate into a warn. An expired one is a fail
/// only with `tls_verify` (where the handshake has already refused it);
/// without it, a warn: LAN devices (printers, NAS boxes, routers) live for
/// years behind expired self-signed certificates (SPEC section 2).
/// `cert_warn_days = 0` turns the check off.
fn apply_cert_expiry(
    out: &mut ProbeOutcome,
    expires_ms: i64,
    now_ms: i64,
    warn_days: u32,
    verify: bool,
) {
    if warn_days == 0 || out.result == CheckResult::Fail {
        return;
    }
    let day = 86_400_000;
    let date = crate::clock::rfc3339(expires_ms);
    let date = date.get(..10).unwrap_or(&date);
    let why = if expires_ms <= now_ms {
        if verify {
            out.result = CheckResult::Fail;
            out.reason = Some(format!("certificate expired on {date}"));
            return;
        }
        format!("certificate expired on {date}")
    } else if expires_ms - now_ms < warn_days as i64 * day {
        let days = (expires_ms - now_ms) / day;
        let unit = if days == 1 { "day" } else { "days" };
        format!("certificate expires in {days} {unit} ({date})")
    } else {
        return;
    };
    out.result = CheckResult::Warn;
    out.reason = Some(match out.reason.take() {
        Some(r) => format!("{r}; {why}"),
        None => why,
    });
}

/// Within the check's timeout, how much sooner the lookup gives up, so that
/// a nameserver that never answers is named in the reason instead of a
/// bare `timeout after Ns`.
const DNS_REASON_MARGIN: Duration = Duration::from_millis(100);

/// Resolves `host` (IP literals skip DNS) and connects to the first
/// address that accepts, with an abortive close on drop. `nodelay` for TLS,
/// whose handshake writes again before the previous write is acknowledged;
/// a plain HTTP check writes its request once, which Nagle never delays.
/// `early`: bytes to send as soon as the connection stands; returns the
/// stream and how many of them were sent.
async fn connect(
    host: &str,
    port: u16,
    prober: &Prober,
    timeout: Duration,
    nodelay: bool,
    early: Option<&[u8]>,
) -> Result<(TcpStream, usize), String> {
    let policy = &*prober.policy;
    // An IP literal (most checks) needs no list of addresses.
    if let Ok(ip) = host.parse::<IpAddr>() {
        if let Some(why) = policy.refusal(ip) {
            return Err(why);
        }
        return connect_addr(SocketAddr::new(ip, port), nodelay, early)
            .await
            .map_err(|e| connect_reason(&e));
    }
    // The lookup is a future: dropping it at the check's timeout frees its
    // socket; nothing of it outlives the check.
    let budget = timeout.saturating_sub(DNS_REASON_MARGIN);
    // Boxed: the lookup's future is about 1.5 KB, and unboxed it would size
    // every check's future (moved into its task), IP literals included.
    let mut addrs: Vec<SocketAddr> =
        match tokio::time::timeout(budget, Box::pin(prober.resolver.lookup(host))).await {
            Ok(Ok(ips)) => ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect(),
            Ok(Err(why)) => return Err(format!("DNS lookup of {host} failed: {why}")),
            Err(_) => {
                return Err(format!(
                    "DNS lookup of {host} failed: no answer within {}s",
                    timeout.as_secs()
                ))
            }
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
        match connect_addr(addr, nodelay, early).await {
            Ok(s) => return Ok(s),
            Err(e) => last = connect_reason(&e),
        }
    }
    Err(last)
}

/// Connects to `addr` and, when `early` is given, sends it at once if the
/// connection already stands; returns the stream and the bytes sent.
///
/// Why not `TcpSocket::connect`: it always waits for the runtime to report
/// the socket writable and then reads `SO_ERROR`, one more wake-up of the
/// check's task and one more system call per check. A target on this
/// host (or one that answers within the `connect` call) is connected when
/// `connect` returns, so the request goes out with no wait; a farther one
/// answers `EAGAIN` to the send and is waited for as before. An error
/// other than "not connected yet" (refused, reset) is the connect's error.
async fn connect_addr(
    addr: SocketAddr,
    nodelay: bool,
    early: Option<&[u8]>,
) -> std::io::Result<(TcpStream, usize)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    sock.set_linger(Some(Duration::ZERO))?;
    if nodelay {
        sock.set_tcp_nodelay(true)?;
    }
    let mut connected = match sock.connect(&addr.into()) {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) => false,
        Err(e) => return Err(e),
    };
    let mut sent = 0;
    if let Some(bytes) = early {
        match sock.send_with_flags(bytes, nix::libc::MSG_NOSIGNAL) {
            Ok(n) => {
                sent = n;
                connected = true;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::NotConnected
                ) => {}
            Err(e) => return Err(e),
        }
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(sock))?;
    if !connected {
        stream.writable().await?;
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
    }
    Ok((stream, sent))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_deny_list_covers_metadata_and_this_host_also_when_embedded() {
        let p = TargetPolicy::default();
        for denied in [
            "0.0.0.0",
            "0.1.2.3",
            "::",
            "169.254.169.254",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "::ffff:0.0.0.0",
            "64:ff9b::a9fe:a9fe", // NAT64 of 169.254.169.254
            "64:ff9b::0.0.0.1",
        ] {
            let ip: IpAddr = denied.parse().unwrap();
            assert!(p.refusal(ip).is_some(), "{denied} should be denied");
        }
        // ZeroConf link-local devices, loopback and the LAN stay reachable.
        for allowed in [
            "169.254.10.20",
            "127.0.0.1",
            "::1",
            "192.168.1.20",
            "fe80::1",
            "64:ff9b::c0a8:114",
        ] {
            let ip: IpAddr = allowed.parse().unwrap();
            assert_eq!(p.refusal(ip), None, "{allowed} should be allowed");
        }
        let open = TargetPolicy {
            allow: vec![],
            deny: vec![],
        };
        assert_eq!(open.refusal("169.254.169.254".parse().unwrap()), None);
    }

    /// Every check's future is moved into its task: it stays small when
    /// the rare, large states (the DNS lookup, TLS, DNS and ICMP checks)
    /// are boxed (a 1.5 KB lookup inline made it 2 KB).
    #[test]
    fn a_check_future_stays_small() {
        let p = Prober::new(TlsContext::new(vec![]), TargetPolicy::default());
        let body = serde_json::json!({"name": "svc", "url": "http://127.0.0.1:9/health"});
        let spec = ServiceSpec::try_from(
            healthchecker_core::RegisterRequest::from_json(body.to_string().as_bytes()).unwrap(),
        )
        .unwrap();
        let size = std::mem::size_of_val(&p.probe(&spec, 0));
        assert!(size <= 1024, "a check's future is {size} bytes");
    }

    #[test]
    fn certificate_expiry_turns_pass_into_warn_or_fail() {
        let day = 86_400_000;
        let now = 1_800_000_000_000;
        for verify in [false, true] {
            let mut o = ProbeOutcome::pass();
            apply_cert_expiry(&mut o, now + day, now, 14, verify);
            assert_eq!(o.result, CheckResult::Warn);
            assert!(o
                .reason
                .unwrap()
                .starts_with("certificate expires in 1 day ("));
            let mut o = ProbeOutcome::pass();
            apply_cert_expiry(&mut o, now + 30 * day, now, 14, verify);
            assert_eq!(o.result, CheckResult::Pass);
            let mut o = ProbeOutcome::pass();
            apply_cert_expiry(&mut o, now - day, now, 0, verify);
            assert_eq!(o.result, CheckResult::Pass);
        }
        // Expired: a fail only when the service asked for verification.
        let mut o = ProbeOutcome::pass();
        apply_cert_expiry(&mut o, now - day, now, 14, true);
        assert_eq!(o.result, CheckResult::Fail);
        let mut o = ProbeOutcome::pass();
        apply_cert_expiry(&mut o, now - day, now, 14, false);
        assert_eq!(o.result, CheckResult::Warn);
        assert!(o.reason.unwrap().starts_with("certificate expired on "));
    }
}
