//! The raw options: [`RawOptions`] (one definition of every option, for
//! clap and for the TOML file), the [`Layer`]s they come in, and the
//! config file's parser. Nothing here validates a value.

use super::{ConfigError, Source};
use clap::parser::ValueSource;
use clap::ArgAction;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every option of `healthchecker serve`, as given: all optional (flags
/// false and lists empty unless given). Field docs are the `--help` text.
// The field docs are the `--help` text, not Markdown.
#[allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]
#[derive(clap::Args, serde::Serialize, serde::Deserialize, Debug, Default, Clone)]
#[serde(default, deny_unknown_fields)]
pub struct RawOptions {
    /// API listen address [default: 0.0.0.0:8484]
    #[arg(long, env = "HEALTHCHECKER_BIND", value_name = "ADDR")]
    pub bind: Option<String>,
    /// SQLite database file, or a postgres://user@host/db URL (a cluster of daemons sharing the work, see docs/cluster.md) [default: $XDG_DATA_HOME/healthchecker/healthchecker.db]
    #[arg(long, env = "HEALTHCHECKER_DB", value_name = "PATH|URL")]
    pub db: Option<String>,
    /// File holding the PostgreSQL password of a postgres:// --db (else HEALTHCHECKER_DB_PASSWORD)
    #[arg(long, env = "HEALTHCHECKER_DB_PASSWORD_FILE", value_name = "PATH")]
    pub db_password_file: Option<String>,
    /// This node's id in a cluster (--db postgres://…): unique among the nodes, stable across restarts [default: <hostname>:<API port>]
    #[arg(long, env = "HEALTHCHECKER_NODE_ID", value_name = "ID")]
    pub node_id: Option<String>,
    /// TOML config file (lower precedence than options and environment)
    #[arg(long, env = "HEALTHCHECKER_CONFIG", value_name = "PATH")]
    pub config: Option<String>,
    /// Log format: text or json [default: text]
    #[arg(long, env = "HEALTHCHECKER_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Do not advertise over mDNS
    #[arg(long, env = "HEALTHCHECKER_NO_MDNS", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_mdns: bool,
    /// Advertise only on this interface (repeatable)
    #[arg(
        long,
        env = "HEALTHCHECKER_MDNS_INTERFACE",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub mdns_interface: Vec<String>,
    /// mDNS instance name [default: HealthChecker on <hostname>]
    #[arg(long, env = "HEALTHCHECKER_MDNS_NAME", value_name = "NAME")]
    pub mdns_name: Option<String>,
    /// Do not advertise the seed client's _healthchecker._http._tcp name
    #[arg(long, env = "HEALTHCHECKER_NO_LEGACY_MDNS", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_legacy_mdns: bool,
    /// Monitor devices of this DNS-SD type found on the LAN without asking,
    /// e.g. _ipp._tcp (repeatable; default: none, devices are only listed)
    #[arg(
        long,
        env = "HEALTHCHECKER_AUTO_MONITOR",
        value_name = "TYPE",
        value_delimiter = ','
    )]
    pub auto_monitor: Vec<String>,
    /// Most probes running at once [default: 4096]
    #[arg(long, env = "HEALTHCHECKER_MAX_CONCURRENT_PROBES", value_name = "N")]
    pub max_concurrent_probes: Option<String>,
    /// Base URL of the dashboard, for links in mails [default: from --bind]
    #[arg(long, env = "HEALTHCHECKER_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// SMTP server: smtp://[user@]host:port[?tls=starttls] or smtps://[user@]host:465
    #[arg(long, env = "HEALTHCHECKER_SMTP_URL", value_name = "URL")]
    pub smtp_url: Option<String>,
    /// From address of mails
    #[arg(long, env = "HEALTHCHECKER_SMTP_FROM", value_name = "ADDR")]
    pub smtp_from: Option<String>,
    /// File holding the SMTP password (else HEALTHCHECKER_SMTP_PASSWORD)
    #[arg(long, env = "HEALTHCHECKER_SMTP_PASSWORD_FILE", value_name = "PATH")]
    pub smtp_password_file: Option<String>,
    /// At most one mail per service per this many seconds [default: 60]
    #[arg(long, env = "HEALTHCHECKER_NOTIFY_MIN_GAP", value_name = "SECONDS")]
    pub notify_min_gap: Option<String>,
    /// More notifications than this due for one channel or mail recipient within --digest-window become one digest; 0 disables [default: 5]
    #[arg(long, env = "HEALTHCHECKER_DIGEST_THRESHOLD", value_name = "N")]
    pub digest_threshold: Option<String>,
    /// The digest window, seconds (1-3600) [default: 30]
    #[arg(long, env = "HEALTHCHECKER_DIGEST_WINDOW", value_name = "SECONDS")]
    pub digest_window: Option<String>,
    /// Extra trusted CA certificates (PEM) for services with tls_verify
    #[arg(long, env = "HEALTHCHECKER_TLS_CA_FILE", value_name = "PATH")]
    pub tls_ca_file: Option<String>,
    /// Serve the API over HTTPS with this certificate chain (PEM); needs --tls-key
    #[arg(long, env = "HEALTHCHECKER_TLS_CERT", value_name = "PATH")]
    pub tls_cert: Option<String>,
    /// The private key (PEM) of --tls-cert
    #[arg(long, env = "HEALTHCHECKER_TLS_KEY", value_name = "PATH")]
    pub tls_key: Option<String>,
    /// open (anyone may register) or token (changes need the admin or the service's token) [default: open]
    #[arg(long, env = "HEALTHCHECKER_AUTH", value_name = "MODE")]
    pub auth: Option<String>,
    /// File holding the admin token (else HEALTHCHECKER_ADMIN_TOKEN)
    #[arg(long, env = "HEALTHCHECKER_ADMIN_TOKEN_FILE", value_name = "PATH")]
    pub admin_token_file: Option<String>,
    /// With --auth token: reads (dashboard, GET API, metrics) need the admin token too
    #[arg(long, env = "HEALTHCHECKER_PRIVATE", value_parser = clap::builder::BoolishValueParser::new())]
    pub private: bool,
    /// Serve a public, read-only status page at /status: service names, states and 90-day uptime only (open even with --private)
    #[arg(long, env = "HEALTHCHECKER_STATUS_PAGE", value_parser = clap::builder::BoolishValueParser::new())]
    pub status_page: bool,
    /// With --status-page: show only services carrying one of these tags (comma-separated) [default: every service]
    #[arg(
        long,
        env = "HEALTHCHECKER_STATUS_PAGE_TAGS",
        value_name = "TAG,...",
        value_delimiter = ','
    )]
    pub status_page_tags: Vec<String>,
    /// Probe only these addresses (CIDR list) [default: all]
    #[arg(long, env = "HEALTHCHECKER_ALLOW_TARGETS", value_name = "CIDR,...")]
    pub allow_targets: Option<String>,
    /// Never probe these addresses (CIDR list), e.g. 169.254.0.0/16
    #[arg(long, env = "HEALTHCHECKER_DENY_TARGETS", value_name = "CIDR,...")]
    pub deny_targets: Option<String>,
    /// Most services registered at once [default: 100000]
    #[arg(long, env = "HEALTHCHECKER_MAX_SERVICES", value_name = "N")]
    pub max_services: Option<String>,
    /// Raw checks kept per service, 10 to 100000 (failing and state-changing ones are also kept 7 days; older history is in hourly and daily roll-ups) [default: 100]
    #[arg(long, env = "HEALTHCHECKER_KEEP_CHECKS", value_name = "N")]
    pub keep_checks: Option<String>,
    /// State-changing requests (register, pause, resume, stop) per second per client address (IPv6: per /64), 0 for unlimited [default: 200]
    #[arg(long, env = "HEALTHCHECKER_REGISTER_RATE_LIMIT", value_name = "N")]
    pub register_rate_limit: Option<String>,
    /// Most API connections at once [default: 1024]
    #[arg(long, env = "HEALTHCHECKER_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<String>,
    /// Most API connections from one client address (IPv6: per /64) [default: 64]
    #[arg(
        long,
        env = "HEALTHCHECKER_MAX_CONNECTIONS_PER_CLIENT",
        value_name = "N"
    )]
    pub max_connections_per_client: Option<String>,
    /// Export per-service series on /metrics (true or false; false: only the aggregates) [default: true]
    #[arg(long, env = "HEALTHCHECKER_METRICS_PER_SERVICE", value_name = "BOOL")]
    pub metrics_per_service: Option<String>,
}

