//! Schedule arithmetic: deterministic jitter and the next due time. Pure.
//!
//! Times are milliseconds on any monotonic scale the caller chooses.

/// Spreads services over their interval: a stable offset in `0..interval_ms`
/// derived from the service id (splitmix64), so that 100,000 services
/// registered in one second do not all fire in the same millisecond, and a
/// restart reproduces the same phase.
pub fn jitter_ms(service_id: u64, interval_ms: u64) -> u64 {
    if interval_ms == 0 {
        return 0;
    }
    let mut z = service_id.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    z % interval_ms
}

/// The first due time of a service that enters the schedule at `now`.
pub fn first_due(now: u64, service_id: u64, interval_ms: u64) -> u64 {
    now + jitter_ms(service_id, interval_ms)
}

/// The due time after `prev_due`, at a fixed rate. Slots already in the past
/// at `now` are skipped (a stalled machine does not cause a burst of
/// catch-up checks); the second value counts the skipped slots.
pub fn next_due(prev_due: u64, interval_ms: u64, now: u64) -> (u64, u64) {
    let interval_ms = interval_ms.max(1);
    let next = prev_due + interval_ms;
    if next > now {
        return (next, 0);
    }
    let missed = (now - next) / interval_ms + 1;
    (next + missed * interval_ms, missed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn next_due_is_fixed_rate() {
        assert_eq!(next_due(1_000, 30_000, 1_005), (31_000, 0));
    }

    #[test]
    fn next_due_skips_missed_slots() {
        assert_eq!(next_due(0, 10, 35), (40, 3));
        assert_eq!(next_due(0, 10, 10), (20, 1));
    }

    #[test]
    fn jitter_is_stable_and_spread() {
        assert_eq!(jitter_ms(42, 30_000), jitter_ms(42, 30_000));
        let mut buckets = [0u32; 10];
        for id in 0..10_000u64 {
            buckets[(jitter_ms(id, 30_000) / 3_000) as usize] += 1;
        }
        for b in buckets {
            assert!((800..1200).contains(&b), "uneven spread: {buckets:?}");
        }
    }

    proptest! {
        #[test]
        fn next_due_is_in_the_future_and_on_the_grid(prev in 0u64..1_000_000, iv in 1u64..300_000, lag in 0u64..2_000_000) {
            let now = prev + lag;
            let (next, missed) = next_due(prev, iv, now);
            prop_assert!(next > now);
            prop_assert_eq!((next - prev) % iv, 0);
            prop_assert!(next - now <= iv);
            prop_assert_eq!(next, prev + (missed + 1) * iv);
        }

        #[test]
        fn jitter_is_within_interval(id in any::<u64>(), iv in 1u64..300_000) {
            prop_assert!(jitter_ms(id, iv) < iv);
        }
    }
}
