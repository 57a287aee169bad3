//! Finishing is conditional on the run and idempotent; slot updates and the
//! drop guard follow the same rule.

use std::time::Duration;

use ledger_core::*;

use crate::support::*;

#[test]
fn a_finish_with_an_old_run_id_leaves_the_newer_run_open() {
    let (_dir, path) = temp_ledger();
    let ledger = Ledger::open(&path).unwrap();
    let old = admitted(
        ledger
            .admit(&request("b", "T", "run-old"), &limits(1), T0)
            .unwrap(),
    );
    ledger
        .finish(&old.key, Some(&old.run_id), FinishReason::Interrupted, T0)
        .unwrap();
    let new = admitted(
        ledger
            .admit(&request("b", "T", "run-new"), &limits(1), T0)
            .unwrap(),
    );
    let events_before = all_events(&ledger).len();

    // The old run's late finish (say, from a runner that was presumed dead).
    let outcome = ledger
        .finish(&old.key, Some(&old.run_id), FinishReason::Completed, T0)
        .unwrap();
    assert_eq!(
        outcome,
        FinishOutcome::OtherRunInFlight {
            open_run: new.run_id.clone()
        }
    );
    assert_eq!(ledger.slot(&new.key).unwrap().unwrap().run_id, new.run_id);
    assert_eq!(
        all_events(&ledger).len(),
        events_before,
        "nothing was recorded"
    );
}

#[test]
fn a_second_finish_of_the_same_run_reports_not_in_flight_and_changes_nothing() {
    let (_dir, path) = temp_ledger();
    let ledger = Ledger::open(&path).unwrap();
    let slot = admitted(
        ledger
            .admit(&request("b", "T", "r1"), &limits(1), T0)
            .unwrap(),
    );
    let first = ledger
        .finish(&slot.key, Some(&slot.run_id), FinishReason::Completed, T0)
        .unwrap();
    assert_eq!(first, FinishOutcome::Finished(slot.clone()));
    let events = all_events(&ledger);
    let attempts = ledger.attempts(&slot.key.task_id).unwrap();

    for run in [Some(&slot.run_id), None] {
        let again = ledger
            .finish(&slot.key, run, FinishReason::Failed, T0)
            .unwrap();
        assert_eq!(again, FinishOutcome::NotInFlight);
    }
    assert_eq!(all_events(&ledger), events);
    assert_eq!(ledger.attempts(&slot.key.task_id).unwrap(), attempts);
    assert_eq!(attempts.completed, 1);
    assert_eq!(attempts.failed, 0);
}

#[test]
fn admitting_an_open_run_again_is_idempotent() {
    let (_dir, path) = temp_ledger();
    let ledger = Ledger::open(&path).unwrap();
    let req = request("b", "T", "r1");
    let slot = admitted(ledger.admit(&req, &limits(1), T0).unwrap());
    let events = all_events(&ledger);
    // A retry of the same admission: the caller never saw the first answer,
    // though its commit landed.
    let retry = admitted(ledger.admit(&req, &limits(1), T0).unwrap());
    assert_eq!(retry, slot);
    assert_eq!(ledger.open_slots().unwrap().len(), 1);
    assert_eq!(all_events(&ledger), events);
    assert_eq!(ledger.attempts(&slot.key.task_id).unwrap().started, 1);
}

#[test]
fn lease_and_executor_updates_apply_only_to_the_holding_run() {
    let (_dir, path) = temp_ledger();
    let ledger = Ledger::open(&path).unwrap();
    let slot = admitted(
        ledger
            .admit(&request("b", "T", "r1"), &limits(1), T0)
            .unwrap(),
    );
    let later = T0.saturating_add(Duration::from_secs(600));
    let stranger = RunId::new("r-other").unwrap();

    assert_eq!(
        ledger.renew_lease(&slot.key, &stranger, later).unwrap(),
        UpdateOutcome::NotInFlight
    );
    assert_eq!(
        ledger.renew_lease(&slot.key, &slot.run_id, later).unwrap(),
        UpdateOutcome::Updated
    );
    let executor = ExecutorIdentity {
        process: ProcessIdentity {
            pid: 777,
            start_time: 123,
        },
        process_group: 777,
    };
    assert_eq!(
        ledger
            .set_executor(&slot.key, &stranger, executor.clone())
            .unwrap(),
        UpdateOutcome::NotInFlight
    );
    assert_eq!(
        ledger
            .set_executor(&slot.key, &slot.run_id, executor.clone())
            .unwrap(),
        UpdateOutcome::Updated
    );
    let stored = ledger.slot(&slot.key).unwrap().unwrap();
    assert_eq!(stored.lease_until, later);
    assert_eq!(stored.owner.executor, Some(executor));
    // A lease never moves backwards.
    ledger.renew_lease(&slot.key, &slot.run_id, T0).unwrap();
    assert_eq!(ledger.slot(&slot.key).unwrap().unwrap().lease_until, later);
}

