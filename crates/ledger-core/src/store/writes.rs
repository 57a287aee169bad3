//! The redb store's writes: admissions and the cap check inside them,
//! finishes, lease renewals, a slot's holder and executor, and the audit
//! log and attempt counts every write keeps. Each is one write
//! transaction.

use redb::{ReadableTable, WriteTransaction};

use super::*;

impl Ledger {
    /// Appends an event at the end of the log and indexes it by time.
    pub(crate) fn append_event(
        &self,
        txn: &WriteTransaction,
        at: Timestamp,
        kind: EventKind,
    ) -> Result<u64> {
        let mut events = txn.open_table(EVENTS).or_storage(self)?;
        let seq = match events.last().or_storage(self)? {
            Some((k, _)) => k.value() + 1,
            None => 1,
        };
        let event = Event { seq, at, kind };
        let bytes = self.encode("events", &event)?;
        events.insert(seq, bytes.as_slice()).or_storage(self)?;
        Ok(seq)
    }

    pub(crate) fn update_attempts(
        &self,
        txn: &WriteTransaction,
        task: &TaskId,
        change: impl FnOnce(&mut TaskAttempts),
    ) -> Result<()> {
        let mut table = txn.open_table(ATTEMPTS).or_storage(self)?;
        let mut attempts = match table.get(task.as_str()).or_storage(self)? {
            Some(g) => self.decode::<TaskAttempts>("attempts", g.value())?,
            None => TaskAttempts::default(),
        };
        change(&mut attempts);
        let bytes = self.encode("attempts", &attempts)?;
        table
            .insert(task.as_str(), bytes.as_slice())
            .or_storage(self)?;
        Ok(())
    }

    /// Opens a slot if every cap allows it, in one write transaction: the cap
    /// check and the record of the start cannot be separated by another
    /// process's admission.
    ///
    /// Checks, in order: the key is not already in flight, the global cap, the
    /// backend's `max_concurrent`, its hourly and daily rate caps. A denial is
    /// recorded as a `denied` event. Admitting a run that is already open
    /// returns its slot unchanged, so a retry after an ambiguous failure (a
    /// commit that landed although the caller saw an error) is safe.
    pub(super) fn record_admission(
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

    /// Adds a start to the rate-window index.
    pub(crate) fn index_start(
        &self,
        txn: &WriteTransaction,
        backend: &Backend,
        at: Timestamp,
        seq: u64,
    ) -> Result<()> {
        let mut starts = txn.open_table(STARTS).or_storage(self)?;
        starts
            .insert((backend.as_str(), at.as_unix_millis(), seq), ())
            .or_storage(self)?;
        Ok(())
    }

    /// Whether `admit` would accept `key` right now, and if not, which cap
    /// would fire. Read-only and advisory: another process may admit in
    /// between, which is why `admit` repeats the check inside its own write
    /// transaction.
    pub fn check_admission(
        &self,
        key: &SlotKey,
        limits: &Limits,
        now: Timestamp,
    ) -> Result<Option<Denial>> {
        self.read(|txn| {
            let open = txn.open_table(OPEN_SLOTS).or_storage(self)?;
            let starts = txn.open_table(STARTS).or_storage(self)?;
            let in_flight = open
                .get((key.backend.as_str(), key.task_id.as_str()))
                .or_storage(self)?
                .is_some();
            self.check_caps(&open, &starts, in_flight, key, limits, now)
        })
    }

    /// Reads what the cap rule needs and applies it ([`crate::admission`],
    /// shared by every store). Rate windows are counted only for the caps
    /// the backend has.
    pub(super) fn check_caps(
        &self,
        open: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
        starts: &impl ReadableTable<(&'static str, i64, u64), ()>,
        key_in_flight: bool,
        key: &SlotKey,
        limits: &Limits,
        now: Timestamp,
    ) -> Result<Option<Denial>> {
        // The rule refuses a key in flight whatever the counts say: do not
        // pay for reading them.
        if key_in_flight {
            let counts = AdmissionCounts {
                key_in_flight,
                ..AdmissionCounts::default()
            };
            return Ok(admission(&counts, limits));
        }
        let backend = key.backend.as_str();
        let window = |cap: Option<u32>, window| -> Result<Option<u64>> {
            cap.map(|_| count_starts_in_window(starts, backend, window, now))
                .transpose()
                .or_storage(self)
        };
        let counts = AdmissionCounts {
            key_in_flight,
            open_total: open.len().or_storage(self)?,
            open_backend: count_backend_slots(open, backend).or_storage(self)?,
            starts_last_hour: window(limits.backend.max_per_hour, RateWindow::Hourly)?,
            starts_last_day: window(limits.backend.max_per_day, RateWindow::Daily)?,
        };
        Ok(admission(&counts, limits))
    }

    /// Closes the slot under `key`. With `expected_run`, only if that run
    /// holds it: a late finish of an old run can never close a newer run of
    /// the same task. Finishing a slot that is not open changes nothing and
    /// reports [`FinishOutcome::NotInFlight`].
    pub(super) fn record_finish(
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

    /// Applies `change` to the open slot of `run` under `key`, if that run
    /// still holds it.
    pub(super) fn update_slot(
        &self,
        key: &SlotKey,
        run: &RunId,
        change: impl FnOnce(&mut Slot),
    ) -> Result<UpdateOutcome> {
        let key_tuple = (key.backend.as_str(), key.task_id.as_str());
        self.write(|txn| {
            let mut open = txn.open_table(OPEN_SLOTS).or_storage(self)?;
            let mut slot: Slot = match open.get(key_tuple).or_storage(self)? {
                Some(g) => self.decode("open_slots", g.value())?,
                None => return Ok(Tx::Abort(UpdateOutcome::NotInFlight)),
            };
            if slot.run_id != *run {
                return Ok(Tx::Abort(UpdateOutcome::NotInFlight));
            }
            change(&mut slot);
            let bytes = self.encode("open_slots", &slot)?;
            open.insert(key_tuple, bytes.as_slice()).or_storage(self)?;
            Ok(Tx::Commit(UpdateOutcome::Updated))
        })
    }

    /// Extends the lease of `run`'s slot to `until`.
    pub(super) fn extend_lease(
        &self,
        key: &SlotKey,
        run: &RunId,
        until: Timestamp,
    ) -> Result<UpdateOutcome> {
        self.update_slot(key, run, |slot| {
            slot.lease_until = slot.lease_until.max(until)
        })
    }

    /// Extends to `until` the lease of every open slot `runner` holds (same
    /// host, boot and runner process); the keys renewed.
    pub(super) fn extend_leases(
        &self,
        runner: &Owner,
        until: Timestamp,
    ) -> Result<Vec<(SlotKey, RunId)>> {
        self.write(|txn| {
            let mut open = txn.open_table(OPEN_SLOTS).or_storage(self)?;
            let mut held = Vec::new();
            for entry in open.iter().or_storage(self)? {
                let (_, v) = entry.or_storage(self)?;
                let slot: Slot = self.decode("open_slots", v.value())?;
                if slot.owner.host == runner.host
                    && slot.owner.boot_id == runner.boot_id
                    && slot.owner.runner == runner.runner
                {
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
}
