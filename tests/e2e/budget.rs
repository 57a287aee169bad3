//! One Plane budget for every process using a key: six runners and the
//! watchdog on one key, the simulator limiting it to 60 requests a minute
//! as real Plane does (`X-RateLimit-Reset` = now + 60, a 429 past the
//! limit). Each process used to pace itself to the whole budget alone;
//! together they now draw from one window kept in the ledger.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

const LIMIT: usize = 60;
const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn six_runners_and_the_watchdog_on_one_key_never_meet_a_429() {
    let mut world = World::new(2, &[Role::new("goal", "Ready for AI")]);
    world.edit_config(
        "rate_limit_per_minute = 6000",
        &format!("rate_limit_per_minute = {LIMIT}"),
    );
    world.sim.set_rate_limit(Some((LIMIT as u32, MINUTE)));
    let tasks: Vec<String> = (0..10)
        .map(|i| world.sim.add_work_item(&format!("job {i}"), "Ready for AI"))
        .collect();
    let mut processes: Vec<(usize, String)> = (0..6)
        .map(|i| {
            let tag = format!("runner-{i}");
            (world.start_runner("goal", &tag), tag)
        })
        .collect();
    processes.push((world.start_watchdog("watchdog"), "watchdog".into()));

    wait_until(Duration::from_secs(240), "every task done", || {
        tasks
            .iter()
            .all(|t| world.sim.state_of(t).as_deref() == Some("Done"))
    });
    for (index, _) in &processes {
        world.signal(*index, libc::SIGTERM);
    }
    for (index, tag) in &processes {
        assert!(
            world
                .wait(*index, Duration::from_secs(15))
                .is_some_and(|s| s.success()),
            "{tag}:\n{}",
            world.log(tag)
        );
    }

    let log = world.sim.requests();
    let refused: Vec<_> = log.iter().filter(|r| r.status == 429).collect();
    assert!(refused.is_empty(), "{} requests met a 429", refused.len());
    // The simulator's own count: never more than the limit in a minute.
    let times: Vec<Duration> = log.iter().map(|r| r.at).collect();
    let busiest = times
        .iter()
        .map(|start| {
            times
                .iter()
                .filter(|t| **t >= *start && **t < *start + MINUTE)
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(busiest <= LIMIT, "{busiest} requests within a minute");
    // The fleet wanted more than the budget (seven processes polling
    // every second), so it did wait; and every wait was for a full
    // window or a pause, never while the shared window had room.
    let mut waits = 0;
    for (_, tag) in &processes {
        for line in world.log(tag).lines() {
            let Ok(entry) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if entry["message"] != "waiting for the shared Plane budget" {
                continue;
            }
            waits += 1;
            assert!(
                entry["in_window"].as_u64() >= Some(LIMIT as u64) || entry["paused"] == true,
                "{tag} waited with room in the window: {line}"
            );
        }
    }
    assert!(
        waits > 0,
        "no process ever waited: the budget was never used up"
    );
    assert!(
        busiest >= LIMIT * 9 / 10,
        "the budget was not used: at most {busiest} requests in a minute"
    );
    eprintln!(
        "{} requests, busiest minute {busiest}, {waits} waits logged",
        log.len()
    );
}
