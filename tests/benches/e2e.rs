//! `cargo xtask bench e2e`: the runner as an operator experiences it.
//!
//! - restart → reclaim: a runner is SIGKILLed mid-dispatch and started
//!   again; how long until its dead slot is reclaimed (target: under 1 s);
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
use ledger_core::Ledger;
use plane_sim::{PlaneSim, SimConfig};

const KEY: &str = "plane_api_bench000000000000000000000000000";
const ROUNDS: usize = 5;

fn config(dir: &Path, sim: &PlaneSim, command: &[&str]) -> PathBuf {
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
        ],
    }
    .render();
    std::fs::write(&path, text).unwrap();
    path
}

fn runner(config: &Path, log: &Path) -> Child {
    Command::new(workspace_bin("watcher"))
        .arg("--config")
        .arg(config)
        .args(["--role", "goal", "--log-format", "json"])
        .env("BENCH_KEY", KEY)
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
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ledger_path.exists()
            || Ledger::open(&ledger_path)
                .unwrap()
                .open_slots()
                .unwrap()
                .iter()
                .all(|s| s.owner.executor.is_none())
        {
            assert!(Instant::now() < deadline, "the dispatch never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        first.kill().unwrap();
        first.wait().unwrap();
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

    // Idle memory after 30 s of polling an empty board.
    let dir = tempfile::tempdir().unwrap();
    let sim = rt.block_on(PlaneSim::start(sim_config())).unwrap();
    let config = config(dir.path(), &sim, &["true"]);
    let child = runner(&config, &dir.path().join("idle.log"));
    std::thread::sleep(Duration::from_secs(30));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    let polls = sim.requests().len();
    stop(child);

    println!("# end-to-end benchmark");
    println!();
    println!("Release binaries, simulator on loopback, {ROUNDS} rounds where repeated.");
    println!();
    println!("| measure | median | worst | target |");
    println!("|---|---|---|---|");
    println!(
        "| restart → dead slot reclaimed (wall, seen in the ledger) | {:.0} ms | {:.0} ms | under 1 s |",
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
}
