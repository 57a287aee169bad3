//! `cargo xtask bench fleet`: what a fleet spends of Plane's budget.
//!
//! - idle cost: four roles idle on a 5,000-item project, each runner
//!   listing the board itself (one ledger each, as before the shared
//!   snapshot) beside four runners sharing one store; Plane requests a
//!   minute, measured at a 5 s poll and scaled to the default 30 s (target
//!   for the host: one look of 5 pages per poll interval, 10 a minute), and
//!   the bytes of one look with `expand=state`, plain, and with `fields=`;
//! - pickup latency: from moving a task into the claim state to its
//!   executor starting, with webhooks (plane-sim delivering signed POSTs as
//!   Plane does, 0.1 s after the change) and without (the 30 s poll);
//!   target with webhooks: median under 1 s;
//! - requests per dispatch by route at steady state, with comments on
//!   every outcome and on failures only (targets 4.2 and 3.2).
//!
//! Uses the release binaries and plane-sim in-process. Prints figures;
//! asserts nothing.

#[allow(dead_code)]
#[path = "../e2e/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::*;

const ITEMS: usize = 5000;
const ROLES: [&str; 4] = ["r1", "r2", "r3", "r4"];

fn main() {
    // `cargo bench --bench fleet -- pickup` runs only the parts named.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    if wanted("idle") {
        idle_cost();
        look_bytes();
    }
    if wanted("pickup") {
        pickup();
    }
    if wanted("dispatch") {
        per_dispatch();
    }
    if wanted("metrics") {
        metrics_cost();
    }
    // Six minutes long: only when named.
    if only.iter().any(|o| o == "idle-webhooks") {
        idle_with_webhooks();
    }
}

/// Four roles idle on 5,000 items with webhooks on (so the poll defaults
/// to 300 s), watched for 10 minutes after their first look: board pages
/// listed, against the target of one look (5 pages) per 5 minutes.
fn idle_with_webhooks() {
    let mut world = World::new(2, &roles());
    for i in 0..ITEMS {
        world.sim.add_work_item(&format!("item {i}"), "Backlog");
    }
    world.receive_webhooks("plane_wh_idle000000000000000000000000000");
    world.start_watchdog("watchdog");
    for role in ROLES {
        world.start_runner(role, role);
    }
    let start = Duration::from_secs(0);
    std::thread::sleep(Duration::from_secs(15));
    let first = board_pages(&world, start, Duration::from_secs(3600));
    let from = world.sim.requests().last().map_or(Duration::ZERO, |r| r.at);
    let span = Duration::from_secs(600);
    std::thread::sleep(span);
    let later = board_pages(&world, from, from + span);
    println!("## Idle cost with webhooks on (poll 300 s by default), four roles, {ITEMS} items\n");
    println!("| measure | figure | target |");
    println!("|---|---|---|");
    println!("| board pages at start-up (the first look, for every runner) | {first} | 5 |");
    println!("| board pages in the next 10 minutes | {later} | ≤ 10 (one look per 5 minutes) |");
    println!(
        "| requests a minute for the board | {:.1} | ≤ 1 |\n",
        later as f64 / 10.0
    );
}

