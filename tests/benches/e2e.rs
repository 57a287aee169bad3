//! `cargo xtask bench e2e`: the runner as an operator experiences it.
//!
//! - restart → reclaim: a runner and the keeper of its dispatch are
//!   SIGKILLed mid-dispatch and the runner started again; how long until
//!   the dead slot is reclaimed (target: under 1 s);
//! - a deploy's cost: a runner restarted (SIGTERM, then a new one) while two
//!   executors are 3 s into 6-s runs, with `on_stop = "interrupt"` (the
//!   old behaviour) and `"handover"` side by side: executor-seconds lost
//!   (run again from the start) and the runner's exit time;
//! - a keeper's resident memory while its executor runs (target: under
//!   5 MB);
//! - start-up to first poll: from spawning a runner to its first request to
//!   Plane (target: under 100 ms);
//! - idle memory: a runner's resident set after 30 s of polling an empty
//!   board (target: under 30 MB).
//!
//! Uses the release binaries next to this benchmark and the simulator
//! in-process. Prints figures; asserts nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use inflight_e2e::{send_signal, workspace_bin};
use ledger_core::{Ledger, LedgerStore};
use plane_sim::{PlaneSim, SimConfig};

const KEY: &str = "plane_api_bench000000000000000000000000000";
const ROUNDS: usize = 5;

fn config(dir: &Path, sim: &PlaneSim, command: &[&str]) -> PathBuf {
    config_with(dir, sim, command, &[])
}

