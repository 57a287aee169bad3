//! The Plane adapter of the rules, against the simulator.

use std::sync::Arc;

use ledger_core::TaskId;
use plane_client::{ApiKey, PlaneClient, PlaneConfig};
use plane_sim::{Fault, FaultRule, PlaneSim, SimConfig};
use reconcile::{LookupErrorKind, TaskLookup, TaskStatus};
use runtime::PlaneLookup;

async fn setup() -> (PlaneSim, PlaneLookup) {
    let sim = PlaneSim::start(SimConfig {
        rate_limit: None,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut config = PlaneConfig::new(
        sim.base_url(),
        "acme",
        sim.project_id(),
        ApiKey::new(plane_sim::DEFAULT_API_KEY),
    );
    config.max_attempts = 1;
    (
        sim,
        PlaneLookup(Arc::new(PlaneClient::new(config).unwrap())),
    )
}

#[tokio::test]
async fn statuses_terminality_and_not_found_come_through() {
    let (sim, lookup) = setup().await;
    let running = sim.add_work_item("r", "In Progress");
    let done = sim.add_work_item("d", "Done");
    let named = sim.add_state("Closed", "started");
    let _ = named;
    let closed = sim.add_work_item("c", "Closed");
    let gone = sim.add_work_item("g", "Todo");
    sim.delete_work_item(&gone);

    assert_eq!(lookup.probe_project().await.unwrap().work_items, 3);
    let status = |id: &str| lookup.task_status(TaskId::new(id).unwrap());
    match status(&running).await.unwrap() {
        TaskStatus::Found(s) => assert!(!s.terminal && s.group == "started"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(status(&done).await.unwrap(), TaskStatus::Found(s) if s.terminal));
    // "Closed" is terminal by name although its group is started.
    assert!(matches!(status(&closed).await.unwrap(), TaskStatus::Found(s) if s.terminal));
    assert_eq!(status(&gone).await.unwrap(), TaskStatus::NotFound);
    let listed = lookup.list_project().await.unwrap();
    assert_eq!(listed.len(), 3);
}

#[tokio::test]
async fn failures_are_errors_never_not_found() {
    let (sim, lookup) = setup().await;
    let task = TaskId::new(sim.add_work_item("t", "Todo")).unwrap();
    lookup.probe_project().await.unwrap();
    let err = lookup
        .task_status(TaskId::new("not-a-uuid").unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind, LookupErrorKind::RouteNotFound);
    // The 429 comes last: the client honours its Retry-After for every
    // request that follows.
    for (fault, kind) in [
        (Fault::Status(503), LookupErrorKind::Server),
        (Fault::ProjectForbidden, LookupErrorKind::Forbidden),
        (Fault::Malformed, LookupErrorKind::Decode),
        (
            Fault::RateLimited {
                retry_after_secs: 60,
            },
            LookupErrorKind::RateLimited,
        ),
    ] {
        sim.inject(FaultRule::new(fault));
        let err = lookup.task_status(task.clone()).await.unwrap_err();
        assert_eq!(err.kind, kind, "{err}");
        sim.clear_faults();
    }
}
