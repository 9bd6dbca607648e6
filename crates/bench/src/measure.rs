//! What the benchmark reads besides CPU: the daemon's writes (/proc/PID/io),
//! the database's size, and the latency of the reads people make while the
//! daemon checks (SPEC sections 11 and 18).

use crate::report::ReadLatency;
use anyhow::Context;
use std::path::Path;
use std::time::Instant;

/// `wchar` and `write_bytes` of a process (all threads), bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Io {
    /// Bytes passed to write(2) and friends.
    pub wchar: u64,
    /// Bytes the process caused to be sent to the storage layer.
    pub write_bytes: u64,
}

/// Reads /proc/PID/io (zeros where it is not readable).
pub fn io_of(pid: u32) -> Io {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    Io {
        wchar: field("wchar:"),
        write_bytes: field("write_bytes:"),
    }
}

/// Size of the database file and its WAL, bytes.
pub fn db_bytes(db: &Path) -> u64 {
    let wal = db.with_extension("db-wal");
    [db, wal.as_path()]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// The reads of SPEC section 11 / issue 15's table, for a daemon whose
/// services are named `svc-000000` ...: one service, one page of the list,
/// the dashboard and one service's page.
pub fn read_routes(services: usize) -> Vec<String> {
    let one = format!("svc-{:06}", services / 2);
    vec![
        format!("/api/v1/services/{one}"),
        "/api/v1/services?limit=100".into(),
        "/".into(),
        format!("/services/{one}"),
    ]
}

/// Times `n` sequential GETs of each route (after one untimed request),
/// failing on any answer other than 200.
pub async fn time_reads(
    http: &reqwest::Client,
    url: &str,
    routes: &[String],
    n: usize,
) -> anyhow::Result<Vec<ReadLatency>> {
    let mut out = Vec::new();
    for route in routes {
        let get = || async {
            let r = http.get(format!("{url}{route}")).send().await?;
            anyhow::ensure!(r.status() == 200, "GET {route}: {}", r.status());
            r.bytes().await?;
            anyhow::Ok(())
        };
        get().await?;
        let mut ms = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            get().await?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
        out.push(ReadLatency {
            route: format!("GET {route}"),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            n,
        });
    }
    Ok(out)
}

/// What the bench reads from the daemon's /metrics.
pub struct Scrape {
    /// Cumulative lag histogram buckets (upper bound, count).
    pub lag: Vec<(f64, f64)>,
    /// `checks_total{result="fail"}`.
    pub failed: f64,
    /// `scheduler_missed_slots_total`.
    pub missed: f64,
    /// `checks_total`, all results.
    pub checks: f64,
    /// `store_wal_bytes_total`: bytes the daemon's store appended to its
    /// WAL (0 from a daemon without that counter).
    pub wal_bytes: f64,
}

impl Scrape {
    /// Several daemons' scrapes added up (a cluster's nodes): counters
    /// summed, lag buckets summed bucket by bucket (every node has the
    /// same buckets).
    pub fn sum(all: Vec<Scrape>) -> Scrape {
        let mut it = all.into_iter();
        let Some(mut out) = it.next() else {
            return Scrape {
                lag: Vec::new(),
                failed: 0.0,
                missed: 0.0,
                checks: 0.0,
                wal_bytes: 0.0,
            };
        };
        for s in it {
            out.failed += s.failed;
            out.missed += s.missed;
            out.checks += s.checks;
            out.wal_bytes += s.wal_bytes;
            for (a, b) in out.lag.iter_mut().zip(&s.lag) {
                a.1 += b.1;
            }
        }
        out
    }
}

/// Scrapes the daemon's /metrics (classic text format).
pub async fn scrape(http: &reqwest::Client, url: &str) -> anyhow::Result<Scrape> {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    parse_scrape(&text)
}

/// The figures of [`Scrape`] from a /metrics answer in the classic format.
fn parse_scrape(text: &str) -> anyhow::Result<Scrape> {
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
        checks: ["pass", "warn", "fail"]
            .iter()
            .map(|r| value(&format!("healthchecker_checks_total{{result=\"{r}\"}} ")))
            .sum(),
        wal_bytes: value("healthchecker_store_wal_bytes_total "),
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
pub fn percentile(buckets: &[(f64, f64)], q: f64) -> f64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_of_this_process_counts_what_it_writes() {
        let before = io_of(std::process::id());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), vec![0u8; 65_536]).unwrap();
        let after = io_of(std::process::id());
        assert!(
            after.wchar >= before.wchar + 65_536,
            "{before:?} -> {after:?}"
        );
    }

    #[test]
    fn db_bytes_adds_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("bench.db");
        std::fs::write(&db, [0u8; 100]).unwrap();
        assert_eq!(db_bytes(&db), 100);
        std::fs::write(dir.path().join("bench.db-wal"), [0u8; 50]).unwrap();
        assert_eq!(db_bytes(&db), 150);
    }

    #[test]
    fn scrape_reads_checks_and_wal_bytes() {
        let text = "# HELP healthchecker_checks_total Checks run, by result.\n\
            # TYPE healthchecker_checks_total counter\n\
            healthchecker_checks_total{result=\"pass\"} 10\n\
            healthchecker_checks_total{result=\"warn\"} 2\n\
            healthchecker_checks_total{result=\"fail\"} 3\n\
            healthchecker_scheduler_missed_slots_total 4\n\
            healthchecker_store_wal_bytes_total 123456\n\
            healthchecker_scheduler_lag_seconds_bucket{le=\"0.001\"} 5\n\
            healthchecker_scheduler_lag_seconds_bucket{le=\"+Inf\"} 6\n";
        let s = parse_scrape(text).unwrap();
        assert_eq!((s.checks, s.failed, s.missed), (15.0, 3.0, 4.0));
        assert_eq!(s.wal_bytes, 123_456.0);
        assert_eq!(s.lag, [(0.001, 5.0), (f64::INFINITY, 6.0)]);
        // A daemon without the counter.
        assert_eq!(parse_scrape("").unwrap().wal_bytes, 0.0);
    }

    #[test]
    fn scrapes_of_nodes_add_up() {
        let node = |n: f64| Scrape {
            lag: vec![(0.001, n), (f64::INFINITY, 2.0 * n)],
            failed: n,
            missed: 0.0,
            checks: 10.0 * n,
            wal_bytes: 0.0,
        };
        let s = Scrape::sum(vec![node(1.0), node(2.0), node(3.0)]);
        assert_eq!((s.checks, s.failed), (60.0, 6.0));
        assert_eq!(s.lag, [(0.001, 6.0), (f64::INFINITY, 12.0)]);
        assert_eq!(Scrape::sum(Vec::new()).checks, 0.0);
    }

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
