//! Plane's budget is 60 requests a minute per key: the scan spends it
//! carefully, and the mocks count what it spends.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reconcile::*;

use crate::support::*;

#[test]
fn each_task_id_is_looked_up_once_however_many_backends_hold_it() {
    let slots = vec![
        slot("claude", "T1", "r1", HOUR),
        slot("local", "T1", "r2", HOUR),
        slot("gpu", "T1", "r3", HOUR),
        slot("local", "T2", "r4", HOUR),
    ];
    let (ledger, finished) = ledger(slots);
    let mut plane = MockTaskLookup::new();
    // A project large enough that looking the two ids up beats listing it.
    plane
        .expect_probe_project()
        .times(1)
        .returning(|| Box::pin(async { Ok(ProjectSummary { work_items: 10_000 }) }));
    plane
        .expect_task_status()
        .withf(|t| t.as_str() == "T1")
        .times(1)
        .returning(|_| Box::pin(async { Ok(TaskStatus::NotFound) }));
    plane
        .expect_task_status()
        .withf(|t| t.as_str() == "T2")
        .times(1)
        .returning(|_| Box::pin(async { Ok(TaskStatus::Found(state("Running", "started"))) }));
    let report = run(scan(&ledger, &plane, &probe(unknown()), &apply(), NOW)).unwrap();
    // All three slots of T1 are reclaimed on one answer.
    assert_eq!(report.actions.len(), 3);
    assert_eq!(finished.lock().unwrap().len(), 3);
    assert_eq!(report.plane_requests, 3, "one probe and two lookups");
}

#[test]
fn slots_settled_by_the_dead_owner_rule_cost_no_request() {
    let slots: Vec<_> = (0..50)
        .map(|i| slot("b", &format!("T{i}"), &format!("r{i}"), HOUR))
        .collect();
    let (ledger, _) = ledger(slots);
    let report = apply_with_dead_owners(&ledger);
    assert_eq!(report.actions.len(), 50);
    assert_eq!(report.plane_requests, 0);
}

#[test]
fn a_scan_with_nothing_open_makes_no_request() {
    let (ledger, _) = ledger(vec![]);
    let report = run(scan(
        &ledger,
        &silent_plane(),
        &probe(unknown()),
        &apply(),
        NOW,
    ))
    .unwrap();
    assert_eq!((report.open_slots, report.plane_requests), (0, 0));
}

#[test]
fn lookups_in_flight_never_exceed_the_configured_concurrency() {
    for limit in [1, 3, 8] {
        let slots: Vec<_> = (0..24)
            .map(|i| slot("b", &format!("T{i}"), &format!("r{i}"), HOUR))
            .collect();
        let (ledger, _) = ledger(slots);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut plane = MockTaskLookup::new();
        // A large project, so one-by-one lookups are the cheaper way.
        plane.expect_probe_project().returning(|| {
            Box::pin(async {
                Ok(ProjectSummary {
                    work_items: 100_000,
                })
            })
        });
        let (now_in, max) = (in_flight.clone(), most.clone());
        plane.expect_task_status().times(24).returning(move |_| {
            let (now_in, max) = (now_in.clone(), max.clone());
            Box::pin(async move {
                let current = now_in.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(current, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                now_in.fetch_sub(1, Ordering::SeqCst);
                Ok(TaskStatus::Found(state("Running", "started")))
            })
        });
        let options = ScanOptions {
            lookup_concurrency: limit,
            ..apply()
        };
        run(scan(&ledger, &plane, &probe(unknown()), &options, NOW)).unwrap();
        assert_eq!(most.load(Ordering::SeqCst), limit, "limit {limit}");
    }
}

#[test]
fn with_more_ids_than_list_pages_the_list_is_used_and_only_missing_ids_confirmed() {
    // 5 ids, a project of 1,500 items (2 pages): listing costs 2 requests
    // and leaves only the ids the list lacks to confirm.
    let slots: Vec<_> = (0..5)
        .map(|i| slot("b", &format!("T{i}"), &format!("r{i}"), HOUR))
        .collect();
    let (ledger, _) = ledger(slots);
    let mut plane = MockTaskLookup::new();
    plane
        .expect_probe_project()
        .times(1)
        .returning(|| Box::pin(async { Ok(ProjectSummary { work_items: 1_500 }) }));
    plane.expect_list_project().times(1).returning(|| {
        Box::pin(async {
            Ok(vec![
                (task("T0"), state("Running", "started")),
                (task("T1"), state("Done", "completed")),
                (task("T2"), state("Running", "started")),
                (task("unrelated"), state("Todo", "unstarted")),
            ])
        })
    });
    plane
        .expect_task_status()
        .withf(|t| t.as_str() == "T3" || t.as_str() == "T4")
        .times(2)
        .returning(|_| Box::pin(async { Ok(TaskStatus::NotFound) }));
    let report = run(scan(&ledger, &plane, &probe(unknown()), &apply(), NOW)).unwrap();
    let reclaimed: Vec<_> = report
        .actions
        .iter()
        .map(|a| a.task_id.to_string())
        .collect();
    assert_eq!(reclaimed, vec!["T1", "T3", "T4"]);
    assert_eq!(report.plane_requests, 1 + 2 + 2);
}

#[test]
fn with_fewer_ids_than_list_pages_each_id_is_looked_up() {
    let slots: Vec<_> = (0..2)
        .map(|i| slot("b", &format!("T{i}"), &format!("r{i}"), HOUR))
        .collect();
    let (ledger, _) = ledger(slots);
    let answers: HashMap<_, _> = (0..2)
        .map(|i| {
            (
                task(&format!("T{i}")),
                Ok(TaskStatus::Found(state("Running", "started"))),
            )
        })
        .collect();
    let mut plane = plane(5_000, answers);
    plane.expect_list_project().never();
    let report = run(scan(&ledger, &plane, &probe(unknown()), &apply(), NOW)).unwrap();
    assert_eq!(report.plane_requests, 3);
}