/// The dispatch path with the metrics (this tree's runner) beside the same
/// path without them (`INFLIGHT_BEFORE_BINS`: a folder holding an earlier
/// revision's `watcher` and `watchdog`, built before the metrics); rounds
/// interleaved, 20 quick tasks through one runner, no rate limit.
fn metrics_cost() {
    let Some(before) = std::env::var_os("INFLIGHT_BEFORE_BINS").map(PathBuf::from) else {
        println!(
            "(metrics cost: set INFLIGHT_BEFORE_BINS to an earlier revision's release binaries to compare)\n"
        );
        return;
    };
    let round = |bins: Option<PathBuf>| -> Duration {
        let mut world = World::with_executor_env(
            2,
            &[Role::new("goal", "Ready for AI")],
            &[("E2E_SLEEP_MS", "0")],
        );
        world.bins = bins;
        let tasks: Vec<String> = (0..20)
            .map(|i| world.sim.add_work_item(&format!("job {i}"), "Ready for AI"))
            .collect();
        let started = Instant::now();
        world.start_runner("goal", "runner");
        wait_until(Duration::from_secs(120), "every task done", || {
            tasks
                .iter()
                .all(|t| world.sim.state_of(t).as_deref() == Some("Done"))
        });
        started.elapsed() / tasks.len() as u32
    };
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        without.push(round(Some(before.clone())));
        with.push(round(None));
    }
    let (with, without) = (median(with), median(without));
    println!(
        "## The dispatch path with and without metrics (20 quick tasks, one runner, median of 3 rounds)\n"
    );
    println!("| runner | time per dispatch | |");
    println!("|---|---|---|");
    println!(
        "| before the metrics ({}) | {:.1} ms | |",
        before.display(),
        without.as_secs_f64() * 1e3
    );
    println!(
        "| with the metrics (this tree) | {:.1} ms | |",
        with.as_secs_f64() * 1e3
    );
    println!(
        "| with / before | {:.2}x | |\n",
        with.as_secs_f64() / without.as_secs_f64()
    );
}

fn roles() -> Vec<Role> {
    vec![
        Role::new("r1", "Queue 1"),
        Role::new("r2", "Queue 2"),
        Role::new("r3", "Queue 3"),
        Role::new("r4", "Queue 4"),
    ]
}

/// Board pages listed in `[from, to)` of the simulator's clock.
fn board_pages(world: &World, from: Duration, to: Duration) -> usize {
    world
        .sim
        .requests()
        .iter()
        .filter(|r| r.at >= from && r.at < to && r.method == "GET")
        .filter(|r| r.path.trim_end_matches('/').ends_with("work-items"))
        .filter(|r| {
            r.query
                .as_deref()
                .is_some_and(|q| q.contains("per_page=1000"))
        })
        .count()
}

fn idle_world() -> World {
    let world = World::new(2, &roles());
    for i in 0..ITEMS {
        world.sim.add_work_item(&format!("item {i}"), "Backlog");
    }
    world.edit_config("poll_interval_secs = 1", "poll_interval_secs = 5");
    world
}

fn idle_cost() {
    let poll = 5.0;
    let (warm, span) = (Duration::from_secs(8), Duration::from_secs(30));
    let mut figures = Vec::new();
    for shared in [false, true] {
        let mut world = idle_world();
        let text = std::fs::read_to_string(&world.config).unwrap();
        for (i, role) in ROLES.iter().enumerate() {
            if shared {
                world.start_runner(role, role);
            } else {
                // A ledger of its own: nothing to share a look through.
                let config: PathBuf = world.path(&format!("alone-{i}.toml"));
                let own = text.replace("var/inflight.redb", &format!("var/alone-{i}.redb"));
                std::fs::write(&config, own).unwrap();
                world.start_runner_with(&config, role, role);
            }
        }
        let start = world
            .sim
            .requests()
            .first()
            .map_or(Duration::ZERO, |r| r.at);
        std::thread::sleep(warm + span);
        let pages = board_pages(&world, start + warm, start + warm + span);
        let looks_per_interval = pages as f64 / 5.0 / (span.as_secs_f64() / poll);
        figures.push((shared, pages, looks_per_interval));
    }
    println!("## Idle cost: four roles, {ITEMS} items (5 pages a look)\n");
    println!(
        "| runners | board pages in 30 s at a 5 s poll | looks per poll interval | requests a minute at the default 30 s poll | target |"
    );
    println!("|---|---|---|---|---|");
    for (shared, pages, looks) in &figures {
        let per_minute = looks * 5.0 * 2.0;
        let (name, target) = if *shared {
            ("four, one shared snapshot", "≤ 10")
        } else {
            ("four, each listing alone (before)", "")
        };
        println!("| {name} | {pages} | {looks:.2} | {per_minute:.1} | {target} |");
    }
    if let [(_, _, alone), (_, _, shared)] = figures[..] {
        println!("\nShared / alone: {:.2}x the requests.", shared / alone);
        println!(
            "With webhooks on, the poll defaults to 300 s: {:.1} looks of 5 pages per 5 minutes ({:.1} requests a minute; target: at most one look per 5 minutes).\n",
            shared,
            shared * 5.0 / 5.0
        );
    }
}

