//! `cargo xtask bench budget`: one Plane budget for a fleet, measured.
//!
//! Six runners and the watchdog share one key; plane-sim limits it to 60
//! requests a minute with `X-RateLimit-Reset` = now + 60, as real Plane
//! does; 300 quick tasks wait in the claim state. Printed: the 429s
//! plane-sim answered (target 0), the requests per dispatch, the fleet's
//! dispatch rate beside what the budget allows (60 / requests per
//! dispatch; target within 10%), and the waits the processes logged, with
//! those that waited while the shared window had room (target 0). Takes
//! about 25 minutes: the budget is the bottleneck by design.

#[allow(dead_code)]
#[path = "../e2e/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const LIMIT: u32 = 60;
const MINUTE: Duration = Duration::from_secs(60);

fn main() {
    let tasks: usize = std::env::var("BUDGET_TASKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let mut world = World::with_executor_env(
        2,
        &[Role::new("goal", "Ready for AI")],
        &[("E2E_SLEEP_MS", "50")],
    );
    world.edit_config(
        "rate_limit_per_minute = 6000",
        &format!("rate_limit_per_minute = {LIMIT}"),
    );
    // The default poll: an idle runner looks at the shared board every
    // 30 s, not every second.
    world.edit_config("poll_interval_secs = 1", "poll_interval_secs = 30");
    world.sim.set_rate_limit(Some((LIMIT, MINUTE)));
    let ids: Vec<String> = (0..tasks)
        .map(|i| world.sim.add_work_item(&format!("job {i}"), "Ready for AI"))
        .collect();
    let started = Instant::now();
    let mut processes: Vec<(usize, String)> = (0..6)
        .map(|i| {
            let tag = format!("runner-{i}");
            (world.start_runner("goal", &tag), tag)
        })
        .collect();
    processes.push((world.start_watchdog("watchdog"), "watchdog".into()));
    let done = |world: &World| {
        ids.iter()
            .filter(|t| world.sim.state_of(t).as_deref() == Some("Done"))
            .count()
    };
    // The first minute is start-up (route probes, state lists, first
    // looks); the steady state is measured from the 10th task done to the
    // last.
    let mut first_mark = None;
    let deadline = started + Duration::from_secs(3600);
    while done(&world) < tasks && Instant::now() < deadline {
        if first_mark.is_none() && done(&world) >= 10 {
            first_mark = Some((Instant::now(), world.sim.requests().len(), done(&world)));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let finished = Instant::now();
    let total_done = done(&world);
    let requests = world.sim.requests();
    for (index, _) in &processes {
        world.signal(*index, libc::SIGTERM);
    }
    for (index, _) in &processes {
        world.wait(*index, Duration::from_secs(15));
    }

    let (mark_at, mark_requests, mark_done) = first_mark.unwrap_or((started, 0, 0));
    let steady_dispatches = (total_done - mark_done) as f64;
    let steady_requests = requests.len().saturating_sub(mark_requests) as f64;
    let per_dispatch = steady_requests / steady_dispatches.max(1.0);
    let minutes = finished.duration_since(mark_at).as_secs_f64() / 60.0;
    let rate = steady_dispatches / minutes.max(1e-9);
    let allowed = f64::from(LIMIT) / per_dispatch;
    let refused = requests.iter().filter(|r| r.status == 429).count();
    let mut by_route: BTreeMap<String, usize> = BTreeMap::new();
    for r in requests.iter().skip(mark_requests) {
        *by_route
            .entry(route(&r.method, &r.path, r.query.as_deref()))
            .or_default() += 1;
    }
    let (mut waits, mut with_room) = (0, 0);
    for (_, tag) in &processes {
        for line in world.log(tag).lines() {
            let Ok(entry) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if entry["message"] != "waiting for the shared Plane budget" {
                continue;
            }
            waits += 1;
            if entry["in_window"].as_u64() < Some(u64::from(LIMIT)) && entry["paused"] != true {
                with_room += 1;
            }
        }
    }

    println!("| measure | figure | target |");
    println!("|---|---|---|");
    println!(
        "| tasks done | {total_done} of {tasks} in {:.1} min | all |",
        finished.duration_since(started).as_secs_f64() / 60.0
    );
    println!("| 429s answered by plane-sim | {refused} | 0 |");
    println!(
        "| busiest minute | {} requests | ≤ {LIMIT} |",
        world.sim.busiest_window(MINUTE)
    );
    println!("| requests per dispatch (steady state) | {per_dispatch:.2} | |");
    for (route, n) in &by_route {
        println!(
            "| — {route} | {:.2} per dispatch | |",
            *n as f64 / steady_dispatches.max(1.0)
        );
    }
    println!("| dispatch rate (steady state) | {rate:.2} /min | |");
    println!("| what the budget allows (60 / requests per dispatch) | {allowed:.2} /min | |");
    println!("| rate / allowed | {:.2}x | ≥ 0.90x |", rate / allowed);
    println!("| budget waits logged | {waits} | |");
    println!("| waits while the window had room | {with_room} | 0 |");
}

/// A request's route, with ids folded: `GET work-items/{id}`.
fn route(method: &str, path: &str, query: Option<&str>) -> String {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let tail: Vec<&str> = parts
        .iter()
        .skip_while(|p| **p != "projects")
        .skip(2)
        .map(|p| {
            if p.len() == 36 && p.matches('-').count() == 4 {
                "{id}"
            } else {
                p
            }
        })
        .collect();
    let list = if tail.last() == Some(&"work-items") || tail.last() == Some(&"issues") {
        if query.is_some_and(|q| q.contains("per_page=1&") || q.ends_with("per_page=1")) {
            " (probe)"
        } else {
            " (board)"
        }
    } else {
        ""
    };
    let tail = if tail.is_empty() {
        "project".to_owned()
    } else {
        tail.join("/")
    };
    format!("{method} {tail}{list}")
}
