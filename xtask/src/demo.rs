//! `cargo xtask demo`: the main job, end to end, in under a minute.
//!
//! Starts the Plane simulator with a small board, two runners (roles `goal`
//! and `review`) sharing one backend capped at 2, and the watchdog. Kills
//! the `goal` runner with SIGKILL while it runs a task, starts it again, and
//! prints a timeline: what ran, what was killed, what was reclaimed by
//! which rule and how fast, and the final board. Stops everything it
//! started, whatever happens.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::Result;

const KEY: &str = "plane_api_demo00000000000000000000000000";

/// Every process the demo started; all are stopped on drop.
struct Procs(Vec<(String, Child)>);

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
pub fn command(root: &Path, args: &[String]) -> Result {
    match args.first().map(String::as_str) {
        None => run(root),
        Some("--postgres") => run_postgres(root),
        Some(other) => Err(format!(
            "demo: unexpected argument {other:?} (try --postgres)"
        )),
    }
}

pub fn run(root: &Path) -> Result {
    let mut build = crate::cargo();
    // The whole workspace, as `cargo xtask ci` builds it, so the two share
    // their artifacts.
    build.args(["build", "--quiet", "--workspace", "--bins"]);
    crate::run("build", build)?;
    let bin = |name: &str| root.join("target/debug").join(name);
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
    let mut procs = Procs(Vec::new());
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
                {"name": "goal: fix flaky test", "state": "Ready for AI"},
                {"name": "goal: bump deps", "state": "Ready for AI"},
                {"name": "review: PR 41", "state": "Ready for review"},
                {"name": "review: PR 42", "state": "Ready for review"}
            ]
        })
        .to_string(),
    )?;
    // The executor: a shell script standing in for an AI agent. The long
    // task takes 30 s the first time, so the runner can be killed mid-run.
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
    t.say(format!("runners started: goal (pid {goal}) and review, sharing backend `local` (cap 2); watchdog scanning every 5 s"));

    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let report = |t: &Timeline, seen: &mut BTreeMap<String, String>| {
        report_changes(t, &base, &project, seen)
    };
    report(&t, &mut seen)?;
    wait_for(Duration::from_secs(20), "the long task to run", || {
        Ok(report(&t, &mut seen)?
            .get("goal: long migration")
            .map(String::as_str)
            == Some("Running"))
    })?;
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(goal as i32, libc::SIGKILL);
    }
    t.say(format!(
        "SIGKILL runner goal (pid {goal}) in the middle of \"goal: long migration\""
    ));
    if let Some((_, child)) = procs.0.iter_mut().find(|(n, _)| n == "runner-goal") {
        let _ = child.wait();
    }
    std::thread::sleep(Duration::from_millis(500));

    let restarted = Instant::now();
    let pid = spawn(&mut procs, "runner-goal-2", &["--role", "goal"])?;
    t.say(format!("runner goal restarted (pid {pid})"));
    let mut reclaim = None;
    wait_for(Duration::from_secs(10), "the start-up reclaim", || {
        let log = std::fs::read_to_string(dir.join("logs/runner-goal-2.log")).unwrap_or_default();
        reclaim = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["message"] == "reclaimed slots at start-up");
        Ok(reclaim.is_some() || log.contains("claiming"))
    })?;
    let seen_after = restarted.elapsed();
    let rules: Vec<String> = ledger_events(dir, bin)?
        .into_iter()
        .filter(|e| e["reason"] == "reconciled")
        .map(|e| e["rule"].as_str().unwrap_or("?").to_owned())
        .collect();
    match &reclaim {
        Some(line) => t.say(format!(
            "reclaimed {} slot(s) by {} in {} ms from the restart (seen by the demo after {} ms)",
            line["reclaimed"],
            rules.join(", "),
            line["restart_to_reclaim_ms"],
            seen_after.as_millis()
        )),
        None => {
            t.say("the restarted runner found nothing to reclaim (the watchdog got there first)")
        }
    }
    let log = std::fs::read_to_string(dir.join("logs/runner-goal-2.log")).unwrap_or_default();
    for line in log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    {
        if line["message"] == "reclaimed task put back on the board" {
            t.say(format!(
                "its task, still Running in Plane, went back to {:?} with a comment (lost attempts: {})",
                line["state"].as_str().unwrap_or("?"),
                line["lost"]
            ));
        }
    }

    wait_for(Duration::from_secs(40), "every task to be done", || {
        let now = report(&t, &mut seen)?;
        Ok(now.len() == 5 && now.values().all(|s| s == "Done"))
    })?;
    t.say("every task done; stopping everything");
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
pub fn run_postgres(root: &Path) -> Result {
    let mut build = crate::cargo();
    build.args(["build", "--quiet", "--workspace", "--bins"]);
    crate::run("build", build)?;
    let bin = |name: &str| root.join("target/debug").join(name);
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
    let mut procs = Procs(Vec::new());
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
    // A long task takes 30 s the first time; each executor notes its
    // process group under its host's name, so the demo can kill a host whole.
    write_executor(dir, "echo $$ > \"pgid-$INFLIGHT_HOST-$INFLIGHT_TASK_ID\"\n")?;
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

    // Host a, whole: its runners and every executor group they started.
    let mut killed = a.to_vec();
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("pgid-a-")
            && let Some(pgid) = std::fs::read_to_string(entry.path())
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
        {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            killed.push(pgid as u32);
        }
    }
    for pid in a {
        // SAFETY: as above.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
    let kill_time = Instant::now();
    t.say(format!(
        "SIGKILL host a whole: runners and executor groups {killed:?}"
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
