//! Heartbeat services' ping ids and ping times on PostgreSQL, as
//! `store/pings.rs`.

use super::{pg, PgStore};
use crate::store::{Corruption, PingTarget, StoreError, StoredPing};
use healthchecker_core::cluster::Bucket;
use healthchecker_core::heartbeat::Ping;
use healthchecker_core::{CheckResult, ServiceId, UnixMs};

/// How long a heartbeat ping is kept for its owner (`heartbeat_pings`,
/// schema migration 7): far longer than a takeover's gap (a lease's
/// expiry plus a round, 12 s), short enough that a service's rows stay
/// few (at most 30 a minute, the ping limit).
pub const PING_KEEP_MS: i64 = 3_600_000;

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
    /// deadline base), and keeps the ping until the service's owner judged
    /// it (unless the service is paused: a paused service ignores pings);
    /// the check itself goes through the owner's batch writer. One
    /// statement: the service row, the kept ping, and the service's pings
    /// older than [`PING_KEEP_MS`] deleted.
    pub fn record_ping(
        &self,
        id: ServiceId,
        at: UnixMs,
        ping: Ping,
        output: Option<&str>,
    ) -> Result<(), StoreError> {
        let success = ping.result() == Some(CheckResult::Pass);
        let mut l = self.api_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(
            c,
            "WITH s AS (UPDATE services SET last_ping_at = $2, \
               last_success_ping_at = CASE WHEN $3 THEN $2 ELSE last_success_ping_at END \
               WHERE id = $1 RETURNING id, paused), \
             kept AS (INSERT INTO heartbeat_pings (service_id, at, ping, output) \
               SELECT id, $2, $4, $5 FROM s WHERE NOT paused) \
             DELETE FROM heartbeat_pings WHERE service_id = $1 AND at < $2 - $6",
        )?;
        c.execute(
            &s,
            &[
                &id.get(),
                &at.get(),
                &success,
                &ping.suffix(),
                &output,
                &PING_KEEP_MS,
            ],
        )
        .map_err(pg)?;
        Ok(())
    }

    /// The kept pings of the services of `buckets`, oldest first (what a
    /// node that gains them judges: those after each service's last check).
    pub fn pings_in_buckets(&self, buckets: &[Bucket]) -> Result<Vec<StoredPing>, StoreError> {
        let buckets: Vec<i32> = buckets.iter().map(|b| i32::from(b.get())).collect();
        let mut l = self.read_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(
            c,
            "SELECT p.service_id, p.at, p.ping, p.output, p.seq FROM heartbeat_pings p \
             JOIN services s ON s.id = p.service_id \
             WHERE s.bucket = ANY($1) ORDER BY p.at, p.seq",
        )?;
        c.query(&s, &[&buckets])
            .map_err(pg)?
            .iter()
            .map(|r| {
                let text: String = r.get(2);
                let ping = Ping::parse(Some(&text)).map_err(|why| {
                    StoreError::Corrupt(Corruption {
                        table: "heartbeat_pings".into(),
                        row: Some(r.get(4)),
                        column: "ping".into(),
                        detail: why,
                    })
                })?;
                Ok(StoredPing {
                    service: ServiceId::new(r.get(0)),
                    at: UnixMs::new(r.get(1)),
                    ping,
                    output: r.get(3),
                })
            })
            .collect()
    }
}
