//! The healthchecker daemon as a library.
//!
//! [`run`] takes a validated [`Config`], a bound listener and a shutdown
//! future, so tests bind port 0 and stop cleanly; the `healthchecker` binary
//! is a thin wrapper around it.
//!
//! # Layout
//! - [`config`]: layered settings (CLI > env > TOML > defaults), validated once.
//! - [`store`]: SQLite (WAL): schema migrations, registrations, the batch
//!   writer that records checks, events and the outbox in one transaction.
//! - [`probe`]: TCP, SSL, HTTP and HTTPS checks over fresh connections.
//! - [`scheduler`]: one timer heap for every service, the state machine
//!   applied to each result.
//! - [`notify`]: the mail outbox sender and renderer.
//! - [`http`]: the v1 and legacy APIs, `/health`, `/metrics`.
//! - [`discovery`]: the mDNS advertisement.
//! - [`browse`]: the devices found on the LAN over DNS-SD (SPEC section 16).
//! - [`metrics`]: Prometheus series.
//! - [`supervisor`]: liveness of the essential tasks; a dead one ends `run`.
#![forbid(unsafe_code)]

pub mod browse;
pub mod clock;
pub mod config;
pub mod dependencies;
pub mod discovery;
#[cfg(any(test, feature = "fault-injection"))]
pub mod fault;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod probe;
pub mod scheduler;
pub mod silences;
pub mod store;
pub mod supervisor;

