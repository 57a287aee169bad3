//! Executors that outlive their runner: each dispatch is held by a keeper,
//! a restart of the runner hands the keepers over, and the next runner
//! adopts them and reports what they recorded.

use std::time::{Duration, Instant};

use ledger_core::{LedgerStore, RunEnding, Slot, TaskId};

use crate::support::*;

/// The slot of `task` in `store`, if open.
fn slot_of(store: &dyn LedgerStore, task: &str) -> Option<Slot> {
    store
        .open_slots()
        .unwrap()
        .into_iter()
        .find(|s| s.key.task_id.as_str() == task)
}

/// SIGTERM to a runner: it exits 0, and how long it took.
fn stop_runner(world: &mut World, runner: usize) -> Duration {
    let sent = Instant::now();
    world.signal(runner, libc::SIGTERM);
    let status = world
        .wait(runner, Duration::from_secs(10))
        .expect("the runner exits");
    assert!(status.success(), "{status:?}");
    sent.elapsed()
}

/// A deploy in the middle of four 20-second runs: both runners get SIGTERM
/// 5 s in, new ones start at 6 s. Every executor runs once, start to end,
/// uninterrupted; every task is Done with one comment; no attempt is lost;
/// each runner is gone within a second of its SIGTERM.
fn a_deploy_mid_dispatch_loses_no_work(world: &mut World, hosts: [&str; 2]) {
    world.configure("roles.goal", "parallel = 2");
    world.configure("roles.other", "parallel = 2");
    let tasks: Vec<String> = (0..4)
        .map(|i| {
            let column = if i % 2 == 0 {
                "Ready for AI"
            } else {
                "Ready B"
            };
            world
                .sim
                .add_work_item(&format!("deployed job {i}"), column)
        })
        .collect();
    let start = |world: &mut World, tag: &str| {
        [
            world.start_runner_on(hosts[0], "goal", &format!("{tag}-goal")),
            world.start_runner_on(hosts[1], "other", &format!("{tag}-other")),
        ]
    };
    let old = start(world, "old");
    wait_until(Duration::from_secs(30), "four executors running", || {
        tasks.iter().all(|t| !world.executor_pids(t).is_empty())
    });
    let began = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    for runner in old {
        let took = stop_runner(world, runner);
        eprintln!("a runner exited {took:?} after its SIGTERM");
        assert!(
            took < Duration::from_secs(1),
            "the runner took {took:?} to hand over"
        );
    }
    assert_eq!(
        world.holders().1,
        4,
        "the executors stopped with the runners"
    );
    std::thread::sleep(Duration::from_secs(6).saturating_sub(began.elapsed()));
    start(world, "new");
    wait_until(Duration::from_secs(60), "every task done", || {
        tasks
            .iter()
            .all(|t| world.sim.state_of(t).as_deref() == Some("Done"))
    });
    for task in &tasks {
        let runs = world.runs(task);
        assert_eq!(runs.len(), 1, "{task} ran {runs:?}");
        let (from, to, _) = &runs[0];
        assert!(to - from >= 19_900, "{task} ran {} ms", to - from);
        assert!(
            !world.path(&format!("sigterm/{task}")).exists(),
            "{task}'s executor was interrupted"
        );
        let comment = comment_containing(world, task, "completed");
        assert!(comment.contains("Moved to Done"), "{comment}");
        assert_eq!(world.sim.comments(task).len(), 1, "{task}");
    }
    assert_eq!(world.holders().0, 4);
}

#[test]
fn a_deploy_mid_dispatch_loses_no_work_on_one_host() {
    let mut world = World::with_executor_env(
        4,
        &[
            Role::new("goal", "Ready for AI"),
            Role::new("other", "Ready B"),
        ],
        &[("E2E_SLEEP_MS", "20000")],
    );
    let local = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned();
    a_deploy_mid_dispatch_loses_no_work(&mut world, [&local, &local]);
    wait_until(Duration::from_secs(10), "every slot finished", || {
        world.open_slots().is_empty()
    });
    let ledger = world.ledger();
    assert!(ledger.open_slots().unwrap().is_empty());
    for event in ledger.events_after(0, usize::MAX).unwrap() {
        if let ledger_core::EventKind::Started { key, .. } = &event.kind {
            assert_eq!(ledger.attempts(&key.task_id).unwrap().lost(), 0);
        }
    }
}

