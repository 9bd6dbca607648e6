//! ICMP checks (SPEC section 15): [`ECHOES`] echo requests within the
//! check's timeout; all answered pass, some warn, none fail (the verdict is
//! `healthchecker_core::icmp`'s); the round-trip times are recorded.
//!
//! Sockets: an unprivileged ICMP ("ping") socket where the kernel's
//! `net.ipv4.ping_group_range` admits the daemon's group, else a raw socket
//! (`CAP_NET_RAW`); surge-ping tries them in that order. With neither, an
//! ICMP registration is refused ([`socket_refusal`]) with a message that
//! names the sysctl, instead of a service that can only fail.

use super::{ProbeOutcome, Prober};
use healthchecker_core::icmp::{verdict, ECHOES};
use healthchecker_core::ServiceSpec;
use std::net::IpAddr;
use std::time::Duration;
use surge_ping::{Client, Config, PingIdentifier, PingSequence, ICMP};

/// What an operator is told when neither kind of ICMP socket opens.
pub const NO_SOCKET: &str = "this daemon cannot send ICMP echo requests: allow its group in \
    net.ipv4.ping_group_range (e.g. sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"), or \
    give it CAP_NET_RAW";

/// `None` when an ICMP socket of `family` can be opened now, else why not.
pub async fn socket_refusal(v6: bool) -> Option<String> {
    let kind = if v6 { ICMP::V6 } else { ICMP::V4 };
    match Client::new(&Config::builder().kind(kind).build()) {
        Ok(_) => None,
        Err(e) => Some(format!("{NO_SOCKET} ({e})")),
    }
}

/// Runs one ICMP check of `spec`.
pub(super) async fn check(prober: &Prober, spec: &ServiceSpec) -> ProbeOutcome {
    let host = &spec.target.host;
    let ip = match host.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => match prober.resolver.lookup(host).await {
            Ok(ips) if !ips.is_empty() => ips[0],
            Ok(_) => {
                return ProbeOutcome::fail(format!("DNS lookup of {host} returned no address"))
            }
            Err(why) => return ProbeOutcome::fail(format!("DNS lookup of {host} failed: {why}")),
        },
    };
    if let Some(why) = prober.policy.refusal(ip) {
        return ProbeOutcome::fail(why);
    }
    let kind = if ip.is_ipv6() { ICMP::V6 } else { ICMP::V4 };
    let client = match Client::new(&Config::builder().kind(kind).build()) {
        Ok(c) => c,
        Err(e) => return ProbeOutcome::fail(format!("{NO_SOCKET} ({e})")),
    };
    // Which kind the kernel gave: an operator wondering why the daemon
    // needs CAP_NET_RAW sees it in the check's details.
    let socket = if format!("{:?}", client.get_socket().get_type()).contains("DGRAM") {
        "unprivileged"
    } else {
        "raw"
    };
    // The requests are spread over the first part of the timeout; each
    // waits for its reply until the end of it.
    let budget = Duration::from_secs(spec.timeout as u64).saturating_sub(super::DNS_REASON_MARGIN);
    let spacing = budget / (ECHOES + 1);
    let mut ident = [0u8; 2];
    let _ = getrandom::fill(&mut ident);
    let ident = PingIdentifier(u16::from_ne_bytes(ident));
    let payload = [0u8; 32];
    let echoes = (0..ECHOES).map(|i| {
        let client = client.clone();
        async move {
            let delay = spacing * i;
            tokio::time::sleep(delay).await;
            let mut pinger = client.pinger(ip, ident).await;
            pinger.timeout(budget.saturating_sub(delay));
            pinger
                .ping(PingSequence(i as u16), &payload)
                .await
                .ok()
                .map(|(_, rtt)| rtt)
        }
    });
    let rtts: Vec<Duration> = futures_util::future::join_all(echoes)
        .await
        .into_iter()
        .flatten()
        .collect();
    let (result, reason) = verdict(ECHOES, rtts.len() as u32);
    let rtt_ms: Vec<f64> = rtts
        .iter()
        .map(|d| (d.as_secs_f64() * 1e6).round() / 1e3)
        .collect();
    let mut out = ProbeOutcome::fail("");
    out.result = result;
    out.reason = reason;
    out.details = Some(
        serde_json::json!({
            "sent": ECHOES,
            "received": rtts.len(),
            "rtt_ms": rtt_ms,
            "socket": socket,
            "output": format!("{}/{} echo replies from {ip}", rtts.len(), ECHOES),
        })
        .to_string(),
    );
    out
}
