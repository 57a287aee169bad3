//! The PostgreSQL store's figures, measured on a throwaway server with
//! durable commits (`fsync = on`, `synchronous_commit = on`), beside the
//! redb store's on the same machine in the same run.
//!
//! - the server's floor: two bare single-row commits, as a cycle is two
//!   transactions;
//! - a durable admit+finish cycle under a concurrency cap, against that
//!   floor (an admission and a finish are one round trip each); then with
//!   hourly and daily caps as well, whose windows' starts an admission
//!   counts;
//! - one client under a global cap: cycles per second in this build's
//!   form and in the earlier one (BEGIN, the reading function, the write,
//!   COMMIT: four round trips each half), side by side on the same
//!   server, alternating rounds;
//! - 1, 4 and 16 processes at once (aggregate cycles per second), spread
//!   over 4 backends with no global cap, then all on one backend under a
//!   global cap, where every admission holds the global cap row until its
//!   commit is flushed: at most one admission per WAL flush, by design
//!   (the bound printed is one cycle per single-commit time);
//! - the cap check at 1,000 and 1,000,000 events of history;
//! - the cycle after 100,000 cycles of churn against the first 1,000's,
//!   with the server's autovacuum only.
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
        cycle_on(&store, "warm", "c", i, &concurrency());
        cycle_on(&redb, "warm", "c", i, &concurrency());
    }
    let caps = concurrency();
    let cycle = median((0..SAMPLES).map(|i| timed(|| cycle_on(&store, "bench", "c", i, &caps))));
    let redb_cycle =
        median((0..SAMPLES).map(|i| timed(|| cycle_on(&redb, "bench", "c", i, &caps))));
    // With hourly and daily caps too: each admission counts the
    // backend's starts within each window (here 0 to SAMPLES of them).
    let rated = limits(false);
    let rated_cycle =
        median((0..SAMPLES).map(|i| timed(|| cycle_on(&store, "rated", "c", i, &rated))));
    let redb_rated_cycle =
        median((0..SAMPLES).map(|i| timed(|| cycle_on(&redb, "rated", "c", i, &rated))));

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
        "| durable admit+finish cycle, concurrency caps ({SAMPLES}) | {} | {} | |",
        ms(cycle),
        ms(redb_cycle)
    );
    println!(
        "| cycle / floor | {:.2}x | | within 2.5x |",
        cycle.as_secs_f64() / floor.as_secs_f64()
    );
    println!(
        "| the cycle with hourly and daily caps, 0 to {SAMPLES} starts in the windows | {} | {} | |",
        ms(rated_cycle),
        ms(redb_rated_cycle)
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
        "| admit / finish, each one round trip and one commit | {} / {} | | |",
        ms(admit),
        ms(finish)
    );

    // One client, one backend under a global cap: this build's calls and
    // the earlier form's, in alternating rounds on the same server.
    let (now_form, earlier_form) = global_cap_forms(&url);
    println!(
        "| one client under a global cap: cycles/s, one call per half / the earlier form | {now_form:.0} / {earlier_form:.0} ({:.2}x) | | at least 1.4x |",
        now_form / earlier_form
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
        "| 16 processes over 4 backends / 1 process | {:.1}x | | |",
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
    // Churn: every cycle leaves a dead row in the open slots; with the
    // server's own autovacuum only (no VACUUM by hand), does a cycle stay
    // as cheap? Under the concurrency caps only: a rate window counts the
    // starts within it, at most its cap's worth (the cap check's rows
    // above), and a cap this benchmark never reaches would count them all.
    let churned = churn(&url);
    println!(
        "| cycle under global and backend caps: first {CHURN_SAMPLE} / after {CHURN} cycles of churn (autovacuum only) | {} / {} ({:.2}x) | | within 1.3x |",
        ms(churned.first),
        ms(churned.last),
        churned.last.as_secs_f64() / churned.first.as_secs_f64()
    );
    // The disk's flush time drifts over minutes on a shared machine: the
    // floor measured beside each end says how much of a change is the
    // machine's.
    println!(
        "| the same, each against the floor measured beside it | {:.2}x / {:.2}x ({:.2}x) | | |",
        churned.first.as_secs_f64() / churned.first_floor.as_secs_f64(),
        churned.last.as_secs_f64() / churned.last_floor.as_secs_f64(),
        (churned.last.as_secs_f64() / churned.last_floor.as_secs_f64())
            / (churned.first.as_secs_f64() / churned.first_floor.as_secs_f64())
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
    let plot = serde_json::json!({
        "name": "cycle-under-churn", "kind": "line",
        "title": "Admit+finish cycle under churn (autovacuum only)", "x": "cycles",
        "y": "ms per cycle (median of each stretch)",
        "series": [{"name": "PostgreSQL", "points": churned.stretches}],
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

/// A backend's concurrency cap only, far above what the benchmark opens.
fn concurrency() -> Limits {
    Limits {
        global_max_concurrent: None,
        backend: BackendLimits {
            max_concurrent: 10_000,
            max_per_hour: None,
            max_per_day: None,
        },
    }
}

/// Every cap, far above what the benchmark reaches; a global one or not.
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

fn cycle_on(store: &dyn LedgerStore, backend: &str, tag: &str, i: usize, limits: &Limits) {
    let request = request(backend, tag, i);
    let now = SystemClock.now();
    match store.admit(&request, limits, now).unwrap() {
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

/// What churn did to a cycle.
struct Churned {
    /// The median of the first [`CHURN_SAMPLE`] cycles on a fresh schema,
    /// and of [`CHURN_SAMPLE`] more after [`CHURN`] cycles.
    first: Duration,
    last: Duration,
    /// The floor, measured just before each.
    first_floor: Duration,
    last_floor: Duration,
    /// The median cycle of each stretch of the churn: (cycles so far, ms).
    stretches: Vec<serde_json::Value>,
}

/// [`Churned`], under a global and a backend cap and no rate cap.
fn churn(url: &str) -> Churned {
    const STRETCH: usize = 5_000;
    let store = pg(url, "churn");
    let caps = Limits {
        global_max_concurrent: Some(10_000),
        ..concurrency()
    };
    let cycle = |i: usize| cycle_on(&store, "churn", "c", i, &caps);
    for i in 0..WARM_UP {
        cycle(i);
    }
    let (mut floor_client, insert) = floor_client(url);
    let mut floor = || {
        median((0..200).map(|i| timed(|| two_bare_commits(&mut floor_client, &insert, i as i64))))
    };
    let sample = |from: usize| median((from..from + CHURN_SAMPLE).map(|i| timed(|| cycle(i))));
    let first_floor = floor();
    let first = sample(WARM_UP);
    let from = WARM_UP + CHURN_SAMPLE;
    let mut stretches = Vec::new();
    for start in (from..from + CHURN).step_by(STRETCH) {
        let stretch = median((start..start + STRETCH).map(|i| timed(|| cycle(i))));
        stretches.push(serde_json::json!([
            start - from + STRETCH,
            stretch.as_secs_f64() * 1000.0
        ]));
    }
    let last_floor = floor();
    Churned {
        first,
        last: sample(from + CHURN),
        first_floor,
        last_floor,
        stretches,
    }
}

/// Cycles per second of one client on one backend under a global cap, in
/// this build's form (`PgLedger`) and in the earlier one ([`Earlier`]),
/// each in its own schema of the same server, in alternating rounds.
fn global_cap_forms(url: &str) -> (f64, f64) {
    const ROUNDS: usize = 5;
    const PER_ROUND: usize = 200;
    let store = pg(url, "form_now");
    let mut earlier = Earlier::new(url, "form_earlier");
    for i in 0..WARM_UP {
        cycle_on(&store, "capped", "w", i, &limits(true));
        earlier.cycle(i);
    }
    let (mut now_form, mut earlier_form) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let from = WARM_UP + round * PER_ROUND;
        let rate = |took: Duration| PER_ROUND as f64 / took.as_secs_f64();
        now_form.push(rate(timed(|| {
            for i in from..from + PER_ROUND {
                cycle_on(&store, "capped", "c", i, &limits(true));
            }
        })));
        earlier_form.push(rate(timed(|| {
            for i in from..from + PER_ROUND {
                earlier.cycle(i);
            }
        })));
    }
    let middle = |mut rates: Vec<f64>| {
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    (middle(now_form), middle(earlier_form))
}

/// The earlier form of an admission and a finish, as the store sent them
/// before they became one call each: BEGIN, the schema's reading function
/// (`admit_check`, `finish_take`, which the schema keeps for older
/// builds), the cap rule or the attempts' update applied here, the write,
/// COMMIT. In a schema of its own without the open slots' counting
/// trigger, which that form did not have.
struct Earlier {
    client: postgres::Client,
    schema: String,
}

impl Earlier {
    fn new(url: &str, schema: &str) -> Self {
        drop(pg(url, schema));
        let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
        client
            .batch_execute(&format!(
                "DROP TRIGGER count_open_slots ON \"{schema}\".open_slots"
            ))
            .unwrap();
        Self {
            client,
            schema: format!("\"{schema}\""),
        }
    }

    fn cycle(&mut self, i: usize) {
        use ledger_core::{Event, EventKind, TaskAttempts, Timestamp, admission};
        use postgres::types::Type;
        let s = &self.schema;
        let request = request("capped", "e", i);
        let limits = limits(true);
        let (backend, task) = (request.key.backend.as_str(), request.key.task_id.as_str());
        let window = |cap: Option<u32>, length: i64| cap.map(|_| length);
        let (hour, day) = (
            window(limits.backend.max_per_hour, 3_600_000),
            window(limits.backend.max_per_day, 86_400_000),
        );

        let mut tx = self.client.transaction().unwrap();
        let row = tx
            .query_typed_one(
                &format!("SELECT * FROM {s}.admit_check($1, $2, $3, $4, $5, $6, $7)"),
                &[
                    (&backend, Type::TEXT),
                    (&task, Type::TEXT),
                    (&request.run_id.as_str(), Type::TEXT),
                    (&true, Type::BOOL),
                    (&hour, Type::INT8),
                    (&day, Type::INT8),
                    (&None::<i64>, Type::INT8),
                ],
            )
            .unwrap();
        let (seq, at): (i64, i64) = (row.get(5), row.get(6));
        let count = |i: usize| row.get::<_, Option<i64>>(i).map(|n| n as u64);
        let counts = ledger_core::AdmissionCounts {
            key_in_flight: row.get(7),
            open_total: count(8).unwrap_or(0),
            open_backend: count(9).unwrap_or(0),
            starts_last_hour: count(10),
            starts_last_day: count(11),
        };
        assert!(admission(&counts, &limits).is_none());
        let started = Event {
            seq: seq as u64,
            at: Timestamp::from_unix_millis(at),
            kind: EventKind::Started {
                key: request.key.clone(),
                run_id: request.run_id.clone(),
                owner: request.owner.clone(),
            },
        };
        tx.execute_typed(
            &format!(
                "WITH slot AS ( \
                     INSERT INTO {s}.open_slots (backend, task_id, run_id, host, started_at, lease_until, started_seq, owner) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)), \
                   start AS (INSERT INTO {s}.starts (backend, started_at, seq) VALUES ($1, $5, $7)) \
                 INSERT INTO {s}.events (seq, xid, at, kind, backend, task_id, event) \
                 VALUES ($7, pg_current_xact_id(), $5, 'started', $1, $2, $9)"
            ),
            &[
                (&backend, Type::TEXT),
                (&task, Type::TEXT),
                (&request.run_id.as_str(), Type::TEXT),
                (&request.owner.host, Type::TEXT),
                (&at, Type::INT8),
                (&(at + 60_000), Type::INT8),
                (&seq, Type::INT8),
                (&serde_json::to_string(&request.owner).unwrap(), Type::TEXT),
                (&serde_json::to_string(&started).unwrap(), Type::TEXT),
            ],
        )
        .unwrap();
        tx.commit().unwrap();

        let mut tx = self.client.transaction().unwrap();
        let fresh = serde_json::to_string(&TaskAttempts::default()).unwrap();
        let row = tx
            .query_typed_one(
                &format!("SELECT * FROM {s}.finish_take($1, $2, $3, $4, $5)"),
                &[
                    (&backend, Type::TEXT),
                    (&task, Type::TEXT),
                    (&request.run_id.as_str(), Type::TEXT),
                    (&None::<i64>, Type::INT8),
                    (&fresh, Type::TEXT),
                ],
            )
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "finished");
        let (seq, at): (i64, i64) = (row.get(6), row.get(7));
        let mut attempts: TaskAttempts = serde_json::from_str(row.get(8)).unwrap();
        attempts.record_finish(&FinishReason::Completed);
        let finished = Event {
            seq: seq as u64,
            at: Timestamp::from_unix_millis(at),
            kind: EventKind::Finished {
                key: request.key.clone(),
                run_id: request.run_id.clone(),
                started_at: Timestamp::from_unix_millis(row.get(2)),
                reason: FinishReason::Completed,
                role: None,
            },
        };
        tx.execute_typed(
            &format!(
                "WITH event AS ( \
                     INSERT INTO {s}.events (seq, xid, at, kind, backend, task_id, event) \
                     VALUES ($1, pg_current_xact_id(), $2, 'finished', $3, $4, $5)) \
                 UPDATE {s}.attempts SET attempts = $6 WHERE task_id = $4"
            ),
            &[
                (&seq, Type::INT8),
                (&at, Type::INT8),
                (&backend, Type::TEXT),
                (&task, Type::TEXT),
                (&serde_json::to_string(&finished).unwrap(), Type::TEXT),
                (&serde_json::to_string(&attempts).unwrap(), Type::TEXT),
            ],
        )
        .unwrap();
        tx.commit().unwrap();
    }
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
        cycle_on(&*store, &backend, &format!("w{worker}"), i, &limits(global));
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