#[test]
fn a_deploy_mid_dispatch_loses_no_work_on_two_hosts_through_postgres() {
    let mut world = World::with_executor_env(
        4,
        &[
            Role::new("goal", "Ready for AI"),
            Role::new("other", "Ready B"),
        ],
        &[("E2E_SLEEP_MS", "20000")],
    )
    .on_postgres();
    let pg = world.pg();
    a_deploy_mid_dispatch_loses_no_work(&mut world, ["host-a", "host-b"]);
    wait_until(Duration::from_secs(10), "every slot finished", || {
        pg.open_slots().unwrap().is_empty()
    });
    let started: Vec<TaskId> = pg
        .events_after(0, usize::MAX)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.kind {
            ledger_core::EventKind::Started { key, .. } => Some(key.task_id),
            _ => None,
        })
        .collect();
    assert_eq!(started.len(), 4, "a task started twice");
    for task in started {
        assert_eq!(pg.attempts(&task).unwrap().lost(), 0);
    }
}

/// The runner stops (handing over) while its executor has 10 s to go; the
/// executor ends while no runner is up, and its keeper records the
/// outcome; a runner started 20 s later reports the task Done at once.
#[test]
fn an_outcome_recorded_while_no_runner_is_up_is_reported_at_the_next_start() {
    let mut world = World::with_executor_env(
        2,
        &[Role::new("goal", "Ready for AI")],
        &[("E2E_SLEEP_MS", "10000")],
    );
    let task = world.sim.add_work_item("unattended job", "Ready for AI");
    let first = world.start_runner("goal", "first");
    let keeper = world.wait_for_keeper(&task);
    wait_until(Duration::from_secs(10), "the executor", || {
        !world.executor_pids(&task).is_empty()
    });
    stop_runner(&mut world, first);
    let stopped = Instant::now();
    wait_until(Duration::from_secs(20), "the outcome recorded", || {
        slot_of(&world.ledger(), &task).is_some_and(|s| s.owner.outcome.is_some())
    });
    let outcome = slot_of(&world.ledger(), &task)
        .and_then(|s| s.owner.outcome)
        .unwrap();
    assert_eq!(outcome.ending, RunEnding::Exited { code: 0 });
    assert!(!alive(keeper), "the keeper exits once it has recorded");
    assert_eq!(world.sim.state_of(&task).as_deref(), Some("Running"));
    std::thread::sleep(Duration::from_secs(30).saturating_sub(stopped.elapsed()));

    let started = Instant::now();
    let second = world.start_runner("goal", "second");
    wait_until(Duration::from_secs(5), "the task reported Done", || {
        world.sim.state_of(&task).as_deref() == Some("Done")
    });
    let took = started.elapsed();
    eprintln!("reported {took:?} after the runner's start");
    assert!(took < Duration::from_secs(1), "{took:?}");
    comment_containing(&world, &task, "completed (exit status 0)");
    wait_until(Duration::from_secs(5), "the slot finished", || {
        world.open_slots().is_empty()
    });
    assert_eq!(world.sim.comments(&task).len(), 1);
    assert_eq!(finishes(&world, Some(&task)), ["completed"]);
    assert_eq!(world.runs(&task).len(), 1);
    stop_runner(&mut world, second);
}

/// A keeper SIGKILLed while its runner is up: the executor dies with it, the
/// runner reclaims the slot by DEAD_OWNER_CLEAR within a second and the task
/// goes back and runs again; one attempt lost.
#[test]
fn a_killed_keeper_s_slot_is_reclaimed_by_its_runner_at_once() {
    let mut world = World::new(2, &[Role::new("goal", "Ready for AI")]);
    let task = world.sim.add_work_item("slow-once job", "Ready for AI");
    let runner = world.start_runner("goal", "runner");
    let keeper = world.wait_for_keeper(&task);
    wait_until(Duration::from_secs(10), "the executor", || {
        !world.executor_pids(&task).is_empty()
    });
    let (executor, _) = world.executor_pids(&task)[0];
    inflight_e2e::send_signal(keeper, libc::SIGKILL);
    let killed = Instant::now();
    wait_until(
        Duration::from_secs(2),
        "the executor to die with its keeper",
        || !alive(executor),
    );
    wait_until(Duration::from_secs(5), "the slot reclaimed", || {
        finishes(&world, Some(&task)).first().map(String::as_str)
            == Some("reconciled DEAD_OWNER_CLEAR")
    });
    let took = killed.elapsed();
    eprintln!("a killed keeper's slot reclaimed {took:?} after the kill");
    assert!(took < Duration::from_secs(1), "{took:?}");
    wait_until(Duration::from_secs(30), "the task done", || {
        world.sim.state_of(&task).as_deref() == Some("Done")
    });
    wait_until(Duration::from_secs(5), "the second run finished", || {
        finishes(&world, Some(&task)).len() == 2
    });
    assert_eq!(
        finishes(&world, Some(&task)),
        ["reconciled DEAD_OWNER_CLEAR", "completed"]
    );
    let attempts = world
        .ledger()
        .attempts(&TaskId::new(task.clone()).unwrap())
        .unwrap();
    assert_eq!(attempts.lost(), 1);
    stop_runner(&mut world, runner);
}

