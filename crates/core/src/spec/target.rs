//! Where and how to check: [`Protocol`], [`Target`] (parsed from a URL) and
//! the query of a DNS check.

use super::{SpecError, MAX_PATH_LEN};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// How a target is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    /// A TCP connection is established.
    Tcp,
    /// TCP plus a completed TLS handshake.
    Ssl,
    /// `GET path` answers 200 (or `expected_status`).
    Http,
    /// HTTP over TLS.
    Https,
    /// A push service: no target, pings arrive (SPEC section 15). Given as
    /// `"kind": "heartbeat"`, never as a protocol or URL scheme.
    Heartbeat,
    /// A DNS query to a given resolver (`dns://resolver/name?type=…`, SPEC
    /// section 15); the path holds the query.
    Dns,
    /// Echo requests (`icmp://host`, SPEC section 15): no port, no path.
    Icmp,
}

impl Protocol {
    /// Upper-case name as in the SPEC (`TCP`, `SSL`, `HTTP`, `HTTPS`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Ssl => "SSL",
            Protocol::Http => "HTTP",
            Protocol::Https => "HTTPS",
            Protocol::Heartbeat => "HEARTBEAT",
            Protocol::Dns => "DNS",
            Protocol::Icmp => "ICMP",
        }
    }

    /// URL scheme used to display a target of this protocol.
    pub fn scheme(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Ssl => "ssl",
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Heartbeat => "heartbeat",
            Protocol::Dns => "dns",
            Protocol::Icmp => "icmp",
        }
    }

    /// The ping port when none is given: 80 for HTTP and TCP, 443 for HTTPS and SSL.
    pub fn default_port(self) -> u16 {
        match self {
            Protocol::Tcp | Protocol::Http => 80,
            Protocol::Ssl | Protocol::Https => 443,
            Protocol::Heartbeat => 0,
            Protocol::Dns => 53,
            Protocol::Icmp => 0,
        }
    }

    /// True for protocols that send an HTTP request (and so have a path).
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Https)
    }

    /// True for protocols that do a TLS handshake.
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Ssl | Protocol::Https)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "ssl" | "tls" => Ok(Protocol::Ssl),
            "http" => Ok(Protocol::Http),
            "https" => Ok(Protocol::Https),
            "heartbeat" => Ok(Protocol::Heartbeat),
            "dns" => Ok(Protocol::Dns),
            "icmp" => Ok(Protocol::Icmp),
            _ => Err(SpecError::invalid(
                "protocol",
                format!("invalid protocol {s:?} (valid: TCP, HTTP, HTTPS, SSL, TLS or ICMP)"),
            )),
        }
    }
}

/// Where and how to check: protocol, host, port and (HTTP only) path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// How to check.
    pub protocol: Protocol,
    /// A DNS name or an IP literal (IPv6 without brackets).
    pub host: String,
    /// 1 to 65535.
    pub port: u16,
    /// Starts with `/`; may carry a query. Empty for TCP and SSL.
    pub path: String,
}

impl Target {
    /// The target as one URL: `http://host:port/path`, `tcp://host:port`
    /// (`heartbeat` for a push service, which has none).
    pub fn url(&self) -> String {
        if self.protocol == Protocol::Heartbeat {
            return "heartbeat".into();
        }
        if self.protocol == Protocol::Icmp {
            return format!("icmp://{}", host_part(&self.host));
        }
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!(
            "{}://{}:{}{}",
            self.protocol.scheme(),
            host,
            self.port,
            self.path
        )
    }

    /// Parses a target URL: `http(s)://host[:port][/path]`, `tcp://host:port`,
    /// `ssl://` or `tls://host:port`. The path is kept as written; an empty
    /// path is `/` (only separate fields get [`DEFAULT_PATH`]).
    pub fn parse_url(field: &str, input: &str) -> Result<Target, SpecError> {
        let input = input.trim();
        let bad = |why: &str| {
            SpecError::invalid(
                field,
                format!("invalid {field} {input:?}: {why} (expected e.g. http://host:port/path, https://…, tcp://host:port, ssl://host:port)"),
            )
        };
        if input.chars().any(|c| c.is_control() || c == ' ') {
            // The URL parser would silently drop tabs and newlines, turning
            // "http://\n/x" into a request to host "x".
            return Err(bad("spaces and control characters are not allowed"));
        }
        let (scheme, rest) = input
            .split_once("://")
            .ok_or_else(|| bad("missing scheme"))?;
        if rest.is_empty() || rest.starts_with(['/', '\\']) {
            return Err(bad("missing host"));
        }
        let protocol: Protocol = scheme
            .parse()
            .ok()
            .filter(|p| *p != Protocol::Heartbeat)
            .ok_or_else(|| bad("unknown scheme"))?;
        // Parse as http/https so that the url crate treats the host as a
        // network host (IP literals, IDNA) whatever the scheme.
        let carrier = if protocol.is_tls() { "https" } else { "http" };
        let url =
            url::Url::parse(&format!("{carrier}://{rest}")).map_err(|e| bad(&e.to_string()))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("credentials in the URL are not supported"));
        }
        let host = match url.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => h.to_string(),
            None => return Err(bad("missing host")),
        };
        let port = url.port().unwrap_or(protocol.default_port());
        if port == 0 && protocol != Protocol::Icmp {
            return Err(bad("port 0 (valid: 1 to 65535)"));
        }
        let mut path = url.path().to_string();
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        if protocol == Protocol::Icmp {
            if url.port().is_some() {
                return Err(bad("an ICMP target has no port"));
            }
            if !(path.is_empty() || path == "/") {
                return Err(bad("an ICMP target has no path"));
            }
            return Ok(Target {
                protocol,
                host,
                port: 0,
                path: String::new(),
            });
        }
        if protocol == Protocol::Dns {
            let query = DnsQuery::parse(url.path(), url.query()).map_err(|why| bad(&why))?;
            return Ok(Target {
                protocol,
                host,
                port,
                path: query.to_path(),
            });
        }
        let path = if protocol.is_http() {
            // Checked as written: `http://nas:5000` and `http://nas:5000/`
            // both mean `/` (SPEC section 2). Only separate fields without
            // a path, and the legacy API, get `/health`.
            if path.is_empty() {
                "/".to_string()
            } else {
                path
            }
        } else if path.is_empty() || path == "/" {
            String::new()
        } else {
            return Err(bad(&format!("a {protocol} target has no path")));
        };
        if path.len() > MAX_PATH_LEN {
            return Err(bad(&format!("path longer than {MAX_PATH_LEN} bytes")));
        }
        Ok(Target {
            protocol,
            host,
            port,
            path,
        })
    }
}

