//! `cargo xtask soak --minutes N`: a chaos soak of the whole system.
//!
//! Several runners (two per role, three roles, one backend capped at 2) and a
//! watchdog in `run --apply` mode work a board that keeps receiving tasks,
//! while the soak SIGKILLs runners and keepers and restarts runners
//! gracefully (SIGTERM: they hand their runs over to the next runner) at
//! random, executors crash, fail and hang, and the simulator injects 429
//! storms, 5xx, latency and a project that answers 403. An observer outside
//! the ledger checks:
//!
//! - executor-observed concurrency never exceeds the cap;
//! - no task runs twice at once (the executors' own records of each run);
//! - a live dispatch is never reclaimed (every reclaimed run's holder, its
//!   runner before the hand-over or its keeper after, had been killed or
//!   had exited before the reclaim);
//! - after a drain, every task is Done or Blocked, no slot is open, and the
//!   ledger passes its integrity check.
//!
//! Prints the figures; exits 1 on any violation.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use inflight_e2e::{executor_holders, send_signal, workspace_bin};
use ledger_core::LedgerStore;
use ledger_core::{EventKind, FinishReason, Ledger};
use plane_sim::{Fault, FaultRule, PlaneSim, SimConfig};

const KEY: &str = "plane_api_soak000000000000000000000000000";
const CAP: i64 = 2;
const ROLES: [(&str, &str); 3] = [
    ("goal", "Ready A"),
    ("review", "Ready B"),
    ("fix", "Ready C"),
];
const RUNNERS_PER_ROLE: usize = 2;

struct Runner {
    role: &'static str,
    child: Option<Child>,
    restart_at: Option<Instant>,
}

/// When each runner process ended, by pid.
type Deaths = HashMap<u32, SystemTime>;

