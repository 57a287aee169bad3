//! `cargo xtask bench ledger`: what a durable admission costs, alone and
//! under contention, and what history does to the cap check, side by side
//! with a baseline that does what the reference system did (one JSON file
//! read, folded and rewritten whole on every event, without fsync).
//!
//! Prints medians and ratios; asserts nothing, so a noisy machine cannot
//! make it flaky.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ledger_core::*;

const CYCLES: usize = 2_000;
const PROCESSES: usize = 4;
const CYCLES_PER_PROCESS: usize = 1_000;
const CAP_CHECKS: usize = 5_000;

fn main() {
    // Child mode: one of the concurrent processes.
    if let Ok(path) = std::env::var("LEDGER_BENCH_CHILD") {
        let worker: usize = std::env::var("LEDGER_BENCH_WORKER")
            .unwrap()
            .parse()
            .unwrap();
        child_cycles(Path::new(&path), worker);
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("ledger-bench")
        .tempdir()
        .unwrap();
    println!("# ledger-core benchmark");
    println!();
    println!(
        "Machine: {} cores. Medians over the stated number of samples.",
        cores()
    );
    println!();

    let floor = redb_commit_floor(&dir.path().join("floor.redb"));
    let multi = cycle_median(&dir.path().join("multi.redb"), SharingMode::MultiProcess);
    let exclusive = cycle_median(&dir.path().join("exclusive.redb"), SharingMode::Exclusive);
    let baseline = baseline_cycle_median(&dir.path().join("usage.json"), 1_000);
    let aggregate = concurrent_commits_per_second(&dir.path().join("shared.redb"));
    let check_small = cap_check_median(&dir.path().join("small.redb"), 1_000);
    let check_large = cap_check_median(&dir.path().join("large.redb"), 1_000_000);

    println!("| measure | figure | target |");
    println!("|---|---|---|");
    println!(
        "| redb's floor: one-row durable commit, multi-writer mode, no ledger ({CYCLES} commits) | {} | |",
        ms(floor)
    );
    println!(
        "| durable admit+finish cycle, multi-process mode ({CYCLES} cycles) | {} | within 1 ms |",
        ms(multi)
    );
    println!(
        "| cycle / two floor commits | {:.2}x | |",
        multi.as_secs_f64() / (2.0 * floor.as_secs_f64())
    );
    println!(
        "| durable admit+finish cycle, exclusive mode ({CYCLES} cycles) | {} | |",
        ms(exclusive)
    );
    println!(
        "| reference-style JSON cycle at 1,000 events, no fsync ({} cycles) | {} | |",
        BASELINE_CYCLES,
        ms(baseline)
    );
    println!(
        "| baseline / multi-process cycle | {:.1}x | at least 14x |",
        baseline.as_secs_f64() / multi.as_secs_f64()
    );
    println!(
        "| {PROCESSES} processes at once, aggregate | {aggregate:.0} commits/s ({:.0} cycles/s) | at least 1,500 commits/s |",
        aggregate / 2.0
    );
    println!(
        "| cap check, 1,000 events of history ({CAP_CHECKS} checks) | {} | |",
        us(check_small)
    );
    println!(
        "| cap check, 1,000,000 events of history ({CAP_CHECKS} checks) | {} | |",
        us(check_large)
    );
    println!(
        "| cap check at 1,000,000 / at 1,000 | {:.2}x | at most 2x |",
        check_large.as_secs_f64() / check_small.as_secs_f64()
    );
    // The plot `cargo xtask bench` draws (with PostgreSQL's beside it).
    let plot = serde_json::json!({
        "name": "admit-latency-vs-history", "kind": "line",
        "title": "Cap check (admission) against history", "x": "events of history",
        "y": "µs per check", "log_x": true,
        "series": [{"name": "redb", "points": [
            [1e3, check_small.as_secs_f64() * 1e6], [1e6, check_large.as_secs_f64() * 1e6]]}],
    });
    println!("\n<!-- plot {plot} -->");
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn now() -> Timestamp {
    SystemClock.now()
}

fn owner() -> Owner {
    Owner {
        host: "bench".into(),
        boot_id: "boot".into(),
        runner: ProcessIdentity {
            pid: std::process::id(),
            start_time: 1,
        },
        executor: None,
        role: None,
        project: None,
        keeper: None,
        outcome: None,
        title: None,
    }
}

fn request(backend: &str, task: String, run: String) -> AdmitRequest {
    AdmitRequest {
        key: SlotKey::new(Backend::new(backend).unwrap(), TaskId::new(task).unwrap()),
        run_id: RunId::new(run).unwrap(),
        owner: owner(),
        lease: Duration::from_secs(60),
    }
}

fn limits() -> Limits {
    Limits {
        global_max_concurrent: Some(1_000),
        backend: BackendLimits {
            max_concurrent: 4,
            max_per_hour: Some(1_000_000),
            max_per_day: Some(1_000_000),
        },
    }
}

fn cycle(ledger: &Ledger, backend: &str, tag: &str, i: usize) {
    let req = request(backend, format!("{tag}-t{i}"), format!("{tag}-r{i}"));
    match ledger.admit(&req, &limits(), now()).unwrap() {
        AdmitOutcome::Admitted(_) => {}
        AdmitOutcome::Denied(d) => panic!("bench admission denied: {d}"),
    }
    ledger
        .finish(&req.key, Some(&req.run_id), FinishReason::Completed, now())
        .unwrap();
}

fn cycle_median(path: &Path, sharing: SharingMode) -> Duration {
    let ledger = Ledger::open_with(
        path,
        LedgerOptions {
            sharing,
            ..LedgerOptions::default()
        },
    )
    .unwrap();
    let samples = (0..CYCLES)
        .map(|i| {
            let t = Instant::now();
            cycle(&ledger, "bench", "single", i);
            t.elapsed()
        })
        .collect();
    median(samples)
}

/// What the disk and redb cost on their own: a one-row durable commit in
/// multi-writer mode. A ledger cycle is two commits, so twice this is the
/// floor any cycle can reach on this machine.
fn redb_commit_floor(path: &Path) -> Duration {
    const TABLE: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("floor");
    let mut builder = redb::Builder::new();
    builder.set_concurrency_mode(redb::ConcurrencyMode::MultiWriter);
    let db = builder.create(path).unwrap();
    let samples = (0..CYCLES as u64)
        .map(|i| {
            let t = Instant::now();
            let txn = db.begin_write().unwrap();
            txn.open_table(TABLE).unwrap().insert(i, i).unwrap();
            txn.commit().unwrap();
            t.elapsed()
        })
        .collect();
    median(samples)
}

fn child_cycles(path: &Path, worker: usize) {
    let ledger = Ledger::open(path).unwrap();
    let backend = format!("b{worker}");
    for i in 0..CYCLES_PER_PROCESS {
        cycle(&ledger, &backend, &format!("w{worker}"), i);
    }
}

/// Commits per second with several processes writing one file at once.
fn concurrent_commits_per_second(path: &Path) -> f64 {
    drop(Ledger::open(path).unwrap());
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let children: Vec<_> = (0..PROCESSES)
        .map(|w| {
            Command::new(&exe)
                .env("LEDGER_BENCH_CHILD", path)
                .env("LEDGER_BENCH_WORKER", w.to_string())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let elapsed = started.elapsed().as_secs_f64();
    (PROCESSES * CYCLES_PER_PROCESS * 2) as f64 / elapsed
}

/// A ledger with `history` events behind it, then the median read-only cap
/// check. The history is older than the daily window, as it is in a ledger
/// whose caps hold: a window never holds more starts than its cap allows.
fn cap_check_median(path: &Path, history: usize) -> Duration {
    let ledger = Ledger::open(path).unwrap();
    let old = now().saturating_sub(Duration::from_secs(3 * 86_400));
    let mut events = Vec::with_capacity(history);
    for i in 0..history / 2 {
        let at = old
            .saturating_add(Duration::from_millis(i as u64))
            .to_string();
        let task = format!("h{i}");
        events.push(serde_json::json!({"kind": "execution_started", "task_id": task, "backend": "bench", "timestamp": at}));
        events.push(serde_json::json!({"kind": "execution_finished", "task_id": task, "backend": "bench", "timestamp": at}));
    }
    let usage = serde_json::to_vec(&serde_json::json!({ "events": events })).unwrap();
    drop(events);
    ledger
        .import_usage_json_bytes(Path::new("generated"), &usage)
        .unwrap();
    // The same recent activity in both cases: a few open slots and starts.
    for i in 0..3 {
        let req = request("bench", format!("open{i}"), format!("open-r{i}"));
        ledger.admit(&req, &limits(), now()).unwrap();
    }
    let key = SlotKey::new(
        Backend::new("bench").unwrap(),
        TaskId::new("candidate").unwrap(),
    );
    let samples = (0..CAP_CHECKS)
        .map(|_| {
            let t = Instant::now();
            let verdict = ledger.check_admission(&key, &limits(), now()).unwrap();
            let elapsed = t.elapsed();
            assert!(verdict.is_none());
            elapsed
        })
        .collect();
    median(samples)
}

const BASELINE_CYCLES: usize = 500;

/// The reference system's ledger: the whole event log in one JSON file,
/// read and folded to check the cap, appended to and rewritten on every
/// event, never fsynced.
fn baseline_cycle_median(path: &PathBuf, history: usize) -> Duration {
    let mut events: Vec<serde_json::Value> = (0..history)
        .map(|i| {
            serde_json::json!({
                "kind": if i % 2 == 0 { "execution_started" } else { "execution_finished" },
                "task_id": format!("h{}", i / 2), "backend": "bench", "timestamp": now().to_string()
            })
        })
        .collect();
    std::fs::write(
        path,
        serde_json::to_vec(&serde_json::json!({ "events": events })).unwrap(),
    )
    .unwrap();
    events.clear();
    let append =
        |kind: &str, task: &str| {
            let mut doc: serde_json::Value =
                serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
            doc["events"].as_array_mut().unwrap().push(serde_json::json!({
            "kind": kind, "task_id": task, "backend": "bench", "timestamp": now().to_string()
        }));
            std::fs::write(path, serde_json::to_vec(&doc).unwrap()).unwrap();
        };
    // The reference's cap check: fold the whole log for the open slots and
    // the starts inside the hourly and daily windows.
    let open_count = || {
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let now = now();
        let hour_ago = now.saturating_sub(Duration::from_secs(3600));
        let day_ago = now.saturating_sub(Duration::from_secs(86_400));
        let mut open = std::collections::HashSet::new();
        let (mut hourly, mut daily) = (0, 0);
        for e in doc["events"].as_array().unwrap() {
            let task = e["task_id"].as_str().unwrap().to_owned();
            match e["kind"].as_str().unwrap() {
                "execution_started" => {
                    let at = Timestamp::parse_rfc3339(e["timestamp"].as_str().unwrap()).unwrap();
                    hourly += usize::from(at > hour_ago);
                    daily += usize::from(at > day_ago);
                    open.insert(task)
                }
                _ => open.remove(&task),
            };
        }
        std::hint::black_box((hourly, daily));
        open.len()
    };
    let samples = (0..BASELINE_CYCLES)
        .map(|i| {
            let task = format!("c{i}");
            let t = Instant::now();
            assert!(open_count() < 4);
            append("execution_started", &task);
            append("execution_finished", &task);
            t.elapsed()
        })
        .collect();
    median(samples)
}
