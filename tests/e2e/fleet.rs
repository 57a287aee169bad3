//! Runners sharing a backend, and a runner told to stop.

use std::time::Duration;

use crate::support::*;

/// Three runners of different roles share one backend capped at 2 and
/// finish 12 tasks. The executors count themselves (outside the ledger):
/// never more than 2 at once.
#[test]
fn three_roles_on_one_backend_never_exceed_its_cap() {
    let roles = [
        Role::new("goal", "Ready A"),
        Role::new("review", "Ready B"),
        Role::new("fix", "Ready C"),
    ];
    let mut world = World::new(2, &roles);
    let mut tasks = Vec::new();
    for role in &roles {
        for i in 0..4 {
            tasks.push(
                world
                    .sim
                    .add_work_item(&format!("{} task {i}", role.name), role.claim_state),
            );
        }
    }
    let runners: Vec<usize> = roles
        .iter()
        .map(|r| world.start_runner(r.name, r.name))
        .collect();
    wait_until(Duration::from_secs(90), "every task done", || {
        tasks
            .iter()
            .all(|t| world.sim.state_of(t).as_deref() == Some("Done"))
    });
    for runner in runners {
        world.signal(runner, libc::SIGTERM);
        assert!(
            world
                .wait(runner, Duration::from_secs(10))
                .is_some_and(|s| s.success())
        );
    }
    let (most, now) = world.holders();
    assert_eq!(now, 0);
    assert!(most <= 2, "{most} executors ran at once under a cap of 2");
    assert_eq!(most, 2, "three runners never contended for the two slots");
    assert!(world.open_slots().is_empty());
    let status = world.watchdog_json(&["status", "--json"]);
    assert_eq!(status["total_open"], 0);
    // Every task got a comment with its outcome.
    for task in &tasks {
        assert!(
            world
                .sim
                .comments(task)
                .iter()
                .any(|c| c.contains("completed")),
            "{task}"
        );
    }
}

/// With `on_stop = "interrupt"`, SIGTERM while an executor runs: the
/// keeper gives the executor SIGTERM and records the run as interrupted,
/// the runner finishes the slot, puts the task back in its claim state and
/// exits 0.
#[test]
fn sigterm_mid_dispatch_interrupts_cleanly_when_asked_to() {
    let mut world = World::new(2, &[Role::new("goal", "Ready for AI")]);
    world.configure("watcher", "on_stop = \"interrupt\"");
    let task = world.sim.add_work_item("slow-once job", "Ready for AI");
    let runner = world.start_runner("goal", "runner");
    wait_until(Duration::from_secs(20), "the executor to start", || {
        !world.executor_pids(&task).is_empty()
    });
    assert_eq!(world.sim.state_of(&task).as_deref(), Some("Running"));
    world.signal(runner, libc::SIGTERM);
    let status = world
        .wait(runner, Duration::from_secs(10))
        .expect("the runner exits");
    assert!(status.success(), "{status:?}");
    assert!(
        world.path(&format!("sigterm/{task}")).exists(),
        "the executor never saw SIGTERM"
    );
    assert_eq!(world.sim.state_of(&task).as_deref(), Some("Ready for AI"));
    assert!(world.open_slots().is_empty());
    let finished: Vec<_> = events_json(&world)
        .into_iter()
        .filter(|e| e["kind"] == "finished")
        .collect();
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["reason"], "interrupted");
    assert!(
        world
            .sim
            .comments(&task)
            .iter()
            .any(|c| c.contains("interrupted"))
    );
}

/// Plane refuses the report of a finished run: the task sits in its running
/// state with nothing in flight. The runner's next look at the board reports
/// the outcome the ledger recorded.
#[test]
fn a_lost_report_is_repaired_from_the_ledger() {
    use plane_sim::{Fault, FaultRule};
    let mut world = World::new(2, &[Role::new("goal", "Ready for AI")]);
    let task = world.sim.add_work_item("plain job", "Ready for AI");
    let runner = world.start_runner("goal", "runner");
    wait_until(Duration::from_secs(20), "the executor to start", || {
        !world.executor_pids(&task).is_empty()
    });
    // The next state change, the report of the outcome, is refused.
    world.sim.inject(
        FaultRule::new(Fault::ProjectForbidden)
            .on_method("PATCH")
            .times(1),
    );
    wait_until(Duration::from_secs(20), "the task to be done", || {
        world.sim.state_of(&task).as_deref() == Some("Done")
    });
    comment_containing(&world, &task, "left in");
    assert_eq!(
        world.executor_pids(&task).len(),
        1,
        "the task did not run twice"
    );
    world.signal(runner, libc::SIGTERM);
    world.wait(runner, Duration::from_secs(10));
}

/// A failed run goes to the blocked state with the end of its output in the
/// comment, sanitised.
#[test]
fn a_failed_run_is_blocked_with_the_tail_of_its_output() {
    let mut world = World::new(2, &[Role::new("goal", "Ready for AI")]);
    let task = world.sim.add_work_item("fail job", "Ready for AI");
    let runner = world.start_runner("goal", "runner");
    wait_until(Duration::from_secs(20), "the task to be blocked", || {
        world.sim.state_of(&task).as_deref() == Some("Blocked")
    });
    let comment = comment_containing(&world, &task, "exit status 3");
    assert!(comment.contains("Last lines of its output"), "{comment}");
    assert!(
        comment.contains("something went wrong") && comment.contains("working on fail job"),
        "{comment}"
    );
    assert!(
        !comment.contains('\u{1b}'),
        "escape sequences reached Plane: {comment:?}"
    );
    world.signal(runner, libc::SIGTERM);
    world.wait(runner, Duration::from_secs(10));
}
