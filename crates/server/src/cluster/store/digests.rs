//! Digests on PostgreSQL (SPEC section 14), as `store/digests.rs`: which
//! due outbox rows go out on their own and which are held for one digest
//! message, and the digests themselves. The decision is
//! `core::policy::DigestBook`'s; one transaction applies it.
//!
//! In a cluster (docs/cluster.md, "Digests in a cluster"):
//! - two nodes deciding at once take turns on an advisory lock per outbox,
//!   so each row is decided once and each window has one digest row;
//! - a node that decides digests claims only decided outbox rows
//!   ([`PgStore::decides_digests`]), so no row goes out on its own while
//!   its destination's digest would hold it;
//! - a row under a claim anyway (claimed by a node with digests off, or
//!   before this node's first decision) is not decided: it is going out on
//!   its own; the decision skips it `FOR UPDATE … SKIP LOCKED`, so a claim
//!   in flight never waits on a decision nor the other way round, and
//!   marking it sent gives it its `due_at`, so it still counts towards its
//!   destination's threshold;
//! - a due digest is claimed by one node before it is delivered
//!   ([`PgStore::claim_digests`], `FOR UPDATE SKIP LOCKED` with a claim
//!   expiry, as the outbox rows): one delivery in normal operation, at
//!   least one across a node's crash (another node takes it when the claim
//!   expires), always with the same delivery id.

use super::row::{self, Fields};
use super::{pg, PgStore};
use crate::clock::rfc3339;
use crate::store::{DigestItem, DigestRecord, StoreError};
use healthchecker_core::policy::{combined_verdict, DigestBook, DigestRule, DigestVerdict};
use healthchecker_core::ServiceId;
use postgres::{GenericClient, Row};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// Digests that were sent or failed are kept this long (as sent mail).
const RETAIN_DIGESTS_MS: i64 = 90 * 24 * 3_600_000;

/// The advisory lock of `decide_digests` ("hc-dgst" in ASCII, plus one
/// for the mail outbox).
const DECIDE_LOCK: i64 = 0x0068_632d_6467_7374;

const DIGEST_COLUMNS: &str = "id, outbox, destination, starts_at, ends_at, status, attempts, \
    next_attempt_at, last_error, sent_at";

fn decode_digest(r: &Row) -> Result<DigestRecord, StoreError> {
    let f = Fields::new(r, "digests")?;
    Ok(DigestRecord {
        id: f.id(),
        outbox: f.get("outbox")?,
        destination: f.get("destination")?,
        starts_at: f.get("starts_at")?,
        ends_at: f.get("ends_at")?,
        status: f.get("status")?,
        attempts: f.get("attempts")?,
        next_attempt_at: f.get("next_attempt_at")?,
        last_error: f.get("last_error")?,
        sent_at: f.get("sent_at")?,
    })
}

