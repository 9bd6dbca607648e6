//! Named notification channels and their outbox, `deliveries`, on
//! PostgreSQL, as `store/channels.rs`, with the claim of due deliveries
//! ([`PgStore::claim_deliveries`], as mail's).

use super::outbox::claim_sql;
use super::row::{self, Fields};
use super::{pg, PgStore};
use crate::store::{DeliveryRecord, RoutedService, StoreError};
use healthchecker_core::channel::{Channel, ChannelKind, Secret};
use healthchecker_core::ServiceId;
use postgres::Row;
use std::time::Duration;

const DELIVERY_COLUMNS: &str = "id, channel, event_id, service_id, service, created_at, \
    from_state, to_state, reason, target, previous_since, status, attempts, next_attempt_at, \
    last_error, sent_at";

fn decode_delivery(r: &Row) -> Result<DeliveryRecord, StoreError> {
    let f = Fields::new(r, "deliveries")?;
    Ok(DeliveryRecord {
        id: f.id(),
        channel: f.get("channel")?,
        event_id: f.get("event_id")?,
        service_id: ServiceId::new(f.get("service_id")?),
        service: f.get("service")?,
        created_at: f.get("created_at")?,
        from: f.parse("from_state")?,
        to: f.parse("to_state")?,
        reason: f.get("reason")?,
        target: f.get("target")?,
        previous_since: f.get("previous_since")?,
        status: f.get("status")?,
        attempts: f.get("attempts")?,
        next_attempt_at: f.get("next_attempt_at")?,
        last_error: f.get("last_error")?,
        sent_at: f.get("sent_at")?,
    })
}

const CHANNEL_COLUMNS: &str = "name, kind, is_default, config, secret";

