//! The load benchmark of SPEC section 11, as a library so that a small run
//! is part of the test suite (`tests/ci.rs`) and a large one is a command
//! (`healthchecker-bench`, see docs/performance.md).
//!
//! What it measures, all in one run on this machine:
//! - registrations/s through the v1 API over keep-alive connections;
//! - checks/s achieved, counted at the target (a separate process), vs scheduled;
//! - scheduler lag p50/p99/max from the daemon's histogram;
//! - daemon CPU µs per check (user+sys of all threads, from /proc) and peak RSS;
//! - the baseline: wrk with `Connection: close` against the same target,
//!   its CPU µs per request (getrusage of the child), and the ratio;
//! - bytes written per check (/proc/PID/io) and the database's growth per
//!   check, and the latency of four reads (one service, one page of the
//!   list, the dashboard, a service's page) while the daemon checks;
//! - seconds from `kill -9` + restart until the target sees checks again;
//! - with `--db postgres` (SPEC section 19): a throwaway PostgreSQL, one or
//!   more daemons on it (`--nodes`), PostgreSQL's own CPU per check, WAL
//!   bytes per check (`pg_current_wal_lsn()`) and rows written per check
//!   (`pg_stat_database`).

/// The healthy threshold the benchmark registers with. Every service's
/// first transition (unknown to healthy, a state change and its event,
/// committed at once) comes after this many checks; the warm-up waits
/// for it (this many intervals plus one), so the window measures the
/// steady state. With the default threshold (10) a window in the first
/// ten intervals would count every service's first transition.
pub const HEALTHY_THRESHOLD: u32 = 2;

pub mod measure;
pub mod pg;
mod report;
pub mod target;

pub use report::{PgFigures, ReadLatency, Report};

use anyhow::{bail, Context};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Services to register.
    pub services: usize,
    /// Their interval, seconds.
    pub interval: u32,
    /// Measurement window, seconds (after one interval of warm-up).
    pub duration: u64,
    /// The `healthchecker` binary.
    pub daemon: PathBuf,
    /// The `healthchecker-bench` binary (runs the target).
    pub bench: PathBuf,
    /// Seconds of wrk baseline (0: skip).
    pub baseline_secs: u64,
    /// Measure the kill -9 restart (SQLite only: on PostgreSQL a node's
    /// restart is the cluster's failover, measured by the cluster tests).
    pub restart: bool,
    /// The daemons' database.
    pub db: Db,
    /// Daemon processes on that database (more than one: PostgreSQL only).
    pub nodes: usize,
    /// Seconds from the last registration to the window [default: the
    /// interval times the healthy threshold plus one]. A longer one lets
    /// pruning and the roll-ups' period reach their steady state.
    pub warmup: Option<u64>,
    /// More arguments for every daemon (e.g. `--keep-checks 20`).
    pub daemon_args: Vec<String>,
    /// PostgreSQL server settings (`name=value`) after the testkit's
    /// `fsync=off` and `full_page_writes=off`.
    pub pg_settings: Vec<String>,
}

/// The backend a run measures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Db {
    /// A SQLite file in a temporary directory (the default).
    #[default]
    Sqlite,
    /// A throwaway PostgreSQL server (`--db postgres://…`).
    Postgres,
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn clk_tck() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}

/// user+sys CPU seconds of a process (all threads).
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("stat format")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = f[11].parse()?;
    let stime: f64 = f[12].parse()?;
    Ok((utime + stime) / clk_tck())
}

fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn start_target(bench: &PathBuf) -> anyhow::Result<(Proc, Vec<SocketAddr>, SocketAddr)> {
    let mut child = Command::new(bench)
        .args(["target", "--ips", "4", "--ports", "4"])
        .stdout(Stdio::piped())
        .spawn()
        .context("start the target")?;
    let out = child.stdout.take().unwrap();
    let mut listen = Vec::new();
    let mut control = None;
    for line in BufReader::new(out).lines() {
        let line = line?;
        if let Some(a) = line.strip_prefix("listen ") {
            listen.push(a.parse()?);
        } else if let Some(a) = line.strip_prefix("control ") {
            control = Some(a.parse()?);
        } else if line == "ready" {
            break;
        }
    }
    Ok((
        Proc(child),
        listen,
        control.context("target control address")?,
    ))
}

fn start_daemon(
    opts: &Options,
    db: &std::ffi::OsStr,
    bind: &str,
    extra: &[String],
) -> anyhow::Result<(Proc, String)> {
    let mut child = Command::new(&opts.daemon)
        // The registration rate limit is a defence for a LAN; the benchmark
        // measures what the API can take, so it is off here.
        .args([
            "serve",
            "--no-mdns",
            "--log-format",
            "json",
            "--register-rate-limit",
            "0",
            "--bind",
            bind,
            "--db",
        ])
        .arg(db)
        .args(extra)
        .env("RUST_LOG", "warn,healthchecker_server=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {}", opts.daemon.display()))?;
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if !sent {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if v["fields"]["message"] == "listening" {
                        let _ = tx.send(v["fields"]["addr"].as_str().unwrap_or("").to_string());
                        sent = true;
                    }
                }
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .context("the daemon did not start")?;
    Ok((Proc(child), format!("http://{addr}")))
}

