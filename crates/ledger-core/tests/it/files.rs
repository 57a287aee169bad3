//! How ledger files are created, shared and kept compatible.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use ledger_core::*;

use crate::support::*;

#[test]
fn new_files_are_private_and_parents_are_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("var/lib/inflight/ledger.redb");
    drop(Ledger::open(&path).unwrap());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let lock = ReconcileLock::acquire(&path, Duration::from_secs(1))
        .unwrap()
        .unwrap();
    let mode = std::fs::metadata(lock.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn a_planted_symlink_is_not_followed_on_creation() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let path = dir.path().join("ledger.redb");
    // A dangling link where the ledger will be: creation must not write
    // through it, and the victim must stay untouched.
    let dangling = dir.path().join("nowhere");
    std::os::unix::fs::symlink(&dangling, &path).unwrap();
    assert!(Ledger::open(&path).is_err());
    assert!(!dangling.exists());
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
}

#[test]
fn processes_in_different_modes_exclude_each_other_with_a_clear_error() {
    let (_dir, path) = temp_ledger();
    let exclusive = Ledger::open_with(
        &path,
        LedgerOptions {
            sharing: SharingMode::Exclusive,
            ..LedgerOptions::default()
        },
    )
    .unwrap();
    let err = Ledger::open(&path).unwrap_err();
    assert!(matches!(err, LedgerError::AlreadyOpen { .. }), "{err:?}");
    drop(exclusive);
    // Two multi-process handles share the file and see each other's writes.
    let a = Ledger::open(&path).unwrap();
    let b = Ledger::open(&path).unwrap();
    admitted(a.admit(&request("x", "T", "r1"), &limits(1), T0).unwrap());
    let denial = denied(b.admit(&request("x", "T2", "r2"), &limits(1), T0).unwrap());
    assert_eq!(denial.reason, DenyReason::BackendConcurrencyExceeded);
}

#[test]
fn the_reconcile_lock_is_exclusive_across_processes() {
    let (_dir, path) = temp_ledger();
    drop(Ledger::open(&path).unwrap());
    let mut holder = child("hold_reconcile_lock", &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The test harness prints its own lines first.
    let stdout = std::io::BufReader::new(holder.stdout.take().unwrap());
    let locked = std::io::BufRead::lines(stdout)
        .map_while(Result::ok)
        .any(|line| line.trim() == "LOCKED");
    assert!(locked, "the child never took the lock");
    // It returns while the holder still holds the lock: it gave up after
    // its timeout instead of waiting for the holder.
    let attempt = ReconcileLock::acquire(&path, Duration::from_millis(200)).unwrap();
    assert!(attempt.is_none(), "the lock was taken twice");
    // The kernel drops the lock with its dead holder.
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(
        ReconcileLock::acquire(&path, Duration::from_secs(2))
            .unwrap()
            .is_some()
    );
}

/// A ledger written by schema version 1, committed to the repository. Every
/// later release must still open it.
#[test]
fn the_schema_v1_sample_still_opens() {
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/schema-v1.redb");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copy.redb");
    std::fs::copy(&sample, &path).unwrap();
    // Written before the log was indexed by task: a read-only look finds a
    // task's history in the log itself, and the first read-write open
    // indexes the log, to the same answer.
    let history = |ledger: &Ledger| -> Vec<(u64, String)> {
        let task = TaskId::new("ROCK-1").unwrap();
        let events = ledger.task_events(&task, 10).unwrap();
        events
            .iter()
            .map(|e| {
                (
                    e.seq,
                    serde_json::to_value(&e.kind).unwrap()["kind"].to_string(),
                )
            })
            .collect()
    };
    let inspected = history(&Ledger::open_read_only(&path, LedgerOptions::default()).unwrap());
    assert_eq!(
        inspected.len(),
        2,
        "ROCK-1 started and finished: {inspected:?}"
    );
    let ledger = Ledger::open(&path).unwrap();
    assert_eq!(history(&ledger), inspected);
    drop(ledger);
    {
        let db = redb::ReadOnlyDatabase::open(&path).unwrap();
        let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
        let index: redb::TableDefinition<(&str, u64), ()> =
            redb::TableDefinition::new("task_events");
        let rows = redb::ReadableTableMetadata::len(&txn.open_table(index).unwrap()).unwrap();
        assert_eq!(rows, 3, "every event of the sample names a task");
    }
    let ledger = Ledger::open(&path).unwrap();
    let report = ledger.verify().unwrap();
    assert!(report.is_sound(), "{:?}", report.problems);
    let open = ledger.open_slots().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].key, key("local", "ROCK-2"));
    assert_eq!(
        ledger
            .attempts(&TaskId::new("ROCK-1").unwrap())
            .unwrap()
            .completed,
        1
    );
}

/// Builds a schema sample and reads it back: in a temporary folder, so that
/// no test writes into the source tree. When the schema version is bumped,
/// write the new committed sample by naming it:
/// `LEDGER_SCHEMA_SAMPLE_OUT=$PWD/crates/ledger-core/tests/data/schema-v2.redb cargo test -p ledger-core --test it schema_sample`.
#[test]
fn a_schema_sample_is_built_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = match std::env::var_os("LEDGER_SCHEMA_SAMPLE_OUT") {
        Some(out) => std::path::PathBuf::from(out),
        None => dir
            .path()
            .join(format!("schema-v{}.redb", schema::SCHEMA_VERSION)),
    };
    let _ = std::fs::remove_file(&path);
    let ledger = Ledger::open(&path).unwrap();
    let done = admitted(
        ledger
            .admit(&request("local", "ROCK-1", "run-1"), &limits(2), T0)
            .unwrap(),
    );
    ledger
        .finish(&done.key, Some(&done.run_id), FinishReason::Completed, T0)
        .unwrap();
    admitted(
        ledger
            .admit(&request("local", "ROCK-2", "run-2"), &limits(2), T0)
            .unwrap(),
    );
    drop(ledger);
    let reopened = Ledger::open(&path).unwrap();
    assert_eq!(reopened.open_slots().unwrap().len(), 1);
    assert!(reopened.verify().unwrap().is_sound());
}
