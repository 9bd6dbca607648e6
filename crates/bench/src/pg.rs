//! The PostgreSQL side of a run with `--db postgres` (SPEC section 19,
//! issue 18): a throwaway server (the testkit's
//! [`healthchecker_testkit::postgres::Postgres`]: `initdb` into a temporary
//! directory, 127.0.0.1 on a free port, `fsync=off`,
//! `full_page_writes=off`), and what the benchmark reads of it over the
//! window: WAL bytes (`pg_current_wal_lsn()`), rows written
//! (`pg_stat_database`), the database's size, and the CPU of the
//! server's processes (the postmaster and its children, from /proc).

use anyhow::Context;
use healthchecker_testkit::postgres::Postgres;
use std::path::Path;

/// A running throwaway server and the benchmark's own connection to it.
pub struct Pg {
    server: Postgres,
    client: tokio_postgres::Client,
    postmaster: u32,
}

/// The counters of one instant; two of them make a window.
#[derive(Debug, Clone, Default)]
pub struct PgSample {
    /// `pg_current_wal_lsn()` as text (`16/B374D848`).
    pub lsn: String,
    /// `pg_stat_database.tup_inserted` of the daemon's database.
    pub inserted: i64,
    /// `tup_updated`.
    pub updated: i64,
    /// `tup_deleted`.
    pub deleted: i64,
    /// `pg_database_size` of the daemon's database, bytes.
    pub db_bytes: i64,
    /// Full-page images written to the WAL (`pg_stat_wal.wal_fpi`).
    pub fpi: i64,
    /// Checkpoints done (`pg_stat_bgwriter`, timed and requested).
    pub checkpoints: i64,
    /// user+sys CPU seconds of the postmaster, its reaped children and its
    /// live children.
    pub cpu_s: f64,
    /// Per table (`pg_stat_user_tables`): rows inserted, updated, of those
    /// updated HOT (no index entry written), deleted.
    pub tables: std::collections::BTreeMap<String, [i64; 4]>,
    /// Per table: `pg_total_relation_size` (heap, indexes, TOAST), bytes.
    pub sizes: std::collections::BTreeMap<String, i64>,
}

impl Pg {
    /// Starts the server (fails when PostgreSQL is not installed; under
    /// `CI` the testkit panics instead).
    pub async fn start(settings: Vec<String>) -> anyhow::Result<Pg> {
        let server = Postgres::start_with(settings).await.context(
            "PostgreSQL is not installed (apt-get install postgresql; /usr/lib/postgresql/*/bin)",
        )?;
        let postmaster = postmaster_pid(&server.data_dir())?;
        let (client, conn) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
            .await
            .context("connect to the throwaway PostgreSQL")?;
        tokio::spawn(conn);
        // For the full-page images' share of the WAL (contrib; a run goes
        // on without it).
        let _ = client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
            .await;
        Ok(Pg {
            server,
            client,
            postmaster,
        })
    }

    /// The URL the daemons get (`postgres://postgres@127.0.0.1:PORT/healthchecker`;
    /// trust authentication, so no password).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Reads the counters now.
    pub async fn sample(&self) -> anyhow::Result<PgSample> {
        let row = self
            .client
            .query_one(
                "SELECT pg_current_wal_lsn()::text, tup_inserted, tup_updated, tup_deleted, \
                 pg_database_size(current_database()), \
                 (SELECT wal_fpi FROM pg_stat_wal), \
                 (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter) \
                 FROM pg_stat_database WHERE datname = current_database()",
                &[],
            )
            .await
            .context("read pg_stat_database")?;
        let tables = self
            .client
            .query(
                "SELECT relname::text, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, \
                 pg_total_relation_size(relid) FROM pg_stat_user_tables",
                &[],
            )
            .await
            .context("read pg_stat_user_tables")?;
        let sizes = tables.iter().map(|r| (r.get(0), r.get(5))).collect();
        let tables = tables
            .into_iter()
            .map(|r| (r.get(0), [r.get(1), r.get(2), r.get(3), r.get(4)]))
            .collect();
        Ok(PgSample {
            tables,
            sizes,
            lsn: row.get(0),
            inserted: row.get(1),
            updated: row.get(2),
            deleted: row.get(3),
            db_bytes: row.get(4),
            fpi: row.get(5),
            checkpoints: row.get(6),
            cpu_s: tree_cpu_seconds(self.postmaster),
        })
    }

