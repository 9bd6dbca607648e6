//! Prometheus metrics (prometheus-client), owned by [`AppState`](crate::http::AppState)
//! and fed by the scheduler and the mail sender.
//!
//! Per-service series carry the label `service` and are removed when the
//! service is deleted.

use healthchecker_core::{CheckResult, HealthState};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label of per-service series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabel {
    /// The service name.
    pub service: String,
}

/// Label of per-result series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `pass`, `warn` or `fail`.
    pub result: String,
}

/// Label of per-state series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// A health state.
    pub state: String,
}

/// Label of per-outcome series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `sent`, `retry` or `failed`.
    pub outcome: String,
}

/// Label of per-service state series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceStateLabel {
    /// The service name.
    pub service: String,
    /// A health state.
    pub state: String,
}

/// Every metric the daemon exports.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// Services by state (set at scrape time).
    pub services: Family<StateLabel, Gauge>,
    /// 1 when a service is healthy or degraded, 0 otherwise.
    pub service_up: Family<ServiceLabel, Gauge>,
    /// 1 for the service's current state, 0 for the others.
    pub service_state: Family<ServiceStateLabel, Gauge>,
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
    /// Probes running now.
    pub probes_in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("healthchecker");
        let services = Family::<StateLabel, Gauge>::default();
        registry.register(
            "services",
            "Registered services by health state",
            services.clone(),
        );
        let service_up = Family::<ServiceLabel, Gauge>::default();
        registry.register(
            "service_up",
            "1 when the service is healthy or degraded",
            service_up.clone(),
        );
        let service_state = Family::<ServiceStateLabel, Gauge>::default();
        registry.register(
            "service_state",
            "The service's current health state (label state, value 1)",
            service_state.clone(),
        );
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
        for outcome in ["sent", "retry", "failed"] {
            let _ = notifications.get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
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
        Metrics {
            registry,
            services,
            service_up,
            service_state,
            checks,
            check_counters,
            check_duration,
            scheduler_lag,
            missed_slots,
            notifications,
            outbox_backlog,
            probes_in_flight,
        }
    }

    /// Records a service's current state in the per-service series. One
    /// `service_state` series per service (label `state`, value 1): the
    /// series of the previous state is removed, so 100,000 services cost
    /// 100,000 series, not 400,000.
    pub fn set_service_state(&self, name: &str, previous: Option<HealthState>, state: HealthState) {
        self.service_up
            .get_or_create(&ServiceLabel {
                service: name.to_string(),
            })
            .set(state.is_up() as i64);
        if let Some(p) = previous.filter(|p| *p != state) {
            self.service_state.remove(&ServiceStateLabel {
                service: name.to_string(),
                state: p.as_str().into(),
            });
        }
        self.service_state
            .get_or_create(&ServiceStateLabel {
                service: name.to_string(),
                state: state.as_str().into(),
            })
            .set(1);
    }

    /// Drops a deleted service's series.
    pub fn remove_service(&self, name: &str) {
        self.service_up.remove(&ServiceLabel {
            service: name.to_string(),
        });
        for s in HealthState::ALL {
            self.service_state.remove(&ServiceStateLabel {
                service: name.to_string(),
                state: s.as_str().into(),
            });
        }
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

    /// Encodes the registry in the text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
