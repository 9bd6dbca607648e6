//! The healthchecker daemon as a library.
//!
//! [`run`] takes a validated [`Config`], a bound listener and a shutdown
//! future, so tests bind port 0 and stop cleanly; the `healthchecker` binary
//! is a thin wrapper around it.
//!
//! # Layout
//! - [`config`]: layered settings (CLI > env > TOML > defaults), validated once.
//! - [`store`]: SQLite (WAL) or PostgreSQL behind one `Store`: schema
//!   migrations, registrations, the batch writer that records checks,
//!   events and the outbox in one transaction.
//! - [`probe`]: TCP, SSL, HTTP and HTTPS checks over fresh connections.
//! - [`scheduler`]: one timer heap for every service; each result goes
//!   through the service's pure monitor (`healthchecker_core::monitor`) and
//!   on to the writer.
//! - [`clock`]: the injectable wall clock (tests follow tokio's paused time).
//! - [`cluster`]: PostgreSQL for a cluster (SPEC section 19): the `postgres://`
//!   database, its migrations, bucket leases and fencing, the PostgreSQL
//!   store, wake-ups; `cluster::node` runs the daemon as a node.
//! - `serve`: the API's accept loop (connection caps, timeouts, TLS).
//! - [`notify`]: the mail outbox sender and renderer.
//! - [`http`]: the v1 and legacy APIs, `/health`, `/metrics`.
//! - [`discovery`]: the mDNS advertisement.
//! - [`browse`]: the devices found on the LAN over DNS-SD (SPEC section 16).
//! - [`metrics`]: Prometheus series.
//! - [`supervisor`]: liveness of the essential tasks; a dead one ends `run`.
#![forbid(unsafe_code)]

pub mod browse;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod dependencies;
pub mod discovery;
#[cfg(any(test, feature = "fault-injection"))]
pub mod fault;
pub mod host;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod probe;
pub mod scheduler;
mod serve;
pub mod silences;
pub mod store;
pub mod supervisor;

/// A map keyed by service id, for the maps looked up on every check (the
/// scheduler's entries, the writer's overlay): foldhash instead of
/// SipHash, since the keys are our own ids.
pub(crate) type IdMap<V> =
    std::collections::HashMap<healthchecker_core::ServiceId, V, foldhash::fast::RandomState>;

pub use config::Config;
pub use serve::{HEADER_READ_TIMEOUT, SHUTDOWN_GRACE};

use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store could not be opened.
    #[error("store {path}: {source}")]
    Store {
        /// The database file.
        path: std::path::PathBuf,
        /// Why.
        source: store::StoreError,
    },
    /// A file named by the configuration could not be used.
    #[error("{0}")]
    Config(String),
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
    /// An essential task (scheduler, store writer, mail sender) stopped
    /// while the daemon was running: exit non-zero so that a supervisor
    /// restarts it.
    #[error("essential task {0:?} stopped unexpectedly; exiting so that the daemon is restarted")]
    Stopped(String),
    /// The daemon's own task panicked or was cancelled ([`Daemon`]).
    #[error("daemon task failed: {0}")]
    Crashed(String),
}

/// How often old checks are pruned.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

fn load_extra_roots(
    cfg: &Config,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ServerError> {
    use rustls::pki_types::pem::PemObject;
    let Some(path) = &cfg.tls_ca_file else {
        return Ok(Vec::new());
    };
    rustls::pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ServerError::Config(format!("--tls-ca-file {}: {e}", path.display())))
}

/// Every [`PRUNE_EVERY`], deletes check history beyond `--keep-checks`
/// and, when no mail sender runs (`no_sender`), gives up mail that has
/// waited a day (nothing else would ever end it). Stops on `cancel`.
async fn prune_periodically(
    store: store::Store,
    no_sender: bool,
    clock: clock::Clock,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let s = store.clone();
        let now = clock.now_ms();
        let pruned = tokio::task::spawn_blocking(move || {
            if no_sender {
                let n = s.give_up_unsent(now, "not sent: SMTP is not configured (--smtp-url)")?;
                if n > 0 {
                    tracing::info!(given_up = n, "unsent mail older than a day marked failed");
                }
            }
            s.prune(now)
        })
        .await;
        match pruned {
            Ok(Ok(n)) if n > 0 => tracing::info!(removed = n, "pruned check history"),
            Ok(Err(e)) => tracing::warn!(error = %e, "pruning failed"),
            _ => {}
        }
    }
}

