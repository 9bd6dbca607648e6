//! The figures of one run, as a table for people and one JSON line for
//! docs/performance.md.

/// Latency of one read route, measured while the daemon checks.
#[derive(Debug, Clone, Default)]
pub struct ReadLatency {
    /// The route as requested (e.g. `GET /api/v1/services?limit=100`).
    pub route: String,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Requests timed.
    pub n: usize,
}

/// What a run on PostgreSQL reads of the server over the window, each
/// per check seen at the target.
#[derive(Debug, Clone, Default)]
pub struct PgFigures {
    /// CPU of PostgreSQL's processes (postmaster, backends, WAL writer,
    /// checkpointer, autovacuum: the postmaster and its children), µs.
    pub cpu_us_per_check: f64,
    /// WAL generated (`pg_wal_lsn_diff` of `pg_current_wal_lsn()` at the
    /// window's ends), bytes: everything the cluster wrote, lease rounds
    /// and autovacuum included.
    pub wal_bytes_per_check: f64,
    /// `pg_stat_database.tup_inserted` growth.
    pub rows_inserted_per_check: f64,
    /// `tup_updated` growth.
    pub rows_updated_per_check: f64,
    /// `tup_deleted` growth.
    pub rows_deleted_per_check: f64,
    /// Full-page images in the WAL (`pg_stat_wal.wal_fpi` growth): none
    /// with the testkit's `full_page_writes=off`.
    pub full_page_images_per_check: f64,
    /// Checkpoints in the window (full-page images follow each one).
    pub checkpoints: i64,
    /// Bytes of those images per check (`pg_walinspect`), when known.
    pub fpi_bytes_per_check: Option<f64>,
    /// Per table with any change (`pg_stat_user_tables`), per check: rows
    /// inserted, updated, of those HOT-updated, deleted.
    pub tables: Vec<(String, [f64; 4])>,
    /// Per table at the window's end: `pg_total_relation_size` (heap,
    /// indexes, TOAST), MB.
    pub table_mb: Vec<(String, f64)>,
}

