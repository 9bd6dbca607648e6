//! The v1 registration decoder and validation: never panics; what it accepts is in range.
#![no_main]
use libfuzzer_sys::fuzz_target;
use healthchecker_core::{RegisterRequest, ServiceSpec};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = RegisterRequest::from_json(data) else { return };
    if let Ok(s) = ServiceSpec::try_from(req) {
        assert!((2..=60).contains(&s.timeout) && (5..=300).contains(&s.interval) && s.timeout < s.interval);
        assert!((2..=10).contains(&s.healthy_threshold) && (2..=10).contains(&s.unhealthy_threshold));
        assert!(!s.name.is_empty() && s.name.chars().count() <= 200);
    }
});
