//! Which state changes deserve a mail (SPEC section 4). Pure.

use crate::health::{HealthState, Transition};

/// True when a transition must notify the service's owners: entering
/// degraded, entering unhealthy, or recovering to healthy from degraded or
/// unhealthy. The first verdict `unknown -> healthy` is not news.
pub fn notifies(t: Transition) -> bool {
    use HealthState::*;
    match (t.from, t.to) {
        (from, to) if from == to => false,
        (_, Degraded) | (_, Unhealthy) => true,
        (Degraded | Unhealthy, Healthy) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthState::*;

    #[test]
    fn every_transition_is_decided() {
        let expected = [
            (Unknown, Healthy, false),
            (Unknown, Degraded, true),
            (Unknown, Unhealthy, true),
            (Healthy, Degraded, true),
            (Healthy, Unhealthy, true),
            (Degraded, Healthy, true),
            (Degraded, Unhealthy, true),
            (Unhealthy, Healthy, true),
            (Unhealthy, Degraded, true),
        ];
        for from in HealthState::ALL {
            for to in HealthState::ALL {
                let want = expected
                    .iter()
                    .find(|(f, t, _)| *f == from && *t == to)
                    .map(|e| e.2)
                    .unwrap_or(false);
                assert_eq!(notifies(Transition { from, to }), want, "{from} -> {to}");
            }
        }
    }
}
