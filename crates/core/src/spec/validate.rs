//! The rules of a registration across its fields (SPEC section 2): one
//! target (a URL or separate fields), timeout below interval, what a
//! heartbeat may not carry, names and addresses; [`RegisterRequest`] in,
//! [`ServiceSpec`] or the [`SpecError`] naming the field out.

use super::{
    default_timeout, EmailList, ExpectedStatus, Protocol, RegisterRequest, ServiceSpec, SpecError,
    Target, DEFAULT_CERT_WARN_DAYS, DEFAULT_HEALTHY, DEFAULT_INTERVAL, DEFAULT_PATH,
    DEFAULT_TIMEOUT, DEFAULT_UNHEALTHY, MAX_PATH_LEN, MAX_RECIPIENTS, NAME_LEN,
};

/// A bounded number's refusal (`Err` of `valid()`) as a [`SpecError`].
fn invalid_value(field: &'static str) -> impl Fn(String) -> SpecError {
    move |m| SpecError::invalid(field, format!("invalid {field} {m}"))
}

/// A bounded number, checked, or `default` when absent.
macro_rules! bounded_or {
    ($r:expr, $field:ident, $default:expr) => {
        match $r.$field {
            Some(v) => v.valid().map_err(invalid_value(stringify!($field)))?,
            None => $default,
        }
    };
}

/// A list of names (`channels`, `tags`, `depends_on`), validated.
fn names(field: &str, v: &Option<Vec<String>>) -> Result<Vec<String>, SpecError> {
    validate_names(field, v.as_deref().unwrap_or_default())
}

/// Most channels one service may name (a typo list is not a fan-out).
pub const MAX_SERVICE_CHANNELS: usize = 16;

/// Validates names already read as strings: each a valid name, duplicates
/// dropped, at most [`MAX_SERVICE_CHANNELS`].
pub fn validate_names<S: AsRef<str>>(field: &str, items: &[S]) -> Result<Vec<String>, SpecError> {
    let mut out: Vec<String> = Vec::new();
    for s in items {
        let n = validate_name(field, s.as_ref())?;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    if out.len() > MAX_SERVICE_CHANNELS {
        return Err(SpecError::invalid(
            field,
            format!(
                "too many {field} ({}; valid: at most {MAX_SERVICE_CHANNELS})",
                out.len()
            ),
        ));
    }
    Ok(out)
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

fn parse_emails(v: Option<&EmailList>) -> Result<Vec<lettre::Address>, SpecError> {
    let mut out: Vec<lettre::Address> = Vec::new();
    for r in v.map(EmailList::addresses).unwrap_or_default() {
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
        ("protocol", r.protocol.is_some()),
        ("host", r.host.is_some()),
        ("port", r.port.is_some()),
        ("path", r.path.is_some()),
    ];
    if let Some(url) = &r.url {
        if let Some((field, _)) = parts.iter().find(|(_, given)| *given) {
            return Err(SpecError::invalid(
                field,
                format!(
                    "give either url or protocol/host/port/path, not both (got url and {field})"
                ),
            ));
        }
        return Target::parse_url("url", url);
    }
    let Some(host) = &r.host else {
        return Err(SpecError::missing(
            "url",
            "missing target: give url (e.g. http://host:port/health) or host (with protocol, port, path)",
        ));
    };
    let protocol = match &r.protocol {
        Some(p) => match p.parse()? {
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
    let port = match r.port {
        Some(v) if protocol == Protocol::Icmp => {
            return Err(SpecError::invalid(
                "port",
                format!("invalid port {}: an ICMP target has no port", v.get()),
            ))
        }
        None => protocol.default_port(),
        Some(v) => v.valid().map_err(invalid_value("port"))?,
    };
    let path = match &r.path {
        None if protocol.is_http() => DEFAULT_PATH.to_string(),
        None => String::new(),
        Some(p) => {
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
            p.clone()
        }
    };
    let bad_host = || {
        SpecError::invalid(
            "host",
            format!("invalid host {host:?} (expected a DNS name or an IP address)"),
        )
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
    .map_err(|_| bad_host())?;
    if host.contains(['/', '@', '?', '#']) {
        return Err(bad_host());
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
            Some(v) => validate_name("name", v)?,
        };
        match r.kind.as_deref() {
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
        for (field, given) in [("period", r.period.is_some()), ("grace", r.grace.is_some())] {
            if given {
                return Err(SpecError::invalid(
                    field,
                    format!("{field} applies to \"kind\": \"heartbeat\" services only"),
                ));
            }
        }
        let target = parse_target(&r)?;
        let interval = bounded_or!(r, interval, DEFAULT_INTERVAL);
        let timeout = bounded_or!(r, timeout, default_timeout(interval));
        if timeout >= interval {
            return Err(SpecError::invalid(
                "timeout",
                format!("invalid timeout {timeout}: it must be smaller than the interval ({interval} seconds)"),
            ));
        }
        let expected_status = match &r.expected_status {
            None => ExpectedStatus::default(),
            Some(s) => s.parse()?,
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
            unhealthy_threshold: bounded_or!(r, unhealthy_threshold, DEFAULT_UNHEALTHY),
            healthy_threshold: bounded_or!(r, healthy_threshold, DEFAULT_HEALTHY),
            expected_status,
            tls_verify: r.tls_verify.unwrap_or(false),
            cert_warn_days: bounded_or!(r, cert_warn_days, DEFAULT_CERT_WARN_DAYS),
            target,
            heartbeat: None,
            channels: names("channels", &r.channels)?,
            tags: names("tags", &r.tags)?,
            depends_on: names("depends_on", &r.depends_on)?,
        })
    }
}

/// A `kind: heartbeat` registration: name, email, period and grace; the
/// fields of a polled target do not apply and are refused by name.
fn heartbeat_spec(name: String, r: &RegisterRequest) -> Result<ServiceSpec, SpecError> {
    use crate::heartbeat::{Heartbeat, DEFAULT_GRACE, DEFAULT_PERIOD, THRESHOLDS};
    let polled = [
        ("url", r.url.is_some()),
        ("protocol", r.protocol.is_some()),
        ("host", r.host.is_some()),
        ("port", r.port.is_some()),
        ("path", r.path.is_some()),
        ("timeout", r.timeout.is_some()),
        ("interval", r.interval.is_some()),
        ("unhealthy_threshold", r.unhealthy_threshold.is_some()),
        ("healthy_threshold", r.healthy_threshold.is_some()),
        ("expected_status", r.expected_status.is_some()),
        ("tls_verify", r.tls_verify.is_some()),
        ("cert_warn_days", r.cert_warn_days.is_some()),
    ];
    if let Some((field, _)) = polled.iter().find(|(_, given)| *given) {
        return Err(SpecError::invalid(
            field,
            format!("{field} does not apply to a heartbeat service (it is judged on each ping: give period and grace)"),
        ));
    }
    let heartbeat = Heartbeat {
        period: bounded_or!(r, period, DEFAULT_PERIOD),
        grace: bounded_or!(r, grace, DEFAULT_GRACE),
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
        channels: names("channels", &r.channels)?,
        tags: names("tags", &r.tags)?,
        depends_on: names("depends_on", &r.depends_on)?,
    })
}
