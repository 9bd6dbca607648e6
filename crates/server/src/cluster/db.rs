//! The PostgreSQL database named by `--db postgres://…`: the URL parsed
//! once, the password joined from the environment or a file, the TLS
//! setting (`sslmode`, `sslrootcert`), a pool of connections, and the check
//! made at start-up.
//!
//! The password never appears in a message: [`PgDb`]'s `Display` is the
//! URL without it, and its `Debug` redacts it (tokio-postgres does).
//!
//! Every connection of a node — the pool, the wake-up listener, the
//! store's reader and writer threads, the migration — is opened with
//! [`PgDb::config`] and [`PgDb::tls`], so all of them use the one TLS
//! setting of the URL (docs/cluster.md, "TLS").

use super::ClusterError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How long opening one connection may take (TCP, start-up, auth): long
/// enough for a database across a WAN, short enough that a wrong host
/// fails start-up within seconds rather than hanging.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a session may sit idle inside an open transaction before
/// PostgreSQL ends it (`idle_in_transaction_session_timeout`, set on every
/// connection of the node). A node paused mid-transaction (`SIGSTOP`, a
/// frozen VM) would otherwise keep the locks it took — the fence lock of
/// its writes (cluster/fence.rs), the lease round's `FOR UPDATE` — and the
/// other nodes' claims, which skip those, could not take its buckets over
/// until it resumed. (PostgreSQL does not apply it to a session in the
/// middle of a `COPY`: a claiming node ends that one itself,
/// `fence::END_STUCK_FENCES`.) Shorter than
/// the 10 s lease expiry, so the locks are gone when the leases expire; the paused node's next
/// statement then fails, its connection is opened again, and its stale
/// writes are refused by the fence. No statement of the daemon keeps a
/// transaction idle that long.
pub const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(5);

/// Connections in a node's pool: the lease manager uses one, the store's
/// writer and readers will use the rest; PostgreSQL's default
/// `max_connections` of 100 then serves ten nodes.
pub const POOL_SIZE: usize = 8;

/// The URL schemes taken as PostgreSQL rather than a SQLite path.
pub const SCHEMES: [&str; 2] = ["postgres://", "postgresql://"];

/// Whether a `--db` value names PostgreSQL (`postgres://` or
/// `postgresql://`, any case) rather than a SQLite file.
pub fn is_postgres_url(v: &str) -> bool {
    let v = v.trim_start().to_ascii_lowercase();
    SCHEMES.iter().any(|s| v.starts_with(s))
}

/// A PostgreSQL database to connect to: `postgres://user@host[:port]/db`
/// with the password from `--db-password-file` or
/// `HEALTHCHECKER_DB_PASSWORD` (which take precedence over one written in
/// the URL), and the URL's `sslmode` and `sslrootcert` ([`PgTls`]).
#[derive(Clone, Debug)]
pub struct PgDb {
    config: tokio_postgres::Config,
    shown: String,
    tls: PgTls,
}

