//! The redb-backed ledger and every operation on it; opening a file safely
//! is in `files`.

mod files;
mod fleet;
mod ledger;
mod maintenance;
mod queries;
mod writes;

pub use files::panic_is_contained;
pub use maintenance::IntegrityReport;

use files::*;

use std::collections::BTreeMap;
use std::fs;

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
    handle: Option<Handle>,
    path: PathBuf,
}

impl Database {
    fn handle(&self) -> &Handle {
        match &self.handle {
            Some(handle) => handle,
            None => unreachable!("only drop takes the handle out"),
        }
    }

    fn begin_read(&self) -> std::result::Result<redb::ReadTransaction, redb::TransactionError> {
        match self.handle() {
            Handle::ReadWrite(db) => db.begin_read(),
            Handle::ReadOnly(db) => db.begin_read(),
        }
    }

    /// The read-write handle; `None` for a ledger opened read-only.
    fn writable(&self) -> Option<&redb::Database> {
        match self.handle() {
            Handle::ReadWrite(db) => Some(db),
            Handle::ReadOnly(_) => None,
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let path = self.path.display();
            let close = || match handle {
                Handle::ReadWrite(db) => db.close(),
                // Closing a read-only handle writes nothing.
                Handle::ReadOnly(db) => {
                    drop(db);
                    Ok(())
                }
            };
            match containing(close) {
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

/// Whether `path` is a regular file (an error naming it if it is missing,
/// unreadable or something else).
fn regular_file(path: &Path) -> Result<()> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(LedgerError::NotALedger {
            path: path.to_path_buf(),
            detail: "not a regular file".into(),
        }),
        Err(source) => Err(LedgerError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// redb's errors as the ledger's, naming the file: the one mapping every
/// table and transaction call of the store goes through.
pub(crate) trait OrStorage<T> {
    fn or_storage(self, ledger: &Ledger) -> Result<T>;
}

impl<T, E: Into<redb::Error>> OrStorage<T> for std::result::Result<T, E> {
    fn or_storage(self, ledger: &Ledger) -> Result<T> {
        self.map_err(|e| ledger.storage(e))
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
        match regular_file(&path) {
            Err(LedgerError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                create_new_file(&path)?
            }
            other => other?,
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
        let ledger = Ledger { db, path, options };
        // The task index's catch-up (the whole log, once, for a file
        // written before it existed). A failure costs only the speed of
        // `task_events`, which reads the log after the mark.
        match ledger.index_tasks() {
            Ok(n) if n > 10_000 => tracing::info!(events = n, "indexed the audit log by task"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not index the audit log by task"),
        }
        Ok(ledger)
    }

    /// Opens the ledger at `path` for reading only: a missing file is an
    /// error (nothing is created), the file is opened read-only (so a file
    /// of another user or on a read-only mount can be inspected) and nothing
    /// is ever written to it; every write fails with
    /// [`LedgerError::ReadOnly`]. It shares the file with processes that
    /// have it open for writing and reads their commits. A file that needs
    /// the recovery of a crash is refused until a read-write open (any
    /// runner's) has recovered it.
    pub fn open_read_only(path: impl AsRef<Path>, options: LedgerOptions) -> Result<Self> {
        crate::blocking::entering("opening a ledger");
        let path = path.as_ref().to_path_buf();
        regular_file(&path)?;
        check_magic(&path)?;
        let handle = open_database(&path, &options, Access::ReadOnly)?;
        let db = Database {
            handle: Some(handle),
            path: path.clone(),
        };
        contain_panics(&path, || {
            let txn = db
                .begin_read()
                .map_err(|e| storage_error(&path, e.into()))?;
            check_schema(&path, &txn)
        })?;
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
            let Some(db) = self.db.writable() else {
                return Err(LedgerError::ReadOnly {
                    path: self.path.clone(),
                });
            };
            match db.try_begin_write() {
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
                txn.commit().or_storage(self)?;
                Ok(value)
            }
            Tx::Abort(value) => {
                txn.abort().or_storage(self)?;
                Ok(value)
            }
        }
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
