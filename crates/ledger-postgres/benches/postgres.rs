//! The PostgreSQL store's figures, measured on a throwaway server with
//! durable commits (`fsync = on`, `synchronous_commit = on`), beside the
//! redb store's on the same machine in the same run.
//!
//! - the server's floor: two bare single-row commits, as a cycle is two
//!   transactions;
//! - a durable admit+finish cycle, against that floor;
//! - 1, 4 and 16 processes at once (aggregate cycles per second), spread
//!   over 4 backends with no global cap, then all on one backend under a
//!   global cap, where every admission holds the global cap row until its
//!   commit is flushed: at most one admission per WAL flush, by design
//!   (the bound printed is one cycle per single-commit time);
//! - the cap check at 1,000 and 1,000,000 events of history.
//!
//! Beside the multi-process figures: the same processes doing bare
//! commits (the server's own group-commit scaling on this machine), and
//! how busy the CPUs were (near 100%, a figure is bounded by the CPUs).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger_core::{
    AdmitOutcome, AdmitRequest, Backend, BackendLimits, Clock, FinishReason, Ledger, LedgerStore,
    Limits, Owner, ProcessIdentity, RunId, SlotKey, SystemClock, TaskId,
};
use ledger_postgres::test_server::TestServer;
use ledger_postgres::{PgLedger, PgOptions};

const SAMPLES: usize = 500;
const WARM_UP: usize = 20;
const CYCLES_PER_PROCESS: usize = 150;
const CAP_CHECKS: usize = 2_000;
/// Cycles of churn, and how many cycles each end's median is taken over.
const CHURN: usize = 100_000;
const CHURN_SAMPLE: usize = 1_000;

