//! Several hosts sharing one PostgreSQL ledger: the real binaries, as hosts
//! `a` and `b` (`INFLIGHT_HOST`) on one machine, against a throwaway
//! PostgreSQL server.

use std::time::{Duration, Instant};

use ledger_core::{EventKind, FinishReason, LedgerStore};

use crate::support::*;

/// Two hosts, two runners each, one backend capped at 2 across all of
/// them: host `a` runs the role `goal`, host `b` the role `review`, so both
/// always have work waiting for the shared slots. The executors count
/// themselves outside the ledger: never more than 2 at once, no task
/// started twice, every task done.
#[test]
fn one_cap_holds_across_hosts() {
    let roles = [Role::new("goal", "Ready A"), Role::new("review", "Ready B")];
    let mut world = World::with_executor_env(2, &roles, &[("E2E_SLEEP_MS", "400")]).on_postgres();
    let mut tasks = Vec::new();
    for role in &roles {
        for i in 0..5 {
            tasks.push(
                world
                    .sim
                    .add_work_item(&format!("{} task {i}", role.name), role.claim_state),
            );
        }
    }
    let runners = [
        world.start_runner_on("a", "goal", "a1"),
        world.start_runner_on("a", "goal", "a2"),
        world.start_runner_on("b", "review", "b1"),
        world.start_runner_on("b", "review", "b2"),
    ];
    wait_until(Duration::from_secs(120), "every task done", || {
        tasks
            .iter()
            .all(|t| world.sim.state_of(t).as_deref() == Some("Done"))
    });
    for runner in runners {
        world.signal(runner, libc::SIGTERM);
        assert!(world.wait(runner, Duration::from_secs(10)).is_some());
    }
    let (most, now) = world.holders();
    assert!(most <= 2, "{most} executors ran at once under a cap of 2");
    assert_eq!(now, 0);
    for task in &tasks {
        assert_eq!(
            world.executor_pids(task).len(),
            1,
            "task {task} started more than once"
        );
    }
    // Both hosts took slots: the cap was shared, not one host's.
    let hosts: std::collections::BTreeSet<String> = world
        .pg()
        .events_after(0, usize::MAX)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Started { owner, .. } => Some(owner.host),
            _ => None,
        })
        .collect();
    assert_eq!(hosts.into_iter().collect::<Vec<_>>(), ["a", "b"]);
    assert!(world.pg().open_slots().unwrap().is_empty());
}

/// Every process of host `a` (its runners and their executors) is killed
/// mid-dispatch. Host `b`'s watchdog reclaims `a`'s slots by
/// `LEASE_EXPIRED_CLEAR` once their leases ran out and the grace passed,
/// puts the tasks back, and `b`'s runner finishes them.
#[test]
fn a_dead_hosts_slots_come_back_after_their_lease() {
    let mut world = World::new(2, &[Role::new("goal", "Ready for AI")]).on_postgres();
    // The first attempt of each sleeps a minute; the next finishes.
    let tasks = [
        world.sim.add_work_item("slow-once 1", "Ready for AI"),
        world.sim.add_work_item("slow-once 2", "Ready for AI"),
    ];
    let a = [
        world.start_runner_on("a", "goal", "a1"),
        world.start_runner_on("a", "goal", "a2"),
    ];
    wait_until(
        Duration::from_secs(30),
        "both executors of host a running",
        || world.holders().1 == 2,
    );
    // Every process of host a, at once.
    let mut doomed: Vec<u32> = a.iter().map(|&i| world.pid(i)).collect();
    for task in &tasks {
        doomed.extend(world.executor_pids(task).into_iter().map(|(pid, _)| pid));
    }
    for pid in &doomed {
        inflight_e2e::send_signal(*pid, libc::SIGKILL);
    }
    let killed = Instant::now();
    for runner in a {
        assert!(world.wait(runner, Duration::from_secs(5)).is_some());
    }
    let leases_end = world
        .pg()
        .open_slots()
        .unwrap()
        .iter()
        .map(|s| s.lease_until)
        .max()
        .unwrap();

    let watchdog = world.start_watchdog_on("b", "b-watchdog");
    let b = world.start_runner_on("b", "goal", "b1");
    let pg = world.pg();
    wait_until(Duration::from_secs(60), "a's slots reclaimed", || {
        reclaims(&pg) == 2
    });
    let took = killed.elapsed();
    // Never before the lease (and its grace) ran out, by the database's
    // clock.
    for event in pg.events_after(0, usize::MAX).unwrap() {
        if let EventKind::Finished {
            reason: FinishReason::Reconciled { rule },
            ..
        } = &event.kind
        {
            assert_eq!(rule, "LEASE_EXPIRED_CLEAR");
            assert!(
                event.at > leases_end,
                "reclaimed at {} before the lease ended at {leases_end}",
                event.at
            );
        }
    }
    eprintln!(
        "host a killed → its 2 slots reclaimed by LEASE_EXPIRED_CLEAR in {took:?} (lease 6 s, grace 2 s, scans every 1 s)"
    );
    wait_until(
        Duration::from_secs(60),
        "both tasks finished by host b",
        || {
            tasks
                .iter()
                .all(|t| world.sim.state_of(t).as_deref() == Some("Done"))
        },
    );
    // Plane is told first, then the ledger: wait for both finishes.
    wait_until(
        Duration::from_secs(10),
        "both second attempts finished in the ledger",
        || {
            pg.events_after(0, usize::MAX)
                .unwrap()
                .iter()
                .filter(|e| {
                    matches!(
                        &e.kind,
                        EventKind::Finished {
                            reason: FinishReason::Completed,
                            ..
                        }
                    )
                })
                .count()
                == 2
        },
    );
    assert!(pg.open_slots().unwrap().is_empty());
    for index in [b, watchdog] {
        world.signal(index, libc::SIGTERM);
        assert!(world.wait(index, Duration::from_secs(10)).is_some());
    }
}

fn reclaims(ledger: &ledger_postgres::PgLedger) -> usize {
    ledger
        .events_after(0, usize::MAX)
        .unwrap()
        .iter()
        .filter(|e| {
            matches!(
                &e.kind,
                EventKind::Finished {
                    reason: FinishReason::Reconciled { .. },
                    ..
                }
            )
        })
        .count()
}
