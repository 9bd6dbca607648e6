//! The API's accept loop: connection caps, header and write timeouts,
//! optional TLS, graceful shutdown. It serves whatever router it is given
//! and knows nothing of the daemon's other tasks.

use crate::{config, http, ServerError};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The API's TLS acceptor from `--tls-cert`/`--tls-key` (HTTP/1.1 only,
/// as the plain listener).
pub(crate) fn api_tls_acceptor(
    t: &config::ApiTls,
) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
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
pub(crate) struct Limits {
    /// Most API connections at once.
    pub max_connections: usize,
    /// Most per client address (IPv6: per /64).
    pub per_client: http::limits::ClientConnections,
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
pub(crate) async fn serve(
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