pub use config::Config;

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
    let store = store::Store::open(&cfg.db).map_err(|source| ServerError::Store {
        path: cfg.db.clone(),
        source,
    })?;
    tracing::info!(path = %cfg.db.display(), "store opened");
    store.set_keep_checks(cfg.keep_checks);
    let services = store.load_all().map_err(|source| ServerError::Store {
        path: cfg.db.clone(),
        source,
    })?;
    let tls = probe::TlsContext::new(load_extra_roots(&cfg)?);
    let metrics = Arc::new(metrics::Metrics::new());
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let (writer, writer_handle) = store::Writer::start(&store);
    let outbox_note = cfg
        .smtp
        .is_none()
        .then(|| "smtp not configured".to_string());
    if outbox_note.is_some() {
        tracing::warn!(
            "SMTP is not configured (--smtp-url): notifications are recorded but not sent"
        );
    }
    let silence_book = silences::SilenceBook::default();
    silence_book.set(store.silences().map_err(|source| ServerError::Store {
        path: cfg.db.clone(),
        source,
    })?);
    let scheduler = scheduler::start(
        services,
        scheduler::SchedulerConfig {
            max_concurrent_probes: cfg.max_concurrent_probes,
            notify_min_gap_ms: cfg.notify_min_gap.as_millis() as i64,
            outbox_note,
            silences: silence_book.clone(),
        },
        probe::Prober::new(tls, cfg.targets.clone()),
        writer_handle.clone(),
        metrics.clone(),
        cancel.clone(),
        &tasks,
    );
    let scheduler_stopped = CancellationToken::new();
    {
        // The handle's channel closes when the scheduler task ends.
        let (s, stopped) = (scheduler.clone(), scheduler_stopped.clone());
        tasks.spawn(async move {
            s.stopped().await;
            stopped.cancel();
        });
    }
    {
        let store = store.clone();
        let cancel = cancel.clone();
        // Without a sender, nothing else ever ends a pending mail.
        let no_sender = cfg.smtp.is_none();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(PRUNE_EVERY);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tick.tick() => {
                        let s = store.clone();
                        match tokio::task::spawn_blocking(move || {
                            let now = clock::now_ms();
                            if no_sender {
                                let n = s.give_up_unsent(now, "not sent: SMTP is not configured (--smtp-url)")?;
                                if n > 0 {
                                    tracing::info!(given_up = n, "unsent mail older than a day marked failed");
                                }
                            }
                            s.prune(now)
                        }).await {
                            Ok(Ok(n)) if n > 0 => tracing::info!(removed = n, "pruned check history"),
                            Ok(Err(e)) => tracing::warn!(error = %e, "pruning failed"),
                            _ => {}
                        }
                    }
                }
            }
        });
    }
    let mut essentials = vec![
        ("scheduler", scheduler_stopped),
        ("writer", writer.stopped()),
    ];
    let sender_stopped = CancellationToken::new();
    if let Some(smtp) = &cfg.smtp {
        let mailer = notify::Mailer::new(smtp)
            .map_err(|e| ServerError::Config(format!("--smtp-url: {e}")))?;
        tracing::info!(url = %redact(&smtp.url), "mail sender started");
        if let Some(warning) = notify::credential_warning(smtp) {
            tracing::warn!("{warning}");
        }
        let sender = notify::sender::run(
            store.clone(),
            mailer,
            cfg.public_url.clone(),
            metrics.clone(),
            cancel.clone(),
        );
        // Cancelled when the sender ends, by return or by panic.
        let guard = sender_stopped.clone().drop_guard();
        tasks.spawn(async move {
            let _guard = guard;
            sender.await
        });
        essentials.push(("sender", sender_stopped));
    }
    // Named channels (SPEC section 13): always running, since channels can
    // be created at any time; with SMTP, `email` channels send through it.
    let mailer = match &cfg.smtp {
        Some(smtp) => Some(
            notify::Mailer::new(smtp)
                .map_err(|e| ServerError::Config(format!("--smtp-url: {e}")))?,
        ),
        None => None,
    };
    let channels = Arc::new(notify::channels::Dispatcher::new(
        store.clone(),
        mailer,
        cfg.public_url.clone(),
    ));
    let channels_stopped = CancellationToken::new();
    {
        let run = notify::channels::run(channels.clone(), metrics.clone(), cancel.clone());
        let guard = channels_stopped.clone().drop_guard();
        tasks.spawn(async move {
            let _guard = guard;
            run.await
        });
    }
    essentials.push(("channels", channels_stopped));
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
    }));
    let addr = listener.local_addr()?;
    let api_tls = cfg.api_tls.as_ref().map(api_tls_acceptor).transpose()?;
    let scheme = if api_tls.is_some() { "https" } else { "http" };
    if cfg.auth == config::AuthMode::Token && api_tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(%addr,
            "token mode on plain HTTP on a non-loopback address: tokens cross the network in clear; give --tls-cert and --tls-key, or bind to 127.0.0.1 behind a TLS proxy");
    }
    tracing::info!(%addr, scheme, "listening");
    let advertiser = if cfg.mdns {
        match discovery::Advertiser::start(&cfg, addr, state.discovered.clone()) {
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
    let limits = Limits {
        max_connections: cfg.max_connections,
        per_client: http::limits::ClientConnections::new(cfg.max_connections_per_client),
    };
    let served = serve(listener, app, limits, api_tls, stop).await;
    let died = essentials.stopped();
    tracing::info!("shutting down");
    if let Some(a) = advertiser {
        a.withdraw().await;
    }
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    writer_handle.flush().await;
    drop(writer_handle);
    writer.join();
    served?;
    match died.first() {
        Some(task) => Err(ServerError::Stopped(task.to_string())),
        None => Ok(()),
    }
}

/// The API's TLS acceptor from `--tls-cert`/`--tls-key` (HTTP/1.1 only,
/// as the plain listener).
fn api_tls_acceptor(t: &config::ApiTls) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&t.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ServerError::Config(format!("--tls-cert {}: {e}", t.cert.display())))?;
    if certs.is_empty() {
        return Err(ServerError::Config(format!(
            "--tls-cert {}: no certificate in the file",
            t.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&t.key)
        .map_err(|e| ServerError::Config(format!("--tls-key {}: {e}", t.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| ServerError::Config(format!("--tls-cert/--tls-key: {e}")))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
}

/// The accept loop's connection caps.
struct Limits {
    /// Most API connections at once.
    max_connections: usize,
    /// Most per client address (IPv6: per /64).
    per_client: http::limits::ClientConnections,
}

/// How long a client may take to send a request's headers (slow-loris).
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long shutdown waits for open API connections to finish.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `app` on `listener` until `shutdown`: at most `max_connections`
/// connections at once and `per_client` from one client (one more is
/// closed at once), headers within [`HEADER_READ_TIMEOUT`], a response the
/// client does not read dropped after [`http::limits::WRITE_STALL`], each
/// request's peer address as an extension.
async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let max_connections = limits.max_connections;
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max_connections, "too many API connections; closing one");
            drop(stream);
            continue;
        };
        let Some(client_slot) = limits.per_client.try_acquire(peer.ip()) else {
            tracing::warn!(%peer, "too many API connections from this client; closing one");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stream = http::limits::WriteTimeout::new(stream, http::limits::WRITE_STALL);
        let app = app.clone();
        let svc =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(http::auth::Peer(peer));
                tower::ServiceExt::oneshot(app.clone(), req.map(axum::body::Body::new))
            });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => {
                    let _ = watcher
                        .watch(builder.serve_connection(TokioIo::new(stream), svc))
                        .await;
                }
                // The handshake runs here, not in the accept loop, and has
                // the header timeout: a client that stalls in it holds only
                // its own connection slot.
                Some(acceptor) => {
                    match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => {
                            let _ = watcher
                                .watch(builder.serve_connection(TokioIo::new(s), svc))
                                .await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(client_slot);
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("API connections still open after the grace period; closing them");
    }
    Ok(())
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

/// An SMTP URL without its user, for logs.
fn redact(smtp_url: &str) -> String {
    match url::Url::parse(smtp_url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "(invalid)".into(),
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
