//! Prometheus metrics, owned by [`AppState`](crate::http::AppState) and fed
//! by the scheduler and the notification senders.
//!
//! Two kinds of series, encoded differently:
//!
//! - **Aggregates** (checks by result, histograms, notification outcomes,
//!   backlog...): a few dozen series in a `prometheus-client` registry,
//!   encoded at every scrape.
//! - **Per service** (`healthchecker_service_up`, `healthchecker_service_state`)
//!   and the counts by state (`healthchecker_services`): kept in
//!   [`ServiceSeries`], where each service's lines are rendered once, when
//!   the service appears or its state changes, and a scrape only
//!   concatenates them (no per-scrape formatting, label encoding or hashing
//!   of 100,000 series). Removed when the service is deleted.
//!   `--metrics-per-service false` keeps only the counts by state.
//!
//! A scrape is answered in the classic Prometheus text format (0.0.4) or in
//! OpenMetrics 1.0, as the scraper's `Accept` header prefers
//! ([`Format::negotiate`]); see docs/performance.md.

use healthchecker_core::{CheckResult, HealthState};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard};

/// Label of per-result series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `pass`, `warn` or `fail`.
    pub result: String,
}

/// Label of per-outcome series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `sent`, `retry` or `failed` ([`DeliveryOutcome::as_str`]).
    pub outcome: String,
}

/// What became of one delivery attempt (mail, channel or digest): the
/// `outcome` label of `healthchecker_notifications_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Accepted by the SMTP server or the channel.
    Sent,
    /// Failed; it will be tried again.
    Retry,
    /// Failed for good (given up).
    Failed,
}

impl DeliveryOutcome {
    /// Every outcome, in label order.
    pub const ALL: [DeliveryOutcome; 3] = [Self::Sent, Self::Retry, Self::Failed];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Retry => "retry",
            Self::Failed => "failed",
        }
    }

    /// The outcome of a failed attempt: `failed` when given up, else `retry`.
    pub fn of_failure(give_up: bool) -> Self {
        if give_up {
            Self::Failed
        } else {
            Self::Retry
        }
    }
}

/// The exposition format of a scrape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The classic Prometheus text format, version 0.0.4: a counter's
    /// family is named with its `_total` suffix in `# HELP` and `# TYPE`.
    Classic,
    /// OpenMetrics 1.0.0: a counter's family is named without `_total`,
    /// and the exposition ends with `# EOF`.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Classic => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// Picks the format from a request's `Accept` header: OpenMetrics when
    /// `application/openmetrics-text` is acceptable and preferred over
    /// `text/plain` (by quality, then by how specifically it is named, then
    /// by position), classic text otherwise, also without a header, for
    /// `*/*` and for a header that accepts neither (as the Prometheus Go
    /// client does). Prometheus's default header prefers OpenMetrics.
    pub fn negotiate(accept: Option<&str>) -> Format {
        // (quality, specificity, position) of the range that applies to
        // each format; specificity 0 is `*/*`, 1 `type/*`, 2 the full type.
        let mut om: Option<(f32, u8, usize)> = None;
        let mut text: Option<(f32, u8, usize)> = None;
        for (pos, range) in accept.unwrap_or("").split(',').enumerate() {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map(|(_, v)| v.trim().parse::<f32>().unwrap_or(0.0))
                .unwrap_or(1.0);
            let (for_om, for_text) = match media.as_str() {
                "application/openmetrics-text" => (Some(2), None),
                "application/*" => (Some(1), None),
                "text/plain" => (None, Some(2)),
                "text/*" => (None, Some(1)),
                "*/*" => (Some(0), Some(0)),
                _ => (None, None),
            };
            // The most specific range applies (RFC 9110, 12.5.1); among
            // equally specific ones, the best quality.
            let apply = |slot: &mut Option<(f32, u8, usize)>, spec: Option<u8>| {
                if let Some(spec) = spec {
                    let better = match *slot {
                        None => true,
                        Some((sq, ss, _)) => spec > ss || (spec == ss && q > sq),
                    };
                    if better {
                        *slot = Some((q, spec, pos));
                    }
                }
            };
            apply(&mut om, for_om);
            apply(&mut text, for_text);
        }
        match (om, text) {
            (Some((oq, _, _)), None) if oq > 0.0 => Format::OpenMetrics,
            (Some((oq, os, op)), Some((tq, ts, tp)))
                if oq > 0.0
                    && (oq, os, std::cmp::Reverse(op)) > (tq, ts, std::cmp::Reverse(tp)) =>
            {
                Format::OpenMetrics
            }
            _ => Format::Classic,
        }
    }
}

