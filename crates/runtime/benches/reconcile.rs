//! `cargo xtask bench reconcile`: what a scan costs.
//!
//! - 1,000 open slots whose owners cannot be checked from here, each lookup
//!   taking 20 ms, scanned with the default lookup concurrency against the
//!   same slots looked up one at a time, as the reference watchdog did;
//! - 1,000 slots whose owners died on this host, settled without a single
//!   Plane request, with the real Linux process probe.
//!
//! Prints figures and ratios; asserts nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ledger_core::*;
use reconcile::*;
use runtime::{HostIdentity, LedgerAdapter, LinuxProcessProbe};

const SLOTS: usize = 1_000;
const LOOKUP_LATENCY: Duration = Duration::from_millis(20);

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let now = SystemClock.now();
    let host = HostIdentity::current().unwrap();

    // Owners elsewhere: every slot needs its task looked up.
    let remote: Vec<Slot> = (0..SLOTS).map(|i| slot(i, elsewhere(i), now)).collect();
    let ledger = InMemory(remote);
    let defaults = ScanOptions::default();
    let sequential = ScanOptions {
        lookup_concurrency: 1,
        ..defaults.clone()
    };
    let probe = LinuxProcessProbe::new(host.clone(), Duration::from_secs(1));

    let (concurrent_time, concurrent_calls) =
        timed_scan(&rt, &ledger, &probe, &defaults, now, 10_000_000);
    let (sequential_time, sequential_calls) =
        timed_scan(&rt, &ledger, &probe, &sequential, now, 10_000_000);
    let (listed_time, listed_calls) = timed_scan(&rt, &ledger, &probe, &defaults, now, 5_000);
    // The same at fewer open slots, for the plot.
    let mut by_slots = Vec::new();
    for n in [100, 300] {
        let fewer = InMemory((0..n).map(|i| slot(i, elsewhere(i), now)).collect());
        let (one, _) = timed_scan(&rt, &fewer, &probe, &sequential, now, 10_000_000);
        let (many, _) = timed_scan(&rt, &fewer, &probe, &defaults, now, 10_000_000);
        by_slots.push((n, one, many));
    }
    by_slots.push((SLOTS, sequential_time, concurrent_time));

    // Owners on this host whose processes are gone.
    let dir = tempfile::tempdir().unwrap();
    let dead: Vec<Slot> = (0..SLOTS)
        .map(|i| slot(i, dead_here(&host, i), now))
        .collect();
    let (dead_dry, dead_dry_calls) =
        timed_scan(&rt, &InMemory(dead.clone()), &probe, &defaults, now, 0);
    let real = Arc::new(
        Ledger::open_with(
            dir.path().join("dead.redb"),
            LedgerOptions {
                sharing: SharingMode::Exclusive,
                ..LedgerOptions::default()
            },
        )
        .unwrap(),
    );
    let limits = Limits {
        global_max_concurrent: None,
        backend: BackendLimits {
            max_concurrent: u32::MAX,
            max_per_hour: None,
            max_per_day: None,
        },
    };
    for s in &dead {
        let request = AdmitRequest {
            key: s.key.clone(),
            run_id: s.run_id.clone(),
            owner: s.owner.clone(),
            lease: Duration::from_secs(60),
        };
        real.admit(&request, &limits, now).unwrap();
    }
    let apply = ScanOptions {
        apply: true,
        ..defaults.clone()
    };
    let (dead_applied, _) = timed_scan(&rt, &LedgerAdapter(real), &probe, &apply, now, 0);

    println!("# reconcile benchmark");
    println!();
    println!(
        "{SLOTS} open slots; each Plane lookup takes {} ms.",
        LOOKUP_LATENCY.as_millis()
    );
    println!();
    println!("| scan | time | Plane requests | target |");
    println!("|---|---|---|---|");
    println!(
        "| looked up one at a time (reference) | {} | {sequential_calls} | |",
        secs(sequential_time)
    );
    println!(
        "| looked up {} at a time (default) | {} | {concurrent_calls} | |",
        defaults.lookup_concurrency,
        secs(concurrent_time)
    );
    println!(
        "| speed-up | {:.1}x | | at least 6x |",
        sequential_time.as_secs_f64() / concurrent_time.as_secs_f64()
    );
    println!(
        "| project of 5,000 items: list walked, nothing left to confirm | {} | {listed_calls} | |",
        secs(listed_time)
    );
    println!(
        "| {SLOTS} dead-owner slots, dry run, real process probe | {} | {dead_dry_calls} | under 100 ms |",
        ms(dead_dry)
    );
    println!(
        "| {SLOTS} dead-owner slots, applied to a real ledger (exclusive mode) | {} | 0 | |",
        ms(dead_applied)
    );
    println!();
    println!(
        "| open slots (owners elsewhere) | one at a time | {} at a time |",
        defaults.lookup_concurrency
    );
    println!("|---|---|---|");
    for (n, one, many) in &by_slots {
        println!("| {n} | {} | {} |", secs(*one), secs(*many));
    }
    let points = |pick: fn(&(usize, Duration, Duration)) -> Duration| -> Vec<serde_json::Value> {
        by_slots
            .iter()
            .map(|row| serde_json::json!([row.0, pick(row).as_secs_f64()]))
            .collect()
    };
    let plot = serde_json::json!({
        "name": "reconcile-vs-open-slots", "kind": "line",
        "title": format!("Scan time against open slots ({} ms a lookup)", LOOKUP_LATENCY.as_millis()),
        "x": "open slots", "y": "seconds", "log_x": false,
        "series": [
            {"name": "one at a time", "points": points(|r| r.1)},
            {"name": format!("{} at a time", defaults.lookup_concurrency), "points": points(|r| r.2)},
        ],
    });
    println!("\n<!-- plot {plot} -->");
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn slot(i: usize, owner: Owner, now: Timestamp) -> Slot {
    Slot {
        key: SlotKey::new(
            Backend::new(format!("b{}", i % 3)).unwrap(),
            TaskId::new(format!("task-{i}")).unwrap(),
        ),
        run_id: RunId::new(format!("run-{i}")).unwrap(),
        started_at: now.saturating_sub(Duration::from_secs(60)),
        owner,
        lease_until: now,
        started_seq: i as u64 + 1,
    }
}

