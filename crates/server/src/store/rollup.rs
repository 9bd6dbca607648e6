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
//!
//! # Packed rows
//!
//! Since schema version 11 a row is `(period, service_id, roll)`, `roll`
//! being its counts packed into one blob ([`encode`]): about 14 bytes for
//! an hour of checks instead of a 22-column record (docs/storage.md, "Disk
//! needed"). The writer adds to a stored row in its upsert with the SQL
//! function `hc_roll_merge(stored, new)`; migration 11 packs the old
//! columns with `hc_roll_pack(...)`. Both are registered on a connection by
//! [`register_functions`] (`schema::migrate`, which `Store::open` runs on
//! its writer connection). Reads decode the blobs in Rust.
//!
//! The packed format: [`pack`].

use super::decode::Corruption;
use super::{SqliteStore, StoreError};
use healthchecker_core::{CheckResult, ServiceId};
use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::collections::HashMap;

/// Hourly roll-ups are kept this many hours (30 days).
pub const RETAIN_HOURS: i64 = 30 * 24;
/// Daily roll-ups are kept this many days.
pub const RETAIN_DAYS: i64 = 400;

/// The packed roll-up format, shared with the PostgreSQL store
/// (`cluster/store/rollup.rs`), which stores the same blobs as `bytea`.
pub(crate) mod pack;
use pack::decode_counts;
#[cfg(test)]
use pack::{bucket, BadRoll};
pub(crate) use pack::{decode, encode, encode_into, Roll};
pub use pack::{BOUNDS_US, BUCKETS};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

fn function_error(e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::UserFunctionError(Box::new(e))
}

fn roll_arg(ctx: &Context<'_>, i: usize) -> rusqlite::Result<Roll> {
    decode(ctx.get_raw(i).as_blob().map_err(function_error)?).map_err(function_error)
}

/// Registers on `conn` the SQL functions of the packed rows:
/// `hc_roll_merge(a, b)`, the packed sum of two packed rolls (the writer's
/// upsert), and `hc_roll_pack(total, fails, warns, lat_n, lat_min, lat_sum,
/// lat_max, h0, .., h11)`, a row of schema version 7's columns packed
/// (migration 11). A blob that does not decode fails the statement.
pub(crate) fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8
        | FunctionFlags::SQLITE_DETERMINISTIC
        | FunctionFlags::SQLITE_INNOCUOUS;
    conn.create_scalar_function("hc_roll_merge", 2, flags, |ctx| {
        let mut a = roll_arg(ctx, 0)?;
        a.merge(&roll_arg(ctx, 1)?);
        Ok(encode(&a))
    })?;
    conn.create_scalar_function("hc_roll_pack", 7 + BUCKETS as i32, flags, |ctx| {
        let mut hist = [0i64; BUCKETS];
        for (i, h) in hist.iter_mut().enumerate() {
            *h = ctx.get(7 + i)?;
        }
        Ok(encode(&Roll {
            total: ctx.get(0)?,
            fails: ctx.get(1)?,
            warns: ctx.get(2)?,
            lat_n: ctx.get(3)?,
            lat_min: ctx.get(4)?,
            lat_sum: ctx.get(5)?,
            lat_max: ctx.get(6)?,
            hist,
        }))
    })
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

/// Rolls up the checks above `meta.rolled_through` (start-up: after an
/// unclean stop the checks of the last roll-up period are not in the
/// tables yet), and returns those rolls per `(service, hour)`. Those are
/// at most the checks of one roll-up period (or, after an upgrade, those
/// the old build had not counted yet): they are folded in memory. The
/// mark does not move: the rolls go to the writer's overlay (reads add
/// them at once), and the writer's next roll-up commit writes them and
/// moves the mark in one transaction, as for the checks it receives. A
/// start-up that wrote them into the tables instead took about as long
/// again as the scan (100,000 services: docs/performance.md); raw checks
/// above the mark are never pruned, so a crash before that commit folds
/// them again.
///
/// The same pass hands every check above `also_above` to `also` (as `id,
/// service_id, at, result, duration_us, seq, reason`), in id order: start-up
/// repairs the service rows from it (`checks::recover_heads`) without a
/// second scan of the table.
pub(crate) fn fold_unmarked(
    tx: &Connection,
    also_above: i64,
    mut also: impl FnMut(&Row<'_>) -> rusqlite::Result<()>,
) -> rusqlite::Result<HashMap<(i64, i64), Roll>> {
    let mark: i64 = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'rolled_through'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    let mut rolls: HashMap<(i64, i64), Roll> = HashMap::new();
    let mut stmt = tx.prepare(
        "SELECT id, service_id, at, result, duration_us, seq, reason FROM checks \
         WHERE id > ?1 ORDER BY id",
    )?;
    let mut rows = stmt.query([mark.min(also_above)])?;
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        if id > mark {
            let result = match r.get_ref(3)?.as_str()? {
                "fail" => CheckResult::Fail,
                "warn" => CheckResult::Warn,
                _ => CheckResult::Pass,
            };
            rolls
                .entry((r.get(1)?, hour_of(r.get(2)?)))
                .or_default()
                .add(result, r.get(4)?);
        }
        if id > also_above {
            also(r)?;
        }
    }
    Ok(rolls)
}

