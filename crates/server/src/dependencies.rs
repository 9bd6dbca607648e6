//! Dependencies (SPEC section 14), the scheduler's side: how long a
//! notification waits so that parent and dependents failing at the same
//! moment give the parent's message only.
//!
//! A dependent's notification is held one parent check (its parent may be
//! failing for the same reason and not know it yet); a parent going down
//! waits one dependent check, so that its message can list them. What the
//! held rows become is decided when they are due (`Store::release_held`):
//! while a parent is failing they stay held; then a dependent back where it
//! was sends nothing, one still failing notifies.

use healthchecker_core::ServiceSpec;
use std::collections::HashMap;
use std::sync::Arc;

/// Slack beyond a check's interval and timeout (scheduling, the writer's batch).
const SLACK_MS: i64 = 2_000;

/// How long one check cycle of `spec` may take, in ms.
fn span(spec: &ServiceSpec) -> i64 {
    i64::from(spec.interval + spec.timeout) * 1000 + SLACK_MS
}

/// Per service name: the longest check cycle of its parents, and of its
/// dependents. Rebuilt after any change to the services.
#[derive(Debug, Default)]
pub struct DepIndex {
    parent_wait: HashMap<Arc<str>, i64>,
    dependent_wait: HashMap<Arc<str>, i64>,
}

impl DepIndex {
    /// Builds the index from every service's name and spec.
    pub fn build<'a>(services: impl Iterator<Item = (&'a Arc<str>, &'a ServiceSpec)>) -> DepIndex {
        let all: Vec<(&Arc<str>, &ServiceSpec)> = services.collect();
        let by_name: HashMap<&str, &ServiceSpec> =
            all.iter().map(|(n, s)| (n.as_ref(), *s)).collect();
        let mut ix = DepIndex::default();
        for (name, spec) in &all {
            for p in &spec.depends_on {
                let Some(parent) = by_name.get(p.as_str()) else {
                    continue;
                };
                let w = ix.parent_wait.entry((*name).clone()).or_default();
                *w = (*w).max(span(parent));
                let d = ix.dependent_wait.entry(Arc::from(p.as_str())).or_default();
                *d = (*d).max(span(spec));
            }
        }
        ix
    }

    /// Until when a notification of `name` created at `at` is held, if at
    /// all: `failing` when the transition enters degraded or unhealthy.
    pub fn hold_until(&self, name: &str, failing: bool, at: i64) -> Option<i64> {
        let parents = self.parent_wait.get(name).copied();
        let dependents = failing
            .then(|| self.dependent_wait.get(name).copied())
            .flatten();
        parents.into_iter().chain(dependents).max().map(|w| at + w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use healthchecker_core::RegisterRequest;

    fn spec(v: serde_json::Value) -> ServiceSpec {
        ServiceSpec::try_from(RegisterRequest::from_json(v.to_string().as_bytes()).unwrap())
            .unwrap()
    }

    #[test]
    fn dependents_wait_a_parent_check_and_failing_parents_a_dependent_check() {
        let router = spec(
            serde_json::json!({"name": "router", "url": "tcp://h:1", "interval": 10, "timeout": 2}),
        );
        let nas = spec(
            serde_json::json!({"name": "nas", "url": "tcp://h:2", "interval": 30, "timeout": 5, "depends_on": ["router"]}),
        );
        let other = spec(serde_json::json!({"name": "other", "url": "tcp://h:3"}));
        let names: Vec<Arc<str>> = ["router", "nas", "other"].map(Arc::from).to_vec();
        let specs = [&router, &nas, &other];
        let ix = DepIndex::build(names.iter().zip(specs));
        assert_eq!(ix.hold_until("nas", true, 0), Some(14_000));
        assert_eq!(
            ix.hold_until("nas", false, 0),
            Some(14_000),
            "a recovery too"
        );
        assert_eq!(ix.hold_until("router", true, 0), Some(37_000));
        assert_eq!(
            ix.hold_until("router", false, 0),
            None,
            "a parent's recovery goes out"
        );
        assert_eq!(ix.hold_until("other", true, 0), None);
    }
}
