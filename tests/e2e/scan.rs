//! The watchdog's scan: dry run, apply, idempotence, and a live dispatch
//! never touched whatever Plane does.

use std::time::Duration;

use plane_sim::{Fault, FaultRule};

use crate::support::*;

#[test]
fn dry_run_then_apply_then_nothing_and_a_live_dispatch_is_never_reported() {
    let mut world = World::new(
        2,
        &[
            Role::new("goal", "Ready for AI"),
            Role::new("other", "Ready B"),
        ],
    );
    // A live dispatch, started first so that no later start-up sweep…
    let live = world.sim.add_work_item("slow-once live", "Ready B");
    let runner = world.start_runner("other", "live");
    wait_until(Duration::from_secs(20), "the live executor", || {
        !world.executor_pids(&live).is_empty()
    });
    // …reclaims the dead runner's slot before the watchdog sees it.
    let orphan = world.sim.add_work_item("slow-once orphan", "Ready for AI");
    let doomed = world.start_runner("goal", "doomed");
    wait_until(Duration::from_secs(20), "the orphan's executor", || {
        !world.executor_pids(&orphan).is_empty()
    });
    // Dead owner: the runner and the keeper holding the slot, both gone
    // (a runner gone alone leaves a live keeper, nothing to reclaim).
    let keeper = world.wait_for_keeper(&orphan);
    world.signal(doomed, libc::SIGKILL);
    world.wait(doomed, Duration::from_secs(5));
    inflight_e2e::send_signal(keeper, libc::SIGKILL);
    wait_until(Duration::from_secs(5), "the keeper gone", || !alive(keeper));
    wait_until(Duration::from_secs(5), "two open slots", || {
        world.open_slots().len() == 2
    });

    let dry = world.watchdog_json(&["scan"]);
    assert_eq!(dry["apply"], false);
    let actions = dry["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 1, "{dry}");
    assert_eq!(actions[0]["task_id"], orphan.as_str());
    assert_eq!(actions[0]["action"], "would_apply");
    assert_eq!(actions[0]["rule"], "DEAD_OWNER_CLEAR");
    assert_eq!(world.open_slots().len(), 2, "a dry run changed the ledger");

    // Whatever Plane does, the live dispatch is never in a report.
    for fault in [
        Fault::Status(503),
        Fault::RateLimited {
            retry_after_secs: 1,
        },
        Fault::ProjectForbidden,
        Fault::Malformed,
        Fault::Status(404),
    ] {
        world.sim.inject(FaultRule::new(fault.clone()));
        let report = world.watchdog_json(&["scan"]);
        for action in report["actions"].as_array().unwrap() {
            assert_ne!(action["task_id"], live.as_str(), "{fault:?}: {report}");
        }
        world.sim.clear_faults();
    }

    let applied = world.watchdog_json(&["scan", "--apply"]);
    let actions = applied["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 1);
    assert_eq!(
        (actions[0]["task_id"].clone(), actions[0]["action"].clone()),
        (orphan.as_str().into(), "applied".into())
    );
    let open = world.open_slots();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].key.task_id.as_str(), live);
    // The orphan's task, still "Running" in Plane, went back to its column.
    assert_eq!(world.sim.state_of(&orphan).as_deref(), Some("Ready for AI"));

    let again = world.watchdog_json(&["scan", "--apply"]);
    assert!(again["actions"].as_array().unwrap().is_empty(), "{again}");
    assert_eq!(
        world.open_slots().len(),
        1,
        "the live dispatch is untouched"
    );
    world.signal(runner, libc::SIGTERM);
    world.wait(runner, Duration::from_secs(10));
}

#[test]
fn a_scan_reports_the_requests_it_made() {
    let world = World::new(2, &[Role::new("goal", "Ready for AI")]);
    // Three slots of another host: their holders cannot be checked here,
    // so the scan asks Plane; three lookups against a one-page project:
    // it lists the project instead of reading each.
    let tasks: Vec<String> = (0..3)
        .map(|i| {
            world
                .sim
                .add_work_item(&format!("elsewhere {i}"), "Ready for AI")
        })
        .collect();
    for task in &tasks {
        world.slot_from_elsewhere(task, Some(world.project()));
    }
    let before = world.sim.requests().len();
    let report = world.watchdog_json(&["scan"]);
    let made = &world.sim.requests()[before..];
    assert!(
        made.iter().any(|r| r.path.ends_with("/work-items/")),
        "the scan did not list: {made:?}"
    );
    assert_eq!(
        report["plane_requests"].as_u64(),
        Some(made.len() as u64),
        "reported against made: {made:?}"
    );
}
