//! `healthchecker-bench`: the load benchmark of SPEC section 11.
//! See docs/performance.md for how to run it and the figures measured.

use clap::{Parser, Subcommand};
use healthchecker_bench::{run, target, Db, Options};
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Measure healthchecker against the budgets of SPEC section 11")]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    opts: RunArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// (internal) Run the HTTP target.
    Target {
        /// Addresses 127.0.0.1 .. 127.0.0.N
        #[arg(long, default_value_t = 4)]
        ips: u8,
        /// Ports per address
        #[arg(long, default_value_t = 4)]
        ports: u16,
    },
    /// (internal) The paced baseline client: one new connection per request.
    Paced {
        /// Target address
        #[arg(long)]
        target: std::net::SocketAddr,
        /// Requests per second
        #[arg(long)]
        rate: f64,
        /// Seconds to run
        #[arg(long)]
        secs: f64,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Registered HTTP services
    #[arg(long, default_value_t = 100_000)]
    services: usize,
    /// Check interval of every service, seconds
    #[arg(long, default_value_t = 30)]
    interval: u32,
    /// Measurement window after one interval of warm-up, seconds
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// The daemon binary [default: `healthchecker` next to this binary]
    #[arg(long)]
    daemon: Option<PathBuf>,
    /// Seconds of the wrk baseline (0: skip)
    #[arg(long, default_value_t = 10)]
    baseline: u64,
    /// Skip the kill -9 restart measurement (always skipped on postgres)
    #[arg(long)]
    no_restart: bool,
    /// The daemons' database: a SQLite file, or a throwaway PostgreSQL
    /// server started for the run (needs the Debian package postgresql)
    #[arg(long, default_value = "sqlite", value_parser = ["sqlite", "postgres"])]
    db: String,
    /// Daemon processes on the database (several: --db postgres only)
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Seconds between the last registration and the window [default:
    /// the interval times the healthy threshold plus one]
    #[arg(long)]
    warmup: Option<u64>,
    /// One more argument for every daemon, e.g. `--daemon-arg=--keep-checks
    /// --daemon-arg=20` (repeat)
    #[arg(long = "daemon-arg", allow_hyphen_values = true)]
    daemon_args: Vec<String>,
    /// A PostgreSQL server setting `name=value` (repeat), after the
    /// throwaway server's `fsync=off` and `full_page_writes=off`
    #[arg(long = "pg-set")]
    pg_settings: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match cli.cmd {
        Some(Cmd::Target { ips, ports }) => rt.block_on(target::serve(target::addrs(ips, ports))),
        Some(Cmd::Paced { target, rate, secs }) => {
            let n = healthchecker_bench::paced_client(target, rate, secs)?;
            println!("{n}");
            Ok(())
        }
        None => {
            let me = std::env::current_exe()?;
            let daemon = cli
                .opts
                .daemon
                .unwrap_or_else(|| me.with_file_name("healthchecker"));
            let opts = Options {
                services: cli.opts.services,
                interval: cli.opts.interval,
                duration: cli.opts.duration,
                daemon,
                bench: me,
                baseline_secs: cli.opts.baseline,
                restart: !cli.opts.no_restart,
                db: match cli.opts.db.as_str() {
                    "postgres" => Db::Postgres,
                    _ => Db::Sqlite,
                },
                nodes: cli.opts.nodes,
                warmup: cli.opts.warmup,
                daemon_args: cli.opts.daemon_args,
                pg_settings: cli.opts.pg_settings,
            };
            let report = rt.block_on(run(&opts))?;
            println!("{}", report.table());
            println!("{}", report.json());
            Ok(())
        }
    }
}
