//! The ledger contract's checks ([`LedgerStore`]): caps, windows, the
//! audit log, finishes, leases, holders, guards.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::Duration;

use super::*;

pub fn already_in_flight_is_refused_with_its_figures(subject: &Subject) {
    let ledger = subject.store();
    admitted(
        ledger
            .admit(&request("b", "T", "r1"), &limits(5), T0)
            .unwrap(),
    );
    let denial = denied(
        ledger
            .admit(&request("b", "T", "r2"), &limits(5), T0)
            .unwrap(),
    );
    assert_eq!(
        denial,
        Denial {
            reason: DenyReason::AlreadyInFlight,
            window: None,
            current: 1,
            limit: 1
        }
    );
    // The same task on another backend is a different slot.
    admitted(
        ledger
            .admit(&request("other", "T", "r3"), &limits(5), T0)
            .unwrap(),
    );
}

pub fn the_global_cap_counts_every_backend(subject: &Subject) {
    let ledger = subject.store();
    let mut caps = limits(10);
    caps.global_max_concurrent = Some(3);
    for (i, backend) in ["a", "b", "c"].iter().enumerate() {
        admitted(
            ledger
                .admit(&request(backend, "T", &format!("r{i}")), &caps, T0)
                .unwrap(),
        );
    }
    let denial = denied(ledger.admit(&request("d", "T", "r9"), &caps, T0).unwrap());
    assert_eq!(
        denial,
        Denial {
            reason: DenyReason::GlobalConcurrencyExceeded,
            window: None,
            current: 3,
            limit: 3
        }
    );
}

pub fn the_backend_cap_counts_only_that_backend(subject: &Subject) {
    let ledger = subject.store();
    // A backend whose name extends another's must not be counted with it.
    admitted(
        ledger
            .admit(&request("local-gpu", "X", "rx"), &limits(2), T0)
            .unwrap(),
    );
    let a = admitted(
        ledger
            .admit(&request("local", "T1", "r1"), &limits(2), T0)
            .unwrap(),
    );
    admitted(
        ledger
            .admit(&request("local", "T2", "r2"), &limits(2), T0)
            .unwrap(),
    );
    let denial = denied(
        ledger
            .admit(&request("local", "T3", "r3"), &limits(2), T0)
            .unwrap(),
    );
    assert_eq!(
        denial,
        Denial {
            reason: DenyReason::BackendConcurrencyExceeded,
            window: None,
            current: 2,
            limit: 2
        }
    );
    finish(ledger, &a, T0);
    admitted(
        ledger
            .admit(&request("local", "T3", "r3"), &limits(2), T0)
            .unwrap(),
    );
    let open = ledger.open_slots().unwrap();
    let of = |backend: &str| {
        open.iter()
            .filter(|s| s.key.backend.as_str() == backend)
            .count()
    };
    assert_eq!((of("local"), of("local-gpu")), (2, 1));
}

pub fn the_hourly_window_slides(subject: &Subject) {
    let ledger = subject.store();
    let clock = Arc::new(ManualClock::new(T0));
    let mut caps = limits(10);
    caps.backend.max_per_hour = Some(3);
    // Three starts, ten minutes apart: at T0, T0+10m, T0+20m.
    for i in 0..3 {
        run_through(ledger, &caps, i, clock.now());
        clock.advance(10 * MINUTE);
    }
    // At T0+30m the hour holds all three.
    let denial = denied(
        ledger
            .admit(&request("b", "T3", "r3"), &caps, clock.now())
            .unwrap(),
    );
    assert_eq!(
        denial,
        Denial {
            reason: DenyReason::BackendRateExceeded,
            window: Some(RateWindow::Hourly),
            current: 3,
            limit: 3
        }
    );
    // Exactly one hour after the first start, that start has left the window.
    clock.set(
        T0.saturating_add(HOUR)
            .saturating_sub(Duration::from_millis(1)),
    );
    denied(
        ledger
            .admit(&request("b", "T3", "r3"), &caps, clock.now())
            .unwrap(),
    );
    clock.set(T0.saturating_add(HOUR));
    run_through(ledger, &caps, 3, clock.now());
    // Full again: T0+10m, T0+20m, T0+60m.
    let denial = denied(
        ledger
            .admit(&request("b", "T4", "r4"), &caps, clock.now())
            .unwrap(),
    );
    assert_eq!(denial.current, 3);
}