fn decode_item(r: &Row, table: &'static str) -> Result<DigestItem, StoreError> {
    let f = Fields::new(r, table)?;
    Ok(DigestItem {
        id: f.id(),
        service_id: ServiceId::new(f.get("service_id")?),
        service: f.get("service")?,
        created_at: f.get("created_at")?,
        from: f.parse("from_state")?,
        to: f.parse("to_state")?,
        reason: f.get("reason")?,
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
    tx: &mut impl GenericClient,
    outbox: &str,
    destination: &str,
    now: i64,
    rule: DigestRule,
) -> Result<DigestBook, StoreError> {
    let sql = match outbox {
        "channel" => {
            "SELECT DISTINCT service_id, due_at FROM deliveries \
             WHERE channel = $1 AND due_at > $2"
        }
        _ => {
            "SELECT DISTINCT n.service_id, n.due_at FROM notifications n \
             WHERE n.due_at > $2 AND n.recipients::jsonb ? $1"
        }
    };
    let recent = tx
        .query(sql, &[&destination, &(now - rule.window_ms)])
        .map_err(pg)?
        .iter()
        .map(|r| r.get::<_, i64>(1))
        .collect();
    let latest = tx
        .query_opt(
            "SELECT starts_at, ends_at FROM digests WHERE outbox = $1 AND destination = $2 \
             ORDER BY ends_at DESC LIMIT 1",
            &[&outbox, &destination],
        )
        .map_err(pg)?
        .map(|r| (r.get(0), r.get(1)));
    Ok(DigestBook { recent, latest })
}

/// The digest of `destination` for the window `[start, end)`, created if
/// new; its delivery id.
fn digest_for(
    tx: &mut impl GenericClient,
    outbox: &str,
    destination: &str,
    start: i64,
    end: i64,
) -> Result<String, StoreError> {
    let found = tx
        .query_opt(
            "SELECT id FROM digests WHERE outbox = $1 AND destination = $2 \
             AND starts_at = $3 AND ends_at = $4",
            &[&outbox, &destination, &start, &end],
        )
        .map_err(pg)?;
    let id: i64 = match found {
        Some(r) => r.get(0),
        None => tx
            .query_one(
                "INSERT INTO digests (outbox, destination, starts_at, ends_at, status, \
                   next_attempt_at) VALUES ($1, $2, $3, $4, 'pending', $4) RETURNING id",
                &[&outbox, &destination, &start, &end],
            )
            .map_err(pg)?
            .get(0),
    };
    Ok(format!("hc-digest-{id}-{start}"))
}

/// Decides the undecided due rows of one outbox at `now`, as the SQLite
/// store's `decide`, except the rows under an unexpired claim or locked by
/// a claim in progress (a node is delivering them on their own). Returns
/// (sent on their own, held).
fn decide(
    tx: &mut impl GenericClient,
    outbox: &str,
    now: i64,
    rule: DigestRule,
) -> Result<(usize, usize), StoreError> {
    let (table, sql) = match outbox {
        "channel" => (
            "deliveries",
            "SELECT d.id, d.service_id, d.channel, COALESCE(c.kind, '') FROM deliveries d \
             LEFT JOIN channels c ON c.name = d.channel \
             WHERE d.status = 'pending' AND d.due_at IS NULL \
               AND (d.claim_until IS NULL OR d.claim_until < now()) AND EXISTS \
               (SELECT 1 FROM deliveries e WHERE e.status = 'pending' AND e.next_attempt_at <= $1 \
                AND e.service_id = d.service_id AND e.channel = d.channel) \
             ORDER BY d.id FOR UPDATE OF d SKIP LOCKED",
        ),
        _ => (
            "notifications",
            "SELECT n.id, n.service_id, n.recipients, '' FROM notifications n \
             WHERE n.status = 'pending' AND n.due_at IS NULL \
               AND (n.claim_until IS NULL OR n.claim_until < now()) AND n.service_id IN \
               (SELECT service_id FROM notifications \
                WHERE status = 'pending' AND next_attempt_at <= $1) \
             ORDER BY n.id FOR UPDATE OF n SKIP LOCKED",
        ),
    };
    let rows: Vec<(i64, i64, String, String)> = tx
        .query(sql, &[&now])
        .map_err(pg)?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let mut messages: Vec<((i64, String), Pending)> = Vec::new();
    for (id, service_id, dest, kind) in rows {
        let (key, destinations) = if outbox == "channel" {
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
                let b = book(tx, outbox, d, now, rule)?;
                books.insert(d.clone(), b);
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
            tx.execute(
                &format!("UPDATE {table} SET due_at = $1 WHERE id = ANY($2)"),
                &[&now, &p.rows],
            )
            .map_err(pg)?;
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
        tx.execute(
            &format!(
                "UPDATE {table} SET due_at = $1, status = 'digested', last_error = $3 \
                 WHERE id = ANY($2)"
            ),
            &[&now, &p.rows, &why],
        )
        .map_err(pg)?;
    }
    Ok((sent, held))
}

impl PgStore {
    /// Decides, at `now`, which due rows of `outbox` (`channel` or `mail`)
    /// go out on their own and which are held (`digested`) for their
    /// destination's digest. Returns (sent on their own, held).
    pub fn decide_digests(
        &self,
        outbox: &str,
        now: i64,
        rule: DigestRule,
    ) -> Result<(usize, usize), StoreError> {
        self.inner.decides_digests.store(true, Relaxed);
        let (table, lock) = if outbox == "channel" {
            ("deliveries", DECIDE_LOCK)
        } else {
            ("notifications", DECIDE_LOCK + 1)
        };
        let due = format!(
            "SELECT 1 FROM {table} WHERE status = 'pending' AND next_attempt_at <= $1 \
             AND due_at IS NULL LIMIT 1"
        );
        if !self.any_row_at(&due, now)? {
            return Ok((0, 0));
        }
        let mut l = self.write_conn()?;
        let (c, _) = l.conn().parts();
        let mut tx = c.transaction().map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock])
            .map_err(pg)?;
        let r = decide(&mut tx, outbox, now, rule)?;
        tx.execute(
            "DELETE FROM digests WHERE status != 'pending' AND ends_at < $1",
            &[&(now - RETAIN_DIGESTS_MS)],
        )
        .map_err(pg)?;
        tx.commit().map_err(pg)?;
        Ok(r)
    }

    /// Whether this node decides digests (it called
    /// [`PgStore::decide_digests`], which the mail sender and the channel
    /// dispatcher do before each claim when digests are on): its claims
    /// then take only rows the decision reached, so that a row that fell
    /// due between a decision and a claim waits for the next decision
    /// (one poll, 1 s) instead of going out on its own.
    pub fn decides_digests(&self) -> bool {
        self.inner.decides_digests.load(Relaxed)
    }

    /// Digests of `outbox` due at `now` (their window ended), oldest first
    /// (unclaimed: a single node's view; a cluster node uses
    /// [`PgStore::claim_digests`]).
    pub fn due_digests(
        &self,
        outbox: &str,
        now: i64,
        limit: usize,
    ) -> Result<Vec<DigestRecord>, StoreError> {
        let mut l = self.read_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(
            c,
            &format!(
                "SELECT {DIGEST_COLUMNS} FROM digests WHERE outbox = $1 AND status = 'pending' \
                 AND next_attempt_at <= $2 ORDER BY id LIMIT $3"
            ),
        )?;
        row::all(
            &c.query(&s, &[&outbox, &now, &(limit as i64)]).map_err(pg)?,
            decode_digest,
        )
    }

    /// [`PgStore::due_digests`] claimed by `node` for `claim_for`: digests
    /// under another node's unexpired claim (or this node's own: it is
    /// delivering them) are left out, and two nodes claiming at once never
    /// get the same one (`FOR UPDATE SKIP LOCKED`). Marking the digest
    /// sent or failed ends the claim; a dead node's claim expires and
    /// another node delivers the digest, with the same delivery id.
    pub fn claim_digests(
        &self,
        node: &str,
        outbox: &str,
        now: i64,
        limit: usize,
        claim_for: Duration,
    ) -> Result<Vec<DigestRecord>, StoreError> {
        let mut l = self.write_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(
            c,
            &format!(
                "UPDATE digests SET claimed_by = $3, \
                   claim_until = now() + $5::bigint * interval '1 millisecond' \
                 WHERE id IN ( \
                   SELECT id FROM digests WHERE outbox = $1 AND status = 'pending' \
                     AND next_attempt_at <= $2 \
                     AND (claim_until IS NULL OR claim_until < now()) \
                   ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED) \
                 RETURNING {DIGEST_COLUMNS}"
            ),
        )?;
        let ms = claim_for.as_millis() as i64;
        let mut out = row::all(
            &c.query(&s, &[&outbox, &now, &node, &(limit as i64), &ms])
                .map_err(pg)?,
            decode_digest,
        )?;
        out.sort_by_key(|d| d.id);
        Ok(out)
    }

    /// Digests, newest first, optionally of one destination.
    pub fn digests(
        &self,
        destination: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DigestRecord>, StoreError> {
        let mut l = self.read_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(
            c,
            &format!(
                "SELECT {DIGEST_COLUMNS} FROM digests \
                 WHERE ($1::text IS NULL OR destination = $1) ORDER BY id DESC LIMIT $2"
            ),
        )?;
        row::all(
            &c.query(&s, &[&destination, &(limit as i64)]).map_err(pg)?,
            decode_digest,
        )
    }

    /// The notifications of a digest's window, oldest first: the held ones
    /// and those already sent on their own.
    pub fn digest_items(&self, d: &DigestRecord) -> Result<Vec<DigestItem>, StoreError> {
        let (table, sql) = match d.outbox.as_str() {
            "channel" => (
                "deliveries",
                "SELECT id, service_id, service, created_at, from_state, to_state, reason, \
                 due_at, status FROM deliveries WHERE channel = $1 AND due_at >= $2 \
                 AND due_at < $3 ORDER BY id LIMIT 10000",
            ),
            _ => (
                "notifications",
                "SELECT id, service_id, service, created_at, from_state, to_state, reason, \
                 due_at, status FROM notifications n WHERE due_at >= $2 AND due_at < $3 \
                 AND n.recipients::jsonb ? $1 ORDER BY id LIMIT 10000",
            ),
        };
        let mut l = self.read_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(c, sql)?;
        c.query(&s, &[&d.destination, &d.starts_at, &d.ends_at])
            .map_err(pg)?
            .iter()
            .map(|r| decode_item(r, table))
            .collect()
    }

    /// Records a delivered digest; the claim ends.
    pub fn mark_digest_sent(&self, id: i64, at: i64) -> Result<(), StoreError> {
        let mut l = self.write_conn()?;
        let (c, _) = l.conn().parts();
        c.execute(
            "UPDATE digests SET status = 'sent', sent_at = $1, attempts = attempts + 1, \
             last_error = NULL, claimed_by = NULL, claim_until = NULL \
             WHERE id = $2 AND status = 'pending'",
            &[&at, &id],
        )
        .map_err(pg)?;
        Ok(())
    }

    /// Records a failed digest delivery: retry at `next_attempt_at`, or
    /// give up; the claim ends (any node may retry).
    pub fn mark_digest_failed(
        &self,
        id: i64,
        error: &str,
        next_attempt_at: i64,
        give_up: bool,
    ) -> Result<(), StoreError> {
        let mut l = self.write_conn()?;
        let (c, _) = l.conn().parts();
        c.execute(
            "UPDATE digests SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2, \
             status = CASE WHEN $3 THEN 'failed' ELSE status END, \
             claimed_by = NULL, claim_until = NULL WHERE id = $4 AND status = 'pending'",
            &[&error, &next_attempt_at, &give_up, &id],
        )
        .map_err(pg)?;
        Ok(())
    }
}
