//! The contracts' mockall mocks (feature `mocks`), on the one piece of
//! orchestration ledger-core itself does over a store: the slot guard.

use std::sync::Arc;

use ledger_core::conformance::{T0, key, owner};
use ledger_core::{
    FinishOutcome, FinishReason, LedgerError, ManualClock, MockLedgerStore, RunId, Slot,
};
use mockall::predicate::{always, eq};

fn slot() -> Slot {
    Slot {
        key: key("local", "t1"),
        run_id: RunId::new("run-1").unwrap(),
        started_at: T0,
        owner: owner(),
        lease_until: T0,
        started_seq: 1,
    }
}

#[test]
fn a_dropped_guard_finishes_its_own_run_once_as_interrupted() {
    let mut store = MockLedgerStore::new();
    store
        .expect_finish()
        .withf(|key, run, reason, _| {
            *key == ledger_core::conformance::key("local", "t1")
                && run.map(RunId::as_str) == Some("run-1")
                && *reason == FinishReason::Interrupted
        })
        .times(1)
        .returning(|_, _, _, _| Ok(FinishOutcome::NotInFlight));
    let guard =
        ledger_core::SlotGuard::new(Arc::new(store), &slot(), Arc::new(ManualClock::new(T0)));
    drop(guard);
}

#[test]
fn a_handed_over_guard_calls_nothing_and_a_failed_finish_is_returned() {
    // No expectation: any call would panic the mock.
    let guard = ledger_core::SlotGuard::new(
        Arc::new(MockLedgerStore::new()),
        &slot(),
        Arc::new(ManualClock::new(T0)),
    );
    guard.hand_over();

    let mut store = MockLedgerStore::new();
    store
        .expect_finish()
        .with(always(), always(), eq(FinishReason::Completed), eq(T0))
        .times(1)
        .returning(|_, _, _, _| {
            Err(LedgerError::Database {
                location: "mock".into(),
                source: "gone".into(),
            })
        });
    let guard =
        ledger_core::SlotGuard::new(Arc::new(store), &slot(), Arc::new(ManualClock::new(T0)));
    assert!(guard.finish(FinishReason::Completed).is_err());
}
