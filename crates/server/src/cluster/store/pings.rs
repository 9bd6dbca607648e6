//! Heartbeat services' ping ids and ping times on PostgreSQL, as
//! `store/pings.rs`.

use super::{pg, PgStore};
use crate::store::{PingTarget, StoreError};
use healthchecker_core::{ServiceId, UnixMs};

/// A new ping id: 128 random bits, hex (SPEC section 15).
pub(crate) fn new_ping_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| StoreError::Random(format!("no randomness for a ping id: {e}")))?;
    Ok(hex::encode(bytes))
}

impl PgStore {
    /// The heartbeat service whose ping id is `ping_id`.
    pub fn service_by_ping_id(&self, ping_id: &str) -> Result<Option<PingTarget>, StoreError> {
        let mut l = self.read_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(c, "SELECT id, name FROM services WHERE ping_id = $1")?;
        Ok(c.query_opt(&s, &[&ping_id])
            .map_err(pg)?
            .map(|r| PingTarget {
                id: ServiceId::new(r.get(0)),
                name: r.get(1),
            }))
    }

    /// Records a heartbeat's ping time (and, for a success, its new
    /// deadline base); the check itself goes through the batch writer.
    pub fn record_ping(&self, id: ServiceId, at: UnixMs, success: bool) -> Result<(), StoreError> {
        let mut l = self.write_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(
            c,
            "UPDATE services SET last_ping_at = $2, \
             last_success_ping_at = CASE WHEN $3 THEN $2 ELSE last_success_ping_at END \
             WHERE id = $1",
        )?;
        c.execute(&s, &[&id.get(), &at.get(), &success])
            .map_err(pg)?;
        Ok(())
    }
}
