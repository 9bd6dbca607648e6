//! Roll-ups of check history on PostgreSQL (SPEC section 18), as
//! `store/rollup.rs`: per service and hour (`uptime`, kept
//! `RETAIN_HOURS`) and per day (`uptime_day`, kept `RETAIN_DAYS`), each
//! row the packed blob of `store/rollup/pack.rs` as `bytea`.
//!
//! A check is added to its hour's row only; each past hour is folded
//! into its day's row once ([`PgStore::fold_hours`]), and reads of days
//! add the hours not folded yet.
//!
//! The packed format is compiled from the SQLite store's own file (one
//! format, one source), and rows are **merged in Rust**: the writer
//! inserts a batch's new rows with `ON CONFLICT DO NOTHING`, reads the
//! rows that existed, adds its counts to them and writes them back where
//! they still hold what was read (no row lock: a lock is a WAL record per
//! row). Merging in SQL would need the varint
//! decoder as a PL/pgSQL function installed in the database (a second
//! implementation of the format to keep in step, and an extension of what
//! the database user must be allowed to create); merging in Rust costs
//! one more round trip only for rows that already exist, and the rows of
//! one service are written by one node at a time (its bucket's owner).

use super::{pg, PgStore};
use crate::store::{Rollup, StoreError, Uptime, RETAIN_DAYS, RETAIN_HOURS};
use healthchecker_core::ServiceId;
use postgres::GenericClient;
use std::collections::{BTreeMap, HashMap, HashSet};

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
/// transaction. Returns the keys whose hour row was already folded into
/// its day (see [`PgStore::fold_hours`]): the caller adds those rolls to
/// the day rows too. Always empty for `uptime_day`.
pub(crate) fn merge_rolls(
    tx: &mut impl GenericClient,
    table: &str,
    key: &str,
    rolls: &BTreeMap<(i64, i64), Roll>,
) -> Result<HashSet<(i64, i64)>, StoreError> {
    let mut late = HashSet::new();
    if rolls.is_empty() {
        return Ok(late);
    }
    // Hour rows carry `folded`; day rows have no such flag.
    let folded = if table == "uptime" {
        "u.folded"
    } else {
        "false"
    };
    let (periods, ids): (Vec<i64>, Vec<i64>) = rolls.keys().copied().unzip();
    let blobs: Vec<Vec<u8>> = rolls.values().map(pack::encode).collect();
    let inserted: HashSet<(i64, i64)> = tx
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
    let mut todo: Vec<(i64, i64)> = rolls
        .keys()
        .filter(|k| !inserted.contains(k))
        .copied()
        .collect();
    // Read, merge, and write back only where the row still holds what was
    // read (compare-and-set on the roll and the flag): no row lock, which
    // would cost a WAL record per row. A row changed in between (a fold
    // committed meanwhile; another writer of the same service cannot, as
    // the batch's `UPDATE services` already holds that service's row) is
    // read and merged again.
    while !todo.is_empty() {
        let (periods, ids): (Vec<i64>, Vec<i64>) = todo.iter().copied().unzip();
        let stored = tx
            .query(
                &format!(
                    "SELECT u.{key}, u.service_id, u.roll, {folded} FROM {table} u \
                     JOIN unnest($1::bigint[], $2::bigint[]) k(p, s) \
                       ON u.{key} = k.p AND u.service_id = k.s"
                ),
                &[&periods, &ids],
            )
            .map_err(pg)?;
        if stored.len() < todo.len() {
            // A row deleted in between (pruned): insert it again.
            let found: HashSet<(i64, i64)> = stored.iter().map(|r| (r.get(0), r.get(1))).collect();
            let missing: BTreeMap<(i64, i64), Roll> = todo
                .iter()
                .filter(|k| !found.contains(k))
                .map(|k| (*k, rolls[k]))
                .collect();
            late.extend(merge_rolls(tx, table, key, &missing)?);
        }
        let (mut ps, mut ss, mut olds, mut fs, mut news) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for r in stored {
            let (p, s, b, f): (i64, i64, Vec<u8>, bool) = (r.get(0), r.get(1), r.get(2), r.get(3));
            let mut roll = pack::decode(&b).map_err(|e| corrupt(table, s, p, e.to_string()))?;
            roll.merge(&rolls[&(p, s)]);
            ps.push(p);
            ss.push(s);
            olds.push(b);
            fs.push(f);
            news.push(pack::encode(&roll));
        }
        let mut written = HashSet::new();
        for r in tx
            .query(
                &format!(
                    "UPDATE {table} u SET roll = k.r \
                     FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::boolean[], \
                       $5::bytea[]) k(p, s, o, f, r) \
                     WHERE u.{key} = k.p AND u.service_id = k.s AND u.roll = k.o \
                       AND {folded} = k.f \
                     RETURNING u.{key}, u.service_id, {folded}"
                ),
                &[&ps, &ss, &olds, &fs, &news],
            )
            .map_err(pg)?
        {
            let k: (i64, i64) = (r.get(0), r.get(1));
            if r.get::<_, bool>(2) {
                late.insert(k);
            }
            written.insert(k);
        }
        todo = ps
            .into_iter()
            .zip(ss)
            .filter(|k| !written.contains(k))
            .collect();
    }
    Ok(late)
}