/// The figures of one run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// `sqlite` or `postgresql`.
    pub backend: String,
    /// Daemon processes (more than one: a cluster on PostgreSQL).
    pub nodes: usize,
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
    /// Daemon CPU per check, µs (all nodes' CPU over the checks).
    pub cpu_us_per_check: f64,
    /// PostgreSQL's figures (`None` on SQLite).
    pub postgres: Option<PgFigures>,
    /// Daemon peak RSS, MB (the largest node's).
    pub peak_rss_mb: f64,
    /// Bytes the daemon handed to the kernel for writing (`wchar` of
    /// /proc/PID/io: database, WAL and logs) per check in the window.
    pub wchar_per_check: f64,
    /// Bytes the daemon caused to be sent to the storage layer
    /// (`write_bytes` of /proc/PID/io) per check in the window; 0 where
    /// the kernel does not account it (some overlay file systems).
    pub write_bytes_per_check: f64,
    /// Bytes the daemon's store appended to its SQLite WAL per check
    /// (`healthchecker_store_wal_bytes_total` over `healthchecker_checks_total`,
    /// both from the scrapes at the window's start and end): SPEC 18's
    /// "bytes written (WAL) per check". `None` when the daemon does not
    /// export the counter.
    pub wal_bytes_per_check: Option<f64>,
    /// Growth of the database file and its WAL in the window, per check
    /// (on PostgreSQL: of `pg_database_size`).
    pub db_growth_per_check: f64,
    /// Database + WAL size at the end of the window, MB (on PostgreSQL:
    /// `pg_database_size`, WAL not included).
    pub db_mb: f64,
    /// Read latencies while checking.
    pub reads: Vec<ReadLatency>,
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
        let mut out = format!(
            "backend                  {} ({} node(s))\n\
             services                 {}\n\
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
             written per check        {:.0} B (wchar), {:.0} B (write_bytes)\n\
             WAL bytes per check      {}\n\
             database growth / check  {:.0} B (database + WAL {:.0} MB at the end)\n\
             restart: checking again  {}\n\
             restart: /health answers {}",
            self.backend,
            self.nodes,
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
            self.wchar_per_check,
            self.write_bytes_per_check,
            self.wal_bytes_per_check
                .map(|v| format!("{v:.0} B (store_wal_bytes_total / checks_total)"))
                .unwrap_or_else(|| "-".into()),
            self.db_growth_per_check,
            self.db_mb,
            opt(self.restart_s, " s"),
            opt(self.restart_health_s, " s"),
        );
        if let Some(pg) = &self.postgres {
            out.push_str(&format!(
                "\npostgres CPU per check   {:.1} us (daemons + postgres {:.1} us)\
                 \npostgres WAL per check   {:.0} B (pg_current_wal_lsn), {:.4} full-page images ({} B), {} checkpoint(s) in the window\
                 \npostgres rows per check  {:.3} inserted, {:.3} updated, {:.3} deleted",
                pg.cpu_us_per_check,
                self.cpu_us_per_check + pg.cpu_us_per_check,
                pg.wal_bytes_per_check,
                pg.full_page_images_per_check,
                pg.fpi_bytes_per_check
                    .map_or_else(|| "-".to_string(), |b| format!("{b:.0}")),
                pg.checkpoints,
                pg.rows_inserted_per_check,
                pg.rows_updated_per_check,
                pg.rows_deleted_per_check,
            ));
            for (t, [ins, upd, hot, del]) in &pg.tables {
                out.push_str(&format!(
                    "\n  {t:<22} {ins:.3} ins, {upd:.3} upd ({hot:.3} HOT), {del:.3} del"
                ));
            }
            let sizes: Vec<String> = pg
                .table_mb
                .iter()
                .filter(|(_, mb)| *mb >= 0.1)
                .map(|(t, mb)| format!("{t} {mb:.1}"))
                .collect();
            out.push_str(&format!("\npostgres tables (MB)     {}", sizes.join(", ")));
        }
        for r in &self.reads {
            out.push_str(&format!(
                "\nread p50/p99 {:.1} / {:.1} ms  {}",
                r.p50_ms, r.p99_ms, r.route
            ));
        }
        out
    }

    /// One JSON line.
    pub fn json(&self) -> String {
        let reads: Vec<serde_json::Value> = self
            .reads
            .iter()
            .map(|r| {
                serde_json::json!({
                    "route": r.route, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "n": r.n,
                })
            })
            .collect();
        let pg = self.postgres.as_ref();
        serde_json::json!({
            "backend": self.backend,
            "nodes": self.nodes,
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
            "postgres_cpu_us_per_check": pg.map(|p| p.cpu_us_per_check),
            "postgres_wal_bytes_per_check": pg.map(|p| p.wal_bytes_per_check),
            "postgres_full_page_images_per_check": pg.map(|p| p.full_page_images_per_check),
            "postgres_checkpoints": pg.map(|p| p.checkpoints),
            "postgres_fpi_bytes_per_check": pg.and_then(|p| p.fpi_bytes_per_check),
            "postgres_rows_inserted_per_check": pg.map(|p| p.rows_inserted_per_check),
            "postgres_rows_updated_per_check": pg.map(|p| p.rows_updated_per_check),
            "postgres_rows_deleted_per_check": pg.map(|p| p.rows_deleted_per_check),
            "postgres_rows_per_check_by_table": pg.map(|p| p
                .tables
                .iter()
                .map(|(t, [ins, upd, hot, del])| (t.clone(), serde_json::json!({
                    "inserted": ins, "updated": upd, "hot_updated": hot, "deleted": del,
                })))
                .collect::<serde_json::Map<_, _>>()),
            "postgres_table_mb": pg.map(|p| p
                .table_mb
                .iter()
                .map(|(t, mb)| (t.clone(), serde_json::json!(mb)))
                .collect::<serde_json::Map<_, _>>()),
            "baseline_cpu_us_per_request": self.baseline_cpu_us_per_req,
            "cpu_ratio": self.cpu_ratio,
            "paced_client_cpu_us_per_request": self.paced_cpu_us_per_req,
            "paced_ratio": self.paced_ratio,
            "peak_rss_mb": self.peak_rss_mb,
            "wchar_per_check": self.wchar_per_check,
            "write_bytes_per_check": self.write_bytes_per_check,
            "wal_bytes_per_check": self.wal_bytes_per_check,
            "db_growth_per_check": self.db_growth_per_check,
            "db_mb": self.db_mb,
            "reads": reads,
            "restart_checking_s": self.restart_s,
            "restart_health_s": self.restart_health_s,
        })
        .to_string()
    }
}