#[test]
fn the_guard_finishes_on_drop_and_while_unwinding() {
    let (_dir, path) = temp_ledger();
    let ledger = Ledger::open(&path).unwrap();
    let clock = ManualClock::new(T0);

    let slot = admitted(
        ledger
            .admit(&request("b", "dropped", "r1"), &limits(5), T0)
            .unwrap(),
    );
    drop(SlotGuard::new(&ledger, &slot, &clock));
    assert!(ledger.slot(&slot.key).unwrap().is_none());

    let slot = admitted(
        ledger
            .admit(&request("b", "panicked", "r2"), &limits(5), T0)
            .unwrap(),
    );
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _guard = SlotGuard::new(&ledger, &slot, &clock);
        panic!("executor bookkeeping blew up");
    }));
    assert!(result.is_err());
    assert!(ledger.slot(&slot.key).unwrap().is_none());

    let slot = admitted(
        ledger
            .admit(&request("b", "explicit", "r3"), &limits(5), T0)
            .unwrap(),
    );
    let guard = SlotGuard::new(&ledger, &slot, &clock);
    assert!(matches!(
        guard.finish(FinishReason::Completed).unwrap(),
        FinishOutcome::Finished(_)
    ));

    let reasons: Vec<_> = all_events(&ledger)
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Finished { key, reason, .. } => Some((key.task_id.to_string(), reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("dropped".to_owned(), FinishReason::Interrupted),
            ("panicked".to_owned(), FinishReason::Failed),
            ("explicit".to_owned(), FinishReason::Completed),
        ]
    );
}

#[test]
fn a_guard_never_closes_a_newer_run() {
    let (_dir, path) = temp_ledger();
    let ledger = Ledger::open(&path).unwrap();
    let clock = ManualClock::new(T0);
    let old = admitted(
        ledger
            .admit(&request("b", "T", "r-old"), &limits(1), T0)
            .unwrap(),
    );
    let guard = SlotGuard::new(&ledger, &old, &clock);
    // A watchdog reclaims the slot and another runner takes the task again.
    ledger
        .finish(
            &old.key,
            Some(&old.run_id),
            FinishReason::Reconciled {
                rule: "STALE_IN_FLIGHT_EXPIRE".into(),
            },
            T0,
        )
        .unwrap();
    let new = admitted(
        ledger
            .admit(&request("b", "T", "r-new"), &limits(1), T0)
            .unwrap(),
    );
    drop(guard);
    assert_eq!(ledger.slot(&new.key).unwrap().unwrap().run_id, new.run_id);
}

#[test]
fn the_last_finish_of_a_key_is_found() {
    let (_dir, path) = temp_ledger();
    let ledger = Ledger::open(&path).unwrap();
    assert_eq!(ledger.last_finish(&key("b", "T")).unwrap(), None);
    for (run, reason) in [
        ("r1", FinishReason::Failed),
        ("r2", FinishReason::Completed),
    ] {
        let slot = admitted(
            ledger
                .admit(&request("b", "T", run), &limits(1), T0)
                .unwrap(),
        );
        ledger
            .finish(&slot.key, Some(&slot.run_id), reason, T0)
            .unwrap();
        // Another key's finish in between must not be taken for this one's.
        let other = admitted(
            ledger
                .admit(&request("b", "U", &format!("{run}-u")), &limits(2), T0)
                .unwrap(),
        );
        ledger
            .finish(
                &other.key,
                Some(&other.run_id),
                FinishReason::Interrupted,
                T0,
            )
            .unwrap();
    }
    match ledger.last_finish(&key("b", "T")).unwrap().map(|e| e.kind) {
        Some(EventKind::Finished { run_id, reason, .. }) => {
            assert_eq!((run_id.as_str(), reason), ("r2", FinishReason::Completed));
        }
        other => panic!("{other:?}"),
    }
}
