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
}

impl Protocol {
    /// Upper-case name as in the SPEC (`TCP`, `SSL`, `HTTP`, `HTTPS`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Ssl => "SSL",
            Protocol::Http => "HTTP",
            Protocol::Https => "HTTPS",
        }
    }

    /// URL scheme used to display a target of this protocol.
    pub fn scheme(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Ssl => "ssl",
            Protocol::Http => "http",
            Protocol::Https => "https",
        }
    }

    /// The ping port when none is given: 80 for HTTP and TCP, 443 for HTTPS and SSL.
    pub fn default_port(self) -> u16 {
        match self {
            Protocol::Tcp | Protocol::Http => 80,
            Protocol::Ssl | Protocol::Https => 443,
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
            _ => Err(SpecError::invalid(
                "protocol",
                format!("invalid protocol {s:?} (valid: TCP, HTTP, HTTPS, SSL or TLS)"),
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
    /// The target as one URL: `http://host:port/path`, `tcp://host:port`.
    pub fn url(&self) -> String {
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
    /// `ssl://` or `tls://host:port`. An empty or `/` path gets [`DEFAULT_PATH`].
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
        let protocol: Protocol = scheme.parse().map_err(|_| bad("unknown scheme"))?;
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
        let port = url
            .port_or_known_default()
            .unwrap_or(protocol.default_port());
        if port == 0 {
            return Err(bad("port 0 (valid: 1 to 65535)"));
        }
        let mut path = url.path().to_string();
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        let path = if protocol.is_http() {
            if path.is_empty() || path == "/" {
                DEFAULT_PATH.to_string()
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

/// Validates a service name: 1 to 200 characters, not blank, no control characters.
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
    Ok(name.to_string())
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
        Some(p) => string_field("protocol", p)?.parse()?,
        // A path implies HTTP; host and port alone mean TCP (SPEC section 2).
        None if r.path.is_some() => Protocol::Http,
        None => Protocol::Tcp,
    };
    let port = match &r.port {
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
        &format!("{}://{}:{}", protocol.scheme(), bracketed, port),
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
        let target = parse_target(&r)?;
        let timeout = number_field(
            "timeout",
            r.timeout.as_ref(),
            TIMEOUT_RANGE,
            " seconds",
            DEFAULT_TIMEOUT,
        )?;
        let interval = number_field(
            "interval",
            r.interval.as_ref(),
            INTERVAL_RANGE,
            " seconds",
            DEFAULT_INTERVAL,
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
        })
    }
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
            (
                "http://example.com",
                Protocol::Http,
                "example.com",
                80,
                "/health",
            ),
            (
                "http://example.com/",
                Protocol::Http,
                "example.com",
                80,
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
                "/health",
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
        ] {
            assert_eq!(
                spec(json!({"name": name, "url": "http://h"}))
                    .unwrap_err()
                    .field,
                "name"
            );
        }
        assert!(spec(json!({"name": "é".repeat(200), "url": "http://h"})).is_ok());
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