pub fn the_daily_window_slides(subject: &Subject) {
    let ledger = subject.store();
    let clock = Arc::new(ManualClock::new(T0));
    let mut caps = limits(10);
    caps.backend.max_per_hour = Some(100);
    caps.backend.max_per_day = Some(4);
    // Four starts spread over the day, two hours apart.
    for i in 0..4 {
        run_through(ledger, &caps, i, clock.now());
        clock.advance(2 * HOUR);
    }
    let denial = denied(
        ledger
            .admit(&request("b", "T4", "r4"), &caps, clock.now())
            .unwrap(),
    );
    assert_eq!(
        denial,
        Denial {
            reason: DenyReason::BackendRateExceeded,
            window: Some(RateWindow::Daily),
            current: 4,
            limit: 4
        }
    );
    // 24 hours after the first start, one place frees up; the second start
    // is still inside the window, so only one admission fits.
    clock.set(T0.saturating_add(24 * HOUR));
    admitted(
        ledger
            .admit(&request("b", "T4", "r4"), &caps, clock.now())
            .unwrap(),
    );
    let denial = denied(
        ledger
            .admit(&request("b", "T5", "r5"), &caps, clock.now())
            .unwrap(),
    );
    assert_eq!(
        (denial.window, denial.current),
        (Some(RateWindow::Daily), 4)
    );
}

pub fn denials_are_recorded_in_the_audit_log(subject: &Subject) {
    let ledger = subject.store();
    admitted(
        ledger
            .admit(&request("b", "T1", "r1"), &limits(1), T0)
            .unwrap(),
    );
    denied(
        ledger
            .admit(&request("b", "T2", "r2"), &limits(1), T0)
            .unwrap(),
    );
    let last = all_events(ledger).pop().unwrap();
    match last.kind {
        EventKind::Denied {
            key: denied_key,
            run_id,
            denial,
        } => {
            assert_eq!(denied_key, key("b", "T2"));
            assert_eq!(run_id.as_str(), "r2");
            assert_eq!(denial.reason, DenyReason::BackendConcurrencyExceeded);
        }
        other => panic!("expected a denied event, got {other:?}"),
    }
    // A denied run id was never started, so it may be admitted later.
    assert_eq!(
        ledger
            .attempts(&TaskId::new("T2").unwrap())
            .unwrap()
            .started,
        0
    );
}

pub fn retention_prunes_old_events_but_never_an_open_slot(subject: &Subject) {
    let ledger = subject.store();
    let clock = Arc::new(ManualClock::new(T0));
    // A slot opened long ago and never finished: its runner vanished.
    let ancient = admitted(
        ledger
            .admit(&request("b", "ancient", "r0"), &limits(10), clock.now())
            .unwrap(),
    );
    clock.advance(Duration::from_secs(1));
    for i in 1..=20 {
        run_through(ledger, &limits(10), i, clock.now());
    }
    // A year later, with the default retention of 7 days.
    clock.advance(Duration::from_secs(365 * 86_400));
    ledger.prune(clock.now()).unwrap();
    assert_eq!(ledger.slot(&ancient.key).unwrap(), Some(ancient.clone()));
    // The open slot's start anchors the log: nothing at or after it goes.
    assert_eq!(event_range(ledger), Some((1, 41)));

    // Once the slot is reclaimed, the whole old history can go, except the
    // newest event, which keeps sequence numbers from ever restarting.
    ledger
        .finish(
            &ancient.key,
            Some(&ancient.run_id),
            FinishReason::Expired,
            clock.now(),
        )
        .unwrap();
    let recent = admitted(
        ledger
            .admit(&request("b", "new", "r-new"), &limits(10), clock.now())
            .unwrap(),
    );
    let report = ledger.prune(clock.now()).unwrap();
    assert_eq!(report.events_removed, 41);
    assert_eq!(event_range(ledger), Some((42, 43)));
    assert_eq!(ledger.slot(&recent.key).unwrap(), Some(recent));
    assert_sound(ledger);
    // Attempts survive pruning.
    assert_eq!(ledger.attempts(&ancient.key.task_id).unwrap().expired, 1);

    // The next event continues the sequence.
    denied(
        ledger
            .admit(&request("b", "new", "r-again"), &limits(10), clock.now())
            .unwrap(),
    );
    assert_eq!(event_range(ledger), Some((42, 44)));
}