impl PgDb {
    /// Parses `url`; `password`, if given, replaces one in the URL. The
    /// error says what is wrong without echoing a password.
    pub fn parse(url: &str, password: Option<String>) -> Result<PgDb, String> {
        let url = url.trim();
        if !is_postgres_url(url) {
            return Err("expected a postgres:// URL".into());
        }
        let mut shown = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
        let _ = shown.set_password(None);
        // tokio-postgres knows only disable/prefer/require and no
        // sslrootcert: the TLS parameters are ours, the rest is its.
        let (url, tls) = take_tls_params(url)?;
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| format!("not a PostgreSQL URL: {e}"))?;
        if config.get_hosts().is_empty() {
            return Err("expected a host: postgres://user@host/db".into());
        }
        if config.get_user().is_none_or(str::is_empty) {
            return Err("expected a user: postgres://user@host/db".into());
        }
        if let Some(p) = password {
            config.password(p);
        }
        let idle = format!(
            "-c idle_in_transaction_session_timeout={}",
            IDLE_IN_TRANSACTION.as_millis()
        );
        let options = match config.get_options() {
            Some(o) if !o.trim().is_empty() => format!("{o} {idle}"),
            _ => idle,
        };
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .application_name("healthchecker")
            .options(&options)
            .ssl_mode(tls.mode.wire());
        Ok(PgDb {
            config,
            shown: shown.to_string(),
            tls,
        })
    }

    /// The tokio-postgres configuration (password included; its `sslmode`
    /// is disable, prefer or require, the verification being [`PgDb::tls`]'s).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The TLS connector every connection of the node is opened with
    /// (tokio-postgres's `connect`, the blocking `postgres` crate's, the
    /// pool's): rustls with the ring provider, verifying as `sslmode` says.
    pub fn tls(&self) -> MakeRustlsConnect {
        self.tls.connect.clone()
    }

    /// The TLS setting of the URL.
    pub fn tls_setting(&self) -> &PgTls {
        &self.tls
    }

    /// A pool of at most `size` connections (created on demand).
    pub fn pool(&self, size: usize) -> Pool {
        let manager = Manager::from_config(
            self.config.clone(),
            self.tls(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .expect("a runtime is set, so timeouts are allowed")
    }

    /// Opens one connection and runs a query: the start-up check, whose
    /// error says why the database cannot be used (refused, unknown host,
    /// authentication, no such database, timeout; a failed TLS step names
    /// `sslmode` and `sslrootcert`: no TLS on the server, a certificate
    /// that did not verify).
    pub async fn check(&self) -> Result<(), ClusterError> {
        let attempt = async {
            let (client, conn) = self
                .config
                .connect(self.tls())
                .await
                .map_err(|e| self.tls.blame(e))?;
            let conn = tokio::spawn(conn);
            client.simple_query("SELECT 1").await?;
            drop(client);
            let _ = conn.await;
            Ok::<(), ClusterError>(())
        };
        // connect_timeout bounds each address; this bounds the whole check.
        tokio::time::timeout(CONNECT_TIMEOUT * 2, attempt)
            .await
            .map_err(|_| ClusterError::Timeout("connecting"))?
    }
}

impl fmt::Display for PgDb {
    /// The URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// libpq's `sslmode` values (`?sslmode=` in the URL), all five.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, else plain; the certificate is not
    /// verified. libpq's default, and ours when the URL has none.
    Prefer,
    /// TLS or no connection; the certificate is not verified unless
    /// `sslrootcert` names a file (then as `verify-ca`, as libpq does).
    Require,
    /// TLS with a certificate chain to a trusted root, for any host name.
    VerifyCa,
    /// TLS with a chain to a trusted root and the URL's host name (or IP
    /// address) in the certificate.
    VerifyFull,
}

impl SslMode {
    /// The URL's spelling (libpq's).
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(v: &str) -> Result<SslMode, String> {
        [
            SslMode::Disable,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ]
        .into_iter()
        .find(|m| m.as_str() == v)
        .ok_or_else(|| {
            format!("unknown sslmode={v} (valid: disable, prefer, require, verify-ca, verify-full)")
        })
    }

    /// What tokio-postgres is told: whether TLS is tried and required (the
    /// verification is the connector's).
    fn wire(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        }
    }
}

/// The TLS setting of a node's connections: the URL's `sslmode` (default
/// `prefer`) and `sslrootcert` (a PEM file, or `system`; default the
/// system's roots, as the daemon's other TLS clients), and the rustls
/// connector built from them once.
#[derive(Clone)]
pub struct PgTls {
    mode: SslMode,
    /// `sslrootcert`; `None` for the system's roots.
    root: Option<PathBuf>,
    connect: MakeRustlsConnect,
}

/// How much of the server's certificate is checked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verify {
    /// Nothing but the handshake's signatures (`prefer`, `require`).
    Nothing,
    /// The chain to a root, not the name (`verify-ca`).
    Chain,
    /// The chain and the host name (`verify-full`).
    Full,
}

impl PgTls {
    fn new(mode: Option<SslMode>, root: Option<&str>) -> Result<PgTls, String> {
        let (mode, root) = match root {
            Some("") => return Err("sslrootcert is empty (a PEM file, or system)".into()),
            // libpq 16: the system's roots, which only mean something with
            // the host name checked too.
            Some("system") => match mode.unwrap_or(SslMode::VerifyFull) {
                SslMode::VerifyFull => (SslMode::VerifyFull, None),
                weak => {
                    return Err(format!(
                        "sslmode={} may not be used with sslrootcert=system \
                         (use sslmode=verify-full)",
                        weak.as_str()
                    ))
                }
            },
            Some(file) => (mode.unwrap_or(SslMode::Prefer), Some(PathBuf::from(file))),
            None => (mode.unwrap_or(SslMode::Prefer), None),
        };
        let verify = match mode {
            SslMode::Disable | SslMode::Prefer => Verify::Nothing,
            SslMode::Require if root.is_some() => Verify::Chain,
            SslMode::Require => Verify::Nothing,
            SslMode::VerifyCa => Verify::Chain,
            SslMode::VerifyFull => Verify::Full,
        };
        // A file given is read even when not used (disable, prefer): a
        // wrong path is a mistake to report at start, not later.
        let roots = match &root {
            Some(path) => Some(roots_from_file(path)?),
            None if verify != Verify::Nothing => Some(system_roots(mode)?),
            None => None,
        };
        let config = client_config(verify, roots)?;
        Ok(PgTls {
            mode,
            root,
            connect: MakeRustlsConnect::new(config),
        })
    }