/// The checks of the services `$1` not in the roll-ups yet (above each
/// service's `rolled_through`, cluster/store/writer.rs), checked in
/// `$2..$3` (Unix ms): service, time, result, duration.
const UNROLLED: &str = "SELECT c.service_id, c.at, c.result, c.duration_us \
    FROM services s JOIN checks c ON c.service_id = s.id AND c.id > s.rolled_through \
    WHERE s.id = ANY($1) AND c.at >= $2 AND c.at < $3";

/// The rows of [`UPTIME`] by their first column.
const UPTIME_HOUR: i32 = 0;
const UPTIME_DAY: i32 = 1;
const UPTIME_UNFOLDED: i32 = 2;
const UPTIME_UNROLLED: i32 = 3;

/// The services `$1` with their mark and what their newest check above
/// it counted (`k`: its time, `checks.unrolled`, `checks.unrolled_failed`;
/// NULL without a check above the mark): a `WITH` query's first part, for
/// [`UPTIME`] and [`UNROLLED_COUNTS`]. It finds each service's newest
/// check as `services.rs`' `SERVICE_COLUMNS` does (in the current slot
/// first: one index probe and one heap page, whatever the number of
/// checks above the mark; every slot only when the current one has none
/// of the service), then keeps it if it is above the mark (migration 11).
macro_rules! newest_above_mark {
    () => {
        "n0 AS (SELECT s.id, s.rolled_through AS mark, coalesce( \
      (SELECT ARRAY[c.id, c.at, c.unrolled, c.unrolled_failed] FROM checks c \
       WHERE c.service_id = s.id \
         AND c.slot = (SELECT slot FROM check_slots WHERE current) \
       ORDER BY c.id DESC LIMIT 1), \
      (SELECT ARRAY[c.id, c.at, c.unrolled, c.unrolled_failed] FROM checks c \
       WHERE c.service_id = s.id ORDER BY c.id DESC LIMIT 1)) AS k \
    FROM services s WHERE s.id = ANY($1)), \
    n AS (SELECT id, mark, CASE WHEN k[1] > mark THEN k[2:4] END AS k FROM n0)"
    };
}

/// The checks of each service `$1` above its mark, and how many failed:
/// the newest one's counts, or the rows counted when it has none.
pub(crate) const UNROLLED_COUNTS: &str = concat!(
    "WITH ",
    newest_above_mark!(),
    " \
         SELECT n.id, coalesce(n.k[2], r.n), coalesce(n.k[3], r.f) FROM n \
         CROSS JOIN LATERAL (SELECT count(*) AS n, count(*) FILTER (WHERE c.result = 'fail') AS f \
           FROM checks c WHERE n.k IS NOT NULL AND n.k[2] IS NULL \
             AND c.service_id = n.id AND c.id > n.mark) r"
);