pub fn events_can_be_read_by_time_range(subject: &Subject) {
    let ledger = subject.store();
    for i in 0..5u64 {
        let at = T0.saturating_add(Duration::from_secs(i * 60));
        let slot = admitted(
            ledger
                .admit(
                    &request("b", &format!("T{i}"), &format!("r{i}")),
                    &limits(9),
                    at,
                )
                .unwrap(),
        );
        finish(ledger, &slot, at);
    }
    let from = T0.saturating_add(Duration::from_secs(60));
    let to = T0.saturating_add(Duration::from_secs(180));
    let events = ledger.events_between(from, to).unwrap();
    assert_eq!(events.len(), 4, "two minutes of start+finish pairs");
    assert!(events.iter().all(|e| e.at >= from && e.at < to));
    let after = ledger.events_after(8, 100).unwrap();
    assert_eq!(after.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![9, 10]);
    // Backwards, a page at a time: the newest first page, then the one before.
    let seqs = |events: Vec<Event>| events.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(ledger.events_before(u64::MAX, 3).unwrap()),
        vec![8, 9, 10]
    );
    assert_eq!(seqs(ledger.events_before(8, 3).unwrap()), vec![5, 6, 7]);
    assert_eq!(seqs(ledger.events_before(3, 10).unwrap()), vec![1, 2]);
    assert!(ledger.events_before(1, 10).unwrap().is_empty());
}

pub fn a_task_s_history_is_read_by_task_newest_last(subject: &Subject) {
    let ledger = subject.store();
    let mut at = T0;
    let mut tick = || {
        at = at.saturating_add(Duration::from_secs(1));
        at
    };
    // Task A runs twice on two backends, is denied once; B runs between.
    let a1 = admitted(
        ledger
            .admit(&request("b1", "A", "a1"), &limits(1), tick())
            .unwrap(),
    );
    let b = admitted(
        ledger
            .admit(&request("b2", "B", "b"), &limits(5), tick())
            .unwrap(),
    );
    finish(ledger, &a1, tick());
    let held = admitted(
        ledger
            .admit(&request("b1", "C", "c"), &limits(1), tick())
            .unwrap(),
    );
    denied(
        ledger
            .admit(&request("b1", "A", "a2"), &limits(1), tick())
            .unwrap(),
    );
    let a3 = admitted(
        ledger
            .admit(&request("b2", "A", "a3"), &limits(5), tick())
            .unwrap(),
    );
    finish(ledger, &b, tick());
    finish(ledger, &a3, tick());
    finish(ledger, &held, tick());

    let task = crate::TaskId::new("A").unwrap();
    let history = ledger.task_events(&task, 100).unwrap();
    let seqs: Vec<u64> = history.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        vec![1, 3, 5, 6, 8],
        "A's events, in order: {history:?}"
    );
    assert!(matches!(history[2].kind, EventKind::Denied { .. }));
    assert!(
        history
            .iter()
            .all(|e| e.kind.key().unwrap().task_id == task)
    );
    let newest = ledger.task_events(&task, 2).unwrap();
    assert_eq!(newest.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![6, 8]);
    let unknown = crate::TaskId::new("never-seen").unwrap();
    assert!(ledger.task_events(&unknown, 100).unwrap().is_empty());
}

pub fn a_backend_s_starts_are_read_as_its_rate_caps_count_them(subject: &Subject) {
    let ledger = subject.store();
    let at = |s: u64| T0.saturating_add(Duration::from_secs(s));
    for (i, (backend, second)) in [("b1", 1), ("b2", 2), ("b1", 3), ("b1", 4)]
        .into_iter()
        .enumerate()
    {
        let slot = admitted(
            ledger
                .admit(
                    &request(backend, &format!("T{i}"), &format!("r{i}")),
                    &limits(9),
                    at(second),
                )
                .unwrap(),
        );
        // A finished run still counts against the rate caps.
        finish(ledger, &slot, at(second));
    }
    let b1 = crate::Backend::new("b1").unwrap();
    assert_eq!(
        ledger.starts_after(&b1, T0).unwrap(),
        vec![at(1), at(3), at(4)]
    );
    // Strictly after `since`, as a window counts.
    assert_eq!(ledger.starts_after(&b1, at(3)).unwrap(), vec![at(4)]);
}

pub fn a_finish_with_an_old_run_id_leaves_the_newer_run_open(subject: &Subject) {
    let ledger = subject.store();
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
    let events_before = all_events(ledger).len();

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
        all_events(ledger).len(),
        events_before,
        "nothing was recorded"
    );
}

