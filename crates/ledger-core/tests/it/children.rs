//! Entry points for child processes. Each is an ignored test that does
//! nothing unless its environment names a ledger; the multi-process tests
//! re-invoke this binary with `--ignored --exact children::<name>`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use ledger_core::*;

use crate::support::*;

fn ledger_from_env() -> Option<PathBuf> {
    std::env::var_os("LEDGER_IT_LEDGER").map(PathBuf::from)
}

fn env_u64(name: &str) -> u64 {
    std::env::var(name).unwrap().parse().unwrap()
}

/// Adds `delta` to the shared "holders" counter under its own file lock and
/// returns the new value, keeping the maximum ever seen. The counter is
/// independent of the ledger, so it measures the concurrency the ledger
/// actually allowed.
pub fn bump_holders(counter: &std::path::Path, delta: i64) -> i64 {
    let mut lock = fslock::LockFile::open(&counter.with_extension("lock")).unwrap();
    lock.lock().unwrap();
    let text = std::fs::read_to_string(counter).unwrap_or_default();
    let mut parts = text.split_whitespace().map(|n| n.parse::<i64>().unwrap());
    let current = parts.next().unwrap_or(0) + delta;
    let max = parts.next().unwrap_or(0).max(current);
    std::fs::write(counter, format!("{current} {max}")).unwrap();
    lock.unlock().unwrap();
    current
}

/// Runs `LEDGER_IT_CYCLES` admit → hold → finish cycles against a backend
/// capped at `LEDGER_IT_CAP`, retrying denials.
#[test]
#[ignore = "child process entry point"]
fn cycle_worker() {
    let Some(path) = ledger_from_env() else {
        return;
    };
    let worker = env_u64("LEDGER_IT_WORKER");
    let cycles = env_u64("LEDGER_IT_CYCLES");
    let cap = env_u64("LEDGER_IT_CAP") as u32;
    let counter = PathBuf::from(std::env::var_os("LEDGER_IT_COUNTER").unwrap());
    let ledger = Ledger::open(&path).unwrap();
    let clock = SystemClock;
    for cycle in 0..cycles {
        let req = request(
            "shared",
            &format!("w{worker}-c{cycle}"),
            &format!("w{worker}-r{cycle}"),
        );
        loop {
            match ledger.admit(&req, &limits(cap), clock.now()).unwrap() {
                AdmitOutcome::Admitted(_) => break,
                AdmitOutcome::Denied(d) => {
                    assert_eq!(d.reason, DenyReason::BackendConcurrencyExceeded);
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        bump_holders(&counter, 1);
        // Long enough against a commit's latency for other workers to be
        // admitted meanwhile, so the cap is really contended.
        std::thread::sleep(Duration::from_millis(4));
        bump_holders(&counter, -1);
        let outcome = ledger
            .finish(
                &req.key,
                Some(&req.run_id),
                FinishReason::Completed,
                clock.now(),
            )
            .unwrap();
        assert!(matches!(outcome, FinishOutcome::Finished(_)), "{outcome:?}");
    }
}

/// Admits and finishes in a tight loop until killed, reporting each
/// operation on stdout only after it returned (so after it was durable).
#[test]
#[ignore = "child process entry point"]
fn crash_loop() {
    let Some(path) = ledger_from_env() else {
        return;
    };
    let life = env_u64("LEDGER_IT_LIFE");
    let ledger = Ledger::open(&path).unwrap();
    let clock = SystemClock;
    let mut out = std::io::stdout().lock();
    for i in 0.. {
        let req = request(
            "crash",
            &format!("l{life}-t{}", i % 3),
            &format!("l{life}-r{i}"),
        );
        admitted(ledger.admit(&req, &limits(1), clock.now()).unwrap());
        writeln!(out, "ADMITTED {}", req.run_id).unwrap();
        out.flush().unwrap();
        let outcome = ledger
            .finish(
                &req.key,
                Some(&req.run_id),
                FinishReason::Completed,
                clock.now(),
            )
            .unwrap();
        assert!(matches!(outcome, FinishOutcome::Finished(_)));
        writeln!(out, "FINISHED {}", req.run_id).unwrap();
        out.flush().unwrap();
    }
}

/// Holds the reconcile lock until killed.
#[test]
#[ignore = "child process entry point"]
fn hold_reconcile_lock() {
    let Some(path) = ledger_from_env() else {
        return;
    };
    let _lock = ReconcileLock::acquire(&path, Duration::from_secs(5))
        .unwrap()
        .expect("the lock is free");
    println!("LOCKED");
    std::thread::sleep(Duration::from_secs(60));
}
