//! `healthchecker`: the one binary. `serve` runs the daemon; the other
//! commands are clients of a running daemon.

mod channel_cmd;
mod client_cmd;
mod health_cmd;
mod heartbeat_cmd;
mod lan_cmd;
mod sd_notify;
mod serve;
mod silence_cmd;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: every check allocates a connection's
/// buffers (hyper's 8 KiB read buffer among them), which glibc serves from
/// its slow bins; measured in docs/performance.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "healthchecker",
    version,
    about = "Self-hosted health-check daemon and its client"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve(Box<serve::ServeArgs>),
    /// Register (or update) a service for monitoring.
    Monitor(client_cmd::MonitorArgs),
    /// List every service (a table; --json for scripts).
    List(client_cmd::ListArgs),
    /// Show one service.
    Info(client_cmd::NameArgs),
    /// Pause a service's checks.
    Pause(client_cmd::NameArgs),
    /// Resume a service's checks.
    Resume(client_cmd::NameArgs),
    /// Stop monitoring a service.
    Stop(client_cmd::NameArgs),
    /// Find daemons on the local network (mDNS); with --devices, what a
    /// daemon found on the LAN to monitor.
    Discover(client_cmd::DiscoverArgs),
    /// Ping a heartbeat service (success, --start, --fail or --exit-code).
    Ping(heartbeat_cmd::PingArgs),
    /// Run a command and report it to a heartbeat service: a start ping,
    /// then its exit code and the last 10 KiB of its output.
    Run(heartbeat_cmd::RunArgs),
    /// Ask a daemon's own /health (exit 0 when healthy): for container
    /// HEALTHCHECKs and scripts.
    Health(health_cmd::HealthArgs),
    /// Notification channels: add, list, test, rm.
    Channel(channel_cmd::ChannelArgs),
    /// Silence a service or a tag for a while (a maintenance window).
    Silence(silence_cmd::SilenceArgs),
}

fn main() -> ExitCode {
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Serve(args) => {
            let sub = matches.subcommand_matches("serve").expect("serve matched");
            serve::main(*args, sub)
        }
        Command::Monitor(a) => client_cmd::exec(client_cmd::monitor(a)),
        Command::List(a) => client_cmd::exec(client_cmd::list(a)),
        Command::Info(a) => client_cmd::exec(client_cmd::info(a)),
        Command::Pause(a) => client_cmd::exec(client_cmd::set_paused(a, true)),
        Command::Resume(a) => client_cmd::exec(client_cmd::set_paused(a, false)),
        Command::Stop(a) => client_cmd::exec(client_cmd::stop(a)),
        Command::Discover(a) if a.devices => client_cmd::exec(lan_cmd::devices(&a.conn, a.json)),
        Command::Discover(a) => client_cmd::exec(client_cmd::discover(a)),
        Command::Ping(a) => client_cmd::exec(heartbeat_cmd::ping(a)),
        Command::Run(a) => heartbeat_cmd::run(a),
        Command::Health(a) => health_cmd::main(a),
        Command::Channel(a) => client_cmd::exec(channel_cmd::run(a)),
        Command::Silence(a) => client_cmd::exec(silence_cmd::run(a)),
    }
}

/// Builds a command's tokio runtime (`serve` multi-threaded, `health` on
/// the current thread); on failure says why, and the command exits 1.
fn runtime(builder: &mut tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("healthchecker: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}