/// The SMTP client of `--smtp-url`, if configured.
fn mailer(cfg: &Config) -> Result<Option<notify::Mailer>, ServerError> {
    cfg.smtp
        .as_ref()
        .map(|smtp| {
            notify::Mailer::new(smtp).map_err(|e| ServerError::Config(format!("--smtp-url: {e}")))
        })
        .transpose()
}

/// Spawns an essential task on `tasks`; the token is cancelled when the
/// task ends, by return or by panic (supervision watches it).
fn spawn_essential(
    tasks: &TaskTracker,
    task: impl Future<Output = ()> + Send + 'static,
) -> CancellationToken {
    let stopped = CancellationToken::new();
    let guard = stopped.clone().drop_guard();
    tasks.spawn(async move {
        let _guard = guard;
        task.await
    });
    stopped
}

/// Logs how mail will go out: where to, and what is wrong with the
/// settings, or that it will not go out at all.
fn log_mail_settings(cfg: &Config) {
    match &cfg.smtp {
        Some(smtp) => {
            tracing::info!(url = %smtp.url.without_user(), "mail sender started");
            if let Some(warning) = smtp.url.credential_warning() {
                tracing::warn!("{warning}");
            }
        }
        None => tracing::warn!(
            "SMTP is not configured (--smtp-url): notifications are recorded but not sent"
        ),
    }
}

