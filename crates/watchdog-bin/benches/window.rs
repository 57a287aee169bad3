//! `cargo xtask bench window`: what the operator's window costs on a big
//! ledger, on both stores: the overview (read, decided, rendered to HTML)
//! with 1,000 open slots over 1,000,000 events, `explain` of a task with
//! 100 runs (read, decided, rendered), and `watchdog status` beside them.
//! The ledger is opened read-only, as the commands and the page open it.
//!
//! Prints figures (the median of 20 of each); asserts nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use ledger_core::{Clock, SystemClock, TaskId, Timestamp};
use ledger_postgres::test_server::TestServer;
use runtime::Config;
use watchdog_bin::explain::{Found, OnBoard, explain, gather};
use watchdog_bin::web::{overview_html, task_html};
use watchdog_bin::window::{gather_overview, overview};

const EVENTS: usize = 1_000_000;
const OPEN: usize = 1_000;
const RUNS: usize = 100;
const ROUNDS: usize = 20;
const EXPLAINED: &str = "T-explained";

fn main() {
    // SAFETY: set before any thread of this process reads the environment.
    unsafe { std::env::set_var("BENCH_PLANE_KEY", "plane_api_bench000000000000000000000000") };
    let dir = tempfile::tempdir().unwrap();
    let usage = dir.path().join("usage.json");
    let now = SystemClock.now();
    let written = Instant::now();
    std::fs::write(&usage, usage_json(now)).unwrap();
    eprintln!("usage.json written in {:.1?}", written.elapsed());

    println!("# window benchmark");
    println!();
    println!(
        "A ledger of {EVENTS} events with {OPEN} open slots; `explain` of a task with {RUNS} runs. \
         Each figure is the median of {ROUNDS}: read, decided and rendered (HTML for the page, text for status)."
    );
    println!();
    println!("| store | import | `watchdog status` | overview | explain | targets |");
    println!("|---|---|---|---|---|---|");

    let redb = config(dir.path(), "[ledger]\npath = \"ledger.redb\"\n");
    measure("redb", &redb, &usage);

    let server = TestServer::start().unwrap_or_else(|e| panic!("{e}"));
    let pg = config(
        dir.path(),
        &format!(
            "[ledger]\nstore = \"postgres\"\nurl = \"{}\"\nschema = \"window_bench\"\n",
            server.url("postgres")
        ),
    );
    measure("PostgreSQL", &pg, &usage);
}

/// Imports the ledger, then times the three views.
fn measure(store: &str, config: &Config, usage: &Path) {
    let import = Instant::now();
    let report = runtime::open_store(config)
        .unwrap()
        .import_usage_json(usage)
        .unwrap();
    let import = import.elapsed();
    assert_eq!(report.events_recorded as usize, EVENTS);
    let ledger = runtime::open_store_read_only(config).unwrap();
    let probe = watchdog_bin::probe(config).unwrap();
    assert_eq!(ledger.open_slots().unwrap().len(), OPEN);

    let status = median(|| {
        let status = watchdog_bin::status(&*ledger, config, &probe, SystemClock.now()).unwrap();
        watchdog_bin::status_text(&status).len()
    });
    let problems = BTreeMap::new();
    let overview_time = median(|| {
        let facts = gather_overview(&*ledger, config, &probe, SystemClock.now()).unwrap();
        let o = overview(&facts, &problems, None, config);
        assert_eq!(o.slots.len(), OPEN);
        overview_html(&o, config).unwrap().len()
    });
    let task = TaskId::new(EXPLAINED).unwrap();
    let found = Found {
        task: task.clone(),
        board: Some(OnBoard {
            id: EXPLAINED.into(),
            identifier: Some("ROCK-7".into()),
            title: "a task with a long history".into(),
            state: "Todo".into(),
            labels: Vec::new(),
        }),
        role_problems: BTreeMap::new(),
        plane_error: None,
    };
    let explain_time = median(|| {
        let facts = gather(&*ledger, config, &probe, &task, SystemClock.now()).unwrap();
        let e = explain(&found, &facts, config);
        assert_eq!(e.history.len(), 2 * RUNS);
        task_html(&e, config, facts.now).unwrap().len()
    });
    println!(
        "| {store} | {:.1} s | {} | {} | {} | overview under 50 ms, explain under 20 ms |",
        import.as_secs_f64(),
        ms(status),
        ms(overview_time),
        ms(explain_time)
    );
}

fn median(mut run: impl FnMut() -> usize) -> Duration {
    let mut times: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(run());
            started.elapsed()
        })
        .collect();
    times.sort();
    times[ROUNDS / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The configuration, with `ledger` as its `[ledger]` table.
fn config(dir: &Path, ledger: &str) -> Config {
    let text = format!(
        "{ledger}
[plane]
base_url = \"http://127.0.0.1:9\"
workspace = \"acme\"
project_id = \"7a9e77a8-f88a-4a02-989e-b62a535fbb98\"
api_key_env = \"BENCH_PLANE_KEY\"

[limits]
max_concurrent = 5000

[backends.local]
max_concurrent = 2000
max_per_hour = 100000
command = [\"true\"]

[backends.other]
max_concurrent = 2000
command = [\"true\"]

[roles.goal]
claim_state = \"Todo\"
running_state = \"Running\"
done_state = \"Done\"
blocked_state = \"Blocked\"
backend = \"local\"
"
    );
    let name = if ledger.contains("postgres") {
        "pg.toml"
    } else {
        "redb.toml"
    };
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    Config::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// A `usage.json` of [`EVENTS`] events, one a second up to `now`: runs of
/// many tasks on two backends, [`RUNS`] runs of [`EXPLAINED`], then
/// [`OPEN`] starts left open.
fn usage_json(now: Timestamp) -> Vec<u8> {
    let mut entries: Vec<(String, &str, &str)> = Vec::with_capacity(EVENTS);
    let history = (EVENTS - OPEN) / 2 - RUNS;
    let mut explained = 0;
    for i in 0..history {
        let backend = if i % 2 == 0 { "local" } else { "other" };
        // Task ids repeat, as a board's tasks are run again.
        let task = format!("T{}", i % 50_000);
        entries.push((task.clone(), backend, "execution_started"));
        entries.push((task, backend, "execution_finished"));
        // The explained task's runs, spread over the whole history.
        if i % (history / RUNS) == 0 && explained < RUNS {
            explained += 1;
            entries.push((EXPLAINED.into(), "local", "execution_started"));
            entries.push((EXPLAINED.into(), "local", "execution_finished"));
        }
    }
    assert_eq!(explained, RUNS);
    for i in 0..OPEN {
        entries.push((format!("O{i}"), "local", "execution_started"));
    }
    assert_eq!(entries.len(), EVENTS);
    let mut out = String::from("{\"events\": [\n");
    for (i, (task, backend, kind)) in entries.iter().enumerate() {
        let at = now.saturating_sub(Duration::from_secs((EVENTS - i) as u64));
        out.push_str(&format!(
            "{{\"kind\": \"{kind}\", \"task_id\": \"{task}\", \"backend\": \"{backend}\", \"timestamp\": \"{at}\"}}{}\n",
            if i + 1 < EVENTS { "," } else { "" }
        ));
    }
    out.push_str("]}\n");
    out.into_bytes()
}
