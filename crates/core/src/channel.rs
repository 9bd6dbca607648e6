//! Notification channels as named objects (SPEC section 13): the validated
//! form of `POST /api/v1/channels`, with errors naming the field.
//!
//! Pure: no I/O. The daemon stores a [`Channel`] and delivers to it; this
//! module only decides what a valid channel is. Secrets (webhook secret,
//! tokens, routing keys) live in [`Secret`], whose `Debug` never shows them.

pub use crate::spec::validate::{validate_names, MAX_SERVICE_CHANNELS};
use crate::spec::{validate_name, SpecError};
use serde_json::{Map, Value};
use std::fmt;

/// Default Telegram Bot API base.
pub const TELEGRAM_URL: &str = "https://api.telegram.org";
/// Default PagerDuty Events API v2 endpoint.
pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// Default MQTT topic prefix of the retained state.
pub const MQTT_TOPIC_PREFIX: &str = "healthchecker";
/// Default Home Assistant discovery prefix.
pub const MQTT_DISCOVERY_PREFIX: &str = "homeassistant";
/// Longest accepted URL, token or id.
const MAX_FIELD_LEN: usize = 2048;

/// What a channel delivers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// Mail to `to` over the configured SMTP.
    Email,
    /// A signed JSON `POST`.
    Webhook,
    /// An ntfy topic.
    Ntfy,
    /// A Slack incoming webhook (and Mattermost, Rocket.Chat, Discord `/slack`).
    Slack,
    /// A Discord webhook.
    Discord,
    /// The Telegram Bot API.
    Telegram,
    /// A Gotify server.
    Gotify,
    /// A Matrix room.
    Matrix,
    /// PagerDuty Events API v2.
    Pagerduty,
    /// An MQTT broker: retained state and Home Assistant discovery.
    Mqtt,
}

impl ChannelKind {
    /// Every kind this build delivers.
    pub const ALL: [ChannelKind; 10] = [
        ChannelKind::Email,
        ChannelKind::Webhook,
        ChannelKind::Ntfy,
        ChannelKind::Slack,
        ChannelKind::Discord,
        ChannelKind::Telegram,
        ChannelKind::Gotify,
        ChannelKind::Matrix,
        ChannelKind::Pagerduty,
        ChannelKind::Mqtt,
    ];

    /// The name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Email => "email",
            ChannelKind::Webhook => "webhook",
            ChannelKind::Ntfy => "ntfy",
            ChannelKind::Slack => "slack",
            ChannelKind::Discord => "discord",
            ChannelKind::Telegram => "telegram",
            ChannelKind::Gotify => "gotify",
            ChannelKind::Matrix => "matrix",
            ChannelKind::Pagerduty => "pagerduty",
            ChannelKind::Mqtt => "mqtt",
        }
    }

    /// The kind's own fields beside `name`, `kind`, `default`, and the name
    /// of its secret field, if it has one.
    fn fields(self) -> (&'static [&'static str], Option<&'static str>) {
        match self {
            ChannelKind::Email => (&["to"], None),
            ChannelKind::Webhook => (&["url", "secret"], Some("secret")),
            ChannelKind::Ntfy => (&["url", "token"], Some("token")),
            ChannelKind::Slack | ChannelKind::Discord => (&["url"], None),
            ChannelKind::Telegram => (&["url", "token", "chat_id"], Some("token")),
            ChannelKind::Gotify => (&["url", "token"], Some("token")),
            ChannelKind::Matrix => (&["url", "token", "room"], Some("token")),
            ChannelKind::Pagerduty => (&["url", "routing_key"], Some("routing_key")),
            ChannelKind::Mqtt => (
                &[
                    "url",
                    "username",
                    "password",
                    "topic_prefix",
                    "discovery_prefix",
                ],
                Some("password"),
            ),
        }
    }

    /// Whether the secret must be given (ntfy's token is optional).
    fn secret_required(self) -> bool {
        !matches!(self, ChannelKind::Ntfy | ChannelKind::Mqtt)
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ChannelKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ChannelKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = ChannelKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown kind {s:?} (known: {})", known.join(", "))
            })
    }
}

