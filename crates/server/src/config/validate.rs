//! From merged raw options to a validated [`Config`]: each option parsed
//! once, checked against the others it needs, and an error that names the
//! option, the value and its source.

use super::raw::{parse_bool, read_file_layer};
use super::*;
use crate::notify::SmtpUrl;
use std::collections::BTreeMap;

/// Reads the merged options, naming each one's source in errors.
struct Given<'a> {
    sources: &'a BTreeMap<String, Source>,
}

impl Given<'_> {
    /// Where option `field` came from.
    fn source(&self, field: &str) -> Source {
        self.sources.get(field).cloned().unwrap_or(Source::Default)
    }

    /// The error for `value` of option `field`.
    fn invalid(&self, field: &str, value: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: field.replace('_', "-"),
            value: value.into(),
            origin: self.source(field),
            reason: reason.into(),
        }
    }

    /// `value` of option `field` parsed by `f`, or `default` when not given.
    fn parse<T>(
        &self,
        field: &str,
        value: &Option<String>,
        default: T,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) => f(v).map_err(|reason| self.invalid(field, v, reason)),
        }
    }

    /// The items of a list option or of a comma-separated value, trimmed,
    /// empty ones dropped.
    fn items(values: &[String]) -> impl Iterator<Item = &str> {
        values
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }
}

/// A whole number in `range`, with the message naming the range.
fn number_in<T>(range: std::ops::RangeInclusive<T>) -> impl Fn(&str) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
{
    move |v| match v.parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a whole number from {} to {}",
            range.start(),
            range.end()
        )),
    }
}

/// A file that exists.
fn existing_file(v: &str) -> Result<Option<PathBuf>, String> {
    let p = PathBuf::from(v);
    if p.is_file() {
        Ok(Some(p))
    } else {
        Err("no such file".into())
    }
}

/// The first line of a secret file, without its line end.
fn read_secret(g: &Given<'_>, field: &str, path: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
        .map_err(|e| g.invalid(field, path, e.to_string()))
}

impl Config {
    /// This node's id in a cluster: `--node-id`, else
    /// `<hostname>:<port>` of the bound API port (stable across restarts
    /// of one daemon, distinct for daemons on one machine).
    pub fn node_id_for(&self, port: u16) -> String {
        self.node_id
            .clone()
            .unwrap_or_else(|| format!("{}:{port}", crate::host::name_or_default()))
    }

    /// Resolves the configuration from the command line and environment
    /// (`cli`, [`Layer::from_cli`]), reading the config file it names.
    pub fn resolve(cli: Layer) -> Result<Config, ConfigError> {
        Self::from_layers(cli, |k| std::env::var(k).ok())
    }

    /// As [`Config::resolve`], from settings given as text and with the
    /// environment given (tests and embedding).
    pub fn resolve_with_env(
        settings: Vec<Setting>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Self::from_layers(Layer::from_settings(settings)?, env)
    }

