//! The operator's window on the terminal: `watchdog explain` (why a task
//! waits, its history), `status` with titles and `--watch`, `events` with
//! its filters and `--follow`.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ledger_core::{Clock, FinishReason, FleetStore, LedgerStore, SystemClock, Timestamp};
use serde_json::Value;

use crate::support::*;

const GOAL: Role = Role::new("goal", "Ready for AI");

/// `explain TASK --json` (exit 0 asserted) and its text.
fn explain(world: &World, task: &str) -> (Value, String) {
    let json = world.watchdog_json(&["explain", task, "--json"]);
    let text = world.watchdog(&["explain", task]);
    assert!(
        text.status.success(),
        "explain {task}: {}",
        String::from_utf8_lossy(&text.stderr)
    );
    (json, String::from_utf8_lossy(&text.stdout).into_owned())
}

/// The waits of an explanation, by reason.
fn wait<'a>(explained: &'a Value, reason: &str) -> &'a Value {
    explained["waits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["reason"] == reason)
        .unwrap_or_else(|| panic!("no {reason} wait in {explained:#}"))
}

/// A runner holds `task` (an executor that hangs) for as long as the test.
fn hold_with_a_runner(world: &mut World, title: &str) -> String {
    let held = world.sim.add_work_item(title, "Ready for AI");
    world.start_runner("goal", "runner");
    wait_until(Duration::from_secs(30), "the held task runs", || {
        !world.executor_pids(&held).is_empty()
    });
    held
}

#[test]
fn explain_names_the_full_backend_cap_and_the_slots_that_hold_it() {
    let mut world = World::new(1, &[GOAL]);
    let held = hold_with_a_runner(&mut world, "hang: the long job");
    let waiting = world.sim.add_work_item("the waiting job", "Ready for AI");

    let (json, text) = explain(&world, &waiting);
    let full = wait(&json, "cap_full");
    assert_eq!(full["cap"], "backends.local.max_concurrent");
    assert_eq!(
        (full["current"].clone(), full["limit"].clone()),
        (1.into(), 1.into())
    );
    let holder = &full["holders"][0];
    assert_eq!(holder["task_id"], held.as_str());
    assert_eq!(holder["title"], "hang: the long job");
    assert_eq!(holder["liveness"], "alive");
    assert!(holder["lease_left_secs"].as_i64().unwrap() > 0);
    assert_eq!(json["running"], Value::Array(vec![]));
    assert_eq!(json["known_to_ledger"], false);
    assert!(
        text.contains(
            "backend local is full: backends.local.max_concurrent is 1 and 1 slot(s) hold it"
        ),
        "{text}"
    );
    assert!(text.contains("\"hang: the long job\""), "{text}");
    assert!(text.contains("ledger: no record of this task"), "{text}");

    // The held task itself runs: its holder, no waits.
    let (json, text) = explain(&world, &held);
    assert_eq!(json["running"][0]["title"], "hang: the long job");
    assert_eq!(json["waits"], Value::Array(vec![]));
    assert!(text.contains("now: running on local"), "{text}");
    assert!(text.contains("started on local"), "{text}");
}

#[test]
fn explain_names_the_global_cap() {
    let mut world = World::new(5, &[GOAL]);
    world.edit_config(
        "[limits]\nmax_concurrent = 8",
        "[limits]\nmax_concurrent = 1",
    );
    let held = hold_with_a_runner(&mut world, "hang: global");
    let waiting = world
        .sim
        .add_work_item("waits for the fleet", "Ready for AI");
    let (json, text) = explain(&world, &waiting);
    let full = wait(&json, "cap_full");
    assert_eq!(full["cap"], "limits.max_concurrent");
    assert_eq!(full["holders"][0]["task_id"], held.as_str());
    assert!(text.contains("limits.max_concurrent is 1"), "{text}");
}

#[test]
fn explain_names_the_time_the_hourly_cap_next_allows_a_start() {
    let mut world = World::new(5, &[GOAL]);
    world.configure("backends.local", "max_per_hour = 1");
    let first = world.sim.add_work_item("first of the hour", "Ready for AI");
    world.start_runner("goal", "runner");
    wait_until(Duration::from_secs(30), "the first task is done", || {
        world.sim.state_of(&first).as_deref() == Some("Done")
    });
    let waiting = world
        .sim
        .add_work_item("second of the hour", "Ready for AI");
    let (json, text) = explain(&world, &waiting);
    let full = wait(&json, "rate_full");
    assert_eq!(full["cap"], "backends.local.max_per_hour");
    assert_eq!(
        (full["current"].clone(), full["limit"].clone()),
        (1.into(), 1.into())
    );
    // An hour after the first start, to the millisecond.
    let started = world
        .ledger()
        .task_events(&ledger_core::TaskId::new(first).unwrap(), 10)
        .unwrap()[0]
        .at;
    let next: Timestamp = serde_json::from_value(full["next_start_at"].clone()).unwrap();
    assert_eq!(next, started.saturating_add(Duration::from_secs(3600)));
    assert!(
        text.contains(&format!("the next start is allowed at {next}")),
        "{text}"
    );
}

