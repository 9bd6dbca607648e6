//! What a monitored service is: raw registration input, parsed once into a
//! validated [`ServiceSpec`] (SPEC section 2).
//!
//! Every refusal is a [`SpecError`] naming the field, the value and the valid
//! range. Nothing is clamped: a value out of range is refused, never bent.

use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

/// Valid response timeouts, in seconds.
pub const TIMEOUT_RANGE: RangeInclusive<u32> = 2..=60;
/// Valid check intervals, in seconds.
pub const INTERVAL_RANGE: RangeInclusive<u32> = 5..=300;
/// Valid healthy/unhealthy thresholds.
pub const THRESHOLD_RANGE: RangeInclusive<u32> = 2..=10;
/// Valid `cert_warn_days` (0 turns certificate expiry checks off).
pub const CERT_WARN_DAYS_RANGE: RangeInclusive<u32> = 0..=365;
/// Valid name lengths, in characters.
pub const NAME_LEN: RangeInclusive<usize> = 1..=200;
/// Most recipients per service: a mailing list, not a spam cannon.
pub const MAX_RECIPIENTS: usize = 20;
/// Longest path (with query) accepted, in bytes.
pub const MAX_PATH_LEN: usize = 2048;

/// Default response timeout (seconds).
pub const DEFAULT_TIMEOUT: u32 = 5;
/// Default interval (seconds).
pub const DEFAULT_INTERVAL: u32 = 30;

/// The timeout of a service that gives none: [`DEFAULT_TIMEOUT`] or
/// `interval − 1`, whichever is smaller, so that `interval: 5` alone is valid
/// (SPEC section 2).
pub fn default_timeout(interval: u32) -> u32 {
    DEFAULT_TIMEOUT.min(interval.saturating_sub(1))
}
/// Default unhealthy threshold.
pub const DEFAULT_UNHEALTHY: u32 = 2;
/// Default healthy threshold.
pub const DEFAULT_HEALTHY: u32 = 10;
/// Default days before certificate expiry that turn a check into a warn.
pub const DEFAULT_CERT_WARN_DAYS: u32 = 14;
/// Default ping path: what the seed's example app serves.
pub const DEFAULT_PATH: &str = "/health";

/// A refused registration: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    /// Machine-readable code: `invalid_field`, `missing_field`, `unknown_field`, `invalid_body`.
    pub code: &'static str,
    /// The offending field (empty for a whole-body problem).
    pub field: String,
    /// A sentence quoting the value and the valid range.
    pub message: String,
}

impl SpecError {
    /// A field whose value is not acceptable.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self {
            code: "invalid_field",
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// A required field that is absent.
    pub fn missing(field: &str, message: impl Into<String>) -> Self {
        Self {
            code: "missing_field",
            field: field.to_string(),
            message: message.into(),
        }
    }

    fn body(message: impl Into<String>) -> Self {
        Self {
            code: "invalid_body",
            field: String::new(),
            message: message.into(),
        }
    }
}

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

/// Which HTTP statuses pass: a list of inclusive ranges (`"200"`, `"200-399"`, `"200,204"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExpectedStatus(Vec<(u16, u16)>);

impl Default for ExpectedStatus {
    fn default() -> Self {
        ExpectedStatus(vec![(200, 200)])
    }
}

impl ExpectedStatus {
    /// True when `status` is acceptable.
    pub fn matches(&self, status: u16) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }
}

impl fmt::Display for ExpectedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(lo, hi)| {
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                }
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for ExpectedStatus {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            SpecError::invalid(
                "expected_status",
                format!("invalid expected_status {s:?} (valid: codes or ranges from 100 to 599, e.g. \"200\", \"200-399\", \"200,204\")"),
            )
        };
        let code = |t: &str| -> Result<u16, SpecError> {
            let v: u16 = t.trim().parse().map_err(|_| bad())?;
            if (100..=599).contains(&v) {
                Ok(v)
            } else {
                Err(bad())
            }
        };
        let mut ranges = Vec::new();
        for part in s.split(',') {
            let r = match part.split_once('-') {
                Some((a, b)) => (code(a)?, code(b)?),
                None => {
                    let c = code(part)?;
                    (c, c)
                }
            };
            if r.0 > r.1 {
                return Err(bad());
            }
            ranges.push(r);
        }
        if ranges.is_empty() || ranges.len() > 16 {
            return Err(bad());
        }
        Ok(ExpectedStatus(ranges))
    }
}

/// A validated service: everything the daemon needs to check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Unique, 1 to 200 characters, no control characters.
    pub name: String,
    /// What to check.
    pub target: Target,
    /// Recipients of state-change mails (may be empty).
    pub emails: Vec<lettre::Address>,
    /// Response timeout in seconds (2 to 60, below `interval`).
    pub timeout: u32,
    /// Seconds between checks (5 to 300).
    pub interval: u32,
    /// Consecutive failures that make the service unhealthy (2 to 10).
    pub unhealthy_threshold: u32,
    /// Consecutive successes that make it healthy again (2 to 10).
    pub healthy_threshold: u32,
    /// Acceptable HTTP statuses.
    pub expected_status: ExpectedStatus,
    /// Require a certificate trusted by the system's roots.
    pub tls_verify: bool,
    /// Days before expiry that turn a check into a warn (0: no expiry check).
    pub cert_warn_days: u32,
    /// A push service's period and grace (`kind: heartbeat`); its target's
    /// protocol is [`Protocol::Heartbeat`].
    pub heartbeat: Option<crate::heartbeat::Heartbeat>,
    /// Named notification channels (SPEC section 13); empty: the default ones.
    pub channels: Vec<String>,
    /// Tags, for silences (SPEC section 14).
    pub tags: Vec<String>,
    /// Parents: while one is failing, this service's notifications are held.
    pub depends_on: Vec<String>,
}

