//! The start-up sweep: prompt when another process sweeps, and never an
//! error or a panic, whatever the traits do.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ledger_core::*;
use reconcile::*;

use crate::support::*;

/// The real lock, as the runtime wires it.
struct FileLock(PathBuf);

impl StartupLock for FileLock {
    fn try_lock(&self, timeout: Duration) -> Result<Option<LockToken>, EdgeError> {
        ReconcileLock::acquire(&self.0, timeout)
            .map(|lock| lock.map(LockToken::new))
            .map_err(EdgeError::new)
    }
}

#[test]
fn with_the_lock_held_by_another_process_it_returns_promptly_and_reclaims_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inflight.redb");
    let mut holder = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "children::hold_reconcile_lock",
            "--ignored",
            "--nocapture",
            "-q",
        ])
        .env("RECONCILE_IT_LEDGER", &path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let locked = BufReader::new(holder.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .any(|line| line.trim() == "LOCKED");
    assert!(locked);

    let mut ledger = ledger_mock();
    ledger.expect_open_slots().never();
    ledger.expect_finish_if_run().never();
    let options = StartupOptions {
        lock_timeout: Duration::from_millis(300),
        ..StartupOptions::default()
    };
    let started = Instant::now();
    let report = run(reconcile_on_startup(
        &FileLock(path.clone()),
        &ledger,
        &silent_plane(),
        &probe(dead()),
        &options,
        NOW,
    ));
    let waited = started.elapsed();
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(report.outcome, StartupOutcome::LockBusy);
    assert!(
        waited >= Duration::from_millis(300),
        "gave up before the timeout: {waited:?}"
    );
    // That it returned at all, while the holder still held the lock, shows
    // it gave up: no upper bound on how long that took, which a loaded
    // machine could break.

    // With the holder gone, the next start-up sweeps.
    let (ledger, _) = crate::support::ledger(vec![slot("b", "T", "r", HOUR)]);
    let report = run(reconcile_on_startup(
        &FileLock(path),
        &ledger,
        &silent_plane(),
        &probe(dead()),
        &options,
        NOW,
    ));
    match report.outcome {
        StartupOutcome::Swept(scan) => assert_eq!(scan.actions[0].action, Action::Applied),
        other => panic!("expected a sweep, got {other:?}"),
    }
}

#[test]
fn errors_from_every_trait_still_give_a_report() {
    let mut lock = MockStartupLock::new();
    lock.expect_try_lock()
        .returning(|_| Ok(Some(LockToken::new(()))));
    let mut ledger = ledger_mock();
    ledger.expect_open_slots().returning(|| {
        Ok(vec![
            slot("b", "T1", "r1", HOUR),
            slot("b", "T2", "r2", 48 * HOUR),
        ])
    });
    ledger
        .expect_finish_if_run()
        .returning(|_, _, _, _| Err(EdgeError("ledger busy".into())));
    let mut probe = MockProcessProbe::new();
    probe.expect_liveness().returning(|owner| {
        if owner.runner.pid == 100 {
            unknown()
        } else {
            dead()
        }
    });
    probe
        .expect_terminate_group()
        .returning(|_| Err(EdgeError("EPERM".into())));
    let mut plane = MockTaskLookup::new();
    plane
        .expect_probe_project()
        .returning(|| Box::pin(async { Err(LookupError::new(LookupErrorKind::Server, "503")) }));
    let report = run(reconcile_on_startup(
        &lock,
        &ledger,
        &plane,
        &probe,
        &StartupOptions::default(),
        NOW,
    ));
    match report.outcome {
        StartupOutcome::Swept(scan) => assert!(scan.actions.is_empty()),
        other => panic!("{other:?}"),
    }

    let mut lock = MockStartupLock::new();
    lock.expect_try_lock()
        .returning(|_| Err(EdgeError("EACCES on the lock file".into())));
    let report = run(reconcile_on_startup(
        &lock,
        &ledger,
        &plane,
        &probe,
        &StartupOptions::default(),
        NOW,
    ));
    assert!(matches!(report.outcome, StartupOutcome::Failed(ref e) if e.contains("EACCES")));

    let mut lock = MockStartupLock::new();
    lock.expect_try_lock()
        .returning(|_| Ok(Some(LockToken::new(()))));
    let mut broken = ledger_mock();
    broken
        .expect_open_slots()
        .returning(|| Err(EdgeError("not a ledger".into())));
    let report = run(reconcile_on_startup(
        &lock,
        &broken,
        &plane,
        &probe,
        &StartupOptions::default(),
        NOW,
    ));
    assert!(matches!(report.outcome, StartupOutcome::Failed(ref e) if e.contains("not a ledger")));
}

/// Random behaviours of every trait, panics included: the sweep always
/// returns, and never reclaims a slot whose owner is alive.
#[test]
fn it_never_panics_and_never_reclaims_a_live_owner_whatever_the_traits_do() {
    let seed: u64 = std::env::var("RECONCILE_IT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    eprintln!("RECONCILE_IT_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut next = move |n: u64| rng.u64(..n);
    // The panics the traits raise below are expected: keep their messages
    // out of the output, and only theirs. Hooks are process-wide, so any
    // other panic (this test's own assertions, other tests') still reaches
    // the previous hook.
    let previous: Arc<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync> =
        Arc::from(std::panic::take_hook());
    let chained = previous.clone();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if !message.starts_with(EXPECTED) {
            chained(info);
        }
    }));
    for round in 0..300 {
        let slots: Vec<Slot> = (0..next(6))
            .map(|i| {
                let mut s = slot(
                    "b",
                    &format!("T{}", next(4)),
                    &format!("r{round}-{i}"),
                    HOUR * next(50) as u32,
                );
                s.owner.runner.pid = next(3) as u32; // 0 alive, 1 dead, 2 unknown
                s
            })
            .collect();
        let behaviour = [next(5), next(5), next(5), next(5), next(5)];

        let mut lock = MockStartupLock::new();
        lock.expect_try_lock()
            .returning(move |_| match behaviour[0] {
                0 => Ok(None),
                1 => Err(EdgeError("lock".into())),
                2 => panic!("{EXPECTED}: lock panicked"),
                _ => Ok(Some(LockToken::new(()))),
            });
        let mut ledger = ledger_mock();
        let open = slots.clone();
        ledger
            .expect_open_slots()
            .returning(move || match behaviour[1] {
                0 => Err(EdgeError("read".into())),
                1 => panic!("{EXPECTED}: read panicked"),
                _ => Ok(open.clone()),
            });
        let finishable = slots.clone();
        // Recorded rather than asserted: a panic here would be caught by the
        // sweep itself and go unnoticed.
        let live_finished = Arc::new(AtomicBool::new(false));
        let flag = live_finished.clone();
        ledger
            .expect_finish_if_run()
            .returning(move |key, run, _, _| {
                let slot = finishable
                    .iter()
                    .find(|s| &s.key == key && &s.run_id == run)
                    .unwrap();
                if slot.owner.runner.pid == 0 {
                    flag.store(true, Ordering::SeqCst);
                }
                match behaviour[2] {
                    0 => Err(EdgeError("write".into())),
                    1 => panic!("{EXPECTED}: finish panicked"),
                    2 => Ok(FinishOutcome::NotInFlight),
                    _ => Ok(FinishOutcome::Finished(slot.clone())),
                }
            });
        let mut probe = MockProcessProbe::new();
        probe
            .expect_liveness()
            .returning(|owner| match owner.runner.pid {
                0 => Liveness::Alive,
                1 => dead(),
                _ => unknown(),
            });
        probe
            .expect_terminate_group()
            .returning(move |_| match behaviour[3] {
                0 => Err(EdgeError("kill".into())),
                1 => panic!("{EXPECTED}: kill panicked"),
                _ => Ok(TerminateOutcome::Terminated),
            });
        let mut plane = MockTaskLookup::new();
        plane.expect_probe_project().returning(move || {
            Box::pin(async move {
                match behaviour[4] {
                    0 => Err(LookupError::new(LookupErrorKind::Timeout, "t")),
                    1 => panic!("{EXPECTED}: probe panicked"),
                    _ => Ok(ProjectSummary { work_items: 3 }),
                }
            })
        });
        plane.expect_task_status().returning(move |t| {
            let pick = t.as_str().len() as u64 + behaviour[4];
            Box::pin(async move {
                match pick % 4 {
                    0 => Ok(TaskStatus::NotFound),
                    1 => Ok(TaskStatus::Found(state("Done", "completed"))),
                    2 => Err(LookupError::new(LookupErrorKind::RateLimited, "429")),
                    _ => Ok(TaskStatus::Found(state("Running", "started"))),
                }
            })
        });
        plane
            .expect_list_project()
            .returning(|| Box::pin(async { Ok(vec![]) }));
        let report = run(reconcile_on_startup(
            &lock,
            &ledger,
            &plane,
            &probe,
            &StartupOptions::default(),
            NOW,
        ));
        assert!(
            !live_finished.load(Ordering::SeqCst),
            "round {round}: a live owner's slot was finished"
        );
        if let StartupOutcome::Swept(scan) = &report.outcome {
            for entry in &scan.actions {
                let slot = slots.iter().find(|s| s.run_id == entry.run_id).unwrap();
                assert_ne!(
                    slot.owner.runner.pid, 0,
                    "round {round}: a live owner's slot is in the report"
                );
            }
        }
    }
    std::panic::set_hook(Box::new(move |info| previous(info)));
}

/// What every panic the traits raise on purpose starts with.
const EXPECTED: &str = "expected in this test";
