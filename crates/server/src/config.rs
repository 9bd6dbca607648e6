//! Daemon configuration: raw settings from four layers, validated once.
//!
//! Precedence (SPEC section 8): command line > environment
//! (`HEALTHCHECKER_*`) > config file (`--config`, TOML) > defaults. The CLI
//! crate turns clap's matches into [`Setting`]s (clap knows whether a value
//! came from the command line or the environment); this module reads the
//! TOML file, picks the winning layer per key and parses it. An invalid value
//! is a [`ConfigError`] that names the option, the value and where it came
//! from.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every key the daemon understands (TOML keys may use `_` or `-`).
pub const KEYS: &[&str] = &[
    "bind",
    "db",
    "config",
    "log-format",
    "no-mdns",
    "mdns-interface",
    "mdns-name",
    "no-legacy-mdns",
    "auto-monitor",
    "max-concurrent-probes",
    "public-url",
    "smtp-url",
    "smtp-from",
    "smtp-password-file",
    "notify-min-gap",
    "tls-ca-file",
    "tls-cert",
    "tls-key",
    "auth",
    "admin-token-file",
    "private",
    "status-page",
    "status-page-tags",
    "allow-targets",
    "deny-targets",
    "max-services",
    "keep-checks",
    "register-rate-limit",
    "max-connections",
    "max-connections-per-client",
];

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The command line.
    Cli,
    /// An environment variable.
    Env(String),
    /// The TOML config file.
    File(PathBuf),
    /// The built-in default.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Cli => write!(f, "command line"),
            Source::Env(v) => write!(f, "environment variable {v}"),
            Source::File(p) => write!(f, "config file {}", p.display()),
            Source::Default => write!(f, "default"),
        }
    }
}

/// One raw setting from the command line or the environment.
#[derive(Debug, Clone)]
pub struct Setting {
    /// The option name without dashes, e.g. `bind`.
    pub key: String,
    /// Its values (several for repeatable options).
    pub values: Vec<String>,
    /// Where it came from.
    pub source: Source,
}

impl Setting {
    /// The items of its comma-separated values (a repeatable option, or
    /// one value listing several), trimmed, empty ones dropped.
    fn items(&self) -> impl Iterator<Item = &str> {
        self.values
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value that does not parse or is out of range.
    #[error("invalid value {value:?} for --{key} (from {origin}): {reason}")]
    Invalid {
        /// The option.
        key: String,
        /// The value given.
        value: String,
        /// Where it came from.
        origin: Source,
        /// What is expected.
        reason: String,
    },
    /// The config file cannot be read.
    #[error("cannot read config file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The config file is not valid TOML or has an unknown key.
    #[error("config file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// SMTP settings for the mail sender. `Debug` shows no password.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    /// `smtp://`, `smtps://` URL with optional user and `?tls=starttls`.
    pub url: String,
    /// The From address.
    pub from: String,
    /// The password (from `HEALTHCHECKER_SMTP_PASSWORD` or a file).
    pub password: Option<String>,
}

impl fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("url", &crate::notify::without_password(&self.url))
            .field("from", &self.from)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The API's own certificate (`--tls-cert`, `--tls-key`): both PEM files,
/// checked to exist at start; read and parsed by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTls {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The validated daemon configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// API listen address.
    pub bind: SocketAddr,
    /// SQLite file.
    pub db: PathBuf,
    /// Log format.
    pub log_format: LogFormat,
    /// Advertise over mDNS.
    pub mdns: bool,
    /// Interfaces to advertise on (empty: every up, non-loopback one).
    pub mdns_interfaces: Vec<String>,
    /// mDNS instance name (default `HealthChecker on <hostname>`).
    pub mdns_name: Option<String>,
    /// Also advertise the seed client's `_healthchecker._http._tcp` name.
    pub legacy_mdns: bool,
    /// DNS-SD types (`_ipp._tcp`) whose devices found on the LAN are
    /// monitored without asking (SPEC section 16); empty: none ever is.
    pub auto_monitor: Vec<String>,
    /// Most probes at once.
    pub max_concurrent_probes: usize,
    /// Base URL for links in mails (default from the bind address).
    pub public_url: String,
    /// SMTP, if configured.
    pub smtp: Option<SmtpConfig>,
    /// At most one mail per service per this gap.
    pub notify_min_gap: Duration,
    /// Extra trusted roots (PEM) for services with `tls_verify`.
    pub tls_ca_file: Option<PathBuf>,
    /// Serve the API over HTTPS with this certificate chain and key (PEM).
    pub api_tls: Option<ApiTls>,
    /// `open` (anyone may register) or `token`.
    pub auth: AuthMode,
    /// The admin token (token mode), from `HEALTHCHECKER_ADMIN_TOKEN` or
    /// `--admin-token-file`. Never logged: `Debug` shows it redacted.
    pub admin_token: Option<AdminToken>,
    /// Reads (dashboard, GET API, metrics) need the admin token too.
    pub private: bool,
    /// Serve the public, read-only status page `/status` (names, states
    /// and uptime only; open even with `--private`).
    pub status_page: bool,
    /// With `status_page`: show only services carrying one of these tags
    /// (`--status-page-tags a,b`); empty: every service.
    pub status_page_tags: Vec<String>,
    /// Which target addresses probes may connect to.
    pub targets: crate::probe::TargetPolicy,
    /// Most services registered at once.
    pub max_services: usize,
    /// Raw checks kept per service (SPEC section 18), within
    /// [`crate::store::KEEP_CHECKS_RANGE`].
    pub keep_checks: i64,
    /// State-changing requests (registrations, pauses, resumes, deletes,
    /// legacy calls) per second per client address, IPv6 per /64 (0:
    /// unlimited).
    pub register_rate_limit: u32,
    /// Most API connections at once.
    pub max_connections: usize,
    /// Most API connections from one client address (IPv6: one /64).
    pub max_connections_per_client: usize,
}