impl ServiceSpec {
    /// The thresholds of the state machine.
    pub fn thresholds(&self) -> crate::Thresholds {
        crate::Thresholds {
            healthy: self.healthy_threshold,
            unhealthy: self.unhealthy_threshold,
        }
    }
}

/// Raw registration input, as received; [`ServiceSpec::try_from`] validates it.
///
/// Numbers may arrive as JSON numbers or as strings (forms send strings).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegisterRequest {
    /// `name` (v1) or `appname` (legacy).
    pub name: Option<Value>,
    /// Target URL.
    pub url: Option<Value>,
    /// Target protocol (with host/port/path).
    pub protocol: Option<Value>,
    /// Target host.
    pub host: Option<Value>,
    /// Target port.
    pub port: Option<Value>,
    /// Target path (HTTP/HTTPS).
    pub path: Option<Value>,
    /// A string, a comma-separated string or a list of strings.
    pub email: Option<Value>,
    /// Response timeout, seconds.
    pub timeout: Option<Value>,
    /// Interval, seconds.
    pub interval: Option<Value>,
    /// Unhealthy threshold.
    pub unhealthy_threshold: Option<Value>,
    /// Healthy threshold.
    pub healthy_threshold: Option<Value>,
    /// Acceptable HTTP statuses.
    pub expected_status: Option<Value>,
    /// Require a trusted certificate.
    pub tls_verify: Option<Value>,
    /// Certificate expiry warning, days.
    pub cert_warn_days: Option<Value>,
    /// `check` (default) or `heartbeat`.
    pub kind: Option<Value>,
    /// Heartbeat period, seconds.
    pub period: Option<Value>,
    /// Heartbeat grace, seconds.
    pub grace: Option<Value>,
    /// Names of notification channels.
    pub channels: Option<Value>,
    /// Tags.
    pub tags: Option<Value>,
    /// Names of parent services.
    pub depends_on: Option<Value>,
}

/// The fields a v1 registration body may carry.
pub const V1_FIELDS: &[&str] = &[
    "name",
    "url",
    "protocol",
    "host",
    "port",
    "path",
    "email",
    "timeout",
    "interval",
    "unhealthy_threshold",
    "healthy_threshold",
    "expected_status",
    "tls_verify",
    "cert_warn_days",
    "kind",
    "period",
    "grace",
    "channels",
    "tags",
    "depends_on",
];

impl RegisterRequest {
    /// Decodes a v1 JSON body. Unknown fields are refused (a typo such as
    /// `intervall` must not silently fall back to the default).
    pub fn from_json(body: &[u8]) -> Result<Self, SpecError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| SpecError::body(format!("malformed JSON body: {e}")))?;
        let Value::Object(map) = value else {
            return Err(SpecError::body("the body must be a JSON object"));
        };
        Self::from_map(map)
    }

    /// Builds a request from a JSON object, refusing unknown keys.
    pub fn from_map(mut map: Map<String, Value>) -> Result<Self, SpecError> {
        if let Some(k) = map.keys().find(|k| !V1_FIELDS.contains(&k.as_str())) {
            return Err(SpecError {
                code: "unknown_field",
                field: k.clone(),
                message: format!("unknown field {k:?} (known: {})", V1_FIELDS.join(", ")),
            });
        }
        let mut take = |k: &str| map.remove(k).filter(|v| !v.is_null());
        Ok(RegisterRequest {
            name: take("name"),
            url: take("url"),
            protocol: take("protocol"),
            host: take("host"),
            port: take("port"),
            path: take("path"),
            email: take("email"),
            timeout: take("timeout"),
            interval: take("interval"),
            unhealthy_threshold: take("unhealthy_threshold"),
            healthy_threshold: take("healthy_threshold"),
            expected_status: take("expected_status"),
            tls_verify: take("tls_verify"),
            cert_warn_days: take("cert_warn_days"),
            kind: take("kind"),
            period: take("period"),
            grace: take("grace"),
            channels: take("channels"),
            tags: take("tags"),
            depends_on: take("depends_on"),
        })
    }

    /// Decodes the seed's form (`appname`, `url`, `email`, `timeout`,
    /// `interval`, `unhealthy_threshold`, `healthy_threshold`). As the
    /// original server did, the target is `url` + `/health`.
    pub fn from_legacy_form(pairs: &[(String, String)]) -> Result<Self, SpecError> {
        let get = |k: &str| {
            pairs
                .iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let nonempty = |k: &str| get(k).filter(|v| !v.trim().is_empty()).map(Value::String);
        let url = get("url").ok_or_else(|| {
            SpecError::missing(
                "url",
                "missing url (the base URL of the app, e.g. http://host:9090)",
            )
        })?;
        // "/health" goes at the end of the path: before a query, and a
        // fragment (never sent to a server) is dropped.
        let url = url.trim();
        let without_fragment = url.split('#').next().unwrap_or("");
        let (head, query) = match without_fragment.find('?') {
            Some(i) => without_fragment.split_at(i),
            None => (without_fragment, ""),
        };
        let head = head.trim_end_matches('/');
        let base = if head.contains("://") {
            head.to_string()
        } else {
            format!("http://{head}")
        };
        Ok(RegisterRequest {
            name: get("appname").map(Value::String),
            url: Some(Value::String(format!("{base}{DEFAULT_PATH}{query}"))),
            email: nonempty("email"),
            timeout: nonempty("timeout"),
            interval: nonempty("interval"),
            unhealthy_threshold: nonempty("unhealthy_threshold"),
            healthy_threshold: nonempty("healthy_threshold"),
            ..Default::default()
        })
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn string_field(field: &str, v: &Value) -> Result<String, SpecError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(SpecError::invalid(
            field,
            format!("invalid {field} {} (expected a string)", describe(other)),
        )),
    }
}

