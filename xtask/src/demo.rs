//! `cargo xtask demo`: the main job, end to end, in under a minute.
//!
//! Starts the Plane simulator with a small board, two runners (roles `goal`
//! and `review`) sharing one backend capped at 3, and the watchdog. While
//! the `goal` runner runs two long tasks it is restarted as a deploy would
//! (SIGTERM, then a new runner): the executors carry on under their
//! keepers and the new runner adopts them. Then a crash: the runner and one
//! keeper SIGKILLed; the next runner reclaims that slot at start-up. Prints
//! a timeline (what ran, what was handed over and adopted, what was
//! reclaimed by which rule and how fast) and the final board. Stops
//! everything it started, keepers included, whatever happens.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::Result;

const KEY: &str = "plane_api_demo00000000000000000000000000";

/// The variable every process the demo starts carries (keepers and
/// executors inherit it), so that it can find and stop them all.
const DEMO_MARK: &str = "INFLIGHT_DEMO_DIR";

/// The processes whose environment holds every one of `vars` (`NAME=value`).
fn processes_with(vars: &[String]) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                vars.iter()
                    .all(|v| env.split(|b| *b == 0).any(|var| var == v.as_bytes()))
            })
        })
        .collect()
}

/// Every process the demo started; all are stopped on drop, and then
/// whatever they started that still runs (keepers outlive runners).
struct Procs(Vec<(String, Child)>, String);

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (_, child) in &mut self.0 {
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in processes_with(std::slice::from_ref(&self.1)) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

struct Timeline {
    started: Instant,
}

impl Timeline {
    fn say(&self, what: impl AsRef<str>) {
        println!(
            "{:>6.1}s  {}",
            self.started.elapsed().as_secs_f64(),
            what.as_ref()
        );
    }
}

/// A tiny HTTP GET against the simulator (the demo needs no HTTP client).
fn get_json(base: &str, path: &str) -> Result<Value> {
    let addr = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("simulator at {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {KEY}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    serde_json::from_str(body).map_err(|e| format!("simulator answered {body:?}: {e}"))
}

/// Task name → state name, from the simulator's board.
fn board(base: &str, project: &str) -> Result<BTreeMap<String, String>> {
    let page = get_json(
        base,
        &format!("/api/v1/workspaces/acme/projects/{project}/work-items/?expand=state"),
    )?;
    let mut out = BTreeMap::new();
    for item in page["results"].as_array().cloned().unwrap_or_default() {
        out.insert(
            item["name"].as_str().unwrap_or("?").to_owned(),
            item["state"]["name"].as_str().unwrap_or("?").to_owned(),
        );
    }
    Ok(out)
}

fn wait_for(timeout: Duration, what: &str, mut done: impl FnMut() -> Result<bool>) -> Result {
    let deadline = Instant::now() + timeout;
    while !done()? {
        if Instant::now() > deadline {
            return Err(format!("the demo timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// `demo [--postgres]`.
pub fn command(args: &[String]) -> Result {
    match args.first().map(String::as_str) {
        None => run(),
        Some("--postgres") => run_postgres(),
        Some(other) => Err(format!(
            "demo: unexpected argument {other:?} (try --postgres)"
        )),
    }
}

pub fn run() -> Result {
    let mut build = crate::cargo();
    // The whole workspace, as `cargo xtask ci` builds it, so the two share
    // their artifacts.
    build.args(["build", "--quiet", "--workspace", "--bins"]);
    crate::run("build", build)?;
    let bin = |name: &str| crate::built("debug", name);
    let dir = std::env::temp_dir().join(format!("inflight-demo-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("logs")).map_err(|e| e.to_string())?;
    let result = demo(&dir, &bin);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn demo(dir: &Path, bin: &dyn Fn(&str) -> PathBuf) -> Result {
    let t = Timeline {
        started: Instant::now(),
    };
    let mut procs = Procs(Vec::new(), format!("{DEMO_MARK}={}", dir.display()));
    println!("\n== inflight demo (files in {}) ==\n", dir.display());

    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))
    };
    write(
        "seed.json",
        &serde_json::json!({
            "workspace": "acme",
            "api_key": KEY,
            "states": [
                {"name": "Ready for AI", "group": "unstarted"},
                {"name": "Ready for review", "group": "unstarted"},
                {"name": "Running", "group": "started"},
                {"name": "Blocked", "group": "backlog"}
            ],
            "work_items": [
                {"name": "goal: long migration", "state": "Ready for AI"},
                {"name": "goal: long refactor", "state": "Ready for AI"},
                {"name": "goal: fix flaky test", "state": "Ready for AI"},
                {"name": "review: PR 41", "state": "Ready for review"},
                {"name": "review: PR 42", "state": "Ready for review"}
            ]
        })
        .to_string(),
    )?;
    // The executor: a shell script standing in for an AI agent. A long task
    // takes 30 s the first time, so its runner can be restarted mid-run.
    write_executor(dir, "")?;

    // The simulator's per-key limit is off: the demo watches the board
    // several times a second with the runners' key, which would eat their
    // budget (see `common_tables`).
    let (base, project) = start_sim(&mut procs, dir, bin)?;
    t.say(format!("Plane simulator up at {base} with 5 tasks"));

    write(
        "inflight.toml",
        &format!(
            r#"[ledger]
path = "var/inflight.redb"

[limits]
max_concurrent = 4

{common}
[roles.review]
claim_state = "Ready for review"
running_state = "Running"
done_state = "Done"
blocked_state = "Blocked"
backend = "local"
"#,
            common = common_tables(&base, &project)
                .replace("max_concurrent = 2\n", "max_concurrent = 3\n")
                + "\n"
        )
        .replace(
            "backend = \"local\"\n\n[watcher]",
            "backend = \"local\"\nparallel = 2\n\n[watcher]",
        ),
    )?;
    let spawn = |procs: &mut Procs, name: &str, args: &[&str]| {
        spawn_named(procs, dir, bin, name, None, args)
    };
    let goal = spawn(&mut procs, "runner-goal", &["--role", "goal"])?;
    spawn(&mut procs, "runner-review", &["--role", "review"])?;
    spawn(
        &mut procs,
        "watchdog",
        &["run", "--interval", "5", "--apply"],
    )?;
    t.say(format!("runners started: goal (pid {goal}, two tasks at once) and review, sharing backend `local` (cap 3); watchdog scanning every 5 s"));

    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let report = |t: &Timeline, seen: &mut BTreeMap<String, String>| {
        report_changes(t, &base, &project, seen)
    };
    report(&t, &mut seen)?;
    let long = ["goal: long migration", "goal: long refactor"];
    wait_for(Duration::from_secs(20), "the long tasks to run", || {
        let now = report(&t, &mut seen)?;
        Ok(long
            .iter()
            .all(|n| now.get(*n).map(String::as_str) == Some("Running")))
    })?;
    let keepers = wait_for_keepers(dir, bin, 2)?;
    std::thread::sleep(Duration::from_millis(500));

    // A deploy: SIGTERM, then the new runner.
    let sent = Instant::now();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(goal as i32, libc::SIGTERM);
    }
    if let Some((_, child)) = procs.0.iter_mut().find(|(n, _)| n == "runner-goal") {
        let _ = child.wait();
    }
    t.say(format!(
        "deploy: SIGTERM runner goal (pid {goal}) while both long tasks run; it exited {} ms later",
        sent.elapsed().as_millis()
    ));
    let alive = keepers.iter().filter(|&&pid| process_alive(pid)).count();
    t.say(format!(
        "  its keepers (pids {keepers:?}): {alive} of 2 still running their executors"
    ));
    std::thread::sleep(Duration::from_secs(1));
    let pid = spawn(&mut procs, "runner-goal-2", &["--role", "goal"])?;
    wait_for(Duration::from_secs(10), "the adoption", || {
        Ok(log_lines(dir, "runner-goal-2", "adopting a keeper").len() == 2)
    })?;
    t.say(format!(
        "runner goal started again (pid {pid}) and adopted both keepers"
    ));

    // A crash: the runner and one keeper killed outright.
    let victim = keepers[1];
    // SAFETY: as above.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
        libc::kill(victim, libc::SIGKILL);
    }
    if let Some((_, child)) = procs.0.iter_mut().find(|(n, _)| n == "runner-goal-2") {
        let _ = child.wait();
    }
    t.say(format!(
        "crash: SIGKILL runner goal (pid {pid}) and keeper {victim} (its executor dies with it)"
    ));
    std::thread::sleep(Duration::from_millis(500));
    let restarted = Instant::now();
    let pid = spawn(&mut procs, "runner-goal-3", &["--role", "goal"])?;
    t.say(format!("runner goal started again (pid {pid})"));
    let mut reclaim = None;
    wait_for(Duration::from_secs(10), "the start-up reclaim", || {
        reclaim = log_lines(dir, "runner-goal-3", "reclaimed slots at start-up")
            .into_iter()
            .next();
        Ok(reclaim.is_some() || !log_lines(dir, "runner-goal-3", "claiming").is_empty())
    })?;
    let seen_after = restarted.elapsed();
    let rules: Vec<String> = ledger_events(dir, bin)?
        .into_iter()
        .filter(|e| e["reason"] == "reconciled")
        .map(|e| e["rule"].as_str().unwrap_or("?").to_owned())
        .collect();
    match &reclaim {
        Some(line) => t.say(format!(
            "  reclaimed {} slot(s) by {} in {} ms from the restart (seen by the demo after {} ms); the other keeper adopted again",
            line["reclaimed"],
            rules.join(", "),
            line["restart_to_reclaim_ms"],
            seen_after.as_millis()
        )),
        None => {
            t.say("  the restarted runner found nothing to reclaim (the watchdog got there first)")
        }
    }
    for line in log_lines(dir, "runner-goal-3", "reclaimed task put back on the board") {
        t.say(format!(
            "  its task, still Running in Plane, went back to {:?} with a comment (lost attempts: {})",
            line["state"].as_str().unwrap_or("?"),
            line["lost"]
        ));
    }

    wait_for(Duration::from_secs(60), "every task to be done", || {
        let now = report(&t, &mut seen)?;
        Ok(now.len() == 5 && now.values().all(|s| s == "Done"))
    })?;
    let comments = ledger_events(dir, bin)?
        .into_iter()
        .filter(|e| e["kind"] == "finished" && e["reason"] == "completed")
        .count();
    t.say(format!(
        "every task done ({comments} runs completed; \"long migration\" ran once, start to end, across both restarts); stopping everything"
    ));
    drop(procs);

    println!("\nfinal board:");
    for (name, state) in &seen {
        println!("  {name:<24} {state}");
    }
    println!(
        "\nlogs were in {}/logs; the demo removes its folder on exit.",
        dir.display()
    );
    Ok(())
}

/// The lines of `logs/NAME.log` (JSON) whose message is `message`.
fn log_lines(dir: &Path, name: &str, message: &str) -> Vec<Value> {
    std::fs::read_to_string(dir.join("logs").join(format!("{name}.log")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == message)
        .collect()
}

/// Whether `pid` runs (and is not a zombie).
fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// Waits until `count` slots are held by keepers; their pids, by task.
fn wait_for_keepers(dir: &Path, bin: &dyn Fn(&str) -> PathBuf, count: usize) -> Result<Vec<i32>> {
    let mut pids = Vec::new();
    wait_for(Duration::from_secs(10), "the keepers", || {
        let out = Command::new(bin("watchdog"))
            .arg("--config")
            .arg(dir.join("inflight.toml"))
            .args(["status", "--json"])
            .current_dir(dir)
            .output()
            .map_err(|e| e.to_string())?;
        let status: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let mut slots: Vec<(String, i32)> = status["slots"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|s| s["role"] == "goal" && s["executor_pid"].is_u64())
            .filter_map(|s| {
                let pid = s["owner"].as_str()?.rsplit('/').next()?.parse().ok()?;
                Some((s["started_at"].as_str()?.to_owned(), pid))
            })
            .collect();
        slots.sort();
        pids = slots.into_iter().map(|(_, pid)| pid).collect();
        Ok(pids.len() >= count)
    })?;
    Ok(pids)
}

/// The tables both demos share: the simulated Plane (with a budget to
/// match a simulator that has no limit), the one backend, the goal role
/// and a runner that looks every second.
fn common_tables(base: &str, project: &str) -> String {
    format!(
        r#"[plane]
base_url = "{base}"
workspace = "acme"
project_id = "{project}"
api_key_env = "DEMO_PLANE_KEY"
# The demo's plane-sim has no rate limit; every process of the demo draws
# from this one budget, polling every second.
rate_limit_per_minute = 3000

[backends.local]
max_concurrent = 2
command = ["./run-task.sh"]
timeout_secs = 120

[roles.goal]
claim_state = "Ready for AI"
running_state = "Running"
done_state = "Done"
blocked_state = "Blocked"
backend = "local"

[watcher]
poll_interval_secs = 1
grace_secs = 2
"#
    )
}

/// Writes the demo's executor, `run-task.sh`: a shell script standing in for
/// an AI agent. A task named `…long…` takes 30 s the first time, so its
/// runner can be killed mid-run; every task then takes 2 s. `first` is
/// shell run before that.
fn write_executor(dir: &Path, first: &str) -> Result {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("run-task.sh");
    let script = format!(
        "#!/bin/sh\n{first}marker=\"attempts-$INFLIGHT_TASK_ID\"\ncase \"$INFLIGHT_TASK_NAME\" in\n  *long*) if [ ! -e \"$marker\" ]; then touch \"$marker\"; sleep 30; fi ;;\nesac\nsleep 2\n"
    );
    std::fs::write(&path, script).map_err(|e| format!("run-task.sh: {e}"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("run-task.sh: {e}"))
}

/// The ledger's events, as `watchdog events --json` prints them.
fn ledger_events(dir: &Path, bin: &dyn Fn(&str) -> PathBuf) -> Result<Vec<Value>> {
    let out = Command::new(bin("watchdog"))
        .arg("--config")
        .arg(dir.join("inflight.toml"))
        .args(["events", "--json"])
        .current_dir(dir)
        .output()
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect())
}

/// Starts the watcher (or, for a name with `watchdog` in it, the watchdog)
/// with the demo's configuration, logging JSON to `logs/NAME.log`, as host
/// `host` when given.
fn spawn_named(
    procs: &mut Procs,
    dir: &Path,
    bin: &dyn Fn(&str) -> PathBuf,
    name: &str,
    host: Option<&str>,
    args: &[&str],
) -> Result<u32> {
    let log = std::fs::File::create(dir.join("logs").join(format!("{name}.log")))
        .map_err(|e| e.to_string())?;
    let exe = if name.contains("watchdog") {
        bin("watchdog")
    } else {
        bin("watcher")
    };
    let mut command = Command::new(exe);
    command
        .arg("--config")
        .arg(dir.join("inflight.toml"))
        .args(["--log-format", "json"])
        .args(args)
        .env("DEMO_PLANE_KEY", KEY)
        .env(DEMO_MARK, dir)
        .env("RUST_LOG", "info")
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(host) = host {
        command.env("INFLIGHT_HOST", host);
    }
    let child = command.spawn().map_err(|e| format!("{name}: {e}"))?;
    let pid = child.id();
    procs.0.push((name.into(), child));
    Ok(pid)
}

/// The board now, saying each task whose state changed since `seen`.
fn report_changes(
    t: &Timeline,
    base: &str,
    project: &str,
    seen: &mut BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    let now = board(base, project)?;
    for (name, state) in &now {
        if seen.get(name) != Some(state) {
            if seen.contains_key(name) {
                t.say(format!("{name:<24} -> {state}"));
            }
            seen.insert(name.clone(), state.clone());
        }
    }
    Ok(now)
}

/// Starts the simulator seeded from `dir/seed.json`; its base URL and
/// project id.
fn start_sim(
    procs: &mut Procs,
    dir: &Path,
    bin: &dyn Fn(&str) -> PathBuf,
) -> Result<(String, String)> {
    let mut sim = Command::new(bin("plane-sim"))
        .args(["--port", "0", "--rate-limit", "0", "--seed"])
        .arg(dir.join("seed.json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("plane-sim: {e}"))?;
    let mut line = String::new();
    BufReader::new(sim.stdout.take().ok_or("plane-sim: no stdout")?)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    procs.0.push(("plane-sim".into(), sim));
    let info: Value =
        serde_json::from_str(&line).map_err(|e| format!("plane-sim said {line:?}: {e}"))?;
    let field = |name: &str| {
        info[name]
            .as_str()
            .map(str::to_owned)
            .ok_or(format!("plane-sim: no {name}"))
    };
    Ok((field("base_url")?, field("project_id")?))
}

/// `cargo xtask demo --postgres`: two hosts share one cap on a throwaway
/// PostgreSQL; host `a` is killed whole (its runner and its executors) in
/// the middle of a task; host `b`'s watchdog reclaims `a`'s slots once their
/// lease ran out (`LEASE_EXPIRED_CLEAR`), and `b`'s runner finishes them.
pub fn run_postgres() -> Result {
    let mut build = crate::cargo();
    build.args(["build", "--quiet", "--workspace", "--bins"]);
    crate::run("build", build)?;
    let bin = |name: &str| crate::built("debug", name);
    let server = ledger_postgres::test_server::TestServer::start().map_err(|e| e.to_string())?;
    server
        .create_database("inflight")
        .map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("inflight-demo-pg-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("logs")).map_err(|e| e.to_string())?;
    let result = demo_postgres(&dir, &bin, &server.url("inflight"));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn demo_postgres(dir: &Path, bin: &dyn Fn(&str) -> PathBuf, url: &str) -> Result {
    let t = Timeline {
        started: Instant::now(),
    };
    let mut procs = Procs(Vec::new(), format!("{DEMO_MARK}={}", dir.display()));
    println!(
        "\n== inflight demo on PostgreSQL, two hosts (files in {}) ==\n",
        dir.display()
    );
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))
    };
    let tasks = [
        "long migration",
        "long refactor",
        "fix flaky test",
        "bump deps",
    ];
    write(
        "seed.json",
        &serde_json::json!({
            "workspace": "acme",
            "api_key": KEY,
            "states": [
                {"name": "Ready for AI", "group": "unstarted"},
                {"name": "Running", "group": "started"},
                {"name": "Blocked", "group": "backlog"}
            ],
            "work_items": tasks.iter().map(|n| serde_json::json!({"name": n, "state": "Ready for AI"})).collect::<Vec<_>>()
        })
        .to_string(),
    )?;
    // A long task takes 30 s the first time.
    write_executor(dir, "")?;
    let (base, project) = start_sim(&mut procs, dir, bin)?;
    t.say(format!(
        "Plane simulator up at {base} with {} tasks; PostgreSQL at {url}",
        tasks.len()
    ));
    write(
        "inflight.toml",
        &format!(
            r#"[ledger]
store = "postgres"
url = "{url}"
schema = "demo"
lease_secs = 6
renew_secs = 1

{common}"#,
            common = common_tables(&base, &project)
        ),
    )?;
    let spawn = |procs: &mut Procs, host: &str, name: &str, args: &[&str]| {
        spawn_named(procs, dir, bin, name, Some(host), args)
    };
    let a = [
        spawn(&mut procs, "a", "runner-a1", &["--role", "goal"])?,
        spawn(&mut procs, "a", "runner-a2", &["--role", "goal"])?,
    ];
    t.say(format!("host a: two runners (pids {a:?}); one cap of 2 for both hosts, leases of 6 s by the database's clock"));
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let report = |t: &Timeline, seen: &mut BTreeMap<String, String>| {
        report_changes(t, &base, &project, seen)
    };
    report(&t, &mut seen)?;
    wait_for(
        Duration::from_secs(20),
        "host a to run both long tasks",
        || {
            let now = report(&t, &mut seen)?;
            Ok(["long migration", "long refactor"]
                .iter()
                .all(|n| now.get(*n).map(String::as_str) == Some("Running")))
        },
    )?;
    let b = spawn(&mut procs, "b", "runner-b", &["--role", "goal"])?;
    spawn(
        &mut procs,
        "b",
        "watchdog-b",
        &["run", "--interval", "1", "--apply"],
    )?;
    t.say(format!(
        "host b: runner (pid {b}) and watchdog (scans every 1 s); the cap is full, so b waits"
    ));
    std::thread::sleep(Duration::from_secs(2));

    // Host a, whole: its runners, its keepers and their executors (every
    // process the demo started as host a, and what they started).
    let killed = processes_with(&[procs.1.clone(), "INFLIGHT_HOST=a".to_owned()]);
    for pid in &killed {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(*pid, libc::SIGKILL);
        }
    }
    let kill_time = Instant::now();
    t.say(format!(
        "SIGKILL host a whole: runners {a:?}, their keepers and executors ({} processes)",
        killed.len()
    ));
    for (_, child) in procs
        .0
        .iter_mut()
        .filter(|(n, _)| n.starts_with("runner-a"))
    {
        let _ = child.wait();
    }
    let mut reclaimed = Vec::new();
    wait_for(
        Duration::from_secs(30),
        "host b to reclaim host a's slots",
        || {
            report(&t, &mut seen)?;
            reclaimed = ledger_events(dir, bin)?
                .into_iter()
                .filter(|e| e["reason"] == "reconciled")
                .collect();
            Ok(reclaimed.len() >= 2)
        },
    )?;
    t.say(format!(
        "host b reclaimed {} slot(s) by {} {:.1} s after the kill (lease 6 s + grace 2 s + a scan)",
        reclaimed.len(),
        reclaimed
            .iter()
            .filter_map(|e| e["rule"].as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join(", "),
        kill_time.elapsed().as_secs_f64()
    ));
    wait_for(Duration::from_secs(60), "every task to be done", || {
        let now = report(&t, &mut seen)?;
        Ok(now.len() == tasks.len() && now.values().all(|s| s == "Done"))
    })?;
    t.say("every task done, the long ones by host b; stopping everything");
    drop(procs);
    println!("\nfinal board:");
    for (name, state) in &seen {
        println!("  {name:<18} {state}");
    }
    Ok(())
}
