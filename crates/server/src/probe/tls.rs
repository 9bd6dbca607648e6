//! The TLS step of SSL and HTTPS probes (rustls, ring provider).
//!
//! Like an ELB, a probe accepts any certificate unless the service sets
//! `tls_verify` (home devices use self-signed certificates); it still checks
//! the handshake's signatures, and always records the leaf's expiry.

use healthchecker_core::ServiceSpec;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The two client configurations probes use, built once.
#[derive(Clone)]
pub struct TlsContext {
    verifying: TlsConnector,
    accepting: TlsConnector,
    verifying_h1: TlsConnector,
    accepting_h1: TlsConnector,
}

impl TlsContext {
    /// Trusts the system's roots plus `extra_roots` (e.g. a home-lab CA)
    /// for services with `tls_verify`.
    pub fn new(extra_roots: Vec<CertificateDer<'static>>) -> TlsContext {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs.into_iter().chain(extra_roots) {
            let _ = roots.add(cert);
        }
        let verifying = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let accepting = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
            .with_no_client_auth();
        let h1 = |c: &ClientConfig| {
            let mut c = c.clone();
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            TlsConnector::from(Arc::new(c))
        };
        TlsContext {
            verifying_h1: h1(&verifying),
            accepting_h1: h1(&accepting),
            verifying: TlsConnector::from(Arc::new(verifying)),
            accepting: TlsConnector::from(Arc::new(accepting)),
        }
    }

    /// Completes a TLS handshake over `stream`; returns the stream and the
    /// leaf certificate's expiry (Unix ms), or a short failure reason.
    pub(crate) async fn handshake(
        &self,
        stream: TcpStream,
        host: &str,
        spec: &ServiceSpec,
    ) -> Result<(TlsStream<TcpStream>, Option<i64>), String> {
        let connector = match (spec.tls_verify, spec.target.protocol.is_http()) {
            (true, true) => &self.verifying_h1,
            (true, false) => &self.verifying,
            (false, true) => &self.accepting_h1,
            (false, false) => &self.accepting,
        };
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("TLS handshake failed: invalid server name {host}: {e}"))?;
        let tls = connector
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        let expires = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|leaf| {
                x509_parser::parse_x509_certificate(leaf.as_ref())
                    .ok()
                    .map(|(_, cert)| cert.validity().not_after.timestamp() * 1000)
            });
        Ok((tls, expires))
    }
}

/// Accepts any certificate chain but verifies handshake signatures with the
/// provider's algorithms, so the session is still bound to the key shown.
/// Also PostgreSQL's `prefer` and `require` (cluster/db.rs).
#[derive(Debug)]
pub(crate) struct AcceptAnyCert(pub(crate) Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
