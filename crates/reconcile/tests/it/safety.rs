//! The safety properties, in order of importance.

use std::collections::HashMap;

use ledger_core::*;
use reconcile::*;

use crate::support::*;

fn untouchable_ledger(slots: Vec<Slot>) -> MockInFlightLedger {
    let mut mock = ledger_mock();
    mock.expect_open_slots()
        .returning(move || Ok(slots.clone()));
    mock.expect_finish_if_run().never();
    mock
}

#[test]
fn an_alive_owner_is_never_reclaimed_whatever_plane_says() {
    // Old, terminal, deleted: none of it matters while the owner lives, and
    // Plane is not even asked.
    let slots = vec![
        slot("b", "T1", "r1", 100 * HOUR),
        slot("b", "T2", "r2", HOUR),
    ];
    let ledger = untouchable_ledger(slots);
    let mut probe = MockProcessProbe::new();
    probe.expect_liveness().returning(|_| Liveness::Alive);
    probe.expect_terminate_group().never();
    let report = run(scan(&ledger, &silent_plane(), &probe, &apply(), NOW)).unwrap();
    assert!(report.actions.is_empty());
    assert_eq!(report.open_slots, 2);
}

#[test]
fn an_alive_owner_is_safe_even_when_the_decision_sees_damning_evidence() {
    let s = slot("b", "T", "r", 100 * HOUR);
    let observed = Observations {
        slots: vec![(s, Liveness::Alive)],
        project: ProjectEvidence::Answered,
        statuses: HashMap::from([(task("T"), Ok(TaskStatus::NotFound))]),
    };
    let plan = decide(&observed, &apply(), NOW);
    assert!(plan.reclaims.is_empty());
    assert_eq!(plan.left_alone[0].1, "its owner is alive");
}

#[test]
fn every_failed_lookup_leaves_the_slot_alone() {
    use LookupErrorKind::*;
    for kind in [
        Unauthorized,
        Forbidden,
        RouteNotFound,
        RateLimited,
        Server,
        Timeout,
        Transport,
        Decode,
        Other,
    ] {
        // Stale too: even the window rule waits for a real answer.
        let slots = vec![slot("b", "T", "r", 48 * HOUR)];
        let ledger = untouchable_ledger(slots);
        let plane = plane(
            1,
            HashMap::from([(task("T"), Err(LookupError::new(kind, "boom")))]),
        );
        let report = run(scan(&ledger, &plane, &probe(unknown()), &apply(), NOW)).unwrap();
        assert!(
            report.actions.is_empty(),
            "{kind:?} reclaimed a slot: {:?}",
            report.actions
        );
    }
}

#[test]
fn not_found_counts_only_when_the_project_answers() {
    let slots = vec![slot("b", "T", "r", HOUR)];
    let ledger = untouchable_ledger(slots);
    let mut plane = MockTaskLookup::new();
    plane.expect_probe_project().times(1).returning(|| {
        Box::pin(async {
            Err(LookupError::new(
                LookupErrorKind::Forbidden,
                "403 wrong project",
            ))
        })
    });
    // The tasks are not looked up at all: their answers could not count.
    plane.expect_task_status().never();
    plane.expect_list_project().never();
    let report = run(scan(&ledger, &plane, &probe(unknown()), &apply(), NOW)).unwrap();
    assert!(report.actions.is_empty());
    assert_eq!(report.plane_requests, 1);

    // The same "not found" without a project that answers, as plain data.
    let observed = Observations {
        slots: vec![(slot("b", "T", "r", HOUR), unknown())],
        project: ProjectEvidence::Failed(LookupError::new(LookupErrorKind::Timeout, "slow")),
        statuses: HashMap::from([(task("T"), Ok(TaskStatus::NotFound))]),
    };
    assert!(decide(&observed, &apply(), NOW).reclaims.is_empty());
}

