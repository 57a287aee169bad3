//! Every cap, with its figures, and rate windows that slide with an injected
//! clock; retention that never touches an open slot.

use std::time::Duration;

use ledger_core::*;

use crate::support::*;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

fn finish(ledger: &Ledger, slot: &Slot, at: Timestamp) {
    let outcome = ledger
        .finish(&slot.key, Some(&slot.run_id), FinishReason::Completed, at)
        .unwrap();
    assert!(matches!(outcome, FinishOutcome::Finished(_)));
}

#[test]
fn already_in_flight_is_refused_with_its_figures() {
    let (_dir, path) = temp_ledger();
    let ledger = Ledger::open(&path).unwrap();
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

#[test]
fn the_global_cap_counts_every_backend() {
    let (_dir, path) = temp_ledger();
    let ledger = Ledger::open(&path).unwrap();
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

#[test]
fn the_backend_cap_counts_only_that_backend() {
    let (_dir, path) = temp_ledger();
    let ledger = Ledger::open(&path).unwrap();
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
    finish(&ledger, &a, T0);
    admitted(
        ledger
            .admit(&request("local", "T3", "r3"), &limits(2), T0)
            .unwrap(),
    );
    let counts = ledger.open_counts().unwrap();
    assert_eq!(counts[&Backend::new("local").unwrap()], 2);
    assert_eq!(counts[&Backend::new("local-gpu").unwrap()], 1);
    assert_eq!(
        ledger
            .open_slots_of(&Backend::new("local").unwrap())
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn the_hourly_window_slides() {
    let (_dir, path) = temp_ledger();
    let ledger = Ledger::open(&path).unwrap();
    let clock = ManualClock::new(T0);
    let mut caps = limits(10);
    caps.backend.max_per_hour = Some(3);
    // Three starts, ten minutes apart: at T0, T0+10m, T0+20m.
    for i in 0..3 {
        let slot = admitted(
            ledger
                .admit(
                    &request("b", &format!("T{i}"), &format!("r{i}")),
                    &caps,
                    clock.now(),
                )
                .unwrap(),
        );
        finish(&ledger, &slot, clock.now());
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
    let slot = admitted(
        ledger
            .admit(&request("b", "T3", "r3"), &caps, clock.now())
            .unwrap(),
    );
    finish(&ledger, &slot, clock.now());
    // Full again: T0+10m, T0+20m, T0+60m.
    let denial = denied(
        ledger
            .admit(&request("b", "T4", "r4"), &caps, clock.now())
            .unwrap(),
    );
    assert_eq!(denial.current, 3);
}

#[test]
fn the_daily_window_slides() {
    let (_dir, path) = temp_ledger();
    let ledger = Ledger::open(&path).unwrap();
    let clock = ManualClock::new(T0);
    let mut caps = limits(10);
    caps.backend.max_per_hour = Some(100);
    caps.backend.max_per_day = Some(4);
    // Four starts spread over the day, two hours apart.
    for i in 0..4 {
        let slot = admitted(
            ledger
                .admit(
                    &request("b", &format!("T{i}"), &format!("r{i}")),
                    &caps,
                    clock.now(),
                )
                .unwrap(),
        );
        finish(&ledger, &slot, clock.now());
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

#[test]
fn denials_are_recorded_in_the_audit_log() {
    let (_dir, path) = temp_ledger();
    let ledger = Ledger::open(&path).unwrap();
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
    let last = all_events(&ledger).pop().unwrap();
    match last.kind {
        EventKind::Denied {
            key,
            run_id,
            denial,
        } => {
            assert_eq!(key, crate::support::key("b", "T2"));
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

#[test]
fn retention_prunes_old_events_but_never_an_open_slot() {
    let (_dir, path) = temp_ledger();
    let ledger = Ledger::open(&path).unwrap();
    let clock = ManualClock::new(T0);
    // A slot opened long ago and never finished: its runner vanished.
    let ancient = admitted(
        ledger
            .admit(&request("b", "ancient", "r0"), &limits(10), clock.now())
            .unwrap(),
    );
    clock.advance(Duration::from_secs(1));
    for i in 1..=20 {
        let slot = admitted(
            ledger
                .admit(
                    &request("b", &format!("T{i}"), &format!("r{i}")),
                    &limits(10),
                    clock.now(),
                )
                .unwrap(),
        );
        finish(&ledger, &slot, clock.now());
    }
    // A year later, with the default retention of 7 days.
    clock.advance(Duration::from_secs(365 * 86_400));
    ledger.prune(clock.now()).unwrap();
    assert_eq!(ledger.slot(&ancient.key).unwrap(), Some(ancient.clone()));
    // The open slot's start anchors the log: nothing at or after it goes.
    assert_eq!(ledger.event_range().unwrap(), Some((1, 41)));

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
    assert_eq!(ledger.event_range().unwrap(), Some((42, 43)));
    assert_eq!(ledger.slot(&recent.key).unwrap(), Some(recent));
    assert!(ledger.verify().unwrap().is_sound());
    // Attempts survive pruning.
    assert_eq!(ledger.attempts(&ancient.key.task_id).unwrap().expired, 1);

    // The next event continues the sequence.
    denied(
        ledger
            .admit(&request("b", "new", "r-again"), &limits(10), clock.now())
            .unwrap(),
    );
    assert_eq!(ledger.event_range().unwrap(), Some((42, 44)));
}

#[test]
fn events_can_be_read_by_time_range() {
    let (_dir, path) = temp_ledger();
    let ledger = Ledger::open(&path).unwrap();
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
        finish(&ledger, &slot, at);
    }
    let from = T0.saturating_add(Duration::from_secs(60));
    let to = T0.saturating_add(Duration::from_secs(180));
    let events = ledger.events_between(from, to).unwrap();
    assert_eq!(events.len(), 4, "two minutes of start+finish pairs");
    assert!(events.iter().all(|e| e.at >= from && e.at < to));
    let after = ledger.events_after(8, 100).unwrap();
    assert_eq!(after.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![9, 10]);
}