/// Every metric the daemon exports.
pub struct Metrics {
    /// The aggregate series (everything but [`ServiceSeries`]).
    registry: Registry,
    /// Counts by state and per-service series, rendered incrementally.
    services: ServiceSeries,
    /// Checks by result.
    pub checks: Family<ResultLabel, Counter>,
    /// The `checks` series of pass, warn and fail, fetched once (a lookup
    /// by label costs an allocation and a hash per check).
    check_counters: [Counter; 3],
    /// Check durations.
    pub check_duration: Histogram,
    /// How late probes start compared with their due time.
    pub scheduler_lag: Histogram,
    /// Due slots skipped because the previous check was still running or
    /// the scheduler was behind.
    pub missed_slots: Counter,
    /// Notification delivery outcomes.
    pub notifications: Family<OutcomeLabel, Counter>,
    /// Pending notifications (set at scrape time).
    pub outbox_backlog: Gauge,
    /// Probes running now: set by the scheduler's loop, which counts
    /// them, not by every probe (two atomic updates a check on a line
    /// both runtime workers write).
    pub probes_in_flight: Gauge,
    /// Bytes the store's writer appended to the WAL
    /// ([`Store::wal_bytes`](crate::store::Store::wal_bytes)), brought up
    /// to date at scrape time.
    pub store_wal_bytes: Counter,
    /// The PostgreSQL writer's series (a cluster node's; 0 on SQLite).
    pub pg_writer: PgWriterSeries,
}

/// The series of a cluster node's PostgreSQL writer
/// (`cluster::store::PgWriter`), cloned into its thread. The default is a
/// set detached from any registry (tests, an unfenced writer).
#[derive(Debug, Clone, Default)]
pub struct PgWriterSeries {
    /// `healthchecker_pg_write_backlog`: check results recorded and not
    /// yet committed or dropped.
    pub backlog: Gauge,
    /// `healthchecker_pg_checks_dropped_total{reason="stale"}`: checks of
    /// buckets whose lease this node no longer held at commit (fencing).
    pub dropped_stale: Counter,
    /// `healthchecker_pg_checks_dropped_total{reason="backlog_full"}`:
    /// results refused because the backlog was at its bound.
    pub dropped_full: Counter,
    /// `healthchecker_pg_checks_dropped_total{reason="shutdown"}`: results
    /// left unwritten because the database did not answer within the
    /// shutdown's grace period.
    pub dropped_shutdown: Counter,
    /// `healthchecker_pg_leases_given_up_total`: times the backlog reached
    /// its bound and the node gave up its leases.
    pub leases_given_up: Counter,
}

/// `reason` label of `healthchecker_pg_checks_dropped_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `stale`, `backlog_full` or `shutdown`.
    pub reason: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Name prefix of every series.
const PREFIX: &str = "healthchecker";

impl Metrics {
    /// Creates every metric, with per-service series.
    pub fn new() -> Self {
        Self::with_per_service(true)
    }

