use std::sync::Arc;
use std::time::Duration;

use ledger_core::*;
use reconcile::{InFlightLedger, StartupLock};
use runtime::{LedgerAdapter, StoreStartupLock};

#[test]
fn the_ledger_adapter_finishes_only_the_run_it_was_told() {
    let dir = tempfile::tempdir().unwrap();
    let ledger: Arc<dyn LedgerStore> = Arc::new(Ledger::open(dir.path().join("l.redb")).unwrap());
    let adapter = LedgerAdapter(ledger.clone());
    let now = Timestamp::from_unix_millis(1_800_000_000_000);
    let key = SlotKey::new(Backend::new("b").unwrap(), TaskId::new("T").unwrap());
    let limits = Limits {
        global_max_concurrent: None,
        backend: BackendLimits {
            max_concurrent: 1,
            max_per_hour: None,
            max_per_day: None,
        },
    };
    let request = |run: &str| AdmitRequest {
        key: key.clone(),
        run_id: RunId::new(run).unwrap(),
        owner: Owner::imported(),
        lease: Duration::from_secs(60),
    };
    ledger.admit(&request("new"), &limits, now).unwrap();
    assert_eq!(adapter.open_slots().unwrap().len(), 1);
    let reason = FinishReason::Reconciled {
        rule: "DEAD_OWNER_CLEAR".into(),
    };
    let stale = adapter
        .finish_if_run(&key, &RunId::new("old").unwrap(), reason.clone(), now)
        .unwrap();
    assert!(matches!(stale, FinishOutcome::OtherRunInFlight { .. }));
    let done = adapter
        .finish_if_run(&key, &RunId::new("new").unwrap(), reason, now)
        .unwrap();
    assert!(matches!(done, FinishOutcome::Finished(_)));
}

#[test]
fn the_redb_store_s_start_up_lock_is_exclusive_and_released_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let lock = StoreStartupLock(Arc::new(Ledger::open(dir.path().join("l.redb")).unwrap()));
    let held = lock.try_lock(Duration::from_millis(50)).unwrap();
    assert!(held.is_some());
    // fslock locks are per open file description, so a second handle in the
    // same process contends like another process would.
    assert!(lock.try_lock(Duration::from_millis(50)).unwrap().is_none());
    drop(held);
    assert!(lock.try_lock(Duration::from_millis(50)).unwrap().is_some());
}
