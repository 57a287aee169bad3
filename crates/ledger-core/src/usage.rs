//! Migration from the reference system's `usage.json`: reading the file
//! and folding it into what a store records ([`plan`]); each store applies
//! the plan in one transaction of its own.
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

use serde_json::Value;

use crate::model::{EventKind, FinishReason, Owner, SlotKey};
use crate::{Backend, ImportReport, LedgerError, Result, RunId, TaskId, Timestamp};

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Started,
    Finished,
}

/// An entry as read, before the fold gives it its run.
struct Parsed {
    kind: Kind,
    key: SlotKey,
    at: Timestamp,
    fingerprint: u64,
}

/// One start or finish of the file, as the event a store records for it.
#[derive(Debug, Clone)]
pub struct UsageEntry {
    /// Stable across imports of the same (or a longer) file: an entry
    /// already imported is recognised by it.
    pub fingerprint: u64,
    /// When it happened.
    pub at: Timestamp,
    /// The event to append (its run id joins a finish to its start).
    pub event: EventKind,
}

impl UsageEntry {
    /// Whether this is a start (counted against rate caps).
    pub fn is_start(&self) -> bool {
        matches!(self.event, EventKind::Started { .. })
    }
}

/// A slot the file leaves open after folding it.
#[derive(Debug, Clone)]
pub struct UsageOpen {
    /// The slot's key.
    pub key: SlotKey,
    /// Its run.
    pub run_id: RunId,
    /// The fingerprint of the start that opened it.
    pub start: u64,
    /// When it started.
    pub at: Timestamp,
}

/// What importing a file means, before any store is looked at.
#[derive(Debug, Clone)]
pub struct UsagePlan {
    /// The counts of the file's entries (the store adds what it recorded).
    pub report: ImportReport,
    /// Every start and finish, in file order.
    pub entries: Vec<UsageEntry>,
    /// The slots left open, in key order.
    pub open: Vec<UsageOpen>,
    /// Runs the file finishes (or supersedes): a slot an earlier import
    /// opened under one of them is closed.
    pub closed_runs: HashSet<RunId>,
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

/// The run id an imported start is recorded under.
pub fn run_id_for(fingerprint: u64) -> RunId {
    // Infallible: a short ASCII string.
    RunId::new(format!("usage-json-{fingerprint:016x}")).unwrap_or_else(|_| unreachable!())
}

/// Reads the `usage.json` at `path` and plans its import.
pub fn plan_file(path: &Path) -> Result<UsagePlan> {
    let bytes = std::fs::read(path).map_err(|source| LedgerError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    plan(path, &bytes)
}

/// Reads a `usage.json` already in memory (`source` names it in errors)
/// and folds it: the events to record and the slots left open.
pub fn plan(source: &Path, bytes: &[u8]) -> Result<UsagePlan> {
    {
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
                    entries.push(Parsed {
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
        let entries = entries
            .into_iter()
            .zip(run_of_entry)
            .map(|(entry, run)| {
                let run_id = run_id_for(run);
                let event = match entry.kind {
                    Kind::Started => EventKind::Started {
                        key: entry.key,
                        run_id,
                        owner: Owner::imported(),
                    },
                    Kind::Finished => EventKind::Finished {
                        key: entry.key,
                        run_id,
                        started_at: entry.at,
                        reason: FinishReason::Imported,
                        role: None,
                    },
                };
                UsageEntry {
                    fingerprint: entry.fingerprint,
                    at: entry.at,
                    event,
                }
            })
            .collect();
        let mut open: Vec<UsageOpen> = open
            .into_iter()
            .map(|(key, (start, at))| UsageOpen {
                key,
                run_id: run_id_for(start),
                start,
                at,
            })
            .collect();
        open.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(UsagePlan {
            report,
            entries,
            open,
            closed_runs,
        })
    }
}
