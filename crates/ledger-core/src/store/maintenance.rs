//! Keeping the redb ledger small and sound: retention (`prune`) and the
//! integrity check (`verify`).

use redb::ReadableTable;

use super::*;

impl Ledger {
    /// Checks the ledger's own invariants: the retained log has no holes and
    /// each record sits under its own sequence number; every open slot has
    /// its `started` event and no `finished` event after it. A clean report means nothing was lost or torn.
    pub fn verify(&self) -> Result<IntegrityReport> {
        self.read(|txn| {
            let events = txn.open_table(EVENTS).or_storage(self)?;
            let open = txn.open_table(OPEN_SLOTS).or_storage(self)?;
            let mut report = IntegrityReport::default();
            let mut expected: Option<u64> = None;
            let mut finished_runs = std::collections::HashSet::new();
            for entry in events.iter().or_storage(self)? {
                let (k, v) = entry.or_storage(self)?;
                let seq = k.value();
                report.first_seq.get_or_insert(seq);
                report.last_seq = Some(seq);
                report.events += 1;
                if let Some(want) = expected
                    && seq != want
                {
                    report
                        .problems
                        .push(format!("events {want}..{} are missing", seq - 1));
                }
                expected = Some(seq + 1);
                let event: Event = match self.decode("events", v.value()) {
                    Ok(event) => event,
                    Err(e) => {
                        report.problems.push(e.to_string());
                        continue;
                    }
                };
                if event.seq != seq {
                    report
                        .problems
                        .push(format!("event stored under {seq} says it is {}", event.seq));
                }
                if let EventKind::Finished { run_id, .. } = &event.kind {
                    finished_runs.insert(run_id.clone());
                }
            }
            for entry in open.iter().or_storage(self)? {
                let (k, v) = entry.or_storage(self)?;
                report.open_slots += 1;
                let (backend, task) = k.value();
                let slot: Slot = match self.decode("open_slots", v.value()) {
                    Ok(slot) => slot,
                    Err(e) => {
                        report.problems.push(e.to_string());
                        continue;
                    }
                };
                if slot.key.backend.as_str() != backend || slot.key.task_id.as_str() != task {
                    report.problems.push(format!(
                        "slot stored under {backend}/{task} says it is {}",
                        slot.key
                    ));
                }
                let retained = report
                    .first_seq
                    .is_some_and(|first| slot.started_seq >= first);
                if retained {
                    match events.get(slot.started_seq).or_storage(self)? {
                        Some(v) => match self.decode::<Event>("events", v.value()) {
                            Ok(Event {
                                kind: EventKind::Started { key, run_id, .. },
                                ..
                            }) if key == slot.key && run_id == slot.run_id => {}
                            _ => report.problems.push(format!(
                                "open slot {} (run {}) points at event {}, which is not its start",
                                slot.key, slot.run_id, slot.started_seq
                            )),
                        },
                        None => report.problems.push(format!(
                            "open slot {} (run {}) has no started event {}",
                            slot.key, slot.run_id, slot.started_seq
                        )),
                    }
                }
                if finished_runs.contains(&slot.run_id) {
                    report.problems.push(format!(
                        "open slot {} (run {}) has a finished event",
                        slot.key, slot.run_id
                    ));
                }
            }
            Ok(report)
        })
    }
}

/// What [`Ledger::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntegrityReport {
    /// Retained events.
    pub events: u64,
    /// Sequence number of the oldest retained event.
    pub first_seq: Option<u64>,
    /// Sequence number of the newest event.
    pub last_seq: Option<u64>,
    /// Open slots.
    pub open_slots: u64,
    /// Every broken invariant, in words. Empty when the ledger is sound.
    pub problems: Vec<String>,
}

impl IntegrityReport {
    /// Whether every invariant holds.
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty()
    }
}
