//! The client commands: `monitor`, `list`, `info`, `pause`, `resume`,
//! `stop`, `discover`. Exit codes: 0 ok, 1 refused by the daemon (its
//! message shown), 2 usage, 3 daemon unreachable or not found.

use clap::Args;
use healthchecker_client::{
    ClientError, HealthChecker, Monitoring, Registration, ServiceInfo, ServiceKind,
};
use std::process::ExitCode;
use std::time::Duration;

/// How to reach the daemon.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// Daemon URL (default: find one over mDNS)
    #[arg(long, env = "HEALTHCHECKER_SERVER", value_name = "URL")]
    server: Option<String>,
    /// How long to look for a daemon over mDNS, seconds
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    discover_timeout: u64,
    /// Token for a daemon in --auth token mode (admin or the service's own)
    #[arg(
        long,
        env = "HEALTHCHECKER_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
}

/// Options of `monitor`.
#[derive(Args, Debug)]
pub struct MonitorArgs {
    /// Service name (free text)
    name: String,
    /// What to check: http://host:port/path, https://…, tcp://host:port, ssl://host:port
    target: String,
    /// Mail recipient (repeatable)
    #[arg(long = "email", value_name = "ADDR")]
    email: Vec<String>,
    /// Seconds between checks (5–300) [default: 30]
    #[arg(long)]
    interval: Option<u32>,
    /// Response timeout, seconds (2–60) [default: 5, or interval − 1 when smaller]
    #[arg(long)]
    timeout: Option<u32>,
    /// Consecutive successes to become healthy (2–10) [default: 10]
    #[arg(long)]
    healthy: Option<u32>,
    /// Consecutive failures to become unhealthy (2–10) [default: 2]
    #[arg(long)]
    unhealthy: Option<u32>,
    /// Acceptable HTTP statuses, e.g. 200-399 [default: 200]
    #[arg(long)]
    expected_status: Option<String>,
    /// Notify through this named channel (repeatable) [default: the default channels]
    #[arg(long = "channel", value_name = "NAME")]
    channel: Vec<String>,
    /// Tag the service, for silences and the status page (repeatable)
    #[arg(long = "tag", value_name = "T")]
    tag: Vec<String>,
    /// A service this one depends on: its notifications wait while that one fails (repeatable)
    #[arg(long = "depends-on", value_name = "NAME")]
    depends_on: Vec<String>,
    /// Print the daemon's answer as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// Options of commands that take a service name.
#[derive(Args, Debug)]
pub struct NameArgs {
    /// Service name
    name: String,
    /// Print JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// Options of `list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Print JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// Options of `discover`.
#[derive(Args, Debug)]
pub struct DiscoverArgs {
    /// How long to listen, seconds
    #[arg(long, default_value_t = 5)]
    timeout: u64,
    /// Print JSON
    #[arg(long)]
    pub(crate) json: bool,
    /// List the devices a daemon found on the LAN and does not monitor yet
    /// (printers, NAS, Home Assistant…), each with a suggested target for
    /// `monitor`
    #[arg(long)]
    pub(crate) devices: bool,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// A failed command: the message and the exit code.
pub struct Failure(pub String, pub u8);

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match &e {
            ClientError::Refused { field: Some(f), .. } => Failure(format!("{e} (field: {f})"), 1),
            ClientError::Refused { .. } => Failure(e.to_string(), 1),
            ClientError::InvalidUrl(_) | ClientError::TokenToUnnamedDaemon(_) => {
                Failure(e.to_string(), 2)
            }
            _ => Failure(e.to_string(), 3),
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs a client command, printing errors as `healthchecker: …`.
pub fn exec<F>(f: F) -> ExitCode
where
    F: std::future::Future<Output = Result<(), Failure>>,
{
    match runtime().block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg, code)) => {
            eprintln!("healthchecker: {msg}");
            ExitCode::from(code)
        }
    }
}

pub(crate) async fn connect(c: &Conn) -> Result<HealthChecker, Failure> {
    if c.token.is_some() && c.server.is_none() {
        // Anyone on the LAN can answer an mDNS query: a token goes only to
        // a daemon the user named.
        return Err(Failure(
            "a token is sent only to a daemon you name: give --server URL (or HEALTHCHECKER_SERVER) with --token".into(),
            2,
        ));
    }
    let hc = connect_plain(c).await?;
    Ok(match &c.token {
        Some(t) => hc.with_token(t),
        None => hc,
    })
}

async fn connect_plain(c: &Conn) -> Result<HealthChecker, Failure> {
    match &c.server {
        Some(url) => Ok(HealthChecker::at(url)?),
        None => HealthChecker::discover(Duration::from_secs(c.discover_timeout))
            .await
            .map_err(|e| match e {
                ClientError::NotFound(_) => Failure(
                    format!("{e}; give --server URL or set HEALTHCHECKER_SERVER"),
                    3,
                ),
                other => other.into(),
            }),
    }
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn print_service(s: &ServiceInfo) {
    println!("name:        {}", s.name);
    println!("target:      {}", s.url);
    println!("state:       {} since {}", s.state, s.state_since);
    println!("monitoring:  {}", s.monitoring);
    match (s.kind, s.period, s.grace) {
        (ServiceKind::Heartbeat, Some(p), Some(g)) => {
            println!("heartbeat:   every {p}s, grace {g}s (each ping judges at once)")
        }
        _ => println!(
            "interval:    {}s (timeout {}s, healthy {} / unhealthy {})",
            s.interval, s.timeout, s.healthy_threshold, s.unhealthy_threshold
        ),
    }
    if !s.email.is_empty() {
        println!("email:       {}", s.email.join(", "));
    }
    match &s.last_check {
        Some(c) => println!(
            "last check:  {} {} in {:.1} ms{}",
            c.at,
            c.result,
            c.duration_ms,
            c.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        None => println!("last check:  none yet"),
    }
}

/// `monitor NAME TARGET`.
pub async fn monitor(a: MonitorArgs) -> Result<(), Failure> {
    let hc = connect(&a.conn).await?;
    let mut reg = Registration::new(&a.name, &a.target);
    for e in &a.email {
        reg = reg.email(e);
    }
    if let Some(v) = a.interval {
        reg = reg.interval(v);
    }
    if let Some(v) = a.timeout {
        reg = reg.timeout(v);
    }
    if let Some(v) = a.healthy {
        reg = reg.healthy(v);
    }
    if let Some(v) = a.unhealthy {
        reg = reg.unhealthy(v);
    }
    if let Some(v) = a.expected_status {
        reg = reg.expected_status(v);
    }
    for c in &a.channel {
        reg = reg.channel(c);
    }
    for t in &a.tag {
        reg = reg.tag(t);
    }
    for p in &a.depends_on {
        reg = reg.depends_on(p);
    }
    let m = hc.monitor(reg).await?;
    if a.json {
        print_json(&m.service.raw);
    } else {
        let verb = if m.created {
            "now monitoring"
        } else {
            "updated"
        };
        println!(
            "{verb} {:?} ({}) every {}s on {}",
            m.service.name,
            m.service.url,
            m.service.interval,
            hc.url()
        );
    }
    Ok(())
}

/// `list`.
pub async fn list(a: ListArgs) -> Result<(), Failure> {
    let hc = connect(&a.conn).await?;
    let services = hc.list().await?;
    if a.json {
        print_json(&serde_json::Value::Array(
            services.iter().map(|s| s.raw.clone()).collect(),
        ));
        return Ok(());
    }
    let rows: Vec<[String; 5]> = services
        .iter()
        .map(|s| {
            let state = if s.monitoring == Monitoring::Paused {
                format!("{} (paused)", s.state)
            } else {
                s.state.to_string()
            };
            let last = s
                .last_check
                .as_ref()
                .map(|c| {
                    format!(
                        "{} {}",
                        c.at.get(..19).unwrap_or(&c.at).replace('T', " "),
                        c.result
                    )
                })
                .unwrap_or_else(|| "-".into());
            let uptime = s
                .uptime
                .as_ref()
                .and_then(|u| u.day)
                .map(|u| format!("{:.1}%", u * 100.0))
                .unwrap_or_else(|| "-".into());
            [s.name.clone(), state, s.url.clone(), last, uptime]
        })
        .collect();
    let head = ["NAME", "STATE", "TARGET", "LAST CHECK", "UPTIME 24H"];
    let mut w = head.map(|h| h.chars().count());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == 4 {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c}{}  ", " ".repeat(w[i] - c.chars().count())));
            }
        }
        println!("{}", s.trim_end());
    };
    line(head);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4]]);
    }
    Ok(())
}