/// A write-only credential: `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The credential itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A validated channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// Unique name (the rules of a service name).
    pub name: String,
    /// What it delivers to.
    pub kind: ChannelKind,
    /// Used by every service that names no channels.
    pub default: bool,
    /// Endpoint (`http`/`https`); the kind's default when it has one.
    pub url: Option<String>,
    /// E-mail recipients (`email`).
    pub to: Vec<lettre::Address>,
    /// Telegram chat id.
    pub chat_id: Option<String>,
    /// Matrix room id.
    pub room: Option<String>,
    /// The kind's credential (`secret`, `token`, `routing_key`, `password`).
    pub secret: Option<Secret>,
    /// MQTT user name.
    pub username: Option<String>,
    /// MQTT topic prefix of the retained state (default `healthchecker`).
    pub topic_prefix: Option<String>,
    /// Home Assistant discovery prefix (default `homeassistant`).
    pub discovery_prefix: Option<String>,
}

impl Channel {
    /// Validates a `POST /api/v1/channels` body. `existing` is the stored
    /// channel of that name: an update that omits the secret keeps it
    /// (secrets are write-only, so a client cannot send it back).
    pub fn from_json(
        map: &Map<String, Value>,
        existing: Option<&Channel>,
    ) -> Result<Channel, SpecError> {
        let name = match map.get("name") {
            Some(Value::String(s)) => validate_name("name", s)?,
            Some(_) => return Err(SpecError::invalid("name", "name must be a string")),
            None => return Err(SpecError::missing("name", "missing name")),
        };
        let kind: ChannelKind = match map.get("kind") {
            Some(Value::String(s)) => s
                .parse()
                .map_err(|e: String| SpecError::invalid("kind", e))?,
            Some(_) => return Err(SpecError::invalid("kind", "kind must be a string")),
            None => return Err(SpecError::missing("kind", "missing kind")),
        };
        let (fields, secret_field) = kind.fields();
        if let Some(k) = map.keys().find(|k| {
            !["name", "kind", "default"].contains(&k.as_str()) && !fields.contains(&k.as_str())
        }) {
            return Err(SpecError {
                code: "unknown_field",
                field: k.clone(),
                message: format!(
                    "unknown field {k:?} for kind {kind} (known: name, kind, default, {})",
                    fields.join(", ")
                ),
            });
        }
        let default = match map.get("default") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(SpecError::invalid(
                    "default",
                    "default must be true or false",
                ))
            }
        };
        let text = |f: &str| -> Result<Option<String>, SpecError> {
            match map.get(f) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
                Some(Value::String(s))
                    if s.len() > MAX_FIELD_LEN || s.chars().any(char::is_control) =>
                {
                    Err(SpecError::invalid(
                        f,
                        format!(
                            "invalid {f}: at most {MAX_FIELD_LEN} bytes, no control characters"
                        ),
                    ))
                }
                Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
                Some(Value::Number(n)) if f == "chat_id" => Ok(Some(n.to_string())),
                Some(_) => Err(SpecError::invalid(f, format!("{f} must be a string"))),
            }
        };
        let url = match text("url")? {
            Some(u) => Some(check_url(&u, kind)?),
            None => match kind {
                ChannelKind::Telegram => Some(TELEGRAM_URL.to_string()),
                ChannelKind::Pagerduty => Some(PAGERDUTY_URL.to_string()),
                ChannelKind::Email => None,
                _ => {
                    return Err(SpecError::missing(
                        "url",
                        format!("missing url (a {kind} channel needs one)"),
                    ))
                }
            },
        };
        let secret = match secret_field {
            Some(f) => match text(f)? {
                Some(s) => Some(Secret::new(s)),
                None => match existing
                    .filter(|e| e.kind == kind)
                    .and_then(|e| e.secret.clone())
                {
                    Some(kept) => Some(kept),
                    None if kind.secret_required() => {
                        return Err(SpecError::missing(
                            f,
                            format!("missing {f} (a {kind} channel needs one)"),
                        ))
                    }
                    None => None,
                },
            },
            None => None,
        };
        let mut channel = Channel {
            name,
            kind,
            default,
            url,
            to: Vec::new(),
            chat_id: None,
            room: None,
            secret,
            username: None,
            topic_prefix: None,
            discovery_prefix: None,
        };
        match kind {
            ChannelKind::Email => {
                channel.to = parse_to(map.get("to"))?;
            }
            ChannelKind::Telegram => {
                channel.chat_id = Some(
                    text("chat_id")?
                        .ok_or_else(|| SpecError::missing("chat_id", "missing chat_id"))?,
                );
            }
            ChannelKind::Matrix => {
                channel.room = Some(text("room")?.ok_or_else(|| {
                    SpecError::missing("room", "missing room (a room id such as !abc:example.org)")
                })?);
            }
            ChannelKind::Mqtt => {
                channel.username = text("username")?;
                for (f, default) in [
                    ("topic_prefix", MQTT_TOPIC_PREFIX),
                    ("discovery_prefix", MQTT_DISCOVERY_PREFIX),
                ] {
                    let p = text(f)?.unwrap_or_else(|| default.to_string());
                    if p.contains(['+', '#']) || p.starts_with('/') || p.ends_with('/') {
                        return Err(SpecError::invalid(
                            f,
                            format!("invalid {f} {p:?}: no wildcards (+, #) and no leading or trailing /"),
                        ));
                    }
                    match f {
                        "topic_prefix" => channel.topic_prefix = Some(p),
                        _ => channel.discovery_prefix = Some(p),
                    }
                }
            }
            _ => {}
        }
        Ok(channel)
    }
}