/// Reads a whole number in `range` from a JSON number or a numeric string.
fn number_field(
    field: &str,
    v: Option<&Value>,
    range: RangeInclusive<u32>,
    unit: &str,
    default: u32,
) -> Result<u32, SpecError> {
    let Some(v) = v else { return Ok(default) };
    let out_of_range = || {
        SpecError::invalid(
            field,
            format!(
                "invalid {field} {} (valid: {} to {}{unit})",
                describe(v),
                range.start(),
                range.end()
            ),
        )
    };
    let n: i64 = match v {
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i,
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e12 => f as i64,
            _ => return Err(out_of_range()),
        },
        Value::String(s) => s.trim().parse().map_err(|_| out_of_range())?,
        _ => return Err(out_of_range()),
    };
    u32::try_from(n)
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(out_of_range)
}

fn bool_field(field: &str, v: Option<&Value>) -> Result<bool, SpecError> {
    match v {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(SpecError::invalid(
                field,
                format!("invalid {field} {s:?} (valid: true or false)"),
            )),
        },
        Some(other) => Err(SpecError::invalid(
            field,
            format!("invalid {field} {} (valid: true or false)", describe(other)),
        )),
    }
}

/// Validates a service name: 1 to 200 characters, not blank, no control
/// characters, no invisible format characters (Unicode category Cf: bidi
/// overrides and zero-width characters make two names look alike on the
/// dashboard and in mail), and not `.` or `..` (a name is a path segment in
/// `/api/v1/services/{name}` and `/services/{name}`, where those two mean
/// "here" and "up" to browsers and proxies).
pub fn validate_name(field: &str, name: &str) -> Result<String, SpecError> {
    let chars = name.chars().count();
    if !NAME_LEN.contains(&chars) || name.trim().is_empty() {
        return Err(SpecError::invalid(
            field,
            format!(
                "invalid {field} {name:?} (valid: 1 to 200 characters, not blank; got {chars})"
            ),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(SpecError::invalid(
            field,
            format!("invalid {field} {name:?}: control characters are not allowed"),
        ));
    }
    if let Some(c) = name.chars().find(|c| is_format_char(*c)) {
        return Err(SpecError::invalid(
            field,
            format!(
                "invalid {field} {name:?}: invisible format character U+{:04X} is not allowed",
                c as u32
            ),
        ));
    }
    if name == "." || name == ".." {
        return Err(SpecError::invalid(
            field,
            format!("invalid {field} {name:?}: \".\" and \"..\" are path segments, not names"),
        ));
    }
    Ok(name.to_string())
}

/// Unicode general category Cf (format): U+200B zero width space, U+202E
/// right-to-left override, U+FEFF, ...
fn is_format_char(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    c.general_category() == GeneralCategory::Format
}

fn parse_emails(v: Option<&Value>) -> Result<Vec<lettre::Address>, SpecError> {
    let raw: Vec<String> = match v {
        None => Vec::new(),
        Some(Value::String(s)) => s.split(',').map(str::to_string).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| string_field("email", i))
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(SpecError::invalid(
                "email",
                format!(
                    "invalid email {} (expected an address or a list of addresses)",
                    describe(other)
                ),
            ))
        }
    };
    let mut out: Vec<lettre::Address> = Vec::new();
    for r in raw.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let addr: lettre::Address = r.parse().map_err(|e| {
            SpecError::invalid("email", format!("invalid email address {r:?}: {e}"))
        })?;
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    if out.len() > MAX_RECIPIENTS {
        return Err(SpecError::invalid(
            "email",
            format!(
                "too many email addresses ({}; valid: at most {MAX_RECIPIENTS})",
                out.len()
            ),
        ));
    }
    Ok(out)
}