#[test]
fn three_or_more_tasks_all_not_found_is_a_misconfiguration() {
    let slots: Vec<_> = (0..3)
        .map(|i| slot("b", &format!("T{i}"), &format!("r{i}"), HOUR))
        .collect();
    let answers = (0..3)
        .map(|i| (task(&format!("T{i}")), Ok(TaskStatus::NotFound)))
        .collect();
    let report = run(scan(
        &untouchable_ledger(slots),
        &plane(3, answers),
        &probe(unknown()),
        &apply(),
        NOW,
    ))
    .unwrap();
    assert!(report.suspected_misconfiguration);
    assert!(report.actions.is_empty());
}

#[test]
fn fewer_than_three_not_found_or_one_found_is_credible() {
    // Two, both not found: below the threshold, reclaimed.
    let slots: Vec<_> = (0..2)
        .map(|i| slot("b", &format!("T{i}"), &format!("r{i}"), HOUR))
        .collect();
    let answers = (0..2)
        .map(|i| (task(&format!("T{i}")), Ok(TaskStatus::NotFound)))
        .collect();
    let (ledger2, _) = ledger(slots);
    let report = run(scan(
        &ledger2,
        &plane(3, answers),
        &probe(unknown()),
        &apply(),
        NOW,
    ))
    .unwrap();
    assert!(!report.suspected_misconfiguration);
    assert_eq!(report.actions.len(), 2);

    // Four, one of them found: Plane clearly knows the project.
    let slots: Vec<_> = (0..4)
        .map(|i| slot("b", &format!("T{i}"), &format!("r{i}"), HOUR))
        .collect();
    let mut answers: HashMap<_, _> = (0..3)
        .map(|i| (task(&format!("T{i}")), Ok(TaskStatus::NotFound)))
        .collect();
    answers.insert(
        task("T3"),
        Ok(TaskStatus::Found(state("Running", "started"))),
    );
    let (ledger4, _) = ledger(slots);
    let report = run(scan(
        &ledger4,
        &plane(4, answers),
        &probe(unknown()),
        &apply(),
        NOW,
    ))
    .unwrap();
    assert!(!report.suspected_misconfiguration);
    assert_eq!(report.actions.len(), 3);
}

#[test]
fn a_misconfiguration_does_not_stop_the_dead_owner_rule() {
    // DEAD_OWNER_CLEAR does not rely on Plane, so a broken Plane setup does
    // not keep a dead runner's slot blocked.
    let mut slots: Vec<_> = (0..3)
        .map(|i| slot("b", &format!("T{i}"), &format!("r{i}"), HOUR))
        .collect();
    let mut dead_one = slot("b", "dead-one", "rd", HOUR);
    dead_one.owner.runner.pid = 7;
    slots.push(dead_one);
    let answers = (0..3)
        .map(|i| (task(&format!("T{i}")), Ok(TaskStatus::NotFound)))
        .collect();
    let (ledger, _) = ledger(slots);
    let mut probe = MockProcessProbe::new();
    probe.expect_liveness().returning(|owner| {
        if owner.runner.pid == 7 {
            dead()
        } else {
            unknown()
        }
    });
    probe
        .expect_terminate_group()
        .returning(|_| Ok(TerminateOutcome::NothingLeft));
    let report = run(scan(&ledger, &plane(3, answers), &probe, &apply(), NOW)).unwrap();
    assert!(report.suspected_misconfiguration);
    assert_eq!(report.actions.len(), 1);
    assert_eq!(report.actions[0].rule, Rule::DeadOwnerClear);
    assert_eq!(report.actions[0].task_id.as_str(), "dead-one");
}

#[test]
fn a_slot_readmitted_between_scan_and_apply_is_untouched() {
    let s = slot("b", "T", "old-run", HOUR);
    let mut ledger = ledger_mock();
    let open = vec![s.clone()];
    ledger
        .expect_open_slots()
        .returning(move || Ok(open.clone()));
    // By the time the finish runs, another runner re-admitted the task.
    ledger
        .expect_finish_if_run()
        .withf(|_, run, _, _| run.as_str() == "old-run")
        .times(1)
        .returning(|_, _, _, _| {
            Ok(FinishOutcome::OtherRunInFlight {
                open_run: RunId::new("new-run").unwrap(),
            })
        });
    let report = apply_with_dead_owners(&ledger);
    assert!(report.actions.is_empty(), "{:?}", report.actions);
    assert_eq!(report.superseded, 1);
}