    /// The `sslmode` in force (the URL's, else `prefer`).
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// The `sslrootcert` file, if one was given (else the system's roots).
    pub fn root(&self) -> Option<&std::path::Path> {
        self.root.as_deref()
    }

    /// A failed connection as a [`ClusterError`]: one that failed in its
    /// TLS step says under which setting.
    fn blame(&self, e: tokio_postgres::Error) -> ClusterError {
        // tokio-postgres does not expose its error kinds; its TLS kind is
        // the one whose text starts so (a test pins it).
        if self.mode != SslMode::Disable
            && e.to_string().starts_with("error performing TLS handshake")
        {
            ClusterError::Tls {
                setting: self.to_string(),
                cause: e,
            }
        } else {
            ClusterError::Db(e)
        }
    }
}

impl fmt::Display for PgTls {
    /// `sslmode=verify-full, sslrootcert=/etc/hc/pg-ca.pem`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sslmode={}", self.mode.as_str())?;
        match (&self.root, self.mode) {
            (Some(p), _) => write!(f, ", sslrootcert={}", p.display()),
            (None, SslMode::VerifyCa | SslMode::VerifyFull) => f.write_str(", the system's roots"),
            (None, _) => Ok(()),
        }
    }
}

impl fmt::Debug for PgTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTls")
            .field("mode", &self.mode)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// Removes `sslmode` and `sslrootcert` from the URL's query (the rest is
/// tokio-postgres's to parse) and makes the [`PgTls`] they say.
fn take_tls_params(url: &str) -> Result<(String, PgTls), String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let decode = |v: &str| {
        percent_encoding::percent_decode_str(v)
            .decode_utf8()
            .map(|v| v.into_owned())
            .map_err(|_| format!("not UTF-8 in the URL's parameters: {v}"))
    };
    let (mut mode, mut root, mut rest) = (None, None, Vec::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match decode(k)?.as_str() {
            "sslmode" => mode = Some(SslMode::parse(&decode(v)?)?),
            "sslrootcert" => root = Some(decode(v)?),
            // tokio-postgres's own.
            "sslnegotiation" => rest.push(pair),
            // libpq's client certificates, CRLs, key passwords: not ours
            // (tokio-postgres would only say "invalid connection string").
            k if k.starts_with("ssl") => {
                return Err(format!(
                    "unsupported parameter {k} (of libpq's TLS parameters, sslmode, \
                     sslrootcert and sslnegotiation are supported)"
                ))
            }
            _ => rest.push(pair),
        }
    }
    let tls = PgTls::new(mode, root.as_deref())?;
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, tls))
}

/// The certificates of a PEM file, as roots.
fn roots_from_file(path: &std::path::Path) -> Result<RootCertStore, String> {
    use rustls::pki_types::pem::PemObject;
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("sslrootcert={shown}: cannot read it: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "sslrootcert={shown}: no PEM certificate in the file"
        ));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("sslrootcert={shown}: not a usable root certificate: {e}"))?;
    }
    Ok(roots)
}

/// The system's roots (rustls-native-certs, as the probes and channels).
fn system_roots(mode: SslMode) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if roots.is_empty() {
        return Err(format!(
            "sslmode={}: no system root certificates found (give sslrootcert=<PEM file>)",
            mode.as_str()
        ));
    }
    Ok(roots)
}