/// The bytes of one look at the 5,000-item board, three ways.
fn look_bytes() {
    let world = idle_world();
    let base = world.sim.base_url();
    let list = format!(
        "/api/v1/workspaces/{}/projects/{}/work-items/",
        world.sim.workspace(),
        world.sim.project_id()
    );
    println!("## One look at {ITEMS} items, by what it asks for\n");
    println!("| query | bytes (5 pages) | vs expand=state |");
    println!("|---|---|---|");
    let mut first = None;
    for (name, query) in [
        ("expand=state (before)", "expand=state"),
        ("plain", ""),
        (
            "fields=id,name,state,labels,created_at (now)",
            "fields=id,name,state,labels,created_at",
        ),
    ] {
        let bytes: usize = (0..5)
            .map(|page| {
                let mut q = format!("per_page=1000&order_by=created_at&cursor=1000:{page}:0");
                if !query.is_empty() {
                    q = format!("{q}&{query}");
                }
                get_bytes(&base, &format!("{list}?{q}"))
            })
            .sum();
        let ratio = first.map_or(1.0, |f: usize| bytes as f64 / f as f64);
        first.get_or_insert(bytes);
        println!("| {name} | {bytes} | {ratio:.2}x |");
    }
    println!();
}

/// The body size of a GET, over a plain connection.
fn get_bytes(base: &str, path_and_query: &str) -> usize {
    let authority = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(authority).unwrap();
    write!(
        stream,
        "GET {path_and_query} HTTP/1.1\r\nHost: {authority}\r\nX-API-Key: {KEY}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    answer.len() - split - 4
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn pickup() {
    let mut rows = Vec::new();
    for webhooks in [true, false] {
        let secret = "plane_wh_bench0000000000000000000000000000";
        let mut world = World::new(2, &[Role::new("goal", "Ready for AI")]);
        if webhooks {
            // Polls every 300 s, the default with webhooks on.
            let port = world.receive_webhooks(secret);
            world
                .sim
                .add_webhook(&format!("http://127.0.0.1:{port}/plane-webhook"), secret);
            world.start_watchdog("watchdog");
        } else {
            world.edit_config("poll_interval_secs = 1", "poll_interval_secs = 30");
        }
        let samples = if webhooks { 10 } else { 4 };
        let tasks: Vec<String> = (0..samples)
            .map(|i| world.sim.add_work_item(&format!("pick me {i}"), "Backlog"))
            .collect();
        world.start_runner("goal", "runner");
        wait_until(Duration::from_secs(20), "the runner to claim", || {
            world.log("runner").contains("claiming")
        });
        std::thread::sleep(Duration::from_secs(2));
        let mut latencies = Vec::new();
        for (i, task) in tasks.iter().enumerate() {
            // Without webhooks, spread the moves over the poll's cycle.
            if !webhooks {
                std::thread::sleep(Duration::from_millis(30_000 * i as u64 / samples as u64));
            }
            let moved = Instant::now();
            world.sim.set_state(task, "Ready for AI");
            while world.executor_pids(task).is_empty() && moved.elapsed() < Duration::from_secs(90)
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            latencies.push(moved.elapsed());
            wait_until(Duration::from_secs(30), "done", || {
                world.sim.state_of(task).as_deref() == Some("Done")
            });
        }
        rows.push((webhooks, median(latencies.clone()), latencies));
    }
    println!("## Pickup latency: the move into the claim state → the executor starts\n");
    println!("| how the runner learns | median | samples | target |");
    println!("|---|---|---|---|");
    for (webhooks, median, all) in rows {
        let all: Vec<String> = all
            .iter()
            .map(|d| format!("{:.2}", d.as_secs_f64()))
            .collect();
        let (name, target) = if webhooks {
            ("a webhook (watchdog run → a hint in the store)", "< 1 s")
        } else {
            ("the 30 s poll", "")
        };
        println!(
            "| {name} | {:.3} s | {} s | {target} |",
            median.as_secs_f64(),
            all.join(", ")
        );
    }
    println!();
}

fn per_dispatch() {
    println!("## Requests per dispatch at steady state, by route (two runners, 30 tasks)\n");
    println!("| comment | route | per dispatch | target |");
    println!("|---|---|---|---|");
    let mut plotted = Vec::new();
    for comment in ["always", "failures"] {
        let mut world = World::new(2, &[Role::new("goal", "Ready for AI")]);
        world.edit_config("poll_interval_secs = 1", "poll_interval_secs = 30");
        world.configure("watcher", &format!("comment = \"{comment}\""));
        let tasks: Vec<String> = (0..30)
            .map(|i| world.sim.add_work_item(&format!("job {i}"), "Ready for AI"))
            .collect();
        world.start_runner("goal", "a");
        world.start_runner("goal", "b");
        wait_until(Duration::from_secs(120), "every task done", || {
            tasks
                .iter()
                .all(|t| world.sim.state_of(t).as_deref() == Some("Done"))
        });
        // Steady state: from the first claim on (each runner's start-up
        // (route probe, states, labels) is not a dispatch's).
        let log = world.sim.requests();
        let first = log.iter().position(|r| r.method == "PATCH").unwrap_or(0);
        let mut by_route: BTreeMap<String, usize> = BTreeMap::new();
        for r in &log[first.saturating_sub(1)..] {
            let tail = r
                .path
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or("");
            let route = match (r.method.as_str(), tail) {
                ("GET", "work-items") => "GET board page",
                ("GET", _)
                    if r.path.contains("/work-items/")
                        && r.path.trim_end_matches('/').split('/').count() > 7 =>
                {
                    "GET work item (re-read)"
                }
                ("PATCH", _) => "PATCH state",
                ("POST", "comments") => "POST comment",
                _ => "other",
            };
            *by_route.entry(route.to_owned()).or_default() += 1;
        }
        let total: usize = by_route.values().sum();
        let n = tasks.len() as f64;
        for (route, count) in &by_route {
            println!("| {comment} | {route} | {:.2} | |", *count as f64 / n);
        }
        plotted.push((comment, by_route.clone(), n));
        let target = if comment == "always" {
            "≤ 4.2"
        } else {
            "≤ 3.2"
        };
        println!(
            "| {comment} | **all** | **{:.2}** | {target} |",
            total as f64 / n
        );
    }
    let mut labels: Vec<String> = plotted
        .iter()
        .flat_map(|(_, routes, _)| routes.keys().cloned())
        .collect();
    labels.sort();
    labels.dedup();
    let series: Vec<serde_json::Value> = plotted
        .iter()
        .map(|(comment, routes, n)| {
            let points: Vec<serde_json::Value> = labels
                .iter()
                .enumerate()
                .map(|(i, l)| serde_json::json!([i, *routes.get(l).unwrap_or(&0) as f64 / n]))
                .collect();
            serde_json::json!({"name": format!("comment = {comment}"), "points": points})
        })
        .collect();
    let plot = serde_json::json!({
        "name": "requests-per-dispatch-by-route", "kind": "bar",
        "title": "Plane requests per dispatch, by route", "x": "route", "y": "requests per dispatch",
        "labels": labels, "series": series,
    });
    println!("\n<!-- plot {plot} -->");
    println!();
}
