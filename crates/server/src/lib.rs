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
//! - [`metrics`]: Prometheus series.
#![forbid(unsafe_code)]

pub mod clock;
pub mod config;
pub mod discovery;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod probe;
pub mod scheduler;
pub mod store;

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
    let scheduler = scheduler::start(
        services,
        scheduler::SchedulerConfig {
            max_concurrent_probes: cfg.max_concurrent_probes,
            notify_min_gap_ms: cfg.notify_min_gap.as_millis() as i64,
            outbox_note,
        },
        probe::Prober::new(tls, cfg.targets.clone()),
        writer_handle.clone(),
        metrics.clone(),
        cancel.clone(),
        &tasks,
    );
    {
        let store = store.clone();
        let cancel = cancel.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(PRUNE_EVERY);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tick.tick() => {
                        let s = store.clone();
                        match tokio::task::spawn_blocking(move || s.prune(clock::now_ms())).await {
                            Ok(Ok(n)) if n > 0 => tracing::info!(removed = n, "pruned check history"),
                            Ok(Err(e)) => tracing::warn!(error = %e, "pruning failed"),
                            _ => {}
                        }
                    }
                }
            }
        });
    }
    if let Some(smtp) = &cfg.smtp {
        let mailer = notify::Mailer::new(smtp)
            .map_err(|e| ServerError::Config(format!("--smtp-url: {e}")))?;
        tracing::info!(url = %redact(&smtp.url), "mail sender started");
        if let Ok(u) = url::Url::parse(&smtp.url) {
            let tls =
                u.scheme() == "smtps" || u.query_pairs().any(|(k, v)| k == "tls" && v != "none");
            if !u.username().is_empty() && !tls {
                tracing::warn!(
                    "SMTP credentials will travel unencrypted: add ?tls=starttls or use smtps://"
                );
            }
        }
        tasks.spawn(notify::sender::run(
            store.clone(),
            mailer,
            cfg.public_url.clone(),
            metrics.clone(),
            cancel.clone(),
        ));
    }
    let state = http::AppState(Arc::new(http::AppInner {
        store: store.clone(),
        scheduler,
        metrics,
        config: Arc::new(cfg.clone()),
        started_at: clock::now_ms(),
        limiter: http::auth::RateLimiter::new(cfg.register_rate_limit),
    }));
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    let advertiser = if cfg.mdns {
        match discovery::Advertiser::start(&cfg, addr) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::warn!(error = %e, "mDNS advertisement failed; clients need --server");
                None
            }
        }
    } else {
        None
    };
    let app = http::router(state);
    let served = serve(listener, app, cfg.max_connections, shutdown).await;
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
    Ok(())
}

/// How long a client may take to send a request's headers (slow-loris).
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long shutdown waits for open API connections to finish.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `app` on `listener` until `shutdown`: at most `max_connections`
/// connections at once (one more is closed at once), headers within
/// [`HEADER_READ_TIMEOUT`], each request's peer address as an extension.
async fn serve(
    listener: TcpListener,
    app: axum::Router,
    max_connections: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
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
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let svc =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(http::auth::Peer(peer));
                tower::ServiceExt::oneshot(app.clone(), req.map(axum::body::Body::new))
            });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
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
        let handle = tokio::spawn(run(cfg, listener, async move { c.cancelled().await }));
        Ok(Daemon {
            url: format!("http://{addr}"),
            addr,
            cancel,
            handle: Some(handle),
        })
    }

    /// Stops the daemon and waits for it to finish.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        self.cancel.cancel();
        match self.handle.take() {
            Some(h) => h.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
