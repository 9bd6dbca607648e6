//! `healthchecker serve`: options, logging, signals, then `server::run`.

use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use healthchecker_server::config::{LogFormat, Setting, Source};
use healthchecker_server::Config;
use std::process::ExitCode;

/// Options of `serve`. Each may also come from `HEALTHCHECKER_<NAME>` or
/// the TOML file named by `--config`; values are validated by the server's
/// config module, which names the option and its source on error.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// API listen address [default: 0.0.0.0:8484]
    #[arg(long, env = "HEALTHCHECKER_BIND", value_name = "ADDR")]
    bind: Option<String>,
    /// SQLite database file [default: $XDG_DATA_HOME/healthchecker/healthchecker.db]
    #[arg(long, env = "HEALTHCHECKER_DB", value_name = "PATH")]
    db: Option<String>,
    /// TOML config file (lower precedence than options and environment)
    #[arg(long, env = "HEALTHCHECKER_CONFIG", value_name = "PATH")]
    config: Option<String>,
    /// Log format: text or json [default: text]
    #[arg(long, env = "HEALTHCHECKER_LOG_FORMAT", value_name = "FORMAT")]
    log_format: Option<String>,
    /// Do not advertise over mDNS
    #[arg(long, env = "HEALTHCHECKER_NO_MDNS")]
    no_mdns: bool,
    /// Advertise only on this interface (repeatable)
    #[arg(
        long,
        env = "HEALTHCHECKER_MDNS_INTERFACE",
        value_name = "NAME",
        value_delimiter = ','
    )]
    mdns_interface: Vec<String>,
    /// mDNS instance name [default: HealthChecker on <hostname>]
    #[arg(long, env = "HEALTHCHECKER_MDNS_NAME", value_name = "NAME")]
    mdns_name: Option<String>,
    /// Do not advertise the seed client's _healthchecker._http._tcp name
    #[arg(long, env = "HEALTHCHECKER_NO_LEGACY_MDNS")]
    no_legacy_mdns: bool,
    /// Monitor devices of this DNS-SD type found on the LAN without asking,
    /// e.g. _ipp._tcp (repeatable; default: none, devices are only listed)
    #[arg(
        long,
        env = "HEALTHCHECKER_AUTO_MONITOR",
        value_name = "TYPE",
        value_delimiter = ','
    )]
    auto_monitor: Vec<String>,
    /// Most probes running at once [default: 4096]
    #[arg(long, env = "HEALTHCHECKER_MAX_CONCURRENT_PROBES", value_name = "N")]
    max_concurrent_probes: Option<String>,
    /// Base URL of the dashboard, for links in mails [default: from --bind]
    #[arg(long, env = "HEALTHCHECKER_PUBLIC_URL", value_name = "URL")]
    public_url: Option<String>,
    /// SMTP server: smtp://[user@]host:port[?tls=starttls] or smtps://[user@]host:465
    #[arg(long, env = "HEALTHCHECKER_SMTP_URL", value_name = "URL")]
    smtp_url: Option<String>,
    /// From address of mails
    #[arg(long, env = "HEALTHCHECKER_SMTP_FROM", value_name = "ADDR")]
    smtp_from: Option<String>,
    /// File holding the SMTP password (else HEALTHCHECKER_SMTP_PASSWORD)
    #[arg(long, env = "HEALTHCHECKER_SMTP_PASSWORD_FILE", value_name = "PATH")]
    smtp_password_file: Option<String>,
    /// At most one mail per service per this many seconds [default: 60]
    #[arg(long, env = "HEALTHCHECKER_NOTIFY_MIN_GAP", value_name = "SECONDS")]
    notify_min_gap: Option<String>,
    /// Extra trusted CA certificates (PEM) for services with tls_verify
    #[arg(long, env = "HEALTHCHECKER_TLS_CA_FILE", value_name = "PATH")]
    tls_ca_file: Option<String>,
    /// Serve the API over HTTPS with this certificate chain (PEM); needs --tls-key
    #[arg(long, env = "HEALTHCHECKER_TLS_CERT", value_name = "PATH")]
    tls_cert: Option<String>,
    /// The private key (PEM) of --tls-cert
    #[arg(long, env = "HEALTHCHECKER_TLS_KEY", value_name = "PATH")]
    tls_key: Option<String>,
    /// open (anyone may register) or token (changes need the admin or the service's token) [default: open]
    #[arg(long, env = "HEALTHCHECKER_AUTH", value_name = "MODE")]
    auth: Option<String>,
    /// File holding the admin token (else HEALTHCHECKER_ADMIN_TOKEN)
    #[arg(long, env = "HEALTHCHECKER_ADMIN_TOKEN_FILE", value_name = "PATH")]
    admin_token_file: Option<String>,
    /// With --auth token: reads (dashboard, GET API, metrics) need the admin token too
    #[arg(long, env = "HEALTHCHECKER_PRIVATE")]
    private: bool,
    /// Serve a public, read-only status page at /status: service names, states and 90-day uptime only (open even with --private)
    #[arg(long, env = "HEALTHCHECKER_STATUS_PAGE")]
    status_page: bool,
    /// With --status-page: show only services carrying one of these tags (comma-separated) [default: every service]
    #[arg(
        long,
        env = "HEALTHCHECKER_STATUS_PAGE_TAGS",
        value_name = "TAG,...",
        value_delimiter = ','
    )]
    status_page_tags: Vec<String>,
    /// Probe only these addresses (CIDR list) [default: all]
    #[arg(long, env = "HEALTHCHECKER_ALLOW_TARGETS", value_name = "CIDR,...")]
    allow_targets: Option<String>,
    /// Never probe these addresses (CIDR list), e.g. 169.254.0.0/16
    #[arg(long, env = "HEALTHCHECKER_DENY_TARGETS", value_name = "CIDR,...")]
    deny_targets: Option<String>,
    /// Most services registered at once [default: 100000]
    #[arg(long, env = "HEALTHCHECKER_MAX_SERVICES", value_name = "N")]
    max_services: Option<String>,
    /// Raw checks kept per service, 10 to 100000 (failing and state-changing ones are also kept 7 days; older history is in hourly and daily roll-ups) [default: 100]
    #[arg(long, env = "HEALTHCHECKER_KEEP_CHECKS", value_name = "N")]
    keep_checks: Option<String>,
    /// State-changing requests (register, pause, resume, stop) per second per client address (IPv6: per /64), 0 for unlimited [default: 200]
    #[arg(long, env = "HEALTHCHECKER_REGISTER_RATE_LIMIT", value_name = "N")]
    register_rate_limit: Option<String>,
    /// Most API connections at once [default: 1024]
    #[arg(long, env = "HEALTHCHECKER_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<String>,
    /// Most API connections from one client address (IPv6: per /64) [default: 64]
    #[arg(
        long,
        env = "HEALTHCHECKER_MAX_CONNECTIONS_PER_CLIENT",
        value_name = "N"
    )]
    max_connections_per_client: Option<String>,
}

