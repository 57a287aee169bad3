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
    let world = World::with_executor_env(2, &roles, &[("E2E_SLEEP_MS", "400")]).on_postgres();
    one_cap_holds_across(world, &roles);
}

/// The same, every process reaching the database through PgBouncer in
/// transaction mode (4 server connections for all of them).
#[test]
fn one_cap_holds_across_hosts_through_pgbouncer() {
    let roles = [Role::new("goal", "Ready A"), Role::new("review", "Ready B")];
    let world = World::with_executor_env(2, &roles, &[("E2E_SLEEP_MS", "400")])
        .on_postgres_through_pgbouncer();
    one_cap_holds_across(world, &roles);
}

fn one_cap_holds_across(mut world: World, roles: &[Role]) {
    let tasks = tasks_for(&world, roles, 5);
    let runners = four_runners(&mut world);
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
    a_dead_hosts_slots_come_back(World::new(2, &[Role::new("goal", "Ready for AI")]).on_postgres());
}

#[test]
fn a_dead_hosts_slots_come_back_after_their_lease_through_pgbouncer() {
    a_dead_hosts_slots_come_back(
        World::new(2, &[Role::new("goal", "Ready for AI")]).on_postgres_through_pgbouncer(),
    );
}

/// Two hosts start together, both with a start-up sweep to do: slots of a
/// third host that died, their leases run out. Each slot is reclaimed
/// once (one reclaim event each), whichever host swept it.
#[test]
fn two_hosts_starting_together_sweep_a_dead_host_s_slots_once_through_pgbouncer() {
    let mut world =
        World::new(8, &[Role::new("goal", "Ready for AI")]).on_postgres_through_pgbouncer();
    let pg = world.pg();
    let dead: Vec<String> = (0..4)
        .map(|i| {
            let task = world
                .sim
                .add_work_item(&format!("left running {i}"), "Running");
            let owner = ledger_core::Owner {
                host: "c".into(),
                boot_id: "c-boot".into(),
                runner: ledger_core::ProcessIdentity {
                    pid: 4242,
                    start_time: 1,
                },
                executor: None,
                role: Some("goal".into()),
                project: Some(world.project()),
                keeper: None,
                outcome: None,
                title: None,
            };
            inflight_e2e::open_test_slot(&pg, &task, owner, Duration::from_millis(1));
            task
        })
        .collect();
    // Past the lease and the grace (2 s).
    std::thread::sleep(Duration::from_millis(2500));
    let runners = [
        world.start_runner_on("a", "goal", "a"),
        world.start_runner_on("b", "goal", "b"),
    ];
    wait_until(
        Duration::from_secs(60),
        "the dead host's slots reclaimed",
        || reclaims(&pg) == dead.len(),
    );
    wait_until(
        Duration::from_secs(60),
        "the tasks run again and done",
        || {
            dead.iter()
                .all(|t| world.sim.state_of(t).as_deref() == Some("Done"))
        },
    );
    assert_eq!(reclaims(&pg), dead.len(), "one reclaim event per slot");
    for runner in runners {
        world.signal(runner, libc::SIGTERM);
        assert!(world.wait(runner, Duration::from_secs(10)).is_some());
    }
}