    /// Creates every metric; `per_service` false (`--metrics-per-service
    /// false`) exports only the aggregates.
    pub fn with_per_service(per_service: bool) -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let checks = Family::<ResultLabel, Counter>::default();
        registry.register("checks", "Checks run, by result", checks.clone());
        let buckets = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0,
        ];
        let check_duration = Histogram::new(buckets);
        registry.register(
            "check_duration_seconds",
            "Duration of checks",
            check_duration.clone(),
        );
        let lag_buckets = [
            0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        let scheduler_lag = Histogram::new(lag_buckets);
        registry.register(
            "scheduler_lag_seconds",
            "Delay between a check's due time and its start",
            scheduler_lag.clone(),
        );
        let missed_slots = Counter::default();
        registry.register(
            "scheduler_missed_slots",
            "Check slots skipped",
            missed_slots.clone(),
        );
        let notifications = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "notifications",
            "Notification delivery attempts, by outcome",
            notifications.clone(),
        );
        // Every outcome and result exists from the start (at 0), so that
        // rate() and alerts work before the first event.
        for outcome in DeliveryOutcome::ALL {
            let _ = notifications.get_or_create(&OutcomeLabel {
                outcome: outcome.as_str().into(),
            });
        }
        let check_counters = [CheckResult::Pass, CheckResult::Warn, CheckResult::Fail].map(|r| {
            checks
                .get_or_create(&ResultLabel {
                    result: r.as_str().into(),
                })
                .clone()
        });
        let outbox_backlog = Gauge::default();
        registry.register(
            "outbox_backlog",
            "Notifications waiting to be sent",
            outbox_backlog.clone(),
        );
        let probes_in_flight = Gauge::default();
        registry.register(
            "probes_in_flight",
            "Probes running now",
            probes_in_flight.clone(),
        );
        let store_wal_bytes = Counter::default();
        registry.register(
            "store_wal_bytes",
            "Bytes the store appended to its SQLite WAL (frames and WAL headers, not checkpoints)",
            store_wal_bytes.clone(),
        );
        let dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "pg_checks_dropped",
            "Check results a cluster node did not write to PostgreSQL, by reason",
            dropped.clone(),
        );
        // Every reason exists from the start (at 0); the writer counts on
        // clones of the family's own counters.
        let [dropped_stale, dropped_full, dropped_shutdown] = ["stale", "backlog_full", "shutdown"]
            .map(|reason| {
                dropped
                    .get_or_create(&ReasonLabel {
                        reason: reason.into(),
                    })
                    .clone()
            });
        let pg_writer = PgWriterSeries {
            backlog: Gauge::default(),
            dropped_stale,
            dropped_full,
            dropped_shutdown,
            leases_given_up: Counter::default(),
        };
        registry.register(
            "pg_write_backlog",
            "Check results waiting for the PostgreSQL writer (a cluster node)",
            pg_writer.backlog.clone(),
        );
        registry.register(
            "pg_leases_given_up",
            "Times a cluster node's write backlog reached its bound and the node gave up its leases",
            pg_writer.leases_given_up.clone(),
        );
        Metrics {
            registry,
            services: ServiceSeries::new(per_service),
            checks,
            check_counters,
            check_duration,
            scheduler_lag,
            missed_slots,
            notifications,
            outbox_backlog,
            probes_in_flight,
            store_wal_bytes,
            pg_writer,
        }
    }

    /// Sets `store_wal_bytes` to the store's count (`Store::wal_bytes`),
    /// never backwards: concurrent scrapes may bring it up to date in any
    /// order.
    pub fn set_store_wal_bytes(&self, bytes: u64) {
        self.store_wal_bytes
            .inner()
            .fetch_max(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether per-service series are exported (`--metrics-per-service`).
    pub fn per_service(&self) -> bool {
        self.services.per_service
    }

    /// Records a service's current state: its lines are rendered again
    /// only when the state differs from the one recorded (`previous` is
    /// accepted for the callers' convenience; the recorded state is what
    /// counts). One `service_state` series per service (label `state`,
    /// value 1), so 100,000 services cost 100,000 series, not 400,000.
    pub fn set_service_state(
        &self,
        name: &str,
        _previous: Option<HealthState>,
        state: HealthState,
    ) {
        self.services.set(name, state);
    }

    /// Drops a deleted (or renamed) service's series.
    pub fn remove_service(&self, name: &str) {
        self.services.remove(name);
    }

    /// Counts one delivery attempt's outcome.
    pub fn count_delivery(&self, outcome: DeliveryOutcome) {
        self.notifications
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str().into(),
            })
            .inc();
    }

    /// Counts one check.
    pub fn record_check(&self, result: CheckResult, seconds: f64) {
        let i = match result {
            CheckResult::Pass => 0,
            CheckResult::Warn => 1,
            CheckResult::Fail => 2,
        };
        self.check_counters[i].inc();
        self.check_duration.observe(seconds);
    }

    /// Encodes every series in `format`.
    pub fn encode(&self, format: Format) -> String {
        let mut aggregates = String::new();
        let _ = prometheus_client::encoding::text::encode_registry(&mut aggregates, &self.registry);
        let mut out = String::with_capacity(aggregates.len() + self.services.size_hint());
        match format {
            Format::OpenMetrics => out.push_str(&aggregates),
            Format::Classic => openmetrics_to_classic(&aggregates, &mut out),
        }
        self.services.encode(&mut out);
        if format == Format::OpenMetrics {
            out.push_str("# EOF\n");
        }
        out
    }
}

/// Rewrites OpenMetrics text (without `# EOF`) as the classic text format:
/// a counter family `x` becomes `x_total` in its `# HELP` and `# TYPE`
/// lines (its samples are already `x_total`), `# UNIT` lines and `_created`
/// samples of counters go, everything else is the same in both formats.
fn openmetrics_to_classic(om: &str, out: &mut String) {
    let counters: Vec<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(p);
                out.push_str(name);
                if counters.contains(&name) {
                    out.push_str("_total");
                }
                out.push(' ');
                // OpenMetrics escapes `"` in help text; the classic format
                // does not.
                if p == "# HELP " {
                    out.push_str(&tail.replace("\\\"", "\""));
                } else {
                    out.push_str(tail);
                }
            }
            None => {
                let name = line.split(['{', ' ']).next().unwrap_or("");
                if name
                    .strip_suffix("_created")
                    .is_some_and(|n| counters.contains(&n))
                {
                    continue;
                }
                out.push_str(line);
            }
        }
        out.push('\n');
    }
}

