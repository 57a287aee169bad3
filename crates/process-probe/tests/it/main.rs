//! The Linux process probe against real processes.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ledger_core::{ExecutorIdentity, Owner, ProcessIdentity};
use process_probe::*;
use reconcile::{Liveness, ProcessProbe, TerminateOutcome};

fn probe() -> (LinuxProcessProbe, HostIdentity) {
    let host = HostIdentity::current().unwrap();
    (
        LinuxProcessProbe::new(host.clone(), Duration::from_secs(2)),
        host,
    )
}

fn identity(pid: u32) -> ProcessIdentity {
    ProcessIdentity {
        pid,
        start_time: proc_stat(pid).unwrap().unwrap().start_time,
    }
}

fn owner(host: &HostIdentity, runner: ProcessIdentity) -> Owner {
    Owner {
        host: host.host.clone(),
        boot_id: host.boot_id.clone(),
        runner,
        executor: None,
        role: None,
        project: None,
        keeper: None,
        outcome: None,
        title: None,
    }
}

fn is_dead(liveness: Liveness) -> String {
    match liveness {
        Liveness::Dead { why } => why,
        other => panic!("expected dead, got {other:?}"),
    }
}

#[test]
fn this_process_is_alive() {
    let (probe, host) = probe();
    assert_eq!(probe.liveness(&this_owner(&host).unwrap()), Liveness::Alive);
}

#[test]
fn a_spawned_and_reaped_child_is_dead() {
    let (probe, host) = probe();
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let recorded = owner(&host, identity(child.id()));
    assert_eq!(probe.liveness(&recorded), Liveness::Alive);
    child.kill().unwrap();
    child.wait().unwrap();
    let why = is_dead(probe.liveness(&recorded));
    assert!(why.contains("is gone"), "{why}");
}

#[test]
fn an_exited_but_unreaped_child_is_dead() {
    let (probe, host) = probe();
    let mut child = Command::new("true").spawn().unwrap();
    let recorded = owner(&host, identity(child.id()));
    // Give it time to exit; it stays a zombie until waited for.
    let deadline = Instant::now() + Duration::from_secs(5);
    while proc_stat(child.id())
        .unwrap()
        .is_some_and(|s| s.state != 'Z')
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    is_dead(probe.liveness(&recorded));
    child.wait().unwrap();
}

#[test]
fn a_pid_with_another_start_time_is_dead() {
    let (probe, host) = probe();
    let mut me = this_process().unwrap();
    me.start_time += 1;
    let why = is_dead(probe.liveness(&owner(&host, me)));
    assert!(why.contains("another process"), "{why}");
}

#[test]
fn a_different_boot_id_makes_every_pid_dead() {
    let (probe, host) = probe();
    let mut recorded = this_owner(&host).unwrap();
    recorded.boot_id = "00000000-0000-0000-0000-000000000000".into();
    let why = is_dead(probe.liveness(&recorded));
    assert!(why.contains("rebooted"), "{why}");
}

#[test]
fn an_owner_on_another_host_is_unknown_never_dead() {
    let (probe, host) = probe();
    let mut recorded = owner(
        &host,
        ProcessIdentity {
            pid: 999_999,
            start_time: 1,
        },
    );
    recorded.host = format!("{}-elsewhere", host.host);
    assert!(matches!(
        probe.liveness(&recorded),
        Liveness::Unknown { .. }
    ));
    assert!(matches!(
        probe.liveness(&Owner::imported()),
        Liveness::Unknown { .. }
    ));
}

#[test]
fn a_live_executor_keeps_a_dead_runners_slot_alive() {
    let (probe, host) = probe();
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let mut recorded = owner(
        &host,
        ProcessIdentity {
            pid: 999_999,
            start_time: 1,
        },
    );
    recorded.executor = Some(ExecutorIdentity {
        process: identity(child.id()),
        process_group: child.id(),
    });
    assert_eq!(probe.liveness(&recorded), Liveness::Alive);
    child.kill().unwrap();
    child.wait().unwrap();
    is_dead(probe.liveness(&recorded));
}

/// An executor that started a grandchild in its own process group, then
/// died: the grandchild is terminated through the group.
#[test]
fn survivors_of_a_dead_executors_group_are_terminated() {
    let (probe, _) = probe();
    let mut executor = Command::new("sh")
        .args(["-c", "sleep 30 & echo $!; wait"])
        .process_group(0)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(executor.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let grandchild: u32 = line.trim().parse().unwrap();
    let recorded = ExecutorIdentity {
        process: identity(executor.id()),
        process_group: executor.id(),
    };
    // The executor dies; its grandchild lives on in the group.
    executor.kill().unwrap();
    executor.wait().unwrap();
    assert!(
        proc_stat(grandchild)
            .unwrap()
            .is_some_and(|s| s.state != 'Z')
    );

    assert_eq!(
        probe.terminate_group(&recorded).unwrap(),
        TerminateOutcome::Terminated
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while proc_stat(grandchild)
        .unwrap()
        .is_some_and(|s| s.state != 'Z')
    {
        assert!(Instant::now() < deadline, "the grandchild survived");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Nothing left: a second call finds nothing to do.
    assert_eq!(
        probe.terminate_group(&recorded).unwrap(),
        TerminateOutcome::NothingLeft
    );
}

#[test]
fn a_survivor_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let host = HostIdentity::current().unwrap();
    let probe = LinuxProcessProbe::new(host, Duration::from_millis(300));
    let mut executor = Command::new("sh")
        .args([
            "-c",
            "sh -c 'trap \"\" TERM; echo ready; while :; do sleep 0.05; done' & wait",
        ])
        .process_group(0)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(executor.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    let recorded = ExecutorIdentity {
        process: identity(executor.id()),
        process_group: executor.id(),
    };
    executor.kill().unwrap();
    executor.wait().unwrap();
    let started = Instant::now();
    assert_eq!(
        probe.terminate_group(&recorded).unwrap(),
        TerminateOutcome::Killed
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
}