#[test]
fn explain_says_a_role_waits_for_a_label_the_project_lacks_and_one_the_task_lacks() {
    let world = World::new(1, &[GOAL]);
    drop(world.ledger()); // as a runner's first start leaves it
    world.configure("roles.goal", "labels = [\"agent\"]");
    let task = world.sim.add_work_item("needs an agent", "Ready for AI");
    let (json, text) = explain(&world, &task);
    let waiting = wait(&json, "role_waits_for_names");
    assert_eq!(waiting["role"], "goal");
    assert!(
        waiting["missing"][0].as_str().unwrap().contains("agent"),
        "{json:#}"
    );
    assert!(
        text.contains("role goal waits for names the project does not have"),
        "{text}"
    );

    // Once the label exists, the task still lacks it.
    world.sim.add_label("agent");
    let (json, text) = explain(&world, &task);
    assert_eq!(
        wait(&json, "missing_labels")["labels"],
        serde_json::json!(["agent"])
    );
    assert!(
        text.contains("role goal claims only tasks labelled \"agent\""),
        "{text}"
    );
}

#[test]
fn explain_says_plane_paused_the_role_s_key() {
    let world = World::new(1, &[GOAL]);
    let ledger = world.ledger();
    let task = world.sim.add_work_item("waits for Plane", "Ready for AI");
    // As the client does on a 429: the whole key waits out Retry-After.
    let key = plane_client::ApiKey::new(KEY).fingerprint();
    let now = SystemClock.now();
    ledger
        .pause_budget(&key, Duration::from_secs(600), now)
        .unwrap();
    let (json, text) = explain(&world, &task);
    let paused = wait(&json, "budget_paused");
    assert_eq!(paused["key_env"], "E2E_PLANE_KEY");
    let until: Timestamp = serde_json::from_value(paused["until"].clone()).unwrap();
    assert!(
        until >= now.saturating_add(Duration::from_secs(599)),
        "{until}"
    );
    assert!(
        text.contains("Plane answered role goal's key (E2E_PLANE_KEY) with 429"),
        "{text}"
    );
    assert!(!text.contains(KEY), "the key itself is never shown");
}

#[test]
fn explain_tells_a_reclaimed_task_s_history_in_order_then_done() {
    let mut world = World::new(1, &[GOAL]);
    let task = world
        .sim
        .add_work_item("reclaimed then run", "Ready for AI");
    world.slot_of_a_dead_runner(&task);
    world.start_runner("goal", "runner");
    wait_until(Duration::from_secs(30), "the task is done", || {
        world.sim.state_of(&task).as_deref() == Some("Done")
    });
    let (json, text) = explain(&world, &task);
    let steps: Vec<(String, String)> = json["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| {
            let event = &line["event"];
            let why = event["rule"]
                .as_str()
                .or(event["reason"].as_str())
                .unwrap_or("");
            (event["kind"].as_str().unwrap().to_owned(), why.to_owned())
        })
        .collect();
    let expected = [
        ("started", ""),
        ("finished", "DEAD_OWNER_CLEAR"),
        ("started", ""),
        ("finished", "completed"),
    ];
    assert_eq!(
        steps,
        expected.map(|(k, w)| (k.to_owned(), w.to_owned())).to_vec(),
        "{json:#}"
    );
    assert!(
        text.contains("reclaimed by DEAD_OWNER_CLEAR: its holder ran on this host and neither the holder nor its executor was alive"),
        "{text}"
    );
    assert!(text.contains(": completed, after"), "{text}");
    assert_eq!(json["board"]["state"], "Done");
    assert!(
        text.contains("no role claims tasks in state \"Done\""),
        "{text}"
    );
}

