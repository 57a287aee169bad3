//! The JSON shapes the reference watchdog's log consumers read.

use std::time::Duration;

use reconcile::*;
use serde_json::{Value, json};

use crate::support::*;

#[test]
fn an_action_entry_has_exactly_the_reference_fields() {
    let s = slot("local", "ROCK-12", "r1", Duration::from_secs(90));
    let (ledger, _) = ledger(vec![s]);
    let report = run(scan(&ledger, &silent_plane(), &probe(dead()), &dry(), NOW)).unwrap();
    // Field by field, in the reference's order.
    let text = serde_json::to_string(&report.actions[0]).unwrap();
    assert!(
        text.starts_with(r#"{"task_id":"ROCK-12","backend":"local","started_at":"#),
        "{text}"
    );
    let entry: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        entry,
        json!({
            "task_id": "ROCK-12",
            "backend": "local",
            "started_at": "2027-01-15T07:58:30.000Z",
            "rule": "DEAD_OWNER_CLEAR",
            "reason": "runner pid 100 is gone",
            "action": "would_apply",
        })
    );
}

#[test]
fn an_error_entry_carries_the_error_and_only_then() {
    let s = slot("local", "T", "r1", HOUR);
    let mut ledger = ledger_mock();
    let open = vec![s];
    ledger
        .expect_open_slots()
        .returning(move || Ok(open.clone()));
    ledger
        .expect_finish_if_run()
        .returning(|_, _, _, _| Err(EdgeError("disk full".into())));
    let report = apply_with_dead_owners(&ledger);
    let text = serde_json::to_string(&report.actions[0]).unwrap();
    assert_eq!(
        text,
        r#"{"task_id":"T","backend":"local","started_at":"2027-01-15T07:00:00.000Z","rule":"DEAD_OWNER_CLEAR","reason":"runner pid 100 is gone","action":"error","error":"could not finish the slot: disk full"}"#
    );
}

#[test]
fn a_scan_report_has_the_reference_envelope() {
    let (ledger, _) = ledger(vec![slot("local", "T", "r1", HOUR)]);
    let report = apply_with_dead_owners(&ledger);
    let value = serde_json::to_value(&report).unwrap();
    assert_eq!(value["scanned_at"], "2027-01-15T08:00:00.000Z");
    assert_eq!(value["apply"], true);
    assert_eq!(value["actions"].as_array().unwrap().len(), 1);
    assert_eq!(value["actions"][0]["action"], "applied");
    assert_eq!(value["suspected_misconfiguration"], false);
    assert_eq!(value["open_slots"], 1);
    assert_eq!(value["plane_requests"], 0);
    assert_eq!(value["superseded"], 0);
    assert!(matches!(
        value["actions"][0]["started_at"],
        Value::String(_)
    ));
}
