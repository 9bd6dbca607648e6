//! Reads for the dashboard: the service list in the order a person asked
//! for, and uptime over the dashboard's windows for just the services on
//! a page (never a whole-table aggregate per request: SPEC section 11,
//! a dashboard page within 50 ms at 100,000 services).

use super::decode::{self, Fields};
use super::{
    ServiceFilter, ServiceRecord, SqliteStore, StateCounts, Store, StoreError, SERVICE_COLUMNS,
};
use healthchecker_core::{HealthState, ServiceId};
use rusqlite::{params, OptionalExtension};

/// One page of services carrying chosen tags, and their count per state.
#[derive(Debug, Clone, Default)]
pub struct TaggedPage {
    /// The page, by name.
    pub services: Vec<ServiceRecord>,
    /// Every unpaused service carrying one of the tags, by state (only
    /// the states that have some).
    pub counts: Vec<(HealthState, i64)>,
}

/// Checks of one service on one day (the status page's uptime bars).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayUptime {
    /// Successful checks.
    pub ok: i64,
    /// All checks (0: no data that day).
    pub total: i64,
}

/// How the dashboard's service list is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceOrder {
    /// By name (the default; the API's order).
    #[default]
    Name,
    /// Worst state first (unhealthy, degraded, unknown, healthy), then name.
    State,
    /// Most recent state change first.
    LastChange,
}

impl ServiceOrder {
    /// From the `?sort=` value: `name`, `state` or `change`.
    pub fn parse(s: &str) -> Option<ServiceOrder> {
        match s {
            "" | "name" => Some(ServiceOrder::Name),
            "state" => Some(ServiceOrder::State),
            "change" => Some(ServiceOrder::LastChange),
            _ => None,
        }
    }

    /// The `?sort=` value.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceOrder::Name => "name",
            ServiceOrder::State => "state",
            ServiceOrder::LastChange => "change",
        }
    }

    fn sql(self) -> &'static str {
        match self {
            ServiceOrder::Name => " ORDER BY name",
            ServiceOrder::State => {
                " ORDER BY CASE state WHEN 'unhealthy' THEN 0 WHEN 'degraded' THEN 1 \
                 WHEN 'unknown' THEN 2 ELSE 3 END, name"
            }
            ServiceOrder::LastChange => " ORDER BY state_since DESC, name",
        }
    }
}

/// Uptime of one service over the dashboard's windows, from the hourly
/// buckets; `None` where the window holds no check. `covered_hours` is how
/// far back the buckets reach (a 90-day figure from 7 days of history says
/// so beside it).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UptimeWindows {
    /// Last 24 hours.
    pub day: Option<f64>,
    /// Last 7 days.
    pub week: Option<f64>,
    /// Last 30 days.
    pub month: Option<f64>,
    /// Last 90 days.
    pub quarter: Option<f64>,
    /// Hours between the oldest bucket and now (0: none).
    pub covered_hours: i64,
}

/// The dashboard's counts by state, kept for [`COUNTS_TTL_MS`]: counting
/// is one pass over the whole services table (about 25 ms at 100,000
/// services on SQLite, 65 ms on PostgreSQL, whose rows are wider), which
/// the live refresh would otherwise pay every 3 s per viewer. Counts older
/// than that are served while a thread counts again (stale while
/// revalidating), so no page waits for the pass but the first and the one
/// after [`CountsCache::clear`]. The rows of a page are always read fresh.
#[derive(Default, Clone)]
pub struct CountsCache(std::sync::Arc<std::sync::Mutex<Counts>>);

#[derive(Default)]
struct Counts {
    /// The counts and when their pass started (Unix ms).
    counts: Option<(i64, StateCounts)>,
    /// A thread is counting again.
    refreshing: bool,
}

/// How long counts by state are served without counting again, milliseconds.
pub const COUNTS_TTL_MS: i64 = 5_000;

/// Counts older than this are not served at all: the page counts first
/// (a dashboard nobody looked at for a while).
pub const COUNTS_STALE_MS: i64 = 60_000;