/// Decodes a `channels` row, as the SQLite store's `decode_channel`.
fn decode_channel(r: &Row) -> Result<Channel, StoreError> {
    let f = Fields::unnamed(r, "channels");
    let config: serde_json::Map<String, serde_json::Value> = f.json("config")?;
    let text = |k: &str| -> Result<Option<String>, StoreError> {
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
            .collect::<Result<_, _>>()?,
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

/// Whether channel `c` serves service `s`: the channels the service names,
/// or every default channel when it names none. The one definition of
/// routing on PostgreSQL, shared by the writer's deliveries and
/// [`PgStore::routed_services`].
macro_rules! routed {
    () => {
        "(c.name IN (SELECT jsonb_array_elements_text(s.channels::jsonb)) \
          OR (jsonb_array_length(s.channels::jsonb) = 0 AND c.is_default))"
    };
}
pub(crate) use routed;

fn decode_routed(r: &Row) -> Result<RoutedService, StoreError> {
    let f = Fields::new(r, "services")?;
    Ok(RoutedService {
        id: ServiceId::new(f.id()),
        name: f.get("name")?,
        state: f.parse("state")?,
        state_since: f.get("state_since")?,
        paused: f.get("paused")?,
        updated_at: f.get("updated_at")?,
    })
}

impl PgStore {
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
        let mut l = self.api_conn()?;
        let (conn, _) = l.conn().parts();
        let r = conn
            .query_one(
                "INSERT INTO channels (name, kind, is_default, config, secret, created_at, \
                   updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6) \
                 ON CONFLICT (name) DO UPDATE SET kind = $2, is_default = $3, config = $4, \
                   secret = $5, updated_at = $6 \
                 RETURNING (xmax = 0) AS created",
                &[
                    &c.name,
                    &c.kind.as_str(),
                    &c.default,
                    &config.to_string(),
                    &c.secret.as_ref().map(|s| s.expose()),
                    &now,
                ],
            )
            .map_err(pg)?;
        Ok(r.get(0))
    }

    /// One channel, with its secret (for the sender and updates).
    pub fn channel(&self, name: &str) -> Result<Option<Channel>, StoreError> {
        let mut l = self.read_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(
            c,
            &format!("SELECT {CHANNEL_COLUMNS} FROM channels WHERE name = $1"),
        )?;
        c.query_opt(&s, &[&name])
            .map_err(pg)?
            .map(|r| decode_channel(&r))
            .transpose()
    }

    /// Every channel, by name.
    pub fn channels(&self) -> Result<Vec<Channel>, StoreError> {
        let mut l = self.read_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(
            c,
            &format!("SELECT {CHANNEL_COLUMNS} FROM channels ORDER BY name COLLATE \"C\""),
        )?;
        row::all(&c.query(&s, &[]).map_err(pg)?, decode_channel)
    }

    /// The services channel `name` serves, by id, those after `after_id`,
    /// at most `limit`: one page of the MQTT presence sync.
    pub fn routed_services(
        &self,
        name: &str,
        after_id: ServiceId,
        limit: usize,
    ) -> Result<Vec<RoutedService>, StoreError> {
        let mut l = self.read_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(
            c,
            concat!(
                "SELECT s.id, s.name, s.state, s.state_since, s.paused, s.updated_at \
                 FROM channels c, services s WHERE c.name = $1 AND s.id > $2 AND ",
                routed!(),
                " ORDER BY s.id LIMIT $3"
            ),
        )?;
        row::all(
            &c.query(&s, &[&name, &after_id.get(), &(limit as i64)])
                .map_err(pg)?,
            decode_routed,
        )
    }

    /// Deletes a channel; its pending deliveries fail with that reason.
    pub fn delete_channel(&self, name: &str) -> Result<bool, StoreError> {
        let mut l = self.api_conn()?;
        let (c, _) = l.conn().parts();
        let mut tx = c.transaction().map_err(pg)?;
        let n = tx
            .execute("DELETE FROM channels WHERE name = $1", &[&name])
            .map_err(pg)?;
        tx.execute(
            "UPDATE deliveries SET status = 'failed', last_error = 'channel deleted' \
             WHERE channel = $1 AND status = 'pending'",
            &[&name],
        )
        .map_err(pg)?;
        tx.commit().map_err(pg)?;
        Ok(n > 0)
    }

    /// Every pending row of each (service, channel) pair that has one due
    /// at `now`, oldest first (unclaimed; a cluster node uses
    /// [`PgStore::claim_deliveries`]).
    pub fn due_deliveries(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut l = self.read_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(
            c,
            &format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE status = 'pending' AND EXISTS \
                   (SELECT 1 FROM deliveries e WHERE e.status = 'pending' \
                    AND e.next_attempt_at <= $1 \
                    AND e.service_id = d.service_id AND e.channel = d.channel) \
                 ORDER BY id LIMIT $2"
            ),
        )?;
        row::all(
            &c.query(&s, &[&now, &(limit as i64)]).map_err(pg)?,
            decode_delivery,
        )
    }

    /// [`PgStore::due_deliveries`] claimed by `node` for `claim_for`, as
    /// [`PgStore::claim_notifications`]: no row is claimed by two nodes,
    /// an expired claim is taken over, and a node that decides digests
    /// claims only decided rows.
    pub fn claim_deliveries(
        &self,
        node: &str,
        now: i64,
        limit: usize,
        claim_for: Duration,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut l = self.write_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(
            c,
            &claim_sql("deliveries", "service_id, channel", DELIVERY_COLUMNS),
        )?;
        let ms = claim_for.as_millis() as i64;
        let decided = self.decides_digests();
        let mut out = row::all(
            &c.query(&s, &[&now, &node, &(limit as i64), &ms, &decided])
                .map_err(pg)?,
            decode_delivery,
        )?;
        out.sort_by_key(|d| d.id);
        Ok(out)
    }

    /// Channel outbox rows, newest first, optionally of one status or service.
    pub fn deliveries(
        &self,
        status: Option<&str>,
        service: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut l = self.read_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(
            c,
            &format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE ($1::text IS NULL OR status = $1) \
                 AND ($2::text IS NULL OR service = $2) ORDER BY id DESC LIMIT $3"
            ),
        )?;
        row::all(
            &c.query(&s, &[&status, &service, &(limit as i64)])
                .map_err(pg)?,
            decode_delivery,
        )
    }

    /// Records delivered rows (the receiver accepted the message); the
    /// claim ends. A row claimed before any digest decision reached it
    /// gets `due_at` = `at`, so its channel's digest book counts it.
    pub fn mark_delivered(&self, ids: &[i64], at: i64) -> Result<(), StoreError> {
        let mut l = self.write_conn()?;
        let (c, _) = l.conn().parts();
        c.execute(
            "UPDATE deliveries SET status = 'sent', sent_at = $1, attempts = attempts + 1, \
             last_error = NULL, claimed_by = NULL, claim_until = NULL, \
             due_at = COALESCE(due_at, $1) \
             WHERE id = ANY($2) AND status = 'pending'",
            &[&at, &ids],
        )
        .map_err(pg)?;
        Ok(())
    }

    /// Records a failed attempt: retry at `next_attempt_at`, or give up;
    /// the claim ends.
    pub fn mark_delivery_failed(
        &self,
        ids: &[i64],
        error: &str,
        next_attempt_at: i64,
        give_up: bool,
    ) -> Result<(), StoreError> {
        let mut l = self.write_conn()?;
        let (c, _) = l.conn().parts();
        c.execute(
            "UPDATE deliveries SET attempts = attempts + 1, last_error = $1, \
             next_attempt_at = $2, status = CASE WHEN $3 THEN 'failed' ELSE status END, \
             claimed_by = NULL, claim_until = NULL \
             WHERE id = ANY($4) AND status = 'pending'",
            &[&error, &next_attempt_at, &give_up, &ids],
        )
        .map_err(pg)?;
        Ok(())
    }
}
