//! Daemon configuration: one raw options struct, four layers, validated once.
//!
//! [`RawOptions`] lists every option once: it derives `clap::Args` (the
//! `serve` command line and its `HEALTHCHECKER_*` variables) and
//! `serde::Deserialize` (the TOML file named by `--config`). Each source
//! becomes a [`Layer`]: the options it gives and where each came from.
//! Layers are merged option by option, command line > environment (clap
//! already applied that order) > config file > default (SPEC section 8),
//! into one `RawOptions`, which [`Config`] validates once. An invalid value
//! is a [`ConfigError`] naming the option, the value and its source.

mod raw;
#[cfg(test)]
mod tests;
mod validate;

pub use raw::{keys, parse_file_layer, Layer, RawOptions, Setting};

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::notify::SmtpConfig;

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
    /// SQLite file (unused when `postgres` is set).
    pub db: PathBuf,
    /// `--db postgres://…`: the PostgreSQL database of a cluster (SPEC
    /// section 19), password joined.
    pub postgres: Option<crate::cluster::PgDb>,
    /// `--node-id`: this node's id in a cluster (leases, outbox claims,
    /// mDNS, `GET /api/v1/cluster`); `None`: `<hostname>:<API port>`,
    /// decided when the port is bound ([`Config::node_id_for`]).
    pub node_id: Option<String>,
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
    /// More notifications than this due for one channel or recipient
    /// within `digest_window` become one digest (SPEC section 14); 0: never.
    pub digest_threshold: usize,
    /// The digest window.
    pub digest_window: Duration,
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
    /// Export per-service series on `/metrics` (`--metrics-per-service`,
    /// default true); false: only the aggregates.
    pub metrics_per_service: bool,
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
/// Default digest threshold (SPEC section 14): a phone can take five
/// alerts in half a minute; the thirty of a router reboot it cannot.
pub const DEFAULT_DIGEST_THRESHOLD: usize = 5;
/// Default digest window, seconds (SPEC section 14).
pub const DEFAULT_DIGEST_WINDOW: u64 = 30;

/// The default database path: `$XDG_DATA_HOME/healthchecker/healthchecker.db`
/// (`~/.local/share/...` when unset).
pub fn default_db_path() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("healthchecker")
        .join("healthchecker.db")
}