fn host_part(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

impl Target {
    /// The query of a DNS target (`None` for other protocols).
    pub fn dns_query(&self) -> Option<DnsQuery> {
        if self.protocol != Protocol::Dns {
            return None;
        }
        let (path, query) = match self.path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (self.path.as_str(), None),
        };
        DnsQuery::parse(path, query).ok()
    }
}

/// The record types a DNS check asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DnsType {
    /// IPv4 addresses.
    A,
    /// IPv6 addresses.
    Aaaa,
    /// An alias.
    Cname,
    /// Mail exchangers (compared by exchange name).
    Mx,
    /// Text (the strings of one record joined).
    Txt,
}

impl DnsType {
    /// Upper-case name, as in the URL.
    pub fn as_str(self) -> &'static str {
        match self {
            DnsType::A => "A",
            DnsType::Aaaa => "AAAA",
            DnsType::Cname => "CNAME",
            DnsType::Mx => "MX",
            DnsType::Txt => "TXT",
        }
    }
}

/// What a DNS check asks: `name`, `type`, and what the answer must hold.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DnsQuery {
    /// The name asked about (no trailing dot).
    pub name: String,
    /// The record type (default A).
    pub record_type: DnsType,
    /// A value one of the answers must equal (names compared without case
    /// and trailing dot).
    pub expect: Option<String>,
}

impl DnsQuery {
    /// Parses the path (`/name`) and query (`type=…&expect=…`) of a
    /// `dns://` URL; `Err` says why in words.
    pub fn parse(path: &str, query: Option<&str>) -> Result<DnsQuery, String> {
        let name = path.trim_start_matches('/').trim_end_matches('.');
        if name.is_empty() {
            return Err("missing the name to look up (dns://resolver/name?type=A)".into());
        }
        if name.len() > 253
            || name.split('.').any(|l| l.is_empty() || l.len() > 63)
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(format!("invalid name to look up {name:?}"));
        }
        let mut record_type = DnsType::A;
        let mut expect = None;
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "type" => {
                    record_type = match v.to_ascii_uppercase().as_str() {
                        "A" => DnsType::A,
                        "AAAA" => DnsType::Aaaa,
                        "CNAME" => DnsType::Cname,
                        "MX" => DnsType::Mx,
                        "TXT" => DnsType::Txt,
                        _ => {
                            return Err(format!(
                                "unknown record type {v:?} (valid: A, AAAA, CNAME, MX, TXT)"
                            ))
                        }
                    }
                }
                "expect" if !v.is_empty() => expect = Some(v.into_owned()),
                "expect" => {}
                other => return Err(format!("unknown parameter {other:?} (valid: type, expect)")),
            }
        }
        Ok(DnsQuery {
            name: name.to_ascii_lowercase(),
            record_type,
            expect,
        })
    }

    /// The path and query this is stored and shown as: `/name?type=A[&expect=…]`.
    pub fn to_path(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("type", self.record_type.as_str());
        if let Some(e) = &self.expect {
            q.append_pair("expect", e);
        }
        format!("/{}?{}", self.name, q.finish())
    }

    /// True when `expect` is absent or equals one of `answers` (names
    /// without case or trailing dot; TXT exactly).
    pub fn satisfied_by(&self, answers: &[String]) -> bool {
        let Some(want) = &self.expect else {
            return true;
        };
        let norm = |s: &str| -> String {
            if self.record_type == DnsType::Txt {
                s.to_string()
            } else {
                s.trim_end_matches('.').to_ascii_lowercase()
            }
        };
        let want = norm(want);
        answers.iter().any(|a| norm(a) == want)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url())
    }
}
