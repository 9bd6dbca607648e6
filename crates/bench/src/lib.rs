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
//! - seconds from `kill -9` + restart until the target sees checks again.

pub mod target;

use anyhow::{bail, Context};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
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
    /// Measure the kill -9 restart.
    pub restart: bool,
}

/// The figures of one run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Services registered.
    pub services: usize,
    /// Their interval.
    pub interval: u32,
    /// Registrations per second.
    pub registrations_per_s: f64,
    /// Checks per second scheduled (services / interval).
    pub scheduled_per_s: f64,
    /// Checks per second seen by the target.
    pub achieved_per_s: f64,
    /// Scheduler lag percentiles, seconds (from histogram buckets).
    pub lag_p50: f64,
    /// 99th percentile.
    pub lag_p99: f64,
    /// Upper bound of the highest non-empty bucket.
    pub lag_max: f64,
    /// Checks the daemon counted as failed in the window (should be 0).
    pub failed_checks: f64,
    /// Check slots the daemon skipped in the window (should be 0).
    pub missed_slots: f64,
    /// Daemon CPU per check, µs.
    pub cpu_us_per_check: f64,
    /// Daemon peak RSS, MB.
    pub peak_rss_mb: f64,
    /// wrk CPU per request, µs.
    pub baseline_cpu_us_per_req: Option<f64>,
    /// Daemon / baseline.
    pub cpu_ratio: Option<f64>,
    /// The paced minimal client at the daemon's check rate: CPU µs per request.
    pub paced_cpu_us_per_req: Option<f64>,
    /// Daemon / paced client.
    pub paced_ratio: Option<f64>,
    /// Seconds from restart to checking again.
    pub restart_s: Option<f64>,
    /// Services loaded and answering /health after restart, seconds.
    pub restart_health_s: Option<f64>,
}

impl Report {
    /// A human table.
    pub fn table(&self) -> String {
        let opt = |v: Option<f64>, unit: &str| {
            v.map(|v| format!("{v:.2}{unit}"))
                .unwrap_or_else(|| "-".into())
        };
        format!(
            "services                 {}\n\
             interval                 {} s\n\
             registrations/s          {:.0}\n\
             checks/s scheduled       {:.1}\n\
             checks/s achieved        {:.1} ({:.1}%)\n\
             scheduler lag p50/p99    {:.1} / {:.1} ms (max <= {:.0} ms)\n\
             failed checks / missed   {:.0} / {:.0}\n\
             daemon CPU per check     {:.1} us\n\
             wrk CPU per request      {}\n\
             daemon/wrk               {}\n\
             paced client CPU per req {}\n\
             daemon/paced client      {}\n\
             daemon peak RSS          {:.0} MB\n\
             restart: checking again  {}\n\
             restart: /health answers {}",
            self.services,
            self.interval,
            self.registrations_per_s,
            self.scheduled_per_s,
            self.achieved_per_s,
            100.0 * self.achieved_per_s / self.scheduled_per_s.max(f64::EPSILON),
            self.lag_p50 * 1000.0,
            self.lag_p99 * 1000.0,
            self.lag_max * 1000.0,
            self.failed_checks,
            self.missed_slots,
            self.cpu_us_per_check,
            opt(self.baseline_cpu_us_per_req, " us"),
            opt(self.cpu_ratio, "x"),
            opt(self.paced_cpu_us_per_req, " us"),
            opt(self.paced_ratio, "x"),
            self.peak_rss_mb,
            opt(self.restart_s, " s"),
            opt(self.restart_health_s, " s"),
        )
    }

    /// One JSON line.
    pub fn json(&self) -> String {
        serde_json::json!({
            "services": self.services,
            "interval_s": self.interval,
            "registrations_per_s": self.registrations_per_s,
            "checks_per_s_scheduled": self.scheduled_per_s,
            "checks_per_s_achieved": self.achieved_per_s,
            "lag_p50_ms": self.lag_p50 * 1000.0,
            "lag_p99_ms": self.lag_p99 * 1000.0,
            "lag_max_ms_upper_bound": self.lag_max * 1000.0,
            "failed_checks": self.failed_checks,
            "missed_slots": self.missed_slots,
            "cpu_us_per_check": self.cpu_us_per_check,
            "baseline_cpu_us_per_request": self.baseline_cpu_us_per_req,
            "cpu_ratio": self.cpu_ratio,
            "paced_client_cpu_us_per_request": self.paced_cpu_us_per_req,
            "paced_ratio": self.paced_ratio,
            "peak_rss_mb": self.peak_rss_mb,
            "restart_checking_s": self.restart_s,
            "restart_health_s": self.restart_health_s,
        })
        .to_string()
    }
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
    db: &std::path::Path,
    bind: &str,
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

/// What the bench reads from the daemon's /metrics.
struct Scrape {
    /// Cumulative lag histogram buckets (upper bound, count).
    lag: Vec<(f64, f64)>,
    /// `checks_total{result="fail"}`.
    failed: f64,
    /// `scheduler_missed_slots_total`.
    missed: f64,
}

async fn scrape(http: &reqwest::Client, url: &str) -> anyhow::Result<Scrape> {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let mut out = Scrape {
        lag: Vec::new(),
        failed: value("healthchecker_checks_total{result=\"fail\"} "),
        missed: value("healthchecker_scheduler_missed_slots_total "),
    };
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("healthchecker_scheduler_lag_seconds_bucket{le=\"")
        else {
            continue;
        };
        let (le, tail) = rest.split_once("\"}").context("bucket line")?;
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse()?
        };
        let n: f64 = tail
            .split_whitespace()
            .next()
            .context("bucket count")?
            .parse()?;
        out.lag.push((le, n));
    }
    Ok(out)
}

