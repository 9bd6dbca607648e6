//! The TOML config file layer: any text gives settings or a clear error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = healthchecker_server::config::parse_file_layer(s, std::path::Path::new("fuzz.toml"));
});
