//! One look at the board serves every runner sharing a store: the
//! project's list is fetched at most once per poll interval for a whole
//! host on redb, and for every host on PostgreSQL; yet work that arrives
//! is still picked up, by one runner, once.

use std::time::{Duration, Instant};

use crate::support::*;

/// Board lists plane-sim answered (route probes of one item excluded).
fn board_lists(world: &World) -> usize {
    world
        .sim
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.trim_end_matches('/').ends_with("work-items"))
        .filter(|r| {
            !r.query
                .as_deref()
                .is_some_and(|q| q.contains("per_page=1&") || q.ends_with("per_page=1"))
        })
        .count()
}

fn shared_look(world: &mut World, hosts: &[&str]) {
    world.edit_config("poll_interval_secs = 1", "poll_interval_secs = 2");
    for i in 0..3 {
        world.sim.add_work_item(&format!("not ours {i}"), "Backlog");
    }
    let mut runners = 0;
    for host in hosts {
        for i in 0..3 {
            world.start_runner_on(host, "goal", &format!("runner-{host}{i}"));
            runners += 1;
        }
    }
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(9));
    let lists = board_lists(world);
    let intervals = started.elapsed().as_secs_f64() / 2.0;
    // One look per interval, plus one more for a listing that straddles
    // the window's edges; each runner alone would make `runners` times as
    // many.
    assert!(
        (lists as f64) <= intervals + 2.0,
        "{lists} board lists in {intervals:.1} intervals for {runners} runners"
    );
    assert!(lists >= 2, "the board is still looked at ({lists})");

    // Work that arrives is found at the next listing, and run once.
    let task = world.sim.add_work_item("arrives", "Ready for AI");
    wait_until(Duration::from_secs(20), "the new task done", || {
        world.sim.state_of(&task).as_deref() == Some("Done")
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(world.runs(&task).len(), 1, "{:?}", world.runs(&task));
}

#[test]
fn runners_of_a_host_share_one_look_at_the_board() {
    let mut world = World::new(2, &[Role::new("goal", "Ready for AI")]);
    shared_look(&mut world, &["a"]);
}

#[test]
fn runners_of_two_hosts_share_one_look_through_postgres() {
    let mut world = World::new(2, &[Role::new("goal", "Ready for AI")]).on_postgres();
    shared_look(&mut world, &["a", "b"]);
}

/// Board lists that arrived at plane-sim, answered or not.
fn board_lists_arrived(world: &World) -> Vec<plane_sim::RecordedRequest> {
    world
        .sim
        .requests_arrived()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.trim_end_matches('/').ends_with("work-items"))
        .filter(|r| r.query.as_deref().is_some_and(|q| q.contains("fields=")))
        .collect()
}

/// A runner that stops in the middle of its look at the board (its list
/// request hanging at Plane) does not hold the other runners of its host
/// off: stopped (SIGTERM) it gives its listing up at once; killed outright
/// its claim lapses unrenewed, within half a poll interval. Either way the
/// other runner lists the board within 2 poll intervals (before: the claim
/// held everyone off for a fixed 60 s).
#[test]
fn a_runner_stopped_mid_look_leaves_the_board_to_the_others() {
    for (signal, within) in [
        (libc::SIGTERM, Duration::from_secs(3)),
        (libc::SIGKILL, Duration::from_secs(40)),
    ] {
        let mut world = World::new(2, &[Role::new("goal", "Ready for AI")]);
        // A 20-s poll: a claim lapses after 10 s unrenewed.
        world.edit_config("poll_interval_secs = 1", "poll_interval_secs = 20");
        world.configure("plane", "routes = \"work-items\"");
        world.sim.inject(
            plane_sim::FaultRule::new(plane_sim::Fault::Hang)
                .on_path("/work-items/")
                .on_method("GET")
                .times(1),
        );
        let first = world.start_runner("goal", "first");
        wait_until(Duration::from_secs(20), "the first runner listing", || {
            board_lists_arrived(&world).len() == 1
        });
        let second = world.start_runner("goal", "second");
        // The second waits for the first's listing…
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(
            board_lists_arrived(&world).len(),
            1,
            "{signal}: the second did not wait: {:?}",
            world.sim.requests_arrived()
        );
        // …until the first stops.
        world.signal(first, signal);
        let stopped = Instant::now();
        wait_until(within, "the second runner's own look", || {
            board_lists_arrived(&world).len() == 2
        });
        let took = stopped.elapsed();
        eprintln!("signal {signal}: the other runner listed {took:?} after it");
        if signal == libc::SIGTERM {
            assert!(
                world.wait(first, Duration::from_secs(2)).is_some(),
                "the stopped runner exits"
            );
        }
        world.signal(second, libc::SIGTERM);
        world.wait(second, Duration::from_secs(5));
    }
}
