//! The import of the reference system's `usage.json`: the plan of
//! `ledger_core::usage`, applied in one transaction.

use std::collections::HashMap;

use ledger_core::usage::UsagePlan;
use ledger_core::{EventKind, FinishReason, ImportReport, Owner, Result};

use crate::sql::{append, encode, record_finish, transact};
use crate::worker::Connection;

const IMPORTED: &str = "SELECT fingerprint FROM {s}.imported WHERE fingerprint = ANY($1)";
const SEQS: &str = "SELECT s FROM {s}.next_event_seqs($1) AS s";
const MARK: &str = "INSERT INTO {s}.imported (fingerprint, seq) VALUES ($1, $2)";
const START: &str = "INSERT INTO {s}.starts (backend, started_at, seq) VALUES ($1, $2, $3)";
const CLOSE: &str = "DELETE FROM {s}.open_slots WHERE run_id = ANY($1)";
const HOLDER: &str = "SELECT run_id FROM {s}.open_slots WHERE backend = $1 AND task_id = $2";
const OPEN: &str = "INSERT INTO {s}.open_slots \
     (backend, task_id, run_id, host, started_at, lease_until, started_seq, owner) \
     VALUES ($1, $2, $3, $4, $5, $5, $6, $7)";

/// Applies the import `plan` in one transaction on `c`.
pub(crate) fn apply(c: &mut Connection, plan: UsagePlan) -> Result<ImportReport> {
    transact(c, |tx| {
        let location = tx.location;
        let UsagePlan {
            mut report,
            entries,
            open,
            closed_runs,
        } = plan;
        // Fingerprints are u64; the column is bigint, bit for bit.
        let fingerprints: Vec<i64> = entries.iter().map(|e| e.fingerprint as i64).collect();
        let known: std::collections::HashSet<i64> = tx
            .query(IMPORTED, &[&fingerprints])?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<std::result::Result<_, _>>()?;
        let fresh: Vec<_> = entries
            .iter()
            .filter(|e| !known.contains(&(e.fingerprint as i64)))
            .collect();
        report.already_imported += (entries.len() - fresh.len()) as u64;
        // The sequence numbers first: they take the transaction's id.
        let seqs: Vec<i64> = tx
            .query(SEQS, &[&(fresh.len() as i32)])?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<std::result::Result<_, _>>()?;
        let mut new_starts: HashMap<u64, i64> = HashMap::new();
        for (entry, seq) in fresh.iter().zip(&seqs) {
            let at = entry.at.as_unix_millis();
            append(tx, *seq, at, entry.event.clone())?;
            tx.execute(MARK, &[&(entry.fingerprint as i64), seq])?;
            report.events_recorded += 1;
            match &entry.event {
                EventKind::Started { key, .. } => {
                    new_starts.insert(entry.fingerprint, *seq);
                    // Recent imported starts count against rate caps.
                    tx.execute(START, &[&key.backend.as_str(), &at, seq])?;
                }
                EventKind::Finished { key, .. } => {
                    record_finish(tx, &key.task_id, &FinishReason::Imported)?
                }
                _ => {}
            }
        }
        // Close the slots an earlier import opened that the file
        // now finishes (their finish events were appended above).
        let closed: Vec<String> = closed_runs.iter().map(|r| r.as_str().to_owned()).collect();
        report.slots_closed += tx.execute(CLOSE, &[&closed])?;
        let owner = Owner::imported();
        let owner_text = encode(location, &owner)?;
        for left in &open {
            let (backend, task) = (left.key.backend.as_str(), left.key.task_id.as_str());
            if let Some(row) = tx.query_opt(HOLDER, &[&backend, &task])? {
                let holder: String = row.try_get(0)?;
                if holder != left.run_id.as_str() {
                    report.slots_held_by_other_runs += 1;
                }
                continue;
            }
            // A start taken in by an earlier import whose slot is
            // gone was reclaimed or released since: it stays closed.
            let Some(seq) = new_starts.get(&left.start) else {
                continue;
            };
            tx.execute(
                OPEN,
                &[
                    &backend,
                    &task,
                    &left.run_id.as_str(),
                    &owner.host,
                    &left.at.as_unix_millis(),
                    seq,
                    &owner_text,
                ],
            )?;
            report.slots_opened += 1;
        }
        Ok(report)
    })
}