/// Schema migration 7's data step: the existing raw history becomes hourly
/// roll-ups (replacing the counts of an hour when the raw rows hold at
/// least as many checks as its old bucket, which had no latency), and the
/// hourly rows become daily ones. Only checks up to `meta.heads_through`
/// (those the old buckets could count), which becomes the roll-ups' mark
/// `meta.rolled_through`: start-up folds the rest, as after any unclean
/// stop. Runs at schema version 7, on that version's columns (migration
/// 11 packs them afterwards).
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
/// daily tables, adding to what is there (`hc_roll_merge`, see
/// [`register_functions`]); rolls of deleted services are dropped.
pub(crate) fn write_rolls(
    tx: &Connection,
    rolls: &HashMap<(i64, i64), Roll>,
) -> rusqlite::Result<()> {
    let mut days: HashMap<(i64, i64), Roll> = HashMap::new();
    for ((id, hour), r) in rolls {
        days.entry((*id, hour.div_euclid(24))).or_default().merge(r);
    }
    let mut packed = Vec::with_capacity(32);
    for (table, key, rows) in [("uptime", "hour", rolls), ("uptime_day", "day", &days)] {
        let mut stmt = tx.prepare_cached(&format!(
            "INSERT INTO {table} ({key}, service_id, roll) \
             SELECT ?2, ?1, ?3 WHERE EXISTS (SELECT 1 FROM services WHERE id = ?1) \
             ON CONFLICT ({key}, service_id) DO UPDATE SET roll = hc_roll_merge(roll, excluded.roll)"
        ))?;
        // In key order (period, service): neighbouring rows, few pages.
        let mut keys: Vec<&(i64, i64)> = rows.keys().collect();
        keys.sort_unstable_by_key(|k| (k.1, k.0));
        for k in keys {
            packed.clear();
            encode_into(&mut packed, &rows[k]);
            stmt.execute(params![k.0, k.1, &packed[..]])?;
        }
    }
    Ok(())
}