    /// WAL bytes between two LSNs (`pg_wal_lsn_diff`).
    pub async fn wal_bytes(&self, from: &str, to: &str) -> anyhow::Result<f64> {
        let row = self
            .client
            .query_one(
                "SELECT pg_wal_lsn_diff($1::text::pg_lsn, $2::text::pg_lsn)::float8",
                &[&to, &from],
            )
            .await
            .context("pg_wal_lsn_diff")?;
        Ok(row.get(0))
    }

    /// Bytes of full-page images in the WAL between two LSNs
    /// (`pg_walinspect`'s `pg_get_wal_stats`); `None` when the extension
    /// is missing or the WAL was recycled (keep it: `--pg-set
    /// wal_keep_size=4GB`).
    pub async fn fpi_bytes(&self, from: &str, to: &str) -> Option<f64> {
        self.client
            .query_one(
                "SELECT sum(fpi_size)::float8 FROM pg_get_wal_stats($1::text::pg_lsn, $2::text::pg_lsn)",
                &[&from, &to],
            )
            .await
            .ok()
            .and_then(|r| r.get(0))
    }

    /// The server's log (for an error message).
    pub fn log(&self) -> String {
        self.server.log()
    }
}

/// The postmaster's PID: the first line of `postmaster.pid` in the data
/// directory.
fn postmaster_pid(data: &Path) -> anyhow::Result<u32> {
    let text = std::fs::read_to_string(data.join("postmaster.pid"))
        .context("read postmaster.pid (the benchmark runs as root or as postgres)")?;
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .context("postmaster.pid format")
}

/// The fields of /proc/PID/stat after the command name (`state` is 0,
/// `ppid` 1, `utime` 11, `stime` 12, `cutime` 13, `cstime` 14).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    Some(after.split_whitespace().map(str::to_string).collect())
}

fn ticks(f: &[String], at: usize) -> f64 {
    f.get(at).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

/// CPU seconds of a process tree one level deep: `pid` itself (user+sys),
/// the children it has reaped (`cutime`+`cstime`: backends that ended)
/// and its live children (user+sys each). PostgreSQL's processes are all
/// children of the postmaster.
pub fn tree_cpu_seconds(pid: u32) -> f64 {
    let hz = crate::clk_tck();
    let Some(me) = stat_fields(pid) else {
        return 0.0;
    };
    let mut t = ticks(&me, 11) + ticks(&me, 12) + ticks(&me, 13) + ticks(&me, 14);
    let parent = pid.to_string();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(f) = stat_fields(child) {
                if f.get(1) == Some(&parent) {
                    t += ticks(&f, 11) + ticks(&f, 12);
                }
            }
        }
    }
    t / hz
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_counts_a_reaped_child() {
        let me = std::process::id();
        let children = || tree_cpu_seconds(me) - crate::cpu_seconds(me).unwrap();
        let before = children();
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(status.success());
        let after = children();
        assert!(after > before, "children's CPU {before} -> {after}");
    }

    #[test]
    fn the_postmaster_pid_is_the_first_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("postmaster.pid"), "4242\n/data\n").unwrap();
        assert_eq!(postmaster_pid(dir.path()).unwrap(), 4242);
        std::fs::write(dir.path().join("postmaster.pid"), "x\n").unwrap();
        assert!(postmaster_pid(dir.path()).is_err());
    }
}