/// Percentile from cumulative bucket deltas, interpolating inside a bucket.
fn percentile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
    if total == 0.0 {
        return 0.0;
    }
    let want = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, n) in buckets {
        if n >= want {
            if le.is_infinite() {
                return prev.0;
            }
            let frac = if n > prev.1 {
                (want - prev.1) / (n - prev.1)
            } else {
                1.0
            };
            return prev.0 + frac * (le - prev.0);
        }
        prev = (le, n);
    }
    prev.0
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

async fn register_all(
    http: &reqwest::Client,
    url: &str,
    opts: &Options,
    targets: &[SocketAddr],
) -> anyhow::Result<f64> {
    let conns = 32;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..conns {
        let http = http.clone();
        let url = format!("{url}/api/v1/services");
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

/// Runs the benchmark.
pub async fn run(opts: &Options) -> anyhow::Result<Report> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("bench.db");
    let (_target, targets, control) = start_target(&opts.bench)?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(64)
        // The daemon closes a keep-alive connection idle for 10 s
        // (`HEADER_READ_TIMEOUT`); reusing one at that moment fails.
        .pool_idle_timeout(Duration::from_secs(5))
        .build()?;
    let (mut daemon, url) = start_daemon(opts, &db, "127.0.0.1:0")?;
    let pid = daemon.0.id();
    let mut r = Report {
        services: opts.services,
        interval: opts.interval,
        ..Default::default()
    };
    r.registrations_per_s = register_all(&http, &url, opts, &targets).await?;
    r.scheduled_per_s = opts.services as f64 / opts.interval as f64;
    eprintln!(
        "registered {} services at {:.0}/s; warming up {} s",
        opts.services, r.registrations_per_s, opts.interval
    );
    tokio::time::sleep(Duration::from_secs(opts.interval as u64)).await;

    // The /metrics scrapes (100,000 per-service series) stay outside the
    // window: they are not check work, and they take a while.
    let m0 = scrape(&http, &url).await?;
    let c0 = target_count(&http, control).await?;
    let t0 = Instant::now();
    let cpu0 = cpu_seconds(pid)?;
    tokio::time::sleep(Duration::from_secs(opts.duration)).await;
    let c1 = target_count(&http, control).await?;
    let window = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_seconds(pid)?;
    let m1 = scrape(&http, &url).await?;
    let checks = (c1 - c0) as f64;
    r.achieved_per_s = checks / window;
    r.cpu_us_per_check = (cpu1 - cpu0) * 1e6 / checks.max(1.0);
    r.peak_rss_mb = peak_rss_mb(pid);
    r.failed_checks = m1.failed - m0.failed;
    r.missed_slots = m1.missed - m0.missed;
    let delta: Vec<(f64, f64)> = m1
        .lag
        .iter()
        .zip(&m0.lag)
        .map(|(a, b)| (a.0, a.1 - b.1))
        .collect();
    r.lag_p50 = percentile(&delta, 0.50);
    r.lag_p99 = percentile(&delta, 0.99);
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

    if opts.restart {
        let addr = url.trim_start_matches("http://").to_string();
        let _ = daemon.0.kill();
        let _ = daemon.0.wait();
        let before = target_count(&http, control).await?;
        let t = Instant::now();
        let (_d2, url2) = start_daemon(opts, &db, &addr)?;
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
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_interpolate_inside_buckets() {
        let b = [
            (0.001, 50.0),
            (0.01, 90.0),
            (0.1, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert!((percentile(&b, 0.5) - 0.001).abs() < 1e-9);
        assert!((percentile(&b, 0.99) - 0.091).abs() < 1e-9);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
