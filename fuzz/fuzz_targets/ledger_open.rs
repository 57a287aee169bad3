//! Any bytes as a ledger file: opening it gives a ledger or a typed error,
//! never a panic, and a refused file is left byte for byte as it was.
//!
//! redb trips over its own assertions on some damaged pages; ledger-core
//! contains those panics and reports the file as corrupt. libfuzzer-sys
//! installs a panic hook that aborts on every panic, contained or not, so
//! the target replaces it with a silent one: a panic that escapes ledger-core
//! still ends the run as a crash. `FUZZ_LOUD=1` keeps the default hook, to
//! see the message and backtrace of a crash being replayed.
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static QUIET: Once = Once::new();
    QUIET.call_once(|| {
        if std::env::var_os("FUZZ_LOUD").is_none() {
            std::panic::set_hook(Box::new(|_| {}))
        }
    });
    let dir = std::env::temp_dir().join(format!("inflight-fuzz-open-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("ledger.redb");
    std::fs::write(&path, data).expect("write the input");
    match ledger_core::Ledger::open(&path) {
        Ok(ledger) => {
            // Whatever opened must answer queries without panicking.
            let _ = ledger.open_slots();
            let _ = ledger.verify();
        }
        Err(e) => {
            assert!(e.to_string().contains("ledger.redb"), "{e}");
            assert_eq!(std::fs::read(&path).expect("read back"), data, "a refused file was modified: {e}");
        }
    }
    let _ = std::fs::remove_file(&path);
});
