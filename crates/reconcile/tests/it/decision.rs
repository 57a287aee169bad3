//! The decision as plain data: one row per situation, no mocks.

use std::collections::HashMap;
use std::time::Duration;

use ledger_core::*;
use reconcile::*;

use crate::support::*;

fn found(name: &str, group: &str) -> Option<Result<TaskStatus, LookupError>> {
    Some(Ok(TaskStatus::Found(state(name, group))))
}

fn err(kind: LookupErrorKind) -> Option<Result<TaskStatus, LookupError>> {
    Some(Err(LookupError::new(kind, "x")))
}

/// Liveness, age in hours, project evidence, the task's status, and the rule
/// expected to fire (`None`: left alone).
type Row = (
    Liveness,
    u64,
    ProjectEvidence,
    Option<Result<TaskStatus, LookupError>>,
    Option<Rule>,
);

#[test]
fn decision_table() {
    use LookupErrorKind::*;
    let answered = ProjectEvidence::Answered;
    let failed = ProjectEvidence::Failed(LookupError::new(Forbidden, "403"));
    let rows: Vec<Row> = vec![
        (
            Liveness::Alive,
            1,
            answered.clone(),
            Some(Ok(TaskStatus::NotFound)),
            None,
        ),
        (
            Liveness::Alive,
            99,
            answered.clone(),
            found("Done", "completed"),
            None,
        ),
        (
            dead(),
            1,
            ProjectEvidence::NotProbed,
            None,
            Some(Rule::DeadOwnerClear),
        ),
        (
            dead(),
            99,
            answered.clone(),
            found("Running", "started"),
            Some(Rule::DeadOwnerClear),
        ),
        (
            unknown(),
            1,
            answered.clone(),
            Some(Ok(TaskStatus::NotFound)),
            Some(Rule::OrphanedInFlightClear),
        ),
        (
            unknown(),
            1,
            failed.clone(),
            Some(Ok(TaskStatus::NotFound)),
            None,
        ),
        (unknown(), 1, failed.clone(), None, None),
        (
            unknown(),
            1,
            answered.clone(),
            found("Done", "completed"),
            Some(Rule::OrphanedInFlightClear),
        ),
        (
            unknown(),
            1,
            answered.clone(),
            found("Cancelled", "cancelled"),
            Some(Rule::OrphanedInFlightClear),
        ),
        (
            unknown(),
            1,
            answered.clone(),
            found("Running", "started"),
            None,
        ),
        (
            unknown(),
            25,
            answered.clone(),
            found("Running", "started"),
            Some(Rule::StaleInFlightExpire),
        ),
        (
            unknown(),
            25,
            answered.clone(),
            found("Backlog", "backlog"),
            Some(Rule::StaleInFlightExpire),
        ),
        (unknown(), 25, answered.clone(), err(Server), None),
        (unknown(), 25, answered.clone(), err(RouteNotFound), None),
        (unknown(), 1, answered.clone(), err(Forbidden), None),
        (unknown(), 1, answered.clone(), err(Decode), None),
    ];
    for (i, (liveness, hours, project, status, expected)) in rows.into_iter().enumerate() {
        let s = slot("b", "T", "r", HOUR * hours as u32);
        let statuses: HashMap<_, _> = status.into_iter().map(|st| (task("T"), st)).collect();
        let observed = Observations {
            slots: vec![(s, liveness.clone())],
            project,
            statuses,
        };
        let plan = decide(&observed, &apply(), NOW);
        let rule = plan.reclaims.first().map(|r| r.rule);
        assert_eq!(rule, expected, "row {i}: {liveness:?}, {hours}h");
        assert_eq!(
            plan.reclaims.len() + plan.left_alone.len(),
            1,
            "row {i}: every slot is accounted for"
        );
    }
}

#[test]
fn the_window_is_a_setting() {
    let s = slot("b", "T", "r", 3 * HOUR);
    let observed = Observations {
        slots: vec![(s, unknown())],
        project: ProjectEvidence::Answered,
        statuses: HashMap::from([(
            task("T"),
            Ok(TaskStatus::Found(state("Running", "started"))),
        )]),
    };
    let short = ScanOptions {
        window: 2 * HOUR,
        ..apply()
    };
    assert_eq!(
        decide(&observed, &short, NOW).reclaims[0].rule,
        Rule::StaleInFlightExpire
    );
    assert!(decide(&observed, &apply(), NOW).reclaims.is_empty());
}

