//! One Plane budget for every process using a key, the simulator limiting
//! it as real Plane does (`X-RateLimit-Reset` = now + 60, a 429 past the
//! limit). Each process used to pace itself to the whole budget alone;
//! together they now draw from one window kept in the ledger's store:
//! every process of a host with redb, every host with PostgreSQL.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

const MINUTE: Duration = Duration::from_secs(60);

/// Six runners and the watchdog on one key limited to 60 a minute. The
/// work needs more than that: each runner's first look is 2 or 3 requests
/// (the route probe, the states; the board is listed once for all), and
/// each dispatch 4, so 16 tasks cannot be done within one minute's budget,
/// and the fleet must wait at least once however fast the machine is.
#[test]
fn six_runners_and_the_watchdog_on_one_key_never_meet_a_429() {
    let mut world = limited(World::new(2, &[Role::new("goal", "Ready for AI")]), 60);
    let tasks = add_tasks(&world, 16);
    let mut processes: Vec<(usize, String)> = (0..6)
        .map(|i| {
            let tag = format!("runner-{i}");
            (world.start_runner("goal", &tag), tag)
        })
        .collect();
    processes.push((world.start_watchdog("watchdog"), "watchdog".into()));
    finish_and_check(&mut world, &tasks, &processes, 60);
}

/// Two hosts, two runners each, on one PostgreSQL ledger and one key
/// limited to 20 a minute: 4 first looks and 4 dispatches need at least
/// 28 requests, so here too the budget runs out.
#[test]
fn runners_on_two_hosts_share_one_budget_through_postgres() {
    let mut world = limited(
        World::new(2, &[Role::new("goal", "Ready for AI")]).on_postgres(),
        20,
    );
    let tasks = add_tasks(&world, 4);
    let mut processes = Vec::new();
    for host in ["a", "b"] {
        for i in 0..2 {
            let tag = format!("runner-{host}{i}");
            processes.push((world.start_runner_on(host, "goal", &tag), tag));
        }
    }
    finish_and_check(&mut world, &tasks, &processes, 20);
}

fn limited(world: World, limit: u32) -> World {
    world.edit_config(
        "rate_limit_per_minute = 6000",
        &format!("rate_limit_per_minute = {limit}"),
    );
    world.sim.set_rate_limit(Some((limit, MINUTE)));
    world
}

fn add_tasks(world: &World, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| world.sim.add_work_item(&format!("job {i}"), "Ready for AI"))
        .collect()
}

/// Waits for every task to be done, stops the processes, and checks the
/// simulator's log and theirs: no 429; never more than `limit` requests
/// within a minute; the budget was used up (the processes, polling every
/// second, want more than it allows), and every wait a process logged was
/// for a full window or a pause, never while the window had room.
fn finish_and_check(
    world: &mut World,
    tasks: &[String],
    processes: &[(usize, String)],
    limit: usize,
) {
    wait_until(Duration::from_secs(240), "every task done", || {
        tasks
            .iter()
            .all(|t| world.sim.state_of(t).as_deref() == Some("Done"))
    });
    for (index, _) in processes {
        world.signal(*index, libc::SIGTERM);
    }
    for (index, tag) in processes {
        assert!(
            world
                .wait(*index, Duration::from_secs(15))
                .is_some_and(|s| s.success()),
            "{tag}:\n{}",
            world.log(tag)
        );
    }

    let log = world.sim.requests();
    let refused = log.iter().filter(|r| r.status == 429).count();
    assert_eq!(refused, 0, "{refused} requests met a 429");
    let busiest = world.sim.busiest_window(MINUTE);
    assert!(busiest <= limit, "{busiest} requests within a minute");
    let mut waits = 0;
    for (_, tag) in processes {
        for line in world.log(tag).lines() {
            let Ok(entry) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if entry["message"] != "waiting for the shared Plane budget" {
                continue;
            }
            waits += 1;
            assert!(
                entry["in_window"].as_u64() >= Some(limit as u64) || entry["paused"] == true,
                "{tag} waited with room in the window: {line}"
            );
        }
    }
    assert!(waits > 0, "no process waited: the budget was never used up");
    assert!(
        busiest >= limit * 9 / 10,
        "the budget was not used: at most {busiest} requests in a minute"
    );
    eprintln!(
        "{} requests, busiest minute {busiest} of {limit}, {waits} waits logged",
        log.len()
    );
}

/// One request with the key from outside the fleet (another program, a
/// `--once` run), over plain HTTP/1.1 on loopback: its status.
fn outside_request(world: &World) -> u16 {
    use std::io::{Read, Write};
    let base = world.sim.base_url();
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET /api/v1/workspaces/acme/projects/{}/ HTTP/1.1\r\nHost: {address}\r\nX-API-Key: {KEY}\r\nConnection: close\r\n\r\n",
        world.sim.project_id()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The key also serves a client outside the fleet, which spent most of
/// Plane's window just before the runners start: Plane's own count
/// (`X-RateLimit-Remaining` on every answer) tells the fleet's shared
/// window what it did not send, and the fleet meets no 429 (before: it
/// spent a whole window of its own and met a 429 at the 7th request).
#[test]
fn a_key_shared_with_a_client_outside_the_fleet_meets_no_429() {
    let mut world = limited(World::new(2, &[Role::new("goal", "Ready for AI")]), 20);
    for _ in 0..14 {
        assert_eq!(outside_request(&world), 200);
    }
    let outside = world.sim.requests().len();
    let tasks = add_tasks(&world, 3);
    let processes: Vec<(usize, String)> = (0..2)
        .map(|i| {
            let tag = format!("runner-{i}");
            (world.start_runner("goal", &tag), tag)
        })
        .collect();
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
            world.wait(*index, Duration::from_secs(15)).is_some(),
            "{tag}:\n{}",
            world.log(tag)
        );
    }
    let log = world.sim.requests();
    let refused: Vec<_> = log[outside..].iter().filter(|r| r.status == 429).collect();
    assert!(
        refused.is_empty(),
        "the fleet met {} 429s: {refused:?}",
        refused.len()
    );
    let told = processes
        .iter()
        .any(|(_, tag)| world.log(tag).contains("from outside the fleet"));
    assert!(told, "no runner learnt of the outside requests");
    assert!(world.sim.busiest_window(MINUTE) <= 20);
}