#[test]
fn explain_of_an_unknown_task_says_so_and_of_an_unknown_identifier_fails_naming_it() {
    let world = World::new(1, &[GOAL]);
    drop(world.ledger()); // as a runner's first start leaves it
    let task = world.sim.add_work_item("never dispatched", "Backlog");
    let (json, text) = explain(&world, &task);
    assert_eq!(json["known_to_ledger"], false);
    assert!(text.contains("ledger: no record of this task"), "{text}");
    // By the identifier people use, to the same task.
    let number = world.sim.sequence_of(&task).unwrap();
    let (by_name, _) = explain(&world, &format!("ROCK-{number}"));
    assert_eq!(by_name["task_id"], task.as_str());
    assert_eq!(by_name["board"]["identifier"], format!("ROCK-{number}"));

    let out = world.watchdog(&["explain", "ROCK-999"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ROCK-999: no such work item"), "{stderr}");
}

#[test]
fn status_shows_titles_and_watch_redraws_in_place() {
    let mut world = World::new(1, &[GOAL]);
    hold_with_a_runner(&mut world, "hang: a title worth showing");
    let text = String::from_utf8_lossy(&world.watchdog(&["status"]).stdout).into_owned();
    assert!(text.contains("hang: a title worth showing"), "{text}");
    assert!(text.contains("alive"), "{text}");

    // A real terminal: tmux, 160 columns.
    let session = format!("inflight-watch-{}", std::process::id());
    let tmux = |args: &[&str]| {
        let out = Command::new("tmux").args(args).output().expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let command = format!(
        "E2E_PLANE_KEY={KEY} {} --config {} status --watch 1",
        bin("watchdog").display(),
        world.config.display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "160",
        "-y",
        "40",
        &command,
    ]);
    let _end = Guard(|| {
        Command::new("tmux")
            .args(["kill-session", "-t", &session])
            .status()
            .ok();
    });
    let capture = || tmux(&["capture-pane", "-p", "-t", &session]);
    wait_until(Duration::from_secs(10), "the table on screen", || {
        capture().contains("hang: a title worth showing")
    });
    let first = capture();
    std::thread::sleep(Duration::from_millis(3500));
    let later = capture();
    assert!(later.contains("hang: a title worth showing"), "{later}");
    assert_eq!(
        later.matches("BACKEND").count(),
        1,
        "one table, redrawn: {later}"
    );
    assert_ne!(first, later, "the clock line moved: it was redrawn");
    let history = tmux(&["display-message", "-p", "-t", &session, "#{history_size}"]);
    assert_eq!(history.trim(), "0", "nothing scrolled off the screen");
}

struct Guard<F: FnMut()>(F);
impl<F: FnMut()> Drop for Guard<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

#[test]
fn events_filter_by_task_kind_and_limit_and_follow_shows_a_new_event_within_a_second() {
    let world = World::new(1, &[GOAL]);
    let ledger = world.ledger();
    let cycle = |task: &str, reason: FinishReason| {
        let slot = inflight_e2e::open_test_slot(
            &ledger,
            task,
            ledger_core::Owner::imported(),
            Duration::from_secs(30),
        );
        ledger
            .finish(&slot.key, Some(&slot.run_id), reason, SystemClock.now())
            .unwrap();
    };
    for _ in 0..7 {
        cycle("T", FinishReason::Completed);
        cycle("U", FinishReason::Failed);
    }
    let lines = |args: &[&str]| -> Vec<Value> {
        let out = world.watchdog(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let all_finishes_of_t = lines(&["events", "--task", "T", "--kind", "finished", "--json"]);
    assert_eq!(all_finishes_of_t.len(), 7);
    let newest = lines(&[
        "events", "--task", "T", "--kind", "finished", "--limit", "5", "--json",
    ]);
    assert_eq!(
        newest,
        all_finishes_of_t[2..],
        "the newest five, oldest first"
    );
    assert!(
        newest
            .iter()
            .all(|e| e["task_id"] == "T" && e["kind"] == "finished")
    );
    let started = lines(&[
        "events",
        "--backend",
        "local",
        "--kind",
        "started",
        "--json",
    ]);
    assert_eq!(started.len(), 14);
    assert!(lines(&["events", "--backend", "other", "--json"]).is_empty());
    // A task id that is none of Plane's: the ledger's history alone.
    let (explained, text) = explain(&world, "T");
    assert_eq!(explained["board"], Value::Null);
    assert_eq!(explained["history"].as_array().unwrap().len(), 14);
    assert_eq!(wait(&explained, "not_on_board")["reason"], "not_on_board");
    assert!(text.contains("7 dispatch(es): 7 completed"), "{text}");

    let mut follow = Command::new(bin("watchdog"))
        .args([
            "--config",
            world.config.to_str().unwrap(),
            "events",
            "--follow",
            "--task",
            "T",
            "--json",
        ])
        .env("E2E_PLANE_KEY", KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    for _ in 0..14 {
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the listing");
    }
    // Settled on following; then one more event of U (not shown) and of T.
    std::thread::sleep(Duration::from_millis(500));
    cycle("U", FinishReason::Completed);
    let written = Instant::now();
    cycle("T", FinishReason::Interrupted);
    let (first, line) = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the new event");
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (event["task_id"].as_str(), event["kind"].as_str()),
        (Some("T"), Some("started"))
    );
    assert!(
        first.duration_since(written) < Duration::from_secs(1),
        "{:?}",
        first.duration_since(written)
    );
    let (_, line) = rx.recv_timeout(Duration::from_secs(5)).expect("its finish");
    assert_eq!(
        serde_json::from_str::<Value>(&line).unwrap()["reason"],
        "interrupted"
    );
    unsafe { libc::kill(follow.id() as i32, libc::SIGTERM) };
    let status = follow.wait().unwrap();
    assert!(
        status.success(),
        "Ctrl-C or SIGTERM ends a follow cleanly: {status:?}"
    );
}