/// The rustls client configuration (ring provider only, STYLE.md).
fn client_config(verify: Verify, roots: Option<RootCertStore>) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions");
    let roots = Arc::new(roots.unwrap_or_else(RootCertStore::empty));
    let verifier: Arc<dyn ServerCertVerifier> = match verify {
        // `prefer` and `require` without a root: any certificate, the
        // handshake's signatures still checked (libpq checks nothing more).
        Verify::Nothing => Arc::new(crate::probe::AcceptAnyCert(provider)),
        Verify::Chain | Verify::Full => {
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| format!("the root certificates: {e}"))?;
            if verify == Verify::Full {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// `verify-ca`: webpki's verification less the host name, which it checks
/// last, after the chain, its validity and revocation.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls_are_recognised() {
        for v in [
            "postgres://u@h/db",
            "postgresql://u@h/db",
            "POSTGRES://u@h/db",
            " postgres://u@h/db",
        ] {
            assert!(is_postgres_url(v), "{v}");
        }
        for v in ["hc.db", "/var/lib/hc.db", "postgres.db", "./postgres:/x"] {
            assert!(!is_postgres_url(v), "{v}");
        }
    }

    #[test]
    fn the_password_is_never_shown() {
        let db = PgDb::parse("postgres://hc:s3cret@db.example:5433/hc", None).unwrap();
        assert_eq!(db.to_string(), "postgres://hc@db.example:5433/hc");
        assert!(!format!("{db:?}").contains("s3cret"));
        assert_eq!(db.config().get_password(), Some(&b"s3cret"[..]));
    }

    #[test]
    fn a_given_password_replaces_the_urls() {
        let db = PgDb::parse("postgres://hc:old@h/hc", Some("new".into())).unwrap();
        assert_eq!(db.config().get_password(), Some(&b"new"[..]));
    }

    #[test]
    fn sslmode_is_libpqs_and_defaults_to_prefer() {
        let db = PgDb::parse("postgres://u@h/db", None).unwrap();
        assert_eq!(db.tls_setting().mode(), SslMode::Prefer);
        assert_eq!(db.tls_setting().to_string(), "sslmode=prefer");
        for (v, mode, wire) in [
            (
                "disable",
                SslMode::Disable,
                tokio_postgres::config::SslMode::Disable,
            ),
            (
                "prefer",
                SslMode::Prefer,
                tokio_postgres::config::SslMode::Prefer,
            ),
            (
                "require",
                SslMode::Require,
                tokio_postgres::config::SslMode::Require,
            ),
        ] {
            let db = PgDb::parse(&format!("postgres://u@h/db?sslmode={v}"), None).unwrap();
            assert_eq!(db.tls_setting().mode(), mode, "{v}");
            assert_eq!(db.config().get_ssl_mode(), wire, "{v}");
            assert_eq!(db.tls_setting().to_string(), format!("sslmode={v}"));
        }
        let e = PgDb::parse("postgres://u@h/db?sslmode=verify-all", None).unwrap_err();
        assert!(
            e.contains("sslmode=verify-all") && e.contains("verify-full"),
            "{e}"
        );
    }

    #[test]
    fn the_tls_parameters_leave_the_others_to_tokio_postgres() {
        let db = PgDb::parse(
            "postgres://u@h/db?target_session_attrs=read-write&sslmode=disable&keepalives=0",
            None,
        )
        .unwrap();
        assert_eq!(
            db.config().get_target_session_attrs(),
            tokio_postgres::config::TargetSessionAttrs::ReadWrite
        );
        assert!(!db.config().get_keepalives());
        // Still refused: parameters neither of us knows.
        let e = PgDb::parse("postgres://u@h/db?sslmode=require&sslcert=c.pem", None).unwrap_err();
        assert!(e.contains("unsupported parameter sslcert"), "{e}");
    }

    #[test]
    fn sslrootcert_is_read_at_start() {
        let e = PgDb::parse(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
            None,
        )
        .unwrap_err();
        assert!(
            e.contains("sslrootcert=/nonexistent/ca.pem: cannot read it"),
            "{e}"
        );
        let e = PgDb::parse("postgres://u@h/db?sslmode=verify-ca&sslrootcert=", None).unwrap_err();
        assert!(e.contains("sslrootcert is empty"), "{e}");
        // The system's roots mean verify-full; a weaker mode is refused.
        let db = PgDb::parse("postgres://u@h/db?sslrootcert=system", None);
        if let Ok(db) = db {
            // (Err only on a machine without system roots.)
            assert_eq!(db.tls_setting().mode(), SslMode::VerifyFull);
            assert_eq!(db.tls_setting().root(), None);
        }
        let e =
            PgDb::parse("postgres://u@h/db?sslmode=require&sslrootcert=system", None).unwrap_err();
        assert!(
            e.contains("sslmode=require may not be used with sslrootcert=system"),
            "{e}"
        );
    }

    #[test]
    fn incomplete_urls_are_refused_with_the_reason() {
        let cases = [
            ("postgres:///db", "host"),
            ("postgres://h/db", "user"),
            ("mysql://u@h/db", "postgres://"),
            ("postgres://u@h:notaport/db", "URL"),
        ];
        for (url, why) in cases {
            let e = PgDb::parse(url, None).unwrap_err();
            assert!(e.contains(why), "{url}: {e}");
        }
    }
}