fn parse_target(r: &RegisterRequest) -> Result<Target, SpecError> {
    let parts = [
        ("protocol", &r.protocol),
        ("host", &r.host),
        ("port", &r.port),
        ("path", &r.path),
    ];
    if let Some(url) = &r.url {
        if let Some((field, _)) = parts.iter().find(|(_, v)| v.is_some()) {
            return Err(SpecError::invalid(
                field,
                format!(
                    "give either url or protocol/host/port/path, not both (got url and {field})"
                ),
            ));
        }
        return Target::parse_url("url", &string_field("url", url)?);
    }
    let Some(host) = &r.host else {
        return Err(SpecError::missing(
            "url",
            "missing target: give url (e.g. http://host:port/health) or host (with protocol, port, path)",
        ));
    };
    let host = string_field("host", host)?;
    let protocol = match &r.protocol {
        Some(p) => match string_field("protocol", p)?.parse()? {
            Protocol::Heartbeat => {
                return Err(SpecError::invalid(
                    "protocol",
                    "invalid protocol \"heartbeat\": register a heartbeat with \"kind\": \"heartbeat\" (and period, grace)",
                ))
            }
            Protocol::Dns => {
                return Err(SpecError::invalid(
                    "protocol",
                    "invalid protocol \"dns\": give a DNS check as a url, dns://resolver[:port]/name?type=A",
                ))
            }
            p => p,
        },
        // A path implies HTTP; host and port alone mean TCP (SPEC section 2).
        None if r.path.is_some() => Protocol::Http,
        None => Protocol::Tcp,
    };
    let port = match &r.port {
        Some(v) if protocol == Protocol::Icmp => {
            return Err(SpecError::invalid(
                "port",
                format!("invalid port {}: an ICMP target has no port", describe(v)),
            ))
        }
        None => protocol.default_port(),
        Some(v) => number_field("port", Some(v), 1..=65535, "", 0)? as u16,
    };
    let path = match &r.path {
        None if protocol.is_http() => DEFAULT_PATH.to_string(),
        None => String::new(),
        Some(p) => {
            let p = string_field("path", p)?;
            if !protocol.is_http() {
                return Err(SpecError::invalid(
                    "path",
                    format!("invalid path {p:?}: a {protocol} target has no path"),
                ));
            }
            if !p.starts_with('/')
                || p.len() > MAX_PATH_LEN
                || p.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(SpecError::invalid(
                    "path",
                    format!("invalid path {p:?} (must start with / and hold no spaces, at most {MAX_PATH_LEN} bytes)"),
                ));
            }
            p
        }
    };
    let bracketed = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    let probe = Target::parse_url(
        "host",
        &if protocol == Protocol::Icmp {
            format!("icmp://{bracketed}")
        } else {
            format!("{}://{}:{}", protocol.scheme(), bracketed, port)
        },
    )
    .map_err(|_| {
        SpecError::invalid(
            "host",
            format!("invalid host {host:?} (expected a DNS name or an IP address)"),
        )
    })?;
    if host.contains('/') || host.contains('@') || host.contains('?') || host.contains('#') {
        return Err(SpecError::invalid(
            "host",
            format!("invalid host {host:?} (expected a DNS name or an IP address)"),
        ));
    }
    Ok(Target { path, ..probe })
}

impl TryFrom<RegisterRequest> for ServiceSpec {
    type Error = SpecError;

    fn try_from(r: RegisterRequest) -> Result<Self, SpecError> {
        let name = match &r.name {
            None => {
                return Err(SpecError::missing(
                    "name",
                    "missing name (1 to 200 characters)",
                ))
            }
            Some(v) => validate_name("name", &string_field("name", v)?)?,
        };
        match r
            .kind
            .as_ref()
            .map(|k| string_field("kind", k))
            .transpose()?
        {
            None => {}
            Some(k) if k.eq_ignore_ascii_case("check") => {}
            Some(k) if k.eq_ignore_ascii_case("heartbeat") => return heartbeat_spec(name, &r),
            Some(k) => {
                return Err(SpecError::invalid(
                    "kind",
                    format!("invalid kind {k:?} (valid: check, heartbeat)"),
                ))
            }
        }
        for (field, v) in [("period", &r.period), ("grace", &r.grace)] {
            if v.is_some() {
                return Err(SpecError::invalid(
                    field,
                    format!("{field} applies to \"kind\": \"heartbeat\" services only"),
                ));
            }
        }
        let target = parse_target(&r)?;
        let interval = number_field(
            "interval",
            r.interval.as_ref(),
            INTERVAL_RANGE,
            " seconds",
            DEFAULT_INTERVAL,
        )?;
        let timeout = number_field(
            "timeout",
            r.timeout.as_ref(),
            TIMEOUT_RANGE,
            " seconds",
            default_timeout(interval),
        )?;
        if timeout >= interval {
            return Err(SpecError::invalid(
                "timeout",
                format!("invalid timeout {timeout}: it must be smaller than the interval ({interval} seconds)"),
            ));
        }
        let unhealthy_threshold = number_field(
            "unhealthy_threshold",
            r.unhealthy_threshold.as_ref(),
            THRESHOLD_RANGE,
            "",
            DEFAULT_UNHEALTHY,
        )?;
        let healthy_threshold = number_field(
            "healthy_threshold",
            r.healthy_threshold.as_ref(),
            THRESHOLD_RANGE,
            "",
            DEFAULT_HEALTHY,
        )?;
        let expected_status = match &r.expected_status {
            None => ExpectedStatus::default(),
            Some(Value::Number(n)) => n.to_string().parse()?,
            Some(v) => string_field("expected_status", v)?.parse()?,
        };
        if !target.protocol.is_http() && r.expected_status.is_some() {
            return Err(SpecError::invalid(
                "expected_status",
                format!(
                    "expected_status applies to HTTP and HTTPS targets, not {}",
                    target.protocol
                ),
            ));
        }
        Ok(ServiceSpec {
            name,
            emails: parse_emails(r.email.as_ref())?,
            timeout,
            interval,
            unhealthy_threshold,
            healthy_threshold,
            expected_status,
            tls_verify: bool_field("tls_verify", r.tls_verify.as_ref())?,
            cert_warn_days: number_field(
                "cert_warn_days",
                r.cert_warn_days.as_ref(),
                CERT_WARN_DAYS_RANGE,
                " days",
                DEFAULT_CERT_WARN_DAYS,
            )?,
            target,
            heartbeat: None,
            channels: crate::channel::parse_channel_names(r.channels.as_ref())?,
            tags: crate::channel::parse_names("tags", r.tags.as_ref())?,
            depends_on: crate::channel::parse_names("depends_on", r.depends_on.as_ref())?,
        })
    }
}

