//! Migration from the reference system's `usage.json`.

use std::collections::BTreeSet;

use ledger_core::*;
use serde_json::{Value, json};

use crate::support::*;

fn usage_json() -> Value {
    json!({
        "events": [
            {"kind": "execution_started", "task_id": "T1", "backend": "local", "timestamp": "2026-11-01T10:00:00Z"},
            {"kind": "execution_started", "task_id": "T2", "backend": "local", "timestamp": "2026-11-01T10:01:00+00:00"},
            {"kind": "execution_finished", "task_id": "T1", "backend": "local", "timestamp": "2026-11-01T10:02:00Z"},
            {"kind": "execution", "task_id": "T1", "backend": "local", "timestamp": "2026-11-01T10:02:00Z"},
            {"kind": "skip_budget", "backend": "local", "timestamp": "2026-11-01T10:02:30Z"},
            {"kind": "execution_started", "task_id": "T3", "backend": "claude", "timestamp": "2026-11-01T15:33:00+05:30"},
            {"kind": "execution_started", "task_id": 123, "backend": "local", "timestamp": "2026-11-01T10:04:00Z"},
            {"kind": "execution_started", "task_id": "T4", "backend": "local", "timestamp": "last tuesday"},
            "not an object",
            {"kind": "execution_started", "task_id": "T1", "backend": "local", "timestamp": "2026-11-01T10:05:00.250Z"},
            {"kind": "execution_finished", "task_id": "T2", "backend": "local", "timestamp": "2026-11-01T10:06:00Z"},
            {"kind": "execution_started", "task_id": "T5", "backend": "local", "timestamp": 1793527200.5},
            {"kind": "execution_finished", "task_id": "T9", "backend": "local", "timestamp": "2026-11-01T10:08:00Z"}
        ]
    })
}

/// The open slots that folding the file's starts and finishes gives, worked
/// out here independently of the importer.
fn fold(usage: &Value) -> BTreeSet<(String, String)> {
    let mut open = BTreeSet::new();
    for e in usage["events"].as_array().unwrap() {
        let (Some(kind), Some(task), Some(backend)) = (
            e.get("kind").and_then(Value::as_str),
            e.get("task_id").and_then(Value::as_str),
            e.get("backend").and_then(Value::as_str),
        ) else {
            continue;
        };
        let ts = e.get("timestamp").unwrap();
        if ts
            .as_str()
            .is_some_and(|s| Timestamp::parse_rfc3339(s).is_err())
        {
            continue;
        }
        let k = (backend.to_owned(), task.to_owned());
        match kind {
            "execution_started" => {
                open.insert(k);
            }
            "execution_finished" => {
                open.remove(&k);
            }
            _ => {}
        }
    }
    open
}

fn open_keys(ledger: &Ledger) -> BTreeSet<(String, String)> {
    ledger
        .open_slots()
        .unwrap()
        .into_iter()
        .map(|s| (s.key.backend.to_string(), s.key.task_id.to_string()))
        .collect()
}

fn write_usage(dir: &std::path::Path, usage: &Value) -> std::path::PathBuf {
    let path = dir.join("usage.json");
    std::fs::write(&path, serde_json::to_vec_pretty(usage).unwrap()).unwrap();
    path
}

#[test]
fn import_rebuilds_exactly_the_folded_open_slots_and_counts_bad_entries() {
    let (dir, path) = temp_ledger();
    let ledger = Ledger::open(&path).unwrap();
    let usage = usage_json();
    let file = write_usage(dir.path(), &usage);
    let report = ledger.import_usage_json(&file).unwrap();

    let expected = fold(&usage);
    assert_eq!(
        expected,
        BTreeSet::from([
            ("claude".to_owned(), "T3".to_owned()),
            ("local".to_owned(), "T1".to_owned()),
            ("local".to_owned(), "T5".to_owned()),
        ])
    );
    assert_eq!(open_keys(&ledger), expected);
    assert_eq!(report.entries, 13);
    assert_eq!(report.started, 5);
    assert_eq!(report.finished, 3);
    assert_eq!(report.unrelated, 2);
    assert_eq!(report.malformed, 3);
    let why: Vec<_> = report.malformed_examples.iter().map(|(i, _)| *i).collect();
    assert_eq!(why, vec![6, 7, 8]);
    assert_eq!(report.events_recorded, 8);
    assert_eq!(report.slots_opened, 3);

    // The slots carry the file's start times and an owner nobody can mistake
    // for a live local process.
    let t1 = ledger.slot(&key("local", "T1")).unwrap().unwrap();
    assert_eq!(t1.started_at.to_string(), "2026-11-01T10:05:00.250Z");
    assert_eq!(t1.owner, Owner::imported());
    let t3 = ledger.slot(&key("claude", "T3")).unwrap().unwrap();
    assert_eq!(t3.started_at.to_string(), "2026-11-01T10:03:00.000Z");
    let t5 = ledger.slot(&key("local", "T5")).unwrap().unwrap();
    assert_eq!(t5.started_at.as_unix_millis(), 1_793_527_200_500);
    assert!(ledger.verify().unwrap().is_sound());
    assert_eq!(
        ledger
            .attempts(&TaskId::new("T1").unwrap())
            .unwrap()
            .started,
        2
    );
}

