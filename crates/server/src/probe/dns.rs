//! DNS checks (SPEC section 15): `dns://resolver[:port]/name?type=…[&expect=…]`
//! asks that resolver, and only it, for one record type.
//!
//! Pass when the resolver answers with at least one record of the type
//! (and one equals `expect`, when given) within the check's timeout; an
//! answer without such records, NXDOMAIN, REFUSED, SERVFAIL or silence
//! fails with the reason in words. The resolver's own name, if it is one,
//! is resolved by the probes' resolver ([`super::resolve`]) and its address
//! judged by the target policy like any other target's. Each check asks
//! afresh (no cache): the point is to see the resolver answer now.

use super::{ProbeOutcome, Prober};
use healthchecker_core::spec::{DnsQuery, DnsType};
use healthchecker_core::ServiceSpec;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Runs one DNS check of `spec` (a `Protocol::Dns` target).
pub(super) async fn check(prober: &Prober, spec: &ServiceSpec) -> ProbeOutcome {
    let t = &spec.target;
    let Some(q) = t.dns_query() else {
        return ProbeOutcome::fail(format!("invalid DNS target {}", t.url()));
    };
    let timeout = Duration::from_secs(spec.timeout as u64);
    let ip = match t.host.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => match prober.resolver.lookup(&t.host).await {
            Ok(ips) if !ips.is_empty() => ips[0],
            Ok(_) => return ProbeOutcome::fail(format!("resolver {} has no address", t.host)),
            Err(why) => {
                return ProbeOutcome::fail(format!(
                    "DNS lookup of resolver {} failed: {why}",
                    t.host
                ))
            }
        },
    };
    if let Some(why) = prober.policy.refusal(ip) {
        return ProbeOutcome::fail(why);
    }
    let server = SocketAddr::new(ip, t.port);
    // Leave a little of the check's timeout to name the silence.
    let budget = timeout.saturating_sub(super::DNS_REASON_MARGIN);
    let answers = match tokio::time::timeout(budget, ask(server, &q, budget)).await {
        Ok(Ok(a)) => a,
        Ok(Err(why)) => return ProbeOutcome::fail(why),
        Err(_) => {
            return ProbeOutcome::fail(format!(
                "no answer from the nameserver {server} within {}s",
                spec.timeout
            ))
        }
    };
    let mut out = if answers.is_empty() {
        ProbeOutcome::fail(format!(
            "no {} record for {}",
            q.record_type.as_str(),
            q.name
        ))
    } else if !q.satisfied_by(&answers) {
        ProbeOutcome::fail(format!(
            "{} {} answered {} (expected {})",
            q.name,
            q.record_type.as_str(),
            answers.join(", "),
            q.expect.as_deref().unwrap_or("")
        ))
    } else {
        ProbeOutcome::pass()
    };
    out.details = Some(serde_json::json!({ "answers": answers }).to_string());
    out
}

/// Asks `server` once (UDP, TCP if truncated) for `q`'s records, as text.
async fn ask(server: SocketAddr, q: &DnsQuery, timeout: Duration) -> Result<Vec<String>, String> {
    let mut udp = ConnectionConfig::udp();
    udp.port = server.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = server.port();
    let ns = NameServerConfig::new(server.ip(), true, vec![udp, tcp]);
    let mut builder = TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![ns]),
        TokioRuntimeProvider::default(),
    );
    let opts = builder.options_mut();
    opts.timeout = timeout;
    opts.attempts = 1;
    opts.cache_size = 0;
    opts.ndots = 0;
    opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
    let resolver = builder
        .build()
        .map_err(|e| format!("cannot ask {server}: {e}"))?;
    let rtype = match q.record_type {
        DnsType::A => RecordType::A,
        DnsType::Aaaa => RecordType::AAAA,
        DnsType::Cname => RecordType::CNAME,
        DnsType::Mx => RecordType::MX,
        DnsType::Txt => RecordType::TXT,
    };
    let mut name = Name::from_ascii(&q.name).map_err(|e| format!("invalid name: {e}"))?;
    name.set_fqdn(true);
    match resolver.lookup(name, rtype).await {
        Ok(l) => Ok(l
            .answers()
            .iter()
            .filter(|r| r.record_type() == rtype)
            .filter_map(|r| text(&r.data))
            .collect()),
        Err(NetError::Dns(DnsError::NoRecordsFound(nr)))
            if nr.response_code == ResponseCode::NXDomain =>
        {
            Err(format!("{} not found (NXDOMAIN)", q.name))
        }
        Err(NetError::Dns(DnsError::NoRecordsFound(_))) => Ok(Vec::new()),
        Err(NetError::Timeout) => Err(format!("no answer from the nameserver {server}")),
        Err(NetError::Dns(DnsError::ResponseCode(code))) => {
            // `REFUSED`, `SERVFAIL`, as dig shows them.
            Err(format!(
                "the nameserver answered {}",
                format!("{code:?}").to_ascii_uppercase()
            ))
        }
        Err(e) => Err(format!("DNS query to {server} failed: {e}")),
    }
}

/// One record's data as the check compares and shows it.
fn text(d: &RData) -> Option<String> {
    let name = |n: &Name| n.to_utf8().trim_end_matches('.').to_string();
    Some(match d {
        RData::A(a) => a.0.to_string(),
        RData::AAAA(a) => a.0.to_string(),
        RData::CNAME(c) => name(&c.0),
        RData::MX(mx) => name(&mx.exchange),
        RData::TXT(t) => t
            .txt_data
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect::<String>(),
        _ => return None,
    })
}
