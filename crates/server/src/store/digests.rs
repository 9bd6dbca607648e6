//! Digests in SQLite (SPEC section 14): which due outbox rows go out on
//! their own and which are held for one digest message, and the digests
//! themselves (table `digests`, migration 9).
//!
//! The decision is [`DigestBook`]'s (pure, `core::policy`); this module
//! rebuilds each destination's book from the store, applies the verdicts
//! in one transaction (so a `kill -9` loses no decision) and lists what a
//! digest carries. A destination is a channel (`outbox` = `channel`) or,
//! for the per-service `email`, one recipient address (`outbox` = `mail`).
//! `pagerduty` and `mqtt` channels never digest: PagerDuty needs its
//! per-service trigger and resolve, Home Assistant each service's state.

use super::decode::{self, Announced, Attempts, Fields, Record};
use super::{lock, SqliteStore, StoreError};
use crate::clock::rfc3339;
use healthchecker_core::policy::{combined_verdict, DigestBook, DigestRule, DigestVerdict};
use healthchecker_core::{HealthState, ServiceId};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::collections::BTreeMap;

/// Digests that were sent or failed are kept this long (as sent mail).
const RETAIN_DIGESTS_MS: i64 = 90 * 24 * 3_600_000;

/// One digest: a message to one destination listing its notifications
/// due in `[starts_at, ends_at)`.
#[derive(Debug, Clone, PartialEq)]
pub struct DigestRecord {
    /// Row id.
    pub id: i64,
    /// `channel` or `mail`.
    pub outbox: String,
    /// The channel's name, or the recipient's address.
    pub destination: String,
    /// The window's start (Unix ms): its first notification's due time.
    pub starts_at: i64,
    /// The window's end (Unix ms): when the digest goes out.
    pub ends_at: i64,
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

impl DigestRecord {
    /// The stable id the digest carries (Idempotency-Key, Matrix txn id,
    /// Message-ID): a function of the row alone.
    pub fn delivery_id(&self) -> String {
        format!("hc-digest-{}-{}", self.id, self.starts_at)
    }
}

/// One notification of a digest's window.
#[derive(Debug, Clone, PartialEq)]
pub struct DigestItem {
    /// The outbox row's id.
    pub id: i64,
    /// The service.
    pub service_id: ServiceId,
    /// The service's name.
    pub service: String,
    /// When the transition happened (Unix ms).
    pub created_at: i64,
    /// Previous state.
    pub from: HealthState,
    /// New state.
    pub to: HealthState,
    /// The check's reason.
    pub reason: Option<String>,
    /// When the outbox decided it (Unix ms).
    pub due_at: i64,
    /// Held for the digest (`digested`), not sent on its own.
    pub held: bool,
}

const DIGEST_COLUMNS: &str = "id, outbox, destination, starts_at, ends_at, status, attempts, \
    next_attempt_at, last_error, sent_at";

impl Record for DigestRecord {
    const TABLE: &'static str = "digests";