pub fn a_second_finish_of_the_same_run_reports_not_in_flight_and_changes_nothing(
    subject: &Subject,
) {
    let ledger = subject.store();
    let slot = admitted(
        ledger
            .admit(&request("b", "T", "r1"), &limits(1), T0)
            .unwrap(),
    );
    let first = ledger
        .finish(&slot.key, Some(&slot.run_id), FinishReason::Completed, T0)
        .unwrap();
    assert_eq!(first, FinishOutcome::Finished(slot.clone()));
    let events = all_events(ledger);
    let attempts = ledger.attempts(&slot.key.task_id).unwrap();

    for run in [Some(&slot.run_id), None] {
        let again = ledger
            .finish(&slot.key, run, FinishReason::Failed, T0)
            .unwrap();
        assert_eq!(again, FinishOutcome::NotInFlight);
    }
    assert_eq!(all_events(ledger), events);
    assert_eq!(ledger.attempts(&slot.key.task_id).unwrap(), attempts);
    assert_eq!(attempts.completed, 1);
    assert_eq!(attempts.failed, 0);
}

pub fn admitting_an_open_run_again_is_idempotent(subject: &Subject) {
    let ledger = subject.store();
    let req = request("b", "T", "r1");
    let slot = admitted(ledger.admit(&req, &limits(1), T0).unwrap());
    let events = all_events(ledger);
    // A retry of the same admission: the caller never saw the first answer,
    // though its commit landed.
    let retry = admitted(ledger.admit(&req, &limits(1), T0).unwrap());
    assert_eq!(retry, slot);
    assert_eq!(ledger.open_slots().unwrap().len(), 1);
    assert_eq!(all_events(ledger), events);
    assert_eq!(ledger.attempts(&slot.key.task_id).unwrap().started, 1);
}

pub fn lease_and_executor_updates_apply_only_to_the_holding_run(subject: &Subject) {
    let ledger = subject.store();
    let slot = admitted(
        ledger
            .admit(&request("b", "T", "r1"), &limits(1), T0)
            .unwrap(),
    );
    const TEN_MINUTES: Duration = Duration::from_secs(600);
    let later = T0.saturating_add(TEN_MINUTES);
    let stranger = RunId::new("r-other").unwrap();

    assert_eq!(
        ledger
            .renew_lease(&slot.key, &stranger, TEN_MINUTES, T0)
            .unwrap(),
        UpdateOutcome::NotInFlight
    );
    assert_eq!(
        ledger
            .renew_lease(&slot.key, &slot.run_id, TEN_MINUTES, T0)
            .unwrap(),
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
    ledger
        .renew_lease(&slot.key, &slot.run_id, Duration::ZERO, T0)
        .unwrap();
    assert_eq!(ledger.slot(&slot.key).unwrap().unwrap().lease_until, later);
}

pub fn the_guard_finishes_on_drop_and_while_unwinding(subject: &Subject) {
    let ledger = subject.store();
    let clock = Arc::new(ManualClock::new(T0));

    let slot = admitted(
        ledger
            .admit(&request("b", "dropped", "r1"), &limits(5), T0)
            .unwrap(),
    );
    drop(SlotGuard::new(subject.shared(), &slot, clock.clone()));
    assert!(ledger.slot(&slot.key).unwrap().is_none());

    let slot = admitted(
        ledger
            .admit(&request("b", "panicked", "r2"), &limits(5), T0)
            .unwrap(),
    );
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _guard = SlotGuard::new(subject.shared(), &slot, clock.clone());
        panic!("executor bookkeeping blew up");
    }));
    assert!(result.is_err());
    assert!(ledger.slot(&slot.key).unwrap().is_none());

    let slot = admitted(
        ledger
            .admit(&request("b", "explicit", "r3"), &limits(5), T0)
            .unwrap(),
    );
    let guard = SlotGuard::new(subject.shared(), &slot, clock.clone());
    assert!(matches!(
        guard.finish(FinishReason::Completed).unwrap(),
        FinishOutcome::Finished(_)
    ));

    let reasons: Vec<_> = all_events(ledger)
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