/// Clears the refreshing flag however the counting thread ends.
struct Refreshing(CountsCache);

impl Drop for Refreshing {
    fn drop(&mut self) {
        self.0.lock().refreshing = false;
    }
}

impl CountsCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets the counts (after a change made from the dashboard, so that
    /// the page it redirects to counts it).
    pub fn clear(&self) {
        self.lock().counts = None;
    }

    /// The counts: from the cache when younger than the TTL; older ones
    /// too, while a thread counts again from `store`; from `store` now
    /// when there are none.
    pub fn get(&self, store: &Store, now: i64) -> Result<StateCounts, StoreError> {
        {
            let mut g = self.lock();
            if let Some((at, c)) = g
                .counts
                .as_ref()
                .filter(|(at, _)| now - at < COUNTS_STALE_MS)
            {
                let c = c.clone();
                if !(0..COUNTS_TTL_MS).contains(&(now - at)) && !g.refreshing {
                    g.refreshing = true;
                    let (cache, store) = (self.clone(), store.clone());
                    std::thread::spawn(move || {
                        let _flag = Refreshing(cache.clone());
                        let r = store.count_by_state();
                        let mut g = cache.lock();
                        match r {
                            // Unless cleared or counted anew meanwhile.
                            Ok(c) if g.counts.as_ref().is_some_and(|(t, _)| *t < now) => {
                                g.counts = Some((now, c));
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "counting services by state failed")
                            }
                        }
                    });
                }
                return Ok(c);
            }
        }
        let c = store.count_by_state()?;
        self.lock().counts = Some((now, c.clone()));
        Ok(c)
    }
}

impl SqliteStore {
    /// A page of services as [`Store::list_services`] filters them, in `order`.
    pub fn list_services_ordered(
        &self,
        filter: &ServiceFilter,
        order: ServiceOrder,
    ) -> Result<Vec<ServiceRecord>, StoreError> {
        let conn = self.read_conn();
        // The ids are chosen first, so that the sort carries three small
        // columns instead of whole rows (at 100,000 services, a sort by
        // last change fell from about 190 ms to one pass over the table).
        let mut sql = "SELECT id FROM services WHERE 1=1".to_string();
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
        filter.push_conditions(&mut sql, &mut args);
        sql.push_str(order.sql());
        let limit = if filter.limit == 0 {
            -1
        } else {
            filter.limit as i64
        };
        sql.push_str(&format!(" LIMIT {limit} OFFSET {}", filter.offset));
        let sql = format!(
            "SELECT {SERVICE_COLUMNS} FROM services WHERE id IN ({sql}){}",
            order.sql()
        );
        let mut stmt = conn.prepare(&sql)?;
        let mut out = decode::all(&mut stmt, rusqlite::params_from_iter(args.iter()))?;
        self.overlay(&mut out);
        Ok(out)
    }

    /// Uptime windows of each service in `ids`, read from the roll-ups
    /// ([`Store::uptime_ratios`]: a fixed number of primary-key lookups per
    /// service, whatever the number of services), with how far back the
    /// service's history reaches (from its creation time).
    pub fn uptime_windows(
        &self,
        ids: &[ServiceId],
        now: i64,
    ) -> Result<std::collections::HashMap<ServiceId, UptimeWindows>, StoreError> {
        let ratios = self.uptime_ratios(ids, now)?;
        let conn = self.read_conn();
        let mut created = conn.prepare_cached("SELECT created_at FROM services WHERE id = ?1")?;
        let mut out = std::collections::HashMap::new();
        for id in ids {
            let since: Option<i64> = created
                .query_row(params![id], |r| r.get("created_at"))
                .optional()?;
            let u = ratios.get(id).copied().unwrap_or_default();
            out.insert(
                *id,
                UptimeWindows {
                    day: u.day,
                    week: u.week,
                    month: u.month,
                    quarter: u.quarter,
                    covered_hours: since.map(|c| (now - c).max(0) / 3_600_000 + 1).unwrap_or(0),
                },
            );
        }
        Ok(out)
    }

