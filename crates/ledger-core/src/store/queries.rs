//! The redb store's reads: each in one read transaction, a consistent
//! snapshot.

use redb::ReadableTable;

use super::*;

impl Ledger {
    /// Runs a query in one read transaction (a consistent snapshot).
    pub(super) fn read<T>(
        &self,
        query: impl FnOnce(&redb::ReadTransaction) -> Result<T>,
    ) -> Result<T> {
        crate::blocking::entering("a ledger read");
        contain_panics(&self.path, || {
            let txn = self.db.begin_read().or_storage(self)?;
            query(&txn)
        })
    }

    pub(super) fn collect_slots<'a>(
        &self,
        range: impl Iterator<
            Item = std::result::Result<
                (
                    redb::AccessGuard<'a, (&'static str, &'static str)>,
                    redb::AccessGuard<'a, &'static [u8]>,
                ),
                redb::StorageError,
            >,
        >,
    ) -> Result<Vec<Slot>> {
        range
            .map(|entry| {
                let (_, v) = entry.or_storage(self)?;
                self.decode("open_slots", v.value())
            })
            .collect()
    }

    /// Every open slot, ordered by backend then task id.
    pub(super) fn read_open_slots(&self) -> Result<Vec<Slot>> {
        self.read(|txn| {
            let table = txn.open_table(OPEN_SLOTS).or_storage(self)?;
            let iter = table.iter().or_storage(self)?;
            self.collect_slots(iter)
        })
    }

    /// The open slots of one backend.
    pub fn open_slots_of(&self, backend: &Backend) -> Result<Vec<Slot>> {
        self.read(|txn| {
            let table = txn.open_table(OPEN_SLOTS).or_storage(self)?;
            let (lo, hi) = backend_bounds(backend.as_str());
            let iter = table
                .range((lo.0, lo.1)..(hi.0.as_str(), hi.1))
                .or_storage(self)?;
            self.collect_slots(iter)
        })
    }

    /// The open slot under `key`, if any.
    pub(super) fn read_slot(&self, key: &SlotKey) -> Result<Option<Slot>> {
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

    /// How many slots each backend has open (backends with none are absent).
    pub fn open_counts(&self) -> Result<BTreeMap<Backend, u32>> {
        let mut counts = BTreeMap::new();
        for slot in self.read_open_slots()? {
            *counts.entry(slot.key.backend).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// Up to `limit` events with a sequence number above `after`, in order.
    pub(super) fn read_events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        self.read(|txn| {
            let table = txn.open_table(EVENTS).or_storage(self)?;
            let mut out = Vec::new();
            for entry in table
                .range(after.saturating_add(1)..)
                .or_storage(self)?
                .take(limit)
            {
                let (_, v) = entry.or_storage(self)?;
                out.push(self.decode("events", v.value())?);
            }
            Ok(out)
        })
    }

    /// Every event with `from <= at < to`, ordered by time then sequence.
    ///
    /// This scans the retained log (at most the retention period's worth):
    /// it serves operators' queries, and keeping a time index up to date
    /// would cost every admission a third of its commit time.
    pub(super) fn read_events_between(&self, from: Timestamp, to: Timestamp) -> Result<Vec<Event>> {
        self.read(|txn| {
            let events = txn.open_table(EVENTS).or_storage(self)?;
            let mut out = Vec::new();
            for entry in events.iter().or_storage(self)? {
                let (_, v) = entry.or_storage(self)?;
                let event: Event = self.decode("events", v.value())?;
                if event.at >= from && event.at < to {
                    out.push(event);
                }
            }
            out.sort_by_key(|e| (e.at, e.seq));
            Ok(out)
        })
    }

    /// The sequence numbers of the oldest and newest retained events.
    pub fn event_range(&self) -> Result<Option<(u64, u64)>> {
        self.read(|txn| {
            let table = txn.open_table(EVENTS).or_storage(self)?;
            let first = table.first().or_storage(self)?.map(|(k, _)| k.value());
            let last = table.last().or_storage(self)?.map(|(k, _)| k.value());
            Ok(first.zip(last))
        })
    }

    /// The newest `finished` event of `key` among the retained events: how
    /// its last dispatch ended. Reads the log backwards, so it is cheap for
    /// a recent finish.
    pub(super) fn read_last_finish(&self, key: &SlotKey) -> Result<Option<Event>> {
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

    /// How often `task` has been dispatched and how those dispatches ended.
    pub(super) fn read_attempts(&self, task: &TaskId) -> Result<TaskAttempts> {
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
}