pub fn a_guard_never_closes_a_newer_run(subject: &Subject) {
    let ledger = subject.store();
    let clock = Arc::new(ManualClock::new(T0));
    let old = admitted(
        ledger
            .admit(&request("b", "T", "r-old"), &limits(1), T0)
            .unwrap(),
    );
    let guard = SlotGuard::new(subject.shared(), &old, clock.clone());
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

pub fn the_last_finish_of_a_key_is_found(subject: &Subject) {
    let ledger = subject.store();
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

pub fn a_runner_renews_every_slot_it_holds_and_only_those(subject: &Subject) {
    let ledger = subject.store();
    let mine = owner();
    let mut theirs = owner();
    theirs.runner.pid += 1;
    let admit = |owner: &Owner, backend: &str, task: &str, run: &str| {
        let request = AdmitRequest {
            owner: owner.clone(),
            ..request(backend, task, run)
        };
        admitted(ledger.admit(&request, &limits(5), T0).unwrap())
    };
    let a = admit(&mine, "b", "A", "ra");
    let b = admit(&mine, "c", "B", "rb");
    let c = admit(&theirs, "b", "C", "rc");
    const TEN_MINUTES: Duration = Duration::from_secs(600);
    let later = T0.saturating_add(TEN_MINUTES);

    let mut renewed = ledger.renew_leases(&mine, TEN_MINUTES, T0).unwrap();
    renewed.sort();
    assert_eq!(
        renewed,
        [
            (a.key.clone(), a.run_id.clone()),
            (b.key.clone(), b.run_id.clone())
        ]
    );
    let lease = |key: &SlotKey| ledger.slot(key).unwrap().unwrap().lease_until;
    assert_eq!((lease(&a.key), lease(&b.key)), (later, later));
    assert_eq!(
        lease(&c.key),
        c.lease_until,
        "another runner's slot is untouched"
    );
    // A lease never moves backwards.
    ledger.renew_leases(&mine, Duration::ZERO, T0).unwrap();
    assert_eq!(lease(&a.key), later);
    // A slot that is no longer open is no longer renewed: its holder learns
    // it is gone.
    finish(ledger, &a, T0);
    assert_eq!(
        ledger.renew_leases(&mine, TEN_MINUTES, T0).unwrap(),
        [(b.key.clone(), b.run_id.clone())]
    );
    assert_sound(ledger);
}

pub fn a_keeper_takes_over_its_slot_and_records_the_outcome_for_its_run_only(subject: &Subject) {
    let ledger = subject.store();
    let slot = admitted(
        ledger
            .admit(&request("b", "T", "r1"), &limits(2), T0)
            .unwrap(),
    );
    let mut keeper = owner();
    keeper.runner.pid += 100;
    keeper.keeper = Some(crate::KEEPER_PROTOCOL);
    // Another run's keeper cannot take the slot.
    assert_eq!(
        ledger
            .set_holder(&slot.key, &RunId::new("r0").unwrap(), &keeper)
            .unwrap(),
        UpdateOutcome::NotInFlight
    );
    assert_eq!(ledger.slot(&slot.key).unwrap().unwrap().owner, owner());
    // The run's own keeper does, and from then on renews it as its holder.
    assert_eq!(
        ledger.set_holder(&slot.key, &slot.run_id, &keeper).unwrap(),
        UpdateOutcome::Updated
    );
    assert_eq!(ledger.slot(&slot.key).unwrap().unwrap().owner, keeper);
    assert!(
        ledger
            .renew_leases(&owner(), Duration::from_secs(60), T0)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ledger
            .renew_leases(&keeper, Duration::from_secs(60), T0)
            .unwrap(),
        [(slot.key.clone(), slot.run_id.clone())]
    );
    // Its outcome is kept with the slot, whole, until the slot is finished.
    let mut ended = keeper.clone();
    ended.outcome = Some(crate::RunOutcome {
        ending: crate::RunEnding::Exited { code: 3 },
        took_ms: 1234,
        ended_at: T0,
        output_tail: Some("line one\nline \u{e9}two".into()),
    });
    assert_eq!(
        ledger.set_holder(&slot.key, &slot.run_id, &ended).unwrap(),
        UpdateOutcome::Updated
    );
    assert_eq!(ledger.slot(&slot.key).unwrap().unwrap().owner, ended);
    assert_eq!(ledger.open_slots().unwrap()[0].owner, ended);
    finish(ledger, &slot, T0);
    assert_eq!(
        ledger.set_holder(&slot.key, &slot.run_id, &keeper).unwrap(),
        UpdateOutcome::NotInFlight,
        "a finished slot has no holder to replace"
    );
    assert_sound(ledger);
}