    /// Decodes a `digests` row selected with `DIGEST_COLUMNS`.
    fn decode(f: &Fields<'_, '_>) -> rusqlite::Result<DigestRecord> {
        let t = Attempts::decode(f)?;
        Ok(DigestRecord {
            id: f.id(),
            outbox: f.get("outbox")?,
            destination: f.get("destination")?,
            starts_at: f.get("starts_at")?,
            ends_at: f.get("ends_at")?,
            status: f.get("status")?,
            attempts: t.attempts,
            next_attempt_at: t.next_attempt_at,
            last_error: t.last_error,
            sent_at: t.sent_at,
        })
    }
}

/// Decodes an outbox row of `table` (`deliveries` or `notifications`) as
/// one notification of a digest's window.
fn decode_item(r: &Row<'_>, table: &'static str) -> rusqlite::Result<DigestItem> {
    let f = Fields::new(r, None, table)?;
    let a = Announced::decode(&f)?;
    Ok(DigestItem {
        id: f.id(),
        service_id: a.service_id,
        service: a.service,
        created_at: a.created_at,
        from: a.from,
        to: a.to,
        reason: a.reason,
        due_at: f.get("due_at")?,
        held: f.get::<String>("status")? == "digested",
    })
}

/// One message waiting for a verdict: the undecided rows of one service.
struct Pending {
    rows: Vec<i64>,
    destinations: Vec<String>,
}

/// A destination's book as the store has it at `now`.
fn book(
    tx: &Connection,
    outbox: &str,
    destination: &str,
    now: i64,
    rule: DigestRule,
) -> rusqlite::Result<DigestBook> {
    let sql = match outbox {
        "channel" => {
            "SELECT DISTINCT service_id, due_at FROM deliveries \
             WHERE channel = ?1 AND due_at > ?2"
        }
        _ => {
            "SELECT DISTINCT n.service_id, n.due_at FROM notifications n \
             WHERE n.due_at > ?2 AND EXISTS (SELECT 1 FROM json_each(n.recipients) j WHERE j.value = ?1)"
        }
    };
    let recent = tx
        .prepare_cached(sql)?
        .query_map(params![destination, now - rule.window_ms], |r| {
            r.get::<_, i64>(1)
        })?
        .collect::<Result<_, _>>()?;
    let latest = tx
        .prepare_cached(
            "SELECT starts_at, ends_at FROM digests WHERE outbox = ?1 AND destination = ?2 \
             ORDER BY ends_at DESC LIMIT 1",
        )?
        .query_row(params![outbox, destination], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(DigestBook { recent, latest })
}

/// The digest of `destination` for the window `[start, end)`, created if new.
fn digest_for(
    tx: &Connection,
    outbox: &str,
    destination: &str,
    start: i64,
    end: i64,
) -> rusqlite::Result<String> {
    let found: Option<i64> = tx
        .prepare_cached(
            "SELECT id FROM digests WHERE outbox = ?1 AND destination = ?2 \
             AND starts_at = ?3 AND ends_at = ?4",
        )?
        .query_row(params![outbox, destination, start, end], |r| r.get(0))
        .optional()?;
    let id = match found {
        Some(id) => id,
        None => {
            tx.prepare_cached(
                "INSERT INTO digests (outbox, destination, starts_at, ends_at, status, next_attempt_at) \
                 VALUES (?1, ?2, ?3, ?4, 'pending', ?4)",
            )?
            .execute(params![outbox, destination, start, end])?;
            tx.last_insert_rowid()
        }
    };
    Ok(format!("hc-digest-{id}-{start}"))
}

/// Decides the undecided due rows of one outbox (`deliveries` or
/// `notifications`) at `now`. Returns (sent on their own, held).
fn decide(
    tx: &Connection,
    outbox: &str,
    now: i64,
    rule: DigestRule,
) -> rusqlite::Result<(usize, usize)> {
    let (table, sql) = match outbox {
        // A pair's pending rows travel together: every undecided one of a
        // pair with a due row is decided now, as one message.
        "channel" => (
            "deliveries",
            "SELECT d.id, d.service_id, d.channel, COALESCE(c.kind, '') FROM deliveries d \
             LEFT JOIN channels c ON c.name = d.channel \
             WHERE d.status = 'pending' AND d.due_at IS NULL AND EXISTS \
               (SELECT 1 FROM deliveries e WHERE e.status = 'pending' AND e.next_attempt_at <= ?1 \
                AND e.service_id = d.service_id AND e.channel = d.channel) \
             ORDER BY d.id",
        ),
        _ => (
            "notifications",
            "SELECT n.id, n.service_id, n.recipients, '' FROM notifications n \
             WHERE n.status = 'pending' AND n.due_at IS NULL AND n.service_id IN \
               (SELECT service_id FROM notifications WHERE status = 'pending' AND next_attempt_at <= ?1) \
             ORDER BY n.id",
        ),
    };
    let rows: Vec<(i64, i64, String, String)> = tx
        .prepare_cached(sql)?
        .query_map([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    // One message per (service, channel) for channels, per service for mail.
    let mut messages: Vec<((i64, String), Pending)> = Vec::new();
    for (id, service_id, dest, kind) in rows {
        let (key, destinations) = if outbox == "channel" {
            // PagerDuty and MQTT never digest (module doc): no destination.
            let d = match kind.as_str() {
                "pagerduty" | "mqtt" | "" => Vec::new(),
                _ => vec![dest.clone()],
            };
            ((service_id, dest), d)
        } else {
            let to: Vec<String> = serde_json::from_str(&dest).unwrap_or_default();
            ((service_id, String::new()), to)
        };
        match messages.iter_mut().find(|(k, _)| *k == key) {
            Some((_, p)) => {
                p.rows.push(id);
                for d in destinations {
                    if !p.destinations.contains(&d) {
                        p.destinations.push(d);
                    }
                }
            }
            None => messages.push((
                key,
                Pending {
                    rows: vec![id],
                    destinations,
                },
            )),
        }
    }
    let mut books: BTreeMap<String, DigestBook> = BTreeMap::new();
    let (mut sent, mut held) = (0, 0);
    for (_, p) in messages {
        let mut verdicts = Vec::new();
        for d in &p.destinations {
            if !books.contains_key(d) {
                books.insert(d.clone(), book(tx, outbox, d, now, rule)?);
            }
            verdicts.push(books[d].verdict(now, rule));
        }
        let combined = combined_verdict(&verdicts).unwrap_or(DigestVerdict::Send);
        let mut digest_ids = Vec::new();
        for (d, v) in p.destinations.iter().zip(&verdicts) {
            let v = match combined {
                DigestVerdict::Send => DigestVerdict::Send,
                DigestVerdict::Hold { .. } => *v,
            };
            if let DigestVerdict::Hold { start, end } = v {
                digest_ids.push((digest_for(tx, outbox, d, start, end)?, end));
            }
            if let Some(b) = books.get_mut(d) {
                b.record(now, v, rule);
            }
        }
        if digest_ids.is_empty() {
            sent += p.rows.len();
            let mut stmt =
                tx.prepare_cached(&format!("UPDATE {table} SET due_at = ?1 WHERE id = ?2"))?;
            for id in &p.rows {
                stmt.execute(params![now, id])?;
            }
            continue;
        }
        held += p.rows.len();
        let list: Vec<String> = digest_ids
            .iter()
            .map(|(id, end)| format!("{id} (sent {})", rfc3339(*end)))
            .collect();
        let why = format!(
            "digested: more than {} notifications within {} s; listed in digest {}",
            rule.threshold,
            rule.window_ms / 1000,
            list.join(", ")
        );
        let mut stmt = tx.prepare_cached(&format!(
            "UPDATE {table} SET due_at = ?1, status = 'digested', last_error = ?3 WHERE id = ?2"
        ))?;
        for id in &p.rows {
            stmt.execute(params![now, id, why])?;
        }
    }
    Ok((sent, held))
}

impl SqliteStore {
    /// Decides, at `now`, which due rows of `outbox` (`channel` or `mail`)
    /// go out on their own and which are held (`digested`) for their
    /// destination's digest. Returns (sent on their own, held).
    pub fn decide_digests(
        &self,
        outbox: &str,
        now: i64,
        rule: DigestRule,
    ) -> Result<(usize, usize), StoreError> {
        self.decides_digests
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let table = if outbox == "channel" {
            "deliveries"
        } else {
            "notifications"
        };
        let due = format!(
            "SELECT 1 FROM {table} WHERE status = 'pending' AND next_attempt_at <= ?1 \
             AND due_at IS NULL LIMIT 1"
        );
        if !self.any_row_at(&due, now)? {
            return Ok((0, 0));
        }
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        let r = decide(&tx, outbox, now, rule)?;
        tx.execute(
            "DELETE FROM digests WHERE status != 'pending' AND ends_at < ?1",
            [now - RETAIN_DIGESTS_MS],
        )?;
        tx.commit()?;
        Ok(r)
    }

    /// Whether this store decides digests (it was asked to: the mail
    /// sender and the channel dispatcher do before each due read when
    /// digests are on). Its due reads then take only rows a decision
    /// reached, so that a row that fell due between a decision and the
    /// read waits for the next decision (one poll, 1 s) instead of going
    /// out on its own while its destination's digest would hold it.
    pub fn decides_digests(&self) -> bool {
        self.decides_digests
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Digests of `outbox` due at `now` (their window ended), oldest first.
    pub fn due_digests(
        &self,
        outbox: &str,
        now: i64,
        limit: usize,
    ) -> Result<Vec<DigestRecord>, StoreError> {
        let conn = self.read_conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {DIGEST_COLUMNS} FROM digests WHERE outbox = ?1 AND status = 'pending' \
             AND next_attempt_at <= ?2 ORDER BY id LIMIT ?3"
        ))?;
        Ok(decode::all(&mut stmt, params![outbox, now, limit as i64])?)
    }

    /// Digests, newest first, optionally of one destination.
    pub fn digests(
        &self,
        destination: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DigestRecord>, StoreError> {
        let conn = self.read_conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {DIGEST_COLUMNS} FROM digests WHERE (?1 IS NULL OR destination = ?1) \
             ORDER BY id DESC LIMIT ?2"
        ))?;
        Ok(decode::all(&mut stmt, params![destination, limit as i64])?)
    }

    /// The notifications of a digest's window, oldest first: the held ones
    /// and those already sent on their own.
    pub fn digest_items(&self, d: &DigestRecord) -> Result<Vec<DigestItem>, StoreError> {
        let (table, sql) = match d.outbox.as_str() {
            "channel" => ("deliveries", {
                "SELECT id, service_id, service, created_at, from_state, to_state, reason, due_at, \
                 status FROM deliveries WHERE channel = ?1 AND due_at >= ?2 AND due_at < ?3 \
                 ORDER BY id LIMIT 10000"
            }),
            _ => ("notifications", {
                "SELECT id, service_id, service, created_at, from_state, to_state, reason, due_at, \
                 status FROM notifications n WHERE due_at >= ?2 AND due_at < ?3 \
                 AND EXISTS (SELECT 1 FROM json_each(n.recipients) j WHERE j.value = ?1) \
                 ORDER BY id LIMIT 10000"
            }),
        };
        let conn = self.read_conn();
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params![d.destination, d.starts_at, d.ends_at], |r| {
            decode_item(r, table)
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records a delivered digest.
    pub fn mark_digest_sent(&self, id: i64, at: i64) -> Result<(), StoreError> {
        lock(&self.writer).execute(
            "UPDATE digests SET status = 'sent', sent_at = ?1, attempts = attempts + 1, \
             last_error = NULL WHERE id = ?2 AND status = 'pending'",
            params![at, id],
        )?;
        Ok(())
    }

    /// Records a failed digest delivery: retry at `next_attempt_at`, or give up.
    pub fn mark_digest_failed(
        &self,
        id: i64,
        error: &str,
        next_attempt_at: i64,
        give_up: bool,
    ) -> Result<(), StoreError> {
        lock(&self.writer).execute(
            "UPDATE digests SET attempts = attempts + 1, last_error = ?1, next_attempt_at = ?2, \
             status = CASE WHEN ?3 THEN 'failed' ELSE status END WHERE id = ?4 AND status = 'pending'",
            params![error, next_attempt_at, give_up, id],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
