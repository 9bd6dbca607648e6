//! The seed's form registration: arbitrary key/value pairs never panic the decoder.
#![no_main]
use libfuzzer_sys::fuzz_target;
use healthchecker_core::{RegisterRequest, ServiceSpec};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let pairs: Vec<(String, String)> = s
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.to_string(), String::new()),
        })
        .collect();
    if let Ok(req) = RegisterRequest::from_legacy_form(&pairs) {
        if let Ok(spec) = ServiceSpec::try_from(req) {
            let path = spec.target.path.split('?').next().unwrap_or("");
            assert!(path.ends_with("/health"), "{:?}", spec.target.path);
        }
    }
});
