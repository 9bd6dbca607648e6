//! `healthchecker serve`: options, logging, signals, then `server::run`.

use clap::{ArgMatches, Args};
use healthchecker_server::config::{Layer, LogFormat, RawOptions};
use healthchecker_server::Config;
use std::process::ExitCode;

/// Options of `serve`: the daemon's [`RawOptions`], each of which may also
/// come from `HEALTHCHECKER_<NAME>` or the TOML file named by `--config`;
/// the server's config module merges and validates them, naming the option
/// and its source on error.
#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    options: RawOptions,
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

/// `--db postgres://…` that cannot connect at start: exit 2 with the
/// reason (SPEC section 19), before anything is bound or created.
async fn postgres_unreachable(pg: &healthchecker_server::cluster::PgDb) -> Option<ExitCode> {
    let e = pg.check().await.err()?;
    eprintln!("healthchecker: cannot connect to the PostgreSQL database {pg} (--db): {e}");
    Some(ExitCode::from(2))
}

pub fn main(args: ServeArgs, m: &ArgMatches) -> ExitCode {
    let cfg = match Config::resolve(Layer::from_cli(&args.options, m)) {
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
    if let Some(pg) = &cfg.postgres {
        if let Some(code) = rt.block_on(postgres_unreachable(pg)) {
            return code;
        }
    }
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(cfg.bind).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("healthchecker: cannot listen on {} (--bind): {e}", cfg.bind);
                return ExitCode::FAILURE;
            }
        };
        match &cfg.postgres {
            Some(pg) => eprintln!("healthchecker: database {pg}"),
            None => eprintln!("healthchecker: database {}", cfg.db.display()),
        }
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