    /// Merges `cli` over the config file it names, over the defaults, and
    /// validates the result; `env` supplies the secrets' variables.
    fn from_layers(
        cli: Layer,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let given = match cli.config_file() {
            Some(path) => cli.over(read_file_layer(&path)?),
            None => cli,
        };
        let raw = given.options();
        let g = Given {
            sources: &given.sources,
        };
        let bind = g.parse(
            "bind",
            &raw.bind,
            DEFAULT_BIND.parse().expect("valid default"),
            |v| {
                v.parse::<SocketAddr>().map_err(|_| {
                    "expected an address and port such as 0.0.0.0:8484 or [::]:8484".into()
                })
            },
        )?;
        let (auth, admin_token, private) = access(&raw, &g, &env)?;
        let postgres = postgres(&raw, &g, &env)?;
        Ok(Config {
            db: match postgres {
                Some(_) => default_db_path(),
                None => g.parse("db", &raw.db, default_db_path(), |v| {
                    if v.trim().is_empty() {
                        Err("expected a file path".into())
                    } else {
                        Ok(PathBuf::from(v))
                    }
                })?,
            },
            node_id: node_id(&raw, &g)?,
            postgres,
            log_format: g.parse(
                "log_format",
                &raw.log_format,
                LogFormat::Text,
                |v| match v {
                    "text" => Ok(LogFormat::Text),
                    "json" => Ok(LogFormat::Json),
                    _ => Err("expected text or json".into()),
                },
            )?,
            mdns: !raw.no_mdns,
            mdns_interfaces: Given::items(&raw.mdns_interface)
                .map(str::to_string)
                .collect(),
            mdns_name: raw.mdns_name.clone().filter(|v| !v.is_empty()),
            legacy_mdns: !raw.no_legacy_mdns,
            auto_monitor: auto_monitor(&raw, &g)?,
            max_concurrent_probes: g.parse(
                "max_concurrent_probes",
                &raw.max_concurrent_probes,
                DEFAULT_MAX_CONCURRENT_PROBES,
                number_in(1..=65_536),
            )?,
            public_url: g.parse(
                "public_url",
                &raw.public_url,
                default_public_url(bind),
                |v| {
                    let u =
                        url::Url::parse(v).map_err(|e| format!("expected an http(s) URL: {e}"))?;
                    if u.scheme() != "http" && u.scheme() != "https" {
                        return Err("expected an http(s) URL".into());
                    }
                    Ok(v.trim_end_matches('/').to_string())
                },
            )?,
            smtp: smtp(&raw, &g, &env)?,
            notify_min_gap: g.parse(
                "notify_min_gap",
                &raw.notify_min_gap,
                Duration::from_secs(DEFAULT_NOTIFY_MIN_GAP),
                |v| match v.parse::<u64>() {
                    Ok(n) if n <= 86_400 => Ok(Duration::from_secs(n)),
                    _ => Err("expected seconds from 0 to 86400".into()),
                },
            )?,
            digest_threshold: g.parse(
                "digest_threshold",
                &raw.digest_threshold,
                DEFAULT_DIGEST_THRESHOLD,
                |v| match v.parse::<usize>() {
                    Ok(n) if n <= 10_000 => Ok(n),
                    _ => Err("expected a whole number from 0 (no digests) to 10000".into()),
                },
            )?,
            digest_window: g.parse(
                "digest_window",
                &raw.digest_window,
                Duration::from_secs(DEFAULT_DIGEST_WINDOW),
                |v| match v.parse::<u64>() {
                    Ok(n) if (1..=3600).contains(&n) => Ok(Duration::from_secs(n)),
                    _ => Err("expected seconds from 1 to 3600".into()),
                },
            )?,
            tls_ca_file: g.parse("tls_ca_file", &raw.tls_ca_file, None, existing_file)?,
            api_tls: api_tls(&raw, &g)?,
            auth,
            admin_token,
            private,
            status_page: raw.status_page,
            status_page_tags: Given::items(&raw.status_page_tags)
                .map(str::to_string)
                .collect(),
            targets: targets(&raw, &g)?,
            max_services: g.parse(
                "max_services",
                &raw.max_services,
                DEFAULT_MAX_SERVICES,
                |v| match v.parse::<usize>() {
                    Ok(n) if n >= 1 => Ok(n),
                    _ => Err("expected a whole number of at least 1".into()),
                },
            )?,
            keep_checks: g.parse(
                "keep_checks",
                &raw.keep_checks,
                crate::store::RETAIN_CHECKS,
                number_in(crate::store::KEEP_CHECKS_RANGE),
            )?,
            register_rate_limit: g.parse(
                "register_rate_limit",
                &raw.register_rate_limit,
                DEFAULT_REGISTER_RATE,
                |v| {
                    v.parse::<u32>().map_err(|_| {
                        "expected state-changing requests per second (0: unlimited)".into()
                    })
                },
            )?,
            max_connections: g.parse(
                "max_connections",
                &raw.max_connections,
                DEFAULT_MAX_CONNECTIONS,
                number_in(1..=1_000_000),
            )?,
            max_connections_per_client: g.parse(
                "max_connections_per_client",
                &raw.max_connections_per_client,
                DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
                number_in(1..=1_000_000),
            )?,
            metrics_per_service: g.parse(
                "metrics_per_service",
                &raw.metrics_per_service,
                true,
                parse_bool,
            )?,
            bind,
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

/// The public URL when none is given: bound to every address, the
/// machine's mDNS name (which the daemon's own advertisement makes
/// resolvable on the LAN); else the bound address.
fn default_public_url(bind: SocketAddr) -> String {
    let host = if bind.ip().is_unspecified() {
        crate::host::short_name()
            .map(|h| format!("{h}.local"))
            .unwrap_or_else(|| "localhost".to_string())
    } else if bind.is_ipv6() {
        format!("[{}]", bind.ip())
    } else {
        bind.ip().to_string()
    };
    format!("http://{host}:{}", bind.port())
}

/// `--smtp-url` parsed once (a password in it is never echoed), with the
/// From address and the password.
fn smtp(
    raw: &RawOptions,
    g: &Given<'_>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<SmtpConfig>, ConfigError> {
    let Some(text) = raw.smtp_url.as_deref().filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let url: SmtpUrl = text.parse().map_err(|reason: String| {
        g.invalid("smtp_url", &crate::notify::without_password(text), reason)
    })?;
    let from = g.parse("smtp_from", &raw.smtp_from, String::new(), |v| {
        v.parse::<lettre::message::Mailbox>()
            .map(|_| v.to_string())
            .map_err(|e| format!("expected a mail address: {e}"))
    })?;
    let from = if from.is_empty() {
        "healthchecker <healthchecker@localhost>".to_string()
    } else {
        from
    };
    let password = match &raw.smtp_password_file {
        Some(p) => Some(read_secret(g, "smtp_password_file", p)?),
        None => env("HEALTHCHECKER_SMTP_PASSWORD"),
    };
    Ok(Some(SmtpConfig {
        url,
        from,
        password,
    }))
}

/// `--db postgres://…` with its password (`--db-password-file`, else
/// `HEALTHCHECKER_DB_PASSWORD`, else one in the URL); `None` for a SQLite
/// path. The URL is echoed in errors without its password.
fn postgres(
    raw: &RawOptions,
    g: &Given<'_>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<crate::cluster::PgDb>, ConfigError> {
    let Some(url) = raw
        .db
        .as_deref()
        .filter(|v| crate::cluster::db::is_postgres_url(v))
    else {
        if let Some(p) = &raw.db_password_file {
            return Err(g.invalid(
                "db_password_file",
                p,
                "--db-password-file needs --db postgres://…",
            ));
        }
        return Ok(None);
    };
    let password = match &raw.db_password_file {
        Some(p) => Some(read_secret(g, "db_password_file", p)?),
        None => env("HEALTHCHECKER_DB_PASSWORD"),
    };
    crate::cluster::PgDb::parse(url, password)
        .map(Some)
        .map_err(|reason| {
            let shown = url::Url::parse(url.trim())
                .map(|mut u| {
                    let _ = u.set_password(None);
                    u.to_string()
                })
                .unwrap_or_else(|_| "postgres://…".to_string());
            g.invalid("db", &shown, reason)
        })
}

/// Most characters of a `--node-id`.
pub const NODE_ID_MAX: usize = 100;

/// `--node-id`: 1 to [`NODE_ID_MAX`] printable characters, no spaces.
fn node_id(raw: &RawOptions, g: &Given<'_>) -> Result<Option<String>, ConfigError> {
    g.parse("node_id", &raw.node_id, None, |v| {
        if v.is_empty() || v.chars().count() > NODE_ID_MAX {
            Err(format!("expected 1 to {NODE_ID_MAX} characters"))
        } else if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Err("expected no spaces or control characters".into())
        } else {
            Ok(Some(v.to_string()))
        }
    })
}

/// `--tls-cert` and `--tls-key`: both or neither.
fn api_tls(raw: &RawOptions, g: &Given<'_>) -> Result<Option<ApiTls>, ConfigError> {
    let cert = g.parse("tls_cert", &raw.tls_cert, None, existing_file)?;
    let key = g.parse("tls_key", &raw.tls_key, None, existing_file)?;
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(ApiTls { cert, key })),
        (None, None) => Ok(None),
        (cert, _) => {
            let (given, value, missing) = match cert {
                Some(_) => ("tls_cert", &raw.tls_cert, "tls-key"),
                None => ("tls_key", &raw.tls_key, "tls-cert"),
            };
            let flag = given.replace('_', "-");
            Err(g.invalid(
                given,
                value.as_deref().unwrap_or_default(),
                format!("--{flag} needs --{missing} as well"),
            ))
        }
    }
}

/// `--auth`, the admin token and `--private`, which need each other.
fn access(
    raw: &RawOptions,
    g: &Given<'_>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(AuthMode, Option<AdminToken>, bool), ConfigError> {
    let auth = g.parse("auth", &raw.auth, AuthMode::Open, |v| match v {
        "open" => Ok(AuthMode::Open),
        "token" => Ok(AuthMode::Token),
        _ => Err("expected open or token".into()),
    })?;
    let token = match &raw.admin_token_file {
        Some(p) => Some(read_secret(g, "admin_token_file", p)?.trim().to_string()),
        None => env("HEALTHCHECKER_ADMIN_TOKEN").map(|t| t.trim().to_string()),
    }
    .filter(|t| !t.is_empty());
    if auth == AuthMode::Token && token.as_ref().is_none_or(|t| t.len() < 16) {
        return Err(g.invalid(
            "auth",
            raw.auth.as_deref().unwrap_or("token"),
            "token mode needs an admin token of at least 16 characters in HEALTHCHECKER_ADMIN_TOKEN or --admin-token-file",
        ));
    }
    if raw.private && auth != AuthMode::Token {
        return Err(g.invalid("private", "true", "--private needs --auth token"));
    }
    Ok((auth, token.map(AdminToken), raw.private))
}

/// `--allow-targets` and `--deny-targets`: the deny list adds to
/// [`crate::probe::DEFAULT_DENY`]; `none` empties it.
fn targets(raw: &RawOptions, g: &Given<'_>) -> Result<crate::probe::TargetPolicy, ConfigError> {
    let nets = |field: &str, value: &Option<String>| -> Result<Vec<ipnet::IpNet>, ConfigError> {
        let values: Vec<String> = value.iter().cloned().collect();
        Given::items(&values)
            .map(|v| {
                v.parse::<ipnet::IpNet>()
                    .or_else(|_| v.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        g.invalid(
                            field,
                            v,
                            "expected CIDR blocks such as 169.254.0.0/16,10.0.0.0/8",
                        )
                    })
            })
            .collect()
    };
    let deny_given: Vec<String> = raw.deny_targets.iter().cloned().collect();
    let deny = if Given::items(&deny_given).any(|v| v.eq_ignore_ascii_case("none")) {
        if let Some(v) = Given::items(&deny_given).find(|v| !v.eq_ignore_ascii_case("none")) {
            return Err(g.invalid(
                "deny_targets",
                v,
                "\"none\" empties the deny list and cannot be combined with CIDR blocks",
            ));
        }
        Vec::new()
    } else {
        let mut deny = crate::probe::TargetPolicy::default_deny();
        deny.extend(nets("deny_targets", &raw.deny_targets)?);
        deny
    };
    Ok(crate::probe::TargetPolicy {
        allow: nets("allow_targets", &raw.allow_targets)?,
        deny,
    })
}

/// `--auto-monitor`: only the browsed types can be found, so only they may
/// be named.
fn auto_monitor(raw: &RawOptions, g: &Given<'_>) -> Result<Vec<String>, ConfigError> {
    use healthchecker_core::lan::BROWSE_TYPES;
    Given::items(&raw.auto_monitor)
        .map(|v| {
            let ty = v
                .to_ascii_lowercase()
                .trim_end_matches('.')
                .trim_end_matches(".local")
                .to_string();
            if BROWSE_TYPES.contains(&ty.as_str()) {
                Ok(ty)
            } else {
                Err(g.invalid(
                    "auto_monitor",
                    v,
                    format!(
                        "expected a browsed DNS-SD type: {}",
                        BROWSE_TYPES.join(", ")
                    ),
                ))
            }
        })
        .collect()
}