/// Who may change what (SPEC section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Anyone on the network may register (the seed's behaviour).
    Open,
    /// Mutations need the admin token or the service's own token.
    Token,
}

/// The admin token; `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(pub String);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Default cap on registered services (SPEC section 11's scale).
pub const DEFAULT_MAX_SERVICES: usize = 100_000;
/// Default state-changing requests (registrations, pauses, deletes...) per
/// second per client: a home lab registers a handful, a script a few
/// hundred at start-up; a flood is cut to this.
pub const DEFAULT_REGISTER_RATE: u32 = 200;
/// Default cap on concurrent API connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default cap on concurrent API connections from one client: a browser
/// opens six, a busy script a few dozen; one host cannot take the whole
/// [`DEFAULT_MAX_CONNECTIONS`].
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 64;

/// Default listen address (SPEC section 5).
pub const DEFAULT_BIND: &str = "0.0.0.0:8484";
/// Default probe concurrency: enough for 10,000 checks/s of 100 ms each
/// with room for slow targets, far below the file-descriptor limit we raise
/// at start-up.
pub const DEFAULT_MAX_CONCURRENT_PROBES: usize = 4096;
/// Default flap-damping gap, seconds.
pub const DEFAULT_NOTIFY_MIN_GAP: u64 = 60;

/// The default database path: `$XDG_DATA_HOME/healthchecker/healthchecker.db`
/// (`~/.local/share/...` when unset).
pub fn default_db_path() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("healthchecker")
        .join("healthchecker.db")
}

struct Layers {
    cli_env: BTreeMap<String, Setting>,
    file: BTreeMap<String, Setting>,
}

impl Layers {
    fn get(&self, key: &str) -> Option<&Setting> {
        self.cli_env.get(key).or_else(|| self.file.get(key))
    }

    fn one(&self, key: &str) -> Option<(&str, &Source)> {
        self.get(key)
            .and_then(|s| s.values.last().map(|v| (v.as_str(), &s.source)))
    }

    fn parse<T>(
        &self,
        key: &str,
        default: T,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.one(key) {
            None => Ok(default),
            Some((v, src)) => f(v).map_err(|reason| ConfigError::Invalid {
                key: key.into(),
                value: v.into(),
                origin: src.clone(),
                reason,
            }),
        }
    }

    fn flag(&self, key: &str) -> Result<bool, ConfigError> {
        self.parse(key, false, parse_bool)
    }