fn config_with(
    dir: &Path,
    sim: &PlaneSim,
    command: &[&str],
    more: &[(&'static str, &str)],
) -> PathBuf {
    let path = dir.join("inflight.toml");
    let text = inflight_e2e::TestConfig {
        base_url: sim.base_url(),
        project_id: sim.project_id(),
        key_env: "BENCH_KEY".into(),
        command: command.iter().map(|a| a.to_string()).collect(),
        cap: 2,
        roles: vec![inflight_e2e::TestRole {
            running: "In Progress".into(),
            blocked: "Backlog".into(),
            ..inflight_e2e::TestRole::new("goal", "Todo")
        }],
        extra: vec![
            // The simulator has no limit here.
            ("plane", "rate_limit_per_minute = 6000".into()),
            ("watcher", "poll_interval_secs = 1".into()),
            ("watcher", "grace_secs = 1".into()),
        ]
        .into_iter()
        .chain(more.iter().map(|(t, l)| (*t, (*l).to_owned())))
        .collect(),
    }
    .render();
    std::fs::write(&path, text).unwrap();
    path
}

fn runner(config: &Path, log: &Path) -> Child {
    let dir = config.parent().unwrap_or(Path::new("."));
    Command::new(workspace_bin("watcher"))
        .arg("--config")
        .arg(config)
        .args(["--role", "goal", "--log-format", "json"])
        .env("BENCH_KEY", KEY)
        .env("E2E_DIR", dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn stop(mut child: Child) {
    send_signal(child.id(), libc::SIGTERM);
    let _ = child.wait();
}

/// A process's resident memory, in kB.
fn rss_kb(pid: u32) -> u64 {
    memory_kb(pid, "status", "VmRSS:")
}

/// A field of `/proc/PID/FILE` given in kB.
fn memory_kb(pid: u32, file: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Waits for a keeper to hold a slot with its executor started: (run,
/// keeper pid).
fn wait_kept(ledger_path: &Path) -> (ledger_core::RunId, u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(held) = kept(ledger_path).into_iter().next() {
            return held;
        }
        assert!(Instant::now() < deadline, "the dispatch never started");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The slots held by keepers: (run, keeper pid).
fn kept(ledger_path: &Path) -> Vec<(ledger_core::RunId, u32)> {
    if !ledger_path.exists() {
        return Vec::new();
    }
    Ledger::open(ledger_path)
        .and_then(|l| l.open_slots())
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.owner.keeper.is_some() && s.owner.executor.is_some())
        .map(|s| (s.run_id, s.owner.runner.pid))
        .collect()
}

/// One deploy under `on_stop`: two 6-s executors, the runner restarted 3 s
/// in; the executor-seconds lost (attempts that did not count, by the
/// executors' own records) and how long the runner took to exit.
fn deploy(
    rt: &tokio::runtime::Runtime,
    sim_config: &dyn Fn() -> SimConfig,
    on_stop: &str,
) -> (f64, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let sim = rt.block_on(PlaneSim::start(sim_config())).unwrap();
    let tasks = [
        sim.add_work_item("deploy a", "Todo"),
        sim.add_work_item("deploy b", "Todo"),
    ];
    let executor = workspace_bin("e2e-executor").display().to_string();
    let config = config_with(
        dir.path(),
        &sim,
        &[&executor],
        &[
            ("watcher", format!("on_stop = \"{on_stop}\"").as_str()),
            ("roles.goal", "parallel = 2"),
        ],
    );
    std::fs::write(dir.path().join("executor.env"), "").unwrap();
    let mut first = Command::new(workspace_bin("watcher"));
    first
        .arg("--config")
        .arg(&config)
        .args(["--role", "goal", "--log-format", "json"])
        .env("BENCH_KEY", KEY)
        .env("E2E_DIR", dir.path())
        .env("E2E_SLEEP_MS", "6000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut first = first.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while inflight_e2e::executor_holders(dir.path()).1 < 2 {
        assert!(Instant::now() < deadline, "the executors never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_secs(3));
    let sent = Instant::now();
    send_signal(first.id(), libc::SIGTERM);
    first.wait().unwrap();
    let exited = sent.elapsed();
    let mut second = runner(&config, &dir.path().join("second.log"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !tasks
        .iter()
        .all(|t| sim.state_of(t).as_deref() == Some("Done"))
    {
        assert!(Instant::now() < deadline, "the tasks were never done");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut lost_ms = 0u128;
    for task in &tasks {
        let text = std::fs::read_to_string(dir.path().join("runs").join(task)).unwrap_or_default();
        let runs: Vec<u128> = text
            .lines()
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                let from: u128 = parts.next()?.parse().ok()?;
                let to: u128 = parts.next()?.parse().ok()?;
                Some(to - from)
            })
            .collect();
        // Every attempt but the last, which completed, was work lost.
        lost_ms += runs.iter().rev().skip(1).sum::<u128>();
    }
    second.kill().unwrap();
    second.wait().unwrap();
    inflight_e2e::kill_processes_of(dir.path());
    (lost_ms as f64 / 1000.0, exited)
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let sim_config = || SimConfig {
        api_keys: vec![KEY.into()],
        rate_limit: None,
        ..SimConfig::default()
    };

    // Restart → reclaim.
    let mut walls = Vec::new();
    let mut logged = Vec::new();
    for _ in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let sim = rt.block_on(PlaneSim::start(sim_config())).unwrap();
        sim.add_work_item("long task", "Todo");
        let config = config(dir.path(), &sim, &["sleep", "30"]);
        let mut first = runner(&config, &dir.path().join("first.log"));
        let ledger_path = dir.path().join("var/inflight.redb");
        let (_, keeper) = wait_kept(&ledger_path);
        // The runner alone would be nothing to reclaim: its keeper too.
        first.kill().unwrap();
        first.wait().unwrap();
        send_signal(keeper, libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(format!("/proc/{keeper}/stat"))
            .is_ok_and(|s| !s.contains(") Z "))
        {
            assert!(Instant::now() < deadline, "the keeper outlived SIGKILL");
            std::thread::sleep(Duration::from_millis(2));
        }
        let restarted = Instant::now();
        let second = runner(&config, &dir.path().join("second.log"));
        let ledger = Ledger::open(&ledger_path).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        // The slot of the killed run disappears (a new run may take the task).
        let killed_run = ledger.open_slots().unwrap()[0].run_id.clone();
        while ledger
            .open_slots()
            .unwrap()
            .iter()
            .any(|s| s.run_id == killed_run)
        {
            assert!(Instant::now() < deadline, "never reclaimed");
            std::thread::sleep(Duration::from_millis(2));
        }
        walls.push(restarted.elapsed());
        stop(second);
        inflight_e2e::kill_processes_of(dir.path());
        let log = std::fs::read_to_string(dir.path().join("second.log")).unwrap();
        if let Some(ms) = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|v| v["restart_to_reclaim_ms"].as_u64())
        {
            logged.push(Duration::from_millis(ms));
        }
    }

    // Start-up to first poll, on an empty board.
    let mut first_polls = Vec::new();
    for _ in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let sim = rt.block_on(PlaneSim::start(sim_config())).unwrap();
        let config = config(dir.path(), &sim, &["true"]);
        sim.clear_requests();
        let origin = Instant::now();
        let child = runner(&config, &dir.path().join("runner.log"));
        let spawned_at = origin.elapsed();
        let deadline = Instant::now() + Duration::from_secs(10);
        while sim.requests().is_empty() {
            assert!(Instant::now() < deadline, "the runner never polled");
            std::thread::sleep(Duration::from_millis(1));
        }
        first_polls.push(origin.elapsed().saturating_sub(spawned_at));
        stop(child);
    }

    // A deploy's cost, the old way and the new, interleaved.
    let (mut interrupt_lost, mut handover_lost) = (Vec::new(), Vec::new());
    let (mut interrupt_exit, mut handover_exit) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let (lost, exit) = deploy(&rt, &sim_config, "interrupt");
        interrupt_lost.push(lost);
        interrupt_exit.push(exit);
        let (lost, exit) = deploy(&rt, &sim_config, "handover");
        handover_lost.push(lost);
        handover_exit.push(exit);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;

    // A keeper's memory while its executor runs.
    let keeper_rss = {
        let dir = tempfile::tempdir().unwrap();
        let sim = rt.block_on(PlaneSim::start(sim_config())).unwrap();
        sim.add_work_item("kept task", "Todo");
        // A short lease, so that the keeper renews (writes to the ledger)
        // every 2 s: its steady state, not only its quiet start.
        let config = config_with(
            dir.path(),
            &sim,
            &["sleep", "30"],
            &[("watcher", "lease_secs = 6")],
        );
        let child = runner(&config, &dir.path().join("kept.log"));
        let ledger_path = dir.path().join("var/inflight.redb");
        let (_, keeper) = wait_kept(&ledger_path);
        // Settled: its executor started, two or three renewals made.
        std::thread::sleep(Duration::from_secs(7));
        let figures = [
            rss_kb(keeper),
            memory_kb(keeper, "smaps_rollup", "Shared_Clean:"),
            memory_kb(keeper, "smaps_rollup", "Pss:"),
            memory_kb(keeper, "smaps_rollup", "Private_Clean:")
                + memory_kb(keeper, "smaps_rollup", "Private_Dirty:"),
        ];
        stop(child);
        inflight_e2e::kill_processes_of(dir.path());
        figures
    };

    // Idle memory after 30 s of polling an empty board.
    let dir = tempfile::tempdir().unwrap();
    let sim = rt.block_on(PlaneSim::start(sim_config())).unwrap();
    let config = config(dir.path(), &sim, &["true"]);
    let child = runner(&config, &dir.path().join("idle.log"));
    std::thread::sleep(Duration::from_secs(30));
    let rss_kb = rss_kb(child.id());
    let polls = sim.requests().len();
    stop(child);

    println!("# end-to-end benchmark");
    println!();
    println!("Release binaries, simulator on loopback, {ROUNDS} rounds where repeated.");
    println!();
    println!("| measure | median | worst | target |");
    println!("|---|---|---|---|");
    println!(
        "| restart → dead keeper's slot reclaimed (wall, seen in the ledger) | {:.0} ms | {:.0} ms | under 1 s |",
        median(walls.clone()).as_secs_f64() * 1e3,
        walls.iter().max().unwrap().as_secs_f64() * 1e3
    );
    if !logged.is_empty() {
        println!(
            "| restart → reclaim as the runner logs it (from its start-up) | {:.0} ms | {:.0} ms | |",
            median(logged.clone()).as_secs_f64() * 1e3,
            logged.iter().max().unwrap().as_secs_f64() * 1e3
        );
    }
    println!(
        "| start-up → first request to Plane | {:.1} ms | {:.1} ms | under 100 ms |",
        median(first_polls.clone()).as_secs_f64() * 1e3,
        first_polls.iter().max().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "| idle runner resident memory after 30 s ({polls} requests) | {:.1} MB | | under 30 MB |",
        rss_kb as f64 / 1024.0
    );
    let mb = |kb: u64| kb as f64 / 1024.0;
    println!(
        "| a keeper's resident memory while its executor runs (of it, clean pages of the binary and the C library, shared with the runner and every keeper) | {:.1} MB ({:.1} MB) | | under 5 MB |",
        mb(keeper_rss[0]),
        mb(keeper_rss[1])
    );
    println!(
        "| a keeper's proportional (PSS) / private memory: what each more keeper costs | {:.1} MB / {:.1} MB | | |",
        mb(keeper_rss[2]),
        mb(keeper_rss[3])
    );
    println!();
    println!(
        "A deploy (SIGTERM, then a new runner) while two executors are 3 s into 6-s runs, 2 rounds each, interleaved:"
    );
    println!();
    println!("| on_stop | executor-seconds lost per deploy | runner exit after SIGTERM (worst) |");
    println!("|---|---|---|");
    println!(
        "| interrupt (before) | {:.1} s | {:.0} ms |",
        mean(&interrupt_lost),
        interrupt_exit.iter().max().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "| handover (now) | {:.1} s | {:.0} ms |",
        mean(&handover_lost),
        handover_exit.iter().max().unwrap().as_secs_f64() * 1e3
    );
}
