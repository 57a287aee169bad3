//! What a real Plane server broke, each defect reproduced against a
//! simulator taught to behave the same way: a rate budget used up when
//! SIGTERM comes, a demoted key, states and labels re-created while runners
//! run, a misspelt state, a project id pointing at another real project,
//! misconfigurations a scan must not hide, a gateway's 404, and a slot
//! released before its executor could be recorded.

use std::time::{Duration, Instant};

use ledger_core::ProjectRef;
use plane_sim::{Fault, FaultRule, ItemSeed, MemberRole};
use serde_json::Value;

use crate::support::*;

fn goal() -> Role {
    Role::new("goal", "Ready for AI")
}

fn finished_reasons(world: &World, task: &str) -> Vec<String> {
    events_json(world)
        .into_iter()
        .filter(|e| e["kind"] == "finished" && e["task_id"] == task)
        .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn requests_to(world: &World, method: &str, fragment: &str) -> Vec<u16> {
    world
        .sim
        .requests()
        .iter()
        .filter(|r| r.method == method && r.path.contains(fragment))
        .map(|r| r.status)
        .collect()
}

/// Defect 1: the key's budget is used up (X-RateLimit-Remaining: 0, reset
/// now + 60 s) while a runner re-reads the task it just admitted; SIGTERM
/// comes 2 s later. The runner stops waiting at once: nothing is marked
/// running, no executor starts, the slot is finished as not started, the
/// task stays in its claim state, and the runner exits within its grace
/// period plus two seconds.
#[test]
fn sigterm_while_waiting_for_rate_budget_starts_nothing_and_exits_at_once() {
    let mut world = World::new(2, &[goal()]);
    let task = world.sim.add_work_item("plain job", "Ready for AI");
    // The states, the route probe and the board list use the whole budget.
    world.sim.set_rate_limit(Some((3, Duration::from_secs(60))));
    let runner = world.start_runner("goal", "runner");
    wait_until(Duration::from_secs(20), "the admission", || {
        world.open_slots().len() == 1
    });
    std::thread::sleep(Duration::from_secs(2));
    let asked = Instant::now();
    world.signal(runner, libc::SIGTERM);
    // Grace (2 s) plus two seconds.
    let status = world
        .wait(runner, Duration::from_secs(4))
        .unwrap_or_else(|| panic!("still running 4 s after SIGTERM:\n{}", world.log("runner")));
    assert!(status.success(), "{status:?}");
    assert!(asked.elapsed() < Duration::from_secs(4));
    assert!(world.executor_pids(&task).is_empty(), "an executor started");
    assert!(
        requests_to(&world, "PATCH", &task).is_empty(),
        "the task was touched"
    );
    assert_eq!(world.sim.state_of(&task).as_deref(), Some("Ready for AI"));
    assert!(world.open_slots().is_empty());
    assert_eq!(finished_reasons(&world, &task), ["not_started"]);
}

/// Defect 2: the key's user is demoted to Guest while a task runs: Plane
/// refuses every state change but accepts comments. The report of the run
/// says the move was refused; the repair of the stuck task says so once and
/// backs off (instead of claiming "Moved to Done" at every look at the
/// board); once the user is a member again, the repair goes through and
/// says so, once.
#[test]
fn a_refused_repair_tells_the_truth_once_and_backs_off() {
    let mut world = World::with_executor_env(2, &[goal()], &[("E2E_SLEEP_MS", "2000")]);
    let task = world.sim.add_work_item("plain job", "Ready for AI");
    let runner = world.start_runner("goal", "runner");
    wait_until(Duration::from_secs(20), "the executor", || {
        !world.executor_pids(&task).is_empty()
    });
    world.sim.set_member_role(KEY, MemberRole::Guest);
    wait_until(Duration::from_secs(20), "the refused report", || {
        requests_to(&world, "PATCH", &task).contains(&403)
    });
    // Seven looks at the board (poll interval 1 s).
    std::thread::sleep(Duration::from_secs(7));
    let refused = requests_to(&world, "PATCH", &task)
        .iter()
        .filter(|s| **s == 403)
        .count();
    let comments = world.sim.comments(&task);
    assert!(
        comments.iter().all(|c| !c.contains("Moved to")),
        "a move Plane refused was reported as done: {comments:#?}"
    );
    assert!(
        (2..=5).contains(&refused),
        "{refused} refused PATCHes in 7 s: the repair did not back off"
    );
    assert!(comments.len() <= 2, "{comments:#?}");
    assert!(
        comments
            .iter()
            .any(|c| c.contains("Plane refused to move it to Done"))
    );
    assert_eq!(world.sim.state_of(&task).as_deref(), Some("Running"));

    world.sim.set_member_role(KEY, MemberRole::Member);
    wait_until(Duration::from_secs(30), "the repair", || {
        world.sim.state_of(&task).as_deref() == Some("Done")
    });
    comment_containing(&world, &task, "Moved to Done");
    let moved = world
        .sim
        .comments(&task)
        .iter()
        .filter(|c| c.contains("Moved to"))
        .count();
    assert_eq!(moved, 1);
    assert_eq!(world.executor_pids(&task).len(), 1, "the task ran twice");
    world.signal(runner, libc::SIGTERM);
    world.wait(runner, Duration::from_secs(10));
}

/// Defect 3: an administrator deletes the running state and re-creates it
/// under the same name (a new id) while a runner runs. Its cached id is
/// refused with 400; the runner reloads the states once and the next
/// dispatch goes through, without a restart.
#[test]
fn a_state_re_created_while_running_is_used_under_its_new_id() {
    let mut world = World::new(2, &[goal()]);
    let first = world.sim.add_work_item("plain job one", "Ready for AI");
    let runner = world.start_runner("goal", "runner");
    wait_until(Duration::from_secs(20), "the first task done", || {
        world.sim.state_of(&first).as_deref() == Some("Done")
    });
    let old = world
        .sim
        .states()
        .into_iter()
        .find(|s| s.name == "Running")
        .unwrap();
    world.sim.delete_state("Running").unwrap();
    let new = world.sim.add_state("Running", "started");
    assert_ne!(old.id, new);
    let second = world.sim.add_work_item("plain job two", "Ready for AI");
    wait_until(Duration::from_secs(20), "the second task done", || {
        world.sim.state_of(&second).as_deref() == Some("Done")
    });
    let patches = requests_to(&world, "PATCH", &second);
    assert_eq!(
        patches.first(),
        Some(&400),
        "the old id was not tried: {patches:?}"
    );
    assert_eq!(world.executor_pids(&second).len(), 1);
    world.signal(runner, libc::SIGTERM);
    world.wait(runner, Duration::from_secs(10));
}

/// Defect 4: a role filters on a label that does not exist when the runner
/// starts. The label is created later, then deleted and re-created (a new
/// id): each time the next matching task is claimed without a restart, and
/// a task without the label never is.
#[test]
fn labels_created_and_re_created_while_running_are_seen() {
    let mut world = World::new(2, &[goal()]);
    world.configure("plane", "cache_secs = 2");
    world.configure("roles.goal", r#"labels = ["ai"]"#);
    let unlabelled = world
        .sim
        .add_work_item("plain job unlabelled", "Ready for AI");
    let runner = world.start_runner("goal", "runner");
    std::thread::sleep(Duration::from_secs(1));
    let labelled = |name: &str| {
        world.sim.add_work_item_with(ItemSeed {
            name: name.into(),
            state: Some("Ready for AI".into()),
            labels: vec!["ai".into()],
            ..ItemSeed::default()
        })
    };
    let first = labelled("plain job labelled");
    wait_until(Duration::from_secs(20), "the labelled task done", || {
        world.sim.state_of(&first).as_deref() == Some("Done")
    });
    assert!(world.sim.delete_label("ai"));
    let second = labelled("plain job re-labelled");
    wait_until(Duration::from_secs(20), "the re-labelled task done", || {
        world.sim.state_of(&second).as_deref() == Some("Done")
    });
    assert_eq!(
        world.sim.state_of(&unlabelled).as_deref(),
        Some("Ready for AI")
    );
    assert!(world.executor_pids(&unlabelled).is_empty());
    world.signal(runner, libc::SIGTERM);
    world.wait(runner, Duration::from_secs(10));
}

/// A role waits for a label nobody has created yet, with the default
/// `cache_secs` (300): the label is created and put on a task while the
/// runner runs, and the task is claimed within three poll intervals, without
/// a restart (the board shows a label id the cached list lacks).
#[test]
fn a_label_created_while_the_role_waits_for_it_is_seen_within_three_polls() {
    let mut world = World::new(2, &[goal()]);
    world.configure("roles.goal", r#"labels = ["ai"]"#);
    let runner = world.start_runner("goal", "runner");
    wait_until(Duration::from_secs(10), "the role waiting", || {
        world.log("runner").contains("claims nothing")
    });
    std::thread::sleep(Duration::from_secs(2));
    world.sim.add_label("ai");
    let task = world.sim.add_work_item_with(ItemSeed {
        name: "plain job tagged".into(),
        state: Some("Ready for AI".into()),
        labels: vec!["ai".into()],
        ..ItemSeed::default()
    });
    let tagged = std::time::Instant::now();
    // Three polls of one second, and a second to spare.
    wait_until(Duration::from_secs(4), "the tagged task claimed", || {
        world.sim.state_of(&task).as_deref() != Some("Ready for AI")
    });
    eprintln!("claimed {:?} after it was tagged", tagged.elapsed());
    wait_until(Duration::from_secs(20), "the tagged task done", || {
        world.sim.state_of(&task).as_deref() == Some("Done")
    });
    world.signal(runner, libc::SIGTERM);
    world.wait(runner, Duration::from_secs(10));
}

/// Defect 5: `running_state = "Runing"`. `watcher --once` and `watchdog
/// check-config` exit 2 naming the role, the key and the states Plane has;
/// a running runner claims nothing, writes no ledger event, and asks Plane
/// only for its states, once per re-check interval.
#[test]
fn a_misspelt_state_is_named_and_claims_nothing() {
    let mut world = World::new(2, &[goal()]);
    world.edit_config(
        r#"running_state = "Running""#,
        r#"running_state = "Runing""#,
    );
    world.configure("plane", "cache_secs = 3");
    let task = world.sim.add_work_item("plain job", "Ready for AI");

    let once = world.watcher_once("goal");
    let stderr = String::from_utf8_lossy(&once.stderr);
    assert_eq!(once.status.code(), Some(2), "{stderr}");
    // It never says it is claiming.
    assert!(!stderr.contains("claiming"), "{stderr}");
    for needle in [
        "roles.goal.running_state",
        "\"Runing\"",
        "Running",
        "Blocked",
    ] {
        assert!(stderr.contains(needle), "{needle} missing from: {stderr}");
    }
    let check = world.watchdog(&["check-config"]);
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("roles.goal.running_state") && stdout.contains("Ready for AI"),
        "{stdout}"
    );

    world.sim.clear_requests();
    let runner = world.start_runner("goal", "runner");
    std::thread::sleep(Duration::from_secs(7));
    let log = world.sim.requests();
    // Its states once per re-check interval, and the board once a poll
    // (the look that would show a state it lacks): nothing else.
    let states = log.iter().filter(|r| r.path.ends_with("/states/")).count();
    let lists = log
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/work-items/"))
        .count();
    assert_eq!(states + lists, log.len(), "asked for more: {log:#?}");
    assert!((2..=4).contains(&states), "{states} state lists in 7 s");
    assert!(lists <= 8, "{lists} board lists in 7 s");
    assert!(events_json(&world).is_empty(), "the ledger was written");
    let said = world.log("runner").matches("claims nothing").count();
    assert!((2..=4).contains(&said), "said {said} times in 7 s");
    assert_eq!(world.sim.state_of(&task).as_deref(), Some("Ready for AI"));
    world.signal(runner, libc::SIGTERM);
    assert!(
        world
            .wait(runner, Duration::from_secs(5))
            .is_some_and(|s| s.success())
    );
}

/// Defect 6: the watchdog's `project_id` points at another real project of
/// the same workspace: it answers, and every task is "not found" there. Two
/// slots (below the three-task guard) admitted under the right project are
/// left alone and named in the report.
#[test]
fn a_scan_pointed_at_another_project_leaves_its_slots_alone() {
    let world = World::new(2, &[goal()]);
    let right = ProjectRef {
        workspace: "acme".into(),
        project_id: world.sim.project_id(),
    };
    let tasks: Vec<String> = (0..2)
        .map(|i| world.sim.add_work_item(&format!("t{i}"), "Running"))
        .collect();
    for task in &tasks {
        world.slot_from_elsewhere(task, Some(right.clone()));
    }
    let other = world.sim.add_project();
    world.edit_config(&world.sim.project_id(), &other);
    let report = world.watchdog_json(&["scan", "--apply"]);
    assert!(report["actions"].as_array().unwrap().is_empty(), "{report}");
    let foreign: Vec<&str> = report["foreign_project"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["task_id"].as_str().unwrap())
        .collect();
    assert_eq!(foreign.len(), 2, "{report}");
    assert!(tasks.iter().all(|t| foreign.contains(&t.as_str())));
    assert_eq!(world.open_slots().len(), 2);
}

/// One way to point the watchdog at the wrong Plane, and what its report
/// must say.
struct Misconfiguration {
    name: &'static str,
    /// Text of the configuration replaced, and by what.
    edit: Option<(String, String)>,
    key: &'static str,
    says: &'static str,
}

/// Defect 7 (and 8's wrong base path): `watchdog scan --apply` against a
/// wrong key, workspace, project or base path, or a dead port, reclaims
/// nothing, exits 1, and its report names the failure. `watcher --once`
/// with a bad key exits 1 too.
#[test]
fn misconfigured_scans_fail_loudly_and_reclaim_nothing() {
    let world = World::new(2, &[goal()]);
    let task = world.sim.add_work_item("t", "Running");
    world.slot_from_elsewhere(&task, None);
    let original = std::fs::read_to_string(&world.config).unwrap();
    let dead_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let base = world.sim.base_url();
    let case = |name, edit: Option<(String, String)>, key, says| Misconfiguration {
        name,
        edit,
        key,
        says,
    };
    let cases = [
        case(
            "wrong key",
            None,
            "plane_api_not_the_right_one_000000000000",
            "Given API token is not valid",
        ),
        case(
            "wrong workspace",
            Some((
                r#"workspace = "acme""#.into(),
                r#"workspace = "acme-typo""#.into(),
            )),
            KEY,
            "You do not have permission",
        ),
        case(
            "wrong project",
            Some((
                world.sim.project_id(),
                "0badc0de-0000-4000-8000-000000000000".into(),
            )),
            KEY,
            "You do not have permission",
        ),
        case(
            "wrong base path",
            Some((base.clone(), format!("{base}/plane"))),
            KEY,
            "plane.base_url",
        ),
        case(
            "dead port",
            Some((base.clone(), format!("http://127.0.0.1:{dead_port}"))),
            KEY,
            "transport error",
        ),
    ];
    for Misconfiguration {
        name: case,
        edit,
        key,
        says: needle,
    } in cases
    {
        std::fs::write(&world.config, &original).unwrap();
        if let Some((from, to)) = &edit {
            world.edit_config(from, to);
        }
        let out = world.watchdog_with_key(key, &["scan", "--apply"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{case}: {stderr}");
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{case}: {e}: {}", String::from_utf8_lossy(&out.stdout)));
        assert!(
            report["actions"].as_array().unwrap().is_empty(),
            "{case}: {report}"
        );
        assert_eq!(report["project"]["ok"], false, "{case}: {report}");
        let error = report["project"]["error"].as_str().unwrap_or_default();
        assert!(error.contains(needle), "{case}: {error}");
        assert!(stderr.contains("scan incomplete"), "{case}: {stderr}");
        assert!(!stderr.contains("older than 1.1"), "{case}: {stderr}");
        assert_eq!(world.open_slots().len(), 1, "{case}: a slot was reclaimed");
    }
    std::fs::write(&world.config, &original).unwrap();
    let mut once = std::process::Command::new(bin("watcher"));
    once.arg("--config")
        .arg(&world.config)
        .args(["--role", "goal", "--once"])
        .env("E2E_PLANE_KEY", "plane_api_not_the_right_one_000000000000");
    let out = once.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Defect 8: an empty key variable is called empty, not unset; a timed-out
/// run's comment names the limit once.
#[test]
fn messages_say_what_happened() {
    let mut world = World::new(2, &[goal()]);
    let out = world.watchdog_with_key("  ", &["scan"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("E2E_PLANE_KEY is empty"), "{stderr}");

    world.edit_config("timeout_secs = 120", "timeout_secs = 2");
    let task = world.sim.add_work_item("hang job", "Ready for AI");
    let runner = world.start_runner("goal", "runner");
    let comment = comment_containing(&world, &task, "timeout");
    assert!(
        comment.contains("reached its timeout (timeout_secs = 2) and was stopped after 2."),
        "{comment}"
    );
    assert_eq!(comment.matches("after").count(), 1, "{comment}");
    world.signal(runner, libc::SIGTERM);
    world.wait(runner, Duration::from_secs(10));
}

/// Defect 9: a gateway in front of Plane answers `404 {"error": "Not
/// found"}` for a task while the project answers. That is not Plane saying
/// the task is gone: the slot stays, and the scan reports a failed lookup.
#[test]
fn a_gateway_s_json_404_reclaims_nothing() {
    let world = World::new(2, &[goal()]);
    let task = world.sim.add_work_item("t", "Running");
    world.slot_from_elsewhere(&task, None);
    world.sim.inject(
        FaultRule::new(Fault::Json {
            status: 404,
            body: r#"{"error": "Not found"}"#.into(),
        })
        .on_path(&task),
    );
    let out = world.watchdog(&["scan", "--apply"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["actions"].as_array().unwrap().is_empty(), "{report}");
    assert_eq!(report["lookups_failed"], 1);
    assert_eq!(world.open_slots().len(), 1);
}

/// Defect 10: the slot is released (here by an operator) while the runner
/// marks its task running, so the executor it then spawns cannot be
/// recorded. No record, no start: the gate stays shut, the task goes back
/// to its claim state, and the next dispatch, which records its executor,
/// is the only one that runs.
#[test]
fn an_executor_that_cannot_be_recorded_never_starts() {
    let mut world = World::new(2, &[goal()]);
    let task = world.sim.add_work_item("plain job", "Ready for AI");
    world.sim.inject(
        FaultRule::new(Fault::Latency(Duration::from_secs(3)))
            .on_method("PATCH")
            .on_path(&task)
            .times(1),
    );
    let runner = world.start_runner("goal", "runner");
    wait_until(
        Duration::from_secs(20),
        "the admission and the re-read",
        || {
            world.open_slots().len() == 1
                && !requests_to(&world, "GET", &format!("{task}/")).is_empty()
        },
    );
    let out = world.watchdog(&["release", "--backend", "local", "--task", &task]);
    assert!(out.status.success());
    wait_until(Duration::from_secs(30), "the task done", || {
        world.sim.state_of(&task).as_deref() == Some("Done")
    });
    // The runner moves the task in Plane first and finishes its slot just
    // after: wait for that finish.
    wait_until(Duration::from_secs(10), "the second finish", || {
        finished_reasons(&world, &task).len() >= 2
    });
    let reasons = finished_reasons(&world, &task);
    assert_eq!(
        reasons,
        ["released_by_operator", "completed"],
        "{}",
        world.log("runner")
    );
    assert_eq!(
        world.executor_pids(&task).len(),
        1,
        "an executor ran that no slot recorded"
    );
    world.signal(runner, libc::SIGTERM);
    world.wait(runner, Duration::from_secs(10));
}