    fn string(&self, key: &str) -> Option<String> {
        self.one(key)
            .map(|(v, _)| v.to_string())
            .filter(|v| !v.is_empty())
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

fn read_file_layer(path: &Path) -> Result<BTreeMap<String, Setting>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    parse_file_layer(&text, path)
}

/// Parses the text of a TOML config file into settings (`path` only names
/// the source in errors). Public for the fuzzer.
pub fn parse_file_layer(text: &str, path: &Path) -> Result<BTreeMap<String, Setting>, ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let mut out = BTreeMap::new();
    for (k, v) in table {
        let key = k.replace('_', "-");
        if !KEYS.contains(&key.as_str()) || key == "config" {
            return Err(ConfigError::File {
                path: path.to_path_buf(),
                reason: format!("unknown key {k:?} (known: {})", KEYS.join(", ")),
            });
        }
        let scalar = |v: &toml::Value| match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            other => Err(ConfigError::File {
                path: path.to_path_buf(),
                reason: format!("key {k:?}: unsupported value {other}"),
            }),
        };
        let values = match &v {
            toml::Value::Array(items) => items.iter().map(scalar).collect::<Result<_, _>>()?,
            other => vec![scalar(other)?],
        };
        out.insert(
            key.clone(),
            Setting {
                key,
                values,
                source: Source::File(path.to_path_buf()),
            },
        );
    }
    Ok(out)
}

impl Config {
    /// Resolves the configuration from command-line/environment settings,
    /// reading the config file they name (`config`), if any.
    pub fn resolve(settings: Vec<Setting>) -> Result<Config, ConfigError> {
        Self::resolve_with_env(settings, |k| std::env::var(k).ok())
    }

