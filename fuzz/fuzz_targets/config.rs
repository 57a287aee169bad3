//! Any bytes as a configuration file: an error naming the culprit, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("inflight-fuzz-config-{}.toml", std::process::id()));
    std::fs::write(&path, data).expect("write the input");
    if let Err(e) = runtime::Config::load(&path) {
        assert!(!e.to_string().is_empty());
    }
});