    /// Checks per day of one service over the last `days` days (oldest
    /// first), zero for a day without data; from the daily roll-ups. For
    /// the status page's uptime bars.
    pub fn daily_uptime(
        &self,
        id: ServiceId,
        now: i64,
        days: i64,
    ) -> Result<Vec<DayUptime>, StoreError> {
        let today = now.div_euclid(86_400_000);
        let first = today - days.max(1) + 1;
        let mut out = vec![DayUptime::default(); days.max(0) as usize];
        for r in self.rollups(id, true, first, today)? {
            if let Some(slot) = usize::try_from(r.period - first)
                .ok()
                .and_then(|i| out.get_mut(i))
            {
                *slot = DayUptime {
                    ok: r.count - r.failures,
                    total: r.count,
                };
            }
        }
        Ok(out)
    }

    /// The status page's services when `--status-page-tags` chooses them:
    /// those carrying one of `tags`, by name, one page; and their count by
    /// state (paused ones left out), for the page's one line on the whole.
    pub fn services_tagged(
        &self,
        tags: &[String],
        limit: usize,
        offset: usize,
    ) -> Result<TaggedPage, StoreError> {
        let conn = self.read_conn();
        let tags = serde_json::to_string(tags).unwrap_or_else(|_| "[]".into());
        const TAGGED: &str = "EXISTS (SELECT 1 FROM json_each(services.tags) \
             WHERE value IN (SELECT value FROM json_each(?1)))";
        let mut stmt = conn.prepare(&format!(
            "SELECT {SERVICE_COLUMNS} FROM services WHERE {TAGGED} ORDER BY name LIMIT ?2 OFFSET ?3"
        ))?;
        let mut services = decode::all(&mut stmt, params![tags, limit as i64, offset as i64])?;
        self.overlay(&mut services);
        let mut stmt = conn.prepare(&format!(
            "SELECT state, COUNT(*) AS n FROM services WHERE paused = 0 AND {TAGGED} GROUP BY state"
        ))?;
        let counts = stmt
            .query_map(params![tags], |r| {
                let f = Fields::unnamed(r, "services");
                Ok((f.parse::<HealthState>("state")?, f.get::<i64>("n")?))
            })?
            .collect::<Result<_, _>>()?;
        Ok(TaggedPage { services, counts })
    }
}

#[cfg(test)]
mod counts_tests {
    use super::*;

    #[test]
    fn counts_older_than_the_ttl_are_served_while_a_thread_counts_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("x.db")).unwrap();
        let register = |name: &str| {
            let spec = crate::store::history_tests::spec(name);
            store.register(&spec, "h", 0, 1_000).unwrap();
        };
        let total = |c: &StateCounts| c.by_state.iter().map(|(_, n)| n).sum::<i64>();
        register("a");
        let cache = CountsCache::default();
        let t = 1_000_000;
        assert_eq!(total(&cache.get(&store, t).unwrap()), 1);
        register("b");
        // Within the TTL: the same counts.
        assert_eq!(total(&cache.get(&store, t + COUNTS_TTL_MS - 1).unwrap()), 1);
        // Beyond it: still those, at once, and a thread counts again…
        assert_eq!(total(&cache.get(&store, t + COUNTS_TTL_MS).unwrap()), 1);
        // …whose counts the next reads get.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while total(&cache.get(&store, t + COUNTS_TTL_MS + 1).unwrap()) != 2 {
            assert!(std::time::Instant::now() < deadline, "never counted again");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // A change from the dashboard clears them: the next read counts.
        register("c");
        cache.clear();
        assert_eq!(total(&cache.get(&store, t + COUNTS_TTL_MS + 2).unwrap()), 3);
        // Counts a minute old are not served: the read counts first.
        register("d");
        let later = t + COUNTS_TTL_MS + 2 + COUNTS_STALE_MS;
        assert_eq!(total(&cache.get(&store, later).unwrap()), 4);
    }
}
