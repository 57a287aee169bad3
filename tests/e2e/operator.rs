//! The operator's commands against a real ledger, configuration errors,
//! and inputs that must not make anything panic.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[test]
fn status_events_release_and_import_work_on_a_real_ledger() {
    let world = World::new(2, &[Role::new("goal", "Ready for AI")]);
    let usage = world.path("usage.json");
    std::fs::write(
        &usage,
        json!({"events": [
            {"kind": "execution_started", "task_id": "T1", "backend": "local", "timestamp": "2026-11-01T10:00:00Z"},
            {"kind": "execution_started", "task_id": "T2", "backend": "local", "timestamp": "2026-11-01T10:01:00Z"},
            {"kind": "execution_finished", "task_id": "T2", "backend": "local", "timestamp": "2026-11-01T10:02:00Z"},
            {"kind": "skip_budget", "backend": "local", "timestamp": "2026-11-01T10:03:00Z"},
            {"kind": "execution_started", "task_id": 7, "backend": "local", "timestamp": "2026-11-01T10:04:00Z"}
        ]})
        .to_string(),
    )
    .unwrap();
    let report = world.watchdog_json(&["import-usage-json", usage.to_str().unwrap()]);
    assert_eq!(
        (report["slots_opened"].clone(), report["malformed"].clone()),
        (json!(1), json!(1))
    );
    let again = world.watchdog_json(&["import-usage-json", usage.to_str().unwrap()]);
    assert_eq!(again["events_recorded"], 0);

    let status = world.watchdog_json(&["status", "--json"]);
    assert_eq!(status["total_open"], 1);
    let slot = &status["slots"][0];
    assert_eq!(
        (slot["backend"].clone(), slot["task_id"].clone()),
        (json!("local"), json!("T1"))
    );
    assert_eq!(slot["liveness"], "unknown");
    assert_eq!(
        status["backends"]["local"],
        json!({"open": 1, "max_concurrent": 2})
    );
    let text = world.watchdog(&["status"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("local           1 / 2"));

    let events = events_json(&world);
    assert_eq!(events.len(), 3);
    let since = world.watchdog(&["events", "--since", "2026-11-01T10:01:30Z"]);
    assert_eq!(String::from_utf8_lossy(&since.stdout).lines().count(), 1);

    let release = world.watchdog(&[
        "release",
        "--backend",
        "local",
        "--task",
        "T1",
        "--run",
        "wrong-run",
    ]);
    assert!(String::from_utf8_lossy(&release.stdout).contains("not released"));
    let release = world.watchdog(&["release", "--backend", "local", "--task", "T1"]);
    assert!(release.status.success());
    assert!(String::from_utf8_lossy(&release.stdout).starts_with("released local/T1"));
    assert!(world.open_slots().is_empty());
    let last = events_json(&world).pop().unwrap();
    assert_eq!(last["reason"], "released_by_operator");

    // A backend nobody configured: a typo is an error naming it and the
    // backends there are, not "nothing to release"…
    let typo = world.watchdog(&["release", "--backend", "nob", "--task", "T1"]);
    assert_eq!(typo.status.code(), Some(2));
    let said = String::from_utf8_lossy(&typo.stderr);
    assert!(
        said.contains("--backend nob") && said.contains("backends: local"),
        "{said}"
    );
    // …unless the ledger still holds a slot of it (a backend taken out of
    // the configuration while a run was open).
    std::fs::write(
        &usage,
        json!({"events": [
            {"kind": "execution_started", "task_id": "T9", "backend": "retired", "timestamp": "2026-11-01T11:00:00Z"}
        ]})
        .to_string(),
    )
    .unwrap();
    world.watchdog_json(&["import-usage-json", usage.to_str().unwrap()]);
    let retired = world.watchdog(&["release", "--backend", "retired", "--task", "T9"]);
    assert!(
        retired.status.success(),
        "{}",
        String::from_utf8_lossy(&retired.stderr)
    );
    assert!(String::from_utf8_lossy(&retired.stdout).starts_with("released retired/T9"));
}

#[test]
fn configuration_errors_exit_2_naming_the_key() {
    let world = World::new(2, &[Role::new("goal", "Ready for AI")]);
    let original = std::fs::read_to_string(&world.config).unwrap();
    let cases = [
        (
            original.replace(
                "max_concurrent = 2",
                "max_concurrent = 2\nmax_per_fortnight = 3",
            ),
            "max_per_fortnight",
        ),
        (
            original.replace("max_concurrent = 2", "max_concurrent = \"two\""),
            "max_concurrent",
        ),
        (
            original.replace("backend = \"local\"", "backend = \"gpu\""),
            "roles.goal.backend",
        ),
        (
            original.replace("E2E_PLANE_KEY", "E2E_UNSET_KEY_VARIABLE"),
            "E2E_UNSET_KEY_VARIABLE",
        ),
        // The missing key is said even when the ledger could not be opened
        // either: the configuration error first, not hidden behind the
        // store's.
        (
            original
                .replace("E2E_PLANE_KEY", "E2E_UNSET_KEY_VARIABLE")
                .replace(
                    "path = \"var/inflight.redb\"",
                    "path = \"/proc/no-such/inflight.redb\"",
                ),
            "E2E_UNSET_KEY_VARIABLE",
        ),
    ];
    for (text, culprit) in cases {
        std::fs::write(&world.config, &text).unwrap();
        let mut command = Command::new(bin("watcher"));
        command
            .arg("--config")
            .arg(&world.config)
            .args(["--role", "goal", "--once"])
            .env("E2E_PLANE_KEY", KEY);
        let out = command.output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "watcher with {culprit}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(culprit),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = world.watchdog(&["scan"]);
        assert_eq!(out.status.code(), Some(2), "watchdog with {culprit}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(culprit));
    }
    std::fs::write(&world.config, original).unwrap();
}

#[test]
fn odd_inputs_give_errors_not_panics() {
    let world = World::new(2, &[Role::new("goal", "Ready for AI")]);
    let runs: Vec<(Vec<&str>, Option<i32>)> = vec![
        (vec!["--help"], Some(0)),
        (vec!["--version"], Some(0)),
        (vec!["frobnicate"], Some(2)),
        (vec!["events", "--since", "yesterday"], Some(2)),
        (vec!["release", "--backend", "", "--task", "T"], Some(2)),
        (
            vec!["release", "--backend", "b\u{7}", "--task", "T"],
            Some(2),
        ),
        (vec!["run", "--interval", "0"], Some(2)),
        (
            vec!["import-usage-json", "/nonexistent/usage.json"],
            Some(1),
        ),
        (vec!["status", "--log-format", "xml"], Some(2)),
    ];
    for (args, code) in runs {
        let out = world.watchdog(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), code, "{args:?}: {stderr}");
    }
    // A ledger path that is not a ledger: exit 1, naming the file.
    std::fs::create_dir_all(world.path("var")).unwrap();
    std::fs::write(world.path("var/inflight.redb"), b"not a ledger").unwrap();
    let out = world.watchdog(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("inflight.redb is not an inflight ledger")
    );
    assert_eq!(
        std::fs::read(world.path("var/inflight.redb")).unwrap(),
        b"not a ledger"
    );
    for args in [
        vec!["--help"],
        vec!["--version"],
        vec!["--config"],
        vec!["--role", "x", "--config", "/nonexistent.toml"],
    ] {
        let out = Command::new(bin("watcher")).args(&args).output().unwrap();
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("panicked"),
            "{args:?}"
        );
        let expected = if args[0].starts_with("--h") || args[0].starts_with("--v") {
            0
        } else {
            2
        };
        assert_eq!(out.status.code(), Some(expected), "{args:?}");
    }
}

