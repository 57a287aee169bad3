//! The redb-backed ledger and every operation on it; opening a file safely
//! is in `files`.

mod files;

use files::*;

use std::collections::BTreeMap;
use std::fs;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Owner;
use crate::contract::{AdmissionCounts, PruneReport, admission};
use crate::error::{LedgerError, Result};
use crate::model::{
    AdmitOutcome, AdmitRequest, Denial, Event, EventKind, ExecutorIdentity, FinishOutcome,
    FinishReason, Limits, RateWindow, Slot, SlotKey, TaskAttempts, UpdateOutcome,
};
use crate::schema::*;
use crate::{Backend, RunId, TaskId, Timestamp};

/// How processes share the ledger file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SharingMode {
    /// Any number of processes keep the file open and write one transaction
    /// at a time (redb's multi-writer mode). Every process sharing a file must
    /// use this mode, read-mostly ones included.
    #[default]
    MultiProcess,
    /// This process alone has the file open. Commits are faster; another
    /// process trying to open the file gets [`LedgerError::AlreadyOpen`].
    Exclusive,
}

/// How a ledger is opened and run.
#[derive(Debug, Clone)]
pub struct LedgerOptions {
    /// How processes share the file.
    pub sharing: SharingMode,
    /// How long an operation waits for another process's write transaction
    /// before giving up with [`LedgerError::Busy`]. redb's blocking
    /// `begin_write` would wait forever behind a stuck holder.
    pub write_deadline: Duration,
    /// How long events are kept. Open slots are never pruned. Values under a
    /// day are raised to a day, since the daily rate window reads that far
    /// back.
    pub retention: Duration,
    /// Memory redb may use to cache pages.
    pub cache_bytes: usize,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        Self {
            sharing: SharingMode::MultiProcess,
            write_deadline: Duration::from_secs(10),
            retention: Duration::from_secs(7 * 86_400),
            cache_bytes: 16 * 1024 * 1024,
        }
    }
}

/// A crash-safe in-flight ledger in one redb file.
///
/// Every method that changes the ledger runs in one write transaction that is
/// durable (fsynced) when the method returns, and takes every decision from
/// what it reads inside that transaction, never from an earlier read.
pub struct Ledger {
    db: Database,
    path: PathBuf,
    options: LedgerOptions,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("path", &self.path)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The open redb database, closed with its panics contained.
///
/// Closing a read-write handle is a commit: redb writes its allocator state
/// back into the file. On a damaged file the allocator can trip over one of
/// redb's assertions while doing so (the fuzzer found such a file), and a drop
/// runs where no `contain_panics` can reach, so a ledger going out of scope
/// would take its whole process down. Dropping this wrapper closes the handle
/// inside `catch_unwind` instead; whatever the close could not write, the next
/// open recovers, as after a crash.
struct Database {
    handle: Option<redb::Database>,
    path: PathBuf,
}

impl std::ops::Deref for Database {
    type Target = redb::Database;

    fn deref(&self) -> &redb::Database {
        match &self.handle {
            Some(db) => db,
            None => unreachable!("only drop takes the handle out"),
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Some(db) = self.handle.take() {
            let path = self.path.display();
            match catch_unwind(AssertUnwindSafe(|| db.close())) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(
                    %path, error = %e,
                    "closing the ledger failed; the next open recovers it"
                ),
                Err(_) => tracing::warn!(
                    %path,
                    "the storage engine failed while closing the ledger; the next open recovers it"
                ),
            }
        }
    }
}

/// Whether a write transaction's changes are kept.
pub(crate) enum Tx<T> {
    Commit(T),
    /// Nothing changed: skip the commit and its fsync.
    Abort(T),
}

impl Ledger {
    /// Opens the ledger at `path` in multi-process mode, creating it (and its
    /// parent folders) if it does not exist.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, LedgerOptions::default())
    }

