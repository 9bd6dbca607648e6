//! The interpreter of a target's body (health+json, Spring, Terminus, anything).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let r = healthchecker_core::healthjson::interpret_body(data);
    if let Some(o) = &r.output {
        assert!(o.len() <= healthchecker_core::healthjson::MAX_TEXT);
    }
    if let Some(d) = &r.details {
        assert!(d.len() <= healthchecker_core::healthjson::MAX_DETAILS);
    }
});
