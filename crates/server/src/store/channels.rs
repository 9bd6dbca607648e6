//! Named notification channels and their outbox, `deliveries` (SPEC
//! section 13).
//!
//! A channel's credential is stored in its own column and only ever read
//! by the dispatcher that sends with it; the API answers from
//! [`Channel`] through a DTO without it. Delivery rows are inserted by the
//! writer in the event's transaction ([`insert_deliveries`]); this module
//! reads the due ones and records each attempt.

use super::decode::{self, Announced, Attempts, Fields, Record};
use super::{lock, SqliteStore, StoreError};
use healthchecker_core::channel::{Channel, ChannelKind, Secret};
use healthchecker_core::{HealthState, ServiceId, UnixMs};
use rusqlite::{params, Connection, OptionalExtension, Row};

/// One row of the channel outbox.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    /// Row id; the delivery id is derived from it.
    pub id: i64,
    /// Channel name.
    pub channel: String,
    /// The state event it announces.
    pub event_id: i64,
    /// The service.
    pub service_id: ServiceId,
    /// The service's name.
    pub service: String,
    /// When the event happened (Unix ms).
    pub created_at: i64,
    /// Previous state.
    pub from: HealthState,
    /// New state.
    pub to: HealthState,
    /// The reason of the check that caused it.
    pub reason: Option<String>,
    /// The target URL.
    pub target: String,
    /// When the previous state began (Unix ms).
    pub previous_since: Option<i64>,
    /// `pending`, `sent` or `failed`.
    pub status: String,
    /// Attempts so far.
    pub attempts: i64,
    /// Earliest next attempt (Unix ms).
    pub next_attempt_at: i64,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub sent_at: Option<i64>,
}

impl DeliveryRecord {
    /// The stable id carried by the message (Idempotency-Key, Matrix txn
    /// id): a function of the row alone, so a retry carries the same one.
    pub fn delivery_id(&self) -> String {
        format!("hc-{}-{}", self.id, self.created_at)
    }
}

const DELIVERY_COLUMNS: &str = "id, channel, event_id, service_id, service, created_at, from_state, \
    to_state, reason, target, previous_since, status, attempts, next_attempt_at, last_error, sent_at";

impl Record for DeliveryRecord {
    const TABLE: &'static str = "deliveries";

    /// Decodes a `deliveries` row selected with `DELIVERY_COLUMNS`.
    fn decode(f: &Fields<'_, '_>) -> rusqlite::Result<DeliveryRecord> {
        let a = Announced::decode(f)?;
        let t = Attempts::decode(f)?;
        Ok(DeliveryRecord {
            id: f.id(),
            channel: f.get("channel")?,
            event_id: f.get("event_id")?,
            service_id: a.service_id,
            service: a.service,
            created_at: a.created_at,
            from: a.from,
            to: a.to,
            reason: a.reason,
            target: f.get("target")?,
            previous_since: f.get("previous_since")?,
            status: f.get("status")?,
            attempts: t.attempts,
            next_attempt_at: t.next_attempt_at,
            last_error: t.last_error,
            sent_at: t.sent_at,
        })
    }
}

/// The columns [`decode_channel`] reads.
const CHANNEL_COLUMNS: &str = "name, kind, is_default, config, secret";

/// Decodes a `channels` row (keyed by name: errors carry no row id). A bad
/// kind, a config that is not a JSON object, or a recipient that is not an
/// address is corrupt.
fn decode_channel(r: &Row<'_>) -> rusqlite::Result<Channel> {
    let f = Fields::unnamed(r, "channels");
    let config: serde_json::Map<String, serde_json::Value> = f.json("config")?;
    let text = |k: &str| -> rusqlite::Result<Option<String>> {
        match config.get(k) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(v)) => Ok(Some(v.clone())),
            Some(_) => Err(f.corrupt("config", format!("{k} is not a string"))),
        }
    };
    let to = match config.get("to") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value::<Vec<String>>(v.clone())
            .map_err(|e| f.corrupt("config", format!("to: {e}")))?
            .into_iter()
            .map(|a| {
                a.parse()
                    .map_err(|_| f.corrupt("config", format!("bad address {a:?}")))
            })
            .collect::<rusqlite::Result<_>>()?,
    };
    Ok(Channel {
        name: f.get("name")?,
        kind: f.parse::<ChannelKind>("kind")?,
        default: f.get("is_default")?,
        url: text("url")?,
        to,
        chat_id: text("chat_id")?,
        room: text("room")?,
        secret: f.get::<Option<String>>("secret")?.map(Secret::new),
        username: text("username")?,
        topic_prefix: text("topic_prefix")?,
        discovery_prefix: text("discovery_prefix")?,
    })
}