/// How an option takes values: a flag, one value, or a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Flag,
    One,
    List,
}

/// Every option's name (as on the command line) and kind, from
/// [`RawOptions`]' own definition.
fn options() -> Vec<(String, Kind)> {
    use clap::Args;
    RawOptions::augment_args(clap::Command::new("serve"))
        .get_arguments()
        .map(|a| {
            let kind = match a.get_action() {
                ArgAction::SetTrue => Kind::Flag,
                ArgAction::Append => Kind::List,
                _ => Kind::One,
            };
            (a.get_id().as_str().replace('_', "-"), kind)
        })
        .collect()
}

/// Every option the daemon understands, as on the command line (TOML keys
/// may use `_` or `-`).
pub fn keys() -> Vec<String> {
    options().into_iter().map(|(k, _)| k).collect()
}

/// One option given as text, for tests and embedding
/// ([`Config::resolve_with_env`](super::Config::resolve_with_env)).
#[derive(Debug, Clone)]
pub struct Setting {
    /// The option name without dashes, e.g. `bind`.
    pub key: String,
    /// Its values (several for repeatable options).
    pub values: Vec<String>,
    /// Where it came from.
    pub source: Source,
}

/// The options one source gives, and where each came from; keys as field
/// names (`log_format`).
#[derive(Debug, Default, Clone)]
pub struct Layer {
    values: toml::Table,
    pub(super) sources: BTreeMap<String, Source>,
}