/// Deletes hourly roll-ups older than [`RETAIN_HOURS`] and daily ones
/// older than [`RETAIN_DAYS`] (of deleted services too): the head of each
/// table, 10,000 rows per transaction. Returns the rows removed.
pub(crate) fn prune(store: &SqliteStore, now: i64) -> Result<usize, StoreError> {
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

/// The roll of a `(period, roll)` row of `table` (a blob that does not
/// decode is a [`Corruption`]).
fn roll_of(r: &Row<'_>, table: &str, service_id: ServiceId) -> rusqlite::Result<(i64, Roll)> {
    let period: i64 = r.get(0)?;
    let corrupt = |detail: String| {
        Corruption {
            table: table.into(),
            row: None,
            column: "roll".into(),
            detail: format!("service {service_id}, period {period}: {detail}"),
        }
        .into_sqlite()
    };
    let b = r
        .get_ref(1)?
        .as_blob()
        .map_err(|e| corrupt(e.to_string()))?;
    Ok((period, decode(b).map_err(|e| corrupt(e.to_string()))?))
}

/// `(total, fails)` of a `(period, roll)` row of `table`.
fn counts_of(r: &Row<'_>, table: &str, service_id: ServiceId) -> rusqlite::Result<(i64, i64)> {
    let b = r.get_ref(1)?.as_blob();
    match b
        .map_err(|e| e.to_string())
        .and_then(|b| decode_counts(b).map_err(|e| e.to_string()))
    {
        Ok(c) => Ok(c),
        Err(detail) => Err(Corruption {
            table: table.into(),
            row: None,
            column: "roll".into(),
            detail: format!(
                "service {service_id}, period {}: {detail}",
                r.get::<_, i64>(0)?
            ),
        }
        .into_sqlite()),
    }
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

impl SqliteStore {
    /// Uptime over 24 h / 7 d / 30 d / 90 d of each service in `ids`, read
    /// from the roll-ups: two primary-key range reads per service (at most
    /// 24 hourly and 90 daily rows), whatever the number of services; plus
    /// the batch writer's roll-ups of the checks not in the tables yet
    /// (store/writer.rs, `Overlay`). Services without checks in any window
    /// map to all `None`.
    pub fn uptime_ratios(
        &self,
        ids: &[ServiceId],
        now: i64,
    ) -> Result<HashMap<ServiceId, Uptime>, StoreError> {
        self.with_unrolled(ids, |extra| self.uptime_ratios_with(ids, now, extra))
    }

    /// Runs `read` (of the roll-up tables) with the writer's roll-ups of
    /// `ids` not in them yet; again (up to 5 times) when a roll-up commit
    /// landed meanwhile, which would count them twice or not at all.
    fn with_unrolled<T>(
        &self,
        ids: &[ServiceId],
        read: impl Fn(&HashMap<ServiceId, Vec<(i64, Roll)>>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let take = || {
            let ov = self.heads.lock().unwrap_or_else(|e| e.into_inner());
            let extra: HashMap<ServiceId, Vec<(i64, Roll)>> = ids
                .iter()
                .map(|id| (*id, ov.unrolled(*id).to_vec()))
                .filter(|(_, v)| !v.is_empty())
                .collect();
            (ov.rolled(), extra)
        };
        let mut tries = 0;
        loop {
            let (before, extra) = take();
            let out = read(&extra)?;
            let after = self
                .heads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .rolled();
            tries += 1;
            if (after == before && before.is_multiple_of(2)) || tries >= 5 {
                return Ok(out);
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    fn uptime_ratios_with(
        &self,
        ids: &[ServiceId],
        now: i64,
        extra: &HashMap<ServiceId, Vec<(i64, Roll)>>,
    ) -> Result<HashMap<ServiceId, Uptime>, StoreError> {
        let conn = self.read_conn();
        let (hour, day) = (hour_of(now), now.div_euclid(DAY_MS));
        // One primary-key lookup per period (the key is period first).
        let mut hours = conn.prepare_cached(
            "WITH RECURSIVE p(x) AS (SELECT ?2 - 23 UNION ALL SELECT x + 1 FROM p WHERE x < ?2) \
             SELECT u.hour, u.roll FROM p JOIN uptime u ON u.hour = p.x AND u.service_id = ?1",
        )?;
        let mut days = conn.prepare_cached(
            "WITH RECURSIVE p(x) AS (SELECT ?2 - 89 UNION ALL SELECT x + 1 FROM p WHERE x < ?2) \
             SELECT u.day, u.roll FROM p JOIN uptime_day u ON u.day = p.x AND u.service_id = ?1",
        )?;
        // (ok, total) summed; a ratio when there was a check.
        let add = |w: &mut (i64, i64), (total, fails): (i64, i64)| {
            w.0 = w.0.saturating_add(total.saturating_sub(fails));
            w.1 = w.1.saturating_add(total);
        };
        let ratio = |(ok, total): (i64, i64)| (total > 0).then(|| ok as f64 / total as f64);
        let mut out = HashMap::new();
        for id in ids {
            let mut d = (0, 0);
            let mut rows = hours.query(params![id, hour])?;
            while let Some(r) = rows.next()? {
                add(&mut d, counts_of(r, "uptime", *id)?);
            }
            // Last 7, 30 and 90 days.
            let mut w = [(0, 0); 3];
            for (h, r) in extra.get(id).into_iter().flatten() {
                let c = (r.total, r.fails);
                if *h > hour - 24 && *h <= hour {
                    add(&mut d, c);
                }
                let at = h.div_euclid(24);
                for (w, span) in w.iter_mut().zip([7, 30, 90]) {
                    if at > day - span && at <= day {
                        add(w, c);
                    }
                }
            }
            let mut rows = days.query(params![id, day])?;
            while let Some(r) = rows.next()? {
                let c = counts_of(r, "uptime_day", *id)?;
                let at: i64 = r.get(0)?;
                for (w, span) in w.iter_mut().zip([7, 30, 90]) {
                    if at > day - span {
                        add(w, c);
                    }
                }
            }
            out.insert(
                *id,
                Uptime {
                    day: ratio(d),
                    week: ratio(w[0]),
                    month: ratio(w[1]),
                    quarter: ratio(w[2]),
                },
            );
        }
        Ok(out)
    }

    /// The hourly (`daily == false`) or daily roll-ups of one service for
    /// the periods `from..=to` (hours or days since the epoch, as
    /// `at / 3,600,000` or `at / 86,400,000`), oldest first; periods without
    /// checks are left out. One primary-key lookup per period; the batch
    /// writer's roll-ups of the checks not in the tables yet are added.
    pub fn rollups(
        &self,
        service_id: ServiceId,
        daily: bool,
        from: i64,
        to: i64,
    ) -> Result<Vec<Rollup>, StoreError> {
        self.with_unrolled(&[service_id], |extra| {
            let mut rows: std::collections::BTreeMap<i64, Roll> = self
                .stored_rollups(service_id, daily, from, to)?
                .into_iter()
                .collect();
            for (h, r) in extra.get(&service_id).into_iter().flatten() {
                let p = if daily { h.div_euclid(24) } else { *h };
                if (from..=to).contains(&p) {
                    rows.entry(p).or_default().merge(r);
                }
            }
            Ok(rows.iter().map(|(p, r)| r.rollup(*p)).collect())
        })
    }

    /// The stored rows of [`Store::rollups`].
    fn stored_rollups(
        &self,
        service_id: ServiceId,
        daily: bool,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, Roll)>, StoreError> {
        let conn = self.read_conn();
        let (table, key) = if daily {
            ("uptime_day", "day")
        } else {
            ("uptime", "hour")
        };
        let mut stmt = conn.prepare_cached(&format!(
            "WITH RECURSIVE p(x) AS (SELECT ?2 UNION ALL SELECT x + 1 FROM p WHERE x < ?3) \
             SELECT u.{key}, u.roll FROM p JOIN {table} u ON u.{key} = p.x AND u.service_id = ?1 \
             ORDER BY u.{key}"
        ))?;
        let rows = stmt.query_map(params![service_id, from, to], |r| {
            roll_of(r, table, service_id)
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests;
