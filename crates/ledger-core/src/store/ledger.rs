//! The ledger's contract ([`LedgerStore`]) on the redb file: admissions,
//! finishes, leases, holders, reads of slots and the audit log, retention.
//! Each call is one transaction; the helpers every write shares are in
//! `writes`, the reads' in `queries`.

use std::path::Path;
use std::time::Duration;

use redb::ReadableTable;

use super::*;
use crate::LedgerStore;

/// The redb store behind the ledger's contract: each call one redb
/// transaction, through the helpers of `writes` and `queries`.
impl LedgerStore for Ledger {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn admit(
        &self,
        request: &AdmitRequest,
        limits: &Limits,
        now: Timestamp,
    ) -> Result<AdmitOutcome> {
        let key = &request.key;
        let key_tuple = (key.backend.as_str(), key.task_id.as_str());
        self.write(|txn| {
            let mut open = txn.open_table(OPEN_SLOTS).or_storage(self)?;
            let existing = match open.get(key_tuple).or_storage(self)? {
                Some(g) => Some(self.decode::<Slot>("open_slots", g.value())?),
                None => None,
            };
            if let Some(slot) = existing.as_ref().filter(|s| s.run_id == request.run_id) {
                return Ok(Tx::Abort(AdmitOutcome::Admitted(slot.clone())));
            }
            let starts = txn.open_table(STARTS).or_storage(self)?;
            let denial = self.check_caps(&open, &starts, existing.is_some(), key, limits, now)?;
            drop(starts);
            if let Some(denial) = denial {
                self.append_event(
                    txn,
                    now,
                    EventKind::Denied {
                        key: key.clone(),
                        run_id: request.run_id.clone(),
                        denial,
                    },
                )?;
                return Ok(Tx::Commit(AdmitOutcome::Denied(denial)));
            }
            let seq = self.append_event(
                txn,
                now,
                EventKind::Started {
                    key: key.clone(),
                    run_id: request.run_id.clone(),
                    owner: request.owner.clone(),
                },
            )?;
            let slot = Slot {
                key: key.clone(),
                run_id: request.run_id.clone(),
                started_at: now,
                owner: request.owner.clone(),
                lease_until: now.saturating_add(request.lease),
                started_seq: seq,
            };
            let bytes = self.encode("open_slots", &slot)?;
            open.insert(key_tuple, bytes.as_slice()).or_storage(self)?;
            self.index_start(txn, &slot.key.backend, slot.started_at, slot.started_seq)?;
            Ok(Tx::Commit(AdmitOutcome::Admitted(slot)))
        })
    }

    fn finish(
        &self,
        key: &SlotKey,
        expected_run: Option<&RunId>,
        reason: FinishReason,
        now: Timestamp,
    ) -> Result<FinishOutcome> {
        let key_tuple = (key.backend.as_str(), key.task_id.as_str());
        self.write(|txn| {
            let mut open = txn.open_table(OPEN_SLOTS).or_storage(self)?;
            let slot: Slot = match open.get(key_tuple).or_storage(self)? {
                Some(g) => self.decode("open_slots", g.value())?,
                None => return Ok(Tx::Abort(FinishOutcome::NotInFlight)),
            };
            if let Some(run) = expected_run
                && *run != slot.run_id
            {
                return Ok(Tx::Abort(FinishOutcome::OtherRunInFlight {
                    open_run: slot.run_id,
                }));
            }
            open.remove(key_tuple).or_storage(self)?;
            self.append_event(
                txn,
                now,
                EventKind::Finished {
                    key: key.clone(),
                    run_id: slot.run_id.clone(),
                    started_at: slot.started_at,
                    reason: reason.clone(),
                    role: slot.owner.role.clone(),
                },
            )?;
            self.update_attempts(txn, &key.task_id, |a| a.record_finish(&reason))?;
            Ok(Tx::Commit(FinishOutcome::Finished(slot)))
        })
    }

    fn renew_lease(
        &self,
        key: &SlotKey,
        run: &RunId,
        lease: Duration,
        now: Timestamp,
    ) -> Result<UpdateOutcome> {
        let until = now.saturating_add(lease);
        self.update_slot(key, run, |slot| {
            slot.lease_until = slot.lease_until.max(until)
        })
    }

    fn renew_leases(
        &self,
        runner: &Owner,
        lease: Duration,
        now: Timestamp,
    ) -> Result<Vec<(SlotKey, RunId)>> {
        let until = now.saturating_add(lease);
        self.write(|txn| {
            let mut open = txn.open_table(OPEN_SLOTS).or_storage(self)?;
            let mut held = Vec::new();
            for entry in open.iter().or_storage(self)? {
                let (_, v) = entry.or_storage(self)?;
                let slot: Slot = self.decode("open_slots", v.value())?;
                if slot.owner.same_process(runner) {
                    held.push(slot);
                }
            }
            if held.is_empty() {
                return Ok(Tx::Abort(Vec::new()));
            }
            let mut keys = Vec::with_capacity(held.len());
            for mut slot in held {
                slot.lease_until = slot.lease_until.max(until);
                let bytes = self.encode("open_slots", &slot)?;
                open.insert(
                    (slot.key.backend.as_str(), slot.key.task_id.as_str()),
                    bytes.as_slice(),
                )
                .or_storage(self)?;
                keys.push((slot.key, slot.run_id));
            }
            Ok(Tx::Commit(keys))
        })
    }