/// Turns clap's matches into settings that remember where each value came from.
fn settings(m: &ArgMatches) -> Vec<Setting> {
    let mut out = Vec::new();
    for id in m.ids() {
        let key = id.as_str();
        let source = match m.value_source(key) {
            Some(ValueSource::CommandLine) => Source::Cli,
            Some(ValueSource::EnvVariable) => {
                Source::Env(format!("HEALTHCHECKER_{}", key.to_uppercase()))
            }
            _ => continue,
        };
        let values: Vec<String> = match m.try_get_raw(key) {
            Ok(Some(raw)) => raw.map(|v| v.to_string_lossy().into_owned()).collect(),
            _ => continue,
        };
        let is_flag = matches!(
            key,
            "no_mdns" | "no_legacy_mdns" | "private" | "status_page"
        );
        let values = if is_flag && source == Source::Cli {
            vec!["true".to_string()]
        } else {
            values
        };
        out.push(Setting {
            key: key.replace('_', "-"),
            values,
            source,
        });
    }
    out
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Tells systemd (`Type=notify`) that the daemon is ready once its API
/// answers `/health` on `addr`, so that `systemctl start` returns when
/// clients can connect, not merely when the socket is bound. Any answer
/// counts: a 503 is a running daemon reporting a problem, and an API
/// served over TLS answers a plain request too.
async fn notify_ready(addr: std::net::SocketAddr) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    loop {
        let attempt = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            crate::health_cmd::answers(addr),
        );
        if let Ok(Ok(_)) = attempt.await {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    notify(&format!("READY=1\nSTATUS=API answering on {addr}"));
}

fn notify(state: &str) {
    if let Err(e) = crate::sd_notify::notify(state) {
        tracing::warn!(error = %e, state, "cannot notify the service manager");
    }
}

pub fn main(_args: ServeArgs, m: &ArgMatches) -> ExitCode {
    let cfg = match Config::resolve(settings(m)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("healthchecker: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(cfg.log_format);
    let rt = match crate::runtime(&mut tokio::runtime::Builder::new_multi_thread()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(cfg.bind).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("healthchecker: cannot listen on {} (--bind): {e}", cfg.bind);
                return ExitCode::FAILURE;
            }
        };
        eprintln!("healthchecker: database {}", cfg.db.display());
        if let Ok(addr) = listener.local_addr() {
            tokio::spawn(notify_ready(crate::health_cmd::reachable(addr)));
        }
        let shutdown = async {
            shutdown_signal().await;
            notify("STOPPING=1");
        };
        match healthchecker_server::run(cfg, listener, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("healthchecker: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
