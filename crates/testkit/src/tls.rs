//! TLS targets with rcgen certificates: HTTPS (and SSL) on loopback.

use crate::target::{serve_conn, Mode, Shared};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A self-signed certificate for `localhost` and 127.0.0.1.
#[derive(Clone)]
pub struct TlsCert {
    /// DER certificate.
    pub cert: CertificateDer<'static>,
    /// PEM certificate (to trust it with `--tls-ca-file`).
    pub pem: String,
    /// PEM private key (PKCS#8), for serving with it (`--tls-key`).
    pub key_pem: String,
    key: Vec<u8>,
}

impl TlsCert {
    /// A certificate valid from yesterday until `valid_for` from now
    /// (negative: already expired).
    pub fn new(valid_for: time::Duration) -> TlsCert {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("params");
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(30);
        params.not_after = now + valid_for;
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed");
        TlsCert {
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert: cert.der().clone(),
            key: key.serialize_der(),
        }
    }

    fn server_config(&self) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], key)
            .expect("server config");
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        cfg
    }
}

/// An HTTPS server (any TLS client may also just handshake: SSL checks).
pub struct TlsTarget {
    /// Its address.
    pub addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    task: JoinHandle<()>,
}

impl TlsTarget {
    /// Starts on 127.0.0.1 with `cert`, answering `mode` over HTTP.
    pub async fn start(cert: &TlsCert, mode: Mode) -> TlsTarget {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cert.server_config()));
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().unwrap();
        let shared: Shared = (Arc::new(Mutex::new(mode)), Arc::new(AtomicU64::new(0)));
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                let s = s.clone();
                tokio::spawn(async move {
                    let hs = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    if let Ok(Ok(tls)) = hs.await {
                        serve_conn(tls, s).await;
                    }
                });
            }
        });
        TlsTarget {
            addr,
            mode: shared.0,
            task,
        }
    }

    /// `https://127.0.0.1:port` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{}", self.addr, path)
    }

    /// Changes how it answers from now on.
    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
}

impl Drop for TlsTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}
