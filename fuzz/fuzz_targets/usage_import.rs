//! Any bytes as a `usage.json`: the import never panics, and whatever it
//! takes in leaves a sound ledger.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use ledger_core::{Ledger, LedgerOptions, SharingMode};
use libfuzzer_sys::fuzz_target;

fn ledger() -> &'static Ledger {
    static LEDGER: OnceLock<Ledger> = OnceLock::new();
    LEDGER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("inflight-fuzz-import-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let options = LedgerOptions { sharing: SharingMode::Exclusive, ..LedgerOptions::default() };
        Ledger::open_with(dir.join("ledger.redb"), options).expect("a fresh ledger")
    })
}

fuzz_target!(|data: &[u8]| {
    let ledger = ledger();
    if ledger.import_usage_json_bytes(Path::new("fuzz.json"), data).is_ok() {
        let report = ledger.verify().expect("verify");
        assert!(report.is_sound(), "{:?}", report.problems);
    }
});