/// One runner with `parallel = 3` against a backend capped at 2, six tasks:
/// never more than two executors at once, two most of the time, every task
/// Done once.
#[test]
fn one_runner_runs_up_to_its_parallel_within_the_cap() {
    let mut world = World::with_executor_env(
        2,
        &[Role::new("goal", "Ready for AI")],
        &[("E2E_SLEEP_MS", "1500")],
    );
    world.configure("roles.goal", "parallel = 3");
    let tasks: Vec<String> = (0..6)
        .map(|i| {
            world
                .sim
                .add_work_item(&format!("parallel job {i}"), "Ready for AI")
        })
        .collect();
    let runner = world.start_runner("goal", "runner");
    wait_until(Duration::from_secs(20), "the first executor", || {
        world.holders().1 > 0
    });
    let mut samples = Vec::new();
    let done = |world: &World| {
        tasks
            .iter()
            .filter(|t| world.sim.state_of(t).as_deref() == Some("Done"))
            .count()
    };
    // Sampled while at least two tasks are left to finish: then two can run.
    while done(&world) < tasks.len() - 1 {
        samples.push(world.holders().1);
        std::thread::sleep(Duration::from_millis(20));
        assert!(samples.len() < 3000, "still running after a minute");
    }
    wait_until(Duration::from_secs(20), "every task done", || {
        done(&world) == tasks.len()
    });
    assert_eq!(
        world.holders().0,
        2,
        "the cap of 2 was exceeded or never filled"
    );
    let at_two = samples.iter().filter(|&&n| n == 2).count() as f64 / samples.len() as f64;
    eprintln!(
        "two executors at once in {:.0}% of {} samples",
        at_two * 100.0,
        samples.len()
    );
    assert!(
        at_two >= 0.5,
        "two at once only {:.0}% of the time",
        at_two * 100.0
    );
    for task in &tasks {
        assert_eq!(world.runs(task).len(), 1, "{task}");
    }
    stop_runner(&mut world, runner);
}

/// A keeper enforces `timeout_secs` while no runner is up; the next runner
/// reports the task Blocked.
#[test]
fn a_keeper_enforces_the_timeout_with_no_runner_up() {
    let mut world = World::new(2, &[Role::new("goal", "Ready for AI")]);
    world.edit_config("timeout_secs = 120", "timeout_secs = 3");
    let task = world.sim.add_work_item("hang job", "Ready for AI");
    let first = world.start_runner("goal", "first");
    world.wait_for_keeper(&task);
    stop_runner(&mut world, first);
    wait_until(Duration::from_secs(15), "the timeout recorded", || {
        slot_of(&world.ledger(), &task).is_some_and(|s| s.owner.outcome.is_some())
    });
    let outcome = slot_of(&world.ledger(), &task)
        .and_then(|s| s.owner.outcome)
        .unwrap();
    assert_eq!(outcome.ending, RunEnding::TimedOut { limit_secs: 3 });
    assert!(world.path(&format!("sigterm/{task}")).exists());
    assert_eq!(world.sim.state_of(&task).as_deref(), Some("Running"));
    let second = world.start_runner("goal", "second");
    wait_until(Duration::from_secs(5), "the task blocked", || {
        world.sim.state_of(&task).as_deref() == Some("Blocked")
    });
    comment_containing(&world, &task, "reached its timeout (timeout_secs = 3)");
    stop_runner(&mut world, second);
}