async fn target_count(http: &reqwest::Client, control: SocketAddr) -> anyhow::Result<u64> {
    Ok(http
        .get(format!("http://{control}/count"))
        .send()
        .await?
        .text()
        .await?
        .trim()
        .parse()?)
}

async fn wait_health(http: &reqwest::Client, url: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{url}/health")).send().await {
            if r.status() == 200 {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bail!("the daemon did not answer /health within {timeout:?}")
}

/// Registers every service over 32 keep-alive connections, connection `c`
/// through node `c % nodes` (the registrations spread over the nodes).
async fn register_all(
    http: &reqwest::Client,
    urls: &[String],
    opts: &Options,
    targets: &[SocketAddr],
) -> anyhow::Result<f64> {
    let conns = 32;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..conns {
        let http = http.clone();
        let url = format!("{}/api/v1/services", urls[c % urls.len()]);
        let targets = targets.to_vec();
        let (n, interval) = (opts.services, opts.interval);
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while i < n {
                let t = targets[i % targets.len()];
                let body = serde_json::json!({
                    "name": format!("svc-{i:06}"),
                    "url": format!("http://{t}/health"),
                    "interval": interval,
                    "timeout": (interval - 1).min(5),
                    "healthy_threshold": HEALTHY_THRESHOLD,
                });
                let r = http.post(&url).json(&body).send().await?;
                if !r.status().is_success() {
                    bail!(
                        "registration {i} refused: {} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    );
                }
                i += conns;
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(opts.services as f64 / started.elapsed().as_secs_f64())
}

/// The wrk baseline: CPU µs per request of a new-connection-per-request client.
fn baseline(target: SocketAddr, secs: u64) -> anyhow::Result<f64> {
    use nix::sys::resource::{getrusage, UsageWho};
    let before = getrusage(UsageWho::RUSAGE_CHILDREN)?;
    let out = Command::new("wrk")
        .args([
            "-t1",
            "-c32",
            &format!("-d{secs}s"),
            "-H",
            "Connection: close",
        ])
        .arg(format!("http://{target}/health"))
        .output()
        .context("wrk (apt-get install wrk)")?;
    let after = getrusage(UsageWho::RUSAGE_CHILDREN)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let requests: f64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("wrk output: {text}"))?;
    Ok((usage_secs(&after) - usage_secs(&before)) * 1e6 / requests.max(1.0))
}

/// The minimal new-connection HTTP client, paced: for `secs`, at `rate`
/// requests a second, connect, send `GET /health` with `Connection:
/// close`, read to the end, close. Blocking std sockets, one thread: the
/// least a client can do per check. Returns the requests completed.
pub fn paced_client(target: SocketAddr, rate: f64, secs: f64) -> anyhow::Result<u64> {
    use std::io::{Read, Write};
    let req = format!("GET /health HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut next = start;
    let mut done = 0u64;
    let mut buf = [0u8; 4096];
    while start.elapsed().as_secs_f64() < secs {
        let mut s = std::net::TcpStream::connect(target)?;
        s.write_all(req.as_bytes())?;
        while s.read(&mut buf)? > 0 {}
        done += 1;
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
    }
    Ok(done)
}

/// CPU µs per request of the paced client at `rate`, from getrusage of the child.
fn paced_baseline(
    bench: &PathBuf,
    target: SocketAddr,
    rate: f64,
    secs: u64,
) -> anyhow::Result<f64> {
    use nix::sys::resource::{getrusage, UsageWho};
    let before = getrusage(UsageWho::RUSAGE_CHILDREN)?;
    let out = Command::new(bench)
        .args([
            "paced",
            "--target",
            &target.to_string(),
            "--rate",
            &rate.to_string(),
            "--secs",
            &secs.to_string(),
        ])
        .output()?;
    let after = getrusage(UsageWho::RUSAGE_CHILDREN)?;
    let n: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("paced client output")?;
    Ok((usage_secs(&after) - usage_secs(&before)) * 1e6 / n.max(1.0))
}

fn usage_secs(r: &nix::sys::resource::Usage) -> f64 {
    let (u, s) = (r.user_time(), r.system_time());
    u.tv_sec() as f64 + u.tv_usec() as f64 / 1e6 + s.tv_sec() as f64 + s.tv_usec() as f64 / 1e6
}

/// Requests timed per read route.
const READS: usize = 100;

/// The daemons of a run, and the PostgreSQL server they share if any.
struct Nodes {
    procs: Vec<Proc>,
    urls: Vec<String>,
}

impl Nodes {
    fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|p| p.0.id()).collect()
    }

    /// user+sys CPU seconds of every node, summed.
    fn cpu_seconds(&self) -> anyhow::Result<f64> {
        self.pids().into_iter().map(cpu_seconds).sum()
    }

    /// /proc/PID/io of every node, summed.
    fn io(&self) -> measure::Io {
        self.pids()
            .into_iter()
            .map(measure::io_of)
            .fold(measure::Io::default(), |a, b| measure::Io {
                wchar: a.wchar + b.wchar,
                write_bytes: a.write_bytes + b.write_bytes,
            })
    }

    /// Every node's /metrics, added up.
    async fn scrape(&self, http: &reqwest::Client) -> anyhow::Result<measure::Scrape> {
        let mut all = Vec::new();
        for url in &self.urls {
            all.push(measure::scrape(http, url).await?);
        }
        Ok(measure::Scrape::sum(all))
    }
}

/// Runs the benchmark.
pub async fn run(opts: &Options) -> anyhow::Result<Report> {
    if opts.nodes == 0 || (opts.nodes > 1 && opts.db != Db::Postgres) {
        bail!(
            "--nodes {}: one node, or several on --db postgres",
            opts.nodes
        );
    }
    let dir = tempfile::tempdir()?;
    let sqlite = dir.path().join("bench.db");
    let pg = match opts.db {
        Db::Postgres => Some(pg::Pg::start(opts.pg_settings.clone()).await?),
        Db::Sqlite => None,
    };
    let db: std::ffi::OsString = match &pg {
        Some(pg) => pg.url().into(),
        None => sqlite.clone().into(),
    };
    let (_target, targets, control) = start_target(&opts.bench)?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(64)
        // The daemon closes a keep-alive connection idle for 10 s
        // (`HEADER_READ_TIMEOUT`); reusing one at that moment fails.
        .pool_idle_timeout(Duration::from_secs(5))
        .build()?;
    // One after the other: the first applies the migrations.
    let mut nodes = Nodes {
        procs: Vec::new(),
        urls: Vec::new(),
    };
    for i in 0..opts.nodes {
        let mut extra = match opts.db {
            Db::Postgres => vec!["--node-id".to_string(), format!("bench-{i}")],
            Db::Sqlite => Vec::new(),
        };
        extra.extend(opts.daemon_args.iter().cloned());
        let started = start_daemon(opts, &db, "127.0.0.1:0", &extra);
        let (p, url) = match (started, &pg) {
            (Ok(v), _) => v,
            (Err(e), Some(pg)) => bail!("{e:#}\nPostgreSQL's log:\n{}", pg.log()),
            (Err(e), None) => return Err(e),
        };
        nodes.procs.push(p);
        nodes.urls.push(url);
    }
    let url = nodes.urls[0].clone();
    let mut r = Report {
        services: opts.services,
        interval: opts.interval,
        backend: match opts.db {
            Db::Sqlite => "sqlite",
            Db::Postgres => "postgresql",
        }
        .into(),
        nodes: opts.nodes,
        ..Default::default()
    };
    r.registrations_per_s = register_all(&http, &nodes.urls, opts, &targets).await?;
    r.scheduled_per_s = opts.services as f64 / opts.interval as f64;
    let warm_up = opts
        .warmup
        .unwrap_or(opts.interval as u64 * (HEALTHY_THRESHOLD as u64 + 1));
    eprintln!(
        "registered {} services at {:.0}/s through {} node(s); warming up {} s",
        opts.services, r.registrations_per_s, opts.nodes, warm_up
    );
    tokio::time::sleep(Duration::from_secs(warm_up)).await;

    // The /metrics scrapes (100,000 per-service series) stay outside the
    // window: they are not check work, and they take a while.
    let m0 = nodes.scrape(&http).await?;
    let c0 = target_count(&http, control).await?;
    let t0 = Instant::now();
    let cpu0 = nodes.cpu_seconds()?;
    let (io0, db0) = (nodes.io(), measure::db_bytes(&sqlite));
    let pg0 = match &pg {
        Some(pg) => Some(pg.sample().await?),
        None => None,
    };
    tokio::time::sleep(Duration::from_secs(opts.duration)).await;
    let c1 = target_count(&http, control).await?;
    let window = t0.elapsed().as_secs_f64();
    let cpu1 = nodes.cpu_seconds()?;
    let (io1, db1) = (nodes.io(), measure::db_bytes(&sqlite));
    let pg1 = match &pg {
        Some(pg) => Some(pg.sample().await?),
        None => None,
    };
    let m1 = nodes.scrape(&http).await?;
    let checks = (c1 - c0) as f64;
    r.achieved_per_s = checks / window;
    r.cpu_us_per_check = (cpu1 - cpu0) * 1e6 / checks.max(1.0);
    r.peak_rss_mb = nodes
        .pids()
        .into_iter()
        .map(peak_rss_mb)
        .fold(0.0, f64::max);
    let per_check = |bytes: f64| bytes / checks.max(1.0);
    r.wchar_per_check = per_check(io1.wchar.saturating_sub(io0.wchar) as f64);
    r.write_bytes_per_check = per_check(io1.write_bytes.saturating_sub(io0.write_bytes) as f64);
    r.db_growth_per_check = per_check(db1 as f64 - db0 as f64);
    r.db_mb = db1 as f64 / 1e6;
    if let (Some(pg), Some(a), Some(b)) = (&pg, &pg0, &pg1) {
        r.postgres = Some(PgFigures {
            cpu_us_per_check: (b.cpu_s - a.cpu_s) * 1e6 / checks.max(1.0),
            wal_bytes_per_check: per_check(pg.wal_bytes(&a.lsn, &b.lsn).await?),
            rows_inserted_per_check: per_check((b.inserted - a.inserted) as f64),
            rows_updated_per_check: per_check((b.updated - a.updated) as f64),
            rows_deleted_per_check: per_check((b.deleted - a.deleted) as f64),
            full_page_images_per_check: per_check((b.fpi - a.fpi) as f64),
            checkpoints: b.checkpoints - a.checkpoints,
            fpi_bytes_per_check: pg.fpi_bytes(&a.lsn, &b.lsn).await.map(per_check),
            tables: b
                .tables
                .iter()
                .filter_map(|(t, v1)| {
                    let v0 = a.tables.get(t).copied().unwrap_or_default();
                    let d: [f64; 4] = std::array::from_fn(|i| per_check((v1[i] - v0[i]) as f64));
                    d.iter().any(|&x| x != 0.0).then(|| (t.clone(), d))
                })
                .collect(),
            table_mb: b
                .sizes
                .iter()
                .map(|(t, bytes)| (t.clone(), *bytes as f64 / 1e6))
                .collect(),
        });
        r.db_growth_per_check = per_check((b.db_bytes - a.db_bytes) as f64);
        r.db_mb = b.db_bytes as f64 / 1e6;
    }
    // After the CPU window (the reads are not check work), while checking.
    r.reads = measure::time_reads(&http, &url, &measure::read_routes(opts.services), READS).await?;
    r.failed_checks = m1.failed - m0.failed;
    r.missed_slots = m1.missed - m0.missed;
    // WAL bytes over the checks the daemon counted between the same two
    // scrapes (the window and the scrapes around it), not over the
    // target's count, which covers the window only.
    r.wal_bytes_per_check = (m1.wal_bytes > 0.0)
        .then(|| (m1.wal_bytes - m0.wal_bytes) / (m1.checks - m0.checks).max(1.0));
    let delta: Vec<(f64, f64)> = m1
        .lag
        .iter()
        .zip(&m0.lag)
        .map(|(a, b)| (a.0, a.1 - b.1))
        .collect();
    r.lag_p50 = measure::percentile(&delta, 0.50);
    r.lag_p99 = measure::percentile(&delta, 0.99);
    let mut prev = 0.0;
    for &(le, n) in &delta {
        if n > prev {
            r.lag_max = le;
        }
        prev = n;
    }

    if opts.baseline_secs > 0 {
        let b = baseline(targets[0], opts.baseline_secs)?;
        r.baseline_cpu_us_per_req = Some(b);
        r.cpu_ratio = Some(r.cpu_us_per_check / b);
        let p = paced_baseline(
            &opts.bench,
            targets[0],
            r.scheduled_per_s,
            opts.baseline_secs,
        )?;
        r.paced_cpu_us_per_req = Some(p);
        r.paced_ratio = Some(r.cpu_us_per_check / p);
    }

    if opts.restart && opts.db == Db::Sqlite {
        let addr = url.trim_start_matches("http://").to_string();
        let mut daemon = nodes.procs.remove(0);
        let _ = daemon.0.kill();
        let _ = daemon.0.wait();
        let before = target_count(&http, control).await?;
        let t = Instant::now();
        let (_d2, url2) = start_daemon(opts, &db, &addr, &[])?;
        wait_health(&http, &url2, Duration::from_secs(60)).await?;
        r.restart_health_s = Some(t.elapsed().as_secs_f64());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if target_count(&http, control).await? > before {
                break;
            }
            if Instant::now() > deadline {
                bail!("no check within 60 s of the restart");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        r.restart_s = Some(t.elapsed().as_secs_f64());
    }
    // The daemons stop before their database.
    drop(nodes);
    drop(pg);
    Ok(r)
}
