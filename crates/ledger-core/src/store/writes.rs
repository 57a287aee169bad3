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
        if let Some(key) = kind.key() {
            txn.open_table(TASK_EVENTS)
                .or_storage(self)?
                .insert((key.task_id.as_str(), seq), ())
                .or_storage(self)?;
        }
        let event = Event { seq, at, kind };
        let bytes = self.encode("events", &event)?;
        events.insert(seq, bytes.as_slice()).or_storage(self)?;
        drop(events);
        // Every so many appends, the index's mark moves up to here, so a
        // reader never scans more than that much of the log past it; in
        // between, an append reads the mark and writes nothing more.
        let mark = self.task_index_mark(txn)?;
        if seq.saturating_sub(mark) >= TASK_INDEX_STRIDE {
            self.catch_up_task_index(txn, mark, seq)?;
        }
        Ok(seq)
    }

    /// [`META_TASK_INDEX_UPTO`] as `txn` sees it (0 when never set).
    fn task_index_mark(&self, txn: &WriteTransaction) -> Result<u64> {
        let meta = txn.open_table(META).or_storage(self)?;
        let mark = meta.get(META_TASK_INDEX_UPTO).or_storage(self)?;
        Ok(mark.and_then(|g| g.value().parse().ok()).unwrap_or(0))
    }

    /// Indexes what events in `(mark, upto]` lack a row (appended by a
    /// build that did not index), and moves the mark to `upto`.
    fn catch_up_task_index(&self, txn: &WriteTransaction, mark: u64, upto: u64) -> Result<()> {
        let events = txn.open_table(EVENTS).or_storage(self)?;
        let mut index = txn.open_table(TASK_EVENTS).or_storage(self)?;
        for entry in events
            .range(mark.saturating_add(1)..=upto)
            .or_storage(self)?
        {
            let (k, v) = entry.or_storage(self)?;
            let seq = k.value();
            let event = Event::from_stored(seq, None, v.value());
            if let Some(key) = event.kind.key() {
                let row = (key.task_id.as_str(), seq);
                // A read where the row is there (nearly always): only a
                // missing row dirties a page.
                if index.get(row).or_storage(self)?.is_none() {
                    index.insert(row, ()).or_storage(self)?;
                }
            }
        }
        txn.open_table(META)
            .or_storage(self)?
            .insert(META_TASK_INDEX_UPTO, upto.to_string().as_str())
            .or_storage(self)?;
        Ok(())
    }

    /// Takes every event after [`META_TASK_INDEX_UPTO`] into the task
    /// index (the whole log the first time, in batches) and moves the mark
    /// to the end of the log. Returns how many events it read.
    pub(crate) fn index_tasks(&self) -> Result<u64> {
        const BATCH: u64 = 50_000;
        let mut read = 0;
        loop {
            let (n, more) = self.write(|txn| {
                let mark = self.task_index_mark(txn)?;
                let last = txn
                    .open_table(EVENTS)
                    .or_storage(self)?
                    .last()
                    .or_storage(self)?
                    .map_or(0, |(k, _)| k.value());
                if last <= mark {
                    return Ok(Tx::Abort((0, false)));
                }
                let upto = last.min(mark.saturating_add(BATCH));
                self.catch_up_task_index(txn, mark, upto)?;
                Ok(Tx::Commit((upto - mark, upto < last)))
            })?;
            read += n;
            if !more {
                return Ok(read);
            }
        }
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
}
