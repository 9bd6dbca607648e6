//! The cluster on PostgreSQL (SPEC section 19), its foundation: the
//! database named by a `postgres://` URL, its versioned migrations, the
//! bucket leases a node holds, the fencing check that makes a write of a
//! node that lost its lease fail, and the PostgreSQL store.
//!
//! Tested against a throwaway PostgreSQL (`tests/it/cluster.rs`,
//! `store/tests.rs`, the API suite's `pg_api.rs`) and wired into the
//! daemon by [`node`] (`--db postgres://…`; docs/cluster.md, "Status").
//! The decisions of a lease round are
//! pure and live in `healthchecker_core::cluster`; this module only reads
//! the table, asks them, and applies the answer with conditional writes.
//!
//! # Layout
//! - [`db`]: the `postgres://` URL ([`PgDb`]), the password, the pool, the
//!   start-up connection check.
//! - [`schema`]: versioned migrations (`schema_migrations`).
//! - [`lease`]: the [`LeaseManager`]: heartbeat, one lease round every
//!   period, the held leases published on a `watch` channel.
//! - [`fence`](mod@fence): [`fence()`], the check a write makes in its
//!   transaction.
//! - [`store`]: the [`PgStore`], the SQLite store's operations on
//!   PostgreSQL (the writer's batches fenced, the outbox claimed).
//! - [`wake`]: `LISTEN/NOTIFY` wake-ups, so that a change served by any
//!   node reaches the service's owner within a second.
//! - [`status`]: the nodes, their leases and heartbeats, for
//!   `GET /api/v1/cluster` and the dashboard.
//! - [`node`]: the daemon as a node: the parts above put together for
//!   `run`.

pub mod db;
pub mod fence;
pub mod lease;
pub mod node;
pub mod schema;
pub mod status;
pub mod store;
pub mod wake;

pub use db::PgDb;
pub use fence::{fence, FenceError, FENCE_LOCK};
pub use lease::{Held, LeaseConfig, LeaseHandle, LeaseManager};
pub use store::PgStore;

/// `e` followed by its causes, each once: tokio-postgres keeps the reason
/// (refused, unknown host, the server's message) in `source()`, not in
/// its own `Display`.
pub fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// Why a cluster operation on PostgreSQL failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A statement or the connection failed (the message includes the
    /// cause: "error connecting to server: Connection refused").
    #[error("postgresql: {}", with_causes(.0))]
    Db(#[from] tokio_postgres::Error),
    /// A connection failed in its TLS step (the server offers no TLS under
    /// `sslmode=require`, or its certificate did not verify); `setting`
    /// is the URL's `sslmode` and `sslrootcert` ([`db::PgTls`]).
    #[error("postgresql TLS ({setting}): {}", with_causes(.cause))]
    Tls {
        /// `sslmode=…, sslrootcert=…`.
        setting: String,
        /// tokio-postgres's error, with the rustls cause.
        cause: tokio_postgres::Error,
    },
    /// No connection could be had from the pool.
    #[error("postgresql connection pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The database was migrated by a newer build.
    #[error(
        "database schema version {found} is newer than this build's {ours}; upgrade healthchecker"
    )]
    NewerSchema {
        /// The database's version.
        found: i64,
        /// This build's.
        ours: i64,
    },
    /// A statement took longer than its bound.
    #[error("postgresql: {0} timed out")]
    Timeout(&'static str),
    /// A row that cannot be what the schema says.
    #[error("postgresql: corrupt row: {0}")]
    Corrupt(String),
}