    fn set_executor(
        &self,
        key: &SlotKey,
        run: &RunId,
        executor: ExecutorIdentity,
    ) -> Result<UpdateOutcome> {
        self.update_slot(key, run, |slot| slot.owner.executor = Some(executor))
    }

    fn set_holder(&self, key: &SlotKey, run: &RunId, holder: &Owner) -> Result<UpdateOutcome> {
        self.update_slot(key, run, |slot| slot.owner = holder.clone())
    }

    fn open_slots(&self) -> Result<Vec<Slot>> {
        self.read(|txn| {
            let table = txn.open_table(OPEN_SLOTS).or_storage(self)?;
            let iter = table.iter().or_storage(self)?;
            self.collect_slots(iter)
        })
    }

    fn slot(&self, key: &SlotKey) -> Result<Option<Slot>> {
        self.read(|txn| {
            let table = txn.open_table(OPEN_SLOTS).or_storage(self)?;
            let found = table
                .get((key.backend.as_str(), key.task_id.as_str()))
                .or_storage(self)?;
            found
                .map(|g| self.decode("open_slots", g.value()))
                .transpose()
        })
    }

    fn last_finish(&self, key: &SlotKey) -> Result<Option<Event>> {
        self.read(|txn| {
            let events = txn.open_table(EVENTS).or_storage(self)?;
            for entry in events.iter().or_storage(self)?.rev() {
                let (_, v) = entry.or_storage(self)?;
                let event: Event = self.decode("events", v.value())?;
                if matches!(&event.kind, EventKind::Finished { key: k, .. } if k == key) {
                    return Ok(Some(event));
                }
            }
            Ok(None)
        })
    }

    fn attempts(&self, task: &TaskId) -> Result<TaskAttempts> {
        self.read(|txn| {
            let table = txn.open_table(ATTEMPTS).or_storage(self)?;
            let found = table.get(task.as_str()).or_storage(self)?;
            let mut attempts = match found {
                Some(g) => self.decode::<TaskAttempts>("attempts", g.value())?,
                None => TaskAttempts::default(),
            };
            // Only finishes are stored, which keeps an admission's commit
            // small; the dispatches still running are the open slots.
            let open = txn.open_table(OPEN_SLOTS).or_storage(self)?;
            let mut running = 0;
            for entry in open.iter().or_storage(self)? {
                let (k, _) = entry.or_storage(self)?;
                if k.value().1 == task.as_str() {
                    running += 1;
                }
            }
            attempts.started = attempts.finished() + running;
            Ok(attempts)
        })
    }

    fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        self.read(|txn| {
            let table = txn.open_table(EVENTS).or_storage(self)?;
            let mut out = Vec::new();
            for entry in table
                .range(after.saturating_add(1)..)
                .or_storage(self)?
                .take(limit)
            {
                let (k, v) = entry.or_storage(self)?;
                out.push(Event::from_stored(k.value(), None, v.value()));
            }
            Ok(out)
        })
    }

    fn events_between(&self, from: Timestamp, to: Timestamp) -> Result<Vec<Event>> {
        self.read(|txn| {
            let events = txn.open_table(EVENTS).or_storage(self)?;
            let mut out = Vec::new();
            for entry in events.iter().or_storage(self)? {
                let (k, v) = entry.or_storage(self)?;
                let event = Event::from_stored(k.value(), None, v.value());
                // A record too damaged to tell its time is listed whatever
                // the range: it might belong there.
                let unplaced = matches!(event.kind, EventKind::Unreadable { .. })
                    && event.at == Timestamp::from_unix_millis(0);
                if unplaced || (event.at >= from && event.at < to) {
                    out.push(event);
                }
            }
            out.sort_by_key(|e| (e.at, e.seq));
            Ok(out)
        })
    }

    fn events_before(&self, before: u64, limit: usize) -> Result<Vec<Event>> {
        self.read(|txn| {
            let table = txn.open_table(EVENTS).or_storage(self)?;
            let mut out = Vec::new();
            for entry in table.range(..before).or_storage(self)?.rev().take(limit) {
                let (k, v) = entry.or_storage(self)?;
                out.push(Event::from_stored(k.value(), None, v.value()));
            }
            out.reverse();
            Ok(out)
        })
    }

    fn task_events(&self, task: &TaskId, limit: usize) -> Result<Vec<Event>> {
        self.read(|txn| {
            let upto = match txn
                .open_table(META)
                .or_storage(self)?
                .get(META_TASK_INDEX_UPTO)
            {
                Ok(found) => found
                    .and_then(|g| g.value().parse::<u64>().ok())
                    .unwrap_or(0),
                Err(e) => return Err(self.storage(e)),
            };
            let mut seqs = std::collections::BTreeSet::new();
            match txn.open_table(TASK_EVENTS) {
                Ok(index) => {
                    for entry in index
                        .range((task.as_str(), 0)..=(task.as_str(), u64::MAX))
                        .or_storage(self)?
                    {
                        seqs.insert(entry.or_storage(self)?.0.value().1);
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(self.storage(e)),
            }
            // The log after the mark: events an older build appended are
            // not in the index yet.
            let events = txn.open_table(EVENTS).or_storage(self)?;
            let mut found = Vec::new();
            for entry in events.range(upto.saturating_add(1)..).or_storage(self)? {
                let (k, v) = entry.or_storage(self)?;
                let event = Event::from_stored(k.value(), None, v.value());
                if event.kind.key().is_some_and(|key| key.task_id == *task) {
                    seqs.remove(&event.seq);
                    found.push(event);
                }
            }
            // The indexed ones, newest first, until `limit` are found.
            let keep = limit.saturating_sub(found.len());
            let mut indexed = Vec::new();
            for seq in seqs.into_iter().rev().take(keep) {
                // Pruned since it was indexed: gone from the history too.
                if let Some(v) = events.get(seq).or_storage(self)? {
                    indexed.push(Event::from_stored(seq, None, v.value()));
                }
            }
            indexed.reverse();
            indexed.extend(found);
            let skip = indexed.len().saturating_sub(limit);
            Ok(indexed.split_off(skip))
        })
    }

    fn starts_after(&self, backend: &Backend, since: Timestamp) -> Result<Vec<Timestamp>> {
        self.read(|txn| {
            let starts = txn.open_table(STARTS).or_storage(self)?;
            let from = (
                backend.as_str(),
                since.as_unix_millis().saturating_add(1),
                0,
            );
            let to = (backend.as_str(), i64::MAX, u64::MAX);
            let mut out = Vec::new();
            for entry in starts.range(from..=to).or_storage(self)? {
                out.push(Timestamp::from_unix_millis(
                    entry.or_storage(self)?.0.value().1,
                ));
            }
            Ok(out)
        })
    }

    fn prune(&self, now: Timestamp) -> Result<PruneReport> {
        const BATCH: usize = 5_000;
        let cutoff = now.saturating_sub(self.options.retention);
        let mut report = PruneReport::default();
        loop {
            let removed = self.write(|txn| {
                let open = txn.open_table(OPEN_SLOTS).or_storage(self)?;
                let mut oldest_open = u64::MAX;
                for entry in open.iter().or_storage(self)? {
                    let (_, v) = entry.or_storage(self)?;
                    let slot: Slot = self.decode("open_slots", v.value())?;
                    oldest_open = oldest_open.min(slot.started_seq);
                }
                let mut events = txn.open_table(EVENTS).or_storage(self)?;
                let last = events
                    .last()
                    .or_storage(self)?
                    .map_or(0, |(k, _)| k.value());
                let stop = oldest_open.min(last);
                let mut doomed = Vec::new();
                for entry in events.range(..stop).or_storage(self)?.take(BATCH) {
                    let (_, v) = entry.or_storage(self)?;
                    let event: Event = self.decode("events", v.value())?;
                    if event.at >= cutoff {
                        break;
                    }
                    doomed.push(event);
                }
                if doomed.is_empty() {
                    return Ok(Tx::Abort(0));
                }
                let mut starts = txn.open_table(STARTS).or_storage(self)?;
                let mut index = txn.open_table(TASK_EVENTS).or_storage(self)?;
                for event in &doomed {
                    events.remove(event.seq).or_storage(self)?;
                    if let Some(key) = event.kind.key() {
                        index
                            .remove((key.task_id.as_str(), event.seq))
                            .or_storage(self)?;
                    }
                    if let EventKind::Started { key, .. } = &event.kind {
                        starts
                            .remove((key.backend.as_str(), event.at.as_unix_millis(), event.seq))
                            .or_storage(self)?;
                    }
                }
                Ok(Tx::Commit(doomed.len()))
            })?;
            report.events_removed += removed as u64;
            if removed < BATCH {
                // Retention runs on a cadence (the watchdog's scans): so
                // does the task index's catch-up.
                self.index_tasks()?;
                return Ok(report);
            }
        }
    }

    fn import_usage_json(&self, path: &Path) -> Result<crate::ImportReport> {
        self.import_usage_file(path)
    }

    /// A file lock beside the ledger file ([`crate::ReconcileLock`]).
    fn startup_lock(&self, timeout: Duration) -> Result<Option<crate::StoreLock>> {
        Ok(crate::ReconcileLock::acquire(&self.path, timeout)?.map(crate::StoreLock::new))
    }
}
