//! Roll-ups of check history on PostgreSQL (SPEC section 18), as
//! `store/rollup.rs`: per service and hour (`uptime`, kept
//! `RETAIN_HOURS`) and per day (`uptime_day`, kept `RETAIN_DAYS`), each
//! row the packed blob of `store/rollup/pack.rs` as `bytea`.
//!
//! The packed format is compiled from the SQLite store's own file (one
//! format, one source), and rows are **merged in Rust**: the writer
//! inserts a batch's new rows with `ON CONFLICT DO NOTHING`, then locks
//! the rows that existed (`FOR UPDATE`, in key order), adds its counts to
//! them and writes them back. Merging in SQL would need the varint
//! decoder as a PL/pgSQL function installed in the database (a second
//! implementation of the format to keep in step, and an extension of what
//! the database user must be allowed to create); merging in Rust costs
//! one more round trip only for rows that already exist, and the rows of
//! one service are written by one node at a time (its bucket's owner).

use super::{pg, PgStore};
use crate::store::{Rollup, StoreError, Uptime, RETAIN_DAYS, RETAIN_HOURS};
use healthchecker_core::ServiceId;
use postgres::GenericClient;
use std::collections::{BTreeMap, HashMap};

// The packed format is the SQLite store's (one definition for both).
use crate::store::roll_pack as pack;
pub(crate) use pack::Roll;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// The hour of a check time (Unix ms).
pub(crate) fn hour_of(at: i64) -> i64 {
    at.div_euclid(HOUR_MS)
}

/// The day of a check time (Unix ms).
pub(crate) fn day_of(at: i64) -> i64 {
    at.div_euclid(DAY_MS)
}

fn corrupt(table: &str, service: i64, period: i64, detail: String) -> StoreError {
    StoreError::Corrupt(crate::store::Corruption {
        table: table.into(),
        row: None,
        column: "roll".into(),
        detail: format!("service {service}, period {period}: {detail}"),
    })
}

/// Adds `rolls` (keyed by `(period, service id)`) to `table`'s rows
/// (`uptime` by `hour`, `uptime_day` by `day`) inside the writer's
/// transaction.
pub(crate) fn merge_rolls(
    tx: &mut impl GenericClient,
    table: &str,
    key: &str,
    rolls: &BTreeMap<(i64, i64), Roll>,
) -> Result<(), StoreError> {
    if rolls.is_empty() {
        return Ok(());
    }
    let (periods, ids): (Vec<i64>, Vec<i64>) = rolls.keys().copied().unzip();
    let blobs: Vec<Vec<u8>> = rolls.values().map(pack::encode).collect();
    let inserted: std::collections::HashSet<(i64, i64)> = tx
        .query(
            &format!(
                "INSERT INTO {table} ({key}, service_id, roll) \
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[]) \
                 ON CONFLICT DO NOTHING RETURNING {key}, service_id"
            ),
            &[&periods, &ids, &blobs],
        )
        .map_err(pg)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if inserted.len() == rolls.len() {
        return Ok(());
    }
    let (periods, ids): (Vec<i64>, Vec<i64>) = rolls
        .keys()
        .filter(|k| !inserted.contains(k))
        .copied()
        .unzip();
    let stored = tx
        .query(
            &format!(
                "SELECT u.{key}, u.service_id, u.roll FROM {table} u \
                 JOIN unnest($1::bigint[], $2::bigint[]) k(p, s) \
                   ON u.{key} = k.p AND u.service_id = k.s \
                 ORDER BY u.{key}, u.service_id FOR UPDATE OF u"
            ),
            &[&periods, &ids],
        )
        .map_err(pg)?;
    let (mut ps, mut ss, mut bs) = (Vec::new(), Vec::new(), Vec::new());
    for r in stored {
        let (p, s, b): (i64, i64, Vec<u8>) = (r.get(0), r.get(1), r.get(2));
        let mut roll = pack::decode(&b).map_err(|e| corrupt(table, s, p, e.to_string()))?;
        roll.merge(&rolls[&(p, s)]);
        ps.push(p);
        ss.push(s);
        bs.push(pack::encode(&roll));
    }
    tx.execute(
        &format!(
            "UPDATE {table} u SET roll = k.r \
             FROM unnest($1::bigint[], $2::bigint[], $3::bytea[]) k(p, s, r) \
             WHERE u.{key} = k.p AND u.service_id = k.s"
        ),
        &[&ps, &ss, &bs],
    )
    .map_err(pg)?;
    Ok(())
}