#[test]
fn importing_the_same_file_twice_changes_nothing() {
    let (dir, path) = temp_ledger();
    let ledger = Ledger::open(&path).unwrap();
    let file = write_usage(dir.path(), &usage_json());
    ledger.import_usage_json(&file).unwrap();
    let events = all_events(&ledger);
    let slots = ledger.open_slots().unwrap();
    let attempts = ledger.attempts(&TaskId::new("T1").unwrap()).unwrap();

    let again = ledger.import_usage_json(&file).unwrap();
    assert_eq!(again.events_recorded, 0);
    assert_eq!(again.already_imported, 8);
    assert_eq!((again.slots_opened, again.slots_closed), (0, 0));
    assert_eq!(all_events(&ledger), events);
    assert_eq!(ledger.open_slots().unwrap(), slots);
    assert_eq!(
        ledger.attempts(&TaskId::new("T1").unwrap()).unwrap(),
        attempts
    );
}

#[test]
fn a_grown_file_takes_in_only_what_is_new() {
    let (dir, path) = temp_ledger();
    let ledger = Ledger::open(&path).unwrap();
    let mut usage = usage_json();
    let file = write_usage(dir.path(), &usage);
    ledger.import_usage_json(&file).unwrap();

    // The reference system kept running: T3 finished, T6 started.
    let events = usage["events"].as_array_mut().unwrap();
    events.push(json!({"kind": "execution_finished", "task_id": "T3", "backend": "claude", "timestamp": "2026-11-01T11:00:00Z"}));
    events.push(json!({"kind": "execution_started", "task_id": "T6", "backend": "local", "timestamp": "2026-11-01T11:01:00Z"}));
    let file = write_usage(dir.path(), &usage);
    let report = ledger.import_usage_json(&file).unwrap();
    assert_eq!(report.events_recorded, 2);
    assert_eq!((report.slots_opened, report.slots_closed), (1, 1));
    assert_eq!(open_keys(&ledger), fold(&usage));
    assert!(ledger.verify().unwrap().is_sound());
}

#[test]
fn a_slot_held_by_a_live_run_is_left_to_it() {
    let (dir, path) = temp_ledger();
    let ledger = Ledger::open(&path).unwrap();
    let live = admitted(
        ledger
            .admit(&request("local", "T1", "live-run"), &limits(5), T0)
            .unwrap(),
    );
    let report = ledger
        .import_usage_json(&write_usage(dir.path(), &usage_json()))
        .unwrap();
    assert_eq!(report.slots_held_by_other_runs, 1);
    assert_eq!(ledger.slot(&live.key).unwrap().unwrap().run_id, live.run_id);
}

#[test]
fn a_file_that_is_not_usage_json_is_a_clear_error_and_changes_nothing() {
    let (dir, path) = temp_ledger();
    let ledger = Ledger::open(&path).unwrap();
    for (name, body) in [
        ("garbage.json", &b"{not json"[..]),
        ("array.json", &b"[1, 2]"[..]),
        ("no-events.json", &br#"{"evts": []}"#[..]),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, body).unwrap();
        let err = ledger.import_usage_json(&file).unwrap_err();
        assert!(matches!(err, LedgerError::ImportFormat { .. }), "{err:?}");
        assert!(err.to_string().contains(name), "{err}");
    }
    assert!(all_events(&ledger).is_empty());
    let missing = dir.path().join("missing.json");
    let err = ledger.import_usage_json(&missing).unwrap_err();
    assert!(err.to_string().contains("missing.json"), "{err}");
}