#[test]
fn only_unknown_owners_with_a_live_lease_need_a_lookup() {
    let s = slot("b", "T", "r", HOUR);
    let o = apply();
    assert!(!needs_lookup(&s, &Liveness::Alive, &o, NOW));
    assert!(!needs_lookup(&s, &dead(), &o, NOW));
    assert!(needs_lookup(&s, &unknown(), &o, NOW));
    let abandoned = Slot {
        lease_until: NOW.saturating_sub(o.lease_grace + Duration::from_secs(1)),
        ..s
    };
    assert!(!needs_lookup(&abandoned, &unknown(), &o, NOW));
}

/// `LEASE_EXPIRED_CLEAR`, as a table: how long ago the lease ended (seconds;
/// negative: it has not), whose owner, and the rule expected with a Plane
/// that says the task is still running.
#[test]
fn an_abandoned_lease_of_another_host_is_reclaimed_and_nothing_else() {
    let grace = apply().lease_grace.as_secs() as i64;
    let imported = |mut s: Slot| {
        s.owner = Owner::imported();
        s
    };
    let rows: Vec<(i64, Liveness, bool, Option<Rule>)> = vec![
        // Well within its lease: Plane's word decides, and it says running.
        (-30, unknown(), false, None),
        // Ended, but within the grace: still left alone.
        (grace, unknown(), false, None),
        (grace + 1, unknown(), false, Some(Rule::LeaseExpiredClear)),
        (3600, unknown(), false, Some(Rule::LeaseExpiredClear)),
        // An owner this host sees alive keeps its slot whatever its lease.
        (3600, Liveness::Alive, false, None),
        // A dead owner here is reclaimed by its own rule.
        (3600, dead(), false, Some(Rule::DeadOwnerClear)),
        // Imported slots have no lease anyone renews.
        (3600, unknown(), true, None),
    ];
    for (i, (ended, liveness, is_imported, expected)) in rows.into_iter().enumerate() {
        let mut s = slot("b", "T", "r", HOUR);
        s.lease_until = if ended >= 0 {
            NOW.saturating_sub(Duration::from_secs(ended as u64))
        } else {
            NOW.saturating_add(Duration::from_secs((-ended) as u64))
        };
        if is_imported {
            s = imported(s);
        }
        let observed = Observations {
            slots: vec![(s, liveness.clone())],
            project: ProjectEvidence::Answered,
            statuses: HashMap::from([(
                task("T"),
                Ok(TaskStatus::Found(state("Running", "started"))),
            )]),
        };
        let plan = decide(&observed, &apply(), NOW);
        let rule = plan.reclaims.first().map(|r| r.rule);
        assert_eq!(
            rule, expected,
            "row {i}: lease ended {ended}s ago, {liveness:?}"
        );
    }
}

/// A keeper that recorded its executor's outcome before it exited is dead
/// but its run is over, not lost: the slot waits for a runner to report it
/// (never `DEAD_OWNER_CLEAR`), and only expires past the window. A keeper
/// gone without an outcome is a dead owner like any other.
#[test]
fn a_dead_keeper_with_a_recorded_outcome_is_reported_not_reclaimed() {
    let keeper_slot = |age: Duration, recorded: bool| {
        let mut s = slot("b", "T", "r", age);
        s.owner.keeper = Some(KEEPER_PROTOCOL);
        s.owner.outcome = recorded.then_some(RunOutcome {
            ending: RunEnding::Exited { code: 0 },
            took_ms: 20_000,
            ended_at: NOW,
            output_tail: None,
        });
        s
    };
    let rows = [
        (HOUR, true, None),
        (HOUR, false, Some(Rule::DeadOwnerClear)),
        (25 * HOUR, true, Some(Rule::StaleInFlightExpire)),
    ];
    for (age, recorded, expected) in rows {
        let observed = Observations {
            slots: vec![(keeper_slot(age, recorded), dead())],
            project: ProjectEvidence::NotProbed,
            statuses: HashMap::new(),
        };
        let plan = decide(&observed, &apply(), NOW);
        assert_eq!(
            plan.reclaims.first().map(|r| r.rule),
            expected,
            "age {age:?}, outcome recorded: {recorded}"
        );
        if expected.is_none() {
            assert!(plan.left_alone[0].1.contains("recorded the run's outcome"));
        }
    }
}