impl PgStore {
    /// Uptime over 24 h / 7 d / 30 d / 90 d of each service in `ids`, read
    /// from the roll-ups (one point lookup per service and period, in two
    /// statements). Services without checks in any window map to all `None`.
    pub fn uptime_ratios(
        &self,
        ids: &[ServiceId],
        now: i64,
    ) -> Result<HashMap<ServiceId, Uptime>, StoreError> {
        let raw: Vec<i64> = ids.iter().map(|i| i.get()).collect();
        let (hour, day) = (hour_of(now), day_of(now));
        let mut l = self.read_conn()?;
        let (c, cache) = l.conn().parts();
        let hours = cache.get(
            c,
            "SELECT u.service_id, u.hour, u.roll FROM unnest($1::bigint[]) s(id) \
             CROSS JOIN generate_series($2::bigint - 23, $2::bigint) p(x) \
             JOIN uptime u ON u.hour = p.x AND u.service_id = s.id",
        )?;
        let days = cache.get(
            c,
            "SELECT u.service_id, u.day, u.roll FROM unnest($1::bigint[]) s(id) \
             CROSS JOIN generate_series($2::bigint - 89, $2::bigint) p(x) \
             JOIN uptime_day u ON u.day = p.x AND u.service_id = s.id",
        )?;
        let add = |w: &mut (i64, i64), (total, fails): (i64, i64)| {
            w.0 = w.0.saturating_add(total.saturating_sub(fails));
            w.1 = w.1.saturating_add(total);
        };
        let ratio = |(ok, total): (i64, i64)| (total > 0).then(|| ok as f64 / total as f64);
        let mut d: HashMap<i64, (i64, i64)> = HashMap::new();
        for r in c.query(&hours, &[&raw, &hour]).map_err(pg)? {
            let (s, p, b): (i64, i64, Vec<u8>) = (r.get(0), r.get(1), r.get(2));
            let counts =
                pack::decode_counts(&b).map_err(|e| corrupt("uptime", s, p, e.to_string()))?;
            add(d.entry(s).or_default(), counts);
        }
        let mut w: HashMap<i64, [(i64, i64); 3]> = HashMap::new();
        for r in c.query(&days, &[&raw, &day]).map_err(pg)? {
            let (s, p, b): (i64, i64, Vec<u8>) = (r.get(0), r.get(1), r.get(2));
            let counts =
                pack::decode_counts(&b).map_err(|e| corrupt("uptime_day", s, p, e.to_string()))?;
            let e = w.entry(s).or_default();
            for (w, span) in e.iter_mut().zip([7, 30, 90]) {
                if p > day - span {
                    add(w, counts);
                }
            }
        }
        Ok(ids
            .iter()
            .map(|id| {
                let d = d.get(&id.get()).copied().unwrap_or_default();
                let w = w.get(&id.get()).copied().unwrap_or_default();
                (
                    *id,
                    Uptime {
                        day: ratio(d),
                        week: ratio(w[0]),
                        month: ratio(w[1]),
                        quarter: ratio(w[2]),
                    },
                )
            })
            .collect())
    }

    /// The hourly (`daily == false`) or daily roll-ups of one service for
    /// the periods `from..=to`, oldest first; periods without checks are
    /// left out. One primary-key lookup per period.
    pub fn rollups(
        &self,
        service_id: ServiceId,
        daily: bool,
        from: i64,
        to: i64,
    ) -> Result<Vec<Rollup>, StoreError> {
        let (table, key) = if daily {
            ("uptime_day", "day")
        } else {
            ("uptime", "hour")
        };
        let mut l = self.read_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(
            c,
            &format!(
                "SELECT u.{key}, u.roll FROM generate_series($2::bigint, $3::bigint) p(x) \
                 JOIN {table} u ON u.{key} = p.x AND u.service_id = $1 ORDER BY u.{key}"
            ),
        )?;
        c.query(&s, &[&service_id.get(), &from, &to])
            .map_err(pg)?
            .iter()
            .map(|r| {
                let (p, b): (i64, Vec<u8>) = (r.get(0), r.get(1));
                let roll = pack::decode(&b)
                    .map_err(|e| corrupt(table, service_id.get(), p, e.to_string()))?;
                Ok(roll.rollup(p))
            })
            .collect()
    }

    /// Deletes hourly roll-ups older than `RETAIN_HOURS` and daily ones
    /// older than `RETAIN_DAYS`, 10,000 rows per statement. Returns the
    /// rows removed.
    pub(crate) fn prune_rollups(&self, now: i64) -> Result<usize, StoreError> {
        let mut removed = 0;
        for (table, key, cutoff) in [
            ("uptime", "hour", hour_of(now) - RETAIN_HOURS),
            ("uptime_day", "day", day_of(now) - RETAIN_DAYS),
        ] {
            loop {
                let mut l = self.write_conn()?;
                let (c, _) = l.conn().parts();
                let n = c
                    .execute(
                        &format!(
                            "DELETE FROM {table} WHERE ctid IN \
                             (SELECT ctid FROM {table} WHERE {key} <= $1 LIMIT 10000)"
                        ),
                        &[&cutoff],
                    )
                    .map_err(pg)? as usize;
                removed += n;
                if n < 10_000 {
                    break;
                }
            }
        }
        Ok(removed)
    }
}
