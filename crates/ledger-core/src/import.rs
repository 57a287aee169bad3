//! Migration from the reference system's `usage.json`.
//!
//! That file is an object with an `events` array of
//! `{kind, task_id, backend, timestamp}` records, `kind` being
//! `execution_started` or `execution_finished` (other kinds, such as
//! `execution` or `skip_budget`, are unrelated and skipped). Folding the
//! starts and finishes in file order gives the slots that were open.
//!
//! Every entry is fingerprinted from its content and its occurrence number,
//! so importing the same file again, or a longer copy of it, takes in only
//! what is new: an import is idempotent.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use redb::ReadableTable;
use serde_json::Value;

use crate::model::{EventKind, FinishReason, Owner, Slot, SlotKey};
use crate::schema::{IMPORTED, OPEN_SLOTS};
use crate::store::Tx;
use crate::{Backend, Ledger, LedgerError, Result, RunId, TaskId, Timestamp};

pub use crate::contract::ImportReport;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Started,
    Finished,
}

struct Entry {
    kind: Kind,
    key: SlotKey,
    at: Timestamp,
    fingerprint: u64,
}

const MAX_EXAMPLES: usize = 10;

fn parse_entry(value: &Value) -> std::result::Result<Option<(Kind, SlotKey, Timestamp)>, String> {
    let obj = value.as_object().ok_or("not an object")?;
    let kind = match obj.get("kind").and_then(Value::as_str) {
        Some("execution_started") => Kind::Started,
        Some("execution_finished") => Kind::Finished,
        Some(_) => return Ok(None),
        None => return Err("no string `kind`".into()),
    };
    let text = |field: &str| -> std::result::Result<&str, String> {
        obj.get(field)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("`{field}` is missing or not a string"))
    };
    let task_id = TaskId::new(text("task_id")?).map_err(|e| e.to_string())?;
    let backend = Backend::new(text("backend")?).map_err(|e| e.to_string())?;
    let at = match obj.get("timestamp") {
        Some(Value::String(s)) => Timestamp::parse_rfc3339(s).map_err(|e| e.to_string())?,
        // The reference system also wrote `time.time()` floats.
        Some(Value::Number(n)) => match n.as_f64() {
            Some(secs) if (0.0..1e13).contains(&secs) => {
                Timestamp::from_unix_millis((secs * 1000.0) as i64)
            }
            _ => return Err("`timestamp` is out of range".into()),
        },
        _ => return Err("`timestamp` is missing or not a string or number".into()),
    };
    Ok(Some((kind, SlotKey::new(backend, task_id), at)))
}

// FNV-1a: stable across builds and platforms, unlike std's hasher, which
// matters because fingerprints are stored in the file.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter().chain(&[0xff]) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

fn run_id_for(fingerprint: u64) -> RunId {
    // Infallible: a short ASCII string.
    RunId::new(format!("usage-json-{fingerprint:016x}")).unwrap_or_else(|_| unreachable!())
}