/// `info NAME`.
pub async fn info(a: NameArgs) -> Result<(), Failure> {
    let hc = connect(&a.conn).await?;
    let s = hc.info(&a.name).await?;
    if a.json {
        print_json(&s.raw);
    } else {
        print_service(&s);
    }
    Ok(())
}

/// `pause NAME`, `resume NAME`.
pub async fn set_paused(a: NameArgs, paused: bool) -> Result<(), Failure> {
    let hc = connect(&a.conn).await?;
    let s = if paused {
        hc.pause(&a.name).await?
    } else {
        hc.resume(&a.name).await?
    };
    if a.json {
        print_json(&s.raw);
    } else {
        println!("{}: monitoring {}", s.name, s.monitoring);
    }
    Ok(())
}

/// `stop NAME`.
pub async fn stop(a: NameArgs) -> Result<(), Failure> {
    let hc = connect(&a.conn).await?;
    hc.stop(&a.name).await?;
    if a.json {
        print_json(&serde_json::json!({"stopped": a.name}));
    } else {
        println!("{}: no longer monitored", a.name);
    }
    Ok(())
}

/// `discover` (without `--devices`, which `main` sends to
/// `lan_cmd::devices`).
pub async fn discover(a: DiscoverArgs) -> Result<(), Failure> {
    let timeout = Duration::from_secs(a.timeout);
    let found = healthchecker_client::discover_all(timeout, false).await?;
    if a.json {
        let v: Vec<serde_json::Value> = found
            .iter()
            .map(|d| serde_json::json!({"name": d.name, "url": d.url, "version": d.version}))
            .collect();
        print_json(&serde_json::Value::Array(v));
    } else if found.is_empty() {
        return Err(Failure(
            format!("no healthchecker daemon found within {}s", a.timeout),
            3,
        ));
    } else {
        for d in &found {
            println!(
                "{}  {}  version {}",
                d.url,
                d.name,
                d.version.as_deref().unwrap_or("?")
            );
        }
    }
    if found.is_empty() {
        return Err(Failure(
            format!("no healthchecker daemon found within {}s", a.timeout),
            3,
        ));
    }
    Ok(())
}
