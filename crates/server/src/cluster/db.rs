//! The PostgreSQL database named by `--db postgres://…`: the URL parsed
//! once, the password joined from the environment or a file, a pool of
//! connections, and the check made at start-up.
//!
//! The password never appears in a message: [`PgDb`]'s `Display` is the
//! URL without it, and its `Debug` redacts it (tokio-postgres does).

use super::ClusterError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::fmt;
use std::time::Duration;
use tokio_postgres::NoTls;

/// How long opening one connection may take (TCP, start-up, auth): long
/// enough for a database across a WAN, short enough that a wrong host
/// fails start-up within seconds rather than hanging.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a session may sit idle inside an open transaction before
/// PostgreSQL ends it (`idle_in_transaction_session_timeout`, set on every
/// connection of the node). A node paused mid-transaction (`SIGSTOP`, a
/// frozen VM) would otherwise keep the locks it took — the fence's
/// `FOR SHARE` on its lease rows, the lease round's `FOR UPDATE` — and the
/// other nodes' claims, which skip locked rows, could not take those
/// buckets over until it resumed. Shorter than the 10 s lease expiry, so
/// the locks are gone when the leases expire; the paused node's next
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
/// the URL). No TLS yet: the connection is plain (docs/cluster.md).
#[derive(Clone, Debug)]
pub struct PgDb {
    config: tokio_postgres::Config,
    shown: String,
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
            .options(&options);
        Ok(PgDb {
            config,
            shown: shown.to_string(),
        })
    }

    /// The tokio-postgres configuration (password included).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// A pool of at most `size` connections (created on demand).
    pub fn pool(&self, size: usize) -> Pool {
        let manager = Manager::from_config(
            self.config.clone(),
            NoTls,
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
    /// authentication, no such database, timeout).
    pub async fn check(&self) -> Result<(), ClusterError> {
        let attempt = async {
            let (client, conn) = self.config.connect(NoTls).await?;
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