fn a_dead_hosts_slots_come_back(mut world: World) {
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
    // Every process of host a, at once: runners, keepers, executors.
    let mut doomed: Vec<u32> = a.iter().map(|&i| world.pid(i)).collect();
    doomed.extend(
        world
            .open_slots()
            .iter()
            .filter(|s| s.owner.keeper.is_some())
            .map(|s| s.owner.runner.pid),
    );
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

/// `per_role` tasks in each role's claim state; their ids.
fn tasks_for(world: &World, roles: &[Role], per_role: usize) -> Vec<String> {
    roles
        .iter()
        .flat_map(|role| {
            (0..per_role).map(move |i| {
                world
                    .sim
                    .add_work_item(&format!("{} task {i}", role.name), role.claim_state)
            })
        })
        .collect()
}

/// The four runners of the shared-cap tests: host `a` runs `goal` twice,
/// host `b` runs `review` twice.
fn four_runners(world: &mut World) -> [usize; 4] {
    [
        world.start_runner_on("a", "goal", "a1"),
        world.start_runner_on("a", "goal", "a2"),
        world.start_runner_on("b", "review", "b1"),
        world.start_runner_on("b", "review", "b2"),
    ]
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

/// Host `a` reaches the database through a link that is cut while its
/// executor runs and no runner is up there (the runner handed over to its
/// keeper and exited). `a`'s keeper stops that executor before its lease
/// runs out; `b` reclaims the slot only after it ran out, and runs the task
/// again. The executors' own records show the two attempts never
/// overlapped.
#[test]
fn a_host_cut_off_from_the_database_stops_before_another_takes_over() {
    let mut world = World::new(1, &[Role::new("goal", "Ready for AI")]).on_postgres();
    let task = world
        .sim
        .add_work_item("slow-once partitioned", "Ready for AI");
    let link = Partition::to(postgres_server().port());
    let a = world.start_runner_through(link.port(), "a", "goal", "a1");
    wait_until(Duration::from_secs(30), "host a's executor running", || {
        world.holders().1 == 1
    });
    world.wait_for_keeper(&task);
    world.signal(a, libc::SIGTERM);
    assert!(world.wait(a, Duration::from_secs(5)).is_some());
    assert_eq!(world.holders().1, 1, "the executor stopped with its runner");
    let lease_end_before_cut = world.pg().open_slots().unwrap()[0].lease_until;
    link.cut(true);
    let cut_at = Instant::now();
    let watchdog = world.start_watchdog_on("b", "b-watchdog");
    let b = world.start_runner_on("b", "goal", "b1");
    let pg = world.pg();
    wait_until(Duration::from_secs(60), "the task done by host b", || {
        world.sim.state_of(&task).as_deref() == Some("Done")
    });
    let runs = world.runs(&task);
    eprintln!(
        "link cut {:?} ago; attempts (start, end, host): {runs:?}",
        cut_at.elapsed()
    );
    let [(a_start, a_end, a_host), (b_start, _, b_host)] = runs.as_slice() else {
        panic!("expected host a's attempt, then host b's: {runs:?}");
    };
    assert_eq!((a_host.as_str(), b_host.as_str()), ("a", "b"));
    assert!(a_start < a_end);
    assert!(a_end <= b_start, "the attempts overlapped: {runs:?}");
    // a stopped before its lease could have run out (the lease only grows:
    // it ended no earlier than it stood when the link was cut).
    assert!(
        (*a_end as i64) < lease_end_before_cut.as_unix_millis() + 6_000,
        "a's executor ended at {a_end}, its lease stood until {lease_end_before_cut} when cut"
    );
    let reclaim = pg
        .events_after(0, usize::MAX)
        .unwrap()
        .into_iter()
        .find(|e| {
            matches!(
                &e.kind,
                EventKind::Finished {
                    reason: FinishReason::Reconciled { .. },
                    ..
                }
            )
        })
        .expect("b reclaimed a's slot");
    assert!(
        (reclaim.at.as_unix_millis() as u128) > *a_end,
        "reclaimed before a stopped"
    );
    // The link back: a's keeper finds its slot reclaimed and records
    // nothing.
    link.cut(false);
    for index in [b, watchdog] {
        world.signal(index, libc::SIGTERM);
        assert!(world.wait(index, Duration::from_secs(15)).is_some());
    }
    assert!(pg.open_slots().unwrap().is_empty());
}

/// The database restarts (fast shutdown, every connection cut) in the
/// middle of a run of four runners on two hosts: they reconnect, the cap
/// holds, every task ends done or blocked, and the audit log has every
/// start the executors recorded, each finished.
#[test]
fn a_database_restart_mid_run_loses_nothing() {
    let mut server =
        ledger_postgres::test_server::TestServer::start().unwrap_or_else(|e| panic!("{e}"));
    server.create_database("inflight").unwrap();
    let roles = [Role::new("goal", "Ready A"), Role::new("review", "Ready B")];
    let mut world =
        World::with_executor_env(2, &roles, &[("E2E_SLEEP_MS", "700")]).on_postgres_at(&server);
    let tasks = tasks_for(&world, &roles, 6);
    let runners = [
        world.start_runner_on("a", "goal", "a1"),
        world.start_runner_on("a", "review", "a2"),
        world.start_runner_on("b", "goal", "b1"),
        world.start_runner_on("b", "review", "b2"),
    ];
    wait_until(Duration::from_secs(30), "a few tasks done", || {
        tasks
            .iter()
            .filter(|t| world.sim.state_of(t).as_deref() == Some("Done"))
            .count()
            >= 3
    });
    let restarted = Instant::now();
    server.restart().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("database restarted in {:?}", restarted.elapsed());
    wait_until(
        Duration::from_secs(120),
        "every task done or blocked",
        || {
            tasks
                .iter()
                .all(|t| matches!(world.sim.state_of(t).as_deref(), Some("Done" | "Blocked")))
        },
    );
    let pg = world.pg();
    wait_until(Duration::from_secs(30), "every slot finished", || {
        pg.open_slots().unwrap().is_empty()
    });
    for runner in runners {
        world.signal(runner, libc::SIGTERM);
        assert!(world.wait(runner, Duration::from_secs(15)).is_some());
    }
    let (most, now) = world.holders();
    assert!(most <= 2, "{most} executors at once under a cap of 2");
    assert_eq!(now, 0);
    let events = pg.events_after(0, usize::MAX).unwrap();
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    for task in &tasks {
        let started = events
            .iter()
            .filter(|e| matches!(&e.kind, EventKind::Started { key, .. } if key.task_id.as_str() == task))
            .count();
        let finished = events
            .iter()
            .filter(|e| matches!(&e.kind, EventKind::Finished { key, .. } if key.task_id.as_str() == task))
            .count();
        let executed = world.executor_pids(task).len();
        assert!(
            started >= executed,
            "task {task}: {executed} executor starts, {started} in the log"
        );
        assert_eq!(started, finished, "task {task}: every start finished");
    }
}

/// A clock that reads `offset` ahead of (or, negative, behind) this one's.
#[derive(Debug)]
struct Skewed(i64);

impl ledger_core::Clock for Skewed {
    fn now(&self) -> ledger_core::Timestamp {
        let now = ledger_core::SystemClock.now();
        ledger_core::Timestamp::from_unix_millis(now.as_unix_millis() + self.0 * 1000)
    }
}

/// A runner whose clock reads 10 minutes ahead runs a task longer than its
/// lease to the end (its lease lives by the database's clock, and it
/// judges its own by a monotonic one), while watchdogs of another host
/// whose clocks read 10 minutes ahead and behind scan every second: none
/// reclaims the live lease. The same skewed scan through a store on the
/// hosts' clocks would have.
#[test]
fn a_clock_ten_minutes_off_neither_reclaims_a_live_lease_nor_loses_its_own() {
    use std::sync::Arc;

    use ledger_core::{Clock, LedgerStore};
    use plane_client::{ApiKey, PlaneClient, PlaneConfig};
    use runtime::{Config, HostIdentity, LinuxProcessProbe};
    use watchdog_bin::{ScanDependencies, Scanner};
    use watcher_bin::{Dependencies, ProcessKeepers, Runner};

    let world = World::new(1, &[Role::new("goal", "Ready for AI")]).on_postgres();
    let task = world
        .sim
        .add_work_item("longer than its lease", "Ready for AI");
    // In-process, the executor's variables come through `env`.
    let executor = inflight_e2e::workspace_bin("e2e-executor");
    world.edit_config(
        &format!("command = [\"{}\"]", executor.display()),
        &format!(
            "command = [\"env\", \"E2E_DIR={}\", \"E2E_SLEEP_MS=9000\", \"{}\"]",
            world.dir.path().display(),
            executor.display()
        ),
    );
    let config = Config::load(&world.config).unwrap();
    let plane = || {
        let mut plane = PlaneConfig::new(
            &config.plane.base_url,
            &config.plane.workspace,
            &config.plane.project_id,
            ApiKey::new(KEY),
        );
        plane.request_timeout = config.plane.request_timeout;
        Arc::new(PlaneClient::new(plane).unwrap())
    };
    let host_b = HostIdentity {
        host: "b".into(),
        ..HostIdentity::current().unwrap()
    };
    let scanner = |store: Arc<dyn ledger_core::Store>, offset: i64| {
        Scanner::with_dependencies(
            config.clone(),
            ScanDependencies {
                store,
                plane: plane(),
                probe: Arc::new(LinuxProcessProbe::new(host_b.clone(), config.watcher.grace)),
                clock: Arc::new(Skewed(offset)),
            },
        )
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Opened off the runtime: a store call on a runtime's thread is refused.
    let store = runtime::open_store(&config).unwrap();
    let (summary, reclaims) = rt.block_on(async {
        let runner = Runner::with_dependencies(
            config.clone(),
            "goal",
            true,
            Dependencies {
                store: store.clone(),
                plane: plane(),
                probe: Arc::new(LinuxProcessProbe::new(
                    HostIdentity::current().unwrap(),
                    config.watcher.grace,
                )),
                keepers: Arc::new(
                    ProcessKeepers::new(
                        inflight_e2e::workspace_bin("watcher"),
                        world.config.clone(),
                        runtime::LogFormat::Json,
                    )
                    .unwrap(),
                ),
                clock: Arc::new(Skewed(600)),
            },
        )
        .unwrap();
        // The runner's future stays on this task (it is not `Send`); the
        // scans run between its polls, every second.
        let run = runner.run(std::future::pending());
        tokio::pin!(run);
        let scanners = [scanner(store.clone(), 600), scanner(store.clone(), -600)];
        let mut reclaims = 0;
        let summary = loop {
            tokio::select! {
                summary = &mut run => break summary.unwrap(),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    for scanner in &scanners {
                        reclaims += scanner.scan(true).await.unwrap().actions.len();
                    }
                }
            }
        };
        (summary, reclaims)
    });
    assert_eq!(reclaims, 0, "a skewed watchdog reclaimed a live lease");
    assert_eq!((summary.dispatched, summary.completed), (1, 1));
    assert_eq!(world.sim.state_of(&task).as_deref(), Some("Done"));
    assert!(
        !world.path(&format!("sigterm/{task}")).exists(),
        "the runner stopped its own executor"
    );
    assert_eq!(world.runs(&task).len(), 1);

    // The failure the database's clock prevents: a live slot, judged
    // through a store on the scanning host's clock 10 minutes ahead.
    let pg = world.pg();
    let mut on_hosts_clock = world.postgres.clone().unwrap();
    on_hosts_clock.time = ledger_postgres::TimeSource::Caller;
    let hosts_clock: Arc<dyn ledger_core::Store> =
        Arc::new(ledger_postgres::PgLedger::open(on_hosts_clock).unwrap());
    let request = ledger_core::AdmitRequest {
        key: ledger_core::SlotKey::new(
            ledger_core::Backend::new("local").unwrap(),
            ledger_core::TaskId::new("live-elsewhere").unwrap(),
        ),
        run_id: ledger_core::RunId::new("r-live").unwrap(),
        owner: runtime::this_owner(&HostIdentity {
            host: "a".into(),
            ..HostIdentity::current().unwrap()
        })
        .unwrap(),
        lease: Duration::from_secs(6),
    };
    let limits = config.limits_for(&request.key.backend).unwrap();
    pg.admit(&request, &limits, ledger_core::SystemClock.now())
        .unwrap();
    let skewed = scanner(hosts_clock, 600);
    let report = rt.block_on(skewed.scan(true)).unwrap();
    assert_eq!(report.actions.len(), 1, "{report:?}");
    assert_eq!(report.actions[0].rule, reconcile::Rule::LeaseExpiredClear);
}

/// Opening an existing PostgreSQL ledger says nothing: the schema's
/// "already exists, skipping" notices are not an operator's business.
#[test]
fn opening_a_postgres_ledger_prints_no_notices() {
    let world = World::new(1, &[Role::new("goal", "Ready for AI")]).on_postgres();
    for args in [&["scan"][..], &["scan"], &["status"], &["events"]] {
        let out = world.watchdog(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("NOTICE") && !stderr.contains("already exists"),
            "{args:?}: {stderr}"
        );
    }
}

/// The statements one process sent, from the server's log of every
/// statement (`[pid]` in each line): a `statement:` or `execute` line is
/// one round trip; the `DETAIL:  parameters:` line after it is kept with
/// it.
fn statements(log: &str, schema: &str) -> Vec<(String, String)> {
    let mut sent: Vec<(String, String)> = Vec::new();
    for line in log.lines() {
        let pid = || {
            line.split_once('[')
                .and_then(|(_, rest)| rest.split_once(']'))
                .map(|(pid, _)| pid.to_owned())
                .unwrap_or_default()
        };
        if let Some((_, text)) = line
            .split_once("LOG:  statement: ")
            .or_else(|| line.split_once("LOG:  execute "))
        {
            sent.push((pid(), text.to_owned()));
        } else if let Some((_, parameters)) = line.split_once("DETAIL:  parameters: ")
            && let Some(last) = sent.last_mut()
            && last.0 == pid()
        {
            last.1.push_str(" -- ");
            last.1.push_str(parameters);
        }
    }
    // BEGIN and COMMIT name no schema: they go with the statements of
    // their session that do.
    let ours: std::collections::BTreeSet<String> = sent
        .iter()
        .filter(|(_, text)| text.contains(schema))
        .map(|(pid, _)| pid.clone())
        .collect();
    sent.into_iter()
        .filter(|(pid, _)| ours.contains(pid))
        .collect()
}

/// One dispatch, start to finish, as the real runner and its keeper make
/// it against PostgreSQL, its round trips to the ledger counted from the
/// server's log: the admission one, the finish one, the whole at most 8.
/// What the runner sends for Plane's shared budget (one take per Plane
/// request) and its look at the shared board, and its loop's lease
/// renewals, are not the dispatch's and are counted apart.
#[test]
fn a_dispatch_takes_at_most_eight_round_trips_to_the_ledger() {
    let mut world =
        World::new(1, &[Role::new("goal", "Ready for AI")]).on_postgres_logging_statements();
    let schema = world.pg_options().schema;
    let runner = world.start_runner("goal", "runner");
    // Past the runner's start-up (its sweep, its first looks).
    std::thread::sleep(Duration::from_secs(3));
    let mark = postgres_server().log().len();
    let task = world
        .sim
        .add_work_item("count my round trips", "Ready for AI");
    wait_until(Duration::from_secs(60), "the task is done", || {
        world.sim.state_of(&task).as_deref() == Some("Done")
    });
    // Done on the board comes after the finish: the dispatch's last
    // statement is sent. (Nothing here reads the ledger until the log is
    // read: this test's own statements would count.)
    std::thread::sleep(Duration::from_secs(1));
    world.signal(runner, libc::SIGTERM);
    assert!(world.wait(runner, Duration::from_secs(10)).is_some());
    let log = postgres_server().log();
    let sent = statements(log.get(mark..).unwrap_or_default(), &schema);

    // Each statement by what it is for (its text, not its parameters); a
    // transaction's START and COMMIT go with the statements inside.
    let (mut fleet, mut renewals, mut dispatch) = (Vec::new(), Vec::new(), Vec::new());
    // Per session: the transaction it is in, and its kind so far.
    type Sent<'a> = (&'a String, &'a String);
    let mut open: std::collections::HashMap<&String, (usize, Vec<Sent>)> = Default::default();
    for (pid, sent) in &sent {
        let text = sent.split(" -- ").next().unwrap_or_default();
        // The shared board's look: its snapshot, and the log since it
        // (which tasks started or finished meanwhile).
        let kind = if text.contains("budget")
            || text.contains("board")
            || text.contains(".events WHERE seq >")
        {
            0
        } else if text.contains("boot_id") {
            1
        } else {
            2
        };
        if text.starts_with("START TRANSACTION") || text == "BEGIN" {
            open.insert(pid, (2, vec![(pid, sent)]));
            continue;
        }
        let (kind, mut statements) = match open.remove(pid) {
            Some((inner, mut statements)) => {
                statements.push((pid, sent));
                if !(text.starts_with("COMMIT") || text.starts_with("ROLLBACK")) {
                    let inner = if statements.len() == 2 { kind } else { inner };
                    open.insert(pid, (inner, statements));
                    continue;
                }
                (inner, statements)
            }
            None => (kind, vec![(pid, sent)]),
        };
        let into = [&mut fleet, &mut renewals, &mut dispatch];
        into.into_iter().nth(kind).unwrap().append(&mut statements);
    }
    let short: Vec<String> = dispatch
        .iter()
        .map(|(pid, text)| format!("[{pid}] {}", text.chars().take(110).collect::<String>()))
        .collect();
    eprintln!(
        "the dispatch's round trips to the ledger ({}):\n{}\nPlane's budget and the board's looks: {}, the runner's lease renewals: {}",
        dispatch.len(),
        short.join("\n"),
        fleet.len(),
        renewals.len()
    );
    let calls = |name: &str| dispatch.iter().filter(|(_, t)| t.contains(name)).count();
    assert_eq!(calls("admit_one("), 1, "{dispatch:#?}");
    assert_eq!(calls("finish_one("), 1, "{dispatch:#?}");
    assert!(
        dispatch
            .iter()
            .all(|(_, t)| !t.starts_with("START") && t.as_str() != "BEGIN"),
        "no step of the dispatch is a transaction of several round trips: {dispatch:#?}"
    );
    assert!(
        dispatch.len() <= 8,
        "{} round trips: {short:#?}",
        dispatch.len()
    );
}