/// What [`PgStore::uptime_ratios`] reads for the services `$1` at hour
/// `$2` and day `$3`, as `(kind, service, period, roll, checks,
/// failures)`: their hour rows of the last 24 hours (one point lookup
/// each: a `LATERAL` subquery with `OFFSET 0`, which the planner cannot
/// turn into a join; as a join it hashed the whole of `uptime`, whose
/// row count it cannot tell from an array's: 4.0 ms at 20,000 services,
/// 2.6 ms by lookups, and growing with the table), their day rows of the
/// last 90 days, their hours not folded into
/// their days yet, and their checks not rolled up yet, between `$4` and
/// `$5`: the counts their newest such check carries, as one row in its
/// hour (they are minutes old, so they fall in the same windows), or,
/// where it carries none, the rows counted per hour (the hour as
/// `hour_of`: a floor division).
const UPTIME: &str = concat!(
    "WITH ",
    newest_above_mark!(),
    " \
    SELECT 0, u.service_id, u.hour, u.roll, 0::bigint, 0::bigint \
      FROM unnest($1::bigint[]) s(id) \
      CROSS JOIN generate_series($2::bigint - 23, $2::bigint) p(x) \
      CROSS JOIN LATERAL (SELECT u.service_id, u.hour, u.roll FROM uptime u \
        WHERE u.hour = p.x AND u.service_id = s.id OFFSET 0) u \
    UNION ALL \
    SELECT 1, u.service_id, u.day, u.roll, 0, 0 FROM unnest($1::bigint[]) s(id) \
      CROSS JOIN generate_series($3::bigint - 89, $3::bigint) p(x) \
      JOIN uptime_day u ON u.day = p.x AND u.service_id = s.id \
    UNION ALL \
    SELECT 2, u.service_id, u.hour, u.roll, 0, 0 FROM uptime u \
      WHERE NOT u.folded AND u.service_id = ANY($1) AND u.hour >= ($3::bigint - 89) * 24 \
    UNION ALL \
    SELECT 3, n.id, n.k[1] / 3600000 - (n.k[1] % 3600000 < 0)::int, NULL, n.k[2], n.k[3] \
    FROM n WHERE n.k[2] IS NOT NULL AND n.k[1] >= $4 AND n.k[1] < $5 \
    UNION ALL \
    SELECT 3, n.id, c.at / 3600000 - (c.at % 3600000 < 0)::int, NULL, \
      count(*), count(*) FILTER (WHERE c.result = 'fail') \
    FROM n CROSS JOIN LATERAL (SELECT c.at, c.result FROM checks c \
      WHERE c.service_id = n.id AND c.id > n.mark AND c.at >= $4 AND c.at < $5) c \
    WHERE n.k IS NOT NULL AND n.k[2] IS NULL GROUP BY 2, 3"
);

/// A read-only transaction on one snapshot (`REPEATABLE READ`), for reads
/// that add the raw checks above a mark to the roll-up rows.
fn snapshot(c: &mut postgres::Client) -> Result<postgres::Transaction<'_>, StoreError> {
    c.build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(pg)
}

/// The day of an hour (both as periods since the epoch).
pub(crate) fn day_of_hour(hour: i64) -> i64 {
    hour.div_euclid(24)
}

/// Adds each roll of `hours` (keyed by `(hour, service id)`) to its day:
/// the day rolls keyed by `(day, service id)`.
pub(crate) fn hours_to_days<'a>(
    hours: impl IntoIterator<Item = (&'a (i64, i64), &'a Roll)>,
) -> BTreeMap<(i64, i64), Roll> {
    let mut days: BTreeMap<(i64, i64), Roll> = BTreeMap::new();
    for ((h, s), r) in hours {
        days.entry((day_of_hour(*h), *s)).or_default().merge(r);
    }
    days
}

