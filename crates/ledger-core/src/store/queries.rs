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

    /// How many slots each backend has open (backends with none are absent).
    pub fn open_counts(&self) -> Result<BTreeMap<Backend, u32>> {
        let mut counts = BTreeMap::new();
        for slot in crate::LedgerStore::open_slots(self)? {
            *counts.entry(slot.key.backend).or_insert(0) += 1;
        }
        Ok(counts)
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
}
