//! The cap is exact across processes.

use std::process::Stdio;
use std::time::Instant;

use ledger_core::*;

use crate::support::*;

const WORKERS: u64 = 4;
const CYCLES: u64 = 200;
const CAP: u32 = 2;

/// Four OS processes each run 200 admit → hold → finish cycles on one ledger
/// with the backend capped at 2. Every holder registers in a counter that
/// lives outside the ledger, under its own lock, so the concurrency is
/// measured independently of the ledger's own count.
#[test]
fn four_processes_never_exceed_the_cap() {
    let (dir, path) = temp_ledger();
    let counter = dir.path().join("holders");
    // Created up front so no child races another to create the file.
    drop(Ledger::open(&path).unwrap());
    let started = Instant::now();
    let children: Vec<_> = (0..WORKERS)
        .map(|worker| {
            child("cycle_worker", &path)
                .env("LEDGER_IT_WORKER", worker.to_string())
                .env("LEDGER_IT_CYCLES", CYCLES.to_string())
                .env("LEDGER_IT_CAP", CAP.to_string())
                .env("LEDGER_IT_COUNTER", &counter)
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "a worker failed: {:?}",
            output.status
        );
    }
    eprintln!("{} cycles in {:?}", WORKERS * CYCLES, started.elapsed());

    let text = std::fs::read_to_string(&counter).unwrap();
    let figures: Vec<i64> = text
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    let (current, max) = (figures[0], figures[1]);
    assert_eq!(current, 0, "every holder left");
    assert!(
        max <= i64::from(CAP),
        "{max} holders at once with a cap of {CAP}"
    );
    // With four processes contending, the cap is reached; if it never were,
    // this test would not be exercising the check at all.
    assert_eq!(max, i64::from(CAP), "the workers never contended");

    let ledger = Ledger::open(&path).unwrap();
    let events = all_events(&ledger);
    let started = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Started { .. }))
        .count() as u64;
    let finished = events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::Finished {
                    reason: FinishReason::Completed,
                    ..
                }
            )
        })
        .count() as u64;
    assert_eq!(started, WORKERS * CYCLES);
    assert_eq!(finished, WORKERS * CYCLES);
    assert!(ledger.open_slots().unwrap().is_empty());
    let report = ledger.verify().unwrap();
    assert!(report.is_sound(), "{:?}", report.problems);
}