#[test]
fn a_dry_run_reports_would_apply_and_changes_nothing() {
    let slots = vec![slot("b", "dead", "r1", HOUR), slot("b", "gone", "r2", HOUR)];
    let ledger = untouchable_ledger(slots);
    let mut probe = MockProcessProbe::new();
    probe.expect_liveness().returning(|owner| {
        if owner.runner.pid == 100 {
            dead()
        } else {
            unknown()
        }
    });
    probe.expect_terminate_group().never();
    let report = run(scan(&ledger, &silent_plane(), &probe, &dry(), NOW)).unwrap();
    assert!(!report.apply);
    assert_eq!(report.actions.len(), 2);
    assert!(
        report
            .actions
            .iter()
            .all(|a| a.action == Action::WouldApply)
    );
}

#[test]
fn an_error_while_applying_is_reported_and_the_scan_goes_on() {
    let first = slot("b", "T1", "r1", HOUR);
    let second = slot("b", "T2", "r2", HOUR);
    let mut ledger = ledger_mock();
    let open = vec![first.clone(), second.clone()];
    ledger
        .expect_open_slots()
        .returning(move || Ok(open.clone()));
    ledger
        .expect_finish_if_run()
        .returning(move |key, _, _, _| {
            if key.task_id.as_str() == "T1" {
                Err(EdgeError(
                    "ledger.redb stayed locked by another writer for 10s; gave up".into(),
                ))
            } else {
                Ok(FinishOutcome::Finished(second.clone()))
            }
        });
    let report = apply_with_dead_owners(&ledger);
    assert_eq!(report.actions.len(), 2);
    assert_eq!(report.actions[0].action, Action::Error);
    assert!(
        report.actions[0]
            .error
            .as_deref()
            .unwrap()
            .contains("stayed locked")
    );
    assert_eq!(report.actions[1].action, Action::Applied);
}

#[test]
fn a_group_that_cannot_be_terminated_keeps_its_slot() {
    let s = slot("b", "T", "r", HOUR);
    let ledger = untouchable_ledger(vec![s]);
    let mut probe = MockProcessProbe::new();
    probe.expect_liveness().returning(|_| dead());
    probe
        .expect_terminate_group()
        .returning(|_| Err(EdgeError("kill(-101): operation not permitted".into())));
    let report = run(scan(&ledger, &silent_plane(), &probe, &apply(), NOW)).unwrap();
    assert_eq!(report.actions[0].action, Action::Error);
    assert!(
        report.actions[0]
            .error
            .as_deref()
            .unwrap()
            .contains("not permitted")
    );
}

#[test]
fn an_unreadable_ledger_fails_the_scan_with_a_clear_error() {
    let mut ledger = ledger_mock();
    ledger
        .expect_open_slots()
        .returning(|| Err(EdgeError("/var/lib/inflight.redb is corrupt".into())));
    let err = run(scan(
        &ledger,
        &silent_plane(),
        &probe(dead()),
        &apply(),
        NOW,
    ))
    .unwrap_err();
    assert!(err.to_string().contains("inflight.redb is corrupt"));
}

fn project(id: &str) -> ProjectRef {
    ProjectRef {
        workspace: "acme".into(),
        project_id: id.into(),
    }
}

