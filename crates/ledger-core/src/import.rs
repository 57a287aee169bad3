//! The redb store's import of the reference system's `usage.json`: the
//! plan of [`crate::usage`], applied in one write transaction.

use std::collections::HashMap;
use std::path::Path;

use redb::ReadableTable;

use crate::model::{EventKind, FinishReason, Owner, Slot};
use crate::schema::{IMPORTED, OPEN_SLOTS};
use crate::store::{OrStorage, Tx};
use crate::usage::{self, UsagePlan};
use crate::{Ledger, Result};

pub use crate::contract::ImportReport;

impl Ledger {
    /// Imports the reference system's `usage.json` at `path`. See
    /// [`crate::usage`] for the format and the rules.
    pub(crate) fn import_usage_file(&self, path: &Path) -> Result<ImportReport> {
        self.apply_usage(usage::plan_file(path)?)
    }

    /// Imports a `usage.json` already read into memory; `source` names it in
    /// errors.
    pub fn import_usage_json_bytes(&self, source: &Path, bytes: &[u8]) -> Result<ImportReport> {
        self.apply_usage(usage::plan(source, bytes)?)
    }

    fn apply_usage(&self, plan: UsagePlan) -> Result<ImportReport> {
        let UsagePlan {
            mut report,
            entries,
            open,
            closed_runs,
        } = plan;
        self.write(|txn| {
            let mut imported = txn.open_table(IMPORTED).or_storage(self)?;
            let mut new_starts: HashMap<u64, u64> = HashMap::new();
            for entry in &entries {
                if imported.get(entry.fingerprint).or_storage(self)?.is_some() {
                    report.already_imported += 1;
                    continue;
                }
                let seq = self.append_event(txn, entry.at, entry.event.clone())?;
                imported.insert(entry.fingerprint, seq).or_storage(self)?;
                report.events_recorded += 1;
                match &entry.event {
                    EventKind::Started { key, .. } => {
                        new_starts.insert(entry.fingerprint, seq);
                        // Recent imported starts count against rate caps.
                        self.index_start(txn, &key.backend, entry.at, seq)?;
                    }
                    EventKind::Finished { key, .. } => {
                        self.update_attempts(txn, &key.task_id, |a| {
                            a.record_finish(&FinishReason::Imported)
                        })?
                    }
                    _ => {}
                }
            }
            drop(imported);

            // Close the slots an earlier import opened that the file now
            // finishes (their finish events were appended above).
            let mut slots = txn.open_table(OPEN_SLOTS).or_storage(self)?;
            let mut to_close = Vec::new();
            for item in slots.iter().or_storage(self)? {
                let (_, v) = item.or_storage(self)?;
                let slot: Slot = self.decode("open_slots", v.value())?;
                if closed_runs.contains(&slot.run_id) {
                    to_close.push(slot.key);
                }
            }
            for key in to_close {
                slots
                    .remove((key.backend.as_str(), key.task_id.as_str()))
                    .or_storage(self)?;
                report.slots_closed += 1;
            }

            for left in &open {
                let tuple = (left.key.backend.as_str(), left.key.task_id.as_str());
                if let Some(g) = slots.get(tuple).or_storage(self)? {
                    let slot: Slot = self.decode("open_slots", g.value())?;
                    if slot.run_id != left.run_id {
                        report.slots_held_by_other_runs += 1;
                    }
                    continue;
                }
                // A start taken in by an earlier import whose slot is gone
                // was reclaimed or released since: it stays closed.
                let Some(&started_seq) = new_starts.get(&left.start) else {
                    continue;
                };
                let slot = Slot {
                    key: left.key.clone(),
                    run_id: left.run_id.clone(),
                    started_at: left.at,
                    owner: Owner::imported(),
                    lease_until: left.at,
                    started_seq,
                };
                let bytes = self.encode("open_slots", &slot)?;
                slots.insert(tuple, bytes.as_slice()).or_storage(self)?;
                report.slots_opened += 1;
            }
            Ok(Tx::Commit(()))
        })?;
        Ok(report)
    }
}
