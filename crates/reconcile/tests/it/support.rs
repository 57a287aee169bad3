//! Builders for slots and for mocks of the three traits.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ledger_core::*;
use reconcile::*;

pub const NOW: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);
pub const HOUR: Duration = Duration::from_secs(3600);

pub fn slot(backend: &str, task: &str, run: &str, age: Duration) -> Slot {
    Slot {
        key: SlotKey::new(Backend::new(backend).unwrap(), TaskId::new(task).unwrap()),
        run_id: RunId::new(run).unwrap(),
        started_at: NOW.saturating_sub(age),
        owner: Owner {
            host: "runner-host".into(),
            boot_id: "boot".into(),
            runner: ProcessIdentity {
                pid: 100,
                start_time: 1,
            },
            executor: Some(ExecutorIdentity {
                process: ProcessIdentity {
                    pid: 101,
                    start_time: 2,
                },
                process_group: 101,
            }),
            role: Some("goal".into()),
            project: None,
            keeper: None,
            outcome: None,
            title: None,
        },
        lease_until: NOW,
        started_seq: 1,
    }
}

/// A ledger mock whose clock is the caller's, as the redb store's is.
pub fn ledger_mock() -> MockInFlightLedger {
    let mut mock = MockInFlightLedger::new();
    mock.expect_now().returning(Ok);
    mock
}

pub fn task(id: &str) -> TaskId {
    TaskId::new(id).unwrap()
}

pub fn state(name: &str, group: &str) -> TaskState {
    TaskState {
        name: name.into(),
        group: group.into(),
        terminal: matches!(group, "completed" | "cancelled"),
    }
}

pub fn dead() -> Liveness {
    Liveness::Dead {
        why: "runner pid 100 is gone".into(),
    }
}

pub fn unknown() -> Liveness {
    Liveness::Unknown {
        why: "owner on another host".into(),
    }
}

/// What a mock ledger finished: key, run and reason, in order.
pub type FinishLog = Arc<Mutex<Vec<(SlotKey, RunId, FinishReason)>>>;

/// A ledger holding `slots` whose conditional finish succeeds and records
/// what it finished.
pub fn ledger(slots: Vec<Slot>) -> (MockInFlightLedger, FinishLog) {
    let finished = Arc::new(Mutex::new(Vec::new()));
    let mut mock = ledger_mock();
    let open = slots.clone();
    mock.expect_open_slots().returning(move || Ok(open.clone()));
    let log = finished.clone();
    mock.expect_finish_if_run()
        .returning(move |key, run, reason, _| {
            log.lock().unwrap().push((key.clone(), run.clone(), reason));
            let slot = slots.iter().find(|s| &s.key == key).unwrap().clone();
            Ok(FinishOutcome::Finished(slot))
        });
    (mock, finished)
}

/// A probe that answers `liveness` for every owner and finds nothing left of
/// any process group.
pub fn probe(liveness: Liveness) -> MockProcessProbe {
    let mut mock = MockProcessProbe::new();
    mock.expect_liveness().returning(move |_| liveness.clone());
    mock.expect_terminate_group()
        .returning(|_| Ok(TerminateOutcome::NothingLeft));
    mock
}

/// A Plane whose project answers with `work_items` items and whose tasks
/// answer from `answers` (a task absent from it is a test failure). Its
/// project list holds the tasks that `answers` finds, as a real list would.
pub fn plane(
    work_items: u64,
    answers: HashMap<TaskId, Result<TaskStatus, LookupError>>,
) -> MockTaskLookup {
    let mut mock = MockTaskLookup::new();
    mock.expect_probe_project()
        .returning(move || Box::pin(async move { Ok(ProjectSummary { work_items }) }));
    let listed: Vec<(TaskId, TaskState)> = answers
        .iter()
        .filter_map(|(id, answer)| match answer {
            Ok(TaskStatus::Found(state)) => Some((id.clone(), state.clone())),
            _ => None,
        })
        .collect();
    mock.expect_list_project().returning(move || {
        let listed = listed.clone();
        Box::pin(async move { Ok(listed) })
    });
    mock.expect_task_status().returning(move |task| {
        let answer = answers
            .get(&task)
            .unwrap_or_else(|| panic!("unexpected lookup of {task}"))
            .clone();
        Box::pin(async move { answer })
    });
    mock
}

/// A Plane that must not be asked anything.
pub fn silent_plane() -> MockTaskLookup {
    let mut mock = MockTaskLookup::new();
    mock.expect_probe_project().never();
    mock.expect_task_status().never();
    mock.expect_list_project().never();
    mock
}

pub fn run<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(future)
}

/// An applied scan in which every owner is dead and Plane must not be
/// asked: what the ledger mock does with the slots decides the report.
pub fn apply_with_dead_owners(ledger: &MockInFlightLedger) -> ScanReport {
    run(scan(ledger, &silent_plane(), &probe(dead()), &apply(), NOW)).unwrap()
}

pub fn dry() -> ScanOptions {
    ScanOptions::default()
}

pub fn apply() -> ScanOptions {
    ScanOptions {
        apply: true,
        ..ScanOptions::default()
    }
}