impl Layer {
    /// The command line and environment, as clap parsed them into `raw`;
    /// `m` tells which option came from which (clap applied command line >
    /// environment).
    pub fn from_cli(raw: &RawOptions, m: &clap::ArgMatches) -> Layer {
        let mut layer = Layer::default();
        let toml::Value::Table(all) =
            toml::Value::try_from(raw).expect("options serialize to TOML")
        else {
            unreachable!("a struct serializes to a table")
        };
        for (key, value) in all {
            let source = match m.value_source(&key) {
                Some(ValueSource::CommandLine) => Source::Cli,
                Some(ValueSource::EnvVariable) => {
                    Source::Env(format!("HEALTHCHECKER_{}", key.to_uppercase()))
                }
                _ => continue,
            };
            layer.sources.insert(key.clone(), source);
            layer.values.insert(key, value);
        }
        layer
    }

    /// Options given as text (key with `-` or `_`, values, source); an
    /// unknown key or a flag that is not a boolean is an error.
    pub fn from_settings(settings: Vec<Setting>) -> Result<Layer, ConfigError> {
        let kinds = options();
        let mut layer = Layer::default();
        for s in settings.into_iter().filter(|s| !s.values.is_empty()) {
            let name = s.key.replace('_', "-");
            let Some((_, kind)) = kinds.iter().find(|(k, _)| *k == name) else {
                return Err(ConfigError::Invalid {
                    key: name,
                    value: s.values.join(","),
                    origin: s.source,
                    reason: "unknown option".into(),
                });
            };
            let last = s.values.last().cloned().unwrap_or_default();
            let value = match kind {
                Kind::Flag => toml::Value::Boolean(parse_bool(&last).map_err(|reason| {
                    ConfigError::Invalid {
                        key: name.clone(),
                        value: last.clone(),
                        origin: s.source.clone(),
                        reason,
                    }
                })?),
                Kind::One => toml::Value::String(last),
                Kind::List => {
                    toml::Value::Array(s.values.into_iter().map(toml::Value::String).collect())
                }
            };
            let key = name.replace('-', "_");
            layer.sources.insert(key.clone(), s.source);
            layer.values.insert(key, value);
        }
        Ok(layer)
    }

    /// `self` where it gives an option, else `lower`, option by option.
    pub fn over(mut self, lower: Layer) -> Layer {
        for (key, value) in lower.values {
            if !self.values.contains_key(&key) {
                if let Some(source) = lower.sources.get(&key) {
                    self.sources.insert(key.clone(), source.clone());
                }
                self.values.insert(key, value);
            }
        }
        self
    }

    /// The config file this layer names (`--config`).
    pub(super) fn config_file(&self) -> Option<PathBuf> {
        self.values
            .get("config")
            .and_then(|v| v.as_str())
            .map(PathBuf::from)
    }

    /// The merged options, typed.
    pub(super) fn options(&self) -> RawOptions {
        toml::Value::Table(self.values.clone())
            .try_into()
            .expect("layers hold only known options of the right kind")
    }
}

pub(super) fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

pub(super) fn read_file_layer(path: &Path) -> Result<Layer, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    parse_file_layer(&text, path)
}

/// Parses the text of a TOML config file into a layer (`path` only names
/// the source in errors). Public for the fuzzer.
pub fn parse_file_layer(text: &str, path: &Path) -> Result<Layer, ConfigError> {
    let bad = |reason: String| ConfigError::File {
        path: path.to_path_buf(),
        reason,
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| bad(e.to_string()))?;
    let keys = keys();
    let mut settings = Vec::new();
    for (k, v) in table {
        let key = k.replace('_', "-");
        if !keys.contains(&key) || key == "config" {
            return Err(bad(format!(
                "unknown key {k:?} (known: {})",
                keys.join(", ")
            )));
        }
        let scalar = |v: &toml::Value| match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            other => Err(bad(format!("key {k:?}: unsupported value {other}"))),
        };
        let values = match &v {
            toml::Value::Array(items) => items.iter().map(scalar).collect::<Result<_, _>>()?,
            other => vec![scalar(other)?],
        };
        settings.push(Setting {
            key,
            values,
            source: Source::File(path.to_path_buf()),
        });
    }
    Layer::from_settings(settings)
}