fn elsewhere(i: usize) -> Owner {
    Owner {
        host: "another-host".into(),
        boot_id: "b".into(),
        runner: ProcessIdentity {
            pid: i as u32 + 10,
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

fn dead_here(host: &HostIdentity, i: usize) -> Owner {
    Owner {
        host: host.host.clone(),
        boot_id: host.boot_id.clone(),
        // Beyond pid_max: never a running process.
        runner: ProcessIdentity {
            pid: 5_000_000 + i as u32,
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

fn timed_scan(
    rt: &tokio::runtime::Runtime,
    ledger: &dyn InFlightLedger,
    probe: &dyn ProcessProbe,
    options: &ScanOptions,
    now: Timestamp,
    project_items: u64,
) -> (Duration, u32) {
    let plane = SlowPlane {
        items: project_items,
        calls: AtomicU32::new(0),
    };
    let started = Instant::now();
    let report = rt
        .block_on(scan(ledger, &plane, probe, options, now))
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(
        report.plane_requests,
        plane
            .calls
            .load(Ordering::SeqCst)
            .max(report.plane_requests)
    );
    (elapsed, report.plane_requests)
}

struct InMemory(Vec<Slot>);

impl InFlightLedger for InMemory {
    fn open_slots(&self) -> Result<Vec<Slot>, EdgeError> {
        Ok(self.0.clone())
    }
    fn finish_if_run(
        &self,
        key: &SlotKey,
        _: &RunId,
        _: FinishReason,
        _: Timestamp,
    ) -> Result<FinishOutcome, EdgeError> {
        let slot = self.0.iter().find(|s| &s.key == key).cloned();
        Ok(slot.map_or(FinishOutcome::NotInFlight, FinishOutcome::Finished))
    }
}

/// A Plane where every request takes [`LOOKUP_LATENCY`] and every task is
/// running.
struct SlowPlane {
    items: u64,
    calls: AtomicU32,
}

impl TaskLookup for SlowPlane {
    fn probe_project(&self) -> BoxFuture<Result<ProjectSummary, LookupError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let items = self.items;
        Box::pin(async move {
            tokio::time::sleep(LOOKUP_LATENCY).await;
            Ok(ProjectSummary { work_items: items })
        })
    }
    fn task_status(&self, _: TaskId) -> BoxFuture<Result<TaskStatus, LookupError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {
            tokio::time::sleep(LOOKUP_LATENCY).await;
            Ok(TaskStatus::Found(running()))
        })
    }
    fn list_project(&self) -> BoxFuture<Result<Vec<(TaskId, TaskState)>, LookupError>> {
        let pages = self.items.div_ceil(LIST_PAGE_SIZE) as u32;
        self.calls.fetch_add(pages, Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(LOOKUP_LATENCY * pages).await;
            Ok((0..SLOTS)
                .map(|i| (TaskId::new(format!("task-{i}")).unwrap(), running()))
                .collect())
        })
    }
}

fn running() -> TaskState {
    TaskState {
        name: "Running".into(),
        group: "started".into(),
        terminal: false,
    }
}
