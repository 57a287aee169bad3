//! Each rule fires when it should, with the reason and the right finish.

use std::collections::HashMap;
use std::time::Duration;

use ledger_core::*;
use reconcile::*;

use crate::support::*;

#[test]
fn dead_owner_clear_terminates_the_group_then_finishes_without_plane() {
    let s = slot("local", "T1", "r1", Duration::from_secs(60));
    let (ledger, finished) = ledger(vec![s.clone()]);
    let mut probe = MockProcessProbe::new();
    probe.expect_liveness().returning(|_| dead());
    let mut seq = mockall::Sequence::new();
    probe
        .expect_terminate_group()
        .withf(|e| e.process_group == 101)
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(TerminateOutcome::Killed));
    let report = run(scan(&ledger, &silent_plane(), &probe, &apply(), NOW)).unwrap();
    assert_eq!(report.actions.len(), 1);
    let entry = &report.actions[0];
    assert_eq!(
        (entry.rule, entry.action),
        (Rule::DeadOwnerClear, Action::Applied)
    );
    assert!(entry.reason.contains("pid 100 is gone"), "{}", entry.reason);
    assert_eq!(
        finished.lock().unwrap().as_slice(),
        &[(
            s.key,
            s.run_id,
            FinishReason::Reconciled {
                rule: "DEAD_OWNER_CLEAR".into()
            }
        )]
    );
    assert_eq!(report.plane_requests, 0);
}

#[test]
fn orphaned_in_flight_clear_fires_on_not_found_and_on_terminal_states() {
    let slots = vec![
        slot("b", "gone", "r1", HOUR),
        slot("b", "done", "r2", HOUR),
        slot("b", "cancelled", "r3", HOUR),
    ];
    let (ledger, finished) = ledger(slots);
    let plane = plane(
        10,
        HashMap::from([
            (task("gone"), Ok(TaskStatus::NotFound)),
            (
                task("done"),
                Ok(TaskStatus::Found(state("Done", "completed"))),
            ),
            (
                task("cancelled"),
                Ok(TaskStatus::Found(state("Cancelled", "cancelled"))),
            ),
        ]),
    );
    let report = run(scan(&ledger, &plane, &probe(unknown()), &apply(), NOW)).unwrap();
    let rules: Vec<_> = report
        .actions
        .iter()
        .map(|a| (a.task_id.to_string(), a.rule, a.action))
        .collect();
    assert_eq!(
        rules,
        vec![
            ("gone".into(), Rule::OrphanedInFlightClear, Action::Applied),
            ("done".into(), Rule::OrphanedInFlightClear, Action::Applied),
            (
                "cancelled".into(),
                Rule::OrphanedInFlightClear,
                Action::Applied
            ),
        ]
    );
    assert!(report.actions[0].reason.contains("not found"));
    assert!(report.actions[1].reason.contains("\"Done\""));
    assert_eq!(finished.lock().unwrap().len(), 3);
}

#[test]
fn a_terminal_state_by_name_counts_when_the_lookup_says_so() {
    // Terminality is the lookup's judgement (configured names such as
    // "Cancelled by operator" in a started group): the rule trusts the flag.
    let s = slot("b", "T", "r", HOUR);
    let (ledger, _) = ledger(vec![s]);
    let named = TaskState {
        name: "Cancelled by operator".into(),
        group: "started".into(),
        terminal: true,
    };
    let plane = plane(
        1,
        HashMap::from([(task("T"), Ok(TaskStatus::Found(named)))]),
    );
    let report = run(scan(&ledger, &plane, &probe(unknown()), &apply(), NOW)).unwrap();
    assert_eq!(report.actions[0].rule, Rule::OrphanedInFlightClear);
}

#[test]
fn stale_in_flight_expire_fires_past_the_window_only() {
    let old = slot("b", "old", "r1", 25 * HOUR);
    let young = slot("b", "young", "r2", 23 * HOUR);
    let (ledger, finished) = ledger(vec![old.clone(), young]);
    let running = Ok(TaskStatus::Found(state("Running", "started")));
    let plane = plane(
        5,
        HashMap::from([(task("old"), running.clone()), (task("young"), running)]),
    );
    let report = run(scan(&ledger, &plane, &probe(unknown()), &apply(), NOW)).unwrap();
    assert_eq!(report.actions.len(), 1);
    assert_eq!(report.actions[0].rule, Rule::StaleInFlightExpire);
    assert_eq!(report.actions[0].task_id, old.key.task_id);
    assert!(
        report.actions[0].reason.contains("25h"),
        "{}",
        report.actions[0].reason
    );
    assert_eq!(
        report.actions[0]
            .task_state
            .as_ref()
            .map(|s| s.group.as_str()),
        Some("started"),
        "the runner needs the state to put the task back"
    );
    assert_eq!(
        finished.lock().unwrap()[0].2,
        FinishReason::Reconciled {
            rule: "STALE_IN_FLIGHT_EXPIRE".into()
        }
    );
}

#[test]
fn the_first_matching_rule_wins() {
    // Terminal in Plane and past the window: ORPHANED comes first.
    let s = slot("b", "T", "r", 48 * HOUR);
    let (ledger, _) = ledger(vec![s]);
    let plane = plane(
        1,
        HashMap::from([(task("T"), Ok(TaskStatus::Found(state("Done", "completed"))))]),
    );
    let report = run(scan(&ledger, &plane, &probe(unknown()), &apply(), NOW)).unwrap();
    assert_eq!(report.actions.len(), 1);
    assert_eq!(report.actions[0].rule, Rule::OrphanedInFlightClear);
}