/// Whether channel `c` serves service `s` (SQL, over `channels c` and
/// `services s`): the channels the service names, or every default channel
/// when it names none. The one definition of routing, shared by the outbox
/// ([`insert_deliveries`]) and the MQTT presence sync
/// ([`Store::routed_services`]), so both always agree.
macro_rules! routed {
    () => {
        "(c.name IN (SELECT value FROM json_each(s.channels)) \
          OR (json_array_length(s.channels) = 0 AND c.is_default))"
    };
}

/// What the MQTT presence sync compares of a service routed to a channel:
/// a change of any field republishes the service's entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedService {
    /// The service's row id (never reused).
    pub id: ServiceId,
    /// Its name.
    pub name: String,
    /// Its state.
    pub state: HealthState,
    /// When that state began (Unix ms).
    pub state_since: i64,
    /// Monitoring paused.
    pub paused: bool,
    /// Its latest registration or parameter change (Unix ms).
    pub updated_at: i64,
}

impl Record for RoutedService {
    const TABLE: &'static str = "services";

    /// Decodes the columns [`Store::routed_services`] selects.
    fn decode(f: &Fields<'_, '_>) -> rusqlite::Result<RoutedService> {
        Ok(RoutedService {
            id: f.get("id")?,
            name: f.get("name")?,
            state: f.parse("state")?,
            state_since: f.get("state_since")?,
            paused: f.get("paused")?,
            updated_at: f.get("updated_at")?,
        })
    }
}

/// Inserts one delivery row per channel of the service (its named ones,
/// or every default channel when it names none) for a notification of
/// `event_id`. Runs inside the writer's transaction.
#[allow(clippy::too_many_arguments)]
pub(crate) fn insert_deliveries(
    tx: &Connection,
    event_id: i64,
    service_id: ServiceId,
    service: &str,
    at: UnixMs,
    from: HealthState,
    to: HealthState,
    reason: Option<&str>,
    target: &str,
    previous_since: UnixMs,
    next_attempt_at: UnixMs,
    status: &str,
) -> rusqlite::Result<()> {
    tx.prepare_cached(concat!(
        "INSERT INTO deliveries (channel, event_id, service_id, service, created_at, from_state, \
         to_state, reason, target, previous_since, status, next_attempt_at) \
         SELECT c.name, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?11, ?10 \
         FROM channels c, services s WHERE s.id = ?2 AND ",
        routed!(),
        " ORDER BY c.name"
    ))?
    .execute(params![
        event_id,
        service_id,
        service,
        at,
        from.as_str(),
        to.as_str(),
        reason,
        target,
        previous_since,
        next_attempt_at,
        status
    ])?;
    Ok(())
}

impl SqliteStore {
    /// Creates or replaces a channel; `true` when it is new.
    pub fn put_channel(&self, c: &Channel, now: i64) -> Result<bool, StoreError> {
        let config = serde_json::json!({
            "url": c.url,
            "to": c.to.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "chat_id": c.chat_id,
            "room": c.room,
            "username": c.username,
            "topic_prefix": c.topic_prefix,
            "discovery_prefix": c.discovery_prefix,
        });
        let conn = lock(&self.writer);
        let existed: bool = conn
            .query_row("SELECT 1 FROM channels WHERE name = ?1", [&c.name], |_| {
                Ok(())
            })
            .optional()?
            .is_some();
        conn.execute(
            "INSERT INTO channels (name, kind, is_default, config, secret, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) \
             ON CONFLICT(name) DO UPDATE SET kind = ?2, is_default = ?3, config = ?4, secret = ?5, \
             updated_at = ?6",
            params![
                c.name,
                c.kind.as_str(),
                c.default,
                config.to_string(),
                c.secret.as_ref().map(|s| s.expose()),
                now
            ],
        )?;
        Ok(!existed)
    }