    /// As [`Config::resolve`], with the environment given (for tests).
    pub fn resolve_with_env(
        settings: Vec<Setting>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let cli_env: BTreeMap<String, Setting> = settings
            .into_iter()
            .filter(|s| !s.values.is_empty())
            .map(|s| (s.key.clone(), s))
            .collect();
        let file = match cli_env.get("config").and_then(|s| s.values.last()) {
            Some(p) => read_file_layer(Path::new(p))?,
            None => BTreeMap::new(),
        };
        let l = Layers { cli_env, file };
        let bind = l.parse("bind", DEFAULT_BIND.parse().expect("valid default"), |v| {
            v.parse::<SocketAddr>().map_err(|_| {
                "expected an address and port such as 0.0.0.0:8484 or [::]:8484".into()
            })
        })?;
        let db = l.parse("db", default_db_path(), |v| {
            if v.trim().is_empty() {
                Err("expected a file path".into())
            } else {
                Ok(PathBuf::from(v))
            }
        })?;
        let log_format = l.parse("log-format", LogFormat::Text, |v| match v {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected text or json".into()),
        })?;
        let max_concurrent_probes = l.parse(
            "max-concurrent-probes",
            DEFAULT_MAX_CONCURRENT_PROBES,
            |v| match v.parse::<usize>() {
                Ok(n) if (1..=65_536).contains(&n) => Ok(n),
                _ => Err("expected a whole number from 1 to 65536".into()),
            },
        )?;
        let notify_min_gap = l.parse(
            "notify-min-gap",
            Duration::from_secs(DEFAULT_NOTIFY_MIN_GAP),
            |v| match v.parse::<u64>() {
                Ok(n) if n <= 86_400 => Ok(Duration::from_secs(n)),
                _ => Err("expected seconds from 0 to 86400".into()),
            },
        )?;
        let default_public = {
            // Bound to every address: the machine's mDNS name, which the
            // daemon's own advertisement makes resolvable on the LAN.
            let host = if bind.ip().is_unspecified() {
                hostname::get()
                    .ok()
                    .and_then(|h| h.into_string().ok())
                    .map(|h| h.split('.').next().unwrap_or("").to_string())
                    .filter(|h| !h.is_empty())
                    .map(|h| format!("{h}.local"))
                    .unwrap_or_else(|| "localhost".to_string())
            } else if bind.is_ipv6() {
                format!("[{}]", bind.ip())
            } else {
                bind.ip().to_string()
            };
            format!("http://{host}:{}", bind.port())
        };
        let public_url = l.parse("public-url", default_public, |v| {
            let u = url::Url::parse(v).map_err(|e| format!("expected an http(s) URL: {e}"))?;
            if u.scheme() != "http" && u.scheme() != "https" {
                return Err("expected an http(s) URL".into());
            }
            Ok(v.trim_end_matches('/').to_string())
        })?;
        let smtp = match l.string("smtp-url") {
            None => None,
            Some(url) => {
                let (_, src) = l.one("smtp-url").expect("present");
                crate::notify::validate_smtp_url(&url).map_err(|reason| ConfigError::Invalid {
                    key: "smtp-url".into(),
                    value: crate::notify::without_password(&url),
                    origin: src.clone(),
                    reason,
                })?;
                let from = l.parse("smtp-from", String::new(), |v| {
                    v.parse::<lettre::message::Mailbox>()
                        .map(|_| v.to_string())
                        .map_err(|e| format!("expected a mail address: {e}"))
                })?;
                let from = if from.is_empty() {
                    "healthchecker <healthchecker@localhost>".to_string()
                } else {
                    from
                };
                let password = match l.one("smtp-password-file") {
                    Some((p, src)) => Some(
                        std::fs::read_to_string(p)
                            .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                            .map_err(|e| ConfigError::Invalid {
                                key: "smtp-password-file".into(),
                                value: p.into(),
                                origin: src.clone(),
                                reason: e.to_string(),
                            })?,
                    ),
                    None => env("HEALTHCHECKER_SMTP_PASSWORD"),
                };
                Some(SmtpConfig {
                    url,
                    from,
                    password,
                })
            }
        };
        let tls_ca_file = l.parse("tls-ca-file", None, |v| {
            let p = PathBuf::from(v);
            if p.is_file() {
                Ok(Some(p))
            } else {
                Err("no such file".into())
            }
        })?;
        let file = |v: &str| {
            let p = PathBuf::from(v);
            if p.is_file() {
                Ok(Some(p))
            } else {
                Err("no such file".to_string())
            }
        };
        let tls_cert = l.parse("tls-cert", None, file)?;
        let tls_key = l.parse("tls-key", None, file)?;
        let api_tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => Some(ApiTls { cert, key }),
            (None, None) => None,
            (cert, _) => {
                let (given, missing) = if cert.is_some() {
                    ("tls-cert", "tls-key")
                } else {
                    ("tls-key", "tls-cert")
                };
                let (v, src) = l.one(given).expect("given");
                return Err(ConfigError::Invalid {
                    key: given.into(),
                    value: v.to_string(),
                    origin: src.clone(),
                    reason: format!("--{given} needs --{missing} as well"),
                });
            }
        };
        let auth = l.parse("auth", AuthMode::Open, |v| match v {
            "open" => Ok(AuthMode::Open),
            "token" => Ok(AuthMode::Token),
            _ => Err("expected open or token".into()),
        })?;
        let admin_token = match l.one("admin-token-file") {
            Some((p, src)) => Some(
                std::fs::read_to_string(p)
                    .map(|s| s.trim().to_string())
                    .map_err(|e| ConfigError::Invalid {
                        key: "admin-token-file".into(),
                        value: p.into(),
                        origin: src.clone(),
                        reason: e.to_string(),
                    })?,
            ),
            None => env("HEALTHCHECKER_ADMIN_TOKEN").map(|t| t.trim().to_string()),
        }
        .filter(|t| !t.is_empty());
        if auth == AuthMode::Token && admin_token.as_ref().is_none_or(|t| t.len() < 16) {
            let (v, src) = l
                .one("auth")
                .map(|(v, s)| (v.to_string(), s.clone()))
                .unwrap_or(("token".into(), Source::Default));
            return Err(ConfigError::Invalid {
                key: "auth".into(),
                value: v,
                origin: src,
                reason: "token mode needs an admin token of at least 16 characters in HEALTHCHECKER_ADMIN_TOKEN or --admin-token-file".into(),
            });
        }
        let private = l.flag("private")?;
        if private && auth != AuthMode::Token {
            let (v, src) = l
                .one("private")
                .map(|(v, s)| (v.to_string(), s.clone()))
                .unwrap_or(("true".into(), Source::Default));
            return Err(ConfigError::Invalid {
                key: "private".into(),
                value: v,
                origin: src,
                reason: "--private needs --auth token".into(),
            });
        }
        let nets = |key: &str| -> Result<Vec<ipnet::IpNet>, ConfigError> {
            let Some(s) = l.get(key) else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for v in s.items() {
                let net = v
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| v.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| ConfigError::Invalid {
                        key: key.into(),
                        value: v.into(),
                        origin: s.source.clone(),
                        reason: "expected CIDR blocks such as 169.254.0.0/16,10.0.0.0/8".into(),
                    })?;
                out.push(net);
            }
            Ok(out)
        };
        // `--deny-targets` adds to the default deny list; `none` empties it.
        let deny_none = l
            .get("deny-targets")
            .is_some_and(|s| s.items().any(|v| v.eq_ignore_ascii_case("none")));
        let deny = if deny_none {
            let s = l.get("deny-targets").expect("checked above");
            let others: Vec<&str> = s
                .items()
                .filter(|v| !v.eq_ignore_ascii_case("none"))
                .collect();
            if let Some(v) = others.first() {
                return Err(ConfigError::Invalid {
                    key: "deny-targets".into(),
                    value: v.to_string(),
                    origin: s.source.clone(),
                    reason:
                        "\"none\" empties the deny list and cannot be combined with CIDR blocks"
                            .into(),
                });
            }
            Vec::new()
        } else {
            let mut deny = crate::probe::TargetPolicy::default_deny();
            deny.extend(nets("deny-targets")?);
            deny
        };
        let targets = crate::probe::TargetPolicy {
            allow: nets("allow-targets")?,
            deny,
        };
        // Only the browsed types can be found, so only they may be named.
        let mut auto_monitor = Vec::new();
        if let Some(s) = l.get("auto-monitor") {
            for v in s.items() {
                let ty = v
                    .to_ascii_lowercase()
                    .trim_end_matches('.')
                    .trim_end_matches(".local")
                    .to_string();
                if !healthchecker_core::lan::BROWSE_TYPES.contains(&ty.as_str()) {
                    return Err(ConfigError::Invalid {
                        key: "auto-monitor".into(),
                        value: v.into(),
                        origin: s.source.clone(),
                        reason: format!(
                            "expected a browsed DNS-SD type: {}",
                            healthchecker_core::lan::BROWSE_TYPES.join(", ")
                        ),
                    });
                }
                auto_monitor.push(ty);
            }
        }
        let max_services = l.parse("max-services", DEFAULT_MAX_SERVICES, |v| {
            match v.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err("expected a whole number of at least 1".into()),
            }
        })?;
        let keep_checks = l.parse("keep-checks", crate::store::RETAIN_CHECKS, |v| {
            let range = crate::store::KEEP_CHECKS_RANGE;
            match v.parse::<i64>() {
                Ok(n) if range.contains(&n) => Ok(n),
                _ => Err(format!(
                    "expected a whole number from {} to {}",
                    range.start(),
                    range.end()
                )),
            }
        })?;
        let register_rate_limit = l.parse("register-rate-limit", DEFAULT_REGISTER_RATE, |v| {
            v.parse::<u32>()
                .map_err(|_| "expected state-changing requests per second (0: unlimited)".into())
        })?;
        let max_connections =
            l.parse(
                "max-connections",
                DEFAULT_MAX_CONNECTIONS,
                |v| match v.parse::<usize>() {
                    Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
                    _ => Err("expected a whole number from 1 to 1000000".into()),
                },
            )?;
        let max_connections_per_client = l.parse(
            "max-connections-per-client",
            DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            |v| match v.parse::<usize>() {
                Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
                _ => Err("expected a whole number from 1 to 1000000".into()),
            },
        )?;
        Ok(Config {
            auth,
            admin_token: admin_token.map(AdminToken),
            private,
            status_page: l.flag("status-page")?,
            status_page_tags: l
                .get("status-page-tags")
                .map(|s| s.items().map(str::to_string).collect())
                .unwrap_or_default(),
            targets,
            max_services,
            keep_checks,
            register_rate_limit,
            max_connections,
            max_connections_per_client,
            bind,
            db,
            log_format,
            mdns: !l.flag("no-mdns")?,
            mdns_interfaces: l
                .get("mdns-interface")
                .map(|s| s.items().map(str::to_string).collect())
                .unwrap_or_default(),
            mdns_name: l.string("mdns-name"),
            legacy_mdns: !l.flag("no-legacy-mdns")?,
            auto_monitor,
            max_concurrent_probes,
            public_url,
            smtp,
            notify_min_gap,
            tls_ca_file,
            api_tls,
        })
    }

    /// A configuration for tests and embedding: every default, this database.
    pub fn for_db(db: PathBuf) -> Config {
        let mut c = Config::resolve_with_env(Vec::new(), |_| None).expect("defaults are valid");
        c.db = db;
        c.mdns = false;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(key: &str, v: &str, source: Source) -> Setting {
        Setting {
            key: key.into(),
            values: vec![v.into()],
            source,
        }
    }

    #[test]
    fn defaults_are_the_spec_s() {
        let c = Config::resolve_with_env(vec![], |_| None).unwrap();
        assert_eq!(c.bind.to_string(), "0.0.0.0:8484");
        assert!(c.db.ends_with("healthchecker/healthchecker.db"));
        assert!(c.mdns && c.legacy_mdns);
        assert_eq!(c.notify_min_gap, Duration::from_secs(60));
        assert!(c.smtp.is_none());
    }

    #[test]
    fn keep_checks_is_bounded_and_names_the_option() {
        let keep = |v: &str| {
            Config::resolve_with_env(vec![s("keep-checks", v, Source::Cli)], |_| None)
                .map(|c| c.keep_checks)
        };
        assert_eq!(
            Config::resolve_with_env(vec![], |_| None)
                .unwrap()
                .keep_checks,
            100
        );
        assert_eq!(keep("10").unwrap(), 10);
        assert_eq!(keep("100000").unwrap(), 100_000);
        for bad in ["9", "100001", "-1", "many"] {
            let e = keep(bad).unwrap_err().to_string();
            assert!(e.contains("--keep-checks") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn deny_targets_add_to_the_default_list_and_none_empties_it() {
        let deny = |v: &str| {
            Config::resolve_with_env(vec![s("deny-targets", v, Source::Cli)], |_| None)
                .map(|c| c.targets.deny)
        };
        let defaults = crate::probe::TargetPolicy::default_deny();
        assert_eq!(
            Config::resolve_with_env(vec![], |_| None)
                .unwrap()
                .targets
                .deny,
            defaults
        );
        let more = deny("10.0.0.0/8").unwrap();
        assert_eq!(more.len(), defaults.len() + 1);
        assert!(more.starts_with(&defaults));
        assert!(deny("none").unwrap().is_empty());
        let e = deny("none,10.0.0.0/8").unwrap_err().to_string();
        assert!(e.contains("--deny-targets") && e.contains("none"), "{e}");
    }

    #[test]
    fn an_api_certificate_needs_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cert.pem");
        std::fs::write(&f, "x").unwrap();
        let f = f.to_str().unwrap();
        let e = Config::resolve_with_env(vec![s("tls-cert", f, Source::Cli)], |_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--tls-cert needs --tls-key"), "{e}");
        let e = Config::resolve_with_env(vec![s("tls-key", "/no/such/key", Source::Cli)], |_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--tls-key") && e.contains("no such file"), "{e}");
        let c = Config::resolve_with_env(
            vec![s("tls-cert", f, Source::Cli), s("tls-key", f, Source::Cli)],
            |_| None,
        )
        .unwrap();
        assert!(c.api_tls.is_some());
    }

    #[test]
    fn a_password_in_the_smtp_url_is_never_echoed() {
        let e = Config::resolve_with_env(
            vec![s(
                "smtp-url",
                "smtp://me:hunter2@mail.example:587",
                Source::Cli,
            )],
            |_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--smtp-url") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn cli_beats_env_beats_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hc.toml");
        std::fs::write(
            &file,
            "bind = \"127.0.0.1:1111\"\nlog_format = \"json\"\nmax-concurrent-probes = 7\n",
        )
        .unwrap();
        let cfg = |extra: Vec<Setting>| {
            let mut v = vec![s("config", file.to_str().unwrap(), Source::Cli)];
            v.extend(extra);
            Config::resolve_with_env(v, |_| None).unwrap()
        };
        let c = cfg(vec![]);
        assert_eq!(c.bind.port(), 1111);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.max_concurrent_probes, 7);
        let c = cfg(vec![s(
            "bind",
            "127.0.0.1:2222",
            Source::Env("HEALTHCHECKER_BIND".into()),
        )]);
        assert_eq!(c.bind.port(), 2222);
    }

    #[test]
    fn errors_name_option_value_and_source() {
        let e = Config::resolve_with_env(
            vec![s("bind", "nope", Source::Env("HEALTHCHECKER_BIND".into()))],
            |_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--bind")
                && e.contains("\"nope\"")
                && e.contains("environment variable HEALTHCHECKER_BIND"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hc.toml");
        std::fs::write(&file, "notify_min_gap = -5\n").unwrap();
        let e = Config::resolve_with_env(
            vec![s("config", file.to_str().unwrap(), Source::Cli)],
            |_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--notify-min-gap") && e.contains("config file"),
            "{e}"
        );
        std::fs::write(&file, "bnid = 1\n").unwrap();
        let e = Config::resolve_with_env(
            vec![s("config", file.to_str().unwrap(), Source::Cli)],
            |_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown key \"bnid\""), "{e}");
        let e =
            Config::resolve_with_env(vec![s("config", "/nonexistent.toml", Source::Cli)], |_| {
                None
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read config file"), "{e}");
    }
}