    /// Opens the ledger at `path` with `options`, creating it if it does not
    /// exist. A file that exists but is not a ledger is reported, never
    /// rewritten.
    pub fn open_with(path: impl AsRef<Path>, mut options: LedgerOptions) -> Result<Self> {
        crate::blocking::entering("opening a ledger");
        let path = path.as_ref().to_path_buf();
        options.retention = options.retention.max(RateWindow::Daily.length());
        match fs::metadata(&path) {
            Ok(meta) if !meta.is_file() => {
                return Err(LedgerError::NotALedger {
                    path,
                    detail: "not a regular file".into(),
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_new_file(&path)?,
            Err(source) => return Err(LedgerError::Io { path, source }),
        }
        check_magic(&path)?;
        // A read-write open lets redb write to the file (allocator state,
        // recovery flags) before this code could look at the schema, so the
        // file is first looked at through a read-only handle, which cannot
        // write. A file that is not ours is refused before any write. The
        // read-only open fails only for reasons a read-write open handles
        // (say, a crash that needs recovery), so that failure is not fatal.
        match open_database(&path, &options, Access::ReadOnly) {
            Ok(Handle::ReadOnly(db)) => contain_panics(&path, || {
                let txn = db
                    .begin_read()
                    .map_err(|e| storage_error(&path, e.into()))?;
                check_schema(&path, &txn)
            })?,
            Ok(Handle::ReadWrite(_)) => {}
            Err(e @ (LedgerError::NotALedger { .. } | LedgerError::Corrupt { .. })) => {
                return Err(e);
            }
            Err(_) => {}
        }
        // The read-write open can still find damage the read-only look did
        // not (redb checks its allocator and checksums only when it opens
        // for writing) and by then it has written its header, or started a
        // repair. What it found is reported; the file is put back as found.
        let found = FileSnapshot::take(&path);
        let db = match open_for_writing(&path, &options) {
            Ok(db) => db,
            Err(found_bad) if FileSnapshot::restores_after(&found_bad) => {
                return Err(match found.map(|found| found.put_back(&path)) {
                    Some(Err(e)) => LedgerError::Io {
                        path,
                        source: std::io::Error::new(
                            e.kind(),
                            format!(
                                "opening it found it unusable ({found_bad}), and putting it \
                                 back as it was found failed: {e}"
                            ),
                        ),
                    },
                    _ => found_bad,
                });
            }
            Err(e) => return Err(e),
        };
        Ok(Ledger { db, path, options })
    }

    /// The file this ledger lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options it was opened with.
    pub fn options(&self) -> &LedgerOptions {
        &self.options
    }

    pub(crate) fn storage(&self, e: impl Into<redb::Error>) -> LedgerError {
        storage_error(&self.path, e.into())
    }

    pub(crate) fn encode(&self, table: &'static str, value: &impl Serialize) -> Result<Vec<u8>> {
        serde_json::to_vec(value).map_err(|e| LedgerError::Decode {
            path: self.path.clone(),
            table,
            detail: e.to_string(),
        })
    }

    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        table: &'static str,
        bytes: &[u8],
    ) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| LedgerError::Decode {
            path: self.path.clone(),
            table,
            detail: e.to_string(),
        })
    }

    /// Takes the write lock without ever blocking indefinitely: another
    /// process may hold it, and a stuck holder must not hang this one.
    fn begin_write(&self) -> Result<WriteTransaction> {
        let started = Instant::now();
        let mut backoff = Duration::from_micros(10);
        loop {
            match self.db.try_begin_write() {
                Ok(txn) => return Ok(txn),
                Err(redb::TransactionError::WouldBlock) => {}
                Err(e) => return Err(self.storage(e)),
            }
            let waited = started.elapsed();
            if waited >= self.options.write_deadline {
                return Err(LedgerError::Busy {
                    path: self.path.clone(),
                    waited,
                });
            }
            // Jitter keeps processes that woke together from colliding again
            // (fastrand's generator is seeded per thread from the OS).
            let jitter = Duration::from_nanos(fastrand::u64(..=backoff.as_nanos() as u64));
            std::thread::sleep(backoff + jitter);
            // A commit takes well under a millisecond, so a waiter that
            // sleeps much longer than that leaves the lock idle.
            backoff = (backoff * 2).min(Duration::from_micros(200));
        }
    }

    pub(crate) fn write<T>(
        &self,
        apply: impl FnOnce(&WriteTransaction) -> Result<Tx<T>>,
    ) -> Result<T> {
        crate::blocking::entering("a ledger write");
        contain_panics(&self.path, || self.write_unguarded(apply))
    }

    fn write_unguarded<T>(
        &self,
        apply: impl FnOnce(&WriteTransaction) -> Result<Tx<T>>,
    ) -> Result<T> {
        let txn = self.begin_write()?;
        // On an error the transaction is dropped, which aborts it.
        match apply(&txn)? {
            Tx::Commit(value) => {
                txn.commit().map_err(|e| self.storage(e))?;
                Ok(value)
            }
            Tx::Abort(value) => {
                txn.abort().map_err(|e| self.storage(e))?;
                Ok(value)
            }
        }
    }

