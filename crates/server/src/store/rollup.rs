//! Roll-ups of check history (SPEC section 18): per service and hour
//! (`uptime`, kept [`RETAIN_HOURS`]) and per service and day (`uptime_day`,
//! kept [`RETAIN_DAYS`]), with the number of checks, failures, warnings and
//! latency min / mean / max / p95, from which uptime over 24 h, 7 d, 30 d
//! and 90 d is read.
//!
//! Written by the batch writer from rolls it keeps in memory, at most every
//! `ROLLUP_EVERY` under load, in the transaction that moves
//! `meta.rolled_through` ([`mark_rolled`]): the roll-ups count exactly the
//! checks up to that mark. After an unclean stop, start-up folds the checks
//! above the mark into the roll-ups in the transaction that moves the mark
//! ([`fold_unmarked`]), so a `kill -9` before a commit neither loses nor
//! double-counts a check.
//!
//! p95 comes from a fixed histogram of [`BOUNDS_US`] per row: it is reported
//! as the upper edge of the bucket holding the 95th percentile, clamped to
//! the row's min and max. So it is never below the true p95 and at most
//! 2.5 × it (the widest ratio of two neighbouring edges); below 2 ms it is
//! at most 2 ms, above 5 s it is the maximum.

use super::{Store, StoreError};
use healthchecker_core::CheckResult;
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::collections::HashMap;

/// Hourly roll-ups are kept this many hours (30 days).
pub const RETAIN_HOURS: i64 = 30 * 24;
/// Daily roll-ups are kept this many days.
pub const RETAIN_DAYS: i64 = 400;

/// Upper edges (exclusive, µs) of the latency buckets; one more bucket
/// holds everything from the last edge up.
pub const BOUNDS_US: [i64; BUCKETS - 1] = [
    2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000,
    5_000_000,
];
/// Number of latency buckets (`h0` .. `h11`).
pub const BUCKETS: usize = 12;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Counts and latency of some checks of one service in one period.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Roll {
    ok: i64,
    total: i64,
    fails: i64,
    warns: i64,
    lat_n: i64,
    lat_min: Option<i64>,
    lat_sum: i64,
    lat_max: Option<i64>,
    hist: [i64; BUCKETS],
}

fn bucket(us: i64) -> usize {
    BOUNDS_US
        .iter()
        .position(|b| us < *b)
        .unwrap_or(BUCKETS - 1)
}

impl Roll {
    /// Adds one check.
    pub(crate) fn add(&mut self, result: CheckResult, duration_us: i64) {
        self.total += 1;
        self.ok += result.is_success() as i64;
        self.fails += (result == CheckResult::Fail) as i64;
        self.warns += (result == CheckResult::Warn) as i64;
        self.lat_n += 1;
        self.lat_sum += duration_us;
        self.lat_min = Some(self.lat_min.map_or(duration_us, |m| m.min(duration_us)));
        self.lat_max = Some(self.lat_max.map_or(duration_us, |m| m.max(duration_us)));
        self.hist[bucket(duration_us)] += 1;
    }

