//! The target URL parser: never panics; what it accepts prints back to a URL it accepts again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use healthchecker_core::Target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(t) = Target::parse_url("url", s) {
        assert!(t.port >= 1);
        let again = Target::parse_url("url", &t.url()).expect("a parsed target's URL parses again");
        assert_eq!(again, t);
    }
});
