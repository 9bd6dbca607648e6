//! Heartbeat services' ping ids and ping times (SPEC section 15).

use super::{lock, SqliteStore, StoreError};
use healthchecker_core::heartbeat::Ping;
use healthchecker_core::{CheckResult, ServiceId, UnixMs};
use rusqlite::{params, OptionalExtension};

/// The service a ping id belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingTarget {
    /// The service.
    pub id: ServiceId,
    /// Name.
    pub name: String,
}

/// A heartbeat ping as the PostgreSQL store keeps it until the service's
/// owner has judged it (`heartbeat_pings`, docs/cluster.md, "Pings
/// without an owner"): a node that gains the service's bucket judges the
/// ones newer than the service's last check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPing {
    /// The heartbeat service.
    pub service: ServiceId,
    /// When it was received (Unix ms).
    pub at: UnixMs,
    /// What it said.
    pub ping: Ping,
    /// The tail of its body, if it had one.
    pub output: Option<String>,
}

/// A new ping id: 128 random bits, hex (SPEC section 15).
pub(crate) fn new_ping_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| StoreError::Random(format!("no randomness for a ping id: {e}")))?;
    Ok(hex::encode(bytes))
}

impl SqliteStore {
    /// The heartbeat service whose ping id is `ping_id`.
    pub fn service_by_ping_id(&self, ping_id: &str) -> Result<Option<PingTarget>, StoreError> {
        let conn = self.read_conn();
        let found = conn
            .prepare_cached("SELECT id, name FROM services WHERE ping_id = ?1")?
            .query_row([ping_id], |r| {
                Ok(PingTarget {
                    id: r.get("id")?,
                    name: r.get("name")?,
                })
            })
            .optional()?;
        Ok(found)
    }

    /// Records a heartbeat's ping time (and, for a success, its new
    /// deadline base); the check itself goes through the batch writer.
    /// The ping and its output are not kept: the one scheduler of a SQLite
    /// daemon runs every service, so no ping waits for an owner.
    pub fn record_ping(
        &self,
        id: ServiceId,
        at: UnixMs,
        ping: Ping,
        _output: Option<&str>,
    ) -> Result<(), StoreError> {
        let success = ping.result() == Some(CheckResult::Pass);
        let conn = lock(&self.writer);
        conn.prepare_cached(
            "UPDATE services SET last_ping_at = ?2, \
             last_success_ping_at = CASE WHEN ?3 THEN ?2 ELSE last_success_ping_at END \
             WHERE id = ?1",
        )?
        .execute(params![id, at, success])?;
        Ok(())
    }
}
