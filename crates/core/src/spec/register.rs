//! The registration as it arrives: one typed, `deny_unknown_fields` struct
//! ([`RegisterRequest`]) that the daemon decodes, the client encodes and
//! the OpenAPI document describes (feature `openapi`).
//!
//! Decoding goes through `serde_path_to_error`, so a refusal names the
//! field it is about; [`super::validate`] then applies the rules across
//! fields.

use super::values::{self, Interval, Period, Port, Threshold, Timeout};
use super::{CertWarnDays, Grace, SpecError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `email`: one address, a comma-separated list, or a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum EmailList {
    /// One address or a comma-separated list.
    One(String),
    /// A list of addresses.
    Many(Vec<String>),
}

impl EmailList {
    /// The addresses as written, split at commas, blanks dropped.
    pub fn addresses(&self) -> Vec<&str> {
        let all: Vec<&str> = match self {
            EmailList::One(s) => s.split(',').collect(),
            EmailList::Many(v) => v.iter().map(String::as_str).collect(),
        };
        all.into_iter()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }
}

impl<'de> Deserialize<'de> for EmailList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match &v {
            Value::String(s) => return Ok(EmailList::One(s.clone())),
            Value::Array(items) => {
                if let Some(list) = items
                    .iter()
                    .map(|i| i.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                {
                    return Ok(EmailList::Many(list));
                }
            }
            _ => {}
        }
        Err(serde::de::Error::custom(format!(
            "{} (expected an address or a list of addresses)",
            values::describe(&v)
        )))
    }
}

/// A registration (SPEC section 2), as received or as a client sends it;
/// [`super::ServiceSpec::try_from`] validates it. Give the target as `url`,
/// or as `protocol`, `host`, `port`, `path`. Numbers may also be sent as
/// strings. Unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = RegisterBody))]
#[serde(default, deny_unknown_fields)]
pub struct RegisterRequest {
    /// Unique name, 1 to 200 characters (spaces allowed).
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "values::text"
    )]
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 200, example = "web one")
    )]
    pub name: Option<String>,
    /// `http://host:port/path`, `https://…`, `tcp://host:port`,
    /// `ssl://host:port`, `tls://host:port`, `icmp://host` or
    /// `dns://resolver/name?type=A`, checked as written
    /// (`http://nas:5000` checks `/`).
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "values::text"
    )]
    #[cfg_attr(
        feature = "openapi",
        schema(example = "http://192.168.1.20:8080/health")
    )]
    pub url: Option<String>,
    /// `TCP`, `HTTP`, `HTTPS`, `SSL` (or `TLS`) or `ICMP`; default TCP, or
    /// HTTP when a path is given.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "values::text"
    )]
    pub protocol: Option<String>,
    /// Host name or IP address.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "values::text"
    )]
    pub host: Option<String>,
    /// 1 to 65535; default 80 (HTTP, TCP) or 443 (HTTPS, SSL).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(inline))]
    pub port: Option<Port>,
    /// Ping path (HTTP/HTTPS), starts with `/`; default `/health` (separate
    /// fields only).
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "values::text"
    )]
    pub path: Option<String>,
    /// Mail recipients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailList>,
    /// Response timeout, 2 to 60 seconds, below the interval; default 5, or
    /// interval − 1 when smaller.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(inline))]
    pub timeout: Option<Timeout>,
    /// Seconds between checks, 5 to 300; default 30.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(inline))]
    pub interval: Option<Interval>,
    /// Consecutive failures that make it unhealthy, 2 to 10; default 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(inline))]
    pub unhealthy_threshold: Option<Threshold>,
    /// Consecutive successes that make it healthy again, 2 to 10; default 10.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(inline))]
    pub healthy_threshold: Option<Threshold>,
    /// Acceptable HTTP statuses, e.g. `200-399` or `200,204`; default `200`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "values::status_text"
    )]
    pub expected_status: Option<String>,
    /// Require a trusted certificate; default false.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "values::loose_bool"
    )]
    pub tls_verify: Option<bool>,
    /// 0 to 365 (0: off); default 14.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(inline))]
    pub cert_warn_days: Option<CertWarnDays>,
    /// `check` (default: a polled target) or `heartbeat` (the service pings
    /// its `ping_url`; no target, timeout, interval or thresholds).
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "values::text"
    )]
    #[cfg_attr(feature = "openapi", schema(example = "heartbeat"))]
    pub kind: Option<String>,
    /// Heartbeat: seconds between runs, 60 to 31536000 (365 d); default 86400.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(inline))]
    pub period: Option<Period>,
    /// Heartbeat: seconds of lateness tolerated, 60 to 2592000 (30 d);
    /// default 3600.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(inline))]
    pub grace: Option<Grace>,
    /// Names of notification channels (`/api/v1/channels`), each existing;
    /// absent or empty: every channel created with `"default": true`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "values::names"
    )]
    pub channels: Option<Vec<String>>,
    /// Tags, for silences (`/api/v1/silences`).
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "values::names"
    )]
    pub tags: Option<Vec<String>>,
    /// Names of parent services: while one is failing, this service's
    /// notifications are held; a cycle is refused.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "values::names"
    )]
    pub depends_on: Option<Vec<String>>,
}

impl RegisterRequest {
    /// Decodes a v1 JSON body. Unknown fields are refused (a typo such as
    /// `intervall` must not silently fall back to the default).
    pub fn from_json(body: &[u8]) -> Result<Self, SpecError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| SpecError::body(format!("malformed JSON body: {e}")))?;
        Self::from_value(value)
    }

    /// Builds a request from a JSON object (a form's fields, a suggestion),
    /// refusing unknown keys.
    pub fn from_map(map: Map<String, Value>) -> Result<Self, SpecError> {
        Self::from_value(Value::Object(map))
    }

    /// Decodes a JSON value; the error names the field it is about.
    pub fn from_value(value: Value) -> Result<Self, SpecError> {
        if !value.is_object() {
            return Err(SpecError::body("the body must be a JSON object"));
        }
        serde_path_to_error::deserialize(value).map_err(|e| {
            let field = match e.path().iter().next() {
                Some(serde_path_to_error::Segment::Map { key }) => key.clone(),
                _ => String::new(),
            };
            // Errors from a `serde_json::Value` carry no position: the
            // message is exactly what the field's reader said.
            let message = e.into_inner().to_string();
            match message.strip_prefix("unknown field `") {
                Some(rest) => {
                    let known = rest.split_once(", ").map_or("", |(_, k)| k);
                    SpecError {
                        code: "unknown_field",
                        message: format!("unknown field {field:?} ({known})"),
                        field,
                    }
                }
                None if field.is_empty() => SpecError::body(message),
                None => SpecError::invalid(&field, format!("invalid {field} {message}")),
            }
        })
    }
}