fn main() {
    if let Ok(spec) = std::env::var("PG_BENCH_CHILD") {
        child(&spec);
        return;
    }
    let server = TestServer::start().unwrap_or_else(|e| panic!("{e}"));
    server.create_database("bench").unwrap();
    let url = server.url("bench");
    let dir = tempfile::tempdir().unwrap();

    let floor = floor_median(&url);
    let store = pg(&url, "cycle");
    let redb = Ledger::open(dir.path().join("cycle.redb")).unwrap();
    // A runner's session is long-lived: the server compiles the ledger's
    // functions and plans their statements once per session, so a few
    // cycles first, untimed, on each store.
    for i in 0..WARM_UP {
        cycle_on(&store, "warm", "c", i, false);
        cycle_on(&redb, "warm", "c", i, false);
    }
    let cycle = median((0..SAMPLES).map(|i| timed(|| cycle_on(&store, "bench", "c", i, false))));
    let redb_cycle =
        median((0..SAMPLES).map(|i| timed(|| cycle_on(&redb, "bench", "c", i, false))));

    println!("# ledger-postgres benchmark");
    println!();
    println!(
        "A throwaway PostgreSQL on this machine ({} cores), durable commits; redb beside it. Medians.",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!();
    println!("| measure | PostgreSQL | redb | target |");
    println!("|---|---|---|---|");
    println!(
        "| floor: two bare single-row commits ({SAMPLES}) | {} | | |",
        ms(floor)
    );
    println!(
        "| durable admit+finish cycle ({SAMPLES}) | {} | {} | |",
        ms(cycle),
        ms(redb_cycle)
    );
    println!(
        "| cycle / floor | {:.2}x | | within 1.5x |",
        cycle.as_secs_f64() / floor.as_secs_f64()
    );
    // Where a cycle's time goes: a round trip as the client makes it, one
    // through the store's connection thread, and each half of the cycle.
    let (direct, through_store) = round_trips(&url, &store);
    let (admit, finish) = halves(&store);
    println!(
        "| one round trip: client / through the store's thread | {} / {} | | |",
        us(direct),
        us(through_store)
    );
    println!(
        "| admit / finish, each 4 round trips and one commit | {} / {} | | |",
        ms(admit),
        ms(finish)
    );

    let one_commit = floor / 2;
    let bound = 1.0 / one_commit.as_secs_f64();
    // The server's own scaling, with no ledger: what group commit gives
    // processes doing two bare commits per "cycle". The ledger's processes
    // cannot scale past it on this machine.
    let floor_one = aggregate_floor(&url, 1);
    let floor_sixteen = aggregate_floor(&url, 16);
    println!(
        "| floor: 1 / 16 processes of two bare commits | {:.0} / {:.0} per s ({:.1}x; CPU {:.0}% busy) | | |",
        floor_one.rate,
        floor_sixteen.rate,
        floor_sixteen.rate / floor_one.rate,
        floor_sixteen.busy * 100.0
    );
    let mut spread_one = 0.0;
    let (mut pg_points, mut redb_points, mut capped_points) = (Vec::new(), Vec::new(), Vec::new());
    for processes in [1, 4, 16] {
        let spread = aggregate(&url, &format!("spread{processes}"), processes, false);
        let redb_spread = aggregate_redb(
            &dir.path().join(format!("spread{processes}.redb")),
            processes,
        );
        if processes == 1 {
            spread_one = spread.rate;
        }
        pg_points.push(serde_json::json!([processes, spread.rate]));
        redb_points.push(serde_json::json!([processes, redb_spread.rate]));
        println!(
            "| {processes} processes, 4 backends, no global cap | {:.0} cycles/s (CPU {:.0}% busy) | {:.0} cycles/s | |",
            spread.rate,
            spread.busy * 100.0,
            redb_spread.rate
        );
    }
    let spread_sixteen = aggregate(&url, "spread16b", 16, false);
    println!(
        "| 16 processes over 4 backends / 1 process | {:.1}x | | at least 4x |",
        spread_sixteen.rate / spread_one
    );
    for processes in [1, 4, 16] {
        let capped = aggregate(&url, &format!("capped{processes}"), processes, true);
        capped_points.push(serde_json::json!([processes, capped.rate]));
        println!(
            "| {processes} processes, 1 backend, global cap | {:.0} cycles/s (bound {bound:.0}, {:.2}x of it; CPU {:.0}% busy) | | within 1.5x of the bound |",
            capped.rate,
            capped.rate / bound,
            capped.busy * 100.0
        );
    }

    let small = cap_check(&url, "check3", 1_000);
    let large = cap_check(&url, "check6", 1_000_000);
    println!(
        "| cap check, 1,000 events of history ({CAP_CHECKS}) | {} | | |",
        us(small)
    );
    println!(
        "| cap check, 1,000,000 events of history ({CAP_CHECKS}) | {} | | |",
        us(large)
    );
    println!(
        "| cap check at 10^6 / at 10^3 | {:.2}x | | at most 2x |",
        large.as_secs_f64() / small.as_secs_f64()
    );
    // Churn: every cycle leaves dead rows where admissions count open
    // slots; with the server's own autovacuum only (no VACUUM by hand),
    // does a cycle stay as cheap?
    let (first, churned) = churn(&url);
    println!(
        "| cycle: first {CHURN_SAMPLE} / after {CHURN} cycles of churn (autovacuum only) | {} / {} ({:.2}x) | | within 1.3x |",
        ms(first),
        ms(churned),
        churned.as_secs_f64() / first.as_secs_f64()
    );
    // The plots `cargo xtask bench` draws.
    let plot = serde_json::json!({
        "name": "admit-latency-vs-history", "kind": "line",
        "title": "Cap check (admission) against history", "x": "events of history",
        "y": "µs per check", "log_x": true,
        "series": [{"name": "PostgreSQL", "points": [
            [1e3, small.as_secs_f64() * 1e6], [1e6, large.as_secs_f64() * 1e6]]}],
    });
    println!("\n<!-- plot {plot} -->");
    let plot = serde_json::json!({
        "name": "cycles-vs-processes", "kind": "line",
        "title": "Aggregate admit+finish cycles per second", "x": "processes",
        "y": "cycles/s", "log_x": true,
        "series": [
            {"name": "PostgreSQL, 4 backends", "points": pg_points},
            {"name": "PostgreSQL, global cap", "points": capped_points},
            {"name": "redb, 4 backends", "points": redb_points},
        ],
    });
    println!("<!-- plot {plot} -->");
    drop(server);
}

fn pg(url: &str, schema: &str) -> PgLedger {
    let mut options = PgOptions::new(url);
    options.schema = schema.into();
    PgLedger::open(options).unwrap_or_else(|e| panic!("{e}"))
}

fn owner() -> Owner {
    Owner {
        host: "bench".into(),
        boot_id: "bench".into(),
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

fn limits(global: bool) -> Limits {
    Limits {
        global_max_concurrent: global.then_some(10_000),
        backend: BackendLimits {
            max_concurrent: 10_000,
            max_per_hour: Some(1_000_000),
            max_per_day: Some(10_000_000),
        },
    }
}

/// The `i`th request of a series `tag` on `backend`.
fn request(backend: &str, tag: &str, i: usize) -> AdmitRequest {
    AdmitRequest {
        key: SlotKey::new(
            Backend::new(backend).unwrap(),
            TaskId::new(format!("{tag}-t{i}")).unwrap(),
        ),
        run_id: RunId::new(format!("{tag}-r{i}")).unwrap(),
        owner: owner(),
        lease: Duration::from_secs(60),
    }
}

fn cycle_on(store: &dyn LedgerStore, backend: &str, tag: &str, i: usize, global: bool) {
    let request = request(backend, tag, i);
    let now = SystemClock.now();
    match store.admit(&request, &limits(global), now).unwrap() {
        AdmitOutcome::Admitted(_) => {}
        AdmitOutcome::Denied(d) => panic!("bench admission denied: {d}"),
    }
    store
        .finish(
            &request.key,
            Some(&request.run_id),
            FinishReason::Completed,
            now,
        )
        .unwrap();
}

/// The median cycle of the first [`CHURN_SAMPLE`] cycles on a fresh
/// schema, and of [`CHURN_SAMPLE`] more after [`CHURN`] cycles.
fn churn(url: &str) -> (Duration, Duration) {
    let store = pg(url, "churn");
    for i in 0..WARM_UP {
        cycle_on(&store, "warm", "w", i, false);
    }
    let sample = |from: usize| {
        median(
            (from..from + CHURN_SAMPLE).map(|i| timed(|| cycle_on(&store, "churn", "c", i, false))),
        )
    };
    let first = sample(0);
    for i in CHURN_SAMPLE..CHURN_SAMPLE + CHURN {
        cycle_on(&store, "churn", "c", i, false);
    }
    (first, sample(CHURN_SAMPLE + CHURN))
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn median(samples: impl Iterator<Item = Duration>) -> Duration {
    let mut samples: Vec<Duration> = samples.collect();
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// A connection to the floor's table (made if missing) and its insert.
fn floor_client(url: &str) -> (postgres::Client, postgres::Statement) {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS floor (i bigint)")
        .unwrap();
    let insert = client.prepare("INSERT INTO floor VALUES ($1)").unwrap();
    (client, insert)
}

/// Two autocommit single-row inserts: what the disk and the server cost
/// for two durable commits, with no ledger.
fn two_bare_commits(client: &mut postgres::Client, insert: &postgres::Statement, i: i64) {
    client.execute(insert, &[&i]).unwrap();
    client.execute(insert, &[&i]).unwrap();
}

fn floor_median(url: &str) -> Duration {
    let (mut client, insert) = floor_client(url);
    median((0..SAMPLES as i64).map(|i| timed(|| two_bare_commits(&mut client, &insert, i))))
}

/// Cycles per second with `processes` processes at once on one schema:
/// spread over 4 backends, or all on one under a global cap.
fn aggregate(url: &str, schema: &str, processes: usize, global: bool) -> Aggregate {
    drop(pg(url, schema));
    run_children(processes, |w| {
        format!(
            "pg|{url}|{schema}|{}|{w}",
            if global { "global" } else { "spread" }
        )
    })
}

fn aggregate_redb(path: &Path, processes: usize) -> Aggregate {
    drop(Ledger::open(path).unwrap());
    run_children(processes, |w| {
        format!("redb|{}|-|spread|{w}", path.display())
    })
}

/// Pairs of bare commits per second with `processes` processes at once.
fn aggregate_floor(url: &str, processes: usize) -> Aggregate {
    // The table first, so the children do not race to make it.
    drop(floor_client(url));
    run_children(processes, |w| format!("floor|{url}|-|-|{w}"))
}

/// A multi-process figure: the aggregate rate, and how busy the machine's
/// CPUs were meanwhile (a figure near 100% is bounded by the CPUs, not by
/// the disk or the locks).
struct Aggregate {
    rate: f64,
    busy: f64,
}

fn run_children(processes: usize, spec: impl Fn(usize) -> String) -> Aggregate {
    let exe = std::env::current_exe().unwrap();
    let before = cpu_times();
    let started = Instant::now();
    let children: Vec<_> = (0..processes)
        .map(|w| {
            Command::new(&exe)
                .env("PG_BENCH_CHILD", spec(w))
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let elapsed = started.elapsed();
    let after = cpu_times();
    let (busy, total) = (after.0 - before.0, after.1 - before.1);
    Aggregate {
        rate: (processes * CYCLES_PER_PROCESS) as f64 / elapsed.as_secs_f64(),
        busy: if total > 0 {
            busy as f64 / total as f64
        } else {
            0.0
        },
    }
}

/// The machine's busy and total CPU time so far, in clock ticks, from
/// `/proc/stat` (user, nice, system, irq, softirq and steal are busy; idle
/// and iowait are not).
fn cpu_times() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

fn child(spec: &str) {
    let parts: Vec<&str> = spec.split('|').collect();
    let [engine, location, schema, mode, worker] = parts.as_slice() else {
        panic!("bad child spec {spec:?}");
    };
    let worker: usize = worker.parse().unwrap();
    if *engine == "floor" {
        let (mut client, insert) = floor_client(location);
        for i in 0..CYCLES_PER_PROCESS as i64 {
            two_bare_commits(&mut client, &insert, i);
        }
        return;
    }
    let global = *mode == "global";
    let backend = if global {
        "one".to_owned()
    } else {
        format!("b{}", worker % 4)
    };
    let store: Arc<dyn LedgerStore> = match *engine {
        "pg" => Arc::new(pg(location, schema)),
        _ => Arc::new(Ledger::open(location).unwrap()),
    };
    for i in 0..CYCLES_PER_PROCESS {
        cycle_on(&*store, &backend, &format!("w{worker}"), i, global);
    }
}

/// The median read-only cap check with `history` events behind it (older
/// than the daily window, as in a ledger whose caps hold), and a few slots
/// open.
fn cap_check(url: &str, schema: &str, history: usize) -> Duration {
    let store = pg(url, schema);
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let old = SystemClock
        .now()
        .saturating_sub(Duration::from_secs(3 * 86_400))
        .as_unix_millis();
    // The history straight into the tables: a million admissions one by one
    // would take the benchmark's whole budget.
    client
        .batch_execute(&format!(
            "SET search_path TO {schema};
             INSERT INTO events (seq, xid, at, kind, backend, task_id, event)
               SELECT nextval('event_seq'), pg_current_xact_id(), {old} + g, 'started', 'bench', 'h' || g, '{{}}'
               FROM generate_series(1, {half}) AS g;
             INSERT INTO starts (backend, started_at, seq)
               SELECT 'bench', {old} + g, g FROM generate_series(1, {half}) AS g;
             INSERT INTO events (seq, xid, at, kind, backend, task_id, event)
               SELECT nextval('event_seq'), pg_current_xact_id(), {old} + g, 'finished', 'bench', 'h' || g, '{{}}'
               FROM generate_series(1, {half}) AS g;
             ANALYZE;",
            half = history / 2
        ))
        .unwrap();
    for i in 0..3 {
        cycle_open(&store, i);
    }
    let key = SlotKey::new(
        Backend::new("bench").unwrap(),
        TaskId::new("candidate").unwrap(),
    );
    median((0..CAP_CHECKS).map(|_| {
        timed(|| {
            let verdict = store
                .check_admission(&key, &limits(false), SystemClock.now())
                .unwrap();
            assert!(verdict.is_none());
        })
    }))
}

fn cycle_open(store: &PgLedger, i: usize) {
    let request = request("bench", "open", i);
    store
        .admit(&request, &limits(false), SystemClock.now())
        .unwrap();
}

fn round_trips(url: &str, store: &PgLedger) -> (Duration, Duration) {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let one = client.prepare("SELECT 1").unwrap();
    let direct = median((0..SAMPLES).map(|_| timed(|| drop(client.query(&one, &[]).unwrap()))));
    let local = SystemClock.now();
    let through = median((0..SAMPLES).map(|_| {
        timed(|| {
            store.now(local).unwrap();
        })
    }));
    (direct, through)
}

fn halves(store: &PgLedger) -> (Duration, Duration) {
    let mut admits = Vec::with_capacity(SAMPLES);
    let mut finishes = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let request = request("halves", "h", i);
        let now = SystemClock.now();
        admits.push(timed(|| {
            drop(store.admit(&request, &limits(false), now).unwrap())
        }));
        finishes.push(timed(|| {
            drop(
                store
                    .finish(
                        &request.key,
                        Some(&request.run_id),
                        FinishReason::Completed,
                        now,
                    )
                    .unwrap(),
            )
        }));
    }
    (median(admits.into_iter()), median(finishes.into_iter()))
}