    /// Appends an event at the end of the log and indexes it by time.
    pub(crate) fn append_event(
        &self,
        txn: &WriteTransaction,
        at: Timestamp,
        kind: EventKind,
    ) -> Result<u64> {
        let mut events = txn.open_table(EVENTS).map_err(|e| self.storage(e))?;
        let seq = match events.last().map_err(|e| self.storage(e))? {
            Some((k, _)) => k.value() + 1,
            None => 1,
        };
        let event = Event { seq, at, kind };
        let bytes = self.encode("events", &event)?;
        events
            .insert(seq, bytes.as_slice())
            .map_err(|e| self.storage(e))?;
        Ok(seq)
    }

    pub(crate) fn update_attempts(
        &self,
        txn: &WriteTransaction,
        task: &TaskId,
        change: impl FnOnce(&mut TaskAttempts),
    ) -> Result<()> {
        let mut table = txn.open_table(ATTEMPTS).map_err(|e| self.storage(e))?;
        let mut attempts = match table.get(task.as_str()).map_err(|e| self.storage(e))? {
            Some(g) => self.decode::<TaskAttempts>("attempts", g.value())?,
            None => TaskAttempts::default(),
        };
        change(&mut attempts);
        let bytes = self.encode("attempts", &attempts)?;
        table
            .insert(task.as_str(), bytes.as_slice())
            .map_err(|e| self.storage(e))?;
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
    pub fn admit(
        &self,
        request: &AdmitRequest,
        limits: &Limits,
        now: Timestamp,
    ) -> Result<AdmitOutcome> {
        let key = &request.key;
        let key_tuple = (key.backend.as_str(), key.task_id.as_str());
        self.write(|txn| {
            let mut open = txn.open_table(OPEN_SLOTS).map_err(|e| self.storage(e))?;
            let existing = match open.get(key_tuple).map_err(|e| self.storage(e))? {
                Some(g) => Some(self.decode::<Slot>("open_slots", g.value())?),
                None => None,
            };
            if let Some(slot) = existing.as_ref().filter(|s| s.run_id == request.run_id) {
                return Ok(Tx::Abort(AdmitOutcome::Admitted(slot.clone())));
            }
            let starts = txn.open_table(STARTS).map_err(|e| self.storage(e))?;
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
            open.insert(key_tuple, bytes.as_slice())
                .map_err(|e| self.storage(e))?;
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
        let mut starts = txn.open_table(STARTS).map_err(|e| self.storage(e))?;
        starts
            .insert((backend.as_str(), at.as_unix_millis(), seq), ())
            .map_err(|e| self.storage(e))?;
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
            let open = txn.open_table(OPEN_SLOTS).map_err(|e| self.storage(e))?;
            let starts = txn.open_table(STARTS).map_err(|e| self.storage(e))?;
            let in_flight = open
                .get((key.backend.as_str(), key.task_id.as_str()))
                .map_err(|e| self.storage(e))?
                .is_some();
            self.check_caps(&open, &starts, in_flight, key, limits, now)
        })
    }

    /// Reads what the cap rule needs and applies it ([`crate::admission`],
    /// shared by every store). Rate windows are counted only for the caps
    /// the backend has.
    fn check_caps(
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
                .map_err(|e| self.storage(e))
        };
        let counts = AdmissionCounts {
            key_in_flight,
            open_total: open.len().map_err(|e| self.storage(e))?,
            open_backend: count_backend_slots(open, backend).map_err(|e| self.storage(e))?,
            starts_last_hour: window(limits.backend.max_per_hour, RateWindow::Hourly)?,
            starts_last_day: window(limits.backend.max_per_day, RateWindow::Daily)?,
        };
        Ok(admission(&counts, limits))
    }