/// Runs the daemon until `shutdown` completes: opens the store, starts the
/// scheduler, the batch writer, the mail sender and the HTTP API on
/// `listener`. On shutdown it stops accepting, lets in-flight probes finish
/// (each bounded by its timeout), flushes pending writes and returns.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    raise_fd_limit(cfg.max_concurrent_probes);
    let addr = listener.local_addr()?;
    // `--db postgres://…`: a node of a cluster (never a SQLite file).
    let mut node = match &cfg.postgres {
        Some(db) => Some(
            cluster::node::Node::open(db, cfg.node_id_for(addr.port()), cfg.public_url.clone())
                .await
                .map_err(ServerError::Config)?,
        ),
        None => None,
    };
    let store = match &node {
        Some(n) => n.store.clone(),
        None => {
            let s = store::Store::open(&cfg.db).map_err(|source| ServerError::Store {
                path: cfg.db.clone(),
                source,
            })?;
            tracing::info!(path = %cfg.db.display(), "store opened");
            s
        }
    };
    let store_error = |source| ServerError::Store {
        path: cfg.db.clone(),
        source,
    };
    store.set_keep_checks(cfg.keep_checks);
    // On the reader threads: PostgreSQL's blocking client must not run on
    // a tokio worker.
    let services = store.read(|s| s.load_all()).await.map_err(store_error)?;
    let tls = probe::TlsContext::new(load_extra_roots(&cfg)?);
    let metrics = Arc::new(metrics::Metrics::with_per_service(cfg.metrics_per_service));
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let (writer, writer_handle) =
        store::Writer::start_fenced(&store, node.as_ref().map(|n| n.fence(&metrics)));
    let outbox_note = cfg
        .smtp
        .is_none()
        .then(|| "smtp not configured".to_string());
    let clock = clock::Clock::system();
    let silence_book = silences::SilenceBook::default();
    silence_book.set(store.read(|s| s.silences()).await.map_err(store_error)?);
    let loaded: Vec<_> = match &node {
        Some(_) => services
            .iter()
            .map(|r| (r.id, r.spec.name.clone()))
            .collect(),
        None => Vec::new(),
    };
    let scheduler = scheduler::start(
        services,
        scheduler::SchedulerConfig {
            max_concurrent_probes: cfg.max_concurrent_probes,
            notify_min_gap_ms: cfg.notify_min_gap.as_millis() as i64,
            outbox_note,
            silences: silence_book.clone(),
            clock,
            ownership: node.as_ref().map(|n| n.ownership()),
        },
        probe::Prober::new(tls, cfg.targets.clone()),
        writer_handle.clone(),
        metrics.clone(),
        cancel.clone(),
        &tasks,
    );
    // The handle's channel closes when the scheduler task ends.
    if let Some(n) = &mut node {
        n.listen(scheduler.clone(), loaded, cancel.clone());
    }
    let watched = scheduler.clone();
    let scheduler_stopped = spawn_essential(&tasks, async move { watched.stopped().await });
    tasks.spawn(prune_periodically(
        store.clone(),
        cfg.smtp.is_none(),
        clock,
        cancel.clone(),
    ));
    let mut essentials = vec![
        ("scheduler", scheduler_stopped),
        ("writer", writer.stopped()),
    ];
    if let Some(mailer) = mailer(&cfg)? {
        let sender = notify::sender::run(
            store.clone(),
            mailer,
            cfg.public_url.clone(),
            digest_rule(&cfg),
            metrics.clone(),
            cancel.clone(),
        );
        essentials.push(("sender", spawn_essential(&tasks, sender)));
    }
    log_mail_settings(&cfg);
    // Named channels (SPEC section 13): always running, since channels can
    // be created at any time; with SMTP, `email` channels send through it.
    let mailer = mailer(&cfg)?;
    let channels = Arc::new(
        notify::channels::Dispatcher::new(store.clone(), mailer, cfg.public_url.clone())
            .with_digests(digest_rule(&cfg)),
    );
    let run = notify::channels::run(channels.clone(), metrics.clone(), cancel.clone());
    essentials.push(("channels", spawn_essential(&tasks, run)));
    // Home Assistant sees every service of an `mqtt` channel (issue 16).
    tasks.spawn(notify::channels::mqtt_sync::run(
        channels.clone(),
        cancel.clone(),
    ));
    let essentials = supervisor::Essentials::new(essentials);
    let state = http::AppState(Arc::new(http::AppInner {
        store: store.clone(),
        scheduler,
        metrics,
        config: Arc::new(cfg.clone()),
        started_at: clock::now_ms(),
        limiter: http::limits::ChangeLimiter::new(cfg.register_rate_limit),
        essentials: essentials.clone(),
        sessions: Default::default(),
        state_counts: Default::default(),
        discovered: Default::default(),
        channels,
        silences: silence_book,
        cluster: node.as_ref().map(|n| n.cluster_source()),
        notifier: node.as_ref().map(|n| n.notifier()),
    }));
    let api_tls = cfg
        .api_tls
        .as_ref()
        .map(serve::api_tls_acceptor)
        .transpose()?;
    let scheme = if api_tls.is_some() { "https" } else { "http" };
    if cfg.auth == config::AuthMode::Token && api_tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(%addr,
            "token mode on plain HTTP on a non-loopback address: tokens cross the network in clear; give --tls-cert and --tls-key, or bind to 127.0.0.1 behind a TLS proxy");
    }
    tracing::info!(%addr, scheme, "listening");
    let advertiser = if cfg.mdns {
        let node_id = node.as_ref().map(|n| n.id.as_str());
        match discovery::Advertiser::start_node(&cfg, addr, state.discovered.clone(), node_id) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::warn!(error = %e, "mDNS advertisement failed; clients need --server");
                None
            }
        }
    } else {
        None
    };
    // `--auto-monitor TYPE`: only with mDNS on (nothing is found without it).
    if advertiser.is_some() && !cfg.auto_monitor.is_empty() {
        tasks.spawn(http::auto_monitor(state.clone(), cancel.clone()));
    }
    let app = http::router(state);
    // Stop on `shutdown`, or EXIT_GRACE after an essential task stopped
    // (`/health` fails meanwhile).
    let watch = essentials.clone();
    let stop = async move {
        tokio::pin!(shutdown);
        tokio::select! {
            _ = &mut shutdown => {}
            task = watch.first_stopped() => {
                tracing::error!(task, grace = ?supervisor::EXIT_GRACE,
                    "an essential task stopped; /health fails and the daemon exits");
                tokio::select! {
                    _ = &mut shutdown => {}
                    _ = tokio::time::sleep(supervisor::EXIT_GRACE) => {}
                }
            }
        }
    };
    let limits = serve::Limits {
        max_connections: cfg.max_connections,
        per_client: http::limits::ClientConnections::new(cfg.max_connections_per_client),
    };
    let served = serve::serve(listener, app, limits, api_tls, stop).await;
    let died = essentials.stopped();
    tracing::info!("shutting down");
    if let Some(a) = advertiser {
        a.withdraw().await;
    }
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    // A database that does not answer must not keep the daemon from
    // exiting: the writer's retries end after the grace period, and what
    // is left unwritten is logged with its count.
    writer_handle.stop_retrying_after(serve::SHUTDOWN_GRACE);
    writer_handle.flush().await;
    drop(writer_handle);
    writer.join();
    if let Some(n) = node {
        // After the last write: the buckets go to the other nodes at once.
        n.stop().await;
    }
    served?;
    match died.first() {
        Some(task) => Err(ServerError::Stopped(task.to_string())),
        None => Ok(()),
    }
}