/// The API key appears in the output of no command, at any log level, in
/// either log format — including when things go wrong.
#[test]
fn the_api_key_never_reaches_any_output() {
    use plane_sim::{Fault, FaultRule};
    let world = World::new(2, &[Role::new("goal", "Ready for AI")]);
    world.sim.add_work_item("plain job", "Ready for AI");
    world.sim.add_work_item("fail job", "Ready for AI");
    let usage = world.path("usage.json");
    std::fs::write(&usage, r#"{"events": []}"#).unwrap();
    let mut outputs = Vec::new();
    for (level, format) in [
        ("trace", "text"),
        ("trace", "json"),
        ("debug", "json"),
        ("info", "text"),
    ] {
        for fault in [
            None,
            Some(Fault::Status(503)),
            Some(Fault::ProjectForbidden),
        ] {
            if let Some(fault) = fault {
                world.sim.inject(FaultRule::new(fault).times(3));
            }
            let mut watcher = Command::new(bin("watcher"));
            watcher
                .arg("--config")
                .arg(&world.config)
                .args(["--role", "goal", "--once", "--log-format", format])
                .env("E2E_PLANE_KEY", KEY)
                .env("E2E_DIR", world.dir.path())
                .env("RUST_LOG", level);
            outputs.push(watcher.output().unwrap());
            for args in [
                vec!["scan"],
                vec!["scan", "--apply"],
                vec!["status"],
                vec!["status", "--json"],
                vec!["events", "--json"],
                vec!["release", "--backend", "local", "--task", "T"],
                vec!["import-usage-json", usage.to_str().unwrap()],
            ] {
                let mut command = Command::new(bin("watchdog"));
                command
                    .arg("--config")
                    .arg(&world.config)
                    .args(&args)
                    .args(["--log-format", format])
                    .env("E2E_PLANE_KEY", KEY)
                    .env("RUST_LOG", level);
                outputs.push(command.output().unwrap());
            }
            world.sim.clear_faults();
        }
    }
    let mut bytes = 0;
    for out in &outputs {
        for stream in [&out.stdout, &out.stderr] {
            bytes += stream.len();
            assert!(
                !String::from_utf8_lossy(stream).contains(KEY),
                "the key leaked: {}",
                String::from_utf8_lossy(stream)
            );
        }
    }
    assert!(
        bytes > 10_000,
        "the commands said almost nothing ({bytes} bytes): the test would prove nothing"
    );
}

/// Text logs written to a file carry no terminal escapes (issue 22): the
/// runner's, its keepers' (which share its stderr) and the watchdog's.
#[test]
fn text_logs_to_a_file_carry_no_colour_codes() {
    let mut world = World::new(2, &[Role::new("goal", "Ready for AI")]);
    let task = world.sim.add_work_item("plain job", "Ready for AI");
    let runner = world.spawn_args(
        "watcher",
        &["--role", "goal", "--log-format", "text"],
        "text-runner",
    );
    wait_until(Duration::from_secs(20), "the task done", || {
        world.sim.state_of(&task).as_deref() == Some("Done")
    });
    world.signal(runner, libc::SIGTERM);
    world.wait(runner, Duration::from_secs(10));
    // Something for the watchdog to say: a dead runner's slot to reclaim.
    world.slot_of_a_dead_runner("orphan-task");
    let scan = world.watchdog(&["--log-format", "text", "scan", "--apply"]);
    let logs = [
        world.log("text-runner"),
        String::from_utf8_lossy(&scan.stderr).into_owned(),
    ];
    for log in &logs {
        assert!(!log.is_empty(), "nothing was logged");
        assert!(!log.contains('\u{1b}'), "{log}");
    }
    assert!(logs[0].contains("keeping the run"), "{}", logs[0]);
}

/// `status`, `events` and `metrics` only look: on a missing ledger they
/// exit 1 naming it and create nothing; on a ledger they leave every byte
/// as it was; and they read one on a read-only mount (as root, where a
/// bind mount can be made; skipped with a message elsewhere).
#[test]
fn inspection_creates_nothing_changes_nothing_and_reads_a_read_only_mount() {
    let world = World::new(2, &[Role::new("goal", "Ready for AI")]);
    let ledger = world.path("var/inflight.redb");
    let inspections: [&[&str]; 4] = [
        &["status"],
        &["status", "--json"],
        &["events"],
        &["metrics"],
    ];
    for args in inspections {
        let out = world.watchdog(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&ledger.display().to_string()) && stderr.contains("no ledger here"),
            "{args:?} names the missing ledger: {stderr}"
        );
        assert!(!ledger.exists(), "{args:?} created the ledger");
        assert!(
            !ledger.parent().unwrap().exists(),
            "{args:?} created its folder"
        );
    }

    // A ledger with a slot and its history, then only looked at.
    world.slot_from_elsewhere("T1", Some(world.project()));
    drop(world.ledger());
    let before = std::fs::read(&ledger).unwrap();
    for args in inspections {
        let out = world.watchdog(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        std::fs::read(&ledger).unwrap() == before,
        "an inspection changed the ledger's bytes"
    );

    // The same folder mounted read-only elsewhere.
    let mounted = world.path("ro");
    std::fs::create_dir_all(&mounted).unwrap();
    let mount = |args: &[&str]| {
        std::process::Command::new("mount")
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    let var = ledger.parent().unwrap().to_str().unwrap().to_owned();
    let target = mounted.to_str().unwrap().to_owned();
    if !(mount(&["--bind", &var, &target]) && mount(&["-o", "remount,bind,ro", &target])) {
        eprintln!("skipped the read-only mount: this machine cannot bind-mount (not root?)");
        let _ = mount_cleanup(&target);
        return;
    }
    let config = std::fs::read_to_string(world.path("inflight.toml"))
        .unwrap()
        .replace(
            "path = \"var/inflight.redb\"",
            "path = \"ro/inflight.redb\"",
        );
    let ro_config = world.path("inflight-ro.toml");
    std::fs::write(&ro_config, config).unwrap();
    let writable = std::fs::OpenOptions::new()
        .write(true)
        .open(mounted.join("inflight.redb"))
        .is_ok();
    let outputs: Vec<_> = inspections
        .iter()
        .map(|args| (args, world.watchdog_with(&ro_config, args)))
        .collect();
    let _ = mount_cleanup(&target);
    assert!(
        !writable,
        "the read-only mount let the ledger be opened for writing"
    );
    for (args, out) in outputs {
        assert!(
            out.status.success(),
            "{args:?} on a read-only mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn mount_cleanup(target: &str) -> std::io::Result<std::process::Output> {
    std::process::Command::new("umount").arg(target).output()
}

/// Every line on stderr, as JSON; panics naming the line that is not.
fn json_lines(what: &str, out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{what}: a stderr line is not JSON ({e}): {line}"))
        })
        .collect()
}

/// With `--log-format json`, every line on stderr is one JSON object: a bad
/// configuration's error, a damaged ledger's (one clean line, none of the
/// storage engine's panic text) and a normal run's.
#[test]
fn json_logs_are_json_on_every_line() {
    let world = World::new(2, &[Role::new("goal", "Ready for AI")]);
    let task = world.sim.add_work_item("logged in JSON", "Ready for AI");
    let run = world.run_bin(
        "watcher",
        &["--role", "goal", "--once", "--log-format", "json"],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let lines = json_lines("a normal run", &run);
    assert!(
        lines.iter().any(|l| l["message"] == "claiming"),
        "{lines:?}"
    );
    assert_eq!(world.sim.state_of(&task).as_deref(), Some("Done"));
    let status = world.run_bin("watchdog", &["--log-format", "json", "status"]);
    assert!(status.status.success());
    json_lines("watchdog status", &status);

    // A ledger with a damaged page (a file the fuzzer found that trips the
    // storage engine): one line, the error, naming the file.
    let damaged = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/ledger-core/tests/data/fuzz/ledger_open-5342dffe.redb");
    std::fs::copy(&damaged, world.path("var/inflight.redb")).unwrap();
    for (program, args) in [
        ("watchdog", &["--log-format", "json", "scan"][..]),
        (
            "watcher",
            &["--role", "goal", "--once", "--log-format", "json"][..],
        ),
    ] {
        let out = world.run_bin(program, args);
        assert_eq!(out.status.code(), Some(1), "{program} {args:?}");
        let lines = json_lines(&format!("{program} on a damaged ledger"), &out);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(lines.len(), 1, "{program} {args:?}: one line, not {stderr}");
        assert_eq!(lines[0]["level"], "ERROR");
        assert!(
            stderr.contains("inflight.redb") && !stderr.contains("panicked"),
            "{program}: {stderr}"
        );
    }

    // A bad configuration: exit 2, its error a JSON line naming the key.
    let original = std::fs::read_to_string(&world.config).unwrap();
    std::fs::write(
        &world.config,
        original.replace("max_concurrent = 2", "max_concurrent = \"two\""),
    )
    .unwrap();
    for (program, args) in [
        ("watchdog", &["--log-format", "json", "status"][..]),
        (
            "watcher",
            &["--role", "goal", "--once", "--log-format", "json"][..],
        ),
    ] {
        let out = world.run_bin(program, args);
        assert_eq!(out.status.code(), Some(2), "{program}");
        let lines = json_lines(&format!("{program} with a bad configuration"), &out);
        assert!(
            lines.iter().any(|l| l["message"]
                .as_str()
                .is_some_and(|m| m.contains("max_concurrent"))),
            "{program}: {lines:?}"
        );
    }
}

/// `check-config` checks a role that has a key of its own with that key:
/// a key the project refuses is named (exit 2), the right one passes.
#[test]
fn check_config_checks_each_roles_own_key() {
    let world = World::with_executor_env(
        2,
        &[Role::new("goal", "Ready for AI")],
        &[("E2E_ROLE_KEY", "plane_api_not_this_one")],
    );
    world.configure("roles.goal", r#"api_key_env = "E2E_ROLE_KEY""#);
    let out = world.watchdog(&["check-config"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("roles.goal.api_key_env") && stderr.contains("E2E_ROLE_KEY"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("plane_api_not_this_one"),
        "the key leaked: {stderr}"
    );
    std::fs::write(world.path("executor.env"), format!("E2E_ROLE_KEY={KEY}\n")).unwrap();
    let out = world.watchdog(&["check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The configuration's line naming the backend's command.
fn command_line(world: &World) -> String {
    let text = std::fs::read_to_string(world.path("inflight.toml")).unwrap();
    text.lines()
        .find(|l| l.starts_with("command = "))
        .unwrap()
        .to_owned()
}

/// `check-config` refuses a backend whose command cannot be started (the
/// first task would otherwise go to the blocked state), naming the
/// backend and the program; a bare name is looked up in `PATH`.
#[test]
fn check_config_refuses_a_command_that_cannot_start() {
    let world = World::new(2, &[Role::new("goal", "Ready for AI")]);
    let line = command_line(&world);
    for (command, said) in [
        (
            r#"command = ["/nonexistent/agent", "--go"]"#,
            "/nonexistent/agent",
        ),
        (
            r#"command = ["no-such-agent-anywhere"]"#,
            "no-such-agent-anywhere: no executable of that name in PATH",
        ),
        // A file, but not one that can run.
        (r#"command = ["./inflight.toml"]"#, "not an executable file"),
    ] {
        world.edit_config(&line, command);
        let out = world.watchdog(&["check-config"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains("backends.local.command") && stderr.contains(said),
            "{command}: {stderr}"
        );
        world.edit_config(command, &line);
    }
    // A bare name found in PATH passes.
    world.edit_config(&line, r#"command = ["sh", "-c", "true"]"#);
    let out = world.watchdog(&["check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One record of the log that cannot be read (damaged, or written by a
/// newer inflight) is listed in its place; the rest is listed around it,
/// with `--since` too, and the command still exits 1 to say the ledger is
/// not whole. On PostgreSQL likewise.
#[test]
fn events_lists_an_unreadable_record_in_place_and_goes_on() {
    for postgres in [false, true] {
        let mut world = World::new(2, &[Role::new("goal", "Ready for AI")]);
        if postgres {
            world = world.on_postgres();
        }
        let usage = world.path("usage.json");
        std::fs::write(
            &usage,
            json!({"events": [
                {"kind": "execution_started", "task_id": "T1", "backend": "local", "timestamp": "2026-11-01T10:00:00Z"},
                {"kind": "execution_started", "task_id": "T2", "backend": "local", "timestamp": "2026-11-01T10:01:00Z"},
                {"kind": "execution_finished", "task_id": "T2", "backend": "local", "timestamp": "2026-11-01T10:02:00Z"}
            ]})
            .to_string(),
        )
        .unwrap();
        world.watchdog_json(&["import-usage-json", usage.to_str().unwrap()]);
        assert_eq!(events_json(&world).len(), 3);
        // Damage the second record.
        let damaged = r#"{"seq":2,"at":"2026-11-01T10:01:00Z","kind":"from_the_future"}"#;
        if postgres {
            let options = world.pg_options();
            let mut client = postgres::Client::connect(&options.url, postgres::NoTls).unwrap();
            client
                .execute(
                    &format!(
                        "UPDATE \"{}\".events SET event = $1 WHERE seq = 2",
                        options.schema
                    ),
                    &[&damaged],
                )
                .unwrap();
        } else {
            let db = redb::Database::open(world.path("var/inflight.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            {
                const EVENTS: redb::TableDefinition<u64, &[u8]> =
                    redb::TableDefinition::new("events");
                let mut table = txn.open_table(EVENTS).unwrap();
                table.insert(2, damaged.as_bytes()).unwrap();
            }
            txn.commit().unwrap();
        }
        for args in [
            &["events"][..],
            &["events", "--json"],
            &["events", "--since", "2026-11-01T10:00:30Z"],
        ] {
            let out = world.watchdog(args);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{postgres} {args:?}: {stderr}");
            assert!(
                stderr.contains("1 event record(s) could not be read"),
                "{stderr}"
            );
            let lines: Vec<&str> = stdout.lines().collect();
            let expected = if args.contains(&"--since") { 2 } else { 3 };
            assert_eq!(lines.len(), expected, "{postgres} {args:?}: {stdout}");
            let unreadable = lines
                .iter()
                .position(|l| l.contains("unreadable"))
                .unwrap_or_else(|| panic!("{postgres} {args:?}: {stdout}"));
            // In its place: after seq 1 (when listed), before seq 3.
            assert_eq!(unreadable, expected - 2, "{postgres} {args:?}: {stdout}");
            if args.contains(&"--json") {
                let record: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
                assert_eq!(
                    (record["seq"].clone(), record["kind"].clone()),
                    (json!(2), json!("unreadable"))
                );
            }
        }
    }
}

/// A backend whose command cannot be started: the task goes to its
/// blocked state, and the log line that says why has a message (the
/// program and the error), not only fields.
#[test]
fn an_executor_that_cannot_start_is_said_in_the_log_line_s_message() {
    let mut world = World::new(2, &[Role::new("goal", "Ready for AI")]);
    world.edit_config(&command_line(&world), r#"command = ["/nonexistent/agent"]"#);
    let task = world.sim.add_work_item("cannot start", "Ready for AI");
    let runner = world.start_runner("goal", "runner");
    wait_until(Duration::from_secs(20), "the task blocked", || {
        world.sim.state_of(&task).as_deref() == Some("Blocked")
    });
    world.signal(runner, libc::SIGTERM);
    world.wait(runner, Duration::from_secs(10));
    let said: Vec<serde_json::Value> = world
        .log("runner")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &serde_json::Value| l["level"] == "ERROR")
        .collect();
    assert!(
        said.iter().any(|l| l["message"].as_str().is_some_and(|m| m
            .contains("could not start the executor")
            && m.contains("/nonexistent/agent"))),
        "{said:#?}"
    );
}

/// `check-config --offline` (a unit's `ExecStartPre=`) needs neither Plane
/// nor the ledger: it passes with Plane refusing every request, and exits
/// 2 naming the culprit for an unset key variable, a command that cannot
/// start, a ledger folder that neither exists nor can be made.
#[test]
fn check_config_offline_checks_what_needs_neither_plane_nor_the_ledger() {
    let world = World::new(2, &[Role::new("goal", "Ready for AI")]);
    world
        .sim
        .inject(plane_sim::FaultRule::new(plane_sim::Fault::Status(503)));
    let out = world.watchdog(&["check-config", "--offline"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration: ok (offline"));
    assert_eq!(world.sim.requests().len(), 0, "Plane was asked");
    let line = command_line(&world);
    for (from, to, culprit) in [
        (
            "E2E_PLANE_KEY",
            "E2E_UNSET_KEY_VARIABLE",
            "E2E_UNSET_KEY_VARIABLE",
        ),
        (
            line.as_str(),
            r#"command = ["/nonexistent/agent"]"#,
            "backends.local.command",
        ),
        // A folder that can be neither found nor made (here below a file;
        // under the unit's sandbox, most of the file system is read-only).
        (
            "path = \"var/inflight.redb\"",
            "path = \"inflight.toml/var/inflight.redb\"",
            "ledger.path",
        ),
    ] {
        world.edit_config(from, to);
        let out = world.watchdog(&["check-config", "--offline"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{culprit}: {stderr}");
        assert!(stderr.contains(culprit), "{culprit}: {stderr}");
        world.edit_config(to, from);
    }
}

/// `--version` names the commit the binaries were built from (`unknown`
/// outside a git checkout, or `INFLIGHT_COMMIT` as a package sets it).
#[test]
fn version_names_the_commit() {
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    for program in ["watcher", "watchdog"] {
        let out = Command::new(bin(program))
            .arg("--version")
            .output()
            .unwrap();
        assert!(out.status.success());
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            said.starts_with(program) && said.contains(&format!("(commit {head})")),
            "{program} --version: {said}"
        );
    }
}