    /// One channel, with its secret (for the sender and updates).
    pub fn channel(&self, name: &str) -> Result<Option<Channel>, StoreError> {
        let conn = self.read_conn();
        let c = conn
            .prepare_cached(&format!(
                "SELECT {CHANNEL_COLUMNS} FROM channels WHERE name = ?1"
            ))?
            .query_row([name], decode_channel)
            .optional()?;
        Ok(c)
    }

    /// Every channel, by name.
    pub fn channels(&self) -> Result<Vec<Channel>, StoreError> {
        let conn = self.read_conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {CHANNEL_COLUMNS} FROM channels ORDER BY name"
        ))?;
        let rows = stmt.query_map([], decode_channel)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The services channel `name` serves (the same routing as the
    /// outbox), by id, those after `after_id`, at most `limit`: one page
    /// of the MQTT presence sync's comparison.
    pub fn routed_services(
        &self,
        name: &str,
        after_id: ServiceId,
        limit: usize,
    ) -> Result<Vec<RoutedService>, StoreError> {
        let conn = self.read_conn();
        let mut stmt = conn.prepare_cached(concat!(
            "SELECT s.id, s.name, s.state, s.state_since, s.paused, s.updated_at \
             FROM channels c, services s WHERE c.name = ?1 AND s.id > ?2 AND ",
            routed!(),
            " ORDER BY s.id LIMIT ?3"
        ))?;
        Ok(decode::all(
            &mut stmt,
            params![name, after_id, limit as i64],
        )?)
    }

    /// Deletes a channel; its pending deliveries fail with that reason.
    pub fn delete_channel(&self, name: &str) -> Result<bool, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        let n = tx.execute("DELETE FROM channels WHERE name = ?1", [name])?;
        tx.execute(
            "UPDATE deliveries SET status = 'failed', last_error = 'channel deleted' \
             WHERE channel = ?1 AND status = 'pending'",
            [name],
        )?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Every pending row of each (service, channel) pair that has one due
    /// at `now`, oldest first: a pair's pending rows travel together (one
    /// message stating the latest state), as mail does; once the store
    /// decides digests, only decided rows ([`SqliteStore::decides_digests`]).
    pub fn due_deliveries(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let conn = self.read_conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE status = 'pending' \
             AND (due_at IS NOT NULL OR NOT ?3) AND EXISTS \
               (SELECT 1 FROM deliveries e WHERE e.status = 'pending' AND e.next_attempt_at <= ?1 \
                AND e.service_id = d.service_id AND e.channel = d.channel) \
             ORDER BY id LIMIT ?2"
        ))?;
        let decided = self.decides_digests();
        Ok(decode::all(&mut stmt, params![now, limit as i64, decided])?)
    }

    /// Channel outbox rows, newest first, optionally of one status or service.
    pub fn deliveries(
        &self,
        status: Option<&str>,
        service: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let conn = self.read_conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE (?1 IS NULL OR status = ?1) \
             AND (?2 IS NULL OR service = ?2) ORDER BY id DESC LIMIT ?3"
        ))?;
        Ok(decode::all(
            &mut stmt,
            params![status, service, limit as i64],
        )?)
    }

    /// Records delivered rows (the receiver accepted the message).
    pub fn mark_delivered(&self, ids: &[i64], at: i64) -> Result<(), StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE deliveries SET status = 'sent', sent_at = ?1, attempts = attempts + 1, \
                 last_error = NULL WHERE id = ?2 AND status = 'pending'",
            )?;
            for id in ids {
                stmt.execute(params![at, id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a failed attempt: retry at `next_attempt_at`, or give up.
    pub fn mark_delivery_failed(
        &self,
        ids: &[i64],
        error: &str,
        next_attempt_at: i64,
        give_up: bool,
    ) -> Result<(), StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = ?1, next_attempt_at = ?2, \
                 status = CASE WHEN ?3 THEN 'failed' ELSE status END \
                 WHERE id = ?4 AND status = 'pending'",
            )?;
            for id in ids {
                stmt.execute(params![error, next_attempt_at, give_up, id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}