/// Raises the soft file-descriptor limit to the hard limit: every probe in
/// flight holds a socket, and the common soft default (1024) is far below
/// `--max-concurrent-probes`.
fn raise_fd_limit(wanted: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                tracing::info!(from = soft, to = hard, "raised the file-descriptor limit");
            }
            let now = soft.max(hard);
            if (now as usize) < wanted + 256 {
                tracing::warn!(limit = now, max_concurrent_probes = wanted,
                    "the file-descriptor limit is below --max-concurrent-probes; probes may fail with 'too many open files'");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the file-descriptor limit"),
    }
}

/// A daemon running in this process on a loopback port, for tests and
/// embedding. Stops on [`Daemon::stop`] (or when dropped, without waiting).
pub struct Daemon {
    /// The API's base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// The bound address.
    pub addr: std::net::SocketAddr,
    cancel: CancellationToken,
    handle: Option<tokio::task::JoinHandle<Result<(), ServerError>>>,
}

impl Daemon {
    /// Starts the daemon on `127.0.0.1:0` with `cfg`.
    pub async fn start(cfg: Config) -> Result<Daemon, ServerError> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let scheme = if cfg.api_tls.is_some() {
            "https"
        } else {
            "http"
        };
        let handle = tokio::spawn(run(cfg, listener, async move { c.cancelled().await }));
        Ok(Daemon {
            url: format!("{scheme}://{addr}"),
            addr,
            cancel,
            handle: Some(handle),
        })
    }

    /// Stops the daemon and waits for it to finish: its own error, if it
    /// stopped with one, or [`ServerError::Crashed`] if its task panicked.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        self.cancel.cancel();
        self.wait().await
    }

    /// Waits for the daemon to end by itself (an essential task stopped)
    /// without asking it to stop; returns what [`run`] returned.
    pub async fn wait(&mut self) -> Result<(), ServerError> {
        match self.handle.take() {
            Some(h) => h
                .await
                .unwrap_or_else(|e| Err(ServerError::Crashed(e.to_string()))),
            None => Ok(()),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The digest rule of `--digest-threshold` and `--digest-window`.
fn digest_rule(cfg: &Config) -> healthchecker_core::policy::DigestRule {
    healthchecker_core::policy::DigestRule {
        threshold: cfg.digest_threshold,
        window_ms: cfg.digest_window.as_millis() as i64,
    }
}
