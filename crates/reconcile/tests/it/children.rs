//! Child-process entry points: ignored tests that act only when their
//! environment says so.

use std::path::PathBuf;
use std::time::Duration;

#[test]
#[ignore = "child process entry point"]
fn hold_reconcile_lock() {
    let Some(path) = std::env::var_os("RECONCILE_IT_LEDGER").map(PathBuf::from) else {
        return;
    };
    let _lock = ledger_core::ReconcileLock::acquire(&path, Duration::from_secs(5))
        .unwrap()
        .expect("the lock is free");
    println!("LOCKED");
    std::thread::sleep(Duration::from_secs(60));
}