/// The counts by state and the per-service series, each service's lines
/// rendered when its state changes and concatenated at a scrape.
struct ServiceSeries {
    per_service: bool,
    inner: Mutex<Blocks>,
}

/// One service's pre-rendered lines: its `service_up` line, then its
/// `service_state` line, in one allocation.
struct Block {
    state: HealthState,
    text: Box<str>,
    /// Where the `service_state` line starts in `text`.
    split: usize,
}

#[derive(Default)]
struct Blocks {
    /// Service name to slot in `slots`.
    index: HashMap<Box<str>, usize>,
    /// Blocks in slot order (the order of a scrape); `None` is a free slot.
    slots: Vec<Option<Block>>,
    /// Free slots, reused first.
    free: Vec<usize>,
    /// Services by state, in the order of [`HealthState::ALL`].
    by_state: [i64; 4],
    /// Bytes of all blocks, to size a scrape's buffer once.
    bytes: usize,
}

const UP: &str = "healthchecker_service_up";
const STATE: &str = "healthchecker_service_state";
const SERVICES: &str = "healthchecker_services";

fn state_index(s: HealthState) -> usize {
    HealthState::ALL
        .iter()
        .position(|x| *x == s)
        .expect("every state is in ALL")
}

/// Appends a label value escaped as both formats require.
fn push_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

impl ServiceSeries {
    fn new(per_service: bool) -> Self {
        ServiceSeries {
            per_service,
            inner: Mutex::new(Blocks::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Blocks> {
        // The data stays consistent even if a holder panicked.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn render(&self, name: &str, state: HealthState) -> (Box<str>, usize) {
        if !self.per_service {
            return (Box::from(""), 0);
        }
        let mut s = String::with_capacity(2 * name.len() + UP.len() + STATE.len() + 48);
        s.push_str(UP);
        s.push_str("{service=\"");
        push_label_value(&mut s, name);
        let _ = writeln!(s, "\"}} {}", state.is_up() as u8);
        let split = s.len();
        s.push_str(STATE);
        s.push_str("{service=\"");
        push_label_value(&mut s, name);
        let _ = writeln!(s, "\",state=\"{}\"}} 1", state.as_str());
        (s.into_boxed_str(), split)
    }

    fn set(&self, name: &str, state: HealthState) {
        let mut b = self.lock();
        let b = &mut *b;
        if let Some(&slot) = b.index.get(name) {
            let block = b.slots[slot].as_mut().expect("indexed slot is used");
            if block.state == state {
                return;
            }
            let (text, split) = self.render(name, state);
            b.by_state[state_index(block.state)] -= 1;
            b.by_state[state_index(state)] += 1;
            b.bytes = b.bytes - block.text.len() + text.len();
            *block = Block { state, text, split };
            return;
        }
        // Rendered outside the map's borrow; a new service is rare.
        let (text, split) = self.render(name, state);
        b.by_state[state_index(state)] += 1;
        b.bytes += text.len();
        let block = Some(Block { state, text, split });
        let slot = match b.free.pop() {
            Some(slot) => {
                b.slots[slot] = block;
                slot
            }
            None => {
                b.slots.push(block);
                b.slots.len() - 1
            }
        };
        b.index.insert(Box::from(name), slot);
    }

    fn remove(&self, name: &str) {
        let mut b = self.lock();
        let Some(slot) = b.index.remove(name) else {
            return;
        };
        if let Some(block) = b.slots[slot].take() {
            b.by_state[state_index(block.state)] -= 1;
            b.bytes -= block.text.len();
        }
        b.free.push(slot);
    }

    fn size_hint(&self) -> usize {
        self.lock().bytes + 1024
    }

    /// Appends the counts by state and, with per-service series, every
    /// service's lines: the same text in both formats (all gauges). One
    /// lock for the whole copy, so that a scrape is one consistent view
    /// (a service never appears twice or in one family only).
    fn encode(&self, out: &mut String) {
        let b = self.lock();
        // Help texts end with a full stop, as prometheus-client writes
        // those of the aggregates.
        let header = |out: &mut String, name: &str, help: &str| {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n");
        };
        header(out, SERVICES, "Registered services by health state.");
        for (i, s) in HealthState::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "{SERVICES}{{state=\"{}\"}} {}",
                s.as_str(),
                b.by_state[i]
            );
        }
        if !self.per_service {
            return;
        }
        header(out, UP, "1 when the service is healthy or degraded.");
        for block in b.slots.iter().flatten() {
            out.push_str(&block.text[..block.split]);
        }
        header(
            out,
            STATE,
            "The service's current health state (label state, value 1).",
        );
        for block in b.slots.iter().flatten() {
            out.push_str(&block.text[block.split..]);
        }
    }
}

#[cfg(test)]
mod tests;