    /// Closes the slot under `key`. With `expected_run`, only if that run
    /// holds it: a late finish of an old run can never close a newer run of
    /// the same task. Finishing a slot that is not open changes nothing and
    /// reports [`FinishOutcome::NotInFlight`].
    pub fn finish(
        &self,
        key: &SlotKey,
        expected_run: Option<&RunId>,
        reason: FinishReason,
        now: Timestamp,
    ) -> Result<FinishOutcome> {
        let key_tuple = (key.backend.as_str(), key.task_id.as_str());
        self.write(|txn| {
            let mut open = txn.open_table(OPEN_SLOTS).map_err(|e| self.storage(e))?;
            let slot: Slot = match open.get(key_tuple).map_err(|e| self.storage(e))? {
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
            open.remove(key_tuple).map_err(|e| self.storage(e))?;
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
    fn update_slot(
        &self,
        key: &SlotKey,
        run: &RunId,
        change: impl FnOnce(&mut Slot),
    ) -> Result<UpdateOutcome> {
        let key_tuple = (key.backend.as_str(), key.task_id.as_str());
        self.write(|txn| {
            let mut open = txn.open_table(OPEN_SLOTS).map_err(|e| self.storage(e))?;
            let mut slot: Slot = match open.get(key_tuple).map_err(|e| self.storage(e))? {
                Some(g) => self.decode("open_slots", g.value())?,
                None => return Ok(Tx::Abort(UpdateOutcome::NotInFlight)),
            };
            if slot.run_id != *run {
                return Ok(Tx::Abort(UpdateOutcome::NotInFlight));
            }
            change(&mut slot);
            let bytes = self.encode("open_slots", &slot)?;
            open.insert(key_tuple, bytes.as_slice())
                .map_err(|e| self.storage(e))?;
            Ok(Tx::Commit(UpdateOutcome::Updated))
        })
    }

    /// Extends the lease of `run`'s slot to `until`.
    pub fn renew_lease(
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
    pub fn renew_leases(&self, runner: &Owner, until: Timestamp) -> Result<Vec<(SlotKey, RunId)>> {
        self.write(|txn| {
            let mut open = txn.open_table(OPEN_SLOTS).map_err(|e| self.storage(e))?;
            let mut held = Vec::new();
            for entry in open.iter().map_err(|e| self.storage(e))? {
                let (_, v) = entry.map_err(|e| self.storage(e))?;
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
                .map_err(|e| self.storage(e))?;
                keys.push((slot.key, slot.run_id));
            }
            Ok(Tx::Commit(keys))
        })
    }

    /// Records the executor child that `run`'s runner spawned, so a liveness
    /// check and a reclaim can find it.
    pub fn set_executor(
        &self,
        key: &SlotKey,
        run: &RunId,
        executor: ExecutorIdentity,
    ) -> Result<UpdateOutcome> {
        self.update_slot(key, run, |slot| slot.owner.executor = Some(executor))
    }

    /// Replaces the holder of `run`'s slot (see
    /// [`LedgerStore::set_holder`](crate::LedgerStore::set_holder)).
    pub fn set_holder(&self, key: &SlotKey, run: &RunId, holder: &Owner) -> Result<UpdateOutcome> {
        self.update_slot(key, run, |slot| slot.owner = holder.clone())
    }

    /// Runs a query in one read transaction (a consistent snapshot).
    fn read<T>(&self, query: impl FnOnce(&redb::ReadTransaction) -> Result<T>) -> Result<T> {
        crate::blocking::entering("a ledger read");
        contain_panics(&self.path, || {
            let txn = self.db.begin_read().map_err(|e| self.storage(e))?;
            query(&txn)
        })
    }

    fn collect_slots<'a>(
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
                let (_, v) = entry.map_err(|e| self.storage(e))?;
                self.decode("open_slots", v.value())
            })
            .collect()
    }

    /// Every open slot, ordered by backend then task id.
    pub fn open_slots(&self) -> Result<Vec<Slot>> {
        self.read(|txn| {
            let table = txn.open_table(OPEN_SLOTS).map_err(|e| self.storage(e))?;
            let iter = table.iter().map_err(|e| self.storage(e))?;
            self.collect_slots(iter)
        })
    }

    /// The open slots of one backend.
    pub fn open_slots_of(&self, backend: &Backend) -> Result<Vec<Slot>> {
        self.read(|txn| {
            let table = txn.open_table(OPEN_SLOTS).map_err(|e| self.storage(e))?;
            let (lo, hi) = backend_bounds(backend.as_str());
            let iter = table
                .range((lo.0, lo.1)..(hi.0.as_str(), hi.1))
                .map_err(|e| self.storage(e))?;
            self.collect_slots(iter)
        })
    }

    /// The open slot under `key`, if any.
    pub fn slot(&self, key: &SlotKey) -> Result<Option<Slot>> {
        self.read(|txn| {
            let table = txn.open_table(OPEN_SLOTS).map_err(|e| self.storage(e))?;
            let found = table
                .get((key.backend.as_str(), key.task_id.as_str()))
                .map_err(|e| self.storage(e))?;
            found
                .map(|g| self.decode("open_slots", g.value()))
                .transpose()
        })
    }

    /// How many slots each backend has open (backends with none are absent).
    pub fn open_counts(&self) -> Result<BTreeMap<Backend, u32>> {
        let mut counts = BTreeMap::new();
        for slot in self.open_slots()? {
            *counts.entry(slot.key.backend).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// Up to `limit` events with a sequence number above `after`, in order.
    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        self.read(|txn| {
            let table = txn.open_table(EVENTS).map_err(|e| self.storage(e))?;
            let mut out = Vec::new();
            for entry in table
                .range(after.saturating_add(1)..)
                .map_err(|e| self.storage(e))?
                .take(limit)
            {
                let (_, v) = entry.map_err(|e| self.storage(e))?;
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
    pub fn events_between(&self, from: Timestamp, to: Timestamp) -> Result<Vec<Event>> {
        self.read(|txn| {
            let events = txn.open_table(EVENTS).map_err(|e| self.storage(e))?;
            let mut out = Vec::new();
            for entry in events.iter().map_err(|e| self.storage(e))? {
                let (_, v) = entry.map_err(|e| self.storage(e))?;
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
            let table = txn.open_table(EVENTS).map_err(|e| self.storage(e))?;
            let first = table
                .first()
                .map_err(|e| self.storage(e))?
                .map(|(k, _)| k.value());
            let last = table
                .last()
                .map_err(|e| self.storage(e))?
                .map(|(k, _)| k.value());
            Ok(first.zip(last))
        })
    }

    /// The newest `finished` event of `key` among the retained events: how
    /// its last dispatch ended. Reads the log backwards, so it is cheap for
    /// a recent finish.
    pub fn last_finish(&self, key: &SlotKey) -> Result<Option<Event>> {
        self.read(|txn| {
            let events = txn.open_table(EVENTS).map_err(|e| self.storage(e))?;
            for entry in events.iter().map_err(|e| self.storage(e))?.rev() {
                let (_, v) = entry.map_err(|e| self.storage(e))?;
                let event: Event = self.decode("events", v.value())?;
                if matches!(&event.kind, EventKind::Finished { key: k, .. } if k == key) {
                    return Ok(Some(event));
                }
            }
            Ok(None)
        })
    }

    /// How often `task` has been dispatched and how those dispatches ended.
    pub fn attempts(&self, task: &TaskId) -> Result<TaskAttempts> {
        self.read(|txn| {
            let table = txn.open_table(ATTEMPTS).map_err(|e| self.storage(e))?;
            let found = table.get(task.as_str()).map_err(|e| self.storage(e))?;
            let mut attempts = match found {
                Some(g) => self.decode::<TaskAttempts>("attempts", g.value())?,
                None => TaskAttempts::default(),
            };
            // Only finishes are stored, which keeps an admission's commit
            // small; the dispatches still running are the open slots.
            let open = txn.open_table(OPEN_SLOTS).map_err(|e| self.storage(e))?;
            let mut running = 0;
            for entry in open.iter().map_err(|e| self.storage(e))? {
                let (k, _) = entry.map_err(|e| self.storage(e))?;
                if k.value().1 == task.as_str() {
                    running += 1;
                }
            }
            attempts.started = attempts.finished() + running;
            Ok(attempts)
        })
    }

    /// Removes events older than the retention. Removal takes a prefix of
    /// the log and stops at the `started` event of the oldest open slot and
    /// before the newest event, so the retained log has no holes, every open
    /// slot keeps its `started` event, and sequence numbers never restart.
    /// Open slots themselves are never pruned.
    pub fn prune(&self, now: Timestamp) -> Result<PruneReport> {
        const BATCH: usize = 5_000;
        let cutoff = now.saturating_sub(self.options.retention);
        let mut report = PruneReport::default();
        loop {
            let removed = self.write(|txn| {
                let open = txn.open_table(OPEN_SLOTS).map_err(|e| self.storage(e))?;
                let mut oldest_open = u64::MAX;
                for entry in open.iter().map_err(|e| self.storage(e))? {
                    let (_, v) = entry.map_err(|e| self.storage(e))?;
                    let slot: Slot = self.decode("open_slots", v.value())?;
                    oldest_open = oldest_open.min(slot.started_seq);
                }
                let mut events = txn.open_table(EVENTS).map_err(|e| self.storage(e))?;
                let last = events
                    .last()
                    .map_err(|e| self.storage(e))?
                    .map_or(0, |(k, _)| k.value());
                let stop = oldest_open.min(last);
                let mut doomed = Vec::new();
                for entry in events
                    .range(..stop)
                    .map_err(|e| self.storage(e))?
                    .take(BATCH)
                {
                    let (_, v) = entry.map_err(|e| self.storage(e))?;
                    let event: Event = self.decode("events", v.value())?;
                    if event.at >= cutoff {
                        break;
                    }
                    doomed.push(event);
                }
                if doomed.is_empty() {
                    return Ok(Tx::Abort(0));
                }
                let mut starts = txn.open_table(STARTS).map_err(|e| self.storage(e))?;
                for event in &doomed {
                    events.remove(event.seq).map_err(|e| self.storage(e))?;
                    if let EventKind::Started { key, .. } = &event.kind {
                        starts
                            .remove((key.backend.as_str(), event.at.as_unix_millis(), event.seq))
                            .map_err(|e| self.storage(e))?;
                    }
                }
                Ok(Tx::Commit(doomed.len()))
            })?;
            report.events_removed += removed as u64;
            if removed < BATCH {
                return Ok(report);
            }
        }
    }

    /// Checks the ledger's own invariants: the retained log has no holes and
    /// each record sits under its own sequence number; every open slot has
    /// its `started` event and no `finished` event after it. A clean report means nothing was lost or torn.
    pub fn verify(&self) -> Result<IntegrityReport> {
        self.read(|txn| {
            let events = txn.open_table(EVENTS).map_err(|e| self.storage(e))?;
            let open = txn.open_table(OPEN_SLOTS).map_err(|e| self.storage(e))?;
            let mut report = IntegrityReport::default();
            let mut expected: Option<u64> = None;
            let mut finished_runs = std::collections::HashSet::new();
            for entry in events.iter().map_err(|e| self.storage(e))? {
                let (k, v) = entry.map_err(|e| self.storage(e))?;
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
            for entry in open.iter().map_err(|e| self.storage(e))? {
                let (k, v) = entry.map_err(|e| self.storage(e))?;
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
                    match events.get(slot.started_seq).map_err(|e| self.storage(e))? {
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

/// The redb store behind the ledger's contract: each method is the inherent
/// one of the same name.
impl crate::LedgerStore for Ledger {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn admit(
        &self,
        request: &AdmitRequest,
        limits: &Limits,
        now: Timestamp,
    ) -> Result<AdmitOutcome> {
        Ledger::admit(self, request, limits, now)
    }

    fn finish(
        &self,
        key: &SlotKey,
        expected_run: Option<&RunId>,
        reason: FinishReason,
        now: Timestamp,
    ) -> Result<FinishOutcome> {
        Ledger::finish(self, key, expected_run, reason, now)
    }

    fn renew_lease(
        &self,
        key: &SlotKey,
        run: &RunId,
        lease: Duration,
        now: Timestamp,
    ) -> Result<UpdateOutcome> {
        Ledger::renew_lease(self, key, run, now.saturating_add(lease))
    }

    fn renew_leases(
        &self,
        runner: &Owner,
        lease: Duration,
        now: Timestamp,
    ) -> Result<Vec<(SlotKey, RunId)>> {
        Ledger::renew_leases(self, runner, now.saturating_add(lease))
    }

    fn set_executor(
        &self,
        key: &SlotKey,
        run: &RunId,
        executor: ExecutorIdentity,
    ) -> Result<UpdateOutcome> {
        Ledger::set_executor(self, key, run, executor)
    }

    fn set_holder(&self, key: &SlotKey, run: &RunId, holder: &Owner) -> Result<UpdateOutcome> {
        Ledger::set_holder(self, key, run, holder)
    }

    fn open_slots(&self) -> Result<Vec<Slot>> {
        Ledger::open_slots(self)
    }

    fn slot(&self, key: &SlotKey) -> Result<Option<Slot>> {
        Ledger::slot(self, key)
    }

    fn last_finish(&self, key: &SlotKey) -> Result<Option<Event>> {
        Ledger::last_finish(self, key)
    }

    fn attempts(&self, task: &TaskId) -> Result<TaskAttempts> {
        Ledger::attempts(self, task)
    }

    fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        Ledger::events_after(self, after, limit)
    }

    fn events_between(&self, from: Timestamp, to: Timestamp) -> Result<Vec<Event>> {
        Ledger::events_between(self, from, to)
    }

    fn prune(&self, now: Timestamp) -> Result<PruneReport> {
        Ledger::prune(self, now)
    }

    fn import_usage_json(&self, path: &Path) -> Result<crate::ImportReport> {
        Ledger::import_usage_json(self, path)
    }

    /// A file lock beside the ledger file ([`crate::ReconcileLock`]).
    fn startup_lock(&self, timeout: Duration) -> Result<Option<crate::StoreLock>> {
        Ok(crate::ReconcileLock::acquire(&self.path, timeout)?.map(crate::StoreLock::new))
    }

    fn take_budget(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        now: Timestamp,
    ) -> Result<crate::BudgetAnswer> {
        self.update_budget(key, Some(now.saturating_sub(window)), |record| {
            let answer = crate::budget(&record.takes, record.paused_until, limit, window, now);
            if matches!(answer, crate::BudgetAnswer::Taken { .. }) {
                record.takes.push(now);
            }
            answer
        })
    }

    fn pause_budget(&self, key: &str, wait: Duration, now: Timestamp) -> Result<()> {
        let until = now.saturating_add(wait);
        self.update_budget(key, None, |record| {
            record.paused_until = Some(record.paused_until.map_or(until, |u| u.max(until)));
        })
    }

    fn board_look(
        &self,
        key: &str,
        max_age: Duration,
        listing_for: Duration,
        now: Timestamp,
    ) -> Result<crate::BoardLook> {
        self.write(|txn| {
            let mut boards = txn.open_table(BOARDS).map_err(|e| self.storage(e))?;
            let mut record = self.board_record(&boards, key)?;
            let snapshot = |record: &BoardRecord| -> Result<Option<crate::BoardSnapshot>> {
                let Some(listed_at) = record.listed_at else {
                    return Ok(None);
                };
                let bodies = txn.open_table(BOARD_BODIES).map_err(|e| self.storage(e))?;
                let body = bodies.get(key).map_err(|e| self.storage(e))?;
                Ok(Some(crate::BoardSnapshot {
                    listed_at,
                    events_seen: record.events_seen,
                    body: body.map(|b| b.value().to_vec()).unwrap_or_default(),
                }))
            };
            let verdict = crate::board_rule(
                record.listed_at,
                record.listing_until,
                max_age,
                listing_for,
                now,
            );
            let previous = snapshot(&record)?;
            // A look that changes nothing skips the commit and its fsync.
            let look = match (verdict, previous) {
                (crate::BoardVerdict::Fresh, Some(fresh)) => {
                    return Ok(Tx::Abort(crate::BoardLook::Fresh(fresh)));
                }
                (crate::BoardVerdict::Wait(until), previous) => {
                    return Ok(Tx::Abort(crate::BoardLook::BeingListed { previous, until }));
                }
                (crate::BoardVerdict::Fresh | crate::BoardVerdict::List(_), previous) => {
                    record.listing_until = Some(now.saturating_add(listing_for));
                    let bytes = self.encode("boards", &record)?;
                    boards
                        .insert(key, bytes.as_slice())
                        .map_err(|e| self.storage(e))?;
                    let events = txn.open_table(EVENTS).map_err(|e| self.storage(e))?;
                    let events_seen = events
                        .last()
                        .map_err(|e| self.storage(e))?
                        .map_or(0, |(k, _)| k.value());
                    crate::BoardLook::YoursToList {
                        listed_at: now,
                        events_seen,
                        previous,
                    }
                }
            };
            Ok(Tx::Commit(look))
        })
    }

    fn put_board(
        &self,
        key: &str,
        listed_at: Timestamp,
        events_seen: u64,
        body: &[u8],
        _now: Timestamp,
    ) -> Result<()> {
        self.write(|txn| {
            let mut boards = txn.open_table(BOARDS).map_err(|e| self.storage(e))?;
            let mut record = self.board_record(&boards, key)?;
            // A slow lister never replaces a newer snapshot with an older one.
            if record.listed_at.is_none_or(|held| held <= listed_at) {
                record.listed_at = Some(listed_at);
                record.events_seen = events_seen;
                let mut bodies = txn.open_table(BOARD_BODIES).map_err(|e| self.storage(e))?;
                bodies.insert(key, body).map_err(|e| self.storage(e))?;
            }
            record.listing_until = None;
            let bytes = self.encode("boards", &record)?;
            boards
                .insert(key, bytes.as_slice())
                .map_err(|e| self.storage(e))?;
            Ok(Tx::Commit(()))
        })
    }

    fn add_board_hint(&self, key: &str, hint: &[u8], now: Timestamp) -> Result<u64> {
        self.write(|txn| {
            let mut boards = txn.open_table(BOARDS).map_err(|e| self.storage(e))?;
            let mut record = self.board_record(&boards, key)?;
            record.last_hint += 1;
            let seq = record.last_hint;
            let bytes = self.encode("boards", &record)?;
            boards
                .insert(key, bytes.as_slice())
                .map_err(|e| self.storage(e))?;
            let mut hints = txn.open_table(BOARD_HINTS).map_err(|e| self.storage(e))?;
            let stale = now.saturating_sub(crate::HINT_RETENTION);
            let mut old = Vec::new();
            for entry in hints
                .range((key, 0)..(key, seq))
                .map_err(|e| self.storage(e))?
            {
                let (k, v) = entry.map_err(|e| self.storage(e))?;
                let held: HintRecord = self.decode("board_hints", v.value())?;
                if held.at > stale {
                    break;
                }
                old.push(k.value().1);
            }
            for n in old {
                hints.remove((key, n)).map_err(|e| self.storage(e))?;
            }
            let record = self.encode(
                "board_hints",
                &HintRecord {
                    at: now,
                    hint: String::from_utf8_lossy(hint).into_owned(),
                },
            )?;
            hints
                .insert((key, seq), record.as_slice())
                .map_err(|e| self.storage(e))?;
            Ok(Tx::Commit(seq))
        })
    }

    fn board_hints_after(&self, key: &str, after: u64) -> Result<crate::BoardHints> {
        self.read(|txn| {
            let boards = match txn.open_table(BOARDS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => {
                    return Ok(crate::BoardHints::default());
                }
                Err(e) => return Err(self.storage(e)),
            };
            let record = self.board_record(&boards, key)?;
            let mut out = crate::BoardHints {
                hints: Vec::new(),
                last: record.last_hint,
            };
            if after >= record.last_hint {
                return Ok(out);
            }
            let hints = txn.open_table(BOARD_HINTS).map_err(|e| self.storage(e))?;
            for entry in hints
                .range((key, after.saturating_add(1))..=(key, u64::MAX))
                .map_err(|e| self.storage(e))?
            {
                let (_, v) = entry.map_err(|e| self.storage(e))?;
                let held: HintRecord = self.decode("board_hints", v.value())?;
                out.hints.push(held.hint.into_bytes());
            }
            Ok(out)
        })
    }
}

/// A shared board as the redb store keeps it (its body is in
/// `board_bodies`, its hints in `board_hints`).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct BoardRecord {
    /// When the snapshot's listing began.
    listed_at: Option<Timestamp>,
    /// The audit log's newest sequence number then.
    #[serde(default)]
    events_seen: u64,
    /// Until when a listing in progress holds off other listers.
    listing_until: Option<Timestamp>,
    /// The newest hint's number.
    #[serde(default)]
    last_hint: u64,
}

/// One board hint as the redb store keeps it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct HintRecord {
    at: Timestamp,
    hint: String,
}

impl Ledger {
    fn board_record(
        &self,
        boards: &impl ReadableTable<&'static str, &'static [u8]>,
        key: &str,
    ) -> Result<BoardRecord> {
        match boards.get(key).map_err(|e| self.storage(e))? {
            Some(v) => self.decode("boards", v.value()),
            None => Ok(BoardRecord::default()),
        }
    }
}

/// A Plane key's shared budget as the redb store keeps it.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct BudgetRecord {
    /// When a pause (a 429's `Retry-After`) ends.
    paused_until: Option<Timestamp>,
    /// The takes still in the window, oldest first.
    takes: Vec<Timestamp>,
}

impl Ledger {
    /// Reads `key`'s budget, drops the takes made at or before
    /// `window_start` (they left the window), lets `change` decide, and
    /// writes it back.
    fn update_budget<T>(
        &self,
        key: &str,
        window_start: Option<Timestamp>,
        change: impl FnOnce(&mut BudgetRecord) -> T,
    ) -> Result<T> {
        self.write(|txn| {
            let mut table = txn.open_table(PLANE_BUDGET).map_err(|e| self.storage(e))?;
            let mut record: BudgetRecord = match table.get(key).map_err(|e| self.storage(e))? {
                Some(v) => self.decode("plane_budget", v.value())?,
                None => BudgetRecord::default(),
            };
            if let Some(start) = window_start {
                record.takes.retain(|t| *t > start);
            }
            let answer = change(&mut record);
            let bytes = self.encode("plane_budget", &record)?;
            table
                .insert(key, bytes.as_slice())
                .map_err(|e| self.storage(e))?;
            Ok(Tx::Commit(answer))
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

/// The key range holding exactly one backend's slots. No identifier may
/// contain a control character, so `backend + "\0"` sorts after every key of
/// `backend` and before every key of a longer backend name.
fn backend_bounds(backend: &str) -> ((&str, &str), (String, &'static str)) {
    ((backend, ""), (format!("{backend}\0"), ""))
}

fn count_backend_slots(
    open: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    backend: &str,
) -> std::result::Result<u64, redb::StorageError> {
    let (lo, hi) = backend_bounds(backend);
    let mut n = 0;
    for entry in open.range((lo.0, lo.1)..(hi.0.as_str(), hi.1))? {
        entry?;
        n += 1;
    }
    Ok(n)
}

/// Starts of `backend` within the window ending at `now`: one range scan of
/// the start index, independent of how long the history is.
fn count_starts_in_window(
    starts: &impl ReadableTable<(&'static str, i64, u64), ()>,
    backend: &str,
    window: RateWindow,
    now: Timestamp,
) -> std::result::Result<u64, redb::StorageError> {
    let since = now.saturating_sub(window.length()).as_unix_millis();
    let mut n = 0;
    for entry in
        starts.range((backend, since.saturating_add(1), 0)..=(backend, i64::MAX, u64::MAX))?
    {
        entry?;
        n += 1;
    }
    Ok(n)
}