/// Pointed at another real project of the same workspace, every task is
/// "not found" there while the project answers; with fewer than three
/// slots the count guard cannot tell. A slot that recorded its project is
/// then neither looked up nor reclaimed, whatever the rules would say, and
/// the report names it. An imported slot, which recorded none, is still
/// judged, under the count guard.
#[test]
fn a_slot_of_another_project_is_never_judged_by_this_one() {
    let mut mine = slot("b", "T1", "r1", 48 * HOUR);
    mine.owner.project = Some(project("right"));
    let mut theirs = slot("b", "T2", "r2", 48 * HOUR);
    theirs.owner.project = Some(project("right"));
    let imported = slot("b", "T3", "r3", HOUR);
    let (ledger, finished) = ledger(vec![mine, theirs, imported]);
    let options = ScanOptions {
        project: Some(project("wrong")),
        ..apply()
    };
    // Only the imported slot's task is looked up.
    let answers = HashMap::from([(task("T3"), Ok(TaskStatus::NotFound))]);
    let report = run(scan(
        &ledger,
        &plane(10, answers),
        &probe(unknown()),
        &options,
        NOW,
    ))
    .unwrap();
    let reclaimed: Vec<&str> = report.actions.iter().map(|a| a.task_id.as_str()).collect();
    assert_eq!(reclaimed, ["T3"]);
    assert_eq!(finished.lock().unwrap().len(), 1);
    let foreign: Vec<(&str, &str)> = report
        .foreign_project
        .iter()
        .map(|f| (f.task_id.as_str(), f.project.as_str()))
        .collect();
    assert_eq!(foreign, [("T1", "acme/right"), ("T2", "acme/right")]);
    // Dead owners of another project are left to that project's runners,
    // which know where to put the task back.
    let mut dead_theirs = slot("b", "T4", "r4", HOUR);
    dead_theirs.owner.project = Some(project("right"));
    let (ledger, finished) = self::ledger(vec![dead_theirs]);
    let report = run(scan(
        &ledger,
        &silent_plane(),
        &probe(dead()),
        &options,
        NOW,
    ))
    .unwrap();
    assert!(report.actions.is_empty());
    assert!(finished.lock().unwrap().is_empty());
    // The same slot under its own project's scan is reclaimed.
    let mut dead_mine = slot("b", "T4", "r4", HOUR);
    dead_mine.owner.project = Some(project("right"));
    let (ledger, _) = self::ledger(vec![dead_mine]);
    let own = ScanOptions {
        project: Some(project("right")),
        ..apply()
    };
    let report = run(scan(&ledger, &silent_plane(), &probe(dead()), &own, NOW)).unwrap();
    assert_eq!(report.actions.len(), 1);
}

/// A project that does not answer, a failed lookup or a failed reclaim is
/// a failure of the scan, and the report says which.
#[test]
fn a_scan_that_could_not_ask_plane_reports_its_failure() {
    let mut mock = MockTaskLookup::new();
    mock.expect_probe_project().returning(|| {
        Box::pin(async {
            Err(LookupError::new(
                LookupErrorKind::Forbidden,
                "forbidden: Given API token is not valid",
            ))
        })
    });
    mock.expect_task_status().never();
    let report = run(scan(
        &untouchable_ledger(vec![slot("b", "T", "r", HOUR)]),
        &mock,
        &probe(unknown()),
        &apply(),
        NOW,
    ))
    .unwrap();
    assert!(report.actions.is_empty());
    assert!(!report.project.ok && report.project.checked);
    let failure = report.failure().unwrap();
    assert!(
        failure.contains("Given API token is not valid"),
        "{failure}"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["project"]["ok"], false);

    let answers = HashMap::from([(
        task("T"),
        Err(LookupError::new(LookupErrorKind::RateLimited, "429")),
    )]);
    let report = run(scan(
        &untouchable_ledger(vec![slot("b", "T", "r", HOUR)]),
        &plane(10, answers),
        &probe(unknown()),
        &apply(),
        NOW,
    ))
    .unwrap();
    assert_eq!(report.lookups_failed, 1);
    assert!(report.project.ok);
    assert!(
        report
            .failure()
            .unwrap()
            .contains("1 task lookup(s) failed")
    );

    // Nothing needed Plane: nothing was asked, and nothing failed.
    let report = run(scan(
        &untouchable_ledger(vec![]),
        &silent_plane(),
        &probe(unknown()),
        &apply(),
        NOW,
    ))
    .unwrap();
    assert_eq!(report.failure(), None);
    assert!(!report.project.checked);
}