/// An endpoint must be `http` or `https` (`mqtt` or `mqtts` for an MQTT
/// broker) with a host.
fn check_url(s: &str, kind: ChannelKind) -> Result<String, SpecError> {
    let u = url::Url::parse(s)
        .map_err(|e| SpecError::invalid("url", format!("invalid url {s:?}: {e}")))?;
    let schemes: &[&str] = if kind == ChannelKind::Mqtt {
        &["mqtt", "mqtts"]
    } else {
        &["http", "https"]
    };
    if !schemes.contains(&u.scheme()) {
        return Err(SpecError::invalid(
            "url",
            format!(
                "invalid url {s:?}: the scheme must be {}",
                schemes.join(" or ")
            ),
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(SpecError::invalid(
            "url",
            format!("invalid url {s:?}: missing host"),
        ));
    }
    if u.password().is_some() || !u.username().is_empty() {
        return Err(SpecError::invalid(
            "url",
            "do not put credentials in the url: use the kind's token field",
        ));
    }
    Ok(s.trim_end_matches('/').to_string())
}

fn parse_to(v: Option<&Value>) -> Result<Vec<lettre::Address>, SpecError> {
    let raw: Vec<&str> = match v {
        Some(Value::String(s)) => s.split(',').collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .ok_or_else(|| SpecError::invalid("to", "to must list addresses"))
            })
            .collect::<Result<_, _>>()?,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => {
            return Err(SpecError::invalid(
                "to",
                "to must be an address or a list of addresses",
            ))
        }
    };
    let mut out = Vec::new();
    for r in raw.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let a: lettre::Address = r
            .parse()
            .map_err(|e| SpecError::invalid("to", format!("invalid email address {r:?}: {e}")))?;
        if !out.contains(&a) {
            out.push(a);
        }
    }
    if out.is_empty() {
        return Err(SpecError::missing(
            "to",
            "missing to (an email channel needs at least one address)",
        ));
    }
    Ok(out)
}

/// Validates a service's `channels` list: names, no duplicates, bounded.
/// Whether each exists is the daemon's question.
pub fn parse_channel_names(v: Option<&Value>) -> Result<Vec<String>, SpecError> {
    parse_names("channels", v)
}

/// Validates a list of names (`channels`, `tags`, a silence's `services`):
/// each a valid name, duplicates dropped, at most [`MAX_SERVICE_CHANNELS`].
pub fn parse_names(field: &str, v: Option<&Value>) -> Result<Vec<String>, SpecError> {
    let items = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(SpecError::invalid(
                field,
                format!("{field} must be a list of names"),
            ))
        }
    };
    let names = items
        .iter()
        .map(|i| match i {
            Value::String(s) => Ok(s.as_str()),
            _ => Err(SpecError::invalid(
                field,
                format!("{field} must be a list of names"),
            )),
        })
        .collect::<Result<Vec<&str>, _>>()?;
    validate_names(field, &names)
}

#[cfg(test)]
mod tests;