fn spawn_runner(dir: &Path, role: &str, n: usize) -> Child {
    Command::new(workspace_bin("watcher"))
        .arg("--config")
        .arg(dir.join("inflight.toml"))
        .args(["--role", role, "--log-format", "json"])
        .env("SOAK_KEY", KEY)
        .env("E2E_DIR", dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("logs/{role}-{n}.log"))).expect("log"))
        .spawn()
        .expect("spawn watcher")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let seconds: f64 = flag("--seconds")
        .and_then(|s| s.parse().ok())
        .or_else(|| {
            flag("--minutes")
                .and_then(|m| m.parse::<f64>().ok())
                .map(|m| m * 60.0)
        })
        .unwrap_or(60.0);
    let seed: u64 = flag("--seed")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64 | 1)
        });
    let mut rng = fastrand::Rng::with_seed(seed);
    println!("soak: {seconds:.0} s, seed {seed}");

    let dir = std::env::temp_dir().join(format!("inflight-soak-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("logs")).expect("soak dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let sim = rt
        .block_on(PlaneSim::start(SimConfig {
            api_keys: vec![KEY.into()],
            rate_limit: Some((6000, Duration::from_secs(60))),
            ..SimConfig::default()
        }))
        .expect("simulator");
    sim.add_state("Running", "started");
    sim.add_state("Blocked", "backlog");
    for (_, state) in ROLES {
        sim.add_state(state, "unstarted");
    }
    let config = inflight_e2e::TestConfig {
        base_url: sim.base_url(),
        project_id: sim.project_id(),
        key_env: "SOAK_KEY".into(),
        command: vec![workspace_bin("e2e-executor").display().to_string()],
        cap: CAP as u32,
        roles: ROLES
            .iter()
            .map(|(role, state)| inflight_e2e::TestRole::new(role, state))
            .collect(),
        extra: vec![
            ("plane", "request_timeout_secs = 5".into()),
            ("plane", "rate_limit_per_minute = 3000".into()),
            ("limits", "max_concurrent = 8".into()),
            ("backends.local", "timeout_secs = 4".into()),
            ("watcher", "poll_interval_secs = 1".into()),
            ("watcher", "grace_secs = 1".into()),
            ("watcher", "startup_reconcile_secs = 5".into()),
        ],
    }
    .render();
    std::fs::write(dir.join("inflight.toml"), config).expect("config");

    let mut deaths: Deaths = HashMap::new();
    let mut runners: Vec<Runner> = Vec::new();
    let mut spawned = 0;
    for (role, _) in ROLES {
        for _ in 0..RUNNERS_PER_ROLE {
            spawned += 1;
            runners.push(Runner {
                role,
                child: Some(spawn_runner(&dir, role, spawned)),
                restart_at: None,
            });
        }
    }
    let mut watchdog = Command::new(workspace_bin("watchdog"))
        .arg("--config")
        .arg(dir.join("inflight.toml"))
        .args(["run", "--interval", "2", "--apply", "--log-format", "json"])
        .env("SOAK_KEY", KEY)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("logs/watchdog.log")).expect("log"))
        .spawn()
        .expect("spawn watchdog");

    let started = Instant::now();
    let end = started + Duration::from_secs_f64(seconds);
    let (mut tasks, mut kills, mut terms, mut faults) =
        (Vec::new(), 0u32, 0u32, BTreeMap::<&str, u32>::new());
    // Keepers the soak killed: their run, and when.
    let mut killed_keepers: HashMap<ledger_core::RunId, SystemTime> = HashMap::new();
    let mut keeper_kills = 0u32;
    let ledger_path = dir.join("var/inflight.redb");
    let (mut next_task, mut next_chaos, mut next_fault) = (
        started,
        started + Duration::from_secs(3),
        started + Duration::from_secs(4),
    );
    let mut worst_holders = 0;
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_task {
            let kind = match rng.u64(..20) {
                0 | 1 => "fail",
                2 => "crash",
                3 => "hang",
                _ => "plain",
            };
            let (_, state) = ROLES[rng.usize(..ROLES.len())];
            tasks.push(sim.add_work_item(&format!("{kind} task {}", tasks.len()), state));
            next_task = now + Duration::from_millis(300 + rng.u64(..400));
        }
        if now >= next_chaos && rng.u64(..4) == 0 {
            // A keeper, SIGKILLed: its executor dies with it and its slot
            // is a dead owner's.
            let held: Vec<_> = Ledger::open(&ledger_path)
                .and_then(|l| l.open_slots())
                .unwrap_or_else(|e| {
                    eprintln!("soak: could not read the ledger to pick a keeper: {e}");
                    Vec::new()
                })
                .into_iter()
                .filter(|s| s.owner.keeper.is_some() && s.owner.outcome.is_none())
                .collect();
            if !held.is_empty() {
                let slot = &held[rng.usize(..held.len())];
                killed_keepers.insert(slot.run_id.clone(), SystemTime::now());
                send_signal(slot.owner.runner.pid, libc::SIGKILL);
                kills += 1;
                keeper_kills += 1;
            }
            next_chaos = now + Duration::from_millis(1500 + rng.u64(..2500));
        } else if now >= next_chaos {
            let victim = rng.usize(..runners.len());
            if let Some(child) = runners[victim].child.as_mut() {
                let pid = child.id();
                if rng.u64(..4) == 0 {
                    send_signal(pid, libc::SIGTERM);
                    terms += 1;
                } else {
                    send_signal(pid, libc::SIGKILL);
                    kills += 1;
                }
                runners[victim].restart_at =
                    Some(now + Duration::from_millis(300 + rng.u64(..1500)));
            }
            next_chaos = now + Duration::from_millis(1500 + rng.u64(..2500));
        }
        if now >= next_fault {
            let (name, rule) = match rng.u64(..4) {
                0 => (
                    "429 storm",
                    FaultRule::new(Fault::RateLimited {
                        retry_after_secs: 1,
                    })
                    .times(15),
                ),
                1 => ("5xx", FaultRule::new(Fault::Status(503)).times(10)),
                2 => (
                    "latency",
                    FaultRule::new(Fault::Latency(Duration::from_millis(400))).times(20),
                ),
                _ => (
                    "project 403",
                    FaultRule::new(Fault::ProjectForbidden).times(8),
                ),
            };
            sim.inject(rule);
            *faults.entry(name).or_default() += 1;
            next_fault = now + Duration::from_millis(3000 + rng.u64(..4000));
        }
        reap(&mut runners, &mut deaths, &dir, &mut spawned, true);
        worst_holders = worst_holders.max(executor_holders(&dir).0);
        std::thread::sleep(Duration::from_millis(20));
    }

    // Drain: no more chaos, faults or tasks; every runner up.
    println!(
        "soak: {:.0} s of chaos done; draining",
        started.elapsed().as_secs_f64()
    );
    sim.clear_faults();
    let drain_deadline = Instant::now() + Duration::from_secs(120);
    let settled = |sim: &PlaneSim| {
        tasks
            .iter()
            .all(|t| matches!(sim.state_of(t).as_deref(), Some("Done" | "Blocked")))
    };
    while !settled(&sim) && Instant::now() < drain_deadline {
        for runner in runners.iter_mut() {
            if runner.restart_at.is_some_and(|t| t > Instant::now()) {
                runner.restart_at = Some(Instant::now());
            }
        }
        reap(&mut runners, &mut deaths, &dir, &mut spawned, true);
        std::thread::sleep(Duration::from_millis(100));
    }
    for runner in runners.iter_mut() {
        if let Some(child) = runner.child.as_mut() {
            send_signal(child.id(), libc::SIGTERM);
        }
    }
    for runner in runners.iter_mut() {
        if let Some(mut child) = runner.child.take() {
            let _ = child.wait();
        }
    }
    send_signal(watchdog.id(), libc::SIGTERM);
    let _ = watchdog.wait();
    // Keepers outlive runners: end any still running (none should be).
    inflight_e2e::kill_processes_of(&dir);

    // The observer's verdict.
    let mut violations = Vec::new();
    let (most, _) = executor_holders(&dir);
    if most.max(worst_holders) > CAP {
        violations.push(format!(
            "{} executors ran at once under a cap of {CAP}",
            most.max(worst_holders)
        ));
    }
    let mut states: BTreeMap<String, u32> = BTreeMap::new();
    for task in &tasks {
        let state = sim.state_of(task).unwrap_or_else(|| "?".into());
        if !matches!(state.as_str(), "Done" | "Blocked") {
            violations.push(format!("task {task} ended in {state:?}"));
        }
        *states.entry(state).or_default() += 1;
    }
    let ledger = Ledger::open(dir.join("var/inflight.redb")).expect("ledger");
    let open = ledger.open_slots().expect("slots");
    if !open.is_empty() {
        violations.push(format!("{} slots still open", open.len()));
    }
    let integrity = ledger.verify().expect("verify");
    violations.extend(integrity.problems.iter().map(|p| format!("integrity: {p}")));
    let events = ledger.events_after(0, usize::MAX).expect("events");
    let mut owners = HashMap::new();
    let mut by_rule: BTreeMap<String, u32> = BTreeMap::new();
    let mut worst_latency = Duration::ZERO;
    for event in &events {
        match &event.kind {
            EventKind::Started { run_id, owner, .. } => {
                owners.insert(run_id.clone(), owner.runner.pid);
            }
            EventKind::Finished {
                run_id,
                reason: FinishReason::Reconciled { rule },
                ..
            } => {
                *by_rule.entry(rule.clone()).or_default() += 1;
                let Some(pid) = owners.get(run_id) else {
                    continue;
                };
                // Handed to a keeper the soak killed: its death is the
                // owner's.
                let died = killed_keepers.get(run_id).or_else(|| deaths.get(pid));
                match died {
                    Some(died) => {
                        let died_ms = died
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as i64);
                        let at = event.at.as_unix_millis();
                        // The probe saw the owner dead; our record of the
                        // death comes from reaping, a little later at most.
                        if at + 1_000 < died_ms {
                            violations.push(format!(
                                "run {run_id} reclaimed before its runner {pid} died"
                            ));
                        }
                        worst_latency =
                            worst_latency.max(Duration::from_millis((at - died_ms).max(0) as u64));
                    }
                    None => violations.push(format!(
                        "run {run_id} of live runner {pid} (and live keeper) reclaimed by {rule}"
                    )),
                }
            }
            _ => {}
        }
    }
    // No task ran twice at once, by the executors' own records.
    for task in &tasks {
        let text = std::fs::read_to_string(dir.join("runs").join(task)).unwrap_or_default();
        let mut runs: Vec<(u128, u128)> = text
            .lines()
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
            })
            .collect();
        runs.sort();
        for pair in runs.windows(2) {
            if pair[1].0 < pair[0].1 {
                violations.push(format!("task {task} ran twice at once: {pair:?}"));
            }
        }
    }
    let completed = events
        .iter()
        .filter(|e| {
            matches!(
                &e.kind,
                EventKind::Finished {
                    reason: FinishReason::Completed,
                    ..
                }
            )
        })
        .count();

    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!("| duration of chaos | {seconds:.0} s (seed {seed}) |");
    println!("| tasks created | {} |", tasks.len());
    println!("| final states | {states:?} |");
    println!("| dispatches completed (exit 0) | {completed} |");
    println!(
        "| SIGKILLs (of them, keepers) / runner SIGTERMs (hand-overs) survived | {kills} ({keeper_kills}) / {terms} |"
    );
    println!("| faults injected | {faults:?} |");
    println!("| reclaims by rule | {by_rule:?} |");
    println!(
        "| worst kill-to-reclaim latency (includes restart delay) | {:.1} s |",
        worst_latency.as_secs_f64()
    );
    println!(
        "| most executors at once (cap {CAP}) | {} |",
        most.max(worst_holders)
    );
    println!(
        "| events in the ledger / integrity | {} / {} |",
        events.len(),
        if integrity.is_sound() {
            "sound"
        } else {
            "BROKEN"
        }
    );
    println!("| violations | {} |", violations.len());
    for v in &violations {
        println!("  - {v}");
    }
    if violations.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("logs and ledger kept in {}", dir.display());
        std::process::exit(1);
    }
}

/// Notes runners that ended, and restarts those whose time has come.
fn reap(
    runners: &mut [Runner],
    deaths: &mut Deaths,
    dir: &Path,
    spawned: &mut usize,
    restart: bool,
) {
    for runner in runners.iter_mut() {
        if let Some(child) = runner.child.as_mut()
            && let Ok(Some(_)) = child.try_wait()
        {
            deaths.insert(child.id(), SystemTime::now());
            runner.child = None;
            if runner.restart_at.is_none() {
                runner.restart_at = Some(Instant::now());
            }
        }
        if restart
            && runner.child.is_none()
            && runner.restart_at.is_some_and(|t| t <= Instant::now())
        {
            *spawned += 1;
            runner.child = Some(spawn_runner(dir, runner.role, *spawned));
            runner.restart_at = None;
        }
    }
}