impl PgStore {
    /// Uptime over 24 h / 7 d / 30 d / 90 d of each service in `ids`, read
    /// from the roll-ups (one point lookup per service and period) and the
    /// checks not rolled up yet, in one statement ([`UPTIME`]). Services
    /// without checks in any window map to all `None`.
    pub fn uptime_ratios(
        &self,
        ids: &[ServiceId],
        now: i64,
    ) -> Result<HashMap<ServiceId, Uptime>, StoreError> {
        let raw: Vec<i64> = ids.iter().map(|i| i.get()).collect();
        let (hour, day) = (hour_of(now), day_of(now));
        let mut l = self.read_conn()?;
        let (c, cache) = l.conn().parts();
        // One statement, so one snapshot for the rows and the checks not
        // rolled up yet (a roll-up committed in between is counted once),
        // and one round trip (was a `REPEATABLE READ` transaction of three
        // statements: five round trips, each a wake-up of the backend on a
        // machine busy checking).
        let s = cache.get(c, UPTIME)?;
        let rows = c
            .query(
                &s,
                &[
                    &raw,
                    &hour,
                    &day,
                    &((day - 89) * DAY_MS),
                    &((day + 1) * DAY_MS),
                ],
            )
            .map_err(pg)?;
        let add = |w: &mut (i64, i64), (total, fails): (i64, i64)| {
            w.0 = w.0.saturating_add(total.saturating_sub(fails));
            w.1 = w.1.saturating_add(total);
        };
        let ratio = |(ok, total): (i64, i64)| (total > 0).then(|| ok as f64 / total as f64);
        // The last 24 hours, and the 7/30/90 days, per service.
        let mut d: HashMap<i64, (i64, i64)> = HashMap::new();
        let mut w: HashMap<i64, [(i64, i64); 3]> = HashMap::new();
        let mut to_windows = |s: i64, p: i64, counts: (i64, i64)| {
            let e = w.entry(s).or_default();
            for (w, span) in e.iter_mut().zip([7, 30, 90]) {
                if p > day - span && p <= day {
                    add(w, counts);
                }
            }
        };
        for r in &rows {
            let (kind, s, p): (i32, i64, i64) = (r.get(0), r.get(1), r.get(2));
            let counts = match kind {
                // The checks not rolled up yet, counted per hour.
                UPTIME_UNROLLED => (r.get(4), r.get(5)),
                _ => {
                    let table = if kind == UPTIME_DAY {
                        "uptime_day"
                    } else {
                        "uptime"
                    };
                    let b: Vec<u8> = r.get(3);
                    pack::decode_counts(&b).map_err(|e| corrupt(table, s, p, e.to_string()))?
                }
            };
            match kind {
                UPTIME_HOUR => add(d.entry(s).or_default(), counts),
                UPTIME_DAY => to_windows(s, p, counts),
                // The day rows hold the folded hours; the hours not folded
                // yet (the last one or two, see `fold_hours`) are added to
                // their days.
                UPTIME_UNFOLDED => to_windows(s, day_of_hour(p), counts),
                _ => {
                    if p > hour - 24 && p <= hour {
                        add(d.entry(s).or_default(), counts);
                    }
                    to_windows(s, day_of_hour(p), counts);
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
        // One snapshot for the rows and the checks not rolled up yet.
        let mut c = snapshot(c)?;
        let c = &mut c;
        // Days: the day rows, and the hours not folded into them yet
        // (`fold_hours`), in one statement (one snapshot).
        let unfolded = if daily {
            " UNION ALL SELECT hour, roll, true FROM uptime WHERE NOT folded \
               AND service_id = $1 AND hour >= $2 * 24 AND hour < ($3 + 1) * 24"
        } else {
            ""
        };
        let s = cache.get(
            c,
            &format!(
                "SELECT u.{key}, u.roll, false FROM generate_series($2::bigint, $3::bigint) p(x) \
                 JOIN {table} u ON u.{key} = p.x AND u.service_id = $1{unfolded}"
            ),
        )?;
        let mut rolls: BTreeMap<i64, Roll> = BTreeMap::new();
        for r in c.query(&s, &[&service_id.get(), &from, &to]).map_err(pg)? {
            let (p, b, hourly): (i64, Vec<u8>, bool) = (r.get(0), r.get(1), r.get(2));
            let table = if hourly { "uptime" } else { table };
            let roll =
                pack::decode(&b).map_err(|e| corrupt(table, service_id.get(), p, e.to_string()))?;
            let p = if hourly { day_of_hour(p) } else { p };
            rolls.entry(p).or_default().merge(&roll);
        }
        // The checks not rolled up yet (above the service's mark).
        let span = if daily { DAY_MS } else { HOUR_MS };
        let unrolled = cache.get(c, UNROLLED)?;
        for r in c
            .query(
                &unrolled,
                &[
                    &vec![service_id.get()],
                    &from.saturating_mul(span),
                    &to.saturating_add(1).saturating_mul(span),
                ],
            )
            .map_err(pg)?
        {
            let (at, result, d): (i64, String, i64) = (r.get(1), r.get(2), r.get(3));
            let result = result.parse().map_err(|_| {
                corrupt(
                    "checks",
                    service_id.get(),
                    at,
                    format!("{result:?} is not a result"),
                )
            })?;
            rolls.entry(at.div_euclid(span)).or_default().add(result, d);
        }
        Ok(rolls.iter().map(|(p, r)| r.rollup(*p)).collect())
    }

    /// Folds the hour rows older than the previous hour into their day
    /// rows, once each: one transaction marks a set of unfolded hour rows
    /// `folded` (skipping rows another transaction holds) and adds their
    /// rolls to the day rows, so a crash folds all of them or none. The
    /// writer adds each check to its hour only; a check that arrives for
    /// an hour already folded (a backlog written late) is added to its day
    /// too by the writer (`merge_rolls` tells it). Reads add the unfolded
    /// hours to the days. Returns the hour rows folded.
    pub(crate) fn fold_hours(&self, now: i64) -> Result<usize, StoreError> {
        const CHUNK: i64 = 5_000;
        let before = hour_of(now) - 1;
        let mut folded = 0;
        loop {
            let mut l = self.write_conn()?;
            let (c, _) = l.conn().parts();
            let mut tx = c.transaction().map_err(pg)?;
            let rows = tx
                .query(
                    "UPDATE uptime u SET folded = true FROM ( \
                       SELECT hour, service_id FROM uptime \
                       WHERE NOT folded AND hour < $1 \
                       ORDER BY service_id, hour LIMIT $2 FOR UPDATE SKIP LOCKED) f \
                     WHERE u.hour = f.hour AND u.service_id = f.service_id \
                     RETURNING u.hour, u.service_id, u.roll",
                    &[&before, &CHUNK],
                )
                .map_err(pg)?;
            let mut hours: BTreeMap<(i64, i64), Roll> = BTreeMap::new();
            for r in &rows {
                let (h, sid, b): (i64, i64, Vec<u8>) = (r.get(0), r.get(1), r.get(2));
                let roll =
                    pack::decode(&b).map_err(|e| corrupt("uptime", sid, h, e.to_string()))?;
                hours.insert((h, sid), roll);
            }
            merge_rolls(&mut tx, "uptime_day", "day", &hours_to_days(&hours))?;
            tx.commit().map_err(pg)?;
            folded += rows.len();
            if (rows.len() as i64) < CHUNK {
                return Ok(folded);
            }
        }
    }

    /// Deletes hourly roll-ups older than `RETAIN_HOURS` and daily ones
    /// older than `RETAIN_DAYS`, 10,000 rows per statement. Returns the
    /// rows removed.
    pub(crate) fn prune_rollups(&self, now: i64) -> Result<usize, StoreError> {
        let mut removed = 0;
        // An hour row goes once it is folded into its day.
        for (table, key, cutoff, done) in [
            ("uptime", "hour", hour_of(now) - RETAIN_HOURS, "folded"),
            ("uptime_day", "day", day_of(now) - RETAIN_DAYS, "true"),
        ] {
            loop {
                let mut l = self.write_conn()?;
                let (c, _) = l.conn().parts();
                let n = c
                    .execute(
                        &format!(
                            "DELETE FROM {table} WHERE ctid IN \
                             (SELECT ctid FROM {table} WHERE {key} <= $1 AND {done} \
                               LIMIT 10000)"
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