/// A `kind: heartbeat` registration: name, email, period and grace; the
/// fields of a polled target do not apply and are refused by name.
fn heartbeat_spec(name: String, r: &RegisterRequest) -> Result<ServiceSpec, SpecError> {
    use crate::heartbeat::{
        Heartbeat, DEFAULT_GRACE, DEFAULT_PERIOD, GRACE_RANGE, PERIOD_RANGE, THRESHOLDS,
    };
    let polled = [
        ("url", &r.url),
        ("protocol", &r.protocol),
        ("host", &r.host),
        ("port", &r.port),
        ("path", &r.path),
        ("timeout", &r.timeout),
        ("interval", &r.interval),
        ("unhealthy_threshold", &r.unhealthy_threshold),
        ("healthy_threshold", &r.healthy_threshold),
        ("expected_status", &r.expected_status),
        ("tls_verify", &r.tls_verify),
        ("cert_warn_days", &r.cert_warn_days),
    ];
    if let Some((field, _)) = polled.iter().find(|(_, v)| v.is_some()) {
        return Err(SpecError::invalid(
            field,
            format!("{field} does not apply to a heartbeat service (it is judged on each ping: give period and grace)"),
        ));
    }
    let heartbeat = Heartbeat {
        period: number_field(
            "period",
            r.period.as_ref(),
            PERIOD_RANGE,
            " seconds",
            DEFAULT_PERIOD,
        )?,
        grace: number_field(
            "grace",
            r.grace.as_ref(),
            GRACE_RANGE,
            " seconds",
            DEFAULT_GRACE,
        )?,
    };
    Ok(ServiceSpec {
        name,
        target: Target {
            protocol: Protocol::Heartbeat,
            host: String::new(),
            port: 0,
            path: String::new(),
        },
        emails: parse_emails(r.email.as_ref())?,
        // Stored but unused: nothing is polled.
        timeout: DEFAULT_TIMEOUT,
        interval: DEFAULT_INTERVAL,
        unhealthy_threshold: THRESHOLDS.unhealthy,
        healthy_threshold: THRESHOLDS.healthy,
        expected_status: ExpectedStatus::default(),
        tls_verify: false,
        cert_warn_days: 0,
        heartbeat: Some(heartbeat),
        channels: crate::channel::parse_channel_names(r.channels.as_ref())?,
        tags: crate::channel::parse_names("tags", r.tags.as_ref())?,
        depends_on: crate::channel::parse_names("depends_on", r.depends_on.as_ref())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: Value) -> Result<ServiceSpec, SpecError> {
        RegisterRequest::from_json(v.to_string().as_bytes())?.try_into()
    }

    #[test]
    fn url_targets_parse_with_defaults() {
        let cases = [
            ("http://example.com", Protocol::Http, "example.com", 80, "/"),
            (
                "http://example.com/",
                Protocol::Http,
                "example.com",
                80,
                "/",
            ),
            (
                "http://nas:5000/health",
                Protocol::Http,
                "nas",
                5000,
                "/health",
            ),
            (
                "https://10.0.0.1:8443/status?x=1",
                Protocol::Https,
                "10.0.0.1",
                8443,
                "/status?x=1",
            ),
            ("tcp://nas.local:22", Protocol::Tcp, "nas.local", 22, ""),
            ("tcp://nas.local", Protocol::Tcp, "nas.local", 80, ""),
            ("ssl://[::1]:993", Protocol::Ssl, "::1", 993, ""),
            ("TLS://host", Protocol::Ssl, "host", 443, ""),
            (
                "HTTPS://Host.Example",
                Protocol::Https,
                "host.example",
                443,
                "/",
            ),
        ];
        for (url, proto, host, port, path) in cases {
            let t = Target::parse_url("url", url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(
                (t.protocol, t.host.as_str(), t.port, t.path.as_str()),
                (proto, host, port, path),
                "{url}"
            );
        }
        assert_eq!(
            Target::parse_url("url", "ssl://[::1]:993").unwrap().url(),
            "ssl://[::1]:993"
        );
    }

    #[test]
    fn bad_urls_are_refused_naming_url() {
        for url in [
            "example.com",
            "ftp://x",
            "http://",
            "http://h:99999",
            "tcp://h:22/x",
            "http://u:p@h/",
            "http://h:0/",
            "http://\n/x",
            "http:///x",
            "http://h /x",
            "http://\\/x",
        ] {
            let e = Target::parse_url("url", url).unwrap_err();
            assert_eq!(e.field, "url", "{url}");
            assert!(
                e.message.contains(&format!("{url:?}")),
                "{url}: {}",
                e.message
            );
        }
    }

    #[test]
    fn defaults_follow_the_spec() {
        let s = spec(json!({"name": "a", "host": "h"})).unwrap();
        assert_eq!(s.target.protocol, Protocol::Tcp);
        assert_eq!(s.target.port, 80);
        assert_eq!(
            (
                s.timeout,
                s.interval,
                s.unhealthy_threshold,
                s.healthy_threshold
            ),
            (5, 30, 2, 10)
        );
        assert_eq!(s.cert_warn_days, 14);
        assert!(!s.tls_verify);
        assert!(s.expected_status.matches(200) && !s.expected_status.matches(204));
        let s = spec(json!({"name": "a", "host": "h", "protocol": "https"})).unwrap();
        assert_eq!((s.target.port, s.target.path.as_str()), (443, "/health"));
        let s = spec(json!({"name": "a", "host": "h", "path": "/ping"})).unwrap();
        assert_eq!(s.target.protocol, Protocol::Http);
    }

    #[test]
    fn out_of_range_values_name_field_value_and_range() {
        let cases = [
            (json!({"timeout": 1}), "timeout", "1", "2 to 60"),
            (
                json!({"timeout": 61, "interval": 300}),
                "timeout",
                "61",
                "2 to 60",
            ),
            (json!({"interval": 4}), "interval", "4", "5 to 300"),
            (json!({"interval": 301}), "interval", "301", "5 to 300"),
            (
                json!({"unhealthy_threshold": 1}),
                "unhealthy_threshold",
                "1",
                "2 to 10",
            ),
            (
                json!({"healthy_threshold": 11}),
                "healthy_threshold",
                "11",
                "2 to 10",
            ),
            (
                json!({"healthy_threshold": "x"}),
                "healthy_threshold",
                "\"x\"",
                "2 to 10",
            ),
            (json!({"interval": 5.5}), "interval", "5.5", "5 to 300"),
            (json!({"timeout": -3}), "timeout", "-3", "2 to 60"),
            (
                json!({"cert_warn_days": 400}),
                "cert_warn_days",
                "400",
                "0 to 365",
            ),
        ];
        for (extra, field, value, range) in cases {
            let mut body = json!({"name": "a", "url": "http://h"});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let e = spec(body).unwrap_err();
            assert_eq!(e.field, field);
            assert!(
                e.message.contains(value) && e.message.contains(range),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn a_url_is_checked_as_written() {
        // The README's example: a NAS answers `/`, not `/health`.
        for url in ["http://192.168.1.20:5000/", "http://192.168.1.20:5000"] {
            let s = spec(json!({"name": "nas", "url": url})).unwrap();
            assert_eq!(s.target.url(), "http://192.168.1.20:5000/", "{url}");
        }
        // Separate fields without a path still get the seed's `/health`.
        let s = spec(json!({"name": "a", "host": "h", "protocol": "http"})).unwrap();
        assert_eq!(s.target.path, "/health");
    }

    #[test]
    fn omitted_timeout_is_five_or_interval_minus_one() {
        for (interval, timeout) in [(5, 4), (6, 5), (30, 5), (300, 5)] {
            let s = spec(json!({"name": "a", "url": "http://h", "interval": interval})).unwrap();
            assert_eq!(s.timeout, timeout, "interval {interval}");
        }
        assert_eq!(default_timeout(5), 4);
        // A timeout given explicitly is still checked against the interval.
        let e =
            spec(json!({"name": "a", "url": "http://h", "interval": 5, "timeout": 5})).unwrap_err();
        assert_eq!(e.field, "timeout");
    }

    #[test]
    fn heartbeats_take_period_and_grace_and_nothing_polled() {
        let s = spec(
            json!({"name": "nightly backup", "kind": "heartbeat", "period": 86400, "grace": 3600}),
        )
        .unwrap();
        let hb = s.heartbeat.unwrap();
        assert_eq!((hb.period, hb.grace), (86_400, 3_600));
        assert_eq!(s.target.protocol, Protocol::Heartbeat);
        assert_eq!(s.target.url(), "heartbeat");
        assert_eq!(s.thresholds(), crate::heartbeat::THRESHOLDS);
        // Bounds: period 60 s to 365 d, grace 60 s to 30 d, named in the error.
        for (extra, field, range) in [
            (json!({"period": 59}), "period", "60 to 31536000 seconds"),
            (json!({"period": 31_536_001}), "period", "60 to 31536000"),
            (json!({"grace": 59}), "grace", "60 to 2592000 seconds"),
            (json!({"grace": 2_592_001}), "grace", "60 to 2592000"),
            (json!({"url": "http://h"}), "url", "does not apply"),
            (json!({"interval": 10}), "interval", "does not apply"),
            (json!({"kind": "push"}), "kind", "check, heartbeat"),
        ] {
            let mut body = json!({"name": "a", "kind": "heartbeat"});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let e = spec(body).unwrap_err();
            assert_eq!(e.field, field);
            assert!(e.message.contains(range), "{}", e.message);
        }
        let e = spec(json!({"name": "a", "url": "http://h", "period": 60})).unwrap_err();
        assert_eq!(e.field, "period");
        let e = spec(json!({"name": "a", "host": "h", "protocol": "heartbeat"})).unwrap_err();
        assert_eq!(e.field, "protocol");
        assert_eq!(
            Target::parse_url("url", "heartbeat://h").unwrap_err().field,
            "url"
        );
    }

    #[test]
    fn dns_urls_parse_and_unknown_types_are_refused() {
        let t =
            Target::parse_url("url", "dns://192.168.1.1/nas.lan?type=AAAA&expect=fd00::5").unwrap();
        assert_eq!(
            (t.protocol, t.host.as_str(), t.port),
            (Protocol::Dns, "192.168.1.1", 53)
        );
        assert_eq!(
            t.url(),
            "dns://192.168.1.1:53/nas.lan?type=AAAA&expect=fd00%3A%3A5"
        );
        let q = t.dns_query().unwrap();
        assert_eq!(
            (q.name.as_str(), q.record_type, q.expect.as_deref()),
            ("nas.lan", DnsType::Aaaa, Some("fd00::5"))
        );
        // The stored form parses back to the same query.
        assert_eq!(Target::parse_url("url", &t.url()).unwrap(), t);
        let t = Target::parse_url("url", "dns://127.0.0.1:5353/Example.COM.").unwrap();
        let q = t.dns_query().unwrap();
        assert_eq!(
            (q.name.as_str(), q.record_type, q.expect),
            ("example.com", DnsType::A, None)
        );
        for (url, why) in [
            ("dns://h/x?type=SRV", "unknown record type \"SRV\""),
            ("dns://h/", "missing the name"),
            ("dns://h/x?tpye=A", "unknown parameter"),
            ("dns://h/a..b", "invalid name"),
        ] {
            let e = spec(json!({"name": "a", "url": url})).unwrap_err();
            assert_eq!(e.field, "url", "{url}");
            assert!(e.message.contains(why), "{url}: {}", e.message);
        }
        let e = spec(json!({"name": "a", "host": "h", "protocol": "dns"})).unwrap_err();
        assert_eq!(e.field, "protocol");
    }

    #[test]
    fn dns_expectations_compare_names_loosely_and_text_exactly() {
        let q = |t: &str, e: &str| {
            DnsQuery::parse("/x", Some(&format!("type={t}&expect={e}"))).unwrap()
        };
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(q("MX", "Mail.Example.").satisfied_by(&a(&["mail.example"])));
        assert!(q("A", "10.0.0.1").satisfied_by(&a(&["10.0.0.2", "10.0.0.1"])));
        assert!(!q("A", "10.0.0.1").satisfied_by(&a(&["10.0.0.2"])));
        assert!(q("TXT", "v%3Dspf1").satisfied_by(&a(&["v=spf1"])));
        assert!(!q("TXT", "V%3DSPF1").satisfied_by(&a(&["v=spf1"])));
        assert!(DnsQuery::parse("/x", None).unwrap().satisfied_by(&[]));
    }

    #[test]
    fn icmp_targets_have_a_host_only() {
        for body in [
            json!({"name": "printer", "url": "icmp://192.168.1.30"}),
            json!({"name": "printer", "host": "192.168.1.30", "protocol": "icmp"}),
        ] {
            let s = spec(body).unwrap();
            assert_eq!(s.target.protocol, Protocol::Icmp);
            assert_eq!(s.target.url(), "icmp://192.168.1.30");
        }
        assert_eq!(
            Target::parse_url("url", "icmp://[fe80::1]").unwrap().url(),
            "icmp://[fe80::1]"
        );
        for (body, field) in [
            (json!({"name": "a", "url": "icmp://h:7"}), "url"),
            (json!({"name": "a", "url": "icmp://h/x"}), "url"),
            (
                json!({"name": "a", "host": "h", "protocol": "icmp", "port": 7}),
                "port",
            ),
            (
                json!({"name": "a", "host": "h", "protocol": "icmp", "path": "/"}),
                "path",
            ),
        ] {
            assert_eq!(spec(body.clone()).unwrap_err().field, field, "{body}");
        }
    }

    #[test]
    fn timeout_must_be_below_interval() {
        let e = spec(json!({"name": "a", "url": "http://h", "timeout": 10, "interval": 10}))
            .unwrap_err();
        assert_eq!(e.field, "timeout");
        assert!(
            spec(json!({"name": "a", "url": "http://h", "timeout": 9, "interval": 10})).is_ok()
        );
    }

    #[test]
    fn numbers_may_be_strings() {
        let s = spec(json!({"name": "a", "url": "http://h", "interval": "10", "timeout": "3"}))
            .unwrap();
        assert_eq!((s.interval, s.timeout), (10, 3));
    }

    #[test]
    fn port_and_protocol_are_checked() {
        for (body, field) in [
            (json!({"name": "a", "host": "h", "port": 0}), "port"),
            (json!({"name": "a", "host": "h", "port": 65536}), "port"),
            (
                json!({"name": "a", "host": "h", "protocol": "udp"}),
                "protocol",
            ),
            (
                json!({"name": "a", "host": "h", "protocol": "tcp", "path": "/x"}),
                "path",
            ),
            (
                json!({"name": "a", "host": "h", "protocol": "http", "path": "x"}),
                "path",
            ),
            (json!({"name": "a", "host": "h h"}), "host"),
            (json!({"name": "a", "host": "h/x"}), "host"),
            (json!({"name": "a", "url": "http://h", "port": 80}), "port"),
            (json!({"name": "a"}), "url"),
        ] {
            assert_eq!(spec(body.clone()).unwrap_err().field, field, "{body}");
        }
        let s =
            spec(json!({"name": "a", "host": "::1", "port": 8080, "protocol": "http"})).unwrap();
        assert_eq!(s.target.url(), "http://[::1]:8080/health");
    }

    #[test]
    fn names_are_free_text_but_bounded() {
        assert_eq!(
            spec(json!({"name": "web one ✓", "url": "http://h"}))
                .unwrap()
                .name,
            "web one ✓"
        );
        for name in [
            json!(""),
            json!("   "),
            json!("a\nb"),
            json!("x".repeat(201)),
            json!(5),
            json!("."),
            json!(".."),
            json!("paypal\u{202e}lmth.exe"),
            json!("nas\u{200b}"),
            json!("\u{feff}nas"),
        ] {
            assert_eq!(
                spec(json!({"name": name, "url": "http://h"}))
                    .unwrap_err()
                    .field,
                "name"
            );
        }
        assert!(spec(json!({"name": "é".repeat(200), "url": "http://h"})).is_ok());
        // Dots inside a name and visible non-ASCII are fine.
        assert!(spec(json!({"name": "...", "url": "http://h"})).is_ok());
        assert!(spec(json!({"name": "a.b", "url": "http://h"})).is_ok());
        assert!(spec(json!({"name": "Grüße 日本", "url": "http://h"})).is_ok());
        assert_eq!(
            spec(json!({"url": "http://h"})).unwrap_err().code,
            "missing_field"
        );
    }

    #[test]
    fn emails_are_parsed_by_a_real_parser() {
        let s = spec(
            json!({"name": "a", "url": "http://h", "email": ["a@example.com", "b@example.org"]}),
        )
        .unwrap();
        assert_eq!(s.emails.len(), 2);
        let s =
            spec(json!({"name": "a", "url": "http://h", "email": "a@example.com, b@example.org"}))
                .unwrap();
        assert_eq!(s.emails.len(), 2);
        for bad in [
            json!("not-an-address"),
            json!(["a@b.c", "@x"]),
            json!(3),
            json!("a@@b"),
        ] {
            let e = spec(json!({"name": "a", "url": "http://h", "email": bad})).unwrap_err();
            assert_eq!(e.field, "email");
        }
    }

    #[test]
    fn expected_status_ranges() {
        let s =
            spec(json!({"name": "a", "url": "http://h", "expected_status": "200-399"})).unwrap();
        assert!(s.expected_status.matches(302) && !s.expected_status.matches(404));
        assert_eq!(s.expected_status.to_string(), "200-399");
        let s = spec(json!({"name": "a", "url": "http://h", "expected_status": 204})).unwrap();
        assert!(s.expected_status.matches(204));
        for bad in ["99", "200-100", "abc", "", "200,"] {
            let e =
                spec(json!({"name": "a", "url": "http://h", "expected_status": bad})).unwrap_err();
            assert_eq!(e.field, "expected_status", "{bad}");
        }
    }

    #[test]
    fn unknown_fields_and_bad_bodies_are_refused() {
        let e = RegisterRequest::from_json(br#"{"name":"a","intervall":5}"#).unwrap_err();
        assert_eq!((e.code, e.field.as_str()), ("unknown_field", "intervall"));
        assert_eq!(
            RegisterRequest::from_json(b"{").unwrap_err().code,
            "invalid_body"
        );
        assert_eq!(
            RegisterRequest::from_json(b"[1]").unwrap_err().code,
            "invalid_body"
        );
        assert_eq!(
            RegisterRequest::from_json(b"\xff\xfe").unwrap_err().code,
            "invalid_body"
        );
    }

    #[test]
    fn legacy_form_appends_health() {
        let form = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let r = RegisterRequest::from_legacy_form(&form(&[
            ("appname", "Sample App"),
            ("url", "http://10.0.0.5:9090"),
            ("email", "me@example.com"),
            ("timeout", "5"),
            ("interval", "10"),
            ("unhealthy_threshold", "2"),
            ("healthy_threshold", "4"),
        ]))
        .unwrap();
        let s = ServiceSpec::try_from(r).unwrap();
        assert_eq!(s.target.url(), "http://10.0.0.5:9090/health");
        assert_eq!((s.interval, s.healthy_threshold), (10, 4));
        let r = RegisterRequest::from_legacy_form(&form(&[
            ("appname", "x"),
            ("url", "http://h:1/"),
            ("email", ""),
        ]))
        .unwrap();
        let s = ServiceSpec::try_from(r).unwrap();
        assert_eq!(s.target.url(), "http://h:1/health");
        assert!(s.emails.is_empty());
        assert_eq!(
            RegisterRequest::from_legacy_form(&form(&[("appname", "x")]))
                .unwrap_err()
                .field,
            "url"
        );
    }

    #[test]
    fn legacy_health_goes_before_query_and_fragment() {
        // Found by the fuzzer: "/health" landed in the query or the fragment.
        for (url, want) in [
            ("http://h:1/app?x=1", "http://h:1/app/health?x=1"),
            ("http://h:1/#frag", "http://h:1/health"),
            ("h:1/a/", "http://h:1/a/health"),
        ] {
            let pairs = vec![
                ("appname".to_string(), "x".to_string()),
                ("url".to_string(), url.to_string()),
            ];
            let r = RegisterRequest::from_legacy_form(&pairs).unwrap();
            assert_eq!(
                ServiceSpec::try_from(r).unwrap().target.url(),
                want,
                "{url}"
            );
        }
    }
}