    /// Adds another roll of the same service and period.
    pub(crate) fn merge(&mut self, o: &Roll) {
        self.ok += o.ok;
        self.total += o.total;
        self.fails += o.fails;
        self.warns += o.warns;
        self.lat_n += o.lat_n;
        self.lat_sum += o.lat_sum;
        self.lat_min = match (self.lat_min, o.lat_min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.lat_max = match (self.lat_max, o.lat_max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        for (h, x) in self.hist.iter_mut().zip(o.hist) {
            *h += x;
        }
    }
}

/// The hour of a check time (Unix ms).
pub(crate) fn hour_of(at: i64) -> i64 {
    at.div_euclid(HOUR_MS)
}

/// `h0, h1, ...` (with a prefix).
fn hist_cols(prefix: &str) -> String {
    (0..BUCKETS)
        .map(|i| format!("{prefix}h{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

const COUNT_COLS: &str = "ok, total, fails, warns, lat_n, lat_min, lat_sum, lat_max";

/// `ON CONFLICT` clause that adds the new row to the stored one.
fn add_on_conflict(key: &str) -> String {
    let hist = (0..BUCKETS)
        .map(|i| format!("h{i} = h{i} + excluded.h{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "ON CONFLICT ({key}, service_id) DO UPDATE SET ok = ok + excluded.ok, \
         total = total + excluded.total, fails = fails + excluded.fails, \
         warns = warns + excluded.warns, lat_n = lat_n + excluded.lat_n, \
         lat_min = COALESCE(MIN(lat_min, excluded.lat_min), lat_min, excluded.lat_min), \
         lat_sum = lat_sum + excluded.lat_sum, \
         lat_max = COALESCE(MAX(lat_max, excluded.lat_max), lat_max, excluded.lat_max), {hist}"
    )
}

/// `SELECT` list folding `checks` rows (grouped by the caller).
fn fold_checks_select(period_ms: i64) -> String {
    let hist = (0..BUCKETS)
        .map(|i| {
            let lo = if i == 0 { 0 } else { BOUNDS_US[i - 1] };
            match BOUNDS_US.get(i) {
                Some(hi) => format!("SUM(duration_us >= {lo} AND duration_us < {hi})"),
                None => format!("SUM(duration_us >= {lo})"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "service_id, at / {period_ms}, SUM(result != 'fail'), COUNT(*), SUM(result = 'fail'), \
         SUM(result = 'warn'), COUNT(*), MIN(duration_us), SUM(duration_us), MAX(duration_us), {hist}"
    )
}

/// Records that every check written so far is in the roll-ups.
pub(crate) fn mark_rolled(tx: &Connection) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO meta (key, value) \
         VALUES ('rolled_through', (SELECT COALESCE(MAX(id), 0) FROM checks))",
    )?
    .execute([])?;
    Ok(())
}

/// Adds the checks above `meta.rolled_through` to the roll-ups and moves
/// the mark (start-up, in the caller's transaction: after an unclean stop
/// the checks of the last roll-up period are not in them yet).
pub(crate) fn fold_unmarked(tx: &Connection) -> rusqlite::Result<()> {
    let mark: i64 = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'rolled_through'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    for (table, key, period) in [("uptime", "hour", HOUR_MS), ("uptime_day", "day", DAY_MS)] {
        tx.execute(
            &format!(
                "INSERT INTO {table} (service_id, {key}, {COUNT_COLS}, {}) \
                 SELECT {} FROM checks WHERE id > ?1 \
                 AND service_id IN (SELECT id FROM services) \
                 GROUP BY service_id, at / {period} {}",
                hist_cols(""),
                fold_checks_select(period),
                add_on_conflict(key)
            ),
            [mark],
        )?;
    }
    mark_rolled(tx)
}

/// Schema migration 7's data step: the existing raw history becomes hourly
/// roll-ups (replacing the counts of an hour when the raw rows hold at
/// least as many checks as its old bucket, which had no latency), and the
/// hourly rows become daily ones. Only checks up to `meta.heads_through`
/// (those the old buckets could count), which becomes the roll-ups' mark
/// `meta.rolled_through`: start-up folds the rest, as after any unclean
/// stop.
pub(crate) fn migrate_history(tx: &Connection) -> rusqlite::Result<()> {
    let keep = ["ok", "total", "fails", "warns"]
        .iter()
        .map(|c| format!("{c} = CASE WHEN excluded.total >= total THEN excluded.{c} ELSE {c} END"))
        .chain(
            ["lat_n", "lat_min", "lat_sum", "lat_max"]
                .iter()
                .map(|c| format!("{c} = excluded.{c}")),
        )
        .chain((0..BUCKETS).map(|i| format!("h{i} = excluded.h{i}")))
        .collect::<Vec<_>>()
        .join(", ");
    tx.execute_batch(&format!(
        "INSERT INTO uptime (service_id, hour, {COUNT_COLS}, {h}) \
         SELECT {sel} FROM checks WHERE service_id IN (SELECT id FROM services) \
         AND id <= (SELECT value FROM meta WHERE key = 'heads_through') \
         GROUP BY service_id, at / {HOUR_MS} \
         ON CONFLICT (hour, service_id) DO UPDATE SET {keep}; \
         INSERT INTO uptime_day (service_id, day, {COUNT_COLS}, {h}) \
         SELECT service_id, hour / 24, SUM(ok), SUM(total), SUM(fails), SUM(warns), SUM(lat_n), \
         MIN(lat_min), SUM(lat_sum), MAX(lat_max), {hsum} FROM uptime GROUP BY service_id, hour / 24; \
         UPDATE checks SET changed = 1 WHERE id IN (SELECT check_id FROM events WHERE check_id IS NOT NULL); \
         INSERT OR REPLACE INTO meta (key, value) \
         SELECT 'rolled_through', value FROM meta WHERE key = 'heads_through';",
        h = hist_cols(""),
        sel = fold_checks_select(HOUR_MS),
        hsum = (0..BUCKETS)
            .map(|i| format!("SUM(h{i})"))
            .collect::<Vec<_>>()
            .join(", "),
    ))
}

/// Writes the writer's rolls (per service and hour) into the hourly and
/// daily tables, adding to what is there; rolls of deleted services are
/// dropped.
pub(crate) fn write_rolls(
    tx: &Connection,
    rolls: &HashMap<(i64, i64), Roll>,
) -> rusqlite::Result<()> {
    let mut days: HashMap<(i64, i64), Roll> = HashMap::new();
    for ((id, hour), r) in rolls {
        days.entry((*id, hour.div_euclid(24))).or_default().merge(r);
    }
    for (table, key, rows) in [("uptime", "hour", rolls), ("uptime_day", "day", &days)] {
        let placeholders = (3..=2 + 8 + BUCKETS)
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut stmt = tx.prepare_cached(&format!(
            "INSERT INTO {table} (service_id, {key}, {COUNT_COLS}, {}) \
             SELECT ?1, ?2, {placeholders} WHERE EXISTS (SELECT 1 FROM services WHERE id = ?1) {}",
            hist_cols(""),
            add_on_conflict(key)
        ))?;
        // In key order (period, service): neighbouring rows, few pages.
        let mut keys: Vec<&(i64, i64)> = rows.keys().collect();
        keys.sort_unstable_by_key(|k| (k.1, k.0));
        for k in keys {
            let r = &rows[k];
            let mut args: Vec<rusqlite::types::Value> = vec![
                k.0.into(),
                k.1.into(),
                r.ok.into(),
                r.total.into(),
                r.fails.into(),
                r.warns.into(),
                r.lat_n.into(),
                r.lat_min.into(),
                r.lat_sum.into(),
                r.lat_max.into(),
            ];
            args.extend(r.hist.iter().map(|h| rusqlite::types::Value::from(*h)));
            stmt.execute(rusqlite::params_from_iter(args))?;
        }
    }
    Ok(())
}

/// Deletes hourly roll-ups older than [`RETAIN_HOURS`] and daily ones
/// older than [`RETAIN_DAYS`] (of deleted services too): the head of each
/// table, 10,000 rows per transaction. Returns the rows removed.
pub(crate) fn prune(store: &Store, now: i64) -> Result<usize, StoreError> {
    let mut removed = 0;
    for (table, key, cutoff) in [
        ("uptime", "hour", hour_of(now) - RETAIN_HOURS),
        ("uptime_day", "day", now.div_euclid(DAY_MS) - RETAIN_DAYS),
    ] {
        loop {
            let conn = super::lock(&store.writer);
            let n = conn
                .prepare_cached(&format!(
                    "DELETE FROM {table} WHERE ({key}, service_id) IN \
                     (SELECT {key}, service_id FROM {table} WHERE {key} <= ?1 LIMIT 10000)"
                ))?
                .execute([cutoff])?;
            removed += n;
            if n < 10_000 {
                break;
            }
        }
    }
    Ok(removed)
}

/// One roll-up row as read back: counts and latency (µs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rollup {
    /// The hour or day (Unix ms / period).
    pub period: i64,
    /// Checks.
    pub count: i64,
    /// Failed checks.
    pub failures: i64,
    /// Checks that warned.
    pub warns: i64,
    /// Fastest check (µs); `None` for a row migrated without latency.
    pub latency_min_us: Option<i64>,
    /// Mean latency (µs).
    pub latency_mean_us: Option<i64>,
    /// Slowest check (µs).
    pub latency_max_us: Option<i64>,
    /// 95th percentile (µs), from the histogram (see the module docs).
    pub latency_p95_us: Option<i64>,
}

fn rollup_from_row(r: &Row<'_>) -> rusqlite::Result<Rollup> {
    let lat_n: i64 = r.get(4)?;
    let (min, sum, max): (Option<i64>, i64, Option<i64>) = (r.get(5)?, r.get(6)?, r.get(7)?);
    let mut hist = [0i64; BUCKETS];
    for (i, h) in hist.iter_mut().enumerate() {
        *h = r.get(8 + i)?;
    }
    let p95 = (lat_n > 0).then(|| {
        // The smallest bucket holding at least 95 % of the checks.
        let need = (lat_n * 95 + 99) / 100;
        let mut seen = 0;
        let i = hist
            .iter()
            .position(|h| {
                seen += h;
                seen >= need
            })
            .unwrap_or(BUCKETS - 1);
        let edge = BOUNDS_US.get(i).copied().unwrap_or(i64::MAX);
        let edge = max.map_or(edge, |m| edge.min(m));
        min.map_or(edge, |m| edge.max(m))
    });
    Ok(Rollup {
        period: r.get(0)?,
        count: r.get(1)?,
        failures: r.get(2)?,
        warns: r.get(3)?,
        latency_min_us: min,
        latency_mean_us: (lat_n > 0).then(|| sum / lat_n),
        latency_max_us: max,
        latency_p95_us: p95,
    })
}

/// Uptime ratios of one service over 24 h, 7 d, 30 d and 90 d.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Uptime {
    /// Successful share of checks over the last 24 hours (hourly
    /// roll-ups); `None` without checks in the window.
    pub day: Option<f64>,
    /// Over the last 7 days (daily roll-ups: today and the 6 days before).
    pub week: Option<f64>,
    /// Over the last 30 days (daily roll-ups).
    pub month: Option<f64>,
    /// Over the last 90 days (daily roll-ups).
    pub quarter: Option<f64>,
}

impl Store {
    /// Uptime over 24 h / 7 d / 30 d / 90 d of each service in `ids`, read
    /// from the roll-ups: two primary-key range reads per service (at most
    /// 24 hourly and 90 daily rows), whatever the number of services.
    /// Services without checks in any window map to all `None`.
    pub fn uptime_ratios(&self, ids: &[i64], now: i64) -> Result<HashMap<i64, Uptime>, StoreError> {
        let conn = self.read_conn();
        let (hour, day) = (hour_of(now), now.div_euclid(DAY_MS));
        // One primary-key lookup per period (the key is period first).
        let mut hours = conn.prepare_cached(
            "WITH RECURSIVE p(x) AS (SELECT ?2 - 23 UNION ALL SELECT x + 1 FROM p WHERE x < ?2) \
             SELECT SUM(u.ok), SUM(u.total) FROM p JOIN uptime u \
             ON u.hour = p.x AND u.service_id = ?1",
        )?;
        let mut days = conn.prepare_cached(
            "WITH RECURSIVE p(x) AS (SELECT ?2 - 89 UNION ALL SELECT x + 1 FROM p WHERE x < ?2) \
             SELECT SUM(CASE WHEN u.day > ?2 - 7 THEN u.ok END), \
               SUM(CASE WHEN u.day > ?2 - 7 THEN u.total END), \
               SUM(CASE WHEN u.day > ?2 - 30 THEN u.ok END), \
               SUM(CASE WHEN u.day > ?2 - 30 THEN u.total END), \
               SUM(u.ok), SUM(u.total) \
             FROM p JOIN uptime_day u ON u.day = p.x AND u.service_id = ?1",
        )?;
        let ratio = |ok: Option<i64>, total: Option<i64>| match (ok, total) {
            (Some(ok), Some(t)) if t > 0 => Some(ok as f64 / t as f64),
            _ => None,
        };
        let mut out = HashMap::new();
        for id in ids {
            let d = hours.query_row(params![id, hour], |r| Ok(ratio(r.get(0)?, r.get(1)?)))?;
            let w = days.query_row(params![id, day], |r| {
                Ok((
                    ratio(r.get(0)?, r.get(1)?),
                    ratio(r.get(2)?, r.get(3)?),
                    ratio(r.get(4)?, r.get(5)?),
                ))
            })?;
            out.insert(
                *id,
                Uptime {
                    day: d,
                    week: w.0,
                    month: w.1,
                    quarter: w.2,
                },
            );
        }
        Ok(out)
    }

    /// The hourly (`daily == false`) or daily roll-ups of one service for
    /// the periods `from..=to` (hours or days since the epoch, as
    /// `at / 3,600,000` or `at / 86,400,000`), oldest first; periods without
    /// checks are left out. One primary-key lookup per period.
    pub fn rollups(
        &self,
        service_id: i64,
        daily: bool,
        from: i64,
        to: i64,
    ) -> Result<Vec<Rollup>, StoreError> {
        let conn = self.read_conn();
        let (table, key) = if daily {
            ("uptime_day", "day")
        } else {
            ("uptime", "hour")
        };
        let mut stmt = conn.prepare_cached(&format!(
            "WITH RECURSIVE p(x) AS (SELECT ?2 UNION ALL SELECT x + 1 FROM p WHERE x < ?3) \
             SELECT u.{key}, u.total, u.fails, u.warns, u.lat_n, u.lat_min, u.lat_sum, u.lat_max, {} \
             FROM p JOIN {table} u ON u.{key} = p.x AND u.service_id = ?1 ORDER BY u.{key}",
            hist_cols("u.")
        ))?;
        let rows = stmt.query_map(params![service_id, from, to], rollup_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_is_the_upper_edge_of_its_bucket_clamped_to_the_extremes() {
        let mut r = Roll::default();
        for _ in 0..95 {
            r.add(CheckResult::Pass, 3_000);
        }
        for _ in 0..5 {
            r.add(CheckResult::Fail, 900_000);
        }
        assert_eq!(bucket(1_999), 0);
        assert_eq!(bucket(2_000), 1);
        assert_eq!(bucket(60_000_000), BUCKETS - 1);
        assert_eq!((r.total, r.ok, r.fails), (100, 95, 5));
        assert_eq!(r.hist[1], 95);
        assert_eq!(r.hist[8], 5);
    }
}
