//! Reads for the dashboard on PostgreSQL, as `store/dashboard.rs`: the
//! service list in the order asked for, uptime windows of a page's
//! services, the status page's days and tagged services.

use super::row;
use super::services::{decode_service, page, push_conditions, refs, Args, SERVICE_COLUMNS};
use super::{pg, PgStore};
use crate::store::{
    DayUptime, ServiceFilter, ServiceOrder, ServiceRecord, StoreError, TaggedPage, UptimeWindows,
};
use healthchecker_core::{HealthState, ServiceId};
use std::collections::HashMap;

/// `ORDER BY` of a page in `order`. Each is an index of migration 9
/// (cluster/schema.rs): the state order's `CASE` is the index's
/// expression, matched by the planner term for term; change both.
pub(super) fn order_sql(order: ServiceOrder) -> &'static str {
    match order {
        ServiceOrder::Name => " ORDER BY name COLLATE \"C\"",
        ServiceOrder::State => {
            " ORDER BY CASE state WHEN 'unhealthy' THEN 0 WHEN 'degraded' THEN 1 \
             WHEN 'unknown' THEN 2 ELSE 3 END, name COLLATE \"C\""
        }
        ServiceOrder::LastChange => " ORDER BY state_since DESC, name COLLATE \"C\"",
    }
}

impl PgStore {
    /// A page of services as [`PgStore::list_services`] filters them, in
    /// `order`.
    pub fn list_services_ordered(
        &self,
        filter: &ServiceFilter,
        order: ServiceOrder,
    ) -> Result<Vec<ServiceRecord>, StoreError> {
        let mut sql = format!("SELECT {SERVICE_COLUMNS} FROM services WHERE true");
        let mut args: Args = Vec::new();
        push_conditions(filter, &mut sql, &mut args);
        sql.push_str(order_sql(order));
        sql.push_str(&page(filter));
        let mut l = self.read_conn()?;
        let (c, _) = l.conn().parts();
        row::all(&c.query(&sql, &refs(&args)).map_err(pg)?, decode_service)
    }

    /// Uptime windows of each service in `ids`, with how far back its
    /// history reaches (from its creation time).
    pub fn uptime_windows(
        &self,
        ids: &[ServiceId],
        now: i64,
    ) -> Result<HashMap<ServiceId, UptimeWindows>, StoreError> {
        let ratios = self.uptime_ratios(ids, now)?;
        let raw: Vec<i64> = ids.iter().map(|i| i.get()).collect();
        let mut l = self.read_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(c, "SELECT id, created_at FROM services WHERE id = ANY($1)")?;
        let created: HashMap<i64, i64> = c
            .query(&s, &[&raw])
            .map_err(pg)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        Ok(ids
            .iter()
            .map(|id| {
                let u = ratios.get(id).copied().unwrap_or_default();
                let since = created.get(&id.get());
                (
                    *id,
                    UptimeWindows {
                        day: u.day,
                        week: u.week,
                        month: u.month,
                        quarter: u.quarter,
                        covered_hours: since.map(|c| (now - c).max(0) / 3_600_000 + 1).unwrap_or(0),
                    },
                )
            })
            .collect())
    }

    /// Checks per day of one service over the last `days` days (oldest
    /// first), zero for a day without data; from the daily roll-ups.
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

    /// The status page's services carrying one of `tags`, by name, one
    /// page; and their count by state (paused ones left out).
    pub fn services_tagged(
        &self,
        tags: &[String],
        limit: usize,
        offset: usize,
    ) -> Result<TaggedPage, StoreError> {
        const TAGGED: &str = "tags::jsonb ?| $1::text[]";
        let tags: Vec<String> = tags.to_vec();
        let mut l = self.read_conn()?;
        let (c, _) = l.conn().parts();
        let services = row::all(
            &c.query(
                &format!(
                    "SELECT {SERVICE_COLUMNS} FROM services WHERE {TAGGED} \
                     ORDER BY name COLLATE \"C\" LIMIT $2 OFFSET $3"
                ),
                &[&tags, &(limit as i64), &(offset as i64)],
            )
            .map_err(pg)?,
            decode_service,
        )?;
        let mut counts = Vec::new();
        for r in c
            .query(
                &format!(
                    "SELECT state, count(*) AS n FROM services WHERE NOT paused AND {TAGGED} \
                     GROUP BY state"
                ),
                &[&tags],
            )
            .map_err(pg)?
        {
            let f = row::Fields::unnamed(&r, "services");
            counts.push((f.parse::<HealthState>("state")?, f.get::<i64>("n")?));
        }
        Ok(TaggedPage { services, counts })
    }
}