/// `on_stop = "drain"`: SIGTERM while an executor runs; the runner waits
/// for it, reports it Done, and exits.
#[test]
fn a_draining_runner_waits_for_its_executor_then_exits() {
    let mut world = World::with_executor_env(
        2,
        &[Role::new("goal", "Ready for AI")],
        &[("E2E_SLEEP_MS", "3000")],
    );
    world.configure("watcher", "on_stop = \"drain\"");
    let task = world.sim.add_work_item("drained job", "Ready for AI");
    let runner = world.start_runner("goal", "runner");
    wait_until(Duration::from_secs(10), "the executor", || {
        !world.executor_pids(&task).is_empty()
    });
    let took = stop_runner(&mut world, runner);
    eprintln!("drained in {took:?}");
    assert_eq!(world.sim.state_of(&task).as_deref(), Some("Done"));
    assert!(world.open_slots().is_empty());
    assert!(!world.path(&format!("sigterm/{task}")).exists());
    assert_eq!(world.runs(&task).len(), 1);
}

/// `watchdog interrupt --task`: the keeper stops the executor, the runner
/// puts the task back, and it runs again; asking for what does not run
/// fails.
#[test]
fn watchdog_interrupt_stops_one_task_through_its_keeper() {
    let mut world = World::new(2, &[Role::new("goal", "Ready for AI")]);
    let task = world.sim.add_work_item("slow-once job", "Ready for AI");
    let other = world.sim.add_work_item("slow-once other", "Ready for AI");
    world.configure("roles.goal", "parallel = 2");
    let runner = world.start_runner("goal", "runner");
    world.wait_for_keeper(&task);
    world.wait_for_keeper(&other);
    wait_until(Duration::from_secs(10), "both executors", || {
        world.holders().1 == 2
    });
    let out = world.watchdog(&["interrupt", "--task", &task]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("interrupting") && said.contains(&task),
        "{said}"
    );
    wait_until(Duration::from_secs(10), "the executor interrupted", || {
        world.path(&format!("sigterm/{task}")).exists()
    });
    wait_until(
        Duration::from_secs(30),
        "the task run again to Done",
        || world.sim.state_of(&task).as_deref() == Some("Done"),
    );
    comment_containing(&world, &task, "was interrupted");
    wait_until(Duration::from_secs(5), "both runs finished", || {
        finishes(&world, Some(&task)).len() == 2
    });
    assert_eq!(finishes(&world, Some(&task)), ["interrupted", "completed"]);
    // The other task's executor was left alone.
    assert!(!world.path(&format!("sigterm/{other}")).exists());
    assert_eq!(world.sim.state_of(&other).as_deref(), Some("Running"));

    let none = world.watchdog(&["interrupt", "--task", "no-such-task"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no-such-task"));
    let bad = world.watchdog(&["interrupt", "--role", "nobody"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nobody"));
    let neither = world.watchdog(&["interrupt"]);
    assert_eq!(neither.status.code(), Some(2));
    stop_runner(&mut world, runner);
}

/// A slot held on this host by a live keeper of a protocol this build does
/// not know (a newer one's): the runner logs it and leaves it alone, and
/// neither its sweep nor adoption touches it.
#[test]
fn a_keeper_of_an_unknown_protocol_is_left_alone() {
    let mut world = World::new(2, &[Role::new("goal", "Ready for AI")]);
    let task = world.sim.add_work_item("kept elsewhere", "Running");
    // A live process stands in for the newer keeper.
    let mut stand_in = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let pid = stand_in.id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start_time: u64 = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(19))
        .and_then(|t| t.parse().ok())
        .unwrap();
    world.slot_held_by(
        &task,
        ledger_core::ProcessIdentity { pid, start_time },
        Some(ledger_core::KEEPER_PROTOCOL + 1),
    );
    let runner = world.start_runner("goal", "runner");
    wait_until(Duration::from_secs(10), "the runner to say so", || {
        world
            .log("runner")
            .contains("a keeper of a protocol this runner does not know holds this slot")
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(world.open_slots().len(), 1, "the slot was touched");
    assert_eq!(world.sim.state_of(&task).as_deref(), Some("Running"));
    assert!(world.sim.comments(&task).is_empty());
    stop_runner(&mut world, runner);
    let _ = stand_in.kill();
    let _ = stand_in.wait();
}