impl Ledger {
    /// Imports the reference system's `usage.json` at `path`. See the module
    /// documentation of [`crate::import`] for the format and the rules.
    pub fn import_usage_json(&self, path: &Path) -> Result<ImportReport> {
        let bytes = std::fs::read(path).map_err(|source| LedgerError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        self.import_usage_json_bytes(path, &bytes)
    }

    /// Imports a `usage.json` already read into memory; `source` names it in
    /// errors.
    pub fn import_usage_json_bytes(&self, source: &Path, bytes: &[u8]) -> Result<ImportReport> {
        let format_error = |detail: String| LedgerError::ImportFormat {
            path: source.to_path_buf(),
            detail,
        };
        let root: Value =
            serde_json::from_slice(bytes).map_err(|e| format_error(format!("not JSON: {e}")))?;
        let items = root
            .get("events")
            .and_then(Value::as_array)
            .ok_or_else(|| format_error("expected an object with an `events` array".into()))?;

        let mut report = ImportReport {
            entries: items.len() as u64,
            ..ImportReport::default()
        };
        let mut entries = Vec::new();
        let mut occurrences: HashMap<(Kind, SlotKey, i64), u64> = HashMap::new();
        for (index, item) in items.iter().enumerate() {
            match parse_entry(item) {
                Ok(None) => report.unrelated += 1,
                Ok(Some((kind, key, at))) => {
                    let n = occurrences
                        .entry((kind, key.clone(), at.as_unix_millis()))
                        .or_insert(0);
                    *n += 1;
                    let fingerprint = fnv1a(&[
                        if kind == Kind::Started { b"s" } else { b"f" },
                        key.backend.as_str().as_bytes(),
                        key.task_id.as_str().as_bytes(),
                        &at.as_unix_millis().to_le_bytes(),
                        &n.to_le_bytes(),
                    ]);
                    match kind {
                        Kind::Started => report.started += 1,
                        Kind::Finished => report.finished += 1,
                    }
                    entries.push(Entry {
                        kind,
                        key,
                        at,
                        fingerprint,
                    });
                }
                Err(reason) => {
                    report.malformed += 1;
                    if report.malformed_examples.len() < MAX_EXAMPLES {
                        report.malformed_examples.push((index, reason));
                    }
                }
            }
        }

        // Fold in file order: the run of each key's latest unfinished start.
        let mut open: HashMap<SlotKey, (u64, Timestamp)> = HashMap::new();
        let mut closed_runs: HashSet<u64> = HashSet::new();
        let mut run_of_entry: Vec<u64> = Vec::with_capacity(entries.len());
        for entry in &entries {
            match entry.kind {
                Kind::Started => {
                    if let Some((previous, _)) =
                        open.insert(entry.key.clone(), (entry.fingerprint, entry.at))
                    {
                        // A second start without a finish supersedes the first.
                        closed_runs.insert(previous);
                    }
                    run_of_entry.push(entry.fingerprint);
                }
                Kind::Finished => match open.remove(&entry.key) {
                    Some((start, _)) => {
                        closed_runs.insert(start);
                        run_of_entry.push(start);
                    }
                    // A finish without a start: recorded under its own run.
                    None => run_of_entry.push(entry.fingerprint),
                },
            }
        }
        let mut open_after: Vec<SlotKey> = open.keys().cloned().collect();
        open_after.sort();
        report.open_after_fold = open_after;

        let closed_runs: HashSet<RunId> = closed_runs.into_iter().map(run_id_for).collect();

        self.write(|txn| {
            let mut imported = txn.open_table(IMPORTED).map_err(|e| self.storage(e))?;
            let mut new_starts: HashMap<u64, u64> = HashMap::new();
            for (entry, run_fp) in entries.iter().zip(&run_of_entry) {
                if imported
                    .get(entry.fingerprint)
                    .map_err(|e| self.storage(e))?
                    .is_some()
                {
                    report.already_imported += 1;
                    continue;
                }
                let run_id = run_id_for(*run_fp);
                let kind = match entry.kind {
                    Kind::Started => EventKind::Started {
                        key: entry.key.clone(),
                        run_id,
                        owner: Owner::imported(),
                    },
                    Kind::Finished => EventKind::Finished {
                        key: entry.key.clone(),
                        run_id,
                        started_at: entry.at,
                        reason: FinishReason::Imported,
                        role: None,
                    },
                };
                let seq = self.append_event(txn, entry.at, kind)?;
                imported
                    .insert(entry.fingerprint, seq)
                    .map_err(|e| self.storage(e))?;
                report.events_recorded += 1;
                match entry.kind {
                    Kind::Started => {
                        new_starts.insert(entry.fingerprint, seq);
                        // Recent imported starts count against rate caps.
                        self.index_start(txn, &entry.key.backend, entry.at, seq)?;
                    }
                    Kind::Finished => self.update_attempts(txn, &entry.key.task_id, |a| {
                        a.record_finish(&FinishReason::Imported)
                    })?,
                }
            }
            drop(imported);

            // Close the slots an earlier import opened that the file now
            // finishes (their finish events were appended above).
            let mut slots = txn.open_table(OPEN_SLOTS).map_err(|e| self.storage(e))?;
            let mut to_close = Vec::new();
            for item in slots.iter().map_err(|e| self.storage(e))? {
                let (_, v) = item.map_err(|e| self.storage(e))?;
                let slot: Slot = self.decode("open_slots", v.value())?;
                if closed_runs.contains(&slot.run_id) {
                    to_close.push(slot.key);
                }
            }
            for key in to_close {
                slots
                    .remove((key.backend.as_str(), key.task_id.as_str()))
                    .map_err(|e| self.storage(e))?;
                report.slots_closed += 1;
            }

            for (key, (start_fp, at)) in &open {
                let run_id = run_id_for(*start_fp);
                let tuple = (key.backend.as_str(), key.task_id.as_str());
                if let Some(g) = slots.get(tuple).map_err(|e| self.storage(e))? {
                    let slot: Slot = self.decode("open_slots", g.value())?;
                    if slot.run_id != run_id {
                        report.slots_held_by_other_runs += 1;
                    }
                    continue;
                }
                // A start taken in by an earlier import whose slot is gone
                // was reclaimed or released since: it stays closed.
                let Some(&started_seq) = new_starts.get(start_fp) else {
                    continue;
                };
                let slot = Slot {
                    key: key.clone(),
                    run_id,
                    started_at: *at,
                    owner: Owner::imported(),
                    lease_until: *at,
                    started_seq,
                };
                let bytes = self.encode("open_slots", &slot)?;
                slots
                    .insert(tuple, bytes.as_slice())
                    .map_err(|e| self.storage(e))?;
                report.slots_opened += 1;
            }
            Ok(Tx::Commit(()))
        })?;
        Ok(report)
    }
}
